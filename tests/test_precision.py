"""fp16/bf16 as part of the model (orchestrator.precision), the precision path TensorRT's version
allows (backends/cuda/trt.py), and the snippet options that steer both."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import ROOT, write
from onnx import TensorProto, helper, numpy_helper

from orchestrator import precision
from orchestrator.backends.cuda import trt as compat
from orchestrator.backends.cuda.driver import DeviceInfo
from orchestrator.backends.cuda.snippet import EngineCache
from orchestrator.errors import CompileError, ConfigError
from orchestrator.pipeline.load import load_pipeline
from orchestrator.precision import Conversion, convert

FLOAT, FP16, BF16 = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16
rng = np.random.default_rng(0)


def model(nodes, inputs, outputs, weights=()) -> bytes:
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info(n, FLOAT, s) for n, s in inputs],
                              [helper.make_tensor_value_info(n, FLOAT, s) for n, s in outputs],
                              [numpy_helper.from_array(w, n) for n, w in weights])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10).SerializeToString()


def conv_net() -> bytes:
    """conv -> relu (also an output, and read by the next conv) -> resize (kept fp32 by the converter)."""
    seeded = np.random.default_rng(1)
    w1 = seeded.standard_normal((8, 3, 3, 3)).astype(np.float32)
    w2 = seeded.standard_normal((8, 8, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["skip"]),
             helper.make_node("Conv", ["skip", "w2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Resize", ["c2", "", "scales"], ["up"], mode="nearest")]
    scales = np.array([1, 1, 2, 2], np.float32)
    return model(nodes, [("x", [1, 3, 8, 8])], [("skip", [1, 8, 8, 8]), ("up", [1, 8, 16, 16])],
                 [("w1", w1), ("w2", w2), ("scales", scales)])


def layer_norm() -> bytes:
    nodes = [helper.make_node("ReduceMean", ["x"], ["mean"], axes=[-1], name="mean"),
             helper.make_node("Sub", ["x", "mean"], ["d"]),
             helper.make_node("Mul", ["d", "d"], ["d2"]),
             helper.make_node("ReduceMean", ["d2"], ["var"], axes=[-1], name="variance"),
             helper.make_node("Add", ["var", "eps"], ["ve"]),
             helper.make_node("Sqrt", ["ve"], ["sd"]),
             helper.make_node("Div", ["d", "sd"], ["y"])]
    return model(nodes, [("x", [2, 16])], [("y", [2, 16])], [("eps", np.array(1e-5, np.float32))])


def run(data: bytes, feeds: dict) -> list[np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)


def io_types(data: bytes) -> dict[str, int]:
    graph = onnx.load_from_string(data).graph
    return {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.output]}


def computes_in(data: bytes, node: str) -> int:
    """The element type a node computes in (that of its first output)."""
    found = next(n for n in onnx.load_from_string(data).graph.node if n.name == node)
    return value_types(data)[found.output[0]]


def value_types(data: bytes) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(onnx.load_from_string(data)).graph
    return {v.name: v.type.tensor_type.elem_type for v in [*inferred.value_info, *inferred.output]}


@pytest.mark.parametrize("name", ["classify_a", "classify_b", "classify_c", "cascade_small", "matting_encoder"])
def test_converted_snippets_keep_float32_io_and_compute_close(name):
    original = (ROOT / "snippets" / f"{name}.onnx").read_bytes()
    converted = convert(original, Conversion("fp16"), name=name)
    onnx.checker.check_model(onnx.load_from_string(converted))
    assert io_types(converted) == io_types(original)
    feeds = {i.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32)
             for i in ort.InferenceSession(original).get_inputs()}
    for want, got in zip(run(original, feeds), run(converted, feeds), strict=True):
        assert got.dtype == np.float32
        assert np.abs(got - want).max() <= 1e-2 * np.abs(want).max()
    assert FP16 in value_types(converted).values(), "nothing computes in fp16"


def test_an_output_read_inside_the_graph_feeds_the_fp16_readers():
    converted = convert(conv_net(), Conversion("fp16"))
    feeds = {"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)}
    for want, got in zip(run(conv_net(), feeds), run(converted, feeds), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-2 * np.abs(want).max())


def test_hwc8_ports_become_float16_also_where_a_float32_op_meets_them():
    # 'up' comes from Resize, which the converter keeps in float32: a cast to fp16 must be added
    converted = convert(conv_net(), Conversion("fp16", fp16_ports=("x", "up")))
    assert io_types(converted) == {"x": FP16, "skip": FLOAT, "up": FP16}
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    skip, up = run(converted, {"x": x.astype(np.float16)})
    assert (skip.dtype, up.dtype) == (np.float32, np.float16)
    want = run(conv_net(), {"x": x})
    np.testing.assert_allclose(up, want[1], rtol=0, atol=2e-2 * np.abs(want[1]).max())


def test_an_fp16_input_read_by_a_float32_op_gets_one_cast():
    data = model([helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest")],
                 [("x", [1, 2, 4, 4])], [("y", [1, 2, 8, 8])], [("scales", np.array([1, 1, 2, 2], np.float32))])
    converted = convert(data, Conversion("fp16", fp16_ports=("x",)))
    x = rng.standard_normal((1, 2, 4, 4)).astype(np.float16)
    (y,) = run(converted, {"x": x})
    np.testing.assert_array_equal(y, np.repeat(np.repeat(x.astype(np.float32), 2, 2), 2, 3))


def test_keep_fp32_by_op_type_and_by_node_name():
    x = rng.standard_normal((2, 16)).astype(np.float32) * 300  # d*d would overflow fp16 (> 65504)
    fp16_all = convert(layer_norm(), Conversion("fp16"))
    assert computes_in(fp16_all, "variance") == FP16
    by_op = convert(layer_norm(), Conversion("fp16", keep_fp32=("ReduceMean", "Mul")))
    assert computes_in(by_op, "variance") == FLOAT and computes_in(by_op, "mean") == FLOAT
    assert computes_in(by_op, "Mul_2") == FLOAT and computes_in(by_op, "Sub_1") == FP16
    by_name = convert(layer_norm(), Conversion("fp16", keep_fp32=("variance",)))
    assert computes_in(by_name, "variance") == FLOAT and computes_in(by_name, "mean") == FP16
    (want,) = run(layer_norm(), {"x": x})
    (kept,) = run(by_op, {"x": x})
    assert np.abs(kept - want).max() < 2e-2


def test_bf16_retypes_every_fp16_and_rounds_weights_from_fp32():
    original = (ROOT / "snippets" / "classify_a.onnx").read_bytes()
    converted = onnx.load_from_string(convert(original, Conversion("bf16"), name="classify_a"))
    onnx.checker.check_model(converted)
    text = str(converted.graph)
    assert "data_type: 10" not in text and "elem_type: 10" not in text  # no FLOAT16 left
    weights = {t.name: t for t in onnx.load_from_string(original).graph.initializer}
    bf = [t for t in converted.graph.initializer if t.data_type == BF16]
    assert bf, "no weight became bf16"
    for tensor in bf:
        source = numpy_helper.to_array(weights[tensor.name]).astype(np.float32).ravel()
        bits = np.frombuffer(tensor.raw_data, np.uint16).astype(np.uint32) << 16
        np.testing.assert_allclose(bits.view(np.float32), source, rtol=2 ** -8, atol=0)
    casts = [helper.get_attribute_value(n.attribute[0]) for n in converted.graph.node if n.op_type == "Cast"]
    assert BF16 in casts and FP16 not in casts


def test_unconvertible_precision_is_a_compile_error():
    with pytest.raises(CompileError, match="cannot convert to 'int8'"):
        convert(layer_norm(), Conversion("int8"), name="ln")


def test_converted_models_are_cached_by_content_settings_and_converter(tmp_path, monkeypatch):
    data = layer_norm()
    first = precision.converted(data, Conversion("fp16"), tmp_path, name="ln")
    monkeypatch.setattr(precision, "convert", lambda *a, **k: pytest.fail("not read from the cache"))
    assert precision.converted(data, Conversion("fp16"), tmp_path, name="ln") == first
    calls = []
    monkeypatch.setattr(precision, "convert", lambda *a, **k: calls.append(1) or b"new")
    precision.converted(data, Conversion("fp16", keep_fp32=("Mul",)), tmp_path, name="ln")
    monkeypatch.setattr(precision, "converter_version", lambda: "onnxconverter-common 99")
    precision.converted(data, Conversion("fp16"), tmp_path, name="ln")
    assert len(calls) == 2
    assert len(list((tmp_path / "converted").glob("ln-*.onnx"))) == 3


# ---- the precision path by TensorRT version ------------------------------------------------------------
@pytest.fixture
def tensorrt(monkeypatch):
    """Pretend TensorRT of a given major version is installed (only the version is asked)."""
    def use(major: int) -> None:
        monkeypatch.setattr(compat, "major", lambda: major)
        monkeypatch.setattr(compat, "version", lambda: f"{major}.0.0")
    return use


@pytest.mark.parametrize(("major", "requested", "keep", "want"), [
    (8, "auto", False, "flags"), (10, "auto", False, "flags"), (11, "auto", False, "converted"),
    (8, "auto", True, "converted"), (10, "auto", True, "converted"), (8, "converted", False, "converted"),
    (10, "flags", False, "flags"), (11, "converted", False, "converted")])
def test_precision_path_by_version(tensorrt, major, requested, keep, want):
    tensorrt(major)
    assert compat.precision_path("s", "fp16", requested, keep) == want
    assert compat.precision_path("s", "fp32", requested, keep) == "fp32"


def test_flags_on_tensorrt_11_and_bf16_on_8_are_refused(tensorrt):
    tensorrt(11)
    with pytest.raises(CompileError, match="snippet 's': precision_path: flags needs TensorRT <= 10"):
        compat.precision_path("s", "fp16", "flags", False)
    tensorrt(8)
    with pytest.raises(CompileError, match="bf16 needs TensorRT >= 10"):
        compat.precision_path("s", "bf16", "auto", False)


def test_unknown_tensorrt_major_runs_the_nearest_known_path_with_one_warning(monkeypatch, caplog):
    compat.major.cache_clear()
    monkeypatch.setattr(compat, "version", lambda: "12.1.0")
    try:
        assert compat.major() == 11 and compat.major() == 11
    finally:
        compat.major.cache_clear()
    warnings_ = [r for r in caplog.records if "TensorRT 12.1.0 is not a version" in r.getMessage()]
    assert len(warnings_) == 1


def test_engine_key_carries_the_path_and_the_converter(tensorrt, workdir, monkeypatch):
    tensorrt(10)
    write(workdir, "inputs:\n  x: {dtype: float32, shape: [N, 4]}\noutputs: [y]\n"
                   "snippets:\n  relu: {onnx: relu.onnx, precision: fp16}\nsteps:\n  - snippet: relu\n")
    info = load_pipeline(workdir / "pipeline.yaml").snippets["relu"]
    engines = EngineCache(workdir / "cache", DeviceInfo(0, "H100", (9, 0)))
    data, profile = (workdir / "relu.onnx").read_bytes(), {}

    def key(**changes) -> str:
        import dataclasses
        return engines.key(dataclasses.replace(info, **changes), data, profile, 1)

    keys = {key(), key(precision_path="converted"), key(precision_path="converted", keep_fp32=("Relu",))}
    monkeypatch.setattr(precision, "converter_version", lambda: "onnxconverter-common 99")
    keys |= {key(precision_path="converted"), key()}
    assert len(keys) == 4  # the flags key ignores the converter; every converted setting changes it


# ---- the snippet options ----------------------------------------------------------------------------
PIPELINE = """\
inputs:
  x: {{dtype: float32, shape: [N, 4]}}
