"""The on-disk cache (compiled kernels, TensorRT engines and timing caches) and atomic writes.

The cache lives under the user's cache directory (``platformdirs``), or ``$ORCHESTRATOR_CACHE``, or a
directory given explicitly. Entries are written to a temporary file in the same directory and renamed
into place, so a crash never leaves a half-written entry, and a reader never sees one. Each entry starts
with a checksum of its name and contents: a truncated, overwritten or misplaced entry (another entry's
bytes under this name) reads as missing, with a one-line warning, and is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import CacheError
from .pipeline.source import FileReadError, read_bytes

log = logging.getLogger("orchestrator")

_MAGIC = b"orchestrator-cache-v1\n"
_HEADER = len(_MAGIC) + 32  # magic + sha256(name, contents)
MAX_ENTRY_BYTES = 1 << 40  # entries are regular files of known size; the limit only rules out nonsense


def cache_dir(override: str | Path | None = None) -> Path:
    """The cache directory, created if needed; CacheError (one line, naming it) if it cannot be used."""
    if override is not None:
        path, origin = Path(override), "--cache-dir"
    elif os.environ.get("ORCHESTRATOR_CACHE"):
        path, origin = Path(os.environ["ORCHESTRATOR_CACHE"]), "$ORCHESTRATOR_CACHE"
    else:
        from platformdirs import user_cache_dir

        path, origin = Path(user_cache_dir("orchestrator")), "the user cache directory"
    if path.exists() and not path.is_dir():
        raise CacheError(_unusable(path, origin, "it is a file, not a directory"))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CacheError(_unusable(path, origin, exc.strerror or str(exc))) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise CacheError(_unusable(path, origin, "not writable"))
    return path


def _unusable(path: Path, origin: str, why: str) -> str:
    return (f"cache directory {path} ({origin}) cannot be used: {why}; choose another with --cache-dir or "
            f"ORCHESTRATOR_CACHE")


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


def _checksum(path: Path, data: bytes) -> bytes:
    return bytes.fromhex(digest(path.name, data))


def write_atomic(path: Path, data: bytes) -> None:
    """Write a cache entry (checksummed, see ``read``) atomically; CacheError if the directory refuses it."""
    write_file_atomic(path, _MAGIC + _checksum(path, data) + data)


def write_file_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place: a reader never sees a
    half-written file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise CacheError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise CacheError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise


def read(path: Path) -> bytes | None:
    """An entry's contents; None if it is missing, or (with a warning) unreadable or corrupt."""
    if not path.exists() and not path.is_symlink():
        return None
    try:
        raw = read_bytes(path, MAX_ENTRY_BYTES)
    except FileReadError as exc:
        log.warning("orchestrator: ignoring cache entry: %s; rebuilding it", exc)
        return None
    data = raw[_HEADER:]
    if raw[:len(_MAGIC)] != _MAGIC or raw[len(_MAGIC):_HEADER] != _checksum(path, data):
        log.warning("orchestrator: cache entry %s is corrupt or incompatible (checksum mismatch: truncated, "
                    "overwritten or from another version); rebuilding it", path)
        return None
    return data
