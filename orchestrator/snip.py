"""Cut one ONNX model into snippets and write a pipeline that chains them.

    orchestrator snip model.onnx --at t1,t2 -o DIR      # cut after tensors t1 and t2 ('a+b': a two-tensor cut)
    orchestrator snip model.onnx --pieces 4 -o DIR      # k pieces of about equal cost

A cut is a set of tensors that every path from the model's inputs to its outputs goes through, so the
pieces only talk through it. Balanced cuts choose among single-tensor separators so that each piece gets
about the same share of the estimated multiply-accumulates. The written pipeline is checked on the CPU
reference backend against onnxruntime on the original model before ``snip`` reports success.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import dtypes
from .errors import ConfigError, OrchestratorError
from .pipeline.source import display_name


class SnipError(OrchestratorError):
    """A cut point that does not exist or does not separate the graph, or an unusable model."""


@dataclass
class SnipResult:
    pieces: list[Path]
    pipeline: Path
    boundaries: list[tuple[str, ...]]
    max_abs_error: float


def load_model(path: Path):
    import onnx

    try:
        model = onnx.load(str(path))
        return onnx.shape_inference.infer_shapes(model)
    except Exception as exc:
        raise SnipError(f"{display_name(path)}: cannot read ONNX model: {str(exc).splitlines()[0]}") from None


_ACTIVATIONS = {"Relu", "Sigmoid", "Tanh", "Clip", "LeakyRelu", "HardSigmoid", "HardSwish", "Elu", "Selu",
                "Softplus", "Gelu"}


class Graph:
    """Producers, consumers and topological positions of a model's tensors."""

    def __init__(self, model):
        graph = model.graph
        self.model = model
        self.initializers = {t.name for t in graph.initializer}
        self.inputs = [v.name for v in graph.input if v.name not in self.initializers]
        self.outputs = [v.name for v in graph.output]
        self.nodes = list(graph.node)
        self.position = {o: i for i, n in enumerate(self.nodes) for o in n.output if o}
        self.last_use: dict[str, int] = {}
        for i, node in enumerate(self.nodes):
            for name in node.input:
                if name and name not in self.initializers:
                    self.last_use[name] = i
        for name in self.outputs:
            self.last_use[name] = len(self.nodes)

    def live_after(self, i: int) -> set[str]:
        """Tensors produced at or before node i (or graph inputs) that a later node or output reads."""
        return {t for t, last in self.last_use.items() if last > i and self.position.get(t, -1) <= i}

    def separators(self) -> list[tuple[int, str]]:
        """(node index, tensor) where that tensor alone carries everything the rest of the graph needs.
        A tensor whose only reader is the next node, a pointwise activation, is skipped in favour of the
        activation's output: TensorRT fuses an activation into the layer before it, not across a cut."""
        found = []
        for i in range(len(self.nodes) - 1):
            live = self.live_after(i)
            if len(live) == 1:
                (tensor,) = live
                if tensor in self.inputs or tensor in self.outputs or self._feeds_activation(i, tensor):
                    continue
                found.append((i, tensor))
        return found

    def _feeds_activation(self, i: int, tensor: str) -> bool:
        following = self.nodes[i + 1]
        readers = [n for n in self.nodes if tensor in n.input]
        return readers == [following] and following.op_type in _ACTIVATIONS

    def costs(self) -> list[float]:
        """Estimated multiply-accumulates per node (batch dims taken as 1)."""
        shapes = {v.name: _dims(v) for v in list(self.model.graph.value_info) + list(self.model.graph.output)
                  + list(self.model.graph.input)}
        weights = {t.name: tuple(t.dims) for t in self.model.graph.initializer}
        out = []
        for node in self.nodes:
            size = float(np.prod(shapes.get(node.output[0], (1,)) or (1,)))
            if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1 and node.input[1] in weights:
                w = weights[node.input[1]]
                size *= float(np.prod(w[1:]))
            elif node.op_type in ("Gemm", "MatMul") and len(node.input) > 1 and node.input[1] in weights:
                size *= float(weights[node.input[1]][0 if node.op_type == "MatMul" else 1])
            out.append(size)
        return out


def _dims(value) -> tuple[int, ...]:
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
                 for d in value.type.tensor_type.shape.dim)


def parse_cuts(text: str) -> list[tuple[str, ...]]:
    return [tuple(part.split("+")) for part in text.split(",") if part]


