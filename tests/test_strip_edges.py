"""strip_edges: on a corpus built here, the described input transform (numpy, written here from the
description's fields) + the stripped model (onnxruntime) + the described output ops (numpy, written here)
equal onnxruntime on the original model; a chain stops before what it cannot describe and says why;
a model with no compute left is refused, byte-identical, with the reason; the
suggested kernel steps run on the CPU backend and give the original's outputs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml
from conftest import ROOT
from onnx import TensorProto, helper, numpy_helper

from orchestrator.surgery import EdgeReport, strip_edges_bytes, suggest

RNG = np.random.default_rng(17)
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
F, U8, I64 = TensorProto.FLOAT, TensorProto.UINT8, TensorProto.INT64


def node(op, ins, outs, **attrs):
    return helper.make_node(op, ins, outs, **attrs)


def model(nodes, inputs, outputs, inits=(), opset=17) -> bytes:
    """inputs: (name, elem type, shape); outputs: names, typed as shape inference finds them (as exporters
    write them, with value_info for the intermediates); inits: (name, array)."""
    graph = helper.make_graph(nodes, "edges", [helper.make_tensor_value_info(*i) for i in inputs], [],
                              [numpy_helper.from_array(np.asarray(v), n) for n, v in inits])
    built = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    built = onnx.shape_inference.infer_shapes(built)
    typed = {v.name: v for v in built.graph.value_info}
    built.graph.output.extend(typed[o] for o in outputs)
    kept = [v for v in built.graph.value_info if v.name not in outputs]
    del built.graph.value_info[:]
    built.graph.value_info.extend(kept)
    onnx.checker.check_model(built, full_check=True)
    return built.SerializeToString()


def per_channel(v, rank=4):
    return np.asarray(v, np.float32).reshape((1, 3) + (1,) * (rank - 2))


CONV = [("w", RNG.standard_normal((4, 3, 3, 3)).astype(np.float32))]
FC = [("fc", RNG.standard_normal((4, 10)).astype(np.float32))]
NCHW = [("x", F, ["N", 3, 8, 8])]
NHWC_U8 = [("image", U8, ["N", 8, 8, 3])]
NORMALIZE = [("s255", np.float32(255)), ("mean", per_channel(MEAN)), ("std", per_channel(STD))]


def body(src="x"):
    """Conv -> global pool -> logits [N, 10]."""
    return [node("Conv", [src, "w"], ["c"], pads=[1, 1, 1, 1]), node("GlobalAveragePool", ["c"], ["g"]),
            node("Flatten", ["g"], ["f"]), node("MatMul", ["f", "fc"], ["logits"])]


def uint8_nhwc(tail, outputs, inits=()):
    nodes = [node("Cast", ["image"], ["fl"], to=F), node("Transpose", ["fl"], ["t"], perm=[0, 3, 1, 2]),
             node("Div", ["t", "s255"], ["d"]), node("Sub", ["d", "mean"], ["m"]), node("Div", ["m", "std"], ["x"])]
    return model(nodes + body() + tail, NHWC_U8, outputs, NORMALIZE + CONV + FC + list(inits))


K5, K3 = ("k5", np.array([5], np.int64)), ("k3", np.array([3], np.int64))

# name -> (model, ops removed)
STRIPPED = {
    "div255_sub_div": (model([node("Div", ["x", "s255"], ["d"]), node("Sub", ["d", "mean"], ["m"]),
                              node("Div", ["m", "std"], ["n"]), *body("n")], NCHW, ["logits"], NORMALIZE + CONV + FC),
                       {"Div": 2, "Sub": 1}),
    "mul_add_rank3_operands": (model([node("Mul", ["x", "scale"], ["a"]), node("Add", ["a", "bias"], ["n"]), *body("n")],
                                     NCHW, ["logits"], [("scale", MEAN.reshape(3, 1, 1)), ("bias", STD.reshape(3, 1, 1))]
                                     + CONV + FC), {"Mul": 1, "Add": 1}),
    "constant_node_and_reversed_sub": (model(
        [node("Constant", [], ["mean_c"], value=numpy_helper.from_array(per_channel(MEAN))),
         node("Sub", ["mean_c", "x"], ["a"]), node("Identity", ["a"], ["b"]), node("Mul", ["b", "half"], ["n"]), *body("n")],
        NCHW, ["logits"], [("half", np.float32(0.5))] + CONV + FC), {"Sub": 1, "Identity": 1, "Mul": 1, "Constant": 1}),
    "normalize_nhwc_then_transpose": (model(
        [node("Cast", ["image"], ["fl"], to=F), node("Mul", ["fl", "inv"], ["a"]), node("Sub", ["a", "mean3"], ["b"]),
         node("Transpose", ["b"], ["x"], perm=[0, 3, 1, 2]), *body()], NHWC_U8, ["logits"],
        [("inv", np.float32(1 / 255)), ("mean3", MEAN)] + CONV + FC), {"Cast": 1, "Mul": 1, "Sub": 1, "Transpose": 1}),
    "uint8_nhwc_softmax_topk": (uint8_nhwc([node("Softmax", ["logits"], ["probs"], axis=-1),
                                            node("TopK", ["probs", "k5"], ["top_value", "top_index"])],
                                           ["probs", "top_value", "top_index"], [K5]),
                                {"Cast": 1, "Transpose": 1, "Div": 2, "Sub": 1, "Softmax": 1, "TopK": 1}),
    "softmax_output": (model(body() + [node("Softmax", ["logits"], ["probs"], axis=1)], NCHW, ["probs"], CONV + FC),
                       {"Softmax": 1}),
    "softmax_opset11": (model(body() + [node("Softmax", ["logits"], ["probs"])], NCHW, ["probs"], CONV + FC, opset=11),
                        {"Softmax": 1}),
    "topk_output_k3": (model(body() + [node("TopK", ["logits", "k3"], ["v", "i"])], NCHW, ["v", "i"],
                             CONV + FC + [K3]), {"TopK": 1}),
    "argmax_cast_output": (model(body() + [node("ArgMax", ["logits"], ["a"], axis=1, keepdims=0),
                                           node("Cast", ["a"], ["cls"], to=TensorProto.INT32)],
                                 NCHW, ["cls"], CONV + FC), {"ArgMax": 1, "Cast": 1}),
    "logits_and_logsoftmax_outputs": (model(body() + [node("LogSoftmax", ["logits"], ["lp"])], NCHW,
                                            ["logits", "lp"], CONV + FC), {"LogSoftmax": 1}),
    "cast_after_arithmetic_stays": (model([node("Div", ["x", "s255"], ["d"]), node("Cast", ["d"], ["h"], to=F),
                                           *body("h")], NCHW, ["logits"], NORMALIZE + CONV + FC), {"Div": 1}),
}

# name -> (model, what is removed, words of where and why a chain stopped): the rest stays in the model
STOPPED = {
    "non_constant_operand": (model([node("Sub", ["x", "y"], ["n"]), *body("n")], NCHW + [("y", F, ["N", 3, 8, 8])],
                                   ["logits"], CONV + FC), {}, "operand 'y' is not a constant"),
    "branching_preprocessing": (model([node("Div", ["x", "s255"], ["d"]), node("Sub", ["d", "mean"], ["n"]),
                                       node("Conv", ["d", "w"], ["c2"], pads=[1, 1, 1, 1]), *body("n"),
                                       node("Add", ["c", "c2"], ["y"])], NCHW, ["logits", "y"], NORMALIZE + CONV + FC),
                                {"Div": 1}, "the chain stops at 'd', which is used 2 times"),
    "per_pixel_operand": (model([node("Mul", ["x", "mask"], ["n"]), *body("n")], NCHW, ["logits"],
                                [("mask", np.ones((1, 1, 8, 8), np.float32))] + CONV + FC), {}, "not per channel"),
    "per_channel_and_pixel_operand": (model([node("Add", ["x", "b"], ["n"]), *body("n")], NCHW, ["logits"],
                                            [("b", np.ones((3, 8, 8), np.float32))] + CONV + FC), {},
                                      "not per channel"),
    "operand_broadcasts_the_input": (model([node("Add", ["x", "b"], ["n"]), *body("n")], [("x", F, ["N", 1, 8, 8])],
                                           ["logits"], [("b", per_channel(MEAN))] + CONV + FC), {},
                                     "broadcast the input"),
    "constant_divided_by_input": (model([node("Div", ["one", "x"], ["n"]), *body("n")], NCHW, ["logits"],
                                        [("one", np.float32(1))] + CONV + FC), {}, "not affine"),
    "uint8_arithmetic": (model([node("Sub", ["image", "u"], ["d"]), node("Cast", ["d"], ["fl"], to=F),
                                node("Transpose", ["fl"], ["x"], perm=[0, 3, 1, 2]), *body()], NHWC_U8, ["logits"],
                               [("u", np.uint8(1))] + CONV + FC), {}, "arithmetic on a uint8 tensor"),
    "scale_then_per_channel_on_another_axis": (
        model([node("Div", ["x", "s255"], ["d"]), node("Mul", ["d", "colscale"], ["m"]),
               node("Sub", ["m", "mean"], ["n"]), *body("n")], NCHW, ["logits"],
              NORMALIZE + [("colscale", np.linspace(0.5, 1.5, 8).astype(np.float32))] + CONV + FC),
        {"Div": 1, "Mul": 1}, "would vary along two axes"),
    "topk_non_constant_k": (model(body() + [node("TopK", ["logits", "k"], ["v", "i"])], NCHW + [("k", I64, [1])],
                                  ["v", "i"], CONV + FC), {}, "K 'k' is not a constant"),
    "second_input_added_to_compute": (
        model([node("Div", ["x", "s255"], ["d"]), *body("d"), node("Add", ["logits", "bias_in"], ["y"])],
              NCHW + [("bias_in", F, ["N", 10])], ["y"], NORMALIZE[:1] + CONV + FC),
        {"Div": 1}, "operand 'logits' is not a constant"),
}

# name -> (model, words of the reason)
REFUSED = {
    "nothing_but_edges": (model([node("Div", ["x", "s255"], ["n"]), node("Softmax", ["n"], ["y"])],
                                [("x", F, ["N", 10])], ["y"], NORMALIZE[:1]), "no compute would be left"),
}

UNTOUCHED = model(body(), NCHW, ["logits"], CONV + FC)


def feeds_for(data: bytes) -> dict[str, np.ndarray]:
    feeds = {}
    for value in onnx.load_from_string(data).graph.input:
        shape = [d.dim_value or 2 for d in value.type.tensor_type.shape.dim]
        if value.type.tensor_type.elem_type == U8:
            feeds[value.name] = RNG.integers(0, 256, shape).astype(np.uint8)
        else:
            feeds[value.name] = RNG.standard_normal(shape).astype(np.float32)
    return feeds


def run(data: bytes, feeds: dict) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))


# ---- independent numpy replay of a description -----------------------------------------------------------

def replay_input(t, x: np.ndarray) -> np.ndarray:
    if t.cast:
        x = x.astype(t.cast)
    if t.perm:
        x = np.transpose(x, t.perm)
    if t.scale is None:
        return x
    if t.axis is None:
        return x * np.float32(t.scale[0]) + np.float32(t.bias[0])
    index = [None] * x.ndim
    index[t.axis] = slice(None)
    scale, bias = (np.asarray(v, np.float32)[tuple(index)] for v in (t.scale, t.bias))
    return x * scale + bias


def replay_output(op, x: np.ndarray) -> list[np.ndarray]:
    a = op.attrs
    if op.op in ("Softmax", "LogSoftmax"):
        shifted = x - x.max(axis=a["axis"], keepdims=True)
        total = np.exp(shifted).sum(axis=a["axis"], keepdims=True)
        return [np.exp(shifted) / total if op.op == "Softmax" else shifted - np.log(total)]
    if op.op == "TopK":
        order = np.argsort(-x if a["largest"] else x, axis=a["axis"], kind="stable")
        index = np.take(order, np.arange(a["k"]), axis=a["axis"])
        return [np.take_along_axis(x, index, axis=a["axis"]), index]
    if op.op == "ArgMax":
        assert not a["select_last_index"]
        index = np.argmax(x, axis=a["axis"])
        return [np.expand_dims(index, a["axis"]) if a["keepdims"] else index]
    if op.op == "Cast":
        return [x.astype(a["to"])]
    assert op.op == "Identity"
    return [x]


def replay(report: EdgeReport, stripped: bytes, feeds: dict) -> dict[str, np.ndarray]:
    by_input = {t.input: t for t in report.inputs}
    new_feeds = {(by_input[k].output if k in by_input else k): (replay_input(by_input[k], v) if k in by_input else v)
                 for k, v in feeds.items()}
    tensors = run(stripped, new_feeds)
    for op in report.outputs:
        tensors.update((n, v) for n, v in zip(op.outputs, replay_output(op, tensors[op.input]), strict=True) if n)
    return tensors


def ops(data: bytes) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in onnx.load_from_string(data).graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


def removed(before: bytes, after: bytes) -> dict[str, int]:
    b, a = ops(before), ops(after)
    return {op: n - a.get(op, 0) for op, n in b.items() if n - a.get(op, 0)}


@pytest.mark.parametrize("name", sorted(STRIPPED))
def test_described_edges_around_the_stripped_model_equal_the_original(name):
    data, expected_removed = STRIPPED[name]
    stripped, report = strip_edges_bytes(data)
    assert report.stripped and report.refused is None, report.lines()
    onnx.checker.check_model(onnx.load_from_string(stripped), full_check=True)
    assert removed(data, stripped) == expected_removed
    feeds = feeds_for(data)
    want, got = run(data, feeds), replay(report, stripped, feeds)
    for output, value in want.items():
        assert got[output].dtype == value.dtype and got[output].shape == value.shape, output
        if value.dtype.kind == "f":
            np.testing.assert_allclose(got[output], value, rtol=1e-5, atol=1e-5, err_msg=output)
        else:
            np.testing.assert_array_equal(got[output], value, err_msg=output)
    # the module's own replay agrees too
    assert all(np.allclose(report.post(run(stripped, report.pre(feeds)))[k], v, atol=1e-5) for k, v in want.items())


@pytest.mark.parametrize("name", sorted(STRIPPED))
def test_new_inputs_and_outputs_carry_their_dtype_and_shape(name):
    stripped, report = strip_edges_bytes(STRIPPED[name][0])
    graph = onnx.load_from_string(stripped).graph
    declared = {v.name: v.type.tensor_type for v in [*graph.input, *graph.output]}
    session = ort.InferenceSession(stripped, providers=["CPUExecutionProvider"])
    for value in [*session.get_inputs(), *session.get_outputs()]:
        assert declared[value.name].elem_type and declared[value.name].HasField("shape"), value.name
    for t in report.inputs:
        assert [v.name for v in graph.input].count(t.output) == 1 and t.input not in [v.name for v in graph.input]
        dims = tuple(d.dim_value or d.dim_param for d in declared[t.output].shape.dim)
        assert dims == t.out_shape


def test_imagenet_normalisation_is_described_as_one_affine_map_per_channel():
    _, report = strip_edges_bytes(STRIPPED["uint8_nhwc_softmax_topk"][0])
    (t,) = report.inputs
    assert (t.input, t.dtype, t.shape, t.output) == ("image", "uint8", ("N", 8, 8, 3), "x")
    assert (t.cast, t.perm, t.axis, t.out_dtype, t.out_shape) == ("float32", (0, 3, 1, 2), 1, "float32",
                                                                   ("N", 3, 8, 8))
    np.testing.assert_allclose(t.scale, 1 / (255 * STD.astype(np.float64)), rtol=1e-6)
    np.testing.assert_allclose(t.bias, -MEAN.astype(np.float64) / STD, rtol=1e-6)
    assert [(op.op, op.attrs) for op in report.outputs] == [("Softmax", {"axis": -1}),
                                                            ("TopK", {"k": 5, "axis": -1, "largest": 1})]
    assert [o["name"] for o in report.new_outputs] == ["logits"]
    text = "\n".join(report.lines())
    assert "transpose perm [0, 3, 1, 2]" in text and "TopK(k=5, axis=-1, largest=1) of 'probs'" in text


def test_transpose_after_arithmetic_moves_the_channel_axis():
    _, report = strip_edges_bytes(STRIPPED["normalize_nhwc_then_transpose"][0])
    (t,) = report.inputs
    assert t.perm == (0, 3, 1, 2) and t.axis == 1 and len(t.scale) == 3
    np.testing.assert_allclose(t.bias, -MEAN, rtol=1e-6)


@pytest.mark.parametrize("name", sorted(STOPPED))
def test_a_chain_stops_before_what_it_cannot_describe(name):
    """The chain ends before the node (which stays in the model) and says why; what was stripped is
    still exact: described edges + stripped model = original."""
    data, expected_removed, words = STOPPED[name]
    stripped, report = strip_edges_bytes(data)
    assert report.refused is None and any(words in line for line in report.kept), report.lines()
    assert any(line.startswith("  kept: ") and words in line for line in report.lines())
    if not expected_removed:
        assert stripped is data and not report.stripped
        return
    assert report.stripped and removed(data, stripped) == expected_removed
    feeds = feeds_for(data)
    want, got = run(data, feeds), replay(report, stripped, feeds)
    for output, value in want.items():
        np.testing.assert_allclose(got[output], value, rtol=1e-5, atol=1e-5, err_msg=output)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_models_come_back_byte_identical_with_the_reason(name):
    data, words = REFUSED[name]
    stripped, report = strip_edges_bytes(data)
    assert stripped is data and not report.stripped
    (line,) = report.lines()
    assert line.startswith("strip_edges: refused, model unchanged: ") and words in line, line


def test_a_model_without_edges_is_left_alone():
    stripped, report = strip_edges_bytes(UNTOUCHED)
    assert stripped is UNTOUCHED and report.refused is None and not report.stripped
    assert "nothing to strip" in report.lines()[0]


# ---- suggested kernel steps --------------------------------------------------------------------------------

def test_suggested_kernels_exist_and_take_the_arguments_filled_in():
    _, report = strip_edges_bytes(STRIPPED["uint8_nhwc_softmax_topk"][0])
    found = suggest(report)
    assert found.matched and set(found.kernels) == {"preprocess", "softmax", "topk"}
    steps = yaml.safe_load(found.yaml("model.onnx"))["steps"]
    for step in steps:
        if "kernel" in step:
            spec = yaml.safe_load((ROOT / found.kernels[step["kernel"]]).read_text())
            assert set(step["args"]) == {a["name"] for a in spec["args"] if a["kind"] != "scalar"}
    constants = yaml.safe_load(found.yaml("model.onnx"))["constants"]
    assert constants["image_mean"]["value"] == pytest.approx(MEAN.tolist(), rel=1e-6)
    assert constants["image_std"]["value"] == pytest.approx(STD.tolist(), rel=1e-6)


def test_suggested_pipeline_runs_on_the_cpu_and_matches_the_original(tmp_path, monkeypatch):
    from orchestrator import Orchestrator

    monkeypatch.setenv("ORCHESTRATOR_CACHE", str(tmp_path / "cache"))
    data = STRIPPED["uint8_nhwc_softmax_topk"][0]
    stripped, report = strip_edges_bytes(data)
    (tmp_path / "model.onnx").write_bytes(stripped)
    pieces = yaml.safe_load(suggest(report, kernels_dir=str(ROOT / "custom_kernels")).yaml("model.onnx"))
    pipeline = {"name": "suggested", "dims": {"N": {"min": 1, "opt": 2, "max": 2}},
                "inputs": {"image": {"dtype": "uint8", "shape": ["N", 8, 8, 3]}},
                "outputs": ["probs", "top_value", "top_index"], **pieces}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    feeds = feeds_for(data)
    want = run(data, feeds)
    got = Orchestrator.from_yaml(tmp_path / "p.yaml", device="cpu").run(feeds)
    np.testing.assert_allclose(got["probs"], want["probs"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["top_value"], want["top_value"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got["top_index"], want["top_index"])  # int32 from the kernel, same values


@pytest.mark.parametrize("name, words", [
    ("div255_sub_div", "preprocess reads uint8"), ("topk_output_k3", "TopK(k=3, axis=-1, largest=1) of 'logits': "
                                                                    "no kernel matches"),
    ("argmax_cast_output", "ArgMax(axis=1, keepdims=0, select_last_index=0) of 'logits': no kernel matches")])
def test_edges_no_kernel_computes_are_named(name, words):
    from orchestrator.surgery.edge_kernels import advice

    _, report = strip_edges_bytes(STRIPPED[name][0])
    assert any(words in line for line in advice(report, "m.onnx"))


def test_cli_optimize_strip_edges(tmp_path, capsys):
    from orchestrator.cli import main

    (tmp_path / "in.onnx").write_bytes(STRIPPED["uint8_nhwc_softmax_topk"][0])
    assert main(["optimize", str(tmp_path / "in.onnx"), "-o", str(tmp_path / "out.onnx"), "--strip-edges"]) == 0
    out = capsys.readouterr().out
    assert "strip_edges" in out and "strip_edges: removed" in out and "- kernel: preprocess" in out
    assert "  preprocess: ../" in out and "model: {onnx: out.onnx}" in out
    graph = onnx.load(tmp_path / "out.onnx").graph
    assert [v.name for v in graph.input] == ["x"] and [v.name for v in graph.output] == ["logits"]

    (tmp_path / "branch.onnx").write_bytes(STOPPED["branching_preprocessing"][0])
    assert main(["optimize", str(tmp_path / "branch.onnx"), "-o", str(tmp_path / "b.onnx"), "--strip-edges"]) == 0
    out = capsys.readouterr().out
    assert "strip_edges: removed" in out and "kept: input 'x': the chain stops at 'd', which is used 2 times" in out
    assert [v.name for v in onnx.load(tmp_path / "b.onnx").graph.input] == ["d"]

    (tmp_path / "edges.onnx").write_bytes(REFUSED["nothing_but_edges"][0])
    assert main(["optimize", str(tmp_path / "edges.onnx"), "-o", str(tmp_path / "e.onnx"), "--strip-edges"]) == 0
    assert "strip_edges: refused, model unchanged: " in capsys.readouterr().out
