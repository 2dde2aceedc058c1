"""How Xinference spells things: model uids, size variants ("1_5" on the wire, 1.5 in the config),
and which key names hold secrets. One home for each rule; everything else imports it."""

from __future__ import annotations

import re

_REPLICA_SUFFIX = re.compile(r"-rep\d+$")
MAX_UID_LENGTH = 100
# A key whose name contains one of these words holds a secret: it is refused in the config file
# and redacted from every event, at any depth.
SECRET_WORDS = ("password", "secret", "token", "api_key", "apikey", "authorization", "credential")


def uid_problem(uid: str) -> str | None:
    """Why Xinference would refuse ``uid`` as a model uid, or None when it is acceptable.

    Xinference accepts 1-100 characters and refuses uids ending in ``-rep<N>`` (its replica suffix).
    """
    if not uid:
        return "a model uid must not be empty"
    if len(uid) > MAX_UID_LENGTH:
        return f"a model uid has at most {MAX_UID_LENGTH} characters (this one has {len(uid)})"
    if _REPLICA_SUFFIX.search(uid):
        return "a model uid must not end in '-rep<N>' (Xinference reserves it for replicas)"
    if any(ch.isspace() or ch == "/" for ch in uid):
        return "a model uid must not contain whitespace or '/' (it is part of URL paths)"
    return None


def size_value(size: object) -> float | None:
    """A model size in billions as a number: 7, 1.5, "1_5" and "1.5" all read; None when unreadable."""
    if size is None or isinstance(size, bool):
        return None
    if isinstance(size, int | float):
        return float(size)
    try:
        return float(str(size).replace("_", "."))
    except ValueError:
        return None


def size_text(size: float | int | str | None) -> int | str | None:
    """A size as Xinference's REST API and registrations spell it: 7 or "1_5", never 1.5."""
    if isinstance(size, float):
        return int(size) if size.is_integer() else str(size).replace(".", "_")
    return size


def sizes_equal(a: object, b: object) -> bool:
    """Whether two size spellings name the same variant (7 == "7" == 7.0; 1.5 == "1_5")."""
    va, vb = size_value(a), size_value(b)
    if va is None or vb is None:
        return str(a) == str(b)
    return abs(va - vb) < 1e-6


def is_secret_name(key: object) -> bool:
    """Whether a field or key named ``key`` holds a secret (see SECRET_WORDS)."""
    return any(word in str(key).lower() for word in SECRET_WORDS)
