"""`snip` on small hand-made models: cost estimates, names that are not identifiers, integer inputs and
symbolic dimensions in the written pipeline, the exact cut errors, and what verification reports."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from orchestrator.snip import Graph, SnipError, load_model, snip
from orchestrator.snip.write import _key, identifier


def make_model(nodes, inputs, outputs, initializers=(), name="tiny"):
    graph = helper.make_graph(nodes, name, inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    return onnx.shape_inference.infer_shapes(model)


def value(name, dims, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, dims)


def weight(name, shape):
    return numpy_helper.from_array(np.random.default_rng(0).standard_normal(shape).astype(np.float32) * 0.1, name)




def test_costs_take_unknown_and_symbolic_dims_as_one():
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [value("x", ["N", 4])], [value("y", ["N", 4])])
    assert Graph(model).costs() == [4.0]


@pytest.mark.parametrize(("name", "want"), [("conv/1:0", "conv_1_0"), ("1x", "t_1x"), ("///", "t"),
                                            ("a.b", "a_b"), ("ok_name", "ok_name"), ("_x_", "x"), ("XyX", "XyX")])
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




def test_snip_writes_the_precision(odd_model, tmp_path):
    text = snip(odd_model, tmp_path / "h", at=CUT, precision="fp16").pipeline.read_text()
    assert text.count("precision: fp16") == 2 and "  batch: {min: 1, opt: 1, max: 1}" in text










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






def test_cuts_are_applied_in_graph_order(tmp_path):
    result = snip(chain(tmp_path), tmp_path / "out", at="t3,t0,t2")
    assert result.boundaries == [("t0",), ("t2",), ("t3",)] and len(result.pieces) == 4






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

def test_errors_name_the_model_once(tmp_path):
    nodes = [helper.make_node("Add", ["a", "b"], ["t"]), helper.make_node("Neg", ["t"], ["y"])]
    path = tmp_path / "two_in.onnx"
    onnx.save(make_model(nodes, [value("a", [1, 4]), value("b", [1, 4])], [value("y", [1, 4])]), str(path))
    with pytest.raises(SnipError, match=r"^\S*two_in.onnx: --inputs has 'c', which is not a model input "
                                        r"\(inputs: a, b\)$"):
        snip(path, tmp_path / "o", at="t", inputs={"c": np.zeros((1, 4), np.float32)})
    with pytest.raises(SnipError, match=r"^give exactly one of --at and --pieces$"):
        snip(path, tmp_path / "o", at="t", pieces=2)


def test_an_input_random_data_cannot_fill_is_refused_with_the_model_named(tmp_path):
    nodes = [helper.make_node("Neg", ["x"], ["t"]), helper.make_node("Reshape", ["t", "s"], ["y"])]
    path = tmp_path / "shaped.onnx"
    onnx.save(make_model(nodes, [value("x", [2, 4]), value("s", [2], TensorProto.INT64)], [value("y", [8])]),
              str(path))
    with pytest.raises(SnipError, match=r"^\S*shaped.onnx: input 's' feeds Reshape input 1; random values"):
        snip(path, tmp_path / "o", at="t")


@pytest.mark.parametrize("name", ["chain", ""])
def test_pieces_are_named_after_the_model_in_a_new_folder(tmp_path, name):
    path = chain(tmp_path, name=name)
    result = snip(path, tmp_path / "new" / "dir", at="t1")
    assert [onnx.load(str(p)).graph.name for p in result.pieces] == [f"{name or 'model'}_piece{i}" for i in (0, 1)]
    text = result.pipeline.read_text()
    assert text.startswith(f"# Written by `orchestrator snip` from {name or 'a model'}: 2 snippets chained in order.\n"
                           f"name: {name or 'snipped'}\n")


def test_cut_costs_follow_precision_and_boundary_format(tmp_path):
    """A 4-D FP32 tensor of 256 bytes: written and read once (FP32), plus a reformat with FP16 snippets,
    or half the bytes in FP16 channels-last (16 channels: no padding)."""
    nodes = [helper.make_node("Neg", ["x"], ["t"]), helper.make_node("Abs", ["t"], ["y"])]
    path = tmp_path / "four.onnx"
    onnx.save(make_model(nodes, [value("x", [1, 16, 2, 2])], [value("y", [1, 16, 2, 2])]), str(path))
    cost = {(p, f): snip(path, tmp_path / f"{p}{f}", at="t", precision=p, boundary_format=f).cuts[0].cost
            for p, f in [("fp32", "linear"), ("fp16", "linear"), ("fp16", "hwc8")]}
    assert cost == {("fp32", "linear"): 2 * 256 * 50, ("fp16", "linear"): 4 * 256 * 50,
                    ("fp16", "hwc8"): 2 * 128 * 50}


# What verification feeds and how it compares (orchestrator/snip/verify.py), checked directly.


def graph_of(tmp_path, nodes, inputs, outputs):
    path = tmp_path / "g.onnx"
    onnx.save(make_model(nodes, inputs, outputs), str(path))
    return Graph(load_model(path))


def test_random_feeds_by_dtype_and_given_values_converted(tmp_path):
    from orchestrator.snip.verify import feeds

    nodes = [helper.make_node("Cast", ["g"], ["gf"], to=TensorProto.FLOAT), helper.make_node("Add", ["x", "gf"], ["s"]),
             helper.make_node("Cast", ["b"], ["bf"], to=TensorProto.FLOAT), helper.make_node("Add", ["s", "bf"], ["t"]),
             helper.make_node("Cast", ["i"], ["i_f"], to=TensorProto.FLOAT), helper.make_node("Add", ["t", "i_f"], ["y"])]
    inputs = [value("g", [2], TensorProto.INT32), value("x", [2000]), value("b", [2000], TensorProto.BOOL),
              value("i", [2000], TensorProto.INT64)]
    got = feeds(graph_of(tmp_path, nodes, inputs, [value("y", [2000])]), {"g": [1.0, 2.0]}, "m")
    assert list(got) == ["g", "x", "b", "i"] and got["g"].dtype == np.int32 and got["g"].tolist() == [1, 2]
    x, b, i = got["x"], got["b"], got["i"]
    assert x.dtype == np.float32 and x.shape == (2000,) and x.min() < -1 and x.max() > 1
    assert b.dtype == bool and 0.4 < b.mean() < 0.6
    assert i.dtype == np.int64 and sorted(set(i.tolist())) == [0, 1, 2, 3]
    again = feeds(graph_of(tmp_path, nodes, inputs, [value("y", [2000])]), {"g": [1.0, 2.0]}, "m")
    assert all(np.array_equal(again[k], got[k]) for k in got)  # seeded


def test_an_input_of_a_type_random_data_cannot_fill_is_refused(tmp_path):
    from orchestrator.snip.verify import feeds

    graph = graph_of(tmp_path, [helper.make_node("Identity", ["s"], ["y"])], [value("s", [1], TensorProto.STRING)],
                     [value("y", [1], TensorProto.STRING)])
    with pytest.raises(SnipError, match=r"^m: input 's' has a type random data cannot fill; random values are not "
                                        r"valid for it: give its values with --inputs in.npz \(an array named 's'\)$"):
        feeds(graph, {}, "m")


def test_parameter_uses_follow_casts_and_reduce_axes(tmp_path):
    from orchestrator.snip.verify import parameter_uses

    nodes = [helper.make_node("Cast", ["k"], ["kf"], to=TensorProto.INT64), helper.make_node("Reshape", ["x", "kf"], ["r"]),
             helper.make_node("ReduceSum", ["r", "a"], ["y"])]
    graph = graph_of(tmp_path, nodes, [value("x", [2, 4]), value("k", [2], TensorProto.INT32),
                                       value("a", [1], TensorProto.INT64)], [value("y", [2])])
    assert [parameter_uses(graph, n) for n in ("x", "k", "a")] == [None, "Reshape input 1", "ReduceSum input 1"]


def test_input_sizes_read_off_arrays_of_the_right_rank(tmp_path):
    from orchestrator.snip.verify import input_sizes

    nodes = [helper.make_node("Neg", ["x"], ["t"]), helper.make_node("Neg", ["z"], ["u"])]
    graph = graph_of(tmp_path, nodes, [value("x", ["N", 4]), value("z", ["M", 2])], [value("t", ["N", 4]),
                                                                                     value("u", ["M", 2])])
    assert input_sizes(graph, {"x": np.zeros((3, 4, 1)), "z": np.zeros((5, 2))}) == {"M": 5}
    assert input_sizes(graph, {"x": np.zeros((3, 4)), "q": np.zeros(2)}) == {"N": 3}


@pytest.mark.parametrize("got, want, tolerance, error", [
    (np.zeros((2, 3)), np.zeros((3, 2)), 1e-4, r"^output 'y' has shape \[2, 3\], the model gives \[3, 2\]$"),
    (np.array([1, 2]), np.array([1, 3]), 1e-4, r"^the chained snippets do not reproduce output 'y' \(int64 values differ\)$"),
    (np.array([1 + 2j]), np.array([1 + 1j]), 1e-4, "relative L2 0.707"),
    (np.array([1.01e-3]), np.array([1e-3]), 1e-4, "relative L2 0.01"),  # relative, however small the values
    (np.array([-np.inf]), np.array([np.inf]), 1e-4,
     r"^the chained snippets do not reproduce output 'y' \(relative L2 0, tolerance 0.0001; NaN/Inf at other places\)$"),
    (np.array([2.0]), np.array([1.0]), 0.5, r"^the chained snippets do not reproduce output 'y' \(relative L2 1, "
                                           r"tolerance 0.5\)$"),
])
def test_compare_refuses(got, want, tolerance, error):
    from orchestrator.snip.verify import compare

    with pytest.raises(SnipError, match=error):
        compare("y", got, want, tolerance)


@pytest.mark.parametrize("got, want, tolerance, diff", [
    (np.array([1, 2]), np.array([1, 2]), 1e-4, 0.0),
    (np.array([1 + 1j, 2j]), np.array([1 + 1j, 2j]), 1e-4, 0.0),
    (np.array([1.5]), np.array([1.0]), 0.5, 0.5),  # relative L2 exactly at the tolerance
    (np.array([np.nan, np.inf, -np.inf, np.inf]), np.array([np.nan, np.inf, -np.inf, np.inf]), 1e-4, 0.0),
    (np.array([np.nan, np.inf, np.inf, 1.0]), np.array([np.nan, np.inf, np.inf, 1.0]), 1e-4, 0.0),
])
def test_compare_accepts(got, want, tolerance, diff):
    from orchestrator.snip.verify import compare

    assert compare("y", got, want, tolerance) == diff


@pytest.mark.parametrize("extra", ["x", "w"])
def test_an_output_that_is_a_model_input_or_an_initializer_is_not_cut(tmp_path, extra):
    nodes = [helper.make_node("Add", ["x", "w"], ["t"]), helper.make_node("Neg", ["t"], ["y"])]
    path = tmp_path / "pass.onnx"
    onnx.save(make_model(nodes, [value("x", [1, 8])], [value("y", [1, 8]), value(extra, [1, 8])],
                         [weight("w", (1, 8))]), str(path))
    with pytest.raises(SnipError, match=rf"^\S*pass.onnx: model output '{extra}' is a model input or an "
                                        r"initializer; cut it with --pieces 1$"):
        snip(path, tmp_path / "o", at="t")


def test_compute_estimates_of_conv_matmul_and_gemm():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("ConvTranspose", ["c", "wt"], ["ct"], pads=[1, 1, 1, 1]),
             helper.make_node("MatMul", ["a", "b"], ["m"]),
             helper.make_node("Gemm", ["at", "b"], ["g"], transA=1), helper.make_node("Gemm", ["a7", "b7"], ["g7"])]
    inputs = [value("x", [1, 3, 8, 8]), value("a", [2, 5]), value("at", [5, 2]), value("a7", [2, 7])]
    outputs = [value("c", [1, 4, 8, 8]), value("ct", [1, 2, 8, 8]), value("m", [2, 3]), value("g", [2, 3]),
               value("g7", [2, 3])]
    weights = [weight("w", (4, 3, 3, 3)), weight("wt", (4, 2, 3, 3)), weight("b", (5, 3)), weight("b7", (7, 3))]
    costs = Graph(make_model(nodes, inputs, outputs, weights)).costs()
    assert costs.tolist() == [256 * 27, 256 * 18, 6 * 5, 6 * 5, 6 * 7]


def test_cut_descriptions():
    from orchestrator.snip import Cut

    cut = Cut(3, ("a", "b"), 3 * 2**20, 1234.0, ("n1", "n2"), ("a",))
    assert cut.describe() == ("a+b: 2 tensor(s) (1 passed through from the previous cut), 3 MiB, "
                              "est. cost 1.23e+03 MAC-eq; n1; n2")
    assert Cut(1, (), 0, 0.0).describe() == "(nothing crosses): 0 tensor(s), 0 MiB, est. cost 0 MAC-eq"


def test_a_tensor_crossing_two_cuts_is_passed_through_and_charged_once(tmp_path):
    nodes = [helper.make_node("Neg", ["x"], ["a"]), helper.make_node("Abs", ["a"], ["b"]),
             helper.make_node("Add", ["a", "b"], ["y"])]
    path = tmp_path / "skip.onnx"
    onnx.save(make_model(nodes, [value("x", [1, 8])], [value("y", [1, 8])]), str(path))
    first, second = snip(path, tmp_path / "o", at="a,b").cuts
    assert (first.tensors, first.passed, first.nbytes, first.cost) == (("a",), (), 32, 2 * 32 * 50)
    assert (second.tensors, second.passed, second.nbytes, second.cost) == (("a", "b"), ("a",), 64, 2 * 32 * 50)
