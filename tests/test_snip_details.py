"""`snip` on small hand-made models: cost estimates, names that are not identifiers, integer inputs and
symbolic dimensions in the written pipeline, the exact cut errors, and what verification reports."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from orchestrator import Orchestrator
from orchestrator.pipeline.load import load_pipeline
from orchestrator.snip import Graph, SnipError, _key, identifier, load_model, snip, verify


def make_model(nodes, inputs, outputs, initializers=(), name="tiny"):
    graph = helper.make_graph(nodes, name, inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    return onnx.shape_inference.infer_shapes(model)


def value(name, dims, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, dims)


def weight(name, shape):
    return numpy_helper.from_array(np.random.default_rng(0).standard_normal(shape).astype(np.float32) * 0.1, name)


def test_costs_count_multiply_accumulates_per_node():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),  # 1x8x6x6 out, 3x3x3 per output
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("MatMul", ["f", "m"], ["mm"]),  # 1x5 out, 288 per output
             helper.make_node("Gemm", ["mm", "g"], ["y"], transB=1)]  # 1x7 out, 5 per output
    model = make_model(nodes, [value("x", [1, 3, 6, 6])], [value("y", [1, 7])],
                       [weight("w", (8, 3, 3, 3)), weight("m", (288, 5)), weight("g", (7, 5))])
    assert Graph(model).costs() == [8 * 36 * 27, 8 * 36, 288, 5 * 288, 7 * 5]


def test_costs_take_unknown_and_symbolic_dims_as_one():
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [value("x", ["N", 4])], [value("y", ["N", 4])])
    assert Graph(model).costs() == [4.0]


@pytest.mark.parametrize(("name", "want"), [("conv/1:0", "conv_1_0"), ("1x", "t_1x"), ("///", "t"),
                                            ("a.b", "a_b"), ("ok_name", "ok_name"), ("_x_", "x")])
def test_identifiers_from_tensor_names(name, want):
    assert identifier(name, set()) == want


def test_identifiers_never_collide():
    taken: set[str] = set()
    assert [identifier(n, taken) for n in ("a-b", "a.b", "a b", "a_b")] == ["a_b", "a_b_2", "a_b_3", "a_b_4"]
    assert taken == {"a_b", "a_b_2", "a_b_3", "a_b_4"}


@pytest.mark.parametrize(("name", "want"), [("s1", "s1"), ("a.b", "a.b"), ("_x9", "_x9"), ("conv/1:0", '"conv/1:0"'),
                                            ("9a", '"9a"'), ('q"t', '"q\\"t"')])
def test_yaml_keys_are_quoted_only_when_needed(name, want):
    assert _key(name) == want


ODD = ["in:0", "conv/out", "2nd"]
CUT = "conv/out+kf"


@pytest.fixture
def odd_model(tmp_path):
    """x (N, 4, dynamic) -> Relu -> Neg -> Abs, with names that need quoting or renaming, and an int input."""
    nodes = [helper.make_node("Cast", ["k"], ["kf"], to=TensorProto.FLOAT),
             helper.make_node("Relu", [ODD[0]], [ODD[1]]), helper.make_node("Neg", [ODD[1]], [ODD[2]]),
             helper.make_node("Add", [ODD[2], "kf"], ["out.y"])]
    x = helper.make_tensor_value_info(ODD[0], TensorProto.FLOAT, ["batch", 4, None])
    k = helper.make_tensor_value_info("k", TensorProto.INT64, [1])
    model = make_model(nodes, [x, k], [value("out.y", ["batch", 4, None])], name="odd/model")
    path = tmp_path / "odd.onnx"
    onnx.save(model, str(path))
    return path


def test_snip_writes_a_loadable_pipeline_for_awkward_names(odd_model, tmp_path):
    result = snip(odd_model, tmp_path / "out", at=CUT, dims={"batch": 2, "d1": 3})
    text = result.pipeline.read_text()
    assert "name: odd_model\n" in text and "from odd/model: 2 snippets chained in order." in text
    assert "dims:  # edit the bounds" in text and "  batch: {min: 2, opt: 2, max: 2}" in text
    assert "  d1: {min: 3, opt: 3, max: 3}" in text  # an unnamed dynamic dimension gets a symbol
    assert "  in_0: {dtype: float32, shape: [batch, 4, d1]}" in text and "  k: {dtype: int64, shape: [1]}" in text
    assert 'inputs: {"in:0": in_0, k: k}' in text and 'outputs: {"conv/out": conv_out, kf: kf}' in text
    assert "outputs: [out.y]" not in text and "outputs: [out_y]" in text
    assert "precision" not in text and result.max_abs_error == 0.0
    pipeline = load_pipeline(result.pipeline)
    x = np.arange(24, dtype=np.float32).reshape(2, 4, 3) - 12
    out = Orchestrator(pipeline, device="cpu").run({"in_0": x, "k": np.array([3])})["out_y"]
    np.testing.assert_array_equal(out, -np.maximum(x, 0) + 3)


def test_snip_writes_the_precision(odd_model, tmp_path):
    text = snip(odd_model, tmp_path / "h", at=CUT, precision="fp16").pipeline.read_text()
    assert text.count("precision: fp16") == 2 and "  batch: {min: 1, opt: 1, max: 1}" in text


@pytest.mark.parametrize(("at", "message"), [
    ("conv/outt", r"^\S*odd.onnx: no tensor 'conv/outt' in the model \(did you mean 'conv/out'\?\)$"),
    ("zzz", r"^\S*odd.onnx: no tensor 'zzz' in the model$"),
    ("out.y", r"^\S*odd.onnx: 'out.y' is a model output; cut before it$"),
    ("2nd+kf+conv/out", r"^\S*odd.onnx: conv/out is not used after the cut$"),
    ("kf", r"^\S*odd.onnx: cutting at kf does not separate the graph: in:0 also crosses the cut \(add it with '\+'"),
])
def test_cut_errors_name_the_model_and_the_tensor(odd_model, tmp_path, at, message):
    with pytest.raises(SnipError, match=message):
        snip(odd_model, tmp_path / "x", at=at)


def test_pieces_must_be_positive(odd_model, tmp_path):
    with pytest.raises(SnipError, match="^--pieces must be at least 1$"):
        snip(odd_model, tmp_path / "x", pieces=0)


def test_verify_reports_the_largest_absolute_error(odd_model, tmp_path, monkeypatch):
    import onnxruntime

    result = snip(odd_model, tmp_path / "v", at=CUT, dims={"batch": 2, "d1": 3})
    original = onnxruntime.InferenceSession

    class Shifted:
        scale = np.float32(1)

        def __init__(self, path, *args, **kwargs):
            self.inner = original(path, *args, **kwargs)
            self.get_inputs = self.inner.get_inputs
            self.original = str(path) == str(odd_model)
            self.shift = np.float32(1e-6 if self.original else 0)

        def run(self, names, feeds):
            if not self.original:
                return self.inner.run(names, feeds)
            assert feeds["k"].dtype == np.int64 and set(np.unique(feeds["k"])) <= {0, 1, 2, 3}
            assert feeds[ODD[0]].shape == (2, 4, 3) and feeds[ODD[0]].std() > 0.5  # seeded normal values
            return [o * self.scale + self.shift for o in self.inner.run(names, feeds)]

    monkeypatch.setattr(onnxruntime, "InferenceSession", Shifted)
    error = verify(odd_model, result.pipeline)
    assert error == pytest.approx(1e-6, rel=0.05)
    Shifted.scale = np.float32(1.001)  # 0.1% off: over the default tolerance (1e-4, relative L2)
    with pytest.raises(SnipError, match="do not reproduce output 'out.y'"):
        verify(odd_model, result.pipeline)


def test_verify_refuses_a_pipeline_that_does_not_validate(odd_model, tmp_path):
    result = snip(odd_model, tmp_path / "v", at=CUT)
    result.pipeline.write_text(result.pipeline.read_text().replace("outputs: [out_y]", "outputs: [nope]"))
    with pytest.raises(SnipError, match=r"^the written pipeline does not validate: .*pipeline.yaml:\d+:\d+: "
                                        r"outputs\[0\]: tensor 'nope' is not defined"):
        verify(odd_model, result.pipeline)


def test_unreadable_model_is_named(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(SnipError, match=r"^\S*bad.onnx: cannot read ONNX model: "):
        load_model(bad)


def chain(tmp_path, length: int = 5, name: str = "chain"):
    """x -> Neg -> Abs -> Neg ... (no activations, equal costs): every inner tensor is a cut point."""
    ops = ["Neg", "Abs"]
    names = ["x", *[f"t{i}" for i in range(length - 1)], "y"]
    nodes = [helper.make_node(ops[i % 2], [names[i]], [names[i + 1]]) for i in range(length)]
    model = make_model(nodes, [value("x", [1, 8])], [value("y", [1, 8])], name=name)
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(("pieces", "cuts"), [(1, []), (2, ["t1"]), (3, ["t1", "t2"]), (4, ["t0", "t1", "t3"]),
                                              (5, ["t0", "t1", "t2", "t3"])])
def test_balanced_cuts_on_equal_costs(tmp_path, pieces, cuts):
    path = chain(tmp_path)
    assert [c for (c,) in snip(path, tmp_path / "out", pieces=pieces).boundaries] == cuts
    assert [t for _, t in Graph(load_model(path)).separators()] == ["t0", "t1", "t2", "t3"]


def test_more_pieces_than_cut_points(tmp_path):
    with pytest.raises(SnipError, match=r"^\S*chain.onnx: only 4 single-tensor cut points exist; at most 5 pieces$"):
        snip(chain(tmp_path), tmp_path / "out", pieces=6)


def test_cuts_are_applied_in_graph_order(tmp_path):
    result = snip(chain(tmp_path), tmp_path / "out", at="t3,t0,t2")
    assert result.boundaries == [("t0",), ("t2",), ("t3",)] and len(result.pieces) == 4


def test_cut_messages_list_every_name(tmp_path):
    nodes = [helper.make_node("Neg", ["x"], ["feat_a"]), helper.make_node("Abs", ["x"], ["feat_b"]),
             helper.make_node("Neg", ["x"], ["feat_c"]), helper.make_node("Sum", ["feat_a", "feat_b", "feat_c"], ["y"])]
    model = make_model(nodes, [value("x", [1, 8])], [value("y", [1, 8])], name="")
    path = tmp_path / "fan.onnx"
    onnx.save(model, str(path))
    with pytest.raises(SnipError, match=r"did you mean 'feat_c', 'feat_b', 'feat_a'\?\)$"):
        snip(path, tmp_path / "o", at="feat_d")
    with pytest.raises(SnipError, match=r"cutting at feat_b does not separate the graph: feat_a, x also crosses"):
        snip(path, tmp_path / "o", at="feat_b")
    result = snip(path, tmp_path / "o", at="feat_a+feat_b+feat_c")  # an unnamed graph
    text = result.pipeline.read_text()
    assert "from a model: 2 snippets" in text and "name: snipped\n" in text


def test_costs_of_transposed_convolutions_and_activation_products():
    nodes = [helper.make_node("ConvTranspose", ["x", "w"], ["c"]),  # 1x4x4x4 out, 2*1*1 per output
             helper.make_node("MatMul", ["c", "c"], ["y"])]  # two activations: one MAC per output taken
    model = make_model(nodes, [value("x", [1, 2, 4, 4])], [value("y", [1, 4, 4, 4])], [weight("w", (2, 4, 1, 1))])
    assert Graph(model).costs() == [64 * 4 * 1 * 1, 64]


def test_initializers_listed_as_inputs_are_not_pipeline_inputs(tmp_path):
    nodes = [helper.make_node("Add", ["x", "b"], ["t"]), helper.make_node("Neg", ["t"], ["y"])]
    graph = helper.make_graph(nodes, "old", [value("b", [1, 8]), value("x", [1, 8])], [value("y", [1, 8])],
                              [weight("b", (1, 8))])
    path = tmp_path / "old.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), str(path))
    text = snip(path, tmp_path / "o", at="t").pipeline.read_text()
    assert "inputs:\n  x: {dtype: float32, shape: [1, 8]}\noutputs: [y]" in text


def two_outputs(tmp_path, elem=TensorProto.FLOAT):
    nodes = [helper.make_node("Neg", ["x"], ["t"]), helper.make_node("Abs", ["t"], ["y1"]),
             helper.make_node("Neg", ["t"], ["y2"])]
    model = make_model(nodes, [value("x", ["batch size", "width"], elem)],
                       [value("y1", ["batch size", "width"], elem), value("y2", ["batch size", "width"], elem)])
    path = tmp_path / "two.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("dims", [{"batch size": 2, "width": 3}, {"batch_size": 2, "width": 3}])
def test_dims_by_model_name_or_pipeline_symbol_and_several_outputs(tmp_path, dims):
    text = snip(two_outputs(tmp_path), tmp_path / "o", at="t", dims=dims).pipeline.read_text()
    assert "  batch_size: {min: 2, opt: 2, max: 2}\n  width: {min: 3, opt: 3, max: 3}" in text
    assert "outputs: [y1, y2]" in text and "x: {dtype: float32, shape: [batch_size, width]}" in text


def test_unsupported_input_types_are_named(tmp_path):
    with pytest.raises(SnipError, match="^input 'x' has an unsupported element type$"):
        snip(two_outputs(tmp_path, TensorProto.DOUBLE), tmp_path / "o", at="t")


def test_verification_failure_names_the_sizes_it_used(tmp_path, monkeypatch):
    import onnxruntime

    original = onnxruntime.InferenceSession

    class Broken(original):
        def run(self, *args, **kwargs):
            raise RuntimeError("no session today")

    monkeypatch.setattr(onnxruntime, "InferenceSession", Broken)
    with pytest.raises(SnipError, match=r"^verifying with batch_size=2, width=3 failed \(.*no session today.*\); give "
                                        r"the symbolic dimensions usable sizes with --dims NAME=SIZE,\.\.\.$"):
        snip(two_outputs(tmp_path), tmp_path / "o", at="t", dims={"batch size": 2, "width": 3})
