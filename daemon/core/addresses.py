"""Network addresses as people write them: the Xinference endpoint URL and the metrics listen
address. One home for both checks, so the config file, ``--endpoint`` and the
``XINFERENCE_RECONCILER_*`` settings accept and refuse exactly the same things.

A refusal says what is wrong and what is expected.
"""

from __future__ import annotations

import re

ENDPOINT_EXAMPLE = "http://127.0.0.1:9997"
LISTEN_EXAMPLE = "127.0.0.1:9808"
_SCHEMES = ("http", "https")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_PORT = re.compile(r":(\d*)$")


def check_endpoint(value: str) -> str:
    """An Xinference base URL, ``http(s)://host[:port][/path]``, without a trailing slash; or
    ValueError saying what is wrong. Credentials in the URL are refused ([cluster.auth] holds them).
    The message never repeats the value: the config file's rule is that no problem shows a value."""
    expected = f"expected an http:// or https:// URL, e.g. {ENDPOINT_EXAMPLE!r}"
    match = _SCHEME.match(value)
    rest = value[match.end() :] if match else value
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" in authority:
        raise ValueError("credentials in the endpoint URL are not allowed; use [cluster.auth]")
    if any(c.isspace() for c in value):
        raise ValueError(f"spaces are not allowed in the endpoint URL; {expected}")
    if match is None:
        raise ValueError(f"no scheme (http:// or https://); {expected}")
    scheme = match.group(1)
    if scheme not in _SCHEMES:
        raise ValueError(f"scheme {scheme!r} is not supported; {expected}")
    host = authority
    port = None if authority.endswith("]") else _PORT.search(authority)
    if port is not None:
        host = authority[: port.start()]
        if not port.group(1) or not 1 <= int(port.group(1)) <= 65535:
            raise ValueError(f"the port must be a number 1-65535; {expected}")
    if host in ("", "[]"):
        raise ValueError(f"no host; {expected}")
    if "?" in rest or "#" in rest:
        raise ValueError(f"a query or fragment is not allowed in the endpoint URL; {expected}")
    return value.rstrip("/")


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:port`` for IPv6, ``:port`` for loopback) -> (host, port), or
    ValueError saying what is wrong."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(
            f"metrics address {listen!r}: expected HOST:PORT with a port 0-65535, "
            f"e.g. {LISTEN_EXAMPLE}"
        )
    if "://" in listen or "/" in host or any(c.isspace() for c in listen):
        raise ValueError(
            f"metrics address {listen!r}: expected HOST:PORT (no scheme, no path), e.g. {LISTEN_EXAMPLE}"
        )
    return host.strip("[]") or "127.0.0.1", int(port_text)
