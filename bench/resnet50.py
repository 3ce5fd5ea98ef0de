"""ResNet-50 cut into k snippets vs TensorRT alone on the unsplit model (the floor).

On the device (rig Python):
    python bench/resnet50.py --precision fp16 --batch 1 --pieces 1 4 16 --out bench/results/resnet50_fp16_b1.json
and the PyTorch side with the machine's torch (bench/torch_baseline.py). ``--smoke`` runs everything that
needs no GPU (model, snip, pipelines, one CPU run each), to check the script itself.

Timed by CUDA events around the enqueue of one inference (input already on the device, no copies), after
warm-up; medians with 5th/95th percentiles:
- ``tensorrt``: a plain loop of execute_async_v3 on the unsplit engine (and the same captured as a graph);
- ``orchestrator_k{k}``: the model in k snippets (``orchestrator snip --pieces k``), eager and graph mode;
- ``pipeline``: uint8 HWC preprocess kernel -> network (k = 1) -> softmax -> top-5 kernels, eager and graph.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "snippets"))

PIPELINE = """\
name: resnet50_pipeline
dims:
  N: {{min: {batch}, opt: {batch}, max: {batch}}}
inputs:
  image: {{dtype: uint8, shape: [N, 224, 224, 3]}}
outputs: [top5_index, top5_prob]
constants:
  mean: {{value: [0.485, 0.456, 0.406], dtype: float32}}
  std: {{value: [0.229, 0.224, 0.225], dtype: float32}}
snippets:
  resnet50: {{onnx: {onnx}, precision: {precision}, workspace: 1GiB}}
kernels:
  preprocess: {kernels}/preprocess.yaml
  softmax: {kernels}/softmax.yaml
  topk: {kernels}/topk.yaml
steps:
  - kernel: preprocess
    args: {{image: image, mean: mean, std: std, out: x}}
  - snippet: resnet50
    inputs: {{x: x}}
    outputs: {{logits: logits}}
  - kernel: softmax
    args: {{logits: logits, probs: probs}}
  - kernel: topk
    args: {{probs: probs, index: top5_index, value: top5_prob}}
