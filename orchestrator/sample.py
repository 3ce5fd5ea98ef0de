"""Inputs for trying a pipeline without preparing files: seeded random inputs within the dims' bounds
(``--inputs random``), and host scalars given on the command line (``--set threshold=0.5``)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from . import dtypes
from .errors import InputError
from .pipeline import shapes
from .pipeline.ir import Pipeline, SwitchBlock, TensorInfo, walk

_UNBOUNDED = (1, 4)  # sizes tried for a symbol the pipeline gives no dims bounds (the CPU backend allows it)


def random_inputs(pipeline: Pipeline, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """One value per declared input, and the dimension sizes chosen (each within its bounds)."""
    rng = np.random.default_rng(seed)
    dims = _choose_dims(pipeline, rng)
    cases = _switch_cases(pipeline)
    values = {}
    for name, info in pipeline.inputs.items():
        if info.origin == "host":
            values[name] = _scalar(info, rng, cases.get(name))
        else:
            values[name] = _array(info, dims, rng)
    return values, dims


def _choose_dims(pipeline: Pipeline, rng: np.random.Generator) -> dict[str, int]:
    dims: dict[str, int] = {}
    for info in pipeline.inputs.values():
        for dim in info.shape:
            if isinstance(dim, str) and dim.isidentifier() and dim not in dims:
                bounds = pipeline.dims.get(dim)
                low, high = (bounds.min, bounds.max) if bounds is not None else _UNBOUNDED
                dims[dim] = int(rng.integers(low, high + 1))
    return dims


def _array(info: TensorInfo, dims: dict[str, int], rng: np.random.Generator) -> np.ndarray:
    shape = []
    for dim in info.shape:
        size = shapes.evaluate(dim, dims)
        if not isinstance(size, int):
            raise InputError(f"--inputs random: cannot size input '{info.name}' (dimension '{dim}' is not "
                             f"bound by the other inputs); give an .npz file instead")
        shape.append(size)
    dtype = dtypes.to_numpy(info.dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    low, high = (np.iinfo(dtype).min, np.iinfo(dtype).max) if dtype.itemsize == 1 else (0, 10)
    return rng.integers(low, high, shape, dtype=dtype, endpoint=True)


def _scalar(info: TensorInfo, rng: np.random.Generator, cases: tuple[int, ...] | None) -> np.ndarray:
    dtype = dtypes.to_numpy(info.dtype)
    if dtype.kind == "f":
        value = rng.random()  # thresholds and probabilities live in [0, 1)
    elif dtype.kind == "b":
        value = bool(rng.integers(0, 2))
    else:
        value = int(rng.choice(cases)) if cases else int(rng.integers(0, 10, endpoint=True))
    return np.asarray(value, dtype=dtype)


def _switch_cases(pipeline: Pipeline) -> dict[str, tuple[int, ...]]:
    """For host inputs that a ``switch`` tests, the case keys (so a random value picks a real case)."""
    cases: dict[str, tuple[int, ...]] = {}
    for node in walk(pipeline.body):
        if isinstance(node, SwitchBlock) and node.subject in pipeline.inputs:
            cases[node.subject] = cases.get(node.subject, ()) + tuple(k for k, _ in node.cases)
    return cases


def host_settings(pipeline: Pipeline, items: Iterable[str]) -> dict[str, np.ndarray]:
    """``name=value`` pairs for host scalar inputs, parsed as each input's dtype."""
    values = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        info = pipeline.inputs.get(name)
        if not sep or info is None or info.origin != "host":
            hosts = ", ".join(pipeline.host_inputs) or "none"
            what = f"'{item}' is not NAME=VALUE" if not sep else f"'{name}' is not a host input"
            raise InputError(f"--set: {what} of pipeline '{pipeline.name}' (host inputs: {hosts})")
        values[name] = _parse_scalar(name, text.strip(), info.dtype)
    return values


def _parse_scalar(name: str, text: str, dtype_name: str) -> np.ndarray:
    dtype = dtypes.to_numpy(dtype_name)
    try:
        if dtype.kind == "b":
            if text.lower() not in ("0", "1", "true", "false"):
                raise ValueError
            return np.asarray(text.lower() in ("1", "true"))
        if dtype.kind == "f":
            return np.asarray(float(text), dtype=dtype)
        value = int(text, 0)
        info = np.iinfo(dtype)
        if not info.min <= value <= info.max:
            raise InputError(f"--set {name}={text}: out of range for {dtype_name} ({info.min}..{info.max})")
        return np.asarray(value, dtype=dtype)
    except ValueError:
        raise InputError(f"--set {name}={text}: '{text}' is not a {dtype_name} value") from None
