"""Many requests at once (issue 13): one Orchestrator with 1, 2, 4 instances under 16 client threads,
against the same engines driven by N raw TensorRT contexts on N streams; memory per extra instance; and
device-resident data in graph mode.

    python bench/instances.py              # on the device: about 2-3 minutes with the engines cached (their
                                           # first build adds 1-2 minutes); writes bench/results/instances.json
    python bench/instances.py --smoke                                 # no GPU: the harness on the CPU backend

Scenarios: the cascade (``pipelines/cascade.yaml``, threshold 1.01 so that every run takes the long path:
four snippets) and the ResNet-50 FP16 batch-1 pipeline of bench/resnet50.py (preprocess kernel ->
network -> softmax -> top-5). Every client thread calls ``run`` with numpy inputs for ``--duration``
seconds; throughput is runs per second over all threads, latency the p50/p99 of single calls (host wall
time, queueing for a free instance included).

The reference (``raw``): the pipeline's own engines (``orch.compiled``), N TensorRT execution contexts per
snippet step (TensorRT-managed memory), one stream each, taken from a pool like the orchestrator's
instances; a call copies the input in through pinned memory, enqueues the snippet steps of the path in
order, copies the output back and synchronises. It runs none of the pipeline's NVRTC kernels, so it is
a slightly easier bar than the orchestrator's work (target: orchestrator >= 0.9x its throughput).

``breakdown``: one thread, one instance, graph mode: the medians of the phases of a run (input checks,
staging, enqueueing, outputs: the wait and the copies) and of one raw call, to say where a gap comes from.
``memory``: device memory in use with N instances against one (cuMemGetInfo), per extra instance, beside
the arena size and the pinned staging per instance. ``device_data``: one thread, one instance, run latency
with numpy in/out (graph mode), device input zero-copy + device outputs (eager), and device input copied
into the arena + device outputs (graph mode).
"""

from __future__ import annotations

import argparse
import json
import queue
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "snippets"))

from resnet50 import PIPELINE, resnet50_onnx, snip_model  # noqa: E402

CLIENTS = 16


def latency_stats(samples: list[float], wall: float) -> dict[str, float]:
    ms = sorted(s * 1e3 for s in samples)
    return {"runs": len(ms), "throughput_per_s": len(ms) / wall, "p50_ms": statistics.median(ms),
            "p99_ms": ms[min(len(ms) - 1, int(0.99 * len(ms)))]}


def load(call, feeds: list[dict], duration: float, clients: int = CLIENTS, warmup: float = 0.5) -> dict:
    """``clients`` threads call ``call(feeds[k])`` for ``duration`` seconds, after an untimed concurrent
    warm-up (so that every instance has run, and captured its graphs); per-call latencies."""
    _threads(call, feeds, warmup, clients)
    samples, wall = _threads(call, feeds, duration, clients)
    return latency_stats(samples, wall)


def _threads(call, feeds: list[dict], duration: float, clients: int) -> tuple[list[float], float]:
    samples: list[list[float]] = [[] for _ in range(clients)]
    start, deadline = threading.Barrier(clients + 1), [0.0]

    def client(k: int) -> None:
        feed, own = feeds[k % len(feeds)], samples[k]
        start.wait()
        while time.perf_counter() < deadline[0]:
            t = time.perf_counter()
            call(feed)
            own.append(time.perf_counter() - t)

    workers = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for w in workers:
        w.start()
    t0 = time.perf_counter()
    deadline[0] = t0 + duration
    start.wait()
    for w in workers:
        w.join()
    return [s for own in samples for s in own], time.perf_counter() - t0


# ---- scenarios ----------------------------------------------------------------------------------

def cascade(args) -> tuple[Path, list[dict], str, str]:
    rng = np.random.default_rng(0)
    feeds = [{"image": rng.integers(0, 256, (1, 224, 224, 3), dtype=np.uint8), "threshold": 1.01}
             for _ in range(4)]
    return ROOT / "pipelines/cascade.yaml", feeds, "image", "probs"


