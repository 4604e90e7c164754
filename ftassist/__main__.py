"""`python -m ftassist` is the same as the `ftassist` command."""

import sys

from ftassist.cli import main

sys.exit(main())
