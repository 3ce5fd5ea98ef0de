"""The small contract every backend implements (the CPU reference backend, the CUDA backend).

A backend has two halves. ``CompiledPipeline`` holds what is built once and shared (validated IR, engines
or sessions, kernel modules, the memory plan): immutable after construction, safe to use from any thread.
``Backend`` is one execution instance made from it (``compiled.instance()``): it owns its per-run state
(stream, arena, contexts, staging, captured graphs) and is used by one thread at a time.

The executor compiles a pipeline's control flow once into closures; a backend supplies, once per step at
load time, a callable that runs (or enqueues) that step, and answers the few questions control flow asks
at run time (the value of a condition, the loop carry copy). Public methods check state and delegate to
``_impl`` methods, so every backend reports misuse the same way.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..errors import InputError, InternalError, MissingDependencyError
from ..pipeline.ir import Node, Pipeline, Step

StepRunner = Callable[[], None]


class CompiledPipeline(ABC):
    """Build products of one pipeline on one device, shared by every instance made from it."""

    name: str = "backend"

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline

    @abstractmethod
    def instance(self, index: int, stream: Any = None) -> Backend:
        """A new execution instance; ``index`` (0, 1, ...) tells it which per-instance resources
        (e.g. TensorRT optimisation profiles) are its own; ``stream`` an external stream, or None."""

    def memory_summary(self) -> dict[str, int | float | bool]:
        """Per-instance memory (the arena layout), where the backend plans one."""
        return {}

    def close(self) -> None:
        """Release what was built (after every instance is closed); default: nothing to release."""


class Backend(ABC):
    """One execution instance: runs the steps of one pipeline. Made by a CompiledPipeline; one thread at
    a time (the Orchestrator's instance pool sees to that)."""

    name: str = "backend"

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline
        self._closed = False

    # -- load time --------------------------------------------------------------------------------
    def step_runner(self, step: Step) -> StepRunner:
        """A callable that runs ``step`` (everything it needs is prepared now, not when it is called)."""
        self._check_open()
        return self._step_runner_impl(step)

    def carry_runner(self, pairs: tuple[tuple[str, str], ...]) -> StepRunner:
        """A callable that copies each loop body result into its state tensor."""
        self._check_open()
        return self._carry_runner_impl(pairs)

    def segment_runner(self, steps: tuple[Step, ...], eager: StepRunner) -> StepRunner:
        """Graph mode with host-decided branches: ``steps`` (straight-line) replayed as one CUDA graph.
        ``eager`` runs them without a graph (the warm-up before each capture)."""
        self._check_open()
        return self._segment_runner_impl(steps, eager)

    def graph_runner(self, body: tuple[Node, ...], eager: StepRunner, observer: Any,
                     fallback: Callable[[], StepRunner]) -> StepRunner:
        """Graph mode with device-side branching: the whole body as one graph with conditional nodes;
        ``fallback()`` gives the graph-segments program, for pipelines that cannot be captured whole."""
        self._check_open()
        return self._graph_runner_impl(body, eager, observer, fallback)

    def _segment_runner_impl(self, steps: tuple[Step, ...], eager: StepRunner) -> StepRunner:
        raise MissingDependencyError(f"graph mode needs the CUDA backend (this is the {self.name} backend)")

    def _graph_runner_impl(self, body: tuple[Node, ...], eager: StepRunner, observer: Any,
                           fallback: Callable[[], StepRunner]) -> StepRunner:
        raise MissingDependencyError(f"graph mode needs the CUDA backend (this is the {self.name} backend)")

    # -- run time ---------------------------------------------------------------------------------
    def set_inputs(self, inputs: Mapping[str, Any], dims: Mapping[str, int]) -> None:
        """Take the checked inputs of a run (numpy arrays, or DeviceArrays) and the bound dimensions."""
        self._check_open()
        self._set_inputs_impl(inputs, dims)

    def read_scalar(self, name: str) -> float:
        """The value of a host input or of a one-element tensor (for conditions)."""
        return self._read_scalar_impl(name)

    def outputs(self, names: tuple[str, ...], out: Mapping[str, Any] | None = None,
                device: bool = False) -> dict[str, Any]:
        """The outputs of the run: numpy copies; with ``out``, written into the caller's arrays (numpy or
        device), which are returned for those names; with ``device``, views into device memory."""
        self._check_open()
        if device:
            return self._device_outputs_impl(names)
        if out:
            unknown = sorted(set(out) - set(names))
            if unknown:
                raise InputError(f"out: {', '.join(unknown)} is not an output (outputs: {', '.join(names)})")
            return self._outputs_into_impl(names, out)
        return self._outputs_impl(names)

    def fetch(self, name: str) -> np.ndarray:
        """A copy of any tensor's current value, for debugging."""
        self._check_open()
        return self._fetch_impl(name)

    def synchronize(self) -> None:
        """Wait until everything enqueued has finished (a no-op on the CPU)."""

    def bind_thread(self) -> None:
        """Make this backend usable from the calling thread (the CUDA context is per thread)."""

    def timing_mark(self) -> object:
        """A reusable timing mark (a CUDA event on the GPU; a clock reading on the CPU)."""
        return [0.0]

    def record_mark(self, mark: object) -> None:
        mark[0] = time.perf_counter()  # type: ignore[index]

    def elapsed(self, start: object, end: object) -> float:
        """Seconds between two recorded marks (after ``synchronize``)."""
        return end[0] - start[0]  # type: ignore[index]

    def poison(self, tensor: str) -> None:
        """Overwrite a dead intermediate with NaN (debug mode), so that stale reads show up."""
        self._check_open()
        self._poison_impl(tensor)

    def _poison_impl(self, tensor: str) -> None:
        """Default: nothing to poison."""

    def close(self) -> None:
        if not self._closed:
            self._close_impl()
            self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise InternalError(f"{self.name} backend used after close()")

    # -- to implement -------------------------------------------------------------------------------
    @abstractmethod
    def _step_runner_impl(self, step: Step) -> StepRunner: ...

    @abstractmethod
    def _carry_runner_impl(self, pairs: tuple[tuple[str, str], ...]) -> StepRunner: ...

    @abstractmethod
    def _set_inputs_impl(self, inputs: Mapping[str, Any], dims: Mapping[str, int]) -> None: ...

    @abstractmethod
    def _read_scalar_impl(self, name: str) -> float: ...

    @abstractmethod
    def _outputs_impl(self, names: tuple[str, ...]) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def _outputs_into_impl(self, names: tuple[str, ...], out: Mapping[str, Any]) -> dict[str, Any]: ...

    def _device_outputs_impl(self, names: tuple[str, ...]) -> dict[str, Any]:
        raise MissingDependencyError(f"device outputs need the CUDA backend (this is the {self.name} backend)")

    @abstractmethod
    def _fetch_impl(self, name: str) -> np.ndarray: ...

    def _close_impl(self) -> None:
        """Release resources; default: nothing to release."""
