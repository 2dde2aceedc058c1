"""Which vLLM rules apply on each worker: a running model's report, else the config's declaration.

Precedence, most trusted first: the version a running vLLM model on the worker reports through
Xinference (``Worker.vllm_version``, measured on that worker's Python environment); the worker's own
``[cluster.workers."<address>"] vllm_version``; ``[cluster] vllm_version``; none (the most
conservative rules, ``vllm_rules.UNKNOWN``). A declaration that disagrees with a report, and a
version outside the rules read from vLLM's source, are said in a note.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from daemon.core.desired import ClusterConfig
from daemon.core.observed import Worker, worker_matches
from daemon.core.vllm_rules import UNKNOWN, VllmRules, rules_for


@dataclass(frozen=True, kw_only=True)
class WorkerVllm:
    """The vLLM version the planner assumes on one worker, where it came from, and its rules."""

    address: str
    version: str | None
    source: str
    rules: VllmRules
    note: str | None = None

    @property
    def known(self) -> bool:
        return self.rules is not UNKNOWN


def _declared(cluster: ClusterConfig, address: str) -> tuple[str | None, str]:
    """The declared version for ``address`` and the key path that declares it."""
    matching = [key for key in cluster.workers if worker_matches(address, key)]
    # the full address beats the bare host when both are declared
    for key in sorted(matching, key=lambda k: (k != address, k)):
        version = cluster.workers[key].vllm_version
        if version is not None:
            return version, f'cluster.workers."{key}".vllm_version'
    if cluster.vllm_version is not None:
        return cluster.vllm_version, "cluster.vllm_version"
    return None, ""


def worker_vllm(cluster: ClusterConfig, worker: Worker) -> WorkerVllm:
    """The version and rules for one worker (see the module docstring for the precedence)."""
    declared, where = _declared(cluster, worker.address)
    reported = worker.vllm_version
    notes: list[str] = []
    if reported is not None:
        version, source = reported, "reported by a running vLLM model"
        if declared is not None and declared != reported:
            notes.append(
                f"worker {worker.address}: {where} says vLLM {declared}, a running model "
                f"reports {reported}; planning with {reported}"
            )
    elif declared is not None:
        version, source = declared, f"declared ({where})"
    else:
        version, source = None, "unknown"
    rules = rules_for(version)
    if version is not None and rules is UNKNOWN:
        notes.append(
            f"worker {worker.address}: vLLM {version} is outside the releases whose memory rules "
            "were read (0.5.4-0.33.x): the most conservative rules apply"
        )
    return WorkerVllm(
        address=worker.address,
        version=version,
        source=source,
        rules=rules,
        note="; ".join(notes) or None,
    )


def worker_vllms(cluster: ClusterConfig, workers: Iterable[Worker]) -> Mapping[str, WorkerVllm]:
    """:func:`worker_vllm` for every worker, by address."""
    return {w.address: worker_vllm(cluster, w) for w in workers}
