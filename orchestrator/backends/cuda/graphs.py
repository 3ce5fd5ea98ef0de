"""CUDA graph modes of the CUDA backend.

- ``segment``: a straight-line run of steps is captured once as a graph and replayed; branches are
  decided on the host between segments (one small device->host read for device-valued conditions).
- ``whole``: the entire pipeline is one graph; ``if``/``switch``/``while`` become conditional nodes whose
  value is set on the device by a one-thread NVRTC kernel calling ``cudaGraphSetConditional``. A run is one
  graph launch with no host round trip. Host inputs used by conditions are copied into device slots
  before the launch when they changed, so changing them needs no re-capture.

The compiler talks to its execution instance only through ``GraphTarget``; the condition kernels are
compiled once per pipeline (``ConditionKernels``, shared by every instance), the graphs once per instance.
Graphs are cached by ``target.graph_key`` (input shapes, and host values baked into kernel arguments).
On a miss the run is executed eagerly (this is also the warm-up TensorRT needs before capture) and the
graph is captured for the next run. Built with cuda.core's GraphBuilder (conditional builders are put
into building state before capturing into them, as the rig's verified example does).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ...decisions import loop_label
from ...errors import ExecutionError
from ...kernels.nvrtc import compile_source
from ...lazy import lazy_import
from ...pipeline.ir import Condition, IfBlock, Node, Pipeline, Step, SwitchBlock, WhileBlock, walk
from ..base import StepRunner
from .driver import DeviceAllocation, PinnedAllocation, Stream, check, cu

core = lazy_import("cuda.core")
log = logging.getLogger("orchestrator")

C_TYPES = {"float32": "float", "int8": "signed char", "uint8": "unsigned char", "int32": "int",
           "int64": "long long", "bool": "bool"}
PRELUDE = """\
typedef __device_builtin__ unsigned long long cudaGraphConditionalHandle;
extern "C" __device__ __cudart_builtin__ void cudaGraphSetConditional(cudaGraphConditionalHandle handle,
                                                                       unsigned int value);
