"""Property-based tests (Hypothesis) where the input domain is large: liveness and the memory plan on random
programs with branches and loops (checked against executions simulated independently of the analysis),
shape expressions against Python, conditions against numpy, and hwc8 layout round trips."""

from __future__ import annotations

import math
import operator
from fractions import Fraction
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from conftest import write
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from orchestrator import Orchestrator
from orchestrator.layouts import storage_bytes, storage_shape, to_logical, to_storage
from orchestrator.pipeline import shapes
from orchestrator.pipeline.ir import (
    Condition,
    IfBlock,
    KernelCall,
    Pipeline,
    SwitchBlock,
    TensorInfo,
    WhileBlock,
)
from orchestrator.planning import analyse, plan_memory
from orchestrator.planning.memory import ALIGNMENT

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
PROGRAMS = settings(FAST, max_examples=30)

# ---- random programs: liveness and the memory plan ------------------------------------------------


class Program:
    """Builds a random, well-scoped program (the resolved IR) and runs it on random decisions."""

    def __init__(self, draw):
        self.draw, self.count, self.tensors = draw, 0, {}

    def new(self) -> str:
        self.count += 1
        name = f"t{self.count}"
        self.tensors[name] = TensorInfo(name, "float32", (4,), "step", ())
        return name

    def step(self, scope: list[str], out: str | None = None) -> KernelCall:
        reads = self.draw(st.lists(st.sampled_from(scope), min_size=1, max_size=2, unique=True))
        out = out or self.new()
        self.count += 1
        args = {f"i{k}": r for k, r in enumerate(reads)} | {"o": out}
        return KernelCall(self.count, f"k{self.count}", (), "scale", args, {}, tuple(args)[:-1], ("o",))

    def body(self, scope: list[str], depth: int, length: int) -> tuple[list, list[str]]:
        nodes, scope = [], list(scope)
        for _ in range(length):
            kind = self.draw(st.sampled_from(["step"] * 3 + (["if", "switch", "while"] if depth < 2 else [])))
            if kind == "step":
                node = self.step(scope)
                scope += node.writes
            else:
                node = {"if": self.if_, "switch": self.switch, "while": self.while_}[kind](scope, depth)
                scope += getattr(node, "outputs", ())  # a loop defines nothing new: its state exists before it
            nodes.append(node)
        return nodes, scope

    def condition(self, scope: list[str]) -> Condition:
        subject = self.draw(st.sampled_from(["flag", *scope]))
        return Condition(subject, "<", 0.5)

    def branch_block(self, scope, depth, cases):
        outputs = tuple(self.new() for _ in range(self.draw(st.integers(1, 2))))
        branches = []
        for _ in range(cases):
            nodes, inner = self.body(scope, depth + 1, self.draw(st.integers(0, 2)))
            branches.append(tuple(nodes + [self.step(inner, out) for out in outputs]))
        self.count += 1
        return outputs, branches

    def if_(self, scope, depth):
        cond = self.condition(scope)
        outputs, (then, else_) = self.branch_block(scope, depth, 2)
        return IfBlock(self.count, f"b{self.count}", (), cond, then, else_, outputs)

    def switch(self, scope, depth):
        subject = self.draw(st.sampled_from(["flag", *scope]))
        outputs, branches = self.branch_block(scope, depth, self.draw(st.integers(2, 3)))
        return SwitchBlock(self.count, f"b{self.count}", (), subject, tuple(enumerate(branches)), None, outputs)

    def while_(self, scope, depth):
        steps = [n for n in scope if n in self.tensors]  # the carried state is a step's output
        states = self.draw(st.lists(st.sampled_from(steps), min_size=1, max_size=2, unique=True))
        cond = self.condition(scope)
        nodes, inner = self.body(scope, depth + 1, self.draw(st.integers(1, 2)))
        nexts = [self.step(inner) for _ in states]
        self.count += 1
        return WhileBlock(self.count, f"b{self.count}", (), cond, 4, tuple(nodes + nexts),
                          tuple((s, n.writes[0]) for s, n in zip(states, nexts, strict=True)))

    def pipeline(self) -> Pipeline:
        first = self.step(["x"])
        nodes, scope = self.body(["x", *first.writes], 0, self.draw(st.integers(1, 5)))
        outputs = tuple(self.draw(st.lists(st.sampled_from(scope[1:]), min_size=1, max_size=2, unique=True)))
        inputs = {"x": TensorInfo("x", "float32", (4,), "input", ()),
                  "flag": TensorInfo("flag", "int32", (), "host", ())}
        return Pipeline("random", Path("random.yaml"), {}, inputs, outputs, {}, {}, {}, (first, *nodes),
                        {**inputs, **self.tensors})


