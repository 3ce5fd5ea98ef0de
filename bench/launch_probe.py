"""Host time of one graph-mode run, taken apart: where do the microseconds of ``program()`` go?

For the cascade (one graph with a conditional node, a host input staged each run) and the 32/64-step
chains: the whole ``program()``, the host-input staging alone, ``cuGraphLaunch`` of the same executable
alone, and cuda.core's ``Graph.launch`` (the launch path used before 73a9b20), all timed alternately
with the stream idle before each (and ``program()`` once more right after ``set_inputs``, as dispatch.py
times it).

    python bench/launch_probe.py --out bench/results/launch_probe.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iters", type=int, default=1000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from dispatch import _checked, stats
    from overhead import write_pipeline

    from orchestrator import Orchestrator
    from orchestrator.backends.cuda.driver import check, cu

    image = np.random.default_rng(1).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)
    x = np.random.default_rng(0).standard_normal((1, 64, 32, 32)).astype(np.float32)
    cases = {"cascade": (HERE.parent / "pipelines/cascade.yaml", {"image": image, "threshold": 0.0})}
    for steps in (32, 64):
        cases[f"chain_{steps}"] = (write_pipeline(Path(tempfile.mkdtemp()), steps // 2), {"x": x})
    result: dict = {}
    for name, (path, inputs) in cases.items():
        orch = Orchestrator.from_yaml(path, device="cuda", graphs=True)
        for _ in range(20):
            orch.run(inputs)
        backend, program = orch.backend, orch.executor._program
        compiler = backend._graph_compiler
        graph = compiler.graphs[-1]
        executable = cu.CUgraphExec(int(graph.handle))
        hosts = list(compiler.control.host_slot)
        parts = {
            "program": program,
            "stage_host_inputs": lambda c=compiler, h=hosts: c._stage_host_inputs(h),
            "cuGraphLaunch": lambda e=executable, s=backend.stream.handle: check(cu.cuGraphLaunch(e, s), "launch"),
            "core_graph_launch": lambda g=graph, s=compiler.core_stream: g.launch(s),
        }
        parts["program, input copy in flight"] = program  # as dispatch.py times it
        samples: dict[str, list[float]] = {k: [] for k in parts}
        for _ in range(args.iters):
            for part, call in parts.items():
                backend.set_inputs(*_checked(orch, inputs))
                if "in flight" not in part:
                    backend.synchronize()
                t0 = time.perf_counter()
                call()
                samples[part].append(time.perf_counter() - t0)
                backend.synchronize()
        result[name] = {part: stats(s) for part, s in samples.items()}
        result[name]["graphs_captured"] = len(compiler.graphs)
        print(name, {p: round(v["median_us"], 1) for p, v in result[name].items() if isinstance(v, dict)},
              flush=True)
        orch.close()
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
