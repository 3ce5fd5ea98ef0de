"""Run an ONNX snippet with onnxruntime on the CPU."""

from __future__ import annotations

import numpy as np

from ... import dtypes
from ...errors import ExecutionError
from ...pipeline.ir import SnippetInfo
from ...surgery.snippets import snippet_onnx_bytes


class OnnxRuntimeSnippet:
    """One onnxruntime session per snippet, created at load time."""

    def __init__(self, info: SnippetInfo):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 4  # errors come back as exceptions; no stderr noise
        self.info = info
        model = snippet_onnx_bytes(info)  # the same graph the engine is built from (optimize: true)
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.output_names = list(info.outputs)
        # Ports with a pinned format hold FP16 tensors; onnxruntime computes in the model's own dtypes.
        self.onnx_dtypes = {p: dtypes.to_numpy(info.inputs[p].dtype) for p in info.formats if p in info.inputs}
        self.stored_dtypes = {p: dtypes.to_numpy(info.port_type(p)[0]) for p in info.formats if p in info.outputs}

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {p: a.astype(self.onnx_dtypes[p]) if p in self.onnx_dtypes else a for p, a in feeds.items()}
        try:
            results = self.session.run(self.output_names, feeds)
        except Exception as exc:  # onnxruntime raises its own exception types
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ExecutionError(f"snippet '{self.info.name}' ({self.info.onnx_path.name}) failed in "
                                 f"onnxruntime: {first}") from None
        outputs = dict(zip(self.output_names, results, strict=True))
        return {p: a.astype(self.stored_dtypes[p]) if p in self.stored_dtypes else a for p, a in outputs.items()}
