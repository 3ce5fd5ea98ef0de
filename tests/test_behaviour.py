"""Behaviour that one-line bugs used to get past the suite with: kernel launch geometry and derived scalars,
host scalars packed as the kernel reads them, dimension bounds at both ends, the while iteration limit,
conservative liveness around loops, and snip's verification failing when the pieces disagree."""

from __future__ import annotations

import sys
import types

import numpy as np
import onnx
import pytest
from conftest import ROOT, write

from orchestrator import Orchestrator
from orchestrator.dtypes import C_TYPES, DTYPES, to_numpy
from orchestrator.errors import ExecutionError, InputError
from orchestrator.kernels.signature import bind_symbols, derived_scalar, launch_config, out_shapes
from orchestrator.pipeline.load import load_pipeline
from orchestrator.planning import analyse, plan_memory

GRID_KERNEL = """\
code: |
  extern "C" __global__ void tile(const float* src, float* dst, int rows, float gain) {}
entry: tile
args:
  - {name: src, kind: in, dtype: float32, shape: [N, C]}
  - {name: dst, kind: out, dtype: float32, shape: [N * 2, "cdiv(C, 3)"]}
  - {name: rows, kind: scalar, dtype: int32, value: N * C + 1}
  - {name: gain, kind: scalar, dtype: float32}
launch: {grid: ["cdiv(C, 4)", N - 1], block: [32, 4]}
reference: ref.py:scale
"""

KERNEL_YAML_CUBE = GRID_KERNEL.replace('launch: {grid: ["cdiv(C, 4)", N - 1], block: [32, 4]}',
                                       "launch: {threads: dst, block: [16, 2, 4]}").replace(
    'shape: [N * 2, "cdiv(C, 3)"]', "shape: [N, C]").replace(
    "  - {name: gain, kind: scalar, dtype: float32}", "  - {name: factor, kind: scalar, dtype: float32}")

KERNELS = """\
inputs:
  x: {dtype: float32, shape: [N, C]}
outputs: [y, z]
kernels:
  scale: scale.yaml
  tile: tile.yaml
steps:
  - kernel: scale
    args: {src: x, dst: y, factor: 2.0}
  - kernel: tile
    args: {src: x, dst: z, gain: 1.5}
"""


@pytest.fixture
def kernels(workdir):
    (workdir / "tile.yaml").write_text(GRID_KERNEL)
    return load_pipeline(write(workdir, KERNELS)).kernels


@pytest.mark.parametrize(("shape", "blocks"), [((1, 1), 1), ((1, 128), 1), ((1, 129), 2), ((2, 128), 2),
                                               ((3, 100), 3), ((5, 256), 10)])
def test_one_thread_per_element_rounds_the_grid_up(kernels, shape, blocks):
    scale = kernels["scale"]  # launch: {threads: dst, block: 128}
    env = bind_symbols(scale, {"src": shape})
    grid, block = launch_config(scale, env, {"src": shape, **out_shapes(scale, env)})
    assert grid == (blocks, 1, 1) and block == (128, 1, 1)
    assert grid[0] * block[0] >= shape[0] * shape[1]  # every element has a thread


@pytest.mark.parametrize(("shape", "grid"), [((2, 8), (2, 1, 1)), ((3, 9), (3, 2, 1)), ((1, 1), (1, 1, 1)),
                                             ((5, 17), (5, 4, 1))])
