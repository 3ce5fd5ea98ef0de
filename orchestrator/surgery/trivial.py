"""Operators that compute something trivial, replaced with what they really compute.

Inference-mode Dropout (any ratio; onnxoptimizer only drops ratio 0) is an Identity. For linear operators
by an identity or an all-zero constant, no library we found does this (onnxoptimizer's ``eliminate_nop_with_unit`` covers Mul/Add/Sub/Div/Pow by
a unit, not MatMul, Gemm or Conv): ``x @ I`` is ``x``; ``x @ 0 (+ b)`` is ``b`` broadcast to the output
shape; a Conv whose kernel is the identity (1 at each channel's centre tap, stride and dilation 1,
'same' padding) is ``x (+ b)``. The replacement is an Identity, Add or Expand; later passes remove the
Identity and fold what became constant.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class _Rewriter:
    model: object
    consts: dict[str, np.ndarray]
    shapes: dict[str, list[int | None]]
    nodes: list = field(default_factory=list)
    inits: list = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counter: int = 0

    def const(self, base: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.counter += 1
        name = f"{base}__surgery{self.counter}"
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        from onnx import helper

        self.counter += 1
        output = output or f"{op.lower()}__surgery{self.counter}"
        self.nodes.append(helper.make_node(op, inputs, [output], name=f"surgery_{op}_{self.counter}", **attrs))
        return output


def replace_trivial(model) -> tuple[object, list[str]]:
    """A copy of ``model`` with trivial Dropout/MatMul/Gemm/Conv replaced, and one note per replacement."""
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    rw = _Rewriter(model, consts, _inferred_shapes(model))
    for node in graph.node:
        handler = _HANDLERS.get(node.op_type)
        if handler is None or not handler(rw, node):
            rw.nodes.append(node)
    if rw.notes:
        del graph.node[:]
        graph.node.extend(rw.nodes)
        graph.initializer.extend(rw.inits)
    return model, rw.notes


def _inferred_shapes(model) -> dict[str, list[int | None]]:
    import onnx

    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:  # without shapes, only rewrites that need none apply
        return {}
    shapes = {}
    for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        if value.type.tensor_type.HasField("shape"):
            dims = value.type.tensor_type.shape.dim
            shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return shapes


def _is_identity(w: np.ndarray | None) -> bool:
    return w is not None and w.ndim == 2 and w.shape[0] == w.shape[1] and np.array_equal(w, np.eye(len(w)))


def _is_zero(w: np.ndarray | None) -> bool:
    return w is not None and w.size > 0 and not np.any(w)


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _broadcast(rw: _Rewriter, node, value: np.ndarray, shape: str) -> None:
    """``node``'s output := ``value`` expanded to the 1-D shape tensor ``shape``."""
    rw.node("Expand", [rw.const(node.output[0], value), shape], node.output[0])


def _shape_tensor(rw: _Rewriter, source: str, keep: slice, tail: list[int]) -> str | None:
    """A 1-D int64 shape: ``Shape(source)[keep] + tail`` (a constant when those dims are static)."""
    dims = rw.shapes.get(source)
    if dims is not None and all(d is not None for d in dims[keep]):
        return rw.const(source, np.array([*dims[keep], *tail], np.int64))
    if source not in rw.shapes and source not in rw.consts:
        return None  # rank unknown: a slice of an unknown shape cannot be checked
    start, stop = keep.start or 0, keep.stop if keep.stop is not None else np.iinfo(np.int64).max
    bounds = [rw.const(source, np.array([v], np.int64)) for v in (start, stop)]
    part = rw.node("Slice", [rw.node("Shape", [source]), *bounds])
    return rw.node("Concat", [part, rw.const(source, np.array(tail, np.int64))], axis=0)


def _matmul(rw: _Rewriter, node) -> bool:
    a, b = node.input
    w = rw.consts.get(b)
    if _is_identity(w) or (_is_identity(rw.consts.get(a)) and len(rw.shapes.get(b, ())) >= 2):
        rw.node("Identity", [a if _is_identity(w) else b], node.output[0])
        rw.notes.append(f"MatMul '{node.name or node.output[0]}': operand is the identity -> Identity")
        return True
    if _is_zero(w) and w.ndim == 2 and len(rw.shapes.get(a, ())) >= 2:
        shape = _shape_tensor(rw, a, slice(0, -1), [w.shape[1]])
        if shape is None:
            return False
        _broadcast(rw, node, np.zeros((), w.dtype), shape)
        rw.notes.append(f"MatMul '{node.name or node.output[0]}': weight is all zeros -> zeros broadcast")
        return True
    return False


