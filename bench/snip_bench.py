"""What cutting a model costs on the GPU: an encoder-decoder with long skips (the matting-like UNet of
tests/snip_corpus.py at 512x512, RGB + trimap) and ResNet-50, TensorRT alone vs the model in k snippets
(``snip --pieces k``), graph mode, hwc8 and linear boundaries, with load/build times.

On the device (rig Python), warm caches, about 5 minutes on an H100:
    python bench/snip_bench.py --out bench/results/snip_fp16.json
    python bench/snip_bench.py --quick --out bench/results/snip_fp16_quick.json   # UNet k=4, ResNet-50 k=16
    python bench/snip_bench.py --cold --out bench/results/snip_fp16_cold.json     # build times from scratch
    python bench/snip_bench.py --smoke                                            # no GPU: snip + CPU runs

Targets: the UNet at k = 4 (hwc8) within 3% of TensorRT alone, ResNet-50 at k = 16 (hwc8) within 2%; with
``--cold`` (each configuration in an empty engine and timing cache), k = 16's build_s <= 2x TensorRT alone's.
Latency is timed by CUDA events around one inference, input already on the device (bench/resnet50.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE), str(ROOT / "tests"), str(ROOT / "snippets")]

from resnet50 import EventTimer, record_modes, resnet50_onnx, time_orchestrator  # noqa: E402

UNET_WIDTHS = (16, 32, 64, 128)


def models(cache: Path) -> dict[str, Path]:
    import onnx
    import snip_corpus

    unet = cache / "unet512.onnx"
    if not unet.exists():
        onnx.save(snip_corpus.unet(512, UNET_WIDTHS), str(unet))
    return {"unet": unet, "resnet50": resnet50_onnx(cache)}


def feeds_for(model: Path) -> dict[str, np.ndarray]:
    from orchestrator.pipeline.onnx_meta import read_ports

    rng = np.random.default_rng(0)
    inputs = read_ports(model)[0]
    return {name: rng.standard_normal([d if isinstance(d, int) else 1 for d in port.shape]).astype(np.float32)
            for name, port in inputs.items()}


def tensorrt_alone(model: Path, precision: str, iters: int, cache: Path, stream) -> dict:
    """The floor: the unsplit model as one engine (build time included when the cache is cold), eager and
    captured as a CUDA graph, on the stream the orchestrator uses."""
    from orchestrator.backends.cuda.driver import Context, DeviceAllocation, check, cu
    from orchestrator.backends.cuda.snippet import EngineCache
    from orchestrator.pipeline.ir import SnippetInfo
    from orchestrator.pipeline.onnx_meta import read_ports

    context = Context(0)
    inputs, outputs = read_ports(model)
    feeds = feeds_for(model)
    profile = {n: (a.shape, a.shape, a.shape) for n, a in feeds.items()}
    info = SnippetInfo("piece0", model, precision, 256 << 20, profile, inputs, outputs)
    cache_obj = EngineCache(cache, context.info)
    start = time.perf_counter()
    engine = cache_obj.engine(info, profile)
    result: dict = {"build_s": time.perf_counter() - start, "engines_built": cache_obj.builds}
    ctx = engine.create_execution_context()
    keep = []
    for name, array in feeds.items():
        buf = DeviceAllocation(array.nbytes)
        check(cu.cuMemcpyHtoD(buf.address, array.ctypes.data, array.nbytes), "cuMemcpyHtoD")
        ctx.set_input_shape(name, array.shape)
        ctx.set_tensor_address(name, buf.address)
        keep.append(buf)
    for name in outputs:
        buf = DeviceAllocation(4 * int(np.prod(ctx.get_tensor_shape(name))))
        ctx.set_tensor_address(name, buf.address)
        keep.append(buf)
    timer = EventTimer(stream.handle)
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


def snipped(model: Path, cache: Path, precision: str, k: int, layout: str, again: bool):
    """The model in k pieces (snipped and verified on the CPU once; reused from the cache unless --resnip)."""
    from orchestrator.pipeline.load import load_pipeline
    from orchestrator.snip import snip

    folder = cache / f"{model.stem}_{precision}_k{k}_{layout}"
    report = folder / "cuts.json"
    if again or not report.exists():
        start = time.perf_counter()
        result = snip(model, folder, pieces=k, precision=precision, boundary_format=layout)
        report.write_text(json.dumps({"snip_s": time.perf_counter() - start, "names": result.names,
                                      "cuts": [c.describe() for c in result.cuts],
                                      "piece_costs": result.piece_costs}, indent=2))
    meta = json.loads(report.read_text())
    return load_pipeline(folder / "pipeline.yaml"), meta


def configurations(args) -> list[tuple[str, int, str]]:
    if args.quick:
        return [("resnet50", 16, "hwc8"), ("unet", 4, "hwc8")]  # ResNet first: its k = 16 was never reached
    layouts = args.layouts if args.precision == "fp16" else ["linear"]
    return [(m, k, layout) for m, ks in (("unet", args.unet_pieces), ("resnet50", args.resnet_pieces))
            for k in ks for layout in layouts]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--precision", default="fp16", choices=["fp16", "fp32"])
    parser.add_argument("--unet-pieces", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--resnet-pieces", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--layouts", nargs="+", default=["hwc8", "linear"], choices=["hwc8", "linear"])
    parser.add_argument("--modes", nargs="+", default=["graph"], choices=["eager", "graph"])
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="UNet k=4 and ResNet-50 k=16, hwc8, 100 iterations")
    parser.add_argument("--cold", action="store_true", help="each configuration in an empty engine cache: "
                        "build times from scratch (slow: every engine is built)")
    parser.add_argument("--resnip", action="store_true", help="snip again even where the cache has the pieces")
    parser.add_argument("--models", nargs="+", default=["resnet50", "unet"], choices=["resnet50", "unet"],
                        help="which models to measure (a short device session: one)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "orchestrator-snip-bench")
    parser.add_argument("--smoke", action="store_true", help="no GPU: snip everything and run once on the CPU")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    iters = 100 if args.quick else args.iters
    args.cache.mkdir(parents=True, exist_ok=True)
    paths = models(args.cache)
    configs = {(m, k, layout): snipped(paths[m], args.cache, args.precision, k, layout, args.resnip)
               for m, k, layout in configurations(args) if m in args.models}
    if args.smoke:
        from orchestrator import Orchestrator

        for (m, k, layout), (pipeline, meta) in configs.items():
            feeds = {meta["names"][n]: a for n, a in feeds_for(paths[m]).items()}
            out = Orchestrator(pipeline, device="cpu").run(feeds)
            print(f"smoke: {m} k={k} {layout}: {meta['cuts']} ->", {n: v.shape for n, v in out.items()})
        return
    run(args, paths, configs, iters)


def engine_cache(args, name: str) -> Path:
    return args.cache / "cold" / f"{name}-{time.time_ns()}" if args.cold else args.cache / "engines"


def run(args, paths: dict[str, Path], configs: dict, iters: int) -> None:
    from orchestrator.backends.cuda.driver import Context, Stream

    Context(0)
    stream = Stream()
    result: dict = {"precision": args.precision, "iters": iters, "cold": args.cold, "models": {}}

    def record(model: str, name: str, measure) -> None:
        try:
            row = measure()
        except Exception as exc:  # a benchmark reports what failed rather than losing the other rows
            row = {"error": f"{type(exc).__name__}: {exc}"}
        rows = result["models"].setdefault(model, {})
        floor = rows.get("tensorrt", {}).get("graph", {}).get("median_ms")
        if floor and "graph" in row:
            row["graph_over_tensorrt_pct"] = 100.0 * (row["graph"]["median_ms"] / floor - 1.0)
        if rows.get("tensorrt", {}).get("build_s") and "load_s" in row:
            row["load_over_tensorrt_build"] = row["load_s"] / rows["tensorrt"]["build_s"]
        rows[name] = row
        print(model, name, json.dumps(row), flush=True)
        if args.out:
            args.out.write_text(json.dumps(result, indent=2) + "\n")

    for model in dict.fromkeys(m for m, _, _ in configs):
        record(model, "tensorrt", lambda m=model: tensorrt_alone(paths[m], args.precision, iters,
                                                                 engine_cache(args, f"{m}-trt"), stream))
        for (m, k, layout), (pipeline, meta) in configs.items():
            if m != model:
                continue
            feeds = {meta["names"][n]: a for n, a in feeds_for(paths[m]).items()}

            def measure(p=pipeline, f=feeds, meta=meta, name=f"{m}-k{k}-{layout}"):
                row = time_orchestrator(p, f, args.modes, iters, engine_cache(args, name), stream)
                return {**row, "cuts": meta["cuts"], "piece_costs": meta["piece_costs"]}

            record(model, f"k{k}_{layout}", measure)


if __name__ == "__main__":
    main()
