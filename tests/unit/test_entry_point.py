"""The entry point as a shell uses it: a malformed --endpoint is refused up front by every command
that takes one (never requests' InvalidSchema, never a retry loop), and a reader that closes the
pipe early (``status ... | head -3``) ends the command quietly, without a BrokenPipeError traceback."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.adapters.secrets import Credentials
from daemon.adapters.xinference import XinferenceAdapter
from daemon.cli import main
from daemon.core.desired import ClusterConfig
from daemon.errors import PermanentClusterError
from daemon.exit_codes import Exit

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = str(REPO / "config.example.toml")
SNAPSHOT = str(REPO / "examples" / "observed-rag-host.json")
SECRET = "s3cret-NEVER-SHOWN"

MALFORMED = [
    ("127.0.0.1:9997", "no scheme (http:// or https://)"),
    ("localhost", "no scheme (http:// or https://)"),
    ("ftp://127.0.0.1:9997", "scheme 'ftp' is not supported"),
    (f"http://admin:{SECRET}@127.0.0.1:9997", "credentials in the endpoint URL are not allowed"),
    (f"admin:{SECRET}@127.0.0.1:9997", "credentials in the endpoint URL are not allowed"),
    ("http://127.0.0.1:99999", "the port must be a number 1-65535"),
    ("http://", "no host"),
    ("http://127.0.0.1 :9997", "spaces are not allowed"),
]

# Every command that takes --endpoint, with what else it needs to get that far.
COMMANDS = {
    "plan": ["plan", EXAMPLE],
    "fit": ["fit", EXAMPLE],
    "status": ["status", EXAMPLE],
    "apply": ["apply", EXAMPLE, "--yes"],
    "snapshot": ["snapshot"],
    "import": ["import"],
    "run": ["run", EXAMPLE],
}


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(("endpoint", "expected"), MALFORMED)
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_malformed_endpoint_is_refused_up_front_by_every_command(
    command: str, endpoint: str, expected: str, tmp_path: Path
) -> None:
    argv = [*COMMANDS[command], "--endpoint", endpoint, "--state-dir", str(tmp_path)]
    code, out, err = run(*argv)
    assert code == (Exit.CONFIG if command == "run" else Exit.ERROR), err
    assert f"argument --endpoint: {expected}" in err
    assert f"usage: xinference-reconciler {command}" in err
    for never in ("Traceback", "InvalidSchema", "MissingSchema", SECRET):
        assert never not in out + err


@pytest.mark.parametrize(("endpoint", "expected"), MALFORMED)
def test_the_config_file_refuses_the_same_endpoints(endpoint: str, expected: str) -> None:
    with pytest.raises(ValueError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        ClusterConfig(endpoint=endpoint)


@pytest.mark.parametrize(
    ("endpoint", "canonical"),
    [
        ("http://127.0.0.1:9997", "http://127.0.0.1:9997"),
        ("https://xinference.example.org/", "https://xinference.example.org"),
        ("http://[::1]:9997/prefix/", "http://[::1]:9997/prefix"),
        ("http://localhost", "http://localhost"),
    ],
)
def test_well_formed_endpoints_pass(endpoint: str, canonical: str) -> None:
    from daemon.core.addresses import check_endpoint

    assert check_endpoint(endpoint) == canonical


def test_an_adapter_given_a_malformed_endpoint_fails_permanently_not_in_a_retry_loop() -> None:
    adapter = XinferenceAdapter(
        endpoint="ftp://127.0.0.1:9997", credentials=Credentials(mode="none")
    )
    with pytest.raises(PermanentClusterError, match="malformed endpoint"):
        adapter.observe()


def _closed_pipe_run(*argv: str) -> subprocess.CompletedProcess[bytes]:
    """The command with its standard output a pipe whose reader is already gone: what `| head -3`
    is once head has its lines, made deterministic (a live reader may take everything first)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "daemon", *argv],
            stdout=write_end,
            stderr=subprocess.PIPE,
            cwd=REPO,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    "argv",
    [
        ["plan", EXAMPLE, "--observed", SNAPSHOT],  # a few lines: fails in the final flush
        ["fit", EXAMPLE, "--observed", SNAPSHOT],
        ["schema"],  # more than one buffer: fails inside the command's own write
    ],
    ids=["plan", "fit", "schema"],
)
def test_a_closed_pipe_ends_the_command_quietly(argv: list[str]) -> None:
    result = _closed_pipe_run(*argv)
    assert result.stderr.decode() == ""
    assert result.returncode == Exit.ERROR
