"""Liveness over execution paths and the arena plan (pure Python)."""

from __future__ import annotations

import random

import pytest
from conftest import ROOT, write

from orchestrator.cli import main
from orchestrator.pipeline.load import load_pipeline
from orchestrator.planning import analyse, plan_memory, plan_pipeline
from orchestrator.planning.memory import ALIGNMENT

HEADER = """\
inputs:
  x: {dtype: float32, shape: [N, 4]}
  flag: {dtype: int32, host: true}
outputs: [%s]
kernels:
  scale: scale.yaml
steps:
"""


def k(src: str, dst: str, indent: int = 2) -> str:
    pad = " " * indent
    return f"{pad}- kernel: scale\n{pad}  args: {{src: {src}, dst: {dst}, factor: 2.0}}\n"


def branchy(workdir):
    text = HEADER % "z" + k("x", "pre") + "  - if: flag\n    then:\n" + k("pre", "a", 6) + k("a", "b", 6) + \
        k("b", "z", 6) + "    else:\n" + k("pre", "c", 6) + k("c", "z", 6)
    return load_pipeline(write(workdir, text))


def assert_valid(plan, liveness):
    """No two conflicting tensors overlap in the arena; every offset is aligned."""
    for pair in liveness.conflicts:
        a, b = sorted(pair)
        ra = (plan.offsets[a], plan.offsets[a] + plan.sizes[a])
        rb = (plan.offsets[b], plan.offsets[b] + plan.sizes[b])
        assert ra[1] <= rb[0] or rb[1] <= ra[0], (a, b, ra, rb)
    assert all(o % ALIGNMENT == 0 for o in plan.offsets.values())
    assert plan.lower_bound <= plan.arena_bytes <= plan.naive_bytes


def test_tensors_of_different_branches_never_conflict(workdir):
    pipeline = branchy(workdir)
    live = analyse(pipeline)
    assert len(live.paths) == 2 and live.exact
    for then_only in ("a", "b"):
        assert frozenset((then_only, "c")) not in live.conflicts
    assert frozenset(("a", "pre")) in live.conflicts and frozenset(("c", "pre")) in live.conflicts
    assert frozenset(("b", "z")) in live.conflicts  # a step's input and output never alias


def test_branch_exclusive_tensors_share_space(workdir):
    pipeline = branchy(workdir)
    sizes = {"pre": 1000, "a": 4096, "b": 4096, "c": 4096, "z": 1000}
    plan = plan_memory(pipeline, sizes)
    assert_valid(plan, analyse(pipeline))
    assert plan.offsets["c"] in (plan.offsets["a"], plan.offsets["b"])
    assert plan.arena_bytes < plan.naive_bytes - 4096  # c took no space of its own


def test_loop_state_and_outer_reads_live_through_the_loop(workdir):
    text = HEADER % "out" + k("x", "state") + k("x", "outer") + (
        "  - while: flag\n    max_iterations: 4\n    carry: {state: nxt}\n    body:\n"
        + k("state", "t1", 6) + k("t1", "t2", 6)
        + "      - snippet: add\n        inputs: {a: t2, b: outer}\n        outputs: {c: nxt}\n") + k("state", "out")
    text = text.replace("kernels:", "snippets:\n  add: {onnx: add.onnx}\nkernels:")
    pipeline = load_pipeline(write(workdir, text))
    live = analyse(pipeline)
    # outer is read in every iteration: it conflicts with every body tensor
    for body in ("t1", "t2", "nxt"):
        assert frozenset(("outer", body)) in live.conflicts
    assert frozenset(("state", "nxt")) in live.conflicts  # the carry copy reads nxt and writes state
    assert frozenset(("t1", "nxt")) not in live.conflicts  # t1 is dead before nxt is computed
    plan = plan_memory(pipeline, {n: 512 for n in ("state", "outer", "t1", "t2", "nxt", "out")})
    assert_valid(plan, live)


@pytest.mark.parametrize("seed", range(20))
def test_random_sizes_give_valid_plans_close_to_the_bound(workdir, seed):
    rng = random.Random(seed)
    text = HEADER % "z" + k("x", "p0")
    prev = "p0"
    for i in range(1, 6):
        text += k(prev, f"p{i}")
        prev = f"p{i}"
    text += "  - if: flag\n    then:\n" + k(prev, "a1", 6) + k("a1", "z", 6) + "    else:\n" + k(prev, "z", 6)
    pipeline = load_pipeline(write(workdir, text))
    sizes = {n: rng.randint(1, 1 << 20) for n, t in pipeline.tensors.items() if t.origin == "step"}
    plan = plan_memory(pipeline, sizes)
    assert_valid(plan, analyse(pipeline))
    assert plan.arena_bytes <= 1.5 * plan.lower_bound


@pytest.mark.parametrize("name", ["classify", "cascade", "matting"])
def test_example_plans_meet_the_target(name):
    pipeline = load_pipeline(ROOT / f"pipelines/{name}.yaml")
    plan = plan_pipeline(pipeline)
    assert_valid(plan, analyse(pipeline))
    assert plan.arena_bytes <= 1.05 * plan.lower_bound
    assert plan.naive_bytes > plan.arena_bytes


def test_conservative_fallback_when_paths_explode(workdir):
    pipeline = branchy(workdir)
    live = analyse(pipeline, max_paths=1)
    assert not live.exact
    plan = plan_memory(pipeline, {n: 4096 for n in ("pre", "a", "b", "c", "z")}, live)
    assert_valid(plan, live)
    assert_valid(plan, analyse(pipeline))  # the conservative plan is also safe for the exact conflicts


def test_plan_cli_prints_table_and_json(capsys):
    assert main(["plan", str(ROOT / "pipelines/classify.yaml")]) == 0
    assert "arena/bound" in capsys.readouterr().out
    assert main(["plan", "--json", str(ROOT / "pipelines/matting.yaml")]) == 0
    assert '"arena_over_lower_bound": 1.0' in capsys.readouterr().out


def test_unbounded_dimension_cannot_be_planned(workdir):
    pipeline = load_pipeline(workdir / "base.yaml")
    with pytest.raises(Exception, match="dimension N has no bounds; add dims.N"):
        plan_pipeline(pipeline)
