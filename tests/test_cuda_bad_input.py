"""GPU side of issue 15 (bad input): damaged engine entries are rebuilt, big-endian inputs are converted,
kernel descriptions that do not match their CUDA function are refused, driver failures are device errors
(exit 3), and out= buffers are checked before any step is enqueued. Marked ``gpu``."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
from conftest import ROOT, write

from orchestrator import Orchestrator
from orchestrator.errors import ConfigError, DeviceError, InputError

pytestmark = pytest.mark.gpu


from orchestrator.backends.cuda.driver import check, cu  # noqa: E402

MATTING = ROOT / "pipelines/matting.yaml"


def _bounded(workdir):
    """The tiny base pipeline with bounds for N (the CUDA backend plans at the dims' bounds)."""
    return write(workdir, "dims:\n  N: {min: 1, opt: 2, max: 4}\n" + (workdir / "base.yaml").read_text(),
                 "bounded.yaml")


def _matting_inputs():
    rng = np.random.default_rng(0)
    return {"image": rng.integers(0, 256, (1, 160, 224, 3), dtype=np.uint8),
            "trimap": rng.integers(0, 256, (1, 160, 224), dtype=np.uint8)}


@pytest.mark.parametrize("damage", ["truncated", "other_entry"])
def test_damaged_engine_entry_is_rebuilt_with_one_warning(tmp_path, caplog, damage):
    Orchestrator.from_yaml(MATTING, device="cuda", cache_dir=tmp_path).close()
    first, second = sorted((tmp_path / "engines").glob("*.engine"))[:2]
    if damage == "truncated":
        first.write_bytes(first.read_bytes()[:1000])
    else:  # a valid entry under the wrong name: its checksum covers the name
        shutil.copyfile(second, first)
    with caplog.at_level(logging.WARNING, logger="orchestrator"):
        orch = Orchestrator.from_yaml(MATTING, device="cuda", cache_dir=tmp_path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "cache entry" in r.getMessage()]
    assert orch.compiled.engine_cache.builds == 1
    assert len(warnings) == 1 and first.name in warnings[0] and "corrupt or incompatible" in warnings[0]
    x = _matting_inputs()
    expected = Orchestrator.from_yaml(MATTING, device="cpu").run(x)["alpha"]
    got = orch.run(x)["alpha"]
    assert np.linalg.norm(got.astype(np.float64) - expected) <= 1e-2 * np.linalg.norm(expected)
    orch.close()


def test_big_endian_inputs_give_the_same_outputs(workdir, tmp_path):
    x = np.arange(8, dtype=np.float32).reshape(2, 4) - 3
    with Orchestrator(_bounded(workdir), device="cuda", cache_dir=tmp_path) as orch:
        native = orch.run({"x": x, "flag": 1})["z"]
        swapped = orch.run({"x": x.astype(">f4"), "flag": np.array(1, ">i4")})["z"]
    np.testing.assert_array_equal(native, np.maximum(x, 0) * 2)
    np.testing.assert_array_equal(swapped, native)


def test_kernel_description_not_matching_the_function_is_refused(workdir, tmp_path):
    (workdir / "scale.cu").write_text('extern "C" __global__ void scale(const float* src, float* dst, float f) {}\n')
    with pytest.raises(ConfigError) as info:
        Orchestrator(_bounded(workdir), device="cuda", cache_dir=tmp_path)
    (problem,) = info.value.problems
    assert problem.location.file.endswith("scale.yaml") and problem.location.line == 3
    assert "has 3 parameter(s), but the description lists 4" in problem.message


def test_driver_failure_is_a_device_error_with_exit_3(monkeypatch, capsys):
    from orchestrator import cli

    with pytest.raises(DeviceError):
        check(cu.cuMemAlloc(1 << 62), "cuMemAlloc")

    def fail(args):
        check(cu.cuMemAlloc(1 << 62), "cuMemAlloc")

    monkeypatch.setattr(cli, "_schema", fail)
    assert cli.main(["schema"]) == 3
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("device error: cuMemAlloc failed")


def test_out_buffer_of_wrong_shape_is_refused_before_any_step(workdir, tmp_path):
    started = []

    class Watch:
        def step_started(self, step):
            started.append(step)

        def step_done(self, step):
            pass

        def branch_taken(self, block, taken):
            pass

    orch = Orchestrator(_bounded(workdir), device="cuda", cache_dir=tmp_path, observer=Watch())
    with orch, pytest.raises(InputError, match=r"out\['z'\]: expected a C-contiguous float32 array of shape \[2, 4\]"):
        orch.run({"x": np.ones((2, 4), np.float32), "flag": 1}, out={"z": np.zeros((3, 4), np.float32)})
    assert started == []
