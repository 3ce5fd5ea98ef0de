"""YAML loading that remembers where every value came from.

Pipelines are loaded with PyYAML's safe loader (plain data only, no object construction); alongside the
data we keep a map from each YAML path to its line and column, so that every later error can point at the
exact place in the file. A pipeline may pull in other YAML files (kernel descriptions); each one is
*mounted* at the path where it is used, so locations resolve to the right file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, Location, Problem

YamlPath = tuple[str | int, ...]


def format_path(path: YamlPath) -> str:
    """``("steps", 2, "inputs", "x")`` -> ``steps[2].inputs.x``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass
class YamlDocument:
    """A parsed YAML file: its data and the (line, column) of every value and every mapping key."""

    file: str
    data: Any
    values: dict[YamlPath, tuple[int, int]] = field(default_factory=dict)
    keys: dict[YamlPath, tuple[int, int]] = field(default_factory=dict)

    def position(self, path: YamlPath, *, key: bool = False) -> tuple[int, int] | None:
        """Line and column of ``path`` (of its key if ``key``), else of its nearest ancestor."""
        for cut in range(len(path), -1, -1):
            sub = path[:cut]
            if key and cut == len(path) and sub in self.keys:
                return self.keys[sub]
            if sub in self.values:
                return self.values[sub]
        return None


def display_name(path: Path) -> str:
    """A path as the user would like to read it: relative to the working directory when possible."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def load_yaml(path: Path) -> YamlDocument:
    """Parse a YAML file, raising a one-line ConfigError for syntax errors or duplicate keys."""
    name = display_name(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(Location(name), f"cannot read file: {exc.strerror}")]) from None
    return parse_yaml(text, name)


def parse_yaml(text: str, name: str) -> YamlDocument:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Location(name, mark.line + 1, mark.column + 1) if mark else Location(name)
        raise ConfigError([Problem(where, f"invalid YAML: {exc.problem or exc.context}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(Location(name), f"invalid YAML: {exc}")]) from None
    finally:
        loader.dispose()
    doc = YamlDocument(name, data)
    problems: list[Problem] = []
    _index(node, (), doc, loader, problems)
    if problems:
        raise ConfigError(problems)
    return doc


def _index(node: yaml.Node | None, path: YamlPath, doc: YamlDocument, loader: yaml.SafeLoader,
           problems: list[Problem]) -> None:
    if node is None:
        return
    doc.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            key = key if isinstance(key, str | int) else str(key)
            line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
            if key in seen:
                problems.append(Problem(Location(doc.file, line, col, format_path(path + (key,))),
                                        f"duplicate key '{key}' (each key may appear once)"))
            seen.add(key)
            doc.keys[path + (key,)] = (line, col)
            _index(value_node, path + (key,), doc, loader, problems)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(item, path + (i,), doc, loader, problems)


class SourceMap:
    """Resolves a YAML path of the whole pipeline to a Location in whichever file defines it."""

    def __init__(self, root: YamlDocument):
        self._mounts: dict[YamlPath, YamlDocument] = {(): root}

    def mount(self, at: YamlPath, doc: YamlDocument) -> None:
        """Declare that the value at ``at`` was loaded from another YAML file ``doc``."""
        self._mounts[at] = doc

    def locate(self, path: YamlPath, *, key: bool = False) -> Location:
        prefix = max((m for m in self._mounts if path[: len(m)] == m), key=len)
        doc, rest = self._mounts[prefix], path[len(prefix):]
        pos = doc.position(rest, key=key)
        line, col = pos if pos else (None, None)
        return Location(doc.file, line, col, format_path(path))

    def problem(self, path: YamlPath, message: str, *, key: bool = False, severity: str = "error") -> Problem:
        return Problem(self.locate(path, key=key), message, severity)
