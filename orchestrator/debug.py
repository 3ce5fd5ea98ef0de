"""Step-by-step debug mode: a setting of the same executor, not a second code path.

``Orchestrator(..., debug=True)`` installs a ``DebugObserver``: after every step it synchronises and
checks for errors (so a fault names the step that caused it), records the step's inputs and outputs,
times it, optionally dumps every tensor (``.npy`` + ``manifest.json`` + ``summary.txt``), checks
sentinels (NaN/Inf, values beyond the FP16 range) and poisons the memory of tensors that just died
(NaN), so that stale reads show up. ``debug_run`` compares a run with another one (the CPU reference,
every snippet at fp32, or another pipeline) tensor by tensor and names the first step that diverges;
``step_through`` yields each step as it runs.
"""

from __future__ import annotations

import dataclasses
import json
import queue
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .decisions import block_kind
from .errors import ExecutionError, OrchestratorError
from .pipeline.ir import IfBlock, Node, Pipeline, SnippetCall, Step, SwitchBlock, WhileBlock

FP16_MAX = 65504.0


@dataclass
class TensorSummary:
    shape: list[int]
    dtype: str
    min: float | None
    max: float | None
    mean: float | None
    std: float | None
    nan: int
    inf: int

    @classmethod
    def of(cls, array: np.ndarray) -> TensorSummary:
        values = array.astype(np.float64, copy=False)
        finite = values[np.isfinite(values)] if values.size else values
        stats = [float(f(finite)) if finite.size else None for f in (np.min, np.max, np.mean, np.std)]
        return cls(list(array.shape), str(array.dtype), *stats, int(np.isnan(values).sum()),
                   int(np.isinf(values).sum()))


@dataclass
class StepRecord:
    """One executed step: what it read and wrote (as numpy), how long it took."""

    index: int
    step: Step
    occurrence: int  # how many times this step ran before (loops)
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    seconds: float

    @property
    def name(self) -> str:
        return self.step.name

    @property
    def kind(self) -> str:
        return "snippet" if isinstance(self.step, SnippetCall) else "kernel"

    @property
    def target(self) -> str:
        return self.step.snippet if isinstance(self.step, SnippetCall) else self.step.kernel


@dataclass
class Divergence:
    tensor: str
    max_abs: float
    rel_l2: float
    worst: list[tuple[tuple[int, ...], float, float]]  # (index, got, expected)


@dataclass
class StepComparison:
    record: StepRecord
    divergences: list[Divergence]
    missing: str | None = None  # the other run did not run this step (a branch differs)

    @property
    def ok(self) -> bool:
        return not self.divergences and self.missing is None


@dataclass
class DebugReport:
    records: list[StepRecord]
    branches: list[tuple[str, str]]
    comparisons: list[StepComparison] = field(default_factory=list)
    isolated: str | None = None  # verdict of re-running the first diverging step in isolation
    decisions: list[tuple[int, str, str, str]] = field(default_factory=list)  # (records before, block, kind, taken)

    @property
    def first_divergence(self) -> StepComparison | None:
        return next((c for c in self.comparisons if not c.ok), None)

    def table(self) -> str:
        compared = {id(c.record): c for c in self.comparisons}
        lines = [f"{'#':>3} {'step':24} {'kind':8} {'ms':>8}  {'tensor':18} {'shape':18} {'min':>10} "
                 f"{'max':>10} {'nan/inf':>8}  vs other"]
        for r in self.records:
            lines += self._decision_rows(r.index)
            for tensor, array in r.outputs.items():
                s = TensorSummary.of(array)
                verdict = _verdict(compared.get(id(r)), tensor)
                lines.append(f"{r.index:>3} {r.name[:24]:24} {r.kind:8} {r.seconds * 1e3:8.3f}  {tensor[:18]:18} "
                             f"{str(s.shape)[:18]:18} {_fmt(s.min):>10} {_fmt(s.max):>10} "
                             f"{f'{s.nan}/{s.inf}':>8}  {verdict}")
        lines += self._decision_rows(len(self.records))
        first = self.first_divergence
        if self.comparisons:
            lines.append("first divergence: " + (_describe(first) if first else "none"))
        if self.isolated:
            lines.append(self.isolated)
        return "\n".join(lines)

    def _decision_rows(self, position: int) -> list[str]:
        """The branch decisions made after ``position`` recorded steps, as table rows."""
        return [f"{'':>3} {name[:24]:24} {kind:8} {'':>8}  -> {taken}"
                for at, name, kind, taken in self.decisions if at == position]


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def _verdict(comparison: StepComparison | None, tensor: str) -> str:
    if comparison is None:
        return ""
    if comparison.missing:
        return "not run there"
    bad = next((d for d in comparison.divergences if d.tensor == tensor), None)
    return "ok" if bad is None else f"DIVERGES (max abs {bad.max_abs:.3g}, rel L2 {bad.rel_l2:.3g})"


