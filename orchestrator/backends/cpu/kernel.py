"""Run a custom kernel through its numpy reference function."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ... import dtypes
from ...errors import ExecutionError
from ...kernels.signature import bind_symbols, out_shapes
from ...pipeline.ir import KernelInfo
from ...pipeline.references import load_reference


class ReferenceKernel:
    """Calls ``reference(**in_tensors, **bound_scalars)`` and checks the returned arrays."""

    def __init__(self, info: KernelInfo):
        self.info = info
        self.function = load_reference(info.reference_path, info.reference_function)
        self.out_args = [a for a in info.args if a.kind == "out"]

    def run(self, tensors: Mapping[str, np.ndarray], scalars: Mapping[str, float | int]) -> dict[str, np.ndarray]:
        env = bind_symbols(self.info, {n: a.shape for n, a in tensors.items()})
        expected = out_shapes(self.info, env)
        try:
            result = self.function(**tensors, **scalars)
        except Exception as exc:
            raise ExecutionError(f"reference of kernel '{self.info.name}' "
                                 f"({self.info.reference_path.name}:{self.info.reference_function}) raised "
                                 f"{type(exc).__name__}: {exc}") from None
        results = self._as_dict(result)
        for arg in self.out_args:
            value = results[arg.name]
            if dtypes.from_numpy(value.dtype) != arg.dtype or value.shape != expected[arg.name]:
                raise ExecutionError(f"reference of kernel '{self.info.name}' returned {value.dtype} "
                                     f"{list(value.shape)} for '{arg.name}'; the kernel declares {arg.dtype} "
                                     f"{list(expected[arg.name])}")
        return results

    def _as_dict(self, result) -> dict[str, np.ndarray]:
        names = [a.name for a in self.out_args]
        if isinstance(result, dict):
            values = [result.get(n) for n in names]
        elif isinstance(result, tuple | list):
            values = list(result)
        else:
            values = [result]
        if len(values) != len(names) or any(not isinstance(v, np.ndarray) for v in values):
            raise ExecutionError(f"reference of kernel '{self.info.name}' must return "
                                 f"{len(names)} numpy array(s) ({', '.join(names)})")
        return dict(zip(names, values, strict=True))
