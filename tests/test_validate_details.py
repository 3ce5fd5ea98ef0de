"""Validation details that the other validation tests leave open (found by mutation testing, tests/MUTATION.md):
kernel sources that cannot be read or lack their entry point, kernel files in other folders, follow-on
behaviour after a step whose kernel or snippet failed, explicit block names, block outputs, branches and
carries whose ranks differ, snippet profiles, and the ranges quoted for fixed dimensions."""

from __future__ import annotations

import shutil

import pytest
from conftest import KERNEL_CU, KERNEL_YAML, write
from test_validate_kernels import PIPELINE  # one kernel step reading k.yaml

from orchestrator.errors import ConfigError
from orchestrator.kernels.includes import PACKAGE_INCLUDE
from orchestrator.pipeline.ir import ScalarArg
from orchestrator.pipeline.load import load_pipeline


def problems(path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    return [str(p) for p in info.value.problems]


def kernel_file(workdir, source: bytes | str | None = None, **edits: str):
    """k.yaml (the conftest kernel) reading c.cu, with ``source`` as c.cu's contents and text replacements."""
    text = KERNEL_YAML.replace("source: scale.cu", "source: c.cu")
    for old, new in edits.values():
        text = text.replace(old, new)
    (workdir / "k.yaml").write_text(text)
    if source is not None:
        (workdir / "c.cu").write_bytes(source if isinstance(source, bytes) else source.encode())
    return workdir / "k.yaml"


@pytest.mark.parametrize(("source", "expected"), [
    (b"\x00\x01", ":1:9: kernels.scale.source: {dir}/c.cu is a binary file (NUL byte at line 1, column 1)"),
    ("// nothing here\n/* nor here */\n", ":1:9: kernels.scale.source: the kernel source is empty (or only comments)"),
    ("// scale\n" + KERNEL_CU.replace("void scale(", "void scale2("),
     ":2:8: kernels.scale.entry: entry point 'scale' does not appear in the kernel source (only in a comment or "
     "string)"),
    (KERNEL_CU.replace("void scale(", "void scale2("),
     ":2:8: kernels.scale.entry: entry point 'scale' does not appear in the kernel source"),
], ids=["binary", "only comments", "entry in a comment", "no entry"])
def test_kernel_source_problems_are_reported_once_at_their_key(workdir, source, expected):
    path = kernel_file(workdir, source)
    assert problems(write(workdir, PIPELINE)) == [f"{path}{expected.format(dir=workdir)}"]


def test_an_entry_point_followed_by_a_comment_is_found(workdir):
    kernel_file(workdir, KERNEL_CU.replace("void scale(", "void scale/* entry */("))
    assert load_pipeline(write(workdir, PIPELINE)).kernels["scale"].entry == "scale"


def inline(code: str) -> str:
    body = "".join(f"    {line}\n" for line in KERNEL_YAML.splitlines())
    return PIPELINE.replace("  scale: k.yaml\n", "  scale:\n" + body.replace("    source: scale.cu\n",
                                                                             f"    code: {code}\n"))


@pytest.mark.parametrize(("code", "expected"), [
    ("'// nothing'", ":6:11: kernels.scale.code: the kernel source is empty (or only comments)"),
    ("'__global__ void other() {}'", ":7:12: kernels.scale.entry: entry point 'scale' does not appear in the "
                                     "kernel source"),
])
def test_inline_kernel_code_problems_point_at_code_or_entry(workdir, code, expected):
    path = write(workdir, inline(code))
    assert problems(path) == [f"{path}{expected}"]


def test_a_reference_path_may_contain_a_colon(workdir):
    shutil.copy(workdir / "ref.py", workdir / "my:ref.py")
    kernel_file(workdir, KERNEL_CU, ref=("reference: ref.py:scale", "reference: my:ref.py:scale"))
    kernel = load_pipeline(write(workdir, PIPELINE)).kernels["scale"]
    assert (kernel.reference_path, kernel.reference_function) == (workdir / "my:ref.py", "scale")


def test_a_source_in_another_folder_is_on_the_include_path(workdir):
    (workdir / "sub").mkdir()
    (workdir / "sub" / "c.cu").write_text(KERNEL_CU)
    (workdir / "inc").mkdir()
    kernel_file(workdir, None, src=("source: c.cu", "source: sub/c.cu"), opt=("entry: scale\n", "entry: scale\noptions: [-Iinc]\n"))
    kernel = load_pipeline(write(workdir, PIPELINE)).kernels["scale"]
    assert kernel.include_dirs == (workdir / "sub", workdir / "inc", PACKAGE_INCLUDE)


def test_a_missing_include_folder_is_reported_at_its_option(workdir):
    path = kernel_file(workdir, KERNEL_CU, opt=("entry: scale\n", "entry: scale\noptions: [-O3, -Inope]\n"))
    assert problems(write(workdir, PIPELINE)) == [
        f"{path}:3:16: kernels.scale.options[1]: include folder not found: {workdir}/nope (relative -I paths are "
        f"resolved from {workdir}/)"]


STEPS = """\
inputs:
  x: {dtype: float32, shape: [N, 4]}
  c: {dtype: int32, host: true}
  h: {dtype: float16, host: true}
outputs: [z]
snippets:
  relu: {onnx: relu.onnx}
kernels:
  scale: scale.yaml
  flat: flat.yaml
  half: half.yaml
steps:
"""


@pytest.fixture
def steps(workdir):
    """workdir with flat.yaml (scale with a 1-D output [N * C]) and half.yaml (scale with a float16 factor)."""
    (workdir / "flat.yaml").write_text(KERNEL_YAML.replace("kind: out, dtype: float32, shape: [N, C]",
                                                           "kind: out, dtype: float32, shape: [N * C]"))
    (workdir / "half.yaml").write_text(KERNEL_YAML.replace("{name: factor, kind: scalar, dtype: float32}",
                                                           "{name: factor, kind: scalar, dtype: float16}"))
    return workdir


def test_a_broken_kernel_is_not_checked_again_at_its_steps(steps):
    (steps / "flat.yaml").write_text(KERNEL_YAML.replace("reference: ref.py:scale", "reference: nope.py:scale"))
    path = write(steps, STEPS + "  - kernel: flat\n    args: {src: x, dst: z, factor: 2.0, bogus: 1}\n")
    assert problems(path) == [f"{steps / 'flat.yaml'}:9:12: kernels.flat.reference: reference file not found: "
                              f"{steps}/nope.py"]


def test_an_unknown_snippet_step_reads_at_its_step_and_defines_its_outputs(steps):
    path = write(steps, STEPS + "  - snippet: nope\n    inputs: {x: q}\n    outputs: {y: y}\n"
                                "  - kernel: scale\n    args: {src: x, dst: y, factor: 2.0}\n"
                                "  - kernel: scale\n    args: {src: y, dst: z, factor: 2.0}\n")
    assert problems(path) == [
        f"{path}:13:14: steps[0].snippet: unknown snippet 'nope' (defined snippets: relu)",
        f"{path}:13:5: steps[0]: tensor 'q' is not defined before this step (defined tensors: x, c, h)",
        f"{path}:17:25: steps[1].args.dst: tensor 'y' is already defined at {path}:13 (each tensor is defined once; "
        f"choose another name)"]


def test_a_branch_output_from_an_unknown_kernel_is_not_compared_with_the_other_branch(steps):
    """The unknown kernel is the one error: the 'then' branch's y has no dtype to compare (was reported as
    "tensor 'y' is ? in 'then' but float32 in 'else'")."""
    path = write(steps, STEPS + "  - if: c > 0\n    then:\n      - kernel: nope\n        args: {src: x, dst: z}\n"
                                "    else:\n      - kernel: scale\n        args: {src: x, dst: z, factor: 2.0}\n")
    assert problems(path) == [f"{path}:15:17: steps[0].then[0].kernel: unknown kernel 'nope' (defined kernels: "
                              "scale, flat, half)"]


def test_scalar_values_and_bindings(steps):
    (steps / "value.yaml").write_text(KERNEL_YAML.replace("{name: factor, kind: scalar, dtype: float32}",
                                                          "{name: factor, kind: scalar, dtype: float32, value: 0.5}"))
    text = STEPS.replace("  half: half.yaml\n", "  half: half.yaml\n  value: value.yaml\n")
    pipeline = load_pipeline(write(steps, text + "  - kernel: value\n    args: {src: x, dst: y}\n"
                                                 "  - kernel: half\n    args: {src: y, dst: z, factor: 2.5}\n"))
    assert [step.scalars["factor"] for step in pipeline.body] == [ScalarArg(literal=0.5), ScalarArg(literal=2.5)]


def test_scalar_binding_problems(steps):
    (steps / "iscale.yaml").write_text(KERNEL_YAML.replace("{name: factor, kind: scalar, dtype: float32}",
                                                           "{name: factor, kind: scalar, dtype: int32}"))
    path = write(steps, STEPS.replace("  flat: flat.yaml\n", "  iscale: iscale.yaml\n")
                 + "  - kernel: iscale\n    args: {src: x, dst: y, factor: h}\n"
                   "  - kernel: scale\n    args: {src: y, dst: z, factor: nope}\n")
    assert problems(path) == [
        f"{path}:14:36: steps[0].args.factor: scalar argument 'factor' is int32 but host input 'h' is float16",
        f"{path}:16:36: steps[1].args.factor: tensor 'nope' is not defined before this step (defined tensors: x, c, "
        f"h, y)"]


def test_block_names_branch_ranks_and_carried_ranks(steps):
    text = (STEPS.replace("outputs: [z]", "outputs: [y, s]")
            + "  - if: c > 0\n    name: b\n    then:\n      - kernel: scale\n        args: {src: x, dst: y, factor: 2.0}\n"
              "    else:\n      - kernel: flat\n        args: {src: x, dst: y, factor: 2.0}\n"
              "  - kernel: scale\n    args: {src: x, dst: s, factor: 2.0}\n"
              "  - while: c > 0\n    name: b\n    max_iterations: 2\n    carry: {s: n}\n    body:\n"
              "      - kernel: flat\n        args: {src: s, dst: n, factor: 2.0}\n"
              "  - switch: c\n    name: b\n    cases:\n      0:\n        - kernel: scale\n"
              "          args: {src: x, dst: q, factor: 2.0}\n"
              "  - if: c > 0\n    name: b\n    then: []\n    else: []\n")
    path = write(steps, text)
    assert problems(path) == [
        f"{path}:13:5: steps[0]: tensor 'y' has shape [N, 4] in 'then' but [N * 4] in 'else'",
        f"{path}:24:11: steps[2].name: step name 'b' is used twice (step names must be unique)",
        f"{path}:26:16: steps[2].carry.s: 'n' (float32 [N * 4]) cannot replace 's' (float32 [N, 4]): dtype and shape "
        "must match",
        f"{path}:31:11: steps[3].name: step name 'b' is used twice (step names must be unique)",
        f"{path}:37:11: steps[4].name: step name 'b' is used twice (step names must be unique)"]


def test_an_if_block_lists_the_tensors_both_branches_define(steps):
    text = (STEPS + "  - if: c > 0\n    then:\n      - kernel: scale\n        args: {src: x, dst: z, factor: 2.0}\n"
                    "      - kernel: scale\n        args: {src: z, dst: t, factor: 2.0}\n"
                    "    else:\n      - kernel: scale\n        args: {src: x, dst: z, factor: 3.0}\n")
    [block] = load_pipeline(write(steps, text)).body
    assert (block.name, block.outputs, [s.name for s in block.then], [s.name for s in block.else_]) == (
        "if", ("z",), ["scale", "scale_2"], ["scale_3"])


def test_a_fixed_dimension_facing_a_range_quotes_it(steps):
    import onnx
    from conftest import tiny_model

    onnx.save(tiny_model("Relu", ["x"], ["y"], shape=(1, 4)), str(steps / "fixed.onnx"))
    text = STEPS.replace("relu: {onnx: relu.onnx}", "relu: {onnx: fixed.onnx}") + (
        "  - snippet: relu\n    outputs: {y: z}\ndims:\n  N: {min: 1, opt: 2, max: 4}\n")
    path = write(steps, text)
    assert problems(path) == [
        f"{path}:13:14: steps[0].snippet: tensor 'x' has shape [N, 4]; input 'x' of fixed.onnx: dimension 0 is fixed "
        "at 1, but 'N' ranges over 1..4 (dims.N: 1..4); export the model with a dynamic dimension there, or narrow "
        "the dims"]


def test_a_loop_carry_from_an_unknown_kernel_is_not_compared(steps):
    text = (STEPS.replace("outputs: [z]", "outputs: [s]") + "  - kernel: scale\n    args: {src: x, dst: s, factor: 2.0}\n"
            "  - while: c > 0\n    max_iterations: 2\n    carry: {s: n}\n    body:\n"
            "      - kernel: nope\n        args: {src: s, dst: n}\n")
    path = write(steps, text)
    assert problems(path) == [f"{path}:19:17: steps[1].body[0].kernel: unknown kernel 'nope' (defined kernels: "
                              "scale, flat, half)"]


def test_an_unknown_kernel_step_defines_its_outputs_at_the_step(steps):
    path = write(steps, STEPS + "  - kernel: nope\n    args: {src: x, dst: y}\n"
                                "  - kernel: scale\n    args: {src: x, dst: y, factor: 2.0}\n")
    assert problems(path) == [
        f"{path}:13:13: steps[0].kernel: unknown kernel 'nope' (defined kernels: scale, flat, half)",
        f"{path}:16:25: steps[1].args.dst: tensor 'y' is already defined at {path}:13 (each tensor is defined once; "
        "choose another name)",
        f"{path}:5:11: outputs[0]: tensor 'z' is not defined before this step (defined tensors: x, c, h, y)"]


def test_branches_whose_shapes_may_agree_at_run_time_are_accepted(steps):
    (steps / "swap.yaml").write_text(KERNEL_YAML.replace("kind: out, dtype: float32, shape: [N, C]",
                                                         "kind: out, dtype: float32, shape: [C, N]"))
    text = (STEPS.replace("  half: half.yaml\n", "  swap: swap.yaml\n")
            + "  - if: c > 0\n    then:\n      - kernel: scale\n        args: {src: x, dst: z, factor: 2.0}\n"
              "    else:\n      - kernel: swap\n        args: {src: x, dst: z, factor: 2.0}\n")
    [block] = load_pipeline(write(steps, text)).body
    assert block.outputs == ("z",)


def test_kernel_argument_locations(workdir):
    kernel_file(workdir, KERNEL_CU)
    kernel = load_pipeline(write(workdir, PIPELINE)).kernels["scale"]
    k = workdir / "k.yaml"
    assert str(kernel.args_location).startswith(f"{k}:3:1")
    assert [str(loc).split(": ")[0] for loc in kernel.arg_locations] == [f"{k}:{line}:5" for line in (4, 5, 6, 7)]


def test_a_kernel_reference_is_located_at_its_value(workdir):
    kernel_file(workdir, KERNEL_CU)
    kernel = load_pipeline(write(workdir, PIPELINE)).kernels["scale"]
    assert str(kernel.reference_location).startswith(f"{workdir / 'k.yaml'}:9:12")


def snippet_problems(workdir, snippet: str) -> list[str]:
    from conftest import BASE

    path = write(workdir, BASE.replace("  add: {onnx: add.onnx}\n", snippet))
    return [p.replace(str(path), "P").replace(str(workdir), "D") for p in problems(path)]


def test_snippet_file_problems_point_at_onnx(workdir):
    (workdir / "bad.onnx").write_bytes(b"not a model")
    found = snippet_problems(workdir, "  add: {onnx: nope.onnx}\n  bad: {onnx: bad.onnx}\n")
    assert found[0] == "P:7:15: snippets.add.onnx: ONNX file not found: D/nope.onnx (paths are relative to D/)"
    assert found[1].startswith("P:8:15: snippets.bad.onnx: ") and len(found) == 2


def test_snippet_profile_problems(workdir):
    found = snippet_problems(workdir, "  add:\n    onnx: add.onnx\n    profile:\n"
                                      "      q: {min: [1, 4], opt: [1, 4], max: [1, 4]}\n"
                                      "      b: {min: [2, 4], opt: [1, 4], max: [8, 4]}\n"
                                      "      a: {min: [1], opt: [1, 4], max: [1, 4]}\n")
    assert found == ["P:10:7: snippets.add.profile.q: add.onnx has no input 'q' (its inputs: a, b)",
                     "P:11:10: snippets.add.profile.b: each dimension must satisfy min <= opt <= max",
                     "P:12:10: snippets.add.profile.a: min/opt/max must each have 2 dimensions"]


def test_a_profile_rank_problem_leaves_the_later_ports_checked(workdir):
    found = snippet_problems(workdir, "  add:\n    onnx: add.onnx\n    profile:\n"
                                      "      a: {min: [1], opt: [1, 4], max: [1, 4]}\n"
                                      "      b: {min: [2, 4], opt: [1, 4], max: [8, 4]}\n")
    assert found == ["P:10:10: snippets.add.profile.a: min/opt/max must each have 2 dimensions",
                     "P:11:10: snippets.add.profile.b: each dimension must satisfy min <= opt <= max"]


def test_a_dtype_mismatch_at_a_snippet_port_has_no_layout_hint(steps):
    text = STEPS.replace("relu: {onnx: relu.onnx}", "relu: {onnx: half.onnx, precision: fp16}")
    path = write(steps, text + "  - snippet: relu\n    outputs: {y: z}\n")
    assert problems(path) == [f"{path}:13:14: steps[0].snippet: tensor 'x' is float32 but input 'x' of half.onnx "
                              "expects float16"]


def test_precision_option_problems_at_their_key_or_value(workdir):
    found = snippet_problems(workdir, "  add:\n    onnx: add.onnx\n    precision_path: converted\n"
                                      "  half:\n    onnx: half.onnx\n    precision: fp16\n    precision_path: flags\n"
                                      "    keep_fp32: [Relu]\n")
    assert found == [
        "P:9:5: snippets.add.precision_path: 'precision_path' applies to fp16/bf16 snippets (this one is fp32)",
        "P:14:16: snippets.half.keep_fp32: keep_fp32 needs the converted precision path (precision_path: converted or "
        "auto); builder flags choose precision per layer"]


def test_a_snippet_profile_resolves_and_may_pin_a_dimension(workdir):
    from conftest import BASE

    text = BASE.replace("  add: {onnx: add.onnx}\n", "  add:\n    onnx: add.onnx\n    profile:\n"
                        "      a: {min: [1, 4], opt: [1, 4], max: [8, 4]}\n      b: {min: [2, 4], opt: [4, 4], max: [4, 4]}\n")
    snippets = load_pipeline(write(workdir, text)).snippets
    assert snippets["add"].profile == {"a": ((1, 4), (1, 4), (8, 4)), "b": ((2, 4), (4, 4), (4, 4))}
    assert snippets["relu"].profile is None


def test_a_data_dependent_output_dim_gets_a_fresh_identifier(workdir):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y:0"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y:0", TensorProto.FLOAT, ["K", 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10),
              str(workdir / "nz.onnx"))
    text = ("inputs:\n  x: {dtype: float32, shape: [N, 4]}\noutputs: [y]\nsnippets:\n  nz: {onnx: nz.onnx}\n"
            "steps:\n  - snippet: nz\n    outputs: {'y:0': y}\n")
    assert load_pipeline(write(workdir, text)).tensors["y"].shape == ("nz_y_0_0", 4)


