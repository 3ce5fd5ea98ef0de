"""Patterns that the real ``torch.onnx.export`` (TorchScript at opset 17, dynamo at opset 18+) writes and
that broke snip, optimize or advise on real models, each rebuilt here with onnx.helper (CI has no torch)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from orchestrator.precision import Conversion, convert

FLOAT, INT64 = TensorProto.FLOAT, TensorProto.INT64
rng = np.random.default_rng(0)


def _model(nodes, inputs, outputs, weights=(), opset: int = 17):
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info(*i) for i in inputs],
                              [helper.make_tensor_value_info(*o) for o in outputs],
                              [numpy_helper.from_array(w, n) for n, w in weights])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def position_scaled() -> onnx.ModelProto:
    """GPT-2/BERT/Llama exports: Range -> Cast(to=float) of positions (or a mask) feeding float compute."""
    nodes = [helper.make_node("Range", ["start", "limit", "delta"], ["pos"], name="/Range"),
             helper.make_node("Cast", ["pos"], ["posf"], to=FLOAT, name="/Cast"),
             helper.make_node("Mul", ["posf", "inv"], ["angles"], name="/Mul"),
             helper.make_node("Add", ["x", "angles"], ["y"], name="/Add")]
    weights = [("start", np.array(0, np.int64)), ("limit", np.array(8, np.int64)), ("delta", np.array(1, np.int64)),
               ("inv", np.float32(0.25))]
    return _model(nodes, [("x", FLOAT, [2, 8])], [("y", FLOAT, [2, 8])], weights)


def test_fp16_conversion_casts_an_exporters_int_to_float_cast_to_fp16():
    data = position_scaled().SerializeToString()
    converted = convert(data, Conversion("fp16"))
    x = rng.standard_normal((2, 8)).astype(np.float32)
    (got,) = ort.InferenceSession(converted, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(got, x + np.arange(8) * 0.25, atol=1e-2)


def test_advise_measures_fp16_of_a_transpose_then_matmul_without_crashing(tmp_path):
    """A GRU's output (seq, batch, hidden) transposed to batch-first, then a Linear: converted to fp16, this
    crashed onnxruntime 1.32's NHWC layout transformer (a segfault, so the check runs in a subprocess)."""
    w = rng.standard_normal((16, 4)).astype(np.float32)
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2]), helper.make_node("MatMul", ["t", "w"], ["y"])]
    onnx.save(_model(nodes, [("x", FLOAT, [10, 1, 16])], [("y", FLOAT, [1, 10, 4])], [("w", w)]), tmp_path / "s.onnx")
    (tmp_path / "p.yaml").write_text(
        "name: t\ninputs:\n  x: {dtype: float32, shape: [10, 1, 16]}\noutputs: [y]\nsnippets:\n  s: {onnx: s.onnx}\n"
        "steps:\n  - snippet: s\n    inputs: {x: x}\n    outputs: {y: y}\n")
    np.savez(tmp_path / "in.npz", x=rng.standard_normal((10, 1, 16)).astype(np.float32))
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "advise", str(tmp_path / "p.yaml"), "--inputs",
                           str(tmp_path / "in.npz"), "--device", "cpu"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "measured fp16 vs fp32 error" in done.stdout


