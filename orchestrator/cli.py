"""Command line: ``orchestrator COMMAND``, one subcommand per task (``orchestrator --help`` lists them all).

Exit codes: 0 success, 1 user error (bad pipeline, inputs, kernel...), 2 command-line usage error
(argparse's convention), 3 internal error (our bug, or the GPU/driver failing). Errors print on one line
each, without a traceback unless ``--debug``.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .errors import ConfigError, DeviceError, OrchestratorError, shorten

EXIT_OK, EXIT_USER, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


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
        except ConfigError as exc:  # the description does not match the CUDA function
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            ok = False
    return ok


def _steps(pipeline):
    from .pipeline.ir import KernelCall, SnippetCall, walk

    return (n for n in walk(pipeline.body) if isinstance(n, SnippetCall | KernelCall))


def _load_inputs(path: str, pipeline=None) -> dict[str, np.ndarray]:
    from .inputs import load_npz, max_elements

    return load_npz(path, max_elements(pipeline) if pipeline is not None else None)


def _inputs(args: argparse.Namespace, pipeline) -> dict[str, np.ndarray]:
    """``--inputs FILE.npz`` or ``--inputs random`` (seeded, within the dims' bounds), then ``--set``."""
    from .sample import host_settings, random_inputs

    settings = host_settings(pipeline, args.set)  # checked before any work
    if args.inputs == "random":
        seed = args.seed or 0
        inputs, dims = random_inputs(pipeline, seed)
        chosen = ", ".join(f"{k}={v}" for k, v in dims.items())
        print(f"random inputs (seed {seed}{'; ' + chosen if chosen else ''})")
    elif args.seed is not None:
        raise OrchestratorError("--seed applies to --inputs random only")
    else:
        inputs = _load_inputs(args.inputs, pipeline)
    inputs.update(settings)
    return inputs


def _run(args: argparse.Namespace) -> int:
    from .api import Orchestrator
    from .decisions import DecisionLog
    from .pipeline.load import load_pipeline

    _check_writable(args.output, "--output")
    pipeline = load_pipeline(args.pipeline)
    inputs, log = _inputs(args, pipeline), DecisionLog()
    with Orchestrator(pipeline, device=args.device, observer=log) as orch:
        outputs = orch.run(inputs)
        device = orch.device
    if args.output:
        _write_npz(Path(args.output), outputs)
    print(f"{args.pipeline}: ran on {device}")
    for name, value in outputs.items():
        stats = f"min {value.min():.4g} max {value.max():.4g} mean {value.mean():.4g}" if value.size else "empty"
        print(f"  {name}: {value.dtype} {list(value.shape)}  {stats}")
    for line in log.lines():
        print(f"  {line}")
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
            backend = orch.compiled  # the build products (engines, kernels, arena layout)
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
    from .pipeline.load import load_pipeline

    _check_folder(args.dump, "--dump")
    pipeline = load_pipeline(args.pipeline)
    inputs = _inputs(args, pipeline)
    with Orchestrator(pipeline, device=args.device, debug=True) as orch:
        _check_steps(orch.pipeline, args.steps)
        report = orch.debug_run(inputs, dump_dir=args.dump, compare=args.compare, atol=args.atol, rtol=args.rtol,
                                steps=args.steps.split(",") if args.steps else None, sentinels=args.sentinels)
        print(f"{args.pipeline}: debug run on {orch.device}")
    print(report.table())
    if args.dump:
        print(f"tensors, manifest.json and summary.txt written to {args.dump}")
        if report.heatmaps:
            print(f"heatmaps of {len(report.heatmaps)} image-like tensors: {Path(args.dump) / 'index.html'}")
    return EXIT_USER if report.first_divergence is not None else EXIT_OK


def _profile(args: argparse.Namespace) -> int:
    from .pipeline.load import load_pipeline
    from .profile import profile_pipeline

    _check_writable(args.json, "--json")
    inputs = _inputs(args, load_pipeline(args.pipeline))
    result = profile_pipeline(args.pipeline, inputs, iterations=args.iters, device=args.device)
    print(result.table())
    if args.json:
        Path(args.json).write_text(json.dumps(result.as_dict(), indent=2) + "\n")
        print(f"profile written to {args.json}")
    return EXIT_OK


def _check_writable(path: str | None, option: str) -> None:
    """An output file's folder must exist and be writable before any work is done."""
    if path is None:
        return
    folder = Path(path).parent
    if not folder.is_dir():
        raise OrchestratorError(f"{option} {path}: folder {folder} does not exist")
    if Path(path).is_dir():
        raise OrchestratorError(f"{option} {path} is a folder; give a file name")
    if not os.access(folder, os.W_OK):
        raise OrchestratorError(f"{option} {path}: folder {folder} is not writable")


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to exactly ``path`` (np.savez would add '.npz'), atomically when it is a regular file
    or absent, so a failed write leaves an earlier result whole; a device or FIFO (/dev/stdout) directly."""
    from .cache import write_file_atomic

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    if path.exists() and not path.is_file():
        try:
            with path.open("wb") as f:
                f.write(buffer.getvalue())
        except OSError as exc:
            raise OrchestratorError(f"--output {path}: cannot write: {exc.strerror or exc}") from None
    else:
        write_file_atomic(path, buffer.getvalue())


def _check_folder(path: str | None, option: str) -> None:
    """A folder to write into: it, or the nearest folder above it that exists, must be a writable folder."""
    if path is None:
        return
    existing = Path(path)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OrchestratorError(f"{option} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK):
        raise OrchestratorError(f"{option} {path}: folder {existing} is not writable")


def _check_steps(pipeline, steps: str | None) -> None:
    if not steps:
        return
    names = [n.name for n in _all_steps(pipeline)]
    unknown = [s for s in steps.split(",") if s not in names]
    if unknown:
        from .pipeline.validate import did_you_mean, listing

        raise OrchestratorError(f"--steps: no step named {', '.join(map(repr, unknown))} in {pipeline.file.name} "
                                f"(its steps: {listing(names)}){did_you_mean(unknown[0], names)}")


def _all_steps(pipeline):
    from .pipeline.ir import walk

    return walk(pipeline.body)


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


def _graph(args: argparse.Namespace) -> int:
    from . import diagram
    from .cache import write_file_atomic
    from .pipeline.load import load_pipeline

    drawing = diagram.build(load_pipeline(args.pipeline), at=args.at)
    folder = Path(args.output)
    if folder.exists() and not folder.is_dir():
        raise OrchestratorError(f"--output {folder}: not a folder")
    stem = folder / Path(args.pipeline).stem
    mmd, dot, svg = stem.with_suffix(".mmd"), stem.with_suffix(".dot"), stem.with_suffix(".svg")
    write_file_atomic(mmd, diagram.mermaid(drawing).encode())
    write_file_atomic(dot, diagram.dot(drawing).encode())
    print(f"{args.pipeline}: {len(drawing.boxes)} nodes; wrote {mmd} (Mermaid) and {dot} (Graphviz)")
    why_not = diagram.render_svg(dot, svg)
    print(f"  no SVG: {why_not}" if why_not else f"  and {svg}")
    if args.mermaid:
        print(diagram.mermaid(drawing), end="")
    return EXIT_OK


def _optimize(args: argparse.Namespace) -> int:
    from .surgery import optimize_file

    output = Path(args.output)
    report = optimize_file(Path(args.model), output, strip_edges=args.strip_edges)
    print(report.table())
    if report.edges is not None and report.edges.stripped:
        from .surgery.edge_kernels import advice

        print("\n".join(advice(report.edges, output.name, _kernels_dir(output))))
        print(f"{args.output} written; with the edges above replayed around it, its outputs match {args.model} "
              f"on the CPU (onnxruntime, random inputs)")
    else:
        print(f"{args.output} written; its outputs match {args.model} on the CPU (onnxruntime, random inputs)")
    return EXIT_OK


def _kernels_dir(output: Path) -> str:
    """custom_kernels/ of this checkout, relative to the folder of ``output`` (as a pipeline there names it)."""
    import os

    here = Path(__file__).resolve().parent.parent / "custom_kernels"
    if not here.is_dir():
        return "custom_kernels"
    return Path(os.path.relpath(here, output.resolve().parent)).as_posix()


def _advise(args: argparse.Namespace) -> int:
    from .advise import advise
    from .pipeline.load import load_pipeline

    inputs = _inputs(args, load_pipeline(args.pipeline)) if args.inputs else None
    print(advise(args.pipeline, inputs=inputs, device=args.device).text())
    return EXIT_OK


_GRAPHS = {"off": False, "segments": "segments", "whole": True}


def _serve(args: argparse.Namespace) -> int:
    from .serve import ServeOptions, serve

    if not args.debug:
        logging.getLogger("pytriton").setLevel(logging.WARNING)
    options = ServeOptions(instances=args.instances, max_batch=args.max_batch, device=args.device,
                           host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
                           metrics_port=args.metrics_port, model_name=args.model_name,
                           queue_delay_us=args.queue_delay_us, graphs=_GRAPHS[args.graphs])

    def ready(spec) -> None:
        batching = f"dynamic batching up to {spec.max_batch_size}" if spec.max_batch_size else "no batching"
        print(f"{args.pipeline}: serving model '{spec.name}' ({args.instances} instance(s), {batching}) on "
              f"http://{args.host}:{args.http_port}, grpc {args.host}:{args.grpc_port}, metrics "
              f"http://{args.host}:{args.metrics_port}/metrics; Ctrl+C stops", flush=True)

    serve(args.pipeline, options, on_ready=ready)
    print(f"{args.pipeline}: stopped", flush=True)
    return EXIT_OK


def _schema(args: argparse.Namespace) -> int:
    from .pipeline.schema import json_schema

    print(json.dumps(json_schema(), indent=2))
    return EXIT_OK


def _arch(text: str) -> str:
    if not re.fullmatch(r"(sm|compute)_\d{2,3}[a-z]?", text):
        raise argparse.ArgumentTypeError(f"'{text}' is not a GPU architecture (e.g. sm_90, sm_86)")
    return text


def _positive(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive integer")
    return int(text)


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line (exit 2, argparse's convention)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="orchestrator", epilog="'orchestrator COMMAND --help' shows a command's options.",
        description="Run GPU inference pipelines of TensorRT snippets and NVRTC kernels on one stream in one "
                    "planned memory arena (or on the CPU reference backend).")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")

    p = sub.add_parser("validate", help="check pipeline files and report every problem")
    p.add_argument("pipelines", nargs="+")
    p.add_argument("--compile", nargs="?", const="sm_90", metavar="ARCH", type=_arch,
                   help="also compile every kernel with NVRTC for ARCH (default sm_90; no GPU needed)")
    p.set_defaults(func=_validate)

    p = sub.add_parser("run", help="run a pipeline on inputs from an .npz file (or random inputs)")
    p.add_argument("pipeline")
    _input_arguments(p)
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
    p.add_argument("--arch", nargs="+", default=["sm_90", "sm_86"], type=_arch)
    p.add_argument("--cache-dir")
    p.set_defaults(func=_compile)

    p = sub.add_parser("debug", help="run step by step: dump, compare, and find the first diverging step")
    p.add_argument("pipeline")
    _input_arguments(p)
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
    _input_arguments(p)
    p.add_argument("--iters", type=_positive, default=100)
    p.add_argument("--json", help="also write the profile as JSON to this file")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.set_defaults(func=_profile)

    p = sub.add_parser("snip", help="cut an ONNX model into snippets and write a pipeline that chains them")
    p.add_argument("model")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--at", help="comma-separated tensors to cut after; every other live tensor is carried")
    group.add_argument("--pieces", type=_positive, help="cut into this many pieces of balanced cost, at the cheapest cuts")
    p.add_argument("-o", "--output", required=True, help="folder for the snippets and pipeline.yaml")
    p.add_argument("--dims", help="sizes of symbolic dimensions, e.g. N=1,H=224,W=224 (default 1)")
    p.add_argument("--inputs", help="an .npz of model inputs for the verification (required for shape inputs)")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32", help="of every snippet")
    p.add_argument("--boundary-format", choices=["linear", "hwc8"], default="linear",
                   help="layout of the 4-D tensors between snippets; hwc8 (needs fp16) avoids TensorRT "
                        "reformats at every cut")
    p.set_defaults(func=_snip)

    p = sub.add_parser("graph", help="draw a pipeline: Mermaid and Graphviz DOT (and SVG when 'dot' exists)")
    p.add_argument("pipeline")
    p.add_argument("-o", "--output", default=".", help="folder for NAME.mmd, NAME.dot and NAME.svg (default: .)")
    p.add_argument("--at", choices=["min", "opt", "max"], default="max", help="dimension bound for tensor bytes")
    p.add_argument("--mermaid", action="store_true", help="also print the Mermaid text")
    p.set_defaults(func=_graph)

    p = sub.add_parser("optimize", help="graph surgery on an ONNX model: fold constants, drop no-ops, CSE")
    p.add_argument("model")
    p.add_argument("-o", "--output", required=True, help="where to write the optimised model")
    p.add_argument("--strip-edges", action="store_true",
                   help="also remove input preprocessing (cast, transpose, per-channel scale/bias) and output "
                        "post-processing (softmax, argmax, top-k), print what was removed and the kernel steps "
                        "that replace it")
    p.set_defaults(func=_optimize)

    p = sub.add_parser("advise", help="tensor-core channel counts, hwc8 boundaries, fp16 candidates (and error)")
    p.add_argument("pipeline")
    _input_arguments(p, required=False)  # with inputs, also measure each snippet's fp16 vs fp32 error
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.set_defaults(func=_advise)

    p = sub.add_parser("serve", help="serve a pipeline on Triton Inference Server (PyTriton): HTTP, gRPC, metrics")
    p.add_argument("pipeline")
    p.add_argument("--instances", type=int, default=1, help="Triton model instances = orchestrator instances")
    p.add_argument("--max-batch", type=int, help="dynamic batching bound (default: the batch dimension's max)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--model-name", help="Triton model name (default: the pipeline's name)")
    p.add_argument("--queue-delay-us", type=int, default=0, help="dynamic batcher's max queue delay")
    p.add_argument("--graphs", choices=list(_GRAPHS), default="off", help="CUDA graph mode of every instance")
    p.set_defaults(func=_serve)

    p = sub.add_parser("schema", help="print the JSON Schema of pipeline files")
    p.set_defaults(func=_schema)
    return parser


def _input_arguments(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--inputs", required=required, metavar="FILE.npz|random",
                   help="an .npz file with one array per input, or 'random': seeded random inputs with every "
                        "dimension within its bounds")
    p.add_argument("--seed", type=int, help="seed of --inputs random (default 0)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="set a host scalar input (repeatable; overrides --inputs)")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse printed the usage line (exit 2) or the help (exit 0)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(message)s")
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_USER
    except DeviceError as exc:  # the GPU or its driver failed: not the user's input
        if args.debug:
            traceback.print_exc()
        print(f"device error: {shorten(str(exc))}", file=sys.stderr)
        return EXIT_INTERNAL
    except OrchestratorError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {shorten(str(exc))}", file=sys.stderr)
        return EXIT_USER
    except Exception as exc:  # our bug, not the user's
        if args.debug:
            traceback.print_exc()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"internal error: {type(exc).__name__}: {shorten(first)} (run with --debug for the traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