def test_snippet_options_reach_the_snippet(workdir):
    text = ("inputs:\n  x: {dtype: float32, shape: [N, 4]}\noutputs: [y]\nsnippets:\n"
            "  relu: {onnx: relu.onnx, precision: fp16, workspace: 1MiB, optimize: true, keep_fp32: [Relu]}\n"
            "steps:\n  - snippet: relu\n")
    info = load_pipeline(write(workdir, text)).snippets["relu"]
    assert (info.name, info.onnx_path, info.precision, info.workspace, info.optimize) == (
        "relu", workdir / "relu.onnx", "fp16", 1 << 20, True)
    assert (info.precision_path, info.keep_fp32, list(info.inputs), list(info.outputs)) == ("auto", ("Relu",), ["x"],
                                                                                          ["y"])


def test_format_problems(workdir):
    import onnx
    from conftest import tiny_model
    from onnx import TensorProto

    onnx.save(tiny_model("Neg", ["x"], ["y"], shape=(1, 8, 4, 4), dtype=TensorProto.INT32), str(workdir / "int.onnx"))
    onnx.save(tiny_model("Relu", ["x"], ["y"], shape=(1, 8, 4, 4), dtype=TensorProto.FLOAT16), str(workdir / "f16.onnx"))
    found = snippet_problems(workdir, "  add:\n    onnx: int.onnx\n    precision: fp16\n"
                                      "    formats: {q: hwc8, x: linear, y: hwc8}\n"
                                      "  half:\n    onnx: f16.onnx\n    precision: fp16\n    formats: {x: hwc8}\n")
    assert found == ["P:10:15: snippets.add.formats.q: int.onnx has no input or output 'q' (its ports: x, y)",
                     "P:10:38: snippets.add.formats.y: 'hwc8' stores floating-point tensors; 'y' is int32"]


