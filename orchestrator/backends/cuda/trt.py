"""The one place that knows TensorRT's version differences (8.6 vs 10+/11): build, deserialise, and
execution contexts whose scratch memory we provide (one region shared by every engine)."""

from __future__ import annotations

import logging
import time
from functools import cache
from typing import Any

from ...errors import CompileError
from ...lazy import lazy_import

trt = lazy_import("tensorrt")
log = logging.getLogger("orchestrator")


def version() -> str:
    return str(trt.__version__)


def is_8() -> bool:
    return int(version().split(".")[0]) < 9


@cache
def logger() -> Any:
    """A TensorRT logger that routes messages to logging and keeps the errors for our exceptions."""

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.INTERNAL_ERROR, trt.ILogger.ERROR):
                self.errors.append(msg)
                log.debug("TensorRT error: %s", msg)
            elif severity == trt.ILogger.WARNING:
                log.debug("TensorRT: %s", msg)

    return Logger()


@cache
def runtime() -> Any:
    return trt.Runtime(logger())


def _progress_monitor(name: str):
    """Print build phases (TensorRT >= 10 has IProgressMonitor; 8.6 gets start/finish lines only)."""
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, parent, phase, num_steps):
            if parent is None:
                log.info("  [%s] %s (%d steps)", name, phase, num_steps)

        def step_complete(self, phase, step):
            return True

        def phase_finish(self, phase):
            pass

    return Monitor()


def build_engine(onnx_bytes: bytes, *, name: str, precision: str, workspace: int,
                 profile: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]],
                 timing_cache: bytes | None, copies: int = 1,
                 formats: dict[str, str] | None = None) -> tuple[bytes, bytes]:
    """Build a serialized engine; returns it with the updated timing cache. ``copies`` identical
    optimisation profiles are added: with dynamic shapes a profile serves one execution context, and a
    snippet run by several steps has one context per step. ``formats`` pins the layout of I/O tensors."""
    builder = trt.Builder(logger())
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) if is_8() else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger())
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
        raise CompileError(f"TensorRT cannot parse snippet '{name}': {errors}")
    _pin_formats(network, formats or {})
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    _set_precision(config, precision, name)
    for _ in range(copies if profile else 0):
        opt = builder.create_optimization_profile()
        for tensor, (lo, mid, hi) in profile.items():
            opt.set_shape(tensor, lo, mid, hi)
        config.add_optimization_profile(opt)
    cache = config.create_timing_cache(timing_cache or b"")
    config.set_timing_cache(cache, ignore_mismatch=True)
    monitor = _progress_monitor(name)
    if monitor is not None:
        config.progress_monitor = monitor
    log.info("orchestrator: building TensorRT engine for snippet '%s' (%s)...", name, precision)
    start = time.perf_counter()
    logger().errors.clear()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise CompileError(f"TensorRT failed to build snippet '{name}': {'; '.join(logger().errors) or 'no details'}")
    log.info("orchestrator: built '%s' in %.1f s", name, time.perf_counter() - start)
    return bytes(serialized), bytes(config.get_timing_cache().serialize())


def _pin_formats(network: Any, formats: dict[str, str]) -> None:
    """Fix the dtype and format of I/O tensors (see layouts.py), so that TensorRT reads and writes them
    as they are instead of inserting reformats at the engine's edges."""
    tensors = [network.get_input(i) for i in range(network.num_inputs)]
    tensors += [network.get_output(i) for i in range(network.num_outputs)]
    for tensor in tensors:
        if formats.get(tensor.name) == "hwc8":
            tensor.dtype = trt.float16
            tensor.allowed_formats = 1 << int(trt.TensorFormat.HWC8)


def _set_precision(config: Any, precision: str, name: str) -> None:
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)  # fp32 means fp32: TF32 would cost ~1e-3 relative error
    elif precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "bf16":
        if not hasattr(trt.BuilderFlag, "BF16"):
            raise CompileError(f"snippet '{name}': bf16 needs TensorRT >= 9 (this is {version()})")
        config.set_flag(trt.BuilderFlag.BF16)


def deserialize(data: bytes) -> Any | None:
    """An engine, or None when the bytes are not a usable engine for this TensorRT and GPU."""
    try:
        return runtime().deserialize_cuda_engine(data)
    except Exception:
        return None


def scratch_bytes(engine: Any) -> int:
    if hasattr(engine, "device_memory_size_v2"):
        return int(engine.device_memory_size_v2)
    return int(engine.device_memory_size)


def context_without_memory(engine: Any) -> Any:
    if is_8():
        return engine.create_execution_context_without_device_memory()
    return engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)


def set_scratch(context: Any, address: int, nbytes: int) -> None:
    if hasattr(context, "set_device_memory"):
        context.set_device_memory(address, nbytes)
    else:
        context.device_memory = address


def tensor_layout(engine: Any, name: str) -> str:
    """The layout (layouts.py) of an engine's I/O tensor, or TensorRT's format name if it has none."""
    fmt = engine.get_tensor_format(name)
    return {trt.TensorFormat.LINEAR: "linear", trt.TensorFormat.HWC8: "hwc8"}.get(fmt, str(fmt))


def io_tensors(engine: Any) -> tuple[list[str], list[str]]:
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    return inputs, [n for n in names if n not in inputs]
