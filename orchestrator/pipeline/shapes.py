"""Symbolic shapes: dimensions are integers or expressions over named symbols (``N``, ``H // 2``).

Validation propagates shapes symbolically (a symbol stays a symbol until run time binds it); at run time
and for memory planning the same expressions are evaluated with integers.
"""

from __future__ import annotations

import ast
import copy
import functools
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
    """Parse and check a dimension expression: integers, symbols, + - * // %, cdiv/min/max calls. The tree
    is cached and shared (run time evaluates the same expressions whenever input shapes change): callers
    must not modify it."""
    return _parse(expr)


@functools.lru_cache(maxsize=4096)
def _parse(expr: str) -> ast.expr:
    try:
        tree = ast.parse(expr.strip(), mode="eval").body
    except SyntaxError:
        raise ShapeExprError(f"'{expr}' is not a valid expression") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if not (isinstance(node.func, ast.Name) and node.func.id in _FUNCS) or node.keywords:
                raise ShapeExprError(f"'{expr}': only cdiv(a, b), min(...), max(...) may be called")
            _check_arity(expr, node)
        elif isinstance(node, ast.BinOp):
            if type(node.op) not in _BINOPS:
                raise ShapeExprError(f"'{expr}': only + - * // % are allowed")
        elif isinstance(node, ast.Constant):
            if not isinstance(node.value, int) or isinstance(node.value, bool):
                raise ShapeExprError(f"'{expr}': only integer constants are allowed")
        elif not isinstance(node, ast.Name | ast.Load | ast.operator):
            raise ShapeExprError(f"'{expr}': {type(node).__name__} is not allowed in a dimension expression")
    return tree


def _check_arity(expr: str, call: ast.Call) -> None:
    name, count = call.func.id, len(call.args)  # type: ignore[union-attr]
    if any(isinstance(a, ast.Starred) for a in call.args):
        raise ShapeExprError(f"'{expr}': {name}() takes plain arguments, not *args")
    if name == "cdiv" and count != 2:
        raise ShapeExprError(f"'{expr}': cdiv takes 2 arguments (cdiv(a, b) = a / b rounded up), got {count}")
    if name != "cdiv" and count < 2:
        raise ShapeExprError(f"'{expr}': {name} takes at least 2 arguments, got {count}")


Interval = tuple[float, float]
AT_LEAST_ONE: Interval = (1, math.inf)


def check_total(expr: str) -> None:
    """Refuse an expression that can fail for some dimensions: every divisor (of //, % and cdiv) must be at
    least 1 whatever positive values its symbols take."""
    for node in ast.walk(parse(expr)):
        divisor = None
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.FloorDiv | ast.Mod):
            divisor = node.right
        elif isinstance(node, ast.Call) and node.func.id == "cdiv":  # type: ignore[union-attr]
            divisor = node.args[1]
        if divisor is not None and value_range(divisor, {}, AT_LEAST_ONE)[0] < 1:  # type: ignore[index]
            raise ShapeExprError(f"'{expr}': the divisor '{ast.unparse(divisor)}' may be zero or negative "
                                 f"(a divisor must be at least 1 for every dimension value >= 1)")


def value_range(dim: Dim | ast.expr, bounds: Mapping[str, tuple[int, int]],
                default: Interval | None = None) -> Interval | None:
    """The smallest and largest value of a dimension when each symbol lies within ``bounds`` (symbols not
    in ``bounds`` take ``default``; None if that is None too). Interval arithmetic: sound, not tight."""
    if isinstance(dim, int):
        return (dim, dim)
    tree = parse(dim) if isinstance(dim, str) else dim
    try:
        return _range(tree, bounds, default)
    except KeyError:
        return None


def _range(node: ast.expr, bounds: Mapping[str, tuple[int, int]], default: Interval | None) -> Interval:
    if isinstance(node, ast.Constant):
        return (node.value, node.value)
    if isinstance(node, ast.Name):
        if node.id in bounds:
            return tuple(bounds[node.id])  # type: ignore[return-value]
        if default is None:
            raise KeyError(node.id)
        return default
    if isinstance(node, ast.Call):
        parts = [_range(a, bounds, default) for a in node.args]
        if node.func.id == "cdiv":  # type: ignore[union-attr]
            if parts[1][0] < 1:
                return (-math.inf, math.inf)  # a possibly-zero divisor: check_total refuses it
            neg = _floordiv((-parts[0][1], -parts[0][0]), parts[1])
            return (-neg[1], -neg[0])
        pick = min if node.func.id == "min" else max  # type: ignore[union-attr]
        return (pick(p[0] for p in parts), pick(p[1] for p in parts))
    assert isinstance(node, ast.BinOp)
    a, b = _range(node.left, bounds, default), _range(node.right, bounds, default)
    if isinstance(node.op, ast.Add):
        return (a[0] + b[0], a[1] + b[1])
    if isinstance(node.op, ast.Sub):
        return (a[0] - b[1], a[1] - b[0])
    if isinstance(node.op, ast.Mult):
        products = [_mul(x, y) for x in a for y in b]
        return (min(products), max(products))
    if b[0] < 1:
        return (-math.inf, math.inf)  # a possibly-zero divisor: check_total refuses it
    if isinstance(node.op, ast.FloorDiv):
        return _floordiv(a, b)
    return (0, b[1] - 1)  # % with a positive divisor


def _mul(x: float, y: float) -> float:
    return 0 if x == 0 or y == 0 else x * y


def _floordiv(a: Interval, b: Interval) -> Interval:
    """a // b for a divisor interval b >= 1."""
    def div(x: float, y: float) -> float:
        if math.isinf(y):
            return 0 if x >= 0 else -1
        return x if math.isinf(x) else x // y
    values = [div(x, y) for x in a for y in b]
    return (min(values), max(values))


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

    return Sub().visit(copy.deepcopy(tree))  # the parsed tree is shared (parse's cache)


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