def test_snippet_steps_run_their_snippet_and_names_stay_unique(workdir):
    from conftest import BASE

    pipeline = load_pipeline(workdir / "base.yaml")
    base = workdir / "base.yaml"
    assert [str(w) for w in pipeline.warnings] == [f"{base}:3:9: inputs.flag: warning: input 'flag' is never used",
                                                   f"{base}:7:8: snippets.add: warning: snippet 'add' is never run"]
    text = BASE.replace("    outputs: {y: y}\n", "    name: r\n    outputs: {y: y}\n  - snippet: relu\n    name: r\n"
                                                 "    inputs: {x: x}\n    outputs: {y: y2}\n")
    path = write(workdir, text)
    assert problems(path) == [f"{path}:16:11: steps[1].name: step name 'r' is used twice (step names must be unique)"]


def test_snippet_step_binding_problems(workdir):
    import onnx
    from conftest import tiny_model
    from onnx import TensorProto

    onnx.save(tiny_model("Relu", ["x"], ["y"], shape=(1, 8, 4, 4), dtype=TensorProto.FLOAT16), str(workdir / "f16.onnx"))
    text = ("inputs:\n  x: {dtype: float16, shape: [1, 8, 4, 4]}\n  flag: {dtype: int32, host: true}\noutputs: [z]\n"
            "snippets:\n  a: {onnx: f16.onnx, precision: fp16, formats: {y: hwc8}}\n  b: {onnx: f16.onnx, precision: fp16}\n"
            "  c: {onnx: f16.onnx, precision: fp16, formats: {x: hwc8}}\n  add: {onnx: add.onnx}\nsteps:\n"
            "  - snippet: a\n"
            "  - snippet: b\n    inputs: {x: y}\n    outputs: {y: w}\n"
            "  - snippet: c\n    outputs: {y: z}\n"
            "  - snippet: add\n    inputs: {a: nope, b: flag, q: x}\n    outputs: {c: c1, r: c2}\n"
            "  - snippet: add\n    outputs: {c: c3}\n")
    path = write(workdir, text)
    assert problems(path) == [
        f"{path}:13:17: steps[1].inputs.x: tensor 'y' is float16 hwc8 but input 'x' of f16.onnx expects float16 (a "
        "tensor has one layout: give 'x' the same 'formats' entry as the port that writes 'y', or neither)",
        f"{path}:15:14: steps[2].snippet: tensor 'x' is float16 but input 'x' of f16.onnx expects float16 hwc8 (a "
        "tensor has one layout: give 'x' the same 'formats' entry as the port that writes 'x', or neither)",
        f"{path}:18:32: steps[3].inputs.q: add.onnx has no input 'q' (its inputs: a, b)",
        f"{path}:19:22: steps[3].outputs.r: add.onnx has no output 'r' (its outputs: c)",
        f"{path}:18:17: steps[3].inputs.a: tensor 'nope' is not defined before this step (defined tensors: x, flag, y, "
        "w, z)",
        f"{path}:18:26: steps[3].inputs.b: 'flag' is a host input: it can feed conditions and scalar arguments, not "
        "tensor ports (declare it without 'host: true' to make it a device tensor)",
        f"{path}:20:14: steps[4].snippet: input 'a' of add.onnx is not bound (add inputs: {{a: <tensor>}})",
        f"{path}:20:14: steps[4].snippet: input 'b' of add.onnx is not bound (add inputs: {{b: <tensor>}})"]


