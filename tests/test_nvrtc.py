"""NVRTC compilation runs without a GPU: every example kernel compiles for sm_90 and sm_86, compile
errors name the source file and line, and results are cached."""

from __future__ import annotations

import pytest
from conftest import ROOT

from orchestrator.errors import CompileError
from orchestrator.kernels.nvrtc import compile_kernel
from orchestrator.pipeline.load import load_pipeline

KERNELS = {name: info for p in ("classify", "cascade", "matting")
           for name, info in load_pipeline(ROOT / f"pipelines/{p}.yaml").kernels.items()}


@pytest.mark.parametrize("arch", ["sm_90", "sm_86"])
@pytest.mark.parametrize("name", sorted(KERNELS))
def test_example_kernels_compile(tmp_path, name, arch):
    compiled = compile_kernel(KERNELS[name], arch, tmp_path)
    assert compiled.kind == "cubin" and compiled.image[:4] == b"\x7fELF"
    assert KERNELS[name].entry in compiled.lowered_name


def test_compile_is_cached(tmp_path):
    first = compile_kernel(KERNELS["softmax"], "sm_90", tmp_path)
    files = sorted(p.name for p in (tmp_path / "kernels").iterdir())
    assert compile_kernel(KERNELS["softmax"], "sm_90", tmp_path) == first
    assert sorted(p.name for p in (tmp_path / "kernels").iterdir()) == files
    assert not any(name.endswith(".tmp") for name in files)


def test_compile_error_names_file_and_line(workdir):
    (workdir / "scale.cu").write_text('extern "C" __global__ void scale(const float* src, float* dst,\n'
                                      '                              float factor, int count) {\n'
                                      '  dst[0] = src[0] * factor\n}\n')
    kernel = load_pipeline(workdir / "base.yaml").kernels["scale"]
    with pytest.raises(CompileError) as info:
        compile_kernel(kernel, "sm_90", workdir / "cache")
    message = str(info.value)
    assert "scale.cu:4: kernel 'scale' failed to compile: expected a \";\"" in message
    assert "\n" not in message and "error" in info.value.log


def test_validate_compile_reports_kernel_errors_at_their_yaml_location(workdir, capsys):
    from orchestrator.cli import main

    assert main(["validate", "--compile", "sm_86", str(workdir / "base.yaml")]) == 0
    (workdir / "scale.cu").write_text('extern "C" __global__ void scale(float* src, float* dst, float f, int n) '
                                      '{ undefined_thing(); }\n')
    assert main(["validate", str(workdir / "base.yaml"), "--compile"]) == 1
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "warning:" not in line]
    assert len(err) == 1
    assert err[0].startswith(f"{workdir / 'scale.yaml'}:1:9: kernels.scale.source: ")
    assert "scale.cu:1: kernel 'scale' failed to compile" in err[0] and "undefined_thing" in err[0]
