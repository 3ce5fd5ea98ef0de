"""Memory plan figures for every example pipeline: naive bytes, planned arena, lower bound, ratio, and
(on a GPU) the shared TensorRT scratch and the whole arena.

    python bench/memory.py --out bench/results/memory.json [--gpu]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path)
    parser.add_argument("--gpu", action="store_true", help="include TensorRT scratch (builds engines)")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE.parent))
    from orchestrator import Orchestrator, load_pipeline
    from orchestrator.planning import plan_pipeline

    rows = {}
    for name in ("classify", "cascade", "matting"):
        path = HERE.parent / "pipelines" / f"{name}.yaml"
        if args.gpu:
            with Orchestrator.from_yaml(path, device="cuda") as orch:
                rows[name] = orch.backend.memory_summary()
        else:
            rows[name] = plan_pipeline(load_pipeline(path)).summary()
    print(json.dumps(rows, indent=2))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
