"""Load the numpy reference function of a kernel from a Python file (``file.py:function``)."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path

from .source import FileReadError, read_text


class ReferenceLoadError(ValueError):
    """The reference file cannot be imported or lacks the function."""


def load_reference(path: Path, function: str) -> Callable:
    """The function, from the file as it is now: an edited reference is imported again (a module is kept per
    path and content, so loading the same file twice costs one read)."""
    try:
        text = read_text(path)  # a regular UTF-8 file of sane size: a FIFO would block the import forever
    except FileReadError as exc:
        raise ReferenceLoadError(str(exc)) from None
    return _load(path, function, hashlib.sha1(text.encode()).hexdigest())


@cache
def _load(path: Path, function: str, digest: str) -> Callable:
    module_name = "orchestrator_reference_" + hashlib.sha1(f"{path}\0{digest}".encode()).hexdigest()[:12]
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ReferenceLoadError(f"cannot import {path.name}")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except SystemExit as exc:  # a module that exits would end `orchestrator validate` silently
            raise ReferenceLoadError(f"importing {path.name} called sys.exit({exc.code!r}); a reference module "
                                     f"must only define functions") from None
        except Exception as exc:
            raise ReferenceLoadError(f"importing {path.name} failed: {type(exc).__name__}: "
                                     f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
        sys.modules[module_name] = module
    func = getattr(module, function, None)
    if not callable(func):
        raise ReferenceLoadError(f"{path.name} has no function '{function}'")
    return func
