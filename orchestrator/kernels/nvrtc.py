"""Compile custom kernels with NVRTC (works without a GPU), cached on disk.

The result is a cubin for the requested architecture, or PTX for the newest architecture NVRTC supports
when it cannot target that one. Compile errors raise CompileError with the source file and line of the
first error, and the whole NVRTC log in ``.log``.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .. import cache
from ..errors import CompileError, ConfigError
from ..pipeline.ir import KernelInfo
from ..pipeline.source import MAX_TEXT_BYTES, FileReadError, display_name, read_bytes
from . import prototype

log = logging.getLogger("orchestrator")

_LOG_LINE = re.compile(r"^(?P<file>.+?)\((?P<line>\d+)\): (?P<kind>error|catastrophic error)\s*:?\s*(?P<msg>.*)$")


@dataclass(frozen=True)
class CompiledKernel:
    image: bytes  # cubin or PTX
    kind: str  # "cubin" or "ptx"
    lowered_name: str  # the symbol to look up in the module
    arch: str


def nvrtc_version() -> tuple[int, int]:
    from cuda.bindings import nvrtc

    err, major, minor = nvrtc.nvrtcVersion()
    _check(err, "nvrtcVersion")
    return major, minor


def _check(err, call: str) -> None:
    from cuda.bindings import nvrtc

    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise CompileError(f"{call} failed: {nvrtc.nvrtcGetErrorString(err)[1].decode()}")


name_expression = prototype.expression


def compile_options(kernel: KernelInfo, arch: str) -> list[str]:
    options = [f"--gpu-architecture={arch}", "-std=c++17", "--device-as-default-execution-space"]
    options += [f"-I{d}" for d in kernel.include_dirs]
    options += [f"-D{name}={value}" for name, value in kernel.defines.items()]
    return options + list(kernel.options)


_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*[<"]([^>"\n]+)[>"]', re.M)
MAX_HEADERS = 1000


def _headers(kernel: KernelInfo) -> list[bytes]:
    """Every file the source includes, directly or through other headers, found as NVRTC finds it (the
    including file's folder, then the include path), with its bytes: part of the cache key, so editing any
    of them recompiles. Only included files are read (an unreadable file that no kernel includes does not
    matter); a directive under ``#if 0`` is followed too, which only makes the key larger."""
    parts: list[bytes] = []
    seen: set[str] = set()
    pending = [(kernel.source, kernel.include_dirs[0])]
    while pending:
        text, folder = pending.pop()
        for name in _INCLUDE.findall(text):
            found = next((c for c in (folder / name, *(d / name for d in kernel.include_dirs))
                          if os.path.lexists(c)), None)
            if found is None or os.path.isdir(found) or os.path.realpath(found) in seen:
                continue  # NVRTC reports what it cannot open
            seen.add(os.path.realpath(found))
            if len(seen) > MAX_HEADERS:
                raise CompileError(f"kernel '{kernel.name}': includes more than {MAX_HEADERS} files")
            try:
                data = read_bytes(found, MAX_TEXT_BYTES)
            except FileReadError as exc:
                raise CompileError(f"kernel '{kernel.name}': header {exc}") from None
            parts.append(str(found).encode() + b"\0" + data)
            pending.append((data.decode(errors="replace"), found.parent))
    return parts


def compile_kernel(kernel: KernelInfo, arch: str, cache_root: Path | None = None) -> CompiledKernel:
    """Compile ``kernel`` for ``arch`` (``sm_90``), using the on-disk cache when possible. The source is
    compiled with static checks of the entry's parameters against the description: a mismatch raises
    ConfigError with one problem per argument, at its place in the description."""
    target = _supported_target(arch)
    source_name = display_name(kernel.source_path) if kernel.source_path else f"<inline kernel {kernel.name}>"
    try:
        return compile_source(kernel.name, kernel.source + prototype.check_source(kernel),
                              name_expression(kernel), target, compile_options(kernel, target), source_name,
                              _headers(kernel), cache_root)
    except CompileError as exc:
        mismatches = prototype.problems(kernel, getattr(exc, "log", ""))
        if mismatches:
            raise ConfigError(mismatches) from None
        raise


def compile_source(name: str, source: str, expression: str, target: str, options: list[str],
                   source_name: str, headers: list[bytes] = (), cache_root: Path | None = None) -> CompiledKernel:
    """Compile one entry point of a CUDA source (cached by source, headers, options and NVRTC version)."""
    key = cache.digest(source, *headers, {"options": options, "name": expression, "nvrtc": nvrtc_version()})
    entry = cache.cache_dir(cache_root) / "kernels" / f"{name}-{key[:24]}"
    kind = "cubin" if target.startswith("sm_") else "ptx"
    image, lowered = cache.read(entry.with_suffix(f".{kind}")), cache.read(entry.with_suffix(".name"))
    if image and lowered:
        return CompiledKernel(image, kind, lowered.decode(), target)
    image, lowered_name = _compile(name, source, expression, options, kind, source_name)
    cache.write_atomic(entry.with_suffix(f".{kind}"), image)
    cache.write_atomic(entry.with_suffix(".name"), lowered_name.encode())
    return CompiledKernel(image, kind, lowered_name, target)


def _supported_target(arch: str) -> str:
    """``sm_XY`` when NVRTC can make a cubin for it, else PTX (``compute_AB``) for its newest arch <= XY."""
    from cuda.bindings import nvrtc

    digits = arch.removeprefix("sm_").removeprefix("compute_").rstrip("af")
    if not digits.isdigit():
        raise CompileError(f"'{arch}' is not a GPU architecture (expected e.g. sm_90, sm_86)")
    want = int(digits)
    err, archs = nvrtc.nvrtcGetSupportedArchs()
    _check(err, "nvrtcGetSupportedArchs")
    if want in archs:
        return f"sm_{want}"
    older = [a for a in archs if a <= want]
    if not older:
        raise CompileError(f"NVRTC {nvrtc_version()} cannot compile for {arch} (supported: {archs})")
    log.warning("orchestrator: NVRTC cannot target %s; compiling PTX for compute_%d", arch, max(older))
    return f"compute_{max(older)}"


def _compile(name: str, source: str, expr: str, options: list[str], kind: str,
             source_name: str) -> tuple[bytes, str]:
    from cuda.bindings import nvrtc

    err, prog = nvrtc.nvrtcCreateProgram(source.encode(), source_name.encode(), 0, [], [])
    _check(err, "nvrtcCreateProgram")
    try:
        _check(nvrtc.nvrtcAddNameExpression(prog, expr.encode())[0], "nvrtcAddNameExpression")
        (result,) = nvrtc.nvrtcCompileProgram(prog, len(options), [o.encode() for o in options])
        if result != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise _compile_error(name, source_name, _program_log(prog), options)
        err, lowered = nvrtc.nvrtcGetLoweredName(prog, expr.encode())
        _check(err, "nvrtcGetLoweredName")
        get_size, get = ((nvrtc.nvrtcGetCUBINSize, nvrtc.nvrtcGetCUBIN) if kind == "cubin"
                         else (nvrtc.nvrtcGetPTXSize, nvrtc.nvrtcGetPTX))
        err, size = get_size(prog)
        _check(err, "nvrtc get size")
        image = b" " * size
        _check(get(prog, image)[0], "nvrtc get image")
        return image, lowered.decode()
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def _program_log(prog) -> str:
    from cuda.bindings import nvrtc

    err, size = nvrtc.nvrtcGetProgramLogSize(prog)
    buf = b" " * size
    nvrtc.nvrtcGetProgramLog(prog, buf)
    return buf.decode(errors="replace").rstrip("\x00").strip()


def _compile_error(name: str, source_name: str, log_text: str, options: list[str]) -> CompileError:
    errors = [m for m in map(_LOG_LINE.match, log_text.splitlines()) if m]
    ours = [m for m in errors if m["file"] == prototype.CHECK_FILE or "__nv_name_map" in m.string]
    errors = [m for m in errors if m not in ours] + ours  # the user's own errors first
    if errors and errors[0] in ours:
        where = source_name  # generated code: the entry itself is the problem
        what = (f"the entry cannot be taken as a function ({errors[0]['msg'].strip()}): is it a __global__ "
                f"function of this source, spelled the same, with template_args if it is a template?")
    elif errors:
        first = errors[0]
        where = f"{first['file']}:{first['line']}"
        what = first["msg"].strip()
    else:
        where, what = source_name, (log_text.splitlines() or ["compilation failed"])[0]
    more = f"; {len(errors) - 1} more error(s)" if len(errors) > 1 else ""
    exc = CompileError(f"{where}: kernel '{name}' failed to compile: {what}{more} "
                       f"(NVRTC options: {' '.join(o for o in options if not o.startswith('-I'))})")
    exc.log = log_text  # type: ignore[attr-defined]
    return exc
