"""One execution instance of the CUDA backend: its own stream, arena, TensorRT contexts, staging and graphs.

Made from a ``CudaCompiled`` (compiled.py), which holds the engines, kernel modules and arena layout that
every instance shares. At creation: the arena is allocated once (laid out as inputs | constants | planned
intermediates | TensorRT scratch), constants uploaded, every TensorRT context bound to this arena and
every kernel's arguments packed. At run time: inputs are staged through pinned memory (or bound zero-copy
in eager mode, copied device-to-device into their arena slots in graph modes), steps are enqueued on this
instance's stream, and outputs are copied back with one synchronisation. Shapes are re-specialised only
when the input shapes change from the previous run, and what was derived for shapes seen before (the last
64 sets) is re-applied rather than derived again.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ... import dtypes
from ...errors import ExecutionError
from ...inputs import DeviceArray, DeviceView, check_output_buffer
from ...kernels.signature import bind_symbols, derived_scalar, launch_config, out_shapes
from ...layouts import storage_bytes, to_logical
from ...pipeline.ir import KernelCall, SnippetCall, Step, walk
from ...planning.memory import align
from ..base import Backend, StepRunner
from .arena import SCRATCH_ALIGNMENT
from .compiled import CudaCompiled
from .driver import DeviceAllocation, PinnedAllocation, Stream, check, cu
from .kernel import KernelLaunch
from .snippet import StepContext

log = logging.getLogger("orchestrator")


SHAPE_PLANS = 64  # sets of input shapes whose derived settings an instance keeps


class ShapePlan:
    """Everything derived from one set of input shapes: TensorRT context input shapes, kernel grids and
    shape-derived scalars (re-applied when the shapes come back), tensor shapes and sizes."""

    def __init__(self) -> None:
        self.contexts: list[tuple[StepContext, str, tuple[int, ...]]] = []
        self.kernels: list[tuple[KernelLaunch, list[int], dict[str, int | float]]] = []
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.sizes: dict[str, int] = {}

    def apply(self) -> None:
        for ctx, port, shape in self.contexts:
            ctx.set_shape(port, shape)
        for launch, grid, scalars in self.kernels:
            launch.grid[:] = grid
            for arg, value in scalars.items():
                launch.set(arg, value)


class CudaBackend(Backend):
    """Instance ``index`` of a compiled pipeline, on ``stream`` (the caller's) or a stream of its own."""

    name = "cuda"

    def __init__(self, compiled: CudaCompiled, index: int = 0, stream: Any = None):
        super().__init__(compiled.pipeline)
        self.compiled, self.index = compiled, index
        self.context, self.layout = compiled.context, compiled.layout
        self.snippets, self.kernels = compiled.snippets, compiled.kernels
        self.context.make_current()
        self.stream = Stream(stream)
        self.arena: DeviceAllocation | None = None
        self.address: dict[str, int] = {}
        self._pinned: list[PinnedAllocation] = []
        self._events: list[Any] = []
        self._contexts: list[tuple[SnippetCall, StepContext]] = []
        self._graph_compiler = None
        self._nbytes: dict[str, int] = {}
        self._profiles_taken: Counter[str] = Counter()  # contexts made per snippet by this instance
        self._launches: list[tuple[KernelCall, KernelLaunch]] = []
        self._input_sites: dict[str, list[Callable[[int], None]]] = {n: [] for n in self.pipeline.inputs}
        self._host_sites: list[tuple[KernelLaunch, str, str]] = []
        self._bound_input: dict[str, int] = {}
        self.host_values: dict[str, np.ndarray] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self._shape_key: tuple | None = None
        self._plans: dict[tuple, ShapePlan] = {}  # by input shapes, least recently used first
        # What a captured graph depends on: input shapes and the host values baked into kernel arguments
        # (kept current by set_inputs, so that a graph-mode run only looks it up).
        self.graph_key: tuple = (None, ())
        self.enqueuers: dict[int, Callable[[Any], None]] = {}  # step id -> enqueue on a given stream
        try:
            self.arena = DeviceAllocation(self.layout.total, SCRATCH_ALIGNMENT)
            self.address = {n: self.arena.address + o for n, o in self.layout.offsets.items()}
            self._upload_constants()
            self._stage_in = self._pinned_slots([n for n, t in self.pipeline.inputs.items() if t.origin == "input"])
            self._stage_out = self._pinned_slots(list(self.pipeline.outputs))
            self._scalar = self._pinned_block(8)
        except BaseException:
            self.close()
            raise

    # ---- load time ------------------------------------------------------------------------------
    def _pinned_block(self, nbytes: int) -> PinnedAllocation:
        block = PinnedAllocation(nbytes)
        self._pinned.append(block)
        return block

    def _pinned_slots(self, names: list[str]) -> dict[str, np.ndarray]:
        sizes = {n: align(max(self.layout.capacity[n], 1)) for n in names}
        block = self._pinned_block(sum(sizes.values()))
        slots, cursor = {}, 0
        for name in names:
            slots[name] = block.array[cursor:cursor + self.layout.capacity[name]]
            cursor += sizes[name]
        return slots

    def _upload_constants(self) -> None:
        for name, array in self.pipeline.constants.items():
            data = np.ascontiguousarray(array)
            check(cu.cuMemcpyHtoD(self.address[name], data.ctypes.data, data.nbytes), "cuMemcpyHtoD")

    def _step_runner_impl(self, step: Step) -> StepRunner:
        if isinstance(step, SnippetCall):
            return self._snippet_runner(step)
        return self._kernel_runner(step)

    def _snippet_runner(self, step: SnippetCall) -> StepRunner:
        profile = self.index * max(self.compiled.uses[step.snippet], 1) + self._profiles_taken[step.snippet]
        self._profiles_taken[step.snippet] += 1
        ctx = self.snippets[step.snippet].context(self.arena.address + self.layout.scratch_offset,
                                                  self.stream.address, profile)
        for port, tensor in list(step.inputs.items()) + list(step.outputs.items()):
            ctx.bind(port, self.address[tensor])
            if tensor in self._input_sites:
                self._input_sites[tensor].append(lambda ptr, c=ctx, p=port: c.bind(p, ptr))
        self._contexts.append((step, ctx))
        self.enqueuers[step.id] = lambda stream: ctx.enqueue(stream.address)
        address = self.stream.address
        return lambda: ctx.enqueue(address)

    def _kernel_runner(self, step: KernelCall) -> StepRunner:
        launch = self.kernels[step.kernel].launch()
        for arg, tensor in step.tensors.items():
            launch.set(arg, self.address[tensor])
            if tensor in self._input_sites:
                self._input_sites[tensor].append(lambda ptr, k=launch, a=arg: k.set(a, ptr))
        for arg, scalar in step.scalars.items():
            if scalar.literal is not None:
                launch.set(arg, scalar.literal)
            elif scalar.host_input is not None:
                self._host_sites.append((launch, arg, scalar.host_input))
        self._launches.append((step, launch))
        self.enqueuers[step.id] = lambda stream: launch.enqueue(stream.handle)
        handle = self.stream.handle
        return lambda: launch.enqueue(handle)

    def _carry_runner_impl(self, pairs: tuple[tuple[str, str], ...]) -> StepRunner:
        enqueue, stream = self.carry_enqueuer(pairs), self.stream
        return lambda: enqueue(stream)

    def carry_enqueuer(self, pairs: tuple[tuple[str, str], ...]) -> Callable[[Any], None]:
        copies = [(self.address[state], self.address[nxt], nxt) for state, nxt in pairs]
        nbytes = self._nbytes

        def enqueue(stream: Any) -> None:  # anything with a CUstream ``handle``
            for dst, src, nxt in copies:
                check(cu.cuMemcpyDtoDAsync(dst, src, nbytes[nxt], stream.handle), "cuMemcpyDtoDAsync")

        return enqueue

    # ---- graph modes (see graphs.py) ------------------------------------------------------------
    def _segment_runner_impl(self, steps: tuple[Step, ...], eager: StepRunner) -> StepRunner:
        return self._graphs().segment(steps, eager)

    def _graph_runner_impl(self, body, eager: StepRunner, observer, fallback) -> StepRunner:
        return self._graphs().whole(body, eager, observer, fallback)

    def _graphs(self):
        if self._graph_compiler is None:
            from .graphs import GraphCompiler

            self._graph_compiler = GraphCompiler(self)
        return self._graph_compiler

    # the GraphTarget interface (graphs.py): what the graph compiler may ask of this instance
    @property
    def device_ordinal(self) -> int:
        return self.context.ordinal

    @property
    def conditions(self) -> Any:
        return self.compiled.conditions

    def address_of(self, tensor: str) -> int:
        return self.address[tensor]

    def enqueuer(self, step_id: int) -> Callable[[Any], None]:
        return self.enqueuers[step_id]

    def host_value(self, name: str) -> np.ndarray:
        return self.host_values[name]

    # ---- run time -------------------------------------------------------------------------------
    def _set_inputs_impl(self, inputs: Mapping[str, Any], dims: Mapping[str, int]) -> None:
        key = tuple(v.shape for v in inputs.values())
        if key != self._shape_key:
            self._shape_key = None  # a failure below leaves settings half-changed: specialise again next run
            self._specialize(key, {n: tuple(v.shape) for n, v in inputs.items()
                                   if self.pipeline.inputs[n].origin == "input"})
            self._shape_key = key
        for name, value in inputs.items():
            if self.pipeline.inputs[name].origin == "host":
                self.host_values[name] = value
            elif isinstance(value, DeviceArray) and self._graph_compiler is None:
                self._bind_input(name, value.address)  # eager: zero-copy, the steps read the caller's buffer
            elif isinstance(value, DeviceArray):
                # captured graphs read the arena slot: one device-to-device copy, ordered before the launch
                self._bind_input(name, self.address[name])
                check(cu.cuMemcpyDtoDAsync(self.address[name], value.address, self._nbytes[name],
                                           self.stream.handle), "cuMemcpyDtoDAsync(device input)")
            else:
                self._bind_input(name, self.address[name])
                staged = self._stage_in[name][:value.nbytes]
                staged[:] = value.reshape(-1).view(np.uint8)
                check(cu.cuMemcpyHtoDAsync(self.address[name], staged.ctypes.data, value.nbytes,
                                           self.stream.handle), "cuMemcpyHtoDAsync")
        for launch, arg, host in self._host_sites:
            launch.set(arg, self.host_values[host].item())
        if self._graph_compiler is not None:  # only graph modes look it up
            self.graph_key = (self._shape_key, tuple(self.host_values[h].item() for _, _, h in self._host_sites))

    def _bind_input(self, name: str, address: int) -> None:
        if self._bound_input.get(name, self.address[name]) != address:
            for rebind in self._input_sites[name]:
                rebind(address)
        self._bound_input[name] = address

    def _specialize(self, key: tuple, input_shapes: dict[str, tuple[int, ...]]) -> None:
        """Make everything shape-dependent match these input shapes: TensorRT input shapes, kernel grids and
        shape-derived scalars, tensor shapes and sizes. Derived once per set of input shapes (a walk of
        the pipeline) and kept: returning to shapes seen before only re-applies the settings."""
        plan = self._plans.pop(key, None)
        if plan is None:
            plan = self._derive(input_shapes)
        else:
            plan.apply()
        self._plans[key] = plan  # most recent last
        if len(self._plans) > SHAPE_PLANS:
            del self._plans[next(iter(self._plans))]
        self.shapes = plan.shapes
        self._nbytes.clear()  # updated in place: carry runners hold this dict
        self._nbytes.update(plan.sizes)

    def _derive(self, input_shapes: dict[str, tuple[int, ...]]) -> ShapePlan:
        """Propagate concrete shapes through the pipeline, applying each setting as it is derived."""
        shapes = dict(input_shapes)
        shapes.update({n: a.shape for n, a in self.pipeline.constants.items()})
        contexts = {id(s): c for s, c in self._contexts}
        launches = {id(s): k for s, k in self._launches}
        plan = ShapePlan()
        for node in walk(self.pipeline.body):
            if isinstance(node, SnippetCall) and id(node) in contexts:
                ctx = contexts[id(node)]
                for port, tensor in node.inputs.items():
                    ctx.set_shape(port, shapes[tensor])
                    plan.contexts.append((ctx, port, shapes[tensor]))
                shapes.update({t: ctx.output_shape(p) for p, t in node.outputs.items()})
            elif isinstance(node, KernelCall) and id(node) in launches:
                plan.kernels.append(self._specialize_kernel(node, launches[id(node)], shapes))
        sizes = {n: self._storage_bytes(n, s) for n, s in shapes.items()}
        for name, nbytes in sizes.items():
            if nbytes > self.layout.capacity.get(name, nbytes):
                raise ExecutionError(f"tensor '{name}' needs {nbytes} bytes for shape {list(shapes[name])}, more "
                                     f"than the {self.layout.capacity[name]} planned at the dims' max bounds")
        plan.shapes, plan.sizes = shapes, sizes
        return plan

    def _storage_bytes(self, name: str, shape: tuple[int, ...]) -> int:
        info = self.pipeline.tensors[name]
        return storage_bytes(shape, info.dtype, info.layout)

    def _specialize_kernel(self, node: KernelCall, launch: KernelLaunch, shapes: dict) -> tuple:
        """Set the launch's grid and shape-derived scalars; returns them for the shape plan."""
        kernel = self.pipeline.kernels[node.kernel]
        in_shapes = {a: shapes[node.tensors[a]] for a in node.in_args}
        env = bind_symbols(kernel, in_shapes)
        outs = out_shapes(kernel, env)
        shapes.update({node.tensors[a]: s for a, s in outs.items()})
        grid, _ = launch_config(kernel, env, {**in_shapes, **outs})
        scalars = {arg: derived_scalar(kernel, arg, env) for arg, scalar in node.scalars.items()
                   if scalar.expression is not None}
        launch.grid[:] = grid
        for arg, value in scalars.items():
            launch.set(arg, value)
        return launch, list(grid), scalars

    def _read_scalar_impl(self, name: str) -> float:
        if name in self.host_values:
            return self.host_values[name].item()
        dtype = dtypes.to_numpy(self.pipeline.tensors[name].dtype)
        check(cu.cuMemcpyDtoHAsync(self._scalar.address, self.address[name], dtype.itemsize, self.stream.handle),
              "cuMemcpyDtoHAsync")
        self.stream.synchronize()
        return self._scalar.array[:dtype.itemsize].view(dtype)[0].item()

    def _outputs_impl(self, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        for name in names:
            check(cu.cuMemcpyDtoHAsync(self._stage_out[name].ctypes.data, self.address[name], self._nbytes[name],
                                       self.stream.handle), "cuMemcpyDtoHAsync")
        self.stream.synchronize()
        return {n: self._view(self._stage_out[n], n).copy() for n in names}

    def _outputs_into_impl(self, names: tuple[str, ...], out: Mapping[str, Any]) -> dict[str, Any]:
        """Outputs in ``out`` go straight into the caller's arrays (device: D2D; numpy: D2H)."""
        targets = {n: check_output_buffer(n, b, self.shapes[n], self._dtype(n)) for n, b in out.items()}
        stream = self.stream.handle
        for name in names:
            if name not in out:
                destination, copy = self._stage_out[name].ctypes.data, cu.cuMemcpyDtoHAsync
            elif targets[name] is None:
                destination, copy = out[name].ctypes.data, cu.cuMemcpyDtoHAsync
            else:
                destination, copy = targets[name].address, cu.cuMemcpyDtoDAsync
            check(copy(destination, self.address[name], self._nbytes[name], stream), "output copy")
        self.stream.synchronize()
        return {n: out[n] if n in out else self._view(self._stage_out[n], n).copy() for n in names}

    def _device_outputs_impl(self, names: tuple[str, ...]) -> dict[str, Any]:
        self.stream.synchronize()
        return {n: DeviceView(self.address[n], self.shapes[n], self._dtype(n)) for n in names}

    def _dtype(self, name: str) -> np.dtype:
        return dtypes.to_numpy(self.pipeline.tensors[name].dtype)

    def _view(self, staged: np.ndarray, name: str) -> np.ndarray:
        dtype = dtypes.to_numpy(self.pipeline.tensors[name].dtype)
        return staged[:self._nbytes[name]].view(dtype).reshape(self.shapes[name])

    def synchronize(self) -> None:
        self.stream.synchronize()

    def bind_thread(self) -> None:
        self.context.bind_thread()

    def timing_mark(self) -> object:
        event = check(cu.cuEventCreate(cu.CUevent_flags.CU_EVENT_DEFAULT), "cuEventCreate")
        self._events.append(event)
        return event

    def record_mark(self, mark: object) -> None:
        check(cu.cuEventRecord(mark, self.stream.handle), "cuEventRecord")

    def elapsed(self, start: object, end: object) -> float:
        return check(cu.cuEventElapsedTime(start, end), "cuEventElapsedTime") / 1e3

    def _poison_impl(self, tensor: str) -> None:
        """NaN over the tensor's whole arena slot (float32/float16 patterns; 0xFF bytes otherwise)."""
        address, nbytes, handle = self.address[tensor], self.layout.capacity[tensor], self.stream.handle
        dtype = self.pipeline.tensors[tensor].dtype
        if dtype == "float32" and nbytes % 4 == 0:
            check(cu.cuMemsetD32Async(address, 0x7FC00000, nbytes // 4, handle), "cuMemsetD32Async")
        elif dtype == "float16" and nbytes % 2 == 0:
            check(cu.cuMemsetD16Async(address, 0x7E00, nbytes // 2, handle), "cuMemsetD16Async")
        else:
            check(cu.cuMemsetD8Async(address, 0xFF, nbytes, handle), "cuMemsetD8Async")

    def _fetch_impl(self, name: str) -> np.ndarray:
        if name in self.host_values:
            return np.array(self.host_values[name])
        out = np.empty(self._nbytes[name], np.uint8)
        self.stream.synchronize()
        check(cu.cuMemcpyDtoH(out.ctypes.data, self._bound_input.get(name, self.address[name]), out.nbytes),
              "cuMemcpyDtoH")
        info = self.pipeline.tensors[name]
        return to_logical(out.view(dtypes.to_numpy(info.dtype)), self.shapes[name], info.layout)

    def memory_summary(self) -> dict[str, int | float | bool]:
        return self.layout.summary()

    def _close_impl(self) -> None:
        """Release what this instance owns (the compiled pipeline keeps engines and modules). Contexts
        are destroyed now, not when the executor's closures that reference them are collected."""
        self.context.make_current()
        self.stream.synchronize()
        if self._graph_compiler is not None:
            self._graph_compiler.close()
        for _, ctx in self._contexts:
            ctx.release()
        self._contexts.clear()
        self._launches.clear()
        if self.arena is not None:
            self.arena.free()
        for block in self._pinned:
            block.free()
        for event in self._events:
            check(cu.cuEventDestroy(event), "cuEventDestroy")
        self._events.clear()
        self.stream.destroy()
