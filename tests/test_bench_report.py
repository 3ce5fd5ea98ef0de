"""bench/report.py: targets are judged from the result files (synthetic results here)."""

from __future__ import annotations

import importlib.util
import json

from conftest import ROOT


def timing(ms: float) -> dict:
    return {"median_ms": ms, "p5_ms": ms, "p95_ms": ms, "n": 3}


def modes(graph: float) -> dict:
    return {"eager": timing(graph * 1.2), "graph": timing(graph), "graph_device": timing(graph * 0.95)}


def test_report_marks_targets(tmp_path):
    spec = importlib.util.spec_from_file_location("report", ROOT / "bench" / "report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    memory = {"naive_bytes": 4 << 20, "arena_bytes": 2 << 20, "lower_bound_bytes": 2 << 20,
              "arena_over_lower_bound": 1.0, "tensorrt_scratch_bytes": 1 << 20, "arena_total_bytes": 3 << 20}
    runs = {"tensorrt": modes(1.0), "orchestrator_k1": modes(1.01), "orchestrator_k4": modes(1.06),
            "orchestrator_k4_hwc8": modes(1.03), "orchestrator_k16_hwc8": modes(1.20),
            "orchestrator_k16": {"error": "RuntimeError: out of time"}, "pipeline": {**modes(1.2), "memory": memory}}
    (tmp_path / "resnet50_fp16_b1.json").write_text(json.dumps(
        {"precision": "fp16", "batch": 1, "iters": 3, "label": "synthetic", "commit": "abc", "runs": runs}))
    earlier = {"tensorrt": modes(1.0), "orchestrator_k1": modes(1.10), "pipeline": {**modes(1.2), "memory": memory}}
    (tmp_path / "resnet50_fp16_b1_earlier.json").write_text(json.dumps(
        {"precision": "fp16", "batch": 1, "iters": 3, "label": "an earlier run", "runs": earlier}))
    (tmp_path / "torch.json").write_text(json.dumps({"runs": {"fp16_b1": {
        "network_eager": timing(3.0), "network_graph": timing(1.5), "pipeline_eager": timing(4.0),
        "pipeline_graph": timing(2.0), "peak_activation_bytes": 5 << 20}}}))
    report.main(tmp_path, tmp_path / "BENCHMARKS.md")
    text = (tmp_path / "BENCHMARKS.md").read_text()
    reference, variant = text.split("variant `earlier`")
    rows = {line.split("|")[1].strip(): line for line in reference.splitlines() if line.startswith("| ")}
    assert "+1.0%" in rows["orchestrator, k = 1"] and "≤ 2%: met" in rows["orchestrator, k = 1"]
    assert "≤ 5%: met" in rows["orchestrator, k = 4, hwc8 cuts"]
    assert "unpinned cuts" in rows["orchestrator, k = 4"]  # judged on its hwc8 sibling
    assert "≤ 15%: **not met**" in rows["orchestrator, k = 16, hwc8 cuts"]
    assert "failed: RuntimeError: out of time" in rows["orchestrator, k = 16"]
    assert "+10.0%" in variant and "not met" not in variant.split("## Host")[0]  # variants are not judged
    assert "3.3×" in rows["target: ≥ 3× faster than PyTorch eager"] and "| met |" in rows[
        "target: ≥ 3× faster than PyTorch eager"]
