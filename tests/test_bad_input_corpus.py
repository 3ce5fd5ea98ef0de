"""An adversarial corpus (issue 15), generated at test time: every case runs the command line in-process and
must give its exit code, one line per problem naming the file (and line), and no traceback.

Classes: things that used to hang or crash (``hang``), user mistakes that used to be internal errors
(``internal``), mistakes that used to be silently accepted or misread (``silent``), and unclear reports
(``unclear``). Each class has at least ten cases.
"""

from __future__ import annotations

import logging
import os
import re
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import tiny_model
from onnx import TensorProto, helper

from orchestrator.cli import main

LONG = "q" * 100_000


@dataclass
class Case:
    id: str
    cls: str  # hang | internal | silent | unclear
    setup: Callable[[Path], list[str]]  # prepares the files, returns the command line
    code: int
    expect: str  # text of the problem line (or of the warning line, for cases that exit 0)
    where: str | None = None  # "file:line" (or "file") the problem line must name


# ---- helpers that build a case's files -----------------------------------------------------------

def edit(folder: Path, name: str, old: str, new: str) -> None:
    text = (folder / name).read_text()
    assert old in text, (name, old)
    (folder / name).write_text(text.replace(old, new, 1))


def fifo(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.mkfifo(path)


def zero(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.symlink_to("/dev/zero")


def validate(w: Path, *extra: str) -> list[str]:
    return ["validate", str(w / "base.yaml"), *extra]


def run(w: Path, inputs: dict[str, np.ndarray] | None = None, *extra: str) -> list[str]:
    if inputs is not None:
        np.savez(w / "in.npz", **inputs)
    return ["run", str(w / "base.yaml"), "--inputs", str(w / "in.npz"), "--device", "cpu", *extra]


def good_inputs() -> dict[str, np.ndarray]:
    return {"x": np.arange(8, dtype=np.float32).reshape(2, 4) - 3, "flag": np.int32(1)}


def then(*steps: Callable[[Path], object]) -> Callable[[Path], list[str]]:
    """Run the setup steps in order; the last one returns the command line."""
    def setup(w: Path) -> list[str]:
        result = None
        for step in steps:
            result = step(w)
        return result  # type: ignore[return-value]
    return setup


def save_model(name: str, model: onnx.ModelProto) -> Callable[[Path], None]:
    return lambda w: (w / name).write_bytes(model.SerializeToString())


def _dangling() -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("Relu", ["q"], ["y"])], "dangling",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def _external_missing() -> onnx.ModelProto:
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4], [1.0, 2.0, 3.0, 4.0])
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="missing_weights.bin")
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "external",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def _with(model: onnx.ModelProto, **fields) -> onnx.ModelProto:
    for key, value in fields.items():
        if key == "opset":
            del model.opset_import[:]
            model.opset_import.append(helper.make_opsetid("", value))
        else:
            setattr(model, key, value)
    return model


BOMB = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 9))
CU3 = 'extern "C" __global__ void scale(const float* src, float* dst, float factor) {}\n'
SWITCH = ("  - switch: flag\n    cases:\n      abc:\n        - kernel: scale\n"
          "          args: {src: y, dst: z, factor: 2.0}\n")
STEP2 = "  - kernel: scale\n    args: {src: y, dst: z, factor: 2.0}\n"

