"""`snip` on small hand-made models: cost estimates, names that are not identifiers, integer inputs and
symbolic dimensions in the written pipeline, the exact cut errors, and what verification reports."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from orchestrator.snip import Graph, SnipError, load_model, snip
from orchestrator.snip.graph import TensorType, first_output, node_reads
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


# The graph snip sees (orchestrator/snip/graph.py), checked directly on hand-made models.


def _saved(tmp_path, model, name):
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def test_load_model_names_a_missing_file_and_failed_shape_inference(tmp_path):
    with pytest.raises(SnipError, match=r"^\S*missing.onnx: cannot read ONNX model: \[Errno 2\] No such file or "
                                        r"directory: '\S*missing.onnx'$"):
        load_model(tmp_path / "missing.onnx")
    # An initializer whose type contradicts the input it fills fails inference with and without data propagation.
    graph = helper.make_graph([helper.make_node("Neg", ["x"], ["y"])], "g", [value("x", [2])], [value("y", [2])],
                              [numpy_helper.from_array(np.zeros(3, np.int64), "x")])
    path = _saved(tmp_path, helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), "typed.onnx")
    with pytest.raises(SnipError, match=r"^\S*typed.onnx: ONNX shape inference failed: \[TypeInferenceError\] "
                                        r"Inferred elem type differs from existing elem type: \(7\) vs \(1\)$"):
        load_model(path)


def test_load_model_propagates_shape_data_into_reshape(tmp_path):
    nodes = [helper.make_node("Shape", ["x"], ["s0"], end=1), helper.make_node("Concat", ["s0", "m1"], ["shp"], axis=0),
             helper.make_node("Reshape", ["x", "shp"], ["r"]), helper.make_node("Neg", ["r"], ["y"])]
    graph = helper.make_graph(nodes, "g", [value("x", [2, 3, 4])], [value("y", None)],
                              [numpy_helper.from_array(np.array([-1], np.int64), "m1")])
    path = _saved(tmp_path, helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), "prop.onnx")
    assert Graph(load_model(path)).types["r"].shape == (2, 12)


def test_load_model_retries_shape_inference_without_data_propagation(tmp_path, monkeypatch):
    """Data propagation can fail where plain shape inference does not: the model then loads without it."""
    real, calls = onnx.shape_inference.infer_shapes, []

    def infer(model, data_prop=False):
        calls.append(data_prop)
        if data_prop:
            raise RuntimeError("data propagation failed")
        return real(model)

    nodes = [helper.make_node("Neg", ["x"], ["t"]), helper.make_node("Abs", ["t"], ["y"])]
    graph = helper.make_graph(nodes, "g", [value("x", [1, 8])], [value("y", [1, 8])])
    path = _saved(tmp_path, helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), "plain.onnx")
    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", infer)
    assert Graph(load_model(path)).types["t"] == TensorType("float32", (1, 8)) and calls == [True, False]


def _branch(name, nodes, outputs, inputs=(), initializers=()):
    return helper.make_graph(nodes, name, list(inputs), [value(o, [1]) for o in outputs], list(initializers))


def test_node_reads_skip_empty_inputs_and_include_outer_names_of_subgraphs():
    assert node_reads(helper.make_node("Clip", ["x", "", "hi"], ["y"])) == ["x", "hi"]
    then = _branch("then", [helper.make_node("Add", ["a", "k"], ["t"]), helper.make_node("Mul", ["t", "b"], ["o1"])],
                   ["o1"], initializers=[weight("k", (1,))])
    inner = helper.make_node("If", ["c2"], ["o2"], then_branch=_branch("t2", [], ["d"]),
                             else_branch=_branch("e2", [helper.make_node("Neg", ["e"], ["o3"])], ["o3"]))
    other = _branch("else", [inner], ["o2"])
    assert node_reads(helper.make_node("If", ["cond"], ["o"], then_branch=then, else_branch=other)) == [
        "cond", "c2", "e", "d", "a", "b"]  # attributes in name order: else_branch first
    body = _branch("body", [helper.make_node("Add", ["v", "w"], ["v2"])], ["c_in", "v2"],
                   inputs=[value("i", [], TensorProto.INT64), value("c_in", [], TensorProto.BOOL), value("v", [1])])
    assert node_reads(helper.make_node("Loop", ["M", "", "v0"], ["vn"], body=body)) == ["M", "v0", "w"]
    several = helper.make_node("Multi", ["p"], ["q"], domain="test", bodies=[_branch("g1", [], ["u"]),
                                                                              _branch("g2", [], ["w"])])
    assert node_reads(several) == ["p", "u", "w"]


def test_constants_activations_and_what_the_outputs_need():
    """Constants: initializers, Constant nodes, what only they feed, Shape/Size of a model input, the Shape of
    an activation whose dims are static or a model input's (read from the input's Shape). Not constant: a
    random node without inputs. Unneeded nodes are dropped."""
    nodes = [helper.make_node("Abs", ["x"], ["unused"]), helper.make_node("Constant", [], ["c"], value=weight("c", (4,))),
             helper.make_node("Add", ["w", "c"], ["wc"]), helper.make_node("Shape", ["x"], ["sx"]),
             helper.make_node("Size", ["x"], ["nx"]), helper.make_node("RandomNormal", [], ["r"], shape=[4]),
             helper.make_node("Mul", ["x", "wc"], ["m"]), helper.make_node("Add", ["m", "r"], ["a"]),
             helper.make_node("Shape", ["m"], ["sm"]), helper.make_node("Reshape", ["a", "sm"], ["y"]),
             helper.make_node("Cast", ["nx"], ["nf"], to=TensorProto.FLOAT), helper.make_node("Expand", ["nf", "sx"], ["e"]),
             helper.make_node("Mul", ["y", "e"], ["out"])]
    g = Graph(make_model(nodes, [value("x", ["N", 4])], [value("out", ["N", 4])], [weight("w", (4,))]))
    sm = ["sm__dim0__shape", "sm__dim0__axis", "sm__dim0", "sm__dim1", "sm"]  # [Shape(x)[0], 4]
    assert g.constant == {"w", "c", "wc", "sx", "nx", "nf", "e", *sm}
    assert [n.output[0] for n in g.const_nodes] == ["c", "wc", "sx", "nx", *sm, "nf", "e"]
    assert [n.output[0] for n in g.order] == ["r", "m", "a", "y", "out"]
    assert g.position == {"r": 0, "m": 1, "a": 2, "y": 3, "out": 4}
    assert g.last_use == {"x": 1, "r": 2, "m": 2, "a": 3, "y": 4}
    assert set(g.producer) == {"c", "wc", "sx", "nx", "r", "m", "a", *sm, "y", "nf", "e", "out"}
    assert [g.is_activation(n) for n in ("x", "m", "wc", "unused")] == [True, True, False, False]


def test_needed_nodes_through_a_diamond_and_an_output_that_is_an_input():
    nodes = [helper.make_node("Exp", ["x"], ["t"]), helper.make_node("Relu", ["x"], ["s"]),
             helper.make_node("Neg", ["s"], ["p"]), helper.make_node("Abs", ["s"], ["q"]),
             helper.make_node("Sin", ["x"], ["dead"]), helper.make_node("Sum", ["t", "p", "q"], ["y"])]
    g = Graph(make_model(nodes, [value("x", [2])], [value("y", [2]), value("x", [2])]))
    assert [n.output[0] for n in g.order] == ["t", "s", "p", "q", "y"]


def test_shapes_of_static_tensors_are_folded_into_constants():
    nodes = [helper.make_node("Neg", ["z"], ["nz"]), helper.make_node("Shape", ["nz"], ["s_all"], name="whole"),
             helper.make_node("Shape", ["nz"], ["s_tail"], start=1), helper.make_node("Shape", ["nz"], ["s_head"], end=2),
             helper.make_node("Shape", ["nz"], ["s_none"], start=3), helper.make_node("Shape", ["e"], ["s_empty"]),
             helper.make_node("Shape", ["x"], ["s_dyn"]), helper.make_node("Size", ["nz"], ["n"])]
    outs = ["nz", "s_all", "s_tail", "s_head", "s_none", "s_empty", "s_dyn", "n"]
    model = make_model(nodes, [value("z", [2, 3, 4]), value("e", [0, 3]), value("x", ["N", 4])],
                       [value(o, None, TensorProto.INT64 if o != "nz" else TensorProto.FLOAT) for o in outs])
    g = Graph(model)
    folded = {n.output[0]: (n.op_type, n.name, numpy_helper.to_array(n.attribute[0].t)) for n in g.const_nodes
              if n.op_type == "Constant"}
    assert {k: (op, name, v.dtype, v.tolist()) for k, (op, name, v) in folded.items()} == {
        "s_all": ("Constant", "whole", np.int64, [2, 3, 4]), "s_tail": ("Constant", "s_tail", np.int64, [3, 4]),
        "s_head": ("Constant", "s_head", np.int64, [2, 3]), "s_none": ("Constant", "s_none", np.int64, [])}
    # A zero-sized or symbolic dim is not folded (the input's Shape is a constant all the same), nor is Size.
    assert [n.op_type for n in g.const_nodes if n.output[0] in ("s_empty", "s_dyn")] == ["Shape", "Shape"]
    assert [(n.op_type, n.output[0]) for n in g.order] == [("Neg", "nz"), ("Size", "n")]


def test_shape_of_an_untyped_tensor_is_kept():
    nodes = [helper.make_node("Neg", ["x"], ["t"]), helper.make_node("Shape", ["t"], ["s"])]
    graph = helper.make_graph(nodes, "g", [value("x", [2])], [value("s", [1], TensorProto.INT64)])
    g = Graph(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert [n.op_type for n in g.order] == ["Neg", "Shape"]


def test_types_of_inputs_values_outputs_and_initializers():
    seq = helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, [2])
    inputs = [seq, value("bare", None), value("dims", [3, "N", None]), value("untyped", [2], TensorProto.UNDEFINED),
              value("w", [1])]
    graph = helper.make_graph([], "g", inputs, [value("o", [2, 2], TensorProto.FLOAT16), value("v", None)],
                              [numpy_helper.from_array(np.zeros((2, 3), np.int64), "w")],
                              value_info=[value("vi", [5], TensorProto.INT32)])
    g = Graph(helper.make_model(graph), sizes={"N": 5})
    assert g.types == {"seq": TensorType(None, ()), "bare": TensorType("float32", ()),
                       "dims": TensorType("float32", (3, "N", "?")), "untyped": TensorType(None, (2,)),
                       "w": TensorType("int64", (2, 3)), "o": TensorType("float16", (2, 2)),
                       "v": TensorType("float32", ("?",)), "vi": TensorType("int32", (5,))}
    assert g.inputs == ["seq", "bare", "dims", "untyped"] and g.outputs == ["o", "v"]
    assert [g.nbytes(n) for n in ("seq", "untyped", "missing", "bare", "dims", "o", "vi", "w")] == [
        0, 0, 0, 4, 60, 8, 20, 48]
    assert Graph(helper.make_model(graph)).nbytes("dims") == 12


def test_liveness_skips_outputs_nothing_reads_and_model_inputs():
    nodes = [helper.make_node("Neg", ["x"], ["y1"]), helper.make_node("Abs", ["x"], ["t"]),
             helper.make_node("Exp", ["t"], ["u"]), helper.make_node("Add", ["t", "u"], ["y2"])]
    g = Graph(make_model(nodes, [value("x", [2])], [value("y1", [2]), value("y2", [2])]))
    assert g.live_sets() == [[], ["t"], ["t", "u"]]
    assert [g.crossing(i) for i in range(4)] == [[], ["t"], ["t", "u"], []]


def test_compute_estimates_of_unusual_operands():
    """A vector MatMul; Gemm with other attributes; unknown operand shapes count their output only."""
    nodes = [helper.make_node("MatMul", ["v", "b"], ["m"]), helper.make_node("Gemm", ["a", "b"], ["g"], transA=0,
                                                                            transB=0, alpha=2.0),
             helper.make_node("Gemm", ["a", "bt"], ["g2"], transB=1), helper.make_node("Relu", ["x"], ["r"])]
    inputs = [value("v", [5]), value("a", [2, 5]), value("x", ["N", 3, "?"])]
    outputs = [value("m", [3]), value("g", [2, 3]), value("g2", [2, 3]), value("r", ["N", 3, None])]
    weights = [weight("b", (5, 3)), weight("bt", (3, 5))]
    g = Graph(make_model(nodes, inputs, outputs, weights), sizes={"N": 4})
    assert g.costs().tolist() == [15, 30, 30, 12]
    nodes = [helper.make_node("Gemm", ["p", "q"], ["o"]), helper.make_node("MatMul", ["p", "b"], ["o2"]),
             helper.make_node("MatMul", ["t", "b"], ["o3"])]
    untyped = helper.make_graph(nodes, "g", [value("t", [2, 3, 5])],
                                [value("o", [2, 3]), value("o2", [2, 3]), value("o3", [2, 3, 3])], weights)
    assert Graph(helper.make_model(untyped)).costs().tolist() == [6, 6, 18 * 5]


def test_shape_folded_from_input_dims_names_each_node_after_the_shape():
    """Shape of an activation of dims [N, 3, M] (x's first and last): Shape(x) -> Gather at x's axis for N and
    M, a Constant for 3, then Concat; each node is named after the Shape node it replaces."""
    nodes = [helper.make_node("Neg", ["x"], ["a"]), helper.make_node("Shape", ["a"], ["s"], name="sa"),
             helper.make_node("Reshape", ["a", "s"], ["y"])]
    g = Graph(make_model(nodes, [value("x", ["N", 3, "M"])], [value("y", ["N", 3, "M"])]))
    d0, d1, d2 = "s__dim0", "s__dim1", "s__dim2"
    assert [(n.op_type, n.name, list(n.input), list(n.output)) for n in g.const_nodes] == [
        ("Shape", f"sa__{d0}__shape", ["x"], [f"{d0}__shape"]), ("Constant", f"sa__{d0}__axis", [], [f"{d0}__axis"]),
        ("Gather", f"sa__{d0}", [f"{d0}__shape", f"{d0}__axis"], [d0]), ("Constant", f"sa__{d1}", [], [d1]),
        ("Shape", f"sa__{d2}__shape", ["x"], [f"{d2}__shape"]), ("Constant", f"sa__{d2}__axis", [], [f"{d2}__axis"]),
        ("Gather", f"sa__{d2}", [f"{d2}__shape", f"{d2}__axis"], [d2]), ("Concat", "sa", [d0, d1, d2], ["s"])]
    values = {n.output[0]: numpy_helper.to_array(n.attribute[0].t).tolist() for n in g.const_nodes if n.op_type == "Constant"}
    assert values == {f"{d0}__axis": [0], d1: [3], f"{d2}__axis": [2]}
    assert [n.op_type for n in g.order] == ["Neg", "Reshape"]


def test_shape_of_an_activation_with_an_unknown_or_zero_dim_is_not_folded():
    """An unknown dim ('?') is no model input's dim, even where an input has an unknown dim too; a zero-sized
    dim is not folded either: both Shapes stay activations."""
    nodes = [helper.make_node("Neg", ["x"], ["a"]), helper.make_node("Shape", ["a"], ["sa"]),
             helper.make_node("Neg", ["e"], ["b"]), helper.make_node("Shape", ["b"], ["sb"])]
    graph = helper.make_graph(nodes, "g", [value("x", [None, 4]), value("e", [0, 3])],
                              [value("sa", [2], TensorProto.INT64), value("sb", [2], TensorProto.INT64)],
                              value_info=[value("a", [None, 4]), value("b", [0, 3])])
    g = Graph(helper.make_model(graph))  # as written: shape inference would name a's unknown dim
    assert g.types["a"].shape == ("?", 4) and g.types["b"].shape == (0, 3)
    assert [(n.op_type, n.output[0]) for n in g.order] == [("Neg", "a"), ("Shape", "sa"), ("Neg", "b"), ("Shape", "sb")]


def test_measured_sizes_count_for_named_dims_that_dims_leaves_unsized():
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [value("x", ["K", "L", 4])], [value("y", ["K", "L", 4])])
    g = Graph(model, sizes={"K": 2})
    g.measured = {"K": 5, "L": 3}  # --dims wins over a measured size
    assert g.costs().tolist() == [24.0] and g.nbytes("x") == 96


def test_a_recurrent_node_on_an_input_of_unknown_shape_counts_one_step():
    nodes = [helper.make_node("Neg", ["x"], ["t"]), helper.make_node("RNN", ["t", "W", "R"], ["y", ""], hidden_size=2)]
    untyped = helper.make_graph(nodes, "g", [value("x", [3, 1, 4])], [value("y", [3, 1, 1, 2])],
                                [weight("W", (1, 2, 4)), weight("R", (1, 2, 2))])
    assert Graph(helper.make_model(untyped)).costs().tolist() == [1.0, 1 * (2 * 4 + 2 * 2)]


def test_first_output_skips_outputs_left_out():
    assert first_output(helper.make_node("LSTM", ["x", "W", "R"], ["", "h", "c"])) == "h"
    assert first_output(helper.make_node("LSTM", ["x", "W", "R"], ["", "", ""])) == ""
    assert first_output(helper.make_node("LSTM", ["x", "W", "R"], [])) == ""


# Where to cut (orchestrator/snip/cuts.py), checked directly on hand-made graphs: no pieces written.


def _costed(nodes, inputs, outputs, initializers=(), precision="fp32", boundary_format="linear", sizes=None,
            opsets=(("", 17),)):
    from orchestrator.snip.cuts import CostModel

    graph = helper.make_graph(nodes, "m", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets], ir_version=10)
    g = Graph(onnx.shape_inference.infer_shapes(model), sizes=sizes)
    return g, CostModel(g, precision, boundary_format)


def _blocked_chain():
    """x -> Neg a -> custom Foo u (untyped: cannot cross) ... a skip of a to the end, c and d crossing later."""
    nodes = [helper.make_node("Neg", ["x"], ["a"]), helper.make_node("Foo", ["a"], ["u"], domain="custom"),
             helper.make_node("Abs", ["a"], ["b"]), helper.make_node("Neg", ["b"], ["c"]),
             helper.make_node("Add", ["c", "u"], ["d"]), helper.make_node("Exp", ["d"], ["e"]),
             helper.make_node("Add", ["e", "a"], ["y"])]
    return _costed(nodes, [value("x", [1, 8])], [value("y", [1, 8])], opsets=(("", 17), ("custom", 1)))


def _check_piece_costs(g, model):
    """C[a, b] against the live sets: the tensors crossing the cut after b - 1 that piece [a, b) computed; inf
    where that cut carries a tensor that cannot cross, 0 for the last piece."""
    costs, live, n = model.piece_costs(), g.live_sets(), len(g.order)
    assert costs.shape == (n + 1, n + 1)
    for a in range(n):
        for b in range(a + 1, n + 1):
            crossing = [] if b == n else live[b - 1]
            want = np.inf if any(not np.isfinite(model.tensor(t)[1]) for t in crossing) else sum(
                model.tensor(t)[1] for t in crossing if g.position[t] >= a)
            assert costs[a, b] == want, (a, b)
    return costs


def test_piece_costs_charge_what_each_piece_leaves_crossing_and_block_what_cannot_cross():
    g, model = _blocked_chain()
    assert [model.tensor(t)[1] for t in ("a", "u", "d")] == [3200.0, np.inf, 400.0]  # d's shape is unknown: 4 bytes
    assert model.tensor("u") == (0, np.inf, "u cannot cross a cut (no tensor type, or a shape tensor)")
    costs = _check_piece_costs(g, model)
    assert [bool(np.isfinite(costs[0, b])) for b in range(1, len(g.order) + 1)] == [
        True, False, False, False, True, True, True]
    # two untyped tensors whose spans overlap: every cut from the first's production to the second's last use
    nodes = [helper.make_node("Neg", ["x"], ["a"]), helper.make_node("Foo", ["a"], ["u"], domain="custom"),
             helper.make_node("Abs", ["a"], ["b"]), helper.make_node("Foo", ["b"], ["v"], domain="custom"),
             helper.make_node("Neg", ["b"], ["c"]), helper.make_node("Add", ["c", "u"], ["d"]),
             helper.make_node("Exp", ["d"], ["e"]), helper.make_node("Add", ["e", "v"], ["f"]),
             helper.make_node("Add", ["f", "a"], ["y"])]
    g, model = _costed(nodes, [value("x", [1, 8])], [value("y", [1, 8])], opsets=(("", 17), ("custom", 1)))
    costs = _check_piece_costs(g, model)
    assert [bool(np.isfinite(costs[0, b])) for b in range(1, 10)] == [True] + [False] * 6 + [True, True]
    # two tensors computed by one node and last read by one node
    nodes = [helper.make_node("Neg", ["x"], ["a"]), helper.make_node("Split", ["a"], ["s1", "s2"], axis=1, num_outputs=2),
             helper.make_node("Abs", ["a"], ["b"]), helper.make_node("Add", ["s1", "s2"], ["c"]),
             helper.make_node("Concat", ["c", "b"], ["y"], axis=1)]
    g, model = _costed(nodes, [value("x", [1, 8])], [value("y", [1, 12])], opsets=(("", 18),))
    assert g.live_sets()[2] == ["s1", "s2", "b"]
    _check_piece_costs(g, model)


def test_cuts_cannot_carry_an_untyped_tensor(tmp_path):
    from orchestrator.snip.cuts import balanced_cuts, cuts_at

    g, model = _blocked_chain()
    with pytest.raises(SnipError, match=r"^\S*m.onnx: cutting after node 2 \(b\): u cannot cross a cut \(no tensor type, "
                                        r"or a shape tensor\); cut before it is computed or after its last use$"):
        cuts_at(g, model, "a,b", tmp_path / "m.onnx")
    first, second = cuts_at(g, model, "a,d", tmp_path / "m.onnx")
    assert (first.tensors, second.tensors, second.passed, second.cost) == (("a",), ("a", "d"), ("a",), 400.0)
    cuts = balanced_cuts(g, model, 4, tmp_path / "m.onnx")
    assert [(c.position, c.passed) for c in cuts] == [(0, ()), (4, ("a",)), (5, ("a",))]  # a crosses all three
    with pytest.raises(SnipError, match=r"^\S*m.onnx: at most 4 pieces: 3 of the 6 places to cut would carry a shape "
                                        r"tensor or an untyped tensor \(first: 'u'\)$"):
        balanced_cuts(g, model, 5, tmp_path / "m.onnx")


def test_pieces_refused_name_the_first_tensor_that_cannot_cross(tmp_path):
    """An untyped tensor computed first and read next blocks the cut after the first node only."""
    from orchestrator.snip.cuts import balanced_cuts, oversized

    nodes = [helper.make_node("Foo", ["x"], ["u"], domain="custom"), helper.make_node("Cast", ["u"], ["b"], to=1),
             helper.make_node("Neg", ["b"], ["c"]), helper.make_node("Neg", ["c"], ["d"]), helper.make_node("Neg", ["d"], ["y"])]
    g, model = _costed(nodes, [value("x", [1, 8])], [value("y", [1, 8])], opsets=(("", 17), ("custom", 1)))
    with pytest.raises(SnipError, match=r"^\S*m.onnx: at most 4 pieces: 1 of the 4 places to cut would carry a shape "
                                        r"tensor or an untyped tensor \(first: 'u'\)$"):
        balanced_cuts(g, model, 5, tmp_path / "m.onnx")
    assert [c.position for c in balanced_cuts(g, model, 4, tmp_path / "m.onnx")] == [1, 2, 3]
    assert not oversized(np.array([6.0, 1, 1, 1]), 3).any()  # exactly twice the mean is not over it


def test_size_and_shape_of_activations_are_shape_tensors():
    nodes = [helper.make_node("Neg", ["x"], ["a"]), helper.make_node("Size", ["a"], ["n"]),
             helper.make_node("Cast", ["n"], ["nf"], to=TensorProto.FLOAT), helper.make_node("Add", ["a", "nf"], ["y"])]
    g, model = _costed(nodes, [value("x", ["N", 8])], [value("y", ["N", 8])])
    assert model.shape_valued == {"n", "nf"} and not np.isfinite(model.tensor("nf")[1])


def test_balanced_cuts_count_pieces(tmp_path):
    from orchestrator.snip.cuts import CostModel, balanced_cuts

    path = chain(tmp_path, length=4)
    g = Graph(load_model(path))
    model = CostModel(g, "fp32", "linear")
    assert balanced_cuts(g, model, 1, path) == []
    assert [(c.position, c.tensors) for c in balanced_cuts(g, model, 2, path)] == [(1, ("t1",))]
    assert [c.position for c in balanced_cuts(g, model, 4, path)] == [0, 1, 2]
    with pytest.raises(SnipError, match=r"^--pieces must be at least 1$"):
        balanced_cuts(g, model, 0, path)
    with pytest.raises(SnipError, match=r"^\S*chain.onnx: 4 compute nodes \(constants aside\); at most 4 pieces$"):
        balanced_cuts(g, model, 5, path)
    one, one_model = _costed([helper.make_node("Neg", ["x"], ["y"])], [value("x", [2])], [value("y", [2])])
    with pytest.raises(SnipError, match=r"^\S*one.onnx: 1 compute nodes \(constants aside\); at most 1 pieces$"):
        balanced_cuts(one, one_model, 2, tmp_path / "one.onnx")


def test_balanced_cuts_fall_back_to_the_tightest_largest_piece(tmp_path):
    """Node costs 20, 10, 10, 1, 1 in 4 pieces: every split leaves a piece under a quarter of the mean, so the
    largest piece is kept as small as it can be (20), never 30."""
    from orchestrator.snip.cuts import balanced_cuts

    nodes = [helper.make_node("Neg", ["x"], ["a"]), helper.make_node("Slice", ["a", "s0", "s1"], ["b"]),
             helper.make_node("Neg", ["b"], ["c"]), helper.make_node("ReduceSum", ["c"], ["d"], keepdims=0),
             helper.make_node("Neg", ["d"], ["y"])]
    inits = [numpy_helper.from_array(np.array([0], np.int64), "s0"), numpy_helper.from_array(np.array([10], np.int64), "s1")]
    g, model = _costed(nodes, [value("x", [20])], [value("y", [])], inits)
    assert g.costs().tolist() == [20, 10, 10, 1, 1]
    cuts = balanced_cuts(g, model, 4, tmp_path / "m.onnx")
    assert [c.position for c in cuts] == [0, 1, 3]


def test_tightest_bound_on_the_largest_piece_matches_brute_force():
    import itertools

    from orchestrator.snip.cuts import _tightest

    rng = np.random.default_rng(3)
    for trial in range(12):
        n, pieces = int(rng.integers(3, 7)), int(rng.integers(2, 4))
        nodes = rng.integers(1, 20, n).astype(float)
        compute = np.concatenate([[0.0], np.cumsum(nodes)])
        cut_costs = np.zeros((n + 1, n + 1))
        if trial % 3 == 0:
            cut_costs[:, int(rng.integers(1, n))] = np.inf
        mean = compute[-1] / pieces
        best = min((max(compute[e] - compute[s] for s, e in zip((0, *ends), (*ends, n), strict=True)) / mean
                    for ends in itertools.combinations(range(1, n), pieces - 1)
                    if all(np.isfinite(cut_costs[0, e]) for e in ends)), default=np.inf)
        assert _tightest(compute, cut_costs, pieces) == pytest.approx(best), (nodes, pieces)
    assert _tightest(np.array([0.0, 1.0, 2.0]), np.full((3, 3), np.inf), 2) == np.inf
    assert _tightest(np.array([0.0, 1.0, 2.0]), np.zeros((3, 3)), 2) == 1.0  # the least span: one node
    assert _tightest(np.array([0.0, 0.1, 0.2, 0.6]), np.zeros((4, 4)), 2) == pytest.approx(0.4 / 0.3)  # mean < 1


def test_partition_bounds_are_inclusive_and_ties_go_to_the_better_balanced():
    from orchestrator.snip.cuts import _partition

    free = np.zeros((4, 4))
    compute = np.array([0.0, 1.0, 4.0])  # pieces 1 and 3 against a mean of 2: exactly 0.5 and 1.5
    assert _partition(compute, free[:3, :3], 2, 0.5, 1.5) == [1]
    assert _partition(compute, free[:3, :3], 2, 0.6, 1.5) is None
    assert _partition(compute, free[:3, :3], 2, 0.5, 1.4) is None
    compute = np.array([0.0, 0.1, 0.3, 0.6])  # float sums: 0.1 + 0.2 is not 0.3
    assert _partition(compute, free, 2, 0.0, 0.3 / 0.3) == [2]
    compute = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    free5 = np.zeros((5, 5))
    assert _partition(compute, free5, 2, 0.0, 10.0) == [2]  # equal cut costs: the balanced split
    cheap = free5.copy()
    cheap[:, 2] = 1.0
    cheap[:, 3] = 1.0
    assert _partition(compute, cheap, 2, 0.0, 10.0) == [1]


def test_cut_points_that_do_not_exist_are_refused_by_name(tmp_path):
    from orchestrator.snip.cuts import cuts_at

    nodes = [helper.make_node("Add", ["x", "w"], ["conv_out"]), helper.make_node("Neg", ["conv_out"], ["conv_o1"]),
             helper.make_node("Neg", ["conv_o1"], ["conv_o2"]), helper.make_node("Neg", ["conv_o2"], ["conv_o3"]),
             helper.make_node("TopK", ["conv_o3", "k"], ["top", "idx"]),
             helper.make_node("Neg", ["top"], ["y"])]
    inits = [weight("w", (1, 8)), numpy_helper.from_array(np.array([2], np.int64), "k")]
    g, model = _costed(nodes, [value("x", [1, 8])], [value("y", [1, 2]), value("idx", [1, 2], TensorProto.INT64)], inits)
    where = tmp_path / "m.onnx"
    for text, error in [("w", "'w' is computed from weights and constants only: it is never cut, each piece that needs "
                              "it gets its own copy"),
                        ("x", "'x' is a model input; cut after a tensor computed from it"),
                        ("conv_ot", r"no tensor 'conv_ot' in the model \(did you mean 'conv_out', 'conv_o3', 'conv_o2'\?\)"),
                        ("top_", r"no tensor 'top_' in the model \(did you mean 'top'\?\)"),
                        ("zzz", "no tensor 'zzz' in the model"),
                        ("conv_o", r"no tensor 'conv_o' in the model \(did you mean 'conv_o3', 'conv_o2', 'conv_o1'\?\)"),
                        ("y", "'y' is a model output computed last; cut before it")]:
        with pytest.raises(SnipError, match=rf"^\S*m.onnx: {error}$"):
            cuts_at(g, model, text, where)
    g.order.append(g.order[-1])  # the node computing y and idx last, its other output not a model output
    g.position["zz"] = len(g.order) - 1
    with pytest.raises(SnipError, match=r"^\S*m.onnx: nothing is computed after 'zz'$"):
        cuts_at(g, model, "zz", where)


def test_a_tensor_computed_inside_a_subgraph_names_the_node_that_holds_it(tmp_path):
    from orchestrator.snip.cuts import _subgraph_holder, cuts_at

    deep = helper.make_node("If", ["c"], ["o2"], then_branch=_branch("t2", [helper.make_node("Neg", ["x"], ["inner"])],
                                                                     ["inner"]),
                            else_branch=_branch("e2", [helper.make_node("Abs", ["x"], ["other"])], ["other"]))
    then = _branch("then", [deep], ["o2"])
    other = _branch("else", [helper.make_node("Abs", ["x"], ["t0"])], ["t0"])
    body = _branch("body", [helper.make_node("Add", ["v", "x"], ["v2"])], ["c_in", "v2"],
                   inputs=[value("i", [], TensorProto.INT64), value("c_in", [], TensorProto.BOOL), value("v", [1])])
    nodes = [helper.make_node("Neg", ["x"], ["pre"]), helper.make_node("Loop", ["n", "", "pre"], ["lp"], name="loop", body=body),
             helper.make_node("If", ["c"], ["y", ""], name="/If", then_branch=then, else_branch=other)]
    g, model = _costed(nodes, [value("x", [1]), value("c", [], TensorProto.BOOL), value("n", [], TensorProto.INT64)],
                       [value("y", [1]), value("lp", [1])])
    assert [(name, _subgraph_holder(g, name).name) for name in ("t0", "inner", "other", "v2")] == [
        ("t0", "/If"), ("inner", "/If"), ("other", "/If"), ("v2", "loop")]
    assert _subgraph_holder(g, "nowhere") is None
    with pytest.raises(SnipError, match=r"^\S*m.onnx: 'inner' is computed inside the If '/If' \(a subgraph runs whole\): "
                                        r"cut after 'y' or before the If$"):
        cuts_at(g, model, "inner", tmp_path / "m.onnx")
    several = helper.make_node("Multi", ["x"], ["q"], domain="test", bodies=[_branch("g1", [], ["u"]),
                                                                             _branch("g2", [helper.make_node("Neg", ["x"], ["w"])], ["w"])])
    g.order.append(several)
    assert _subgraph_holder(g, "w") is several
    nested = helper.make_node("If", ["c"], ["q2"], then_branch=_branch("t3", [helper.make_node(
        "Multi", ["x"], ["q2"], domain="test", bodies=[_branch("g3", [helper.make_node("Neg", ["x"], ["deep"])], ["deep"])])],
        ["q2"]), else_branch=_branch("e3", [], ["x"]))
    g.order.insert(0, nested)
    assert _subgraph_holder(g, "deep") is nested


def test_cut_tensor_costs_notes_and_channel_padding():
    """fusion lost (an activation after anything, an epilogue after a conv/matmul), a Concat copy, FP16 reformats
    of FP32 linear tensors only, hwc8 padding to 8 channels (a symbolic channel count at its --dims size)."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Add", ["mm", "w2"], ["ep"]),
             helper.make_node("Neg", ["ep"], ["ng"]), helper.make_node("Relu", ["ng"], ["act"]),
             helper.make_node("Neg", ["act"], ["cc"]), helper.make_node("Concat", ["cc", "act"], ["cat"], axis=1),
             helper.make_node("Neg", ["cat"], ["z4"]), helper.make_node("Abs", ["z4"], ["z5"]),
             helper.make_node("Cast", ["z5"], ["i"], to=TensorProto.INT32), helper.make_node("Neg", ["i"], ["j"]),
             helper.make_node("Cast", ["j"], ["f"], to=TensorProto.FLOAT16), helper.make_node("Neg", ["f"], ["y"])]
    inits = [weight("w", (5, 5)), weight("w2", (5,))]
    shape = [1, "C", 2, 5]
    outs = [value("y", [1, "C2", 2, 5], TensorProto.FLOAT16)]
    for precision, fmt, sizes, want in [  # the Concat's channels are unknown (counted as 1): 40 bytes
            ("fp32", "linear", {"C": 3}, {"mm": (120, 4 * 120, "fusion lost: MatMul -> Add at mm"),
                                        "ep": (120, 2 * 120, None),
                                        "ng": (120, 4 * 120, "fusion lost: Neg -> Relu at ng"),
                                        "act": (120, 4 * 120, "act is copied into a Concat"),
                                        "z4": (40, 2 * 40, None), "i": (40, 2 * 40, None), "f": (20, 2 * 20, None)}),
            ("fp16", "linear", {"C": 3}, {"mm": (120, 6 * 120, "fusion lost: MatMul -> Add at mm"),
                                        "z4": (40, 4 * 40, "z4 is reformatted (FP32 linear boundary of FP16 snippets)"),
                                        "i": (40, 2 * 40, None), "f": (20, 2 * 20, None)}),
            ("fp16", "hwc8", {"C": 3}, {"mm": (160, 4 * 160, "fusion lost: MatMul -> Add at mm"),  # 3 -> 8 channels
                                      "z4": (160, 2 * 160, None), "i": (40, 2 * 40, None), "f": (20, 2 * 20, None)}),
            ("fp16", "hwc8", {"C": 9}, {"mm": (320, 4 * 320, "fusion lost: MatMul -> Add at mm")}),  # 9 -> 16
            ("bf16", "hwc8", {"C": 8}, {"mm": (160, 4 * 160, "fusion lost: MatMul -> Add at mm")}),
            ("fp32", "hwc8", {"C": 3}, {"mm": (120, 4 * 120, "fusion lost: MatMul -> Add at mm")})]:
        _, model = _costed(nodes, [value("x", shape)], outs, inits, precision, fmt, sizes)
        got = {t: model.tensor(t) for t in want}
        assert got == {t: (b, c * 50.0, note) for t, (b, c, note) in want.items()}, (precision, fmt, sizes)
        assert all(type(b) is int for b, _, _ in got.values())
    g, model = _costed(nodes, [value("x", [1, "C", 2, 5])], outs, inits, "fp16", "hwc8")
    assert model.tensor("y") == (20, 2 * 20 * 50.0, None)  # an output nothing reads
    assert model.tensor("mm")[:2] == (160, 4 * 160 * 50.0)  # a channel count without a size counts as 1


