"""TensorRT snippets: engines built once and cached on disk, one execution context per step, scratch
memory supplied from the arena."""

from __future__ import annotations

import logging
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, NamedTuple

from ... import cache
from ...errors import CompileError, ExecutionError, OrchestratorError
from ...pipeline.ir import SnippetInfo
from ...precision import Conversion, converted
from ...surgery.snippets import snippet_onnx_bytes
from . import build_worker, trt
from .driver import DeviceInfo

log = logging.getLogger("orchestrator")

Profile = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]


LEVEL_VARIABLE = "ORCHESTRATOR_TRT_OPT_LEVEL"
JOBS_VARIABLE = "ORCHESTRATOR_BUILD_JOBS"


class EngineRequest(NamedTuple):
    info: SnippetInfo
    profile: Profile
    copies: int = 1


def build_jobs() -> int:
    """Engines built at once (in worker processes, build_worker.py): $ORCHESTRATOR_BUILD_JOBS, else 1.
    Opt-in: builds at once time their tactics on a shared GPU, and engines built under load ran slower."""
    text = os.environ.get(JOBS_VARIABLE, "").strip()
    if not text:
        return 1
    if not (text.isdigit() and int(text) >= 1):
        raise OrchestratorError(f"${JOBS_VARIABLE} must be a number of builds >= 1, not {text!r}")
    return int(text)


def optimization_level() -> int | None:
    """TensorRT's builder optimisation level from $ORCHESTRATOR_TRT_OPT_LEVEL (0-5; unset: TensorRT's
    default, 3). Lower levels build much faster with slower engines: for test runs, not for benchmarks."""
    text = os.environ.get(LEVEL_VARIABLE, "").strip()
    if not text:
        return None
    if not (text.isdigit() and 0 <= int(text) <= 5):
        raise OrchestratorError(f"${LEVEL_VARIABLE} must be a builder optimisation level 0-5, not {text!r}")
    return int(text)


