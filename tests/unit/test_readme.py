"""README.md shows real output: its plan excerpt is what the command prints for the bundled example."""

from __future__ import annotations

import io
import re
import shlex
from pathlib import Path

import pytest

from daemon.cli import main

REPO = Path(__file__).resolve().parents[2]
COMMAND = (
    "xinference-reconciler plan config.example.toml --observed examples/observed-rag-host.json"
)


def readme_block(command: str) -> str:
    """The fenced block of README.md that starts with ``$ command``: the lines after that one."""
    readme = (REPO / "README.md").read_text()
    pattern = re.compile(r"^```\n\$ " + re.escape(command) + r"\n(.*?)^```$", re.M | re.S)
    found = pattern.search(readme)
    assert found, f"README.md has no block starting with '$ {command}'"
    return found.group(1)


def test_the_readme_plan_excerpt_is_the_real_output(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the paths in the output are those of the command, relative to here
    out, err = io.StringIO(), io.StringIO()
    code = main(shlex.split(COMMAND)[1:], stdout=out, stderr=err)
    assert code == 0, err.getvalue()
    # The revision names the config's last commit (or its content hash outside git): not compared.
    same = re.compile(r"\(revision [^)]*\)")
    shown, real = (
        same.sub("(revision ...)", text) for text in (readme_block(COMMAND), out.getvalue())
    )
    assert shown == real, (
        "README.md's plan excerpt differs from the output; paste this after the '$' line:\n"
        + out.getvalue()
    )


def test_the_readme_opens_with_the_command_whose_output_it_shows() -> None:
    opening = (REPO / "README.md").read_text().split("```")[1]
    assert f".venv/bin/{COMMAND}" in opening