def check_cuts(graph: Graph, cuts: list[tuple[str, ...]], model_path: Path) -> list[tuple[str, ...]]:
    """Every cut names existing tensors and separates the graph; returns them in topological order."""
    where = display_name(model_path)
    known = set(graph.position)
    for cut in cuts:
        for name in cut:
            if name not in known:
                hint = difflib.get_close_matches(name, known, n=3)
                raise SnipError(f"{where}: no tensor '{name}' in the model"
                                + (f" (did you mean {', '.join(repr(h) for h in hint)}?)" if hint else ""))
            if name in graph.outputs:
                raise SnipError(f"{where}: '{name}' is a model output; cut before it")
    ordered = sorted(cuts, key=lambda c: max(graph.position[n] for n in c))
    for cut in ordered:
        at = max(graph.position[n] for n in cut)
        live = graph.live_after(at)
        crossing = sorted(live - set(cut))
        if crossing:
            raise SnipError(f"{where}: cutting at {'+'.join(cut)} does not separate the graph: "
                            f"{', '.join(crossing[:4])} also crosses the cut (add it with '+', or choose a cut "
                            f"point every path goes through)")
        unused = [n for n in cut if n not in live]
        if unused:
            raise SnipError(f"{where}: {', '.join(unused)} is not used after the cut")
    return ordered


def balanced_cuts(graph: Graph, pieces: int, model_path: Path) -> list[tuple[str, ...]]:
    if pieces < 1:
        raise SnipError("--pieces must be at least 1")
    candidates = graph.separators()
    if pieces - 1 > len(candidates):
        raise SnipError(f"{display_name(model_path)}: only {len(candidates)} single-tensor cut points exist; "
                        f"at most {len(candidates) + 1} pieces")
    cumulative = np.cumsum(graph.costs())
    total = cumulative[-1]
    chosen: list[tuple[int, str]] = []
    for j in range(1, pieces):
        target = total * j / pieces
        options = [c for c in candidates if not chosen or c[0] > chosen[-1][0]]
        remaining = pieces - 1 - j
        options = options[:len(options) - remaining] if remaining else options
        chosen.append(min(options, key=lambda c: abs(cumulative[c[0]] - target)))
    return [(tensor,) for _, tensor in chosen]


def identifier(name: str, taken: set[str]) -> str:
    base = re.sub(r"\W+", "_", name).strip("_") or "t"
    base = f"t_{base}" if base[0].isdigit() else base
    candidate, k = base, 2
    while candidate in taken:
        candidate, k = f"{base}_{k}", k + 1
    taken.add(candidate)
    return candidate


