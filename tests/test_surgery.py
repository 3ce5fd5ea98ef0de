"""Graph surgery: each pass on models that contain its pattern and on models it must leave alone; every
optimised model computes what the original does (onnxruntime, random inputs, batch 2)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from orchestrator.surgery import optimize_bytes
from orchestrator.surgery.verify import max_difference

RNG = np.random.default_rng(7)


def model(nodes, inputs, outputs, inits=(), opset=17):
    graph = helper.make_graph(
        nodes, "corpus",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        [numpy_helper.from_array(np.asarray(v, np.float32), n) for n, v in inits])
    built = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    return onnx.shape_inference.infer_shapes(built).SerializeToString()


def node(op, ins, outs, **attrs):
    return helper.make_node(op, ins, outs, **attrs)


def weights(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def conv_identity(c, k=3, depthwise=False):
    w = np.zeros((c, 1 if depthwise else c, k, k), np.float32)
    for i in range(c):
        w[i, 0 if depthwise else i, k // 2, k // 2] = 1
    return w


IMG = [("x", ["N", 4, 8, 8])]
VEC = [("x", ["N", 6])]

# name -> (model bytes, ops that must be gone after optimisation)
WITH_PATTERN = {
    "mul_one_add_zero": (model([node("Mul", ["x", "one"], ["a"]), node("Add", ["a", "zero"], ["b"]),
                                node("Relu", ["b"], ["y"])], VEC, ["y"],
                               [("one", np.ones((1, 6))), ("zero", np.zeros(6))]), {"Mul", "Add"}),
    "identity_dropout": (model([node("Identity", ["x"], ["a"]), node("Dropout", ["a"], ["b"]),
                                node("Sigmoid", ["b"], ["y"])], VEC, ["y"]), {"Identity", "Dropout"}),
    "identity_at_output": (model([node("Relu", ["x"], ["a"]), node("Identity", ["a"], ["y"])], VEC, ["y"]),
                           {"Identity"}),
    "constant_subgraph": (model([node("Mul", ["w", "s"], ["ws"]), node("Add", ["ws", "b"], ["wb"]),
                                 node("MatMul", ["x", "wb"], ["y"])], VEC, ["y"],
                                [("w", weights(6, 5)), ("s", weights(6, 5)), ("b", weights(5))]), {"Mul", "Add"}),
    "matmul_identity": (model([node("MatMul", ["x", "eye"], ["a"]), node("Relu", ["a"], ["y"])], VEC, ["y"],
                              [("eye", np.eye(6))]), {"MatMul"}),
    "matmul_zero_plus_bias": (model([node("MatMul", ["x", "w0"], ["a"]), node("Add", ["a", "b"], ["y"])],
                                    VEC, ["y"], [("w0", np.zeros((6, 3))), ("b", weights(3))]), {"MatMul"}),
    "matmul_zero_rank3": (model([node("MatMul", ["x", "w0"], ["y"])], [("x", ["N", 5, 6])], ["y"],
                                [("w0", np.zeros((6, 3)))]), {"MatMul"}),
    "gemm_identity_bias": (model([node("Gemm", ["x", "eye", "b"], ["y"], beta=0.5)], VEC, ["y"],
                                 [("eye", np.eye(6)), ("b", weights(6))]), {"Gemm"}),
    "gemm_identity_transA": (model([node("Gemm", ["x", "eye"], ["y"], transA=1)], [("x", [6, 3])], ["y"],
                                   [("eye", np.eye(6))]), {"Gemm"}),
    "gemm_zero_bias": (model([node("Gemm", ["x", "w0", "b"], ["y"], transB=1)], VEC, ["y"],
                             [("w0", np.zeros((4, 6))), ("b", weights(1, 4))]), {"Gemm"}),
    "conv_identity_bias": (model([node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])], IMG, ["y"],
                                 [("w", conv_identity(4)), ("b", weights(4))]), {"Conv"}),
    "conv_identity_1x1": (model([node("Conv", ["x", "w"], ["y"])], IMG, ["y"], [("w", conv_identity(4, 1))]),
                          {"Conv"}),
    "conv_depthwise_identity": (model([node("Conv", ["x", "w"], ["y"], group=4, pads=[1, 1, 1, 1])], IMG, ["y"],
                                      [("w", conv_identity(4, depthwise=True))]), {"Conv"}),
    "conv_zero_bias": (model([node("Conv", ["x", "w0", "b"], ["y"], strides=[2, 2])], IMG, ["y"],
                             [("w0", np.zeros((3, 4, 3, 3))), ("b", weights(3))]), {"Conv"}),
    "downsample_three_times": (model(
        [node("AveragePool", ["x"], [f"d{i}"], kernel_shape=[2, 2], strides=[2, 2]) for i in range(3)]
        + [node("Add", ["d0", "d1"], ["s"]), node("Mul", ["s", "d2"], ["y"])], IMG, ["y"]), {"AveragePool"}),
    "same_conv_twice": (model([node("Conv", ["x", "w"], ["a"], pads=[1, 1, 1, 1]),
                               node("Conv", ["x", "w"], ["b"], pads=[1, 1, 1, 1]),
                               node("Sub", ["a", "b"], ["y"])], IMG, ["y"], [("w", weights(4, 4, 3, 3))]), {"Conv"}),
}

LEAVE_ALONE = {
    "mul_broadcasts_up": model([node("Mul", ["x", "ones"], ["y"])], [("x", [1, 6])], ["y"], [("ones", np.ones((3, 6)))]),
    "mul_two": model([node("Mul", ["x", "two"], ["y"])], VEC, ["y"], [("two", np.full(6, 2.0))]),
    "matmul_dense": model([node("MatMul", ["x", "w"], ["y"])], VEC, ["y"], [("w", weights(6, 4))]),
    "matmul_near_identity": model([node("MatMul", ["x", "w"], ["y"])], VEC, ["y"], [("w", np.eye(6) * 1.001)]),
    "matmul_permutation": model([node("MatMul", ["x", "w"], ["y"])], VEC, ["y"], [("w", np.eye(6)[::-1])]),
    "conv_identity_strided": model([node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2])], IMG, ["y"],
                                   [("w", conv_identity(4))]),
    "conv_identity_no_pad": model([node("Conv", ["x", "w"], ["y"])], IMG, ["y"], [("w", conv_identity(4))]),
    "gemm_identity_alpha": model([node("Gemm", ["x", "eye"], ["y"], alpha=2.0)], VEC, ["y"], [("eye", np.eye(6))]),
    "different_attrs": model([node("AveragePool", ["x"], ["a"], kernel_shape=[2, 2], strides=[2, 2]),
                              node("MaxPool", ["x"], ["b"], kernel_shape=[2, 2], strides=[2, 2]),
                              node("AveragePool", ["x"], ["c"], kernel_shape=[2, 2], strides=[1, 1]),
                              node("Add", ["a", "b"], ["y"]), node("Relu", ["c"], ["z"])], IMG, ["y", "z"]),
    "resnet_block": model([node("Conv", ["x", "w1", "b1"], ["a"], pads=[1, 1, 1, 1]), node("Relu", ["a"], ["r"]),
                           node("Conv", ["r", "w2"], ["c"], pads=[1, 1, 1, 1]), node("Add", ["c", "x"], ["s"]),
                           node("Relu", ["s"], ["y"])], IMG, ["y"],
                          [("w1", weights(4, 4, 3, 3)), ("b1", weights(4)), ("w2", weights(4, 4, 3, 3))]),
}


def ops(data: bytes) -> list[str]:
    return [n.op_type for n in onnx.load_from_string(data).graph.node]


@pytest.mark.parametrize("name", WITH_PATTERN)
def test_pass_removes_its_pattern_and_keeps_outputs(name):
    original, gone = WITH_PATTERN[name]
    optimized, report = optimize_bytes(original, name=name)
    left = ops(optimized)
    for op in gone:
        assert left.count(op) < ops(original).count(op), f"{name}: {op} left in {left}\n{report.table()}"
    assert report.after.nodes <= report.before.nodes or name.startswith(("matmul_zero", "gemm_zero", "conv_zero"))
    assert report.after.flops < report.before.flops, report.table()
    assert max_difference(original, optimized) < 1e-5
    onnx.checker.check_model(onnx.load_from_string(optimized))


@pytest.mark.parametrize("name", LEAVE_ALONE)
def test_pass_leaves_other_models_unchanged(name):
    original = LEAVE_ALONE[name]
    optimized, report = optimize_bytes(original, name=name)
    assert sorted(ops(optimized)) == sorted(ops(original)), report.table()
    assert report.after.flops == report.before.flops
    assert max_difference(original, optimized) < 1e-6


def test_report_names_each_pass_and_what_it_removed():
    _, report = optimize_bytes(WITH_PATTERN["downsample_three_times"][0])
    cse = [p for p in report.passes if p.name == "eliminate_cse"][0]
    assert cse.removed_ops == {"AveragePool": 2}
    assert cse.before.flops - cse.after.flops == 2 * 4 * 4 * 4  # two pools of N=1 x 4 x 4 x 4
    folded = optimize_bytes(WITH_PATTERN["constant_subgraph"][0])[1].passes[0]
    assert folded.removed_ops == {"Mul": 1, "Add": 1} and folded.before.weight_bytes > folded.after.weight_bytes
    linear = [p for p in optimize_bytes(WITH_PATTERN["matmul_identity"][0])[1].passes if p.name == "replace_trivial"]
    assert "identity" in linear[0].notes[0]
    assert "replace_trivial" in report.table() and "total: nodes 5 -> 3" in report.table()


def test_optimised_snippets_pipeline_matches_on_cpu(tmp_path, monkeypatch):
    from orchestrator import Orchestrator, cache

    monkeypatch.setenv("ORCHESTRATOR_CACHE", str(tmp_path / "cache"))
    (tmp_path / "m.onnx").write_bytes(WITH_PATTERN["conv_identity_bias"][0])
    text = ("name: opt\ndims: {N: {min: 1, opt: 1, max: 2}}\n"
            "inputs: {x: {dtype: float32, shape: [N, 4, 8, 8]}}\noutputs: [y]\n"
            "snippets: {m: {onnx: m.onnx, optimize: OPT}}\nsteps:\n  - snippet: m\n")
    x = RNG.standard_normal((2, 4, 8, 8)).astype(np.float32)
    results = {}
    for flag in ("false", "true"):
        (tmp_path / f"{flag}.yaml").write_text(text.replace("OPT", flag))
        results[flag] = Orchestrator.from_yaml(tmp_path / f"{flag}.yaml", device="cpu").run({"x": x})["y"]
    np.testing.assert_allclose(results["true"], results["false"], rtol=1e-6, atol=1e-6)
    cached = list((tmp_path / "cache" / "optimized").glob("*.onnx"))
    assert len(cached) == 1 and "Conv" not in ops(cache.read(cached[0]))  # a checksummed cache entry


def test_cli_optimize_writes_model_and_report(tmp_path, capsys):
    from orchestrator.cli import main

    (tmp_path / "in.onnx").write_bytes(WITH_PATTERN["same_conv_twice"][0])
    assert main(["optimize", str(tmp_path / "in.onnx"), "-o", str(tmp_path / "out.onnx")]) == 0
    assert ops((tmp_path / "out.onnx").read_bytes()).count("Conv") == 1
    assert "eliminate_cse" in capsys.readouterr().out
    assert main(["optimize", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "o.onnx")]) == 1
    assert "missing.onnx" in capsys.readouterr().err


def test_optimize_failure_is_reported_at_the_snippets_yaml_line(tmp_path, monkeypatch):
    from orchestrator.errors import ConfigError
    from orchestrator.pipeline.load import load_pipeline
    from orchestrator.surgery import optimize

    def broken(model):
        raise RuntimeError("library says no")

    monkeypatch.setenv("ORCHESTRATOR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(optimize, "PASSES", (("fold_constants", "onnx-graphsurgeon", broken),))
    (tmp_path / "m.onnx").write_bytes(WITH_PATTERN["identity_dropout"][0])
    (tmp_path / "p.yaml").write_text("inputs: {x: {dtype: float32, shape: [N, 6]}}\noutputs: [y]\n"
                                     "snippets:\n  m:\n    onnx: m.onnx\n    optimize: true\n"
                                     "steps:\n  - snippet: m\n")
    with pytest.raises(ConfigError) as info:
        load_pipeline(tmp_path / "p.yaml")
    assert str(info.value) == (f"{tmp_path / 'p.yaml'}:6:15: snippets.m.optimize: m.onnx: pass fold_constants "
                               f"(onnx-graphsurgeon) failed: library says no (optimize: false runs the model "
                               f"as written)")
    assert not (tmp_path / "cache" / "optimized").exists() or not any((tmp_path / "cache" / "optimized").iterdir())


def test_models_onnxruntime_cannot_run_are_optimised_but_not_compared():
    foo = helper.make_node("Foo", ["x"], ["y"], domain="my.ops")
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["a"]), foo], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    graph.node[1].input[0] = "a"
    custom = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("my.ops", 1)])
    optimized, _ = optimize_bytes(custom.SerializeToString())
    assert ops(optimized) == ["Foo"] and max_difference(custom.SerializeToString(), optimized) is None


def test_snippet_bytes_are_optimised_once_then_read_from_the_cache(tmp_path, monkeypatch):
    from orchestrator.pipeline.load import load_pipeline
    from orchestrator.surgery import optimize, snippet_onnx_bytes

    (tmp_path / "m.onnx").write_bytes(WITH_PATTERN["same_conv_twice"][0])
    (tmp_path / "p.yaml").write_text("inputs: {x: {dtype: float32, shape: [N, 4, 8, 8]}}\noutputs: [y]\n"
                                     "snippets: {m: {onnx: m.onnx, optimize: true}}\nsteps:\n  - snippet: m\n")
    monkeypatch.setenv("ORCHESTRATOR_CACHE", str(tmp_path / "cache"))
    info = load_pipeline(tmp_path / "p.yaml").snippets["m"]  # validation optimises and caches
    monkeypatch.setattr(optimize, "PASSES", ())  # a second optimisation would now fail
    data = snippet_onnx_bytes(info)
    assert ops(data).count("Conv") == 1
    plain = snippet_onnx_bytes(__import__("dataclasses").replace(info, optimize=False))
    assert plain == (tmp_path / "m.onnx").read_bytes()


@pytest.mark.gpu
def test_optimised_snippet_runs_on_the_gpu_like_the_cpu(tmp_path):
    from orchestrator import Orchestrator

    (tmp_path / "m.onnx").write_bytes(WITH_PATTERN["same_conv_twice"][0])
    (tmp_path / "p.yaml").write_text("dims: {N: {min: 1, opt: 2, max: 2}}\n"
                                     "inputs: {x: {dtype: float32, shape: [N, 4, 8, 8]}}\noutputs: [y]\n"
                                     "snippets: {m: {onnx: m.onnx, optimize: true}}\nsteps:\n  - snippet: m\n")
    x = {"x": RNG.standard_normal((2, 4, 8, 8)).astype(np.float32)}
    with Orchestrator.from_yaml(tmp_path / "p.yaml", device="cuda") as gpu:
        got = gpu.run(x)["y"]
    want = Orchestrator.from_yaml(tmp_path / "p.yaml", device="cpu").run(x)["y"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
