"""`orchestrator snip`: cut a model into snippets, chain them in a pipeline, verify on the CPU."""

from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest
from conftest import ROOT

from orchestrator import Orchestrator
from orchestrator.cli import main
from orchestrator.errors import ConfigError
from orchestrator.pipeline.load import load_pipeline
from orchestrator.planning import concrete_shapes, tensor_bytes
from orchestrator.snip import Graph, SnipError, load_model, snip

sys.path.insert(0, str(ROOT / "snippets"))
import generate  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for name in ("classify", "matting"):
        paths[name] = folder / f"{name}.onnx"
        onnx.save(generate.full_model(name), str(paths[name]))
    return paths


def test_cut_at_named_tensors(models, tmp_path):
    result = snip(models["classify"], tmp_path, at="s3,s1")  # any order
    assert result.boundaries == [("s1",), ("s3",)] and len(result.pieces) == 3
    pipeline = load_pipeline(result.pipeline)
    assert [s.snippet for s in pipeline.body] == ["piece0", "piece1", "piece2"]
    assert pipeline.tensors["s3"].shape == ("N", 64, 14, 14)
    assert result.max_abs_error < 1e-5


def test_balanced_pieces(models, tmp_path):
    graph = Graph(load_model(models["classify"]))
    result = snip(models["classify"], tmp_path, pieces=4)
    assert len(result.pieces) == 4
    costs = graph.costs()
    edges = [0, *[c.position + 1 for c in result.cuts], len(costs)]
    shares = np.array([costs[a:b].sum() for a, b in zip(edges, edges[1:], strict=False)]) / costs.sum()
    assert np.allclose(shares * costs.sum(), result.piece_costs)
    assert shares.min() > 0.1, shares  # no piece is starved
    assert len(snip(models["classify"], tmp_path / "one", pieces=1).pieces) == 1
    every = snip(models["classify"], tmp_path / "all", pieces=len(graph.order))  # one compute node per piece
    assert [c.position for c in every.cuts] == list(range(len(graph.order) - 1))


def test_multi_tensor_cut_and_dims(models, tmp_path):
    result = snip(models["matting"], tmp_path, at="feats+skip", dims={"H": 32, "W": 48})
    assert [sorted(b) for b in result.boundaries] == [["feats", "skip"]]
    assert "H: {min: 32, opt: 32, max: 32}" in result.pipeline.read_text()


@pytest.mark.parametrize(("model", "kwargs", "message"), [
    ("classify", {"at": "s2"}, "no tensor 's2' in the model"),
    ("classify", {"at": "conv5_out"}, "did you mean"),
    ("classify", {"at": "logits"}, "is a model output"),
    ("classify", {"pieces": 500}, "29 compute nodes .constants aside.; at most 29 pieces"),
    ("classify", {"pieces": 0}, "--pieces must be at least 1"),
    ("classify", {}, "exactly one of --at and --pieces"),
    ("matting", {"at": "feats+skip"}, "give the symbolic dimensions usable sizes with --dims"),
])
def test_bad_cuts_are_explained(models, tmp_path, model, kwargs, message):
    with pytest.raises(SnipError, match=message):
        snip(models[model], tmp_path, **kwargs)


