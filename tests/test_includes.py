"""Kernel include paths: the packaged orchestrator.cuh is on every kernel's path, and relative -I folders
are resolved from the kernel description's folder, not the working directory."""

from __future__ import annotations

import pytest
from conftest import KERNEL_YAML, REF_PY, ROOT

from orchestrator.cli import main
from orchestrator.errors import ConfigError
from orchestrator.kernels.includes import PACKAGE_INCLUDE, split_include_options
from orchestrator.kernels.nvrtc import compile_kernel
from orchestrator.pipeline.load import load_pipeline

PIPELINE = """\
dims:
  N: {min: 1, opt: 3, max: 4}
inputs:
  x: {dtype: float32, shape: [N, 4]}
outputs: [z]
kernels:
  scale: kernels/scale.yaml
steps:
  - kernel: scale
    args: {src: x, dst: z, factor: 2.0}
"""

# uses orchestrator.cuh (half_t, to_float, from_float) and a header of its own
SOURCE = """\
#include "orchestrator.cuh"
#include "mine.cuh"
extern "C" __global__ void scale(const float* src, float* dst, float factor, int count) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < count) dst[i] = to_float(from_float<half_t>(src[i])) * factor * MY_ONE;
}
"""


def make(tmp_path, options: str, header_dir: str = "inc"):
    kernels = tmp_path / "project" / "kernels"
    (kernels / header_dir).mkdir(parents=True)
    (kernels / header_dir / "mine.cuh").write_text("#pragma once\n#define MY_ONE 1.0f\n")
    (kernels / "scale.cu").write_text(SOURCE)
    (kernels / "ref.py").write_text(REF_PY)
    (kernels / "scale.yaml").write_text(KERNEL_YAML.replace("launch:", f"options: {options}\nlaunch:"))
    (tmp_path / "project" / "p.yaml").write_text(PIPELINE)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    return tmp_path / "project" / "p.yaml", kernels, elsewhere


def test_the_package_ships_orchestrator_cuh():
    assert (PACKAGE_INCLUDE / "orchestrator.cuh").read_text().count("struct half_t") == 1
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '[tool.setuptools.package-data]\norchestrator = ["include/*.cuh"]' in pyproject
    assert not (ROOT / "custom_kernels" / "orchestrator.cuh").exists()  # one copy, the packaged one


@pytest.mark.parametrize("options", ["[-Iinc]", "[-I, inc]", "['--include-path=inc']", "[--include-path, inc]",
                                     "[-I./inc, --use_fast_math]", "['-I../kernels/inc']"])
def test_relative_include_folders_resolve_from_the_kernel_file(tmp_path, monkeypatch, options):
    pipeline, kernels, elsewhere = make(tmp_path, options)
    monkeypatch.chdir(elsewhere)  # the working directory must not matter
    kernel = load_pipeline(pipeline).kernels["scale"]
    assert kernel.include_dirs == (kernels, kernels / "inc", PACKAGE_INCLUDE)
    assert not any(o.startswith(("-I", "--include-path")) or o == "inc" for o in kernel.options)
    compiled = compile_kernel(kernel, "sm_90", tmp_path / "cache")
    assert compiled.kind == "cubin" and "scale" in compiled.lowered_name


def test_a_kernel_outside_the_repository_includes_orchestrator_cuh(tmp_path, monkeypatch):
    pipeline, kernels, elsewhere = make(tmp_path, "[]", header_dir=".")
    monkeypatch.chdir(elsewhere)
    kernel = load_pipeline(pipeline).kernels["scale"]
    assert kernel.include_dirs[-1] == PACKAGE_INCLUDE and ROOT not in kernel.source_path.parents
    assert compile_kernel(kernel, "sm_86", tmp_path / "cache").image[:4] == b"\x7fELF"


@pytest.mark.parametrize(("options", "index"), [("[-Imissing]", 0), ("[--use_fast_math, -I, missing]", 1),
                                                ("['--include-path=no/such']", 0)])
def test_a_missing_include_folder_is_one_line_at_its_option(tmp_path, capsys, options, index):
    pipeline, kernels, _ = make(tmp_path, options)
    with pytest.raises(ConfigError) as info:
        load_pipeline(pipeline)
    (problem,) = info.value.problems
    assert problem.location.file.endswith("scale.yaml") and problem.location.line == 8
    assert problem.location.path == f"kernels.scale.options[{index}]"
    assert "include folder not found" in problem.message and "resolved from" in problem.message
    assert main(["validate", str(pipeline)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "scale.yaml:8:" in err[0] and "Traceback" not in err[0]


def test_split_include_options_keeps_other_options_in_order(tmp_path):
    folders, rest, where = split_include_options(["-DA=1", "-Ix", "--use_fast_math", "-I", "y", "-G"], tmp_path)
    assert folders == [tmp_path / "x", tmp_path / "y"] and where == [1, 3]
    assert rest == ["-DA=1", "--use_fast_math", "-G"]
    absolute = tmp_path / "abs"
    assert split_include_options([f"-I{absolute}"], tmp_path / "other")[0] == [absolute]
