"""Check a written pipeline on the CPU reference backend against onnxruntime on the uncut model.

Inputs are fed valid data: rank-0 inputs as scalars, the values given in ``--inputs`` where there are
some, random values otherwise. Random values are refused for an input that feeds a shape or parameter
slot (Reshape's shape, Resize's scales, Slice's starts, gather indices...): such an input must be given.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import dtypes
from ..errors import ConfigError, OrchestratorError
from .graph import Graph, SnipError

# Input slots whose values must be valid for the op, not arbitrary numbers.
_PARAMETER_SLOTS = {
    "Reshape": (1,), "Expand": (1,), "Tile": (1,), "Slice": (1, 2, 3, 4), "Resize": (1, 2, 3), "Upsample": (1,),
    "Pad": (1, 2, 3), "ConstantOfShape": (0,), "Range": (0, 1, 2), "TopK": (1,), "OneHot": (1,), "Split": (1,),
    "Squeeze": (1,), "Unsqueeze": (1,), "CumSum": (1,), "Gather": (1,), "GatherElements": (1,),
    "GatherND": (1,), "Scatter": (1,), "ScatterElements": (1,), "ScatterND": (1,), "Trilu": (1,),
    "CenterCropPad": (1,), "Col2Im": (1, 2, 3, 4), "NonMaxSuppression": (2, 3, 4), "RoiAlign": (2,),
    "MaxUnpool": (1, 2), "Compress": (1,), "ReverseSequence": (1,), "DFT": (1, 2), "STFT": (1, 2, 3),
    "Dropout": (1, 2), "Loop": (0, 1), "HannWindow": (0,), "HammingWindow": (0,), "BlackmanWindow": (0,),
    "MelWeightMatrix": (0, 1, 2, 3, 4), "TfIdfVectorizer": (0,), "Bernoulli": (0,),
}
_PASS_THROUGH = {"Cast", "Identity", "CastLike"}
# Relative L2 error allowed between the chained pieces and the model: FP32 summation order only, or the
# rounding of FP16 (hwc8) boundaries.
TOLERANCE = 1e-4
FP16_TOLERANCE = 1e-2


def parameter_uses(graph: Graph, name: str) -> str | None:
    """'Op input k' where ``name`` (or a Cast/Identity of it) feeds a parameter slot, else None."""
    names, nodes = {name}, graph.const_nodes + graph.order
    for node in nodes:
        if node.op_type in _PASS_THROUGH and node.input and node.input[0] in names:
            names.update(node.output)
    for node in nodes:
        slots = _PARAMETER_SLOTS.get(node.op_type, (1,) if node.op_type.startswith("Reduce") else ())
        for k in slots:
            if k < len(node.input) and node.input[k] in names:
                return f"{node.op_type} input {k}"
    return None


def input_sizes(graph: Graph, given: dict[str, np.ndarray]) -> dict[str, int]:
    """Sizes of symbolic dimensions read off the given input arrays."""
    sizes = {}
    for name, array in given.items():
        shape = graph.types.get(name)
        if shape is None or len(shape.shape) != array.ndim:
            continue
        sizes.update((d, int(s)) for d, s in zip(shape.shape, array.shape, strict=True) if isinstance(d, str))
    return sizes


def measured_sizes(graph: Graph, feeds: dict[str, np.ndarray]) -> dict[str, int]:
    """Sizes of the dims that shape inference named but could not size (TorchScript's ``unk__19`` after a
    Reshape to a computed shape: DETR's sequence of H x W tokens), read off one onnxruntime run on
    ``feeds``; without them every tensor downstream counted as if that dim were 1. Empty if the run fails."""
    import onnxruntime as ort

    def unsized(name: str) -> bool:
        ttype = graph.types.get(name)
        return ttype is not None and any(isinstance(d, str) and d != "?" and d not in graph.sizes for d in ttype.shape)

    wanted = [o for node in graph.order for o in node.output if o and unsized(o)]
    if not wanted:
        return {}
    model = type(graph.model)()
    model.CopyFrom(graph.model)
    values = {v.name: v for v in [*model.graph.value_info, *model.graph.output]}
    outputs = {v.name for v in model.graph.output}
    model.graph.output.extend(values[o] for o in wanted if o in values and o not in outputs)
    try:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        arrays = session.run([o for o in wanted if o in values], feeds)
    except Exception:  # an estimate only: the verification reports what is wrong with the model or feeds
        return {}
    sizes: dict[str, int] = {}
    for name, array in zip([o for o in wanted if o in values], arrays, strict=True):
        shape = graph.types[name].shape
        if len(shape) == np.ndim(array):
            sizes.update((d, int(n)) for d, n in zip(shape, np.shape(array), strict=True)
                         if isinstance(d, str) and d != "?" and d not in graph.sizes and d not in sizes)
    return sizes


def feeds(graph: Graph, given: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    """One array per model input: given, or seeded random data that is valid for the input."""
    rng = np.random.default_rng(0)
    out = {}
    for name in graph.inputs:
        ttype = graph.types[name]
        dtype = dtypes.to_numpy(ttype.dtype) if ttype.dtype else None
        if name in given:
            out[name] = np.asarray(given[name], dtype=dtype)
            continue
        use = parameter_uses(graph, name)
        if use is not None or dtype is None:
            why = f"feeds {use}" if use else "has a type random data cannot fill"
            raise SnipError(f"{where}: input '{name}' {why}; random values are not valid for it: give its "
                            f"values with --inputs in.npz (an array named '{name}')")
        shape = tuple(d if isinstance(d, int) else graph.sizes.get(d, 1) for d in ttype.shape)
        out[name] = _random(rng, np.dtype(dtype), shape)
    return out


def _random(rng, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    return rng.integers(0, 4, shape).astype(dtype)


def verify(model_path: Path, pipeline_path: Path, feeds_by_input: dict[str, np.ndarray], names: dict[str, str],
           tolerance: float) -> float:
    """Run the pipeline on the CPU reference backend and the original model with onnxruntime on the same
    inputs; raise unless every output agrees (relative L2 <= tolerance over finite values, NaN/Inf at the
    same places, integers and booleans equal). Returns the largest absolute difference."""
    import onnxruntime as ort

    from ..api import Orchestrator
    from ..pipeline.load import load_pipeline

    try:
        pipeline = load_pipeline(pipeline_path)
    except ConfigError as exc:
        raise SnipError(f"the written pipeline does not validate: {exc.problems[0]}") from None
    sized = ", ".join(f"{d}={b.opt}" for d, b in pipeline.dims.items())
    try:
        ours = Orchestrator(pipeline, device="cpu").run({names[k]: v for k, v in feeds_by_input.items()})
    except OrchestratorError as exc:
        raise SnipError(f"verifying with {sized or 'the model shapes'} failed ({exc}); give the symbolic "
                        f"dimensions usable sizes with --dims NAME=SIZE,... or the inputs with --inputs") from None
    options = ort.SessionOptions()
    options.log_severity_level = 4
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    wanted = [o.name for o in session.get_outputs()]
    theirs = dict(zip(wanted, session.run(None, feeds_by_input), strict=True))
    return max([compare(name, ours[names[name]], theirs[name], tolerance) for name in wanted], default=0.0)


def compare(name: str, got: np.ndarray, want: np.ndarray, tolerance: float) -> float:
    """Largest absolute difference; raises SnipError when ``got`` does not reproduce ``want``."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        raise SnipError(f"output '{name}' has shape {list(got.shape)}, the model gives {list(want.shape)}")
    if want.dtype.kind not in "fc":
        if not np.array_equal(got, want):
            raise SnipError(f"the chained snippets do not reproduce output '{name}' ({want.dtype} values differ)")
        return 0.0
    got64, want64 = got.astype(np.complex128 if want.dtype.kind == "c" else np.float64), want.astype(
        np.complex128 if want.dtype.kind == "c" else np.float64)
    finite = np.isfinite(want64)
    same_special = np.array_equal(np.isnan(got64), np.isnan(want64)) and np.array_equal(
        got64[~finite & ~np.isnan(want64)], want64[~finite & ~np.isnan(want64)])
    diff = got64[finite] - want64[finite]
    rel = float(np.linalg.norm(diff) / max(float(np.linalg.norm(want64[finite])), 1e-30)) if diff.size else 0.0
    if not same_special or not rel <= tolerance:
        raise SnipError(f"the chained snippets do not reproduce output '{name}' (relative L2 {rel:.3g}, "
                        f"tolerance {tolerance:g}" + ("; NaN/Inf at other places)" if not same_special else ")"))
    return float(np.abs(diff).max()) if diff.size else 0.0