def _external_data_model(folder: Path) -> Path:
    """The dynamo exporter's default: weights in ``model.onnx.data`` beside ``model.onnx``."""
    w = rng.standard_normal((8, 4)).astype(np.float32)
    model = _model([helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Relu", ["m"], ["y"])],
                   [("x", FLOAT, [2, 8])], [("y", FLOAT, [2, 4])], [("w", w)], opset=18)
    folder.mkdir()
    onnx.save_model(model, folder / "model.onnx", save_as_external_data=True, location="model.onnx.data",
                    size_threshold=0)
    return folder / "model.onnx"


def test_models_with_external_data_optimize_and_run_from_another_directory(tmp_path, monkeypatch):
    from orchestrator import Orchestrator
    from orchestrator.surgery import optimize_file

    path = _external_data_model(tmp_path / "export")
    monkeypatch.chdir(tmp_path)  # not the model's folder: the data must be found beside the model
    optimize_file(path, tmp_path / "opt.onnx")
    assert not onnx.load(tmp_path / "opt.onnx", load_external_data=False).graph.initializer[0].external_data
    for optimize in ("false", "true"):
        (tmp_path / "export" / "p.yaml").write_text(
            f"name: t\ninputs:\n  x: {{dtype: float32, shape: [2, 8]}}\noutputs: [y]\n"
            f"snippets:\n  s: {{onnx: model.onnx, optimize: {optimize}}}\n"
            "steps:\n  - snippet: s\n    inputs: {x: x}\n    outputs: {y: y}\n")
        x = rng.standard_normal((2, 8)).astype(np.float32)
        with Orchestrator.from_yaml(tmp_path / "export" / "p.yaml", device="cpu") as orch:
            got = orch.run({"x": x})["y"]
        want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_missing_external_data_is_one_line(tmp_path):
    from orchestrator.surgery import optimize_file
    from orchestrator.surgery.snippets import ExternalDataError

    path = _external_data_model(tmp_path / "export")
    (tmp_path / "export" / "model.onnx.data").unlink()
    with pytest.raises(ExternalDataError, match="model.onnx: cannot read its external data"):
        optimize_file(path, tmp_path / "opt.onnx")


def batch_view(opset: int = 17) -> onnx.ModelProto:
    """The TorchScript exporter's ``y.view(y.size(0), -1)`` on a dynamic batch: Shape of an intermediate
    (N, 4, 2, 2) -> Gather(0) -> Unsqueeze -> Concat -> Reshape, with compute between the Shape and its use."""
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("Shape", ["a"], ["shape"]),
             helper.make_node("Gather", ["shape", "zero"], ["bs"], axis=0),
             helper.make_node("Unsqueeze", ["bs", "axes"], ["bs1"]),
             helper.make_node("Concat", ["bs1", "minus1"], ["target"], axis=0),
             helper.make_node("Mul", ["a", "two"], ["b"]),
             helper.make_node("Sigmoid", ["b"], ["c"]),
             helper.make_node("Add", ["c", "a"], ["d"]),
             helper.make_node("Tanh", ["d"], ["e"]),
             helper.make_node("Reshape", ["e", "target"], ["y"])]
    weights = [("zero", np.array(0, np.int64)), ("axes", np.array([0], np.int64)), ("minus1", np.array([-1], np.int64)),
               ("two", np.float32(2))]
    return _model(nodes, [("x", FLOAT, ["N", 4, 2, 2])], [("y", FLOAT, ["N", 16])], weights, opset)


def test_shape_of_a_dynamic_batch_intermediate_does_not_block_cuts(tmp_path):
    from orchestrator import Orchestrator
    from orchestrator.snip import snip

    onnx.save(batch_view(), tmp_path / "m.onnx")
    result = snip(tmp_path / "m.onnx", tmp_path / "out", pieces=5)
    assert len(result.pieces) == 5
    text = (tmp_path / "out" / "pipeline.yaml").read_text().replace("max: 1}", "max: 4}")
    (tmp_path / "out" / "pipeline.yaml").write_text(text)
    x = rng.standard_normal((3, 4, 2, 2)).astype(np.float32)  # not the batch snip verified at
    with Orchestrator.from_yaml(tmp_path / "out" / "pipeline.yaml", device="cpu") as orch:
        got = orch.run({"x": x})["y"]
    a = np.maximum(x, 0)
    np.testing.assert_allclose(got, np.tanh(1 / (1 + np.exp(-2 * a)) + a).reshape(3, 16), rtol=1e-6)


def test_shape_of_an_activation_with_a_data_dependent_dim_stays_an_activation():
    from orchestrator.snip import Graph

    nodes = [helper.make_node("NonZero", ["x"], ["nz"]), helper.make_node("Shape", ["nz"], ["s"])]
    model = _model(nodes, [("x", FLOAT, ["N", 4])], [("s", INT64, [2])])
    g = Graph(onnx.shape_inference.infer_shapes(model))
    assert [n.op_type for n in g.order] == ["NonZero", "Shape"]


