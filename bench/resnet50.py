"""ResNet-50 cut into k snippets vs TensorRT alone on the unsplit model (the floor).

On the device (rig Python):
    python bench/resnet50.py --precision fp16 --batch 1 --pieces 1 4 16 --out bench/results/resnet50_fp16_b1.json
and the PyTorch side with the machine's torch (bench/torch_baseline.py). ``--smoke`` runs everything that
needs no GPU (model, snip, pipelines, one CPU run each), to check the script itself.

Timed by CUDA events around the enqueue of one inference (input already on the device, no copies), after
warm-up; medians with 5th/95th percentiles:
- ``tensorrt``: a plain loop of execute_async_v3 on the unsplit engine (and the same captured as a graph);
- ``orchestrator_k{k}``: the model in k snippets (``orchestrator snip --pieces k``), eager and graph mode;
- ``orchestrator_k{k}_hwc8`` (fp16, k > 1): the same, with the tensors between snippets kept in TensorRT's
  FP16 HWC8 format (``--boundary-format hwc8``), so that no reformat runs at a cut;
- ``pipeline``: uint8 HWC preprocess kernel -> network (k = 1) -> softmax -> top-5 kernels, eager and graph.
"""

from __future__ import annotations

import argparse
import json
import shutil
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
  resnet50: {{onnx: {onnx}, precision: {precision}}}
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


SPIN = """extern "C" __global__ void spin(long long cycles) {
  long long start = clock64();
  while (clock64() - start < cycles) {}
}"""


class EventTimer:
    """Times a callable that enqueues work on ``stream`` with two CUDA events, two ways:

    - ``latency``: start event, the call, end event: what a caller waits for, host issue time included
      (the GPU idles until the first launch arrives);
    - ``device``: the same behind a 2 ms spin kernel, so that the whole call is queued before the start
      event fires: the GPU time of the work alone."""

    def __init__(self, stream_handle):
        from orchestrator.backends.cuda.driver import Context, check, cu
        from orchestrator.kernels.nvrtc import compile_source

        self.check, self.cu, self.stream = check, cu, stream_handle
        self.start = check(cu.cuEventCreate(0), "cuEventCreate")
        self.end = check(cu.cuEventCreate(0), "cuEventCreate")
        info = Context(0).info
        compiled = compile_source("bench_spin", SPIN, "spin", info.arch, [f"--gpu-architecture={info.arch}"], "spin")
        self.module = check(cu.cuModuleLoadData(compiled.image), "cuModuleLoadData")
        self.spin = check(cu.cuModuleGetFunction(self.module, compiled.lowered_name.encode()), "cuModuleGetFunction")
        self.cycles = np.array([2_000_000 * 2], np.int64)  # ~2 ms at the H100's ~2 GHz
        self.spin_args = np.array([self.cycles.ctypes.data], np.uint64)

    def _spin(self) -> None:
        self.check(self.cu.cuLaunchKernel(self.spin, 1, 1, 1, 1, 1, 1, 0, self.stream, self.spin_args.ctypes.data, 0),
                   "cuLaunchKernel(spin)")

    def __call__(self, fn, iters: int, warmup: int = 30, before=None) -> dict[str, dict[str, float]]:
        """``before``: enqueued ahead of each timed call, untimed (e.g. an L2 flush)."""
        check, cu = self.check, self.cu
        for _ in range(warmup):
            fn()
        result = {}
        for kind in ("latency", "device"):
            samples = []
            for _ in range(iters):
                if kind == "device":
                    self._spin()
                if before is not None:
                    before()
                check(cu.cuEventRecord(self.start, self.stream), "cuEventRecord")
                fn()
                check(cu.cuEventRecord(self.end, self.stream), "cuEventRecord")
                check(cu.cuEventSynchronize(self.end), "cuEventSynchronize")
                samples.append(check(cu.cuEventElapsedTime(self.start, self.end), "cuEventElapsedTime"))
            result[kind] = stats(samples)
        return result


def conv_weights(model_path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(weight, bias) of every Conv and Gemm of the ONNX model, in graph order (what torch_baseline.py
    loads into its nn.Module)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(model_path)).graph
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    return [(weights[n.input[1]], weights[n.input[2]]) for n in graph.node if n.op_type in ("Conv", "Gemm")]


def record_modes(result: dict, mode: str, timed: dict) -> None:
    """``mode``: latency as the caller sees it (the targets use it); ``mode_device``: GPU time alone."""
    result[mode], result[f"{mode}_device"] = timed["latency"], timed["device"]


