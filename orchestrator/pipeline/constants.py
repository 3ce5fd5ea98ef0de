"""Load a pipeline constant: an inline value, or an array from a .npy, .npz or .safetensors file."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .. import dtypes
from .schema import ConstantSpec
from .source import FileReadError, absent, display_name, read_bytes, resolve

MAX_CONSTANT_BYTES = 1 << 30  # constants are small arrays; weights belong in the ONNX snippets


def native_order(array: np.ndarray) -> np.ndarray:
    """The array in the machine's byte order: a big-endian file is converted, never misread."""
    return array.astype(array.dtype.newbyteorder("=")) if array.dtype.byteorder not in "=|" else array


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
    """The value as an array of ``dtype``, refusing what the conversion would change: fractions as integers,
    integers out of the dtype's range, numbers beyond float16's range, strings."""
    try:
        given = np.array(spec.value)
    except (ValueError, TypeError):
        given = np.array([], dtype=object)  # ragged
    if given.dtype.kind not in "biuf" or given.dtype == object:
        raise ConstantLoadError("value is not a regular (rectangular) array of numbers")
    target = dtypes.to_numpy(spec.dtype or "float32")
    _check_fits(given, target)
    return given.astype(target)


def _check_fits(given: np.ndarray, target: np.dtype) -> None:
    if given.size == 0 or target.kind == "b" and given.dtype.kind == "b":
        return
    if target.kind in "biu":
        if given.dtype.kind == "f" and not np.all(np.isfinite(given) & (np.floor(given) == given)):
            bad = given[~(np.isfinite(given) & (np.floor(given) == given))].flat[0]
            raise ConstantLoadError(f"{bad} is not an integer, but dtype is {target.name}")
        low, high = (0, 1) if target.kind == "b" else (np.iinfo(target).min, np.iinfo(target).max)
        outside = given[(given < low) | (given > high)]
        if outside.size:
            raise ConstantLoadError(f"{outside.flat[0]} is outside the range of {target.name} ({low} to {high})")
        return
    finite = np.isfinite(given.astype(np.float64))
    too_big = given[finite & (np.abs(given.astype(np.float64)) > np.finfo(target).max)]
    if too_big.size:
        raise ConstantLoadError(f"{too_big.flat[0]} is beyond the range of {target.name} "
                                f"(largest {np.finfo(target).max:.6g})")


def _from_file(spec: ConstantSpec, base: Path) -> np.ndarray:
    path = resolve(base / str(spec.file))
    if absent(path):
        raise ConstantLoadError(f"file not found: {display_name(path)} (paths are relative to {display_name(base)}/)")
    suffix = path.suffix.lower()
    try:
        data = io.BytesIO(read_bytes(path, MAX_CONSTANT_BYTES))
        if suffix == ".npy":
            return native_order(np.load(data, allow_pickle=False))
        if suffix == ".npz":
            with np.load(data, allow_pickle=False) as archive:
                return native_order(_pick(dict(archive), spec.key, path))
        if suffix == ".safetensors":
            from safetensors.numpy import load

            return _pick(load(data.getvalue()), spec.key, path)
    except ConstantLoadError:
        raise
    except FileReadError as exc:
        raise ConstantLoadError(str(exc)) from None
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
