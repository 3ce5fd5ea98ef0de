"""Generate the example snippet models reproducibly (seeded weights), as ONNX files beside this script.

    python snippets/generate.py            # writes snippets/*.onnx

Networks (batch-norm already folded into conv biases, as graph surgery would leave them):
- classify: a ResNet-style network (basic blocks, widths 16-32-64-128, 224x224 input, 1000 classes),
  split into three snippets: classify_a (stem + stage 1), classify_b (stages 2-3), classify_c (stage 4 + head).
- cascade_small: a small, fast classifier for the early-exit cascade (the large one is ``classify``).
- matting: an encoder-decoder (image + trimap packed into 8 channels; channel counts multiples of 8 for
  FP16 tensor cores), split into matting_encoder and matting_decoder.

``full_model(name)`` returns the unsplit model, which tests use as an independent reference.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
OPSET, IR_VERSION = 17, 10  # onnxruntime 1.2x and TensorRT 8.6 read IR 10 / opset 17


class GraphBuilder:
    """Appends nodes and seeded initializers; names are unique per builder."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def _name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}{self.count}"

    def _weight(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, relu: bool = True) -> str:
        name = self._name("conv")
        w = self.rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))
        b = self.rng.standard_normal(cout) * 0.05
        out = f"{name}_out"
        self.nodes.append(helper.make_node(
            "Conv", [x, self._weight(f"{name}_w", w), self._weight(f"{name}_b", b)], [out],
            kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4))
        return self.relu(out) if relu else out

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        out = f"{self._name(op_type.lower())}_out"
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def relu(self, x: str) -> str:
        return self.op("Relu", [x])

    def basic_block(self, x: str, cin: int, cout: int, stride: int) -> str:
        y = self.conv(x, cin, cout, 3, stride)
        y = self.conv(y, cout, cout, 3, 1, relu=False)
        shortcut = x if stride == 1 and cin == cout else self.conv(x, cin, cout, 1, stride, relu=False)
        return self.relu(self.op("Add", [y, shortcut]))

    def gemm(self, x: str, cin: int, cout: int) -> str:
        name = self._name("fc")
        w = self.rng.standard_normal((cout, cin)) * np.sqrt(1.0 / cin)
        b = self.rng.standard_normal(cout) * 0.05
        return self.op("Gemm", [x, self._weight(f"{name}_w", w), self._weight(f"{name}_b", b)], transB=1)

    def upsample2x(self, x: str) -> str:
        scales = self._weight(self._name("scales"), np.array([1, 1, 2, 2], np.float32))
        return self.op("Resize", [x, "", scales], mode="nearest")

    def rename(self, tensor: str, name: str) -> str:
        for node in self.nodes:
            node.output[:] = [name if o == tensor else o for o in node.output]
            node.input[:] = [name if i == tensor else i for i in node.input]
        return name

    def model(self, inputs: dict[str, list], outputs: list[str], name: str) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, name,
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                                  producer_name="orchestrator-snippets")
        model = onnx.shape_inference.infer_shapes(model)
        onnx.checker.check_model(model)
        return model


def classify_model() -> onnx.ModelProto:
    g = GraphBuilder(seed=1)
    x = g.conv("x", 3, 16, 7, stride=2)
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    s1 = g.rename(g.basic_block(x, 16, 16, 1), "s1")
    x = g.basic_block(s1, 16, 32, 2)
    s3 = g.rename(g.basic_block(x, 32, 64, 2), "s3")
    x = g.basic_block(s3, 64, 128, 2)
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x])])
    g.rename(g.gemm(x, 128, 1000), "logits")
    return g.model({"x": ["N", 3, 224, 224]}, ["logits"], "classify")


def cascade_small_model() -> onnx.ModelProto:
    g = GraphBuilder(seed=2)
    x = g.conv("x", 3, 8, 5, stride=4)
    x = g.conv(x, 8, 16, 3, stride=2)
    x = g.conv(x, 16, 32, 3, stride=2)
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x])])
    g.rename(g.gemm(x, 32, 1000), "logits")
    return g.model({"x": ["N", 3, 224, 224]}, ["logits"], "cascade_small")


