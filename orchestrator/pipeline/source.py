"""YAML loading that remembers where every value came from.

Pipelines are loaded with PyYAML's safe loader (plain data only, no object construction); alongside the
data we keep a map from each YAML path to its line and column, so that every later error can point at the
exact place in the file. A pipeline may pull in other YAML files (kernel descriptions); each one is
*mounted* at the path where it is used, so locations resolve to the right file.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from ..errors import ConfigError, Location, Problem

YamlPath = tuple[str | int, ...]

MAX_YAML_BYTES = 4 << 20  # pipelines and kernel descriptions are hand-written: a few KiB
MAX_TEXT_BYTES = 16 << 20  # kernel sources, headers, references
MAX_DEPTH = 64  # nesting of mappings and sequences, aliases followed
MAX_INT_CHARS = 100
MAX_VALUES = 100_000  # values after expanding aliases (a "billion laughs" file expands to 10^9)

_KINDS = ((stat.S_ISFIFO, "named pipe (FIFO)"), (stat.S_ISCHR, "character device"),
          (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "directory"))


class FileReadError(ValueError):
    """A file cannot be read as what it should be; ``line``/``column`` point into it when known."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None):
        super().__init__(message)
        self.line, self.column = line, column


def open_regular(path: Path, limit: int) -> BinaryIO:
    """Open a regular file of at most ``limit`` bytes for reading. FIFOs and devices (also behind symlinks,
    e.g. to /dev/zero) are refused by name instead of blocking or reading forever."""
    name = display_name(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # opening a FIFO must not wait for a writer
    except OSError as exc:
        raise FileReadError(f"cannot read {name}: {exc.strerror}") from None
    info = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(info.st_mode):
        kind = next((k for test, k in _KINDS if test(info.st_mode)), "special file")
        problem = f"{name} is a {kind}, not a regular file"
    elif info.st_size > limit:
        problem = f"{name} is {info.st_size:,} bytes; the limit for this kind of file is {limit:,}"
    if problem:
        os.close(fd)
        raise FileReadError(problem)
    return os.fdopen(fd, "rb")


def read_bytes(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (see ``open_regular``)."""
    with open_regular(path, limit) as f:
        data = f.read(min(os.fstat(f.fileno()).st_size, limit) + 1)
    if len(data) > limit:
        raise FileReadError(f"{display_name(path)} grew beyond {limit:,} bytes while being read")
    return data


def read_text(path: Path, limit: int = MAX_TEXT_BYTES) -> str:
    """A regular UTF-8 text file; binary or mis-encoded files raise FileReadError at the offending byte."""
    data = read_bytes(path, limit)
    nul = data.find(b"\0")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = _line_col(data, exc.start)
        raise FileReadError(f"{display_name(path)} is not UTF-8 text (byte 0x{data[exc.start]:02x} at line "
                            f"{line}, column {col}){_binary_hint(path)}", line, col) from None
    if nul >= 0:
        line, col = _line_col(data, nul)
        raise FileReadError(f"{display_name(path)} is a binary file (NUL byte at line {line}, column {col})"
                            f"{_binary_hint(path)}", line, col)
    return text


def _line_col(data: bytes, offset: int) -> tuple[int, int]:
    return data.count(b"\n", 0, offset) + 1, offset - (data.rfind(b"\n", 0, offset) + 1) + 1


def _binary_hint(path: Path) -> str:
    hints = {".onnx": "an ONNX model: name it in a pipeline's 'snippets' and validate the pipeline",
             ".npz": "a numpy archive: pass it with --inputs", ".npy": "a numpy array"}
    hint = hints.get(path.suffix.lower())
    return f"; this looks like {hint}" if hint else ""


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


def resolve(path: Path) -> Path:
    """The absolute path with symlinks followed as far as they go. Unlike ``Path.resolve`` on Python 3.11,
    a symlink loop does not raise RuntimeError: reading the file then reports it."""
    return Path(os.path.realpath(path))


def absent(path: Path) -> bool:
    """Nothing is at ``path`` (a dangling symlink included). A name too long or a symlink loop is not
    absent (``Path.exists`` raises or says False for those): reading the file tells the user why."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except (OSError, ValueError):  # ENAMETOOLONG, ELOOP, EACCES...; ValueError: a NUL in the name
        return False
    return False


def is_folder(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def display_name(path: Path) -> str:
    """A path as the user would like to read it: relative to the working directory when possible."""
    try:
        return str(resolve(path).relative_to(resolve(Path.cwd())))
    except ValueError:
        return str(path)


def load_yaml(path: Path) -> YamlDocument:
    """Parse a YAML file, raising a one-line ConfigError for syntax errors or duplicate keys."""
    name = display_name(path)
    try:
        text = read_text(path, MAX_YAML_BYTES)
    except FileReadError as exc:
        message = str(exc).removeprefix(f"cannot read {name}: ")
        message = f"cannot read file: {message}" if message != str(exc) else message.replace(f"{name} is ", "", 1)
        raise ConfigError([Problem(Location(name, exc.line, exc.column), message)]) from None
    return parse_yaml(text, name)


class _YamlLimit(yaml.MarkedYAMLError):
    def __init__(self, mark: yaml.Mark, problem: str):
        super().__init__(problem=problem, problem_mark=mark)


class _BoundedLoader(yaml.SafeLoader):
    """The safe loader with nesting bounded while composing (deep nesting would hit Python's recursion
    limit)."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise _YamlLimit(self.peek_event().start_mark, f"nesting deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        """PyYAML's, for integers of at most MAX_INT_CHARS characters (Python refuses to convert more than
        4300 decimal digits, and no dimension or scalar needs a hundred)."""
        if len(node.value) > MAX_INT_CHARS:
            raise _YamlLimit(node.start_mark, f"an integer written with {len(node.value):,} characters "
                                              f"(at most {MAX_INT_CHARS})")
        return super().construct_yaml_int(node)


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def check_expansion(root: yaml.Node) -> None:
    """Aliases share nodes: refuse a graph that contains itself (a recursive alias), that expands to more
    than MAX_VALUES values, or that nests deeper than MAX_DEPTH once aliases are followed. Iterative, with
    each shared node measured once, so a billion-laughs file is refused in microseconds."""
    measured: dict[int, tuple[int, int]] = {}  # id -> (values, depth) once expanded
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, leaving = stack.pop()
        if id(node) in measured:
            continue
        kids = _children(node)
        if not leaving:
            open_nodes.add(id(node))
            stack.append((node, True))
            for kid in kids:
                if id(kid) in open_nodes:
                    raise _YamlLimit(kid.start_mark, "recursive alias: this anchored value contains itself")
                stack.append((kid, False))
            continue
        open_nodes.discard(id(node))
        values = 1 + sum(measured[id(k)][0] for k in kids)
        depth = 1 + max((measured[id(k)][1] for k in kids), default=0)
        if values > MAX_VALUES:
            raise _YamlLimit(node.start_mark, f"aliases expand this value to more than {MAX_VALUES:,} values")
        if depth > MAX_DEPTH:
            raise _YamlLimit(node.start_mark, f"aliases nest this value deeper than {MAX_DEPTH} levels")
        measured[id(node)] = (values, depth)


def parse_yaml(text: str, name: str) -> YamlDocument:
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            check_expansion(node)
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
