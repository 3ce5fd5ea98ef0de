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
            raise InputError(f"{name}: device arrays must be C-contiguous (strides {tuple(strides)})")
        return cls(int(cai["data"][0]), shape, dtype, obj)


@dataclass(frozen=True)
class DeviceView:
    """A read-only view of an output in the device arena (``__cuda_array_interface__``), valid until the
    next run: ``torch.as_tensor(view, device="cuda")`` or ``cupy.asarray(view)`` read it without a copy."""

    address: int
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.address, True), "version": 3,
                "strides": None}


def check_output_buffer(name: str, buffer: Any, shape: tuple[int, ...], dtype: np.dtype) -> DeviceArray | None:
    """A caller's buffer for output ``name``: a numpy array (returned as None) or a device array."""
    if isinstance(buffer, np.ndarray):
        if buffer.shape != shape or buffer.dtype != dtype or not buffer.flags.c_contiguous:
            raise InputError(f"out['{name}']: expected a C-contiguous {dtype} array of shape {list(shape)}, "
                             f"got {buffer.dtype} {list(buffer.shape)}")
        return None
    device = _device_array(f"out['{name}']", buffer)
    if device is None:
        raise InputError(f"out['{name}']: expected a numpy or device array, got {type(buffer).__name__}")
    if device.shape != shape or device.dtype != dtype:
        raise InputError(f"out['{name}']: expected {dtype} of shape {list(shape)}, got {device.dtype} "
                         f"{list(device.shape)}")
    return device


def _device_array(name: str, value: Any) -> DeviceArray | None:
    if hasattr(value, "__cuda_array_interface__"):
        return DeviceArray.wrap(name, value)
    if hasattr(value, "__dlpack__"):
        return from_dlpack(name, value)
    return None


def from_dlpack(name: str, value: Any) -> DeviceArray:
    """A CUDA array from the DLPack protocol, read through cuda.core's StridedMemoryView (which handles
    every DLPack version); the view and the producer stay referenced for the run."""
    from cuda.core.utils import StridedMemoryView

    try:
        view = StridedMemoryView.from_dlpack(value, stream_ptr=-1)  # the caller orders its own streams
    except Exception as exc:  # BufferError, or the producer's own error
        raise InputError(f"{name}: cannot read it through DLPack ({exc})") from None
    if view.device_id < 0 or not view.is_device_accessible:
        raise InputError(f"{name}: a DLPack array in host memory; pass a numpy array, or a CUDA array")
    shape = tuple(int(d) for d in view.shape)
    if view.strides is not None and tuple(view.strides) != _contiguous_strides(shape, 1):
        raise InputError(f"{name}: DLPack arrays must be C-contiguous")
    return DeviceArray(int(view.ptr), shape, np.dtype(view.dtype), (value, view))


def _contiguous_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    strides, step = [], itemsize
    for dim in reversed(shape):
        strides.append(step)
        step *= dim
    return tuple(reversed(strides))


def _as_array(name: str, value: Any) -> np.ndarray | DeviceArray:
    if isinstance(value, np.ndarray):
        return np.ascontiguousarray(value)
    device = _device_array(f"input '{name}'", value)
    if device is None:
        raise InputError(f"input '{name}': expected a numpy array or a device array "
                         f"(__cuda_array_interface__ or DLPack), got {type(value).__name__}")
    return device


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
