"""Per-step host overhead of ``Orchestrator.run`` against the same TensorRT/NVRTC calls in a plain loop.

A pipeline of 2 * K tiny steps (K TensorRT snippets of one ReLU each, interleaved with K NVRTC kernels)
on a [1, 64, 32, 32] tensor. Measured on the device:
- enqueue: host time to enqueue every step (orchestrator: its compiled program; direct: a loop calling
  execute_async_v3 and cuLaunchKernel on the same contexts and packed arguments), synchronising after
  each iteration, untimed;
- run: wall time of a whole run (input copy, steps, output copy, sync) against the direct equivalent.

    python bench/overhead.py --steps 32 --iters 2000 --out bench/results/overhead.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

HERE = Path(__file__).resolve().parent
KERNEL = """\
code: |
  extern "C" __global__ void scale(const float* src, float* dst, float factor, int count) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) dst[i] = src[i] * factor;
  }
entry: scale
args:
  - {name: src, kind: in, dtype: float32, shape: [N, C, H, W]}
  - {name: dst, kind: out, dtype: float32, shape: [N, C, H, W]}
  - {name: factor, kind: scalar, dtype: float32}
  - {name: count, kind: scalar, dtype: int32, value: N * C * H * W}
launch: {threads: dst, block: 256}
reference: reference.py:scale
"""


def write_pipeline(folder: Path, k: int) -> Path:
    shape = [1, 64, 32, 32]
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10),
              str(folder / "relu.onnx"))
    (folder / "scale.yaml").write_text(KERNEL)
    (folder / "reference.py").write_text("import numpy as np\n\ndef scale(src, factor):\n"
                                         "    return (src * np.float32(factor)).astype(np.float32)\n")
    steps, prev = [], "x"
    for i in range(k):
        steps.append(f"  - snippet: relu\n    inputs: {{x: {prev}}}\n    outputs: {{y: r{i}}}\n")
        steps.append(f"  - kernel: scale\n    args: {{src: r{i}, dst: s{i}, factor: 1.01}}\n")
        prev = f"s{i}"
    text = (f"name: overhead\ninputs:\n  x: {{dtype: float32, shape: {shape}}}\noutputs: [{prev}]\n"
            "snippets:\n  relu: {onnx: relu.onnx}\nkernels:\n  scale: scale.yaml\nsteps:\n" + "".join(steps))
    path = folder / "overhead.yaml"
    path.write_text(text)
    return path


def median_us(samples: list[float]) -> dict[str, float]:
    qs = statistics.quantiles(samples, n=20)
    return {"median_us": statistics.median(samples) * 1e6, "p5_us": qs[0] * 1e6, "p95_us": qs[-1] * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE.parent))
    from orchestrator import Orchestrator
    from orchestrator.backends.cuda.driver import check, cu

    folder = Path(tempfile.mkdtemp())
    orch = Orchestrator.from_yaml(write_pipeline(folder, args.steps // 2), device="cuda")
    backend = orch.backend
    x = np.random.default_rng(0).standard_normal((1, 64, 32, 32)).astype(np.float32)
    out_name = orch.pipeline.outputs[0]
    for _ in range(50):
        orch.run({"x": x})
    program, stream = orch.executor._program, backend.stream

    # the same calls, by hand: contexts and packed launches in pipeline order
    order = sorted([(s.id, c.enqueue, stream.address) for s, c in backend._contexts] +
                   [(s.id, k.enqueue, stream.handle) for s, k in backend._launches])
    calls = [(fn, arg) for _, fn, arg in order]
    staged, out_host = backend._stage_in["x"], np.empty_like(x)

    def direct_enqueue() -> None:
        for fn, arg in calls:
            fn(arg)

    def direct_run() -> np.ndarray:
        staged[:] = x.reshape(-1).view(np.uint8)
        check(cu.cuMemcpyHtoDAsync(backend.address["x"], staged.ctypes.data, x.nbytes, stream.handle), "h2d")
        direct_enqueue()
        check(cu.cuMemcpyDtoHAsync(out_host.ctypes.data, backend.address[out_name], x.nbytes, stream.handle), "d2h")
        stream.synchronize()
        return out_host.copy()

    def interleaved(a, b, sync: bool) -> tuple[list[float], list[float]]:
        """Time a and b alternately (order swapped every iteration) so that drift hits both alike."""
        samples: dict = {a: [], b: []}
        for i in range(args.iters):
            for fn in ((a, b) if i % 2 else (b, a)):
                t0 = time.perf_counter()
                fn()
                samples[fn].append(time.perf_counter() - t0)
                if sync:
                    stream.synchronize()
        return samples[a], samples[b]

    def orch_run() -> None:
        orch.run({"x": x})

    np.testing.assert_allclose(direct_run(), orch.run({"x": x})[out_name], rtol=1e-6)
    enqueue = interleaved(program, direct_enqueue, True)
    run = interleaved(orch_run, direct_run, False)
    result = {"steps": args.steps, "iters": args.iters, "device": backend.context.info.name,
              "enqueue": {"orchestrator": median_us(enqueue[0]), "direct": median_us(enqueue[1])},
              "run": {"orchestrator": median_us(run[0]), "direct": median_us(run[1])}}
    for kind in ("enqueue", "run"):
        extra = result[kind]["orchestrator"]["median_us"] - result[kind]["direct"]["median_us"]
        result[kind]["overhead_per_step_us"] = extra / args.steps
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