def _describe(c: StepComparison) -> str:
    r = c.record
    if c.missing:
        return f"step '{r.name}' ({r.kind} {r.target}): {c.missing}"
    d = c.divergences[0]
    worst = ", ".join(f"{list(i)}: {g:.6g} vs {e:.6g}" for i, g, e in d.worst)
    return (f"step '{r.name}' ({r.kind} {r.target}), tensor '{d.tensor}': max abs error {d.max_abs:.4g}, "
            f"relative L2 {d.rel_l2:.4g}; worst elements {worst}")


class StopRun(Exception):
    """Raised inside a stepped run when the caller stops iterating."""


class DebugObserver:
    """The executor observer of debug mode. Configure a run with ``begin``; read ``records`` after."""

    def __init__(self, pipeline: Pipeline, backend: Any, user_observer: Any = None):
        self.pipeline, self.backend, self.user = pipeline, backend, user_observer
        self.dies_after = _dies_after(pipeline)
        self.begin()

    def begin(self, *, dump_dir: Path | None = None, steps: set[str] | None = None, sentinels: bool = False,
              poison: bool = True, on_step: Any = None) -> None:
        self.dump_dir, self.steps, self.sentinels, self.poison = dump_dir, steps, sentinels, poison
        self.on_step = on_step
        self.records: list[StepRecord] = []
        self.branches: list[tuple[str, str]] = []
        self.decisions: list[tuple[int, str, str, str]] = []
        self.counts: dict[str, int] = {}
        self._start = time.perf_counter()
        self._manifest: list[dict[str, Any]] = []
        if dump_dir is not None:
            dump_dir.mkdir(parents=True, exist_ok=True)

    def step_started(self, step: Step) -> None:
        self._start = time.perf_counter()

    def step_done(self, step: Step) -> None:
        try:
            self.backend.synchronize()
        except OrchestratorError as exc:
            raise ExecutionError(f"step '{step.name}' ({_kind(step)}) failed: {exc}") from None
        seconds = time.perf_counter() - self._start
        occurrence = self.counts.get(step.name, 0)
        self.counts[step.name] = occurrence + 1
        if self.steps is None or step.name in self.steps:
            record = StepRecord(len(self.records), step, occurrence, self._fetch(step.reads),
                                self._fetch(step.writes), seconds)
            self.records.append(record)
            if self.sentinels:
                self._check_sentinels(record)
            if self.dump_dir is not None:
                self._dump(record)
            if self.on_step is not None:
                self.on_step(record)
        if self.poison:
            for tensor in self.dies_after.get(step.id, ()):
                self.backend.poison(tensor)
        if self.user is not None:
            self.user.step_done(step)

    def branch_taken(self, block: Node, taken: str) -> None:
        self.branches.append((block.name, taken))
        self.decisions.append((len(self.records), block.name, block_kind(block), taken))
        if self.user is not None:
            self.user.branch_taken(block, taken)

    def _fetch(self, names) -> dict[str, np.ndarray]:
        return {n: self.backend.fetch(n) for n in dict.fromkeys(names)}

    def _check_sentinels(self, record: StepRecord) -> None:
        fp16 = isinstance(record.step, SnippetCall) and \
            self.pipeline.snippets[record.step.snippet].precision == "fp16"
        for tensor, array in record.outputs.items():
            if array.dtype.kind != "f":
                continue
            bad = int((~np.isfinite(array)).sum())
            if bad:
                raise ExecutionError(f"sentinel: step '{record.name}' ({record.kind} {record.target}) produced "
                                     f"{bad} NaN/Inf value(s) in tensor '{tensor}' (the first step to do so)")
            peak = float(np.abs(array).max()) if array.size else 0.0
            if (fp16 or array.dtype == np.float16) and peak > FP16_MAX:
                raise ExecutionError(f"sentinel: step '{record.name}' ({record.kind} {record.target}, fp16) "
                                     f"produced |x| = {peak:.6g} in tensor '{tensor}', beyond the FP16 range "
                                     f"({FP16_MAX:g})")

    def _dump(self, record: StepRecord) -> None:
        entries = []
        for tensor, array in record.outputs.items():
            file = f"{record.index:03d}_{record.name}_{tensor}.npy"
            np.save(self.dump_dir / file, array)
            entries.append({"step": record.name, "index": record.index, "kind": record.kind,
                            "target": record.target, "occurrence": record.occurrence, "tensor": tensor,
                            "file": file, "seconds": record.seconds,
                            **dataclasses.asdict(TensorSummary.of(array))})
        self._manifest += entries

    def finish(self, report: DebugReport) -> None:
        if self.dump_dir is None:
            return
        manifest = {"pipeline": self.pipeline.name, "tensors": self._manifest,
                    "branches": [{"block": b, "taken": t} for b, t in self.branches]}
        (self.dump_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        (self.dump_dir / "summary.txt").write_text(report.table() + "\n")


def _kind(step: Step) -> str:
    return f"snippet {step.snippet}" if isinstance(step, SnippetCall) else f"kernel {step.kernel}"


def _dies_after(pipeline: Pipeline) -> dict[int, list[str]]:
    """step id -> intermediates whose last read is that step, outside loops (safe to poison after it)."""
    last: dict[str, int] = {}
    looped: set[str] = set()

    def visit(nodes, in_loop: bool) -> None:
        for node in nodes:
            if isinstance(node, IfBlock | SwitchBlock | WhileBlock):
                for name in _condition_reads(node):
                    last[name] = node.id
                    if isinstance(node, WhileBlock):
                        looped.add(name)
                for branch in node.branches:
                    visit(branch, in_loop or isinstance(node, WhileBlock))
                if isinstance(node, WhileBlock):
                    looped.update(n for pair in node.carry for n in pair)
                continue
            for name in node.reads:
                last[name] = node.id
                if in_loop:
                    looped.add(name)

    visit(pipeline.body, False)
    intermediates = {n for n, t in pipeline.tensors.items() if t.origin == "step"} - set(pipeline.outputs)
    result: dict[int, list[str]] = {}
    for name, step_id in last.items():
        if name in intermediates and name not in looped:
            result.setdefault(step_id, []).append(name)
    return result


def _condition_reads(block: Node) -> list[str]:
    if isinstance(block, SwitchBlock):
        return [block.subject]
    return [n for n in (block.condition.subject, block.condition.rhs) if isinstance(n, str)]


# ---- comparing runs -------------------------------------------------------------------------------


def compare_arrays(tensor: str, got: np.ndarray, want: np.ndarray, atol: float, rtol: float) -> Divergence | None:
    if got.shape != want.shape:
        return Divergence(tensor, float("inf"), float("inf"), [])
    a, b = got.astype(np.float64), want.astype(np.float64)
    both_nan = np.isnan(a) & np.isnan(b)
    err = np.where(both_nan, 0.0, np.abs(a - b))
    err = np.where(np.isnan(err), np.inf, err)
    if np.all(err <= atol + rtol * np.abs(b)):
        return None
    worst = np.argsort(err.reshape(-1))[::-1][:3]
    indices = [tuple(int(i) for i in np.unravel_index(w, a.shape)) for w in worst]
    norm = np.linalg.norm(np.nan_to_num(b))
    rel = float(np.linalg.norm(np.nan_to_num(a - b, nan=np.inf)) / norm) if norm else float("inf")
    return Divergence(tensor, float(err.max()), rel, [(i, float(a[i]), float(b[i])) for i in indices])


def compare_runs(ours: list[StepRecord], theirs: list[StepRecord], atol: float, rtol: float) -> list[StepComparison]:
    """Compare the tensors each step wrote with the same tensors (same step name and occurrence) there."""
    index = {(r.name, r.occurrence): r for r in theirs}
    out = []
    for record in ours:
        other = index.get((record.name, record.occurrence))
        if other is None:
            out.append(StepComparison(record, [], "the other run did not run this step (a branch went the other way)"))
            continue
        diffs = [d for t, a in record.outputs.items() if t in other.outputs
                 for d in [compare_arrays(t, a, other.outputs[t], atol, rtol)] if d is not None]
        out.append(StepComparison(record, diffs))
    return out


def rerun_isolated(pipeline: Pipeline, record: StepRecord, atol: float, rtol: float) -> str:
    """Run the step as ``pipeline`` (the comparison's) defines it, on the CPU reference backend, with the
    inputs it had in *this* run, and say whether the step itself or its inputs are to blame."""
    from .backends.cpu import CpuBackend
    from .pipeline.ir import KernelCall, walk

    step = next((n for n in walk(pipeline.body) if isinstance(n, SnippetCall | KernelCall) and n.name == record.name),
                None)
    if step is None:
        return f"'{record.name}' does not exist in the comparison pipeline; no isolated re-run"
    missing = [t for t in step.reads if t not in record.inputs]
    if missing:
        return f"'{record.name}' reads {', '.join(missing)} there, which it did not read here; no isolated re-run"
    backend = CpuBackend(pipeline)
    backend.values.update({t: record.inputs[t] for t in step.reads})
    backend.step_runner(step)()
    again = {t: backend.values[t] for t in record.outputs if t in step.writes}
    wrong = [t for t, a in record.outputs.items() if t in again and compare_arrays(t, a, again[t], atol, rtol)]
    if wrong:
        return (f"isolated re-run of '{record.name}' on the CPU reference with this run's inputs disagrees with "
                f"its output ({', '.join(wrong)}): the step itself is wrong")
    return (f"isolated re-run of '{record.name}' on the CPU reference with this run's inputs reproduces its "
            f"output: the step is right; its inputs already differed (within tolerance) and the step amplified it")


# ---- entry points used by Orchestrator -------------------------------------------------------------


def debug_run(orch: Any, inputs: Mapping[str, Any], *, dump_dir: str | Path | None = None,
              compare: str | Any | None = None, atol: float = 1e-4, rtol: float = 1e-3,
              steps: list[str] | None = None, sentinels: bool = False) -> DebugReport:
    observer = _observer(orch)
    observer.begin(dump_dir=Path(dump_dir) if dump_dir else None, steps=set(steps) if steps else None,
                   sentinels=sentinels)
    orch.run(inputs)
    report = DebugReport(observer.records, observer.branches, decisions=observer.decisions)
    if compare is not None:
        other = _other(orch, compare)
        other_observer = _observer(other)
        other_observer.begin(steps=set(steps) if steps else None)
        other.run(inputs)
        report.comparisons = compare_runs(report.records, other_observer.records, atol, rtol)
        first = report.first_divergence
        if first is not None and not first.missing:
            report.isolated = rerun_isolated(other.pipeline, first.record, atol, rtol)
    observer.finish(report)
    return report


def step_through(orch: Any, inputs: Mapping[str, Any]) -> Iterator[StepRecord]:
    """Yield each step's record as the run reaches it; the run waits until the next item is asked for.
    Stop iterating to abandon the run."""
    observer = _observer(orch)
    events: queue.Queue = queue.Queue(maxsize=1)
    resume = threading.Semaphore(0)
    state = {"stop": False}

    def on_step(record: StepRecord) -> None:
        events.put(("step", record))
        resume.acquire()
        if state["stop"]:
            raise StopRun

    def worker() -> None:
        try:
            orch.backend.bind_thread()
            orch.run(inputs)
            events.put(("done", None))
        except StopRun:
            events.put(("stopped", None))
        except BaseException as exc:  # handed to the caller's thread
            events.put(("error", exc))

    observer.begin(on_step=on_step)
    thread = threading.Thread(target=worker, name="orchestrator-step-through", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = events.get()
            if kind == "step":
                yield value
                resume.release()
            elif kind == "error":
                raise value
            else:
                return
    finally:
        if thread.is_alive():
            state["stop"] = True
            resume.release()
            thread.join()
        observer.begin()


def _observer(orch: Any) -> DebugObserver:
    observer = orch.executor.observer
    if not isinstance(observer, DebugObserver):
        raise OrchestratorError("debug runs need an Orchestrator created with debug=True")
    return observer


def _other(orch: Any, compare: str | Any) -> Any:
    from .api import Orchestrator

    if compare == "reference":
        return Orchestrator(orch.pipeline, device="cpu", debug=True)
    if compare == "fp32":
        snippets = {n: dataclasses.replace(s, precision="fp32") for n, s in orch.pipeline.snippets.items()}
        return Orchestrator(dataclasses.replace(orch.pipeline, snippets=snippets), device=orch.device, debug=True,
                            **_build_options(orch))
    if isinstance(compare, Orchestrator):
        return compare
    return Orchestrator.from_yaml(compare, device=orch.device, debug=True, **_build_options(orch))


def _build_options(orch: Any) -> dict[str, Any]:
    """Where the compared pipeline's engines are built (the debugged one's cache and GPU)."""
    return {"cache_dir": orch.options.cache_dir, "device_index": orch.options.device_index}


__all__ = ["DebugObserver", "DebugReport", "StepRecord", "debug_run", "step_through"]
