"""bench/kernels.py's fused variant of the full pipeline (softmax_fast + topk_fast -> softmax_topk_fast)
computes what the unfused one does, on the CPU reference, with a small stand-in for ResNet-50."""

from __future__ import annotations

import sys

import numpy as np
import onnx
from conftest import ROOT
from onnx import TensorProto, helper, numpy_helper

from orchestrator import Orchestrator
from orchestrator.pipeline.load import load_pipeline


def stand_in(path):
    """x [1, 3, 224, 224] -> mean over H, W -> [1, 3] @ W [3, 1000] -> logits: the network's ports."""
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((3, 1000)).astype(np.float32), "w")
    axes = numpy_helper.from_array(np.array([2, 3], np.int64), "axes")
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=0), helper.make_node("MatMul", ["m", "w"], ["logits"])],
        "stand_in", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1000])], [weight, axes])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), str(path))


def test_the_fused_pipeline_gives_the_unfused_ones_top5(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    monkeypatch.syspath_prepend(str(ROOT / "snippets"))
    monkeypatch.delitem(sys.modules, "kernels", raising=False)
    import kernels
    import resnet50

    stand_in(tmp_path / "net.onnx")
    text = resnet50.PIPELINE.format(batch=1, onnx=(tmp_path / "net.onnx").as_posix(), precision="fp32",
                                    kernels=kernels.KERNELS)
    for k in ("preprocess", "softmax", "topk"):
        text = text.replace(f"/{k}.yaml", f"/{k}_fast.yaml")
    (tmp_path / "fast.yaml").write_text(text)
    (tmp_path / "fused.yaml").write_text(kernels.fuse_softmax_topk(text))
    fast, fused = load_pipeline(tmp_path / "fast.yaml"), load_pipeline(tmp_path / "fused.yaml")
    assert sorted(fused.kernels) == ["preprocess", "softmax_topk"] and len(fused.body) == 3
    image = {"image": np.random.default_rng(1).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)}
    want, got = Orchestrator(fast, device="cpu").run(image), Orchestrator(fused, device="cpu").run(image)
    for name in ("top5_index", "top5_prob"):
        np.testing.assert_array_equal(got[name], want[name])
