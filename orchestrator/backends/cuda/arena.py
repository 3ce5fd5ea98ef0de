"""The layout of one instance's device arena: inputs | constants | planned intermediates | TensorRT scratch.

Every tensor starts at a multiple of 256 bytes (the planner's alignment, enough for any CUDA type and
TensorRT's I/O); the shared TensorRT scratch starts at a multiple of 512, which TensorRT 8.6 requires of
``setDeviceMemory`` (the arena's base is 512-aligned too: see ``DeviceAllocation``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ...pipeline.ir import Pipeline
from ...planning import analyse, plan_memory
from ...planning.memory import ALIGNMENT, MemoryPlan, align

SCRATCH_ALIGNMENT = 512


@dataclass(frozen=True)
class ArenaLayout:
    """Byte offsets of every tensor in the arena, and where the shared TensorRT scratch starts."""

    offsets: dict[str, int]
    capacity: dict[str, int]  # bytes reserved per tensor (at the dims' max bounds)
    scratch_offset: int
    scratch_bytes: int
    plan: MemoryPlan

    @property
    def total(self) -> int:
        return self.scratch_offset + self.scratch_bytes

    def summary(self) -> dict[str, int | float | bool]:
        fixed = self.plan_offset
        return {**self.plan.summary(), "inputs_and_constants_bytes": fixed,
                "tensorrt_scratch_bytes": self.scratch_bytes, "arena_total_bytes": self.total}

    @property
    def plan_offset(self) -> int:
        return min((o for n, o in self.offsets.items() if n in self.plan.offsets), default=self.scratch_offset)


def layout_arena(pipeline: Pipeline, max_bytes: Mapping[str, int], scratch: int) -> ArenaLayout:
    offsets, capacity, cursor = {}, {}, 0
    for name, info in pipeline.tensors.items():
        if info.origin in ("input", "constant"):
            offsets[name], capacity[name] = cursor, max_bytes[name]
            cursor += align(max(max_bytes[name], 1))
    plan = plan_memory(pipeline, max_bytes, analyse(pipeline))
    for name, offset in plan.offsets.items():
        offsets[name], capacity[name] = cursor + offset, max_bytes[name]
    cursor = align(cursor + plan.arena_bytes, SCRATCH_ALIGNMENT)
    return ArenaLayout(offsets, capacity, cursor, align(scratch, SCRATCH_ALIGNMENT), plan)


__all__ = ["ALIGNMENT", "SCRATCH_ALIGNMENT", "ArenaLayout", "layout_arena"]
