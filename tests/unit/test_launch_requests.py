"""Whatever ``validate`` accepts, ``plan`` can render and ``apply`` can send: every launch request is
built and checked when the file is validated, and a replacement never terminates the running
instance before its new launch request is known to be well-formed."""

from __future__ import annotations

import datetime
import io
import json
from pathlib import Path

import pytest

from daemon.adapters.state_file import StateStore
from daemon.cli import main
from daemon.core.desired import Config
from daemon.core.observed import RunningModel
from daemon.core.ownership import LaunchRecord
from daemon.core.planning import Terminate
from daemon.reconciler import Options, reconcile_once
from daemon.testing.builders import gpu_worker
from daemon.testing.fake_cluster import FakeCluster
from tests.unit.builders import cluster, config, demands, model, plan_for

W1 = "127.0.0.1:30001"
SNAPSHOT = {
    "format": 1,
    "workers": [{"address": W1, "gpus": [{"index": 0, "total_gib": 24, "used_gib": 0}]}],
}
HEAD = """
[policy]
mode = "enforce"
[models.a]
model_name = "m"
model_engine = "Transformers"
[models.a.memory]
estimate_gib = 4.0
[models.a.engine_args]
"""


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def files(tmp_path: Path, engine_args: str) -> tuple[str, str]:
    cfg = tmp_path / "c.toml"
    cfg.write_text(HEAD + engine_args)
    snap = tmp_path / "s.json"
    snap.write_text(json.dumps(SNAPSHOT))
    return str(cfg), str(snap)


@pytest.mark.parametrize(
    ("engine_args", "path", "words"),
    [
        (
            "speculative_config = { released = 2000-01-01 }",
            "models.a.engine_args.speculative_config.released",
            "TOML date",
        ),
        ("released = 2000-01-01", "models.a.engine_args.released", "TOML date"),
        ("at = 07:32:00", "models.a.engine_args.at", "TOML time"),
        (
            "deep = { list = [1, { when = 1979-05-27T07:32:00Z }] }",
            "models.a.engine_args.deep.list.1.when",
            "TOML date-time",
        ),
        ("ratio = nan", "models.a.engine_args.ratio", "not a JSON number"),
        (
            "deep = { limits = [1.0, inf] }",
            "models.a.engine_args.deep.limits.1",
            "not a JSON number",
        ),
    ],
)
def test_validate_refuses_engine_args_that_are_not_json_with_the_key_path(
    tmp_path: Path, engine_args: str, path: str, words: str
) -> None:
    cfg, _ = files(tmp_path, engine_args)
    code, _, err = run("validate", cfg)
    assert code == 1
    lines = [line for line in err.splitlines() if path + ":" in line]
    assert lines, err
    assert words in lines[0]
    assert "Traceback" not in err
    assert len(err.splitlines()) == 2, "one problem, one line: no union noise"


@pytest.mark.parametrize(
    ("key", "points_to"),
    [
        ("model_uid", "[models.<uid>]"),
        ("model_name", "model_name"),
        ("n_gpu", "placement.gpus"),
        ("worker_ip", "placement.worker"),
        ("gpu_idx", "placement.gpu_indexes"),
        ("replica", "replicas"),
        ("model_engine", "model_engine"),
    ],
)
def test_engine_args_cannot_override_what_the_launch_request_takes_from_the_models_keys(
    tmp_path: Path, key: str, points_to: str
) -> None:
    cfg, _ = files(tmp_path, f'{key} = "x"')
    code, _, err = run("validate", cfg)
    assert code == 1
    assert f"models.a.engine_args.{key}:" in err
    assert points_to in err