def test_a_tensor_read_only_by_a_folded_shape_is_not_computed(tmp_path):
    """An LSTM export's Transpose read only by the Shape that sizes the next layer's initial state: once the
    Shape is folded the Transpose is dead, and a piece holding only it would have no outputs."""
    from orchestrator.snip import Graph, snip

    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Transpose", ["a"], ["t"], perm=[1, 0]),
             helper.make_node("Shape", ["t"], ["s"]), helper.make_node("Sigmoid", ["a"], ["b"]),
             helper.make_node("Tanh", ["b"], ["c"]), helper.make_node("Reshape", ["c", "s"], ["y"])]
    model = _model(nodes, [("x", FLOAT, ["N", 4])], [("y", FLOAT, [4, "N"])])
    assert [n.op_type for n in Graph(onnx.shape_inference.infer_shapes(model)).order] == ["Relu", "Sigmoid", "Tanh", "Reshape"]
    onnx.save(model, tmp_path / "m.onnx")
    assert len(snip(tmp_path / "m.onnx", tmp_path / "out", pieces=3).pieces) == 3


def test_when_no_balanced_cuts_exist_the_largest_piece_is_kept_small(tmp_path):
    """A small CNN's heavy convs write big tensors and its cheap head small ones: no 4 pieces within the
    balance bounds exist, and the cheapest cuts alone put every conv in one piece (YOLO: 99%, 0%, 0%, 1%)."""
    from orchestrator.snip import snip

    w = [(f"w{i}", (rng.standard_normal((64, 64)) * 0.1).astype(np.float32)) for i in range(3)]
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["m0"]), helper.make_node("MatMul", ["m0", "w1"], ["m1"]),
             helper.make_node("MatMul", ["m1", "w2"], ["m2"]),
             helper.make_node("ReduceMean", ["m2"], ["r"], keepdims=1, axes=[1]),
             helper.make_node("Relu", ["r"], ["s"]), helper.make_node("Neg", ["s"], ["y"])]
    onnx.save(_model(nodes, [("x", FLOAT, [64, 64])], [("y", FLOAT, [64, 1])], w), tmp_path / "m.onnx")
    result = snip(tmp_path / "m.onnx", tmp_path / "out", pieces=4)
    assert max(result.piece_costs) < 0.5 * sum(result.piece_costs), result.piece_costs


def if_reading_an_input_only_in_its_branches() -> onnx.ModelProto:
    """A torch.jit.script-ed ``if h.sum() > 0: y = c(h) * g + h`` cut by snip: ``g`` is an input of the
    piece that only the If's branches read (an outer-scope tensor)."""
    then = helper.make_graph([helper.make_node("Mul", ["h", "g"], ["t0"]), helper.make_node("Add", ["t0", "h"], ["t1"])],
                             "then", [], [helper.make_tensor_value_info("t1", FLOAT, [2, 4])])
    other = helper.make_graph([helper.make_node("Sub", ["g", "h"], ["e0"])], "else", [],
                              [helper.make_tensor_value_info("e0", FLOAT, [2, 4])])
    nodes = [helper.make_node("ReduceSum", ["h"], ["s"], keepdims=0, name="/ReduceSum"),
             helper.make_node("Greater", ["s", "zero"], ["c"], name="/Greater"),
             helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other, name="/If"),
             helper.make_node("Tanh", ["y"], ["out"], name="/Tanh")]
    return _model(nodes, [("h", FLOAT, [2, 4]), ("g", FLOAT, [2, 4])], [("out", FLOAT, [2, 4])],
                  [("zero", np.float32(0))])


def test_fp16_conversion_casts_an_input_read_only_inside_if_branches():
    data = convert(if_reading_an_input_only_in_its_branches().SerializeToString(), Conversion("fp16"))
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])  # mixed fp16/fp32 branches: refused
    for sign in (1, -1):
        h, g = sign * np.abs(rng.standard_normal((2, 4), np.float32)), rng.standard_normal((2, 4), np.float32)
        want = np.tanh(h * g + h if sign > 0 else g - h)
        np.testing.assert_allclose(session.run(None, {"h": h, "g": g})[0], want, atol=2e-2)


