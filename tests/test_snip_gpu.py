"""GPU: snipped pipelines with multi-tensor cuts (a long skip crossing two cuts, an output read later) and
constants copied into pieces run in eager and graph modes and match the CPU reference and onnxruntime on
the uncut model. Marked ``gpu``; skipped when no GPU, driver or TensorRT is present (and only then)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import snip_corpus as corpus

from orchestrator import Orchestrator
from orchestrator.snip import Graph, load_model, snip

pytestmark = pytest.mark.gpu


FP32, FP16 = 1e-4, 1e-2


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """$ORCHESTRATOR_CACHE when set (engines survive between sessions), else one folder for the module:
    eager and graph runs of a pipeline share its engines."""
    import os

    return os.environ.get("ORCHESTRATOR_CACHE") or tmp_path_factory.mktemp("snip-engines")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("snip-gpu")
    paths = {}
    for name in ("unet", "vit", "swin", "resnet_bn"):
        paths[name] = folder / f"{name}.onnx"
        onnx.save(corpus.MODELS[name](), str(paths[name]))
    return paths


def _last(graph: Graph, prefix: str) -> str:
    return max((t for t in graph.position if t.startswith(prefix)), key=graph.position.get)


def _check(result, model_path, feeds: dict, mode: bool, tolerance: float, cache_dir) -> None:
    import onnxruntime as ort

    gpu = Orchestrator.from_yaml(result.pipeline, device="cuda", cache_dir=cache_dir, graphs=mode)
    cpu = Orchestrator.from_yaml(result.pipeline, device="cpu")
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    uncut = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))
    ours = {result.names[k]: v for k, v in feeds.items()}
    for run in range(3):  # run 1 warms up and captures; runs 2 and 3 replay the graph
        got, want = gpu.run(ours), cpu.run(ours)
        for name, value in uncut.items():
            key = result.names[name]
            assert rel_l2(got[key], want[key]) <= tolerance, (name, run)
            assert rel_l2(got[key], value) <= tolerance, (name, run)
    gpu.close()


@pytest.mark.parametrize("mode", [False, True], ids=["eager", "graph"])
@pytest.mark.parametrize(("precision", "layout", "tolerance"), [("fp32", "linear", FP32), ("fp16", "hwc8", FP16)])
def test_long_skip_crossing_two_cuts(models, tmp_path, cache_dir, mode, precision, layout, tolerance):
    graph = Graph(load_model(models["unet"]))
    at = f"{_last(graph, '/enc1/Relu')},{_last(graph, '/enc2/Relu')}"  # /enc0's skip crosses both cuts
    result = snip(models["unet"], tmp_path / "p", at=at, precision=precision, boundary_format=layout)
    assert sum(len(c.tensors) > 1 for c in result.cuts) == 2
    feeds = {"image": np.random.default_rng(1).standard_normal((1, 4, 32, 32)).astype(np.float32)}
    _check(result, models["unet"], feeds, mode, tolerance, cache_dir)


@pytest.mark.parametrize("mode", [False, True], ids=["eager", "graph"])
@pytest.mark.parametrize(("name", "pieces"), [("unet", 8), ("vit", 4), ("swin", 4), ("resnet_bn", 16)])
def test_balanced_pieces_on_the_gpu(models, tmp_path, cache_dir, mode, name, pieces):
    result = snip(models[name], tmp_path / "p", pieces=pieces)
    shape = {"unet": (1, 4, 32, 32)}.get(name, (1, 3, 32, 32))
    feeds = {Graph(load_model(models[name])).inputs[0]:
             np.random.default_rng(2).standard_normal(shape).astype(np.float32)}
    _check(result, models[name], feeds, mode, FP32, cache_dir)


@pytest.mark.parametrize("mode", [False, True], ids=["eager", "graph"])
def test_input_shape_recomputed_in_a_later_piece(tmp_path, cache_dir, mode):
    """The last piece reads the model input only for its shape (the batch size): TensorRT must keep the
    input bound and compute the Reshape from it."""
    onnx.save(corpus.batch_at_top(), str(tmp_path / "m.onnx"))
    result = snip(tmp_path / "m.onnx", tmp_path / "p", pieces=4, dims={"N": 3})
    feeds = {"x": np.random.default_rng(4).standard_normal((3, 16)).astype(np.float32)}
    _check(result, tmp_path / "m.onnx", feeds, mode, FP32, cache_dir)


def test_sixteen_pieces_built_four_at_a_time_in_an_empty_cache(models, tmp_path):
    """Cache misses build in four worker processes at once (build_worker.py) and the engines are right."""
    result = snip(models["resnet_bn"], tmp_path / "p", pieces=16)
    feeds = {Graph(load_model(models["resnet_bn"])).inputs[0]:
             np.random.default_rng(5).standard_normal((1, 3, 32, 32)).astype(np.float32)}
    ours = {result.names[k]: v for k, v in feeds.items()}
    with Orchestrator.from_yaml(result.pipeline, device="cuda", cache_dir=tmp_path / "cold", build_jobs=4) as gpu:
        assert gpu.compiled.engine_cache.builds == len(result.pieces) == 16
        got = gpu.run(ours)
    want = Orchestrator.from_yaml(result.pipeline, device="cpu").run(ours)
    for name, value in want.items():
        assert rel_l2(got[name], value) <= FP32, name
