"""The one place that knows TensorRT's version differences (8.6, 10.x, 11.x): build, deserialise, and
execution contexts whose scratch memory we provide (one region shared by every engine).

Precision takes one of two paths. ``flags``: the fp32 network with the FP16/BF16 builder flag (8.6 and
10.x; TensorRT picks per layer). ``converted``: the snippet's ONNX converted to fp16/bf16 beforehand
(``orchestrator.precision``) and built as a strongly typed network (10+), or with the FP16 flag on 8.6,
which has no strong typing. TensorRT 11 removed the precision flags, so there only ``converted`` exists.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import cache
from typing import Any

from ...errors import CompileError
from ...lazy import lazy_import

trt = lazy_import("tensorrt")
log = logging.getLogger("orchestrator")

# Every TensorRT name this module uses, by the versions whose code path uses it. tests/test_trt_api.py
# checks each against the real Python bindings of 8.6.1, 10.13 and 11.4, and that this module uses no
# TensorRT name that is not listed here.
API: dict[str, tuple[str, ...]] = {
    "all": (
        "Builder", "Builder.create_network", "Builder.create_builder_config",
        "Builder.create_optimization_profile", "Builder.build_serialized_network",
        "OnnxParser", "OnnxParser.parse", "OnnxParser.num_errors", "OnnxParser.get_error", "ParserError.desc",
        "Runtime", "Runtime.deserialize_cuda_engine",
        "ILogger", "ILogger.ERROR", "ILogger.INTERNAL_ERROR", "ILogger.WARNING",
        "IBuilderConfig.set_memory_pool_limit", "IBuilderConfig.set_flag", "IBuilderConfig.clear_flag",
        "IBuilderConfig.add_optimization_profile", "IBuilderConfig.create_timing_cache",
        "IBuilderConfig.set_timing_cache", "IBuilderConfig.get_timing_cache",
        "IBuilderConfig.builder_optimization_level",
        "ITimingCache.serialize", "ITimingCache.combine", "MemoryPoolType.WORKSPACE", "BuilderFlag.TF32",
        "IOptimizationProfile.set_shape",
        "INetworkDefinition.num_inputs", "INetworkDefinition.num_outputs", "INetworkDefinition.get_input",
        "INetworkDefinition.get_output",
        "ITensor.name", "ITensor.dtype", "ITensor.allowed_formats", "TensorFormat.HWC8", "TensorFormat.LINEAR",
        "float16",
        "ICudaEngine.get_tensor_format", "ICudaEngine.num_io_tensors", "ICudaEngine.get_tensor_name",
        "ICudaEngine.get_tensor_mode", "ICudaEngine.num_optimization_profiles", "TensorIOMode.INPUT",
        "IExecutionContext.set_optimization_profile_async", "IExecutionContext.set_tensor_address",
        "IExecutionContext.set_input_shape", "IExecutionContext.get_tensor_shape",
        "IExecutionContext.execute_async_v3",
    ),
    "8": (
        "NetworkDefinitionCreationFlag.EXPLICIT_BATCH", "BuilderFlag.FP16", "ICudaEngine.device_memory_size",
        "ICudaEngine.create_execution_context_without_device_memory", "IExecutionContext.device_memory",
    ),
    "10+": (
        "NetworkDefinitionCreationFlag.STRONGLY_TYPED", "IProgressMonitor", "IBuilderConfig.progress_monitor",
        "ICudaEngine.device_memory_size_v2", "ICudaEngine.create_execution_context",
        "ExecutionContextAllocationStrategy.USER_MANAGED", "IExecutionContext.set_device_memory",
    ),
    "10": ("BuilderFlag.FP16", "BuilderFlag.BF16"),
}
KNOWN = "8.6, 10.x, 11.x"


def sections(major: int) -> tuple[str, ...]:
    """The parts of ``API`` that TensorRT ``major`` uses."""
    if major < 10:
        return ("all", "8")
    return ("all", "10+", "10") if major == 10 else ("all", "10+")


def version() -> str:
    return str(trt.__version__)


@cache
def major() -> int:
    """TensorRT's major version as the code paths see it; an unknown one is run as the nearest known."""
    number = int(version().split(".")[0])
    if number in (8, 10, 11):
        return number
    nearest = 11 if number > 11 else 10 if number == 9 else 8
    log.warning("orchestrator: TensorRT %s is not a version this orchestrator knows (%s); using its "
                "TensorRT %d code path", version(), KNOWN, nearest)
    return nearest


