"""The device memory plan: one arena, every intermediate at a fixed offset, assigned once at load time.

Offsets come from greedy-by-size best-fit (as in TFLite's arena planner): tensors are placed largest
first, each in the smallest gap left between the tensors it conflicts with (see ``liveness``), at
256-byte alignment. Tensors of different cases of a branch never conflict, so they share space.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..pipeline.ir import Pipeline
from .liveness import Liveness, analyse

ALIGNMENT = 256


def align(n: int, alignment: int = ALIGNMENT) -> int:
    return -(-n // alignment) * alignment


@dataclass(frozen=True)
class MemoryPlan:
    offsets: dict[str, int]  # tensor -> byte offset in the arena
    sizes: dict[str, int]  # tensor -> bytes (unaligned)
    arena_bytes: int  # the planned arena for intermediates
    naive_bytes: int  # every intermediate in its own (aligned) buffer
    lower_bound: int  # max aligned bytes alive at once on any path
    exact: bool  # False when liveness fell back to its conservative single path

    @property
    def ratio(self) -> float:
        return self.arena_bytes / self.lower_bound if self.lower_bound else 1.0

    def summary(self) -> dict[str, float | int | bool]:
        return {"tensors": len(self.offsets), "naive_bytes": self.naive_bytes, "arena_bytes": self.arena_bytes,
                "lower_bound_bytes": self.lower_bound, "arena_over_lower_bound": round(self.ratio, 4),
                "exact_liveness": self.exact}


def plan_memory(pipeline: Pipeline, sizes: Mapping[str, int], liveness: Liveness | None = None,
                alignment: int = ALIGNMENT) -> MemoryPlan:
    """Place every intermediate (step output) in one arena; ``sizes`` gives bytes per tensor."""
    liveness = liveness or analyse(pipeline)
    names = [n for n, t in pipeline.tensors.items() if t.origin == "step"]
    slot = {n: align(max(sizes[n], 1), alignment) for n in names}
    first_use = _first_event(liveness)
    order = sorted(names, key=lambda n: (-slot[n], first_use.get(n, 0), n))
    offsets: dict[str, int] = {}
    for name in order:
        taken = sorted((offsets[o], offsets[o] + slot[o]) for o in offsets
                       if frozenset((name, o)) in liveness.conflicts)
        offsets[name] = _best_fit(taken, slot[name])
    arena = max((offsets[n] + slot[n] for n in names), default=0)
    return MemoryPlan(offsets=offsets, sizes={n: sizes[n] for n in names}, arena_bytes=arena,
                      naive_bytes=sum(slot.values()), lower_bound=liveness.lower_bound(lambda n: slot.get(n, 0)),
                      exact=liveness.exact)


def _best_fit(taken: list[tuple[int, int]], size: int) -> int:
    """The start of the smallest gap between occupied ranges that holds ``size`` (else the end)."""
    best, best_gap, cursor = None, None, 0
    for start, end in taken:
        gap = start - cursor
        if gap >= size and (best_gap is None or gap < best_gap):
            best, best_gap = cursor, gap
        cursor = max(cursor, end)
    return cursor if best is None else best


def _first_event(liveness: Liveness) -> dict[str, int]:
    first: dict[str, int] = {}
    for spans in liveness.intervals:
        for name, ivs in spans.items():
            first[name] = min(first.get(name, ivs[0][0]), ivs[0][0])
    return first
