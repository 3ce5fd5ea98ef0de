"""Kernel descriptions at load time: what a valid one resolves to (file or inline source), and each problem
with its own file position, YAML path and message."""

from __future__ import annotations

import pytest
from conftest import KERNEL_YAML, write

from orchestrator.errors import ConfigError
from orchestrator.kernels.includes import PACKAGE_INCLUDE
from orchestrator.pipeline.load import load_pipeline

PIPELINE = """\
inputs:
  x: {dtype: float32, shape: [N, 4]}
outputs: [z]
kernels:
  scale: k.yaml
steps:
  - kernel: scale
    args: {src: x, dst: z, factor: 2.0}
"""

BOUND = "(bound symbols: C, N)"
CASES = {
    "source": ([("source: scale.cu", "source: nope.cu")],
               ":1:9: kernels.scale.source: kernel source not found: {dir}/nope.cu (paths are relative to {dir}/)"),
    "entry": ([("entry: scale", "entry: scalez")],
              ":2:8: kernels.scale.entry: entry point 'scalez' does not appear in the kernel source"),
    "reference file": ([("reference: ref.py:scale", "reference: nope.py:scale")],
                       ":9:12: kernels.scale.reference: reference file not found: {dir}/nope.py"),
    "reference function": ([("reference: ref.py:scale", "reference: ref.py:nofunc")],
                           ":9:12: kernels.scale.reference: ref.py has no function 'nofunc'"),
    "out shape symbol": ([("shape: [N, C]}\n  - {name: factor", "shape: [N, Q]}\n  - {name: factor")],
                         f":5:5: kernels.scale.args[1]: 'Q' uses Q, which no 'in' argument's shape binds {BOUND}"),
    "scalar symbols": ([("value: N * C", "value: N * Z + Y")],
                       f":7:5: kernels.scale.args[3]: 'N * Z + Y' uses Y, Z, which no 'in' argument's shape binds {BOUND}"),
    "threads scalar": ([("threads: dst", "threads: count")], ":8:19: kernels.scale.launch.threads: 'count' is not a "
                       "tensor argument of this kernel (its tensor arguments: src, dst)"),
    "threads unknown": ([("threads: dst", "threads: nothere")], ":8:19: kernels.scale.launch.threads: 'nothere' is "
                        "not a tensor argument of this kernel (its tensor arguments: src, dst)"),
    "grid symbol": ([("launch: {threads: dst, block: 128}", "launch: {grid: [N, G], block: 128}")],
                    f":8:16: kernels.scale.launch.grid: 'G' uses G, which no 'in' argument's shape binds {BOUND}"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_kernel_problems_are_reported_in_the_kernel_file(workdir, case):
    edits, expected = CASES[case]
    text = KERNEL_YAML
    for old, new in edits:
        assert old in text
        text = text.replace(old, new)
    (workdir / "k.yaml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_pipeline(write(workdir, PIPELINE))
    problems = [str(p) for p in info.value.problems]
    assert problems == [f"{workdir / 'k.yaml'}{expected.format(dir=workdir)}"], problems


def test_a_kernel_file_resolves_every_field(workdir):
    text = KERNEL_YAML.replace("entry: scale\n", "entry: scale\ntemplate_args: [float]\ndefines: {TILE: 16, "
                               "MODE: fast}\noptions: [--use_fast_math]\n")
    (workdir / "k.yaml").write_text(text)
    kernel = load_pipeline(write(workdir, PIPELINE)).kernels["scale"]
    assert (kernel.name, kernel.entry, kernel.source_path, kernel.include_dirs) == (
        "scale", "scale", workdir / "scale.cu", (workdir, PACKAGE_INCLUDE))
    assert kernel.source == (workdir / "scale.cu").read_text()
    assert (kernel.template_args, kernel.defines, kernel.options) == (("float",), {"TILE": 16, "MODE": "fast"},
                                                                     ("--use_fast_math",))
    assert (kernel.reference_path, kernel.reference_function) == (workdir / "ref.py", "scale")
    assert [(a.name, a.kind, a.dtype, a.shape, a.value) for a in kernel.args] == [
        ("src", "in", "float32", ("N", "C"), None), ("dst", "out", "float32", ("N", "C"), None),
        ("factor", "scalar", "float32", None, None), ("count", "scalar", "int32", None, "N * C")]
    assert str(kernel.location).startswith(f"{workdir / 'k.yaml'}:1:9")  # compile errors point at 'source'


def test_an_inline_kernel_resolves_against_the_pipeline_folder(workdir):
    inline = "  scale:\n" + "".join(f"    {line}\n" for line in KERNEL_YAML.splitlines()).replace(
        "    source: scale.cu\n", "    code: |\n" + "".join(f"      {line}\n" for line in (
            workdir / "scale.cu").read_text().splitlines()))
    kernel = load_pipeline(write(workdir, PIPELINE.replace("  scale: k.yaml\n", inline))).kernels["scale"]
    assert kernel.source_path is None and kernel.include_dirs == (workdir, PACKAGE_INCLUDE)
    assert "dst[i] = src[i] * factor" in kernel.source
    assert str(kernel.location).startswith(f"{workdir / 'pipeline.yaml'}:6:11")
