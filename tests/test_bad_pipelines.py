"""Every bad pipeline gets a one-line error ``file:line:col: yaml.path: message`` and no traceback.

Each case edits the valid BASE pipeline (or the kernel file it includes). The line carrying the ``#!``
marker is where the error must be reported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import BASE, KERNEL_YAML

from orchestrator.cli import main
from orchestrator.errors import ConfigError
from orchestrator.pipeline.load import load_pipeline


@dataclass
class Case:
    id: str
    expect: str
    edits: list[tuple[str, str]] = field(default_factory=list)
    kernel_edits: list[tuple[str, str]] = field(default_factory=list)
    append: str = ""
    extra_files: dict[str, bytes] = field(default_factory=dict)

    @property
    def in_kernel_file(self) -> bool:
        return any("#!" in new for _, new in self.kernel_edits)


STEP1 = "  - snippet: relu\n    inputs: {x: x}\n    outputs: {y: y}\n"
STEP2 = "  - kernel: scale\n    args: {src: y, dst: z, factor: 2.0}\n"
IF_BLOCK = """\
  - if: {cond}
    then:
      - kernel: scale
        args: {{src: y, dst: z, factor: 2.0}}
    else:
      - kernel: scale
        args: {{src: y, dst: z, factor: 3.0}}
"""

CASES = [
    # --- YAML and schema ---------------------------------------------------------------------------
    Case("yaml_syntax", "invalid YAML", [("outputs: [z]", "outputs: [z]\nsteps: - bad: [ #!")]),
    Case("duplicate_key", "duplicate key 'outputs'", [("outputs: [z]\n", "outputs: [z]\noutputs: [z] #!\n")]),
    Case("unknown_top_key", "did you mean 'outputs'", append="outputz: [z] #!\n"),
    Case("unknown_step_key", "unknown key 'inputz'", [("    inputs: {x: x}", "    inputz: {x: x} #!")]),
    Case("missing_outputs", "missing required key 'outputs'", [("inputs:\n", "inputs: #!\n"), ("outputs: [z]\n", "")]),
    Case("bad_dtype", "expected 'float32'",
         [("x: {dtype: float32, shape: [N, 4]}", "x: {dtype: float33, shape: [N, 4]} #!")]),
    Case("bad_shape_expr", "'4+' is not a valid expression", [("shape: [N, 4]}", "shape: [N, 4+]} #!")]),
    Case("shape_not_list", "expected a valid list", [("shape: [N, 4]}", "shape: 4} #!")]),
    Case("host_nonscalar", "a host input must be a scalar",
         [("flag: {dtype: int32, host: true}", "flag: {dtype: int32, host: true, shape: [2]} #!")]),
    Case("dims_order", "min <= opt <= max", append="dims:\n  N: {min: 4, opt: 2, max: 8} #!\n"),
    Case("bad_name", "is not a valid name", [("outputs: {y: y}", "outputs: {y: 1bad} #!")]),
    Case("precision", "expected 'fp32', 'fp16' or 'bf16'",
         [("relu: {onnx: relu.onnx}", "relu: {onnx: relu.onnx, precision: fp8} #!")]),
    Case("format_value", "expected 'linear' or 'hwc8'",
         [("relu: {onnx: relu.onnx}", "relu: {onnx: relu.onnx, formats: {y: chw32}} #!")]),
    Case("format_port", "relu.onnx has no input or output 'q'",
         [("relu: {onnx: relu.onnx}", "relu: {onnx: relu.onnx, precision: fp16, formats: {q: hwc8}} #!")]),
    Case("format_needs_fp16", "'hwc8' is TensorRT's FP16 format; it needs precision: fp16",
         [("relu: {onnx: relu.onnx}", "relu: {onnx: relu.onnx, formats: {y: hwc8}} #!")]),
    Case("format_rank", "'hwc8' is a layout of 4-D (NCHW) tensors; 'y' has shape [N, 4]",
         [("relu: {onnx: relu.onnx}", "relu: {onnx: relu.onnx, precision: fp16, formats: {y: hwc8}} #!")]),
    Case("workspace", "is not a size", [("relu: {onnx: relu.onnx}", "relu: {onnx: relu.onnx, workspace: lots} #!")]),
    Case("step_no_kind", "a step needs exactly one of the keys", append="  - name: stray #!\n"),
    Case("step_two_kinds", "a step needs exactly one of the keys",
         append="  - snippet: relu #!\n    kernel: scale\n"),
    Case("while_no_max", "missing required key 'max_iterations'",
         append="  - while: flag #!\n    body:\n      - snippet: relu\n        outputs: {y: w}\n"),
    Case("not_a_mapping", "must be a YAML mapping", [(BASE, "- just #!\n- a list\n")]),
    Case("constant_ragged", "not a regular (rectangular) array",
         append="constants:\n  w: {value: [[1, 2], [3]], dtype: float32} #!\n"),
    # --- files -------------------------------------------------------------------------------------
    Case("missing_onnx", "ONNX file not found", [("relu: {onnx: relu.onnx}", "relu: {onnx: nope.onnx} #!")]),
    Case("corrupt_onnx", "cannot read ONNX model", [("relu: {onnx: relu.onnx}", "relu: {onnx: bad.onnx} #!")],
         extra_files={"bad.onnx": b"\x08\x07garbage that is not a protobuf\xff\xff"}),
    Case("kernel_file_missing", "kernel file not found", [("scale: scale.yaml", "scale: nope.yaml #!")]),
    Case("kernel_inline_empty", "missing required key 'entry'", [("scale: scale.yaml", "scale: {} #!")]),
    Case("constant_missing_file", "file not found", append="constants:\n  w: {file: nope.npy} #!\n"),
    Case("constant_bad_suffix", "unsupported constant file type", append="constants:\n  w: {file: ref.py} #!\n"),
    Case("kernel_source_missing", "kernel source not found", kernel_edits=[("source: scale.cu", "source: nope.cu #!")]),
    Case("kernel_entry_missing", "entry point 'scal' does not appear",
         kernel_edits=[("entry: scale", "entry: scal #!")]),
    Case("reference_missing_function", "ref.py has no function 'nope'",
         kernel_edits=[("reference: ref.py:scale", "reference: ref.py:nope #!")]),
    Case("reference_import_fails", "importing broken.py failed",
         kernel_edits=[("reference: ref.py:scale", "reference: broken.py:scale #!")],
         extra_files={"broken.py": b"import not_a_module_anywhere\n"}),
    Case("kernel_code_and_source", "exactly one of 'source' or 'code'",
         kernel_edits=[("source: scale.cu", "source: scale.cu #!\ncode: 'x'")]),
    Case("kernel_out_without_shape", "an 'out' argument needs a 'shape' rule",
         kernel_edits=[("{name: dst, kind: out, dtype: float32, shape: [N, C]}",
                        "{name: dst, kind: out, dtype: float32} #!")]),
    Case("kernel_unbound_symbol", "which no 'in' argument's shape binds",
         kernel_edits=[("{name: dst, kind: out, dtype: float32, shape: [N, C]}",
                        "{name: dst, kind: out, dtype: float32, shape: [N, K]} #!")]),
    Case("kernel_launch_unknown", "'out' is not a tensor argument",
         kernel_edits=[("launch: {threads: dst, block: 128}", "launch: {threads: out, block: 128} #!")]),
    Case("kernel_launch_both", "exactly one of 'threads' or 'grid'",
         kernel_edits=[("launch: {threads: dst, block: 128}", "launch: {threads: dst, grid: [1]} #!")]),
    Case("kernel_unknown_kind", "expected 'in', 'out' or 'scalar'",
         kernel_edits=[("{name: src, kind: in, dtype: float32, shape: [N, C]}",
                        "{name: src, kind: inout, dtype: float32, shape: [N, C]} #!")]),
    # --- wiring ------------------------------------------------------------------------------------
    Case("unknown_snippet", "did you mean 'relu'", [("  - snippet: relu\n", "  - snippet: relux #!\n")]),
    Case("unknown_kernel", "unknown kernel 'scal'", [("  - kernel: scale\n", "  - kernel: scal #!\n")]),
    Case("undefined_tensor", "tensor 'xx' is not defined before this step", [("inputs: {x: x}", "inputs: {x: xx} #!")]),
    Case("use_before_define", "tensor 'y' is not defined before this step",
         [(STEP1 + STEP2, STEP2.replace("factor: 2.0}", "factor: 2.0} #!") + STEP1)]),
    Case("defined_twice", "tensor 'x' is already defined at", [("outputs: {y: y}", "outputs: {y: x} #!")]),
    Case("onnx_no_such_input", "relu.onnx has no input 'q'", [("inputs: {x: x}", "inputs: {x: x, q: x} #!")]),
    Case("onnx_no_such_output", "relu.onnx has no output 'yy'", [("outputs: {y: y}", "outputs: {y: y, yy: w} #!")]),
    Case("onnx_input_unbound", "input 'b' of add.onnx is not bound",
         append="  - snippet: add #!\n    inputs: {a: x}\n    outputs: {c: w}\n"),
    Case("snippet_dtype", "is float32 but input 'x' of half.onnx expects float16",
         [("relu: {onnx: relu.onnx}", "relu: {onnx: half.onnx}"), ("inputs: {x: x}", "inputs: {x: x} #!")]),
    Case("snippet_rank", "rank 3 does not match the expected rank 2",
         [("shape: [N, 4]}", "shape: [N, 4, 1]}"), ("inputs: {x: x}", "inputs: {x: x} #!")]),
    Case("snippet_dim", "dimension 1 is 5, expected 4",
         [("shape: [N, 4]}", "shape: [N, 5]}"), ("inputs: {x: x}", "inputs: {x: x} #!")]),
    Case("host_as_tensor", "'flag' is a host input", [("inputs: {x: x}", "inputs: {x: flag} #!")]),
    Case("kernel_unknown_arg", "has no argument 'gain'",
         [("args: {src: y, dst: z, factor: 2.0}", "args: {src: y, dst: z, factor: 2.0, gain: 1} #!")]),
    Case("kernel_scalar_unbound", "scalar argument 'factor' of kernel 'scale' is not bound",
         [("    args: {src: y, dst: z, factor: 2.0}", "    args: {src: y, dst: z} #!")]),
    Case("kernel_tensor_as_number", "argument 'src' is a tensor",
         [("args: {src: y, dst: z, factor: 2.0}", "args: {src: 3, dst: z, factor: 2.0} #!")]),
    Case("kernel_scalar_from_tensor", "'x' is a device tensor",
         [("args: {src: y, dst: z, factor: 2.0}", "args: {src: y, dst: z, factor: x} #!")]),
    Case("kernel_derived_scalar_bound", "is computed by the kernel description",
         [("args: {src: y, dst: z, factor: 2.0}", "args: {src: y, dst: z, factor: 2.0, count: 3} #!")]),
    Case("kernel_int_scalar_float", "is int32; 0.5 is not an integer",
         [("args: {src: y, dst: z, factor: 2.0}", "args: {src: y, dst: z, factor: 0.5} #!")],
         kernel_edits=[("{name: factor, kind: scalar, dtype: float32}", "{name: factor, kind: scalar, dtype: int32}")]),
    Case("kernel_dtype", "is int32 but argument 'src' of kernel 'scale' expects float32",
         [("  flag:", "  i: {dtype: int32, shape: [N, 4]}\n  flag:"),
          ("args: {src: y, dst: z, factor: 2.0}", "args: {src: i, dst: z, factor: 2.0} #!")]),
    Case("kernel_shape_pattern", "dimension 1 is 4, expected 8",
         [("args: {src: y, dst: z, factor: 2.0}", "args: {src: y, dst: z, factor: 2.0} #!")],
         kernel_edits=[("{name: src, kind: in, dtype: float32, shape: [N, C]}",
                        "{name: src, kind: in, dtype: float32, shape: [N, 8]}"),
                       ("shape: [N, C]}\n  - {name: factor", "shape: [N, 8]}\n  - {name: factor"),
                       ("value: N * C", "value: N * 8")]),
    Case("output_undefined", "tensor 'zz' is not defined", [("outputs: [z]", "outputs: [zz] #!")]),
    Case("output_twice", "output 'z' is listed twice", [("outputs: [z]", "outputs: [z, z] #!")]),
    Case("step_name_twice", "step name 'a' is used twice",
         [("  - snippet: relu\n", "  - snippet: relu\n    name: a\n"), ("  - kernel: scale\n", "  - kernel: scale\n    name: a #!\n")]),
    Case("constant_collision", "'x' is both an input and a constant",
         append="constants:\n  x: {value: [1.0], dtype: float32} #!\n"),
    Case("profile_unknown_input", "relu.onnx has no input 'q'",
         [("relu: {onnx: relu.onnx}", "relu:\n    onnx: relu.onnx\n    profile:\n      q: {min: [1, 4], opt: [1, 4], max: [1, 4]} #!")]),
    # --- control flow ------------------------------------------------------------------------------
    Case("condition_syntax", "is not a valid condition", [(STEP2, IF_BLOCK.format(cond="'x <' #!"))]),
    Case("condition_unknown", "tensor 'flagg' is not defined", [(STEP2, IF_BLOCK.format(cond="flagg #!"))]),
    Case("condition_not_scalar", "a condition needs a host input or a tensor of one element",
         [(STEP2, IF_BLOCK.format(cond="y > 0 #!"))]),
    Case("condition_rhs_tensor", "'y' must be a number or a host input",
         [(STEP2, IF_BLOCK.format(cond="flag > y #!"))]),
    Case("branch_outputs_differ", "is defined in 'then' of the block at",
         [(STEP2, IF_BLOCK.format(cond="flag").replace("dst: z, factor: 3.0", "dst: w, factor: 3.0")),
          ("outputs: [z]", "outputs: [z] #!")]),
    Case("branch_dtypes_differ", "is float32 in 'then' but float16 in 'else'",
         [("  flag:", "  h: {dtype: float16, shape: [N, 4]}\n  flag:"),
          ("add: {onnx: add.onnx}", "half: {onnx: half.onnx}"),
          (STEP2, "  - if: flag #!\n    then:\n      - kernel: scale\n        args: {src: y, dst: z, factor: 2.0}\n"
                  "    else:\n      - snippet: half\n        inputs: {x: h}\n        outputs: {y: z}\n")]),
    Case("switch_float", "a switch needs an integer value",
         [("  flag:", "  mode: {dtype: float32, host: true}\n  flag:"),
          (STEP2, "  - switch: mode #!\n    cases:\n      0:\n        - kernel: scale\n"
                  "          args: {src: y, dst: z, factor: 2.0}\n")]),
    Case("while_carry_undefined", "must be a tensor defined inside the loop body",
         [(STEP2, STEP2 + "  - while: flag\n    max_iterations: 3\n    carry: {z: nope} #!\n    body:\n"
                          "      - kernel: scale\n        args: {src: z, dst: z2, factor: 0.5}\n")]),
    Case("branch_shapes_differ", "tensor 'z' has shape [N, 4] in 'then' but [N, 8] in 'else'",
         [("  flag:", "  w: {dtype: float32, shape: [N, 8]}\n  flag:"),
          (STEP2, IF_BLOCK.format(cond="flag #!").replace("src: y, dst: z, factor: 3.0", "src: w, dst: z, factor: 3.0"))]),
    Case("while_carry_shape", "'z2' (float32 [N, 8]) cannot replace 'z' (float32 [N, 4]): dtype and shape must match",
         [("  flag:", "  w: {dtype: float32, shape: [N, 8]}\n  flag:"),
          (STEP2, STEP2 + "  - while: flag\n    max_iterations: 3\n    carry: {z: z2} #!\n    body:\n"
                          "      - kernel: scale\n        args: {src: w, dst: z2, factor: 0.5}\n")]),
    Case("while_carry_dtype", "'z2' (float16 [N, 4]) cannot replace 'z' (float32 [N, 4])",
         [("  flag:", "  h: {dtype: float16, shape: [N, 4]}\n  flag:"),
          ("add: {onnx: add.onnx}", "half: {onnx: half.onnx}"),
          (STEP2, STEP2 + "  - while: flag\n    max_iterations: 3\n    carry: {z: z2} #!\n    body:\n"
                          "      - snippet: half\n        inputs: {x: h}\n        outputs: {y: z2}\n")]),
    Case("loop_local_used_after", "it is local to the loop body",
         [(STEP2, STEP2 + "  - while: flag\n    max_iterations: 3\n    carry: {z: z2}\n    body:\n"
                          "      - kernel: scale\n        args: {src: z, dst: z2, factor: 0.5}\n"),
          ("outputs: [z]", "outputs: [z, z2] #!")]),
]


def _apply(text: str, edits: list[tuple[str, str]], case_id: str) -> str:
    for old, new in edits:
        assert old in text, f"{case_id}: edit target not found: {old!r}"
        text = text.replace(old, new, 1)
    return text


def _marker_line(text: str) -> int:
    lines = [i + 1 for i, line in enumerate(text.splitlines()) if "#!" in line]
    assert len(lines) == 1, "each case marks exactly one line"
    return lines[0]


def _setup(workdir: Path, case: Case) -> tuple[Path, str, int]:
    pipeline = _apply(BASE, case.edits, case.id) + case.append
    kernel = _apply(KERNEL_YAML, case.kernel_edits, case.id)
    for name, data in case.extra_files.items():
        (workdir / name).write_bytes(data)
    (workdir / "scale.yaml").write_text(kernel)
    path = workdir / "pipeline.yaml"
    path.write_text(pipeline)
    target, text = ("scale.yaml", kernel) if case.in_kernel_file else ("pipeline.yaml", pipeline)
    return path, target, _marker_line(text)


LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<rest>.+)$")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_pipeline_error_names_file_line_and_problem(workdir: Path, case: Case):
    path, target, line = _setup(workdir, case)
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    problems = [str(p) for p in info.value.problems]
    matching = [p for p in problems if case.expect in p]
    assert matching, f"no problem mentions {case.expect!r}: {problems}"
    parsed = LINE.match(matching[0])
    assert parsed, f"not in file:line:col form: {matching[0]}"
    assert parsed["file"].endswith(target) and int(parsed["line"]) == line, (matching[0], target, line)
    assert all("\n" not in p for p in problems)


@pytest.mark.parametrize("case", CASES[::7], ids=[c.id for c in CASES[::7]])
def test_cli_validate_reports_one_line_errors_without_traceback(workdir: Path, case: Case, capsys):
    path, _, _ = _setup(workdir, case)
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for line in err.strip().splitlines():
        assert LINE.match(line), line


def test_distinct_cases():
    assert len({c.id for c in CASES}) == len(CASES) >= 40
    assert len({c.expect for c in CASES}) >= 40


def test_every_problem_is_reported_at_once(workdir: Path):
    text = BASE.replace("inputs: {x: x}", "inputs: {x: xx}").replace("outputs: [z]", "outputs: [z, q]")
    text = text.replace("relu: {onnx: relu.onnx}", "relu: {onnx: relu.onnx}\n  extra: {onnx: missing.onnx}")
    path = workdir / "many.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    messages = "\n".join(str(p) for p in info.value.problems)
    for expected in ("'xx' is not defined", "'q' is not defined", "ONNX file not found"):
        assert expected in messages