def is_8() -> bool:
    return major() < 10


# ---- errors: per thread, so that one engine's errors never appear in another's message ----------------
_errors = threading.local()


def take_errors() -> list[str]:
    """The TensorRT errors logged on this thread since the last call (TensorRT logs on the calling thread)."""
    errors = getattr(_errors, "messages", [])
    _errors.messages = []
    return errors


@cache
def logger() -> Any:
    """A TensorRT logger that routes messages to logging and keeps errors per thread for our exceptions."""

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.INTERNAL_ERROR, trt.ILogger.ERROR):
                messages = getattr(_errors, "messages", None)
                if messages is None:
                    messages = _errors.messages = []
                messages[:] = [*messages[-31:], msg]  # bounded: a thread that never asks keeps 32
                log.debug("TensorRT error: %s", msg)
            elif severity == trt.ILogger.WARNING:
                log.debug("TensorRT: %s", msg)

    return Logger()


@cache
def runtime() -> Any:
    return trt.Runtime(logger())


# ---- precision --------------------------------------------------------------------------------------
def precision_path(name: str, precision: str, requested: str, keep_fp32: bool) -> str:
    """``fp32``, ``flags`` or ``converted`` for a snippet (see the module docstring). ``requested`` is the
    snippet's ``precision_path``: ``auto`` is ``converted`` on TensorRT 11+ or when ops must stay fp32,
    else ``flags``."""
    if precision == "fp32":
        return "fp32"
    path = requested if requested != "auto" else "converted" if keep_fp32 or major() >= 11 else "flags"
    if path == "flags" and major() >= 11:
        raise CompileError(f"snippet '{name}': precision_path: flags needs TensorRT <= 10 (TensorRT "
                           f"{version()} has no precision flags); use 'auto' or 'converted'")
    if precision == "bf16" and major() < 10:
        raise CompileError(f"snippet '{name}': bf16 needs TensorRT >= 10 (this is {version()})")
    return path


# ---- build ------------------------------------------------------------------------------------------
def _progress_monitor(name: str):
    """Print build phases (TensorRT >= 10 has IProgressMonitor; 8.6 gets start/finish lines only)."""
    if is_8():
        return None

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name, parent_phase, num_steps):
            if parent_phase is None:
                log.info("  [%s] %s (%d steps)", name, phase_name, num_steps)

        def step_complete(self, phase_name, step):
            return True

        def phase_finish(self, phase_name):
            pass

    return Monitor()


def build_engine(onnx_bytes: bytes, *, name: str, precision: str, path: str, workspace: int,
                 profile: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]],
                 timing_cache: bytes | None, copies: int = 1,
                 formats: dict[str, str] | None = None, optimization_level: int | None = None) -> tuple[bytes, bytes]:
    """Build a serialized engine; returns it with the updated timing cache. ``path`` is what
    ``precision_path`` chose (``onnx_bytes`` are the converted model on the ``converted`` path).
    ``copies`` identical optimisation profiles are added: with dynamic shapes a profile serves one
    execution context, and a snippet run by several steps has one context per step. ``formats`` pins
    the layout of I/O tensors."""
    builder = trt.Builder(logger())
    network = builder.create_network(_network_flags(path))
    parser = trt.OnnxParser(network, logger())
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
        raise CompileError(f"TensorRT cannot parse snippet '{name}': {errors}")
    _pin_formats(network, formats or {}, strongly_typed=path == "converted" and not is_8(), name=name)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    _set_precision(config, precision, path)
    if optimization_level is not None:
        config.builder_optimization_level = optimization_level
    for _ in range(copies if profile else 0):
        opt = builder.create_optimization_profile()
        for tensor, (lo, mid, hi) in profile.items():
            opt.set_shape(tensor, lo, mid, hi)
        config.add_optimization_profile(opt)
    config.set_timing_cache(config.create_timing_cache(timing_cache or b""), ignore_mismatch=True)
    monitor = _progress_monitor(name)
    if monitor is not None:
        config.progress_monitor = monitor
    log.info("orchestrator: building TensorRT engine for snippet '%s' (%s, %s)...", name, precision, path)
    start = time.perf_counter()
    take_errors()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise CompileError(f"TensorRT failed to build snippet '{name}': {'; '.join(take_errors()) or 'no details'}")
    log.info("orchestrator: built '%s' in %.1f s", name, time.perf_counter() - start)
    return bytes(serialized), bytes(config.get_timing_cache().serialize())


