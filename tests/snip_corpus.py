"""Standard architectures as ``torch.onnx.export`` writes them, built with ``onnx.helper`` and seeded weights.

The exporter's habits are reproduced on purpose, because they are what snip must see through: ``Constant``
nodes for every scalar, ``Identity`` aliases of shared weights, one index scalar shared by every attention
layer, Shape -> Gather -> Unsqueeze -> Concat -> Reshape subgraphs, decomposed LayerNorm, Erf GELU, MatMul
attention with Softmax/Transpose. Sizes are small so that each model runs in onnxruntime in milliseconds.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class Exporter:
    """Emits nodes with torch-style names ('/blocks.0/attn/MatMul_output_0', 'onnx::MatMul_12')."""

    def __init__(self, name: str, seed: int):
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []
        self.count = 0
        self.scope = ""
        self.shared: dict[int, str] = {}

    def _out(self, op: str) -> str:
        self.count += 1
        return f"{self.scope}/{op}_{self.count}_output_0"

    def op(self, op: str, inputs: list[str], outputs: int = 1, **attrs) -> str:
        outs = [self._out(op) if k == 0 else f"{self._out(op)}_{k}" for k in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=f"{self.scope}/{op}_{self.count}", **attrs))
        return outs[0]

    def weight(self, name: str, shape: tuple[int, ...], scale: float | None = None) -> str:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        std = scale if scale is not None else 1.0 / np.sqrt(max(fan_in, 1))
        self.inits.append(numpy_helper.from_array(
            (self.rng.standard_normal(shape) * std).astype(np.float32), f"{self.scope.strip('/')}.{name}"))
        return self.inits[-1].name

    def const(self, value, dtype=np.float32) -> str:
        out = self._out("Constant")
        self.nodes.append(helper.make_node("Constant", [], [out],
                                           value=numpy_helper.from_array(np.array(value, dtype=dtype))))
        return out

    def alias(self, weight: str) -> str:
        """The exporter's Identity of a weight used under a second name (tied or shared weights)."""
        self.count += 1
        out = f"onnx::MatMul_{self.count}"
        self.nodes.append(helper.make_node("Identity", [weight], [out]))
        return out

    def index(self, k: int) -> str:
        """An index scalar shared by every layer that needs it."""
        if k not in self.shared:
            scope, self.scope = self.scope, ""
            self.shared[k] = self.const(k, np.int64)
            self.scope = scope
        return self.shared[k]

    def reshape(self, x: str, keep: list[int], tail: list[int]) -> str:
        """Reshape to [x.shape[k] for k in keep] + tail through the exporter's shape arithmetic."""
        shape = self.op("Shape", [x])
        parts = [self.op("Unsqueeze", [self.op("Gather", [shape, self.index(k)], axis=0), self.const([0], np.int64)])
                 for k in keep]
        parts += [self.const([t], np.int64) for t in tail]
        return self.op("Reshape", [x, self.op("Concat", parts, axis=0)])

    def model(self, inputs: dict[str, tuple], outputs: list[str], int_inputs: tuple[str, ...] = ()):
        graph = helper.make_graph(
            self.nodes, self.name,
            [helper.make_tensor_value_info(n, TensorProto.INT64 if n in int_inputs else TensorProto.FLOAT, list(s))
             for n, s in inputs.items()],
            [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
        return onnx.shape_inference.infer_shapes(model)


# --- building blocks -------------------------------------------------------------------------------------


def conv(e: Exporter, x: str, cin: int, cout: int, k: int, stride: int = 1, bn: bool = True,
         act: bool = True, name: str = "conv") -> str:
    w = e.weight(f"{name}.weight", (cout, cin, k, k))
    inputs = [x, w] if bn else [x, w, e.weight(f"{name}.bias", (cout,), 0.1)]
    y = e.op("Conv", inputs, kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4)
    if bn:
        y = e.op("BatchNormalization", [y, e.weight(f"{name}.bn.weight", (cout,), 0.2),
                                        e.weight(f"{name}.bn.bias", (cout,), 0.1),
                                        e.weight(f"{name}.bn.running_mean", (cout,), 0.1),
                                        _positive(e, f"{name}.bn.running_var", cout)], epsilon=1e-5)
    return e.op("Relu", [y]) if act else y


def _positive(e: Exporter, name: str, n: int) -> str:
    e.inits.append(numpy_helper.from_array((0.5 + e.rng.random(n)).astype(np.float32),
                                           f"{e.scope.strip('/')}.{name}"))
    return e.inits[-1].name


def linear(e: Exporter, x: str, din: int, dout: int, name: str, weight: str | None = None) -> str:
    w = weight or e.weight(f"{name}.weight", (din, dout))
    return e.op("Add", [e.op("MatMul", [x, w]), e.weight(f"{name}.bias", (dout,), 0.1)])


def layer_norm(e: Exporter, x: str, d: int, name: str) -> str:
    mean = e.op("ReduceMean", [x], axes=[-1], keepdims=1)
    centred = e.op("Sub", [x, mean])
    var = e.op("ReduceMean", [e.op("Pow", [centred, e.const(2.0)])], axes=[-1], keepdims=1)
    normed = e.op("Div", [centred, e.op("Sqrt", [e.op("Add", [var, e.const(1e-5)])])])
    return e.op("Add", [e.op("Mul", [normed, e.weight(f"{name}.weight", (d,), 1.0)]),
                        e.weight(f"{name}.bias", (d,), 0.1)])


def gelu(e: Exporter, x: str) -> str:
    erf = e.op("Erf", [e.op("Div", [x, e.const(1.4142135)])])
    return e.op("Mul", [e.op("Mul", [x, e.op("Add", [erf, e.const(1.0)])]), e.const(0.5)])


def attention(e: Exporter, x: str, d: int, heads: int, name: str, shared_qkv: str | None = None) -> str:
    hd = d // heads

    def split_heads(t: str, perm: list[int]) -> str:
        return e.op("Transpose", [e.reshape(t, [0, 1], [heads, hd])], perm=perm)

    q = split_heads(linear(e, x, d, d, f"{name}.q", e.alias(shared_qkv) if shared_qkv else None), [0, 2, 1, 3])
    k = split_heads(linear(e, x, d, d, f"{name}.k"), [0, 2, 3, 1])
    v = split_heads(linear(e, x, d, d, f"{name}.v"), [0, 2, 1, 3])
    scores = e.op("Div", [e.op("MatMul", [q, k]), e.const(float(np.sqrt(hd)))])
    ctx = e.op("Transpose", [e.op("MatMul", [e.op("Softmax", [scores], axis=-1), v])], perm=[0, 2, 1, 3])
    return linear(e, e.reshape(ctx, [0, 1], [d]), d, d, f"{name}.proj")


def encoder_block(e: Exporter, x: str, d: int, heads: int, i: int, shared: str | None = None) -> str:
    e.scope = f"/blocks.{i}"
    x = e.op("Add", [x, attention(e, layer_norm(e, x, d, "norm1"), d, heads, "attn", shared)])
    hidden = gelu(e, linear(e, layer_norm(e, x, d, "norm2"), d, 4 * d, "mlp.fc1"))
    return e.op("Add", [x, linear(e, hidden, 4 * d, d, "mlp.fc2")])


# --- architectures ---------------------------------------------------------------------------------------


def resnet(folded_bn: bool) -> onnx.ModelProto:
    """ResNet-like (3, 4, 3 basic blocks), 32x32, BatchNormalization kept or folded into the convs."""
    e = Exporter("resnet_folded" if folded_bn else "resnet_bn", 18)
    x = conv(e, "input", 3, 16, 3, bn=not folded_bn, name="stem")
    cin = 16
    for stage, cout in enumerate([16, 32, 64]):
        for block in range([3, 4, 3][stage]):
            e.scope = f"/layer{stage + 1}.{block}"
            stride = 2 if block == 0 and stage > 0 else 1
            y = conv(e, x, cin, cout, 3, stride, not folded_bn, name="conv1")
            y = conv(e, y, cout, cout, 3, 1, not folded_bn, act=False, name="conv2")
            skip = conv(e, x, cin, cout, 1, stride, not folded_bn, act=False, name="down") if stride > 1 else x
            x, cin = e.op("Relu", [e.op("Add", [y, skip])]), cout
    e.scope = ""
    pooled = e.op("Flatten", [e.op("GlobalAveragePool", [x])], axis=1)
    logits = e.op("Gemm", [pooled, e.weight("fc.weight", (10, 64)), e.weight("fc.bias", (10,), 0.1)], transB=1)
    return e.model({"input": (1, 3, 32, 32)}, [logits])


def vit() -> onnx.ModelProto:
    """ViT: patch embedding, class token, position embedding, six pre-norm blocks (first q weight shared
    through Identity aliases), head on the class token."""
    e = Exporter("vit", 16)
    d, heads, patch = 32, 4, 8
    e.scope = "/patch_embed"
    p = e.op("Conv", ["pixels", e.weight("proj.weight", (d, 3, patch, patch)), e.weight("proj.bias", (d,), 0.1)],
             kernel_shape=[patch, patch], strides=[patch, patch])
    tokens = e.op("Transpose", [e.reshape(p, [0, 1], [-1])], perm=[0, 2, 1])
    e.scope = ""
    cls = e.op("Expand", [e.weight("cls_token", (1, 1, d), 0.02), e.op("Concat", [
        e.op("Unsqueeze", [e.op("Gather", [e.op("Shape", [tokens]), e.index(0)], axis=0), e.const([0], np.int64)]),
        e.const([1, 1], np.int64)], axis=0)])
    x = e.op("Add", [e.op("Concat", [cls, tokens], axis=1), e.weight("pos_embed", (1, 17, d), 0.02)])
    shared = e.weight("shared_q.weight", (d, d))
    for i in range(6):
        x = encoder_block(e, x, d, heads, i, shared if i % 2 == 0 else None)
    e.scope = ""
    first = e.op("Gather", [layer_norm(e, x, d, "norm"), e.index(0)], axis=1)
    return e.model({"pixels": (1, 3, 32, 32)}, [linear(e, first, d, 10, "head")])


def bert() -> onnx.ModelProto:
    """A transformer encoder on token ids: word + position embeddings (Gather), four post-norm layers,
    a tanh pooler on the first token. The ids are an index input: verification needs them given."""
    e = Exporter("bert", 4)
    d, t = 32, 12
    e.scope = "/embeddings"
    words = e.op("Gather", [e.weight("word_embeddings.weight", (50, d), 0.5), "input_ids"], axis=0)
    positions = e.op("Gather", [e.weight("position_embeddings.weight", (t, d), 0.5),
                                e.const(np.arange(t)[None], np.int64)], axis=0)
    x = layer_norm(e, e.op("Add", [words, positions]), d, "LayerNorm")
    for i in range(4):
        e.scope = f"/encoder/layer.{i}"
        x = layer_norm(e, e.op("Add", [x, attention(e, x, d, 4, "attention")]), d, "attention.LayerNorm")
        hidden = gelu(e, linear(e, x, d, 2 * d, "intermediate.dense"))
        x = layer_norm(e, e.op("Add", [x, linear(e, hidden, 2 * d, d, "output.dense")]), d, "output.LayerNorm")
    e.scope = "/pooler"
    pooled = e.op("Tanh", [linear(e, e.op("Gather", [x, e.index(0)], axis=1), d, d, "dense")])
    return e.model({"input_ids": (1, t)}, [x, pooled], int_inputs=("input_ids",))


def swin() -> onnx.ModelProto:
    """Swin-like: patch embedding, window partition/reverse reshapes around window attention, patch
    merging between two stages, pooled head."""
    e = Exporter("swin", 7)
    d, win = 16, 4
    e.scope = "/patch_embed"
    p = e.op("Conv", ["image", e.weight("proj.weight", (d, 3, 2, 2)), e.weight("proj.bias", (d,), 0.1)],
             kernel_shape=[2, 2], strides=[2, 2])
    x = e.op("Transpose", [p], perm=[0, 2, 3, 1])  # B, H, W, C
    size = 16
    for stage in range(2):
        for block in range(2):
            e.scope = f"/layers.{stage}.blocks.{block}"
            n = size // win
            windows = e.op("Reshape", [e.op("Transpose", [e.op("Reshape", [x, e.const(
                [1, n, win, n, win, d], np.int64)])], perm=[0, 1, 3, 2, 4, 5]), e.const([n * n, win * win, d], np.int64)])
            normed = layer_norm(e, windows, d, "norm1")
            att = attention(e, normed, d, 2, "attn")
            back = e.op("Reshape", [e.op("Transpose", [e.op("Reshape", [att, e.const(
                [1, n, n, win, win, d], np.int64)])], perm=[0, 1, 3, 2, 4, 5]), e.const([1, size, size, d], np.int64)])
            x = e.op("Add", [x, back])
            x = e.op("Add", [x, linear(e, gelu(e, linear(e, layer_norm(e, x, d, "norm2"), d, 2 * d, "mlp.fc1")),
                                       2 * d, d, "mlp.fc2")])
        if stage == 0:
            e.scope = "/layers.0.downsample"
            merged = e.op("Reshape", [e.op("Transpose", [e.op("Reshape", [x, e.const(
                [1, size // 2, 2, size // 2, 2, d], np.int64)])], perm=[0, 1, 3, 4, 2, 5]),
                e.const([1, size // 2, size // 2, 4 * d], np.int64)])
            x = linear(e, layer_norm(e, merged, 4 * d, "norm"), 4 * d, 2 * d, "reduction")
            d, size = 2 * d, size // 2
    e.scope = ""
    pooled = e.op("ReduceMean", [layer_norm(e, x, d, "norm")], axes=[1, 2], keepdims=0)
    return e.model({"image": (1, 3, 32, 32)}, [linear(e, pooled, d, 10, "head")])


def unet(size: int = 32, widths: tuple[int, ...] = (8, 16, 32, 64)) -> onnx.ModelProto:
    """A matting-like encoder-decoder on RGB + trimap: four levels, long skips concatenated in the decoder,
    upsampling by Resize and by ConvTranspose, sigmoid alpha. The bottleneck is also an output, read later.
    Channels double as the resolution halves, so every 3x3 conv costs about the same."""
    e = Exporter("unet", 12)
    skips, x, cin = [], "image", 4
    for level, w in enumerate(widths):
        e.scope = f"/enc{level}"
        x = conv(e, conv(e, x, cin, w, 3, 2 if level else 1, name="a"), w, w, 3, name="b")
        skips.append(x)
        cin = w
    e.scope = "/bottleneck"
    bottleneck = conv(e, x, cin, cin, 3, bn=False, name="conv")
    x = bottleneck
    for level in range(len(widths) - 2, -1, -1):
        e.scope = f"/dec{level}"
        w = widths[level]
        if level % 2:
            up = conv(e, e.op("Resize", [x, "", e.const([1.0, 1.0, 2.0, 2.0])], mode="nearest"), cin, w, 1,
                      bn=False, name="up")
        else:
            up = e.op("ConvTranspose", [x, e.weight("up.weight", (cin, w, 2, 2))], strides=[2, 2],
                      kernel_shape=[2, 2])
        x = conv(e, e.op("Concat", [up, skips[level]], axis=1), 2 * w, w, 1, name="fuse")
        x = conv(e, conv(e, x, w, w, 3, name="refine1"), w, w, 3, name="refine2")
        cin = w
    e.scope = "/head"
    alpha = e.op("Sigmoid", [conv(e, x, cin, 1, 3, bn=False, act=False, name="alpha")])
    return e.model({"image": (1, 4, size, size)}, [alpha, bottleneck])


def batch_at_top() -> onnx.ModelProto:
    """An MLP on [N, 16] that reads the batch size once at the top (`B = x.shape[0]`) and uses it in the
    last layer's Reshape: with a symbolic N the Shape arithmetic cannot be folded."""
    e = Exporter("batch_at_top", 5)
    batch = e.op("Unsqueeze", [e.op("Gather", [e.op("Shape", ["x"]), e.index(0)], axis=0), e.const([0], np.int64)])
    y = "x"
    for i in range(6):
        e.scope = f"/layer{i}"
        y = e.op("Relu", [linear(e, y, 16, 16, "fc")])
    e.scope = ""
    out = e.op("Reshape", [y, e.op("Concat", [batch, e.const([4, 4], np.int64)], axis=0)])
    return e.model({"x": ("N", 16)}, [out])


MODELS = {"resnet_bn": lambda: resnet(False), "resnet_folded": lambda: resnet(True), "vit": vit,
          "bert": bert, "swin": swin, "unet": unet}
# Index inputs are not random data: the verification is given their values.
INPUTS = {"bert": {"input_ids": np.random.default_rng(3).integers(0, 50, (1, 12)).astype(np.int64)}}
