"""The config repository's own gate, run with the real ``pre-commit`` tool: a scratch repository
whose ``.pre-commit-config.yaml`` names this checkout as the hook repository (as a user's names
this project's URL), ``pre-commit install``, then real ``git commit``s: an invalid config is
refused; a valid one is held back by the plan hook while it would change the committed snapshot's
cluster, and committed once the snapshot shows it running.

pre-commit clones the hook repository at a commit and pip-installs it into a hook environment
(``language: python``), so this needs PyPI (or pip's cache) and takes a few tens of seconds. It
tests this checkout's working tree: when that has uncommitted changes, it tests a scratch commit
of them instead of HEAD.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HOOK_IDS = ("xinference-reconciler-validate", "xinference-reconciler-plan")

pytestmark = pytest.mark.slow

GOOD = """\
schema_version = 1

[cluster]
endpoint = "http://127.0.0.1:9997"

[policy]
mode = "observe"
gpu_reserve_gib = 0.0

[models.embed-cpu]
model_name = "bge-small-en-v1.5"
model_type = "embedding"
model_engine = "sentence_transformers"
[models.embed-cpu.placement]
device = "cpu"
"""

EMPTY_SNAPSHOT = """\
{"format": 1, "workers": [{"address": "127.0.0.1:30001", "gpus": []}], "models": []}
"""

# What `xinference-reconciler snapshot -o snapshot.json` records once embed-cpu runs.
RUNNING_SNAPSHOT = """\
{"format": 1, "workers": [{"address": "127.0.0.1:30001", "gpus": []}],
 "models": [{"uid": "embed-cpu", "model_name": "bge-small-en-v1.5", "model_type": "embedding",
   "model_engine": "sentence_transformers", "replicas": 1, "status": "READY",
   "worker": "127.0.0.1:30001", "gpu_indexes": []}]}
"""


def git(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=600
    )


def hook_source(tmp_path: Path, env: dict[str, str]) -> tuple[str, str]:
    """(repo, rev) for the scratch repository's config: this checkout at HEAD when it is clean,
    else a clone with the working tree's files committed on top (pre-commit needs a commit)."""
    status = git(REPO, "status", "--porcelain", "--untracked-files=all")
    assert status.returncode == 0, f"this checkout is not a git repository: {status.stderr}"
    if not status.stdout.strip():
        return str(REPO), git(REPO, "rev-parse", "HEAD").stdout.strip()
    copy = tmp_path / "hook-repo"
    assert git(tmp_path, "clone", "--quiet", "--no-hardlinks", str(REPO), str(copy)).returncode == 0
    listed = git(REPO, "ls-files", "--cached", "--others", "--exclude-standard", "-z").stdout
    for name in filter(None, listed.split("\0")):
        source, target = REPO / name, copy / name
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        elif target.exists():  # deleted in the working tree
            target.unlink()
    git(copy, "add", "--all", env=env)
    committed = git(copy, "commit", "--quiet", "--no-verify", "-m", "working tree", env=env)
    assert committed.returncode == 0, committed.stderr
    return str(copy), git(copy, "rev-parse", "HEAD").stdout.strip()


@pytest.fixture(scope="module")
def pre_commit() -> str:
    exe = Path(sys.executable).parent / "pre-commit"
    assert exe.exists(), "pre-commit is missing: install the test extra (pip install -e '.[test]')"
    return str(exe)


def test_a_bad_config_blocks_the_commit_and_a_good_one_passes(
    tmp_path: Path, pre_commit: str
) -> None:
    env = {
        **os.environ,
        "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"),  # hook environments, thrown away
        "GIT_AUTHOR_NAME": "gate test",
        "GIT_AUTHOR_EMAIL": "gate@example.invalid",
        "GIT_COMMITTER_NAME": "gate test",
        "GIT_COMMITTER_EMAIL": "gate@example.invalid",
        "GIT_CONFIG_GLOBAL": os.devnull,  # no hooks path, signing or templates of the machine
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    for name in [n for n in env if n.startswith("XINFERENCE_RECONCILER_")]:
        del env[name]
    repo, rev = hook_source(tmp_path, env)
    work = tmp_path / "configs"
    work.mkdir()
    assert git(work, "init", "--quiet", "-b", "main", env=env).returncode == 0
    (work / ".pre-commit-config.yaml").write_text(
        f"""\
repos:
  - repo: {repo}
    rev: {rev}
    hooks:
      - id: xinference-reconciler-validate
      - id: xinference-reconciler-plan
        args: [config.toml, --observed, snapshot.json]
"""
    )
    installed = subprocess.run(
        [pre_commit, "install"], cwd=work, env=env, capture_output=True, text=True, check=False
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr

    def commit(message: str) -> subprocess.CompletedProcess[str]:
        git(work, "add", "--all", env=env)
        return git(work, "commit", "-m", message, env=env)

    # 1. A bad config: an unknown policy mode. validate refuses it, so nothing is committed.
    (work / "config.toml").write_text(GOOD.replace('mode = "observe"', 'mode = "sometimes"'))
    (work / "snapshot.json").write_text(EMPTY_SNAPSHOT)
    bad = commit("a bad config")
    output = bad.stdout + bad.stderr
    assert bad.returncode != 0, output
    assert "xinference-reconciler validate" in output
    assert "policy.mode" in output
    assert git(work, "rev-parse", "--verify", "--quiet", "HEAD").returncode != 0, "it committed"

    # 2. A good config, but the committed snapshot's cluster runs nothing: the plan would launch
    #    embed-cpu, so the plan hook (--detailed-exitcode: 2) stops the commit and shows the plan.
    (work / "config.toml").write_text(GOOD)
    pending = commit("a good config, not running yet")
    output = pending.stdout + pending.stderr
    assert pending.returncode != 0, output
    assert "xinference-reconciler validate....." in output  # passed: pre-commit hides its output
    assert "+ launch   embed-cpu" in output
    assert git(work, "rev-parse", "--verify", "--quiet", "HEAD").returncode != 0

    # 3. The model was applied and the snapshot refreshed (`snapshot -o snapshot.json`): the config
    #    and the snapshot agree, both hooks pass and the commit lands.
    (work / "snapshot.json").write_text(RUNNING_SNAPSHOT)
    good = commit("embed-cpu runs")
    output = good.stdout + good.stderr
    assert good.returncode == 0, output
    for hook in ("xinference-reconciler validate", "xinference-reconciler plan"):
        assert any(
            line.startswith(hook) and line.endswith("Passed") for line in output.splitlines()
        )
    assert git(work, "rev-parse", "--verify", "--quiet", "HEAD").returncode == 0
