"""Generated two-snippet pipelines whose cut carries several tensors of odd sizes (the shape that broke
TensorRT's 512-byte scratch alignment), for the arena tests (CPU) and the alignment test (GPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

OPS = ("Relu", "Sigmoid", "Abs", "Neg")


def _model(name: str, widths: list[int], op: str, prefix_in: str, prefix_out: str) -> onnx.ModelProto:
    nodes = [helper.make_node(op, [f"{prefix_in}{i}"], [f"{prefix_out}{i}"]) for i in range(len(widths))]
    io = [(f"{prefix_in}{i}", f"{prefix_out}{i}", w) for i, w in enumerate(widths)]
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info(i, TensorProto.FLOAT, ["N", w]) for i, _, w in io],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["N", w]) for _, o, w in io])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def write_cut(folder: Path, widths: list[int], seed: int = 0, max_n: int = 5) -> Path:
    """``first`` maps x0..xk -> c0..ck (the cut, k+1 tensors of widths[i] floats per row), ``second``
    maps c0..ck -> y0..yk; N in [1, max_n]. Returns the pipeline's path."""
    rng = np.random.default_rng(seed)
    first, second = (str(rng.choice(OPS)) for _ in range(2))
    onnx.save(_model("first", widths, first, "x", "c"), str(folder / f"first{seed}.onnx"))
    onnx.save(_model("second", widths, second, "c", "y"), str(folder / f"second{seed}.onnx"))
    inputs = "".join(f"  x{i}: {{dtype: float32, shape: [N, {w}]}}\n" for i, w in enumerate(widths))
    ports = ", ".join(f"x{i}: x{i}" for i in range(len(widths)))
    cut = ", ".join(f"c{i}: c{i}" for i in range(len(widths)))
    outs = ", ".join(f"y{i}: y{i}" for i in range(len(widths)))
    text = (f"dims:\n  N: {{min: 1, opt: 2, max: {max_n}}}\ninputs:\n{inputs}"
            f"outputs: [{', '.join(f'y{i}' for i in range(len(widths)))}]\n"
            f"snippets:\n  first: {{onnx: first{seed}.onnx}}\n  second: {{onnx: second{seed}.onnx}}\n"
            f"steps:\n  - snippet: first\n    inputs: {{{ports}}}\n    outputs: {{{cut}}}\n"
            f"  - snippet: second\n    inputs: {{{cut}}}\n    outputs: {{{outs}}}\n")
    path = folder / f"cut{seed}.yaml"
    path.write_text(text)
    return path


def odd_widths(rng: np.random.Generator) -> list[int]:
    return [int(w) | 1 for w in rng.integers(1, 200, int(rng.integers(2, 5)))]
