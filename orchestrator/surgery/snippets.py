"""The ONNX bytes a snippet runs: the file as written, or (``optimize: true``) its optimised form, cached
on disk by content so the engine build and the CPU reference see the same graph and optimise it once."""

from __future__ import annotations

from pathlib import Path

from .. import cache
from ..errors import OrchestratorError
from ..pipeline.ir import SnippetInfo
from .optimize import VERSION, optimize_bytes
from .verify import check_same_outputs


class ExternalDataError(OrchestratorError):
    """An ONNX model's external data cannot be read or does not fit one protobuf."""


def onnx_file_bytes(path: Path) -> bytes:
    """The model at ``path`` as one self-contained protobuf. Weights kept as external data (the dynamo
    exporter's default, ``model.onnx.data`` beside the model) are read from the model's folder and inlined:
    the bytes are handed to onnxruntime, TensorRT's parser and the surgery passes, which would otherwise
    look for the data relative to the working directory."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    data = path.read_bytes()
    if not any(uses_external_data(t) for t in onnx.load_from_string(data).graph.initializer):
        return data
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises ValidationError, FileNotFoundError, ... for missing or short data
        raise ExternalDataError(f"{path.name}: cannot read its external data: {str(exc).splitlines()[0]}") from None
    try:
        return model.SerializeToString()
    except ValueError:  # protobuf's 2 GiB limit
        raise ExternalDataError(f"{path.name}: its weights do not fit one 2 GiB ONNX protobuf; cut it into "
                                f"smaller snippets with 'orchestrator snip'") from None


def snippet_onnx_bytes(info: SnippetInfo, cache_root: Path | None = None) -> bytes:
    """What the engine cache builds from and onnxruntime runs (the ONNX read hook of every backend)."""
    data = onnx_file_bytes(info.onnx_path)
    if not info.optimize:
        return data
    return optimized_bytes(data, name=info.onnx_path.name, cache_root=cache_root)


def optimized_bytes(data: bytes, *, name: str, cache_root: Path | None = None) -> bytes:
    import onnx
    import onnx_graphsurgeon
    import onnxoptimizer

    versions = {"surgery": VERSION, "onnx": onnx.__version__, "onnxoptimizer": onnxoptimizer.__version__,
                "onnx_graphsurgeon": onnx_graphsurgeon.__version__}
    path = cache.cache_dir(cache_root) / "optimized" / f"{cache.digest(data, versions)[:32]}.onnx"
    cached = cache.read(path)
    if cached is not None:
        return cached
    optimized, _ = optimize_bytes(data, name=name)
    check_same_outputs(data, optimized, name=name)
    cache.write_atomic(path, optimized)
    return optimized


def optimize_problem(onnx_path: Path) -> str | None:
    """Validation's check of ``optimize: true``: optimise now (filling the cache), or say why it cannot."""
    try:
        optimized_bytes(onnx_file_bytes(onnx_path), name=onnx_path.name)
    except OrchestratorError as exc:
        return f"{exc} (optimize: false runs the model as written)"
    return None
