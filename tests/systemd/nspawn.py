"""Boot a real systemd (PID 1) in ``systemd-nspawn`` on a host that has no systemd as init.

The recipe and its pitfalls come from a feasibility study on the CI machines (Debian 12, 2 cores,
root, no systemd as PID 1), rechecked here:

* a minimal Debian rootfs is built once per suite with ``mmdebstrap`` (bookworm: systemd 252,
  trixie: systemd 257) and cached as a ``tar.zst`` under ``$XR_SYSTEMD_CACHE`` (default
  ``~/.cache/xinference-reconciler/systemd``), keyed by suite, package list and recipe version;
  each test run unpacks a fresh copy, so nothing leaks from one run into the next;
* without a host systemd/machined, nspawn needs ``--keep-unit --register=no``; ``machinectl`` and
  ``systemctl -M`` cannot reach the container, so commands enter it with ``nsenter -t <its PID 1>
  -a`` (with a clean environment: the host's PIP_*, PATH... must not leak in);
* ``SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1`` gives the container a pure cgroup2 tree (the host is
  hybrid; systemd 257 would otherwise run tainted "cgroupsv1");
* nspawn (no host systemd) makes ``payload`` and ``supervisor`` cgroups under its own: it is
  started in a cgroup of its own (in the ``name=systemd`` and the unified hierarchies), so two runs
  never share them, every process of the container is found there, and the whole subtree is
  removed at the end;
* a SIGTERM that reaches nspawn before the container's PID 1 installed its handlers is lost: stop
  waits, then a second SIGTERM makes nspawn SIGKILL the container;
* a host whose ``/dev/null`` is mode 0000 (seen on one VM image): nspawn copies that mode into the
  container, and apt's ``_apt`` sandbox user cannot use it. A tmpfiles line fixes the container;
  apt and mmdebstrap then run with ``APT::Sandbox::User=root``.

Python wheels for the container's interpreter are downloaded on the host (the host's pip and its
index settings) into a cached wheelhouse, bound read-only into the container at /wheelhouse.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, published as tomli
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
RECIPE_VERSION = 1  # bump to rebuild every cached rootfs
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "libnss-systemd",  # names for DynamicUser= uids
    "procps",  # /bin/kill
    "python3",
    "python3-venv",
)


@dataclass(frozen=True)
class Suite:
    name: str
    systemd: int  # the major version the suite ships
    python: str  # its python3, for the wheelhouse


SUITES = {
    "bookworm": Suite("bookworm", 252, "3.11"),
    "trixie": Suite("trixie", 257, "3.13"),
}
CLEAN_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
}
CGROUP_ROOT = Path("/sys/fs/cgroup")


class NspawnError(RuntimeError):
    """The container could not be built, booted or entered."""


def log(message: str) -> None:
    print(f"[systemd-e2e {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    raw = os.environ.get("XR_SYSTEMD_CACHE")
    if raw:
        return Path(raw).expanduser().resolve()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "xinference-reconciler" / "systemd"


def apt_mirror() -> str:
    """The Debian mirror the host's apt uses (deb822 or one-line format)."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    listing = Path("/etc/apt/sources.list")
    if listing.exists():
        for line in listing.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and "security" not in parts[1]:
                return parts[-3] if parts[1].startswith("[") else parts[1]
    return "http://deb.debian.org/debian"


def dev_null_is_broken() -> bool:
    return (os.stat("/dev/null").st_mode & 0o777) != 0o666


