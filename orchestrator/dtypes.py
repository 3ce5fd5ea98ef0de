"""The element types a pipeline tensor can have, and how they map to numpy, ONNX and CUDA C."""

from __future__ import annotations

from typing import Literal

import numpy as np

DTypeName = Literal["float32", "float16", "int8", "uint8", "int32", "int64", "bool"]

DTYPES: tuple[str, ...] = ("float32", "float16", "int8", "uint8", "int32", "int64", "bool")

# ONNX TensorProto element types (onnx.TensorProto.FLOAT = 1, ...), kept here so that reading them
# needs no onnx import at module level.
_ONNX_ELEM_TYPE = {1: "float32", 10: "float16", 3: "int8", 2: "uint8", 6: "int32", 7: "int64", 9: "bool"}

# The C type a kernel parameter of this dtype has in custom_kernels/ (see orchestrator/include/orchestrator.cuh).
C_TYPES = {"float32": "float", "float16": "half_t", "int8": "signed char", "uint8": "unsigned char",
           "int32": "int", "int64": "long long", "bool": "bool"}


def to_numpy(name: str) -> np.dtype:
    return np.dtype("bool" if name == "bool" else name)


_BY_NUMPY = {np.dtype("bool" if n == "bool" else n): n for n in DTYPES}  # native byte order


def from_numpy(dtype: np.dtype) -> str | None:
    found = _BY_NUMPY.get(dtype)  # every run checks its inputs' dtypes: a lookup, not dtype.name
    if found is not None:
        return found
    name = np.dtype(dtype).name
    return name if name in DTYPES else None


def from_onnx(elem_type: int) -> str | None:
    return _ONNX_ELEM_TYPE.get(elem_type)


def itemsize(name: str) -> int:
    return to_numpy(name).itemsize
