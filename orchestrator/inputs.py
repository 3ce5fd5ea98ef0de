"""Check the inputs handed to ``Orchestrator.run`` against the pipeline's declared inputs.

Returns the arrays and the values of the symbolic dimensions (``N``, ``H``...), which shape rules and
launch rules use. Errors are one line and name the input, what was expected and what was given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import dtypes
from .errors import InputError
from .pipeline import shapes
from .pipeline.ir import Pipeline


def check_inputs(pipeline: Pipeline, given: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, int]]:
    declared = pipeline.inputs
    missing = [n for n in declared if n not in given]
    unexpected = [n for n in given if n not in declared]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected)}")
        raise InputError(f"inputs of pipeline '{pipeline.name}': {'; '.join(parts)} "
                         f"(expected: {', '.join(declared)})")
    arrays: dict[str, Any] = {}
    env: dict[str, int] = {}
    for name, info in declared.items():
        value = given[name]
        if info.origin == "host":
            arrays[name] = _host_scalar(name, value, info.dtype)
            continue
        array = _as_array(name, value)
        if dtypes.from_numpy(array.dtype) != info.dtype:
            raise InputError(f"input '{name}': expected dtype {info.dtype}, got {array.dtype}")
        mismatch = shapes.unify(info.shape, array.shape, env)  # type: ignore[arg-type]
        if mismatch:
            raise InputError(f"input '{name}': shape {list(array.shape)}: {mismatch}")
        arrays[name] = array
    _check_bounds(pipeline, env)
    return arrays, env


@dataclass(frozen=True)
class DeviceArray:
    """A caller's device buffer passed zero-copy (anything with ``__cuda_array_interface__``)."""

    address: int
    shape: tuple[int, ...]
    dtype: np.dtype
    owner: Any  # keeps the caller's object alive for the run

    @classmethod
    def wrap(cls, name: str, obj: Any) -> DeviceArray:
        cai = obj.__cuda_array_interface__
        shape, dtype = tuple(int(d) for d in cai["shape"]), np.dtype(cai["typestr"])
        strides = cai.get("strides")
        if strides is not None and tuple(strides) != _contiguous_strides(shape, dtype.itemsize):
            raise InputError(f"input '{name}': device arrays must be C-contiguous (strides {tuple(strides)})")
        return cls(int(cai["data"][0]), shape, dtype, obj)


def _contiguous_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    strides, step = [], itemsize
    for dim in reversed(shape):
        strides.append(step)
        step *= dim
    return tuple(reversed(strides))


def _as_array(name: str, value: Any) -> np.ndarray | DeviceArray:
    if isinstance(value, np.ndarray):
        return np.ascontiguousarray(value)
    if hasattr(value, "__cuda_array_interface__"):
        return DeviceArray.wrap(name, value)
    raise InputError(f"input '{name}': expected a numpy array or a device array "
                     f"(__cuda_array_interface__), got {type(value).__name__}")


def _host_scalar(name: str, value: Any, dtype: str) -> np.ndarray:
    array = np.asarray(value)
    if array.size != 1:
        raise InputError(f"input '{name}' is a host scalar; got an array of shape {list(array.shape)}")
    if dtype not in ("float32", "float16") and not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise InputError(f"input '{name}' is a host scalar of dtype {dtype}; got {array.dtype}")
    return array.reshape(()).astype(dtypes.to_numpy(dtype))


def _check_bounds(pipeline: Pipeline, env: dict[str, int]) -> None:
    for dim, bounds in pipeline.dims.items():
        value = env.get(dim)
        if value is not None and not bounds.min <= value <= bounds.max:
            raise InputError(f"dimension {dim} = {value} is outside dims.{dim} of {pipeline.file.name} "
                             f"(min {bounds.min}, max {bounds.max})")
