"""The fast example kernels (custom_kernels/*_fast): drop-in replacements of the one-thread-per-element/row
kernels. On the CPU: same contract and numpy reference, NVRTC compiles them, no local-memory spills. On the
GPU: equal to the reference over shapes that take every path (vector and scalar, short and long rows, ties)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ROOT

from orchestrator.kernels.nvrtc import compile_kernel
from orchestrator.pipeline.load import load_pipeline

NAMES = ("preprocess", "softmax", "topk")
KERNELS = (ROOT / "custom_kernels").as_posix()

PIPELINE = f"""\
dims: {{N: {{min: 1, opt: 1, max: 4}}, H: {{min: 1, opt: 16, max: 64}}, W: {{min: 1, opt: 16, max: 256}},
       R: {{min: 1, opt: 1, max: 40}}, C: {{min: 1, opt: 1000, max: 6000}}}}
inputs:
  image: {{dtype: uint8, shape: [N, H, W, 3]}}
  logits: {{dtype: float32, shape: [R, C]}}
  scores: {{dtype: float32, shape: [R, C]}}
outputs: [x, probs, top_index, top_value, fused_index, fused_value, tied_index, tied_value]
constants:
  mean: {{value: [0.485, 0.456, 0.406], dtype: float32}}
  std: {{value: [0.229, 0.224, 0.225], dtype: float32}}
kernels:
  preprocess: {KERNELS}/preprocess_fast.yaml
  softmax: {KERNELS}/softmax_fast.yaml
  topk: {KERNELS}/topk_fast.yaml
  softmax_topk: {KERNELS}/softmax_topk_fast.yaml
steps:
  - {{kernel: preprocess, args: {{image: image, mean: mean, std: std, out: x}}}}
  - {{kernel: softmax, args: {{logits: logits, probs: probs}}}}
  - {{kernel: topk, args: {{probs: scores, index: top_index, value: top_value}}}}
  - {{kernel: softmax_topk, args: {{logits: logits, index: fused_index, value: fused_value}}}}
  - {{kernel: softmax_topk, args: {{logits: scores, index: tied_index, value: tied_value}}}}
"""


@pytest.fixture(scope="module")
def fast(tmp_path_factory):
    path = tmp_path_factory.mktemp("fast") / "fast.yaml"
    path.write_text(PIPELINE)
    return load_pipeline(path)


@pytest.fixture(scope="module")
def old():
    return load_pipeline(ROOT / "pipelines" / "classify.yaml").kernels


def test_fast_kernels_are_drop_in_replacements(fast, old):
    for name in NAMES:
        new, before = fast.kernels[name], old[name]
        assert [(a.name, a.kind, a.dtype, a.shape, a.value) for a in new.args] == \
               [(a.name, a.kind, a.dtype, a.shape, a.value) for a in before.args]
        assert (new.reference_path, new.reference_function) == (before.reference_path, before.reference_function)
        assert new.template_args == before.template_args and new.entry == f"{name}_fast"


@pytest.mark.parametrize("name", [*NAMES, "softmax_topk"])
def test_fast_kernels_compile_without_local_memory(fast, tmp_path, name):
    compiled = compile_kernel(fast.kernels[name], "sm_90", tmp_path)
    assert compiled.kind == "cubin" and f"{name}_fast" in compiled.lowered_name
    assert b".nv.local" not in compiled.image  # per-thread arrays stay in registers (fully unrolled indexing)


def feeds(n, h, w, r, c, rng):
    logits = (rng.standard_normal((r, c)) * 6).astype(np.float32)
    ties = rng.integers(0, 4, (r, c)).astype(np.float32)  # many equal values: lower index first
    return {"image": rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8), "logits": logits, "scores": ties}


# (N, H, W, R, C): vector paths (W, C multiples of 4), scalar paths, a row longer than 4 * ITEMS * 256
SHAPES = [(1, 224 // 4, 224, 1, 1000), (2, 16, 223, 3, 1001), (1, 17, 4, 32, 7), (4, 3, 17, 2, 5000),
          (1, 1, 1, 40, 5), (3, 64, 256, 5, 4096)]


@pytest.mark.gpu
def test_fast_kernels_match_the_reference_on_the_gpu(fast):
    from orchestrator import Orchestrator

    rng = np.random.default_rng(0)
    with Orchestrator(fast, device="cuda") as gpu, Orchestrator(fast, device="cpu") as cpu:
        for shape in SHAPES:
            data = feeds(*shape, rng)
            got, want = gpu.run(data), cpu.run(data)
            np.testing.assert_allclose(got["x"], want["x"], rtol=1e-6, atol=1e-6, err_msg=str(shape))
            np.testing.assert_allclose(got["probs"], want["probs"], rtol=1e-5, atol=1e-7, err_msg=str(shape))
            np.testing.assert_array_equal(got["top_index"], want["top_index"], err_msg=str(shape))
            np.testing.assert_array_equal(got["top_value"], want["top_value"], err_msg=str(shape))
            for fused in ("fused", "tied"):  # the fused kernel sums in another order than numpy
                np.testing.assert_array_equal(got[f"{fused}_index"], want[f"{fused}_index"], err_msg=str(shape))
                np.testing.assert_allclose(got[f"{fused}_value"], want[f"{fused}_value"], rtol=1e-5, atol=1e-7,
                                           err_msg=str(shape))



def test_fused_softmax_topk_has_the_contract_of_the_two_kernels_it_replaces(fast):
    """One kernel where softmax_fast then topk_fast ran: same input, same outputs, the two references composed."""
    fused, softmax, topk = (fast.kernels[n] for n in ("softmax_topk", "softmax", "topk"))
    assert [(a.name, a.dtype, a.shape) for a in fused.args if a.kind == "in"] == \
           [(a.name, a.dtype, a.shape) for a in softmax.args if a.kind == "in"]
    assert [(a.name, a.dtype, a.shape) for a in fused.args if a.kind != "in"] == \
           [(a.name, a.dtype, a.shape) for a in topk.args if a.kind != "in"]
    from orchestrator.pipeline.references import load_reference

    def reference(kernel):
        return load_reference(kernel.reference_path, kernel.reference_function)

    logits = np.random.default_rng(3).standard_normal((3, 1000)).astype(np.float32)
    composed = reference(topk)(reference(softmax)(logits))
    for got, want in zip(reference(fused)(logits), composed, strict=True):
        np.testing.assert_array_equal(got, want)