def resnet(args) -> tuple[Path, list[dict], str, str]:
    model = resnet50_onnx(args.cache)
    onnx = snip_model(model, args.cache, 1, "fp16", 1).pieces[0]
    path = onnx.parent / "full_pipeline.yaml"
    path.write_text(PIPELINE.format(batch=1, onnx=onnx.as_posix(), precision="fp16",
                                    kernels=(ROOT / "custom_kernels").as_posix()))
    rng = np.random.default_rng(1)
    feeds = [{"image": rng.integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)} for _ in range(4)]
    return path, feeds, "image", "top5_prob"


SCENARIOS = {"cascade": cascade, "resnet50_fp16_b1": resnet}


# ---- the raw TensorRT reference -----------------------------------------------------------------

class RawSlot:
    """One stream, one TensorRT context per snippet step of the path, a buffer per tensor, pinned I/O."""

    def __init__(self, orch, index: int, steps, input_name: str, output_name: str):
        from collections import Counter

        from orchestrator.backends.cuda.driver import DeviceAllocation, PinnedAllocation, Stream

        compiled, self.stream = orch.compiled, Stream()
        capacity = compiled.layout.capacity
        tensors = {t for s in steps for t in [*s.inputs.values(), *s.outputs.values()]} | {input_name, output_name}
        self.buffers = {t: DeviceAllocation(max(capacity[t], 1)) for t in tensors}
        self.contexts = []
        taken: Counter = Counter()
        for step in steps:
            engine = compiled.snippets[step.snippet].engine
            ctx = engine.create_execution_context()
            # concurrent contexts of a dynamic-shape engine need profiles of their own: slot i takes the ones
            # the orchestrator's instance i uses (it is idle while the raw reference runs)
            profile = index * max(compiled.uses[step.snippet], 1) + taken[step.snippet]
            taken[step.snippet] += 1
            if engine.num_optimization_profiles > 1 and not ctx.set_optimization_profile_async(profile, self.stream.address):
                raise RuntimeError(f"{step.snippet}: cannot select optimisation profile {profile}")
            for port, tensor in [*step.inputs.items(), *step.outputs.items()]:
                ctx.set_tensor_address(port, self.buffers[tensor].address)
            for port, tensor in step.inputs.items():
                ctx.set_input_shape(port, compiled.bounds["max"][tensor])
            self.contexts.append(ctx)
        self.input, self.output = input_name, output_name
        self.pinned_in, self.pinned_out = PinnedAllocation(capacity[input_name]), PinnedAllocation(capacity[output_name])

    def run(self, feed: np.ndarray) -> np.ndarray:
        from orchestrator.backends.cuda.driver import check, cu

        raw = feed.reshape(-1).view(np.uint8)
        self.pinned_in.array[:raw.size] = raw
        handle, address = self.stream.handle, self.stream.address
        check(cu.cuMemcpyHtoDAsync(self.buffers[self.input].address, self.pinned_in.address, raw.size, handle), "h2d")
        for ctx in self.contexts:
            if not ctx.execute_async_v3(address):
                raise RuntimeError("execute_async_v3 failed")
        nbytes = self.pinned_out.nbytes
        check(cu.cuMemcpyDtoHAsync(self.pinned_out.address, self.buffers[self.output].address, nbytes, handle), "d2h")
        self.stream.synchronize()
        return self.pinned_out.array.copy()

    def free(self) -> None:
        self.stream.synchronize()
        self.contexts.clear()
        for buffer in self.buffers.values():
            buffer.free()
        self.pinned_in.free()
        self.pinned_out.free()
        self.stream.destroy()


def path_steps(pipeline, heavy: bool = True):
    """The snippet steps of the path a run takes (``then`` branches: the cascade's long path)."""
    from orchestrator.pipeline.ir import IfBlock, SnippetCall

    steps = []
    for node in pipeline.body:
        if isinstance(node, SnippetCall):
            steps.append(node)
        elif isinstance(node, IfBlock):
            steps += [n for n in (node.then if heavy else node.else_) if isinstance(n, SnippetCall)]
    return steps


