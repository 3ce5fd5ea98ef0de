"""Load a pipeline constant: an inline value, or an array from a .npy, .npz or .safetensors file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import dtypes
from .schema import ConstantSpec
from .source import display_name


class ConstantLoadError(ValueError):
    """The constant's value or file cannot be turned into an array of a supported dtype."""


def load_constant(spec: ConstantSpec, base: Path) -> np.ndarray:
    array = _inline(spec) if spec.value is not None else _from_file(spec, base)
    name = dtypes.from_numpy(array.dtype)
    if name is None:
        raise ConstantLoadError(f"dtype {array.dtype} is not supported (supported: {', '.join(dtypes.DTYPES)})")
    if spec.dtype is not None and name != spec.dtype:
        raise ConstantLoadError(f"the file holds {name} data but 'dtype' says {spec.dtype}")
    array.setflags(write=False)
    return array


def _inline(spec: ConstantSpec) -> np.ndarray:
    try:
        return np.array(spec.value, dtype=dtypes.to_numpy(spec.dtype or "float32"))
    except (ValueError, TypeError):
        raise ConstantLoadError("value is not a regular (rectangular) array of numbers") from None


def _from_file(spec: ConstantSpec, base: Path) -> np.ndarray:
    path = (base / str(spec.file)).resolve()
    if not path.is_file():
        raise ConstantLoadError(f"file not found: {display_name(path)} (paths are relative to {display_name(base)}/)")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return _pick(dict(archive), spec.key, path)
        if suffix == ".safetensors":
            from safetensors.numpy import load_file

            return _pick(load_file(str(path)), spec.key, path)
    except ConstantLoadError:
        raise
    except Exception as exc:
        raise ConstantLoadError(f"cannot read {path.name}: {str(exc).splitlines()[0]}") from None
    raise ConstantLoadError(f"unsupported constant file type '{suffix}' (expected .npy, .npz or .safetensors)")


def _pick(arrays: dict[str, np.ndarray], key: str | None, path: Path) -> np.ndarray:
    if key is None:
        if len(arrays) == 1:
            return next(iter(arrays.values()))
        raise ConstantLoadError(f"{path.name} holds several arrays ({', '.join(arrays)}); choose one with 'key'")
    if key not in arrays:
        raise ConstantLoadError(f"{path.name} has no array '{key}' (it has: {', '.join(arrays)})")
    return arrays[key]
