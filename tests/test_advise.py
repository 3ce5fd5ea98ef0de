"""advise: tensor-core channel counts, hwc8 boundaries, fp16 candidates, measured fp16 vs fp32 error."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from orchestrator.advise import advise, channel_advice, fp16_candidate, hwc8_candidates, single_step
from orchestrator.pipeline.ir import SnippetCall, walk
from orchestrator.pipeline.load import load_pipeline

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
CLASSIFY = ROOT / "pipelines" / "classify.yaml"


def conv_model(channels: list[int], gemm: tuple[int, int] | None = None, scale: float = 0.1):
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i, (cin, cout) in enumerate(zip(channels, channels[1:], strict=False)):
        w = (rng.standard_normal((cout, cin, 3, 3)) * scale).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], name=f"conv{i}", pads=[1, 1, 1, 1]))
        x = f"c{i}"
    if gemm:
        nodes.append(helper.make_node("Flatten", [x], ["f"]))
        k = channels[-1] * 16
        inits.append(numpy_helper.from_array(rng.standard_normal((k, gemm[1])).astype(np.float32), "g"))
        nodes.append(helper.make_node("MatMul", ["f", "g"], ["y"], name="fc"))
        x = "y"
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels[0], 4, 4])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return onnx.shape_inference.infer_shapes(model)


def test_channel_counts_that_miss_tensor_core_multiples_get_their_padding():
    found = channel_advice("s", conv_model([3, 16, 12, 32], gemm=(0, 10)))
    got = {(c.node, c.dimension, c.count) for c in found}
    assert got == {("conv0", "input channels", 3), ("conv1", "output channels", 12),
                   ("conv2", "input channels", 12), ("fc", "N", 10)}
    line = next(c for c in found if c.count == 12).line()
    assert line.endswith("conv1' output channels = 12: pad to 16 for FP16 (+4), 16 (+4) or 32 (+20) for INT8")
    assert channel_advice("s", conv_model([16, 32, 64])) == []
    [int8_only] = channel_advice("s", conv_model([24, 32]))
    assert int8_only.line().endswith("input channels = 24: pad to 32 (+8) for INT8")


def test_fp16_candidates_need_heavy_nodes_and_weights_in_range():
    assert "2 convolution/GEMM" in fp16_candidate(conv_model([8, 16, 8]))
    assert fp16_candidate(conv_model([8, 16, 8], scale=1e6)) is None  # weights beyond 65504
    relu = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "r",
                                               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                                               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])]))
    assert fp16_candidate(relu) is None


def test_hwc8_candidates_are_tensors_between_snippets_only():
    found = hwc8_candidates(load_pipeline(CLASSIFY))
    assert [f.split(" ")[0] for f in found] == ["'stage1'", "'stage3'"]  # x and logits touch kernels
    assert "once middle, stem run at fp16" in found[0]


def test_single_step_pipeline_reproduces_the_step(tmp_path):
    """The GPU path of the isolated measurement, checked on the CPU at fp32: same outputs as in the run."""
    from orchestrator import Orchestrator

    pipeline = load_pipeline(CLASSIFY)
    inputs = dict(np.load(ROOT / "pipelines" / "inputs" / "classify.npz"))
    with Orchestrator(pipeline, device="cpu", debug=True) as orch:
        records = {r.name: r for r in orch.debug_run(inputs).records}
    step = next(n for n in walk(pipeline.body) if isinstance(n, SnippetCall) and n.name == "middle")
    with Orchestrator(single_step(pipeline, step, "fp32"), device="cpu") as orch:
        out = orch.run({t: records["middle"].inputs[t] for t in step.reads})
    np.testing.assert_array_equal(out["stage3"], records["middle"].outputs["stage3"])


def test_measured_error_table_on_the_cpu(capsys):
    from orchestrator.cli import main

    assert main(["advise", str(CLASSIFY), "--inputs", str(ROOT / "pipelines/inputs/classify.npz"),
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "measured fp16 vs fp32 error per snippet step (cpu)" in out and "n/a (CPU)" in out
    advice = advise(CLASSIFY, inputs=dict(np.load(ROOT / "pipelines/inputs/classify.npz")), device="cpu")
    assert [e.step for e in advice.errors] == ["stem", "middle", "head"]
    assert all(0 < e.isolated_rel_l2 < 1e-2 for e in advice.errors)  # FP16 rounding: visible, small


@pytest.mark.gpu
def test_advise_measures_fp16_on_the_gpu():

    advice = advise(CLASSIFY, inputs=dict(np.load(ROOT / "pipelines/inputs/classify.npz")), device="cuda")
    assert advice.device == "cuda"
    for e in advice.errors:  # with builder flags TensorRT may keep a small layer in fp32: an error of 0
        assert 0 <= e.isolated_rel_l2 < 1e-2, e
        assert e.pipeline_rel_l2 is not None and e.pipeline_rel_l2 < 5e-2, e
    assert any(e.isolated_rel_l2 > 0 for e in advice.errors)  # but fp16 shows somewhere
