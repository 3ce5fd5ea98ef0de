"""Engine builds that scale with the number of snippets (issue 14, item 5): cache misses build several at
a time in worker processes, hits are loaded, the first failure is raised and nothing half-built is cached.
TensorRT's builder is replaced by tests/fake_builds.py (the GPU suite builds real engines)."""

from __future__ import annotations

import threading

import fake_builds
import pytest
from conftest import write

from orchestrator.backends.cuda import snippet, trt
from orchestrator.backends.cuda.driver import DeviceInfo
from orchestrator.backends.cuda.snippet import EngineCache, EngineRequest
from orchestrator.errors import CompileError, OrchestratorError
from orchestrator.pipeline.load import load_pipeline

SNIPPETS = 6


@pytest.fixture
def requests(workdir, monkeypatch) -> dict[str, EngineRequest]:
    monkeypatch.setattr(trt, "version", lambda: "10.0.0")
    monkeypatch.setattr(trt, "precision_path", lambda name, precision, requested, keep: "fp32")
    monkeypatch.setattr(trt, "deserialize", lambda data: ("engine", data) if data.startswith(b"engine:") else None)
    monkeypatch.setattr(trt, "merge_timing_caches", lambda ours, theirs: ours)
    # one miss builds on the calling thread (jobs = min(jobs, misses)): the same fake, in this process
    monkeypatch.setattr(trt, "build_engine", lambda onnx_bytes, **settings: fake_builds.build_engine(
        onnx_bytes, device_index=0, **settings))
    monkeypatch.setenv("FAKE_BUILD_LOG", str(workdir / "builds.log"))
    names = [f"s{i}" for i in range(SNIPPETS)]
    write(workdir, "inputs:\n  x: {dtype: float32, shape: [4, 4]}\noutputs: [x5]\nsnippets:\n"
          + "".join(f"  {n}: {{onnx: relu.onnx}}\n" for n in names) + "steps:\n"
          + "".join(f"  - snippet: {n}\n    inputs: {{x: {'x' if i == 0 else f'x{i - 1}'}}}\n"
                    f"    outputs: {{y: x{i}}}\n" for i, n in enumerate(names)))
    pipeline = load_pipeline(workdir / "pipeline.yaml")
    return {name: EngineRequest(info, {}) for name, info in pipeline.snippets.items()}


def cache_for(workdir) -> EngineCache:
    engines = EngineCache(workdir / "cache", DeviceInfo(0, "H100", (9, 0)))
    engines.build_function = "fake_builds:build_engine"
    return engines


def builds(workdir) -> list[tuple[str, float, float, int]]:
    lines = (workdir / "builds.log").read_text().split("\n") if (workdir / "builds.log").exists() else []
    return [(n, float(a), float(b), int(p)) for n, a, b, p in (line.split() for line in lines if line)]


def most_at_once(spans: list[tuple[str, float, float, int]]) -> int:
    return max(sum(a <= start < b for _, a, b, _ in spans) for _, start, _, _ in spans)


def test_misses_build_jobs_at_a_time_in_worker_processes(workdir, requests):
    engines = cache_for(workdir)
    got = engines.engines(requests, jobs=3)
    assert {name: data for name, (_, data) in got.items()} == {n: b"engine:" + n.encode() for n in requests}
    spans = builds(workdir)
    assert engines.builds == SNIPPETS and sorted(n for n, *_ in spans) == sorted(requests)
    assert 2 <= most_at_once(spans) <= 3  # several at once, never more than jobs
    assert len({pid for *_, pid in spans}) == SNIPPETS  # a fresh process each
    again = cache_for(workdir)
    assert again.engines(requests, jobs=3).keys() == requests.keys() and again.builds == 0
    assert len(builds(workdir)) == SNIPPETS  # nothing built the second time


def test_one_job_builds_in_order_on_the_calling_thread(workdir, requests, monkeypatch):
    seen = []
    monkeypatch.setattr(trt, "build_engine", lambda onnx_bytes, *, name, **settings: (
        seen.append((name, threading.current_thread().name)) or (b"engine:" + name.encode(), b"timing")))
    cache_for(workdir).engines(requests, jobs=1)
    assert seen == [(n, threading.current_thread().name) for n in requests]


def test_the_failed_build_is_raised_and_the_others_stay_cached(workdir, requests, monkeypatch):
    monkeypatch.setenv("FAKE_BUILD_FAIL", "s2")
    with pytest.raises(CompileError, match="^TensorRT failed to build snippet 's2': no tactic$"):
        cache_for(workdir).engines(requests, jobs=2)
    cached = sorted(p.name.split("-")[0] for p in (workdir / "cache" / "engines").glob("*.engine"))
    assert "s2" not in cached and set(cached) <= set(requests) - {"s2"}
    assert not [p for p in (workdir / "cache" / "engines").iterdir() if not p.name.endswith(".engine")]
    monkeypatch.delenv("FAKE_BUILD_FAIL")
    retry = cache_for(workdir)
    retry.engines(requests, jobs=2)
    assert retry.builds == SNIPPETS - len(cached)  # only what was not cached is built again