def _gemm(rw: _Rewriter, node) -> bool:
    at = _attrs(node)
    alpha, beta = at.get("alpha", 1.0), at.get("beta", 1.0)
    trans_a, trans_b = at.get("transA", 0), at.get("transB", 0)
    a, b = node.input[0], node.input[1]
    c = node.input[2] if len(node.input) > 2 and node.input[2] else None
    w, bias = rw.consts.get(b), rw.consts.get(c) if c else None
    if c is not None and bias is None:
        return False  # a run-time C: leave the Gemm alone
    if _is_identity(w) and alpha == 1.0:
        x = rw.node("Transpose", [a]) if trans_a else a
        if bias is None:
            rw.node("Identity", [x], node.output[0])
        else:
            rw.node("Add", [x, rw.const(c, (beta * bias).astype(bias.dtype))], node.output[0])
        rw.notes.append(f"Gemm '{node.name or node.output[0]}': B is the identity -> " + ("Identity" if bias is None else "bias Add"))
        return True
    if w is not None and w.ndim == 2 and (_is_zero(w) or alpha == 0.0):
        n = w.shape[0] if trans_b else w.shape[1]
        shape = _shape_tensor(rw, a, slice(trans_a, trans_a + 1), [n])
        if shape is None:
            return False
        value = np.zeros((), w.dtype) if bias is None else (beta * bias).astype(bias.dtype)
        _broadcast(rw, node, value, shape)
        rw.notes.append(f"Gemm '{node.name or node.output[0]}': A·B is zero -> " + ("zeros" if bias is None else "bias") + " broadcast")
        return True
    return False


def _conv_is_identity(w: np.ndarray, at: dict) -> bool:
    kernel = w.shape[2:]
    if any(k % 2 == 0 for k in kernel) or at.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return False
    if any(s != 1 for s in at.get("strides", [1])) or any(d != 1 for d in at.get("dilations", [1])):
        return False
    if list(at.get("pads", [0] * 2 * len(kernel))) != [(k - 1) // 2 for k in kernel] * 2:
        return False
    channels, group = w.shape[0], at.get("group", 1)
    if not (group == 1 and w.shape[1] == channels) and not (group == channels and w.shape[1] == 1):
        return False
    expected = np.zeros_like(w)
    centre = tuple((k - 1) // 2 for k in kernel)
    for ch in range(channels):
        expected[(ch, 0 if group > 1 else ch, *centre)] = 1
    return np.array_equal(w, expected)


def _conv(rw: _Rewriter, node) -> bool:
    w = rw.consts.get(node.input[1])
    bias_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
    bias = rw.consts.get(bias_name) if bias_name else None
    if w is None or w.ndim < 3 or (bias_name and bias is None):
        return False
    spatial = w.ndim - 2
    if _conv_is_identity(w, _attrs(node)):
        if bias is None:
            rw.node("Identity", [node.input[0]], node.output[0])
        else:
            per_channel = bias.reshape(-1, *[1] * spatial)
            rw.node("Add", [node.input[0], rw.const(bias_name, per_channel)], node.output[0])
        rw.notes.append(f"Conv '{node.name or node.output[0]}': kernel is the identity -> " + ("Identity" if bias is None else "bias Add"))
        return True
    out = rw.shapes.get(node.output[0])
    if _is_zero(w) and out is not None and all(d is not None for d in out[1:]):
        shape = _shape_tensor(rw, node.input[0], slice(0, 1), out[1:])
        value = np.zeros((), w.dtype) if bias is None else bias.reshape(-1, *[1] * spatial)
        if shape is None:
            return False
        _broadcast(rw, node, value, shape)
        rw.notes.append(f"Conv '{node.name or node.output[0]}': kernel is all zeros -> " + ("zeros" if bias is None else "bias") + " broadcast")
        return True
    return False


def _dropout(rw: _Rewriter, node) -> bool:
    """Outside training, Dropout passes its input through (its mask output must be unused)."""
    training = rw.consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else np.array(False)
    if training is None or bool(training) or (len(node.output) > 1 and node.output[1]):
        return False
    rw.node("Identity", [node.input[0]], node.output[0])
    rw.notes.append(f"Dropout '{node.name or node.output[0]}': inference mode -> Identity")
    return True


_HANDLERS = {"Dropout": _dropout, "MatMul": _matmul, "Gemm": _gemm, "Conv": _conv}