def run_host(
    args: Sequence[str], *, timeout: float, what: str, env: Mapping[str, str] | None = None
) -> str:
    done = subprocess.run(
        list(args),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=None if env is None else dict(env),
    )
    if done.returncode != 0:
        raise NspawnError(
            f"{what} failed (exit {done.returncode}): {' '.join(args)}\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done.stdout


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def rootfs_tarball(suite: Suite) -> Path:
    """The cached rootfs of ``suite`` (built with mmdebstrap when missing: 45-75 s, ~80 MB)."""
    mirror = apt_mirror()
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    key = _digest(suite.name, PACKAGES, RECIPE_VERSION, mirror)
    tarball = cache / f"rootfs-{suite.name}-{key}.tar.zst"
    if tarball.exists():
        return tarball
    log(f"building the {suite.name} rootfs with mmdebstrap from {mirror} (cached as {tarball})")
    t0 = time.monotonic()
    partial = cache / f".partial-{uuid.uuid4().hex[:8]}-{tarball.name}"
    args = [
        "mmdebstrap",
        "--quiet",
        "--variant=minbase",
        "--format=tar",
        f"--include={','.join(PACKAGES)}",
        # what a service test never reads: faster to unpack, smaller to cache
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--dpkgopt=path-exclude=/usr/share/info/*",
    ]
    if dev_null_is_broken():
        args.append('--aptopt=APT::Sandbox::User "root"')
    args += [suite.name, str(partial), mirror]
    try:
        run_host(args, timeout=900, what=f"mmdebstrap {suite.name}")
        os.replace(partial, tarball)
    finally:
        partial.unlink(missing_ok=True)
    for old in cache.glob(f"rootfs-{suite.name}-*.tar.zst"):
        if old != tarball:
            old.unlink(missing_ok=True)
    size = tarball.stat().st_size / 2**20
    log(f"{suite.name} rootfs built in {time.monotonic() - t0:.0f} s ({size:.0f} MiB)")
    return tarball


def project_requirements() -> list[str]:
    """What ``pip install <checkout>`` needs: the build backend and the runtime dependencies."""
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    return [*meta["build-system"]["requires"], *meta["project"]["dependencies"]]


MANYLINUX = [
    "manylinux2014_x86_64",
    *(f"manylinux_2_{minor}_x86_64" for minor in (17, 24, 27, 28, 31, 34, 35, 36)),
]


def wheelhouse(suite: Suite) -> Path:
    """Wheels for the suite's python of everything the project needs (cached by requirements)."""
    requirements = project_requirements()
    key = _digest(suite.python, requirements, MANYLINUX)
    house = cache_dir() / f"wheels-cp{suite.python.replace('.', '')}-{key}"
    if (house / ".complete").exists():
        return house
    log(f"downloading wheels for python {suite.python} into {house}")
    partial = house.with_name(f".partial-{uuid.uuid4().hex[:8]}-{house.name}")
    partial.mkdir(parents=True)
    try:
        args = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            "--implementation=cp",
            f"--python-version={suite.python}",
            *(f"--platform={p}" for p in MANYLINUX),
            "--dest",
            str(partial),
            *requirements,
        ]
        run_host(args, timeout=600, what=f"pip download (python {suite.python})")
        (partial / ".complete").write_text("\n".join(requirements) + "\n")
        shutil.rmtree(house, ignore_errors=True)
        os.replace(partial, house)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return house


def copy_checkout(dest: Path) -> None:
    """This checkout as pip would get it: tracked and untracked-but-not-ignored files (a work
    tree's uncommitted changes are tested too), no venvs or caches."""
    try:
        listing = subprocess.run(
            [
                "git",
                "-C",
                str(REPO),
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
            ],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        files = [f for f in listing.decode().split("\0") if f]
    except (OSError, subprocess.CalledProcessError):
        files = []
    if not files:  # not a git checkout: everything but the usual clutter
        ignore = shutil.ignore_patterns(
            ".git", ".venv*", "__pycache__", "*.egg-info", "build", "dist", ".*_cache"
        )
        shutil.copytree(REPO, dest, ignore=ignore, symlinks=True)
        return
    for name in files:
        source = REPO / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the work tree
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)


# ------------------------------------------------------------------------------------------------
# the container
# ------------------------------------------------------------------------------------------------


class Container:
    """One booted container: ``start()``, ``run()`` commands in it, ``stop()`` (always)."""

    def __init__(self, suite: Suite, *, binds_ro: Mapping[Path, str], workdir: Path) -> None:
        self.suite = suite
        self.binds_ro = dict(binds_ro)
        self.workdir = workdir
        self.rootfs = workdir / "rootfs"
        self.console = workdir / "console.log"
        self.name = f"xr-{suite.name}-{uuid.uuid4().hex[:6]}"
        self.cgroups = [
            CGROUP_ROOT / hierarchy / self.name
            for hierarchy in ("systemd", "unified")
            if (CGROUP_ROOT / hierarchy / "cgroup.procs").exists()
        ]
        self.nspawn: subprocess.Popen[bytes] | None = None
        self.leader: int | None = None
        self.boot_seconds: float | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def unpack(self, tarball: Path) -> None:
        self.rootfs.mkdir(parents=True)
        run_host(
            ["tar", "--zstd", "--numeric-owner", "-xpf", str(tarball), "-C", str(self.rootfs)],
            timeout=300,
            what="unpack the rootfs",
        )
        (self.rootfs / "etc" / "hostname").write_text(f"{self.name}\n")
        # Harmless where /dev/null is fine; needed where the host's is mode 0000 (see above).
        (self.rootfs / "etc" / "tmpfiles.d" / "zz-devnull.conf").write_text(
            "z /dev/null 0666 - - -\n"
        )

    def start(self, timeout: float = 60.0) -> None:
        for cgroup in self.cgroups:
            cgroup.mkdir()
        nspawn = [
            "systemd-nspawn",
            "--quiet",
            "--keep-unit",
            "--register=no",
            f"--machine={self.name}",
            f"--directory={self.rootfs}",
            "--resolv-conf=off",
            "--timezone=off",
            "--link-journal=no",
            *(f"--bind-ro={host}:{inside}" for host, inside in self.binds_ro.items()),
            "--boot",
        ]
        # Enter the cgroups first (then exec): everything nspawn starts is below them. If pytest
        # dies, nspawn gets SIGTERM (an orderly halt of the container).
        enter = "".join(f"echo $$ > {shlex.quote(str(c / 'cgroup.procs'))}; " for c in self.cgroups)
        args = ["sh", "-ec", f'{enter}exec setpriv --pdeathsig TERM -- "$@"', "sh", *nspawn]
        env = {**CLEAN_ENV, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}
        t0 = time.monotonic()
        with self.console.open("wb") as console:
            self.nspawn = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT, env=env
            )
        deadline = time.monotonic() + timeout
        while self.leader is None:
            if self.nspawn.poll() is not None:
                raise NspawnError(f"systemd-nspawn exited {self.nspawn.returncode}: {self.tail()}")
            if time.monotonic() > deadline:
                raise NspawnError(f"no container PID 1 after {timeout} s: {self.tail()}")
            self.leader = self._find_leader()
            time.sleep(0.05)
        # systemctl cannot connect before PID 1 listens ("is-system-running --wait" does not wait
        # for that)
        while not self.run(["test", "-S", "/run/systemd/private"], check=False).ok:
            if time.monotonic() > deadline:
                raise NspawnError(f"PID 1 never listened: {self.tail()}")
            time.sleep(0.05)
        state = self.run(["systemctl", "is-system-running", "--wait"], check=False, timeout=60)
        if state.stdout.strip() not in ("running", "degraded"):
            failed = self.run(["systemctl", "--failed", "--no-legend"], check=False).stdout
            raise NspawnError(f"boot ended {state.stdout.strip()!r}; failed units: {failed}")
        self.boot_seconds = time.monotonic() - t0

    def _find_leader(self) -> int | None:
        assert self.nspawn is not None
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.nspawn.pid and comm == "systemd":
                return int(entry.name)
        return None

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.console.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Power off (orderly), or force it; then remove the cgroups and the rootfs. Only ever
        touches this container's own processes (those in its cgroups)."""
        try:
            if self.nspawn is not None and self.nspawn.poll() is None:
                if self.leader is not None:
                    self.run(["systemctl", "poweroff", "--no-block"], check=False, timeout=15)
                if not self._wait_nspawn(60):
                    log(f"{self.name}: no orderly poweroff; SIGTERM to nspawn")
                    self.nspawn.terminate()
                    if not self._wait_nspawn(15):
                        self.nspawn.terminate()  # a second SIGTERM: nspawn SIGKILLs the container
                        if not self._wait_nspawn(15):
                            self.nspawn.kill()
                            self._wait_nspawn(10)
        finally:
            self._remove_cgroups()
            self._remove_rootfs()

    def _wait_nspawn(self, seconds: float) -> bool:
        assert self.nspawn is not None
        try:
            self.nspawn.wait(seconds)
        except subprocess.TimeoutExpired:
            return False
        return True

    def _remove_cgroups(self) -> None:
        for top in self.cgroups:
            if not top.exists():
                continue
            for _ in range(50):
                pids = [
                    int(pid)
                    for procs in top.rglob("cgroup.procs")
                    for pid in procs.read_text().split()
                ]
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                dirs = sorted(
                    (p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)
                )
                for d in [*dirs, top]:
                    with contextlib.suppress(OSError):
                        d.rmdir()
                if not top.exists():
                    break
                time.sleep(0.1)
            if top.exists():
                log(f"could not remove cgroup {top}")

    def _remove_rootfs(self) -> None:
        mounted = [
            line.split()[4]
            for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(str(self.workdir))
        ]
        if mounted:  # never delete through a mount into the host
            log(f"left {self.workdir} in place: still mounted {mounted}")
            return
        shutil.rmtree(self.workdir, ignore_errors=True)

    # --- commands ----------------------------------------------------------------------------

    def run(
        self,
        args: Sequence[str],
        *,
        input: str | None = None,  # subprocess's name for it
        env: Mapping[str, str] | None = None,
        timeout: float = 60.0,
        check: bool = True,
    ) -> Result:
        """Run a command in the container (all its namespaces, as root, a clean environment)."""
        assert self.leader is not None
        full = [
            "nsenter",
            "-t",
            str(self.leader),
            "-a",
            "env",
            "-i",
            *(f"{k}={v}" for k, v in {**CLEAN_ENV, **(env or {})}.items()),
            *args,
        ]
        t0 = time.monotonic()
        done = subprocess.run(
            full,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=CLEAN_ENV,
        )
        result = Result(
            list(args), done.returncode, done.stdout, done.stderr, time.monotonic() - t0
        )
        if check and not result.ok:
            raise NspawnError(f"in {self.name}: {result}")
        return result

    def sh(self, script: str, **kwargs: Any) -> Result:
        return self.run(["sh", "-ec", script], **kwargs)

    def uid(self, user: str) -> int:
        """The uid of a user in the container's passwd database."""
        return int(self.run(["id", "-u", user]).stdout)

    def write(self, path: str, text: str, mode: int = 0o644) -> None:
        """Write a file inside (as root): through the container, so its own paths apply."""
        self.run(["sh", "-ec", f'umask 077; cat > "$0"; chmod {mode:o} "$0"', path], input=text)


@dataclass(frozen=True)
class Result:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def __str__(self) -> str:
        return (
            f"{' '.join(self.args)} -> exit {self.returncode} after {self.seconds:.2f} s\n"
            f"stdout: {self.stdout[-2000:]}\nstderr: {self.stderr[-2000:]}"
        )


@contextlib.contextmanager
def booted(suite: Suite, *, binds_ro: Mapping[Path, str]) -> Iterator[Container]:
    """Unpack the suite's cached rootfs (building it when missing) and boot it; always cleaned."""
    tarball = rootfs_tarball(suite)
    workdir = Path(tempfile.mkdtemp(prefix=f"xr-systemd-{suite.name}-", dir="/var/tmp"))
    box = Container(suite, binds_ro=binds_ro, workdir=workdir)
    try:
        t0 = time.monotonic()
        box.unpack(tarball)
        log(f"{suite.name}: rootfs unpacked in {time.monotonic() - t0:.1f} s")
        box.start()
        log(f"{suite.name}: systemd booted in {box.boot_seconds:.1f} s")
        yield box
    finally:
        t0 = time.monotonic()
        box.stop()
        log(f"{suite.name}: powered off and removed in {time.monotonic() - t0:.1f} s")
