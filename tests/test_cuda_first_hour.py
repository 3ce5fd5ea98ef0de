"""GPU tests of the first-hour features: the switch and while examples in every execution mode against
the CPU reference (with the same decisions and loop counts), a kernel outside the repository that
includes the packaged orchestrator.cuh through a relative -I, and random inputs from the command line.
Marked ``gpu``; skipped when no GPU, driver or TensorRT is present (and only then)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ROOT

from orchestrator import Orchestrator
from orchestrator.decisions import DecisionLog

pytestmark = pytest.mark.gpu


MODES = [False, "segments", True]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    import os

    return os.environ.get("ORCHESTRATOR_CACHE") or tmp_path_factory.mktemp("orchestrator-cache")


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 224, 224, 3), dtype=np.uint8)


@pytest.mark.parametrize("graphs", MODES, ids=["eager", "segments", "conditional"])
def test_switch_and_while_examples_match_the_reference(cache_dir, graphs):
    cases = {"modes": [{"image": images(2, 1), "mode": m} for m in (0, 1, 7, 1, 0)],
             "sharpen": [{"image": images(1, 4), "target": t, "factor": f}
                         for t, f in ((0.5, 2.0), (0.0, 2.0), (0.999, 1.1), (0.5, 1.5), (0.5, 2.0))]}
    for name, runs in cases.items():
        gpu_log, cpu_log = DecisionLog(), DecisionLog()
        path = ROOT / f"pipelines/{name}.yaml"
        gpu = Orchestrator(path, device="cuda", cache_dir=cache_dir, graphs=graphs, observer=gpu_log)
        cpu = Orchestrator(path, device="cpu", observer=cpu_log)
        for x in runs:
            got, want = gpu.run(x), cpu.run(x)
            for output in want:
                assert rel_l2(got[output], want[output]) <= 1e-3, (name, x.get("mode"), output)
        assert gpu_log.taken == cpu_log.taken  # same cases, same loop counts, same max_iterations hits
        gpu.close()
    assert cpu_log.max_hits() == ["sharpen"]  # the (0.999, 1.1) run stops at max_iterations


def test_kernel_outside_the_repository_with_relative_include_runs(cache_dir, tmp_path, monkeypatch):
    from test_includes import make

    pipeline, _, elsewhere = make(tmp_path, "[-Iinc]")
    monkeypatch.chdir(elsewhere)
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    got = Orchestrator(pipeline, device="cuda", cache_dir=cache_dir).run({"x": x})["z"]
    want = Orchestrator(pipeline, device="cpu").run({"x": x})["z"]
    np.testing.assert_allclose(got, want, rtol=1e-3)  # the reference does not round through half_t
    np.testing.assert_allclose(got, x.astype(np.float16).astype(np.float32) * 2, rtol=1e-6)  # the kernel does


def test_cli_random_inputs_and_profile_on_the_gpu(capsys):
    from orchestrator.cli import main
    from orchestrator.profile import profile_pipeline

    assert main(["run", str(ROOT / "pipelines/modes.yaml"), "--inputs", "random", "--device", "cuda"]) == 0
    out = capsys.readouterr().out
    assert "ran on cuda" in out and "switch 'pick_model': took" in out
    with np.load(ROOT / "pipelines/inputs/sharpen.npz") as data:
        given = {k: data[k] for k in data.files}
    result = profile_pipeline(str(ROOT / "pipelines/sharpen.yaml"), given, iterations=10, device="cuda")
    steps = {s.name: s for s in result.steps}
    assert steps["scale"].calls_per_run == 3 and steps["small"].calls_per_run == 1
    assert all(s.median_ms > 0 for s in result.steps) and abs(sum(s.share for s in result.steps) - 1) < 1e-6
    assert result.decisions == ["while 'sharpen': 3..3 iterations (median 3) over 10 executions"]
