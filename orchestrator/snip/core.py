"""``snip``: cut a model, write the pieces and the pipeline, verify them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..pipeline.source import display_name
from . import verify as checks
from .cuts import CostModel, Cut, balanced_cuts, cuts_at
from .graph import Graph, SnipError, load_model
from .write import boundary_formats, piece_model, pipeline_yaml, split


@dataclass
class SnipResult:
    pieces: list[Path]
    pipeline: Path
    cuts: list[Cut]
    piece_costs: list[float]  # estimated compute (MACs) of each piece
    max_abs_error: float
    names: dict[str, str]  # model tensor -> pipeline tensor, for the inputs, outputs and cut tensors

    @property
    def boundaries(self) -> list[tuple[str, ...]]:
        """The tensors crossing each cut."""
        return [c.tensors for c in self.cuts]


def snip(model_path: Path, out_dir: Path, *, at: str | None = None, pieces: int | None = None,
         dims: dict[str, int] | None = None, precision: str = "fp32", boundary_format: str = "linear",
         inputs: dict[str, np.ndarray] | None = None) -> SnipResult:
    """Cut ``model_path`` after tensors (``at``: 'a,b') or into ``pieces`` of balanced estimated cost at the
    cheapest cuts; write the snippets and ``pipeline.yaml`` into ``out_dir`` and verify them on the CPU
    against onnxruntime. ``dims`` sizes symbolic dimensions (default: read off ``inputs``, else 1);
    ``inputs`` gives values for model inputs (required for shape/parameter inputs). ``boundary_format``
    'hwc8' (with fp16) keeps 4-D tensors between snippets in TensorRT's FP16 channels-last format."""
    if (at is None) == (pieces is None):
        raise SnipError("give exactly one of --at and --pieces")
    where = display_name(model_path)
    try:
        return _snip(model_path, out_dir, at, pieces, dims, precision, boundary_format, inputs)
    except SnipError as exc:  # every problem names the model it is about
        if str(exc).startswith(where):
            raise
        raise SnipError(f"{where}: {exc}") from None


def _snip(model_path: Path, out_dir: Path, at: str | None, pieces: int | None, dims: dict[str, int] | None,
          precision: str, boundary_format: str, inputs: dict[str, np.ndarray] | None) -> SnipResult:
    import onnx

    if boundary_format != "linear" and precision != "fp16":
        raise SnipError(f"--boundary-format {boundary_format} is an FP16 format; add --precision fp16")
    model = load_model(model_path)
    given = dict(inputs or {})
    graph = Graph(model)
    graph.sizes = {**checks.input_sizes(graph, given), **(dims or {})}
    _check_given(graph, given, model_path)
    try:  # the verification's feeds, made once; with --pieces they also size the dims inference could not
        feeds = checks.feeds(graph, given, display_name(model_path))
    except SnipError:
        feeds = None  # inputs random data cannot fill: refused after the cuts are chosen, as before
    if feeds is not None and pieces is not None and pieces > 1:
        graph.measured = checks.measured_sizes(graph, feeds)
    costs = CostModel(graph, precision, boundary_format)
    cuts = cuts_at(graph, costs, at, model_path) if at else balanced_cuts(graph, costs, pieces, model_path)
    if feeds is None:
        feeds = checks.feeds(graph, given, display_name(model_path))
    parts = split(graph, [c.position + 1 for c in cuts])
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for i, part in enumerate(parts):
        files.append(out_dir / f"piece{i}.onnx")
        onnx.save(piece_model(graph, part, f"{model.graph.name or 'model'}_piece{i}"), str(files[-1]))
    pipeline = out_dir / "pipeline.yaml"
    formats = boundary_formats(graph, parts, boundary_format)
    text, names = pipeline_yaml(graph, parts, files, pipeline.parent, precision, formats)
    pipeline.write_text(text)
    # FP16 boundaries round every value that crosses them: compare at FP16's accuracy, not FP32's.
    tolerance = checks.TOLERANCE if not any(formats) else checks.FP16_TOLERANCE
    error = checks.verify(model_path, pipeline, feeds, names, tolerance)
    compute = graph.costs()
    bounds = [0, *[c.position + 1 for c in cuts], len(compute)]
    shares = [float(compute[a:b].sum()) for a, b in zip(bounds, bounds[1:], strict=False)]
    return SnipResult(files, pipeline, cuts, shares, error, names)


def _check_given(graph: Graph, given: dict[str, np.ndarray], model_path: Path) -> None:
    unknown = sorted(set(given) - set(graph.inputs))
    if unknown:
        raise SnipError(f"{display_name(model_path)}: --inputs has '{unknown[0]}', which is not a model input "
                        f"(inputs: {', '.join(graph.inputs)})")