"""


def stats(samples: list[float]) -> dict[str, float]:
    qs = statistics.quantiles(samples, n=20) if len(samples) > 1 else [samples[0]] * 19
    return {"median_ms": statistics.median(samples), "p5_ms": qs[0], "p95_ms": qs[-1], "n": len(samples)}


class EventTimer:
    """Times a callable that enqueues work on ``stream`` with two CUDA events."""

    def __init__(self, stream_handle):
        from orchestrator.backends.cuda.driver import check, cu

        self.check, self.cu, self.stream = check, cu, stream_handle
        self.start = check(cu.cuEventCreate(0), "cuEventCreate")
        self.end = check(cu.cuEventCreate(0), "cuEventCreate")

    def __call__(self, fn, iters: int, warmup: int = 30) -> dict[str, float]:
        check, cu = self.check, self.cu
        for _ in range(warmup):
            fn()
        samples = []
        for _ in range(iters):
            check(cu.cuEventRecord(self.start, self.stream), "cuEventRecord")
            fn()
            check(cu.cuEventRecord(self.end, self.stream), "cuEventRecord")
            check(cu.cuEventSynchronize(self.end), "cuEventSynchronize")
            samples.append(check(cu.cuEventElapsedTime(self.start, self.end), "cuEventElapsedTime"))
        return stats(samples)


def tensorrt_alone(onnx_path: Path, precision: str, batch: int, iters: int, cache: Path) -> dict:
    """The floor: the unsplit model as one engine, enqueued in a plain loop (and as a CUDA graph)."""
    from orchestrator import cache as disk
    from orchestrator.backends.cuda import trt
    from orchestrator.backends.cuda.driver import Context, DeviceAllocation, Stream, check, cu

    context = Context(0)
    stream = Stream()
    shape = (batch, 3, 224, 224)
    timing = cache / "timing-bench.cache"
    serialized, timing_bytes = trt.build_engine(onnx_path.read_bytes(), name="resnet50", precision=precision,
                                                workspace=1 << 30, profile={"x": (shape, shape, shape)},
                                                timing_cache=disk.read(timing))
    disk.write_atomic(timing, timing_bytes)
    engine = trt.deserialize(serialized)
    ctx = engine.create_execution_context()
    x, y = DeviceAllocation(4 * int(np.prod(shape))), DeviceAllocation(4 * batch * 1000)
    ctx.set_input_shape("x", shape)
    ctx.set_tensor_address("x", x.address)
    ctx.set_tensor_address("logits", y.address)
    timer = EventTimer(stream.handle)
    result = {"eager": timer(lambda: ctx.execute_async_v3(stream.address), iters)}
    ctx.execute_async_v3(stream.address)
    stream.synchronize()
    check(cu.cuStreamBeginCapture(stream.handle, cu.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL),
          "cuStreamBeginCapture")
    ctx.execute_async_v3(stream.address)
    graph = check(cu.cuStreamEndCapture(stream.handle), "cuStreamEndCapture")
    exe = check(cu.cuGraphInstantiate(graph, 0), "cuGraphInstantiate")
    result["graph"] = timer(lambda: check(cu.cuGraphLaunch(exe, stream.handle), "cuGraphLaunch"), iters)
    result["device"] = context.info.name
    return result


def with_precision(pipeline, precision: str):
    snippets = {n: dataclasses.replace(s, precision=precision) for n, s in pipeline.snippets.items()}
    return dataclasses.replace(pipeline, snippets=snippets)


def time_orchestrator(pipeline, feeds: dict, modes: list[str], iters: int, cache: Path) -> dict:
    from orchestrator import Orchestrator
    from orchestrator.inputs import check_inputs

    result = {}
    for mode in modes:
        orch = Orchestrator(pipeline, device="cuda", graphs={"eager": False, "graph": True}[mode], cache_dir=cache)
        for _ in range(3):  # warm-up and capture
            orch.run(feeds)
        arrays, dims = check_inputs(orch.pipeline, feeds)
        orch.backend.set_inputs(arrays, dims)
        result[mode] = EventTimer(orch.backend.stream.handle)(orch.executor._program, iters)
        result["memory"] = orch.backend.memory_summary()
        orch.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--precision", default="fp16", choices=["fp16", "fp32"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--pieces", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--modes", nargs="+", default=["eager", "graph"])
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "orchestrator-bench")
    parser.add_argument("--smoke", action="store_true", help="no GPU: build everything and run once on the CPU")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import generate
    import onnx

    from orchestrator import Orchestrator
    from orchestrator.pipeline.load import load_pipeline
    from orchestrator.snip import snip

    args.cache.mkdir(parents=True, exist_ok=True)
    model = args.cache / "resnet50.onnx"
    if not model.exists():
        onnx.save(generate.resnet50_model(), str(model))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 3, 224, 224)).astype(np.float32)
    image = rng.integers(0, 256, (args.batch, 224, 224, 3), dtype=np.uint8)
    result: dict = {"precision": args.precision, "batch": args.batch, "iters": args.iters, "runs": {}}
    pieces = {}
    for k in args.pieces:
        folder = args.cache / f"b{args.batch}_k{k}"
        start = time.perf_counter()
        snipped = snip(model, folder, pieces=k, dims={"N": args.batch})
        pieces[k] = with_precision(load_pipeline(snipped.pipeline), args.precision)
        print(f"k={k}: cut at {[c[0] for c in snipped.boundaries]} ({time.perf_counter() - start:.1f} s)")
    text = PIPELINE.format(batch=args.batch, onnx=(args.cache / f"b{args.batch}_k1" / "piece0.onnx").as_posix(),
                           precision=args.precision, kernels=(ROOT / "custom_kernels").as_posix())
    (args.cache / "pipeline.yaml").write_text(text)
    full = load_pipeline(args.cache / "pipeline.yaml")
    if args.smoke:
        for pipeline in pieces.values():
            Orchestrator(pipeline, device="cpu").run({"x": x})
        out = Orchestrator(full, device="cpu").run({"image": image})
        print("smoke: every pipeline ran on the CPU;", {k: v.shape for k, v in out.items()})
        return
    result["runs"]["tensorrt"] = tensorrt_alone(model, args.precision, args.batch, args.iters, args.cache)
    for k, pipeline in pieces.items():
        result["runs"][f"orchestrator_k{k}"] = time_orchestrator(pipeline, {"x": x}, args.modes, args.iters,
                                                                 args.cache)
    result["runs"]["pipeline"] = time_orchestrator(full, {"image": image}, args.modes, args.iters, args.cache)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
