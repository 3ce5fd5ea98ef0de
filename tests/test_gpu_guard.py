"""GPU tests cannot skip silently: they skip only without an NVIDIA driver/device, and fail with the reason
when a device is visible but the CUDA backend cannot start. Both paths are simulated here."""

from __future__ import annotations

import ctypes
import sys
import types
from pathlib import Path

import pytest

from orchestrator.backends import cuda

GPU_TEST = """
import pytest

@pytest.mark.gpu
def test_on_the_gpu():
    pass

def test_elsewhere_unmarked():
    pass
"""


PROJECT_GUARD = """
import importlib.util
spec = importlib.util.spec_from_file_location("project_conftest", r"{path}")
project = importlib.util.module_from_spec(spec)
spec.loader.exec_module(project)
gpu = project.gpu
"""


@pytest.fixture
def status(monkeypatch):
    """Set what ``available`` and ``device_present`` report."""
    def set_status(available, present):
        monkeypatch.setattr(cuda, "available", lambda: available)
        monkeypatch.setattr(cuda, "device_present", lambda: present)
    return set_status


def run_gpu_test(pytester):
    pytester.makeini("[pytest]\nmarkers =\n    gpu: needs a GPU\n")
    pytester.makeconftest(PROJECT_GUARD.format(path=Path(__file__).with_name("conftest.py")))
    pytester.makepyfile(test_gpu=GPU_TEST)
    return pytester.runpytest_inprocess("-q", "-rsE")


def test_no_driver_skips_with_the_reason(pytester, status):
    status((False, "cuda-python cannot be imported"), (False, "no NVIDIA driver: libcuda cannot be loaded"))
    result = run_gpu_test(pytester)
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*no NVIDIA GPU: no NVIDIA driver*"])


def test_visible_device_with_a_broken_backend_fails_with_the_reason(pytester, status):
    status((False, "TensorRT cannot be imported (No module named 'tensorrt')"), (True, "1 NVIDIA device(s) visible"))
    result = run_gpu_test(pytester)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*1 NVIDIA device(s) visible, but the CUDA backend cannot start: TensorRT*"])


def test_working_backend_runs_the_test(pytester, status):
    status((True, ""), (True, "1 NVIDIA device(s) visible"))
    run_gpu_test(pytester).assert_outcomes(passed=2)


class FakeLibcuda:
    def __init__(self, init_status: int, count: int = 1, count_status: int = 0):
        self.init_status, self.count, self.count_status = init_status, count, count_status

    def cuInit(self, flags):  # noqa: N802 - the driver's name
        return self.init_status

    def cuDeviceGetCount(self, pointer):  # noqa: N802
        pointer._obj.value = self.count
        return self.count_status


@pytest.mark.parametrize(("lib", "present", "words"), [
    (None, False, "libcuda cannot be loaded"),
    (FakeLibcuda(100), False, "CUDA_ERROR_NO_DEVICE"),
    (FakeLibcuda(34), False, "CUDA_ERROR_STUB_LIBRARY"),
    (FakeLibcuda(0, count=0), False, "sees no device"),
    (FakeLibcuda(0, count=2), True, "2 NVIDIA device(s) visible"),
    (FakeLibcuda(999), True, "cuInit fails with status 999"),  # a driver that is there but broken
    (FakeLibcuda(0, count_status=3), True, "cuDeviceGetCount: status 3"),
])
def test_device_present_asks_libcuda_directly(monkeypatch, lib, present, words):
    def cdll(name):
        if lib is None:
            raise OSError(f"{name}: cannot open shared object file")
        return lib

    monkeypatch.setattr(ctypes, "CDLL", cdll)
    cuda.device_present.cache_clear()
    try:
        got, why = cuda.device_present()
    finally:
        cuda.device_present.cache_clear()
    assert got is present and words in why


def fake_bindings(monkeypatch, init):
    """A stand-in ``cuda.bindings.driver`` whose cuInit is ``init``."""
    result = types.SimpleNamespace(CUDA_SUCCESS=0)
    driver = types.SimpleNamespace(CUresult=result, cuInit=init, cuDeviceGetCount=lambda: (0, 1))
    bindings = types.ModuleType("cuda.bindings")
    bindings.driver = driver
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.driver", driver)


def test_available_names_an_unexpected_binding_error(monkeypatch):
    def broken(flags):
        raise TypeError("bindings built for another driver ABI")

    fake_bindings(monkeypatch, broken)
    cuda.available.cache_clear()
    try:
        ok, why = cuda.available()
    finally:
        cuda.available.cache_clear()
    assert not ok and "TypeError: bindings built for another driver ABI" in why


def test_available_needs_tensorrt(monkeypatch):
    fake_bindings(monkeypatch, lambda flags: (0,))
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt raises ImportError
    cuda.available.cache_clear()
    try:
        ok, why = cuda.available()
    finally:
        cuda.available.cache_clear()
    assert not ok and "TensorRT cannot be imported" in why


LOGGED = """
def test_passes():
    pass

def test_fails():
    assert 1 == 2, "planted"
"""


@pytest.mark.parametrize("workers", [[], ["-p", "xdist", "-n", "2"]], ids=["serial", "xdist"])
def test_outcomes_and_failures_are_logged_once_as_they_happen(pytester, monkeypatch, workers):
    """Device sessions are cut off at a time limit: $ORCHESTRATOR_FAILURE_LOG keeps what ran and failed."""
    log = pytester.path / "failures.log"
    monkeypatch.setenv("ORCHESTRATOR_FAILURE_LOG", str(log))
    pytester.makeconftest(PROJECT_GUARD.format(path=Path(__file__).with_name("conftest.py"))
                          + "pytest_runtest_logreport = project.pytest_runtest_logreport\n")
    pytester.makepyfile(test_logged=LOGGED)
    pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", *workers).assert_outcomes(passed=1, failed=1)
    failures = log.read_text()
    assert failures.count("==== ") == 1 and "test_logged.py::test_fails (call)" in failures and "planted" in failures
    outcomes = sorted(line.split()[0] + " " + line.split()[-1] for line in (pytester.path / "failures.log.outcomes")
                      .read_text().splitlines())
    assert outcomes == ["failed test_logged.py::test_fails", "passed test_logged.py::test_passes"]
