"""Pipeline-level duplication: the same snippet or kernel on the same tensors, reported with both lines."""

from __future__ import annotations

from conftest import write

from orchestrator.pipeline.load import load_pipeline

HEAD = """\
inputs:
  x: {dtype: float32, shape: [N, 4]}
  flag: {dtype: int32, host: true}
outputs: [z]
snippets:
  relu: {onnx: relu.onnx}
  add: {onnx: add.onnx}
kernels:
  scale: scale.yaml
steps:
"""


def duplicates(workdir, steps: str) -> list[str]:
    pipeline = load_pipeline(write(workdir, HEAD + steps))
    return [str(w) for w in pipeline.warnings if "repeats" in w.message]


def test_same_snippet_on_same_tensor_is_reported_with_both_lines(workdir):
    found = duplicates(workdir, """\
  - {snippet: relu, inputs: {x: x}, outputs: {y: y1}}
  - {snippet: relu, inputs: {x: x}, outputs: {y: y2}}
  - {snippet: add, inputs: {a: y1, b: y2}, outputs: {c: z}}
""")
    assert len(found) == 1
    assert "pipeline.yaml:12:" in found[0] and "repeats step 'relu' at " in found[0]
    assert found[0].endswith("use its outputs (y1) instead of computing them twice")
    assert "pipeline.yaml:11" in found[0].split("repeats")[1]


def test_same_kernel_same_arguments_reported_but_not_other_scalars(workdir):
    steps = """\
  - {kernel: scale, args: {src: x, dst: a, factor: 2.0}}
  - {kernel: scale, args: {src: x, dst: b, factor: FACTOR}}
  - {snippet: add, inputs: {a: a, b: b}, outputs: {c: z}}
"""
    assert len(duplicates(workdir, steps.replace("FACTOR", "2.0"))) == 1
    assert duplicates(workdir, steps.replace("FACTOR", "3.0")) == []


def test_different_tensors_or_exclusive_branches_are_not_duplicates(workdir):
    assert duplicates(workdir, """\
  - {snippet: relu, inputs: {x: x}, outputs: {y: y1}}
  - {snippet: relu, inputs: {x: y1}, outputs: {y: y2}}
  - {snippet: add, inputs: {a: y1, b: y2}, outputs: {c: z}}
""") == []
    assert duplicates(workdir, """\
  - if: flag
    then: [{snippet: relu, inputs: {x: x}, outputs: {y: z}}]
    else: [{snippet: relu, inputs: {x: x}, outputs: {y: z}}]
""") == []


def test_a_step_inside_a_branch_repeats_one_before_it(workdir):
    found = duplicates(workdir, """\
  - {snippet: relu, inputs: {x: x}, outputs: {y: y1}}
  - if: flag
    then: [{snippet: relu, inputs: {x: x}, outputs: {y: y2}}]
    else: [{snippet: add, inputs: {a: y1, b: x}, outputs: {c: y2}}]
  - {snippet: add, inputs: {a: y1, b: y2}, outputs: {c: z}}
""")
    assert len(found) == 1 and "steps[1].then[0]" in found[0]


CHAIN = """\
  - {snippet: relu, name: a, inputs: {x: x}, outputs: {y: y1}}
  - {snippet: relu, name: b, inputs: {x: x}, outputs: {y: y2}}
  - {kernel: scale, name: c, args: {src: y1, dst: s1, factor: 2.0}}
  - {kernel: scale, name: d, args: {src: y2, dst: s2, factor: 2.0}}
  - {snippet: add, name: e, inputs: {a: s1, b: s2}, outputs: {c: z}}
"""


def steps_of(pipeline):
    from orchestrator.pipeline.ir import walk

    return [n.name for n in walk(pipeline.body)]


def test_optimize_computes_repeats_once_and_outputs_do_not_change(workdir):
    import numpy as np

    from orchestrator import Orchestrator

    plain = load_pipeline(write(workdir, HEAD + CHAIN, "plain.yaml"))
    optimized = load_pipeline(write(workdir, "optimize: true\n" + HEAD + CHAIN, "opt.yaml"))
    assert steps_of(plain) == ["a", "b", "c", "d", "e"]
    assert steps_of(optimized) == ["a", "c", "e"]  # d repeats c only once b's output is a's
    e = [n for n in optimized.body if n.name == "e"][0]
    assert e.inputs == {"a": "s1", "b": "s1"} and "y2" not in optimized.tensors and "s2" not in optimized.tensors
    assert not [w for w in optimized.warnings if "computed but never used" in w.message]
    assert "(optimize: true computes it once)" in str(optimized.warnings[0])
    x = {"x": np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4), "flag": 1}
    np.testing.assert_array_equal(Orchestrator(optimized, device="cpu").run(x)["z"],
                                  Orchestrator(plain, device="cpu").run(x)["z"])


def test_optimize_keeps_repeats_whose_outputs_are_named_outside(workdir):
    text = "optimize: true\n" + HEAD.replace("outputs: [z]", "outputs: [z, y2]") + CHAIN
    assert steps_of(load_pipeline(write(workdir, text))) == ["a", "b", "c", "d", "e"]  # y2 is an output
    branch = """\
  - {snippet: relu, name: a, inputs: {x: x}, outputs: {y: y1}}
  - if: flag
    then: [{snippet: relu, name: b, inputs: {x: x}, outputs: {y: y2}}]
    else: [{snippet: add, name: c, inputs: {a: y1, b: x}, outputs: {c: y2}}]
  - {snippet: add, name: e, inputs: {a: y1, b: y2}, outputs: {c: z}}
"""
    assert steps_of(load_pipeline(write(workdir, "optimize: true\n" + HEAD + branch))) == ["a", "if", "b", "c", "e"]
