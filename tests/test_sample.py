"""`--inputs random` and `--set`: seeded random inputs that pass the pipeline's own input checks (dims
within bounds, dtypes, host scalars), over the examples and a generated corpus of input declarations."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ROOT, write

from orchestrator.cli import main
from orchestrator.errors import InputError
from orchestrator.inputs import check_inputs
from orchestrator.pipeline.load import load_pipeline
from orchestrator.sample import host_settings, random_inputs

EXAMPLES = sorted((ROOT / "pipelines").glob("*.yaml"))
DTYPES = ["float32", "float16", "int8", "uint8", "int32", "int64", "bool"]


def declarations(seed: int) -> str:
    """A pipeline whose inputs have random dtypes, symbolic dims with random bounds, and host scalars."""
    rng = np.random.default_rng(seed)
    lines, dims = ["dims:"], ["A", "B", "C"]
    for d in dims:
        low = int(rng.integers(1, 5))
        high = low + int(rng.integers(0, 4))
        lines.append(f"  {d}: {{min: {low}, opt: {low}, max: {high}}}")
    lines += ["inputs:", "  anchor: {dtype: float32, shape: [A, B]}"]
    names = []
    for i in range(int(rng.integers(1, 5))):
        shape = [str(rng.choice(dims)) if rng.random() < 0.6 else str(rng.integers(1, 4))
                 for _ in range(int(rng.integers(1, 4)))]
        lines.append(f"  t{i}: {{dtype: {rng.choice(DTYPES)}, shape: [{', '.join(shape)}]}}")
        names.append(f"t{i}")
    for i in range(int(rng.integers(0, 3))):
        lines.append(f"  h{i}: {{dtype: {rng.choice(['float32', 'int32', 'int64', 'bool'])}, host: true}}")
    lines += ["outputs: [y]", "kernels:", "  scale: scale.yaml", "steps:", "  - kernel: scale",
              "    args: {src: anchor, dst: y, factor: 1.0}"]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_random_inputs_of_the_examples_pass_their_checks(path):
    pipeline = load_pipeline(path)
    for seed in range(3):
        values, dims = random_inputs(pipeline, seed)
        _, bound = check_inputs(pipeline, values)  # raises on a wrong dtype, shape or out-of-bounds dim
        assert bound == {k: v for k, v in dims.items() if k in bound}
    first, again = random_inputs(pipeline, 7)[0], random_inputs(pipeline, 7)[0]
    assert all(np.array_equal(first[k], again[k]) for k in first)  # seeded
    other = random_inputs(pipeline, 8)[0]
    assert any(not np.array_equal(first[k], other[k]) for k in first if first[k].size > 1)


@pytest.mark.parametrize("seed", range(20))
def test_random_inputs_of_generated_declarations(workdir, seed):
    pipeline = load_pipeline(write(workdir, declarations(seed), f"d{seed}.yaml"))
    values, dims = random_inputs(pipeline, seed)
    check_inputs(pipeline, values)
    for name, bounds in pipeline.dims.items():
        if name in dims:
            assert bounds.min <= dims[name] <= bounds.max
    for name, info in pipeline.inputs.items():
        assert values[name].dtype == np.dtype(info.dtype)
        if info.origin == "host":
            assert values[name].shape == ()


def test_a_switch_subject_gets_one_of_its_cases(workdir):
    from test_control_flow import SWITCH

    pipeline = load_pipeline(write(workdir, SWITCH % ""))
    assert {int(random_inputs(pipeline, s)[0]["mode"]) for s in range(30)} == {0, 1}


@pytest.mark.parametrize(("item", "dtype", "value"), [
    ("threshold=0.25", np.float32, 0.25), ("threshold = -1e-3", np.float32, -1e-3), ("mode=3", np.int32, 3),
    ("mode=-0x10", np.int32, -16), ("big=9000000000", np.int64, 9_000_000_000), ("flag=true", np.bool_, True),
    ("flag=0", np.bool_, False), ("small=-128", np.int8, -128), ("half=0.5", np.float16, 0.5)])
def test_set_parses_each_dtype(workdir, item, dtype, value):
    pipeline = load_pipeline(write(workdir, HOSTS))
    (name, parsed), = host_settings(pipeline, [item]).items()
    assert parsed.dtype == dtype and parsed.shape == () and parsed == dtype(value)


HOSTS = """\
inputs:
  x: {dtype: float32, shape: [1, 2]}
  threshold: {dtype: float32, host: true}
  mode: {dtype: int32, host: true}
  big: {dtype: int64, host: true}
  flag: {dtype: bool, host: true}
  small: {dtype: int8, host: true}
  half: {dtype: float16, host: true}
outputs: [y]
kernels:
  scale: scale.yaml
steps:
  - kernel: scale
    args: {src: x, dst: y, factor: 1.0}
"""


@pytest.mark.parametrize(("item", "message"), [
    ("thresh=0.5", "'thresh' is not a host input of pipeline 'pipeline' (host inputs: threshold, mode, big, "),
    ("x=1", "'x' is not a host input"), ("threshold", "'threshold' is not NAME=VALUE"),
    ("mode=1.5", "--set mode=1.5: '1.5' is not a int32 value"), ("mode=", "'' is not a int32 value"),
    ("threshold=abc", "'abc' is not a float32 value"), ("flag=yes", "'yes' is not a bool value"),
    ("small=128", "out of range for int8 (-128..127)"), ("mode=99999999999", "out of range for int32"),
    ("=3", "'' is not a host input")])
def test_set_rejects_bad_items_on_one_line(workdir, tmp_path, capsys, item, message):
    path = write(workdir, HOSTS)
    with pytest.raises(InputError, match=None) as info:
        host_settings(load_pipeline(path), [item])
    assert message in str(info.value) and str(info.value).startswith("--set")
    assert main(["run", str(path), "--inputs", "random", "--set", item, "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {info.value}"]


def test_cli_runs_examples_on_random_inputs_and_set_overrides(capsys):
    assert main(["run", str(ROOT / "pipelines/modes.yaml"), "--inputs", "random", "--seed", "3",
                 "--set", "mode=1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("random inputs (seed 3; N=") and "switch 'pick_model': took case 1" in out
    assert main(["run", str(ROOT / "pipelines/cascade.yaml"), "--inputs", str(ROOT / "pipelines/inputs/cascade.npz"),
                 "--set", "threshold=0", "--device", "cpu"]) == 0
    assert "if 'escalate': took else" in capsys.readouterr().out
    assert main(["run", str(ROOT / "pipelines/cascade.yaml"), "--inputs", str(ROOT / "pipelines/inputs/cascade.npz"),
                 "--seed", "4", "--device", "cpu"]) == 1
    assert capsys.readouterr().err == "error: --seed applies to --inputs random only\n"
