"""Exit codes of every command, defined once (README.md, "Exit codes", documents them per command).

``plan --detailed-exitcode``, ``status`` and ``apply`` share one meaning for 2: the cluster does not
match the file (changes pending, or models failing, loading, refused, backing off...). The daemon
exits 78 (EX_CONFIG from sysexits.h) for any configuration error at start-up, which the systemd unit
lists in ``RestartPreventExitStatus=`` so that a broken file does not restart-loop.
"""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    OK = 0  # success; for plan/status/apply: the cluster matches the file
    ERROR = 1  # an error: bad input, unreachable cluster, refused request, aborted apply
    NOT_CONVERGED = 2  # the cluster does not match the file (see the module docstring)
    CONFIG = 78  # the daemon's configuration (file, settings, flags) is invalid: do not restart
