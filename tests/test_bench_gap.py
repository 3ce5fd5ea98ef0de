"""bench/gap.py makes the k = 1 pipeline it measures when resnet50.py has not run (run_all.py --only gap)."""

from __future__ import annotations

import argparse
import sys

from conftest import ROOT


def test_gap_snips_the_model_itself_when_resnet50_has_not_run(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "snippets"))
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    monkeypatch.delitem(sys.modules, "gap", raising=False)
    import gap

    folder = gap.k1_folder(argparse.Namespace(cache=tmp_path, batch=1, precision="fp16"))
    assert (folder / "piece0.onnx").read_bytes() == (tmp_path / "resnet50.onnx").read_bytes()
    assert (folder / "pipeline.yaml").exists() and (tmp_path / "resnet50.npz").exists()
