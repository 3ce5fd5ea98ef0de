"""Structural mutations of parsed pipeline documents (for the Hypothesis properties of issue 15): each
mutation edits the data a YAML file parsed to, or the text it dumps back to, the way a user's slip would."""

from __future__ import annotations

import copy
import math
import shutil
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p.name for p in (ROOT / "pipelines").glob("*.yaml"))

ODD_VALUES: list[Any] = [
    0, 1, -1, -7, 2**70, -(2**70), 1.5, -0.5, math.nan, math.inf, -math.inf, 1e308, True, False, None, "",
    " ", "ünïcødé ☃", "x" * 300, "N", "N +", "1e3", "-", "*", "&a", "null", "\t", "a: b", [], [1, "a"],
    [[1]], [None], {}, {"a": 1}, {"dtype": "float32"}, {1: 2}]
ODD_DTYPES = ["float64", "float128", "int4", "Float32", "FLOAT", "f4", "complex64", "string", "object", "", 32]
ODD_SHAPES: list[Any] = [5, "N", "[N, 4]", {}, {"N": 4}, None, [None], [-1], [1.5], ["N N"], [[2]], [True], [2**70]]
ODD_PATHS = ["missing.onnx", "/", ".", "..", "/dev/null", "../snippets", "../custom_kernels/softmax.cu",
             "../pipelines/classify.yaml", "../custom_kernels/reference.py", "../snippets/generate.py",
             "../snippets/classify_a.onnx", "../custom_kernels/softmax.yaml", "nope/x.cu", "x" * 300, "",
             "../custom_kernels/reference.py:nope", "ref.py:", ":scale", "../custom_kernels/reference.py:scale:x"]
PATH_KEYS = {"onnx", "source", "reference", "file"}


