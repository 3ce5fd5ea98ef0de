"""`orchestrator serve`: the Triton model a pipeline becomes, request handling, and a real server on
localhost (CPU backend) driven with tritonclient over HTTP and gRPC."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from conftest import KERNEL_CU, KERNEL_YAML, REF_PY, ROOT, tiny_model, write
from tritonclient.utils import InferenceServerException

from orchestrator import Orchestrator, load_pipeline, serve
from orchestrator.cli import main
from orchestrator.errors import InputError, MissingDependencyError, OrchestratorError
from orchestrator.serve import InstanceModel, check_interpreter, model_spec

SERVED = """\
name: tiny
dims:
  N: {min: 1, opt: 2, max: 8}
inputs:
  x: {dtype: float32, shape: [N, 4]}
  threshold: {dtype: float32, host: true}
outputs: [z]
snippets:
  relu: {onnx: relu.onnx}
kernels:
  scale: scale.yaml
steps:
  - snippet: relu
    inputs: {x: x}
    outputs: {y: y}
  - if: threshold < 0.5
    then:
      - kernel: scale
        args: {src: y, dst: z, factor: 2.0}
    else:
      - kernel: scale
        args: {src: y, dst: z, factor: threshold}
"""


@pytest.fixture
def served(tmp_path: Path) -> Path:
    """A pipeline with a batch dimension N (max 8), a host input and a branch on it."""
    onnx.save(tiny_model("Relu", ["x"], ["y"]), str(tmp_path / "relu.onnx"))
    (tmp_path / "scale.yaml").write_text(KERNEL_YAML)
    (tmp_path / "scale.cu").write_text(KERNEL_CU)
    (tmp_path / "ref.py").write_text(REF_PY)
    return write(tmp_path, SERVED)


def expected(x: np.ndarray, threshold: float) -> np.ndarray:
    factor = np.float32(2.0 if threshold < 0.5 else threshold)
    return np.maximum(x, 0) * factor


# --- the model a pipeline becomes -------------------------------------------------------------------

def test_batch_dimension_gives_dynamic_batching(served):
    spec = model_spec(load_pipeline(served))
    assert (spec.batch_dim, spec.max_batch_size) == ("N", 8)
    assert [(t.name, t.dtype, t.shape) for t in spec.inputs] == [("x", np.float32, (4,))]
    assert [(t.name, t.shape) for t in spec.host_inputs] == [("threshold", (1,))]
    assert [(t.name, t.shape) for t in spec.outputs] == [("z", (4,))]
    assert model_spec(load_pipeline(served), max_batch=3).max_batch_size == 3


def test_fixed_shapes_give_no_batching():
    spec = model_spec(load_pipeline(ROOT / "pipelines" / "cascade.yaml"))
    assert (spec.batch_dim, spec.max_batch_size) == (None, 0)
    assert [(t.name, t.dtype, t.shape) for t in spec.inputs] == [("image", np.uint8, (1, 224, 224, 3))]
    with pytest.raises(OrchestratorError, match="cascade.yaml: --max-batch: pipeline 'cascade' has no batch"):
        model_spec(load_pipeline(ROOT / "pipelines" / "cascade.yaml"), max_batch=4)


def test_max_batch_beyond_the_dimension_bound_is_refused(served):
    with pytest.raises(OrchestratorError, match=r"--max-batch 9: must be between 1 and 8.*dims.N.max"):
        model_spec(load_pipeline(served), max_batch=9)


def request(x, **parameters):
    return SimpleNamespace(data={"x": x}, parameters=parameters)


def test_requests_with_equal_host_inputs_run_stacked(served):
    calls = []

    class Recorder:
        def __init__(self):
            self.orch = Orchestrator.from_yaml(served, device="cpu")

        def run(self, feeds):
            calls.append((len(feeds["x"]), feeds["threshold"]))
            return self.orch.run(feeds)

    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((n, 4), dtype=np.float32) for n in (1, 3, 2, 1)]
    thresholds = [0.7, "0.7", 0.2, 0.7]  # parameters may arrive as text
    model = InstanceModel(Recorder(), model_spec(load_pipeline(served)))
    responses = model([request(x, threshold=t) for x, t in zip(xs, thresholds, strict=True)])
    assert calls == [(4, np.float32(0.7).item()), (2, np.float32(0.2).item()), (1, np.float32(0.7).item())]
    for x, t, response in zip(xs, thresholds, responses, strict=True):
        np.testing.assert_allclose(response["z"], expected(x, float(t)), rtol=1e-6)


def test_host_input_as_tensor_or_parameter_and_its_errors(served):
    model = InstanceModel(Orchestrator.from_yaml(served, device="cpu"), model_spec(load_pipeline(served)))
    x = np.ones((2, 4), np.float32)
    as_tensor = SimpleNamespace(data={"x": x, "threshold": np.full((2, 1), 0.8, np.float32)}, parameters={})
    np.testing.assert_allclose(model([as_tensor])[0]["z"], expected(x, 0.8), rtol=1e-6)
    with pytest.raises(InputError, match="host input 'threshold' is missing: send it as a request parameter"):
        model([request(x)])
    with pytest.raises(InputError, match="host input 'threshold': parameter 'high' is not a float32"):
        model([request(x, threshold="high")])
    mixed = SimpleNamespace(data={"x": x, "threshold": np.array([[0.1], [0.9]], np.float32)}, parameters={})
    with pytest.raises(InputError, match="host input 'threshold': expected one value per request"):
        model([mixed])


# --- the interpreter check ----------------------------------------------------------------------------

def test_interpreter_without_shared_libpython_is_refused_in_one_line(served, monkeypatch, capsys):
    monkeypatch.setattr(serve, "loaded_libpython", lambda: None)
    with pytest.raises(MissingDependencyError, match="serve needs a CPython built with a shared libpython"):
        check_interpreter()
    assert main(["serve", str(served), "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: serve needs a CPython built with a shared libpython") and "\n" not in err


def test_numpy_2_is_refused(monkeypatch):
    monkeypatch.setattr(serve.np, "__version__", "2.2.6")
    with pytest.raises(MissingDependencyError, match=r"PyTriton 0.7 needs numpy<2 \(with numpy 2.2.6"):
        check_interpreter()


def test_packages_the_isolated_stub_cannot_see_are_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(serve.site, "getsitepackages", lambda: [str(tmp_path)])
    with pytest.raises(MissingDependencyError, match=f"ignores PYTHONPATH and cannot import numpy .*into {tmp_path}"):
        check_interpreter()
    import zmq

    homes = {Path(m.__file__).resolve().parent.parent for m in (np, zmq)}
    (tmp_path / "rig.pth").write_text("".join(f"{home}\n" for home in homes))
    check_interpreter()


def test_this_interpreter_loads_its_own_libpython(monkeypatch):
    """The stub must load the serving interpreter's libpython, first on LD_LIBRARY_PATH."""
    monkeypatch.setenv("LD_LIBRARY_PATH", "/somewhere/else")
    check_interpreter()
    libpython = serve.loaded_libpython()
    assert libpython is not None and libpython.name == f"libpython{sys.version_info[0]}.{sys.version_info[1]}.so.1.0"
    assert os.environ["LD_LIBRARY_PATH"].split(":") == [str(libpython.parent), "/somewhere/else"]


