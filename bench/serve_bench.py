"""Requests/s and p50/p99 latency through `orchestrator serve` (Triton via PyTriton, localhost) against the
same pipeline called in-process, with 1, 2 and 4 instances and 16 concurrent clients.

On the device (rig Python with the [serve] packages, see bench/README.md):
    python bench/serve_bench.py --out bench/results/serve.json
``--smoke`` runs the whole procedure on the CPU backend, briefly (cascade, 1 instance), to check the script.

Each scenario: the pipeline in-process (``Orchestrator(..., instances=n)``, ``--clients`` threads calling
``run`` in a closed loop for ``--seconds`` after ``--warmup`` calls each), then ``orchestrator serve`` in a
child process with ``--instances n`` and the same closed loop through tritonclient over each protocol
(one client per thread); the served answers are checked against the in-process ones. Latency is the time
one call takes as its client sees it (Python client overhead included on both sides); the overhead Triton
adds is the served p50 minus the in-process p50 at the same concurrency and instance count.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
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


def stats(latencies: list[float], seconds: float) -> dict[str, float]:
    ms = np.asarray(latencies) * 1e3
    return {"requests": int(ms.size), "seconds": round(seconds, 3), "requests_per_s": round(ms.size / seconds, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 4), "p90_ms": round(float(np.percentile(ms, 90)), 4),
            "p99_ms": round(float(np.percentile(ms, 99)), 4), "mean_ms": round(float(ms.mean()), 4)}


def closed_loop(make_call, clients: int, seconds: float, warmup: int) -> dict[str, float]:
    """``clients`` threads, each calling its own ``make_call()`` back to back; latencies after warm-up."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    ready = threading.Barrier(clients + 1)
    stop = threading.Event()
    errors: list[BaseException] = []

    def client(index: int) -> None:
        try:
            call = make_call()
            for _ in range(warmup):
                call()
        except BaseException as exc:  # reported after the run
            errors.append(exc)
        ready.wait()
        while not stop.is_set() and not errors:
            start = time.perf_counter()
            call()
            latencies[index].append(time.perf_counter() - start)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    start = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(60)
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return stats([x for per in latencies for x in per], elapsed)


def pipelines(args) -> dict[str, tuple[Path, dict]]:
    """name -> (pipeline file, feeds)."""
    found = {}
    if "cascade" in args.pipelines:
        with np.load(ROOT / "pipelines" / "inputs" / "cascade.npz") as data:
            found["cascade"] = (ROOT / "pipelines" / "cascade.yaml", {k: data[k] for k in data.files})
    if "resnet50" in args.pipelines:
        import resnet50

        model = resnet50.resnet50_onnx(args.cache)
        path = args.cache / "serve_resnet50_fp16_b1.yaml"
        path.write_text(resnet50.PIPELINE.format(batch=1, onnx=model.as_posix(), precision="fp16",
                                                 kernels=(ROOT / "custom_kernels").as_posix()))
        image = np.random.default_rng(1).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)
        found["resnet50_fp16_b1"] = (path, {"image": image})
    return found


def in_process(path: Path, feeds: dict, instances: int, args) -> tuple[dict, dict]:
    from orchestrator import Orchestrator

    with Orchestrator.from_yaml(path, device=args.device, instances=instances, graphs=args.graphs) as orch:
        expected = orch.run(feeds)
        result = closed_loop(lambda: lambda: orch.run(feeds), args.clients, args.seconds, args.warmup)
    return result, expected


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class Served:
    """`orchestrator serve` in a child process on localhost."""

    def __init__(self, path: Path, instances: int, args, log: Path):
        self.http, self.grpc, self.metrics = free_ports(3)
        graphs = {False: "off", "segments": "segments", True: "whole"}[args.graphs]
        command = [sys.executable, "-m", "orchestrator.cli", "serve", str(path), "--device", args.device,
                   "--instances", str(instances), "--graphs", graphs, "--http-port", str(self.http),
                   "--grpc-port", str(self.grpc), "--metrics-port", str(self.metrics)]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)

    def wait_ready(self, model: str, timeout: float) -> float:
        import tritonclient.http as httpclient

        start = time.monotonic()
        client = httpclient.InferenceServerClient(f"127.0.0.1:{self.http}")
        while time.monotonic() - start < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if client.is_model_ready(model):
                    return time.monotonic() - start
            except Exception:  # not listening yet
                pass
            time.sleep(0.5)
        raise RuntimeError(f"server not ready after {timeout} s")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait(10)


