"""numpy references of the example kernels: the CPU backend runs these, and GPU results are compared
with them. Each takes the kernel's 'in' tensors and its bound scalars as keyword arguments and returns
the 'out' tensors (one array, or a tuple in declaration order)."""

import numpy as np


def preprocess(image, mean, std):
    x = image.astype(np.float32) * np.float32(1 / 255)
    x = (x - mean) / std
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)


def softmax(logits):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def topk(probs, k=5):
    index = np.argsort(-probs, axis=-1, kind="stable")[:, :k].astype(np.int32)
    return index, np.take_along_axis(probs, index, axis=-1).astype(np.float32)


def softmax_topk(logits, k=5):
    return topk(softmax(logits), k)


def max_prob(logits):
    return np.array([softmax(logits).max(axis=-1).min()], dtype=np.float32)


def pack_rgbt(image, trimap):
    n, h, w, _ = image.shape
    x = np.zeros((n, 8, h, w), np.float32)
    x[:, :3] = image.transpose(0, 3, 1, 2).astype(np.float32) * np.float32(2 / 255) - 1
    cls = np.where(trimap < 85, 0, np.where(trimap > 170, 2, 1))
    for c in range(3):
        x[:, 3 + c] = cls == c
    return x


def instance_norm_relu(x, eps):
    mean = x.mean(axis=(2, 3), keepdims=True)
    var = ((x - mean) ** 2).mean(axis=(2, 3), keepdims=True)
    return np.maximum((x - mean) / np.sqrt(var + np.float32(eps)), 0).astype(np.float32)


def trimap_clamp(alpha, trimap):
    t = trimap[:, None]
    return np.where(t < 85, 0, np.where(t > 170, 1, alpha)).astype(np.float32)


def scale(src, factor):
    return (src * np.float32(factor)).astype(np.float32)
