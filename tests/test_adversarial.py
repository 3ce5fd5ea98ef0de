"""Adversarial properties and corpus (issue 15, second pass): structural YAML mutations of every example
pipeline, random wrong run-time inputs on the CPU backend, and hostile files (ONNX, CUDA, references).

Whatever the damage: a user error (ConfigError / InputError / one ``error:`` line on the command line) that
names the file and line, or success; never another exception, never a traceback, and a failed run leaves the
orchestrator usable.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
import yaml_mutants as mutants
from conftest import BASE, KERNEL_CU, REF_PY, tiny_model, write
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from orchestrator import Orchestrator
from orchestrator.cli import main
from orchestrator.errors import ConfigError, ExecutionError, InputError
from orchestrator.pipeline.load import load_pipeline

MUTANTS = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
LOCATED = re.compile(r"^\S+:\d+(:\d+)?: ")


def _cli(argv: list[str]) -> tuple[int, list[str], str]:
    """Exit code, problem lines (warnings left out) and the whole stderr of an in-process command."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    text = err.getvalue()
    lines = [line for line in text.splitlines() if line.strip() and ": warning: " not in line
             and "using the CPU reference backend" not in line]
    return code, lines, text


def _problems_or_none(path: Path) -> list | None:
    try:
        load_pipeline(path)
    except ConfigError as exc:
        assert str(exc), "a ConfigError with no text"
        for problem in exc.problems:
            assert problem.location.file and (problem.location.line or 0) > 0, str(problem)
        return exc.problems
    return None


# ---- 1. structural mutations of the example pipelines and of the conftest base pipeline --------------

@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> Path:
    return mutants.copy_examples(tmp_path_factory.mktemp("examples"))


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory) -> Path:
    from conftest import KERNEL_YAML

    folder = tmp_path_factory.mktemp("base")
    onnx.save(tiny_model("Relu", ["x"], ["y"]), str(folder / "relu.onnx"))
    onnx.save(tiny_model("Add", ["a", "b"], ["c"]), str(folder / "add.onnx"))
    (folder / "scale.yaml").write_text(KERNEL_YAML)
    (folder / "scale.cu").write_text(KERNEL_CU)
    (folder / "ref.py").write_text(REF_PY)
    return folder


def _check_mutant(path: Path) -> None:
    problems = _problems_or_none(path)
    code, lines, err = _cli(["validate", str(path)])
    assert "Traceback" not in err and "internal error" not in err, err
    if problems is None:
        assert code == 0 and not lines, err
        return
    assert code == 1 and len(lines) == len(problems), (code, lines, problems)
    assert all(LOCATED.match(line) for line in lines), lines


@MUTANTS
@given(st.sampled_from(mutants.EXAMPLES), st.data())
def test_mutated_example_pipelines_give_located_config_errors(examples: Path, name: str, data):
    doc = yaml.safe_load((mutants.ROOT / "pipelines" / name).read_text())
    doc, kernel = data.draw(mutants.mutated_kernel_file(doc), label="kernel file")
    doc = data.draw(mutants.mutated_document(doc), label="pipeline")
    if kernel is not None:
        (examples.parent / "custom_kernels" / "mutant.yaml").write_text(kernel)
    path = examples / "mutant.yaml"
    path.write_text(data.draw(mutants.mutated_text(mutants.dump(doc)), label="text"))
    _check_mutant(path)


@MUTANTS
@given(st.data())
def test_mutated_base_pipeline_gives_located_config_errors(base_folder: Path, data):
    doc = data.draw(mutants.mutated_document(yaml.safe_load(BASE)), label="pipeline")
    path = base_folder / "mutant.yaml"
    path.write_text(data.draw(mutants.mutated_text(mutants.dump(doc)), label="text"))
    _check_mutant(path)


@pytest.mark.parametrize("where", ["snippets.relu.onnx", "kernels.scale", "constants.c.file", "kernel_source",
                                   "kernel_include"])
@pytest.mark.parametrize("name", ["x" * 300, "d/" * 3000 + "x"], ids=["long_name", "long_path"])
def test_overlong_paths_are_user_errors(workdir: Path, where: str, name: str):
    """A file name over the system's limit (ENAMETOOLONG) used to escape Path.exists() as an OSError."""
    doc = yaml.safe_load(BASE)
    if where == "snippets.relu.onnx":
        doc["snippets"]["relu"]["onnx"] = name
    elif where == "kernels.scale":
        doc["kernels"]["scale"] = name
    elif where == "constants.c.file":
        doc["constants"] = {"c": {"file": name}}
    else:
        kernel = yaml.safe_load((workdir / "scale.yaml").read_text())
        kernel["source" if where == "kernel_source" else "options"] = name if where == "kernel_source" else [f"-I{name}"]
        (workdir / "scale.yaml").write_text(yaml.safe_dump(kernel))
    path = write(workdir, yaml.safe_dump(doc), "long.yaml")
    problems = _problems_or_none(path)
    assert problems and any("File name too long" in p.message or "not found" in p.message for p in problems)
    code, lines, err = _cli(["validate", str(path)])
    assert code == 1 and len(lines) == len(problems) and "Traceback" not in err


