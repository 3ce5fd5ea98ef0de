"""One execution instance as the Orchestrator hands it out: a backend instance and the executor
compiled over it. Used by one thread at a time (see pool.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .backends.base import Backend
from .executor import Executor


class Instance:
    """``run`` on this instance's stream and arena. Device outputs stay valid until its next run."""

    def __init__(self, backend: Backend, executor: Executor):
        self.backend, self.executor = backend, executor

    def run(self, inputs: Mapping[str, Any], *, out: Mapping[str, Any] | None = None,
            device_outputs: bool = False) -> dict[str, Any]:
        self.backend.bind_thread()
        return self.executor.run(inputs, out, device_outputs)

    def run_checked(self, arrays: dict[str, Any], dims: dict[str, int], out: Mapping[str, Any] | None,
                    device_outputs: bool) -> dict[str, Any]:
        self.backend.bind_thread()
        return self.executor.run_checked(arrays, dims, out, device_outputs)

    def close(self) -> None:
        self.backend.close()
