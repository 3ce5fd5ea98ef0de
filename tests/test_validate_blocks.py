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


def if_(condition: str, then: str, else_: str) -> str:
    return f"  - if: {condition}\n    then:\n{then}    else:\n{else_}"


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
    "then body": (if_("mode", k("nope", "z", 6), k("x", "z", 6)),
                  f":12:21: steps[0].then[0].args.src: tensor 'nope' is not defined before this step {DEFINED}"),
    "else body": (if_("mode", k("x", "z", 6), k("nope", "z", 6)),
                  f":15:21: steps[0].else[0].args.src: tensor 'nope' is not defined before this step {DEFINED}"),
    "if subject": (if_("nope > 1", k("x", "z", 6), k("x", "z", 6)),
                   f":9:9: steps[0].if: tensor 'nope' is not defined before this step {DEFINED}"),
    "if operand": (if_("mode > nope", k("x", "z", 6), k("x", "z", 6)),
                   f":9:9: steps[0].if: tensor 'nope' is not defined before this step {DEFINED}"),
    "defined in one branch": (if_("mode", k("x", "z", 6) + k("x", "w", 6), k("x", "z", 6)) + k("w", "q"),
                              ":19:17: steps[1].args.src: tensor 'w' is not visible here: it is defined in 'then' of "
                              "the block at {path}:9 but not in 'else'"),
    "defined in one case": ("  - switch: mode\n    cases:\n      0:\n" + k("x", "z", 8) + k("x", "w", 8) + "      1:\n"
                            + k("x", "z", 8) + "    default:\n" + k("x", "z", 6) + k("w", "q"),
                            ":23:17: steps[1].args.src: tensor 'w' is not visible here: it is defined in case 0 of "
                            "the block at {path}:9 but not in case 1, default"),
    "carried state undefined": (k("x", "s") + loop(k("s", "n", 6)).replace("{s: n}", "{nope: n}") + k("s", "z"),
                                ":13:13: steps[1].carry.nope: tensor 'nope' is not defined before this step "
                                "(defined tensors: x, mode, v, s)"),
    "ten tensors listed": ("".join(k("x", f"t{i}") for i in range(7)) + k("nope", "z"),
                           ":24:17: steps[7].args.src: tensor 'nope' is not defined before this step (defined tensors: "
                           "x, mode, v, t0, t1, t2, t3, t4, t5, t6)"),
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
    assert f"{path}{expected.format(path=path)}" in problems, problems


def test_no_kernels_defined_is_said_so(workdir):
    text = HEAD.replace("kernels:\n  scale: scale.yaml\n", "") + "  - kernel: nope\n    args: {src: x, dst: z}\n"
    path = write(workdir, text)
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    assert [str(p) for p in info.value.problems] == [
        f"{path}:7:13: steps[0].kernel: unknown kernel 'nope' (defined kernels: none)"]


def test_blocks_keep_their_names_paths_and_ids(workdir):
    text = HEAD + k("x", "s") + loop(k("s", "n", 6)).replace("    max_iterations", "    name: shrink\n    max_iterations") \
        + "  - switch: mode\n    name: pick\n    cases:\n      0:\n" + k("s", "y", 8) + \
        if_("mode", k("y", "z", 6), k("y", "z", 6)).replace("    then:", "    name: sign\n    then:")
    pipeline = load_pipeline(write(workdir, text))
    assert [(n.name, n.path) for n in pipeline.body] == [("scale", ("steps", 0)), ("shrink", ("steps", 1)),
                                                        ("pick", ("steps", 2)), ("sign", ("steps", 3))]
    from orchestrator.pipeline.ir import walk

    ids = [n.id for n in walk(pipeline.body)]
    assert all(isinstance(i, int) for i in ids) and len(set(ids)) == len(ids)
    assert not [w for w in pipeline.warnings if "never used" in str(w)]  # the carried 'n' counts as used


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
