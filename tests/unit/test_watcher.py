"""The config watcher asks for a pass on every way a config file is replaced (real inotify)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from daemon.adapters.watcher import ConfigWatcher


class Calls:
    def __init__(self) -> None:
        self.event = threading.Event()
        self.count = 0

    def __call__(self) -> None:
        self.count += 1
        self.event.set()

    def wait(self) -> bool:
        fired = self.event.wait(10)
        self.event.clear()
        return fired


@pytest.fixture
def watch() -> Iterator[Callable[[Path], Calls]]:
    watchers: list[ConfigWatcher] = []

    def start(path: Path) -> Calls:
        calls = Calls()
        watcher = ConfigWatcher(path, calls, debounce_ms=50)
        watcher.start()
        watchers.append(watcher)
        threading.Event().wait(0.5)  # inotify watches are set up
        return calls

    yield start
    for watcher in watchers:
        watcher.stop()


def test_an_atomic_save_and_an_in_place_write(
    tmp_path: Path, watch: Callable[[Path], Calls]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("a = 1\n")
    calls = watch(config)
    tmp = tmp_path / ".config.toml.swp"
    tmp.write_text("a = 2\n")
    os.replace(tmp, config)
    assert calls.wait()
    config.write_text("a = 3\n")
    assert calls.wait()


def test_a_swapped_file_symlink(tmp_path: Path, watch: Callable[[Path], Calls]) -> None:
    (tmp_path / "r1").mkdir()
    (tmp_path / "r2").mkdir()
    (tmp_path / "r1" / "config.toml").write_text("a = 1\n")
    (tmp_path / "r2" / "config.toml").write_text("a = 2\n")
    link = tmp_path / "config.toml"
    link.symlink_to(tmp_path / "r1" / "config.toml")
    calls = watch(link)
    tmp = tmp_path / "config.toml.new"
    tmp.symlink_to(tmp_path / "r2" / "config.toml")
    os.replace(tmp, link)
    assert calls.wait()


def test_a_kubernetes_configmap_directory_swap(
    tmp_path: Path, watch: Callable[[Path], Calls]
) -> None:
    """config.toml -> ..data/config.toml, ..data -> ..v1; the update renames a new ..data link
    over the old one (what the kubelet does), touching no file named config.toml."""
    mount = tmp_path / "mount"
    (mount / "..v1").mkdir(parents=True)
    (mount / "..v1" / "config.toml").write_text("a = 1\n")
    (mount / "..data").symlink_to("..v1")
    (mount / "config.toml").symlink_to("..data/config.toml")
    calls = watch(mount / "config.toml")
    (mount / "..v2").mkdir()
    (mount / "..v2" / "config.toml").write_text("a = 2\n")
    (mount / "..data_tmp").symlink_to("..v2")
    os.replace(mount / "..data_tmp", mount / "..data")
    assert calls.wait()
    assert (mount / "config.toml").read_text() == "a = 2\n"
    # and the next swap is noticed too (the watcher follows the new target)
    (mount / "..v3").mkdir()
    (mount / "..v3" / "config.toml").write_text("a = 3\n")
    (mount / "..data_tmp").symlink_to("..v3")
    os.replace(mount / "..data_tmp", mount / "..data")
    assert calls.wait()
