"""GPU tests of the precision paths (backends/cuda/trt.py): fp16 by builder flag and fp16 converted in the
ONNX (what TensorRT 11 requires; on 8.6 built with the FP16 flag), hwc8 boundaries on both, ops kept in
fp32, and the merged timing cache."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

from orchestrator import Orchestrator

pytestmark = pytest.mark.gpu


FP16 = 1e-2


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def matting(tmp_path, options: str) -> str:
    """pipelines/matting.yaml (two fp16 snippets) with ``options`` added to both snippets."""
    text = (ROOT / "pipelines" / "matting.yaml").read_text()
    text = text.replace("../snippets/", f"{ROOT}/snippets/").replace("../custom_kernels/", f"{ROOT}/custom_kernels/")
    text = text.replace("precision: fp16,", f"precision: fp16, {options},")
    for dim, size in (("H", 160), ("W", 224)):  # static shapes: the engines build in seconds
        text = text.replace(f"{dim}: {{min: 64, opt: 224, max: 512}}", f"{dim}: {{min: {size}, opt: {size}, max: {size}}}")
    assert "max: 512" not in text
    path = tmp_path / "matting.yaml"
    path.write_text(text)
    return str(path)


def matting_inputs(seed: int):
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (1, 160, 224, 3), dtype=np.uint8),
            "trimap": rng.integers(0, 256, (1, 160, 224), dtype=np.uint8)}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("precision-cache")


def converted_models(cache) -> set[str]:
    return {p.name for p in (cache / "converted").glob("*.onnx")}


@pytest.mark.parametrize("options", ["precision_path: flags", "precision_path: converted",
                                     "keep_fp32: [Relu]"])
def test_fp16_paths_match_the_reference(tmp_path, cache, options):
    path = matting(tmp_path, options)
    before = converted_models(cache)
    gpu = Orchestrator.from_yaml(path, device="cuda", cache_dir=cache)
    cpu = Orchestrator.from_yaml(path, device="cpu")
    for seed in range(2):
        x = matting_inputs(seed)
        assert rel_l2(gpu.run(x)["alpha"], cpu.run(x)["alpha"]) <= FP16
    made = converted_models(cache) - before  # one converted model per snippet, kept in the cache
    assert len(made) == (0 if "flags" in options else 2), made
    gpu.close()


@pytest.mark.parametrize("mode", [False, True], ids=["eager", "graph"])
def test_hwc8_boundaries_on_the_converted_path(tmp_path, mode):
    """The converted models declare the hwc8 ports float16; engines keep them in HWC8 (checked at load)."""
    sys.path.insert(0, str(ROOT / "snippets"))
    import generate
    import onnx

    from orchestrator.snip import snip

    model = tmp_path / "classify.onnx"
    onnx.save(generate.full_model("classify"), str(model))
    pipeline = snip(model, tmp_path / "hwc8", at="s1,s3", dims={"N": 2}, precision="fp16",
                    boundary_format="hwc8").pipeline
    text = pipeline.read_text().replace("precision: fp16", "precision: fp16, precision_path: converted")
    assert "precision_path: converted" in text
    pipeline.write_text(text)
    gpu = Orchestrator.from_yaml(pipeline, device="cuda", cache_dir=tmp_path / "cache", graphs=mode)
    cpu = Orchestrator.from_yaml(pipeline, device="cpu")
    x = {"x": np.random.default_rng(3).standard_normal((2, 3, 224, 224)).astype(np.float32)}
    assert rel_l2(gpu.run(x)["logits"], cpu.run(x)["logits"]) <= FP16
    assert len(list((tmp_path / "cache" / "converted").glob("*.onnx"))) == 3
    gpu.close()


def _conv_model(channels: int):
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.full((channels, 8, 3, 3), 0.01, np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "conv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", channels, 16, 16])],
                              [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def test_timing_caches_keep_the_entries_of_every_build(workdir, monkeypatch, caplog):
    """Two convolutions of different widths time different tactics. Built one after the other into one
    cache directory, the timing cache ends with both sets (larger than after the first alone) and no merge
    is needed; built into two directories, merging the two caches keeps both sets, or, where TensorRT
    refuses to combine them, keeps the larger and says so. Built at TensorRT's default level, which times
    tactics. (Run 9 read the files with the cache's checksum header still on,
    so TensorRT saw no timing cache at all.)"""
    import onnx
    from conftest import write

    from orchestrator import cache
    from orchestrator.backends.cuda import snippet, trt

    monkeypatch.delenv(snippet.LEVEL_VARIABLE, raising=False)

    def build(channels: int, cache_dir: Path) -> bytes:
        onnx.save(_conv_model(channels), str(workdir / f"conv{channels}.onnx"))
        path = write(workdir, f"dims:\n  N: {{min: 1, opt: 1, max: 2}}\ninputs:\n  x: {{dtype: float32, shape: [N, 8, 16, 16]}}\n"
                              f"outputs: [y]\nsnippets:\n  s: {{onnx: conv{channels}.onnx}}\nsteps:\n  - snippet: s\n",
                     f"conv{channels}.yaml")
        Orchestrator.from_yaml(path, device="cuda", cache_dir=cache_dir).close()
        return cache.read(next((cache_dir / "timing").glob("*.cache")))

    first = build(16, workdir / "shared")
    both = build(48, workdir / "shared")
    assert len(both) > len(first), (len(first), len(both))
    assert "could not combine" not in caplog.text
    apart = [first, build(48, workdir / "c48")]
    caplog.clear()
    merged = trt.merge_timing_caches(*apart)
    config = trt.trt.Builder(trt.logger()).create_builder_config()
    assert len(bytes(config.create_timing_cache(merged).serialize())) == len(merged)  # a cache TensorRT reads
    if "could not combine" in caplog.text:  # TensorRT refused: the larger is kept, and the log says so
        assert merged == max(apart, key=len)
        warnings.warn("TensorRT refused to combine two timing caches built apart; the larger was kept", stacklevel=1)
    else:  # it combined: both sets are in (run 8 saw a combine that answered yes and kept one side only)
        assert len(merged) > max(len(c) for c in apart), [len(c) for c in apart + [merged]]
        assert len(trt.merge_timing_caches(apart[1], apart[0])) == len(merged)  # either order
    assert trt.merge_timing_caches(apart[0], None) == apart[0]