def trace(nodes, choose) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """One execution as (reads, writes) events, decisions and iteration counts from ``choose``."""
    events = []
    for node in nodes:
        if isinstance(node, KernelCall):
            events.append((node.reads, node.writes))
            continue
        subject = node.subject if isinstance(node, SwitchBlock) else node.condition.subject
        events.append(((subject,), ()))
        if isinstance(node, WhileBlock):
            for _ in range(choose(4)):  # up to 3 iterations: one more than the analysis unrolls
                events += trace(node.body, choose)
                events.append((tuple(n for _, n in node.carry), tuple(s for s, _ in node.carry)))
                events.append(((subject,), ()))
        else:
            events += trace(node.branches[choose(len(node.branches))], choose)
    return events


def alive_together(events, tensors: set[str], outputs) -> set[frozenset[str]]:
    """Pairs of tensors whose values are both still needed at one event of this execution."""
    spans: dict[str, list[list[int]]] = {}
    for t, (reads, writes) in enumerate(events):
        for name in reads:
            if name in spans:
                spans[name][-1][1] = t
        for name in writes:
            spans.setdefault(name, []).append([t, t])
    for name in set(outputs) & set(spans):
        spans[name][-1][1] = len(events) - 1
    pairs = set()
    names = sorted(n for n in spans if n in tensors)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if any(x0 <= y1 and y0 <= x1 for x0, x1 in spans[a] for y0, y1 in spans[b]):
                pairs.add(frozenset((a, b)))
    return pairs


@st.composite
def programs(draw):
    return Program(draw).pipeline()


@PROGRAMS
@given(programs(), st.data())
def test_liveness_covers_every_simulated_execution(pipeline, data):
    """Every pair of tensors alive together in some execution (any branch, 0-3 loop iterations, so a
    value carried into the next iteration is live across the back edge) is a conflict of the analysis."""
    live = analyse(pipeline)
    step_tensors = {n for n, t in pipeline.tensors.items() if t.origin == "step"}
    for _ in range(8):
        events = trace(pipeline.body, lambda n: data.draw(st.integers(0, n - 1)))
        missed = alive_together(events, step_tensors, pipeline.outputs) - live.conflicts
        assert not missed, missed


