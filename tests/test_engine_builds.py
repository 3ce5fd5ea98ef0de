"""Engine builds that scale with the number of snippets (issue 14, item 5): cache misses build several at
a time on their own threads, hits are loaded, the first failure is raised and nothing half-built is
cached. TensorRT itself is replaced by a recorder here (the GPU suite builds real engines)."""

from __future__ import annotations

import threading
import time

import pytest
from conftest import write

from orchestrator.backends.cuda import snippet, trt
from orchestrator.backends.cuda.driver import DeviceInfo
from orchestrator.backends.cuda.snippet import EngineCache, EngineRequest
from orchestrator.errors import CompileError, OrchestratorError
from orchestrator.pipeline.load import load_pipeline

SNIPPETS = 6


class Recorder:
    """Stands in for TensorRT's builder: each build takes a while and records how many ran at once."""

    def __init__(self, fail: str | None = None):
        self.running = self.most = 0
        self.threads: set[str] = set()
        self.lock = threading.Lock()
        self.fail = fail

    def build_engine(self, onnx_bytes: bytes, *, name: str, **settings) -> tuple[bytes, bytes]:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.threads.add(threading.current_thread().name)
        time.sleep(0.1)
        with self.lock:
            self.running -= 1
        if name == self.fail:
            raise CompileError(f"TensorRT failed to build snippet '{name}': no tactic")
        return b"engine:" + name.encode(), b"timing"


@pytest.fixture
def requests(workdir, monkeypatch) -> dict[str, EngineRequest]:
    monkeypatch.setattr(trt, "version", lambda: "10.0.0")
    monkeypatch.setattr(trt, "precision_path", lambda name, precision, requested, keep: "fp32")
    monkeypatch.setattr(trt, "deserialize", lambda data: ("engine", data) if data.startswith(b"engine:") else None)
    monkeypatch.setattr(trt, "merge_timing_caches", lambda ours, theirs: ours)
    names = [f"s{i}" for i in range(SNIPPETS)]
    write(workdir, "inputs:\n  x: {dtype: float32, shape: [4, 4]}\noutputs: [x5]\nsnippets:\n"
          + "".join(f"  {n}: {{onnx: relu.onnx}}\n" for n in names) + "steps:\n"
          + "".join(f"  - snippet: {n}\n    inputs: {{x: {'x' if i == 0 else f'x{i - 1}'}}}\n"
                    f"    outputs: {{y: x{i}}}\n" for i, n in enumerate(names)))
    pipeline = load_pipeline(workdir / "pipeline.yaml")
    return {name: EngineRequest(info, {}) for name, info in pipeline.snippets.items()}


def cache_for(workdir) -> EngineCache:
    return EngineCache(workdir / "cache", DeviceInfo(0, "H100", (9, 0)))


def test_misses_build_jobs_at_a_time_each_thread_set_up_first(workdir, requests, monkeypatch):
    recorder, set_up = Recorder(), set()
    monkeypatch.setattr(trt, "build_engine", recorder.build_engine)
    engines = cache_for(workdir)
    got = engines.engines(requests, jobs=3, on_thread=lambda: set_up.add(threading.current_thread().name))
    assert {name: data for name, (_, data) in got.items()} == {n: b"engine:" + n.encode() for n in requests}
    assert engines.builds == SNIPPETS and recorder.most == 3
    assert recorder.threads == set_up and len(set_up) == 3 and threading.current_thread().name not in set_up
    again = cache_for(workdir)
    assert again.engines(requests, jobs=3).keys() == requests.keys() and again.builds == 0


def test_one_job_builds_in_order_on_the_calling_thread(workdir, requests, monkeypatch):
    recorder = Recorder()
    monkeypatch.setattr(trt, "build_engine", recorder.build_engine)
    cache_for(workdir).engines(requests, jobs=1)
    assert recorder.most == 1 and recorder.threads == {threading.current_thread().name}


def test_the_failed_build_is_raised_and_the_others_stay_cached(workdir, requests, monkeypatch):
    recorder = Recorder(fail="s2")
    monkeypatch.setattr(trt, "build_engine", recorder.build_engine)
    with pytest.raises(CompileError, match="snippet 's2': no tactic"):
        cache_for(workdir).engines(requests, jobs=2)
    cached = sorted(p.name.split("-")[0] for p in (workdir / "cache" / "engines").glob("*.engine"))
    assert "s2" not in cached and set(cached) <= set(requests) - {"s2"}
    assert not list((workdir / "cache" / "engines").glob("*.tmp*"))
    recorder.fail = None
    retry = cache_for(workdir)
    retry.engines(requests, jobs=2)
    assert retry.builds == SNIPPETS - len(cached)  # only what was not cached is built again


def test_build_jobs_from_the_environment(monkeypatch):
    monkeypatch.setenv(snippet.JOBS_VARIABLE, "7")
    assert snippet.build_jobs() == 7
    monkeypatch.delenv(snippet.JOBS_VARIABLE)
    assert snippet.build_jobs() == 1
    for bad in ("0", "many", "-2"):
        monkeypatch.setenv(snippet.JOBS_VARIABLE, bad)
        with pytest.raises(OrchestratorError, match="ORCHESTRATOR_BUILD_JOBS must be a number of builds >= 1"):
            snippet.build_jobs()


@pytest.mark.parametrize("bad", [0, -1, True, 2.5, "4"])
def test_build_jobs_option_is_checked(bad):
    from orchestrator.options import RunOptions

    with pytest.raises(ValueError, match="build_jobs must be an integer >= 1 or None"):
        RunOptions(build_jobs=bad)