def snip(model_path: Path, out_dir: Path, *, at: str | None = None, pieces: int | None = None,
         dims: dict[str, int] | None = None, precision: str = "fp32", boundary_format: str = "linear") -> SnipResult:
    """Cut ``model_path`` (at tensors, or into ``pieces``), write the snippets and ``pipeline.yaml`` into
    ``out_dir``, and verify them on the CPU. ``dims`` sizes symbolic dimensions (default 1) for the
    written bounds and the verification run. ``boundary_format`` 'hwc8' (with fp16) keeps the 4-D tensors
    between snippets in TensorRT's FP16 channels-last format (layouts.py)."""
    import onnx

    model = load_model(model_path)
    graph = Graph(model)
    if (at is None) == (pieces is None):
        raise SnipError("give exactly one of --at and --pieces")
    if boundary_format != "linear" and precision != "fp16":
        raise SnipError(f"--boundary-format {boundary_format} is an FP16 format; add --precision fp16")
    cuts = check_cuts(graph, parse_cuts(at), model_path) if at else balanced_cuts(graph, pieces, model_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    boundaries = [tuple(graph.inputs), *cuts, tuple(graph.outputs)]
    extractor = onnx.utils.Extractor(model)
    paths = []
    for i in range(len(boundaries) - 1):
        piece = extractor.extract_model(list(boundaries[i]), list(boundaries[i + 1]))
        piece.ir_version = min(model.ir_version, 10)
        piece.graph.name = f"{model.graph.name or 'model'}_piece{i}"
        path = out_dir / f"piece{i}.onnx"
        onnx.save(piece, str(path))
        paths.append(path)
    pipeline = out_dir / "pipeline.yaml"
    formats = _boundary_formats(boundaries, paths, boundary_format)
    pipeline.write_text(_pipeline_yaml(model, boundaries, paths, pipeline.parent, dims or {}, precision, formats))
    # FP16 boundaries round every value that crosses them: compare at FP16's accuracy, not FP32's.
    error = verify(model_path, pipeline, tolerance=1e-4 if boundary_format == "linear" else 1e-2)
    return SnipResult(paths, pipeline, cuts, error)


def _boundary_formats(boundaries, paths: list[Path], layout: str) -> list[dict[str, str]]:
    """Per piece, the layout of each of its ports that crosses an inner cut (4-D tensors only)."""
    from .pipeline.onnx_meta import read_ports

    formats: list[dict[str, str]] = [{} for _ in paths]
    if layout == "linear":
        return formats
    for i in range(len(paths) - 1):
        outputs = read_ports(paths[i])[1]
        for tensor in boundaries[i + 1]:
            if len(outputs[tensor].shape) == 4:
                formats[i][tensor] = formats[i + 1][tensor] = layout
    return formats


def _pipeline_yaml(model, boundaries, paths: list[Path], base: Path, sizes: dict[str, int], precision: str,
                   formats: list[dict[str, str]]) -> str:
    taken: set[str] = set()
    names = {t: identifier(t, taken) for b in boundaries for t in b}
    symbols: dict[str, str] = {}
    lines = [f"# Written by `orchestrator snip` from {model.graph.name or 'a model'}: "
             f"{len(paths)} snippets chained in order.", f"name: {identifier(model.graph.name or 'snipped', set())}"]
    inputs = []
    for value in model.graph.input:
        if value.name not in boundaries[0]:
            continue
        dims = []
        for d in value.type.tensor_type.shape.dim:
            if d.HasField("dim_value"):
                dims.append(str(d.dim_value))
            else:
                symbol = symbols.setdefault(d.dim_param or f"d{len(symbols)}",
                                            identifier(d.dim_param or f"d{len(symbols)}", set(taken)))
                dims.append(symbol)
        dtype = dtypes.from_onnx(value.type.tensor_type.elem_type)
        if dtype is None:
            raise SnipError(f"input '{value.name}' has an unsupported element type")
        inputs.append(f"  {names[value.name]}: {{dtype: {dtype}, shape: [{', '.join(dims)}]}}")
    if symbols:
        lines.append("dims:  # edit the bounds to the sizes you will run")
        for param, symbol in symbols.items():
            size = sizes.get(param, sizes.get(symbol, 1))
            lines.append(f"  {symbol}: {{min: {size}, opt: {size}, max: {size}}}")
    lines += ["inputs:", *inputs, f"outputs: [{', '.join(names[t] for t in boundaries[-1])}]", "snippets:"]
    for i, path in enumerate(paths):
        options = [f"onnx: {path.relative_to(base)}"] + ([f"precision: {precision}"] if precision != "fp32" else [])
        if formats[i]:
            options.append("formats: {" + ", ".join(f"{_key(t)}: {f}" for t, f in formats[i].items()) + "}")
        lines.append(f"  piece{i}: {{{', '.join(options)}}}")
    lines.append("steps:")
    for i in range(len(paths)):
        ins = ", ".join(f"{_key(t)}: {names[t]}" for t in boundaries[i])
        outs = ", ".join(f"{_key(t)}: {names[t]}" for t in boundaries[i + 1])
        lines += [f"  - snippet: piece{i}", f"    inputs: {{{ins}}}", f"    outputs: {{{outs}}}"]
    return "\n".join(lines) + "\n"


def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", name) else '"' + name.replace('"', '\\"') + '"'


def verify(model_path: Path, pipeline_path: Path, tolerance: float = 1e-4) -> float:
    """Run the written pipeline on the CPU reference backend and the original model with onnxruntime on
    the same seeded inputs; raise unless every output agrees (relative L2 <= tolerance)."""
    import onnxruntime as ort

    from .api import Orchestrator
    from .pipeline.load import load_pipeline

    try:
        pipeline = load_pipeline(pipeline_path)
    except ConfigError as exc:
        raise SnipError(f"the written pipeline does not validate: {exc.problems[0]}") from None
    dims = {d: b.opt for d, b in pipeline.dims.items()}
    sized = ", ".join(f"{d}={size}" for d, size in dims.items())
    rng = np.random.default_rng(0)
    feeds = {}
    for name, info in pipeline.inputs.items():
        shape = tuple(dims.get(d, d) if isinstance(d, str) else d for d in info.shape)
        dtype = dtypes.to_numpy(info.dtype)
        feeds[name] = (rng.standard_normal(shape) if dtype.kind == "f" else rng.integers(0, 4, shape)).astype(dtype)
    try:
        ours = Orchestrator(pipeline, device="cpu").run(feeds)
    except OrchestratorError as exc:
        raise SnipError(f"verifying with {sized or 'the model shapes'} failed ({exc}); give the symbolic "
                        f"dimensions usable sizes with --dims NAME=SIZE,...") from None
    options = ort.SessionOptions()
    options.log_severity_level = 4
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    original_inputs = [i.name for i in session.get_inputs()]
    by_position = dict(zip(original_inputs, feeds.values(), strict=True))
    theirs = session.run(None, by_position)
    worst = 0.0
    for (name, got), want in zip(ours.items(), theirs, strict=True):
        err = float(np.abs(got.astype(np.float64) - want).max()) if got.size else 0.0
        rel = float(np.linalg.norm(got.astype(np.float64) - want) / max(np.linalg.norm(want), 1e-30))
        if rel > tolerance:
            raise SnipError(f"the chained snippets do not reproduce output '{name}' (relative L2 {rel:.3g})")
        worst = max(worst, err)
    return worst


__all__ = ["SnipError", "SnipResult", "snip"]