class EngineCache:
    """Serialized engines keyed by sha256 of the ONNX bytes, every build setting (precision path and
    converter version included), TensorRT and the GPU; one timing cache per GPU and TensorRT version,
    merged under a file lock so that processes building at once keep each other's entries. A corrupt or
    incompatible entry is rebuilt."""

    def __init__(self, root: Path, device: DeviceInfo):
        self.root, self.device = root, device
        gpu = re.sub(r"\W+", "_", device.name)
        self.timing_path = root / "timing" / f"{gpu}-{device.arch}-trt{trt.version()}.cache"
        self.builds = 0  # engines built (not loaded from the cache) by this object
        self._counting = threading.Lock()  # builds end on pool threads
        self.build_function = build_worker.DEFAULT_FUNCTION  # what a worker process runs
        self.level = optimization_level()

    def key(self, info: SnippetInfo, onnx_bytes: bytes, profile: Profile, copies: int) -> str:
        path = self.path(info)
        settings = {"precision": info.precision, "path": path, "workspace": info.workspace, "profile": profile,
                    "copies": copies, "formats": info.formats, "level": self.level,
                    "tensorrt": trt.version(), "gpu": self.device.name, "cc": self.device.compute_capability}
        if path == "converted":
            settings["conversion"] = self.conversion(info).settings()
        return cache.digest(onnx_bytes, settings)

    @staticmethod
    def path(info: SnippetInfo) -> str:
        return trt.precision_path(info.name, info.precision, info.precision_path, bool(info.keep_fp32))

    @staticmethod
    def conversion(info: SnippetInfo) -> Conversion:
        hwc8 = tuple(port for port, layout in info.formats.items() if layout == "hwc8")
        return Conversion(info.precision, info.keep_fp32, hwc8)

    def engine(self, info: SnippetInfo, profile: Profile, copies: int = 1) -> Any:
        return self.engines({info.name: EngineRequest(info, profile, copies)}, jobs=1)[info.name]

    def engines(self, requests: dict[str, EngineRequest], jobs: int | None = None) -> dict[str, Any]:
        """Every requested engine, from the cache or built: misses build ``jobs`` at a time in worker
        processes (build_worker.py), with a line per snippet as it starts and ends."""
        entries = {name: self._entry(request) for name, request in requests.items()}
        found = {name: cache.read(path) for name, (path, _) in entries.items()}
        engines = {name: self._load(entries[name][0], data) for name, data in found.items()}
        missing = [name for name, engine in engines.items() if engine is None]
        jobs = min(jobs or build_jobs(), len(missing) or 1)
        if len(missing) > 1:
            log.info("orchestrator: building %d TensorRT engines, %d at a time", len(missing), jobs)
        built = self._build_all({n: (requests[n], *entries[n], found[n]) for n in missing}, jobs)
        for name in missing:
            engine = trt.deserialize(built[name])
            if engine is None:
                raise CompileError(f"TensorRT could not load the engine it built for snippet '{name}'")
            engines[name] = engine
        return engines

    def _entry(self, request: EngineRequest) -> tuple[Path, bytes]:
        info = request.info
        onnx_bytes = snippet_onnx_bytes(info, cache_root=self.root)  # optimised when the snippet asks
        key = self.key(info, onnx_bytes, request.profile, request.copies)
        return self.root / "engines" / f"{info.name}-{key[:32]}.engine", onnx_bytes

    @staticmethod
    def _load(path: Path, data: bytes | None) -> Any | None:
        if data is None:
            return None
        engine = trt.deserialize(data)
        if engine is None:
            log.warning("orchestrator: cached engine %s is corrupt or incompatible; rebuilding", path.name)
        return engine

    def _build_all(self, work: dict[str, tuple[EngineRequest, Path, bytes, bytes | None]], jobs: int) -> dict[str, bytes]:
        """One at a time on this thread, or ``jobs`` worker processes at once (build_worker.py says why
        not threads)."""
        if jobs <= 1:
            return {name: self._build_once(*item, in_worker=False) for name, item in work.items()}
        built: dict[str, bytes] = {}
        with ThreadPoolExecutor(jobs, thread_name_prefix="trt-build") as pool:
            futures = {pool.submit(self._build_once, *item, in_worker=True): name for name, item in work.items()}
            try:
                for future in as_completed(futures):
                    built[futures[future]] = future.result()
            except BaseException:
                pool.shutdown(cancel_futures=True)  # builds already running finish; the first failure is raised
                raise
        return {name: built[name] for name in work}

    def _build_once(self, request: EngineRequest, path: Path, onnx_bytes: bytes, seen: bytes | None, *,
                    in_worker: bool) -> bytes:
        """Build and store one engine under a lock on its entry: a process that finds another building the
        same engine (test workers, servers started together) waits and takes what that one stored, instead
        of building it a second time. ``seen`` is what the entry held before (nothing, or a corrupt engine)."""
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.root / "locks" / f"{path.name}.lock"))
        Path(lock.lock_file).parent.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.info("orchestrator: another process is building snippet '%s'; waiting for it", request.info.name)
            lock.acquire()
        try:
            data = cache.read(path)
            if data is not None and data != seen:
                return data
            build = self._build_in_worker if in_worker else self._build_here
            return self._store(path, *build(request, onnx_bytes))
        finally:
            lock.release()

    def _settings(self, request: EngineRequest, onnx_bytes: bytes) -> dict[str, Any]:
        """trt.build_engine's arguments (the model converted first on the converted path)."""
        info, path = request.info, self.path(request.info)
        if path == "converted":
            onnx_bytes = converted(onnx_bytes, self.conversion(info), self.root, name=info.name)
        return {"onnx_bytes": onnx_bytes, "name": info.name, "precision": info.precision, "path": path,
                "workspace": info.workspace, "profile": request.profile, "copies": request.copies,
                "timing_cache": cache.read(self.timing_path), "formats": info.formats,
                "optimization_level": self.level}

    def _build_here(self, request: EngineRequest, onnx_bytes: bytes) -> tuple[bytes, bytes, bytes | None]:
        """(engine, timing cache after the build, timing cache it started from)."""
        settings = self._settings(request, onnx_bytes)
        return (*trt.build_engine(**settings), settings["timing_cache"])

    def _build_in_worker(self, request: EngineRequest, onnx_bytes: bytes) -> tuple[bytes, bytes, bytes | None]:
        settings = self._settings(request, onnx_bytes)
        model, base = settings.pop("onnx_bytes"), settings["timing_cache"]
        built = build_worker.run_in_worker(self.build_function, model, {**settings, "device_index": self.device.ordinal},
                                           name=request.info.name)
        return (*built, base)

    def _store(self, path: Path, serialized: bytes, timing: bytes, base: bytes | None) -> bytes:
        with self._counting:
            self.builds += 1
        cache.write_atomic(path, serialized)
        self.save_timing_cache(timing, base)
        return serialized

    def save_timing_cache(self, timing: bytes, base: bytes | None = None) -> None:
        """Store the timing cache a build ended with, under a lock. It grew from ``base``, the cache on disk
        when the build started: while the file still holds ``base`` it is simply replaced; when another
        build wrote it meanwhile, the two are merged (trt.merge_timing_caches)."""
        from filelock import FileLock

        self.timing_path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.timing_path) + ".lock", timeout=600):
            on_disk = cache.read(self.timing_path)
            if on_disk is not None and on_disk != base:
                timing = trt.merge_timing_caches(timing, on_disk)
            cache.write_atomic(self.timing_path, timing)


