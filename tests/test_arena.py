"""The CUDA arena layout (pure Python): every tensor 256-aligned, TensorRT scratch 512-aligned, no
overlap between tensors that are alive together; over generated pipelines with odd sizes."""

from __future__ import annotations

import numpy as np
import pytest
from cuts import odd_widths, write_cut
from hammer import pipeline as hammer_pipeline

from orchestrator.backends.cuda.arena import SCRATCH_ALIGNMENT, layout_arena
from orchestrator.pipeline.load import load_pipeline
from orchestrator.planning import analyse


def _check(pipeline, rng: np.random.Generator) -> None:
    sizes = {n: int(rng.integers(1, 5000)) for n in pipeline.tensors}
    layout = layout_arena(pipeline, sizes, scratch=int(rng.integers(0, 100_000)))
    assert all(o % 256 == 0 for o in layout.offsets.values())
    assert layout.scratch_offset % SCRATCH_ALIGNMENT == 0 and layout.total % SCRATCH_ALIGNMENT == 0
    ends = [layout.offsets[n] + sizes[n] for n in layout.offsets]
    assert max(ends, default=0) <= layout.scratch_offset
    conflicts = analyse(pipeline).conflicts
    names = list(layout.offsets)
    fixed = {n for n, t in pipeline.tensors.items() if t.origin in ("input", "constant")}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if a in fixed or b in fixed or frozenset((a, b)) in conflicts:
                lo, hi = sorted((a, b), key=lambda n: layout.offsets[n])
                assert layout.offsets[lo] + sizes[lo] <= layout.offsets[hi], (a, b)


@pytest.mark.parametrize("seed", range(6))
def test_multi_tensor_cuts_with_odd_sizes_are_aligned(tmp_path, seed):
    rng = np.random.default_rng(seed)
    pipeline = load_pipeline(write_cut(tmp_path, odd_widths(rng), seed))
    for _ in range(20):
        _check(pipeline, rng)


def test_branching_pipeline_layout_is_aligned(workdir):
    pipeline = load_pipeline(hammer_pipeline(workdir))
    rng = np.random.default_rng(7)
    for _ in range(20):
        _check(pipeline, rng)


def test_generated_cuts_run_on_the_cpu_backend(tmp_path):
    """The generator makes valid pipelines (the GPU alignment test runs the same ones)."""
    from orchestrator import Orchestrator

    rng = np.random.default_rng(11)
    widths = odd_widths(rng)
    with Orchestrator.from_yaml(write_cut(tmp_path, widths, 11), device="cpu") as orch:
        x = {f"x{i}": rng.standard_normal((3, w)).astype(np.float32) for i, w in enumerate(widths)}
        out = orch.run(x)
    assert [out[f"y{i}"].shape for i in range(len(widths))] == [(3, w) for w in widths]