# ---- 2. run-time inputs on the CPU backend --------------------------------------------------------

DECIDING = """\
dims:
  N: {min: 1, opt: 2, max: 4}
inputs:
  x: {dtype: float32, shape: [N, 4]}
  t: {dtype: float32, host: true}
  k: {dtype: int32, host: true}
outputs: [z]
snippets:
  relu: {onnx: relu.onnx}
kernels:
  scale: scale.yaml
steps:
  - snippet: relu
    inputs: {x: x}
    outputs: {y: y}
  - if: t < 0.5
    then:
      - kernel: scale
        args: {src: y, dst: a, factor: 2.0}
    else:
      - kernel: scale
        args: {src: y, dst: a, factor: t}
  - switch: k
    cases:
      0:
        - kernel: scale
          args: {src: a, dst: z, factor: 1.0}
    default:
      - kernel: scale
        args: {src: a, dst: z, factor: -1.0}
"""
X = np.arange(8, dtype=np.float32).reshape(2, 4) - 3
GOOD = {"x": X, "t": 0.25, "k": 0}


def _want(x: np.ndarray, t: float, k: int) -> np.ndarray:
    a = np.maximum(x.astype(np.float32), 0) * (np.float32(2.0) if t < 0.5 else np.float32(t))
    return (a * np.float32(1.0 if k == 0 else -1.0)).astype(np.float32)


@pytest.fixture(scope="module")
def deciding(base_folder: Path) -> Orchestrator:
    return Orchestrator(write(base_folder, DECIDING, "deciding.yaml"), device="cpu")


# (value, converted): converted values must run and give the answer for the converted input
ODD_X = [
    (X.astype(np.float64), False), (X.astype(np.float16), False), (X.astype(bool), False), (X.astype(complex), False),
    (X.astype(object), False), (X.astype(str), False), (X.astype(">f4"), True), (X[:, ::-1], True), (X[::-1], True),
    (np.asfortranarray(X), True), (np.zeros((4, 8), np.float32)[::2, ::2], True), (X.reshape(1, 2, 4), False),
    (X[0], False), (np.zeros((0, 4), np.float32), False), (np.zeros((2, 0), np.float32), False),
    (np.zeros((5, 4), np.float32), False), (np.zeros((2, 5), np.float32), False), (np.float32(1.0), False),
    (np.array(1.0, np.float32), False), (np.array([1.0], np.float32), False), (X.tolist(), False), (None, False),
    ("x", False), (1.0, False), (np.lib.stride_tricks.as_strided(X, (2, 4), (0, 4)), True),
    (np.zeros((2, 4), np.dtype([("a", "<f4")])), False), (X.view(np.int32), False), (np.zeros((2, 4), "<U1"), False)]
ODD_SCALARS = [
    (None, False), ("1", False), (b"1", False), (1j, False), (np.nan, False), (np.inf, True), (-np.inf, True), ([], False),
    ([1], True), ([[1]], True), ([1, 2], False), (np.array([]), False), (np.array(1.0), True), (np.array([0.75]), True),
    (np.float16(0.25), True), (np.float64(1e300), False), (2**70, True), (-(2**70), True), (True, True), (False, True),
    (np.int64(2**40), True), (np.uint64(2**64 - 1), True), (np.array("abc"), False), (np.array(["a"]), False),
    (np.datetime64("2020"), False), (object(), False), ({"a": 1}, False), ((1,), True), (np.array(2, ">i4"), True),
    (np.array(0.75, ">f8"), True), (7, True), (-1, True), (0, True), (2**31, True), (-(2**31) - 1, True), (1.5, True),
    (np.bool_(True), True), (np.array([[np.nan]]), False)]


def _run_or_input_error(orch: Orchestrator, given) -> dict | None:
    try:
        return orch.run(given)
    except InputError as exc:
        message = str(exc)
        assert message and "\n" not in message and len(message) < 400, message
        return None


