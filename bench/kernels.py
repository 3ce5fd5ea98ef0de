"""The example pre/post-processing kernels, one thread per element/row (``preprocess``, ``softmax``,
``topk``) against the fast ones (``*_fast``: vectorised single-pass preprocess and softmax, block-parallel
top-k with warp shuffles, and ``softmax_topk_fast``, both in one kernel), and the ResNet-50 pipeline's time
over TensorRT alone with each set (``pipeline_fused``: preprocess_fast + softmax_topk_fast).

On the device (rig Python):
    python bench/kernels.py --batch 1 32 --out bench/results/kernels.json
``--smoke`` runs every kernel-only pipeline once on the CPU reference (no GPU), to check the script.

Each kernel-only pipeline (a kernel alone, and preprocess -> softmax -> top-k, the network's input and
logits given) is timed in graph mode like bench/resnet50.py (CUDA events; ``latency``: what a caller
waits for; ``device``: GPU time behind a spin kernel); first checked against the CPU reference. With
``--network``, the full pipeline (preprocess -> ResNet-50 -> softmax -> top-5) with each kernel set and
TensorRT alone on the same engine: ``overhead_us`` is pipeline minus TensorRT alone (target <= 10 us at
batch 1 with the fast kernels).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
KERNELS = (HERE.parent / "custom_kernels").as_posix()

STEPS = {
    "preprocess": "  - {kernel: preprocess, args: {image: image, mean: mean, std: std, out: x}}\n",
    "softmax": "  - {kernel: softmax, args: {logits: logits, probs: probs}}\n",
    "topk": "  - {kernel: topk, args: {probs: PROBS, index: top5_index, value: top5_prob}}\n",
    "softmax_topk": "  - {kernel: softmax_topk, args: {logits: logits, index: top5_index, value: top5_prob}}\n",
}
OUTPUTS = {"preprocess": ["x"], "softmax": ["probs"], "topk": ["top5_index", "top5_prob"],
           "softmax_topk": ["top5_index", "top5_prob"]}
FUSED = (["softmax_topk"], ["preprocess", "softmax_topk"])  # softmax_topk_fast: softmax + top-k in one kernel


def kernel_pipeline(which: list[str], suffix: str, batch: int) -> str:
    """A pipeline of the given kernels (``suffix`` "" or "_fast" picks the set) at a fixed batch."""
    inputs = {"image": "{dtype: uint8, shape: [N, 224, 224, 3]}", "logits": "{dtype: float32, shape: [N, 1000]}",
              "probs_in": "{dtype: float32, shape: [N, 1000]}"}
    needed = {"image"} if "preprocess" in which else set()
    needed |= {"logits"} if {"softmax", "softmax_topk"} & set(which) else set()
    needed |= {"probs_in"} if "topk" in which and "softmax" not in which else set()
    outputs = [o for k in which for o in OUTPUTS[k]]
    text = f"name: kernels{suffix}\ndims: {{N: {{min: {batch}, opt: {batch}, max: {batch}}}}}\ninputs:\n"
    text += "".join(f"  {n}: {inputs[n]}\n" for n in inputs if n in needed)
    text += f"outputs: [{', '.join(outputs)}]\n"
    if "preprocess" in which:
        text += ("constants:\n  mean: {value: [0.485, 0.456, 0.406], dtype: float32}\n"
                 "  std: {value: [0.229, 0.224, 0.225], dtype: float32}\n")
    text += "kernels:\n" + "".join(f"  {k}: {KERNELS}/{k}{suffix}.yaml\n" for k in which) + "steps:\n"
    probs = "probs" if "softmax" in which else "probs_in"
    return text + "".join(STEPS[k].replace("PROBS", probs) for k in which)


def feeds(batch: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((batch, 1000)).astype(np.float32) * 4
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return {"image": rng.integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8), "logits": logits,
            "probs_in": probs.astype(np.float32)}


def load(text: str, folder: Path, name: str):
    from orchestrator.pipeline.load import load_pipeline

    path = folder / f"{name}.yaml"
    path.write_text(text)
    return load_pipeline(path)


def configurations(batches: list[int], folder: Path):
    """(name, pipeline, feeds) of every kernel-only configuration."""
    for batch in batches:
        data = feeds(batch)
        for suffix in ("", "_fast"):
            sets = (["preprocess"], ["softmax"], ["topk"], ["preprocess", "softmax", "topk"])
            for which in sets + (FUSED if suffix else ()):
                name = f"{'+'.join(which)}{suffix}_b{batch}"
                pipeline = load(kernel_pipeline(which, suffix, batch), folder, name.replace("+", "_"))
                yield name, pipeline, {k: v for k, v in data.items() if k in pipeline.inputs}


def check_against_reference(pipeline, data, cache: Path) -> float:
    """Largest relative difference of the GPU outputs from the CPU reference's (top-k indices exactly)."""
    from orchestrator import Orchestrator

    with Orchestrator(pipeline, device="cuda", cache_dir=cache) as gpu, Orchestrator(pipeline, device="cpu") as cpu:
        got, want = gpu.run(data), cpu.run(data)
    worst = 0.0
    for name, w in want.items():
        if w.dtype.kind == "i":
            if not np.array_equal(got[name], w):
                raise AssertionError(f"{pipeline.name}: {name} differs from the reference")
            continue
        worst = max(worst, float(np.abs(got[name] - w).max() / (np.abs(w).max() + 1e-30)))
    return worst