def test_constants_inputs_and_the_pipeline_name(workdir):
    from conftest import BASE

    text = BASE.replace("outputs: [z]\n", "outputs: [z]\nconstants:\n  x: {value: 1.0, dtype: float32}\n  c: {value: [1, 2.5], dtype: int32}\n"
                                          "  d: {file: w.npy, dtype: int8}\n  w: {file: w.npy}\n")
    text = text.replace("args: {src: y, dst: z, factor: 2.0}", "args: {src: w, dst: z, factor: 2.0}")
    path = write(workdir, text)
    assert problems(path) == [
        f"{path}:6:3: constants.x: 'x' is both an input and a constant (names must be unique)",
        f"{path}:7:14: constants.c.value: 2.5 is not an integer, but dtype is int32",
        f"{path}:8:13: constants.d.file: the file holds float32 data but 'dtype' says int8",
        f"{path}:20:17: steps[1].args.src: tensor 'w' has shape [4]; argument 'src' of kernel 'scale': rank 1 does "
        "not match the expected rank 2 ([N, C])"]


def test_pipeline_name_ids_inputs_and_implicit_outputs(workdir):
    from conftest import BASE

    pipeline = load_pipeline(workdir / "base.yaml")
    assert (pipeline.name, [s.id for s in pipeline.body], [s.path for s in pipeline.body]) == (
        "base", [0, 1], [("steps", 0), ("steps", 1)])
    assert [(t.name, t.origin) for t in pipeline.inputs.values()] == [("x", "input"), ("flag", "host")]
    assert pipeline.tensors["y"].name == "y"
    named = load_pipeline(write(workdir, "name: mine\n" + BASE.replace("    outputs: {y: y}\n", "")))
    assert (named.name, named.body[0].outputs) == ("mine", {"y": "y"})
    text = BASE.replace("    outputs: {y: y}\n", "  - snippet: relu\n    inputs: {x: x}\n")
    path = write(workdir, text)
    assert problems(path) == [f"{path}:13:14: steps[1].snippet: tensor 'y' is already defined at {path}:11 (each "
                              "tensor is defined once; choose another name)"]


