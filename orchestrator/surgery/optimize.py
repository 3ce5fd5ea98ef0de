"""Graph surgery on an ONNX model: constant folding, no-op removal, trivial linear operators, common
subexpressions. Each pass reports what it removed (nodes by op type, FLOPs at batch 1, weight bytes).

Libraries do most passes: onnx-graphsurgeon folds constants (it evaluates constant subgraphs with
onnxruntime), onnxoptimizer removes no-ops and common subexpressions; ``trivial.py`` does what neither
does. The graph's inputs and outputs (names, dtypes, shapes) never change, so a snippet's bindings hold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import InternalError, OrchestratorError
from .cost import Cost, cost, inferred_shapes
from .edges import EdgeReport, strip_edges_bytes
from .trivial import replace_trivial

VERSION = "1"  # bump when a pass changes what it produces: optimised snippets are cached by it


class OptimizeError(OrchestratorError):
    """A model cannot be read or optimised."""


@dataclass(frozen=True)
class PassReport:
    name: str
    by: str  # the library (or module) that does it
    before: Cost
    after: Cost
    notes: tuple[str, ...] = ()

    @property
    def removed_ops(self) -> dict[str, int]:
        return {op: n for op, n in (self.before.ops - self.after.ops).items() if n}

    def row(self) -> str:
        removed = ", ".join(f"{n} {op}" for op, n in sorted(self.removed_ops.items())) or "-"
        added = self.after.ops - self.before.ops
        if added:
            removed += " (added " + ", ".join(f"{n} {op}" for op, n in sorted(added.items())) + ")"
        return (f"{self.name:<18} {self.by:<18} {self.before.nodes - self.after.nodes:>6} "
                f"{self.before.flops - self.after.flops:>14,} {self.before.weight_bytes - self.after.weight_bytes:>12,}"
                f"  {removed}")


@dataclass(frozen=True)
class OptimizeReport:
    passes: tuple[PassReport, ...]
    edges: EdgeReport | None = None  # with strip_edges (its pass is the last of ``passes`` when it stripped)

    @property
    def before(self) -> Cost:
        return self.passes[0].before

    @property
    def after(self) -> Cost:
        return self.passes[-1].after

    def table(self) -> str:
        head = f"{'pass':<18} {'by':<18} {'-nodes':>6} {'-FLOPs (batch 1)':>14} {'-weight bytes':>12}  removed ops"
        lines = [head, *(p.row() for p in self.passes)]
        lines += [f"  {note}" for p in self.passes for note in p.notes]
        b, a = self.before, self.after
        lines.append(f"total: nodes {b.nodes} -> {a.nodes}, FLOPs {b.flops:,} -> {a.flops:,}, "
                     f"weight bytes {b.weight_bytes:,} -> {a.weight_bytes:,}")
        lines += self.edges.lines() if self.edges else []
        return "\n".join(lines)


def _fold_constants(model):
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(model)
    # Broadcasts are cheaper to compute than to store: a bias expanded to an activation's shape stays an Expand.
    graph.toposort().fold_constants(should_exclude_node=lambda n: n.op in ("Expand", "Tile"))
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    return gs.export_onnx(graph), []


def _onnxoptimizer(*passes: str) -> Callable:
    def run(model):
        import onnxoptimizer

        return onnxoptimizer.optimize(model, list(passes), fixed_point=True), []
    return run


_NOOPS = ("eliminate_identity", "eliminate_nop_dropout", "eliminate_nop_with_unit", "eliminate_nop_cast",
          "eliminate_nop_transpose", "eliminate_nop_reshape", "eliminate_nop_pad", "eliminate_nop_expand",
          "eliminate_nop_concat", "eliminate_nop_split", "eliminate_nop_flatten", "eliminate_deadend")
_CLEANUP = ("eliminate_deadend", "eliminate_unused_initializer", "eliminate_duplicate_initializer")

# (name, by, function); a name may repeat: rewrites expose new no-ops and constants.
PASSES: tuple[tuple[str, str, Callable], ...] = (
    ("fold_constants", "onnx-graphsurgeon", _fold_constants),
    ("eliminate_noops", "onnxoptimizer", _onnxoptimizer(*_NOOPS)),
    ("replace_trivial", "orchestrator", replace_trivial),
    ("eliminate_noops", "onnxoptimizer", _onnxoptimizer(*_NOOPS)),
    ("fold_constants", "onnx-graphsurgeon", _fold_constants),
    ("eliminate_cse", "onnxoptimizer", _onnxoptimizer("eliminate_common_subexpression", "eliminate_deadend")),
    ("cleanup", "onnxoptimizer", _onnxoptimizer(*_CLEANUP)),
)


def optimize_model(model, *, name: str = "model") -> tuple[object, OptimizeReport]:
    """The optimised model and the report of every pass; ``name`` appears in errors."""
    reports = []
    shapes = inferred_shapes(model)
    for pass_name, by, function in PASSES:
        previous, previous_shapes = model, shapes
        try:
            model, notes = function(model)
        except OrchestratorError:
            raise
        except Exception as exc:  # library errors: name the pass and the model
            raise OptimizeError(f"{name}: pass {pass_name} ({by}) failed: {str(exc).splitlines()[0]}") from None
        shapes = inferred_shapes(model)  # what the pass let inference see counts before it too
        before = cost(previous, known=shapes[0], inferred=previous_shapes)
        reports.append(PassReport(pass_name, by, before, cost(model, inferred=shapes), tuple(notes)))
    return model, OptimizeReport(tuple(reports))


def _interface(model) -> list[tuple[str, str]]:
    inits = {t.name for t in model.graph.initializer}
    values = [v for v in model.graph.input if v.name not in inits] + list(model.graph.output)
    return [(v.name, str(v.type.tensor_type.elem_type)) for v in values]


def optimize_bytes(data: bytes, *, name: str = "model") -> tuple[bytes, OptimizeReport]:
    """Serialized model in, serialized optimised model out; the interface is checked unchanged."""
    import onnx

    try:
        model = onnx.load_from_string(data)
    except Exception as exc:
        raise OptimizeError(f"{name}: cannot read ONNX model: {str(exc).splitlines()[0]}") from None
    optimized, report = optimize_model(model, name=name)
    if _interface(optimized) != _interface(model):
        raise InternalError(f"{name}: optimisation changed the model's inputs/outputs: "
                            f"{_interface(model)} -> {_interface(optimized)}")
    return optimized.SerializeToString(), report


def optimize_file(source: Path, destination: Path, *, strip_edges: bool = False) -> OptimizeReport:
    """``orchestrator optimize``: read, optimise, check against the original on the CPU, write atomically.
    With ``strip_edges``, the optimised model's pre/post-processing is then stripped (see ``edges.py``) and
    checked by replaying the description around the stripped model."""
    from .. import cache
    from ..pipeline.source import display_name
    from .snippets import onnx_file_bytes

    try:
        data = onnx_file_bytes(source)  # external data inlined: the written model is self-contained
    except OSError as exc:
        raise OptimizeError(f"{display_name(source)}: cannot read: {exc.strerror}") from None
    except OrchestratorError:
        raise
    except Exception as exc:
        raise OptimizeError(f"{display_name(source)}: cannot read ONNX model: {str(exc).splitlines()[0]}") from None
    optimized, report = optimize_bytes(data, name=display_name(source))
    from .verify import check_same_outputs

    check_same_outputs(data, optimized, name=display_name(source))
    if strip_edges:
        optimized, report = _strip(optimized, report, name=display_name(source))
    cache.write_file_atomic(destination, optimized)
    return report


def _strip(data: bytes, report: OptimizeReport, *, name: str) -> tuple[bytes, OptimizeReport]:
    import onnx

    from .verify import check_stripped

    stripped, edges = strip_edges_bytes(data, name=name)
    passes = report.passes
    if edges.stripped:
        check_stripped(data, stripped, edges, name=name)
        before, after = cost(onnx.load_from_string(data)), cost(onnx.load_from_string(stripped))
        passes += (PassReport("strip_edges", "orchestrator", before, after),)
    return stripped, OptimizeReport(passes, edges)