def raw_reference(orch, n: int, feeds: list[dict], input_name: str, output_name: str, duration: float) -> dict:
    slots = [RawSlot(orch, i, path_steps(orch.pipeline), input_name, output_name) for i in range(n)]
    free: queue.LifoQueue = queue.LifoQueue()
    for slot in slots:
        free.put(slot)

    def call(feed: dict) -> None:
        slot = free.get()
        try:
            slot.run(feed[input_name])
        finally:
            free.put(slot)

    try:
        return load(call, feeds, duration)
    finally:
        for slot in slots:
            slot.free()


# ---- measurements -------------------------------------------------------------------------------

def throughput(args, name: str, scenario: tuple, result: dict) -> None:
    from orchestrator import Orchestrator

    path, feeds, input_name, output_name = scenario
    for mode in args.modes:
        for n in args.instances:
            key = f"{name}/{mode}/n{n}"
            with Orchestrator.from_yaml(path, device="cuda", cache_dir=args.cache, instances=n,
                                        graphs={"eager": False, "graph": True}[mode]) as orch:
                row = {"orchestrator": load(orch.run, feeds, args.duration)}
                row["raw_tensorrt"] = raw_reference(orch, n, feeds, input_name, output_name, args.duration)
            row["throughput_ratio"] = row["orchestrator"]["throughput_per_s"] / row["raw_tensorrt"]["throughput_per_s"]
            result["throughput"][key] = row
            save(args, result, key, row)


def memory(args, name: str, scenario: tuple, result: dict) -> None:
    from orchestrator import Orchestrator
    from orchestrator.backends.cuda.driver import memory_in_use

    path, feeds, _, _ = scenario
    used = {}
    for n in (1, *[k for k in args.instances if k > 1]):
        with Orchestrator.from_yaml(path, device="cuda", cache_dir=args.cache, instances=n, graphs=True) as orch:
            with orch.acquire() as inst:
                inst.run(feeds[0])  # a captured graph is part of an instance's cost
            used[n] = memory_in_use()
            arena = orch.compiled.layout.total
            staging = sum(b.nbytes for b in orch._pool.instances[0].backend._pinned)
    row = {"arena_bytes": arena, "pinned_staging_bytes_per_instance": staging,
           "device_bytes_in_use": {str(k): v for k, v in used.items()},
           "device_bytes_per_extra_instance": {str(k): (used[k] - used[1]) / (k - 1) for k in used if k > 1}}
    result["memory"][name] = row
    save(args, result, f"memory/{name}", row)


def run_phases(orch, feeds: list[dict], iters: int, warmup: int = 20) -> dict[str, float]:
    """One thread, one instance: medians (ms) of the phases of ``Executor.run`` (input checks, staging,
    enqueueing the program, outputs: the wait for the GPU and the copies out) and of the whole ``orch.run``
    (its pool take/give included): where a single run's time goes."""
    from orchestrator.inputs import check_inputs

    executor, backend, pipeline = orch.executor, orch.backend, orch.pipeline
    backend.bind_thread()
    phases: dict[str, list[float]] = {k: [] for k in ("check_inputs", "set_inputs", "program", "outputs")}
    clock = time.perf_counter
    for i in range(warmup + iters):
        t0 = clock()
        arrays, dims = check_inputs(pipeline, feeds[i % len(feeds)])
        t1 = clock()
        backend.set_inputs(arrays, dims)
        t2 = clock()
        executor._program()
        t3 = clock()
        backend.outputs(pipeline.outputs)
        t4 = clock()
        if i >= warmup:
            for key, span in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                phases[key].append(span)
    runs = []
    for i in range(warmup + iters):
        t = clock()
        orch.run(feeds[i % len(feeds)])
        if i >= warmup:
            runs.append(clock() - t)
    return {**{k: 1e3 * statistics.median(v) for k, v in phases.items()}, "run": 1e3 * statistics.median(runs)}


