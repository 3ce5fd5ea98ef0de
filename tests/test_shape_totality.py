"""Shape rules are proven total before run time: a generated corpus of expressions, each either refused at
load time or evaluated without error for every symbol value it may take, within its computed range."""

from __future__ import annotations

import itertools
import random

import pytest

from orchestrator.pipeline import shapes

SYMBOLS = ("N", "H", "W")


def _expr(rng: random.Random, depth: int) -> str:
    if depth == 0 or rng.random() < 0.3:
        return rng.choice([*SYMBOLS, str(rng.randint(0, 9))])
    kind = rng.randrange(7)
    a, b = _expr(rng, depth - 1), _expr(rng, depth - 1)
    if kind < 5:
        return f"({a} {'+-*/%'[kind].replace('/', '//')} {b})"
    return f"{['cdiv', rng.choice(['min', 'max'])][kind - 5]}({a}, {b})"


CORPUS = sorted({_expr(random.Random(seed), 3) for seed in range(400)})


def test_corpus_has_both_kinds():
    verdicts = [_total(e) for e in CORPUS]
    assert len(CORPUS) > 250 and sum(verdicts) > 50 and len(CORPUS) - sum(verdicts) > 50


def _total(expr: str) -> bool:
    try:
        shapes.check_total(expr)
    except shapes.ShapeExprError:
        return False
    return True


@pytest.mark.parametrize("chunk", range(4))
def test_accepted_rules_evaluate_within_their_range(chunk: int):
    bounds = {"N": (1, 4), "H": (1, 5), "W": (2, 3)}
    for expr in CORPUS[chunk::4]:
        if not _total(expr):
            continue
        low, high = shapes.value_range(expr, bounds)
        for values in itertools.product(*(range(a, b + 1) for a, b in bounds.values())):
            value = shapes.evaluate(expr, dict(zip(bounds, values, strict=True)))  # never divides by zero
            assert low <= value <= high, (expr, values, value, (low, high))


def test_refused_rules_name_the_divisor_or_the_arity():
    for expr, message in [("N // 0", "the divisor '0'"), ("N % (H - W)", "the divisor 'H - W'"),
                          ("cdiv(N)", "cdiv takes 2 arguments"), ("cdiv(N, 2, 3)", "cdiv takes 2 arguments"),
                          ("min(N)", "min takes at least 2"), ("N // (H // 2)", "the divisor 'H // 2'"),
                          ("cdiv(N, H % 2)", "the divisor 'H % 2'"), ("max(*N)", "plain arguments"),
                          ("N // min(H, 0)", "the divisor 'min(H, 0)'"), ("N % (N - 1)", "the divisor 'N - 1'")]:
        with pytest.raises(shapes.ShapeExprError, match=message.replace("(", r"\(").replace(")", r"\)")):
            shapes.check_total(expr)