@settings(MUTANTS, max_examples=60)
@given(st.data())
def test_wrong_inputs_raise_input_error_and_leave_the_orchestrator_usable(deciding: Orchestrator, data):
    given = dict(GOOD)
    for _ in range(data.draw(st.integers(1, 3))):
        kind = data.draw(st.sampled_from(["x", "t", "k", "drop", "extra", "key"]))
        if kind == "x":
            given["x"] = data.draw(st.sampled_from(ODD_X))[0]
        elif kind in ("t", "k"):
            given[kind] = data.draw(st.sampled_from(ODD_SCALARS))[0]
        elif kind == "drop":
            given.pop(data.draw(st.sampled_from(sorted(given, key=repr))), None)
        elif kind == "extra":
            given[data.draw(st.sampled_from(["y", "X", "", "x" * 200]))] = X
        else:
            given[data.draw(st.sampled_from([1, None, ("x",), b"x", 2.5]))] = X
    with np.errstate(all="ignore"):
        _run_or_input_error(deciding, given)
    np.testing.assert_array_equal(deciding.run(GOOD)["z"], _want(X, 0.25, 0))


@pytest.mark.parametrize(("value", "converted"), ODD_X, ids=range(len(ODD_X)))
def test_odd_device_input(deciding: Orchestrator, value, converted: bool):
    result = _run_or_input_error(deciding, {**GOOD, "x": value})
    assert (result is not None) == converted
    if converted:
        np.testing.assert_array_equal(result["z"], _want(np.asarray(value), 0.25, 0))


@pytest.mark.parametrize(("value", "converted"), ODD_SCALARS, ids=range(len(ODD_SCALARS)))
@pytest.mark.parametrize("name", ["t", "k"])
def test_odd_host_scalar(deciding: Orchestrator, name: str, value, converted: bool):
    """A float host input takes any number in range (not NaN: it decides a branch); an int one takes integers
    in range; both take 0-d and one-element arrays and convert byte order."""
    with np.errstate(all="ignore"):
        result = _run_or_input_error(deciding, {**GOOD, name: value})
    number = np.asarray(value).reshape(-1)[0] if converted else None
    if name == "k" and converted:
        converted = np.asarray(value).dtype.kind in "biu" and -(2**31) <= int(number) < 2**31
    if name == "t" and converted:
        converted = abs(float(number)) <= np.finfo(np.float32).max or not np.isfinite(float(number))
    assert (result is not None) == converted, result
    if converted:
        t, k = (float(number), 0) if name == "t" else (0.25, int(number))
        with np.errstate(all="ignore"):
            want = _want(X, np.float32(t), k)
        np.testing.assert_array_equal(result["z"], want)


@pytest.mark.parametrize(("given", "message"), [
    (None, "expected a mapping of input names to arrays (a dict), got NoneType"),
    ([X, 0.25, 0], "got list"),
    ("xtk", "got str"),
    ({**GOOD, 1: X}, "unexpected 1"),
    ({**GOOD, ("x",): X}, "unexpected ('x',)"),
    ({**GOOD, "t": np.nan}, "input 't' is NaN; it decides a branch or loop"),
    ({**GOOD, "t": np.array([np.nan], np.float32)}, "input 't' is NaN"),
])
def test_malformed_inputs_are_one_line_input_errors(deciding: Orchestrator, given, message: str):
    with pytest.raises(InputError) as info:
        deciding.run(given)
    assert message in str(info.value) and "\n" not in str(info.value)


class _Steps:
    def __init__(self):
        self.started = 0

    def step_started(self, step):
        self.started += 1

    def step_done(self, step):
        pass

    def branch_taken(self, block, taken):
        pass


@pytest.mark.parametrize(("out", "message"), [
    ([np.zeros((2, 4), np.float32)], "out: expected a mapping of output names to arrays"),
    ({"nope": np.zeros((2, 4), np.float32)}, "out: nope is not an output (outputs: z)"),
    ({"z": None}, "out['z']: expected a numpy or device array, got NoneType"),
    ({"z": [[0.0] * 4] * 2}, "out['z']: expected a numpy or device array, got list"),
    ({"z": np.zeros((2, 4), np.float32)[None][0].copy().view()}, None),
    ({"z": np.broadcast_to(np.zeros(4, np.float32), (2, 4))}, "out['z']: the array is read-only"),
])
def test_out_buffers_are_checked_before_any_step(base_folder: Path, out, message: str | None):
    watch = _Steps()
    orch = Orchestrator(base_folder / "deciding.yaml", device="cpu", observer=watch)
    if message is None:
        np.testing.assert_array_equal(orch.run(GOOD, out=out)["z"], _want(X, 0.25, 0))
        return
    with pytest.raises(InputError) as info:
        orch.run(GOOD, out=out)
    assert str(info.value) == message or message in str(info.value)
    assert watch.started == 0
    np.testing.assert_array_equal(orch.run(GOOD)["z"], _want(X, 0.25, 0))