def breakdown(args, name: str, scenario: tuple, result: dict) -> None:
    """The gap to the raw reference at one thread, in graph mode: our run's phases beside one raw call."""
    from orchestrator import Orchestrator

    path, feeds, input_name, output_name = scenario
    with Orchestrator.from_yaml(path, device="cuda", cache_dir=args.cache, graphs=True) as orch:
        row = {"orchestrator_ms": run_phases(orch, feeds, args.iters)}
        slot = RawSlot(orch, 0, path_steps(orch.pipeline), input_name, output_name)
        try:
            samples = []
            for i in range(20 + args.iters):
                t = time.perf_counter()
                slot.run(feeds[i % len(feeds)][input_name])
                if i >= 20:
                    samples.append(time.perf_counter() - t)
        finally:
            slot.free()
    row["raw_tensorrt_ms"] = 1e3 * statistics.median(samples)
    result["breakdown"][name] = row
    save(args, result, f"breakdown/{name}", row)


class DeviceBuffer:
    def __init__(self, array: np.ndarray):
        from orchestrator.backends.cuda.driver import DeviceAllocation, check, cu

        self.allocation = DeviceAllocation(array.nbytes)
        check(cu.cuMemcpyHtoD(self.allocation.address, array.ctypes.data, array.nbytes), "cuMemcpyHtoD")
        self.__cuda_array_interface__ = {"shape": array.shape, "typestr": array.dtype.str, "version": 3,
                                         "data": (self.allocation.address, False), "strides": None}


def device_data(args, name: str, scenario: tuple, result: dict) -> None:
    from orchestrator import Orchestrator

    path, feeds, input_name, _ = scenario
    feed = feeds[0]
    on_device = {**feed, input_name: DeviceBuffer(feed[input_name])}
    row = {}
    for label, mode, inputs, device_out in (("numpy_in_out_graph", True, feed, False),
                                            ("device_in_out_eager_zero_copy", False, on_device, True),
                                            ("device_in_out_graph", True, on_device, True)):
        with Orchestrator.from_yaml(path, device="cuda", cache_dir=args.cache, graphs=mode) as orch:
            for _ in range(20):
                orch.run(inputs, device_outputs=device_out)
            samples = []
            for _ in range(args.iters):
                t = time.perf_counter()
                orch.run(inputs, device_outputs=device_out)
                samples.append(time.perf_counter() - t)
        row[label] = latency_stats(samples, sum(samples))
    on_device[input_name].allocation.free()
    result["device_data"][name] = row
    save(args, result, f"device_data/{name}", row)


def save(args, result: dict, key: str, row: dict) -> None:
    print(key, json.dumps(row), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


def smoke(args) -> None:
    """No GPU: the scenarios' pipelines and the client harness on the CPU backend, 2 instances."""
    from orchestrator import Orchestrator

    for name in args.scenarios:
        path, feeds, _, output = SCENARIOS[name](args)
        with Orchestrator.from_yaml(path, device="cpu", instances=2) as orch:
            stats = load(orch.run, feeds, duration=args.duration, clients=4)
            phases = run_phases(orch, feeds, iters=3, warmup=1)
        print(f"smoke: {name} on the CPU backend, 4 clients, 2 instances:", json.dumps(stats), flush=True)
        print(f"smoke: {name} on the CPU backend, one run's phases (ms):", json.dumps(phases), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--modes", nargs="+", default=["graph", "eager"], choices=["graph", "eager"])
    parser.add_argument("--duration", type=float, default=2.0, help="seconds of load per measurement")
    parser.add_argument("--iters", type=int, default=300, help="runs per device-data measurement")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "orchestrator-bench")
    parser.add_argument("--smoke", action="store_true", help="no GPU: the harness on the CPU backend")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "instances.json")
    args = parser.parse_args()
    if args.smoke:
        return smoke(args)
    from orchestrator.backends.cuda.driver import Context

    result: dict = {"device": Context(0).info.name, "clients": CLIENTS, "duration_s": args.duration,
                    "throughput": {}, "breakdown": {}, "memory": {}, "device_data": {}}
    for name in args.scenarios:
        scenario = SCENARIOS[name](args)
        for measure in (throughput, breakdown, memory, device_data):
            try:
                measure(args, name, scenario, result)
            except Exception as exc:  # a benchmark reports what failed rather than losing the other rows
                result.setdefault("errors", {})[f"{measure.__name__}/{name}"] = f"{type(exc).__name__}: {exc}"
                save(args, result, f"{measure.__name__}/{name}", {"error": str(exc)})


if __name__ == "__main__":
    main()
