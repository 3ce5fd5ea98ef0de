"""Parse the conditions of ``if`` and ``while`` blocks: ``flag``, ``not flag``, ``maxprob < 0.5``,
``score >= threshold`` (a one-element tensor or host input, compared with a number or a host input)."""

from __future__ import annotations

import ast

from .ir import Condition

_OPS = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}
EXAMPLES = "expected e.g. 'flag', 'not flag', 'maxprob < 0.5' or 'score >= threshold'"


def parse_condition(text: str) -> Condition:
    """Parse a condition; raises ValueError with a one-line message."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise ValueError(f"'{text}' is not a valid condition ({EXAMPLES})") from None
    negate = isinstance(tree, ast.UnaryOp) and isinstance(tree.op, ast.Not)
    if negate:
        tree = tree.operand  # type: ignore[union-attr]
    if isinstance(tree, ast.Name):
        return Condition(tree.id, negate=negate)
    if (isinstance(tree, ast.Compare) and isinstance(tree.left, ast.Name) and len(tree.ops) == 1
            and type(tree.ops[0]) in _OPS):
        rhs = _operand(tree.comparators[0])
        if rhs is not None:
            return Condition(tree.left.id, _OPS[type(tree.ops[0])], rhs, negate)  # type: ignore[arg-type]
    raise ValueError(f"'{text}' is not a valid condition ({EXAMPLES})")


def _operand(node: ast.expr) -> float | str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _operand(node.operand)
        return -value if isinstance(value, float) else None
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return float(node.value)
    return None


def compare(value: float, op: str | None, rhs: float) -> bool:
    """Evaluate ``value op rhs`` (``op`` None: value is non-zero)."""
    if op is None:
        return value != 0
    return {"<": value < rhs, "<=": value <= rhs, ">": value > rhs, ">=": value >= rhs,
            "==": value == rhs, "!=": value != rhs}[op]
