"""Kernel steps at load time: every binding problem with its position, path and exact message (and no
follow-on errors after an unknown kernel), and what valid scalar bindings resolve to."""

from __future__ import annotations

import pytest
from conftest import KERNEL_YAML, write

from orchestrator.errors import ConfigError
from orchestrator.pipeline.ir import ScalarArg
from orchestrator.pipeline.load import load_pipeline

HEAD = """\
inputs:
  x: {dtype: float32, shape: [N, 4]}
  g: {dtype: float32, host: true}
  n: {dtype: int32, host: true}
outputs: [z]
kernels:
  scale: scale.yaml
  iscale: iscale.yaml
steps:
"""
NOT_Z = ":5:11: outputs[0]: tensor 'z' is not defined before this step (defined tensors: x, g, n)"
CASES = {
    "unknown kernel": ("  - kernel: nope\n    args: {src: x, dst: y, factor: 2.0}\n  - kernel: scale\n"
                       "    args: {src: y, dst: z, factor: 1.0}\n",
                       [":10:13: steps[0].kernel: unknown kernel 'nope' (defined kernels: scale, iscale)"]),
    "unknown argument": ("{srcc: x, dst: z, factor: 2.0}",
                         [":11:12: steps[0].args.srcc: kernel 'scale' has no argument 'srcc' (its arguments: src, dst, "
                          "factor, count); did you mean 'src'?",
                          ":11:11: steps[0].args: tensor argument 'src' of kernel 'scale' is not bound"]),
    "output unbound": ("{src: x, factor: 2.0}",
                       [":11:11: steps[0].args: output argument 'dst' of kernel 'scale' is not bound (bind it to the "
                        "name of the tensor it defines)", NOT_Z]),
    "output a number": ("{src: x, dst: 3, factor: 2.0}",
                        [":11:25: steps[0].args.dst: argument 'dst' is an output tensor; bind it to a new tensor name",
                         NOT_Z]),
    "int scalar from float host": ("{src: x, dst: z, factor: g}",
                                   [":11:36: steps[0].args.factor: scalar argument 'factor' is int32 but host input "
                                    "'g' is float32"]),
    "int scalar not integer": ("{src: x, dst: z, factor: 2.5}",
                               [":11:36: steps[0].args.factor: scalar argument 'factor' is int32; 2.5 is not an "
                                "integer"]),
    "scalar unbound": ("{src: x, dst: z}", [":11:11: steps[0].args: scalar argument 'factor' of kernel 'scale' is not "
                                            "bound"]),
    "scalar from a tensor": ("{src: x, dst: z, factor: x}",
                             [":11:36: steps[0].args.factor: scalar argument 'factor' must be bound to a number or a "
                              "host input; 'x' is a device tensor"]),
    "derived scalar bound": ("{src: x, dst: z, factor: 2.0, count: 3}",
                             [":11:48: steps[0].args.count: scalar 'count' is computed by the kernel description "
                              "(value: N * C); do not bind it"]),
    "output already defined": ("{src: x, dst: x, factor: 2.0}",
                               [":11:25: steps[0].args.dst: tensor 'x' is already defined at {path}:2 (each tensor is "
                                "defined once; choose another name)", NOT_Z]),
    "input a number": ("{src: 1.0, dst: z, factor: 2.0}",
                       [":11:17: steps[0].args.src: argument 'src' is a tensor; bind it to a tensor name, not 1.0"]),
}
INT_KERNEL_CASES = {"int scalar from float host", "int scalar not integer"}


@pytest.fixture
def kernels(workdir):
    (workdir / "iscale.yaml").write_text(KERNEL_YAML.replace("{name: factor, kind: scalar, dtype: float32}",
                                                             "{name: factor, kind: scalar, dtype: int32}"))
    return workdir


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_kernel_step_problems(kernels, case):
    steps, expected = CASES[case]
    if steps.startswith("{"):
        steps = f"  - kernel: {'iscale' if case in INT_KERNEL_CASES else 'scale'}\n    args: {steps}\n"
    path = write(kernels, HEAD + steps)
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    assert [str(p) for p in info.value.problems] == [f"{path}{e.format(path=path)}" for e in expected]


def test_scalar_bindings_resolve_to_literals_host_inputs_and_expressions(kernels):
    steps = ("  - kernel: scale\n    args: {src: x, dst: y, factor: n}\n"
             "  - kernel: iscale\n    args: {src: y, dst: w, factor: 3}\n"
             "  - kernel: scale\n    args: {src: w, dst: z, factor: g}\n")
    pipeline = load_pipeline(write(kernels, HEAD + steps))
    derived = ScalarArg(expression="N * C")
    assert [step.scalars for step in pipeline.body] == [
        {"factor": ScalarArg(host_input="n"), "count": derived}, {"factor": ScalarArg(literal=3), "count": derived},
        {"factor": ScalarArg(host_input="g"), "count": derived}]
    assert [(s.kernel, s.tensors, s.in_args, s.out_args) for s in pipeline.body][1] == (
        "iscale", {"src": "y", "dst": "w"}, ("src",), ("dst",))
    assert not pipeline.warnings
