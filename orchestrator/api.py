"""The public entry point: ``Orchestrator.from_yaml(path).run(inputs)``.

An Orchestrator compiles its pipeline once (``CompiledPipeline``: engines, kernels, memory plan) and
makes ``instances`` execution instances from it; ``run`` is safe from any number of threads and takes a
free instance for each call (see pool.py).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from .backends.base import Backend, CompiledPipeline
from .errors import InputError, MissingDependencyError
from .executor import Executor, Observer
from .inputs import check_inputs
from .instance import Instance
from .options import RunOptions
from .pipeline.ir import Pipeline
from .pipeline.load import load_pipeline
from .pool import InstancePool

log = logging.getLogger("orchestrator")

Device = Literal["auto", "cpu", "cuda"]


def cuda_backend_status() -> tuple[bool, str]:
    """Whether the CUDA backend can run here, and why not if it cannot."""
    from .backends import cuda

    return cuda.available()


def compile_pipeline(pipeline: Pipeline, device: Device, options: RunOptions) -> CompiledPipeline:
    """Build the pipeline's shared products on the chosen backend (refusing options it cannot honour)."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', not {device!r}")
    if device in ("auto", "cuda"):
        ok, reason = cuda_backend_status()
        if ok:
            from .backends.cuda import CudaCompiled

            return CudaCompiled(pipeline, options)
        if device == "cuda":
            raise MissingDependencyError(f"the CUDA backend cannot run here: {reason}")
        log.warning("orchestrator: %s; using the CPU reference backend", reason)
    options.refuse_for_cpu()
    from .backends.cpu import CpuCompiled

    return CpuCompiled(pipeline)


class Orchestrator:
    """A loaded pipeline, compiled once, with a pool of execution instances ready to ``run``."""

    def __init__(self, pipeline: Pipeline | str | Path, *, device: Device = "auto",
                 observer: Observer | None = None, debug: bool = False, options: RunOptions | None = None,
                 **option_values: Any):
        """Options (a ``RunOptions`` or its fields as keywords): ``instances``, ``graphs``, ``stream``,
        ``cache_dir``, ``device_index``, ``timeout`` — see ``RunOptions``. ``debug``: synchronise and check
        after every step, record and optionally dump every tensor (see ``debug_run`` and
        ``step_through``); debug runs are eager, on one instance. ``observer`` is told about every step of
        every instance (with several instances, from several threads)."""
        self.options = RunOptions.of(options, **option_values)
        if debug and self.options.graphs:
            raise ValueError("debug mode runs step by step; it cannot be combined with graphs")
        if debug and self.options.instances > 1:
            raise ValueError("debug mode runs one instance; it cannot be combined with instances > 1")
        self.pipeline = pipeline if isinstance(pipeline, Pipeline) else load_pipeline(pipeline)
        self.compiled = compile_pipeline(self.pipeline, device, self.options)
        made: list[Instance] = []
        try:
            streams = self.options.streams() or (None,) * self.options.instances
            for index, stream in enumerate(streams):
                made.append(self._instance(index, stream, observer, debug))
        except BaseException:
            _release(made, self.compiled)
            raise
        self._pool = InstancePool(made, self.options.timeout)
        self._finalizer = weakref.finalize(self, _release_pool, self._pool, self.compiled)
        self._finalizer.atexit = False  # at exit the process frees everything; a held instance must not block it

    def _instance(self, index: int, stream: Any, observer: Observer | None, debug: bool) -> Instance:
        backend = self.compiled.instance(index, stream)
        try:
            if debug:
                from .debug import DebugObserver

                observer = DebugObserver(self.pipeline, backend, observer)
            return Instance(backend, Executor(self.pipeline, backend, observer, self.options.graphs))
        except BaseException:
            backend.close()
            raise

    @classmethod
    def from_yaml(cls, path: str | Path, *, device: Device = "auto", **options: Any) -> Orchestrator:
        return cls(load_pipeline(path), device=device, **options)

    @property
    def device(self) -> str:
        return self.compiled.name

    @property
    def instances(self) -> int:
        return len(self._pool.instances)

    @property
    def backend(self) -> Backend:
        """The first instance's backend (for single-instance tools: debug, profile, benchmarks)."""
        return self._pool.instances[0].backend

    @property
    def executor(self) -> Executor:
        """The first instance's executor (for single-instance tools)."""
        return self._pool.instances[0].executor

    def run(self, inputs: Mapping[str, Any], *, out: Mapping[str, Any] | None = None,
            device_outputs: bool = False, timeout: float | None = None) -> dict[str, Any]:
        """Run the pipeline once, on a free instance (waiting up to ``timeout`` s, default the
        Orchestrator's, for one); safe from any number of threads. ``inputs`` maps input names to numpy
        arrays or device arrays (``__cuda_array_interface__`` or DLPack; host inputs: scalars). Outputs are
        numpy copies; ``out`` writes chosen outputs into the caller's numpy or device arrays;
        ``device_outputs=True`` returns views into device memory (``__cuda_array_interface__``), valid
        until the instance's next run: with instances > 1, hold one with ``acquire()``."""
        if device_outputs and self.instances > 1:
            raise InputError("device_outputs=True with instances > 1: the views would be overwritten by "
                             "another thread's run; use `with orch.acquire() as inst: inst.run(..., "
                             "device_outputs=True)` or pass out= buffers")
        arrays, dims = check_inputs(self.pipeline, inputs, out)  # before taking an instance: while one is busy
        pool = self._pool
        instance = pool.take(timeout)  # take/give rather than a context manager: this is the hot path
        try:
            return instance.run_checked(arrays, dims, out, device_outputs)
        finally:
            pool.give(instance)

    @contextmanager
    def acquire(self, timeout: float | None = None) -> Iterator[Instance]:
        """Hold one instance for several runs (its device outputs stay valid while held)."""
        with self._pool.acquire(timeout) as instance:
            yield instance

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
        """Wait for runs in flight, then release every instance and the compiled pipeline. Also done when
        an unclosed Orchestrator is garbage-collected."""
        self._finalizer()

    def __enter__(self) -> Orchestrator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _release_pool(pool: InstancePool[Instance], compiled: CompiledPipeline) -> None:
    _release(pool.drain(), compiled)


def _release(instances: list[Instance], compiled: CompiledPipeline) -> None:
    """Close instances, then what they shared (no reference to the Orchestrator: a finalizer)."""
    errors = []
    for instance in instances:
        try:
            instance.close()
        except Exception as exc:  # close the others, and what they shared, before reporting it
            errors.append(exc)
    compiled.close()
    if errors:
        raise errors[0]