def test_a_branch_local_name_cannot_be_defined_again(workdir):
    text = ("inputs:\n  x: {dtype: float32, shape: [N, 4]}\n  c: {dtype: int32, host: true}\noutputs: [z]\n"
            "kernels:\n  scale: scale.yaml\nsteps:\n"
            "  - if: c > 0\n    then:\n      - kernel: scale\n        args: {src: x, dst: y, factor: 2.0}\n    else: []\n"
            "  - kernel: scale\n    args: {src: x, dst: y, factor: 2.0}\n  - kernel: scale\n    args: {src: y, dst: z, factor: 2.0}\n")
    path = write(workdir, text)
    retired = f"it is defined in 'then' of the block at {path}:8 but not in 'else'"
    assert problems(path) == [
        f"{path}:14:25: steps[1].args.dst: tensor 'y' is already defined ({retired}); choose another name",
        f"{path}:16:17: steps[2].args.src: tensor 'y' is not visible here: {retired}"]


def test_a_fixed_dimension_after_a_symbolic_one(workdir):
    import onnx
    from conftest import tiny_model

    onnx.save(tiny_model("Relu", ["x"], ["y"], shape=("B", 1)), str(workdir / "col.onnx"))
    text = ("inputs:\n  x: {dtype: float32, shape: [N, N]}\noutputs: [z]\ndims:\n  N: {min: 1, opt: 2, max: 4}\n"
            "snippets:\n  col: {onnx: col.onnx}\nsteps:\n  - snippet: col\n    outputs: {y: z}\n")
    path = write(workdir, text)
    assert problems(path) == [
        f"{path}:9:14: steps[0].snippet: tensor 'x' has shape [N, N]; input 'x' of col.onnx: dimension 1 is fixed at "
        "1, but 'N' ranges over 1..4 (dims.N: 1..4); export the model with a dynamic dimension there, or narrow the dims"]


def test_unused_inputs_constants_and_tensors_are_warned_about(workdir):
    text = ("inputs:\n  x: {dtype: float32, shape: [N, 4]}\n  u: {dtype: float32, shape: [2]}\n"
            "  h: {dtype: int32, host: true}\noutputs: [z]\nconstants:\n  k: {value: [1.0], dtype: float32}\n"
            "kernels:\n  scale: scale.yaml\nsteps:\n  - kernel: scale\n    args: {src: x, dst: t, factor: 2.0}\n"
            "  - kernel: scale\n    args: {src: x, dst: z, factor: 3.0}\n"
            "  - snippet: relu\n    inputs: {x: x}\n    outputs: {y: r}\n"
            "snippets:\n  relu: {onnx: relu.onnx}\n  add: {onnx: add.onnx}\n"
            "dims:\n  N: {min: 1, opt: 2, max: 8}\n  M: {min: 1, opt: 2, max: 8}\n")
    path = write(workdir, text.replace("  scale: scale.yaml\n", "  scale: scale.yaml\n  idle: scale.yaml\n"))
    assert [str(w) for w in load_pipeline(path).warnings] == [
        f"{path}:3:6: inputs.u: warning: input 'u' is never used",
        f"{path}:4:6: inputs.h: warning: input 'h' is never used",
        f"{path}:7:6: constants.k: warning: constant 'k' is never used",
        f"{path}:13:25: steps[0].args.dst: warning: tensor 't' is computed but never used",
        f"{path}:18:18: steps[2].outputs.y: warning: tensor 'r' is computed but never used",
        f"{path}:21:8: snippets.add: warning: snippet 'add' is never run",
        f"{workdir / 'scale.yaml'}:1:1: kernels.idle: warning: kernel 'idle' is never run",
        f"{path}:24:6: dims.M: warning: dimension 'M' is not used by any input shape"]