def network_overhead(batch: int, iters: int, cache: Path, stream) -> dict:
    """Full ResNet-50 pipeline with each kernel set, minus TensorRT alone on the same engine."""
    import resnet50

    from orchestrator.pipeline.load import load_pipeline

    model = resnet50.resnet50_onnx(cache)
    onnx = resnet50.snip_model(model, cache, batch, "fp16", 1).pieces[0]
    image = {"image": np.random.default_rng(1).integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8)}
    result = {"tensorrt": resnet50.tensorrt_alone(model, "fp16", batch, iters, cache, stream)}
    for suffix in ("", "_fast", "_fused"):
        text = resnet50.PIPELINE.format(batch=batch, onnx=onnx.as_posix(), precision="fp16", kernels=KERNELS)
        for k in ("preprocess", "softmax", "topk"):
            text = text.replace(f"/{k}.yaml", f"/{k}{'_fast' if suffix else ''}.yaml")
        if suffix == "_fused":
            text = fuse_softmax_topk(text)
        path = onnx.parent / f"full_pipeline{suffix}.yaml"
        path.write_text(text)
        run = resnet50.time_orchestrator(load_pipeline(path), image, ["graph"], iters, cache, stream)
        for mode in ("graph", "graph_device"):
            floor = result["tensorrt"][mode]["median_ms"]
            run[f"{mode}_overhead_us"] = (run[mode]["median_ms"] - floor) * 1e3
        result[f"pipeline{suffix}"] = run
    return result


def fuse_softmax_topk(text: str) -> str:
    """The full pipeline with its softmax_fast and topk_fast steps replaced by one softmax_topk_fast step."""
    kernels = (f"  softmax: {KERNELS}/softmax_fast.yaml\n  topk: {KERNELS}/topk_fast.yaml\n",
               f"  softmax_topk: {KERNELS}/softmax_topk_fast.yaml\n")
    steps = ("  - kernel: softmax\n    args: {logits: logits, probs: probs}\n"
             "  - kernel: topk\n    args: {probs: probs, index: top5_index, value: top5_prob}\n",
             "  - kernel: softmax_topk\n    args: {logits: logits, index: top5_index, value: top5_prob}\n")
    for old, new in (kernels, steps):
        if old not in text:
            raise AssertionError(f"the pipeline template changed: {old!r} not found")
        text = text.replace(old, new)
    return text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--network", action="store_true", help="also the full ResNet-50 pipeline (fp16)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "orchestrator-bench")
    parser.add_argument("--smoke", action="store_true", help="no GPU: run every pipeline once on the CPU")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-kernels-"))
    from orchestrator import Orchestrator

    if args.smoke:
        for name, pipeline, data in configurations(args.batch, folder):
            out = Orchestrator(pipeline, device="cpu").run(data)
            print(f"smoke: {name} ran on the CPU:", {k: v.shape for k, v in out.items()})
        return
    import resnet50

    from orchestrator.backends.cuda.driver import Context, Stream

    Context(0)
    stream = Stream()
    result: dict = {"iters": args.iters, "runs": {}}
    for name, pipeline, data in configurations(args.batch, folder):
        run = {"max_rel_error_vs_reference": check_against_reference(pipeline, data, args.cache)}
        run.update(resnet50.time_orchestrator(pipeline, data, ["graph"], args.iters, args.cache, stream))
        result["runs"][name] = run
        print(name, json.dumps({k: run[k] for k in ("max_rel_error_vs_reference", "graph", "graph_device")}),
              flush=True)
        if args.out:
            args.out.write_text(json.dumps(result, indent=2) + "\n")
    if args.network:
        for batch in args.batch:
            result["runs"][f"network_b{batch}"] = network_overhead(batch, args.iters, args.cache, stream)
            print(f"network_b{batch}", json.dumps({k: v.get("graph_overhead_us") for k, v in
                                                   result["runs"][f"network_b{batch}"].items()}), flush=True)
            if args.out:
                args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
