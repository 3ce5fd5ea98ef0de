"""Engine builds in worker processes, so that several snippets build at once.

Why processes: TensorRT 8.6 builds on several threads of one process deadlocked on the H100 (our Python
logger takes the GIL inside a build while another thread holds it in a TensorRT call). A worker is
``python -m orchestrator.backends.cuda.build_worker``: it reads one pickled request on stdin, builds, and
writes one pickled reply on stdout; its log lines go to stderr (the user's terminal). Threads of the
parent only wait on workers; every TensorRT call of the parent stays on the calling thread."""

from __future__ import annotations

import importlib
import logging
import os
import pickle
import subprocess
import sys
from typing import Any

from ...errors import CompileError, OrchestratorError

DEFAULT_FUNCTION = "orchestrator.backends.cuda.build_worker:build_on_device"


def build_on_device(onnx_bytes: bytes, *, device_index: int, **settings: Any) -> tuple[bytes, bytes]:
    """trt.build_engine on the given GPU (TensorRT builds on the current context's device)."""
    from . import trt
    from .driver import Context

    Context(device_index)
    return trt.build_engine(onnx_bytes, **settings)


def run_in_worker(function: str, onnx_bytes: bytes, settings: dict[str, Any], *, name: str) -> tuple[bytes, bytes]:
    """Call ``function`` ("module:attribute") in a fresh worker process; its errors come back as ours."""
    request = {"function": function, "onnx": onnx_bytes, "settings": settings,
               "log_level": logging.getLogger("orchestrator").getEffectiveLevel()}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))  # what imports here, imports there
    done = subprocess.run([sys.executable, "-m", __name__], input=pickle.dumps(request), stdout=subprocess.PIPE,
                          env=env, check=False)
    try:
        status, payload = pickle.loads(done.stdout)
    except Exception:
        raise OrchestratorError(f"the engine build worker for snippet '{name}' ended without a result "
                                f"(exit status {done.returncode}; its messages are above)") from None
    if status == "ok":
        return payload
    kind, message = payload
    raise (CompileError if kind == "CompileError" else OrchestratorError)(message)


def main() -> None:
    reply_to = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything a library prints goes to stderr; stdout carries only the reply
    request = pickle.loads(sys.stdin.buffer.read())
    logging.basicConfig(level=request["log_level"], format="%(message)s", stream=sys.stderr)
    module, attribute = request["function"].split(":")
    try:
        result = getattr(importlib.import_module(module), attribute)(request["onnx"], **request["settings"])
        reply: tuple[str, Any] = ("ok", result)
    except Exception as exc:  # sent back whole: the parent raises it as the user's error
        kind = "CompileError" if isinstance(exc, CompileError) else type(exc).__name__
        message = str(exc) if isinstance(exc, OrchestratorError) else f"{type(exc).__name__}: {exc}"
        reply = ("error", (kind, message))
    reply_to.write(pickle.dumps(reply))
    reply_to.close()


if __name__ == "__main__":
    main()
