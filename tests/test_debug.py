"""Debug mode on deliberately broken pipelines: it names the right step each time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import KERNEL_YAML, ROOT, tiny_model

from orchestrator import ExecutionError, Orchestrator
from orchestrator.cli import main

GOOD = """\
dims:
  N: {min: 1, opt: 2, max: 4}
inputs:
  x: {dtype: float32, shape: [N, 4]}
  y: {dtype: float32, shape: [N, 4]}
outputs: [out]
snippets:
  relu: {onnx: relu.onnx, precision: PRECISION}
  sub: {onnx: sub.onnx}
kernels:
  scale: SCALE
steps:
  - snippet: relu
    name: rectify
    inputs: {x: x}
    outputs: {y: rx}
  - snippet: sub
    name: difference
    inputs: {a: rx, b: y}
    outputs: {c: d}
  - kernel: scale
    name: amplify
    args: {src: d, dst: big, factor: FACTOR}
  - snippet: relu
    name: clip
    inputs: {x: big}
    outputs: {y: out}
"""

OFF_BY_ONE_YAML = KERNEL_YAML.replace("scale.cu", "bad_scale.cu").replace("ref.py:scale", "REF")

OFF_BY_ONE_CU = """\
extern "C" __global__ void scale(const float* src, float* dst, float factor, int count) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < count) dst[i] = src[i + 1 < count ? i + 1 : i] * factor;   // planted bug: reads the next element
}
"""

OFF_BY_ONE_REF = """\
import numpy as np

def scale(src, factor):
    flat = src.reshape(-1)
    shifted = np.concatenate([flat[1:], flat[-1:]])   # planted bug: reads the next element
    return (shifted * np.float32(factor)).reshape(src.shape).astype(np.float32)
