"""What the CUDA backend builds once per pipeline and device, shared by every instance: TensorRT engines
(built or loaded from the cache, deserialised once), NVRTC kernel modules, the condition kernels of graph
mode, the shape bounds and the arena layout. Nothing here changes after construction; instances
(backend.py) own the stream, the arena, the contexts bound to it, staging and captured graphs."""

from __future__ import annotations

from collections import Counter
from typing import Any

from ... import cache
from ...errors import MissingDependencyError
from ...kernels.nvrtc import compile_kernel
from ...options import RunOptions
from ...pipeline.ir import IfBlock, Pipeline, SnippetCall, SwitchBlock, WhileBlock, walk
from ...planning import concrete_shapes, dims_at, tensor_bytes
from ..base import Backend, CompiledPipeline
from .arena import ArenaLayout, layout_arena
from .driver import Context, check, cu
from .kernel import LoadedKernel
from .snippet import EngineCache, EngineRequest, Profile, TensorRTSnippet


class CudaCompiled(CompiledPipeline):
    name = "cuda"

    def __init__(self, pipeline: Pipeline, options: RunOptions):
        super().__init__(pipeline)
        self.options = options
        _check_device_index(options.device_index)
        self.context = Context(options.device_index)
        self.snippets: dict[str, TensorRTSnippet] = {}
        self.kernels: dict[str, LoadedKernel] = {}
        self.conditions: Any = None  # graphs.ConditionKernels in whole-graph mode, when there are blocks
        try:
            self._build(options)
        except BaseException:
            self.close()
            raise

    def _build(self, options: RunOptions) -> None:
        pipeline, root = self.pipeline, cache.cache_dir(options.cache_dir)
        self.bounds = {w: concrete_shapes(pipeline, dims_at(pipeline, w)) for w in ("min", "opt", "max")}
        self.engine_cache = EngineCache(root, self.context.info)
        # steps per snippet: a dynamic-shape engine gets one optimisation profile per step per instance
        self.uses = Counter(n.snippet for n in walk(pipeline.body) if isinstance(n, SnippetCall))
        # what fails fast goes first: kernels (signatures are checked as they compile) and every snippet's
        # precision path, before the first (slow) engine build
        for name, info in pipeline.kernels.items():
            self.kernels[name] = LoadedKernel(info, compile_kernel(info, self.context.info.arch, root))
        # a snippet no step runs (validation warns of it) has no shapes to build a profile from: not built
        used = {name: info for name, info in pipeline.snippets.items() if self.uses[name]}
        for info in used.values():
            self.engine_cache.path(info)
        profiles = {name: self._profile(name) for name in used}
        requests = {name: EngineRequest(info, profiles[name], self.profiles_needed(name, profiles[name], options.instances))
                    for name, info in used.items()}
        engines = self.engine_cache.engines(requests, options.build_jobs)
        for name, info in used.items():
            self.snippets[name] = TensorRTSnippet(info, engines[name], dynamic=bool(profiles[name]))
        scratch = max((s.scratch_bytes for s in self.snippets.values()), default=0)
        self.layout: ArenaLayout = layout_arena(pipeline, tensor_bytes(pipeline, self.bounds["max"]), scratch)
        blocks = [n for n in walk(pipeline.body) if isinstance(n, IfBlock | SwitchBlock | WhileBlock)]
        if options.graphs is True and blocks:
            from .graphs import ConditionKernels

            self.conditions = ConditionKernels(pipeline, blocks, self.context.info.arch)

    def profiles_needed(self, snippet: str, profile: Profile, instances: int) -> int:
        """Optimisation profiles of the snippet's engine: a context with dynamic shapes needs a profile of
        its own, so one per step per instance; static engines keep one (and their cache key)."""
        steps = max(self.uses[snippet], 1)
        return steps * instances if profile else steps

    def _profile(self, snippet: str) -> Profile:
        info = self.pipeline.snippets[snippet]
        if info.profile is not None:
            return info.profile
        profile: Profile = {}
        for step in (n for n in walk(self.pipeline.body) if isinstance(n, SnippetCall) and n.snippet == snippet):
            for port, tensor in step.inputs.items():
                if all(isinstance(d, int) for d in info.inputs[port].shape):
                    continue
                lo, mid, hi = (self.bounds[w][tensor] for w in ("min", "opt", "max"))
                if port in profile:
                    plo, pmid, phi = profile[port]
                    lo, mid, hi = tuple(map(min, lo, plo)), pmid, tuple(map(max, hi, phi))
                profile[port] = (lo, mid, hi)
        return profile

    def instance(self, index: int = 0, stream: Any = None) -> Backend:
        from .backend import CudaBackend

        return CudaBackend(self, index, stream)

    def memory_summary(self) -> dict[str, int | float | bool]:
        return self.layout.summary()

    def close(self) -> None:
        """Unload modules and drop engines (after every instance is closed), then the context."""
        if self.context.handle is None:
            return
        self.context.make_current()
        for kernel in self.kernels.values():
            kernel.unload()
        if self.conditions is not None:
            self.conditions.unload()
        for snippet in self.snippets.values():
            snippet.release()
        self.kernels, self.snippets = {}, {}
        self.context.release()


def _check_device_index(index: int) -> None:
    check(cu.cuInit(0), "cuInit")
    count = check(cu.cuDeviceGetCount(), "cuDeviceGetCount")
    if index >= count:
        raise MissingDependencyError(f"device_index={index}: this machine has {count} GPU(s) (0..{count - 1})")
