"""Command line: ``orchestrator validate | run | schema | plan | build``.

Exit codes: 0 success, 1 user error (bad pipeline, inputs, kernel...), 2 internal error. Errors print on
one line each, without a traceback unless ``--debug``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .errors import ConfigError, OrchestratorError

EXIT_OK, EXIT_USER, EXIT_INTERNAL = 0, 1, 2


def _validate(args: argparse.Namespace) -> int:
    from .pipeline.load import load_pipeline

    status = EXIT_OK
    for path in args.pipelines:
        try:
            pipeline = load_pipeline(path)
        except ConfigError as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            status = EXIT_USER
            continue
        for warning in pipeline.warnings:
            print(warning, file=sys.stderr)
        if args.compile and not _compile_all(pipeline, args.compile):
            status = EXIT_USER
            continue
        steps = sum(1 for _ in _steps(pipeline))
        print(f"{path}: ok ({steps} steps, {len(pipeline.snippets)} snippets, {len(pipeline.kernels)} kernels)")
    return status


def _compile_all(pipeline, arch: str) -> bool:
    """Compile every kernel with NVRTC (no GPU needed); print each failure at its YAML location."""
    from .errors import CompileError
    from .kernels.nvrtc import compile_kernel

    ok = True
    for kernel in pipeline.kernels.values():
        try:
            compile_kernel(kernel, arch)
        except CompileError as exc:
            print(f"{kernel.location}: {exc}", file=sys.stderr)
            ok = False
    return ok


def _steps(pipeline):
    from .pipeline.ir import KernelCall, SnippetCall, walk

    return (n for n in walk(pipeline.body) if isinstance(n, SnippetCall | KernelCall))


def _load_inputs(path: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as exc:
        raise OrchestratorError(f"{path}: cannot read inputs ({exc}); expected an .npz file") from None


def _run(args: argparse.Namespace) -> int:
    from .api import Orchestrator

    inputs = _load_inputs(args.inputs)
    with Orchestrator.from_yaml(args.pipeline, device=args.device) as orch:
        outputs = orch.run(inputs)
        device = orch.device
    if args.output:
        np.savez(args.output, **outputs)
    print(f"{args.pipeline}: ran on {device}")
    for name, value in outputs.items():
        stats = f"min {value.min():.4g} max {value.max():.4g} mean {value.mean():.4g}" if value.size else "empty"
        print(f"  {name}: {value.dtype} {list(value.shape)}  {stats}")
    if args.output:
        print(f"outputs written to {args.output}")
    return EXIT_OK


def _plan(args: argparse.Namespace) -> int:
    from .pipeline.load import load_pipeline
    from .planning import plan_pipeline

    rows = {}
    for path in args.pipelines:
        plan = plan_pipeline(load_pipeline(path), at=args.at)
        rows[path] = plan.summary()
        if args.tensors:
            rows[path]["offsets"] = plan.offsets
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    print(f"{'pipeline':32} {'tensors':>7} {'naive':>12} {'arena':>12} {'lower bound':>12} {'arena/bound':>11}")
    for path, row in rows.items():
        print(f"{path:32} {row['tensors']:>7} {_mib(row['naive_bytes']):>12} {_mib(row['arena_bytes']):>12} "
              f"{_mib(row['lower_bound_bytes']):>12} {row['arena_over_lower_bound']:>11.3f}")
    print(f"(every dimension at its {args.at} bound; TensorRT scratch is planned separately, on the GPU)")
    return EXIT_OK


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def _build(args: argparse.Namespace) -> int:
    from .api import Orchestrator

    for path in args.pipelines:
        with Orchestrator.from_yaml(path, device="cuda", cache_dir=args.cache_dir) as orch:
            backend = orch.backend
            built = backend.engine_cache.builds
            print(f"{path}: {len(backend.snippets)} engines ({built} built, {len(backend.snippets) - built} "
                  f"from the cache), {len(backend.kernels)} kernels; cache: {backend.engine_cache.root}")
            summary = backend.memory_summary()
            print(f"  arena {_mib(summary['arena_total_bytes'])} = inputs+constants "
                  f"{_mib(summary['inputs_and_constants_bytes'])} + intermediates {_mib(summary['arena_bytes'])} "
                  f"+ TensorRT scratch {_mib(summary['tensorrt_scratch_bytes'])}")
    return EXIT_OK


def _compile(args: argparse.Namespace) -> int:
    from .kernels.nvrtc import compile_kernel
    from .pipeline.load import load_pipeline

    for path in args.pipelines:
        for kernel in load_pipeline(path).kernels.values():
            for arch in args.arch:
                compiled = compile_kernel(kernel, arch, args.cache_dir)
                print(f"{path}: kernel '{kernel.name}' -> {compiled.kind} for {compiled.arch}")
    return EXIT_OK


def _debug(args: argparse.Namespace) -> int:
    from .api import Orchestrator

    inputs = _load_inputs(args.inputs)
    with Orchestrator.from_yaml(args.pipeline, device=args.device, debug=True) as orch:
        report = orch.debug_run(inputs, dump_dir=args.dump, compare=args.compare, atol=args.atol, rtol=args.rtol,
                                steps=args.steps.split(",") if args.steps else None, sentinels=args.sentinels)
        print(f"{args.pipeline}: debug run on {orch.device}")
    print(report.table())
    if args.dump:
        print(f"tensors, manifest.json and summary.txt written to {args.dump}")
    return EXIT_USER if report.first_divergence is not None else EXIT_OK


def _profile(args: argparse.Namespace) -> int:
    from .profile import profile_pipeline

    result = profile_pipeline(args.pipeline, _load_inputs(args.inputs), iterations=args.iters, device=args.device)
    print(result.table())
    if args.json:
        Path(args.json).write_text(json.dumps(result.as_dict(), indent=2) + "\n")
        print(f"profile written to {args.json}")
    return EXIT_OK


def _snip(args: argparse.Namespace) -> int:
    from .snip import snip

    dims = {}
    for item in filter(None, (args.dims or "").split(",")):
        name, _, size = item.partition("=")
        if not size.isdigit():
            raise OrchestratorError(f"--dims: '{item}' is not NAME=SIZE")
        dims[name] = int(size)
    given = _load_inputs(args.inputs) if args.inputs else None
    result = snip(Path(args.model), Path(args.output), at=args.at, pieces=args.pieces, dims=dims,
                  precision=args.precision, boundary_format=args.boundary_format, inputs=given)
    print(f"{args.model}: {len(result.pieces)} snippets and {result.pipeline}")
    total = sum(result.piece_costs) or 1.0
    for i, cut in enumerate(result.cuts):
        named = [t for t in (args.at or "").replace("+", ",").split(",") if t in cut.tensors]
        carried = [t for t in cut.tensors if t not in named]
        also = f" (also carries {', '.join(carried)})" if named and carried else ""
        print(f"  cut {i + 1} after node {cut.position}{also}: {cut.describe()}")
    print("  piece compute shares: " + ", ".join(f"{c / total:.0%}" for c in result.piece_costs))
    print(f"verified on the CPU reference backend: outputs match the original model "
          f"(max abs error {result.max_abs_error:.3g})")
    return EXIT_OK


def _schema(args: argparse.Namespace) -> int:
    from .pipeline.schema import json_schema

    print(json.dumps(json_schema(), indent=2))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestrator", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check pipeline files and report every problem")
    p.add_argument("pipelines", nargs="+")
    p.add_argument("--compile", nargs="?", const="sm_90", metavar="ARCH",
                   help="also compile every kernel with NVRTC for ARCH (default sm_90; no GPU needed)")
    p.set_defaults(func=_validate)

    p = sub.add_parser("run", help="run a pipeline on inputs from an .npz file")
    p.add_argument("pipeline")
    p.add_argument("--inputs", required=True, help=".npz file with one array per input")
    p.add_argument("--output", help="write the outputs to this .npz file")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.set_defaults(func=_run)

    p = sub.add_parser("plan", help="print the device memory plan: naive, arena, lower bound")
    p.add_argument("pipelines", nargs="+")
    p.add_argument("--at", choices=["min", "opt", "max"], default="max", help="dimension bound to plan for")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--tensors", action="store_true", help="include every tensor's offset (with --json)")
    p.set_defaults(func=_plan)

    p = sub.add_parser("build", help="build (or load from the cache) every engine and kernel, on the GPU")
    p.add_argument("pipelines", nargs="+")
    p.add_argument("--cache-dir", help="engine/kernel cache (default: the user cache dir)")
    p.set_defaults(func=_build)

    p = sub.add_parser("compile", help="compile every kernel with NVRTC (no GPU needed)")
    p.add_argument("pipelines", nargs="+")
    p.add_argument("--arch", nargs="+", default=["sm_90", "sm_86"])
    p.add_argument("--cache-dir")
    p.set_defaults(func=_compile)

    p = sub.add_parser("debug", help="run step by step: dump, compare, and find the first diverging step")
    p.add_argument("pipeline")
    p.add_argument("--inputs", required=True)
    p.add_argument("--dump", help="write every tensor (.npy), manifest.json and summary.txt here")
    p.add_argument("--compare", help="'reference' (CPU backend), 'fp32' (every snippet at fp32), or a pipeline")
    p.add_argument("--steps", help="comma-separated step names to record (default: all)")
    p.add_argument("--atol", type=float, default=1e-4)
    p.add_argument("--rtol", type=float, default=1e-3)
    p.add_argument("--sentinels", action="store_true", help="stop at the first NaN/Inf or FP16 overflow")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.set_defaults(func=_debug)

    p = sub.add_parser("profile", help="per-step time, host time per run, and the memory plan")
    p.add_argument("pipeline")
    p.add_argument("--inputs", required=True)
    p.add_argument("--iters", type=int, default=100)
    p.add_argument("--json", help="also write the profile as JSON to this file")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.set_defaults(func=_profile)

    p = sub.add_parser("snip", help="cut an ONNX model into snippets and write a pipeline that chains them")
    p.add_argument("model")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--at", help="comma-separated tensors to cut after; every other live tensor is carried")
    group.add_argument("--pieces", type=int, help="cut into this many pieces of balanced cost, at the cheapest cuts")
    p.add_argument("-o", "--output", required=True, help="folder for the snippets and pipeline.yaml")
    p.add_argument("--dims", help="sizes of symbolic dimensions, e.g. N=1,H=224,W=224 (default 1)")
    p.add_argument("--inputs", help="an .npz of model inputs for the verification (required for shape inputs)")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32", help="of every snippet")
    p.add_argument("--boundary-format", choices=["linear", "hwc8"], default="linear",
                   help="layout of the 4-D tensors between snippets; hwc8 (needs fp16) avoids TensorRT "
                        "reformats at every cut")
    p.set_defaults(func=_snip)

    p = sub.add_parser("schema", help="print the JSON Schema of pipeline files")
    p.set_defaults(func=_schema)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(message)s")
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_USER
    except OrchestratorError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER
    except Exception as exc:  # our bug, not the user's
        if args.debug:
            traceback.print_exc()
        print(f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
