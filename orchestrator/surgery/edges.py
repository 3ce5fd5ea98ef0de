"""Strip pre- and post-processing at a model's edges (``orchestrator optimize --strip-edges``).

From each graph input forward over Cast/Transpose/Identity and Mul/Div/Add/Sub by constants, and from each
graph output backward over Softmax/LogSoftmax/ArgMax/TopK/Identity/Cast, the nodes are removed and the
first (last) real compute node's input (output) becomes the graph's input (output). What was removed is
described exactly enough to re-create it: per input a cast, a transpose and one affine map per channel
(``x * scale[c] + bias[c]``, folded from the arithmetic); per output side the op list with its attributes.
A chain stops (and the model keeps the rest) before the first node it cannot describe exactly: an operand
that is not a constant, not scalar or per channel, arithmetic on integers, a tensor read by more than one
node; the report says where and why each chain stopped. Only a model with no compute left between its
stripped edges is refused: it comes back unchanged, with the reason on one line.

The walk is ours (no library describes what it removes); onnx-graphsurgeon does the edit itself (new
graph inputs and outputs, dead nodes and initializers dropped).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

INPUT_OPS = frozenset({"Cast", "Transpose", "Mul", "Div", "Add", "Sub", "Identity"})
OUTPUT_OPS = frozenset({"Softmax", "LogSoftmax", "ArgMax", "TopK", "Identity", "Cast"})
_ARITHMETIC = ("Mul", "Div", "Add", "Sub")

Dim = int | str | None


class Refused(Exception):
    """The model cannot be stripped at all; the message is the one-line reason."""


class Stop(Exception):
    """A chain ends before this node (it stays in the model); the message says why."""


@dataclass(frozen=True)
class InputTransform:
    """``new input = transpose(cast(input), perm) * scale + bias``, scale and bias along ``axis`` of the new
    input (one value each, for every element, when ``axis`` is None; no arithmetic when they are None)."""

    input: str
    dtype: str
    shape: tuple[Dim, ...] | None
    output: str
    out_dtype: str
    out_shape: tuple[Dim, ...] | None
    ops: tuple[str, ...]
    cast: str | None = None
    perm: tuple[int, ...] | None = None
    axis: int | None = None
    scale: tuple[float, ...] | None = None
    bias: tuple[float, ...] | None = None

    def apply(self, x: np.ndarray) -> np.ndarray:
        if self.cast:
            x = x.astype(self.cast)
        if self.perm:
            x = np.transpose(x, self.perm)
        if self.scale is None:
            return np.ascontiguousarray(x)
        shape = [1] * x.ndim
        if self.axis is not None:
            shape[self.axis] = -1
        scale, bias = (np.asarray(v, x.dtype).reshape(shape) for v in (self.scale, self.bias))
        return np.ascontiguousarray(x * scale + bias)


@dataclass(frozen=True)
class OutputOp:
    """One removed post-processing node: ``outputs = op(input)`` with its attributes (TopK's k included)."""

    op: str
    input: str
    outputs: tuple[str, ...]
    dtype: str  # of the input
    shape: tuple[Dim, ...] | None
    attrs: dict[str, object] = field(default_factory=dict)

    def describe(self) -> str:
        attrs = ", ".join(f"{k}={v}" for k, v in self.attrs.items())
        return f"{self.op}({attrs})"

    def apply(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        return _REPLAY[self.op](x, **self.attrs)


@dataclass(frozen=True)
class EdgeReport:
    """What ``strip_edges`` removed (or, with ``refused``, why it removed nothing)."""

    inputs: tuple[InputTransform, ...] = ()
    outputs: tuple[OutputOp, ...] = ()
    graph_outputs: tuple[str, ...] = ()  # the original model's outputs, in order
    new_outputs: tuple[dict, ...] = ()  # {"name", "dtype", "shape"} of each new graph output
    refused: str | None = None
    kept: tuple[str, ...] = ()  # where a chain stopped and why (those nodes stay in the model)

    @property
    def stripped(self) -> bool:
        return self.refused is None and bool(self.inputs or self.outputs)

    def pre(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The stripped model's feeds from the original model's."""
        done = {t.input: t for t in self.inputs}
        return {(done[k].output if k in done else k): (done[k].apply(v) if k in done else v)
                for k, v in feeds.items()}

    def post(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The original model's outputs from the stripped model's (by name)."""
        env = dict(outputs)
        for op in self.outputs:
            env.update((name, value) for name, value in zip(op.outputs, op.apply(env[op.input]), strict=True)
                       if name)
        return {name: env[name] for name in self.graph_outputs}

    def lines(self) -> list[str]:
        if self.refused:
            return [f"strip_edges: refused, model unchanged: {self.refused}"]
        kept = [f"  kept: {why}" for why in self.kept]
        if not self.stripped:
            return ["strip_edges: nothing to strip (no preprocessing after the inputs, no post-processing "
                    "before the outputs)", *kept]
        lines = ["strip_edges: removed"]
        lines += [line for t in self.inputs for line in _input_lines(t)]
        lines += [f"  output side: {', '.join(repr(n) for n in op.outputs if n)} = {op.describe()} of "
                  f"{op.input!r}" for op in self.outputs]
        new = ", ".join(f"{o['name']!r} ({_typed(o['dtype'], o['shape'])})" for o in self.new_outputs)
        lines.append(f"  graph outputs now: {new}")
        return lines + kept


def _typed(dtype: str, shape: tuple[Dim, ...] | None) -> str:
    dims = "?" if shape is None else "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
    return f"{dtype} {dims}"


def _input_lines(t: InputTransform) -> list[str]:
    lines = [f"  input {t.input!r} ({_typed(t.dtype, t.shape)}) -> new input {t.output!r} "
             f"({_typed(t.out_dtype, t.out_shape)}): {', '.join(t.ops)}"]
    steps = [f"cast to {t.cast}"] if t.cast else []
    steps += [f"transpose perm {list(t.perm)}"] if t.perm else []
    if t.scale is not None:
        steps.append("x * scale + bias" if t.axis is None else f"x * scale[c] + bias[c] along axis {t.axis}")
    lines.append("    " + ("; ".join(steps) or "nothing (Identity only)"))
    if t.scale is not None:
        lines += [f"    scale = {list(t.scale)}", f"    bias  = {list(t.bias)}"]
    return lines


# ---- the model: constants, readers, types --------------------------------------------------------------

@dataclass
class _Graph:
    nodes: list
    consts: dict[str, np.ndarray]
    readers: dict[str, list]
    producer: dict[str, object]
    inputs: list  # ValueInfoProto, initializers excluded
    outputs: list[str]
    opset: int
    types: dict[str, tuple[str, tuple[Dim, ...] | None]]


def _graph(model) -> _Graph:
    from onnx import helper, numpy_helper

    g = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for node in g.node:
        if node.op_type == "Constant" and node.attribute:
            value = helper.get_attribute_value(node.attribute[0])
            consts[node.output[0]] = numpy_helper.to_array(value) if hasattr(value, "dims") else np.asarray(value)
    readers: dict[str, list] = defaultdict(list)
    for node in g.node:
        for name in dict.fromkeys(node.input):
            readers[name].append(node)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    return _Graph(list(g.node), consts, readers, {o: n for n in g.node for o in n.output},
                  [v for v in g.input if v.name not in consts], [v.name for v in g.output], opset, _types(model))


def _types(model) -> dict[str, tuple[str, tuple[Dim, ...] | None]]:
    import onnx

    with contextlib.suppress(Exception):  # without inference, only the declared inputs and outputs have types
        model = onnx.shape_inference.infer_shapes(model)
    types = {}
    for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        tensor = value.type.tensor_type
        if tensor.elem_type:
            types[value.name] = (_np_name(tensor.elem_type), _shape(tensor) if tensor.HasField("shape") else None)
    return types


def _np_name(elem_type: int) -> str:
    from onnx import helper

    return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).name


def _shape(tensor) -> tuple[Dim, ...]:
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim)


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _label(node) -> str:
    return f"{node.op_type} '{node.name or node.output[0]}'"


# ---- input side ------------------------------------------------------------------------------------------

@dataclass
class _Chain:
    """The input chain walked so far, in canonical form: cast, then transpose, then affine."""

    name: str
    input_dtype: str
    input_shape: tuple[Dim, ...] | None
    dtype: str = ""
    shape: tuple[Dim, ...] | None = None
    ops: list = field(default_factory=list)
    cast: str | None = None
    perm: tuple[int, ...] | None = None
    scale: np.ndarray | None = None
    bias: np.ndarray | None = None


def _walk_input(g: _Graph, value, kept: list[str]) -> tuple[InputTransform | None, list]:
    if value.name not in g.types:
        kept.append(f"input {value.name!r}: its element type is unknown")
        return None, []
    dtype, shape = g.types[value.name]
    chain = _Chain(value.name, dtype, shape, dtype, shape)
    tensor = value.name
    while True:
        readers = g.readers.get(tensor, [])
        if not any(n.op_type in INPUT_OPS for n in readers):
            break
        if len(readers) > 1 or tensor in g.outputs:
            uses = len(readers) + (tensor in g.outputs)
            kept.append(f"input {value.name!r}: the chain stops at {tensor!r}, which is used {uses} times")
            break
        try:
            if not _absorb(g, chain, readers[0], tensor):
                break
        except Stop as why:
            kept.append(str(why))
            break
        tensor = readers[0].output[0]
        chain.ops.append(readers[0])
    if not chain.ops:
        return None, []
    return _transform(chain, value.name, tensor), chain.ops


def _absorb(g: _Graph, chain: _Chain, node, tensor: str) -> bool:
    """Fold ``node`` into the chain; False: it is compute (the chain stops before it)."""
    op = node.op_type
    if op == "Identity":
        return True
    if op == "Cast":
        to = _np_name(_attrs(node)["to"])
        if chain.cast or chain.scale is not None or np.dtype(to).kind != "f":
            return False  # a second cast, one after arithmetic or to a non-float: the model keeps it
        chain.cast, chain.dtype = to, to
        return True
    if chain.shape is None:
        raise Stop(f"input {chain.name!r}: {_label(node)}: the input's rank is unknown")
    if op == "Transpose":
        _transpose(chain, _attrs(node).get("perm") or list(range(len(chain.shape)))[::-1])
        return True
    _arithmetic(g, chain, node, tensor)
    return True


def _transpose(chain: _Chain, perm: list[int]) -> None:
    before = chain.perm or tuple(range(len(perm)))
    chain.perm = tuple(before[p] for p in perm)
    chain.shape = tuple(chain.shape[p] for p in perm)
    if chain.scale is not None:
        chain.scale, chain.bias = chain.scale.transpose(perm), chain.bias.transpose(perm)


def _arithmetic(g: _Graph, chain: _Chain, node, tensor: str) -> None:
    where = f"input {chain.name!r}: {_label(node)}"
    if np.dtype(chain.dtype).kind != "f":
        raise Stop(f"{where}: arithmetic on a {chain.dtype} tensor (not an affine map on real numbers)")
    first = node.input[0] == tensor
    other = node.input[1] if first else node.input[0]
    if other == tensor or other not in g.consts:
        raise Stop(f"{where}: operand {other!r} is not a constant")
    c = _per_channel(where, g.consts[other].astype(np.float64), chain.shape)
    if node.op_type == "Div" and not first:
        raise Stop(f"{where}: a constant divided by the input is not affine")
    if node.op_type == "Div" and not np.all(c):
        raise Stop(f"{where}: division by zero")
    if chain.scale is None:
        s, b = np.ones([1] * len(chain.shape)), np.zeros([1] * len(chain.shape))
    else:
        s, b = chain.scale, chain.bias
    scale, bias = {
        "Mul": lambda: (s * c, b * c), "Div": lambda: (s / c, b / c), "Add": lambda: (s, b + c),
        "Sub": lambda: (s, b - c) if first else (-s, c - b),
    }[node.op_type]()
    if len([a for a, n in enumerate(np.broadcast(scale, bias).shape) if n != 1]) > 1:
        raise Stop(f"{where}: with the operands before it, the map would vary along two axes")
    chain.scale, chain.bias = scale, bias


def _per_channel(where: str, c: np.ndarray, shape: tuple[Dim, ...]) -> np.ndarray:
    """``c`` at the tensor's rank; the chain stops unless it is a scalar or varies along one axis without
    broadcasting the tensor to a larger shape."""
    if c.ndim > len(shape):
        raise Stop(f"{where}: operand of shape {list(c.shape)} broadcasts the input to a higher rank")
    c = c.reshape((1,) * (len(shape) - c.ndim) + c.shape)
    varying = [axis for axis, n in enumerate(c.shape) if n != 1]
    if len(varying) > 1:
        raise Stop(f"{where}: operand of shape {list(c.shape)} is not per channel (it varies along "
                      f"{len(varying)} axes)")
    if varying and c.shape[varying[0]] != shape[varying[0]]:
        raise Stop(f"{where}: operand of shape {list(c.shape)} does not match the input's dimension "
                      f"{shape[varying[0]]} on axis {varying[0]} (it would broadcast the input)")
    return c


def _transform(chain: _Chain, name: str, output: str) -> InputTransform:
    axis, scale, bias = None, None, None
    if chain.scale is not None:
        s, b = np.broadcast_arrays(chain.scale, chain.bias)
        varying = [a for a, n in enumerate(s.shape) if n != 1]
        axis = varying[0] if varying else None
        scale, bias = tuple(float(v) for v in s.reshape(-1)), tuple(float(v) for v in b.reshape(-1))
    return InputTransform(
        input=name, dtype=chain.input_dtype, shape=chain.input_shape, output=output,
        out_dtype=chain.dtype, out_shape=chain.shape, ops=tuple(n.op_type for n in chain.ops),
        cast=chain.cast, perm=chain.perm if chain.perm != tuple(range(len(chain.perm or ()))) else None,
        axis=axis, scale=scale, bias=bias)


# ---- output side -----------------------------------------------------------------------------------------

def _walk_outputs(g: _Graph, kept: list[str]) -> list[OutputOp]:
    """Post-processing nodes whose every output is a graph output, unused, or read only by such nodes;
    one that cannot be described exactly stays in the model (and so does everything before it)."""
    done: dict[int, OutputOp] = {}
    refused: set[int] = set()
    while True:
        added = 0
        for node in g.nodes:
            if id(node) in done or id(node) in refused or node.op_type not in OUTPUT_OPS:
                continue
            if not _is_sink(g, node, done):
                continue
            try:
                done[id(node)] = _output_op(g, node)
                added += 1
            except Stop as why:
                kept.append(str(why))
                refused.add(id(node))
        if not added:
            return [done[id(n)] for n in g.nodes if id(n) in done]


def _is_sink(g: _Graph, node, done: dict[int, OutputOp]) -> bool:
    outputs = [o for o in node.output if o]
    if not node.input or node.input[0] in g.consts:
        return False
    if any(id(r) not in done for o in outputs for r in g.readers.get(o, [])):
        return False
    return any(o in g.outputs or g.readers.get(o) for o in outputs)


def _output_op(g: _Graph, node) -> OutputOp:
    dtype, shape = g.types.get(node.input[0], ("", None))
    if not dtype:
        raise Stop(f"output side: {_label(node)}: the type of {node.input[0]!r} cannot be inferred")
    attrs = _OUTPUT_ATTRS[node.op_type](g, node, _attrs(node), shape)
    return OutputOp(node.op_type, node.input[0], tuple(node.output), dtype, shape, attrs)


def _softmax_attrs(g: _Graph, node, at: dict, shape) -> dict:
    axis = at.get("axis", -1 if g.opset >= 13 else 1)
    # before opset 13 the input was flattened to 2-D at axis: the same only on the last axis
    if g.opset < 13 and (shape is None or axis % len(shape) != len(shape) - 1):
        raise Stop(f"output side: {_label(node)}: opset {g.opset} {node.op_type} over axis {axis} "
                          f"of a rank-{'?' if shape is None else len(shape)} tensor (not the last axis)")
    return {"axis": axis}


def _argmax_attrs(g: _Graph, node, at: dict, shape) -> dict:
    return {"axis": at.get("axis", 0), "keepdims": at.get("keepdims", 1),
            "select_last_index": at.get("select_last_index", 0)}


def _topk_attrs(g: _Graph, node, at: dict, shape) -> dict:
    if "k" in at:  # opset 1
        k = at["k"]
    elif node.input[1] in g.consts:
        k = int(g.consts[node.input[1]].reshape(-1)[0])
    else:
        raise Stop(f"output side: {_label(node)}: K {node.input[1]!r} is not a constant")
    if not at.get("sorted", 1):
        raise Stop(f"output side: {_label(node)}: sorted=0 leaves the order unspecified")
    return {"k": k, "axis": at.get("axis", -1), "largest": at.get("largest", 1)}


_OUTPUT_ATTRS = {
    "Softmax": _softmax_attrs, "LogSoftmax": _softmax_attrs, "ArgMax": _argmax_attrs, "TopK": _topk_attrs,
    "Cast": lambda g, node, at, shape: {"to": _np_name(at["to"])},
    "Identity": lambda g, node, at, shape: {},
}


def _new_outputs(g: _Graph, post: list[OutputOp], chains: list) -> list[dict]:
    """The graph outputs after stripping: each stripped output replaced by the tensors its ops read."""
    stripped = {o: op for op in post for o in op.outputs if o}
    pre = {g_input.name for g_input in g.inputs} | {o for ops in chains for n in ops for o in n.output}

    def sources(tensor: str) -> list[str]:
        op = stripped.get(tensor)
        return sources(op.input) if op is not None else [tensor]

    names = list(dict.fromkeys(s for o in g.outputs for s in sources(o)))
    for name in names:
        if name in pre:
            raise Refused(f"output side: {name!r} is a graph input or preprocessing: no compute would be left "
                          f"between the stripped edges")
        if name not in g.types:
            raise Refused(f"output side: the type of {name!r} cannot be inferred")
    return [{"name": n, "dtype": g.types[n][0], "shape": g.types[n][1]} for n in names]


# ---- numpy replay of the output ops (ONNX semantics) ----------------------------------------------------

def _softmax(x: np.ndarray, axis: int) -> tuple[np.ndarray]:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True),)


