"""Pipeline steps that replace stripped edges: the example kernels of ``custom_kernels/`` whose contract
matches what ``strip_edges`` removed, with their parameters filled in.

The contracts are those of the kernel descriptions (``preprocess_fast.yaml``: uint8 ``[N, H, W, 3]`` ->
float32 ``[N, 3, H, W]`` as ``(x / 255 - mean[c]) / std[c]``; ``softmax_fast.yaml``: float32 ``[R, C]``
over the last axis; ``topk_fast.yaml``: the 5 largest of each float32 ``[R, C]`` row, indices int32). A
test checks these against the files and runs the suggested steps on the CPU backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .edges import EdgeReport, InputTransform, OutputOp


@dataclass
class Suggestion:
    """YAML pieces of a pipeline: constants, kernels, steps in order; notes (what no kernel matches)."""

    constants: dict[str, str] = field(default_factory=dict)
    kernels: dict[str, str] = field(default_factory=dict)
    steps: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def matched(self) -> bool:
        return bool(self.kernels)

    def yaml(self, snippet_onnx: str) -> str:
        lines = (["constants:"] + [f"  {k}: {v}" for k, v in self.constants.items()]) if self.constants else []
        lines += ["kernels:"] + [f"  {k}: {v}" for k, v in self.kernels.items()]
        lines += ["snippets:", f"  model: {{onnx: {snippet_onnx}}}", "steps:", *self.steps]
        return "\n".join(lines) + "\n"


def suggest(report: EdgeReport, kernels_dir: str = "custom_kernels") -> Suggestion:
    """Kernel steps for what ``report`` stripped; the snippet step (the stripped model) in between."""
    out = Suggestion()
    for t in report.inputs:
        _preprocess_step(out, t, kernels_dir)
    out.steps.append("  - snippet: model")
    for op in report.outputs:
        _output_step(out, op, kernels_dir)
    return out


def _number(value: float) -> str:
    return str(np.float32(value))  # the shortest text that reads back as the same float32


def _preprocess_step(out: Suggestion, t: InputTransform, kernels_dir: str) -> None:
    why = _preprocess_mismatch(t)
    if why:
        out.notes.append(f"input {t.input!r}: no kernel matches: {why}")
        return
    scale = np.broadcast_to(np.asarray(t.scale or (1.0,), np.float64), 3)
    bias = np.broadcast_to(np.asarray(t.bias or (0.0,), np.float64), 3)
    std = 1.0 / (255.0 * scale)  # (x / 255 - mean) / std = x * scale + bias
    mean = -bias * std
    for name, values in ((f"{t.input}_mean", mean), (f"{t.input}_std", std)):
        out.constants[name] = "{value: [" + ", ".join(_number(v) for v in values) + "], dtype: float32}"
    out.kernels["preprocess"] = f"{kernels_dir}/preprocess_fast.yaml"
    out.steps += ["  - kernel: preprocess",
                  f"    args: {{image: {t.input}, mean: {t.input}_mean, std: {t.input}_std, out: {t.output}}}"]


def _preprocess_mismatch(t: InputTransform) -> str | None:
    """Why preprocess_fast.yaml does not compute ``t`` (None: it does)."""
    if t.dtype != "uint8" or t.cast != "float32":
        return f"preprocess reads uint8 and writes float32; this input is {t.dtype}, cast to {t.cast or 'nothing'}"
    if t.perm != (0, 3, 1, 2) or t.shape is None or len(t.shape) != 4:
        return "preprocess reads NHWC and writes NCHW (transpose perm [0, 3, 1, 2]); this input's is " \
               f"{list(t.perm) if t.perm else 'none'}"
    if t.shape[3] != 3:
        return f"preprocess reads 3 channels; this input has {t.shape[3]}"
    if t.axis not in (None, 1):
        return f"preprocess scales per channel (axis 1); this input along axis {t.axis}"
    if t.scale is not None and not all(t.scale):
        return "a channel's scale is 0 (no std gives it)"
    return None


def _output_step(out: Suggestion, op: OutputOp, kernels_dir: str) -> None:
    rows = op.dtype == "float32" and op.shape is not None and len(op.shape) == 2 and op.attrs.get("axis") in (-1, 1)
    if op.op == "Softmax" and rows:
        out.kernels["softmax"] = f"{kernels_dir}/softmax_fast.yaml"
        out.steps += ["  - kernel: softmax", f"    args: {{logits: {op.input}, probs: {op.outputs[0]}}}"]
    elif op.op == "TopK" and rows and op.attrs["k"] == 5 and op.attrs["largest"]:
        values, indices = (op.outputs + ("",))[:2]
        out.kernels["topk"] = f"{kernels_dir}/topk_fast.yaml"
        out.steps += ["  - kernel: topk",
                      f"    args: {{probs: {op.input}, index: {indices or op.input + '_top5_index'}, "
                      f"value: {values or op.input + '_top5_value'}}}"]
        out.notes.append(f"note: topk writes int32 indices ({indices or 'unused'!r} was int64 in the model)")
    else:
        why = {"Softmax": "softmax takes float32 [R, C] over the last axis",
               "TopK": "topk takes float32 [R, C] and gives the 5 largest over the last axis"}.get(op.op, "")
        out.notes.append(f"{op.describe()} of {op.input!r}: no kernel matches" + (f" ({why})" if why else ""))


def advice(report: EdgeReport, snippet_onnx: str, kernels_dir: str = "custom_kernels") -> list[str]:
    """The lines printed after a strip: the suggested pipeline YAML (when a kernel matches) and the notes."""
    if not report.stripped:
        return []
    found = suggest(report, kernels_dir)
    lines = [f"  {note}" for note in found.notes]
    if found.matched:
        lines += ["suggested pipeline pieces (paths relative to the stripped model's folder):",
                  *found.yaml(snippet_onnx).splitlines()]
    else:
        lines.append("no kernel in custom_kernels/ matches what was stripped")
    return lines