def test_output_problems(workdir):
    import onnx
    from conftest import tiny_model
    from onnx import TensorProto

    onnx.save(tiny_model("Relu", ["x"], ["y"], shape=(1, 8, 4, 4), dtype=TensorProto.FLOAT16), str(workdir / "f16.onnx"))
    text = ("inputs:\n  x: {dtype: float16, shape: [1, 8, 4, 4]}\n  h: {dtype: int32, host: true}\n"
            "outputs: [y, h, y, x]\nsnippets:\n  a: {onnx: f16.onnx, precision: fp16, formats: {y: hwc8}}\n"
            "steps:\n  - snippet: a\n")
    path = write(workdir, text)
    hwc8 = (f"output 'y' is stored as hwc8 (a TensorRT format, chosen at {path}:8); outputs are linear: drop that "
            "'formats' entry")
    assert problems(path) == [f"{path}:4:11: outputs[0]: {hwc8}",
                              f"{path}:4:14: outputs[1]: 'h' is a host input and cannot be an output",
                              f"{path}:4:17: outputs[2]: output 'y' is listed twice",
                              f"{path}:4:17: outputs[2]: {hwc8}"]


# ---- model dimensions tied to an earlier one ([N, N]) and kernel scalar literals outside their dtype ----

def tied_problems(steps, shape, pipeline_shape="[N, 4]", dims="dims:\n  N: {min: 1, opt: 2, max: 4}\n",
                  model=None, extra_input: str = "") -> tuple[object, list[str]]:
    import onnx
    from conftest import tiny_model

    onnx.save(model or tiny_model("Relu", ["x"], ["y"], shape=shape), str(steps / "tied.onnx"))
    text = STEPS.replace("relu: {onnx: relu.onnx}", "relu: {onnx: tied.onnx}").replace(
        "x: {dtype: float32, shape: [N, 4]}", f"x: {{dtype: float32, shape: {pipeline_shape}}}{extra_input}")
    path = write(steps, text + "  - snippet: relu\n    outputs: {y: z}\n" + dims)
    try:
        load_pipeline(path)
    except ConfigError as e:
        return path, [str(p) for p in e.problems]
    return path, []


@pytest.mark.parametrize(("shape", "message"), [
    (("N", "N"), "dimension 1 is 4, but the model ties it to dimension 0 ('N'), here 'N', which ranges over 1..4"),
    (("N", 4, "N"), "dimension 2 is 4, but the model ties it to dimension 0 ('N'), here 'N', which ranges over 1..4"),
], ids=["[N, N]", "[N, 4, N]"])
def test_a_tied_model_dimension_facing_a_fixed_size_the_dims_let_differ_is_refused(steps, shape, message):
    path, found = tied_problems(steps, shape, "[N, 4, 4]" if len(shape) == 3 else "[N, 4]")
    listed = "[N, 4, 4]" if len(shape) == 3 else "[N, 4]"
    assert found == [f"{path}:13:14: steps[0].snippet: tensor 'x' has shape {listed}; input 'x' of tied.onnx: "
                     f"{message}"]


def test_a_tied_dimension_quotes_the_expression_it_is_bound_to(steps):
    path, found = tied_problems(steps, ("M", "M"), "[2 * N, 4]")
    assert found == [f"{path}:13:14: steps[0].snippet: tensor 'x' has shape [2 * N, 4]; input 'x' of tied.onnx: "
                     "dimension 1 is 4, but the model ties it to dimension 0 ('M'), here '2 * N', which ranges over 2..8"]


def test_a_dimension_bound_by_another_port_is_named_by_its_symbol(steps):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "two_ports",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, "N"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    path, found = tied_problems(steps, None, model=model, extra_input="\n  w: {dtype: float32, shape: [4, 4]}")
    assert found == [f"{path}:14:14: steps[0].snippet: tensor 'w' has shape [4, 4]; input 'w' of tied.onnx: "
                     "dimension 1 is 4, but the model ties it to 'N', here 'N', which ranges over 1..4"]


@pytest.mark.parametrize(("shape", "pipeline_shape", "dims"), [
    (("N", "N"), "[N, 4]", "dims:\n  N: {min: 4, opt: 4, max: 4}\n"),  # N is always 4
    (("N", "N"), "[N, 4]", ""),  # N unbounded: nothing to compare before run time
    (("N", "N"), "[N, M]", "dims:\n  N: {min: 1, opt: 2, max: 4}\n  M: {min: 1, opt: 2, max: 4}\n"),  # M may be N
    (("N", "N"), "[4, 4]", ""),  # N is 4 here
    (("N", 4), "[N, 4]", "dims:\n  N: {min: 1, opt: 2, max: 4}\n"),  # nothing tied
], ids=["dims fix N", "no dims", "symbol against symbol", "fixed both", "untied"])
def test_tied_dimensions_that_may_match_are_accepted(steps, shape, pipeline_shape, dims):
    assert tied_problems(steps, shape, pipeline_shape, dims)[1] == []


