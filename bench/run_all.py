"""Run every benchmark, write its JSON into one folder, then BENCHMARKS.md and the plot.

On a GPU machine (the rig's Python for the orchestrator; a Python with torch for the PyTorch baseline):
    python bench/run_all.py --out bench/results --torch-python /opt/torch/.venv/bin/python3
    python bench/run_all.py --dry-run          # print the commands only (no GPU needed)

Each benchmark runs in its own process, so one that fails (or a second stream opened by one of them)
does not affect the others; a failure is reported and the rest still run. Expect about 40 minutes on an
H100 with an empty engine cache, most of it TensorRT building the k = 16 snippets of each configuration.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIGS = ("fp16:1", "fp16:32", "fp32:1", "fp32:32")


def commands(out: Path, configs: list[str], torch_python: str | None) -> list[tuple[str, list[str], dict | None]]:
    """(name, argv, environment or None for ours) of every benchmark, in the order they run."""
    py = sys.executable
    runs: list[tuple[str, list[str], dict | None]] = [
        (f"overhead_{steps}", [py, str(HERE / "overhead.py"), "--steps", str(steps), "--iters", "3000",
                               "--out", str(out / f"overhead_{steps}.json")], None)
        for steps in (32, 64)]
    runs.append(("memory", [py, str(HERE / "memory.py"), "--gpu", "--out", str(out / "memory_gpu.json")], None))
    runs.append(("dispatch", [py, str(HERE / "dispatch.py"), "--iters", "1000", "--out", str(out / "dispatch.json")],
                 None))
    for config in configs:
        precision, batch = config.split(":")
        iters = "300" if batch == "1" else "100"
        runs.append((f"resnet50_{precision}_b{batch}",
                     [py, str(HERE / "resnet50.py"), "--precision", precision, "--batch", batch, "--pieces", "1", "4",
                      "16", "--iters", iters, "--out", str(out / f"resnet50_{precision}_b{batch}.json")], None))
    runs.append(("gap", [py, str(HERE / "gap.py"), "--out", str(out / "gap_fp16_b1.json")], None))
    runs.append(("gap_probe", [py, str(HERE / "gap.py"), "--sequence", "--out", str(out / "gap_probe_fp16_b1.json")],
                 None))
    if torch_python:
        # torch's own environment: the rig's PYTHONPATH would hand it another Python's numpy
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        weights = Path(tempfile.gettempdir()) / "orchestrator-bench" / "resnet50.npz"  # resnet50.py's cache
        runs.append(("torch", [torch_python, str(HERE / "torch_baseline.py"), str(weights),
                               "--out", str(out / "torch.json")], env))
    return runs


def selected(runs: list[tuple[str, list[str], dict | None]], only: list[str] | None) -> list:
    """The runs named in ``only`` (all when None); an unknown name is an error, not silently nothing."""
    if only is None:
        return runs
    unknown = sorted(set(only) - {name for name, _, _ in runs})
    if unknown:
        sys.exit(f"run_all.py: --only: no benchmark named {', '.join(unknown)} "
                 f"(known: {', '.join(name for name, _, _ in runs)})")
    return [run for run in runs if run[0] in only]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), help="precision:batch, e.g. fp16:1")
    parser.add_argument("--torch-python", help="a Python with torch for the PyTorch baseline (skipped if not given)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run just these benchmarks (names as --dry-run "
                        "prints them), e.g. to split the whole set over several sessions; the report covers all")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    for name, argv, env in selected(commands(args.out, args.configs, args.torch_python), args.only):
        print(f"== {name}: {' '.join(argv)}", flush=True)
        if not args.dry_run and subprocess.run(argv, env=env).returncode != 0:
            failed.append(name)
    if not args.dry_run:
        from report import main as report

        report(args.out, HERE.parent / "BENCHMARKS.md")
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
