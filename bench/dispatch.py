"""Dynamic dispatch costs: eager vs CUDA-graph modes.

1. A pipeline of S tiny steps (S = 32 and 64; the overhead.py pipeline): host time to issue one run
   (the executor's program; synchronised afterwards, untimed) and the latency of a whole ``run``, in
   eager mode, graph segments, and one whole graph, the two step counts timed alternately. Graph host
   time should not grow with S.
2. The cascade example: latency per run for each branch with the branch decided on the host (eager;
   graph segments) and on the device (one graph with a conditional node, no host round trip).

    python bench/dispatch.py --iters 2000 --out bench/results/dispatch.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MODES = {"eager": False, "graph_segments": "segments", "graph_conditional": True}
STEPS = (32, 64)


def stats(samples: list[float]) -> dict[str, float]:
    qs = statistics.quantiles(samples, n=20)
    return {"median_us": statistics.median(samples) * 1e6, "p5_us": qs[0] * 1e6, "p95_us": qs[-1] * 1e6}


def measure(orch, inputs: dict, iters: int) -> dict[str, dict[str, float]]:
    return measure_alternately([(orch, inputs)], iters)[0]


def measure_alternately(cases: list[tuple], iters: int) -> list[dict[str, dict[str, float]]]:
    """Each (orchestrator, inputs) timed in turn, iteration by iteration, so that drift in the host's
    speed during the run falls on all of them alike (the step-count comparison depends on it)."""
    for orch, inputs in cases:
        for _ in range(20):
            orch.run(inputs)
    host: list[list[float]] = [[] for _ in cases]
    latency: list[list[float]] = [[] for _ in cases]
    for _ in range(iters):
        for i, (orch, inputs) in enumerate(cases):
            backend, program = orch.backend, orch.executor._program
            backend.set_inputs(*_checked(orch, inputs))
            t0 = time.perf_counter()
            program()
            host[i].append(time.perf_counter() - t0)
            backend.synchronize()
            t0 = time.perf_counter()
            orch.run(inputs)
            latency[i].append(time.perf_counter() - t0)
    return [{"host_issue": stats(h), "run_latency": stats(t)} for h, t in zip(host, latency, strict=True)]


def _checked(orch, inputs):
    from orchestrator.inputs import check_inputs

    return check_inputs(orch.pipeline, inputs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE.parent))
    sys.path.insert(0, str(HERE))
    from overhead import write_pipeline

    from orchestrator import Orchestrator

    result: dict = {"steps": {}, "cascade": {}}
    x = np.random.default_rng(0).standard_normal((1, 64, 32, 32)).astype(np.float32)
    paths = {steps: write_pipeline(Path(tempfile.mkdtemp()), steps // 2) for steps in STEPS}
    for name, mode in MODES.items():  # the step counts of one mode timed alternately
        cases = [(Orchestrator.from_yaml(paths[steps], device="cuda", graphs=mode), {"x": x}) for steps in STEPS]
        for steps, timing in zip(STEPS, measure_alternately(cases, args.iters), strict=True):
            result["steps"].setdefault(steps, {})[name] = timing
        for orch, _ in cases:
            orch.close()
    image = np.random.default_rng(1).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)
    cascade = HERE.parent / "pipelines/cascade.yaml"
    for name, mode in MODES.items():
        orch = Orchestrator.from_yaml(cascade, device="cuda", graphs=mode)
        result["cascade"][name] = {branch: measure(orch, {"image": image, "threshold": t}, args.iters // 4)
                                   for branch, t in (("small_only", 0.0), ("escalate", 1.01))}
    result["device"] = orch.backend.context.info.name
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