def scalar_problems(steps, dtype: str, value: str) -> tuple[object, list[str]]:
    (steps / "typed.yaml").write_text(KERNEL_YAML.replace("{name: factor, kind: scalar, dtype: float32}",
                                                          f"{{name: factor, kind: scalar, dtype: {dtype}}}"))
    path = write(steps, STEPS.replace("  flat: flat.yaml\n", "  typed: typed.yaml\n")
                 + f"  - kernel: typed\n    args: {{src: x, dst: z, factor: {value}}}\n")
    try:
        pipeline = load_pipeline(path)
    except ConfigError as e:
        return path, [str(p) for p in e.problems]
    return pipeline.body[0].scalars["factor"], []


@pytest.mark.parametrize(("dtype", "value", "why"), [
    ("int8", "128", "128 is outside its range (-128 to 127)"),
    ("int8", "-129", "-129 is outside its range (-128 to 127)"),
    ("uint8", "256", "256 is outside its range (0 to 255)"),
    ("uint8", "-1", "-1 is outside its range (0 to 255)"),
    ("int64", str(2**63), f"{2**63} is outside its range (-{2**63} to {2**63 - 1})"),
    ("float16", "65536.0", "65536.0 is beyond its range (largest 65504)"),
    ("float16", "-70000.0", "-70000.0 is beyond its range (largest 65504)"),
    ("float32", "3.5e38", "3.5e+38 is beyond its range (largest 3.40282e+38)"),
    ("float32", "1" + "0" * 39, "1" + "0" * 39 + " is beyond its range (largest 3.40282e+38)"),  # 40 characters
    ("float32", "1" + "0" * 40, "10000000000000000000... (41 digits) is beyond its range (largest 3.40282e+38)"),
    ("float32", "1" + "0" * 99, "10000000000000000000... (100 digits) is beyond its range (largest 3.40282e+38)"),
])
def test_kernel_scalar_literals_outside_their_dtype_are_refused_at_their_value(steps, dtype, value, why):
    path, found = scalar_problems(steps, dtype, value)
    assert found == [f"{path}:14:36: steps[0].args.factor: scalar argument 'factor' is {dtype}; {why}"]


@pytest.mark.parametrize(("dtype", "value", "literal"), [
    ("int8", "127", 127), ("int8", "-128", -128), ("uint8", "0", 0), ("uint8", "255", 255),
    ("int64", str(2**63 - 1), 2**63 - 1), ("int64", str(-2**63), -2**63),
    ("float16", "65504.0", 65504.0), ("float16", "-65504.0", -65504.0), ("float16", "1e-8", 1e-8),
    ("float32", "3.4028234663852886e38", 3.4028234663852886e38),  # float32's largest value itself
    ("float32", ".inf", float("inf")), ("float32", "-.inf", -float("inf")), ("float32", str(2**127), 2**127),
    ("float32", "0.0", 0.0), ("bool", "true", True),
])
def test_kernel_scalar_literals_within_their_dtype_are_kept(steps, dtype, value, literal):
    assert scalar_problems(steps, dtype, value) == (ScalarArg(literal=literal), [])


def test_a_loop_carrying_a_branch_local_tensor_is_refused_at_the_carry_key(workdir):
    text = ("inputs:\n  x: {dtype: float32, shape: [N, 4]}\n  c: {dtype: int32, host: true}\noutputs: [x]\n"
            "kernels:\n  scale: scale.yaml\nsteps:\n"
            "  - if: c > 0\n    then:\n      - kernel: scale\n        args: {src: x, dst: y, factor: 2.0}\n    else: []\n"
            "  - while: c > 0\n    max_iterations: 2\n    carry: {y: n}\n    body:\n"
            "      - kernel: scale\n        args: {src: x, dst: n, factor: 2.0}\n")
    path = write(workdir, text)
    assert problems(path) == [f"{path}:15:13: steps[1].carry.y: tensor 'y' is not visible here: it is defined in "
                              f"'then' of the block at {path}:8 but not in 'else'"]


def test_a_fixed_dimension_facing_an_expression_names_each_of_its_dims(workdir):
    import onnx
    from conftest import tiny_model

    onnx.save(tiny_model("Relu", ["x"], ["y"], shape=(1, 4)), str(workdir / "fixed.onnx"))
    (workdir / "rows.yaml").write_text(KERNEL_YAML.replace("kind: out, dtype: float32, shape: [N, C]",
                                                           "kind: out, dtype: float32, shape: [N * C, 4]"))
    text = ("inputs:\n  x: {dtype: float32, shape: [N, M]}\noutputs: [z]\nsnippets:\n  relu: {onnx: fixed.onnx}\n"
            "kernels:\n  rows: rows.yaml\nsteps:\n  - kernel: rows\n    args: {src: x, dst: r, factor: 2.0}\n"
            "  - snippet: relu\n    inputs: {x: r}\n    outputs: {y: z}\n"
            "dims:\n  N: {min: 1, opt: 2, max: 4}\n  M: {min: 1, opt: 2, max: 3}\n")
    path = write(workdir, text)
    assert problems(path) == [
        f"{path}:12:17: steps[1].inputs.x: tensor 'r' has shape [N * M, 4]; input 'x' of fixed.onnx: dimension 0 is "
        "fixed at 1, but 'N * M' ranges over 1..12 (dims.M: 1..3, dims.N: 1..4); export the model with a dynamic "
        "dimension there, or narrow the dims"]


DUPLICATED = """\
inputs:
  x: {dtype: float32, shape: [N, 4]}
outputs: [z]
snippets:
  relu: {onnx: relu.onnx}
  add: {onnx: add.onnx}
kernels:
  two: two.yaml
steps:
  - kernel: two
    args: {src: x, dst: a, aux: p, factor: 2.0}
  - kernel: two
    args: {src: x, dst: b, aux: q, factor: 2.0}
  - snippet: relu
    inputs: {x: x}
    outputs: {y: r}
  - snippet: relu
    inputs: {x: x}
    outputs: {y: s}
  - snippet: add
    inputs: {a: b, b: q}
    outputs: {c: t}
  - snippet: add
    inputs: {a: t, b: s}
    outputs: {c: z}
"""


