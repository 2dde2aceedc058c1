"""``python -m daemon`` runs the command-line interface."""

import sys

from daemon.cli import main

sys.exit(main())