CASES = [
    # --- hangs and crashes: FIFOs, devices, alias bombs ------------------------------------------------
    Case("alias_bomb", "hang", then(lambda w: (w / "base.yaml").write_text("l0: &l0 [x]\n" + BOMB),
                                    validate), 1, "expand this value to more than", "base.yaml:6"),
    Case("pipeline_too_big", "hang", then(lambda w: (w / "base.yaml").open("a").write("#" * (5 << 20)), validate), 1,
         "the limit for this kind of file is 4,194,304", "base.yaml"),
    Case("pipeline_fifo", "hang", then(lambda w: fifo(w / "base.yaml"), validate), 1, "named pipe (FIFO)",
         "base.yaml"),
    Case("pipeline_dev_zero", "hang", then(lambda w: zero(w / "base.yaml"), validate), 1, "character device",
         "base.yaml"),
    Case("kernel_source_fifo", "hang", then(lambda w: fifo(w / "scale.cu"), validate), 1,
         "scale.cu is a named pipe", "scale.yaml:1"),
    Case("kernel_source_dev_zero", "hang", then(lambda w: zero(w / "scale.cu"), validate), 1,
         "/dev/zero is a character device", "scale.yaml:1"),
    Case("kernel_yaml_fifo", "hang", then(lambda w: fifo(w / "scale.yaml"), validate), 1,
         "kernel file scale.yaml: a named pipe", "base.yaml:9"),
    Case("onnx_fifo", "hang", then(lambda w: fifo(w / "relu.onnx"), validate), 1, "relu.onnx is a named pipe",
         "base.yaml:6"),
    Case("onnx_dev_zero", "hang", then(lambda w: zero(w / "relu.onnx"), validate), 1,
         "/dev/zero is a character device", "base.yaml:6"),
    Case("constant_fifo", "hang", then(lambda w: fifo(w / "w.npy"),
                                       lambda w: (w / "base.yaml").open("a").write("constants:\n  w: {file: w.npy}\n"),
                                       validate), 1, "w.npy is a named pipe", "base.yaml:17"),
    Case("reference_fifo", "hang", then(lambda w: fifo(w / "ref.py"), validate), 1, "ref.py is a named pipe",
         "scale.yaml:9"),
    Case("inputs_fifo", "hang", then(lambda w: fifo(w / "in.npz"), run), 1, "in.npz is a named pipe", "in.npz"),
    Case("header_fifo", "hang", then(lambda w: fifo(w / "extra.cuh"),
                                     lambda w: edit(w, "scale.cu", 'extern', '#include "extra.cuh"\nextern'),
                                     lambda w: validate(w, "--compile")), 1,
         "extra.cuh is a named pipe", "scale.yaml:1"),
    # --- user mistakes that were internal errors -------------------------------------------------------
    Case("pipeline_not_utf8", "internal",
         then(lambda w: (w / "base.yaml").write_bytes((w / "base.yaml").read_bytes().replace(b"[z]", b"[z] # \xff")),
              validate), 1, "not UTF-8 text (byte 0xff at line 4, column 16)", "base.yaml:4"),
    Case("kernel_source_binary", "internal", then(lambda w: (w / "scale.cu").write_bytes(b"int a;\n\x00\x01\x02"),
                                                  validate), 1, "scale.cu is a binary file (NUL byte at line 2",
         "scale.yaml:1"),
    Case("validate_onnx_file", "internal", lambda w: ["validate", str(w / "relu.onnx")], 1,
         "this looks like an ONNX model", "relu.onnx:"),
    Case("deep_nesting", "internal", then(lambda w: (w / "base.yaml").write_text("x: " + "[" * 500 + "]" * 500),
                                          validate), 1, "nesting deeper than 64 levels", "base.yaml:1"),
    Case("recursive_alias", "internal", then(lambda w: (w / "base.yaml").write_text("a: 1\nb: &b [1, *b]\n"),
                                             validate), 1, "recursive alias", "base.yaml:2"),
    Case("rule_divides_by_zero", "internal", then(lambda w: edit(w, "scale.yaml", "value: N * C", "value: N // 0"),
                                                  validate), 1, "the divisor '0' may be zero", "scale.yaml:7"),
    Case("rule_divides_by_difference", "internal",
         then(lambda w: edit(w, "scale.yaml", "value: N * C", "value: N % (C - 4)"), validate), 1,
         "the divisor 'C - 4' may be zero", "scale.yaml:7"),
    Case("rule_cdiv_arity", "internal", then(lambda w: edit(w, "scale.yaml", "value: N * C", "value: cdiv(N)"),
                                             validate), 1, "cdiv takes 2 arguments", "scale.yaml:7"),
    Case("onnx_unknown_op", "internal", then(save_model("relu.onnx", tiny_model("NoSuchOp", ["x"], ["y"])),
                                             validate), 1, "onnxruntime cannot load relu.onnx", "base.yaml:6"),
    Case("onnx_opset_99", "internal", then(save_model("relu.onnx", _with(tiny_model("Relu", ["x"], ["y"]), opset=99)),
                                           validate), 1, "onnxruntime cannot load relu.onnx", "base.yaml:6"),
    Case("onnx_ir_version_99", "internal",
         then(save_model("relu.onnx", _with(tiny_model("Relu", ["x"], ["y"]), ir_version=99)), validate), 1,
         "onnxruntime cannot load relu.onnx", "base.yaml:6"),
    Case("onnx_dangling_input", "internal", then(save_model("relu.onnx", _dangling()), validate), 1,
         "onnxruntime cannot load relu.onnx", "base.yaml:6"),
    Case("onnx_external_data_missing", "internal", then(save_model("relu.onnx", _external_missing()), validate), 1,
         "onnxruntime cannot load relu.onnx", "base.yaml:6"),
    Case("constant_out_of_range", "internal",
         then(lambda w: (w / "base.yaml").open("a").write("constants:\n  c: {value: [1000], dtype: int8}\n"),
              validate), 1, "1000 is outside the range of int8", "base.yaml:17"),
    Case("inputs_npy", "internal", then(lambda w: np.save((w / "in.npz").open("wb"), np.zeros(3)), run), 1,
         "is an .npy file (one array)", "in.npz"),
    Case("inputs_truncated_npz", "internal",
         then(lambda w: run(w, good_inputs()),
              lambda w: (w / "in.npz").write_bytes((w / "in.npz").read_bytes()[:200]), run), 1,
         "cannot read the .npz archive", "in.npz"),
    Case("host_scalar_string", "internal", then(lambda w: run(w, {**good_inputs(), "flag": np.array("abc")})), 1,
         "input 'flag' is a host scalar of dtype int32", "'flag'"),
    Case("output_folder_missing", "internal",
         then(lambda w: run(w, good_inputs(), "--output", str(w / "nope" / "out.npz"))), 1,
         "folder", "nope"),
    Case("dump_under_a_file", "internal",
         then(lambda w: run(w, good_inputs()),
              lambda w: ["debug", str(w / "base.yaml"), "--inputs", str(w / "in.npz"), "--device", "cpu",
                         "--dump", str(w / "ref.py" / "dump")]), 1, "ref.py is a file, not a folder", "--dump"),
    Case("cache_dir_is_file", "internal", lambda w: ["compile", str(w / "base.yaml"), "--cache-dir", str(w / "ref.py")],
         1, "it is a file, not a directory", "ref.py"),
    Case("cache_dir_under_file", "internal",
         lambda w: ["compile", str(w / "base.yaml"), "--cache-dir", str(w / "ref.py" / "cache")], 1,
         "cannot be used: Not a directory", "ref.py/cache"),
    Case("arch_not_an_arch", "internal", lambda w: ["compile", str(w / "base.yaml"), "--arch", "sm_abc"], 2,
         "'sm_abc' is not a GPU architecture", "orchestrator compile"),
    Case("profile_zero_iterations", "internal",
         then(lambda w: run(w, good_inputs()),
              lambda w: ["profile", str(w / "base.yaml"), "--inputs", str(w / "in.npz"), "--iters", "0"]), 2,
         "'0' is not a positive integer", "orchestrator profile"),
    # --- silently wrong or accepted --------------------------------------------------------------------
    Case("description_lists_too_many", "silent", then(lambda w: (w / "scale.cu").write_text(CU3),
                                                      lambda w: validate(w, "--compile")), 1,
         "has 3 parameter(s), but the description lists 4", "scale.yaml:3"),
    Case("description_lists_too_few", "silent",
         then(lambda w: (w / "scale.cu").write_text(CU3.replace("float factor", "float factor, int n, int m")),
              lambda w: validate(w, "--compile")), 1, "has 5 parameter(s), but the description lists 4",
         "scale.yaml:3"),
    Case("scalar_type_differs", "silent",
         then(lambda w: edit(w, "scale.yaml", "{name: factor, kind: scalar, dtype: float32}",
                             "{name: factor, kind: scalar, dtype: int32}"),
              lambda w: edit(w, "base.yaml", "factor: 2.0", "factor: 2"), lambda w: validate(w, "--compile")), 1,
         "parameter 3 of scale does not match argument 'factor' (scalar int32): expected int", "scale.yaml:6"),
    Case("pointer_type_differs", "silent",
         then(lambda w: edit(w, "scale.cu", "const float* src", "const int* src"), lambda w: validate(w, "--compile")),
         1, "parameter 1 of scale does not match argument 'src' (in float32)", "scale.yaml:4"),
    Case("output_pointer_const", "silent",
         then(lambda w: edit(w, "scale.cu", "float* dst", "const float* dst"), lambda w: validate(w, "--compile")),
         1, "not const: the kernel writes it", "scale.yaml:5"),
    Case("onnx_fixed_batch", "silent",
         then(save_model("relu.onnx", tiny_model("Relu", ["x"], ["y"], shape=(1, 4))),
              lambda w: (w / "base.yaml").open("a").write("dims:\n  N: {min: 1, opt: 2, max: 4}\n"), validate), 1,
         "dimension 0 is fixed at 1, but 'N' ranges over 1..4", "base.yaml:12"),
    Case("onnx_tied_dims", "silent",
         then(save_model("relu.onnx", tiny_model("Relu", ["x"], ["y"], shape=("N", "N"))),
              lambda w: (w / "base.yaml").open("a").write("dims:\n  N: {min: 1, opt: 2, max: 4}\n"), validate), 1,
         "dimension 1 is 4, but the model ties it to dimension 0 ('N'), here 'N', which ranges over 1..4",
         "base.yaml:12"),
    Case("empty_kernel_source", "silent", then(lambda w: (w / "scale.cu").write_text("// nothing yet\n"), validate),
         1, "the kernel source is empty", "scale.yaml:1"),
    Case("block_4096", "silent", then(lambda w: edit(w, "scale.yaml", "block: 128", "block: 4096"), validate), 1,
         "CUDA allows at most 1024", "scale.yaml:8"),
    Case("block_four_values", "silent", then(lambda w: edit(w, "scale.yaml", "block: 128", "block: [8, 4, 2, 2]"),
                                             validate), 1, "a block has 1 to 3 dimensions", "scale.yaml:8"),
    Case("block_too_many_threads", "silent",
         then(lambda w: edit(w, "scale.yaml", "block: 128", "block: [64, 32]"), validate), 1,
         "= 2048 threads", "scale.yaml:8"),
    Case("constant_fraction_as_int", "silent",
         then(lambda w: (w / "base.yaml").open("a").write("constants:\n  c: {value: [0.5], dtype: int32}\n"),
              validate), 1, "0.5 is not an integer, but dtype is int32", "base.yaml:17"),
    Case("debug_steps_typo", "silent", then(lambda w: run(w, good_inputs()),
                                            lambda w: ["debug", str(w / "base.yaml"), "--inputs", str(w / "in.npz"),
                                                       "--device", "cpu", "--steps", "rleu"]), 1,
         "--steps: no step named 'rleu'", "base.yaml"),
    Case("reference_exits", "silent", then(lambda w: (w / "ref.py").write_text("import sys\nsys.exit(0)\n"), validate),
         1, "importing ref.py called sys.exit(0)", "scale.yaml:9"),
    # --- unclear reports -------------------------------------------------------------------------------
    Case("long_snippet_name", "unclear", then(lambda w: edit(w, "base.yaml", "- snippet: relu", f"- snippet: {LONG}"),
                                              validate), 1, "(100000 characters)", "base.yaml:11"),
    Case("long_kernel_name", "unclear", then(lambda w: edit(w, "base.yaml", "- kernel: scale", f"- kernel: {LONG}"),
                                             validate), 1, "(100000 characters)", "base.yaml:14"),
    Case("long_output_name", "unclear", then(lambda w: edit(w, "base.yaml", "outputs: [z]", f"outputs: [z, {LONG}]"),
                                             validate), 1, "(100000 characters)", "base.yaml:4"),
    Case("long_tensor_name", "unclear", then(lambda w: edit(w, "base.yaml", "inputs: {x: x}", f"inputs: {{x: {LONG}}}"),
                                             validate), 1, "(100000 characters)", "base.yaml:12"),
    Case("long_dtype", "unclear", then(lambda w: edit(w, "base.yaml", "dtype: float32, shape", f"dtype: {LONG}, shape"),
                                       validate), 1, "(got 'qqqq", "base.yaml:2"),
    Case("entry_only_in_comment", "unclear",
         then(lambda w: (w / "scale.cu").write_text("// scale is the entry\n" + CU3.replace("scale(", "other(")),
              lambda w: validate(w, "--compile")), 1, "(only in a comment or string)", "scale.yaml:2"),
    Case("template_entry_without_args", "unclear",
         then(lambda w: (w / "scale.cu").write_text("template <class T> __global__ void scale(const T* s, T* d, float f, "
                                                    "int n) {}\n"), lambda w: validate(w, "--compile")), 1,
         "with template_args if it is a template", "scale.yaml:1"),
    Case("switch_case_key", "unclear", then(lambda w: edit(w, "base.yaml", STEP2, SWITCH), validate), 1,
         "key 'abc'", "base.yaml:16"),
    Case("profile_unknown_key", "unclear",
         then(lambda w: edit(w, "base.yaml", "relu: {onnx: relu.onnx}",
                             "relu: {onnx: relu.onnx, profile: {x: {min: [1, 4], opt: [1, 4], max: [1, 4], mid: 1}}}"),
              validate), 1, "unknown key 'mid' (expected one of: min, opt, max)", "base.yaml:6"),
    Case("kernel_yaml_validated_as_pipeline", "unclear", lambda w: ["validate", str(w / "scale.yaml")], 1,
         "this is a kernel description, not a pipeline", "scale.yaml:1"),
    Case("usage_unknown_command", "unclear", lambda w: ["valdate", str(w / "base.yaml")], 2,
         "invalid choice: 'valdate'", "orchestrator"),
    Case("usage_missing_inputs", "unclear", lambda w: ["run", str(w / "base.yaml")], 2,
         "the following arguments are required: --inputs", "orchestrator run"),
]