def _log_softmax(x: np.ndarray, axis: int) -> tuple[np.ndarray]:
    y = x - x.max(axis=axis, keepdims=True)
    return (y - np.log(np.exp(y).sum(axis=axis, keepdims=True)),)


def _argmax(x: np.ndarray, axis: int, keepdims: int, select_last_index: int) -> tuple[np.ndarray]:
    if select_last_index:
        index = x.shape[axis] - 1 - np.argmax(np.flip(x, axis), axis=axis)
    else:
        index = np.argmax(x, axis=axis)
    index = index.astype(np.int64)
    return (np.expand_dims(index, axis) if keepdims else index,)


def _topk(x: np.ndarray, k: int, axis: int, largest: int) -> tuple[np.ndarray, np.ndarray]:
    key = -x.astype(np.float64) if largest else x  # stable sort: ties keep the lower index first, as ONNX
    index = np.take(np.argsort(key, axis=axis, kind="stable"), np.arange(k), axis=axis)
    return np.take_along_axis(x, index, axis=axis), index.astype(np.int64)


_REPLAY = {
    "Softmax": _softmax, "LogSoftmax": _log_softmax, "ArgMax": _argmax, "TopK": _topk,
    "Cast": lambda x, to: (x.astype(to),), "Identity": lambda x: (x,),
}