def tensorrt_alone(onnx_path: Path, precision: str, batch: int, iters: int, cache: Path, stream) -> dict:
    """The floor: the unsplit model as one engine, enqueued in a plain loop (and as a CUDA graph). Built
    with the same settings and timing cache as the snippets, so that both see the same tactics."""
    from orchestrator.backends.cuda.driver import Context, DeviceAllocation, check, cu
    from orchestrator.backends.cuda.snippet import EngineCache
    from orchestrator.pipeline.ir import SnippetInfo
    from orchestrator.pipeline.onnx_meta import read_ports

    context = Context(0)
    shape = (batch, 3, 224, 224)
    profile = {"x": (shape, shape, shape)}
    # Named and configured as the k = 1 snippet, whose ONNX file is this one: both use one cached engine.
    info = SnippetInfo("piece0", onnx_path, precision, 256 << 20, profile, *read_ports(onnx_path))
    engine = EngineCache(cache, context.info).engine(info, profile)
    ctx = engine.create_execution_context()
    x, y = DeviceAllocation(4 * int(np.prod(shape))), DeviceAllocation(4 * batch * 1000)
    data = bench_input(batch)["x"]  # the orchestrator's input: the floor computes on the same data
    check(cu.cuMemcpyHtoD(x.address, data.ctypes.data, data.nbytes), "cuMemcpyHtoD")
    ctx.set_input_shape("x", shape)
    ctx.set_tensor_address("x", x.address)
    ctx.set_tensor_address("logits", y.address)
    timer = EventTimer(stream.handle)
    result = {}
    record_modes(result, "eager", timer(lambda: ctx.execute_async_v3(stream.address), iters))
    ctx.execute_async_v3(stream.address)
    stream.synchronize()
    check(cu.cuStreamBeginCapture(stream.handle, cu.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL),
          "cuStreamBeginCapture")
    ctx.execute_async_v3(stream.address)
    graph = check(cu.cuStreamEndCapture(stream.handle), "cuStreamEndCapture")
    exe = check(cu.cuGraphInstantiate(graph, 0), "cuGraphInstantiate")
    record_modes(result, "graph", timer(lambda: check(cu.cuGraphLaunch(exe, stream.handle), "cuGraphLaunch"), iters))
    result["device"] = context.info.name
    return result


def time_orchestrator(pipeline, feeds: dict, modes: list[str], iters: int, cache: Path, stream) -> dict:
    from orchestrator import Orchestrator
    from orchestrator.inputs import check_inputs

    result = {}
    for mode in modes:
        start = time.perf_counter()
        orch = Orchestrator(pipeline, device="cuda", graphs={"eager": False, "graph": True}[mode], cache_dir=cache,
                            stream=stream.address)
        result.setdefault("load_s", time.perf_counter() - start)  # the first load includes the engine builds
        result.setdefault("engines_built", orch.compiled.engine_cache.builds)  # 0: all from the cache
        for _ in range(3):  # warm-up and capture
            orch.run(feeds)
        arrays, dims = check_inputs(orch.pipeline, feeds)
        orch.backend.set_inputs(arrays, dims)
        record_modes(result, mode, EventTimer(orch.backend.stream.handle)(orch.executor._program, iters))
        result["memory"] = orch.backend.memory_summary()
        orch.close()
    return result


def bench_input(batch: int) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)}


def resnet50_onnx(cache: Path) -> Path:
    """The benchmark's ResNet-50 (seeded weights) in ``cache``, and its weights as .npz for torch_baseline.py."""
    import generate
    import onnx

    cache.mkdir(parents=True, exist_ok=True)
    model = cache / "resnet50.onnx"
    if not model.exists():
        onnx.save(generate.resnet50_model(), str(model))
    weights = model.with_suffix(".npz")  # for torch_baseline.py in an environment without onnx
    if not weights.exists():
        layers = conv_weights(model)
        np.savez(weights, **{f"{k}{i}": a for i, (w, b) in enumerate(layers) for k, a in (("w", w), ("b", b))})
    return model


