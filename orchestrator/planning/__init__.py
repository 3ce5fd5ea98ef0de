"""Planning: tensor lifetimes over every execution path, and the device memory plan. Pure Python."""

from __future__ import annotations

from ..pipeline.ir import Pipeline
from .liveness import Liveness, analyse
from .memory import MemoryPlan, plan_memory
from .sizes import concrete_shapes, dims_at, tensor_bytes


def plan_pipeline(pipeline: Pipeline, at: str = "max") -> MemoryPlan:
    """The arena plan of a pipeline with every dimension at its ``min``/``opt``/``max`` bound."""
    shapes = concrete_shapes(pipeline, dims_at(pipeline, at))
    return plan_memory(pipeline, tensor_bytes(pipeline, shapes))


__all__ = ["Liveness", "MemoryPlan", "analyse", "concrete_shapes", "dims_at", "plan_memory", "plan_pipeline",
           "tensor_bytes"]
