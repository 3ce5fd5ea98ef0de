"""Pipeline-level common subexpressions: a step that runs the same snippet or kernel with the same
arguments on the same tensors as an earlier step that always runs before it. Validation reports them;
with the pipeline's ``optimize: true`` the later step is dropped and its outputs renamed to the earlier
step's everywhere they are read."""

from __future__ import annotations

import dataclasses

from ..pipeline.ir import Condition, IfBlock, KernelCall, Node, SnippetCall, Step, SwitchBlock, WhileBlock


def _key(step: Step) -> tuple:
    if isinstance(step, SnippetCall):
        return ("snippet", step.snippet, tuple(sorted(step.inputs.items())))
    ins = tuple(sorted((a, step.tensors.get(a)) for a in step.in_args))
    return ("kernel", step.kernel, ins, tuple(sorted(step.scalars.items(), key=lambda kv: kv[0])))


def find_duplicates(body: tuple[Node, ...], seen: dict | None = None) -> list[tuple[Step, Step]]:
    """(first, repeat) pairs in program order. A step inside a branch may repeat one before the block;
    steps of exclusive branches never repeat each other; a loop body starts afresh (its state changes)."""
    seen = {} if seen is None else seen
    pairs = []
    for node in body:
        if isinstance(node, SnippetCall | KernelCall):
            first = seen.setdefault(_key(node), node)
            if first is not node:
                pairs.append((first, node))
            continue
        for branch in node.branches:
            pairs += find_duplicates(branch, {} if isinstance(node, WhileBlock) else dict(seen))
    return pairs


def _pinned(body: tuple[Node, ...]) -> set[str]:
    """Tensors whose name matters beyond their readers: block outputs and loop carries."""
    names: set[str] = set()
    for node in body:
        if isinstance(node, IfBlock | SwitchBlock):
            names.update(node.outputs)
        if isinstance(node, WhileBlock):
            names.update(t for pair in node.carry for t in pair)
        if not isinstance(node, SnippetCall | KernelCall):
            for branch in node.branches:
                names |= _pinned(branch)
    return names


def _outputs_by_name(step: Step) -> dict[str, str]:
    return step.outputs if isinstance(step, SnippetCall) else {a: step.tensors[a] for a in step.out_args}


def deduplicate(body: tuple[Node, ...], outputs: tuple[str, ...]) -> tuple[tuple[Node, ...], dict[str, str]]:
    """``body`` with every removable repeat dropped, and the renames applied (repeat's tensor -> first's).
    A repeat whose outputs are pipeline outputs, block outputs or loop carries is kept."""
    keep = set(outputs) | _pinned(body)
    renamed: dict[str, str] = {}
    while True:  # a renamed read can make a later step a repeat in turn
        dropped, rename = set(), {}
        for first, repeat in find_duplicates(body):
            theirs, ours = _outputs_by_name(first), _outputs_by_name(repeat)
            if keep & set(ours.values()) or set(theirs) != set(ours):
                continue
            dropped.add(repeat.id)
            rename.update({ours[k]: theirs[k] for k in ours})
        if not dropped:
            return body, renamed
        body = _rewrite(body, dropped, rename)
        renamed.update(rename)


def _rewrite(body: tuple[Node, ...], dropped: set[int], rename: dict[str, str]) -> tuple[Node, ...]:
    out = []
    for node in body:
        if node.id in dropped:
            continue
        out.append(_rename(node, dropped, rename))
    return tuple(out)


def _rename(node: Node, dropped: set[int], rename: dict[str, str]) -> Node:
    r = lambda t: rename.get(t, t)  # noqa: E731
    if isinstance(node, SnippetCall):
        return dataclasses.replace(node, inputs={p: r(t) for p, t in node.inputs.items()})
    if isinstance(node, KernelCall):
        tensors = {a: (r(t) if a in node.in_args else t) for a, t in node.tensors.items()}
        return dataclasses.replace(node, tensors=tensors)
    sub = lambda nodes: _rewrite(nodes, dropped, rename)  # noqa: E731
    if isinstance(node, IfBlock):
        return dataclasses.replace(node, condition=_condition(node.condition, r), then=sub(node.then),
                                   else_=sub(node.else_))
    if isinstance(node, SwitchBlock):
        cases = tuple((value, sub(nodes)) for value, nodes in node.cases)
        default = None if node.default is None else sub(node.default)
        return dataclasses.replace(node, subject=r(node.subject), cases=cases, default=default)
    return dataclasses.replace(node, condition=_condition(node.condition, r), body=sub(node.body))


def _condition(condition: Condition, r) -> Condition:
    return dataclasses.replace(condition, subject=r(condition.subject))