def request_maker(served: Served, protocol: str, spec, feeds: dict):
    """A function making one client's call: its own tritonclient connection, inputs prepared once."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.utils import np_to_triton_dtype

    module = httpclient if protocol == "http" else grpcclient
    url = f"127.0.0.1:{served.http if protocol == 'http' else served.grpc}"
    parameters = {h.name: float(np.asarray(feeds[h.name]).item()) for h in spec.host_inputs} or None

    def make():
        client = module.InferenceServerClient(url)
        inputs = []
        for t in spec.inputs:
            array = np.ascontiguousarray(feeds[t.name])
            inputs.append(module.InferInput(t.name, list(array.shape), np_to_triton_dtype(array.dtype)))
            inputs[-1].set_data_from_numpy(array)
        return lambda: client.infer(spec.name, inputs, parameters=parameters)

    return make


def check_answer(served: Served, protocol: str, spec, feeds: dict, expected: dict) -> None:
    answer = request_maker(served, protocol, spec, feeds)()()
    for name, value in expected.items():
        got = answer.as_numpy(name)
        if got.dtype.kind == "f":
            np.testing.assert_allclose(got, value, rtol=1e-3, atol=1e-4, err_msg=f"{protocol}: {name}")
        else:
            np.testing.assert_array_equal(got, value, err_msg=f"{protocol}: {name}")


def through_server(path: Path, feeds: dict, expected: dict, instances: int, args) -> dict:
    from orchestrator.pipeline.load import load_pipeline
    from orchestrator.serve import model_spec

    spec = model_spec(load_pipeline(path))
    served = Served(path, instances, args, args.cache / f"serve_{spec.name}_{instances}.log")
    try:
        result: dict = {"startup_s": round(served.wait_ready(spec.name, args.ready_timeout), 2)}
        for protocol in args.protocols:
            check_answer(served, protocol, spec, feeds, expected)
            result[protocol] = closed_loop(request_maker(served, protocol, spec, feeds), args.clients,
                                           args.seconds, args.warmup)
    finally:
        result_code = served.stop()
    result["exit_code"] = result_code
    return result


def device_name(device: str) -> str:
    if device == "cpu":
        return "cpu"
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=30).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown GPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipelines", nargs="+", default=["cascade", "resnet50"], choices=["cascade", "resnet50"])
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per closed loop")
    parser.add_argument("--warmup", type=int, default=20, help="calls per client before measuring")
    parser.add_argument("--protocols", nargs="+", default=["grpc", "http"], choices=["grpc", "http"])
    parser.add_argument("--graphs", default="whole", choices=["off", "segments", "whole"])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--ready-timeout", type=float, default=300, help="seconds for engines to build")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "orchestrator-bench")
    parser.add_argument("--smoke", action="store_true", help="CPU, cascade, 1 instance, 2 clients, 1 s")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.smoke:
        args.device, args.pipelines, args.instances, args.clients = "cpu", ["cascade"], [1], 2
        args.seconds, args.warmup, args.graphs = 1.0, 2, "off"
    args.graphs = {"off": False, "segments": "segments", "whole": True}[args.graphs]
    args.cache.mkdir(parents=True, exist_ok=True)

    result: dict = {"device": device_name(args.device), "clients": args.clients, "seconds": args.seconds,
                    "graphs": args.graphs, "runs": {}}
    for name, (path, feeds) in pipelines(args).items():
        for instances in args.instances:
            key = f"{name}_i{instances}"
            try:
                local, expected = in_process(path, feeds, instances, args)
                run = {"in_process": local, "served": through_server(path, feeds, expected, instances, args)}
                run["overhead_p50_ms"] = {p: round(run["served"][p]["p50_ms"] - local["p50_ms"], 4)
                                          for p in args.protocols}
            except Exception as exc:  # a benchmark reports what failed rather than losing the other rows
                run = {"error": f"{type(exc).__name__}: {exc}"}
            result["runs"][key] = run
            print(key, json.dumps(run), flush=True)
            if args.out:
                args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
