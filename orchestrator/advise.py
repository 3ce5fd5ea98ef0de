"""``orchestrator advise``: what would make a pipeline's snippets faster on tensor cores, with numbers.

Three static checks read each snippet's ONNX graph: convolutions and GEMMs whose channel counts miss the
tensor-core multiples (8 for FP16, 16 and 32 for INT8) and the padding that fixes them; tensors between
snippets that are linear but could stay in TensorRT's ``hwc8`` (no reformat at the cut); fp32 snippets
whose weights fit FP16. Given inputs, it measures each snippet's error at fp16 against fp32 on the same
inputs (``isolated``: the snippet alone, fed the fp32 run's tensors) and, on the GPU, through the whole
pipeline (``in pipeline``: every snippet at fp16 against every snippet at fp32, errors accumulating).
The CPU reference ignores ``precision``, so there the isolated error comes from onnxruntime running the
snippet converted to FP16 (``onnxruntime.transformers.float16``; inputs and outputs stay fp32).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .pipeline.ir import Pipeline, SnippetCall, SnippetInfo, walk

FP16_MULTIPLE, INT8_MULTIPLES = 8, (16, 32)
FP16_MAX, FP16_TINY = 65504.0, 2.0**-24  # largest finite and smallest subnormal FP16 magnitudes


@dataclass(frozen=True)
class ChannelAdvice:
    snippet: str
    node: str
    op: str
    dimension: str  # "input channels", "output channels", "K", "N"
    count: int

    def line(self) -> str:
        n = self.count
        int8 = sorted({_round_up(n, m) for m in INT8_MULTIPLES})
        pads = [f"{_round_up(n, FP16_MULTIPLE)} for FP16 (+{_round_up(n, FP16_MULTIPLE) - n})"] if n % FP16_MULTIPLE else []
        pads.append(" or ".join(f"{p} (+{p - n})" for p in int8) + " for INT8")
        return f"snippet '{self.snippet}': {self.op} '{self.node}' {self.dimension} = {n}: pad to {', '.join(pads)}"


@dataclass(frozen=True)
class StepError:
    step: str
    snippet: str
    tensor: str
    isolated_max_abs: float
    isolated_rel_l2: float
    pipeline_max_abs: float | None = None  # GPU only: the CPU reference ignores precision
    pipeline_rel_l2: float | None = None


@dataclass
class Advice:
    channels: list[ChannelAdvice] = field(default_factory=list)
    hwc8: list[str] = field(default_factory=list)
    fp16: list[str] = field(default_factory=list)
    errors: list[StepError] | None = None
    device: str = "cpu"

    def text(self) -> str:
        out = ["tensor-core channel counts (FP16 wants multiples of 8, INT8 of 16 or 32):"]
        out += [f"  {c.line()}" for c in self.channels] or ["  all convolutions and GEMMs are aligned"]
        out += ["boundaries that could be hwc8 (FP16 channels-last, no reformat at the cut):"]
        out += [f"  {line}" for line in self.hwc8] or ["  none"]
        out += ["fp32 snippets that are candidates for fp16:"]
        out += [f"  {line}" for line in self.fp16] or ["  none"]
        if self.errors is not None:
            out.append(f"measured fp16 vs fp32 error per snippet step ({self.device}):")
            out.append(f"  {'step':20} {'snippet':16} {'tensor':16} {'isolated max abs':>16} {'rel L2':>9} "
                       f"{'in pipeline max abs':>19} {'rel L2':>9}")
            for e in self.errors:
                tail = "n/a (CPU)" if e.pipeline_max_abs is None else f"{e.pipeline_max_abs:.3g}"
                rel = "" if e.pipeline_rel_l2 is None else f"{e.pipeline_rel_l2:.3g}"
                out.append(f"  {e.step[:20]:20} {e.snippet[:16]:16} {e.tensor[:16]:16} {e.isolated_max_abs:>16.3g} "
                           f"{e.isolated_rel_l2:>9.3g} {tail:>19} {rel:>9}")
        return "\n".join(out)


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def advise(pipeline: str | Path | Pipeline, *, inputs: Mapping[str, Any] | None = None,
           device: str = "auto") -> Advice:
    """Static advice for every snippet, and (given ``inputs``) the measured fp16 vs fp32 error per step."""
    from .pipeline.load import load_pipeline

    pipeline = pipeline if isinstance(pipeline, Pipeline) else load_pipeline(pipeline)
    advice = Advice()
    for info in pipeline.snippets.values():
        model = _load(info)
        advice.channels += channel_advice(info.name, model)
        if info.precision == "fp32":
            note = fp16_candidate(model)
            if note:
                advice.fp16.append(f"snippet '{info.name}': {note}")
    advice.hwc8 = hwc8_candidates(pipeline)
    if inputs is not None:
        advice.errors, advice.device = measure_fp16_error(pipeline, inputs, device)
    return advice


def _load(info: SnippetInfo):
    import onnx

    from .surgery.snippets import snippet_onnx_bytes

    model = onnx.load_from_string(snippet_onnx_bytes(info))
    try:
        return onnx.shape_inference.infer_shapes(model)
    except Exception:  # advice only: without inferred shapes, GEMMs with run-time operands are skipped
        return model


# ---- static checks ----------------------------------------------------------------------------------


def channel_advice(snippet: str, model) -> list[ChannelAdvice]:
    """Conv (group 1) input/output channels and MatMul/Gemm K and N that are not multiples of 16 (INT8's
    minimum, and so of FP16's 8 too); each line gives the padded sizes for the multiples it misses."""
    from onnx import helper

    dims = _known_dims(model)
    found = []
    for node in model.graph.node:
        name = node.name or node.output[0]
        counts: list[tuple[str, int | None]] = []
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv" and attrs.get("group", 1) == 1:
            w = dims.get(node.input[1])
            if w and len(w) >= 3:
                counts = [("input channels", w[1]), ("output channels", w[0])]
        elif node.op_type in ("MatMul", "Gemm"):
            a, b = dims.get(node.input[0]), dims.get(node.input[1])
            if a and b and len(a) >= 2 and len(b) >= 2:
                trans_a, trans_b = attrs.get("transA", 0), attrs.get("transB", 0)
                counts = [("K", a[-2] if trans_a else a[-1]), ("N", b[-2] if trans_b else b[-1])]
        found += [ChannelAdvice(snippet, name, node.op_type, what, n) for what, n in counts
                  if isinstance(n, int) and n > 0 and n % INT8_MULTIPLES[0]]  # 8 | 16: covers FP16 too
    return found


def _known_dims(model) -> dict[str, list[int | None]]:
    graph = model.graph
    dims: dict[str, list[int | None]] = {t.name: list(t.dims) for t in graph.initializer}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        shape = value.type.tensor_type.shape.dim
        dims.setdefault(value.name, [d.dim_value if d.HasField("dim_value") else None for d in shape])
    return dims


def fp16_candidate(model) -> str | None:
    """Why an fp32 snippet could run at fp16 (it has convolutions/GEMMs and its weights fit FP16), or None."""
    from onnx import numpy_helper

    heavy = sum(1 for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose", "MatMul", "Gemm"))
    if not heavy:
        return None
    weights = [numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == 1]  # FLOAT
    values = np.concatenate([w.reshape(-1) for w in weights]) if weights else np.zeros(0, np.float32)
    magnitude = np.abs(values)
    if magnitude.size and magnitude.max() > FP16_MAX:
        return None
    tiny = int(((magnitude > 0) & (magnitude < FP16_TINY)).sum())
    note = f"{heavy} convolution/GEMM node(s), {values.size:,} fp32 weights within the FP16 range"
    if tiny:
        note += f" ({tiny} would flush to zero)"
    return note + "; check the measured error (--inputs) before switching"


def hwc8_candidates(pipeline: Pipeline) -> list[str]:
    """4-D tensors written by a snippet and read only by snippets, stored linear: each cut costs TensorRT
    two reformats that ``formats: {port: hwc8}`` on both sides would avoid (all sides must be fp16)."""
    producers, readers = {}, {}
    for node in walk(pipeline.body):
        if isinstance(node, SnippetCall):
            for tensor in node.writes:
                producers[tensor] = node
        for tensor in getattr(node, "reads", ()):
            readers.setdefault(tensor, []).append(node)
    found = []
    for tensor, producer in producers.items():
        info = pipeline.tensors[tensor]
        users = readers.get(tensor, [])
        if info.layout != "linear" or len(info.shape) != 4 or tensor in pipeline.outputs or not users \
                or info.dtype not in ("float32", "float16"):
            continue
        if not all(isinstance(u, SnippetCall) for u in users):
            continue
        sides = [producer, *users]
        fp32 = sorted({s.snippet for s in sides if pipeline.snippets[s.snippet].precision != "fp16"})
        readers_text = ", ".join(f"'{u.name}'" for u in users)
        line = f"'{tensor}' ({producer.name} -> {readers_text})"
        found.append(line + (f": once {', '.join(fp32)} run at fp16" if fp32 else ""))
    return found


# ---- measured error ---------------------------------------------------------------------------------


def at_precision(pipeline: Pipeline, precision: str) -> Pipeline:
    """Every snippet at ``precision`` with linear ports (formats dropped; tensors get their ONNX dtypes)."""
    snippets = {n: dataclasses.replace(s, precision=precision, formats={}) for n, s in pipeline.snippets.items()}
    tensors = dict(pipeline.tensors)
    for node in walk(pipeline.body):
        if isinstance(node, SnippetCall):
            for port, tensor in node.outputs.items():
                if tensors[tensor].layout != "linear":
                    dtype = pipeline.snippets[node.snippet].outputs[port].dtype
                    tensors[tensor] = dataclasses.replace(tensors[tensor], layout="linear", dtype=dtype)
    return dataclasses.replace(pipeline, snippets=snippets, tensors=tensors)


def measure_fp16_error(pipeline: Pipeline, inputs: Mapping[str, Any], device: str) -> tuple[list[StepError], str]:
    from .api import Orchestrator
    from .debug import compare_runs

    with Orchestrator(at_precision(pipeline, "fp32"), device=device, debug=True) as fp32:
        reference = fp32.debug_run(inputs).records
        device = fp32.device
    accumulated = {}
    if device != "cpu":
        with Orchestrator(at_precision(pipeline, "fp16"), device=device, debug=True) as fp16:
            ours = fp16.debug_run(inputs).records
        for c in compare_runs(ours, reference, 0.0, 0.0):
            for d in c.divergences:
                accumulated[(c.record.name, c.record.occurrence, d.tensor)] = (d.max_abs, d.rel_l2)
    rows = []
    for record in reference:
        if not isinstance(record.step, SnippetCall):
            continue
        got = isolated_fp16(pipeline, record, device)
        for tensor in record.step.outputs.values():
            err = _error(got[tensor], record.outputs[tensor])
            acc = accumulated.get((record.name, record.occurrence, tensor), (0.0, 0.0)) if device != "cpu" else (None,) * 2
            rows.append(StepError(record.name, record.step.snippet, tensor, *err, *acc))
    return rows, device


def _error(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    a, b = got.astype(np.float64), want.astype(np.float64)
    norm = float(np.linalg.norm(b))
    diff = float(np.linalg.norm(a - b))
    return float(np.abs(a - b).max(initial=0.0)), diff / norm if norm else (0.0 if diff == 0 else float("inf"))


def isolated_fp16(pipeline: Pipeline, record, device: str) -> dict[str, np.ndarray]:
    """The step's snippet at fp16, fed exactly what the fp32 run gave it; outputs by pipeline tensor."""
    step: SnippetCall = record.step
    info = pipeline.snippets[step.snippet]
    if device == "cpu":
        session = _fp16_session(info)
        feeds = {port: record.inputs[t].astype(np.float32) if record.inputs[t].dtype == np.float16 else record.inputs[t]
                 for port, t in step.inputs.items()}
        results = session.run(list(step.outputs), feeds)
        return {step.outputs[p]: r for p, r in zip(step.outputs, results, strict=True)}
    from .api import Orchestrator

    with Orchestrator(single_step(pipeline, step, "fp16"), device=device) as orch:
        return orch.run({t: record.inputs[t] for t in step.reads if t not in pipeline.constants})


def _fp16_session(info: SnippetInfo):
    import onnxruntime as ort

    from .precision import Conversion, convert
    from .surgery.snippets import snippet_onnx_bytes

    # the conversion the GPU's converted precision path builds from (backends/cuda/trt.py)
    model = convert(snippet_onnx_bytes(info), Conversion("fp16", info.keep_fp32), name=info.name)
    options = ort.SessionOptions()
    options.log_severity_level = 4
    # Not the layout optimisations of ORT_ENABLE_ALL: on onnxruntime 1.32 (AVX-512 CPUs) its NHWC transformer
    # crashes the process on an fp16 Transpose -> MatMul (a GRU's or an attention's output projection).
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def single_step(pipeline: Pipeline, step: SnippetCall, precision: str) -> Pipeline:
    """A pipeline of one snippet step whose inputs are the tensors it reads (linear, ONNX dtypes)."""
    base = at_precision(pipeline, precision)
    info = base.snippets[step.snippet]
    inputs = {t: dataclasses.replace(base.tensors[t], origin="input", layout="linear",
                                     dtype=info.inputs[port].dtype)
              for port, t in step.inputs.items() if t not in pipeline.constants}
    constants = {t: a for t, a in pipeline.constants.items() if t in step.reads}
    tensors = {**{t: base.tensors[t] for t in constants}, **inputs, **{t: base.tensors[t] for t in step.writes}}
    return dataclasses.replace(base, inputs=inputs, outputs=step.writes, constants=constants,
                               snippets={step.snippet: info}, kernels={}, body=(step,), tensors=tensors,
                               warnings=())
