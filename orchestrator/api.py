"""The public entry point: ``Orchestrator.from_yaml(path).run(inputs)``."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from .backends.base import Backend
from .errors import MissingDependencyError
from .executor import Executor, Observer
from .pipeline.ir import Pipeline
from .pipeline.load import load_pipeline

log = logging.getLogger("orchestrator")

Device = Literal["auto", "cpu", "cuda"]


def cuda_backend_status() -> tuple[bool, str]:
    """Whether the CUDA backend can run here, and why not if it cannot."""
    from .backends import cuda

    return cuda.available()


def _make_backend(pipeline: Pipeline, device: Device, options: Mapping[str, Any]) -> Backend:
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', not {device!r}")
    if device in ("auto", "cuda"):
        ok, reason = cuda_backend_status()
        if ok:
            from .backends.cuda import CudaBackend

            return CudaBackend(pipeline, **options)
        if device == "cuda":
            raise MissingDependencyError(f"the CUDA backend cannot run here: {reason}")
        log.warning("orchestrator: %s; using the CPU reference backend", reason)
    from .backends.cpu import CpuBackend

    return CpuBackend(pipeline)


class Orchestrator:
    """A loaded pipeline bound to a backend, ready to ``run``."""

    def __init__(self, pipeline: Pipeline | str | Path, *, device: Device = "auto",
                 observer: Observer | None = None, graphs: bool | str = False, debug: bool = False,
                 **backend_options: Any):
        """``graphs``: False (eager), True (one CUDA graph with device-side branching) or "segments"
        (graphs between host-decided branches); graph modes need the CUDA backend. ``backend_options``
        go to the CUDA backend: ``stream`` (an external stream), ``cache_dir``, ``device_index``.
        ``debug``: synchronise and check after every step, record and optionally dump every tensor (see
        ``debug_run`` and ``step_through``); debug runs are eager."""
        if debug and graphs:
            raise ValueError("debug mode runs step by step; it cannot be combined with graphs")
        self.pipeline = pipeline if isinstance(pipeline, Pipeline) else load_pipeline(pipeline)
        self.backend_options = dict(backend_options)
        self.backend = _make_backend(self.pipeline, device, backend_options)
        if debug:
            from .debug import DebugObserver

            observer = DebugObserver(self.pipeline, self.backend, observer)
        self.executor = Executor(self.pipeline, self.backend, observer, graphs)

    @classmethod
    def from_yaml(cls, path: str | Path, *, device: Device = "auto", **options: Any) -> Orchestrator:
        return cls(load_pipeline(path), device=device, **options)

    @property
    def device(self) -> str:
        return self.backend.name

    def run(self, inputs: Mapping[str, Any], *, out: Mapping[str, Any] | None = None,
            device_outputs: bool = False) -> dict[str, Any]:
        """Run the pipeline once. ``inputs`` maps input names to numpy arrays or device arrays
        (``__cuda_array_interface__`` or DLPack; host inputs: scalars). Outputs are numpy copies; ``out``
        writes chosen outputs into the caller's numpy or device arrays; ``device_outputs=True`` returns
        views into device memory (``__cuda_array_interface__``), valid until the next run."""
        return self.executor.run(inputs, out, device_outputs)

    def debug_run(self, inputs: Mapping[str, Any], **options: Any):
        """Run once in debug mode; options: dump_dir, compare ("reference", "fp32", a pipeline path or an
        Orchestrator), atol, rtol, steps (names), sentinels. Returns a DebugReport."""
        from .debug import debug_run

        return debug_run(self, inputs, **options)

    def step_through(self, inputs: Mapping[str, Any]):
        """Iterate over the steps of one run as they execute (debug mode); stop iterating to abandon it."""
        from .debug import step_through

        return step_through(self, inputs)

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Orchestrator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
