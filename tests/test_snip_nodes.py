"""The ONNX backend node tests that onnxruntime passes pass through `snip --pieces 1` and `run --device cpu`:
a representative subset by default (shape/parameter inputs, rank-0 inputs, control flow, the layers of the
corpus), all of them under `-m slow`."""

from __future__ import annotations

import pytest
import snip_node_cases as nodes

# Shape and parameter inputs, scalars, control flow and the exporters' common layers.
SUBSET = ["reshape", "slice", "expand", "tile", "constantofshape", "topk", "bitcast", "if_", "loop", "scan"]


def _check_all(cases, tmp_path) -> int:
    checked = 0
    for case in cases:
        if nodes.ineligible(case) is None:
            nodes.check(case, tmp_path / case.name)
            checked += 1
    return checked


def test_node_subset(tmp_path):
    sampled = [c for m in ("resize", "affinegrid", "gemm") for c in nodes.node_cases([m])[::4]]
    cases = nodes.node_cases(SUBSET) + sampled
    checked = _check_all(cases, tmp_path)
    assert len(cases) > 45 and checked > 0.8 * len(cases), (checked, len(cases))


@pytest.mark.slow
def test_every_node_test(tmp_path):
    cases = nodes.node_cases()
    checked = _check_all(cases, tmp_path)
    assert checked > 1200, checked  # 1254 of 1884 with onnx 1.23 / onnxruntime 1.23
