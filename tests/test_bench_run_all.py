"""bench/run_all.py: one command for every benchmark (the commands it would run, checked without a GPU)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from conftest import ROOT


def load():
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "bench" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_benchmark_writes_into_the_output_folder(tmp_path):
    runs = load().commands(tmp_path, ["fp16:1", "fp32:32"], "/opt/torch/bin/python3")
    names = [name for name, _, _ in runs]
    assert names == ["overhead_32", "overhead_64", "memory", "dispatch", "resnet50_fp16_b1", "resnet50_fp32_b32",
                     "gap", "gap_probe", "torch"]
    for _, argv, _ in runs:
        assert (ROOT / "bench").as_posix() in argv[1] and argv[argv.index("--out") + 1].startswith(str(tmp_path))
    resnet = dict(zip(runs[5][1], runs[5][1][1:], strict=False))
    assert resnet["--precision"] == "fp32" and resnet["--batch"] == "32" and resnet["--iters"] == "100"
    name, argv, env = runs[-1]
    assert argv[0] == "/opt/torch/bin/python3" and "PYTHONPATH" not in env


def test_without_a_torch_python_the_baseline_is_left_out(tmp_path):
    assert "torch" not in [name for name, _, _ in load().commands(tmp_path, ["fp16:1"], None)]


def test_dry_run_prints_the_commands(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "run_all.py"), "--dry-run", "--out", str(tmp_path),
                           "--configs", "fp16:1"], capture_output=True, text=True, check=True)
    assert done.stdout.count("== ") == 7 and "resnet50.py --precision fp16 --batch 1" in done.stdout


def test_only_runs_the_named_benchmarks_and_refuses_unknown_names(tmp_path):
    module = load()
    runs = module.commands(tmp_path, ["fp16:1"], "/opt/torch/bin/python3")
    assert [name for name, _, _ in module.selected(runs, ["torch", "gap"])] == ["gap", "torch"]
    assert module.selected(runs, None) == runs
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "run_all.py"), "--dry-run", "--out", str(tmp_path),
                           "--configs", "fp16:1", "--only", "gap", "resnet50_fp32_b1"], capture_output=True, text=True)
    assert done.returncode != 0 and "no benchmark named resnet50_fp32_b1" in done.stderr
