"""Run-time guards that back the load-time proofs: symbols are at least 1 (shape rules are total for such
values only), and grids stay within CUDA's limits."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write

from orchestrator import InputError, Orchestrator
from orchestrator.errors import ExecutionError
from orchestrator.kernels.signature import bind_symbols, launch_config
from orchestrator.pipeline.load import load_pipeline


def test_empty_dimension_is_refused_before_the_run(workdir):
    orch = Orchestrator(write(workdir, (workdir / "base.yaml").read_text()), device="cpu")
    with pytest.raises(InputError, match="dimension N = 0: symbolic dimensions must be at least 1"):
        orch.run({"x": np.zeros((0, 4), np.float32), "flag": 1})


def test_kernel_symbols_below_one_are_refused(workdir):
    kernel = load_pipeline(workdir / "base.yaml").kernels["scale"]
    assert bind_symbols(kernel, {"src": (2, 4)}) == {"N": 2, "C": 4}
    with pytest.raises(ExecutionError, match="kernel 'scale': C = 0: a kernel's symbolic dimensions must be"):
        bind_symbols(kernel, {"src": (2, 0)})


@pytest.mark.parametrize(("grid", "env", "message"), [
    ("[N, C]", {"N": 1, "C": 70_000}, "grid dimension y is 70000"),
    ("[N, 1, C]", {"N": 1, "C": 65_536}, "grid dimension z is 65536"),
    ("[N * C]", {"N": 2**16, "C": 2**16}, "grid dimension x is 4294967296"),
])
def test_grid_beyond_cuda_limits_is_refused(workdir, grid, env, message):
    text = (workdir / "scale.yaml").read_text().replace("launch: {threads: dst, block: 128}",
                                                        f"launch: {{grid: {grid}, block: 128}}")
    (workdir / "scale.yaml").write_text(text)
    kernel = load_pipeline(workdir / "base.yaml").kernels["scale"]
    assert launch_config(kernel, {"N": 2, "C": 3}, {})[0][0] >= 1
    with pytest.raises(ExecutionError, match=message):
        launch_config(kernel, env, {})


def test_device_array_in_foreign_byte_order_is_refused():
    from orchestrator.inputs import DeviceArray

    class Fake:
        __cuda_array_interface__ = {"shape": (2, 4), "typestr": ">f4", "data": (1 << 20, False), "version": 3}

    with pytest.raises(InputError, match=r"input 'x': a device array in non-native byte order \(>f4\)"):
        DeviceArray.wrap("input 'x'", Fake())
    Fake.__cuda_array_interface__ = {**Fake.__cuda_array_interface__, "typestr": "<f4"}
    assert DeviceArray.wrap("input 'x'", Fake()).dtype == np.float32
