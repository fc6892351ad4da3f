"""``python -m ssl_toolkit`` → the command line."""

import sys

from ssl_toolkit.cli import main

sys.exit(main())