def test_dims_shape_inference_only_named_are_measured_on_one_run():
    """Sizes read off one onnxruntime run for dims that are named but unsized: the first tensor naming a dim
    gives its size, dims given with --dims and unknown ones ('?') are not measured, nor tensors whose rank
    differs from the declared one; a run that fails measures nothing."""
    from orchestrator.snip.verify import measured_sizes

    def i64(name, v):
        return numpy_helper.from_array(np.array(v, np.int64), name)

    nodes = [helper.make_node("Reshape", ["x", "s1"], ["r"]), helper.make_node("Neg", ["r"], ["n"]),
             helper.make_node("Reshape", ["n", "s2"], ["q"]), helper.make_node("Abs", ["q"], ["u"]),
             helper.make_node("Reshape", ["u", "s3"], ["f"]), helper.make_node("Neg", ["f"], ["y"])]
    infos = [value("r", ["unk__0", 3]), value("n", ["unk__0", "K"]), value("q", ["unk__0", "unk__1"]),
             value("u", [None, "unk__2"]), value("f", ["unk__4", 1])]
    graph = helper.make_graph(nodes, "m", [value("x", [2, 6])], [value("y", ["unk__3"])],
                              [i64("s1", [-1, 3]), i64("s2", [2, -1]), i64("s3", [12])], value_info=infos)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    x = {"x": np.ones((2, 6), np.float32)}
    g = Graph(model, sizes={"K": 7})
    got = measured_sizes(g, x)
    assert got == {"unk__0": 4, "unk__1": 6, "unk__2": 6, "unk__3": 12} and all(type(v) is int for v in got.values())
    assert g.sizes == {"K": 7} and len(model.graph.output) == 1  # the model itself is untouched
    assert measured_sizes(Graph(model, sizes={"K": 7, "unk__0": 5, "unk__1": 1, "unk__2": 1, "unk__3": 1,
                                                     "unk__4": 1}), x) == {}
    assert measured_sizes(g, {"x": np.ones((3, 5), np.float32)}) == {}  # the run fails
