"""Byte units and how people see them."""

from __future__ import annotations

KiB = 1024
MiB = 1024**2
GiB = 1024**3


def fmt_gib(n_bytes: int | float) -> str:
    """``12.34 GiB``: how every human-facing byte count is printed."""
    return f"{n_bytes / GiB:.2f} GiB"