def test_explicit_grid_output_shapes_and_derived_scalars(kernels, shape, grid):
    tile = kernels["tile"]
    env = bind_symbols(tile, {"src": shape})
    n, c = shape
    assert env == {"N": n, "C": c}
    assert out_shapes(tile, env) == {"dst": (n * 2, -(-c // 3))}
    assert launch_config(tile, env, {"src": shape}) == (grid, (32, 4, 1))  # [cdiv(C, 4), N - 1], at least 1
    assert derived_scalar(tile, "rows", env) == n * c + 1
    assert derived_scalar(tile, "gain", env) is None  # bound by the step, not derived


def test_kernel_input_of_the_wrong_shape_names_the_argument(kernels):
    with pytest.raises(ExecutionError, match=r"kernel 'scale': argument 'src' of shape \[2, 3, 4\]: rank 3"):
        bind_symbols(kernels["scale"], {"src": (2, 3, 4)})


def test_host_scalars_are_packed_as_the_kernel_reads_them():
    """Each scalar parameter is packed in the C type the kernel declares for its dtype (an int32 count
    packed as float32 would be read as a garbage int on the GPU, which the CPU reference never sees)."""
    from orchestrator.backends.cuda.kernel import KernelLaunch
    from orchestrator.pipeline.ir import KernelArgInfo
    from orchestrator.pipeline.schema import LaunchSpec

    args = tuple(KernelArgInfo(f"s_{d}", "scalar", d, None, None) for d in DTYPES)
    info = types.SimpleNamespace(args=(KernelArgInfo("t", "in", "float32", ("N",), None), *args),
                                 launch=LaunchSpec(threads="t", block=64), name="k")
    launch = KernelLaunch(types.SimpleNamespace(info=info))
    assert launch.values["t"].dtype == np.uint64  # a device pointer
    sizes = {"float": 4, "half_t": 2, "signed char": 1, "unsigned char": 1, "int": 4, "long long": 8, "bool": 1}
    for dtype in DTYPES:
        packed = launch.values[f"s_{dtype}"]
        assert packed.dtype == to_numpy(dtype) and packed.itemsize == sizes[C_TYPES[dtype]], dtype
        launch.set(f"s_{dtype}", 3)
        assert packed.tobytes() == np.array(3, to_numpy(dtype)).tobytes(), dtype
    launch.set("s_int32", 7.0)
    assert launch.values["s_int32"].tobytes() == np.int32(7).tobytes()
    addresses = [int(a) for a in launch.pointers]
    assert addresses == [v.ctypes.data for v in launch.values.values()]  # cuLaunchKernel's kernelParams


BOUNDED = "dims:\n  N: {min: 2, opt: 2, max: 3}\n"


@pytest.mark.parametrize(("n", "ok"), [(1, False), (2, True), (3, True), (4, False)])
def test_dimension_bounds_are_inclusive(workdir, n, ok):
    orch = Orchestrator(write(workdir, BOUNDED + (workdir / "base.yaml").read_text()), device="cpu")
    x = {"x": np.ones((n, 4), np.float32), "flag": 1}
    if ok:
        np.testing.assert_array_equal(orch.run(x)["z"], np.full((n, 4), 2, np.float32))
    else:
        with pytest.raises(InputError, match=f"dimension N = {n} is outside dims.N .*min 2, max 3"):
            orch.run(x)


@pytest.mark.parametrize(("limit", "start", "iterations"), [(1, 16.0, 1), (2, 16.0, 2), (5, 16.0, 4),
                                                            (3, 1.0, 0)])
def test_while_stops_at_max_iterations_exactly(workdir, limit, start, iterations):
    from test_control_flow import WHILE, Log

    log = Log()
    orch = Orchestrator(write(workdir, WHILE % limit), device="cpu", observer=log)
    out = orch.run({"x": np.array([[start]], np.float32), "limit": 1.0})
    label = f"{iterations} iteration{'' if iterations == 1 else 's'}"
    assert log.branches == [label + (" (max_iterations reached)" if iterations == limit else "")]
    np.testing.assert_allclose(out["x_final"], [[start / 2**iterations]])


LOOP = """\
inputs:
  x: {dtype: float32, shape: [1, 4]}
  flag: {dtype: int32, host: true}
outputs: [out]
snippets:
  add: {onnx: add.onnx}
kernels:
  scale: scale.yaml
steps:
  - kernel: scale
    args: {src: x, dst: outer, factor: 1.0}
  - kernel: scale
    args: {src: x, dst: state, factor: 1.0}
  - while: flag
    max_iterations: 3
    carry: {state: nxt}
    body:
      - snippet: add
        inputs: {a: state, b: outer}
        outputs: {c: t1}
      - kernel: scale
        args: {src: t1, dst: nxt, factor: 0.5}
  - kernel: scale
    args: {src: state, dst: out, factor: 1.0}
"""


@pytest.mark.parametrize("max_paths", [1, 1024])
def test_tensor_read_in_every_iteration_keeps_its_memory(workdir, max_paths):
    """'outer' is read by the body's first step in every iteration: nothing written later in the body may
    take its memory, with exact paths or the conservative single path alike."""
    pipeline = load_pipeline(write(workdir, LOOP))
    live = analyse(pipeline, max_paths=max_paths)
    assert live.exact == (max_paths > 1)
    for later in ("t1", "nxt"):
        assert frozenset(("outer", later)) in live.conflicts
    plan = plan_memory(pipeline, dict.fromkeys(("outer", "state", "t1", "nxt", "out"), 16), live)
    assert plan.offsets["outer"] not in (plan.offsets["t1"], plan.offsets["nxt"])


def test_snip_refuses_pieces_that_do_not_reproduce_the_model(tmp_path, monkeypatch):
    """The verification compares with the original model at 1e-4 (relative L2): a 1e-3 discrepancy fails
    with the output named, a 1e-6 one passes."""
    import onnxruntime

    sys.path.insert(0, str(ROOT / "snippets"))
    import generate

    from orchestrator.snip import SnipError, snip

    model = tmp_path / "classify.onnx"
    onnx.save(generate.full_model("classify"), str(model))
    original = onnxruntime.InferenceSession

    def perturbed(scale):
        def session(path, *args, **kwargs):
            inner = original(path, *args, **kwargs)
            if str(path) != str(model):
                return inner
            return types.SimpleNamespace(get_inputs=inner.get_inputs, get_outputs=inner.get_outputs, run=lambda names, feeds: [
                o * np.float32(1 + scale) for o in inner.run(names, feeds)])
        return session

    monkeypatch.setattr(onnxruntime, "InferenceSession", perturbed(1e-3))
    with pytest.raises(SnipError, match=r"do not reproduce output 'logits' \(relative L2 0\.00(1|099)"):
        snip(model, tmp_path / "bad", at="s1")
    monkeypatch.setattr(onnxruntime, "InferenceSession", perturbed(1e-6))
    assert snip(model, tmp_path / "good", at="s1").max_abs_error > 0


def test_threads_launch_counts_every_block_dimension(workdir):
    (workdir / "cube.yaml").write_text(KERNEL_YAML_CUBE)
    text = KERNELS.replace("tile: tile.yaml", "tile: cube.yaml").replace("gain: 1.5", "factor: 1.5")
    tile = load_pipeline(write(workdir, text)).kernels["tile"]
    for count, blocks in ((128, 1), (129, 2), (1, 1), (1000, 8)):
        env = bind_symbols(tile, {"src": (1, count)})
        assert launch_config(tile, env, {"src": (1, count), "dst": (1, count)}) == ((blocks, 1, 1), (16, 2, 4))


@pytest.mark.parametrize("text", ["a < -b", "a < f(x)", "a < True", "a < 'x'", "a < [1]", "a < b.c", "a.b < 1",
                                  "a < 1 < 2", "a in b", "-a < 1", "not", "a < not b"])
def test_conditions_outside_the_grammar_are_rejected_with_examples(text):
    from orchestrator.pipeline.conditions import parse_condition

    with pytest.raises(ValueError, match=r"is not a valid condition \(expected e.g. 'flag'"):
        parse_condition(text)


def test_negated_comparisons_keep_their_negation():
    from orchestrator.pipeline.conditions import parse_condition

    for op in ("<", "<=", ">", ">=", "==", "!="):
        c = parse_condition(f"not score {op} -2")
        assert (c.subject, c.op, c.rhs, c.negate) == ("score", op, -2.0, True)
        assert str(c) == f"not score {op} -2.0"
        assert not parse_condition(f"score {op} limit").negate and parse_condition(f"score {op} limit").rhs == "limit"


@pytest.mark.parametrize(("expr", "message"), [
    ("f(H)", "'f(H)': only cdiv(a, b), min(...), max(...) may be called"),
    ("cdiv(H, b=2)", "only cdiv(a, b), min(...), max(...) may be called"),
    ("H ** 2", "'H ** 2': only + - * // % are allowed"), ("1.5 * H", "'1.5 * H': only integer constants"),
    ("H.x", "'H.x': Attribute is not allowed in a dimension expression"),
    ("-H", "'-H': UnaryOp is not allowed"), ("H +", "'H +' is not a valid expression")])
def test_shape_expression_errors_say_what_is_allowed(expr, message):
    from orchestrator.pipeline import shapes

    with pytest.raises(shapes.ShapeExprError) as info:
        shapes.parse(expr)
    assert message in str(info.value)


def test_evaluate_shape_binds_what_it_can():
    from orchestrator.pipeline import shapes

    assert shapes.evaluate_shape(["N", "H // 2", 3], {"N": 2, "H": 9}) == (2, 4, 3)
    assert shapes.evaluate_shape(["N", "H * 2"], {"N": 4}) == (4, "H * 2")
    assert shapes.evaluate_shape(["N * W"], {"N": "B", "W": 3}) == ("B * 3",)


def chain(workdir, length: int = 4):
    from test_planning import HEADER, k

    text = HEADER % f"p{length - 1}" + k("x", "p0") + "".join(k(f"p{i - 1}", f"p{i}") for i in range(1, length))
    return load_pipeline(write(workdir, text))


@pytest.mark.parametrize("alignment", [1, 64, 512])
def test_plan_honours_the_alignment_it_is_given(workdir, alignment):
    pipeline = chain(workdir)
    sizes = {"p0": 0, "p1": 100, "p2": 700, "p3": 1}
    plan = plan_memory(pipeline, sizes, alignment=alignment)
    slots = {n: -(-max(s, 1) // alignment) * alignment for n, s in sizes.items()}  # an empty tensor takes 1
    assert all(o % alignment == 0 for o in plan.offsets.values())
    assert plan.naive_bytes == sum(slots.values())
    assert plan.arena_bytes == plan.lower_bound == max(slots["p0"] + slots["p1"], slots["p1"] + slots["p2"],
                                                       slots["p2"] + slots["p3"])
    summary = plan.summary()
    assert summary == {"tensors": 4, "naive_bytes": plan.naive_bytes, "arena_bytes": plan.arena_bytes,
                       "lower_bound_bytes": plan.lower_bound, "arena_over_lower_bound": 1.0, "exact_liveness": True}
    assert plan.exact is True and plan_memory(pipeline, sizes, analyse(pipeline, max_paths=0)).exact is False


def test_plan_summary_rounds_the_ratio_to_four_places(workdir):
    from orchestrator.planning.memory import MemoryPlan

    plan = MemoryPlan({}, {}, arena_bytes=123456, naive_bytes=200000, lower_bound=100000, exact=True)
    assert plan.summary()["arena_over_lower_bound"] == 1.2346 and plan.ratio == 1.23456


def test_a_pipeline_without_intermediates_plans_an_empty_arena():
    from pathlib import Path

    from orchestrator.pipeline.ir import Pipeline

    empty = Pipeline("empty", Path("empty.yaml"), {}, {}, (), {}, {}, {}, (), {})
    plan = plan_memory(empty, {})
    assert (plan.arena_bytes, plan.naive_bytes, plan.lower_bound, plan.ratio) == (0, 0, 0, 1.0)


@pytest.mark.parametrize(("taken", "size", "start"), [
    ([], 256, 0),
    ([(0, 256), (512, 768)], 256, 256),  # an exact fit is used
    ([(0, 256), (512, 768), (1024, 1280)], 256, 256),  # of equal gaps, the first
    ([(512, 768), (1024, 1280)], 256, 768),  # the smallest gap that holds it, not the first
    ([(0, 1024), (256, 512), (768, 2048)], 256, 2048),  # a range inside another leaves no gap behind it
    ([(0, 256), (512, 768)], 512, 768),  # nothing fits: at the end
])
def test_best_fit_takes_the_smallest_gap_that_holds_the_tensor(taken, size, start):
    """The documented placement rule (greedy-by-size best-fit) on occupied ranges sorted by start."""
    from orchestrator.planning.memory import _best_fit

    assert _best_fit(taken, size) == start


def test_exact_liveness_up_to_max_paths_inclusive(workdir):
    from test_planning import branchy

    two_cases = branchy(workdir)  # an if: two paths
    assert analyse(two_cases, max_paths=2).exact and not analyse(two_cases, max_paths=1).exact
    loop = load_pipeline(write(workdir, LOOP, "loop.yaml"))  # zero iterations, or the body unrolled twice
    assert len(analyse(loop).paths) == 2
    assert analyse(loop, max_paths=2).exact and not analyse(loop, max_paths=1).exact


def test_dims_at_each_bound(workdir):
    from orchestrator.planning.sizes import dims_at

    pipeline = load_pipeline(write(workdir, "dims:\n  N: {min: 1, opt: 2, max: 8}\n  C: {min: 3, opt: 4, max: 5}\n"
                                   + (workdir / "base.yaml").read_text()))
    assert dims_at(pipeline) == {"N": 8, "C": 5} == dims_at(pipeline, "max")
    assert dims_at(pipeline, "min") == {"N": 1, "C": 3} and dims_at(pipeline, "opt") == {"N": 2, "C": 4}


def test_unbounded_dimensions_are_named_with_file_and_input(workdir):
    from orchestrator.errors import ConfigError
    from orchestrator.planning.sizes import concrete_shapes

    text = (workdir / "base.yaml").read_text().replace("shape: [N, 4]", "shape: [N, W]")
    pipeline = load_pipeline(write(workdir, text))
    with pytest.raises(ConfigError) as info:
        concrete_shapes(pipeline, {})
    assert str(info.value) == (f"{workdir / 'pipeline.yaml'}: inputs.x: dimension N, W has no bounds; add dims.N: "
                               "{min: .., opt: .., max: ..} so that device memory can be planned")


def test_tensor_bytes_count_dtype_and_layout_padding():
    from pathlib import Path

    from orchestrator.pipeline.ir import Pipeline, TensorInfo
    from orchestrator.planning import tensor_bytes

    tensors = {"a": TensorInfo("a", "float16", (2, 3, 4, 5), "step", (), "hwc8"),
               "b": TensorInfo("b", "int64", (2, 3), "step", ()), "c": TensorInfo("c", "uint8", (7,), "input", ())}
    pipeline = Pipeline("p", Path("p.yaml"), {}, {}, (), {}, {}, {}, (), tensors)
    got = tensor_bytes(pipeline, {"a": (2, 3, 4, 5), "b": (2, 3), "c": (7,)})
    assert got == {"a": 2 * 4 * 5 * 8 * 2, "b": 2 * 3 * 8, "c": 7}


def test_output_shapes_that_inference_cannot_tell_come_from_a_run(tmp_path):
    """NonZero's output length depends on the data: the fallback runs the snippet on zeros."""
    from onnx import TensorProto, helper

    from orchestrator.planning.sizes import snippet_output_shapes

    graph = helper.make_graph([helper.make_node("NonZero", ["x"], ["y"])], "nonzero",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.INT64, [2, "K"])])
    path = tmp_path / "nonzero.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), str(path))
    assert snippet_output_shapes(path, (("x", (3, 4)),)) == {"y": (2, 0)}