def matting_model() -> onnx.ModelProto:
    """Encoder (x -> feats, skip) | custom kernel on feats | decoder (feats, skip -> alpha)."""
    g = GraphBuilder(seed=3)
    skip = g.rename(g.conv("x", 8, 16, 3), "skip")
    x = g.conv(skip, 16, 32, 3, stride=2)
    g.rename(g.conv(x, 32, 64, 3, stride=2), "feats")
    x = g.conv(g.upsample2x("feats"), 64, 32, 3)
    x = g.conv(g.upsample2x(x), 32, 16, 3)
    x = g.op("Concat", [x, "skip"], axis=1)
    x = g.conv(x, 32, 16, 3)
    x = g.conv(x, 16, 8, 3)
    g.rename(g.op("Sigmoid", [g.conv(x, 8, 1, 3, relu=False)]), "alpha")
    return g.model({"x": ["N", 8, "H", "W"]}, ["alpha"], "matting")


def resnet50_model(seed: int = 50) -> onnx.ModelProto:
    """torchvision's ResNet-50 architecture (v1.5: stride on the 3x3 conv; batch-norm folded), seeded
    random weights, 224x224 input, 1000 classes. About 100 MB, so it is generated on use, never committed."""
    g = GraphBuilder(seed=seed)
    x = g.conv("x", 3, 64, 7, stride=2)
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for stage, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512), strict=True)):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            y = g.conv(x, cin, width, 1)
            y = g.conv(y, width, width, 3, stride)
            y = g.conv(y, width, width * 4, 1, relu=False)
            shortcut = x if stride == 1 and cin == width * 4 else g.conv(x, cin, width * 4, 1, stride, relu=False)
            x = g.relu(g.op("Add", [y, shortcut]))
            cin = width * 4
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x])])
    g.rename(g.gemm(x, 2048, 1000), "logits")
    return g.model({"x": ["N", 3, 224, 224]}, ["logits"], "resnet50")


FULL_MODELS = {"classify": classify_model, "cascade_small": cascade_small_model, "matting": matting_model}

# Symbolic dims that ONNX shape inference cannot derive through strided convs and resizes.
IO_DIMS = {
    "matting_encoder": {"feats": ["N", 64, "Hq", "Wq"], "skip": ["N", 16, "H", "W"]},
    "matting_decoder": {"feats": ["N", 64, "Hq", "Wq"], "skip": ["N", 16, "H", "W"], "alpha": ["N", 1, "H", "W"]},
}

# snippet file -> (full model, its inputs, its outputs)
SNIPPETS = {
    "classify_a": ("classify", ["x"], ["s1"]),
    "classify_b": ("classify", ["s1"], ["s3"]),
    "classify_c": ("classify", ["s3"], ["logits"]),
    "cascade_small": ("cascade_small", ["x"], ["logits"]),
    "matting_encoder": ("matting", ["x"], ["feats", "skip"]),
    "matting_decoder": ("matting", ["feats", "skip"], ["alpha"]),
}


def full_model(name: str) -> onnx.ModelProto:
    return FULL_MODELS[name]()


def snippet_model(name: str, full: onnx.ModelProto | None = None) -> onnx.ModelProto:
    model_name, inputs, outputs = SNIPPETS[name]
    full = full or full_model(model_name)
    piece = onnx.utils.Extractor(full).extract_model(inputs, outputs)
    piece.ir_version = IR_VERSION
    piece.graph.name = name
    for value in list(piece.graph.input) + list(piece.graph.output):
        dims = IO_DIMS.get(name, {}).get(value.name)
        for dim, want in zip(value.type.tensor_type.shape.dim, dims or [], strict=False):
            dim.Clear()
            if isinstance(want, int):
                dim.dim_value = want
            else:
                dim.dim_param = want
    onnx.checker.check_model(piece)
    return piece


def main(out_dir: Path = HERE) -> None:
    fulls = {name: build() for name, build in FULL_MODELS.items()}
    for name, (model_name, _, _) in SNIPPETS.items():
        path = out_dir / f"{name}.onnx"
        onnx.save(snippet_model(name, fulls[model_name]), str(path))
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
