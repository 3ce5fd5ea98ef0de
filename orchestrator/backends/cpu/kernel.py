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
        where = f"{info.reference_location}: " if info.reference_location else ""
        self.what = f"{where}reference {info.reference_path.name}:{info.reference_function} of kernel '{info.name}'"

    def run(self, tensors: Mapping[str, np.ndarray], scalars: Mapping[str, float | int]) -> dict[str, np.ndarray]:
        env = bind_symbols(self.info, {n: a.shape for n, a in tensors.items()})
        expected = out_shapes(self.info, env)
        try:  # read-only views: a reference that writes into its inputs would change the caller's arrays
            result = self.function(**{n: _read_only(a) for n, a in tensors.items()}, **scalars)
        except (Exception, SystemExit) as exc:  # SystemExit: a reference calling sys.exit must not end the run
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ExecutionError(f"{self.what} raised {type(exc).__name__}{': ' + first if first else ''}") from None
        results = self._as_dict(result)
        for arg in self.out_args:
            value = results[arg.name]
            if dtypes.from_numpy(value.dtype) != arg.dtype or value.shape != expected[arg.name]:
                raise ExecutionError(f"{self.what} returned {value.dtype} "
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
            raise ExecutionError(f"{self.what} must return "
                                 f"{len(names)} numpy array(s) ({', '.join(names)})")
        return dict(zip(names, values, strict=True))


def _read_only(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view
