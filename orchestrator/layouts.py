"""How a tensor is laid out in memory. Pipelines see every tensor in its logical (row-major) shape;
a tensor passed only between TensorRT snippets may instead stay in one of TensorRT's own formats, so
that neither engine runs a reformat at the boundary.

- ``linear``: row-major, the ONNX dtype (the default, and the only layout kernels and users see);
- ``hwc8``: FP16, channels-last with the channels padded to a multiple of 8 (TensorRT's
  ``TensorFormat.HWC8``, the format its FP16 tensor-core convolutions read and write).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from . import dtypes

Layout = Literal["linear", "hwc8"]

# The dtype a layout fixes (None: the port's own dtype).
LAYOUT_DTYPE: dict[str, str | None] = {"linear": None, "hwc8": "float16"}


def storage_shape(shape: Sequence[int], layout: str) -> tuple[int, ...]:
    """The shape of the tensor's bytes in memory (NCHW -> N, H, W, C rounded up to 8 for hwc8)."""
    if layout == "linear":
        return tuple(shape)
    n, c, h, w = shape
    return (n, h, w, -(-c // 8) * 8)


def storage_bytes(shape: Sequence[int], dtype: str, layout: str = "linear") -> int:
    return math.prod(storage_shape(shape, layout)) * dtypes.itemsize(dtype)


def to_logical(stored: np.ndarray, shape: Sequence[int], layout: str) -> np.ndarray:
    """The logical array from the tensor's bytes in memory (a flat or storage-shaped array)."""
    if layout == "linear":
        return stored.reshape(tuple(shape))
    channels = shape[1]
    return np.ascontiguousarray(stored.reshape(storage_shape(shape, layout))[..., :channels].transpose(0, 3, 1, 2))


def to_storage(array: np.ndarray, layout: str) -> np.ndarray:
    """The bytes in memory of a logical array (the inverse of ``to_logical``; padding is zero)."""
    if layout == "linear":
        return np.ascontiguousarray(array)
    stored = np.zeros(storage_shape(array.shape, layout), array.dtype)
    stored[..., :array.shape[1]] = array.transpose(0, 2, 3, 1)
    return stored


__all__ = ["LAYOUT_DTYPE", "Layout", "storage_bytes", "storage_shape", "to_logical", "to_storage"]
