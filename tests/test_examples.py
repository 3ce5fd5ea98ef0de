"""The example pipelines on the CPU reference backend agree with an independent computation:
onnxruntime on the *unsplit* model (rebuilt by the snippet generator) plus numpy written here."""

from __future__ import annotations

import sys

import numpy as np
import onnxruntime as ort
import pytest
from conftest import ROOT

from orchestrator import Orchestrator

sys.path.insert(0, str(ROOT / "snippets"))
import generate  # noqa: E402

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def run_full(model_name: str, x: np.ndarray) -> np.ndarray:
    model = generate.full_model(model_name)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def normalise(image: np.ndarray) -> np.ndarray:
    return ((image / np.float32(255) - MEAN) / STD).transpose(0, 3, 1, 2).astype(np.float32)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


class BranchLog:
    def __init__(self):
        self.steps, self.branches = [], []

    def step_done(self, step):
        self.steps.append(step.name)

    def branch_taken(self, block, taken):
        self.branches.append((block.name, taken))


def images(n: int, seed: int = 0, h: int = 224, w: int = 224) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_classify_matches_unsplit_model():
    image = images(3)
    out = Orchestrator.from_yaml(ROOT / "pipelines/classify.yaml", device="cpu").run({"image": image})
    probs = softmax(run_full("classify", normalise(image)))
    np.testing.assert_allclose(out["probs"], probs, rtol=1e-4, atol=1e-6)
    order = np.argsort(-probs, axis=-1, kind="stable")[:, :5]
    np.testing.assert_array_equal(out["top5_index"], order)
    np.testing.assert_allclose(out["top5_prob"], np.take_along_axis(probs, order, -1), rtol=1e-4)


@pytest.mark.parametrize(("threshold", "branch"), [(0.0, "else"), (1.01, "then")])
def test_cascade_each_branch_matches_independent_computation(threshold, branch):
    log = BranchLog()
    orch = Orchestrator.from_yaml(ROOT / "pipelines/cascade.yaml", device="cpu", observer=log)
    image = images(1, seed=5)
    out = orch.run({"image": image, "threshold": threshold})
    assert log.branches == [("escalate", branch)]
    model = "classify" if branch == "then" else "cascade_small"
    expected = softmax(run_full(model, normalise(image)))
    np.testing.assert_allclose(out["probs"], expected, rtol=1e-4, atol=1e-6)
    ran_large = any(name.startswith("large_a") for name in log.steps)
    assert ran_large == (branch == "then")


def test_cascade_decides_on_the_computed_confidence():
    """A threshold just above / below the small network's real confidence picks the branch."""
    image = images(1, seed=9)
    confidence = softmax(run_full("cascade_small", normalise(image))).max()
    for threshold, branch in ((confidence * 1.001, "then"), (confidence * 0.999, "else")):
        log = BranchLog()
        Orchestrator.from_yaml(ROOT / "pipelines/cascade.yaml", device="cpu", observer=log).run(
            {"image": image, "threshold": np.float32(threshold)})
        assert log.branches == [("escalate", branch)]


def test_matting_matches_unsplit_model_with_kernels():
    rng = np.random.default_rng(3)
    image = images(1, seed=3, h=96, w=128)
    trimap = rng.integers(0, 256, (1, 96, 128), dtype=np.uint8)
    out = Orchestrator.from_yaml(ROOT / "pipelines/matting.yaml", device="cpu").run({"image": image, "trimap": trimap})
    # Independent: pack by hand, run encoder+decoder of the unsplit model with the norm in between.
    x = np.zeros((1, 8, 96, 128), np.float32)
    x[:, :3] = image.transpose(0, 3, 1, 2) / np.float32(127.5) - 1
    cls = np.digitize(trimap, [85, 171])
    for c in range(3):
        x[:, 3 + c] = cls == c
    full = generate.full_model("matting")
    enc = ort.InferenceSession(generate.snippet_model("matting_encoder", full).SerializeToString(),
                               providers=["CPUExecutionProvider"])
    feats, skip = enc.run(["feats", "skip"], {"x": x})
    mu, var = feats.mean((2, 3), keepdims=True), feats.var((2, 3), keepdims=True)
    normed = np.maximum((feats - mu) / np.sqrt(var + 1e-5), 0).astype(np.float32)
    dec = ort.InferenceSession(generate.snippet_model("matting_decoder", full).SerializeToString(),
                               providers=["CPUExecutionProvider"])
    alpha = dec.run(["alpha"], {"feats": normed, "skip": skip})[0]
    alpha = np.where(cls[:, None] == 0, 0, np.where(cls[:, None] == 2, 1, alpha))
    np.testing.assert_allclose(out["alpha"], alpha, rtol=1e-4, atol=1e-5)


def test_committed_snippets_are_what_the_generator_makes():
    import onnx
    from onnx import numpy_helper

    for name in generate.SNIPPETS:
        committed = onnx.load(str(ROOT / "snippets" / f"{name}.onnx"))
        fresh = generate.snippet_model(name)
        assert committed.ir_version == fresh.ir_version <= 10
        assert [n.op_type for n in committed.graph.node] == [n.op_type for n in fresh.graph.node]
        for a, b in zip(committed.graph.initializer, fresh.graph.initializer, strict=True):
            np.testing.assert_array_equal(numpy_helper.to_array(a), numpy_helper.to_array(b))