@pytest.fixture(autouse=True)
def _no_hang():
    """A case that blocks (on a FIFO, say) fails after 20 s instead of hanging the suite."""
    def expire(*_):
        raise TimeoutError("the command blocked for 20 s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _problem_lines(err: str) -> list[str]:
    """stderr without warnings about unused things and the CPU-backend notice."""
    return [line for line in err.strip().splitlines() if ": warning: " not in line and line.strip()]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_one_clear_line(workdir: Path, case: Case, capsys, monkeypatch):
    monkeypatch.setenv("ORCHESTRATOR_CACHE", str(workdir / "cache"))
    argv = case.setup(workdir)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err, err[:2000]
    lines = _problem_lines(err)
    assert code == case.code, (code, lines)
    assert len(lines) == 1, lines
    line = lines[0]
    assert case.expect in line, line
    assert len(line) < 1000, line[:300]
    if case.where and re.fullmatch(r".+:\d+", case.where):
        file, number = case.where.rsplit(":", 1)
        assert re.search(rf"(^|/){re.escape(file)}:{number}(:\d+)?: ", line), (case.where, line)
    elif case.where:
        assert case.where in line, (case.where, line)


def test_every_class_has_ten_cases():
    counts = {cls: sum(c.cls == cls for c in CASES) for cls in ("hang", "internal", "silent", "unclear")}
    assert min(counts.values()) >= 10, counts
    assert len({c.id for c in CASES}) == len(CASES)


# ---- cases that succeed: converted input, rebuilt cache entries ----------------------------------

def test_big_endian_inputs_are_converted(workdir: Path, capsys):
    x = np.arange(8, dtype=">f4").reshape(2, 4) - 3
    argv = run(workdir, {"x": x, "flag": np.array(1, ">i4")}, "--output", str(workdir / "out.npz"))
    assert main(argv) == 0
    with np.load(workdir / "out.npz") as out:
        np.testing.assert_array_equal(out["z"], np.maximum(x.astype(np.float32), 0) * 2)


def _compile(workdir: Path, caplog) -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="orchestrator"):
        assert main(["compile", str(workdir / "base.yaml"), "--arch", "sm_90", "--cache-dir",
                     str(workdir / "cache")]) == 0
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("damage", ["truncated", "random_bytes", "dev_zero", "other_entry"])
def test_corrupt_cached_cubin_is_rebuilt_with_one_warning(workdir: Path, caplog, damage: str):
    assert _compile(workdir, caplog) == []
    (cubin,) = (workdir / "cache" / "kernels").glob("*.cubin")
    good = cubin.read_bytes()
    if damage == "truncated":
        cubin.write_bytes(good[: len(good) // 2])
    elif damage == "random_bytes":
        cubin.write_bytes(np.random.default_rng(0).bytes(len(good)))
    elif damage == "dev_zero":
        zero(cubin)
    else:  # a valid entry of another name copied over this one (a wrong symbol)
        (name,) = (workdir / "cache" / "kernels").glob("*.name")
        cubin.write_bytes(name.read_bytes())
    warnings = _compile(workdir, caplog)
    assert len(warnings) == 1 and cubin.name in warnings[0] and "rebuilding" in warnings[0], warnings
    assert cubin.read_bytes() == good and not cubin.is_symlink()
    assert _compile(workdir, caplog) == []


def test_out_buffer_of_wrong_shape_is_refused_before_any_step(workdir: Path):
    from orchestrator import InputError, Orchestrator

    started = []

    class Watch:
        def step_started(self, step):
            started.append(step)

        def step_done(self, step):
            pass

        def branch_taken(self, block, taken):
            pass

    orch = Orchestrator(workdir / "base.yaml", device="cpu", observer=Watch())
    with pytest.raises(InputError, match=r"out\['z'\]: expected a C-contiguous float32 array of shape \[2, 4\]"):
        orch.run(good_inputs(), out={"z": np.zeros((3, 4), np.float32)})
    assert started == []


# ---- exit codes ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("error", "code", "prefix"), [
    ("RuntimeError", 3, "internal error: RuntimeError: boom"),
    ("DeviceError", 3, "device error: cuLaunchKernel failed"),
    ("InputError", 1, "error: bad input"),
])
def test_exit_codes_by_error_class(workdir: Path, capsys, monkeypatch, error: str, code: int, prefix: str):
    from orchestrator import cli, errors

    message = {"RuntimeError": "boom\nsecond line", "DeviceError": "cuLaunchKernel failed: CUDA_ERROR_LAUNCH_FAILED",
               "InputError": "bad input"}[error]
    exc_type = getattr(errors, error, RuntimeError)

    def fail(args):
        raise exc_type(message)

    monkeypatch.setattr(cli, "_schema", fail)
    assert main(["schema"]) == code
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), lines


