"""The on-disk cache (compiled kernels, TensorRT engines and timing caches) and atomic writes.

The cache lives under the user's cache directory (``platformdirs``), or ``$ORCHESTRATOR_CACHE``, or a
directory given explicitly. Entries are written to a temporary file in the same directory and renamed
into place, so a crash never leaves a half-written entry, and a reader never sees one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def cache_dir(override: str | Path | None = None) -> Path:
    if override is not None:
        path = Path(override)
    elif os.environ.get("ORCHESTRATOR_CACHE"):
        path = Path(os.environ["ORCHESTRATOR_CACHE"])
    else:
        from platformdirs import user_cache_dir

        path = Path(user_cache_dir("orchestrator"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def digest(*parts: bytes | str | dict[str, Any]) -> str:
    """sha256 over the parts (dicts as canonical JSON)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, dict):
            part = json.dumps(part, sort_keys=True, default=str)
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None
