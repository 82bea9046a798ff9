"""`python -m precompute COMMAND`: see precompute/cli.py."""

import sys

from precompute.cli import main

sys.exit(main())
