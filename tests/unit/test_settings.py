"""The XINFERENCE_RECONCILER_* settings: a bad value is one clear line (which variable, what was
expected, never a secret, never a traceback), ``run`` exits 78 on any configuration error so
systemd's RestartPreventExitStatus=78 stops the restart loop, and ``run --help`` and README.md list
every setting that the Settings model has."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from daemon.cli import main
from daemon.exit_codes import Exit
from daemon.settings import Settings

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config.example.toml"
SNAPSHOT = REPO / "examples" / "observed-rag-host.json"
SECRET = "hunter2-NEVER-SHOWN"
ENV_PREFIX = "XINFERENCE_RECONCILER_"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


BAD_VALUES = [
    ("RESYNC_INTERVAL_SECONDS", "soon", "expected a number (got 'soon')"),
    ("RESYNC_INTERVAL_SECONDS", "0", "greater than 0"),
    ("DEBOUNCE_SECONDS", "-1", "greater than or equal to 0"),
    ("DRIFT_REMINDER_SECONDS", "", None),  # empty means unset: fine
    ("LOG_FORMAT", "xml", "'auto', 'json' or 'console' (got 'xml')"),
    ("LOG_LEVEL", "loud", "'debug', 'info', 'warning' or 'error'"),
    ("METRICS_LISTEN", "9808", "expected HOST:PORT"),
    ("METRICS_LISTEN", "http://127.0.0.1:9808", "expected HOST:PORT"),
    ("ENDPOINT", "127.0.0.1:9997", "no scheme (http:// or https://)"),
    ("ENDPOINT", "ftp://127.0.0.1:9997", "scheme 'ftp' is not supported"),
    ("ENDPOINT", f"http://admin:{SECRET}@127.0.0.1:9997", "credentials in the endpoint URL"),
]


@pytest.mark.parametrize(("name", "value", "expected"), BAD_VALUES)
def test_a_bad_setting_is_one_line_naming_the_variable(
    name: str, value: str, expected: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from daemon.errors import SettingsError
    from daemon.settings import load_settings

    monkeypatch.setenv(ENV_PREFIX + name, value)
    if expected is None:
        load_settings()
        return
    with pytest.raises(SettingsError) as info:
        load_settings()
    (problem,) = info.value.problems
    assert problem.startswith(f"{ENV_PREFIX}{name}: "), problem
    assert expected in problem
    assert SECRET not in problem


@pytest.mark.parametrize(("name", "value", "expected"), [b for b in BAD_VALUES if b[2]])
def test_run_exits_78_on_a_bad_setting_with_the_message_and_no_traceback(
    name: str, value: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_PREFIX + name, value)
    code, out, err = run("run", str(EXAMPLE), "--state-dir", str(tmp_path))
    assert code == Exit.CONFIG.value == 78
    assert err.startswith("invalid settings (1 problem(s)):\n"), err
    assert f"{ENV_PREFIX}{name}: " in err
    assert expected in err
    assert "Traceback" not in err
    assert SECRET not in out + err


def test_every_problem_is_listed_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from daemon.errors import SettingsError
    from daemon.settings import load_settings

    monkeypatch.setenv(ENV_PREFIX + "LOG_FORMAT", "xml")
    monkeypatch.setenv(ENV_PREFIX + "RESYNC_INTERVAL_SECONDS", "-3")
    monkeypatch.setenv(ENV_PREFIX + "METRICS_LISTEN", "localhost")
    monkeypatch.setenv(ENV_PREFIX + "PASSWORD", "not a setting: the example's password_env")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert len(info.value.problems) == 3


def test_names_are_case_insensitive_and_levels_too(monkeypatch: pytest.MonkeyPatch) -> None:
    from daemon.settings import load_settings

    monkeypatch.setenv("xinference_reconciler_log_level", "WARNING")
    assert load_settings().log_level == "warning"


def test_a_flag_is_named_as_the_flag() -> None:
    from daemon.errors import SettingsError
    from daemon.settings import load_settings

    with pytest.raises(SettingsError, match=r"^--endpoint: no scheme"):
        load_settings({"endpoint": ("--endpoint", "localhost:9997")})


def test_the_other_commands_report_a_bad_setting_as_a_message_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_PREFIX + "ENDPOINT", "127.0.0.1:9997")
    monkeypatch.setenv(ENV_PREFIX + "PASSWORD", "example-password")  # the example's password_env
    code, _, err = run("status", str(EXAMPLE), "--state-dir", str(tmp_path))
    assert code == Exit.ERROR
    assert f"{ENV_PREFIX}ENDPOINT: no scheme" in err
    assert "Traceback" not in err
    assert "InvalidSchema" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--endpoint", "127.0.0.1:9997"],
        ["run", "--endpoint", "ftp://127.0.0.1:9997"],
        ["run", "--no-such-flag"],
        ["run", "a.toml", "b.toml"],
    ],
)
def test_run_exits_78_on_a_bad_command_line(argv: list[str], tmp_path: Path) -> None:
    code, _, err = run(*argv, str(EXAMPLE), "--state-dir", str(tmp_path))
    assert code == Exit.CONFIG, err
    assert "usage: xinference-reconciler run" in err
    assert "Traceback" not in err


def test_run_exits_78_on_an_invalid_config_file(tmp_path: Path) -> None:
    bad = tmp_path / "config.toml"
    bad.write_text('[policy]\nmode = "sometimes"\n')
    code, _, _ = run("run", str(bad), "--state-dir", str(tmp_path / "state"))
    assert code == Exit.CONFIG


def test_run_exits_78_on_a_missing_config_file(tmp_path: Path) -> None:
    code, _, _ = run("run", str(tmp_path / "nope.toml"), "--state-dir", str(tmp_path / "state"))
    assert code == Exit.CONFIG


def test_run_help_lists_every_setting_with_its_description(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run("run", "--help")
    assert code == Exit.OK
    text = " ".join((out + err + capsys.readouterr().out).split())
    for name, field in Settings.model_fields.items():
        assert ENV_PREFIX + name.upper() in text
        assert field.description, f"setting {name} has no description"
        assert " ".join(field.description.split()) in text
    assert "78" in text


def readme_table() -> str:
    """The README's settings table, as the Settings model makes it (paste it when this test fails)."""
    from daemon.settings import describe_settings

    rows = [
        "| Variable | Takes | Default | What it does |",
        "|---|---|---|---|",
    ]
    for doc in describe_settings():
        default = doc.default if doc.default == "(unset)" else f"`{doc.default}`"
        cells = (f"`{doc.name}`", doc.expects, default, doc.description)
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"


def test_the_readme_lists_every_setting_as_the_model_has_it() -> None:
    readme = (REPO / "README.md").read_text()
    assert readme_table() in readme, "README.md's settings table differs; expected:\n" + (
        readme_table()
    )
