"""Validation inside blocks: problems in switch cases, defaults, loop bodies and conditions point at their
own line and YAML path; the loop-condition warning; which switch subjects are integers; default step names."""

from __future__ import annotations

import pytest
from conftest import write

from orchestrator.errors import ConfigError
from orchestrator.pipeline.load import load_pipeline

HEAD = """\
inputs:
  x: {dtype: float32, shape: [N, 4]}
  mode: {dtype: int32, host: true}
  v: {dtype: float32, shape: [1]}
outputs: [z]
kernels:
  scale: scale.yaml
steps:
"""


def k(src: str, dst: str, indent: int = 2) -> str:
    pad = " " * indent
    return f"{pad}- kernel: scale\n{pad}  args: {{src: {src}, dst: {dst}, factor: 2.0}}\n"


def switch(case0: str, default: str = k("x", "z", 6), subject: str = "mode") -> str:
    return f"  - switch: {subject}\n    cases:\n      0:\n{case0}      1:\n{k('x', 'z', 8)}    default:\n{default}"


def loop(body: str, condition: str = "v > 0") -> str:
    return f"  - while: {condition}\n    max_iterations: 2\n    carry: {{s: n}}\n    body:\n{body}"


DEFINED = "(defined tensors: x, mode, v)"
CASES = {
    "case body": (switch(k("nope", "z", 8)),
                  f":13:23: steps[0].cases[0][0].args.src: tensor 'nope' is not defined before this step {DEFINED}"),
    "default": (switch(k("x", "z", 8), k("nope", "z", 6)),
                f":19:21: steps[0].default[0].args.src: tensor 'nope' is not defined before this step {DEFINED}"),
    "switch subject": (switch(k("x", "z", 8), subject="nope"),
                       f":9:13: steps[0].switch: tensor 'nope' is not defined before this step {DEFINED}"),
    "loop body": (k("x", "s") + loop(k("nope", "n", 6)) + k("s", "z"),
                  ":16:21: steps[1].body[0].args.src: tensor 'nope' is not defined before this step "
                  "(defined tensors: x, mode, v, s)"),
    "loop condition": (k("x", "s") + loop(k("s", "n", 6), "nope > 0") + k("s", "z"),
                       ":11:12: steps[1].while: tensor 'nope' is not defined before this step "
                       "(defined tensors: x, mode, v, s)"),
    "many tensors": ("".join(k("x", f"t{i}") for i in range(12)) + k("nope", "z"),
                     ":34:17: steps[12].args.src: tensor 'nope' is not defined before this step (defined tensors: "
                     "x, mode, v, t0, t1, t2, t3, t4, t5, t6, ...)"),
    "carry of a body tensor": (k("x", "s") + loop(k("s", "n", 6)).replace("{s: n}", "{s: s}") + k("s", "z"),
                               ":13:16: steps[1].carry.s: 's' must be a tensor defined inside the loop body"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_problems_inside_blocks_point_at_their_line_and_path(workdir, case):
    steps, expected = CASES[case]
    path = write(workdir, HEAD + steps)
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    problems = [str(p) for p in info.value.problems]
    assert any(p == f"{path}{expected}" or p.endswith(f"pipeline.yaml{expected}") for p in problems), problems


def test_a_loop_condition_the_body_never_updates_is_a_warning(workdir):
    pipeline = load_pipeline(write(workdir, HEAD + k("x", "s") + loop(k("s", "n", 6)) + k("s", "z")))
    warnings = [str(w) for w in pipeline.warnings]
    assert any(w.endswith(":11:12: steps[1].while: warning: the loop condition reads 'v', which the body never "
                          "updates (add it to 'carry')") for w in warnings), warnings
    carried = HEAD.replace("v: {dtype: float32, shape: [1]}", "v: {dtype: float32, shape: [1]}\n  w: "
                           "{dtype: float32, host: true}") + k("x", "s") + loop(k("s", "n", 6), "w > 0") + k("s", "z")
    assert not any("loop condition" in str(w) for w in load_pipeline(write(workdir, carried, "b.yaml")).warnings)


@pytest.mark.parametrize("dtype", ["int32", "int64", "int8", "uint8", "bool"])
def test_integer_switch_subjects(workdir, dtype):
    text = HEAD.replace("mode: {dtype: int32", f"mode: {{dtype: {dtype}") + switch(k("x", "z", 8))
    pipeline = load_pipeline(write(workdir, text))
    assert pipeline.body[0].subject == "mode" and [key for key, _ in pipeline.body[0].cases] == [0, 1]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_float_switch_subjects_are_refused(workdir, dtype):
    text = HEAD.replace("mode: {dtype: int32", f"mode: {{dtype: {dtype}") + switch(k("x", "z", 8))
    with pytest.raises(ConfigError, match=f":9:13: steps\\[0\\].switch: 'mode' is {dtype}; a switch needs an "
                                          "integer value"):
        load_pipeline(write(workdir, text))


def test_unnamed_steps_and_blocks_get_distinct_names(workdir):
    text = HEAD + k("x", "s") + k("x", "c") + loop(k("s", "n", 6)) + k("s", "y") + switch(
        k("y", "z", 8)).replace("z, factor", "z, factor") + "  - if: mode\n    then:\n" + k("z", "q", 6) + \
        "    else:\n" + k("z", "q", 6) + "  - if: mode\n    then:\n" + k("q", "r", 6) + "    else:\n" + k("q", "r", 6)
    text = text.replace("outputs: [z]", "outputs: [r, c]")
    pipeline = load_pipeline(write(workdir, text))
    names = [node.name for node in pipeline.body]
    assert names == ["scale", "scale_2", "while", "scale_4", "switch", "if", "if_2"]
    assert pipeline.body[2].carry == (("s", "n"),) and pipeline.body[2].max_iterations == 2
    assert pipeline.body[4].default is not None and pipeline.body[4].outputs == ("z",)
    ids = [node.id for node in pipeline.body]
    assert len(set(ids)) == len(ids)
