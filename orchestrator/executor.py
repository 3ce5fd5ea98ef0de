"""The executor: compiles a pipeline's control flow once into nested closures over backend step runners.

At run time it only calls those closures: no graph walking, no lookups by name, no planning. Branch
decisions read one scalar through the backend (a host input, or a one-element device tensor).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .backends.base import Backend, StepRunner
from .decisions import loop_label
from .errors import ExecutionError
from .inputs import check_inputs
from .pipeline.conditions import compare
from .pipeline.ir import Condition, IfBlock, Node, Pipeline, Step, SwitchBlock, WhileBlock


class Observer(Protocol):
    """Told about every step and branch decision (used by tests, debug mode and profiling). It may also
    define ``step_started(step)``, called just before a step runs."""

    def step_done(self, step: Step) -> None: ...

    def branch_taken(self, block: Node, taken: str) -> None: ...


GraphMode = bool | str  # False: eager; "segments": graphs between host-decided branches; True: one graph


class Executor:
    """Runs a pipeline on a backend. ``graphs``: False (eager), ``"segments"`` (straight-line runs of
    steps replayed as CUDA graphs, branches decided on the host), or True (the whole pipeline as one
    CUDA graph with device-side conditional nodes)."""

    def __init__(self, pipeline: Pipeline, backend: Backend, observer: Observer | None = None,
                 graphs: GraphMode = False):
        if graphs not in (False, True, "segments"):
            raise ValueError(f"graphs must be False, True or 'segments', not {graphs!r}")
        self.pipeline, self.backend, self.observer = pipeline, backend, observer
        self.graphs = graphs
        self._runners: dict[int, StepRunner] = {}  # one runner per step, shared by every compiled form
        self._program = self._block(pipeline.body)
        if graphs is True:
            self._program = backend.graph_runner(pipeline.body, self._program, observer, self._segments_program)

    def _segments_program(self) -> StepRunner:
        self.graphs = "segments"
        return self._block(self.pipeline.body)

    def run(self, inputs: Mapping[str, Any], out: Mapping[str, Any] | None = None,
            device_outputs: bool = False) -> dict[str, Any]:
        return self.run_checked(*check_inputs(self.pipeline, inputs, out), out, device_outputs)

    def run_checked(self, arrays: dict[str, Any], dims: dict[str, int], out: Mapping[str, Any] | None = None,
                    device_outputs: bool = False) -> dict[str, Any]:
        """``run`` with inputs already checked (``inputs.check_inputs``): the pool checks them before it
        takes an instance, so that a thread waiting for one does its checks meanwhile."""
        self.backend.set_inputs(arrays, dims)  # device inputs: zero-copy in eager mode, copied in graph modes
        self._program()
        return self.backend.outputs(self.pipeline.outputs, out, device_outputs)

    # ---- compilation ----------------------------------------------------------------------------
    def _block(self, nodes: tuple[Node, ...]) -> StepRunner:
        if self.graphs == "segments":
            runners = tuple(self._segments(nodes))
        else:
            runners = tuple(self._node(n) for n in nodes)

        def run() -> None:
            for runner in runners:
                runner()

        return run

    def _segments(self, nodes: tuple[Node, ...]):
        """Group each straight-line run of steps into one graph-replayed segment."""
        run: list[Node] = []
        for node in (*nodes, None):
            if node is not None and not isinstance(node, IfBlock | SwitchBlock | WhileBlock):
                run.append(node)
                continue
            if run:
                eager = tuple(self._node(n) for n in run)
                yield self.backend.segment_runner(tuple(run), lambda eager=eager: [r() for r in eager])
                run = []
            if node is not None:
                yield self._node(node)

    def _node(self, node: Node) -> StepRunner:
        if isinstance(node, IfBlock):
            return self._if(node)
        if isinstance(node, SwitchBlock):
            return self._switch(node)
        if isinstance(node, WhileBlock):
            return self._while(node)
        if node.id not in self._runners:
            self._runners[node.id] = self._step(node)
        return self._runners[node.id]

    def _step(self, node: Step) -> StepRunner:
        runner = self.backend.step_runner(node)
        observer = self.observer
        if observer is None:
            return runner

        started = getattr(observer, "step_started", None)

        def observed() -> None:
            if started is not None:
                started(node)
            runner()
            observer.step_done(node)

        return observed

    def _condition(self, cond: Condition) -> Callable[[], bool]:
        read = self.backend.read_scalar
        subject, op, rhs, negate = cond.subject, cond.op, cond.rhs, cond.negate
        if isinstance(rhs, str):
            return lambda: compare(read(subject), op, read(rhs)) != negate
        rhs_value = 0.0 if rhs is None else float(rhs)
        return lambda: compare(read(subject), op, rhs_value) != negate

    def _if(self, node: IfBlock) -> StepRunner:
        test, then, else_ = self._condition(node.condition), self._block(node.then), self._block(node.else_)
        note = self._noter(node)

        def run() -> None:
            if test():
                note("then")
                then()
            else:
                note("else")
                else_()

        return run

    def _switch(self, node: SwitchBlock) -> StepRunner:
        read, subject = self.backend.read_scalar, node.subject
        table = {key: (f"case {key}", self._block(body)) for key, body in node.cases}
        default = None if node.default is None else ("default", self._block(node.default))
        note = self._noter(node)

        def run() -> None:
            value = int(read(subject))
            label, body = table.get(value, default) or self._no_case(node, value)
            note(label)
            body()

        return run

    @staticmethod
    def _no_case(node: SwitchBlock, value: int):
        keys = ", ".join(str(k) for k, _ in node.cases)
        raise ExecutionError(f"switch '{node.name}': '{node.subject}' is {value}, which matches no case "
                             f"({keys}) and there is no default")

    def _while(self, node: WhileBlock) -> StepRunner:
        test, body = self._condition(node.condition), self._block(node.body)
        carry = self.backend.carry_runner(node.carry)
        limit = node.max_iterations
        note = self._noter(node)

        def run() -> None:
            iterations = 0
            while iterations < limit and test():
                body()
                carry()
                iterations += 1
            note(loop_label(iterations, limit))

        return run

    def _noter(self, node: Node) -> Callable[[str], None]:
        observer = self.observer
        if observer is None:
            return lambda label: None
        return lambda label: observer.branch_taken(node, label)
