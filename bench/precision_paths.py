"""ResNet-50 fp16 through both precision paths (backends/cuda/trt.py): TensorRT's FP16 builder flag on the
fp32 model (8.6 and 10.x) vs the model converted to fp16 in ONNX (what TensorRT 11 requires; on 8.6 built
with the FP16 flag), batch 1, graph and eager mode, on one stream.

For each path: engine build time, latency (CUDA events, as bench/resnet50.py), and the error of the
logits against the CPU reference (onnxruntime, fp32): relative L2, max abs, top-1 and top-5 agreement over
``--samples`` random inputs. On the device (rig Python):
    python bench/precision_paths.py --out bench/results/precision_paths_fp16_b1.json
``--smoke`` runs what needs no GPU (model, conversion, CPU reference) to check the script itself.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from resnet50 import EventTimer, record_modes, resnet50_onnx

PIPELINE = """\
name: resnet50_{path}
dims:
  N: {{min: 1, opt: 1, max: 1}}
inputs:
  x: {{dtype: float32, shape: [N, 3, 224, 224]}}
outputs: [logits]
snippets:
  net: {{onnx: {onnx}, precision: fp16, precision_path: {path}}}
steps:
  - snippet: net
"""
PATHS = ("flags", "converted")


def pipeline(model: Path, path: str, folder: Path) -> Path:
    file = folder / f"resnet50_{path}.yaml"
    file.write_text(PIPELINE.format(path=path, onnx=model.as_posix()))
    return file


def samples(n: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    return [{"x": rng.standard_normal((1, 3, 224, 224)).astype(np.float32)} for _ in range(n)]


def errors(got: list[np.ndarray], want: list[np.ndarray]) -> dict[str, float]:
    pairs = list(zip(got, want, strict=True))

    def rel(a, b):
        return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b.astype(np.float64)))

    def top5(a, b):
        return len(set(np.argsort(-a[0])[:5]) & set(np.argsort(-b[0])[:5])) / 5

    return {"rel_l2_mean": float(np.mean([rel(g, w) for g, w in pairs])),
            "rel_l2_max": max(rel(g, w) for g, w in pairs),
            "max_abs": max(float(np.abs(g - w).max()) for g, w in pairs),
            "top1_agree": float(np.mean([g.argmax() == w.argmax() for g, w in pairs])),
            "top5_overlap": float(np.mean([top5(g, w) for g, w in pairs]))}


def measure(file: Path, inputs, reference, iters: int, cache: Path, stream) -> dict:
    from orchestrator import Orchestrator
    from orchestrator.inputs import check_inputs

    result: dict = {}
    for mode, graphs in (("eager", False), ("graph", True)):
        start = time.perf_counter()
        orch = Orchestrator.from_yaml(file, device="cuda", graphs=graphs, cache_dir=cache, stream=stream.address)
        result.setdefault("load_s", time.perf_counter() - start)  # the first load includes the build
        result.setdefault("engines_built", orch.compiled.engine_cache.builds)
        if mode == "eager":
            result["error_vs_fp32_reference"] = errors([orch.run(x)["logits"] for x in inputs], reference)
        for _ in range(3):
            orch.run(inputs[0])
        arrays, dims = check_inputs(orch.pipeline, inputs[0])
        orch.backend.set_inputs(arrays, dims)
        record_modes(result, mode, EventTimer(orch.backend.stream.handle)(orch.executor._program, iters))
        orch.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "orchestrator-bench")
    parser.add_argument("--smoke", action="store_true", help="no GPU: model, conversion and CPU reference only")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from orchestrator import Orchestrator
    from orchestrator.precision import Conversion, converted

    model = resnet50_onnx(args.cache)
    folder = args.cache / "precision_paths"
    folder.mkdir(parents=True, exist_ok=True)
    files = {path: pipeline(model, path, folder) for path in PATHS}
    inputs = samples(args.samples)
    reference = Orchestrator.from_yaml(files["flags"], device="cpu")
    want = [reference.run(x)["logits"] for x in inputs]
    if args.smoke:
        start = time.perf_counter()
        converted(model.read_bytes(), Conversion("fp16"), args.cache, name="net")
        print(f"smoke: converted ResNet-50 in {time.perf_counter() - start:.1f} s; reference logits {want[0].shape}")
        return

    from orchestrator.backends.cuda import trt
    from orchestrator.backends.cuda.driver import Context, Stream

    context = Context(0)
    stream = Stream()  # one stream for everything (bench/gap.py: a second one slows every TensorRT run)
    result = {"model": "resnet50", "precision": "fp16", "batch": 1, "iters": args.iters, "samples": args.samples,
              "tensorrt": trt.version(), "device": context.info.name, "runs": {}}
    for path in PATHS:
        try:
            result["runs"][path] = measure(files[path], inputs, want, args.iters, args.cache, stream)
        except Exception as exc:  # report what failed rather than losing the other path's figures
            result["runs"][path] = {"error": f"{type(exc).__name__}: {exc}"}
        print(path, json.dumps(result["runs"][path]), flush=True)
        if args.out:
            args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
