"""Profiling: per-step device time (CUDA events on the CUDA backend, wall time on the CPU), host time per
run, each step's share, and the memory plan; every step is also an NVTX range for Nsight Systems.

It is an executor observer, like debug mode, so the profiled run is the ordinary eager run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .decisions import DecisionLog
from .pipeline.ir import Node, SnippetCall, Step


class ProfileObserver:
    """Brackets each step with backend timing marks and an NVTX range. ``attach`` it to the backend once
    the Orchestrator exists (the observer is handed to the Orchestrator before its backend is made)."""

    def __init__(self) -> None:
        self.backend: Any = None
        self.marks: dict[tuple[int, int], tuple[Any, Any]] = {}  # (step, call within the run) -> marks
        self.steps: dict[int, Step] = {}
        self.samples: dict[int, list[float]] = {}  # per run: the step's total time over its calls
        self.calls: dict[int, list[int]] = {}
        self.decisions = DecisionLog()
        try:
            import nvtx

            self._push, self._pop = nvtx.push_range, nvtx.pop_range
        except ImportError:  # profiling still works, without Nsight ranges
            self._push = self._pop = None

    def attach(self, backend: Any) -> None:
        self.backend = backend

    def step_started(self, step: Step) -> None:
        # a step inside a loop runs several times per run: each call has its own marks
        key = (step.id, self._count.get(step.id, 0))
        if key not in self.marks:
            self.marks[key] = (self.backend.timing_mark(), self.backend.timing_mark())
            self.steps[step.id] = step
        if self._push is not None:
            self._push(step.name)
        self.backend.record_mark(self.marks[key][0])

    def step_done(self, step: Step) -> None:
        calls = self._count.get(step.id, 0)
        self.backend.record_mark(self.marks[step.id, calls][1])
        if self._pop is not None:
            self._pop()
        self._count[step.id] = calls + 1

    def branch_taken(self, block: Node, taken: str) -> None:
        self.decisions.branch_taken(block, taken)

    def begin_run(self) -> None:
        self._count: dict[int, int] = {}

    def end_run(self) -> None:
        self.backend.synchronize()
        for step_id, calls in self._count.items():
            total = sum(self.backend.elapsed(*self.marks[step_id, k]) for k in range(calls))
            self.samples.setdefault(step_id, []).append(total)
            self.calls.setdefault(step_id, []).append(calls)

    def clear(self) -> None:
        """Forget the warm-up runs."""
        self.samples.clear()
        self.calls.clear()
        self.decisions.clear()


@dataclass
class StepProfile:
    name: str
    kind: str
    target: str
    runs: int  # runs in which the step ran
    calls_per_run: float  # more than 1 inside loops
    median_ms: float  # per run, over all its calls
    share: float


@dataclass
class Profile:
    device: str
    iterations: int
    host_ms_per_run: float
    steps: list[StepProfile]
    memory: dict[str, Any]
    decisions: list[str] = field(default_factory=list)  # branches taken and loop counts over the runs

    def table(self) -> str:
        lines = [f"{'step':28} {'kind':8} {'target':18} {'runs':>5} {'calls/run':>9} {'median ms':>10} {'share':>7}"]
        for s in self.steps:
            lines.append(f"{s.name[:28]:28} {s.kind:8} {s.target[:18]:18} {s.runs:>5} {s.calls_per_run:>9.3g} "
                         f"{s.median_ms:>10.4f} {s.share:>6.1%}")
        lines += self.decisions
        lines.append(f"host time per run: {self.host_ms_per_run:.4f} ms (median of {self.iterations}, {self.device})")
        if self.memory:
            lines.append("memory: " + ", ".join(f"{k} {v}" for k, v in self.memory.items()))
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def profile_pipeline(path: str, inputs: Mapping[str, Any], *, iterations: int = 100, device: str = "auto",
                     warmup: int = 5, **options: Any) -> Profile:
    from .api import Orchestrator

    observer = ProfileObserver()
    orch = Orchestrator.from_yaml(path, device=device, observer=observer, **options)
    host = []
    with orch.acquire() as instance:  # every profiled run on the instance whose marks the observer records
        observer.attach(instance.backend)
        for i in range(warmup + iterations):
            observer.begin_run()
            start = time.perf_counter()
            instance.run(inputs)
            host.append(time.perf_counter() - start)
            observer.end_run()
            if i < warmup:
                observer.clear()
    medians = {sid: statistics.median(v) for sid, v in observer.samples.items()}
    total = sum(medians.values()) or 1.0
    steps = [StepProfile(observer.steps[sid].name, _kind(observer.steps[sid]), _target(observer.steps[sid]),
                         len(observer.samples[sid]), statistics.mean(observer.calls[sid]), medians[sid] * 1e3,
                         medians[sid] / total)
             for sid in sorted(medians)]
    memory = orch.backend.memory_summary() if hasattr(orch.backend, "memory_summary") else _plan(orch.pipeline)
    device_name = orch.device
    orch.close()
    return Profile(device_name, iterations, statistics.median(host[warmup:]) * 1e3, steps, memory,
                   observer.decisions.lines())


def _plan(pipeline: Any) -> dict[str, Any]:
    """The memory plan, when every dimension has bounds (the CPU backend does not need them)."""
    from .errors import ConfigError
    from .planning import plan_pipeline

    try:
        return plan_pipeline(pipeline).summary()
    except ConfigError:
        return {}


def _kind(step: Step) -> str:
    return "snippet" if isinstance(step, SnippetCall) else "kernel"


def _target(step: Step) -> str:
    return step.snippet if isinstance(step, SnippetCall) else step.kernel
