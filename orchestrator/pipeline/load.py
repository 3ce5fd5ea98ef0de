"""Load a pipeline file: YAML -> schema models -> semantic validation -> ``Pipeline``.

All problems are collected and raised together as one ``ConfigError`` whose lines each read
``file:line:col: yaml.path: message``.
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import ConfigError, Problem
from .ir import Pipeline
from .schema import STEP_TAGS, IfStep, PipelineSpec, SnippetStep, SwitchStep, WhileStep
from .schema import KernelStep as _KernelStep
from .source import SourceMap, YamlPath, absent, load_yaml, resolve
from .validate import Validator

_TAG_MODELS: dict[str, type[BaseModel]] = {
    "<snippet>": SnippetStep, "<kernel>": _KernelStep, "<if>": IfStep, "<switch>": SwitchStep,
    "<while>": WhileStep,
}
_UNION_MEMBERS = {"int": "an integer", "str": "a string", "constrained-str": "a name", "float": "a number",
                  "bool": "true or false", "none": "null", "list[...]": "a list", "dict[...]": "a mapping",
                  "KernelSpec": "a kernel description"}


def load_pipeline(path: str | Path) -> Pipeline:
    """Load and validate a pipeline file; raises ConfigError listing every problem found."""
    file = Path(path)
    doc = load_yaml(file)
    smap = SourceMap(doc)
    data = doc.data
    if not isinstance(data, dict):
        raise ConfigError([smap.problem((), "a pipeline file must be a YAML mapping with the keys "
                                            "inputs, outputs, steps (and optionally dims, constants, snippets, kernels)")])
    if {"entry", "args"} <= set(data) and "steps" not in data:
        raise ConfigError([smap.problem((), "this is a kernel description, not a pipeline: name it under a "
                                            "pipeline's 'kernels:' (e.g. kernels: {mine: path/to/this.yaml})")])
    problems, kernel_dirs, failed = _include_kernels(data, file.parent, smap)
    try:
        spec = PipelineSpec.model_validate(data)
    except ValidationError as exc:
        # a kernel file that could not be loaded is already reported; its placeholder's errors would repeat it
        problems += [p for path, p in _schema_problems(exc, smap) if path[:2] not in failed]
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return Validator(spec, smap, resolve(file), kernel_dirs).run()


def _include_kernels(data: dict, base: Path,
                     smap: SourceMap) -> tuple[list[Problem], dict[str, Path], set[YamlPath]]:
    """Kernels given as a string are paths of kernel YAML files: load them in place and mount their sources.
    Returns the problems, each kernel's base folder, and the paths of kernels whose file failed to load."""
    problems: list[Problem] = []
    kernel_dirs: dict[str, Path] = {}
    failed: set[YamlPath] = set()
    kernels = data.get("kernels")
    if not isinstance(kernels, dict):
        return problems, kernel_dirs, failed
    for name, value in kernels.items():
        if not isinstance(value, str):
            continue
        kfile = resolve(base / value)
        if absent(kfile):
            problems.append(smap.problem(("kernels", name), f"kernel file not found: {value} "
                                                            f"(paths are relative to the pipeline file)"))
            kernels[name] = {}  # keeps the name defined for the steps that use it
            failed.add(("kernels", name))
            continue
        try:
            kdoc = load_yaml(kfile)
        except ConfigError as exc:  # a problem with no line is about the file itself: show where it is named
            problems += [p if p.location.line is not None else
                         smap.problem(("kernels", name), f"kernel file {value}: {p.message}") for p in exc.problems]
            kernels[name] = {}
            failed.add(("kernels", name))
            continue
        smap.mount(("kernels", name), kdoc)
        kernels[name] = kdoc.data
        kernel_dirs[name] = kfile.parent
    return problems, kernel_dirs, failed


def _schema_problems(exc: ValidationError, smap: SourceMap) -> list[tuple[YamlPath, Problem]]:
    by_path: dict[YamlPath, list[dict[str, Any]]] = {}
    for err in exc.errors():
        path = tuple(p for p in err["loc"] if p not in STEP_TAGS and not _is_union_member(p))
        by_path.setdefault(path, []).append(err)
    return [(path, _problem(path, errs, smap)) for path, errs in by_path.items()]


def _is_union_member(part: Any) -> bool:
    return isinstance(part, str) and (part in _UNION_MEMBERS or "[" in part)


def _problem(path: YamlPath, errs: list[dict[str, Any]], smap: SourceMap) -> Problem:
    ours = [e for e in errs if e["type"] in ("value_error", "assertion_error")]
    if ours:  # a union member that matched the type but failed our own check: that check's message says why
        errs = ours
    err = errs[0]
    kind, given = err["type"], err.get("input")
    if kind == "extra_forbidden":
        allowed = _allowed_keys(err["loc"][:-1])
        hint = difflib.get_close_matches(str(path[-1]), allowed, n=1)
        msg = f"unknown key '{path[-1]}'" + (f" (expected one of: {', '.join(allowed)})" if allowed else "")
        return smap.problem(path, msg + (f"; did you mean '{hint[0]}'?" if hint else ""), key=True)
    if kind == "missing":
        return smap.problem(path[:-1], f"missing required key '{path[-1]}'")
    if len(errs) > 1:
        kinds = [_UNION_MEMBERS.get(str(e["loc"][-1]), str(e["loc"][-1])) for e in errs]
        return smap.problem(path, f"expected {' or '.join(dict.fromkeys(kinds))} (got {_show(given)})")
    msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if msg.startswith("Input should be "):
        msg = "expected " + msg.removeprefix("Input should be ") + f" (got {_show(given)})"
    elif kind == "string_pattern_mismatch":
        msg = f"{_show(given)} is not a valid name (use letters, digits and _, not starting with a digit)"
    elif kind == "byte_size":
        msg = f"{_show(given)} is not a size (expected bytes or e.g. '256MiB', '1GiB')"
    at_key = err["loc"][-1] == "[key]"  # a mapping key is wrong (e.g. a switch case 'abc'): point at it
    if at_key:
        msg = f"key {_show(path[-1])}: {msg[0].lower() + msg[1:]}" if msg else kind
    return smap.problem(path, msg[0].lower() + msg[1:] if msg else kind, key=at_key)


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, dict | list) else type(value).__name__
    return text if len(text) < 60 else text[:57] + "..."


def _allowed_keys(loc: tuple) -> list[str]:
    """The keys the model at ``loc`` accepts (for 'unknown key' hints)."""
    current: Any = PipelineSpec
    for part in loc:
        if isinstance(part, str) and part in _TAG_MODELS:
            current = _TAG_MODELS[part]
            continue
        current = _descend(current, part)
        if current is None:
            return []
    model = _model_of(current)
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


def _descend(tp: Any, part: Any) -> Any:
    model = _model_of(tp)
    if model is not None:
        for name, field in model.model_fields.items():
            if part in (name, field.alias):
                return field.annotation
        return None
    origin = typing.get_origin(tp)
    if origin in (list, dict):
        return typing.get_args(tp)[-1]
    if origin is typing.Annotated:
        return _descend(typing.get_args(tp)[0], part)
    if origin in (typing.Union, types.UnionType):
        members = [m for m in typing.get_args(tp) if m is not type(None)]
        if len(members) == 1:  # an optional value: descend into it
            return _descend(members[0], part)
        return tp  # the next element of the location is the union's tag
    return None


def _model_of(tp: Any) -> type[BaseModel] | None:
    if typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        members = [m for m in typing.get_args(tp) if _model_of(m) is not None]
        return _model_of(members[0]) if len(members) == 1 else None
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None



