"""What a model costs: node counts, estimated FLOPs and weight bytes, so each pass can say what it removed.

FLOPs are estimated from ONNX shape inference with every symbolic dimension set to 1 (a batch of one):
2·MACs for Conv, ConvTranspose, MatMul and Gemm, one per output element for everything else. A tensor
whose shape inference cannot tell counts as one element unless ``known`` (the shapes inferred on the
model after a pass: folding constants lets inference see through an exporter's Reshape arithmetic) names
it, so a pass is not reported to add the FLOPs it only made visible.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass

import numpy as np

_CONTRACTIONS = {"Conv", "ConvTranspose", "MatMul", "Gemm"}


@dataclass(frozen=True)
class Cost:
    ops: Counter
    flops: int
    weight_bytes: int

    @property
    def nodes(self) -> int:
        return sum(self.ops.values())


Shapes = tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]


def cost(model, known: dict[str, tuple[int, ...]] | None = None, inferred: Shapes | None = None) -> Cost:
    """The node count by op type, estimated FLOPs at batch 1, and bytes of initializers and Constants;
    ``known`` (the fully told shapes of another model) gives shapes this model's inference cannot tell;
    ``inferred``: this model's ``inferred_shapes``, when the caller already has them."""
    told, partial = inferred if inferred is not None else inferred_shapes(model)
    shapes = {**partial, **(known or {}), **told}
    graph = model.graph
    flops = sum(_node_flops(node, shapes) for node in graph.node)
    weights = sum(_tensor_bytes(t) for t in graph.initializer)
    weights += sum(_tensor_bytes(a.t) for n in graph.node if n.op_type == "Constant" for a in n.attribute if a.t.dims)
    return Cost(Counter(n.op_type for n in graph.node), flops, weights)


def _tensor_bytes(tensor) -> int:
    from onnx import helper

    count = int(np.prod(tensor.dims)) if tensor.dims else 1
    return count * np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize


def inferred_shapes(model) -> Shapes:
    """(fully told shapes, shapes with some dimension unknown, that dimension set to 1), symbolic
    dimensions of the inputs set to 1."""
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())
    for value in model.graph.input:
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.dim_value = 1
    with contextlib.suppress(Exception):  # an estimate only: unknown shapes count as one element
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    graph = model.graph
    told = {t.name: tuple(t.dims) for t in graph.initializer}
    partial = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in dims)
        fully = value.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims)
        (told if fully else partial)[value.name] = shape
    return told, partial


def _node_flops(node, shapes: dict[str, tuple[int, ...]]) -> int:
    out = int(np.prod(shapes.get(node.output[0], (1,)))) if node.output else 0
    if node.op_type not in _CONTRACTIONS:
        return out
    if node.op_type in ("Conv", "ConvTranspose"):
        weight = shapes.get(node.input[1], ())
        reduce = int(np.prod(weight[1:])) if len(weight) > 1 else 1
        if node.op_type == "ConvTranspose":  # every input element meets the whole kernel
            return 2 * int(np.prod(shapes.get(node.input[0], (1,)))) * int(np.prod(weight[1:] or (1,)))
        return 2 * out * reduce
    a = shapes.get(node.input[0], ())
    trans_a = any(att.name == "transA" and att.i for att in node.attribute)
    k = (a[-2] if trans_a else a[-1]) if len(a) >= 2 else (a[0] if a else 1)
    return 2 * out * k