def test_cli_snip(models, tmp_path, capsys):
    assert main(["snip", str(models["classify"]), "--at", "s1", "-o", str(tmp_path / "out")]) == 0
    assert "verified on the CPU reference backend" in capsys.readouterr().out
    assert main(["snip", str(models["classify"]), "--at", "nope", "-o", str(tmp_path / "bad")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no tensor 'nope'" in err[0]
    assert main(["snip", str(tmp_path / "missing.onnx"), "--pieces", "2", "-o", str(tmp_path / "x")]) == 1
    assert main(["snip", str(models["classify"]), "--at", "s1", "-o", str(tmp_path / "h"), "--boundary-format",
                 "hwc8"]) == 1
    assert "--boundary-format hwc8 is an FP16 format; add --precision fp16" in capsys.readouterr().err
    assert main(["snip", str(models["classify"]), "--at", "s1", "-o", str(tmp_path / "h"), "--boundary-format",
                 "hwc8", "--precision", "fp16"]) == 0
    assert "formats: {s1: hwc8}" in (tmp_path / "h" / "pipeline.yaml").read_text()


def test_hwc8_boundaries(models, tmp_path):
    """FP16 channels-last between pieces: planned at padded FP16 size; the CPU reference rounds there too."""
    result = snip(models["classify"], tmp_path, at="s1,s3", precision="fp16", boundary_format="hwc8")
    pipeline = load_pipeline(result.pipeline)
    assert pipeline.snippets["piece1"].formats == {"s1": "hwc8", "s3": "hwc8"}
    assert [(pipeline.tensors[t].dtype, pipeline.tensors[t].layout) for t in ("x", "s1", "s3", "logits")] == [
        ("float32", "linear"), ("float16", "hwc8"), ("float16", "hwc8"), ("float32", "linear")]
    sizes = tensor_bytes(pipeline, concrete_shapes(pipeline, {"N": 2}))
    assert sizes["s1"] == 2 * 56 * 56 * 16 * 2 and sizes["x"] == 2 * 3 * 224 * 224 * 4
    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
    rounded = Orchestrator(pipeline, device="cpu").run({"x": x})["logits"]
    exact = Orchestrator(load_pipeline(snip(models["classify"], tmp_path / "fp32", at="s1,s3").pipeline),
                         device="cpu").run({"x": x})["logits"]
    error = np.linalg.norm(rounded - exact) / np.linalg.norm(exact)
    assert 0 < error < 1e-2  # FP16 rounding at two boundaries, and nothing worse
    with pytest.raises(SnipError, match="an FP16 format; add --precision fp16"):
        snip(models["classify"], tmp_path / "bad", at="s1", boundary_format="hwc8")


NORM_KERNEL = f"kernels:\n  norm: {ROOT.as_posix()}/custom_kernels/instance_norm_relu.yaml\nsteps:\n"
NORM_STEP = "    outputs: {logits: logits}\n  - kernel: norm\n    args: {x: s3, y: s3n, eps: 0.001}\n"


@pytest.mark.parametrize(("edits", "message"), [
    ([("formats: {s1: hwc8, s3: hwc8}", "formats: {s3: hwc8}")],
     ":17:18: steps[1].inputs.s1: tensor 's1' is float16 hwc8 but input 's1' of piece1.onnx expects float32 "
     "(a tensor has one layout"),
    ([("outputs: [logits]", "outputs: [logits, s3]")], ":7:19: outputs[1]: output 's3' is stored as hwc8"),
    ([("steps:\n", NORM_KERNEL), ("    outputs: {logits: logits}\n", NORM_STEP)],
     ":25:15: steps[3].args.x: tensor 's3' is stored as hwc8 (a TensorRT format, chosen by the 'formats' of the "
     "snippet that writes it at "),
])
def test_layout_mismatches_are_explained(models, tmp_path, edits, message):
    result = snip(models["classify"], tmp_path, at="s1,s3", precision="fp16", boundary_format="hwc8")
    text = result.pipeline.read_text()
    for old, new in edits:
        assert old in text
        text = text.replace(old, new, 1)
    result.pipeline.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_pipeline(result.pipeline)
    assert len(info.value.problems) == 1 and f"pipeline.yaml{message}" in str(info.value)


def test_snip_resnet50_into_16_balanced_pieces(tmp_path):
    """The torchvision ResNet-50 architecture: 16 pieces, each cut a tensor every path goes through."""
    path = tmp_path / "resnet50.onnx"
    onnx.save(generate.resnet50_model(), str(path))
    result = snip(path, tmp_path / "pieces", pieces=16)
    assert len(result.pieces) == 16  # and snip verified them (relative L2 <= 1e-4 against the model)
    graph = Graph(load_model(path))
    shares = np.array(result.piece_costs) / sum(result.piece_costs)
    assert sum(result.piece_costs) == pytest.approx(graph.costs().sum())
    assert shares.max() < 3 / 16, shares  # balanced to within the granularity of the residual blocks
    # cut after activations (a conv and its ReLU fuse); a block's input crossing a cut inside the block
    # was charged at the cut before, where it crossed alone
    assert all(graph.producer[t].op_type in ("Relu", "MaxPool") for c in result.cuts for t in c.tensors)
    for before, cut in zip(result.cuts, result.cuts[1:], strict=False):
        assert set(cut.passed) == set(cut.tensors) & set(before.tensors)