"""
NOT_RUN = -1


@dataclass
class StreamRef:
    """The two spellings of a stream that enqueuers need."""

    handle: Any  # CUstream
    address: int

    @classmethod
    def of(cls, core_stream: Any) -> StreamRef:
        handle = core_stream.handle
        return cls(handle, int(handle))


class ControlBlock:
    """Device memory for control flow: host-input slots (8 bytes each), loop counters, decisions."""

    def __init__(self, host_inputs: list[str], blocks: list[Node]):
        self.host_slot = {name: i * 8 for i, name in enumerate(host_inputs)}
        self.counter = {b.id: len(host_inputs) * 8 + 4 * i for i, b in enumerate(blocks)}
        base = len(host_inputs) * 8 + 4 * len(blocks)
        self.decision = {b.id: base + 4 * i for i, b in enumerate(blocks)}
        self.decisions_offset, self.decisions_bytes = base, 4 * len(blocks)
        self.device = DeviceAllocation(base + 4 * len(blocks))
        self.host_bytes = max(len(host_inputs) * 8, 1)
        self.staging = PinnedAllocation(max(self.host_bytes, self.decisions_bytes))
        self.staged: tuple[bytes, ...] | None = None  # the host inputs the device slots hold now
        self.blocks = blocks

    def address(self, kind: str, key: Any) -> int:
        return self.device.address + getattr(self, kind)[key]

    def free(self) -> None:
        self.device.free()
        self.staging.free()


class GraphTarget(Protocol):
    """What the graph compiler needs of an execution instance (backend.CudaBackend implements it)."""

    pipeline: Pipeline
    stream: Stream
    graph_key: tuple  # what a captured graph depends on; kept current by the instance's set_inputs

    @property
    def device_ordinal(self) -> int: ...

    @property
    def conditions(self) -> ConditionKernels | None: ...

    def address_of(self, tensor: str) -> int: ...

    def enqueuer(self, step_id: int) -> Callable[[Any], None]: ...

    def carry_enqueuer(self, pairs: tuple[tuple[str, str], ...]) -> Callable[[Any], None]: ...

    def host_value(self, name: str) -> np.ndarray: ...


class ConditionKernels:
    """One NVRTC module with every block's condition kernel (extern "C": names are not mangled); built
    once per pipeline and device, shared by the instances."""

    def __init__(self, pipeline: Pipeline, blocks: list[Node], arch: str):
        source = condition_source(pipeline, blocks)
        compiled = compile_source(f"conditions_{pipeline.name}", source, f"cond_{blocks[0].id}", arch,
                                  [f"--gpu-architecture={arch}", "-std=c++17"], "<conditions>")
        self.module = check(cu.cuModuleLoadData(compiled.image), "cuModuleLoadData(conditions)")
        self.functions = {b.id: check(cu.cuModuleGetFunction(self.module, f"cond_{b.id}".encode()),
                                      "cuModuleGetFunction") for b in blocks}

    def unload(self) -> None:
        if self.module is not None:
            check(cu.cuModuleUnload(self.module), "cuModuleUnload")
            self.module, self.functions = None, {}


class GraphCompiler:
    """Captures and replays the graphs of one instance."""

    def __init__(self, backend: GraphTarget):
        self.backend = backend
        pipeline = backend.pipeline
        self.blocks = [n for n in walk(pipeline.body) if isinstance(n, IfBlock | SwitchBlock | WhileBlock)]
        hosts = sorted({n for b in self.blocks for n in _condition_names(b) if n in pipeline.host_inputs})
        self.control = ControlBlock(hosts, self.blocks)
        core.Device(backend.device_ordinal).set_current()  # cuda.core's view of our (primary) context
        self.core_stream = core.Stream.from_handle(backend.stream.address)
        conditions = backend.conditions
        self.functions = conditions.functions if conditions is not None else {}
        self.graphs: list[Any] = []

    def _operand(self, name: Any) -> int:
        if not isinstance(name, str):
            return 0
        if name in self.control.host_slot:
            return self.control.address("host_slot", name)
        return self.backend.address_of(name)

    def _launch_condition(self, block: Node, handle: int, stream: StreamRef, increment: int) -> None:
        if isinstance(block, SwitchBlock):
            subject, rhs = self._operand(block.subject), 0
        else:
            subject, rhs = self._operand(block.condition.subject), self._operand(block.condition.rhs)
        values = [np.array([handle], np.uint64), np.array([subject], np.uint64), np.array([rhs], np.uint64),
                  np.array([self.control.address("counter", block.id)], np.uint64),
                  np.array([self.control.address("decision", block.id)], np.uint64),
                  np.array([increment], np.int32)]
        pointers = np.array([v.ctypes.data for v in values], np.uint64)
        check(cu.cuLaunchKernel(self.functions[block.id], 1, 1, 1, 1, 1, 1, 0, stream.handle,
                                pointers.ctypes.data, 0), "cuLaunchKernel(condition)")

    # ---- capture ----------------------------------------------------------------------------------
    def _capture(self, emit) -> Any:
        """Capture and instantiate; returns the executable graph's driver handle (the graph object is
        kept alive here). Runs launch it with one driver call: no Python layer between run and GPU."""
        core.Device(self.backend.device_ordinal).set_current()  # cuda.core's state is per thread: this one
        builder = self.core_stream.create_graph_builder().begin_building()
        try:
            emit(builder)
        finally:
            builder.end_building()  # a failed capture must still leave capture mode
        graph = builder.complete()
        self.graphs.append(graph)
        return cu.CUgraphExec(int(graph.handle))

    def _launch(self, executable: Any) -> None:
        check(cu.cuGraphLaunch(executable, self.backend.stream.handle), "cuGraphLaunch")

    def _emit(self, builder: Any, nodes: tuple[Node, ...]) -> None:
        stream = StreamRef.of(builder.stream)
        for node in nodes:
            if isinstance(node, IfBlock):
                cond = builder.create_condition(default_value=0)
                self._launch_condition(node, int(cond.handle), stream, 0)
                if node.else_:
                    then, else_ = builder.if_else(cond)
                    self._body(then, node.then)
                    self._body(else_, node.else_)
                else:
                    self._body(builder.if_then(cond), node.then)
            elif isinstance(node, SwitchBlock):
                cond = builder.create_condition(default_value=0)
                self._launch_condition(node, int(cond.handle), stream, 0)
                bodies = [body for _, body in node.cases] + ([node.default] if node.default is not None else [])
                for case, body in zip(builder.switch(cond, len(bodies)), bodies, strict=True):
                    self._body(case, body)
            elif isinstance(node, WhileBlock):
                check(cu.cuMemsetD32Async(self.control.address("counter", node.id), 0, 1, stream.handle),
                      "cuMemsetD32Async")
                cond = builder.create_condition(default_value=0)
                self._launch_condition(node, int(cond.handle), stream, 0)
                loop = builder.while_loop(cond).begin_building()
                self._emit(loop, node.body)
                inner = StreamRef.of(loop.stream)
                self.backend.carry_enqueuer(node.carry)(inner)
                self._launch_condition(node, int(cond.handle), inner, 1)
                loop.end_building()
            else:
                self.backend.enqueuer(node.id)(stream)

    def _body(self, builder: Any, nodes: tuple[Node, ...]) -> None:
        builder.begin_building()
        self._emit(builder, nodes)
        builder.end_building()

    # ---- runners ----------------------------------------------------------------------------------
    def segment(self, steps: tuple[Step, ...], eager: StepRunner) -> StepRunner:
        graphs: dict[tuple, Any] = {}
        backend, launch = self.backend, self._launch

        def run() -> None:
            graph = graphs.get(backend.graph_key)
            if graph is None:
                eager()  # warm-up (TensorRT needs one plain enqueue) and this run's results
                graphs[backend.graph_key] = self._capture(lambda b: self._emit(b, steps))
                return
            launch(graph)

        return run

    def whole(self, body: tuple[Node, ...], eager: StepRunner, observer: Any, fallback: Any) -> StepRunner:
        """One graph for the whole body. If it cannot be captured (a step that cannot live in a conditional
        body, an old driver), ``fallback()`` builds the graph-segments program, used from then on."""
        graphs: dict[tuple, Any] = {}
        backend, control, launch = self.backend, self.control, self._launch
        hosts = list(control.host_slot)
        replacement: list[StepRunner] = []
        reads_decisions = self._reads_decisions(observer)

        def emit(builder: Any) -> None:
            if control.decisions_bytes and reads_decisions:  # else nobody reads them: one node less per run
                check(cu.cuMemsetD32Async(control.address("decision", self.blocks[0].id), NOT_RUN & 0xFFFFFFFF,
                                          len(self.blocks), StreamRef.of(builder.stream).handle), "cuMemsetD32Async")
            self._emit(builder, body)

        def run() -> None:
            if replacement:
                return replacement[0]()
            self._stage_host_inputs(hosts)
            graph = graphs.get(backend.graph_key)
            if graph is None:
                eager()
                try:
                    graphs[backend.graph_key] = self._capture(emit)
                except Exception as exc:  # any capture failure: the driver, TensorRT, cuda.core
                    log.warning("orchestrator: pipeline '%s' cannot run as one CUDA graph with conditional nodes "
                                "(%s: %s); using graph segments with host-side branch decisions instead",
                                backend.pipeline.name, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
                    backend.stream.synchronize()
                    replacement.append(fallback())
                return
            launch(graph)
            if reads_decisions:
                self._check_decisions(observer)

        return run

    def _stage_host_inputs(self, hosts: list[str]) -> None:
        """Copy the host inputs that conditions read into their device slots, unless the slots already
        hold them: only this copy writes them, so a threshold or mode that stays the same from run to run
        costs no copy at all."""
        if not hosts:
            return
        control, value = self.control, self.backend.host_value
        values = tuple(value(name).tobytes() for name in hosts)
        if values == control.staged:
            return
        staging = control.staging.array  # shared with the decisions read-back: rewritten whole each time
        for name, raw in zip(hosts, values, strict=True):
            slot = control.host_slot[name]
            staging[slot:slot + len(raw)] = np.frombuffer(raw, np.uint8)
        check(cu.cuMemcpyHtoDAsync(control.device.address, staging.ctypes.data, control.host_bytes,
                                   self.backend.stream.handle), "cuMemcpyHtoDAsync(host slots)")
        control.staged = values

    def _reads_decisions(self, observer: Any) -> bool:
        """Whether runs read the decisions back: for an observer, or to catch a switch value that matches
        no case (a switch without default)."""
        return bool(self.blocks) and (observer is not None or any(
            isinstance(b, SwitchBlock) and b.default is None for b in self.blocks))

    def _check_decisions(self, observer: Any) -> None:
        """Report branch decisions to the observer, and fail on a switch value that matched no case."""
        control = self.control
        check(cu.cuMemcpyDtoHAsync(control.staging.address, control.device.address + control.decisions_offset,
                                   control.decisions_bytes, self.backend.stream.handle), "cuMemcpyDtoHAsync")
        self.backend.stream.synchronize()
        decisions = control.staging.array[:control.decisions_bytes].view(np.int32)
        for block, value in zip(self.blocks, decisions.tolist(), strict=True):
            if value == NOT_RUN:
                continue
            if value == -2:
                raise ExecutionError(f"switch '{block.name}': '{block.subject}' matches no case and there is "
                                     f"no default")
            if observer is not None:
                observer.branch_taken(block, _label(block, value))

    def close(self) -> None:
        for graph in self.graphs:
            graph.close()  # the executable graphs now, not when the closures holding them are collected
        self.graphs.clear()
        self.control.free()


def condition_source(pipeline: Pipeline, blocks: list[Node]) -> str:
    """CUDA source of one condition kernel per block: ``cond_<id>(handle, subject, rhs, counter,
    decision, increment)`` evaluates the block's condition on the device and sets the graph condition."""
    return PRELUDE + "\n".join(_condition_kernel(pipeline, b) for b in blocks)


