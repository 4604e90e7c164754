"""`python -m ftassist_cli` is the same as the `ftassist` command."""

import sys

from ftassist_cli import main

sys.exit(main())