# ---- 3. hostile files: ONNX, CUDA sources, references -----------------------------------------------

def _model(dims: list) -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def _newer_opset() -> onnx.ModelProto:
    model = tiny_model("Relu", ["x"], ["y"])
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("", onnx.defs.onnx_opset_version() + 1))
    return model


def _replace(path: Path, make) -> None:
    path.unlink()
    make(path)


def _chmod_000(path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads a chmod 000 file")
    path.chmod(0)


ONNX_FILES = {
    "empty": (lambda p: p.write_bytes(b""), "onnxruntime cannot load relu.onnx"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:40]), "cannot read ONNX model relu.onnx"),
    "text": (lambda p: p.write_text("hello, not onnx\n"), "cannot read ONNX model relu.onnx"),
    "directory": (lambda p: _replace(p, Path.mkdir), "relu.onnx is a directory, not a regular file"),
    "symlink_loop": (lambda p: _replace(p, lambda q: q.symlink_to(q.name)), "Too many levels of symbolic links"),
    "symlink_cycle": (lambda p: _replace(p, lambda q: (q.symlink_to("other.onnx"),
                                                       (q.parent / "other.onnx").symlink_to(q.name))),
                      "Too many levels of symbolic links"),
    "unreadable": (_chmod_000, "Permission denied"),
    "newer_opset": (lambda p: onnx.save(_newer_opset(), str(p)), "is till opset"),
    "fixed_dim_conflict": (lambda p: onnx.save(_model(["N", 5]), str(p)), "dimension 1 is 4, expected 5"),
    "string_rank_conflict": (lambda p: onnx.save(_model(["N", "C", "D"]), str(p)), "rank 2 does not match"),
}


@pytest.mark.parametrize("case", ONNX_FILES, ids=list(ONNX_FILES))
def test_hostile_onnx_file_is_one_located_line(workdir: Path, case: str):
    make, expect = ONNX_FILES[case]
    make(workdir / "relu.onnx")
    code, lines, err = _cli(["validate", str(workdir / "base.yaml")])
    assert code == 1 and "Traceback" not in err, err
    assert len(lines) in (1, 2), lines  # a rank conflict also reaches the kernel step that reads the output
    assert expect in lines[0] and re.match(r"^\S*base\.yaml:\d+:\d+: ", lines[0]), lines[0]
    assert "onnxruntime_src" not in lines[0] and len(lines[0]) < 700, lines[0]


@pytest.mark.parametrize("dims", [[-1, 4], ["N", -1]])
def test_negative_onnx_dimension_is_dynamic_not_a_negative_shape(workdir: Path, dims: list):
    """Some exporters write -1 for a dynamic size: it used to become a negative tensor shape downstream."""
    onnx.save(_model(dims), str(workdir / "relu.onnx"))
    pipeline = load_pipeline(workdir / "base.yaml")
    assert all(not isinstance(d, int) or d >= 0 for t in pipeline.tensors.values() for d in t.shape)
    result = Orchestrator(pipeline, device="cpu").run({"x": X, "flag": 1})
    np.testing.assert_array_equal(result["z"], np.maximum(X, 0) * 2)


def _nvrtc_available() -> bool:
    try:
        from orchestrator.kernels.nvrtc import nvrtc_version

        nvrtc_version()
    except Exception:
        return False
    return True


CU_FILES = {
    "syntax": (KERNEL_CU.replace("* factor;", "* factor"), "scale.cu:4: kernel 'scale' failed to compile: expected a"),
    "undefined": (KERNEL_CU.replace("* factor;", "* fctor;"), "scale.cu:3: kernel 'scale' failed to compile: "
                                                              "identifier \"fctor\" is undefined"),
    "missing_include": ('#include "nope.cuh"\n' + KERNEL_CU, "scale.cu:1: kernel 'scale' failed to compile: cannot "
                                                              "open source file \"nope.cuh\""),
    "error_directive": (KERNEL_CU + '#error "stop here"\n', "scale.cu:5: kernel 'scale' failed to compile: #error"),
}


