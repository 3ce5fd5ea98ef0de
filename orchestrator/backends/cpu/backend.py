"""The CPU reference backend: the oracle that GPU results are compared against."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ...errors import ExecutionError, InputError
from ...inputs import DeviceArray, check_output_buffer
from ...pipeline.ir import KernelCall, Pipeline, SnippetCall, Step
from ..base import Backend, StepRunner
from .compiled import CpuCompiled


class CpuBackend(Backend):
    """One instance: its tensors live in its own dict of numpy arrays; steps run synchronously. Sessions
    and kernels come from the shared ``CpuCompiled`` (a Pipeline given here is compiled for this one)."""

    name = "cpu"

    def __init__(self, compiled: CpuCompiled | Pipeline):
        compiled = compiled if isinstance(compiled, CpuCompiled) else CpuCompiled(compiled)
        super().__init__(compiled.pipeline)
        self.values: dict[str, np.ndarray] = dict(compiled.pipeline.constants)
        self.snippets, self.kernels = compiled.snippets, compiled.kernels

    def _step_runner_impl(self, step: Step) -> StepRunner:
        if isinstance(step, SnippetCall):
            return self._snippet_runner(step)
        return self._kernel_runner(step)

    def _snippet_runner(self, step: SnippetCall) -> StepRunner:
        snippet, values = self.snippets[step.snippet], self.values

        def run() -> None:
            results = snippet.run({port: values[t] for port, t in step.inputs.items()})
            for port, tensor in step.outputs.items():
                values[tensor] = results[port]

        return run

    def _kernel_runner(self, step: KernelCall) -> StepRunner:
        kernel, values = self.kernels[step.kernel], self.values
        literals = {a: s.literal for a, s in step.scalars.items() if s.literal is not None and s.expression is None}
        hosts = {a: s.host_input for a, s in step.scalars.items() if s.host_input is not None}

        def run() -> None:
            scalars = dict(literals)
            scalars.update({a: values[h].item() for a, h in hosts.items()})
            results = kernel.run({a: values[step.tensors[a]] for a in step.in_args}, scalars)
            for arg in step.out_args:
                values[step.tensors[arg]] = results[arg]

        return run

    def _carry_runner_impl(self, pairs: tuple[tuple[str, str], ...]) -> StepRunner:
        values = self.values

        def run() -> None:
            for state, nxt in pairs:
                values[state] = values[nxt].copy()

        return run

    def _set_inputs_impl(self, inputs: Mapping[str, Any], dims: Mapping[str, int]) -> None:
        for name, value in inputs.items():
            if isinstance(value, DeviceArray):
                raise InputError(f"input '{name}' is a device array; the CPU backend takes numpy arrays")
        self.values.update(inputs)

    def _read_scalar_impl(self, name: str) -> float:
        value = self.values[name]
        if value.size != 1:
            raise ExecutionError(f"condition tensor '{name}' has {value.size} elements; expected one")
        return value.reshape(-1)[0].item()

    def _outputs_impl(self, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        # copies of what the caller or the pipeline owns: an output that is an input (the caller's own array),
        # a constant, or a read-only view a reference returned
        inputs, values = self.pipeline.inputs, self.values
        return {n: values[n].copy() if n in inputs or not values[n].flags.writeable else values[n] for n in names}

    def _poison_impl(self, tensor: str) -> None:
        value = self.values.get(tensor)
        if value is not None and value.dtype.kind == "f":
            self.values[tensor] = np.full_like(value, np.nan)

    def _outputs_into_impl(self, names: tuple[str, ...], out: Mapping[str, Any]) -> dict[str, Any]:
        result = self._outputs_impl(names)
        for name, buffer in out.items():
            value = result[name]
            if check_output_buffer(name, buffer, value.shape, value.dtype) is not None:
                raise InputError(f"out['{name}'] is a device array; the CPU backend writes numpy arrays")
            np.copyto(buffer, value)
            result[name] = buffer
        return result

    def _fetch_impl(self, name: str) -> np.ndarray:
        return np.array(self.values[name], copy=True)
