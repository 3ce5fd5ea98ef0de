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
from orchestrator.snip.cuts import CostModel
from orchestrator.snip.verify import FP16_TOLERANCE, TOLERANCE, compare, verify


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    paths = {}
    for name, build in corpus.MODELS.items():
        paths[name] = folder / f"{name}.onnx"
        onnx.save(build(), str(paths[name]))
    return paths


@pytest.mark.parametrize("pieces", [1, 4, 16])
@pytest.mark.parametrize("name", list(corpus.MODELS))
def test_every_model_in_k_balanced_pieces(models, tmp_path, name, pieces):
    """snip verifies the chained pieces against onnxruntime on the uncut model (relative L2 <= 1e-4) and
    raises otherwise; here: the pieces are balanced and only activations cross the cuts."""
    result = snip(models[name], tmp_path, pieces=pieces, inputs=corpus.INPUTS.get(name))
    assert len(result.pieces) == pieces == len(result.cuts) + 1
    mean = sum(result.piece_costs) / pieces
    assert mean / 2 <= min(result.piece_costs) and max(result.piece_costs) <= 2 * mean, result.piece_costs
    graph = Graph(load_model(models[name]))
    for cut in result.cuts:
        assert cut.tensors and all(t in graph.position for t in cut.tensors), cut  # activations only
    for path in result.pieces:  # each piece holds only the weights its own nodes read
        piece = onnx.load(str(path))
        read = {i for n in piece.graph.node for i in n.input}
        assert all(t.name in read for t in piece.graph.initializer), path.name


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


@pytest.mark.parametrize("name", ["swin", "unet"])
def test_cuts_anywhere(models, tmp_path, name):
    """Five cuts after random nodes: whatever crosses them is carried, and the pipeline still reproduces
    the model (snip verifies it)."""
    graph = Graph(load_model(models[name]))
    costs = CostModel(graph, "fp32", "linear")
    live = graph.live_sets()
    allowed = [i for i in range(len(graph.order) - 1) if np.isfinite(costs.cut(i, live[i]).cost)]
    chosen = sorted(np.random.default_rng(len(name)).choice(allowed, 5, replace=False))
    at = ",".join(graph.order[i].output[0] for i in chosen)
    result = snip(models[name], tmp_path, at=at)
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

    from orchestrator.snip.cuts import _partition

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