def snip_model(model: Path, cache: Path, batch: int, precision: str, k: int, layout: str = "linear"):
    """``orchestrator snip`` of the model into k pieces (verified on the CPU), in a folder of its own."""
    from orchestrator.snip import snip

    snipped = snip(model, cache / f"b{batch}_{precision}_k{k}_{layout}", pieces=k, dims={"N": batch},
                   precision=precision, boundary_format=layout)
    if k == 1:  # the model itself (snip verified the copy equal): the very engine TensorRT alone runs
        shutil.copyfile(model, snipped.pieces[0])
    return snipped


def scenarios(args, model: Path) -> dict[str, tuple]:
    """name -> (pipeline, feeds) for every orchestrator configuration, snipped and verified on the CPU."""
    from orchestrator.pipeline.load import load_pipeline

    x = bench_input(args.batch)
    image = {"image": np.random.default_rng(1).integers(0, 256, (args.batch, 224, 224, 3), dtype=np.uint8)}
    layouts = [layout for layout in args.layouts if args.precision == "fp16" or layout == "linear"]
    result = {}
    cuts = [(1, "linear")] + [(k, layout) for k in args.pieces if k > 1 for layout in layouts]  # k = 1 is always run
    for k, layout in cuts:
        name = f"orchestrator_k{k}" + ("" if layout == "linear" else f"_{layout}")
        start = time.perf_counter()
        snipped = snip_model(model, args.cache, args.batch, args.precision, k, layout)
        result[name] = (load_pipeline(snipped.pipeline), x)
        print(f"{name}: cut at {[c[0] for c in snipped.boundaries]} ({time.perf_counter() - start:.1f} s)",
              flush=True)
        if k == 1:  # the full pipeline reuses the k = 1 engine: measured early, before the long builds
            onnx = snipped.pieces[0]
            text = PIPELINE.format(batch=args.batch, onnx=onnx.as_posix(), precision=args.precision,
                                   kernels=(ROOT / "custom_kernels").as_posix())
            (onnx.parent / "full_pipeline.yaml").write_text(text)
            result["pipeline"] = (load_pipeline(onnx.parent / "full_pipeline.yaml"), image)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--precision", default="fp16", choices=["fp16", "fp32"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--pieces", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--modes", nargs="+", default=["eager", "graph"])
    parser.add_argument("--layouts", nargs="+", default=["hwc8", "linear"], choices=["hwc8", "linear"],
                        help="boundary formats for k > 1 (hwc8 at fp16 only; k = 1 has no boundary)")
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "orchestrator-bench")
    parser.add_argument("--smoke", action="store_true", help="no GPU: build everything and run once on the CPU")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--merge", action="store_true", help="keep the runs already in --out that this one "
                        "does not measure again (to split one configuration over several calls)")
    args = parser.parse_args()

    from orchestrator import Orchestrator

    model = resnet50_onnx(args.cache)
    args.pieces = [1, *dict.fromkeys(k for k in args.pieces if k != 1)]  # the full pipeline uses k = 1's engine
    configs = scenarios(args, model)
    if args.smoke:
        for name, (pipeline, feeds) in configs.items():
            out = Orchestrator(pipeline, device="cpu").run(feeds)
            print(f"smoke: {name} ran on the CPU:", {k: v.shape for k, v in out.items()})
        return
    result: dict = {"precision": args.precision, "batch": args.batch, "iters": args.iters, "runs": {}}
    if args.merge and args.out and args.out.exists():
        result["runs"] = json.loads(args.out.read_text())["runs"]

    def record(name: str, measure) -> None:
        """Run one scenario; a failure is recorded and the others still run. Saved after each."""
        try:
            result["runs"][name] = measure()
        except Exception as exc:  # a benchmark reports what failed rather than losing the other rows
            result["runs"][name] = {"error": f"{type(exc).__name__}: {exc}"}
        print(name, json.dumps(result["runs"][name]), flush=True)
        if args.out:
            args.out.write_text(json.dumps(result, indent=2) + "\n")

    from orchestrator.backends.cuda.driver import Context, Stream

    Context(0)
    # One stream for everything: once TensorRT has run on a second stream, every inference in the process
    # (TensorRT alone's too) takes ~20 us longer on this H100 (bench/gap.py --sequence), so the floor and
    # the orchestrator are compared on the stream they share.
    stream = Stream()
    record("tensorrt", lambda: tensorrt_alone(model, args.precision, args.batch, args.iters, args.cache, stream))
    for name, (pipeline, feeds) in configs.items():
        record(name, lambda p=pipeline, f=feeds: time_orchestrator(p, f, args.modes, args.iters, args.cache,
                                                                   stream))


if __name__ == "__main__":
    main()
