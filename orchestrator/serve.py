"""Serve a pipeline on Triton Inference Server through NVIDIA's PyTriton (the ``[serve]`` extra).

The pipeline becomes one Triton model: its inputs and outputs are the model's tensors (names and dtypes
from the pipeline), host inputs arrive as request parameters or as one-element inputs, and each Triton
model instance calls one orchestrator instance. When every input and output starts with the same
symbolic dimension, Triton's dynamic batcher stacks requests along it up to the bound of that dimension.

PyTriton runs Triton's Python backend stub, a binary linked against ``libpython3.X.so.1.0``, in a child
process. The dynamic loader resolves that name on the system library path, not from the serving
interpreter, while the stub finds its standard library through the serving interpreter's ``bin`` (which
PyTriton puts first on ``PATH``). Under an interpreter other than the system one (pyenv's 3.11.7 on a
Debian 3.11.2 system) the stub therefore ran the system's 3.11.2 core with 3.11.7's standard library:
3.11.7's ``multiprocessing.resource_tracker`` calls ``RLock._recursion_count``, which the 3.11.2 C
``_thread.RLock`` lacks, and the 3.11.2 frozen ``site`` looks for ``dist-packages`` (so numpy is not
found either). ``check_interpreter`` puts the serving interpreter's own shared libpython (the one
mapped in this process) first on ``LD_LIBRARY_PATH``, and refuses interpreters that have none. The stub
also runs isolated (pybind11 starts it with ``PyConfig_InitIsolatedConfig``): ``PYTHONPATH`` is ignored
there, so numpy and pyzmq must be importable from the interpreter's own site-packages.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import site
import sys
import sysconfig
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import dtypes
from .errors import InputError, MissingDependencyError, OrchestratorError
from .pipeline.ir import Pipeline

STUB_VERSIONS = ((3, 8), (3, 9), (3, 10), (3, 11), (3, 12), (3, 13))  # stubs shipped in nvidia-pytriton 0.7
_INSTALL = "pip install 'orchestrator[serve]'"


@dataclass(frozen=True)
class ServeOptions:
    """How ``serve`` exposes a pipeline. ``max_batch=None``: the batch dimension's upper bound."""

    instances: int = 1
    max_batch: int | None = None
    device: str = "auto"
    graphs: bool | str = False
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    model_name: str | None = None
    queue_delay_us: int = 0


@dataclass(frozen=True)
class TensorSpec:
    """One Triton tensor: ``shape`` without the batch dimension, -1 where the size varies."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelSpec:
    """The Triton model a pipeline becomes."""

    name: str
    inputs: tuple[TensorSpec, ...]
    host_inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    batch_dim: str | None
    max_batch_size: int  # 0: no batching (Triton's convention)


def check_interpreter() -> None:
    """Refuse, in one line, an interpreter Triton's Python stub cannot run under; otherwise make the stub
    load this interpreter's own libpython (see the module docstring)."""
    if importlib.util.find_spec("pytriton") is None or importlib.util.find_spec("tritonclient") is None:
        raise MissingDependencyError(f"serve needs nvidia-pytriton and tritonclient: {_INSTALL}")
    version = sys.version_info[:2]
    if not sys.platform.startswith("linux") or version not in STUB_VERSIONS:
        raise MissingDependencyError(
            f"serve runs on Linux with CPython 3.8-3.13 (PyTriton's Triton stubs); this is "
            f"{sys.platform} Python {sys.version.split()[0]}")
    libpython = loaded_libpython()
    if libpython is None:
        raise MissingDependencyError(
            f"serve needs a CPython built with a shared libpython (Triton's Python stub links "
            f"libpython{version[0]}.{version[1]}.so.1.0); {sys.executable} ({sys.version.split()[0]}) has none, "
            f"so the stub would mix another build's libpython with this one's standard library: use "
            f"/usr/bin/python3 or rebuild with --enable-shared (pyenv: PYTHON_CONFIGURE_OPTS=--enable-shared)")
    if int(np.__version__.split(".")[0]) >= 2:
        raise MissingDependencyError(f"serve: PyTriton 0.7 needs numpy<2 (with numpy {np.__version__} its answers "
                                     f"come back empty); pip install 'numpy<2'")
    _check_stub_imports()
    paths = [str(libpython.parent), *filter(None, os.environ.get("LD_LIBRARY_PATH", "").split(":"))]
    os.environ["LD_LIBRARY_PATH"] = ":".join(dict.fromkeys(paths))