@pytest.mark.parametrize(
    "engine_args",
    [
        "enable_prefix_caching = true",
        'speculative_config = { model = "/m/draft", num_speculative_tokens = 5 }',
        'rope_scaling = { type = "yarn", factor = 4.0, sizes = [1, 2.5, "x", true] }',
        'envs = { CUDA_VISIBLE_DEVICES = "0" }',
        "released = 2000-01-01",
        "speculative_config = { released = 2000-01-01 }",
        "x = { y = [1.0, nan] }",
    ],
)
def test_what_validate_accepts_plan_json_renders(tmp_path: Path, engine_args: str) -> None:
    cfg, snap = files(tmp_path, engine_args)
    valid = run("validate", cfg)[0] == 0
    code, out, err = run("plan", cfg, "--observed", snap, "--json")
    if valid:
        assert code == 0, err
        (launch,) = json.loads(out)["actions"]
        assert set(launch["launch_args"]) >= {"model_engine"}
    else:
        assert code == 1
        assert "Traceback" not in err


DATED = {"speculative_config": {"released": datetime.date(2000, 1, 1)}}


def test_the_planner_refuses_a_launch_request_it_cannot_send_and_keeps_the_running_model() -> None:
    """A config that reached the planner without validation (the planner is the last gate)."""
    old = config({"a": model(gib=4)})
    new = Config.model_validate(
        {**old.model_dump(), "models": {"a": {**model(gib=4), "engine_args": DATED}}}
    )
    spec = old.models["a"]
    observed = cluster(
        gpu_worker(W1, 24),
        models=(
            RunningModel(
                uid="a", model_name="m", model_engine="Transformers", worker=W1, gpu_indexes=(0,)
            ),
        ),
        managed={"a": LaunchRecord(uid="a", spec_hash=spec.spec_hash(), spec=spec.launch_spec())},
    )
    p = plan_for(new, observed)
    assert not [a for a in p.actions if isinstance(a, Terminate)]
    (refusal,) = p.refused
    assert "engine_args.speculative_config.released" in refusal.reason
    assert "TOML date" in refusal.reason


def test_a_replacement_whose_request_cannot_be_sent_never_terminates_the_running_instance(
    tmp_path: Path,
) -> None:
    fake = FakeCluster((gpu_worker(W1, 24),), known_models=frozenset({"m"}))
    store = StateStore(tmp_path / "state")
    old = config({"a": model(gib=4)})

    def apply(cfg: Config) -> None:
        for _ in range(3):
            reconcile_once(
                config=cfg, demands=demands(cfg), cluster=fake, store=store, opts=Options(act=True)
            )

    apply(old)
    assert fake.instances["a"].status == "READY"
    new = Config.model_validate(
        {**old.model_dump(), "models": {"a": {**model(gib=4), "engine_args": DATED}}}
    )
    apply(new)
    assert "a" in fake.instances, "the running instance was terminated"
    assert fake.instances["a"].status == "READY"
    assert ("terminate", "a") not in fake.log


def test_the_adapter_never_sends_a_body_that_is_not_json() -> None:
    """The last line of defence: a PermanentClusterError naming the key, nothing sent."""
    from daemon.adapters.secrets import Credentials
    from daemon.adapters.xinference import XinferenceAdapter
    from daemon.core.planning import Launch
    from daemon.errors import PermanentClusterError

    class NoNetwork:
        trust_env = True

        def request(self, *args: object, **kwargs: object) -> None:
            del args, kwargs
            raise AssertionError("sent")

    adapter = XinferenceAdapter(
        endpoint="http://127.0.0.1:1",
        credentials=Credentials(mode="none"),
        session=NoNetwork(),  # type: ignore[arg-type]  # not a requests.Session: fails if used
    )
    launch = Launch(
        uid="a",
        reason="missing",
        spec_hash="0",
        model_name="m",
        model_type="LLM",
        worker=None,
        gpu_indexes=(),
        n_gpu=None,
        replica=1,
        launch_args={"model_engine": "Transformers", **DATED},
        claims={},
    )
    with pytest.raises(PermanentClusterError) as info:
        adapter.launch(launch)
    assert "speculative_config.released" in str(info.value)
