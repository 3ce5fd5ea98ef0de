"""Mutation testing of the pure-Python core with mutmut, one module at a time.

    python3 tests/mutation.py orchestrator/layouts.py [MODULE ...] [--jobs 1] [--show-survivors]

For each module: copy the package, tests and example data to a scratch folder (the repository's
pyproject.toml and the shared environment stay untouched), write a ``[tool.mutmut]`` section that mutates
that module only and selects its fast tests (``TESTS``), run ``mutmut run``, and print the score:
killed / mutants, where a timeout counts as killed (the mutant hung) and a mutant no selected test reaches
("no tests") counts as surviving. Survivors are listed
with their diffs for tests/MUTATION.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPY = ["orchestrator", "tests", "pipelines", "snippets", "custom_kernels", "bench"]

# The tests that exercise each module (mutmut further runs, per mutant, only those that call the mutated
# function). Broad enough to kill, fast enough to run hundreds of times on a laptop.
CORE = ["tests/test_bad_pipelines.py", "tests/test_control_flow.py", "tests/test_properties.py",
        "tests/test_behaviour.py", "tests/test_validate_blocks.py"]
SNIP_TESTS = ["tests/test_snip_details.py", "tests/test_snip.py", "tests/test_snip_corpus.py", "tests/test_behaviour.py"]
TESTS = {
    "orchestrator/layouts.py": ["tests/test_layouts.py", "tests/test_properties.py", "tests/test_snip.py"],
    "orchestrator/kernels/signature.py": ["tests/test_behaviour.py", "tests/test_control_flow.py",
                                          "tests/test_examples.py", "tests/test_nvrtc.py"],
    "orchestrator/pipeline/shapes.py": ["tests/test_shapes_and_imports.py", "tests/test_shape_totality.py", *CORE],
    "orchestrator/pipeline/conditions.py": ["tests/test_shapes_and_imports.py", *CORE],
    "orchestrator/pipeline/validate.py": [*CORE, "tests/test_validate_kernels.py", "tests/test_validate_steps.py",
                                          "tests/test_validate_details.py", "tests/test_precision.py", "tests/test_surgery.py",
                                          "tests/test_duplicate_steps.py",
                                          "tests/test_examples.py", "tests/test_snip.py"],
    "orchestrator/planning/liveness.py": ["tests/test_planning.py", *CORE],
    "orchestrator/planning/memory.py": ["tests/test_planning.py", *CORE],
    "orchestrator/planning/sizes.py": ["tests/test_planning.py", *CORE, "tests/test_examples.py"],
    "orchestrator/executor.py": ["tests/test_executor_modes.py", "tests/test_inputs_and_cli.py", *CORE, "tests/test_examples.py",
                                 "tests/test_debug.py"],
    "orchestrator/inputs.py": ["tests/test_input_checks.py", "tests/test_inputs_and_cli.py", "tests/test_hostile_inputs.py",
                               *CORE, "tests/test_examples.py"],
    **{f"orchestrator/snip/{m}.py": SNIP_TESTS for m in ("graph", "cuts", "write", "verify", "core")},
}
# Too slow to run per mutant (seconds each, a large model written per run); other tests cover the same code.
# validate.py too: the pipeline each snip test writes is validated, so every validate mutant reached it (and the
# 230 MB model left per mutant in pytest's temp folders filled the disk).
DESELECT = {f"orchestrator/{m}.py": ["tests/test_snip.py::test_snip_resnet50_into_16_balanced_pieces"]
            for m in ("snip/graph", "snip/cuts", "snip/write", "snip/verify", "snip/core", "pipeline/validate")}
KILLED = {"killed", "timeout", "caught by type check", "segfault"}


def prepare(module: str, work: Path, timeout_multiplier: float | None = None) -> None:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for name in COPY:
        shutil.copytree(ROOT / name, work / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    tests = [t for t in TESTS.get(module, ["tests"]) if (ROOT / t).exists()]
    deselect = [arg for test in DESELECT.get(module, []) for arg in ("--deselect", test)]
    lines = ["[tool.pytest.ini_options]", "markers = ['gpu: needs an NVIDIA GPU']", "",
             "[tool.mutmut]", 'source_paths = ["orchestrator"]', f"only_mutate = {json.dumps([module])}",
             f"also_copy = {json.dumps(COPY[2:])}",
             f"pytest_add_cli_args_test_selection = {json.dumps(tests)}",
             f"pytest_add_cli_args = {json.dumps(['-p', 'no:cacheprovider', '-q', *deselect])}",
             "use_git_change_detection = false"]
    if timeout_multiplier is not None:  # mutmut's CPU limit per mutant: (tests' time + 1 s) x this x 2
        lines.append(f"timeout_multiplier = {timeout_multiplier}")
    (work / "pyproject.toml").write_text("\n".join(lines) + "\n")


def statuses(work: Path, module: str) -> dict[str, str]:
    from mutmut.stats import status_by_exit_code

    meta = json.loads((work / "mutants" / (module + ".meta")).read_text())
    return {name: status_by_exit_code[code] for name, code in meta["exit_code_by_key"].items()}


def report(module: str, work: Path, show: bool) -> float:
    found = statuses(work, module)
    counts = Counter(found.values())
    tested = len(found) - counts["skipped"]
    killed = sum(counts[s] for s in KILLED)
    score = 100.0 * killed / max(tested, 1)
    print(f"{module}: {len(found)} mutants, {killed}/{tested} killed ({score:.1f}%); " +
          ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    for name, status in sorted(found.items()):
        if status not in KILLED and show:
            diff = subprocess.run(["mutmut", "show", name], cwd=work, capture_output=True, text=True).stdout
            print(f"--- {status}: {name}\n{diff}", flush=True)
    return score


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="+", help="e.g. orchestrator/planning/memory.py")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run in parallel (default 1)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/orchestrator-mutation"),
                        help="scratch root (default /tmp/orchestrator-mutation); give each worktree its own")
    parser.add_argument("--show-survivors", action="store_true", help="print every survivor's diff")
    parser.add_argument("--report-only", action="store_true", help="report an earlier run in --work again")
    parser.add_argument("--timeout-multiplier", type=float, default=None,
                        help="mutmut's timeout_multiplier (default 15: a hanging mutant of a function whose tests "
                             "take 10 s holds a worker ~6 minutes; 2 still leaves 4x the tests' time)")
    args = parser.parse_args(argv)
    worst = 100.0
    for module in args.modules:
        work = args.work / module.replace("/", "_").removesuffix(".py")
        if args.report_only:
            worst = min(worst, report(module, work, args.show_survivors))
            continue
        prepare(module, work, args.timeout_multiplier)
        run = subprocess.run(["mutmut", "run", "--max-children", str(args.jobs)], cwd=work, capture_output=True,
                             text=True, env={**os.environ, "HYPOTHESIS_PROFILE": "mutation"})
        meta = work / "mutants" / (module + ".meta")
        if not meta.exists() or "not checked" in statuses(work, module).values():
            print(run.stdout[-3000:], run.stderr[-3000:], file=sys.stderr)
            return 2
        worst = min(worst, report(module, work, args.show_survivors))
    return 0 if worst >= 85.0 else 1


if __name__ == "__main__":
    sys.exit(main())