def loaded_libpython() -> Path | None:
    """The shared libpython of this interpreter's own build: the one mapped in this process (pyenv
    ``--enable-shared``, relocated copies of it), else, for an executable linked statically against it
    (Debian's ``python3.11``), the one its build installed (sysconfig ``LIBDIR``); None if neither exists."""
    name = f"libpython{sys.version_info[0]}.{sys.version_info[1]}.so.1.0"
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = Path(line.split(maxsplit=5)[-1].strip())
            if path.name.startswith(name.split(".so")[0] + ".so") and (path.parent / name).is_file():
                return path.parent / name
    built = Path(sysconfig.get_config_var("LIBDIR") or "/nonexistent") / name
    return built if built.is_file() else None


def _check_stub_imports() -> None:
    """The stub runs isolated (``PyConfig_InitIsolatedConfig``: ``PYTHONPATH`` is ignored), so the modules
    PyTriton's proxy imports there must come from this interpreter's site-packages or a ``.pth`` in them."""
    visible = [Path(p) for p in site.getsitepackages()]
    visible += [Path(line.strip()) for folder in list(visible) if folder.is_dir() for pth in folder.glob("*.pth")
                for line in pth.read_text().splitlines() if line.strip().startswith("/")]
    for name in ("numpy", "zmq"):  # pytriton.server.triton_server._PROXY_REQUIRED_MODULES
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise MissingDependencyError(f"serve needs {name}: {_INSTALL}")
        home = Path(spec.origin).resolve().parent.parent
        if not any(home.is_relative_to(v.resolve()) for v in visible):
            raise MissingDependencyError(
                f"serve: Triton's Python stub ignores PYTHONPATH and cannot import {name} from {home}; install "
                f"the [serve] extra into {visible[0]} or add a .pth file there naming {home}")


def model_spec(pipeline: Pipeline, max_batch: int | None = None, name: str | None = None) -> ModelSpec:
    """The Triton model for ``pipeline``; ``max_batch`` bounds the dynamic batcher (at most the batch
    dimension's upper bound; an error when the pipeline has no batch dimension)."""
    batch_dim = _batch_dim(pipeline)
    if batch_dim is None and max_batch is not None:
        raise OrchestratorError(f"{pipeline.file}: --max-batch: pipeline '{pipeline.name}' has no batch dimension "
                                f"(every input and output would have to start with the same symbolic dimension)")
    bound = pipeline.dims[batch_dim].max if batch_dim else 0
    if max_batch is not None and not 1 <= max_batch <= bound:
        raise OrchestratorError(f"{pipeline.file}: --max-batch {max_batch}: must be between 1 and "
                                f"{bound}, the bound of dimension {batch_dim} (dims.{batch_dim}.max)")
    skip = 1 if batch_dim else 0
    inputs = tuple(_tensor(n, t.dtype, t.shape[skip:]) for n, t in pipeline.inputs.items() if t.origin != "host")
    hosts = tuple(_tensor(n, t.dtype, (1,)) for n, t in pipeline.inputs.items() if t.origin == "host")
    outputs = tuple(_tensor(n, pipeline.tensors[n].dtype, pipeline.tensors[n].shape[skip:])
                    for n in pipeline.outputs)
    return ModelSpec(name or pipeline.name, inputs, hosts, outputs, batch_dim,
                     (max_batch or bound) if batch_dim else 0)


def _tensor(name: str, dtype: str, shape: Sequence[int | str]) -> TensorSpec:
    return TensorSpec(name, dtypes.to_numpy(dtype), tuple(d if isinstance(d, int) else -1 for d in shape))


def _batch_dim(pipeline: Pipeline) -> str | None:
    """The symbol every device input and output starts with and that appears nowhere else in them."""
    shapes = [t.shape for t in pipeline.inputs.values() if t.origin != "host"]
    shapes += [pipeline.tensors[n].shape for n in pipeline.outputs]
    if not shapes or any(not s for s in shapes):
        return None
    first = shapes[0][0]
    if not isinstance(first, str) or first not in pipeline.dims:
        return None
    if any(s[0] != first or any(first in str(d) for d in s[1:]) for s in shapes):
        return None
    return first


