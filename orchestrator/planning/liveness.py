"""Tensor lifetimes over every execution path of a pipeline (pure Python).

A pipeline with branches has several possible executions. We enumerate them (a ``while`` body is unrolled
twice, which exposes every cross-iteration lifetime, plus the zero-iteration path) and, on each path, give
every tensor the intervals between its definitions and last reads. Two tensors *conflict*, and must not
share memory, when some path has both alive at the same event; tensors of different cases of a ``switch``
never do, so they may share space. When the number of paths would explode, we fall back to one
conservative path that runs every branch in turn, with one interval per tensor from its first definition
to its last use anywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import combinations

from ..pipeline.ir import IfBlock, Node, Pipeline, SnippetCall, SwitchBlock, WhileBlock

MAX_PATHS = 1024


@dataclass(frozen=True)
class Event:
    """One thing that happens on a path: a step, a condition read, or a loop's carry copy."""

    label: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]


@dataclass
class Liveness:
    """Per-path intervals of every intermediate tensor and the pairs that are ever alive together."""

    paths: list[list[Event]]
    intervals: list[dict[str, list[tuple[int, int]]]]  # per path: tensor -> [(first, last)] event indices
    conflicts: set[frozenset[str]] = field(default_factory=set)
    exact: bool = True  # False when the conservative single path was used

    def lower_bound(self, size: Callable[[str], int]) -> int:
        """Max over paths and events of the bytes alive at once: no arena can be smaller."""
        best = 0
        for path, spans in zip(self.paths, self.intervals, strict=True):
            for t in range(len(path)):
                live = sum(size(n) for n, ivs in spans.items() if any(a <= t <= b for a, b in ivs))
                best = max(best, live)
        return best


def condition_reads(node: IfBlock | SwitchBlock | WhileBlock, tensors: set[str]) -> tuple[str, ...]:
    names = [node.subject] if isinstance(node, SwitchBlock) else [node.condition.subject, node.condition.rhs]
    return tuple(n for n in names if isinstance(n, str) and n in tensors)


class _PathBuilder:
    def __init__(self, tensors: set[str], limit: int):
        self.tensors, self.limit = tensors, limit

    def body(self, nodes: Iterable[Node]) -> list[list[Event]]:
        seqs: list[list[Event]] = [[]]
        for node in nodes:
            alternatives = self.node(node)
            seqs = [s + a for s in seqs for a in alternatives]
            if len(seqs) > self.limit:
                raise OverflowError
        return seqs

    def node(self, node: Node) -> list[list[Event]]:
        if isinstance(node, IfBlock | SwitchBlock | WhileBlock):
            cond = Event(f"{node.name}:condition", condition_reads(node, self.tensors), ())
            if isinstance(node, WhileBlock):
                return self.loop(node, cond)
            return [[cond] + p for branch in node.branches for p in self.body(branch)]
        label = node.name
        kind = "snippet" if isinstance(node, SnippetCall) else "kernel"
        return [[Event(f"{kind}:{label}", node.reads, node.writes)]]

    def loop(self, node: WhileBlock, cond: Event) -> list[list[Event]]:
        carry = Event(f"{node.name}:carry", tuple(n for _, n in node.carry), tuple(s for s, _ in node.carry))
        bodies = self.body(node.body)
        runs = [[cond]] + [[cond, *b1, carry, cond, *b2, carry, cond] for b1 in bodies for b2 in bodies]
        if len(runs) > self.limit:
            raise OverflowError
        return runs


def _conservative(nodes: Iterable[Node], tensors: set[str]) -> list[Event]:
    events: list[Event] = []
    for node in nodes:
        if isinstance(node, IfBlock | SwitchBlock | WhileBlock):
            cond = Event(f"{node.name}:condition", condition_reads(node, tensors), ())
            events.append(cond)
            if isinstance(node, WhileBlock):
                # Twice, as on exact paths: a tensor from before the loop read in the body stays alive
                # through the whole first iteration (the second reads it again).
                body = _conservative(node.body, tensors)
                carry = Event(f"{node.name}:carry", tuple(n for _, n in node.carry), tuple(s for s, _ in node.carry))
                events += [*body, carry, cond, *body, carry, cond]
                continue
            for branch in node.branches:
                events += _conservative(branch, tensors)
        else:
            events += _PathBuilder(tensors, 1).node(node)[0]
    return events


def _intervals(path: list[Event], tensors: set[str], keep: set[str], merge: bool) -> dict[str, list[tuple[int, int]]]:
    spans: dict[str, list[list[int]]] = {}
    for t, event in enumerate(path):
        for name in event.reads:
            if name in spans:
                spans[name][-1][1] = t
        for name in event.writes:
            if name not in tensors:
                continue
            if name in spans and merge:
                spans[name][-1][1] = t
            else:
                spans.setdefault(name, []).append([t, t])
    end = len(path) - 1
    for name in keep & set(spans):
        spans[name][-1][1] = end
    if merge:
        return {n: [(iv[0][0], max(b for _, b in iv))] for n, iv in spans.items()}
    return {n: [(a, b) for a, b in iv] for n, iv in spans.items()}


def analyse(pipeline: Pipeline, *, max_paths: int = MAX_PATHS) -> Liveness:
    """Lifetimes of the pipeline's intermediates (step outputs; not inputs or constants)."""
    tensors = {n for n, t in pipeline.tensors.items() if t.origin == "step"}
    keep = set(pipeline.outputs)
    try:
        paths = _PathBuilder(tensors, max_paths).body(pipeline.body)
        exact = True
    except OverflowError:
        paths, exact = [_conservative(pipeline.body, tensors)], False
    intervals = [_intervals(p, tensors, keep, merge=not exact) for p in paths]
    result = Liveness(paths, intervals, exact=exact)
    for spans in intervals:
        for a, b in combinations(sorted(spans), 2):
            if any(x0 <= y1 and y0 <= x1 for x0, x1 in spans[a] for y0, y1 in spans[b]):
                result.conflicts.add(frozenset((a, b)))
    return result
