"""FP16 quality you can see: heatmaps of image-like tensors and of |difference| x 100 in a debug dump."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from orchestrator import Orchestrator
from orchestrator.heatmap import colour, image_like, tile

PIPELINE = """\
name: pic
inputs: {x: {dtype: float32, shape: [1, 2, 16, 16]}}
outputs: [y]
snippets: {act: {onnx: MODEL}}
steps:
  - {snippet: act, name: act, inputs: {x: x}, outputs: {y: y}}
"""


def save(path, bump: np.ndarray | None):
    shape = [1, 2, 16, 16]
    nodes = [helper.make_node("Relu", ["x"], ["r" if bump is not None else "y"])]
    inits = []
    if bump is not None:
        nodes.append(helper.make_node("Add", ["r", "bump"], ["y"]))
        inits.append(numpy_helper.from_array(bump, "bump"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))


def test_image_like_and_tiling():
    assert image_like(np.zeros((1, 3, 16, 20), np.float32))
    assert not image_like(np.zeros((1, 3, 15, 20), np.float32)) and not image_like(np.zeros((3, 16, 16), np.float32))
    mosaic = tile(np.arange(5 * 16 * 16, dtype=np.float32).reshape(1, 5, 16, 16))
    assert mosaic.shape == (2 * 17, 3 * 17)  # 5 channels in a 3-wide grid, one-pixel gaps
    assert mosaic[17, 0] == 3 * 256 and np.isnan(mosaic[16, 0])
    assert colour(np.array([0.0, 1.0, 5.0, np.nan])).tolist() == [[0, 0, 0], [255, 255, 255], [255, 255, 255],
                                                                     [40, 48, 64]]


def test_debug_dump_writes_heatmaps_summary_links_and_index(tmp_path):
    from PIL import Image

    bump = np.zeros((1, 2, 16, 16), np.float32)
    bump[0, 0, :4, :4] = 0.02  # x 100 = 2: white
    bump[0, 1, 8, 8] = 0.004  # x 100 = 0.4: a dim red pixel
    save(tmp_path / "a.onnx", None)
    save(tmp_path / "b.onnx", bump)
    for name in "ab":
        (tmp_path / f"{name}.yaml").write_text(PIPELINE.replace("MODEL", f"{name}.onnx"))
    x = np.random.default_rng(0).standard_normal((1, 2, 16, 16)).astype(np.float32)
    with Orchestrator.from_yaml(tmp_path / "a.yaml", device="cpu", debug=True) as orch:
        report = orch.debug_run({"x": x}, compare=str(tmp_path / "b.yaml"), dump_dir=tmp_path / "dump")
    [hm] = report.heatmaps
    assert hm.max_abs == pytest.approx(0.02)
    diff = np.asarray(Image.open(tmp_path / "dump" / hm.diff))
    assert diff.shape == (17, 34, 3)
    assert (diff[:4, :4] == 255).all() and (diff[4:16, 4:16] == 0).all()
    assert tuple(diff[8, 17 + 8]) == (255, 51, 0)  # 0.4 on the ramp
    assert tuple(diff[16, 0]) == (40, 48, 64)  # the gap between tiles
    picture = np.asarray(Image.open(tmp_path / "dump" / hm.image))
    assert picture.shape == (17, 34, 3) and picture.max() == 255
    summary = (tmp_path / "dump" / "summary.txt").read_text()
    assert f"act y [1, 2, 16, 16]: {hm.image}  diff {hm.diff} (max abs 0.02)" in summary
    index = (tmp_path / "dump" / "index.html").read_text()
    assert f'<img src="{hm.image}">' in index and f'<img src="{hm.diff}">' in index


def test_no_heatmaps_without_comparison(tmp_path):
    save(tmp_path / "a.onnx", None)
    (tmp_path / "a.yaml").write_text(PIPELINE.replace("MODEL", "a.onnx"))
    with Orchestrator.from_yaml(tmp_path / "a.yaml", device="cpu", debug=True) as orch:
        report = orch.debug_run({"x": np.ones((1, 2, 16, 16), np.float32)}, dump_dir=tmp_path / "dump")
    assert report.heatmaps == [] and not (tmp_path / "dump" / "heatmaps").exists()


@pytest.mark.gpu
def test_fp16_vs_fp32_heatmaps_on_the_gpu(tmp_path):
    """matting runs its snippets at fp16: --compare fp32 draws where FP16 rounding shows."""
    from conftest import ROOT
    from PIL import Image


    inputs = dict(np.load(ROOT / "pipelines" / "inputs" / "matting.npz"))
    with Orchestrator.from_yaml(ROOT / "pipelines" / "matting.yaml", device="cuda", debug=True) as orch:
        report = orch.debug_run(inputs, compare="fp32", dump_dir=tmp_path, atol=1e-2, rtol=1e-2)
    compared = [h for h in report.heatmaps if h.diff]
    assert compared, [h.tensor for h in report.heatmaps]
    assert any(h.max_abs > 0 for h in compared)  # fp16 differs from fp32 somewhere
    assert all(h.max_abs < 0.5 for h in compared), [(h.tensor, h.max_abs) for h in compared]
    for h in compared:
        assert np.asarray(Image.open(tmp_path / h.diff)).ndim == 3
    assert "index.html" in {p.name for p in tmp_path.iterdir()}
