"""Kernel descriptions are checked against their CUDA function by NVRTC (no GPU): a generated kernel with
an argument of every kind and dtype is accepted with the right C types, and with every parameter's type
rotated to another dtype's, each argument is reported once, at its own line."""

from __future__ import annotations

import pytest

from orchestrator.dtypes import DTYPES
from orchestrator.errors import ConfigError
from orchestrator.kernels.nvrtc import compile_kernel
from orchestrator.pipeline.load import load_pipeline

C_TYPE = {"float32": "float", "float16": "half_t", "int8": "signed char", "uint8": "unsigned char",
          "int32": "int", "int64": "long long", "bool": "bool"}
KINDS = ("in", "out", "scalar")
ARGS = [(f"{kind}_{dtype}", kind, dtype) for dtype in DTYPES for kind in KINDS]


def _param(kind: str, c_type: str, name: str) -> str:
    return {"in": f"const {c_type}* {name}", "out": f"{c_type}* {name}", "scalar": f"{c_type} {name}"}[kind]


def _source(types: dict[str, str], template: bool = False) -> str:
    params = ", ".join(_param(kind, types[dtype], name) for name, kind, dtype in ARGS)
    head = "template <class Oc>\n__global__ void" if template else 'extern "C" __global__ void'
    return f"struct half_t {{ unsigned short bits; }};\n{head} every({params}) {{}}\n"


def _pipeline(folder, source: str, template_args: str = "") -> object:
    lines = ["source: every.cu", "entry: every", template_args or "template_args: []", "args:"]
    lines += [f"  - {{name: {name}, kind: {kind}, dtype: {dtype}"
              + (", shape: [N]}" if kind != "scalar" else "}") for name, kind, dtype in ARGS]
    lines += ["launch: {threads: out_float32, block: 64}", "reference: ref.py:every"]
    (folder / "every.yaml").write_text("\n".join(lines) + "\n")
    (folder / "every.cu").write_text(source)
    (folder / "ref.py").write_text("def every(**kwargs):\n    return {}\n")
    scalars = ", ".join(f"{n}: 1" for n, k, _ in ARGS if k == "scalar")
    ins = ", ".join(f"{n}: {n}" for n, k, _ in ARGS if k == "in")
    outs = ", ".join(f"{n}: o_{n}" for n, k, _ in ARGS if k == "out")
    inputs = "\n".join(f"  {n}: {{dtype: {d}, shape: [N]}}" for n, k, d in ARGS if k == "in")
    (folder / "p.yaml").write_text(f"inputs:\n{inputs}\noutputs: [o_out_float32]\nkernels:\n  every: every.yaml\n"
                                   f"steps:\n  - kernel: every\n    args: {{{ins}, {outs}, {scalars}}}\n")
    return load_pipeline(folder / "p.yaml").kernels["every"]


def test_right_types_are_accepted(tmp_path):
    compile_kernel(_pipeline(tmp_path, _source(C_TYPE)), "sm_90", tmp_path / "cache")


def test_template_entry_with_its_arguments_is_checked(tmp_path):
    kernel = _pipeline(tmp_path, _source(C_TYPE, template=True), "template_args: [float]")
    compile_kernel(kernel, "sm_90", tmp_path / "cache")


def test_every_wrong_type_is_reported_at_its_argument(tmp_path):
    rotated = dict(zip(DTYPES, [C_TYPE[d] for d in DTYPES[1:] + DTYPES[:1]], strict=True))
    kernel = _pipeline(tmp_path, _source(rotated))
    with pytest.raises(ConfigError) as info:
        compile_kernel(kernel, "sm_90", tmp_path / "cache")
    problems = info.value.problems
    assert [p.location.line for p in problems] == [5 + i for i in range(len(ARGS))]
    for problem, (name, kind, dtype) in zip(problems, ARGS, strict=True):
        assert problem.location.file.endswith("every.yaml")
        assert f"does not match argument '{name}' ({kind} {dtype})" in problem.message


def test_const_output_and_pointer_scalar_are_refused(tmp_path):
    source = _source(C_TYPE).replace("float* out_float32", "const float* out_float32")
    source = source.replace("int scalar_int32", "int* scalar_int32")
    with pytest.raises(ConfigError) as info:
        compile_kernel(_pipeline(tmp_path, source), "sm_90", tmp_path / "cache")
    assert [p.message.split("argument ")[1].split(" ")[0] for p in info.value.problems] == \
        ["'out_float32'", "'scalar_int32'"]
