"""Watch the config file and ask for a pass when it changes (the event carries no data).

Watches the file's directory, not the file: editors save atomically (write a temporary file, rename
it over the old one), which replaces the inode a file watch would follow. A config reached through
symlinks is matched by its link name and by its final target (both directories are watched), and any
change in a watched directory that moves the final target asks for a pass too: a swapped file link
(a deploy tool flipping ``current -> release-N``) and a swapped directory link (Kubernetes ConfigMap
volumes: ``config.toml -> ..data/config.toml`` with ``..data`` renamed to a new timestamped
directory) alike. Events are debounced by watchfiles; the pass re-reads everything anyway
(level-triggered).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path

import watchfiles


def _watched(config: Path) -> tuple[set[Path], set[str]]:
    """Directories to watch and file paths that count as 'the config changed'."""
    paths = {config.absolute()}
    with contextlib.suppress(OSError):
        paths.add(config.resolve())
    dirs = {p.parent for p in paths if p.parent.is_dir()}
    return dirs, {str(p) for p in paths}


def _target(config: Path) -> Path | None:
    """Where the config's symlinks lead now (None while it does not exist)."""
    try:
        return config.resolve(strict=True)
    except OSError:
        return None


class ConfigWatcher:
    """A daemon thread calling ``on_change()`` after the config (or its symlink target) changes."""

    def __init__(
        self, config: Path, on_change: Callable[[], None], *, debounce_ms: int = 200
    ) -> None:
        self.config = config
        self.on_change = on_change
        self.debounce_ms = debounce_ms
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="config-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        target = _target(self.config)
        while not self._stop.is_set():
            dirs, names = _watched(self.config)
            if not dirs:  # the directory itself is gone: look again shortly
                self._stop.wait(1.0)
                continue
            # Compared with what the previous watch last saw: a swap while the watch was being
            # re-established (right after the last one) is not lost.
            now_target = _target(self.config)
            if now_target != target:
                self.on_change()
            target = now_target
            for changes in watchfiles.watch(
                *dirs,
                stop_event=self._stop,
                debounce=self.debounce_ms,
                rust_timeout=1000,
                yield_on_timeout=True,
                raise_interrupt=False,
            ):
                now_target = _target(self.config)
                moved, target = now_target != target, now_target
                if moved or any(path in names for _, path in changes):
                    self.on_change()
                if moved or _watched(self.config) != (dirs, names):
                    break  # a symlink moved: watch its new target's directory