class TensorRTSnippet:
    """One engine, deserialised once and shared by every instance; ``context()`` makes an execution
    context for one step of one instance."""

    def __init__(self, info: SnippetInfo, engine: Any, dynamic: bool):
        self.info, self.engine, self.dynamic = info, engine, dynamic  # static engines share their one profile
        self.scratch_bytes = trt.scratch_bytes(engine)
        inputs, outputs = trt.io_tensors(engine)
        if set(inputs) != set(info.inputs) or set(outputs) != set(info.outputs):
            raise CompileError(f"engine of snippet '{info.name}' has I/O {inputs} -> {outputs}, "
                               f"but its ONNX file declares {list(info.inputs)} -> {list(info.outputs)}")
        for port in [*inputs, *outputs]:
            want, got = info.formats.get(port, "linear"), trt.tensor_layout(engine, port)
            if got != want:
                raise CompileError(f"engine of snippet '{info.name}' keeps '{port}' as {got}, not {want}")

    def context(self, scratch_address: int, stream_address: int, profile: int) -> StepContext:
        """A context whose scratch is at ``scratch_address``; with dynamic shapes it takes optimisation
        profile ``profile``, which no other context may use (each instance's steps have their own)."""
        ctx = trt.context_without_memory(self.engine)
        trt.set_scratch(ctx, scratch_address, self.scratch_bytes)
        profiles = self.engine.num_optimization_profiles
        if self.dynamic and (profiles > 1 or profile > 0):
            if profile >= profiles:
                raise CompileError(f"snippet '{self.info.name}': engine has {profiles} optimisation profile(s) "
                                   f"but profile {profile} is needed (steps x instances)")
            if not ctx.set_optimization_profile_async(profile, stream_address):
                raise ExecutionError(f"snippet '{self.info.name}': cannot select profile {profile}")
        return StepContext(self.info.name, ctx)

    def release(self) -> None:
        """Drop the engine (its contexts must be released first)."""
        self.engine = None


class StepContext:
    def __init__(self, name: str, context: Any):
        self.name, self.context = name, context

    def bind(self, tensor: str, address: int) -> None:
        if not self.context.set_tensor_address(tensor, address):
            raise ExecutionError(f"snippet '{self.name}': cannot bind '{tensor}'")

    def set_shape(self, tensor: str, shape: tuple[int, ...]) -> None:
        if not self.context.set_input_shape(tensor, shape):
            raise ExecutionError(f"snippet '{self.name}': input '{tensor}' cannot take shape {list(shape)} "
                                 f"(outside the engine's optimisation profile?)")

    def output_shape(self, tensor: str) -> tuple[int, ...]:
        return tuple(self.context.get_tensor_shape(tensor))

    def release(self) -> None:
        """Destroy the TensorRT context now, even if a compiled closure still references this object."""
        self.context = None

    def enqueue(self, stream_address: int) -> None:
        if not self.context.execute_async_v3(stream_address):
            raise ExecutionError(f"snippet '{self.name}': TensorRT enqueue failed: {'; '.join(trt.take_errors())}")