@pytest.mark.parametrize("case", CU_FILES, ids=list(CU_FILES))
def test_kernel_that_does_not_compile_names_source_line_and_yaml_line(workdir: Path, case: str):
    if not _nvrtc_available():
        pytest.skip("NVRTC (cuda-python's nvrtc library) cannot be loaded here")
    source, expect = CU_FILES[case]
    (workdir / "scale.cu").write_text(source)
    code, lines, err = _cli(["validate", str(workdir / "base.yaml"), "--compile"])
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert re.match(r"^\S*scale\.yaml:1:\d+: kernels\.scale\.source: ", lines[0]) and expect in lines[0], lines[0]


@pytest.mark.parametrize(("source", "expect"), [
    (KERNEL_CU.replace("scale(", "scal("), "entry point 'scale' does not appear in the kernel source"),
    ("// scale\n" + KERNEL_CU.replace("scale(", "other("), "(only in a comment or string)"),
])
def test_entry_missing_from_source(workdir: Path, source: str, expect: str):
    (workdir / "scale.cu").write_text(source)
    code, lines, _ = _cli(["validate", str(workdir / "base.yaml")])
    assert code == 1 and len(lines) == 1 and re.match(r"^\S*scale\.yaml:2:\d+: kernels\.scale\.entry: ", lines[0])
    assert expect in lines[0]


BODY = "return (src * np.float32(factor)).astype(np.float32)"
REFERENCES = {
    "raises_two_lines": ("raise ValueError('bad\\nsecond line')", "raised ValueError: bad"),
    "sys_exit": ("raise SystemExit(3)", "raised SystemExit: 3"),
    "recursion": ("return scale(src, factor)", "raised RecursionError"),
    "wrong_shape": ("return src[:1]", "returned float32 [1, 4] for 'dst'; the kernel declares float32 [2, 4]"),
    "wrong_dtype": ("return src.astype(np.float64)", "returned float64 [2, 4] for 'dst'"),
    "none": ("return None", "must return 1 numpy array(s) (dst)"),
    "list": ("return src.tolist()", "must return 1 numpy array(s) (dst)"),
    "dict_without_output": ("return {'nope': src}", "must return 1 numpy array(s) (dst)"),
    "writes_its_input": ("src *= factor\n    return src", "raised ValueError: output array is read-only"),
}


@pytest.mark.parametrize("case", REFERENCES, ids=list(REFERENCES))
def test_failing_reference_is_one_line_naming_its_yaml_line(workdir: Path, case: str):
    body, expect = REFERENCES[case]
    (workdir / "ref.py").write_text(REF_PY.replace(BODY, body, 1))
    np.savez(workdir / "in.npz", x=X, flag=np.int32(1))
    code, lines, err = _cli(["run", str(workdir / "base.yaml"), "--inputs", str(workdir / "in.npz"),
                             "--device", "cpu"])
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert re.match(r"^error: \S*scale\.yaml:9:\d+: kernels\.scale\.reference: reference ref\.py:scale of kernel "
                    r"'scale' ", lines[0]), lines[0]
    assert expect in lines[0], lines[0]


def test_a_reference_cannot_change_the_callers_array(workdir: Path):
    """Inputs reach a kernel's reference as read-only views: one that wrote in place changed the array the
    caller passed to run()."""
    (workdir / "ref.py").write_text(REF_PY.replace(BODY, "src *= factor\n    return src", 1))
    (workdir / "direct.yaml").write_text("inputs:\n  x: {dtype: float32, shape: [2, 4]}\noutputs: [z]\n"
                                         "kernels:\n  scale: scale.yaml\n"
                                         "steps:\n  - kernel: scale\n    args: {src: x, dst: z, factor: 2.0}\n")
    x = X.copy()
    with pytest.raises(ExecutionError, match="reference ref.py:scale of kernel 'scale' raised ValueError: "
                                             "output array is read-only"):
        Orchestrator(workdir / "direct.yaml", device="cpu").run({"x": x})
    np.testing.assert_array_equal(x, X)


def test_edited_reference_is_imported_again(workdir: Path):
    """References were cached by path for the life of the process: an edit was ignored until a restart."""
    run = {"x": X, "flag": 1}
    first = Orchestrator(workdir / "base.yaml", device="cpu").run(run)["z"]
    (workdir / "ref.py").write_text(REF_PY.replace(BODY, "return (src * np.float32(factor) + 1).astype(np.float32)"))
    second = Orchestrator(workdir / "base.yaml", device="cpu").run(run)["z"]
    np.testing.assert_array_equal(second, first + 1)


def test_examples_copy_loads(examples: Path):
    """The mutations start from valid pipelines: the copied examples load as they are."""
    for name in mutants.EXAMPLES:
        assert load_pipeline(examples / name).name == name.removesuffix(".yaml")