def test_a_worker_that_dies_is_a_clear_error(workdir, requests, monkeypatch):
    monkeypatch.setenv("FAKE_BUILD_CRASH", "s4")
    with pytest.raises(OrchestratorError, match=r"build worker for snippet 's4' ended without a result \(exit status 139"):
        cache_for(workdir).engines(requests, jobs=2)


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


class FakeTimingCache:
    """Entries as ';'-separated keys; ``combine`` adds the other's unless told to refuse (TensorRT 8.6 on the
    H100 kept nothing when combining into a cache that had timed nothing)."""

    refuse = False

    def __init__(self, data: bytes):
        self.keys = [k for k in data.decode().split(";") if k]

    def combine(self, other: FakeTimingCache, ignore_mismatch: bool) -> bool:
        if FakeTimingCache.refuse:
            return False
        self.keys += [k for k in other.keys if k not in self.keys]
        return True

    def serialize(self) -> bytes:
        return ";".join(self.keys).encode()


@pytest.fixture
def fake_timing(monkeypatch):
    import types

    held: list[FakeTimingCache] = []
    config = types.SimpleNamespace(create_timing_cache=FakeTimingCache,
                                   set_timing_cache=lambda cache, ignore_mismatch: held.append(cache),
                                   get_timing_cache=lambda: held[-1])
    fake = types.SimpleNamespace(Builder=lambda logger: types.SimpleNamespace(create_builder_config=lambda: config))
    monkeypatch.setattr(trt, "trt", fake)
    monkeypatch.setattr(trt, "logger", lambda: None)
    monkeypatch.setattr(FakeTimingCache, "refuse", False)


def test_timing_caches_merge_into_the_larger(fake_timing):
    assert trt.merge_timing_caches(b"a;b", b"c") == b"a;b;c"
    assert trt.merge_timing_caches(b"c", b"a;b") == b"a;b;c"  # the larger receives, whichever is ours
    assert trt.merge_timing_caches(b"a;b", None) == b"a;b"


def test_a_refused_merge_keeps_the_larger_cache(fake_timing, caplog):
    FakeTimingCache.refuse = True
    assert trt.merge_timing_caches(b"x", b"a;b") == b"a;b"
    assert "could not combine" in caplog.text


def test_timing_cache_is_replaced_while_nobody_else_wrote_it(workdir, requests, monkeypatch):
    """One build after another in one process: each starts from the file and ends with all of it, so the
    file is replaced and TensorRT's combine is never asked (on the H100 it refused such merges, run 9)."""
    from orchestrator import cache

    merges = []
    monkeypatch.setattr(trt, "merge_timing_caches", lambda ours, theirs: merges.append(theirs) or ours)
    monkeypatch.setattr(trt, "build_engine", lambda onnx_bytes, *, name, timing_cache, **settings: (
        b"engine:" + name.encode(), (timing_cache or b"") + name.encode() + b";"))
    engines = cache_for(workdir)
    engines.engines(requests, jobs=1)
    assert cache.read(engines.timing_path) == b"".join(n.encode() + b";" for n in requests)
    assert merges == []


def test_timing_cache_written_meanwhile_is_merged(workdir, requests, monkeypatch):
    from orchestrator import cache

    merges = []
    monkeypatch.setattr(trt, "merge_timing_caches", lambda ours, theirs: merges.append((ours, theirs)) or ours + theirs)
    engines = cache_for(workdir)
    engines.timing_path.parent.mkdir(parents=True)
    cache.write_atomic(engines.timing_path, b"base;")
    engines.save_timing_cache(b"base;mine;", base=b"base;")  # nobody wrote since: replaced
    assert cache.read(engines.timing_path) == b"base;mine;" and merges == []
    engines.save_timing_cache(b"base;other;", base=b"base;")  # another build wrote "mine" meanwhile
    assert merges == [(b"base;other;", b"base;mine;")]
    assert cache.read(engines.timing_path) == b"base;other;base;mine;"


def test_an_engine_another_process_is_building_is_waited_for_not_built_twice(workdir, requests):
    """Two caches on one directory (as two processes: test workers, servers started together) asking for
    the same engines at once: each engine is built once, and both get every engine."""
    caches = [cache_for(workdir), cache_for(workdir)]
    got: list[dict] = [{}, {}]
    threads = [threading.Thread(target=lambda k=k: got[k].update(caches[k].engines(requests, jobs=3)))
               for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got[0].keys() == got[1].keys() == requests.keys()
    assert got[0] == got[1]
    assert sorted(n for n, *_ in builds(workdir)) == sorted(requests)  # each built once
    assert caches[0].builds + caches[1].builds == SNIPPETS


def test_an_entry_that_does_not_load_is_rebuilt_under_the_lock(workdir, requests, caplog, monkeypatch):
    from orchestrator import cache

    monkeypatch.setattr(trt, "build_engine", lambda onnx_bytes, *, name, **settings: (b"engine:" + name.encode(), b""))
    engines = cache_for(workdir)
    name, request = next(iter(requests.items()))
    path = engines._entry(request)[0]
    path.parent.mkdir(parents=True)
    cache.write_atomic(path, b"not an engine")  # a sound entry TensorRT cannot load
    got = engines.engines({name: request}, jobs=1)
    assert got[name] == ("engine", b"engine:" + name.encode()) and engines.builds == 1
    assert "is corrupt or incompatible; rebuilding" in caplog.text
