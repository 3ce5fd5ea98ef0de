"""The switch and while examples against independent computations, and what the control flow did as
run, debug and profile report it: branches taken, loop counts, loops stopped by max_iterations."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ROOT
from test_examples import images, normalise, run_full, softmax

from orchestrator import Orchestrator
from orchestrator.cli import build_parser, main
from orchestrator.decisions import DecisionLog, loop_label

MODES, SHARPEN = ROOT / "pipelines/modes.yaml", ROOT / "pipelines/sharpen.yaml"


@pytest.mark.parametrize(("mode", "label"), [(0, "case 0"), (1, "case 1"), (2, "default"), (-5, "default")])
def test_modes_runs_the_chosen_model(mode, label):
    log = DecisionLog()
    image = images(2, seed=11)
    out = Orchestrator(MODES, device="cpu", observer=log).run({"image": image, "mode": mode})
    assert log.lines() == [f"switch 'pick_model': took {label}"]
    logits = run_full("classify" if mode == 1 else "cascade_small", normalise(image))
    want = softmax(logits * (2 if label == "default" else 1))
    np.testing.assert_allclose(out["probs"], want, rtol=1e-4, atol=1e-6)


def sharpen_by_hand(image: np.ndarray, target: float, factor: float, limit: int = 6):
    logits = run_full("cascade_small", normalise(image))
    confidence, iterations = softmax(logits).max(-1).min(), 0
    while iterations < limit and confidence < target:
        logits = logits * np.float32(factor)
        confidence, iterations = softmax(logits).max(-1).min(), iterations + 1
    return softmax(logits), confidence, iterations


@pytest.mark.parametrize(("target", "factor"), [(0.5, 2.0), (0.5, 1.5), (0.0, 2.0), (0.99, 1.2), (0.3, 3.0)])
def test_sharpen_loops_like_the_same_loop_in_numpy(target, factor):
    log = DecisionLog()
    image = images(2, seed=4)
    out = Orchestrator(SHARPEN, device="cpu", observer=log).run({"image": image, "target": target,
                                                                  "factor": factor})
    probs, confidence, iterations = sharpen_by_hand(image, target, factor)
    np.testing.assert_allclose(out["probs"], probs, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(out["confidence"], [confidence], rtol=1e-4)
    assert log.lines() == [f"while 'sharpen': {loop_label(iterations, 6)}"]
    assert log.max_hits() == (["sharpen"] if iterations == 6 else [])


def test_loop_labels():
    assert [loop_label(n, 3) for n in (0, 1, 2, 3)] == [
        "0 iterations", "1 iteration", "2 iterations", "3 iterations (max_iterations reached)"]


@pytest.mark.parametrize("name", ["modes", "sharpen"])
def test_committed_inputs_run_from_the_command_line(name, capsys):
    assert main(["run", str(ROOT / f"pipelines/{name}.yaml"), "--inputs",
                 str(ROOT / f"pipelines/inputs/{name}.npz"), "--device", "cpu"]) == 0
    want = {"modes": "switch 'pick_model': took case 1", "sharpen": "while 'sharpen': 3 iterations\n"}[name]
    assert want in capsys.readouterr().out


def test_run_says_when_a_loop_stops_at_max_iterations(capsys):
    args = ["run", str(SHARPEN), "--inputs", str(ROOT / "pipelines/inputs/sharpen.npz"), "--device", "cpu"]
    assert main([*args, "--set", "target=0.999", "--set", "factor=1.1"]) == 0
    assert "  while 'sharpen': 6 iterations (max_iterations reached)\n" in capsys.readouterr().out
    assert main([*args, "--set", "target=0"]) == 0
    assert "  while 'sharpen': 0 iterations\n" in capsys.readouterr().out


def table_rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines()[2:] if line.strip()]


def test_debug_table_shows_branches_and_loops_where_they_happen(capsys):
    args = ["debug", str(SHARPEN), "--inputs", str(ROOT / "pipelines/inputs/sharpen.npz"), "--device", "cpu"]
    assert main(args) == 0
    rows = [r[:2] if r[0].isdigit() else r for r in table_rows(capsys.readouterr().out)]
    assert rows == [["0", "preprocess"], ["1", "small"], ["2", "max_prob"],
                    *[[str(i), n] for k in range(3) for i, n in ((3 + 2 * k, "scale"), (4 + 2 * k, "new_confidence"))],
                    ["sharpen", "while", "->", "3", "iterations"], ["9", "softmax"]]
    assert main(["debug", str(ROOT / "pipelines/cascade.yaml"), "--inputs",
                 str(ROOT / "pipelines/inputs/cascade.npz"), "--set", "threshold=0", "--device", "cpu"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert rows[3] == ["escalate", "if", "->", "else"] and rows[4][1] == "small_softmax"


def test_profile_counts_every_call_of_a_looped_step(monkeypatch):
    """With a clock that advances 1 s per reading, each call of a step takes exactly 1 s: a step called
    three times per run must show 3 s per run, and the shares must say so."""
    from orchestrator.backends import base
    from orchestrator.profile import profile_pipeline

    with np.load(ROOT / "pipelines/inputs/sharpen.npz") as data:
        inputs = {k: data[k] for k in data.files}
    ticks = iter(range(10**6))
    monkeypatch.setattr(base.time, "perf_counter", lambda: float(next(ticks)))
    result = profile_pipeline(str(SHARPEN), inputs, iterations=4, warmup=1, device="cpu")
    by_name = {s.name: s for s in result.steps}
    assert {n: by_name[n].calls_per_run for n in ("small", "scale", "new_confidence")} == {
        "small": 1, "scale": 3, "new_confidence": 3}
    assert by_name["scale"].median_ms == 3000 and by_name["small"].median_ms == 1000
    assert by_name["scale"].share == pytest.approx(3 / 10) and by_name["scale"].runs == 4
    assert result.decisions == ["while 'sharpen': 3..3 iterations (median 3) over 4 executions"]
    assert "while 'sharpen': 3..3 iterations" in result.table()


def test_profile_reports_max_iteration_hits_over_runs(capsys):
    assert main(["profile", str(SHARPEN), "--inputs", "random", "--set", "target=0.999", "--set", "factor=1.01",
                 "--iters", "3", "--device", "cpu"]) == 0
    assert "stopped at max_iterations (6) 3 of 3 times" in capsys.readouterr().out


def test_help_lists_every_command(capsys):
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    readme = (ROOT / "README.md").read_text()
    for name, sub in commands.items():
        assert f"\n    {name} " in out
        assert f"`orchestrator {name}" in readme, f"README does not document '{name}'"
        for option in ("--set", "--seed"):  # pipeline inputs (snip's --inputs feeds a model)
            assert (option in sub.format_help()) == (name in ("run", "debug", "profile", "advise"))
