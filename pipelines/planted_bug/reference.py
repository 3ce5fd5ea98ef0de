"""numpy references: `scale` is right; `scale_buggy` mirrors the planted off-by-one of scale_buggy.cu, so
that the bug also shows on the CPU reference backend."""

import numpy as np


def scale(src, factor):
    return (src * np.float32(factor)).astype(np.float32)


def scale_buggy(src, factor):
    flat = src.reshape(-1)
    return (np.concatenate([flat[1:], flat[-1:]]) * np.float32(factor)).reshape(src.shape).astype(np.float32)
