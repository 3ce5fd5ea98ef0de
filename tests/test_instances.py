"""Instances, thread safety, options and release, on the CPU reference backend."""

from __future__ import annotations

import gc
import sys
import threading
import weakref

import numpy as np
import pytest
from hammer import hammer, make_inputs, pipeline, reference

from orchestrator import InputError, MissingDependencyError, Orchestrator
from orchestrator.options import RunOptions
from orchestrator.pool import ClosedError, PoolTimeout


@pytest.mark.parametrize("instances", [1, 3])
def test_eight_threads_each_get_their_own_outputs(workdir, instances):
    with Orchestrator.from_yaml(pipeline(workdir), device="cpu", instances=instances) as orch:
        assert orch.instances == instances
        assert hammer(orch) == []


def test_the_hammer_catches_an_unguarded_instance(workdir):
    """Without the pool (every thread on one instance), runs overwrite each other's tensors."""
    with Orchestrator.from_yaml(pipeline(workdir), device="cpu") as orch:
        only = orch._pool.instances[0]
        orch._pool.take, orch._pool.give = (lambda timeout=None: only), (lambda instance: None)
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-5)  # switch threads often, so that the races show in a short run
        try:
            assert hammer(orch, runs=40)
        finally:
            sys.setswitchinterval(interval)


def test_instances_share_the_compiled_pipeline(workdir):
    with Orchestrator.from_yaml(pipeline(workdir), device="cpu", instances=2) as orch:
        first, second = (i.backend for i in orch._pool.instances)
        assert first.snippets is second.snippets and first.values is not second.values


def test_runs_proceed_concurrently_up_to_the_instance_count(workdir):
    """Two runs held at once on two instances: neither waits for the other."""
    orch = Orchestrator.from_yaml(pipeline(workdir), device="cpu", instances=2)
    with orch, orch.acquire(timeout=1) as a, orch.acquire(timeout=1) as b:
        assert a is not b
        inputs = make_inputs(np.random.default_rng(0))
        np.testing.assert_allclose(a.run(inputs)["z"], reference(inputs)["z"])
        with pytest.raises(PoolTimeout, match="no free instance within 0.05 s"):
            orch.run(inputs, timeout=0.05)


def test_timeout_option_applies_to_every_run(workdir):
    orch = Orchestrator.from_yaml(pipeline(workdir), device="cpu", timeout=0.05)
    errors = []
    with orch.acquire():
        worker = threading.Thread(target=lambda: errors.append(_error(orch)))
        worker.start()
        worker.join()
    assert len(errors) == 1 and "all 1 busy" in errors[0]
    orch.close()


def _error(orch) -> str:
    try:
        orch.run(make_inputs(np.random.default_rng(1)))
    except PoolTimeout as exc:
        return str(exc)
    return ""


def test_bad_inputs_are_refused_at_once_while_every_instance_is_busy(workdir):
    """Inputs are checked before an instance is taken: a bad request fails at once instead of waiting for a
    free instance (and a waiting thread's checks overlap the busy instance's run)."""
    orch = Orchestrator.from_yaml(pipeline(workdir), device="cpu", timeout=5.0)
    errors: list[BaseException] = []

    def bad_run() -> None:
        try:
            orch.run({"x": np.zeros((1, 4), np.float64)})
        except BaseException as exc:  # whatever came: the test looks at it
            errors.append(exc)

    with orch.acquire():
        worker = threading.Thread(target=bad_run)
        worker.start()
        worker.join(timeout=2.0)
        assert not worker.is_alive()  # it did not wait for the instance this thread holds
    assert len(errors) == 1 and isinstance(errors[0], InputError), errors
    orch.close()


def test_device_outputs_with_several_instances_are_refused(workdir):
    orch = Orchestrator.from_yaml(pipeline(workdir), device="cpu", instances=2)
    with orch, pytest.raises(InputError, match=r"orch.acquire\(\)"):
        orch.run(make_inputs(np.random.default_rng(0)), device_outputs=True)


@pytest.mark.parametrize(("options", "error", "match"), [
    ({"stream": 7}, MissingDependencyError, "stream= needs the CUDA backend"),
    ({"device_index": 1}, MissingDependencyError, "device_index=1 needs the CUDA backend"),
    ({"graphs": "segments"}, MissingDependencyError, "graph mode needs the CUDA backend"),
    ({"build_jobs": 4}, MissingDependencyError, "build_jobs= sets how many TensorRT engines build at once: it needs"),
    ({"instances": 0}, ValueError, "instances must be an integer >= 1"),
    ({"instances": 2, "stream": 7}, ValueError, "1 stream.s. given for 2 instance.s.; each instance needs"),
    ({"timeout": 0}, ValueError, "timeout must be a positive"),
    ({"streams": [1]}, TypeError, "unknown option.s. streams"),
])
def test_options_the_backend_cannot_honour_are_refused(workdir, options, error, match):
    with pytest.raises(error, match=match):
        Orchestrator.from_yaml(pipeline(workdir), device="cpu", **options)


def test_options_object_and_keywords_are_one_thing():
    assert RunOptions.of(RunOptions(instances=2), timeout=1.0) == RunOptions(instances=2, timeout=1.0)
    assert RunOptions(stream=[1, 2], instances=2).streams() == (1, 2)


def test_close_releases_every_instance_and_refuses_later_runs(workdir):
    orch = Orchestrator.from_yaml(pipeline(workdir), device="cpu", instances=3)
    backends = [i.backend for i in orch._pool.instances]
    orch.close()
    orch.close()  # idempotent
    assert all(b._closed for b in backends)
    with pytest.raises(ClosedError, match="after close"):
        orch.run(make_inputs(np.random.default_rng(0)))


def test_an_unclosed_orchestrator_is_released_by_garbage_collection(workdir):
    orch = Orchestrator.from_yaml(pipeline(workdir), device="cpu", instances=2)
    backends = [i.backend for i in orch._pool.instances]
    alive = weakref.ref(orch)
    del orch
    gc.collect()
    assert alive() is None and all(b._closed for b in backends)


def test_close_waits_for_runs_in_flight(workdir):
    orch = Orchestrator.from_yaml(pipeline(workdir), device="cpu")
    held, closed, seen = threading.Event(), threading.Event(), []

    def hold() -> None:
        with orch.acquire() as instance:
            held.set()
            seen.append(closed.wait(0.2))  # False: close() is still waiting for this instance
            instance.run(make_inputs(np.random.default_rng(0)))

    worker = threading.Thread(target=hold)
    worker.start()
    held.wait()
    orch.close()
    closed.set()
    worker.join()
    assert seen == [False] and orch._pool.instances[0].backend._closed


def test_profiling_with_several_instances_times_the_instance_it_runs(workdir):
    from orchestrator.profile import profile_pipeline

    inputs = make_inputs(np.random.default_rng(0), n=2)
    result = profile_pipeline(str(pipeline(workdir)), inputs, iterations=3, warmup=1, device="cpu", instances=2)
    first = result.steps[0]  # the relu snippet, which every run starts with
    assert first.kind == "snippet" and first.runs == 3, result.steps
