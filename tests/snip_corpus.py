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

    def model(self, inputs: dict[str, tuple], outputs: list[str], int_inputs: tuple[str, ...] = (),
              elem_types: dict[str, int] | None = None):
        types = {**{n: TensorProto.INT64 for n in int_inputs}, **(elem_types or {})}
        graph = helper.make_graph(
            self.nodes, self.name,
            [helper.make_tensor_value_info(n, types.get(n, TensorProto.FLOAT), list(s)) for n, s in inputs.items()],
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


# --- more architectures: depthwise convs, squeeze-excitation, dense concats, channels-last blocks, FPN,
# --- a causal decoder, a detection head, recurrent nodes, control flow, a dynamic batch ------------------


def conv_bias(e: Exporter, x: str, cin: int, cout: int, k: int, stride: int = 1, group: int = 1,
              act: str | None = None, name: str = "conv") -> str:
    """Conv with the BatchNorm folded into its bias (the exporter's eval-mode output), then an activation:
    'relu6' (Clip with min/max as Constant inputs), 'swish' (x * Sigmoid(x)), 'relu' or None."""
    w = e.weight(f"{name}.weight", (cout, cin // group, k, k))
    y = e.op("Conv", [x, w, e.weight(f"{name}.bias", (cout,), 0.1)], kernel_shape=[k, k],
             strides=[stride, stride], pads=[k // 2] * 4, group=group)
    return activation(e, y, act)


def activation(e: Exporter, x: str, act: str | None) -> str:
    if act == "relu6":
        return e.op("Clip", [x, e.const(0.0), e.const(6.0)])
    if act == "swish":
        return e.op("Mul", [x, e.op("Sigmoid", [x])])
    return e.op("Relu", [x]) if act == "relu" else x


def classifier(e: Exporter, x: str, c: int, classes: int = 10) -> str:
    e.scope = ""
    pooled = e.op("Flatten", [e.op("GlobalAveragePool", [x])], axis=1)
    return e.op("Gemm", [pooled, e.weight("classifier.weight", (classes, c)),
                         e.weight("classifier.bias", (classes,), 0.1)], transB=1)


def mobilenet_v2() -> onnx.ModelProto:
    """MobileNetV2: inverted residuals (1x1 expand, depthwise 3x3 with group = channels, linear 1x1
    project, Add when the shape is kept), ReLU6 as Clip with Constant min/max inputs."""
    e = Exporter("mobilenet_v2", 21)
    e.scope = "/features.0"
    x, cin = conv_bias(e, "input", 3, 16, 3, 2, act="relu6"), 16
    block = 1
    for t, c, n, s in [(1, 8, 1, 1), (6, 12, 2, 2), (6, 16, 3, 2), (6, 24, 2, 1), (6, 32, 2, 2)]:
        for i in range(n):
            e.scope = f"/features.{block}/conv"
            stride, hidden = s if i == 0 else 1, cin * t
            h = conv_bias(e, x, cin, hidden, 1, act="relu6", name="0") if t != 1 else x
            h = conv_bias(e, h, hidden, hidden, 3, stride, group=hidden, act="relu6", name="1")
            h = conv_bias(e, h, hidden, c, 1, name="2")
            x, cin, block = (e.op("Add", [x, h]) if stride == 1 and cin == c else h), c, block + 1
    e.scope = f"/features.{block}"
    x = conv_bias(e, x, cin, 64, 1, act="relu6")
    return e.model({"input": (1, 3, 32, 32)}, [classifier(e, x, 64)])


def squeeze_excite(e: Exporter, x: str, c: int, squeezed: int) -> str:
    """GlobalAveragePool -> 1x1 Conv -> Swish -> 1x1 Conv -> Sigmoid, multiplied back onto ``x``: the
    feature map is read before the pooling and again, several nodes later, by the Mul."""
    s = conv_bias(e, e.op("GlobalAveragePool", [x]), c, squeezed, 1, act="swish", name="se.reduce")
    gate = e.op("Sigmoid", [conv_bias(e, s, squeezed, c, 1, name="se.expand")])
    return e.op("Mul", [x, gate])


def efficientnet() -> onnx.ModelProto:
    """EfficientNet-like MBConv stack: expand, depthwise (3x3 and 5x5), squeeze-excitation, project,
    residual; Swish everywhere; the classifier weight read only through an Identity alias."""
    e = Exporter("efficientnet", 22)
    e.scope = "/stem"
    x, cin = conv_bias(e, "input", 3, 16, 3, 2, act="swish"), 16
    for i, (t, k, s, c) in enumerate([(1, 3, 1, 8), (4, 3, 2, 12), (4, 5, 1, 12), (4, 3, 2, 20),
                                      (4, 5, 1, 20), (4, 3, 1, 32)]):
        e.scope = f"/blocks.{i}"
        hidden = cin * t
        h = conv_bias(e, x, cin, hidden, 1, act="swish", name="expand") if t != 1 else x
        h = conv_bias(e, h, hidden, hidden, k, s, group=hidden, act="swish", name="dw")
        h = conv_bias(e, squeeze_excite(e, h, hidden, max(1, cin // 4)), hidden, c, 1, name="project")
        x, cin = (e.op("Add", [h, x]) if s == 1 and cin == c else h), c
    e.scope = "/head"
    x = conv_bias(e, x, cin, 64, 1, act="swish")
    e.scope = ""
    pooled = e.op("Flatten", [e.op("GlobalAveragePool", [x])], axis=1)
    weight = e.alias(e.weight("classifier.weight", (64, 10)))
    return e.model({"input": (1, 3, 32, 32)}, [linear(e, pooled, 64, 10, "classifier", weight)])


def densenet() -> onnx.ModelProto:
    """DenseNet-like: each layer of a dense block reads the Concat of every earlier feature map of the
    block, so many tensors are live across any cut inside a block; transitions halve channels and size.
    The classifier's bias is a Constant with a sparse_value."""
    e = Exporter("densenet", 23)
    growth = 8
    e.scope = "/features/conv0"
    x, c = conv(e, "input", 3, 16, 3, name="conv0"), 16
    for b in range(3):
        features = [x]
        for i in range(5):
            e.scope = f"/features/denseblock{b + 1}/denselayer{i + 1}"
            cat = e.op("Concat", features, axis=1) if len(features) > 1 else features[0]
            h = conv(e, _bn_relu(e, cat, c + i * growth, "norm1"), c + i * growth, 4 * growth, 1,
                     name="conv1")
            features.append(e.op("Conv", [h, e.weight("conv2.weight", (growth, 4 * growth, 3, 3))],
                                 kernel_shape=[3, 3], pads=[1] * 4))
        e.scope = f"/features/transition{b + 1}"
        x, c = e.op("Concat", features, axis=1), c + 5 * growth
        if b < 2:
            h = e.op("Conv", [_bn_relu(e, x, c, "norm"), e.weight("conv.weight", (c // 2, c, 1, 1))],
                     kernel_shape=[1, 1])
            x, c = e.op("AveragePool", [h], kernel_shape=[2, 2], strides=[2, 2]), c // 2
    e.scope = ""
    pooled = e.op("Flatten", [e.op("GlobalAveragePool", [_bn_relu(e, x, c, "norm5")])], axis=1)
    logits = e.op("MatMul", [pooled, e.weight("classifier.weight", (c, 10))])
    return e.model({"input": (1, 3, 16, 16)}, [e.op("Add", [logits, _sparse_const(e, [1, 4], [0.5, -0.25], 10)])])


def _bn_relu(e: Exporter, x: str, c: int, name: str) -> str:
    return e.op("Relu", [e.op("BatchNormalization", [x, e.weight(f"{name}.weight", (c,), 0.2),
                                                     e.weight(f"{name}.bias", (c,), 0.1),
                                                     e.weight(f"{name}.running_mean", (c,), 0.1),
                                                     _positive(e, f"{name}.running_var", c)], epsilon=1e-5)])


def _sparse_const(e: Exporter, indices: list[int], values: list[float], size: int) -> str:
    out = e._out("Constant")
    sparse = helper.make_sparse_tensor(numpy_helper.from_array(np.array(values, np.float32), "values"),
                                       numpy_helper.from_array(np.array(indices, np.int64), "indices"), [size])
    e.nodes.append(helper.make_node("Constant", [], [out], sparse_value=sparse))
    return out


def layer_norm_op(e: Exporter, x: str, d: int, name: str) -> str:
    """LayerNormalization as one op (opset 17 export)."""
    return e.op("LayerNormalization", [x, e.weight(f"{name}.weight", (d,), 1.0), e.weight(f"{name}.bias", (d,), 0.1)],
                axis=-1, epsilon=1e-6)


def layer_norm_channels_first(e: Exporter, x: str, c: int, name: str) -> str:
    """ConvNeXt's channels-first LayerNorm, decomposed over axis 1 with [C, 1, 1] affine weights."""
    mean = e.op("ReduceMean", [x], axes=[1], keepdims=1)
    centred = e.op("Sub", [x, mean])
    var = e.op("ReduceMean", [e.op("Pow", [centred, e.const(2.0)])], axes=[1], keepdims=1)
    normed = e.op("Div", [centred, e.op("Sqrt", [e.op("Add", [var, e.const(1e-6)])])])
    return e.op("Add", [e.op("Mul", [normed, e.weight(f"{name}.weight", (c, 1, 1), 1.0)]),
                        e.weight(f"{name}.bias", (c, 1, 1), 0.1)])


def convnext() -> onnx.ModelProto:
    """ConvNeXt-like: patchify stem, blocks of depthwise 7x7 -> Transpose to channels-last -> LayerNorm
    (the op in even blocks, the exporter's ReduceMean/Sub/Pow/Sqrt decomposition in odd ones) -> MLP with
    GELU -> layer scale -> Transpose back -> residual; channels-first LayerNorm + 2x2 conv downsampling."""
    e = Exporter("convnext", 24)
    e.scope = "/stem"
    d = 16
    stem = e.op("Conv", ["input", e.weight("0.weight", (d, 3, 4, 4)), e.weight("0.bias", (d,), 0.1)],
                kernel_shape=[4, 4], strides=[4, 4])
    x = layer_norm_channels_first(e, stem, d, "1")
    block = 0
    for stage in range(3):
        if stage:
            e.scope = f"/downsample_layers.{stage}"
            x = e.op("Conv", [layer_norm_channels_first(e, x, d, "0"), e.weight("1.weight", (2 * d, d, 2, 2)),
                              e.weight("1.bias", (2 * d,), 0.1)], kernel_shape=[2, 2], strides=[2, 2])
            d *= 2
        for i in range(2):
            e.scope = f"/stages.{stage}.{i}"
            h = conv_bias(e, x, d, d, 7, group=d, name="dwconv")
            h = e.op("Transpose", [h], perm=[0, 2, 3, 1])
            h = layer_norm_op(e, h, d, "norm") if block % 2 == 0 else layer_norm(e, h, d, "norm")
            h = linear(e, gelu(e, linear(e, h, d, 4 * d, "pwconv1")), 4 * d, d, "pwconv2")
            h = e.op("Mul", [e.weight("gamma", (d,), 0.5), h])
            x, block = e.op("Add", [x, e.op("Transpose", [h], perm=[0, 3, 1, 2])]), block + 1
    e.scope = ""
    pooled = layer_norm_op(e, e.op("ReduceMean", [x], axes=[-2, -1], keepdims=0), d, "norm")
    return e.model({"input": (1, 3, 32, 32)}, [linear(e, pooled, d, 10, "head")])


def _shape_slice(e: Exporter, x: str, start: int, end: int) -> str:
    return e.op("Slice", [e.op("Shape", [x]), e.const([start], np.int64), e.const([end], np.int64),
                          e.const([0], np.int64)])


def resize_to(e: Exporter, x: str, like: str) -> str:
    """F.interpolate(x, size=like.shape[-2:]): sizes computed through Shape -> Slice -> Concat."""
    sizes = e.op("Concat", [_shape_slice(e, x, 0, 2), _shape_slice(e, like, 2, 4)], axis=0)
    return e.op("Resize", [x, "", "", sizes], mode="linear", coordinate_transformation_mode="half_pixel")


def fpn() -> onnx.ModelProto:
    """A feature pyramid with a segmentation head: a four-level backbone, lateral 1x1 convs, top-down
    Resize (sizes from Shape/Slice/Concat, or constant scales) + Add, 3x3 output convs, every level
    resized to the finest and summed, and the class map resized back to the input's size."""
    e = Exporter("fpn", 25)
    x, cin, levels = "image", 3, []
    for i, c in enumerate([8, 16, 32, 64]):
        e.scope = f"/backbone/layer{i + 1}"
        x = conv_bias(e, conv_bias(e, x, cin, c, 3, 2, act="relu", name="0"), c, c, 3, act="relu", name="1")
        levels.append(x)
        cin = c
    inner = []
    for i, c in enumerate([8, 16, 32, 64]):
        e.scope = f"/fpn/inner_blocks.{i}"
        inner.append(conv_bias(e, levels[i], c, 16, 1, name="0"))
    top = inner[3]
    outs = [conv_bias(e, top, 16, 16, 3, name="layer_blocks.3")]
    for i in (2, 1, 0):
        e.scope = f"/fpn/top_down.{i}"
        up = resize_to(e, top, inner[i]) if i else e.op(
            "Resize", [top, "", e.const([1.0, 1.0, 2.0, 2.0])], mode="nearest")
        top = e.op("Add", [inner[i], up])
        outs.append(conv_bias(e, top, 16, 16, 3, name=f"layer_blocks.{i}"))
    e.scope = "/head"
    merged = outs[-1]
    for o in outs[:-1]:
        merged = e.op("Add", [merged, resize_to(e, o, outs[-1])])
    logits = conv_bias(e, conv_bias(e, merged, 16, 16, 3, act="relu", name="0"), 16, 5, 1, name="1")
    return e.model({"image": (1, 3, 32, 32)}, [resize_to(e, logits, "image")])


def gpt2(layers: int = 4) -> onnx.ModelProto:
    """A GPT-2-style decoder on token ids: token embedding (Gather of the tied weight) + positions from
    Shape -> Range, fused qkv projection Split in three, causal mask either sliced from a constant
    lower-triangular buffer by the sequence length or built by Trilu, Where, Softmax; final LayerNorm and
    logits through the transpose of the same embedding weight."""
    e = Exporter("gpt2", 26)
    vocab, d, heads, t = 64, 32, 4, 8
    hd = d // heads
    e.scope = "/transformer"
    wte = e.weight("wte.weight", (vocab, d), 0.5)
    length = e.op("Gather", [e.op("Shape", ["input_ids"]), e.index(1)], axis=0)
    positions = e.op("Unsqueeze", [e.op("Range", [e.const(0, np.int64), length, e.const(1, np.int64)]),
                                   e.const([0], np.int64)])
    x = e.op("Add", [e.op("Gather", [wte, "input_ids"], axis=0),
                     e.op("Gather", [e.weight("wpe.weight", (16, d), 0.5), positions], axis=0)])
    buffer = numpy_helper.from_array(np.tril(np.ones((1, 1, 16, 16), bool)), "transformer.h.bias")
    e.inits.append(buffer)
    for i in range(layers):
        e.scope = f"/transformer/h.{i}"
        qkv = linear(e, layer_norm(e, x, d, "ln_1"), d, 3 * d, "attn.c_attn")
        q, k, v = _split(e, qkv, [d, d, d], axis=2)
        q, k, v = (e.op("Transpose", [e.reshape(z, [0, 1], [heads, hd])], perm=p)
                   for z, p in ((q, [0, 2, 1, 3]), (k, [0, 2, 3, 1]), (v, [0, 2, 1, 3])))
        scores = e.op("Div", [e.op("MatMul", [q, k]), e.const(float(np.sqrt(hd)))])
        mask = _sliced_mask(e, buffer.name, scores) if i % 2 == 0 else _trilu_mask(e, scores)
        scores = e.op("Where", [mask, scores, e.const(np.finfo(np.float32).min)])
        ctx = e.op("Transpose", [e.op("MatMul", [e.op("Softmax", [scores], axis=-1), v])], perm=[0, 2, 1, 3])
        x = e.op("Add", [x, linear(e, e.reshape(ctx, [0, 1], [d]), d, d, "attn.c_proj")])
        hidden = _gelu_tanh(e, linear(e, layer_norm(e, x, d, "ln_2"), d, 4 * d, "mlp.c_fc"))
        x = e.op("Add", [x, linear(e, hidden, 4 * d, d, "mlp.c_proj")])
    e.scope = ""
    x = layer_norm(e, x, d, "transformer.ln_f")
    logits = e.op("MatMul", [x, e.op("Transpose", [e.alias(wte)], perm=[1, 0])])
    return e.model({"input_ids": (1, t)}, [logits], int_inputs=("input_ids",))


def _split(e: Exporter, x: str, sizes: list[int], axis: int) -> list[str]:
    e.op("Split", [x, e.const(sizes, np.int64)], outputs=len(sizes), axis=axis)
    return list(e.nodes[-1].output)


def _sliced_mask(e: Exporter, buffer: str, scores: str) -> str:
    """bias[:, :, k - q : k, :k] with q, k read off the scores' shape."""
    shape = e.op("Shape", [scores])
    q = e.op("Unsqueeze", [e.op("Gather", [shape, e.index(2)], axis=0), e.const([0], np.int64)])
    k = e.op("Unsqueeze", [e.op("Gather", [shape, e.index(3)], axis=0), e.const([0], np.int64)])
    rows = e.op("Slice", [buffer, e.op("Sub", [k, q]), k, e.const([2], np.int64)])
    return e.op("Slice", [rows, e.const([0], np.int64), k, e.const([3], np.int64)])


def _trilu_mask(e: Exporter, scores: str) -> str:
    """torch.ones(q, k).tril().bool() with q, k from Shape."""
    sides = _shape_slice(e, scores, 2, 4)
    ones = e.op("ConstantOfShape", [sides], value=numpy_helper.from_array(np.array([1.0], np.float32)))
    return e.op("Cast", [e.op("Trilu", [ones], upper=0)], to=TensorProto.BOOL)


def _gelu_tanh(e: Exporter, x: str) -> str:
    """GPT-2's gelu_new: 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))."""
    cube = e.op("Mul", [e.op("Pow", [x, e.const(3.0)]), e.const(0.044715)])
    inner = e.op("Mul", [e.op("Add", [x, cube]), e.const(float(np.sqrt(2 / np.pi)))])
    return e.op("Mul", [e.op("Mul", [x, e.const(0.5)]), e.op("Add", [e.op("Tanh", [inner]), e.const(1.0)])])


def yolo() -> onnx.ModelProto:
    """A YOLOv5-style detector: a SiLU backbone giving three scales, a 1x1 head per scale reshaped to
    [1, anchors, outputs, ny, nx] (shapes as Constant value_ints) and transposed, Sigmoid, Split into
    xy / wh / confidences, decoded with grid and anchor constants, flattened and concatenated over the
    three scales. The first scale's raw head is an output too, and read later by its decoding."""
    e = Exporter("yolo", 27)
    na, nc = 3, 3
    no = 5 + nc
    x, cin, scales = "images", 3, []
    for i, c in enumerate([8, 16, 16, 24, 32]):
        e.scope = f"/model.{i}"
        x, cin = conv_bias(e, x, cin, c, 3, 2, act="swish"), c
        if i >= 2:
            scales.append((x, c, 2 ** (i + 1)))
    detections, raw = [], None
    for i, (feature, c, stride) in enumerate(scales):
        e.scope = f"/model.5/m.{i}"
        ny = nx = 64 // stride
        head = conv_bias(e, feature, c, na * no, 1)
        head = e.op("Transpose", [e.op("Reshape", [head, _ints(e, [1, na, no, ny, nx])])], perm=[0, 1, 3, 4, 2])
        raw = raw or head
        xy, wh, conf = _split(e, e.op("Sigmoid", [head]), [2, 2, nc + 1], axis=4)
        grid = np.stack(np.meshgrid(np.arange(nx), np.arange(ny)), -1)[None, None].astype(np.float32) - 0.5
        xy = e.op("Mul", [e.op("Add", [e.op("Mul", [xy, e.const(2.0)]), e.const(grid)]), e.const(float(stride))])
        anchors = e.weight(f"anchor_grid{i}", (1, na, 1, 1, 2), 4.0)
        wh = e.op("Mul", [e.op("Pow", [e.op("Mul", [wh, e.const(2.0)]), e.const(2.0)]), anchors])
        decoded = e.op("Concat", [xy, wh, conf], axis=4)
        detections.append(e.op("Reshape", [decoded, _ints(e, [1, -1, no])]))
    e.scope = "/model.5"
    return e.model({"images": (1, 3, 64, 64)}, [e.op("Concat", detections, axis=1), raw])


def _ints(e: Exporter, values: list[int]) -> str:
    out = e._out("Constant")
    e.nodes.append(helper.make_node("Constant", [], [out], value_ints=values))
    return out


def recurrent() -> onnx.ModelProto:
    """A sequence model: Linear + ReLU on [1, T, F], transposed to time-major, an LSTM (optional
    sequence_lens given as '', initial states from the exporter's Expand of zeros, Y_c unused), a GRU on
    its output (Y omitted: output 0 is ''), and a head on both final hidden states."""
    e = Exporter("recurrent", 28)
    t, f, h1, h2 = 16, 8, 32, 16
    e.scope = "/encoder"
    x = e.op("Transpose", [e.op("Relu", [linear(e, "sequence", f, 16, "fc")])], perm=[1, 0, 2])
    e.scope = "/lstm"
    zeros = e.op("Expand", [e.const(0.0), e.const([1, 1, h1], np.int64)])
    e.op("LSTM", [x, e.weight("weight_ih", (1, 4 * h1, 16)), e.weight("weight_hh", (1, 4 * h1, h1)),
                  e.weight("bias", (1, 8 * h1), 0.1), "", zeros, zeros], outputs=3, hidden_size=h1)
    y, y_h, _ = e.nodes[-1].output
    e.scope = "/gru"
    seq = e.op("Squeeze", [y, e.const([1], np.int64)])
    gru = helper.make_node("GRU", [seq, e.weight("weight_ih", (1, 3 * h2, h1)), e.weight("weight_hh", (1, 3 * h2, h2)),
                                   e.weight("bias", (1, 6 * h2), 0.1)], ["", "/gru/GRU_output_1"],
                           name="/gru/GRU", hidden_size=h2, linear_before_reset=1)
    e.nodes.append(gru)
    e.scope = "/head"
    both = e.op("Concat", [e.op("Squeeze", [state, e.const([0], np.int64)]) for state in (y_h, gru.output[1])],
                axis=1)
    return e.model({"sequence": (1, t, f)}, [linear(e, both, h1 + h2, 10, "fc")])


def branches() -> onnx.ModelProto:
    """An `If` whose branches read outer-scope tensors without naming them as inputs: an activation
    computed just before, another computed at the very start (and read again after the If), an
    initializer and a Constant of the parent graph."""
    e = Exporter("branches", 29)
    e.scope = "/early"
    early = e.op("Tanh", [linear(e, "x", 8, 16, "fc")])
    e.scope = "/body"
    h = early
    for i in range(3):
        h = e.op("Relu", [linear(e, h, 16, 16, f"fc{i}")])
    scale = e.weight("branch.scale", (16,), 1.0)
    offset = e.const(np.full(16, 0.25, np.float32))
    then_out, else_out = "/cond/then_out", "/cond/else_out"
    then = helper.make_graph(
        [helper.make_node("Mul", [h, scale], ["/cond/then_mul"]),
         helper.make_node("Add", ["/cond/then_mul", early], [then_out])], "then_branch", [],
        [helper.make_tensor_value_info(then_out, TensorProto.FLOAT, [1, 16])])
    other = helper.make_graph(
        [helper.make_node("Sub", [h, early], ["/cond/else_sub"]),
         helper.make_node("Add", ["/cond/else_sub", offset], ["/cond/else_add"]),
         helper.make_node("Sigmoid", ["/cond/else_add"], [else_out])], "else_branch", [],
        [helper.make_tensor_value_info(else_out, TensorProto.FLOAT, [1, 16])])
    e.scope = "/cond"
    chosen = e.op("If", ["use_then"], then_branch=then, else_branch=other)
    e.scope = "/head"
    out = linear(e, e.op("Add", [chosen, early]), 16, 4, "fc")
    return e.model({"x": (1, 8), "use_then": ()}, [out], elem_types={"use_then": TensorProto.BOOL})


def dynamic_batch() -> onnx.ModelProto:
    """A small CNN on [N, 3, 16, 16] whose flatten is `x.view(x.size(0), -1)` of an activation (its Shape is
    computed from the input's, whose N it shares), then an MLP and a Softmax; no value_info, so snip's own
    shape inference must supply every intermediate type."""
    e = Exporter("dynamic_batch", 30)
    x, cin = "input", 3
    for i, c in enumerate([8, 16, 16, 32]):
        e.scope = f"/features.{i}"
        x, cin = conv_bias(e, x, cin, c, 3, 2 if i % 2 else 1, act="relu"), c
    e.scope = "/classifier"
    flat = e.reshape(x, [0], [-1])
    y = e.op("Relu", [linear(e, flat, 32 * 4 * 4, 32, "0")])
    out = e.op("Softmax", [linear(e, y, 32, 10, "1")], axis=-1)
    model = e.model({"input": ("N", 3, 16, 16)}, [out])
    del model.graph.value_info[:]
    return model


MODELS = {"resnet_bn": lambda: resnet(False), "resnet_folded": lambda: resnet(True), "vit": vit,
          "bert": bert, "swin": swin, "unet": unet, "mobilenet_v2": mobilenet_v2, "efficientnet": efficientnet,
          "densenet": densenet, "convnext": convnext, "fpn": fpn, "gpt2": gpt2, "yolo": yolo,
          "recurrent": recurrent, "branches": branches, "dynamic_batch": dynamic_batch}
# Index inputs are not random data: the verification is given their values (and a batch of 3 sizes N).
_RNG = np.random.default_rng(3)
INPUTS = {"bert": {"input_ids": _RNG.integers(0, 50, (1, 12)).astype(np.int64)},
          "gpt2": {"input_ids": _RNG.integers(0, 64, (1, 8)).astype(np.int64)},
          "branches": {"use_then": np.array(True)},
          "dynamic_batch": {"input": _RNG.standard_normal((3, 3, 16, 16)).astype(np.float32)}}
