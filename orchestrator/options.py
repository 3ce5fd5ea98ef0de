"""Runtime options of an Orchestrator: one documented dataclass, normalised once, checked against what
the chosen backend can honour (an option it cannot honour is an error, never silently dropped)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

GraphMode = bool | str  # False: eager; "segments": graphs between host-decided branches; True: one graph


@dataclass(frozen=True)
class RunOptions:
    """How a pipeline runs.

    - ``instances``: execution instances (each its own stream, arena, TensorRT contexts, staging and
      graphs) sharing one compiled pipeline; ``run`` takes a free one, so up to this many runs proceed
      at once from different threads.
    - ``graphs``: False (eager), True (one CUDA graph with device-side branching) or ``"segments"``
      (graphs between host-decided branches); CUDA backend only.
    - ``stream``: the caller's CUDA stream (an int handle, ``__cuda_stream__`` object or PyTorch stream),
      or a sequence of one stream per instance; None creates one stream per instance. CUDA only.
    - ``cache_dir``: where engines and kernels are cached (None: ``$ORCHESTRATOR_CACHE`` or the default).
    - ``device_index``: the GPU to run on. CUDA only.
    - ``timeout``: seconds ``run`` waits for a free instance before raising (None: wait forever).
    - ``build_jobs``: TensorRT engines built at once when several snippets miss the cache (None:
      ``$ORCHESTRATOR_BUILD_JOBS`` or 1). CUDA only.
    """

    instances: int = 1
    graphs: GraphMode = False
    stream: Any = None
    cache_dir: str | Path | None = None
    device_index: int = 0
    timeout: float | None = None
    build_jobs: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.instances, bool) or not isinstance(self.instances, int) or self.instances < 1:
            raise ValueError(f"instances must be an integer >= 1, not {self.instances!r}")
        if self.graphs not in (False, True, "segments"):
            raise ValueError(f"graphs must be False, True or 'segments', not {self.graphs!r}")
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds or None, not {self.timeout!r}")
        if self.build_jobs is not None and (isinstance(self.build_jobs, bool) or not isinstance(self.build_jobs, int)
                                            or self.build_jobs < 1):
            raise ValueError(f"build_jobs must be an integer >= 1 or None, not {self.build_jobs!r}")
        if isinstance(self.device_index, bool) or not isinstance(self.device_index, int) or self.device_index < 0:
            raise ValueError(f"device_index must be an integer >= 0, not {self.device_index!r}")
        streams = self.streams()
        if streams is not None and len(streams) != self.instances:
            raise ValueError(f"stream: {len(streams)} stream(s) given for {self.instances} instance(s); each "
                             f"instance needs its own stream (pass a sequence of {self.instances}, or none)")

    @classmethod
    def of(cls, options: RunOptions | Mapping[str, Any] | None = None, **overrides: Any) -> RunOptions:
        """Normalise a RunOptions, a dict or keyword arguments; unknown names are refused."""
        given = dict(vars(options)) if isinstance(options, RunOptions) else dict(options or {})
        given.update(overrides)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(given) - known)
        if unknown:
            raise TypeError(f"unknown option(s) {', '.join(unknown)} (options: {', '.join(sorted(known))})")
        return cls(**given)

    def streams(self) -> tuple[Any, ...] | None:
        """One stream per instance, or None (the backend creates them)."""
        if self.stream is None:
            return None
        if isinstance(self.stream, Sequence) and not isinstance(self.stream, str | bytes):
            return tuple(self.stream)
        return (self.stream,)

    def refuse_for_cpu(self) -> None:
        """The CPU reference backend runs on no stream and no GPU; graph modes need CUDA."""
        from .errors import MissingDependencyError

        if self.stream is not None:
            raise MissingDependencyError("stream= needs the CUDA backend (this is the cpu backend)")
        if self.device_index != 0:
            raise MissingDependencyError(f"device_index={self.device_index} needs the CUDA backend (this is "
                                         f"the cpu backend)")
        if self.graphs:
            raise MissingDependencyError("graph mode needs the CUDA backend (this is the cpu backend)")
        if self.build_jobs is not None:
            raise MissingDependencyError("build_jobs= sets how many TensorRT engines build at once: it needs "
                                         "the CUDA backend (this is the cpu backend)")
