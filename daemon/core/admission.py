"""Place models on GPUs without over-committing any of them.

Models are taken in precedence order (priority, then uid). Each is placed greedily, best fit (the
GPUs it leaves least room on). When greedy finds no room, an exhaustive search may move the models
admitted earlier in this pass (none of them is running yet): over the whole cluster when at most
``SEARCH_MAX_MOVABLE`` models could move, else worker by worker. Only if that also fails is the
model refused, with the numbers that decided it.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from daemon.core.alternatives import alternatives, change_text
from daemon.core.demand import Claim, Demand, claim_on, grown_claim
from daemon.core.engines import FRACTION_ENGINES
from daemon.core.observed import GpuRef, Worker
from daemon.core.units import fmt_gib
from daemon.core.vllm_rules import UNKNOWN, VllmRules

SEARCH_BUDGET = 20_000  # placements the search may try for one refused model
SEARCH_MAX_MOVABLE = 10  # models one search may move (beyond this, search worker by worker)
SEARCH_MAX_WORKERS = 16  # workers the worker-by-worker repair tries, most free first


@dataclass(frozen=True, kw_only=True)
class GpuCapacity:
    """How much of one GPU new placements may take, and why (every term in bytes)."""

    ref: GpuRef
    total: int
    limit: int  # max_fraction x total - reserve
    external: int  # used by processes this pass does not account to a model
    staying: int  # held by models that keep running
    rules: VllmRules = UNKNOWN  # how the vLLM on this GPU's worker accounts for memory

    @property
    def resident(self) -> int:
        """Memory other processes hold on this GPU when a launch starts (vLLM versions with a
        global budget charge it to the new instance)."""
        return self.external + self.staying

    @property
    def available(self) -> int:
        return self.limit - self.external - self.staying

    def explain(self) -> str:
        return (
            f"{self.ref}: {fmt_gib(max(self.available, 0))} available of {fmt_gib(self.total)} "
            f"(plan limit {fmt_gib(self.limit)}, used outside the plan {fmt_gib(self.external)}, "
            f"kept models {fmt_gib(self.staying)})"
        )


@dataclass(frozen=True, kw_only=True)
class Placement:
    """Where an admitted model goes and what it holds on each of its GPUs."""

    uid: str
    worker: str | None
    gpus: tuple[GpuRef, ...]
    claims: tuple[Claim, ...]  # aligned with gpus

    @property
    def utilization(self) -> float | None:
        values = [c.utilization for c in self.claims if c.utilization is not None]
        return min(values) if values else None


@dataclass(frozen=True, kw_only=True)
class Refusal:
    """A model that cannot be placed now, with the numbers that decided it: what it needs on each
    GPU, what the GPU that comes closest has available (both None when no GPU could be sized
    against, e.g. none matches its placement), and each single change of config keys with which
    it would fit now (``{"memory.max_model_len": 8192}``)."""

    uid: str
    reason: str
    needed_bytes: int | None = None
    available_bytes: int | None = None
    fits_with: tuple[Mapping[str, Any], ...] = ()

    @property
    def missing_bytes(self) -> int | None:
        """Bytes missing on each GPU (on the one that comes closest)."""
        if self.needed_bytes is None or self.available_bytes is None:
            return None
        return max(0, self.needed_bytes - max(self.available_bytes, 0))

    def figures(self) -> dict[str, Any]:
        """The numbers as JSON-ready fields (plan --json, the daemon's admission events)."""
        return {
            "needed_bytes": self.needed_bytes,
            "available_bytes": self.available_bytes,
            "missing_bytes": self.missing_bytes,
            "fits_with": [dict(change) for change in self.fits_with],
        }


@dataclass(frozen=True, kw_only=True)
class Admission:
    placements: tuple[Placement, ...]
    refused: tuple[Refusal, ...]


def precedence(demand: Demand) -> tuple[int, str]:
    """Sort key: higher priority first, then uid (so the result never depends on input order)."""
    return (-demand.spec.priority, demand.uid)


Option = tuple[str, tuple[int, ...]]  # (worker address, GPU ids on the board)


class _Board:
    """Scratch state of one admission run (never escapes :func:`admit`).

    GPUs are numbered in GpuRef order; ``free`` is indexed by that number. For the common case (one
    GPU, no pin) ``_by_size`` keeps, per GPU size and vLLM rules, the (free, id) pairs sorted so
    best fit is a bisection instead of a scan of every GPU.
    """

    def __init__(self, capacities: Sequence[GpuCapacity], workers: Sequence[Worker]) -> None:
        caps = sorted(capacities, key=lambda c: c.ref)
        self.caps = caps
        self.refs = [c.ref for c in caps]
        ids = {c.ref: i for i, c in enumerate(caps)}
        self.free = [c.available for c in caps]
        self.workers: list[tuple[Worker, list[int]]] = [
            (w, sorted(ids[g.ref] for g in w.gpus if g.ref in ids))
            for w in sorted(workers, key=lambda w: w.address)
        ]
        self.assigned: dict[str, tuple[int, ...]] = {}
        self.demands: dict[str, Demand] = {}
        self._needs: dict[tuple[str, int, VllmRules], Claim] = {}
        self._eligible: dict[str, list[tuple[str, list[int]]]] = {}
        self._by_size: dict[tuple[int, VllmRules], list[tuple[int, int]]] = {}
        for i in range(len(caps)):
            self._by_size.setdefault(self._size(i), []).append((self.free[i], i))
        for pairs in self._by_size.values():
            pairs.sort()

    def _size(self, gpu: int) -> tuple[int, VllmRules]:
        """GPUs with the same total and vLLM rules give every demand the same claim."""
        return self.caps[gpu].total, self.caps[gpu].rules

    def claim(self, demand: Demand, gpu: int) -> Claim:
        total, rules = self._size(gpu)
        key = (demand.uid, total, rules)
        found = self._needs.get(key)
        if found is None:
            found = self._needs[key] = claim_on(demand, total, rules=rules)
        return found

    def need(self, demand: Demand, gpu: int) -> int:
        return self.claim(demand, gpu).bytes

    def eligible(self, demand: Demand) -> list[tuple[str, list[int]]]:
        """Workers (and their GPU ids) that the demand's pins allow, in a fixed order."""
        cached = self._eligible.get(demand.uid)
        if cached is None:
            cached = self._eligible[demand.uid] = self.eligible_uncached(demand)
        return cached

    def eligible_uncached(self, demand: Demand) -> list[tuple[str, list[int]]]:
        place = demand.spec.placement
        out = []
        for worker, gpus in self.workers:
            if place.worker is not None and not worker.matches(place.worker):
                continue
            chosen = gpus
            if place.gpu_indexes is not None:
                wanted = set(place.gpu_indexes)
                chosen = [g for g in gpus if self.refs[g].index in wanted]
                if len(chosen) != len(wanted):
                    continue
            if len(chosen) >= demand.gpus_needed:
                out.append((worker.address, chosen))
        return out

    def fits_now(self, demand: Demand) -> bool:
        """Whether ``demand`` (any variant of a refused model) fits the room left now."""
        for _, gpus in self.eligible_uncached(demand):
            needs: dict[tuple[int, VllmRules], Claim] = {}
            room = 0
            for g in gpus:
                size = self._size(g)  # the same size and vLLM rules as admission's own claims
                claim = needs.get(size) or needs.setdefault(
                    size, claim_on(demand, size[0], rules=size[1])
                )
                room += claim.impossible is None and self.free[g] >= claim.bytes
            if room >= demand.gpus_needed:
                return True
        return False

    def most_gpus(self, demand: Demand) -> int:
        """GPUs on the largest worker the demand's worker pin allows."""
        wanted = demand.spec.placement.worker
        return max(
            (len(g) for w, g in self.workers if wanted is None or w.matches(wanted)), default=0
        )

    def _simple(self, demand: Demand) -> bool:
        place = demand.spec.placement
        return demand.gpus_needed == 1 and place.worker is None and place.gpu_indexes is None

    def options(self, demand: Demand, only: str | None = None) -> Iterator[Option]:
        """Every GPU set the demand could take now, tightest fit first on each worker."""
        for address, gpus in self.eligible(demand):
            if only is not None and address != only:
                continue
            fitting = [g for g in gpus if self.free[g] >= self.need(demand, g)]
            fitting.sort(key=lambda g: (self.free[g] - self.need(demand, g), g))
            for combo in itertools.combinations(fitting, demand.gpus_needed):
                yield address, combo

    def greedy(self, demand: Demand) -> Option | None:
        if self._simple(demand):
            return self._best_single(demand)
        best: tuple[int, str, tuple[int, ...]] | None = None
        k = demand.gpus_needed
        for address, gpus in self.eligible(demand):
            fitting = [g for g in gpus if self.free[g] >= self.need(demand, g)]
            if len(fitting) < k:
                continue
            fitting.sort(key=lambda g: (self.free[g] - self.need(demand, g), g))
            chosen = tuple(sorted(fitting[:k]))
            slack = sum(self.free[g] - self.need(demand, g) for g in chosen)
            if best is None or (slack, address) < best[:2]:
                best = (slack, address, chosen)
        return None if best is None else (best[1], best[2])

    def _best_single(self, demand: Demand) -> Option | None:
        best: tuple[int, int] | None = None  # (slack, gpu id)
        for pairs in self._by_size.values():
            if not pairs:
                continue
            need = self.need(demand, pairs[0][1])
            at = bisect.bisect_left(pairs, (need, -1))
            if at < len(pairs):
                free, gpu = pairs[at]
                if best is None or (free - need, gpu) < best:
                    best = (free - need, gpu)
        if best is None:
            return None
        return self.refs[best[1]].worker, (best[1],)

    def take(self, demand: Demand, gpus: tuple[int, ...], sign: int = 1) -> None:
        for g in gpus:
            pairs = self._by_size[self._size(g)]
            del pairs[bisect.bisect_left(pairs, (self.free[g], g))]
            self.free[g] -= sign * self.need(demand, g)
            bisect.insort(pairs, (self.free[g], g))

    def impossible_everywhere(self, demand: Demand) -> bool:
        """True when the demand cannot fit any eligible GPU size at all (not even an empty GPU)."""
        sizes = {self._size(g): g for _, gpus in self.eligible(demand) for g in gpus}
        return bool(sizes) and all(self.claim(demand, g).impossible for g in sizes.values())

    def max_need(self, demand: Demand) -> int:
        return max(
            (self.need(demand, g) for _, gpus in self.eligible(demand) for g in gpus), default=0
        )


def _search(
    board: _Board, movable: list[Demand], budget: int, only: str | None
) -> dict[str, Option] | None:
    """Backtracking placement of all ``movable`` demands at once (largest need first).

    On success the board holds the placements; on failure it is back where it started.
    """
    order = sorted(movable, key=lambda d: (-board.max_need(d), d.uid))
    assignment: dict[str, Option] = {}
    attempts = 0

    def place(i: int) -> bool:
        nonlocal attempts
        if i == len(order):
            return True
        demand = order[i]
        for option in board.options(demand, only):
            attempts += 1
            if attempts > budget:
                return False
            board.take(demand, option[1])
            assignment[demand.uid] = option
            if place(i + 1):
                return True
            board.take(demand, option[1], sign=-1)
            del assignment[demand.uid]
        return False

    return dict(assignment) if place(0) else None


def _repair(
    board: _Board, placed: list[Demand], demand: Demand, budget: int
) -> dict[str, Option] | None:
    """Place ``demand`` by moving earlier admissions of this pass: globally when few could move,
    else within one worker at a time. Leaves the board unchanged on failure."""
    if len(placed) <= SEARCH_MAX_MOVABLE:
        scopes: list[tuple[str | None, list[Demand]]] = [(None, placed)]
    else:
        addresses = sorted(
            (a for a, _ in board.eligible(demand)),
            key=lambda a: -sum(board.free[g] for g in dict(board.eligible(demand))[a]),
        )[:SEARCH_MAX_WORKERS]
        scopes = []
        for address in addresses:
            local = [d for d in placed if board.refs[board.assigned[d.uid][0]].worker == address]
            if len(local) <= SEARCH_MAX_MOVABLE:
                scopes.append((address, local))
    for only, movable in scopes:
        for d in movable:  # lift them off the board
            board.take(d, board.assigned[d.uid], sign=-1)
        result = _search(board, [*movable, demand], budget, only)
        if result is not None:
            board.assigned.update({uid: gpus for uid, (_, gpus) in result.items()})
            return result
        for d in movable:
            board.take(d, board.assigned[d.uid])
    return None


def _refusal(board: _Board, demand: Demand, searched: bool) -> Refusal:
    k = demand.gpus_needed
    eligible = board.eligible(demand)
    place = demand.spec.placement
    if not eligible:
        pin = f"worker {place.worker!r}" if place.worker else "any worker"
        if place.gpu_indexes is not None:
            pin += f" with GPU indexes {list(place.gpu_indexes)}"
        reason = f"no GPU matches the placement: needs {k} GPU(s) on {pin}"
        if board.caps:
            return Refusal(uid=demand.uid, reason=reason)
        if demand.spec.model_engine in FRACTION_ENGINES:
            reason += f"; the cluster has no GPUs, and {demand.spec.model_engine} needs one"
            return Refusal(uid=demand.uid, reason=reason)
        return Refusal(
            uid=demand.uid,
            reason=f'{reason}; the cluster has no GPUs: run it on the CPU with placement.device = "cpu"',
            fits_with=({"placement.device": "cpu"},),
        )
    claims = {g: board.claim(demand, g) for _, gpus in eligible for g in gpus}
    gpu, need = _closest(board, demand, eligible)
    available = board.free[gpu]
    short = need - max(available, 0)
    shortfall = f"{fmt_gib(short)} more than the {fmt_gib(max(available, 0))} available on {board.refs[gpu]}"
    fits_with = alternatives(demand, board.fits_now, most_gpus=board.most_gpus(demand))
    offer = f"; fits with {', or '.join(change_text(c) for c in fits_with)}" if fits_with else ""
    impossible = next((c.impossible for c in claims.values() if c.impossible), None)
    if impossible and all(c.impossible for c in claims.values()):
        reason = f"{impossible}: {fmt_gib(need)} per GPU, {shortfall}{offer}"
    else:
        most = sorted(claims, key=lambda g: (-board.free[g], g))[: max(k, 2)]
        where = "; ".join(_describe(board, g) for g in most)
        shape = f"on each of {k} GPUs of one worker" if k > 1 else "on one GPU"
        how = " (nor after re-placing this pass's other launches)" if searched else ""
        reason = f"needs {fmt_gib(need)} {shape}, {shortfall}; does not fit{how}: {where}{offer}"
    return Refusal(
        uid=demand.uid,
        reason=reason,
        needed_bytes=need,
        available_bytes=available,
        fits_with=fits_with,
    )


def _closest(
    board: _Board, demand: Demand, eligible: list[tuple[str, list[int]]]
) -> tuple[int, int]:
    """The GPU that comes closest to holding the demand (for ``k`` GPUs: the tightest of the best
    ``k`` on the best worker) and what the demand needs there, in bytes. A claim refused for an
    intent the GPU cannot meet (a pinned utilization too small) counts what that intent needs."""
    k = demand.gpus_needed
    best: tuple[int, int, int] | None = None  # (slack, gpu, need)
    for _, gpus in eligible:
        ranked = sorted((_needed(board, demand, g) - board.free[g], g) for g in gpus)
        short, g = ranked[min(k, len(ranked)) - 1]
        slack = -short
        candidate = (slack, -g, _needed(board, demand, g))
        if best is None or candidate[:2] > best[:2]:
            best = candidate
    assert best is not None, "eligible is not empty"
    return -best[1], best[2]


def _needed(board: _Board, demand: Demand, gpu: int) -> int:
    claim = board.claim(demand, gpu)
    util = demand.spec.memory.gpu_memory_utilization
    if claim.impossible and isinstance(util, float):  # the pin is too small: what would do
        spec = demand.spec
        minimum = spec.model_copy(
            update={"memory": spec.memory.model_copy(update={"gpu_memory_utilization": "minimum"})}
        )
        return claim_on(replace(demand, spec=minimum), board.caps[gpu].total).bytes
    return claim.bytes


def _describe(board: _Board, gpu: int) -> str:
    """One GPU's room now: the static capacity and what this pass has already given away."""
    taken = [
        f"{uid} {fmt_gib(board.need(d, gpu))}"
        for uid, d in sorted(board.demands.items())
        if gpu in board.assigned.get(uid, ())
    ]
    given = f", higher-precedence launches {', '.join(taken)}" if taken else ""
    return f"{board.caps[gpu].explain()}{given}; left now {fmt_gib(max(board.free[gpu], 0))}"


def admit(
    demands: Sequence[Demand],
    capacities: Sequence[GpuCapacity],
    workers: Sequence[Worker],
    *,
    search_budget: int = SEARCH_BUDGET,
) -> Admission:
    """Admit demands in precedence order: GPU demands onto GPUs, CPU demands onto their worker."""
    board = _Board(capacities, workers)
    cpu_workers: dict[str, str | None] = {}
    refused: list[Refusal] = []
    placed: list[Demand] = []
    for demand in sorted(demands, key=precedence):
        board.demands[demand.uid] = demand
        if demand.gpus_needed == 0:
            cpu = _place_cpu(board, demand)
            if isinstance(cpu, Refusal):
                refused.append(cpu)
            else:
                cpu_workers[demand.uid] = cpu
            continue
        if board.impossible_everywhere(demand):
            refused.append(_refusal(board, demand, searched=False))
            continue
        choice = board.greedy(demand)
        if choice is not None:
            board.take(demand, choice[1])
            board.assigned[demand.uid] = choice[1]
            placed.append(demand)
        elif search_budget > 0 and placed and _repair(board, placed, demand, search_budget):
            placed.append(demand)
        else:
            refused.append(_refusal(board, demand, searched=search_budget > 0 and bool(placed)))
    placements = _fill(board, placed) + tuple(
        Placement(uid=uid, worker=worker, gpus=(), claims=()) for uid, worker in cpu_workers.items()
    )
    return Admission(
        placements=tuple(sorted(placements, key=lambda p: p.uid)),
        refused=tuple(sorted(refused, key=lambda r: r.uid)),
    )


def _place_cpu(board: _Board, demand: Demand) -> str | Refusal | None:
    wanted = demand.spec.placement.worker
    if wanted is None:
        return None
    for worker, _ in board.workers:
        if worker.matches(wanted):
            return worker.address
    return Refusal(uid=demand.uid, reason=f"worker {wanted!r} is not in the cluster")


def _fill(board: _Board, placed: list[Demand]) -> tuple[Placement, ...]:
    """Give 'auto' fraction models what is left on their GPUs, shared among those on each GPU."""
    growers = [
        d
        for d in sorted(placed, key=precedence)
        if d.uses_fraction and d.spec.memory.gpu_memory_utilization == "auto"
    ]
    sharing: dict[int, int] = {}
    for d in growers:
        for g in board.assigned[d.uid]:
            sharing[g] = sharing.get(g, 0) + 1
    grown: dict[tuple[str, int], Claim] = {}
    for d in growers:
        gpus = board.assigned[d.uid]
        extra = min(board.free[g] // sharing[g] for g in gpus)
        for g in gpus:
            base = board.claim(d, g)
            new = grown_claim(base, extra_bytes=extra, gpu_total_bytes=board.caps[g].total)
            grown[(d.uid, g)] = new
            board.free[g] -= new.bytes - base.bytes
            sharing[g] -= 1
    out = []
    for d in placed:
        gpus = board.assigned[d.uid]
        out.append(
            Placement(
                uid=d.uid,
                worker=board.refs[gpus[0]].worker,
                gpus=tuple(board.refs[g] for g in gpus),
                claims=tuple(grown.get((d.uid, g), board.claim(d, g)) for g in gpus),
            )
        )
    return tuple(out)


__all__ = ["Admission", "GpuCapacity", "Placement", "Refusal", "admit", "precedence"]
