"""Run INSIDE the service: a test drop-in makes it the unit's main process,
``ExecStart=.../python sandbox_probe.py --exec <the unit's own ExecStart>``, so it gets exactly what
the daemon gets (user, credentials, namespaces, system-call filter, no capabilities), prints one
JSON event line (the journal stays one JSON event per line) with what it could and could not do,
then execs the daemon in the same process. (An ``ExecStartPost=`` probe would not do: systemd 252
does not let those control processes read the unit's credentials.) Standard library only; never
prints the password."""

from __future__ import annotations

import ctypes
import datetime
import errno
import hashlib
import json
import mmap
import os
import pwd
import socket
import sys
import uuid
from collections.abc import Callable
from typing import Any

MARK = uuid.uuid4().hex[:8]


def attempt(action: Callable[[], Any]) -> str:
    try:
        action()
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc.errno))
    except Exception as exc:  # reported, never a traceback in the journal
        return f"{type(exc).__name__}: {exc}"
    return "ok"


def write(path: str) -> Callable[[], None]:
    def action() -> None:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("probe\n")
        os.unlink(path)

    return action


def read(path: str) -> Callable[[], str]:
    def action() -> str:
        with open(path, encoding="utf-8") as handle:
            return handle.read()

    return action


def sock(family: int) -> Callable[[], None]:
    return lambda: socket.socket(family, socket.SOCK_DGRAM).close()


def syscall(number: int, *args: int) -> Callable[[], None]:
    libc = ctypes.CDLL(None, use_errno=True)

    def action() -> None:
        if libc.syscall(number, *args) < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))

    return action


def wx_mapping() -> None:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC).close()


def proc_status(pid: str) -> dict[str, str]:
    fields = {}
    with open(f"/proc/{pid}/status", encoding="utf-8") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    keep = ("Uid", "Gid", "NoNewPrivs", "Seccomp", "CapEff", "CapPrm", "CapBnd", "CapAmb")
    return {k: fields.get(k, "") for k in keep}


def main() -> None:
    creds = os.environ.get("CREDENTIALS_DIRECTORY", "")
    state = os.environ.get("STATE_DIRECTORY", "")
    secret = ""
    try:
        secret = read(os.path.join(creds, "xinference-password"))().strip()
        credential = "ok"
    except OSError as exc:
        credential = errno.errorcode.get(exc.errno or 0, "?")
    uid = os.getuid()
    checks: dict[str, Any] = {
        "uid": uid,
        "user": pwd.getpwuid(uid).pw_name,
        "credentials_directory": creds,
        "state_directory": state,
        "credential": credential,
        "credential_sha256": hashlib.sha256(secret.encode()).hexdigest()[:16] if secret else "",
        "read /etc/xinference-reconciler/password": attempt(
            read("/etc/xinference-reconciler/password")
        ),
        "write state directory": attempt(write(os.path.join(state, f"probe-{MARK}"))),
        "state directory owner": os.stat(state).st_uid if state else None,
        "tmp file": f"/tmp/probe-{MARK}",
        "write /tmp (private)": attempt(lambda: open(f"/tmp/probe-{MARK}", "w").close()),
        "dev": sorted(os.listdir("/dev")),
        "AF_INET": attempt(sock(socket.AF_INET)),
        "AF_INET6": attempt(sock(socket.AF_INET6)),
        "AF_UNIX": attempt(sock(socket.AF_UNIX)),
        "AF_NETLINK": attempt(sock(socket.AF_NETLINK)),
        "AF_PACKET": attempt(sock(socket.AF_PACKET)),
        "sysfs(2) (@obsolete)": attempt(syscall(139, 3)),
        "setpriority(2) (@resources)": attempt(lambda: os.setpriority(os.PRIO_PROCESS, 0, 5)),
        "W+X memory (MemoryDenyWriteExecute)": attempt(wx_mapping),
        "self": proc_status("self"),
    }
    for path in (
        "/etc/probe",
        "/etc/xinference-reconciler/probe",
        "/opt/xinference-reconciler/probe",
        "/usr/probe",
        "/var/probe",
        "/var/lib/probe",
        "/var/log/probe",
        "/root/probe",
        "/home/probe",
        "/run/probe",
    ):
        checks[f"write {path}"] = attempt(write(f"{path}-{MARK}"))
    event = {
        "event": "test.sandbox_probe",
        "level": "info",
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "checks": checks,
    }
    print(json.dumps(event), flush=True)
    if sys.argv[1:2] == ["--exec"]:
        os.execv(sys.argv[2], sys.argv[2:])  # noqa: S606  # the unit's own command line


if __name__ == "__main__":
    main()