# ---- the pass ----------------------------------------------------------------------------------------------

def strip_edges(model) -> tuple[object, EdgeReport]:
    """The model without its pre/post-processing and the description of what was removed; a model that
    cannot be stripped exactly comes back as the same object, with ``report.refused`` saying why."""
    try:
        g, kept = _graph(model), []
        walked = [_walk_input(g, value, kept) for value in g.inputs]
        outputs = _walk_outputs(g, kept)
        new_outputs = _new_outputs(g, outputs, [ops for _, ops in walked])
    except Refused as exc:
        return model, EdgeReport(refused=str(exc))
    transforms = tuple(t for t, _ in walked if t is not None)
    report = EdgeReport(transforms, tuple(outputs), tuple(g.outputs), tuple(new_outputs), kept=tuple(kept))
    return (_edit(model, report) if report.stripped else model), report


def strip_edges_bytes(data: bytes, *, name: str = "model") -> tuple[bytes, EdgeReport]:
    """Serialized model in and out; when nothing is stripped, ``data`` itself comes back."""
    import onnx

    from .optimize import OptimizeError

    try:
        model = onnx.load_from_string(data)
    except Exception as exc:
        raise OptimizeError(f"{name}: cannot read ONNX model: {str(exc).splitlines()[0]}") from None
    stripped, report = strip_edges(model)
    return (stripped.SerializeToString() if report.stripped else data), report


def _edit(model, report: EdgeReport):
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(model)
    tensors = graph.tensors()
    replaced = {t.input: t for t in report.inputs}
    inputs = []
    for value in graph.inputs:
        t = replaced.get(value.name)
        if t is not None:
            value = tensors[t.output]
            value.inputs.clear()  # its producers (the chain) become dead and are cleaned up
            _set_type(value, t.out_dtype, t.out_shape)
        inputs.append(value)
    graph.inputs = inputs
    graph.outputs = [_set_type(tensors[o["name"]], o["dtype"], o["shape"]) for o in report.new_outputs]
    graph.cleanup(remove_unused_graph_inputs=False)
    edited = gs.export_onnx(graph)
    edited.metadata_props.extend(model.metadata_props)
    edited.doc_string, edited.model_version, edited.domain = model.doc_string, model.model_version, model.domain
    return edited


def _set_type(tensor, dtype: str, shape: tuple[Dim, ...] | None):
    tensor.dtype, tensor.shape = np.dtype(dtype), (list(shape) if shape is not None else None)
    return tensor