# --- a real server ------------------------------------------------------------------------------------

def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class Server:
    """`orchestrator serve` in a child process (its own process group, so a failed test can end it)."""

    def __init__(self, pipeline: Path, log: Path, *args: str, device: str = "cpu"):
        self.http, self.grpc, self.metrics = free_ports(3)
        self.log = log
        command = [sys.executable, "-m", "orchestrator.cli", "serve", str(pipeline), "--device", device,
                   "--http-port", str(self.http), "--grpc-port", str(self.grpc),
                   "--metrics-port", str(self.metrics), *args]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        with log.open("wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)

    def wait_ready(self, model: str, timeout: float = 90) -> None:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{self.http}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"server exited early:\n{self.log.read_text()[-3000:]}"
            try:
                if client.is_server_ready() and client.is_model_ready(model):
                    return
            except Exception:  # not listening yet
                pass
            time.sleep(0.25)
        raise AssertionError(f"server not ready after {timeout} s:\n{self.log.read_text()[-3000:]}")

    def stop(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
            raise AssertionError(f"server did not stop within {timeout} s:\n{self.log.read_text()[-3000:]}") from None

    def alive(self) -> bool:
        return (self.process.poll() is None
                and httpclient.InferenceServerClient(f"127.0.0.1:{self.http}").is_server_live())


def infer(server: Server, protocol: str, x: np.ndarray, threshold: float | None, *, as_tensor: bool = False,
          dtype: str = "FP32", name: str = "x") -> np.ndarray:
    module = httpclient if protocol == "http" else grpcclient
    port = server.http if protocol == "http" else server.grpc
    client = module.InferenceServerClient(f"127.0.0.1:{port}")
    inputs = [module.InferInput(name, list(x.shape), dtype)]
    inputs[0].set_data_from_numpy(x)
    parameters = None
    if threshold is not None and as_tensor:
        host = np.full((len(x), 1), threshold, np.float32)
        inputs.append(module.InferInput("threshold", list(host.shape), "FP32"))
        inputs[1].set_data_from_numpy(host)
    elif threshold is not None:
        parameters = {"threshold": threshold}
    try:
        return client.infer("tiny", inputs, parameters=parameters).as_numpy("z")
    finally:
        client.close()


def test_serve_answers_64_concurrent_requests_survives_bad_ones_and_stops(served, tmp_path):
    server = Server(served, tmp_path / "server.log", "--instances", "2", "--queue-delay-us", "2000")
    try:
        server.wait_ready("tiny")
        check_concurrent_requests(server)
        check_malformed_requests(server)
        check_metrics(server)
    finally:
        status = server.stop()
    log = (tmp_path / "server.log").read_text()
    assert status == 0, log[-3000:]
    assert f"{served}: stopped" in log


def check_concurrent_requests(server: Server) -> None:
    rng = np.random.default_rng(1)
    cases = [(("http", "grpc")[i % 2], rng.standard_normal((int(rng.integers(1, 4)), 4), dtype=np.float32),
              float(rng.choice([0.25, 0.75, 1.5])), i % 3 == 0) for i in range(64)]
    barrier = threading.Barrier(len(cases), timeout=30)

    def send(case):
        protocol, x, threshold, as_tensor = case
        barrier.wait()
        return infer(server, protocol, x, threshold, as_tensor=as_tensor)

    with ThreadPoolExecutor(len(cases)) as pool:
        answers = list(pool.map(send, cases, timeout=120))
    for (protocol, x, threshold, as_tensor), z in zip(cases, answers, strict=True):
        np.testing.assert_allclose(z, expected(x, threshold), rtol=1e-6,
                                   err_msg=f"{protocol}, threshold {threshold}, as tensor {as_tensor}")


MALFORMED = [
    ("wrong dtype", dict(x=np.ones((1, 4), np.float64), threshold=0.7, dtype="FP64"), "data-type"),
    ("wrong shape", dict(x=np.ones((1, 5), np.float32), threshold=0.7), "shape"),
    ("unknown input", dict(x=np.ones((1, 4), np.float32), threshold=0.7, name="y"), "y"),
    ("over the batch bound", dict(x=np.ones((9, 4), np.float32), threshold=0.7), "batch"),
    ("no host input", dict(x=np.ones((1, 4), np.float32), threshold=None), "host input 'threshold' is missing"),
    ("host input not a number", dict(x=np.ones((1, 4), np.float32), threshold="high"), "is not a float32"),
]


def check_malformed_requests(server: Server) -> None:
    for protocol in ("http", "grpc"):
        for what, kwargs, message in MALFORMED:
            kwargs = dict(kwargs)
            x, threshold = kwargs.pop("x"), kwargs.pop("threshold")
            with pytest.raises(InferenceServerException, match=message):
                infer(server, protocol, x, threshold, **kwargs)
            assert server.alive(), f"{protocol}: server died after a request with {what}"
    x = np.full((2, 4), 3.0, np.float32)
    np.testing.assert_allclose(infer(server, "grpc", x, 0.75), expected(x, 0.75))


def check_metrics(server: Server) -> None:
    """65 successful requests (64 concurrent, one after the malformed ones) show in the metrics, which
    Triton refreshes periodically: polled for up to 15 s."""
    deadline, success = time.monotonic() + 15, []
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics}/metrics", timeout=10) as response:
            text = response.read().decode()
        success = [line for line in text.splitlines()
                   if line.startswith('nv_inference_request_success{model="tiny"')]
        if success and float(success[0].split()[-1]) >= 65:
            return
        time.sleep(0.5)
    raise AssertionError(f"metrics never counted 65 successful requests: {success}")


@pytest.mark.gpu
def test_serve_on_the_gpu_matches_the_cpu_reference(tmp_path):
    """The cascade served by CUDA instances (whole-graph mode), 16 concurrent gRPC requests on both paths."""

    pipeline = ROOT / "pipelines" / "cascade.yaml"
    server = Server(pipeline, tmp_path / "server.log", "--instances", "2", "--graphs", "whole", device="cuda")
    rng = np.random.default_rng(2)
    cases = [(rng.integers(0, 256, (1, 224, 224, 3), dtype=np.uint8), float(t))
             for t in rng.choice([0.0, 1.01], 16)]  # 0: the small model answers; 1.01: always escalates
    reference = Orchestrator.from_yaml(pipeline, device="cpu")
    try:
        server.wait_ready("cascade", timeout=600)  # engines may be built first

        def send(case):
            image, threshold = case
            client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc}")
            inputs = [grpcclient.InferInput("image", list(image.shape), "UINT8")]
            inputs[0].set_data_from_numpy(image)
            return client.infer("cascade", inputs, parameters={"threshold": threshold}).as_numpy("probs")

        with ThreadPoolExecutor(len(cases)) as pool:
            answers = list(pool.map(send, cases, timeout=300))
    finally:
        assert server.stop() == 0, (tmp_path / "server.log").read_text()[-3000:]
    for (image, threshold), probs in zip(cases, answers, strict=True):
        expected_probs = reference.run({"image": image, "threshold": threshold})["probs"]
        np.testing.assert_allclose(probs, expected_probs, rtol=1e-3, atol=1e-5)
