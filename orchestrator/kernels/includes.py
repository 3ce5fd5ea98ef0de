"""Where a kernel's ``#include`` files are found.

Every kernel sees, in order: the folder of its source (or of its description, for inline code), the
folders its ``-I``/``--include-path`` options name (a relative one is resolved from the kernel
description's folder, not from the working directory), and the package's own ``include/`` folder with
``orchestrator.cuh``, so kernels outside this repository can include it too.
"""

from __future__ import annotations

from pathlib import Path

from ..pipeline.source import resolve

PACKAGE_INCLUDE = Path(__file__).resolve().parents[1] / "include"

_PREFIXES = ("--include-path=", "-I")


def split_include_options(options: list[str] | tuple[str, ...],
                          base: Path) -> tuple[list[Path], list[str], list[int]]:
    """Separate include folders from the other NVRTC options. Returns the folders (resolved from ``base``),
    the remaining options, and for each folder the index of the option that named it (for errors)."""
    folders: list[Path] = []
    rest: list[str] = []
    where: list[int] = []
    pending = None  # index of a bare "-I"/"--include-path" whose folder is the next option
    for i, option in enumerate(options):
        if pending is not None:
            folders.append(resolve(base / option))
            where.append(pending)
            pending = None
        elif option in ("-I", "--include-path"):
            pending = i
        elif option.startswith(_PREFIXES):
            prefix = next(p for p in _PREFIXES if option.startswith(p))
            folders.append(resolve(base / option[len(prefix):].strip()))
            where.append(i)
        else:
            rest.append(option)
    if pending is not None:
        rest.append(options[pending])  # NVRTC reports the missing folder itself
    return folders, rest, where


def include_dirs(own: Path, extra: list[Path]) -> tuple[Path, ...]:
    """The kernel's include path: its own folder, then the option folders, then the package's."""
    dirs: list[Path] = []
    for folder in (own, *extra, PACKAGE_INCLUDE):
        if folder not in dirs:
            dirs.append(folder)
    return tuple(dirs)