def test_optimize_does_not_report_flops_that_folding_only_made_visible():
    """BERT's TorchScript export: a Reshape's shape is computed by Where/Equal arithmetic on constants that
    shape inference cannot see through, so before folding the tensors after it counted one element each
    and fold_constants was reported to add FLOPs (568,025 -> 574,518)."""
    from orchestrator.surgery.optimize import optimize_model

    nodes = [helper.make_node("Equal", ["dims", "minus"], ["is_minus"], name="/Equal"),
             helper.make_node("Where", ["is_minus", "ones", "dims"], ["shape"], name="/Where"),
             helper.make_node("Reshape", ["x", "shape"], ["r"], name="/Reshape"),
             helper.make_node("MatMul", ["r", "w"], ["y"], name="/MatMul")]
    weights = [("dims", np.array([8, 16], np.int64)), ("minus", np.array([-1, -1], np.int64)),
               ("ones", np.array([1, 1], np.int64)), ("w", rng.standard_normal((16, 32), np.float32))]
    _, report = optimize_model(_model(nodes, [("x", FLOAT, [128])], [("y", FLOAT, [8, 32])], weights))
    fold = report.passes[0]
    assert fold.name == "fold_constants" and fold.before.flops >= fold.after.flops == 128 + 2 * 8 * 16 * 32
    assert report.before.flops >= report.after.flops


def test_dims_the_exporter_could_only_name_are_measured_for_the_cost_model(tmp_path):
    """DETR's TorchScript export: ``x.flatten(2).permute(2, 0, 1)`` on a dynamic batch leaves the token
    count as ``unk__19`` in the exporter's value_info; counted as 1, the transformer after it cost 1/64 of
    its MACs and --pieces 4 gave 26%/1%/71%/1%. The dim is now measured on the verification inputs."""
    from orchestrator.snip import snip

    nodes = [helper.make_node("Conv", ["x", "wc"], ["c"], pads=[1, 1, 1, 1], name="/Conv"),
             helper.make_node("Relu", ["c"], ["a"], name="/Relu"),
             helper.make_node("Shape", ["x"], ["s"], start=0, end=1, name="/Shape"),
             helper.make_node("Concat", ["s", "four", "minus"], ["shape"], axis=0, name="/Concat"),
             helper.make_node("Reshape", ["a", "shape"], ["r"], name="/Reshape"),
             helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1], name="/Transpose"),
             helper.make_node("MatMul", ["t", "wm"], ["m"], name="/MatMul"),
             helper.make_node("MatMul", ["m", "wn"], ["y"], name="/MatMul_1")]
    weights = [("wc", rng.standard_normal((4, 4, 3, 3), np.float32)), ("four", np.array([4], np.int64)),
               ("minus", np.array([-1], np.int64)), ("wm", rng.standard_normal((4, 32), np.float32)),
               ("wn", rng.standard_normal((32, 4), np.float32))]
    model = _model(nodes, [("x", FLOAT, ["N", 4, 8, 8])], [("y", FLOAT, ["N", "unk__0", 4])], weights)
    model.graph.value_info.extend([helper.make_tensor_value_info("r", FLOAT, ["N", 4, "unk__0"]),
                                   helper.make_tensor_value_info("t", FLOAT, ["N", "unk__0", 4]),
                                   helper.make_tensor_value_info("m", FLOAT, ["N", "unk__0", 32])])
    onnx.save(model, tmp_path / "m.onnx")
    result = snip(tmp_path / "m.onnx", tmp_path / "out", pieces=2)
    assert max(result.piece_costs) < 0.7 * sum(result.piece_costs), result.piece_costs
    assert "unk__0" not in (tmp_path / "out" / "pipeline.yaml").read_text().split("inputs:")[0]  # not a dim


def test_cutting_at_a_tensor_inside_an_if_branch_names_the_if(tmp_path):
    from orchestrator.snip import snip
    from orchestrator.snip.graph import SnipError

    onnx.save(if_reading_an_input_only_in_its_branches(), tmp_path / "m.onnx")
    with pytest.raises(SnipError, match="'t0' is computed inside the If '/If' .*cut after 'y'"):
        snip(tmp_path / "m.onnx", tmp_path / "out", at="t0")