def merge_timing_caches(ours: bytes, theirs: bytes | None) -> bytes:
    """One timing cache with the entries of both (another process may have written the file meanwhile).
    The larger one receives the other's entries, and a refused or lossy combine keeps the larger (on the
    H100 with TensorRT 8.6 a merge once came out smaller than one of its inputs)."""
    if not theirs:
        return ours
    larger, smaller = (ours, theirs) if len(ours) >= len(theirs) else (theirs, ours)
    config = trt.Builder(logger()).create_builder_config()
    # combined into the cache a builder config holds, as Polygraphy does after its builds
    config.set_timing_cache(config.create_timing_cache(larger), True)
    merged = config.get_timing_cache()
    if not merged.combine(config.create_timing_cache(smaller), True):  # ignore_mismatch; same keys: larger's
        log.warning("orchestrator: TensorRT could not combine two timing caches; keeping the larger")
        return larger
    combined = bytes(merged.serialize())
    return combined if len(combined) >= len(larger) else larger


def _network_flags(path: str) -> int:
    if is_8():
        return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if path == "converted":  # required on 10.x; 11 types every network strongly and accepts the flag
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0


def _pin_formats(network: Any, formats: dict[str, str], *, strongly_typed: bool, name: str) -> None:
    """Fix the dtype and format of I/O tensors (see layouts.py), so that TensorRT reads and writes them
    as they are instead of inserting reformats at the engine's edges. A strongly typed network's I/O
    types come from the (converted) ONNX, which already declares hwc8 ports float16."""
    tensors = [network.get_input(i) for i in range(network.num_inputs)]
    tensors += [network.get_output(i) for i in range(network.num_outputs)]
    for tensor in tensors:
        if formats.get(tensor.name) != "hwc8":
            continue
        if tensor.dtype != trt.float16:
            if strongly_typed:
                raise CompileError(f"snippet '{name}': hwc8 port '{tensor.name}' is {tensor.dtype} in the "
                                   f"converted model, not float16")
            tensor.dtype = trt.float16
        tensor.allowed_formats = 1 << int(trt.TensorFormat.HWC8)


def _set_precision(config: Any, precision: str, path: str) -> None:
    if path == "flags":
        config.set_flag(trt.BuilderFlag.FP16 if precision == "fp16" else trt.BuilderFlag.BF16)
        return
    # fp32 means fp32 (TF32 would cost ~1e-3 relative error), also for the ops a converted model keeps
    config.clear_flag(trt.BuilderFlag.TF32)
    if path == "converted" and is_8():  # no strong typing: the flag lets the fp16 layers run in fp16
        config.set_flag(trt.BuilderFlag.FP16)


# ---- run --------------------------------------------------------------------------------------------
def deserialize(data: bytes) -> Any | None:
    """An engine, or None when the bytes are not a usable engine for this TensorRT and GPU."""
    try:
        return runtime().deserialize_cuda_engine(data)
    except Exception:
        return None


def scratch_bytes(engine: Any) -> int:
    """Scratch for any of the engine's profiles (the v2 size is the largest over profiles)."""
    return int(engine.device_memory_size) if is_8() else int(engine.device_memory_size_v2)


def context_without_memory(engine: Any) -> Any:
    if is_8():
        return engine.create_execution_context_without_device_memory()
    return engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)


def set_scratch(context: Any, address: int, nbytes: int) -> None:
    if is_8():
        context.device_memory = address
    else:
        context.set_device_memory(address, nbytes)


def tensor_layout(engine: Any, name: str) -> str:
    """The layout (layouts.py) of an engine's I/O tensor, or TensorRT's format name if it has none."""
    fmt = engine.get_tensor_format(name)
    return {trt.TensorFormat.LINEAR: "linear", trt.TensorFormat.HWC8: "hwc8"}.get(fmt, str(fmt))


def io_tensors(engine: Any) -> tuple[list[str], list[str]]:
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    return inputs, [n for n in names if n not in inputs]
