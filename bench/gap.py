"""Where does the orchestrator's constant ~20 µs over TensorRT alone come from (ResNet-50, k = 1)?

bench/resnet50.py measured the orchestrator with the model as one snippet, running TensorRT alone's very
engine, about 20 µs (GPU time, graph mode) slower than TensorRT alone, at every batch and precision,
while cutting the model into 16 hwc8 snippets added almost nothing on top. This script runs one engine
under each difference between the two in turn, in one process, each variant measured twice in
interleaved order (so that drift shows):

- ``trt_zeros``: TensorRT alone as resnet50.py times it (its own context memory, input never written);
- ``trt_data``: the same with the orchestrator's input data;
- ``user_scratch``: context memory supplied by us in a separate allocation;
- ``arena``: input, output and scratch in one allocation laid out like the orchestrator's arena;
- ``orchestrator``: the k = 1 pipeline itself, graph mode (the timed call is its compiled program: no
  input copy), and ``orchestrator_eager``.
Every variant is timed as a CUDA graph except ``orchestrator_eager``.

    python bench/gap.py --out bench/results/gap_fp16_b1.json     # on the device
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from resnet50 import EventTimer, resnet50_onnx, snip_model  # noqa: E402


def k1_folder(args) -> Path:
    """resnet50.py's k = 1 pipeline (the model as one snippet), made here if that script has not run."""
    folder = args.cache / f"b{args.batch}_{args.precision}_k1_linear"
    if not (folder / "pipeline.yaml").exists():
        snip_model(resnet50_onnx(args.cache), args.cache, args.batch, args.precision, 1)
    return folder


