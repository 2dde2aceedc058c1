"""The fuzz properties of tests/unit/test_fuzz_inputs.py with a large example budget.

    .venv/bin/python benchmarks/fuzz_long.py --examples 20000 [--only config_bytes,planner]
        [--seconds 600] [--seed 1]

Every check runs under hypothesis's generate phase only (no shrinking, no example database), and a
failing example does not stop the run: each failure is counted and grouped by its signature
(exception type and the innermost frame in daemon/), with the first input of each signature kept
for the report. Prints, per property: examples run, seconds, examples/s, failing examples and the
distinct failure signatures; exits 1 when any check failed.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402

from tests.unit.test_fuzz_inputs import CHECKS  # noqa: E402


class TimeUp(Exception):
    """Raised past the time cap; hypothesis (no shrink phase) re-raises it and the run ends."""


class Tally:
    def __init__(self) -> None:
        self.examples = 0
        self.failures = 0
        self.signatures: Counter[str] = Counter()
        self.first_input: dict[str, str] = {}


def signature(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/daemon/" in f.filename] or frames
    last = ours[-1]
    where = (
        f"{Path(last.filename).relative_to(REPO) if str(REPO) in last.filename else last.filename}"
    )
    return f"{type(exc).__name__} in {last.name} ({where}:{last.lineno})"


def run_one(name: str, examples: int, seconds: float, rng_seed: int) -> Tally:
    check, strategy = CHECKS[name]
    tally = Tally()
    deadline = time.monotonic() + seconds

    @seed(rng_seed)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(value=strategy)
    def run(value: Any) -> None:
        if time.monotonic() > deadline:
            raise TimeUp
        tally.examples += 1
        try:
            if name == "planner":
                check(*value)
            else:
                check(value)
        except Exception as exc:
            tally.failures += 1
            sig = signature(exc)
            tally.signatures[sig] += 1
            message = str(exc).splitlines()[0][:120] if str(exc) else ""
            tally.first_input.setdefault(sig, f"{message!r} from {value!r}"[:400])

    with contextlib.suppress(TimeUp):
        run()
    return tally


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=20000, help="examples per property")
    parser.add_argument("--seconds", type=float, default=600.0, help="time cap per property")
    parser.add_argument(
        "--only", default="", help="comma-separated properties: " + ", ".join(CHECKS)
    )
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or list(CHECKS)
    import io

    from daemon.events import configure

    configure(fmt="json", stream=io.StringIO())  # the daemon check's events are not the output
    failed = False
    print(
        f"fuzz_long: {args.examples} examples per property, cap {args.seconds:g} s, seed {args.seed}"
    )
    for name in names:
        start = time.monotonic()
        tally = run_one(name, args.examples, args.seconds, args.seed)
        took = time.monotonic() - start
        rate = tally.examples / took if took else 0.0
        print(
            f"{name:<18} examples {tally.examples:>6}  time {took:7.1f} s  ({rate:6.1f}/s)  "
            f"failing {tally.failures:>5}  distinct {len(tally.signatures)}",
            flush=True,
        )
        for sig, count in tally.signatures.most_common():
            print(f"    {count:>5} x {sig}")
            print(f"            first: {tally.first_input[sig]}")
        failed = failed or tally.failures > 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
