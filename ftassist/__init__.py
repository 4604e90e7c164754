"""ftassist, the library: data, training, evaluation and the configs every front end builds.

Importing it drops the dependency log messages a user cannot act on (`ftassist/log_filters.py`)
before those dependencies are imported.
"""

from ftassist.log_filters import install_log_filters

install_log_filters()
