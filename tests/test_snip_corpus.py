"""snip on standard architectures in the exporter's style (tests/snip_corpus.py): constants never cross a
cut, multi-tensor cuts, long skips, balanced pieces, and the cut-cost model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import snip_corpus as corpus

from orchestrator.cli import main
from orchestrator.pipeline.load import load_pipeline
from orchestrator.snip import Graph, SnipError, load_model, snip
from orchestrator.snip.cuts import CostModel, _partition, oversized
from orchestrator.snip.graph import first_output, node_reads
from orchestrator.snip.verify import FP16_TOLERANCE, TOLERANCE, compare, input_sizes, verify


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    paths = {}
    for name, build in corpus.MODELS.items():
        paths[name] = folder / f"{name}.onnx"
        onnx.save(build(), str(paths[name]))
    return paths


# K larger than the places to cut: refused with the reason (a one-line SnipError naming the model).
REFUSED = {("recurrent", 16): r"recurrent.onnx: 12 compute nodes \(constants aside\); at most 12 pieces",
           ("dynamic_batch", 16): r"dynamic_batch.onnx: 15 compute nodes \(constants aside\); at most 15 pieces"}
# Small models, also cut at every place a cut can go (K = compute nodes, less the cuts through shape tensors).
MOST_PIECES = {"recurrent": 12, "branches": 16, "dynamic_batch": 15}


@pytest.mark.parametrize("pieces", [1, 4, 16])
@pytest.mark.parametrize("name", list(corpus.MODELS))
def test_every_model_in_k_balanced_pieces(models, tmp_path, name, pieces):
    """snip verifies the chained pieces against onnxruntime on the uncut model (relative L2 <= 1e-4) and
    raises otherwise; here: the pieces are balanced and only activations cross the cuts."""
    if (name, pieces) in REFUSED:
        with pytest.raises(SnipError, match=REFUSED[name, pieces]) as refusal:
            snip(models[name], tmp_path, pieces=pieces, inputs=corpus.INPUTS.get(name))
        assert "\n" not in str(refusal.value)
        return
    result = snip(models[name], tmp_path, pieces=pieces, inputs=corpus.INPUTS.get(name))
    graph = Graph(load_model(models[name]))
    graph.sizes = input_sizes(graph, corpus.INPUTS.get(name, {}))  # the batch size N, as snip sized it
    _check_pieces(graph, result, pieces)
    _check_balance(graph, result)


@pytest.mark.parametrize("name", list(MOST_PIECES))
def test_small_models_cut_everywhere(models, tmp_path, name):
    """As many pieces as there are places to cut: every piece is one node (or a shape computation that
    cannot be split), and the chain still reproduces the model."""
    result = snip(models[name], tmp_path, pieces=MOST_PIECES[name], inputs=corpus.INPUTS.get(name))
    _check_pieces(Graph(load_model(models[name])), result, MOST_PIECES[name])


def _check_pieces(graph: Graph, result, pieces: int) -> None:
    assert len(result.pieces) == pieces == len(result.cuts) + 1
    for cut in result.cuts:
        assert cut.tensors and all(t in graph.position for t in cut.tensors), cut  # activations only
    for path in result.pieces:  # each piece holds only the weights its own nodes (or their branches) read
        piece = onnx.load(str(path))
        read = {i for n in piece.graph.node for i in node_reads(n)}
        assert all(t.name in read for t in piece.graph.initializer), path.name


def _check_balance(graph: Graph, result) -> None:
    """Every piece within 2x of the mean estimated cost. Where a node alone costs more than twice the mean
    (an LSTM; the full-resolution convs of a small detector or FPN head) no partition can be: then each
    such node is set aside in a piece that holds no other and at most 2x the mean beside it, and the other
    pieces are balanced around the mean of what is not set aside. The lower bound drops to a quarter of
    that mean there, because the few nodes between two set-aside ones (FPN's resizes and adds between its
    full-resolution head convs, the Squeeze between the LSTM and the GRU) can make a piece of their own."""
    nodes, costs = graph.costs(), result.piece_costs
    if len(costs) == len(nodes):
        return  # a node per piece: nothing to balance
    big = np.zeros(len(nodes), bool)
    while True:  # nodes over twice the mean of the rest, the mean recomputed as they are set aside
        mean = nodes[~big].sum() / (len(costs) - big.sum())
        if ((nodes > 2 * mean) == big).all():
            break
        big = nodes > 2 * mean
    low = 0.5 if not big.any() else 0.25
    bounds = [0, *[c.position + 1 for c in result.cuts], len(nodes)]
    for cost, a, b in zip(costs, bounds, bounds[1:], strict=False):
        held = nodes[a:b][big[a:b]]
        assert len(held) <= 1, (costs, a, b)
        assert cost - held.sum() <= 2 * mean and (held.any() or cost >= low * mean), (costs, a, b, mean)
    assert big.sum() < len(costs) / 2 or len(nodes) < 4 * len(costs), costs  # the exception stays one


def test_recurrent_nodes_cost_every_step(models):
    """An LSTM or GRU is estimated at steps x (input + hidden weights of every gate), not at its output's
    size: in the recurrent model they are most of the compute."""
    graph = Graph(load_model(models["recurrent"]))
    costs = dict(zip((n.op_type for n in graph.order), graph.costs(), strict=True))
    assert costs["LSTM"] == 16 * (4 * 32 * 16 + 4 * 32 * 32) and costs["GRU"] == 16 * (3 * 16 * 32 + 3 * 16 * 16)
    assert costs["LSTM"] + costs["GRU"] > 0.9 * sum(costs.values())


def test_a_node_over_twice_the_mean_is_set_aside(models, tmp_path):
    """EfficientNet's stem conv alone is 2.3x the mean of 16 pieces: it is set aside with its Swish and
    the rest is balanced. Before, the last fallback ignored balance and left 70% of the compute in one
    piece."""
    graph = Graph(load_model(models["efficientnet"]))
    result = snip(models["efficientnet"], tmp_path, pieces=16)
    assert [n.op_type for n in graph.order[:result.cuts[0].position + 1]] == ["Conv", "Sigmoid", "Mul"]
    assert max(result.piece_costs) < 0.16 * sum(result.piece_costs)


def test_oversized_nodes_get_their_own_piece():
    nodes = np.array([1.0, 1, 1, 30, 1, 1, 1, 1, 1, 1])
    assert list(np.flatnonzero(oversized(nodes, 4))) == [3]
    assert not oversized(nodes, 2).any()  # 30 < 2 x 39 / 2
    assert list(np.flatnonzero(oversized(np.array([100.0, 20, 1, 1, 1, 1]), 4))) == [0, 1]  # 20 > 2 x 4 / 2
    compute = np.concatenate([[0.0], np.cumsum(nodes)])
    free = np.zeros((len(compute), len(compute)))
    assert _partition(compute, free, 4, 0.5, 1.5) is None
    assert _partition(compute, free, 4, 0.5, 1.5, oversized(nodes, 4)) == [3, 4, 7]


def test_if_branches_read_outer_tensors_across_cuts(models, tmp_path):
    """The If's branches read `early` (computed first, read again after the If), `h`, a weight and a
    Constant of the parent graph without naming them. Cut after `early` and after `h`: `early` crosses
    both cuts, the If's piece reads both and holds its own copy of the weight and the Constant; both
    branches reproduce the model."""
    graph = Graph(load_model(models["branches"]))
    branch = next(n for n in graph.order if n.op_type == "If")
    h, early = dict.fromkeys(n for n in node_reads(branch) if n in graph.position)
    assert h.startswith("/body/Relu") and early.startswith("/early/Tanh")
    for flag in (True, False):
        result = snip(models["branches"], tmp_path / str(flag), at=f"{early},{h}",
                      inputs={"use_then": np.array(flag)})
        assert early in result.cuts[1].passed
        piece = onnx.load(str(result.pieces[2]))
        assert {early, h} <= {v.name for v in piece.graph.input}
        assert "body.branch.scale" in {t.name for t in piece.graph.initializer}
        assert "Constant" in {n.op_type for n in piece.graph.node}


def test_a_constant_node_with_its_first_output_left_out_is_a_constant(tmp_path):
    """A GRU over a constant sequence with Y left out ('' as output 0): a constant like any other, copied
    into each piece that reads its Y_h, never a compute node."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
               for n, s in [("seq", (3, 1, 4)), ("W", (1, 12, 4)), ("R", (1, 12, 4))]]
    nodes = [helper.make_node("GRU", ["seq", "W", "R"], ["", "h"], hidden_size=4),
             helper.make_node("Squeeze", ["h", "zero"], ["state"]), helper.make_node("Add", ["x", "state"], ["a"]),
             helper.make_node("Relu", ["a"], ["b"]), helper.make_node("Mul", ["b", "state"], ["c"])]
    graph = helper.make_graph(nodes, "constant_gru", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 4])],
                              [*weights, numpy_helper.from_array(np.array([0], np.int64), "zero")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    model = Graph(load_model(tmp_path / "m.onnx"))
    assert [n.op_type for n in model.order] == ["Add", "Relu", "Mul"]
    result = snip(tmp_path / "m.onnx", tmp_path / "out", pieces=3)
    assert all(c.tensors in (("a",), ("b",)) for c in result.cuts), result.cuts
    assert sum("GRU" in {n.op_type for n in onnx.load(str(p)).graph.node} for p in result.pieces) == 2


def test_constants_are_folded_or_copied_not_cut(models):
    graph = Graph(load_model(models["vit"]))
    assert "onnx::MatMul_" in " ".join(graph.constant)  # Identity aliases of the shared weight
    assert not [n for n in graph.order if n.op_type in ("Shape", "Constant", "Identity")]
    assert all(not graph.crossing(i) or all(t in graph.position for t in graph.crossing(i))
               for i in range(len(graph.order) - 1))
    with pytest.raises(SnipError, match="computed from weights and constants only: it is never cut"):
        snip(models["vit"], models["vit"].parent / "x", at=next(iter(graph.constant - set(graph.initializers))))


def test_long_skips_cross_several_cuts_defined_once(models, tmp_path, capsys):
    """Cut the UNet after its second and third encoder levels: the first level's skip crosses both cuts."""
    graph = Graph(load_model(models["unet"]))
    enc1, enc2 = (max((t for t in graph.position if t.startswith(f"/enc{k}/Relu")), key=graph.position.get)
                  for k in (1, 2))
    assert main(["snip", str(models["unet"]), "--at", f"{enc1},{enc2}", "-o", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "also carries" in printed and "est. cost" in printed
    text = (tmp_path / "pipeline.yaml").read_text()
    pipeline = load_pipeline(tmp_path / "pipeline.yaml")
    skip0 = max((t for t in graph.position if t.startswith("/enc0/Relu")), key=graph.position.get)
    name = pipeline.snippets["piece0"].outputs  # the skip leaves piece 0 once ...
    assert skip0 in name and text.count(f": {_ident(skip0)}}}") + text.count(f": {_ident(skip0)},") == 2
    readers = [s.snippet for s in pipeline.body if skip0 in s.inputs]  # ... and the decoder reads it
    assert readers == ["piece2"], readers
    assert pipeline.outputs[1] == _ident(graph.outputs[1])  # the bottleneck: an output read later


def _ident(name: str) -> str:
    from orchestrator.snip.write import identifier

    return identifier(name, set())


def test_cut_costs_model_fusion_concat_and_reformats(models):
    graph = Graph(load_model(models["unet"]))
    live = graph.live_sets()
    fp32, fp16, hwc8 = (CostModel(graph, p, f) for p, f in
                        [("fp32", "linear"), ("fp16", "linear"), ("fp16", "hwc8")])
    conv = next(i for i, n in enumerate(graph.order) if n.op_type == "BatchNormalization")
    relu = conv + 1
    before, after = fp32.cut(conv, live[conv]), fp32.cut(relu, live[relu])
    assert before.nbytes == after.nbytes and before.cost > after.cost and "fusion lost" in before.describe()
    skip = next(i for i, c in enumerate(live) if len(c) > 1)
    assert "Concat" in fp32.cut(skip, live[skip]).describe()
    assert fp16.cut(relu, live[relu]).cost > fp32.cut(relu, live[relu]).cost > hwc8.cut(relu, live[relu]).cost


def test_pieces_prefer_cheap_cuts(models, tmp_path):
    """Among balanced partitions the cheapest: no cut of the ResNets lands between a conv and its BN/ReLU."""
    for name in ("resnet_bn", "resnet_folded"):
        graph = Graph(load_model(models[name]))
        result = snip(models[name], tmp_path / name, pieces=4)
        assert all(graph.producer[t].op_type == "Relu" for c in result.cuts for t in c.tensors), result.cuts


def test_verification_needs_index_inputs(models, tmp_path):
    with pytest.raises(SnipError, match="input 'input_ids' feeds Gather input 1; random values are not valid "
                                        "for it: give its values with --inputs in.npz"):
        snip(models["bert"], tmp_path, pieces=2)
    np.savez(tmp_path / "in.npz", **corpus.INPUTS["bert"])
    assert main(["snip", str(models["bert"]), "--pieces", "3", "--inputs", str(tmp_path / "in.npz"),
                 "-o", str(tmp_path / "ok")]) == 0
    np.savez(tmp_path / "bad.npz", ids=corpus.INPUTS["bert"]["input_ids"])
    with pytest.raises(SnipError, match="--inputs has 'ids', which is not a model input"):
        snip(models["bert"], tmp_path, pieces=2, inputs={"ids": corpus.INPUTS["bert"]["input_ids"]})


def test_rank0_inputs_are_scalars(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Mul", ["x", "s"], ["y"]), helper.make_node("Relu", ["y"], ["z"])],
                              "scalar", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
                                         helper.make_tensor_value_info("s", TensorProto.FLOAT, [])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    result = snip(tmp_path / "m.onnx", tmp_path / "out", pieces=2)
    assert "s: {dtype: float32, shape: []}" in result.pipeline.read_text()
    assert load_pipeline(result.pipeline).inputs["s"].shape == ()


def test_comparison_is_strict():
    want = np.linspace(-1, 1, 100, dtype=np.float32)
    assert compare("y", want + 1e-7, want, 1e-4) < 1e-6
    with pytest.raises(SnipError, match="relative L2 0.001"):
        compare("y", want * 1.001, want, 1e-4)
    with pytest.raises(SnipError, match="NaN/Inf at other places"):
        compare("y", np.where(want > 0.5, np.nan, want), want, 1e-4)
    with pytest.raises(SnipError, match="int64 values differ"):
        compare("i", np.arange(3), np.array([0, 1, 3]), 1.0)


def test_fp16_boundaries_fail_the_fp32_tolerance(models, tmp_path):
    """hwc8 boundaries round to FP16: snip checks them at FP16's tolerance; FP32's rejects the rounding."""
    result = snip(models["unet"], tmp_path, pieces=16, precision="fp16", boundary_format="hwc8")
    feeds = {"image": np.random.default_rng(0).standard_normal((1, 4, 32, 32)).astype(np.float32)}
    assert verify(models["unet"], result.pipeline, feeds, result.names, FP16_TOLERANCE) > 0
    with pytest.raises(SnipError, match="do not reproduce output"):
        verify(models["unet"], result.pipeline, feeds, result.names, TOLERANCE)
    _scale_largest_weight(result.pieces[8], 1.1)  # a 10% wrong layer is more than FP16 rounding
    with pytest.raises(SnipError, match="do not reproduce output"):
        verify(models["unet"], result.pipeline, feeds, result.names, FP16_TOLERANCE)


def _scale_largest_weight(path, factor: float) -> None:
    from onnx import numpy_helper

    piece = onnx.load(str(path))
    weight = max(piece.graph.initializer, key=lambda t: np.prod(t.dims))
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float32(factor), weight.name))
    onnx.save(piece, str(path))


def test_a_wrong_piece_fails_verification(models, tmp_path):
    """One weight of one piece off by 1%: the pipeline still runs, and the verification rejects it."""
    result = snip(models["resnet_folded"], tmp_path, pieces=4)
    _scale_largest_weight(result.pieces[2], 1.01)
    feeds = {"input": np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)}
    with pytest.raises(SnipError, match="do not reproduce output '/Gemm_57_output_0' .relative L2"):
        verify(models["resnet_folded"], result.pipeline, feeds, result.names, TOLERANCE)


def test_dynamic_batch_keeps_shape_tensors_inside_pieces(models, tmp_path):
    """With a symbolic batch the exporter's Shape arithmetic cannot be folded: the cuts avoid it."""
    model = onnx.load(str(models["vit"]))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    del model.graph.value_info[:]
    for output in model.graph.output:
        output.type.tensor_type.ClearField("shape")
    onnx.save(model, str(tmp_path / "vit_n.onnx"))
    graph = Graph(load_model(tmp_path / "vit_n.onnx"))
    assert any(n.op_type == "Shape" for n in graph.order)
    result = snip(tmp_path / "vit_n.onnx", tmp_path / "out", pieces=4, dims={"N": 2})
    assert "N: {min: 2, opt: 2, max: 2}" in result.pipeline.read_text()
    assert all(graph.types[t].dtype == "float32" for c in result.cuts for t in c.tensors)


@pytest.mark.parametrize("name", ["swin", "unet", "densenet", "gpt2", "yolo", "recurrent", "branches", "fpn"])
def test_cuts_anywhere(models, tmp_path, name):
    """Five cuts after random nodes: whatever crosses them is carried, and the pipeline still reproduces
    the model (snip verifies it)."""
    graph = Graph(load_model(models[name]))
    costs = CostModel(graph, "fp32", "linear")
    live = graph.live_sets()
    allowed = [i for i in range(len(graph.order) - 1) if np.isfinite(costs.cut(i, live[i]).cost)]
    chosen = sorted(np.random.default_rng(len(name)).choice(allowed, 5, replace=False))
    at = ",".join(first_output(graph.order[i]) for i in chosen)  # a GRU's Y may be left out: its Y_h
    result = snip(models[name], tmp_path, at=at, inputs=corpus.INPUTS.get(name))
    assert [c.position for c in result.cuts] == chosen
    assert [set(c.tensors) for c in result.cuts] == [set(live[i]) for i in chosen]


def test_shape_of_a_model_input_is_recomputed_in_each_piece(tmp_path):
    """The batch size read once from the input at the top (`B = x.shape[0]`), used by the last layer: the
    piece that needs it computes it again from the input rather than carrying it across every cut."""
    model = corpus.batch_at_top()
    onnx.save(model, str(tmp_path / "m.onnx"))
    result = snip(tmp_path / "m.onnx", tmp_path / "out", pieces=4, dims={"N": 3})
    assert all(len(c.tensors) == 1 for c in result.cuts), result.cuts
    last = onnx.load(str(result.pieces[-1]))
    assert "x" in [i.name for i in last.graph.input] and "Shape" in {n.op_type for n in last.graph.node}


def test_named_cut_through_a_shape_tensor_is_refused(models, tmp_path):
    model = onnx.load(str(models["vit"]))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    del model.graph.value_info[:]
    onnx.save(model, str(tmp_path / "vit_n.onnx"))
    graph = Graph(load_model(tmp_path / "vit_n.onnx"))
    shape = next(n for n in graph.order if n.op_type == "Shape")
    with pytest.raises(SnipError, match=f"{shape.output[0]} cannot cross a cut .* cut before it is computed"):
        snip(tmp_path / "vit_n.onnx", tmp_path / "out", at=shape.output[0], dims={"N": 2})


@pytest.mark.parametrize("name", ["unet", "resnet_bn"])
def test_piece_costs_match_the_cuts_and_the_dp_is_optimal(models, name):
    """The DP's cost matrix agrees with cutting in sequence (a tensor is charged at the first cut it
    crosses), and over every placement of two cuts the DP finds the cheapest balanced one."""
    from itertools import combinations

    graph = Graph(load_model(models[name]))
    model = CostModel(graph, "fp16", "linear")
    matrix, live, n = model.piece_costs(), graph.live_sets(), len(graph.order)
    rng = np.random.default_rng(0)
    for _ in range(5):
        ends = sorted(rng.choice(np.arange(1, n), 4, replace=False))
        previous, total = (), 0.0
        for e in ends:
            cut = model.cut(e - 1, live[e - 1], previous)
            total, previous = total + cut.cost, cut.tensors
        assert sum(matrix[a, b] for a, b in zip([0, *ends], ends, strict=False)) == pytest.approx(total)
    compute = np.concatenate([[0.0], np.cumsum(graph.costs())])
    mean = compute[-1] / 3
    best = min((matrix[0, a] + matrix[a, b], (a, b)) for a, b in combinations(range(1, n), 2)
               if all(0.5 * mean <= compute[y] - compute[x] <= 1.5 * mean for x, y in ((0, a), (a, b), (b, n))))
    found = _partition(compute, matrix, 3, 0.5, 1.5)
    assert matrix[0, found[0]] + matrix[found[0], found[1]] == pytest.approx(best[0])


def test_recurrent_costs_count_batch_and_plain_rnn(tmp_path):
    """steps = sequence x batch (batch 3 here), for RNN as for LSTM; weights W [dirs, gates*H, I], R [dirs,
    gates*H, H]."""
    from onnx import TensorProto, helper, numpy_helper

    seq, batch, size, hidden = 5, 3, 4, 6
    rng = np.random.default_rng(0)
    weights = {"W": (1, hidden, size), "R": (1, hidden, hidden), "Wl": (1, 4 * hidden, hidden),
               "Rl": (1, 4 * hidden, hidden)}
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n) for n, s in weights.items()]
    nodes = [helper.make_node("RNN", ["x", "W", "R"], ["y", ""], hidden_size=hidden),
             helper.make_node("Squeeze", ["y", "axes"], ["ys"]),
             helper.make_node("LSTM", ["ys", "Wl", "Rl"], ["z", "", ""], hidden_size=hidden)]
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "axes"))
    graph = helper.make_graph(nodes, "rnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [seq, batch, size])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10),
              str(tmp_path / "rnn.onnx"))
    loaded = Graph(load_model(tmp_path / "rnn.onnx"))
    costs = dict(zip((n.op_type for n in loaded.order), loaded.costs(), strict=True))
    assert costs["RNN"] == seq * batch * (hidden * size + hidden * hidden)
    assert costs["LSTM"] == seq * batch * (4 * hidden * hidden + 4 * hidden * hidden)
