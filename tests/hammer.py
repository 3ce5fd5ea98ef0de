"""The concurrency hammer shared by the CPU test (test_instances.py) and the GPU test (test_cuda.py):
one Orchestrator, 8 threads, each with its own inputs, every output checked against a numpy reference
computed from that thread's own inputs."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import onnx
from conftest import KERNEL_CU, KERNEL_YAML, REF_PY, tiny_model, write

PIPELINE = """\
dims:
  N: {min: 1, opt: 2, max: 4}
inputs:
  x: {dtype: float32, shape: [N, 4]}
  s: {dtype: float32, shape: [1, 1]}
  mode: {dtype: int32, host: true}
outputs: [z, s_final]
snippets:
  relu: {onnx: relu.onnx}
kernels:
  scale: scale.yaml
steps:
  - snippet: relu
    inputs: {x: x}
    outputs: {y: y}
  - switch: mode
    cases:
      0:
        - kernel: scale
          args: {src: y, dst: z, factor: 2.0}
      1:
        - kernel: scale
          args: {src: y, dst: t, factor: 3.0}
        - kernel: scale
          args: {src: t, dst: z, factor: 5.0}
    default:
      - kernel: scale
        args: {src: y, dst: z, factor: -1.0}
  - kernel: scale
    args: {src: s, dst: state, factor: 1.0}
  - while: state > 1.0
    max_iterations: 6
    carry: {state: halved}
    body:
      - kernel: scale
        args: {src: state, dst: halved, factor: 0.5}
  - kernel: scale
    args: {src: state, dst: s_final, factor: 1.0}
"""

FACTORS = {0: 2.0, 1: 15.0}


def pipeline(folder: Path) -> Path:
    """The hammer pipeline in ``folder`` (with the relu snippet and the scale kernel it uses)."""
    if not (folder / "relu.onnx").exists():
        onnx.save(tiny_model("Relu", ["x"], ["y"]), str(folder / "relu.onnx"))
        for name, text in (("scale.yaml", KERNEL_YAML), ("scale.cu", KERNEL_CU), ("ref.py", REF_PY)):
            (folder / name).write_text(text)
    return write(folder, PIPELINE, "hammer.yaml")


def make_inputs(rng: np.random.Generator, n: int | None = None) -> dict:
    """Random inputs; ``n`` rows of ``x`` (None: 1 to 4 at random, so that shapes change between runs)."""
    n = int(rng.integers(1, 5)) if n is None else n
    return {"x": rng.standard_normal((n, 4)).astype(np.float32),
            "s": np.array([[rng.uniform(0.1, 100.0)]], np.float32), "mode": int(rng.integers(0, 3))}


def reference(inputs: dict) -> dict:
    z = np.maximum(inputs["x"], 0) * np.float32(FACTORS.get(inputs["mode"], -1.0))
    s = inputs["s"].copy()
    for _ in range(6):
        if not s[0, 0] > 1.0:
            break
        s = s * np.float32(0.5)
    return {"z": z, "s_final": s}


def hammer(orch, threads: int = 8, runs: int = 25, n: int | None = None) -> list[str]:
    """Run from ``threads`` threads at once; return one line per wrong output or error (empty: all good).
    ``n``: fixed rows of ``x`` (None: shapes change from run to run)."""
    failures: list[str] = []
    start = threading.Barrier(threads)

    def client(seed: int) -> None:
        rng = np.random.default_rng(seed)
        start.wait()
        for i in range(runs):
            inputs = make_inputs(rng, n)
            try:
                outputs = orch.run(inputs)
            except Exception as exc:  # reported below, with the thread and run that hit it
                failures.append(f"thread {seed} run {i}: {type(exc).__name__}: {exc}")
                continue
            for name, want in reference(inputs).items():
                if outputs[name].shape != want.shape or not np.allclose(outputs[name], want, rtol=1e-6):
                    failures.append(f"thread {seed} run {i}: output '{name}' is wrong")

    workers = [threading.Thread(target=client, args=(seed,)) for seed in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return failures
