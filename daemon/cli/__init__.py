"""The command line: ``main(argv) -> exit code`` (daemon/cli/main.py); every subcommand is callable
from tests.

- main.py      the parser and the entry point (errors become messages, never tracebacks)
- offline.py   validate, plan, fit, schema
- live.py      snapshot, status, apply, import: the adapters composed for one command
- estimate.py  estimate
- run.py       run (the daemon)
- render.py    plans, statuses and GPU budgets as text and JSON (pure string building)
"""

from daemon.cli.main import main

__all__ = ["main"]