outputs: [y]
snippets:
  relu: {snippet}
steps:
  - snippet: relu
"""


@pytest.mark.parametrize(("snippet", "message"), [
    ("{onnx: relu.onnx, precision: fp16, keep_fp32: [Relu, Rleu]}",
     "snippets.relu.keep_fp32[1]: relu.onnx has no op type or node named 'Rleu'; did you mean 'Relu'?"),
    ("{onnx: relu.onnx, precision_path: converted}",
     "snippets.relu.precision_path: 'precision_path' applies to fp16/bf16 snippets (this one is fp32)"),
    ("{onnx: relu.onnx, keep_fp32: [Relu]}",
     "snippets.relu.keep_fp32: 'keep_fp32' applies to fp16/bf16 snippets"),
    ("{onnx: relu.onnx, precision: fp16, precision_path: flags, keep_fp32: [Relu]}",
     "snippets.relu.keep_fp32: keep_fp32 needs the converted precision path"),
    ("{onnx: relu.onnx, precision: fp16, precision_path: typed}",
     "snippets.relu.precision_path: expected 'auto', 'flags' or 'converted'"),
])
def test_bad_precision_options_are_one_line_errors(workdir, snippet, message):
    path = write(workdir, PIPELINE.format(snippet=snippet))
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    text = str(info.value)
    assert "pipeline.yaml:5:" in text and message in text, text


def test_precision_options_reach_the_snippet(workdir):
    path = write(workdir, PIPELINE.format(
        snippet="{onnx: relu.onnx, precision: fp16, precision_path: converted, keep_fp32: [Relu]}"))
    info = load_pipeline(path).snippets["relu"]
    assert (info.precision_path, info.keep_fp32) == ("converted", ("Relu",))


@pytest.mark.parametrize(("keep", "fp16_ports"), [((), ("skip",)), (("Relu",), ()), (("Relu",), ("skip", "feats")),
                                                  (("Conv",), ("x",))])
def test_kept_ops_and_fp16_ports_on_an_encoder_with_two_outputs(keep, fp16_ports):
    """matting_encoder: 'skip' is an output that the next conv also reads; Relu writes both outputs."""
    original = (ROOT / "snippets" / "matting_encoder.onnx").read_bytes()
    converted = convert(original, Conversion("fp16", keep_fp32=keep, fp16_ports=fp16_ports))
    onnx.checker.check_model(onnx.load_from_string(converted))
    types = io_types(converted)
    assert {n for n, t in types.items() if t == FP16} == set(fp16_ports)
    x = rng.standard_normal((1, 8, 32, 32)).astype(np.float32)
    feeds = {"x": x.astype(np.float16) if "x" in fp16_ports else x}
    for want, got in zip(run(original, {"x": x}), run(converted, feeds), strict=True):
        assert np.abs(got.astype(np.float32) - want).max() <= 1e-2 * np.abs(want).max()


@pytest.mark.parametrize("name", ["resnet_bn", "resnet_folded", "vit", "bert", "swin", "unet"])
def test_exporter_style_architectures_convert(name):
    """The snip corpus (tests/snip_corpus.py: Constant nodes, shared weights, shape subgraphs, LayerNorm,
    GELU, attention, window reshapes, long skips) converts to a valid fp16 graph that computes the same."""
    import snip_corpus

    original = snip_corpus.MODELS[name]().SerializeToString()
    converted = convert(original, Conversion("fp16"), name=name)
    onnx.checker.check_model(onnx.load_from_string(converted))
    assert io_types(converted) == io_types(original)
    assert FP16 in value_types(converted).values()
    seeded = np.random.default_rng(0)
    feeds = {i.name: seeded.integers(0, 10, [d if isinstance(d, int) else 2 for d in i.shape]).astype(np.int64)
             if "int64" in i.type else
             seeded.standard_normal([d if isinstance(d, int) else 2 for d in i.shape]).astype(np.float32)
             for i in ort.InferenceSession(original).get_inputs()}
    for want, got in zip(run(original, feeds), run(converted, feeds), strict=True):
        assert np.abs(got - want).max() <= 1e-2 * np.abs(want).max()


def test_builder_optimization_level_from_the_environment_changes_the_engine_key(tensorrt, workdir, monkeypatch):
    from orchestrator.backends.cuda import snippet
    from orchestrator.errors import OrchestratorError

    tensorrt(10)
    write(workdir, "inputs:\n  x: {dtype: float32, shape: [N, 4]}\noutputs: [y]\n"
                   "snippets:\n  relu: {onnx: relu.onnx}\nsteps:\n  - snippet: relu\n")
    info = load_pipeline(workdir / "pipeline.yaml").snippets["relu"]
    data = (workdir / "relu.onnx").read_bytes()
    keys = set()
    for level in ("", "0", "5"):
        monkeypatch.setenv(snippet.LEVEL_VARIABLE, level)
        engines = EngineCache(workdir / "cache", DeviceInfo(0, "H100", (9, 0)))
        assert engines.level == (int(level) if level else None)
        keys.add(engines.key(info, data, {}, 1))
    assert len(keys) == 3
    for bad in ("6", "fast", "-1"):
        monkeypatch.setenv(snippet.LEVEL_VARIABLE, bad)
        with pytest.raises(OrchestratorError, match=r"ORCHESTRATOR_TRT_OPT_LEVEL must be a builder optimisation level"):
            snippet.optimization_level()


def test_an_hwc8_port_passed_straight_through_and_casts_with_more_attributes():
    """An input that is also an output stays one float16 tensor; a Cast is recognised by its 'to'."""
    data = model([helper.make_node("Relu", ["x"], ["y"])], [("x", [1, 8, 4, 4])], [("y", [1, 8, 4, 4])])
    graph = onnx.load_from_string(data)
    graph.graph.output.append(helper.make_tensor_value_info("x", FLOAT, [1, 8, 4, 4]))
    converted = convert(graph.SerializeToString(), Conversion("fp16", fp16_ports=("x",)))
    assert io_types(converted) == {"x": FP16, "y": FLOAT}
    x = rng.standard_normal((1, 8, 4, 4)).astype(np.float16)
    y, same = run(converted, {"x": x})
    np.testing.assert_array_equal(same, x)
    np.testing.assert_allclose(y, np.maximum(x.astype(np.float32), 0), rtol=1e-3)
