"""Symbolic shapes: dimensions are integers or expressions over named symbols (``N``, ``H // 2``).

Validation propagates shapes symbolically (a symbol stays a symbol until run time binds it); at run time
and for memory planning the same expressions are evaluated with integers.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Mapping, Sequence

Dim = int | str
Shape = tuple[Dim, ...]

_BINOPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
           ast.FloorDiv: lambda a, b: a // b, ast.Mod: lambda a, b: a % b}
_FUNCS = {"cdiv": lambda a, b: -(-a // b), "min": min, "max": max}


class ShapeExprError(ValueError):
    """An expression is not a valid dimension expression."""


def parse(expr: str) -> ast.expr:
    """Parse and check a dimension expression: integers, symbols, + - * // %, cdiv/min/max calls."""
    try:
        tree = ast.parse(expr.strip(), mode="eval").body
    except SyntaxError:
        raise ShapeExprError(f"'{expr}' is not a valid expression") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if not (isinstance(node.func, ast.Name) and node.func.id in _FUNCS) or node.keywords:
                raise ShapeExprError(f"'{expr}': only cdiv(a, b), min(...), max(...) may be called")
        elif isinstance(node, ast.BinOp):
            if type(node.op) not in _BINOPS:
                raise ShapeExprError(f"'{expr}': only + - * // % are allowed")
        elif isinstance(node, ast.Constant):
            if not isinstance(node.value, int) or isinstance(node.value, bool):
                raise ShapeExprError(f"'{expr}': only integer constants are allowed")
        elif not isinstance(node, ast.Name | ast.Load | ast.operator):
            raise ShapeExprError(f"'{expr}': {type(node).__name__} is not allowed in a dimension expression")
    return tree


def symbols(dim: Dim) -> set[str]:
    """The free symbols of a dimension."""
    if isinstance(dim, int):
        return set()
    names = {n.id for n in ast.walk(parse(dim)) if isinstance(n, ast.Name)}
    return names - set(_FUNCS)


def evaluate(dim: Dim, env: Mapping[str, Dim]) -> Dim:
    """Substitute bound symbols; return an int if everything is known, else a symbolic expression."""
    if isinstance(dim, int):
        return dim
    tree = parse(dim)
    if isinstance(tree, ast.Name) and tree.id in env:
        return env[tree.id]
    try:
        return _eval_int(tree, env)
    except KeyError:
        return ast.unparse(_substitute(tree, env))


def _eval_int(node: ast.expr, env: Mapping[str, Dim]) -> int:
    if isinstance(node, ast.Constant):
        return int(node.value)
    if isinstance(node, ast.Name):
        value = env[node.id]
        if not isinstance(value, int):
            raise KeyError(node.id)
        return value
    if isinstance(node, ast.BinOp):
        return _BINOPS[type(node.op)](_eval_int(node.left, env), _eval_int(node.right, env))
    if isinstance(node, ast.Call):
        return _FUNCS[node.func.id](*(_eval_int(a, env) for a in node.args))  # type: ignore[union-attr]
    raise ShapeExprError(f"cannot evaluate {ast.unparse(node)}")


def _substitute(tree: ast.expr, env: Mapping[str, Dim]) -> ast.expr:
    class Sub(ast.NodeTransformer):
        def visit_Name(self, node: ast.Name) -> ast.expr:
            if node.id in env:
                value = env[node.id]
                return ast.Constant(value) if isinstance(value, int) else parse(f"({value})")
            return node

    return Sub().visit(tree)


def evaluate_shape(shape: Sequence[Dim], env: Mapping[str, Dim]) -> Shape:
    return tuple(evaluate(d, env) for d in shape)


def unify(pattern: Sequence[Dim], actual: Sequence[Dim], env: dict[str, Dim]) -> str | None:
    """Match ``actual`` against ``pattern``, binding the pattern's plain symbols in ``env``.

    Returns a description of the first provable mismatch, or None. Symbolic dimensions that cannot be
    compared before run time are accepted here and checked when the shapes are known.
    """
    if len(pattern) != len(actual):
        return f"rank {len(actual)} does not match the expected rank {len(pattern)} ({format_shape(pattern)})"
    for axis, (want, got) in enumerate(zip(pattern, actual, strict=True)):
        if isinstance(want, str) and want.isidentifier() and want not in env:
            env[want] = got
            continue
        expected = evaluate(want, env)
        if isinstance(expected, int) and isinstance(got, int) and expected != got:
            return f"dimension {axis} is {got}, expected {expected} ({format_shape(pattern)})"
    return None


def num_elements(shape: Sequence[Dim]) -> Dim:
    if all(isinstance(d, int) for d in shape):
        return math.prod(shape)  # type: ignore[arg-type]
    return " * ".join(f"({d})" for d in shape) if shape else 1


def format_shape(shape: Sequence[Dim]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"
