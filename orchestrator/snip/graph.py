"""A model's graph as snip sees it: activations in topological order, and what only depends on weights.

A tensor computed only from initializers and ``Constant`` nodes (weight aliases, index scalars, the shape
arithmetic of statically shaped tensors) or from the shapes of model inputs (a dynamic batch size) is a
*constant*: it never crosses a cut, and every piece that reads it gets its own copy of the nodes that
compute it (and the model input whose shape they read). Everything else is an *activation*; the nodes that
compute activations, in the model's own topological order, are the positions a cut can fall between.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import dtypes
from ..errors import OrchestratorError
from ..pipeline.source import display_name


class SnipError(OrchestratorError):
    """A cut point that does not exist, an unusable model, or a written pipeline that does not verify."""


# Nodes that take no activation yet must run on every call: never copied, never folded.
_NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Bernoulli",
                     "Multinomial"}


def load_model(path: Path):
    """Read ``path`` and run ONNX shape inference (with data propagation, for Reshape's shape subgraphs)."""
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError, OSError, ... for broken files
        raise SnipError(f"{display_name(path)}: cannot read ONNX model: {str(exc).splitlines()[0]}") from None
    for data_prop in (True, False):
        try:
            return onnx.shape_inference.infer_shapes(model, data_prop=data_prop)
        except Exception as exc:
            error = exc
    raise SnipError(f"{display_name(path)}: ONNX shape inference failed: {str(error).splitlines()[0]}")


def node_reads(node) -> list[str]:
    """Every tensor a node reads: its inputs and the outer-scope names its subgraphs (If, Loop, Scan) use."""
    names = [n for n in node.input if n]
    for attr in node.attribute:
        for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
            names += _outer_names(sub)
    return names


def _outer_names(graph) -> list[str]:
    local = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    outer = []
    for node in graph.node:
        outer += [n for n in node_reads(node) if n not in local]
        local.update(node.output)
    return outer + [o.name for o in graph.output if o.name not in local]


def first_output(node) -> str:
    """The node's first output that is not left out ('' when all are)."""
    return next((o for o in node.output if o), "")


@dataclass(frozen=True)
class TensorType:
    dtype: str | None  # None: a type the pipeline cannot carry (sequence, optional, string...)
    shape: tuple[int | str, ...]


class Graph:
    """The nodes an ONNX model's outputs need, split into constants and activations."""

    def __init__(self, model, sizes: dict[str, int] | None = None):
        self.model = model
        self.sizes = sizes or {}
        # sizes of dims shape inference could only name (an exporter's 'unk__7'), seen on one onnxruntime
        # run: for the cost estimates only, never the pipeline's dims
        self.measured: dict[str, int] = {}
        graph = model.graph
        self.initializers = {t.name: t for t in graph.initializer}
        self.inputs = [v.name for v in graph.input if v.name not in self.initializers]
        self.outputs = [v.name for v in graph.output]
        self.types = self._types()
        self.input_dims = {d: (v.name, axis) for v in reversed(graph.input) if v.name in self.inputs
                           for axis, d in enumerate(self.types[v.name].shape) if isinstance(d, str)}
        # folded first: a tensor read only by a folded Shape is not needed
        nodes = _needed([f for n in graph.node for f in self._folded(n)], self.outputs)
        self.constant = set(self.initializers)
        folded = set()  # by id: a node's first output may be '' (an LSTM's or GRU's Y left out)
        for node in nodes:
            if _input_shape(node, self.inputs) or (node.op_type not in _NONDETERMINISTIC and all(
                    n in self.constant for n in node_reads(node))):
                self.constant.update(o for o in node.output if o)
                folded.add(id(node))
        self.const_nodes = [n for n in nodes if id(n) in folded]
        self.order = [n for n in nodes if id(n) not in folded]
        self.producer = {o: n for n in nodes for o in n.output if o}
        self.position = {o: i for i, n in enumerate(self.order) for o in n.output if o}
        self.last_use = self._last_use()

    def _types(self) -> dict[str, TensorType]:
        graph = self.model.graph
        types = {}
        inputs = {v.name for v in graph.input}
        for value in [*graph.input, *graph.value_info, *graph.output]:
            t = value.type.tensor_type if value.type.HasField("tensor_type") else None
            dtype = dtypes.from_onnx(t.elem_type) if t is not None and t.elem_type else None
            # A model input without a shape is written into the pipeline as rank 0, and fed as a scalar.
            unknown = () if value.name in inputs else ("?",)
            shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                          for d in t.shape.dim) if t is not None and t.HasField("shape") else unknown
            types[value.name] = TensorType(dtype, shape)
        for init in graph.initializer:
            types[init.name] = TensorType(dtypes.from_onnx(init.data_type), tuple(init.dims))
        return types

    def _folded(self, node) -> list:
        """Shape of a tensor whose dims are static or named like a model input's (the exporter's shape
        arithmetic, ``x.view(x.size(0), -1)`` on a dynamic batch) is a constant: a Constant, or the static
        dims concatenated with the model input's dims read by Shape and Gather. Not Size: folding it lets
        onnxruntime inline If branches whose outputs then fail its stricter checks."""
        from onnx import helper, numpy_helper

        if node.op_type != "Shape" or node.input[0] not in self.types:
            return [node]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        full = self.types[node.input[0]].shape
        shape = full[attrs.get("start", 0):attrs.get("end", len(full))]
        if node.input[0] in self.inputs or "?" in full or not all(isinstance(d, int) and d > 0 or d in self.input_dims for d in shape):
            return [node]
        out, name = node.output[0], node.name or node.output[0]

        def constant(output: str, value: list[int]):
            return helper.make_node("Constant", [], [output], name=name if output == out else f"{name}__{output}",
                                    value=numpy_helper.from_array(np.array(value, dtype=np.int64)))

        if all(isinstance(d, int) for d in shape):
            return [constant(out, list(shape))]
        nodes, parts = [], []
        for k, d in enumerate(shape):
            part = f"{out}__dim{k}"
            if isinstance(d, int):
                nodes.append(constant(part, [d]))
            else:
                source, axis = self.input_dims[d]
                nodes += [helper.make_node("Shape", [source], [f"{part}__shape"], name=f"{name}__{part}__shape"),
                          constant(f"{part}__axis", [axis]),
                          helper.make_node("Gather", [f"{part}__shape", f"{part}__axis"], [part], name=f"{name}__{part}")]
            parts.append(part)
        return nodes + [helper.make_node("Concat", parts, [out], name=name, axis=0)]

    def _last_use(self) -> dict[str, int]:
        last: dict[str, int] = {}
        for i, node in enumerate(self.order):
            for name in node_reads(node):
                if name not in self.constant:
                    last[name] = i
        return last

    def is_activation(self, name: str) -> bool:
        return name in self.position or name in self.inputs

    def crossing(self, i: int) -> list[str]:
        """Activations computed at or before position i that a later node reads (model inputs excluded:
        they stay in the pipeline's inputs and cost nothing to read again)."""
        return [t for t, last in self.last_use.items() if t in self.position and self.position[t] <= i < last]

    def live_sets(self) -> list[list[str]]:
        """``crossing(i)`` for every position but the last, in one sweep."""
        ends: dict[int, list[str]] = {}
        for t, last in self.last_use.items():
            if t in self.position:
                ends.setdefault(last, []).append(t)
        live: dict[str, None] = {}
        sets = []
        for i, node in enumerate(self.order[:-1]):
            live.update((o, None) for o in node.output if self.last_use.get(o, -1) > i)
            for t in ends.get(i, []):
                live.pop(t, None)
            sets.append(list(live))
        return sets

    def nbytes(self, name: str) -> int:
        t = self.types.get(name)
        if t is None or t.dtype is None:
            return 0
        return int(self._count(name)) * np.dtype(dtypes.to_numpy(t.dtype)).itemsize

    def costs(self) -> np.ndarray:
        """Estimated multiply-accumulates per activation node (unknown dims at their --dims size, else 1)."""
        return np.array([self._macs(n) for n in self.order], dtype=np.float64)

    def _count(self, name: str) -> float:
        return float(np.prod(self._dims(name)))

    def _dims(self, name: str) -> tuple[int, ...]:
        """Concrete dims: symbolic ones at their --dims size (or measured size), unknown ones at 1."""
        t = self.types.get(name, TensorType(None, ()))
        return tuple(d if isinstance(d, int) else self.sizes.get(d, self.measured.get(d, 1)) for d in t.shape)

    def _macs(self, node) -> float:
        out = self._count(first_output(node)) if first_output(node) else 1.0
        op, ins = node.op_type, list(node.input)
        if op == "Conv" and len(ins) > 1:
            return out * float(np.prod(self._dims(ins[1])[1:]))
        if op == "ConvTranspose" and len(ins) > 1:
            return self._count(ins[0]) * float(np.prod(self._dims(ins[1])[1:]))
        if op == "MatMul" and self._dims(ins[0]):
            return out * float(self._dims(ins[0])[-1])
        if op in ("LSTM", "GRU", "RNN") and len(ins) > 2:  # every step: input and hidden weights, each gate
            x = self._dims(ins[0])
            steps = float(np.prod(x[:-1])) if x else 1.0  # sequence x batch
            return steps * (self._count(ins[1]) + self._count(ins[2]))
        if op == "Gemm":
            a = self._dims(ins[0])
            trans = any(x.name == "transA" and x.i for x in node.attribute)
            return out * float(a[0] if trans else a[-1]) if a else out
        return out


def _input_shape(node, inputs: list[str]) -> bool:
    """Shape or Size of a model input: any piece can compute it from the input, which every step can read."""
    return node.op_type in ("Shape", "Size") and bool(node.input) and node.input[0] in inputs


def _needed(nodes: list, outputs: list[str]) -> list:
    """The nodes the outputs depend on, in the model's order."""
    producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    keep, stack = set(), [producer[o] for o in outputs if o in producer]
    while stack:
        i = stack.pop()
        if i in keep:
            continue
        keep.add(i)
        stack += [producer[n] for n in node_reads(nodes[i]) if n in producer]
    return [n for i, n in enumerate(nodes) if i in keep]