def capture(ctx, stream):
    from orchestrator.backends.cuda.driver import check, cu

    ctx.execute_async_v3(stream.address)
    stream.synchronize()
    mode = cu.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL
    check(cu.cuStreamBeginCapture(stream.handle, mode), "cuStreamBeginCapture")
    ctx.execute_async_v3(stream.address)
    graph = check(cu.cuStreamEndCapture(stream.handle), "cuStreamEndCapture")
    exe = check(cu.cuGraphInstantiate(graph, 0), "cuGraphInstantiate")

    def launch(keep=graph) -> None:
        check(cu.cuGraphLaunch(exe, stream.handle), "cuGraphLaunch")

    return launch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--precision", default="fp16")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/orchestrator-bench"))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--sequence", action="store_true", help="TensorRT alone in a fresh process, then again "
                        "after each thing the orchestrator does")
    args = parser.parse_args()
    if args.sequence:
        return sequence(args)

    from orchestrator import Orchestrator
    from orchestrator.backends.cuda import trt
    from orchestrator.backends.cuda.driver import Context, DeviceAllocation, Stream, check, cu
    from orchestrator.backends.cuda.snippet import EngineCache
    from orchestrator.pipeline.ir import SnippetInfo
    from orchestrator.pipeline.load import load_pipeline
    from orchestrator.pipeline.onnx_meta import read_ports

    folder = k1_folder(args)
    onnx_path, shape = folder / "piece0.onnx", (args.batch, 3, 224, 224)
    profile = {"x": (shape, shape, shape)}
    info = SnippetInfo("piece0", onnx_path, args.precision, 256 << 20, profile, *read_ports(onnx_path))
    context, stream = Context(0), Stream()
    engine = EngineCache(args.cache, context.info).engine(info, profile)
    data = np.random.default_rng(0).standard_normal(shape).astype(np.float32)  # resnet50.py's input
    x_bytes, y_bytes, scratch = data.nbytes, 4 * args.batch * 1000, trt.scratch_bytes(engine)

    def align(n: int) -> int:
        return -(-n // 256) * 256

    def make(kind: str):
        if kind == "arena":  # input | output | scratch, as the orchestrator lays its arena out
            arena = DeviceAllocation(align(x_bytes) + align(y_bytes) + scratch)
            x, keep = arena.address, [arena]
            y = x + align(x_bytes)
            s = y + align(y_bytes)
        else:
            xa, ya = DeviceAllocation(x_bytes), DeviceAllocation(y_bytes)
            x, y, keep = xa.address, ya.address, [xa, ya]
            sa = DeviceAllocation(scratch) if kind == "user_scratch" else None
            s, keep = (sa.address, keep + [sa]) if sa else (0, keep)
        if kind in ("trt_zeros", "trt_data"):
            ctx = engine.create_execution_context()
        else:
            ctx = trt.context_without_memory(engine)
            trt.set_scratch(ctx, s, scratch)
        if kind != "trt_zeros":
            check(cu.cuMemcpyHtoD(x, data.ctypes.data, x_bytes), "cuMemcpyHtoD")
        ctx.set_input_shape("x", shape)
        ctx.set_tensor_address("x", x)
        ctx.set_tensor_address("logits", y)
        return capture(ctx, stream), (ctx, keep)

    runners = {kind: make(kind) for kind in ("trt_zeros", "trt_data", "user_scratch", "arena")}
    timers = {kind: EventTimer(stream.handle) for kind in runners}
    calls = {kind: fn for kind, (fn, _) in runners.items()}
    result: dict = {"precision": args.precision, "batch": args.batch, "device": context.info.name, "runs": {}}
    pipeline, orchestrators = load_pipeline(folder / "pipeline.yaml"), []
    for kind, graphs in (("orchestrator", True), ("orchestrator_eager", False)):
        orch = Orchestrator(pipeline, device="cuda", graphs=graphs, cache_dir=args.cache)
        for _ in range(3):
            orch.run({"x": data})
        result[f"{kind}_engines_built"] = orch.compiled.engine_cache.builds  # 0: TensorRT alone's engine
        timers[kind], calls[kind] = EventTimer(orch.backend.stream.handle), orch.executor._program
        orchestrators.append(orch)
    for round_ in (1, 2):
        for kind, fn in calls.items():
            result["runs"][f"{kind}_{round_}"] = timers[kind](fn, args.iters)
            timed = result["runs"][f"{kind}_{round_}"]
            print(f"{kind:14} round {round_}: latency {timed['latency']['median_ms']:.4f} ms, "
                  f"GPU {timed['device']['median_ms']:.4f} ms", flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


def gpu_state() -> str:
    import subprocess

    query = ["nvidia-smi", "--query-gpu=clocks.sm,temperature.gpu,power.draw", "--format=csv,noheader"]
    return subprocess.run(query, capture_output=True, text=True).stdout.strip()


def limits() -> dict[str, int]:
    """Every context limit (stack size, persisting L2 set-aside...) the driver reports."""
    from orchestrator.backends.cuda.driver import cu

    values = {}
    for limit in cu.CUlimit:
        status, value = cu.cuCtxGetLimit(limit)
        if status == cu.CUresult.CUDA_SUCCESS:
            values[limit.name] = int(value)
    return values


def sequence(args) -> None:
    """TensorRT alone (graph, real input) timed in a fresh process, then after each load-time and run-time
    action of the orchestrator in turn: whatever slows it down shows at the step that introduces it."""
    import time

    from orchestrator import Orchestrator
    from orchestrator.backends.cuda import trt
    from orchestrator.backends.cuda.driver import (
        Context,
        DeviceAllocation,
        PinnedAllocation,
        Stream,
        check,
        cu,
    )
    from orchestrator.backends.cuda.snippet import EngineCache
    from orchestrator.pipeline.ir import SnippetInfo
    from orchestrator.pipeline.load import load_pipeline
    from orchestrator.pipeline.onnx_meta import read_ports

    folder = k1_folder(args)
    onnx_path, shape = folder / "piece0.onnx", (args.batch, 3, 224, 224)
    profile = {"x": (shape, shape, shape)}
    info = SnippetInfo("piece0", onnx_path, args.precision, 256 << 20, profile, *read_ports(onnx_path))
    context, stream = Context(0), Stream()
    engines = EngineCache(args.cache, context.info)
    engine = engines.engine(info, profile)
    data = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    x, y = DeviceAllocation(data.nbytes), DeviceAllocation(4 * args.batch * 1000)
    check(cu.cuMemcpyHtoD(x.address, data.ctypes.data, data.nbytes), "cuMemcpyHtoD")
    ctx = engine.create_execution_context()
    ctx.set_input_shape("x", shape)
    ctx.set_tensor_address("x", x.address)
    ctx.set_tensor_address("logits", y.address)
    launch, timer = capture(ctx, stream), EventTimer(stream.handle)
    steps: list[dict] = []
    junk = DeviceAllocation(256 << 20)  # writing it evicts everything from the 50 MB L2

    def flush_l2() -> None:
        check(cu.cuMemsetD8Async(junk.address, 1, 256 << 20, stream.handle), "cuMemsetD8Async")

    def measure(label: str, orch=None) -> None:
        warm, cold = timer(launch, args.iters), timer(launch, args.iters, before=flush_l2)
        step = {"after": label, "gpu_ms": warm["device"]["median_ms"], "gpu_cold_l2_ms": cold["device"]["median_ms"],
                "latency_ms": warm["latency"]["median_ms"], "gpu_state": gpu_state(), "limits": limits()}
        if orch is not None:
            timed = EventTimer(orch.backend.stream.handle)(orch.executor._program, args.iters)
            step["orchestrator_gpu_ms"] = timed["device"]["median_ms"]
        steps.append(step)
        print(f"{label:44} GPU {step['gpu_ms']:.4f} ms (L2 flushed: {step['gpu_cold_l2_ms']:.4f})  "
              f"orchestrator {step.get('orchestrator_gpu_ms', float('nan')):.4f}  [{step['gpu_state']}] "
              f"{step['limits']}", flush=True)

    measure("fresh process")
    measure("again")
    time.sleep(3)
    measure("3 s idle")
    initial = limits()
    other_stream = Stream()
    check(cu.cuLaunchKernel(timer.spin, 1, 1, 1, 1, 1, 1, 0, other_stream.handle, timer.spin_args.ctypes.data, 0),
          "cuLaunchKernel(spin)")
    other_stream.synchronize()
    measure("a plain kernel ran on a 2nd stream")
    other = engines.engine(info, profile)  # a second instance of the engine, as the orchestrator loads it
    scratch = DeviceAllocation(trt.scratch_bytes(other))
    bare = trt.context_without_memory(other)
    trt.set_scratch(bare, scratch.address, trt.scratch_bytes(other))
    owned = other.create_execution_context()
    for c in (bare, owned):
        c.set_input_shape("x", shape)
        c.set_tensor_address("x", x.address)
        c.set_tensor_address("logits", y.address)
    measure("second engine, two contexts created")
    bare.execute_async_v3(stream.address)
    stream.synchronize()
    measure("context without memory enqueued once")
    second = Stream()
    owned.execute_async_v3(second.address)
    second.synchronize()
    measure("own-memory context enqueued on a 2nd stream")
    pinned = PinnedAllocation(data.nbytes)
    check(cu.cuMemcpyHtoDAsync(x.address, pinned.address, data.nbytes, stream.handle), "cuMemcpyHtoDAsync")
    stream.synchronize()
    check(cu.cuMemcpyHtoD(x.address, data.ctypes.data, data.nbytes), "cuMemcpyHtoD")
    measure("pinned copy")
    orch = Orchestrator(load_pipeline(folder / "pipeline.yaml"), device="cuda", graphs=True, cache_dir=args.cache)
    for _ in range(4):
        orch.run({"x": data})
    measure("orchestrator (graphs) ran 4 times", orch=orch)
    check(cu.cuCtxResetPersistingL2Cache(), "cuCtxResetPersistingL2Cache")
    measure("persisting L2 lines reset", orch=orch)
    for limit, value in initial.items():
        if limits()[limit] != value:
            check(cu.cuCtxSetLimit(getattr(cu.CUlimit, limit), value), f"cuCtxSetLimit({limit})")
    measure("changed context limits set back", orch=orch)
    steps.append({"limits_at_start": initial})
    if args.out:
        args.out.write_text(json.dumps({"precision": args.precision, "batch": args.batch, "sequence": steps},
                                       indent=2) + "\n")


if __name__ == "__main__":
    main()