def test_fifo_pipeline_and_usage_error_as_a_process(tmp_path: Path):
    import subprocess
    import sys

    fifo(tmp_path / "p.yaml")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run([sys.executable, "-m", "orchestrator.cli", "validate", str(tmp_path / "p.yaml")],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 1 and result.stderr.strip().endswith("named pipe (FIFO), not a regular file")
    assert len(result.stderr.strip().splitlines()) == 1


def test_read_only_cache_dir_is_one_line(workdir: Path, capsys, monkeypatch):
    from orchestrator import cache

    if os.geteuid() != 0:  # a real read-only folder (root may write anywhere)
        (workdir / "ro").mkdir(mode=0o500)
    else:
        (workdir / "ro").mkdir()
        monkeypatch.setattr(cache.os, "access", lambda path, mode: Path(path) != workdir / "ro")
    assert main(["compile", str(workdir / "base.yaml"), "--cache-dir", str(workdir / "ro")]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (f"error: cache directory {workdir / 'ro'} (--cache-dir) cannot be used: not writable; choose "
                    f"another with --cache-dir or ORCHESTRATOR_CACHE")


# ---- mutation fuzzing: whatever the damage, a user error (or ok), never an internal one ----------

def _mutations(text: str, count: int) -> list[tuple[str, str]]:
    rng = np.random.default_rng(15)
    lines = text.splitlines(keepends=True)
    out = []
    for i in range(count):
        kind = ("truncate", "byte", "drop_line", "repeat_line", "swap_lines", "indent")[i % 6]
        if kind == "truncate":
            mutated = text[: rng.integers(1, len(text))]
        elif kind == "byte":
            at = int(rng.integers(0, len(text)))
            mutated = text[:at] + chr(int(rng.choice([0x7B, 0x5D, 0x3A, 0x2D, 0x26, 0x2A, 0x21, 0x22, 0x20, 0x09])))\
                + text[at + 1:]
        elif kind in ("drop_line", "repeat_line"):
            at = int(rng.integers(0, len(lines)))
            mutated = "".join(lines[:at] + ([lines[at]] * 2 if kind == "repeat_line" else []) + lines[at + 1:])
        elif kind == "swap_lines":
            a, b = sorted(rng.choice(len(lines), 2, replace=False))
            swapped = lines[:a] + [lines[b]] + lines[a + 1:b] + [lines[a]] + lines[b + 1:]
            mutated = "".join(swapped)
        else:
            at = int(rng.integers(0, len(lines)))
            mutated = "".join(lines[:at] + ["   " + lines[at]] + lines[at + 1:])
        out.append((f"{kind}_{i}", mutated))
    return out


@pytest.mark.parametrize("target", ["base.yaml", "scale.yaml"])
def test_mutated_files_give_user_errors_only(workdir: Path, capsys, target: str):
    original = (workdir / target).read_text()
    where = re.compile(rf"^\S*({re.escape(target)}|base\.yaml|scale\.yaml)(:\d+(:\d+)?)?: ")
    for name, text in _mutations(original, 90):
        (workdir / target).write_text(text)
        code = main(["validate", str(workdir / "base.yaml")])
        captured = capsys.readouterr()
        assert code in (0, 1), (name, text, captured.err)
        assert "Traceback" not in captured.err and "internal error" not in captured.err, (name, captured.err)
        problems = _problem_lines(captured.err)
        assert (code == 0) == (not problems), (name, problems)
        for line in problems:
            assert where.match(line), (name, line)


def test_damaged_onnx_files_give_user_errors_only(workdir: Path, capsys):
    original = (workdir / "relu.onnx").read_bytes()
    rng = np.random.default_rng(7)
    for i in range(60):
        data = bytearray(original[: len(original) - i % (len(original) - 1)] if i % 3 == 0 else original)
        for at in rng.integers(0, len(data), 1 + i % 4):
            data[at] = int(rng.integers(0, 256))
        (workdir / "relu.onnx").write_bytes(bytes(data))
        code = main(["validate", str(workdir / "base.yaml")])
        err = capsys.readouterr().err
        assert code in (0, 1) and "Traceback" not in err and "internal error" not in err, (i, err)
        for line in _problem_lines(err):
            assert re.match(r"^\S*base\.yaml:\d+:\d+: ", line), (i, line)
