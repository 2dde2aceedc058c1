"""What the code needs from Python 3.11+ that 3.10 (Ubuntu 22.04's Python) lacks, in one place.

``StrEnum``: members are ``str`` and ``str(member)``/``f"{member}"`` give the value, as
``enum.StrEnum`` (3.11) does. Defined the same way on every version so behaviour cannot differ.
"""

from __future__ import annotations

from enum import Enum


class StrEnum(str, Enum):
    """A ``str`` enum whose ``str()`` and ``format()`` are the value (``enum.StrEnum`` of 3.11)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)
