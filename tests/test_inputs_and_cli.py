"""Run-time input checks and the command line (exit codes, one-line errors, JSON Schema)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import ROOT, write

from orchestrator import InputError, Orchestrator
from orchestrator.cli import main

CLASSIFY = ROOT / "pipelines/classify.yaml"


@pytest.fixture(scope="module")
def classify():
    return Orchestrator.from_yaml(CLASSIFY, device="cpu")


@pytest.mark.parametrize(("inputs", "message"), [
    ({}, "missing image"),
    ({"image": np.zeros((1, 224, 224, 3), np.uint8), "extra": 1}, "unexpected extra"),
    ({"image": np.zeros((1, 224, 224, 3), np.float32)}, "expected dtype uint8, got float32"),
    ({"image": np.zeros((1, 224, 3), np.uint8)}, "rank 3 does not match"),
    ({"image": np.zeros((1, 225, 224, 3), np.uint8)}, "dimension 1 is 225, expected 224"),
    ({"image": np.zeros((9, 224, 224, 3), np.uint8)}, "N = 9 is outside dims.N"),
    ({"image": [[1]]}, "expected a numpy array"),
])
def test_bad_inputs_are_rejected_with_one_line(classify, inputs, message):
    with pytest.raises(InputError, match=message) as info:
        classify.run(inputs)
    assert "\n" not in str(info.value)


def test_host_scalar_input_checks(workdir):
    path = write(workdir, (workdir / "base.yaml").read_text())
    orch = Orchestrator(path, device="cpu")
    x = np.ones((2, 4), np.float32)
    with pytest.raises(InputError, match="host scalar of dtype int32"):
        orch.run({"x": x, "flag": 0.5})
    with pytest.raises(InputError, match="host scalar"):
        orch.run({"x": x, "flag": np.zeros(3)})
    np.testing.assert_allclose(orch.run({"x": x, "flag": 1})["z"], x * 2)


def test_cli_run_writes_outputs(tmp_path, capsys):
    out = tmp_path / "out.npz"
    code = main(["run", str(CLASSIFY), "--inputs", str(ROOT / "pipelines/inputs/classify.npz"),
                 "--output", str(out), "--device", "cpu"])
    assert code == 0
    with np.load(out) as result:
        assert result["probs"].shape == (2, 1000)
        np.testing.assert_allclose(result["probs"].sum(-1), 1, rtol=1e-5)
    assert "ran on cpu" in capsys.readouterr().out


def test_cli_user_errors_exit_1_on_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, image=np.zeros((1, 2, 3), np.float32))
    assert main(["run", str(CLASSIFY), "--inputs", str(bad), "--device", "cpu"]) == 1
    assert main(["run", str(CLASSIFY), "--inputs", str(tmp_path / "none.npz"), "--device", "cpu"]) == 1
    assert main(["validate", str(tmp_path / "missing.yaml")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all("Traceback" not in line for line in err)
    assert "missing.yaml: cannot read file" in err[2]


def test_cli_validate_examples(capsys):
    assert main(["validate", *map(str, sorted((ROOT / "pipelines").glob("*.yaml")))]) == 0
    assert capsys.readouterr().out.count(": ok (") == len(list((ROOT / "pipelines").glob("*.yaml")))


def test_schema_is_valid_json_with_every_section(capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert set(schema["properties"]) >= {"inputs", "outputs", "steps", "snippets", "kernels", "dims", "constants"}
    assert schema["required"] == ["inputs", "outputs", "steps"]


def test_outputs_into_caller_buffers_on_cpu(workdir):
    orch = Orchestrator(write(workdir, (workdir / "base.yaml").read_text()), device="cpu")
    x = np.ones((2, 4), np.float32)
    buffer = np.zeros((2, 4), np.float32)
    result = orch.run({"x": x, "flag": 0}, out={"z": buffer})
    assert result["z"] is buffer and (buffer == 2).all()
    with pytest.raises(InputError, match=r"out\['z'\]: expected a C-contiguous float32 array of shape \[2, 4\]"):
        orch.run({"x": x, "flag": 0}, out={"z": np.zeros((3, 4), np.float32)})
    with pytest.raises(InputError, match="out: nope is not an output"):
        orch.run({"x": x, "flag": 0}, out={"nope": buffer})
    with pytest.raises(Exception, match="device outputs need the CUDA backend"):
        orch.run({"x": x, "flag": 0}, device_outputs=True)


def test_dlpack_inputs_must_be_device_memory(classify):
    class HostDLPack:  # a DLPack producer in host memory that is not a numpy array
        def __init__(self, array):
            self.array = array

        def __dlpack__(self, **kwargs):
            return self.array.__dlpack__()

        def __dlpack_device__(self):
            return self.array.__dlpack_device__()

    image = HostDLPack(np.zeros((1, 224, 224, 3), np.uint8))
    with pytest.raises(InputError, match="a DLPack array in host memory"):
        classify.run({"image": image})