@pytest.mark.parametrize("optimize", [False, True])
def test_repeated_steps_are_warned_about_in_full_and_optimize_keeps_the_first_outputs_used(workdir, optimize):
    """The repeats' outputs are read, the first steps' are not: with optimize: true the readers read the first
    steps' outputs, which are therefore not reported as unused."""
    (workdir / "two.yaml").write_text(KERNEL_YAML.replace(
        "  - {name: factor,", "  - {name: aux, kind: out, dtype: float32, shape: [N, C]}\n  - {name: factor,"))
    path = write(workdir, ("optimize: true\n" if optimize else "") + DUPLICATED)
    line = 2 if optimize else 1
    suffix = " (optimize: true computes it once)" if optimize else ""
    unused = [] if optimize else [
        f"{path}:{10 + line}:25: steps[0].args.dst: warning: tensor 'a' is computed but never used",
        f"{path}:{10 + line}:33: steps[0].args.aux: warning: tensor 'p' is computed but never used",
        f"{path}:{15 + line}:18: steps[2].outputs.y: warning: tensor 'r' is computed but never used"]
    assert sorted(str(w) for w in load_pipeline(path).warnings) == sorted([
        f"{path}:{11 + line}:5: steps[1]: warning: step 'two_2' repeats step 'two' at {path}:{9 + line}: the same "
        f"kernel 'two' on the same tensors and arguments; use its outputs (a, p) instead of computing them "
        f"twice{suffix}",
        f"{path}:{16 + line}:5: steps[3]: warning: step 'relu_2' repeats step 'relu' at {path}:{13 + line}: the same "
        f"snippet 'relu' on the same tensors and arguments; use its outputs (r) instead of computing them "
        f"twice{suffix}", *unused])


def test_branch_shapes_that_can_never_agree_are_refused(workdir):
    """[N, N] in one branch, [2, 3] in the other: no axis alone differs provably, but N cannot be both 2 and 3
    (was accepted, and the CPU run of the else branch gave z of shape [2, 3] for the declared [N, N])."""
    text = ("inputs:\n  x: {dtype: float32, shape: [N, N]}\n  w: {dtype: float32, shape: [2, 3]}\n"
            "  c: {dtype: int32, host: true}\noutputs: [y]\nkernels:\n  scale: scale.yaml\nsteps:\n"
            "  - if: c > 0\n    then:\n      - kernel: scale\n        args: {src: x, dst: y, factor: 2.0}\n"
            "    else:\n      - kernel: scale\n        args: {src: w, dst: y, factor: 2.0}\n")
    path = write(workdir, text)
    assert problems(path) == [f"{path}:9:5: steps[0]: tensor 'y' has shape [N, N] in 'then' but [2, 3] in 'else'"]


def test_a_constant_is_described_under_its_own_name(workdir):
    text = ("inputs:\n  x: {dtype: float32, shape: [2, 4]}\noutputs: [z]\nconstants:\n"
            "  k: {value: [[1, 2, 3, 4], [5, 6, 7, 8]], dtype: float32}\nkernels:\n  scale: scale.yaml\nsteps:\n"
            "  - kernel: scale\n    args: {src: k, dst: z, factor: 2.0}\n")
    info = load_pipeline(write(workdir, text)).tensors["k"]
    assert (info.name, info.dtype, info.shape, info.origin) == ("k", "float32", (2, 4), "constant")


def test_loop_carry_shapes_that_can_never_agree_are_refused(workdir):
    """State [N, N] replaced by [2, 3] each iteration: no axis alone differs provably, but N cannot be both
    2 and 3 (the same gap as branch outputs had)."""
    text = ("inputs:\n  x: {dtype: float32, shape: [N, N]}\n  w: {dtype: float32, shape: [2, 3]}\n"
            "  c: {dtype: int32, host: true}\noutputs: [x]\nkernels:\n  scale: scale.yaml\nsteps:\n"
            "  - while: c > 0\n    max_iterations: 2\n    carry: {x: n}\n    body:\n"
            "      - kernel: scale\n        args: {src: w, dst: n, factor: 2.0}\n")
    path = write(workdir, text)
    assert problems(path) == [f"{path}:11:16: steps[0].carry.x: 'n' (float32 [2, 3]) cannot replace 'x' "
                              f"(float32 [N, N]): dtype and shape must match"]


def test_shapes_that_can_never_agree_are_refused_whichever_comes_first(workdir):
    """[2, 3] in 'then' and [N, N] in 'else' (the symbols on the second side), and a loop whose state is
    [2, 3] replaced by [N, N]: refused as in the other order."""
    text = ("inputs:\n  x: {dtype: float32, shape: [N, N]}\n  w: {dtype: float32, shape: [2, 3]}\n"
            "  c: {dtype: int32, host: true}\noutputs: [y]\nkernels:\n  scale: scale.yaml\nsteps:\n"
            "  - if: c > 0\n    then:\n      - kernel: scale\n        args: {src: w, dst: y, factor: 2.0}\n"
            "    else:\n      - kernel: scale\n        args: {src: x, dst: y, factor: 2.0}\n")
    path = write(workdir, text)
    assert problems(path) == [f"{path}:9:5: steps[0]: tensor 'y' has shape [2, 3] in 'then' but [N, N] in 'else'"]
    text = ("inputs:\n  x: {dtype: float32, shape: [N, N]}\n  w: {dtype: float32, shape: [2, 3]}\n"
            "  c: {dtype: int32, host: true}\noutputs: [w]\nkernels:\n  scale: scale.yaml\nsteps:\n"
            "  - while: c > 0\n    max_iterations: 2\n    carry: {w: n}\n    body:\n"
            "      - kernel: scale\n        args: {src: x, dst: n, factor: 2.0}\n")
    path = write(workdir, text)
    assert problems(path) == [f"{path}:11:16: steps[0].carry.w: 'n' (float32 [N, N]) cannot replace 'w' "
                              f"(float32 [2, 3]): dtype and shape must match"]
