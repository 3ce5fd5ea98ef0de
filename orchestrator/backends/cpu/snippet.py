"""Run an ONNX snippet with onnxruntime on the CPU."""

from __future__ import annotations

import numpy as np

from ...errors import ExecutionError
from ...pipeline.ir import SnippetInfo


class OnnxRuntimeSnippet:
    """One onnxruntime session per snippet, created at load time."""

    def __init__(self, info: SnippetInfo):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 4  # errors come back as exceptions; no stderr noise
        self.info = info
        self.session = ort.InferenceSession(str(info.onnx_path), options, providers=["CPUExecutionProvider"])
        self.output_names = list(info.outputs)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            results = self.session.run(self.output_names, feeds)
        except Exception as exc:  # onnxruntime raises its own exception types
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ExecutionError(f"snippet '{self.info.name}' ({self.info.onnx_path.name}) failed in "
                                 f"onnxruntime: {first}") from None
        return dict(zip(self.output_names, results, strict=True))
