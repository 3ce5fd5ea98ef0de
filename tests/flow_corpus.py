"""Random nested control-flow pipelines (if / switch / while over the conftest `scale` kernel), generated
at test time from a seed: a corpus for the diagram and decision-report tests."""

from __future__ import annotations

import itertools
import random


def pipeline_text(seed: int, depth: int = 3) -> str:
    """A valid pipeline: input x [1, 1] and host mode -> output z, through random nested blocks."""
    rng, names = random.Random(seed), itertools.count()
    lines = ["inputs:", "  x: {dtype: float32, shape: [1, 1]}", "  mode: {dtype: int32, host: true}",
             "outputs: [z]", "kernels:", "  scale: scale.yaml", "steps:"]
    lines += _block(rng, names, "x", "z", depth, "  ")
    return "\n".join(lines) + "\n"


def _scale(src: str, dst: str, factor: float, indent: str) -> list[str]:
    return [f"{indent}- kernel: scale", f"{indent}  args: {{src: {src}, dst: {dst}, factor: {factor}}}"]


def _block(rng: random.Random, names, src: str, dst: str, depth: int, indent: str) -> list[str]:
    """Steps that read ``src`` and define ``dst`` (visible after them)."""
    kind = rng.choice(["kernel", "if", "switch", "while", "chain"]) if depth > 0 else "kernel"
    if kind == "kernel":
        return _scale(src, dst, rng.choice([0.5, 1.0, 2.0, 3.0]), indent)
    if kind == "chain":
        mid = f"t{next(names)}"
        return _block(rng, names, src, mid, depth - 1, indent) + _block(rng, names, mid, dst, depth - 1, indent)
    inner = indent + "    "
    if kind == "if":
        return ([f"{indent}- if: {src} > {rng.choice([0.5, 2.0, 10.0])}", f"{indent}  then:"]
                + _block(rng, names, src, dst, depth - 1, inner)
                + [f"{indent}  else:"] + _block(rng, names, src, dst, depth - 1, inner))
    if kind == "switch":
        lines = [f"{indent}- switch: mode", f"{indent}  cases:"]
        for key in range(rng.randint(1, 3)):
            lines += [f"{indent}    {key}:"] + _block(rng, names, src, dst, depth - 1, inner + "  ")
        return lines + [f"{indent}  default:"] + _block(rng, names, src, dst, depth - 1, inner)
    state, nxt = f"s{next(names)}", f"n{next(names)}"
    return (_scale(src, state, 1.0, indent)
            + [f"{indent}- while: {state} > 1.0", f"{indent}  max_iterations: {rng.randint(1, 5)}",
               f"{indent}  carry: {{{state}: {nxt}}}", f"{indent}  body:"]
            + _block(rng, names, state, nxt, depth - 1, inner) + _scale(state, dst, 1.0, indent))
