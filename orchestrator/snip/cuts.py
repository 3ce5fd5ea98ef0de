"""Where to cut: what a cut costs, cuts named by the user, and the cheapest balanced cuts.

A cut after position i of the activation order carries every activation computed so far that a later node
reads. Its estimated cost, in multiply-accumulate equivalents so that it compares with the pieces' compute:

- bytes crossing: each tensor is written once and read once more than without the cut; a tensor that
  already crossed the previous cut is passed through (the pipeline defines it once) and costs nothing more,
  so a long skip is charged once however many cuts it crosses;
- fusion lost: a tensor from a conv/matmul/norm read by a pointwise activation after the cut is written and
  read again by a separate activation kernel; a tensor read by a Concat after the cut is copied into the
  concat's output, where TensorRT would have written it in place;
- reformats: with FP16 snippets, TensorRT converts each FP32 linear boundary tensor to and from its own
  FP16 format at the cut (``--boundary-format hwc8`` stores 4-D tensors in FP16 channels-last instead:
  only the channel padding to a multiple of 8 is paid; other ranks stay FP32 linear).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..pipeline.source import display_name
from .graph import Graph, SnipError, first_output, node_reads

# Bytes moved vs MACs: an H100 does ~500 FP16 TMAC/s against ~3 TB/s, ~150 MACs in the time of one byte;
# TensorRT reaches a fraction of peak MACs on small layers, so a third of that.
MACS_PER_BYTE = 50.0
# TensorRT fuses a unary activation into whatever computes its input, and a bias/residual/scale into a
# conv or matmul: a cut between the two costs a separate pass over the tensor.
_ACTIVATIONS = {"Relu", "Sigmoid", "Tanh", "Clip", "LeakyRelu", "HardSigmoid", "HardSwish", "Elu", "Selu",
                "Softplus", "Gelu", "Erf", "PRelu", "Mish"}
_EPILOGUES = {"BatchNormalization", "Mul", "Add", "Div", "Sub"}
_FUSES_EPILOGUE = {"Conv", "ConvTranspose", "MatMul", "Gemm", "BatchNormalization"}
# Tolerances for balance, tried in turn: (smallest, largest) piece as a fraction of the mean.
# Past the last, the largest piece is kept as small as the cuts allow (_tightest).
_BALANCE = [(0.5, 1.5), (0.5, 2.0), (0.25, 2.0)]


@dataclass(frozen=True)
class Cut:
    """A cut after activation node ``position``: the tensors crossing it, their bytes, the estimated cost."""
    position: int
    tensors: tuple[str, ...]
    nbytes: int
    cost: float  # of the tensors that did not cross the previous cut
    notes: tuple[str, ...] = ()
    passed: tuple[str, ...] = ()  # tensors that crossed the previous cut too: passed through, free

    def describe(self) -> str:
        notes = f"; {'; '.join(self.notes)}" if self.notes else ""
        passed = f" ({len(self.passed)} passed through from the previous cut)" if self.passed else ""
        return (f"{'+'.join(self.tensors) or '(nothing crosses)'}: {len(self.tensors)} tensor(s){passed}, "
                f"{self.nbytes / 2**20:.3g} MiB, est. cost {self.cost:.3g} MAC-eq{notes}")


class CostModel:
    """Estimated cost of cutting a graph after each position, for one precision and boundary format."""

    def __init__(self, graph: Graph, precision: str, boundary_format: str):
        self.graph = graph
        self.fp16 = precision in ("fp16", "bf16")
        self.hwc8 = boundary_format == "hwc8"
        self.readers: dict[str, list] = {}
        for i, node in enumerate(graph.order):
            for name in node_reads(node):
                self.readers.setdefault(name, []).append((i, node))
        self.shape_valued = self._shape_valued()

    def _shape_valued(self) -> set[str]:
        """Activations computed from Shape/Size: TensorRT needs them as shape tensors, never as engine I/O."""
        found: set[str] = set()
        for node in self.graph.order:
            acts = [n for n in node_reads(node) if self.graph.is_activation(n)]
            if node.op_type in ("Shape", "Size") or (acts and all(n in found for n in acts)):
                found.update(o for o in node.output if o)
        return found

    def cut(self, position: int, tensors: list[str], previous: tuple[str, ...] = ()) -> Cut:
        """The cut after ``position`` carrying ``tensors``; those in ``previous`` (the tensors crossing the
        cut before it) are passed through and cost nothing more."""
        total, cost, notes = 0, 0.0, []
        for t in tensors:
            nbytes, extra, note = self.tensor(t)
            total += nbytes
            if t not in previous or not np.isfinite(extra):
                cost += extra
                notes += [note] if note else []
        return Cut(position, tuple(tensors), total, cost, tuple(notes), tuple(t for t in tensors if t in previous))

    def tensor(self, t: str) -> tuple[int, float, str | None]:
        """(bytes, cost, note) of carrying ``t`` across one or more cuts."""
        graph = self.graph
        ttype = graph.types.get(t)
        if ttype is None or ttype.dtype is None or t in self.shape_valued:
            return 0, np.inf, f"{t} cannot cross a cut (no tensor type, or a shape tensor)"
        four_d = len(ttype.shape) == 4 and ttype.dtype == "float32"
        nbytes = graph.nbytes(t)
        if four_d and self.hwc8 and self.fp16:
            c = ttype.shape[1] if isinstance(ttype.shape[1], int) else graph.sizes.get(ttype.shape[1], 1)
            nbytes = nbytes // 2 * (-(-c // 8) * 8) // max(c, 1)
        cost = 2.0 * nbytes
        readers = [n for _, n in self.readers.get(t, [])]
        producer = graph.producer.get(t)
        note = None
        fused = [n for n in readers if producer is not None and (n.op_type in _ACTIVATIONS or (
            n.op_type in _EPILOGUES and producer.op_type in _FUSES_EPILOGUE))]
        if fused:
            cost += 2.0 * nbytes
            note = f"fusion lost: {producer.op_type} -> {fused[0].op_type} at {t}"
        if any(n.op_type == "Concat" for n in readers):
            cost += 2.0 * nbytes
            note = f"{t} is copied into a Concat"
        if self.fp16 and ttype.dtype == "float32" and not (four_d and self.hwc8):
            cost += 2.0 * nbytes
            note = note or f"{t} is reformatted (FP32 linear boundary of FP16 snippets)"
        return nbytes, cost * MACS_PER_BYTE, note

    def piece_costs(self) -> np.ndarray:
        """C[a, b]: the cost of the cut closing a piece of nodes [a, b) (cut after node b - 1) when the
        previous cut closed at a: the tensors produced in [a, b) and read at b or later. Tensors crossing
        both cuts were charged at the earlier one. inf where the cut would carry a tensor that cannot cross."""
        graph, n = self.graph, len(self.graph.order)
        diff = np.zeros((n + 2, n + 2))
        blocked = np.zeros(n + 2)
        for t, last in graph.last_use.items():
            p = graph.position.get(t)
            if p is None or last <= p:
                continue
            cost = self.tensor(t)[1]
            if not np.isfinite(cost):  # every cut after p and up to last carries it
                blocked[p + 1] += 1
                blocked[last + 1] -= 1
                continue
            # a in [0, p], b in [p + 1, last]: a 2-D difference array
            diff[0, p + 1] += cost
            diff[0, last + 1] -= cost
            diff[p + 1, p + 1] -= cost
            diff[p + 1, last + 1] += cost
        costs = np.cumsum(np.cumsum(diff, axis=0), axis=1)[: n + 1, : n + 1]
        costs[:, np.cumsum(blocked)[: n + 1] > 0] = np.inf
        costs[:, n] = 0.0  # the last piece ends the model: no cut
        return costs


def cuts_at(graph: Graph, model: CostModel, text: str, model_path: Path) -> list[Cut]:
    """The cuts after each named tensor ('a,b'; 'a+b' cuts after the later of a and b)."""
    where = display_name(model_path)
    positions = set()
    for part in filter(None, text.split(",")):
        positions.add(max(_position(graph, name, where) for name in part.split("+")))
    live = graph.live_sets()
    cuts: list[Cut] = []
    for i in sorted(positions):
        cuts.append(model.cut(i, live[i], cuts[-1].tensors if cuts else ()))
    for cut in cuts:
        if not np.isfinite(cut.cost):
            blocked = next(n for n in cut.notes if "cannot cross a cut" in n)
            raise SnipError(f"{where}: cutting after node {cut.position} ({first_output(graph.order[cut.position])}): "
                            f"{blocked}; cut before it is computed or after its last use")
    return cuts


def _position(graph: Graph, name: str, where: str) -> int:
    if name in graph.constant:
        raise SnipError(f"{where}: '{name}' is computed from weights and constants only: it is never cut, "
                        f"each piece that needs it gets its own copy")
    if name in graph.inputs:
        raise SnipError(f"{where}: '{name}' is a model input; cut after a tensor computed from it")
    holder = _subgraph_holder(graph, name) if name not in graph.position else None
    if holder is not None:
        raise SnipError(f"{where}: '{name}' is computed inside the {holder.op_type} '{holder.name}' (a subgraph "
                        f"runs whole): cut after '{first_output(holder)}' or before the {holder.op_type}")
    if name not in graph.position:
        known = list(graph.position)
        hint = difflib.get_close_matches(name, known, n=3)
        raise SnipError(f"{where}: no tensor '{name}' in the model"
                        + (f" (did you mean {', '.join(repr(h) for h in hint)}?)" if hint else ""))
    if graph.position[name] == len(graph.order) - 1:
        raise SnipError(f"{where}: '{name}' is a model output computed last; cut before it"
                        if name in graph.outputs else f"{where}: nothing is computed after '{name}'")
    return graph.position[name]


def _subgraph_holder(graph: Graph, name: str):
    """The If/Loop/Scan node of the main graph whose subgraphs (at any depth) compute ``name``, else None."""
    def computes(body) -> bool:
        return any(name in n.output or any(computes(b) for a in n.attribute
                                           for b in ([a.g] if a.HasField("g") else a.graphs)) for n in body.node)

    return next((n for n in graph.order if any(computes(b) for a in n.attribute
                                              for b in ([a.g] if a.HasField("g") else a.graphs))), None)


def balanced_cuts(graph: Graph, model: CostModel, pieces: int, model_path: Path) -> list[Cut]:
    """The K - 1 cuts of least total cost whose pieces' estimated compute stays near the mean. A node that
    alone costs more than twice the mean (an LSTM, a full-resolution stem conv) cannot be balanced: it is
    set aside, one per piece, and the pieces are balanced around the mean of the rest."""
    n = len(graph.order)
    if pieces < 1:
        raise SnipError("--pieces must be at least 1")
    if pieces > max(n, 1):
        raise SnipError(f"{display_name(model_path)}: {n} compute nodes (constants aside); at most {n} pieces")
    if pieces == 1:
        return []
    compute = np.concatenate([[0.0], np.cumsum(graph.costs())])
    costs = model.piece_costs()
    _refuse_blocked(graph, model, costs, pieces, display_name(model_path))
    alone = oversized(np.diff(compute), pieces)
    for low, high in [*_BALANCE, (0.0, _tightest(compute, costs, pieces))]:
        ends = _partition(compute, costs, pieces, low, high, alone)
        if ends is None and alone.any():  # set aside, they leave stretches no balanced piece can take
            ends = _partition(compute, costs, pieces, low, high)
        if ends is not None:
            live = graph.live_sets()
            cuts: list[Cut] = []
            for e in ends:
                cuts.append(model.cut(e - 1, live[e - 1], cuts[-1].tensors if cuts else ()))
            return cuts
    raise SnipError(f"{display_name(model_path)}: no {pieces} pieces can be cut without carrying a tensor "
                    f"that cannot cross a cut")


def _tightest(compute: np.ndarray, cut_costs: np.ndarray, pieces: int) -> float:
    """The least bound on the largest piece (a fraction of the mean) that some K pieces meet, no piece too
    small: a model whose compute sits in a few nodes (a small CNN's full-resolution convs before a cheap
    head) still gets its heavy nodes spread over the pieces instead of the cheapest cuts alone. inf where
    no cuts can be made at all."""
    mean = compute[-1] / pieces
    spans = np.unique((compute[None, :] - compute[:, None])[np.triu_indices(len(compute), 1)]) / max(mean, 1e-30)
    lo, hi = 0, len(spans) - 1
    if _partition(compute, cut_costs, pieces, 0.0, spans[hi]) is None:
        return np.inf
    while lo < hi:  # feasibility is monotone in the bound
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if _partition(compute, cut_costs, pieces, 0.0, spans[mid]) is not None else (mid + 1, hi)
    return float(spans[lo])


def _refuse_blocked(graph: Graph, model: CostModel, costs: np.ndarray, pieces: int, where: str) -> None:
    """K pieces need K - 1 places to cut that carry only tensors able to cross a cut."""
    n = len(graph.order)
    blocked = [e for e in range(1, n) if not np.isfinite(costs[0, e])]
    if pieces - 1 <= n - 1 - len(blocked):
        return
    live = graph.live_sets()[blocked[0] - 1]
    tensor = next(t for t in live if not np.isfinite(model.tensor(t)[1]))
    raise SnipError(f"{where}: at most {n - len(blocked)} pieces: {len(blocked)} of the {n - 1} places to cut "
                    f"would carry a shape tensor or an untyped tensor (first: '{tensor}')")


def oversized(node_costs: np.ndarray, pieces: int) -> np.ndarray:
    """Nodes that alone cost more than twice the mean of the other pieces, one piece set aside for each.
    Setting them aside lowers the mean, so more may follow; they stay fewer than half the pieces left."""
    big = np.zeros(len(node_costs), bool)
    while True:
        found = node_costs > 2.0 * node_costs[~big].sum() / (pieces - big.sum())
        if (found == big).all():
            return big
        big = found


def _partition(compute: np.ndarray, cut_costs: np.ndarray, pieces: int, low: float, high: float,
               alone: np.ndarray | None = None):
    """Dynamic programme over piece boundaries e (piece = nodes [e', e), closed by a cut costing
    cut_costs[e', e]): least total cut cost with every piece's compute within [low, high] x mean; ties go
    to the better balanced. A node marked ``alone`` is outside the bounds and the mean: its piece holds no
    other such node and at most ``high`` x mean beside it. None if infeasible."""
    n = len(compute) - 1
    alone = np.zeros(n, bool) if alone is None else alone
    mean = (compute[-1] - np.diff(compute)[alone].sum()) / (pieces - alone.sum())
    span = compute[None, :] - compute[:, None]  # span[e', e]
    tol = 1e-9 * max(mean, 1.0)
    ok = (span >= low * mean - tol) & (span <= high * mean + tol) & np.triu(np.ones((n + 1, n + 1), bool), 1)
    if alone.any():  # a piece holds at most one oversized node, and no more than a mean piece beside it
        held = np.concatenate([[0], np.cumsum(alone)])
        big = np.concatenate([[0.0], np.cumsum(np.where(alone, np.diff(compute), 0.0))])
        extra = span - (big[None, :] - big[:, None])
        holds = held[None, :] - held[:, None]
        ok = np.where(holds == 1, extra <= high * mean + tol, ok & (holds == 0))
    weight = np.where(ok, 1e-3 * np.abs(span - mean) + cut_costs, np.inf)
    best = np.full(n + 1, np.inf)
    best[0] = 0.0
    back = []
    for _ in range(pieces):
        total = best[:, None] + weight
        back.append(np.argmin(total, axis=0))
        best = total[back[-1], np.arange(n + 1)]
    if not np.isfinite(best[n]):
        return None
    ends, e = [], n
    for k in range(pieces - 1, 0, -1):
        e = int(back[k][e])
        ends.append(e)
    return ends[::-1]
