"""`orchestrator snip`: cut a model into snippets, chain them in a pipeline, verify on the CPU."""

from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest
from conftest import ROOT

from orchestrator.cli import main
from orchestrator.pipeline.load import load_pipeline
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
    model = load_model(models["classify"])
    graph = Graph(model)
    result = snip(models["classify"], tmp_path, pieces=4)
    assert len(result.pieces) == 4
    costs = np.asarray(graph.costs())
    cut_at = [graph.position[c[0]] for c in result.boundaries]
    shares = np.diff([0, *[costs[: i + 1].sum() for i in cut_at], costs.sum()]) / costs.sum()
    assert shares.min() > 0.1, shares  # no piece is starved
    assert len(snip(models["classify"], tmp_path / "one", pieces=1).pieces) == 1


def test_multi_tensor_cut_and_dims(models, tmp_path):
    result = snip(models["matting"], tmp_path, at="feats+skip", dims={"H": 32, "W": 48})
    assert result.boundaries == [("feats", "skip")]
    assert "H: {min: 32, opt: 32, max: 32}" in result.pipeline.read_text()


@pytest.mark.parametrize(("model", "kwargs", "message"), [
    ("classify", {"at": "s2"}, "no tensor 's2' in the model"),
    ("classify", {"at": "conv5_out"}, "did you mean"),
    ("matting", {"at": "feats", "dims": {"H": 32, "W": 32}}, "does not separate the graph: skip also crosses"),
    ("classify", {"at": "logits"}, "is a model output"),
    ("classify", {"pieces": 500}, "single-tensor cut points exist"),
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


def test_snip_resnet50_into_16_balanced_pieces(tmp_path):
    """The torchvision ResNet-50 architecture: 16 pieces, each cut a tensor every path goes through."""
    path = tmp_path / "resnet50.onnx"
    onnx.save(generate.resnet50_model(), str(path))
    result = snip(path, tmp_path / "pieces", pieces=16)
    assert len(result.pieces) == 16  # and snip verified them (relative L2 <= 1e-4 against the model)
    graph = Graph(load_model(path))
    costs = np.asarray(graph.costs())
    edges = [0, *[costs[: graph.position[c[0]] + 1].sum() for c in result.boundaries], costs.sum()]
    shares = np.diff(edges) / costs.sum()
    assert shares.max() < 3 / 16, shares  # balanced to within the granularity of the residual blocks
    assert all(c[0].startswith("relu") for c in result.boundaries)  # cut after activations, not before