def copy_examples(dest: Path) -> Path:
    """The example pipelines with their snippets and kernels, under ``dest`` (the pipelines folder)."""
    for folder in ("pipelines", "snippets", "custom_kernels"):
        shutil.copytree(ROOT / folder, dest / folder, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.npz", "planted_bug"))
    return dest / "pipelines"


def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path of a document (the root excluded), parents before their children."""
    found = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, value in items:
        found.append(prefix + (key,))
        found += paths(value, prefix + (key,))
    return found


def get(doc: Any, path: tuple) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def strings(node: Any) -> list[str]:
    """Every string in the document, keys included (candidates for a renamed reference)."""
    if isinstance(node, dict):
        return [k for k in node if isinstance(k, str)] + [s for v in node.values() for s in strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return [node] if isinstance(node, str) else []


def original_kernel(value: str) -> dict | None:
    """The description of a kernel named by its path in an example pipeline, read from the repository (never
    from the folder under test, whose files the mutations replace: draws must not depend on them)."""
    file = ROOT / "pipelines" / value
    if not file.is_file() or file.parent != ROOT / "custom_kernels":
        return None
    kernel = yaml.safe_load(file.read_text())
    return kernel if isinstance(kernel, dict) else None


def inline_kernel(doc: dict, name: str) -> None:
    """Replace a kernel given as a file path by its description, its own paths made relative to the pipeline."""
    value = doc["kernels"][name]
    kernel = original_kernel(value)
    if kernel is None:
        return
    rel = str(Path(value).parent)
    for key in ("source", "reference"):
        if isinstance(kernel.get(key), str):
            kernel[key] = f"{rel}/{kernel[key]}"
    kernel["options"] = [o.replace("-I", f"-I{rel}/") if o.startswith("-I") else o for o in kernel.get("options", [])]
    doc["kernels"][name] = kernel


@st.composite
def mutated_document(draw, doc: dict) -> dict:
    """The document after 1 to 3 random structural mutations (kernels inlined first, sometimes, so that
    mutations reach kernel descriptions too)."""
    doc = copy.deepcopy(doc)
    if isinstance(doc.get("kernels"), dict) and draw(st.booleans()):
        for name in list(doc["kernels"]):
            if isinstance(doc["kernels"][name], str):
                inline_kernel(doc, name)
    for _ in range(draw(st.integers(1, 3))):
        doc = draw(st.sampled_from(MUTATIONS))(draw, doc)
    return doc


@st.composite
def mutated_kernel_file(draw, doc: dict) -> tuple[dict, str | None]:
    """Sometimes: one kernel file of the pipeline mutated and saved as ``mutant.yaml`` next to the original,
    the pipeline pointing at it (its problems must be located in that file). Returns the pipeline and the
    mutant's text (None when no kernel file was chosen)."""
    kernels = doc.get("kernels")
    names = [n for n, v in kernels.items() if isinstance(v, str)] if isinstance(kernels, dict) else []
    if not names or not draw(st.booleans()):
        return doc, None
    name = draw(st.sampled_from(names))
    kernel = original_kernel(kernels[name])
    if kernel is None:
        return doc, None
    for _ in range(draw(st.integers(1, 2))):
        kernel = draw(st.sampled_from(MUTATIONS))(draw, kernel)
    doc = copy.deepcopy(doc)
    doc["kernels"][name] = str(Path(kernels[name]).parent / "mutant.yaml")
    return doc, draw(mutated_text(dump(kernel)))


def _pick(draw, doc: Any, where=lambda p, v: True) -> tuple | None:
    options = [p for p in paths(doc) if where(p, get(doc, p))]
    return draw(st.sampled_from(options)) if options else None


def _set(doc: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    get(doc, path[:-1])[path[-1]] = value
    return doc


def delete_key(draw, doc):
    path = _pick(draw, doc)
    if path is not None:
        del get(doc, path[:-1])[path[-1]]
    return doc


def duplicate_item(draw, doc):
    """A list item (a step, an output, an argument) repeated, as a copy or as the same object (an alias)."""
    path = _pick(draw, doc, lambda p, v: isinstance(p[-1], int))
    if path is not None and isinstance(get(doc, path[:-1]), list):
        parent, item = get(doc, path[:-1]), get(doc, path)
        parent.insert(path[-1], item if draw(st.booleans()) else copy.deepcopy(item))
    return doc


def share_value(draw, doc):
    """A value replaced by another part of the document (dumped as an anchor and an alias)."""
    path, source = _pick(draw, doc), _pick(draw, doc)
    if path is None or source is None or path[:len(source)] == source or source[:len(path)] == path:
        return doc
    return _set(doc, path, get(doc, source))


def rename_reference(draw, doc):
    path = _pick(draw, doc, lambda p, v: isinstance(v, str))
    names = strings(doc) + ["nope", "x", "N", "if", "steps"]
    if path is not None:
        _set(doc, path, draw(st.sampled_from(names)))
    return doc


def rename_key(draw, doc):
    path = _pick(draw, doc, lambda p, v: isinstance(p[-1], str))
    if path is not None:
        parent = get(doc, path[:-1])
        new = draw(st.sampled_from(strings(doc) + ["nope", "1", "else", "then", "cases", "default", "", None, True,
                                                   7, -1, 2**70, 1.5]))
        parent[new] = parent.pop(path[-1])
    return doc


def swap_type(draw, doc):
    path = _pick(draw, doc)
    value = draw(st.sampled_from(ODD_VALUES))
    return doc if path is None else _set(doc, path, copy.deepcopy(value))


def odd_dtype(draw, doc):
    path = _pick(draw, doc, lambda p, v: p[-1] == "dtype")
    return doc if path is None else _set(doc, path, draw(st.sampled_from(ODD_DTYPES)))


def odd_shape(draw, doc):
    path = _pick(draw, doc, lambda p, v: p[-1] in ("shape", "grid", "block", "min", "opt", "max"))
    return doc if path is None else _set(doc, path, copy.deepcopy(draw(st.sampled_from(ODD_SHAPES))))


def odd_path(draw, doc):
    path = _pick(draw, doc, lambda p, v: p[-1] in PATH_KEYS or (len(p) == 2 and p[0] == "kernels"))
    return doc if path is None else _set(doc, path, draw(st.sampled_from(ODD_PATHS)))


def replace_root(draw, doc):
    return draw(st.sampled_from([[], [doc], "steps", 1, None, {"steps": doc}]))


MUTATIONS = [delete_key, duplicate_item, share_value, rename_reference, rename_key, swap_type, odd_dtype,
             odd_shape, odd_path, delete_key, swap_type, rename_reference, odd_path]


def dump(doc: Any) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


@st.composite
def mutated_text(draw, text: str) -> str:
    """Text-level slips on a dumped document: a tab in the indentation, a repeated mapping line (a duplicate
    key), an anchor or alias inserted by hand, a line cut short."""
    lines = text.splitlines(keepends=True) or ["\n"]
    at = draw(st.integers(0, len(lines) - 1))
    kind = draw(st.sampled_from(["none", "tab", "duplicate_line", "anchor", "alias", "cut", "none"]))
    line = lines[at]
    if kind == "tab":
        lines[at] = "\t" + line
    elif kind == "duplicate_line":
        lines.insert(at, line)
    elif kind == "anchor" and ": " in line:
        lines[at] = line.replace(": ", ": &a ", 1)
    elif kind == "alias" and ": " in line:
        lines[at] = line.split(": ", 1)[0] + ": *a\n"
    elif kind == "cut":
        lines[at] = line[: draw(st.integers(0, max(len(line) - 1, 0)))] + "\n"
    return "".join(lines)
