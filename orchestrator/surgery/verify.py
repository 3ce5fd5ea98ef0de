"""Check an optimised model against its original with onnxruntime on random inputs."""

from __future__ import annotations

import numpy as np

from ..errors import InternalError


def random_feeds(model_bytes: bytes, *, dim: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """A random array for every graph input; symbolic dimensions become ``dim``."""
    import onnxruntime as ort

    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    feeds = {}
    for value in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else dim for d in value.shape]
        dtype = _numpy_dtype(value.type)
        if dtype == np.bool_:
            feeds[value.name] = rng.random(shape) < 0.5
        elif np.issubdtype(dtype, np.integer):
            feeds[value.name] = rng.integers(0, 4, shape).astype(dtype)
        else:
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def _numpy_dtype(ort_type: str) -> np.dtype:
    name = ort_type.removeprefix("tensor(").removesuffix(")")
    return np.dtype({"float": "float32", "double": "float64", "float16": "float16", "bool": "bool"}.get(name, name))


def run(model_bytes: bytes, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # compare the graphs as written
    options.log_severity_level = 4
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"]).run(None, feeds)


def max_difference(original: bytes, optimized: bytes, *, dim: int = 2) -> float | None:
    """Largest |optimised - original| over all outputs, relative to 1 + the output's largest magnitude;
    None when the original itself cannot run on random inputs (e.g. integer inputs used as indices)."""
    try:
        feeds = random_feeds(original, dim=dim)
        wanted = run(original, feeds)
    except Exception:  # onnxruntime's own exception types: nothing to compare with
        return None
    return _worst(wanted, run(optimized, feeds))


def _worst(wanted: list[np.ndarray], got: list[np.ndarray]) -> float:
    worst = 0.0
    for want, have in zip(wanted, got, strict=True):
        if want.shape != have.shape:
            return float("inf")
        diff = np.abs(have.astype(np.float64) - want.astype(np.float64))
        worst = max(worst, float(diff.max(initial=0.0)) / (1.0 + float(np.abs(want).max(initial=0.0))))
    return worst


def check_stripped(original: bytes, stripped: bytes, edges, *, name: str, tolerance: float = 1e-4) -> None:
    """Raise unless the stripped model, between the described input transforms and output ops
    (``edges``: an ``EdgeReport``), computes what the original computes."""
    import onnx

    try:
        feeds = random_feeds(original)
        wanted = run(original, feeds)
    except Exception:  # onnxruntime's own exception types: nothing to compare with
        return
    names = [o.name for o in onnx.load_from_string(stripped).graph.output]  # run() returns them in this order
    got = edges.post(dict(zip(names, run(stripped, edges.pre(feeds)), strict=True)))
    worst = _worst(wanted, list(got.values()))
    if not worst <= tolerance:
        raise InternalError(f"{name}: the stripped model with its described edges differs from the original "
                            f"(max relative error {worst:.3g} > {tolerance:g}); please report this model")


def check_same_outputs(original: bytes, optimized: bytes, *, name: str, tolerance: float = 1e-4) -> None:
    """Raise if the optimised model computes something else (a bug in a pass, ours or a library's)."""
    worst = max_difference(original, optimized)
    if worst is not None and not worst <= tolerance:
        raise InternalError(f"{name}: the optimised model's outputs differ from the original's "
                            f"(max relative error {worst:.3g} > {tolerance:g}); please report this model")