@PROGRAMS
@given(programs(), st.data())
def test_memory_plan_never_overlaps_live_tensors(pipeline, data):
    names = sorted(n for n, t in pipeline.tensors.items() if t.origin == "step")
    sizes = {n: data.draw(st.integers(1, 5000)) for n in names}
    live = analyse(pipeline)
    plan = plan_memory(pipeline, sizes, live)
    for _ in range(4):
        events = trace(pipeline.body, lambda n: data.draw(st.integers(0, n - 1)))
        for pair in alive_together(events, set(names), pipeline.outputs):
            a, b = sorted(pair)
            assert (plan.offsets[a] + sizes[a] <= plan.offsets[b]
                    or plan.offsets[b] + sizes[b] <= plan.offsets[a]), (a, b, plan.offsets, sizes)
    assert all(plan.offsets[n] % ALIGNMENT == 0 for n in names)
    assert all(plan.offsets[n] + sizes[n] <= plan.arena_bytes for n in names)
    assert plan.lower_bound <= plan.arena_bytes <= plan.naive_bytes
    aligned = {n: -(-sizes[n] // ALIGNMENT) * ALIGNMENT for n in names}
    assert plan.naive_bytes == sum(aligned.values())
    assert plan.lower_bound >= max(aligned.values())
    for pair in live.conflicts:  # the lower bound counts at least every conflicting pair at once
        a, b = sorted(pair)
        assert plan.lower_bound >= aligned[a] + aligned[b]


@PROGRAMS
@given(programs(), st.integers(1, 3), st.data())
def test_conservative_liveness_covers_exact_and_simulated_conflicts(pipeline, limit, data):
    """Beyond ``max_paths`` the single conservative path must still keep apart whatever is alive together
    (a tensor from before a loop read in its body stays alive through the iteration)."""
    exact = analyse(pipeline)
    assume(len(exact.paths) > limit)
    rough = analyse(pipeline, max_paths=limit)
    assert not rough.exact and exact.conflicts <= rough.conflicts
    step_tensors = {n for n, t in pipeline.tensors.items() if t.origin == "step"}
    events = trace(pipeline.body, lambda n: data.draw(st.integers(0, n - 1)))
    assert alive_together(events, step_tensors, pipeline.outputs) <= rough.conflicts


# ---- shape expressions ----------------------------------------------------------------------------

SYMBOLS = ["N", "H", "W", "C"]
PY = {"+": operator.add, "-": operator.sub, "*": operator.mul, "//": operator.floordiv, "%": operator.mod}


@st.composite
def expressions(draw, depth=3):
    """(text, a Python function of the environment that computes it)."""
    if depth == 0 or draw(st.booleans()):
        if draw(st.booleans()):
            value = draw(st.integers(0, 50))
            return str(value), lambda env: value
        name = draw(st.sampled_from(SYMBOLS))
        return name, lambda env: env[name]
    (a, fa), (b, fb) = draw(expressions(depth - 1)), draw(expressions(depth - 1))
    op = draw(st.sampled_from([*PY, "cdiv", "min", "max"]))
    if op in PY:
        return f"({a}) {op} ({b})", lambda env: PY[op](fa(env), fb(env))
    funcs = {"cdiv": lambda x, y: math.ceil(Fraction(x, y)), "min": min, "max": max}
    return f"{op}({a}, {b})", lambda env: funcs[op](fa(env), fb(env))


@FAST
@given(expressions(), st.fixed_dictionaries({s: st.integers(1, 64) for s in SYMBOLS}))
def test_expressions_evaluate_as_python_does(expr, env):
    text, python = expr
    try:
        want = python(env)
    except ZeroDivisionError:
        with pytest.raises(ZeroDivisionError):
            shapes.evaluate(text, env)
        return
    assert shapes.evaluate(text, env) == want
    assert shapes.symbols(text) <= set(SYMBOLS)
    partial = {k: v for k, v in env.items() if k != "N"}
    symbolic = shapes.evaluate(text, partial)  # N unbound: stays symbolic, and evaluates later to the same
    if "N" in shapes.symbols(text):
        assert isinstance(symbolic, str) and shapes.evaluate(symbolic, {"N": env["N"]}) == want
    else:
        assert symbolic == want


@FAST
@given(expressions(), st.sampled_from(["**", "/", "<<", "&", "@"]), st.sampled_from(["1.5", "True", "'a'",
                                                                                       "H.x", "f(H)", "H[0]"]))
def test_invalid_expressions_are_rejected(expr, op, bad):
    text, _ = expr
    for wrong in (f"({text}) {op} 2", f"({text}) + {bad}", f"cdiv({text}, 2, k=1)", f"({text}) +"):
        with pytest.raises(shapes.ShapeExprError):
            shapes.parse(wrong)


# ---- conditions against numpy -------------------------------------------------------------------

NUMERIC = ["float32", "float16", "int8", "uint8", "int32", "int64", "bool"]
COMPARISONS = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal, "==": np.equal,
               "!=": np.not_equal}

CONDITION = """\
inputs:
  v: {dtype: %s, shape: [1]}
  y: {dtype: float32, shape: [1, 4]}
  r: {dtype: float32, host: true}
outputs: [z]
kernels:
  scale: scale.yaml
steps:
  - if: %s
    then:
      - kernel: scale
        args: {src: y, dst: z, factor: 1.0}
    else:
      - kernel: scale
        args: {src: y, dst: z, factor: -1.0}
"""


@cache
def condition_pipeline(folder: Path, dtype: str, condition: str) -> Orchestrator:
    name = f"cond_{dtype}_{abs(hash(condition))}.yaml"
    return Orchestrator(write(folder, CONDITION % (dtype, condition), name), device="cpu")


@pytest.fixture(scope="module")
def condition_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("conditions")
    from conftest import KERNEL_CU, KERNEL_YAML, REF_PY

    (folder / "scale.yaml").write_text(KERNEL_YAML)
    (folder / "scale.cu").write_text(KERNEL_CU)
    (folder / "ref.py").write_text(REF_PY)
    return folder


def values(dtype: str):
    if dtype == "bool":
        return st.booleans()
    if dtype.startswith("float"):
        return st.sampled_from([0.0, -0.0, 0.5, -1.0, 1.0, 2.0]) | st.floats(-1e3, 1e3, width=16)
    info = np.iinfo(dtype)
    return st.integers(max(info.min, -1000), min(info.max, 1000))


@FAST
@given(st.sampled_from(NUMERIC), st.sampled_from([*COMPARISONS, "truth", "not"]), st.data())
def test_conditions_agree_with_numpy(condition_folder, dtype, op, data):
    v = np.array([data.draw(values(dtype))], dtype=np.dtype(dtype))
    r = np.float32(data.draw(st.sampled_from([float(v[0]), 0.0]) | st.floats(-1e3, 1e3, width=16)))
    if op in COMPARISONS:
        text, want = f"v {op} r", bool(COMPARISONS[op](v[0], r))
    else:
        text, want = ("v" if op == "truth" else "not v"), bool(v[0] != 0) == (op == "truth")
    orch = condition_pipeline(condition_folder, dtype, text)
    z = orch.run({"v": v, "y": np.ones((1, 4), np.float32), "r": float(r)})["z"]
    assert (z[0, 0] == 1.0) == want, (text, v, r)


@pytest.mark.parametrize(("condition", "value", "want"), [
    ("v < 2", 2, False), ("v <= 2", 2, True), ("v > 2", 2, False), ("v >= 2", 2, True), ("v == 2", 2, True),
    ("v != 2", 2, False), ("v > -1", 0, True), ("v >= -1", -1, True), ("v < -1", -1, False), ("v", -3, True),
    ("not v", -3, False), ("v", 0, False), ("not v", 0, True)])
def test_conditions_with_literal_operands(condition_folder, condition, value, want):
    orch = condition_pipeline(condition_folder, "int32", condition)
    z = orch.run({"v": np.array([value], np.int32), "y": np.ones((1, 4), np.float32), "r": 0.0})["z"]
    assert (z[0, 0] == 1.0) == want


# ---- hwc8 layout ----------------------------------------------------------------------------------


@FAST
@given(st.tuples(st.integers(1, 3), st.integers(1, 40), st.integers(1, 5), st.integers(1, 5)))
def test_hwc8_round_trips_and_pads_channels_to_eight(shape):
    n, c, h, w = shape
    array = np.arange(math.prod(shape), dtype=np.float16).reshape(shape)
    stored = to_storage(array, "hwc8")
    padded = -(-c // 8) * 8
    assert stored.shape == storage_shape(shape, "hwc8") == (n, h, w, padded)
    assert storage_bytes(shape, "float16", "hwc8") == n * h * w * padded * 2
    assert not stored[..., c:].any()  # the padding is zero
    np.testing.assert_array_equal(stored[:, :, :, :c], array.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(to_logical(stored.reshape(-1), shape, "hwc8"), array)
    np.testing.assert_array_equal(to_logical(to_storage(array, "linear").reshape(-1), shape, "linear"), array)
    assert storage_bytes(shape, "float32") == math.prod(shape) * 4
