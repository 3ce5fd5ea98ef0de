"""bench/instances.py's harness (the GPU numbers come from the device): the client-thread load and the
path its raw TensorRT reference enqueues, on the CPU."""

from __future__ import annotations

import sys

from conftest import ROOT
from hammer import make_inputs, pipeline

from orchestrator import Orchestrator, load_pipeline


def test_load_counts_every_call_of_every_client(workdir, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "snippets"))
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    monkeypatch.delitem(sys.modules, "instances", raising=False)
    import instances
    import numpy as np

    calls = []
    feeds = [make_inputs(np.random.default_rng(k)) for k in range(3)]
    with Orchestrator.from_yaml(pipeline(workdir), device="cpu", instances=2) as orch:
        stats = instances.load(lambda feed: calls.append(orch.run(feed)), feeds, 0.2, clients=4, warmup=0.05)
    assert 0 < stats["runs"] <= len(calls) and stats["p50_ms"] <= stats["p99_ms"]
    assert stats["throughput_per_s"] > 0
    steps = instances.path_steps(load_pipeline(ROOT / "pipelines/cascade.yaml"))
    assert [s.snippet for s in steps] == ["small", "large_a", "large_b", "large_c"]


def test_run_phases_time_each_phase_of_a_run(workdir, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "snippets"))
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    monkeypatch.delitem(sys.modules, "instances", raising=False)
    import instances
    import numpy as np

    feeds = [make_inputs(np.random.default_rng(k)) for k in range(3)]
    with Orchestrator.from_yaml(pipeline(workdir), device="cpu") as orch:
        phases = instances.run_phases(orch, feeds, iters=5, warmup=1)
    assert list(phases) == ["check_inputs", "set_inputs", "program", "outputs", "run"]
    assert all(v > 0 for v in phases.values())
    assert phases["run"] >= phases["check_inputs"]
