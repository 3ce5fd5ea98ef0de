"""A stand-in for TensorRT's builder that runs in build worker processes (tests/test_engine_builds.py):
each build sleeps a little and appends "name start end pid" to $FAKE_BUILD_LOG; the snippet named by
$FAKE_BUILD_FAIL fails as TensorRT would, and one named by $FAKE_BUILD_CRASH kills its process."""

from __future__ import annotations

import os
import time

from orchestrator.errors import CompileError


def build_engine(onnx_bytes: bytes, *, name: str, device_index: int, **settings) -> tuple[bytes, bytes]:
    start = time.time()
    time.sleep(1.0)  # long beside a worker's start-up, so that builds overlap
    print("noise a library prints on stdout")  # must not corrupt the reply
    with open(os.environ["FAKE_BUILD_LOG"], "a") as log:
        log.write(f"{name} {start} {time.time()} {os.getpid()}\n")
    if name == os.environ.get("FAKE_BUILD_FAIL"):
        raise CompileError(f"TensorRT failed to build snippet '{name}': no tactic")
    if name == os.environ.get("FAKE_BUILD_CRASH"):
        os._exit(139)
    return b"engine:" + name.encode(), b"timing"