"""


def make(folder: Path, name: str, *, swap: bool = False, precision: str = "fp32", factor: float | str = 2.0,
         kernel: str = "scale.yaml") -> Path:
    onnx.save(tiny_model("Sub", ["a", "b"], ["c"]), str(folder / "sub.onnx"))
    text = GOOD.replace("PRECISION", precision).replace("FACTOR", str(factor)).replace("SCALE", kernel)
    if swap:
        text = text.replace("inputs: {a: rx, b: y}", "inputs: {a: y, b: rx}")
    path = folder / name
    path.write_text(text)
    return path


def off_by_one(folder: Path, *, in_reference: bool) -> str:
    """A kernel description with the planted bug in the CUDA source, or also in the numpy reference."""
    (folder / "bad_scale.cu").write_text(OFF_BY_ONE_CU)
    (folder / "bad_ref.py").write_text(OFF_BY_ONE_REF)
    ref = "bad_ref.py:scale" if in_reference else "ref.py:scale"
    (folder / "bad_scale.yaml").write_text(OFF_BY_ONE_YAML.replace("REF", ref))
    return "bad_scale.yaml"


def inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((2, 4)).astype(np.float32), "y": rng.standard_normal((2, 4)).astype(np.float32)}


def test_off_by_one_kernel_is_named(workdir):
    good = make(workdir, "good.yaml")
    bad = make(workdir, "bad.yaml", kernel=off_by_one(workdir, in_reference=True))
    report = Orchestrator(bad, device="cpu", debug=True).debug_run(inputs(), compare=str(good))
    first = report.first_divergence
    assert first is not None and first.record.name == "amplify"
    assert [c.ok for c in report.comparisons[:2]] == [True, True]
    assert "the step itself is wrong" in report.isolated
    assert "amplify" in report.table().splitlines()[-2]


def test_swapped_binding_is_named(workdir):
    good = make(workdir, "good.yaml")
    bad = make(workdir, "bad.yaml", swap=True)
    report = Orchestrator(bad, device="cpu", debug=True).debug_run(inputs(1), compare=str(good))
    assert report.first_divergence.record.name == "difference"
    assert "the step itself is wrong" in report.isolated


def test_fp16_overflow_is_named_by_the_sentinel(workdir):
    path = make(workdir, "overflow.yaml", precision="fp16", factor=1e6)
    orch = Orchestrator(path, device="cpu", debug=True)
    big = {"x": np.full((1, 4), 10, np.float32), "y": np.full((1, 4), -10, np.float32)}
    with pytest.raises(ExecutionError, match="step 'clip' .*fp16.*beyond the FP16 range"):
        orch.debug_run(big, sentinels=True)
    small = {k: v * np.float32(1e-3) for k, v in inputs().items()}
    orch.debug_run(small, sentinels=True)  # values within the FP16 range pass


def test_nan_sentinel_names_the_first_step(workdir):
    path = make(workdir, "nan.yaml", factor=".nan")  # YAML for NaN
    with pytest.raises(ExecutionError, match="step 'amplify' .* NaN/Inf value"):
        Orchestrator(path, device="cpu", debug=True).debug_run(inputs(), sentinels=True)


def test_dumps_manifest_and_summary(workdir, tmp_path):
    path = make(workdir, "good.yaml")
    report = Orchestrator(path, device="cpu", debug=True).debug_run(inputs(), dump_dir=tmp_path / "dump")
    manifest = json.loads((tmp_path / "dump" / "manifest.json").read_text())
    assert [t["step"] for t in manifest["tensors"]] == ["rectify", "difference", "amplify", "clip"]
    entry = manifest["tensors"][2]
    assert {"tensor", "shape", "dtype", "min", "max", "mean", "std", "nan", "inf", "seconds", "kind"} <= set(entry)
    np.testing.assert_array_equal(np.load(tmp_path / "dump" / entry["file"]), report.records[2].outputs["big"])
    assert "amplify" in (tmp_path / "dump" / "summary.txt").read_text()


def test_dead_intermediates_are_poisoned(workdir):
    orch = Orchestrator(make(workdir, "good.yaml"), device="cpu", debug=True)
    out = orch.run(inputs())
    assert np.isnan(orch.backend.values["rx"]).all() and np.isnan(orch.backend.values["big"]).all()
    np.testing.assert_allclose(out["out"], Orchestrator(make(workdir, "g2.yaml"), device="cpu").run(inputs())["out"])


def test_step_through_yields_each_step_and_can_stop(workdir):
    orch = Orchestrator(make(workdir, "good.yaml"), device="cpu", debug=True)
    names = []
    for record in orch.step_through(inputs()):
        names.append(record.name)
        if record.name == "difference":
            np.testing.assert_allclose(record.outputs["d"], record.inputs["rx"] - record.inputs["y"])
    assert names == ["rectify", "difference", "amplify", "clip"]
    seen = []
    for record in orch.step_through(inputs()):
        seen.append(record.name)
        if len(seen) == 2:
            break
    assert seen == ["rectify", "difference"]
    assert orch.run(inputs())["out"].shape == (2, 4)  # the abandoned run left the orchestrator usable


def test_debug_compare_reference_on_an_example():
    orch = Orchestrator(ROOT / "pipelines/cascade.yaml", device="cpu", debug=True)
    image = np.random.default_rng(0).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)
    report = orch.debug_run({"image": image, "threshold": 1.01}, compare="reference")
    assert report.first_divergence is None and report.branches == [("escalate", "then")]
    assert len(report.comparisons) == 7


def test_cli_debug_exit_code_and_table(workdir, tmp_path, capsys):
    good = make(workdir, "good.yaml")
    bad = make(workdir, "bad.yaml", swap=True)
    np.savez(tmp_path / "in.npz", **inputs(2))
    code = main(["debug", str(bad), "--inputs", str(tmp_path / "in.npz"), "--compare", str(good), "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 1 and "first divergence: step 'difference'" in out
    assert main(["debug", str(good), "--inputs", str(tmp_path / "in.npz"), "--compare", "reference",
                 "--device", "cpu"]) == 0


def test_debug_needs_debug_mode_and_eager(workdir):
    orch = Orchestrator(make(workdir, "good.yaml"), device="cpu")
    with pytest.raises(Exception, match="debug=True"):
        orch.debug_run(inputs())
    with pytest.raises(ValueError, match="cannot be combined with graphs"):
        Orchestrator(make(workdir, "good.yaml"), device="cpu", debug=True, graphs=True)


def test_readme_walkthrough_finds_the_planted_bug(capsys):
    folder = ROOT / "pipelines/planted_bug"
    code = main(["debug", str(folder / "bad.yaml"), "--inputs", str(folder / "inputs.npz"),
                 "--compare", str(folder / "good.yaml"), "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 1
    assert "first divergence: step 'amplify' (kernel scale), tensor 'big'" in out
    assert "the step itself is wrong" in out
    assert main(["validate", str(folder / "good.yaml"), str(folder / "bad.yaml")]) == 0


def test_profile_on_cpu_reports_every_step(workdir, tmp_path, capsys):
    import json as _json

    np.savez(tmp_path / "in.npz", **inputs())
    path = make(workdir, "good.yaml")
    assert main(["profile", str(path), "--inputs", str(tmp_path / "in.npz"), "--iters", "5", "--device", "cpu",
                 "--json", str(tmp_path / "p.json")]) == 0
    result = _json.loads((tmp_path / "p.json").read_text())
    assert [s["name"] for s in result["steps"]] == ["rectify", "difference", "amplify", "clip"]
    assert abs(sum(s["share"] for s in result["steps"]) - 1) < 1e-6 and result["host_ms_per_run"] > 0
    assert result["memory"]["arena_over_lower_bound"] <= 1.05
    assert "host time per run" in capsys.readouterr().out