class InstanceModel:
    """What one Triton model instance calls: a list of requests in, one dict of outputs per request out.
    With a batch dimension, consecutive requests with equal host inputs run as one stacked batch."""

    def __init__(self, orchestrator: Any, spec: ModelSpec):
        self.orchestrator = orchestrator
        self.spec = spec

    def __call__(self, requests: Sequence[Any]) -> list[dict[str, np.ndarray]]:
        feeds = [self._feeds(r.data, r.parameters or {}) for r in requests]
        if self.spec.batch_dim is None:
            return [self.orchestrator.run(f) for f in feeds]
        responses: list[dict[str, np.ndarray]] = []
        for group in _groups(feeds, [h.name for h in self.spec.host_inputs]):
            responses += self._run_stacked(group)
        return responses

    def _feeds(self, data: Mapping[str, np.ndarray], parameters: Mapping[str, Any]) -> dict[str, Any]:
        feeds: dict[str, Any] = {t.name: data[t.name] for t in self.spec.inputs}
        for host in self.spec.host_inputs:
            feeds[host.name] = _host_value(host, data.get(host.name), parameters.get(host.name))
        return feeds

    def _run_stacked(self, group: list[dict[str, Any]]) -> list[dict[str, np.ndarray]]:
        if len(group) == 1:
            return [self.orchestrator.run(group[0])]
        stacked = dict(group[0])
        for t in self.spec.inputs:
            stacked[t.name] = np.concatenate([f[t.name] for f in group])
        outputs = self.orchestrator.run(stacked)
        cuts = np.cumsum([len(f[self.spec.inputs[0].name]) for f in group])[:-1]
        pieces = {name: np.split(value, cuts) for name, value in outputs.items()}
        return [{name: pieces[name][i] for name in outputs} for i in range(len(group))]


def _groups(feeds: list[dict[str, Any]], host_names: list[str]) -> Iterator[list[dict[str, Any]]]:
    group: list[dict[str, Any]] = []
    for feed in feeds:
        if group and any(feed[h] != group[0][h] for h in host_names):
            yield group
            group = []
        group.append(feed)
    if group:
        yield group


def _host_value(spec: TensorSpec, tensor: np.ndarray | None, parameter: Any) -> Any:
    """A host input's value from the request: a one-element input (every row equal) or a parameter."""
    if tensor is not None:
        values = np.unique(tensor)
        if values.size != 1:
            raise InputError(f"host input '{spec.name}': expected one value per request, got {tensor.tolist()}")
        return values[0].item()
    if parameter is None:
        raise InputError(f"host input '{spec.name}' is missing: send it as a request parameter or a one-element "
                         f"{spec.dtype.name} input")
    try:
        return spec.dtype.type(parameter if not isinstance(parameter, str) else float(parameter)).item()
    except (TypeError, ValueError):
        raise InputError(f"host input '{spec.name}': parameter {parameter!r} is not a {spec.dtype.name}") from None


def load_instances(pipeline: Pipeline, options: ServeOptions) -> Any:
    """The orchestrator serving every model instance: ``options.instances`` independent runs at once."""
    from .api import Orchestrator

    if options.instances < 1:
        raise OrchestratorError(f"--instances {options.instances}: must be at least 1")
    return Orchestrator(pipeline, device=options.device, instances=options.instances, graphs=options.graphs)


def bind(triton: Any, spec: ModelSpec, orchestrator: Any, instances: int, queue_delay_us: int = 0) -> None:
    """Bind the pipeline to a PyTriton ``Triton`` as model ``spec.name``, one callable per instance."""
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    def tensors(specs: Sequence[TensorSpec], optional: bool = False) -> list[Any]:
        return [Tensor(name=t.name, dtype=t.dtype, shape=t.shape, optional=optional) for t in specs]

    config = ModelConfig(batching=spec.max_batch_size > 0, max_batch_size=spec.max_batch_size,
                         batcher=DynamicBatcher(max_queue_delay_microseconds=queue_delay_us))
    triton.bind(model_name=spec.name, infer_func=[InstanceModel(orchestrator, spec) for _ in range(instances)],
                inputs=tensors(spec.inputs) + tensors(spec.host_inputs, optional=True),
                outputs=tensors(spec.outputs), config=config)


def triton_config(options: ServeOptions) -> Any:
    from pytriton.triton import TritonConfig

    return TritonConfig(http_address=options.host, http_port=options.http_port, grpc_address=options.host,
                        grpc_port=options.grpc_port, metrics_address=options.host,
                        metrics_port=options.metrics_port, log_verbose=0, exit_on_error=True)


@contextmanager
def _bound(path: str | Path, options: ServeOptions) -> Iterator[tuple[Any, ModelSpec]]:
    """A PyTriton ``Triton`` (not started) with the pipeline bound; everything released on exit."""
    from .pipeline.load import load_pipeline

    check_interpreter()
    pipeline = load_pipeline(path)
    spec = model_spec(pipeline, options.max_batch, options.model_name)
    from pytriton.triton import Triton

    with load_instances(pipeline, options) as orchestrator, \
            Triton(config=triton_config(options)) as triton:
        bind(triton, spec, orchestrator, options.instances, options.queue_delay_us)
        yield triton, spec


def serve(path: str | Path, options: ServeOptions, on_ready: Any = None) -> None:
    """Serve until SIGINT or SIGTERM (or until Triton stops), then stop Triton and release the pipeline."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with _bound(path, options) as (triton, spec):
            triton.run()
            if on_ready is not None:
                on_ready(spec)
            triton.serve()  # PyTriton's wait: returns on KeyboardInterrupt or when Triton dies
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