def _pointer(pipeline: Pipeline, name: str) -> str:
    dtype = pipeline.tensors[name].dtype
    if dtype not in C_TYPES:
        raise ExecutionError(f"'{name}' is {dtype}; graph-mode conditions take {', '.join(C_TYPES)} values")
    return f"const {C_TYPES[dtype]}*"


def _compare(cond: Condition) -> str:
    if cond.op is None:
        test = "(double)subject[0] != 0.0"
    else:
        rhs = "(double)rhs[0]" if isinstance(cond.rhs, str) else repr(float(cond.rhs))
        test = f"(double)subject[0] {cond.op} {rhs}"
    return f"!({test})" if cond.negate else f"({test})"


def _condition_kernel(pipeline: Pipeline, block: Node) -> str:
    head = f'extern "C" __global__ void cond_{block.id}(cudaGraphConditionalHandle h, '
    tail = "int* counter, int* decision, int increment) {\n"
    if isinstance(block, SwitchBlock):
        cases = "".join(f"  if (v == {key}LL) idx = {i};\n" for i, (key, _) in enumerate(block.cases))
        fallback = len(block.cases) if block.default is not None else 0xFFFF
        return (f"{head}{_pointer(pipeline, block.subject)} subject, const int* unused, {tail}"
                f"  long long v = (long long)subject[0];\n  unsigned int idx = {fallback}u;\n{cases}"
                f"  decision[0] = idx == 0xFFFFu ? -2 : (int)idx;\n  cudaGraphSetConditional(h, idx);\n}}\n")
    cond = block.condition
    rhs = _pointer(pipeline, cond.rhs) if isinstance(cond.rhs, str) else "const int*"
    body = f"  bool go = {_compare(cond)};\n"
    if isinstance(block, WhileBlock):
        body += (f"  if (increment) counter[0] += 1;\n  go = go && counter[0] < {block.max_iterations};\n"
                 "  decision[0] = counter[0];\n")
    else:
        body += "  decision[0] = go ? 1 : 0;\n"
    return (f"{head}{_pointer(pipeline, cond.subject)} subject, {rhs} rhs, {tail}"
            f"{body}  cudaGraphSetConditional(h, go ? 1u : 0u);\n}}\n")


def _label(block: Node, value: int) -> str:
    if isinstance(block, IfBlock):
        return "then" if value else "else"
    if isinstance(block, SwitchBlock):
        return f"case {block.cases[value][0]}" if value < len(block.cases) else "default"
    return loop_label(value, block.max_iterations)


def _condition_names(block: Node) -> list[str]:
    if isinstance(block, SwitchBlock):
        return [block.subject]
    return [n for n in (block.condition.subject, block.condition.rhs) if isinstance(n, str)]

