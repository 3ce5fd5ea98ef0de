"""Write the pieces between cuts as ONNX models, and the pipeline that chains them.

A piece holds the activation nodes between two cuts, plus its own copy of every constant node and
initializer they read. Its inputs are the activations it reads from earlier pieces or the model's inputs;
its outputs are what later pieces or the model's outputs read. A tensor crossing several cuts is written by
one piece and read by later ones: the pipeline defines it once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .. import dtypes
from .graph import Graph, SnipError, node_reads


@dataclass(frozen=True)
class Piece:
    nodes: list
    inputs: list[str]
    outputs: list[str]


def split(graph: Graph, ends: list[int]) -> list[Piece]:
    """Pieces of the activation order [0, e1), [e1, e2), ..., ending at the given cut positions + 1."""
    bounds = [0, *ends, len(graph.order)]
    pieces = []
    for k in range(len(bounds) - 1):
        start, stop = bounds[k], bounds[k + 1]
        nodes = graph.order[start:stop]
        produced = {o for n in nodes for o in n.output if o}
        outputs = [o for n in nodes for o in n.output
                   if o and (o in graph.outputs or graph.last_use.get(o, -1) >= stop)]
        if k == len(bounds) - 2:  # constant outputs come from the last piece
            outputs += [o for o in graph.outputs if o in graph.constant]
        copied = _constants_for(graph, [r for n in nodes for r in node_reads(n)] + outputs)
        reads = [r for n in copied + nodes for r in node_reads(n)]
        inputs = list(dict.fromkeys(r for r in reads if graph.is_activation(r) and r not in produced))
        if len(bounds) == 2:  # the whole model: its own interface, unused inputs and all
            inputs, outputs = list(graph.inputs), list(graph.outputs)
        else:
            _refuse_passthrough(graph)
        pieces.append(Piece(copied + nodes, inputs, _in_output_order(graph, outputs)))
    return pieces


def _refuse_passthrough(graph: Graph) -> None:
    for name in graph.outputs:
        if name in graph.inputs or (name in graph.initializers and name not in graph.producer):
            raise SnipError(f"model output '{name}' is a model input or an initializer; cut it with --pieces 1")


def _in_output_order(graph: Graph, outputs: list[str]) -> list[str]:
    first = [o for o in graph.outputs if o in outputs]
    return list(dict.fromkeys(first + outputs))


def _constants_for(graph: Graph, names: list[str]) -> list:
    """The constant nodes that compute ``names`` (transitively), in the model's (topological) order."""
    need: set[int] = set()
    stack = [r for r in names if r in graph.constant]
    while stack:
        node = graph.producer.get(stack.pop())
        if node is None or id(node) in need:
            continue
        need.add(id(node))
        stack += [r for r in node_reads(node) if r in graph.constant]
    return [n for n in graph.const_nodes if id(n) in need]


def piece_model(graph: Graph, piece: Piece, name: str):
    from onnx import helper

    model = graph.model
    values = {v.name: v for v in [*model.graph.value_info, *model.graph.input, *model.graph.output]}
    for t in piece.inputs + piece.outputs:
        if t not in values or not values[t].type.HasField("tensor_type"):
            raise SnipError(f"tensor '{t}' has no type after shape inference; it cannot cross a cut")
    reads = {r for n in piece.nodes for r in node_reads(n)} | set(piece.outputs)
    # No inner value_info: what inference wrote for If/Loop outputs can contradict onnxruntime's own.
    body = helper.make_graph(piece.nodes, name, [values[t] for t in piece.inputs],
                             [values[t] for t in piece.outputs],
                             [graph.initializers[t] for t in graph.initializers if t in reads])
    out = helper.make_model(body, opset_imports=list(model.opset_import), producer_name="orchestrator snip")
    out.ir_version = min(model.ir_version, 10)
    out.functions.extend(model.functions)
    return out


def identifier(name: str, taken: set[str]) -> str:
    base = re.sub(r"\W+", "_", name).strip("_") or "t"
    base = f"t_{base}" if base[0].isdigit() else base
    candidate, k = base, 2
    while candidate in taken:
        candidate, k = f"{base}_{k}", k + 1
    taken.add(candidate)
    return candidate


def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", name) else '"' + name.replace('"', '\\"') + '"'


def boundary_formats(graph: Graph, pieces: list[Piece], layout: str) -> list[dict[str, str]]:
    """Per piece, the layout of each port that crosses a cut (4-D FP32 activations, not model outputs)."""
    formats: list[dict[str, str]] = [{} for _ in pieces]
    if layout == "linear" or len(pieces) == 1:
        return formats
    for k, piece in enumerate(pieces):
        for t in piece.outputs:
            ttype = graph.types[t]
            if t in graph.outputs or len(ttype.shape) != 4 or ttype.dtype != "float32":
                continue
            for j in [k] + [j for j in range(k + 1, len(pieces)) if t in pieces[j].inputs]:
                formats[j][t] = layout
    return formats


def pipeline_yaml(graph: Graph, pieces: list[Piece], files: list[Path], base: Path, precision: str,
                  formats: list[dict[str, str]]) -> tuple[str, dict[str, str]]:
    """The pipeline's text, and the pipeline name of each model tensor it carries."""
    model = graph.model
    taken: set[str] = set()
    names = {t: identifier(t, taken) for t in graph.inputs}
    for piece in pieces:
        names.update((t, identifier(t, taken)) for t in piece.outputs if t not in names)
    lines = [f"# Written by `orchestrator snip` from {model.graph.name or 'a model'}: "
             f"{len(pieces)} snippets chained in order.", f"name: {identifier(model.graph.name or 'snipped', set())}"]
    inputs, symbols = _inputs(graph, names, taken)
    if symbols:
        lines.append("dims:  # edit the bounds to the sizes you will run")
        for param, symbol in symbols.items():
            size = graph.sizes.get(param, graph.sizes.get(symbol, 1))
            lines.append(f"  {symbol}: {{min: {size}, opt: {size}, max: {size}}}")
    lines += ["inputs:" if inputs else "inputs: {}", *inputs, f"outputs: [{', '.join(names[t] for t in graph.outputs)}]", "snippets:"]
    for i, path in enumerate(files):
        options = [f"onnx: {path.relative_to(base)}"] + ([f"precision: {precision}"] if precision != "fp32" else [])
        if formats[i]:
            options.append("formats: {" + ", ".join(f"{_key(t)}: {f}" for t, f in formats[i].items()) + "}")
        lines.append(f"  piece{i}: {{{', '.join(options)}}}")
    lines.append("steps:")
    for i, piece in enumerate(pieces):
        ins = ", ".join(f"{_key(t)}: {names[t]}" for t in piece.inputs)
        outs = ", ".join(f"{_key(t)}: {names[t]}" for t in piece.outputs)
        lines += [f"  - snippet: piece{i}", f"    inputs: {{{ins}}}", f"    outputs: {{{outs}}}"]
    return "\n".join(lines) + "\n", names


def _inputs(graph: Graph, names: dict[str, str], taken: set[str]) -> tuple[list[str], dict[str, str]]:
    symbols: dict[str, str] = {}
    lines = []
    for value in graph.model.graph.input:
        if value.name not in graph.inputs:
            continue
        dims = []
        for d in value.type.tensor_type.shape.dim:
            if d.HasField("dim_value"):
                dims.append(str(d.dim_value))
            else:
                param = d.dim_param or f"d{len(symbols)}"
                dims.append(symbols.setdefault(param, identifier(param, set(taken))))
        dtype = dtypes.from_onnx(value.type.tensor_type.elem_type) if value.type.HasField("tensor_type") else None
        if dtype is None:
            raise SnipError(f"input '{value.name}' has an element type the pipeline cannot carry")
        lines.append(f"  {names[value.name]}: {{dtype: {dtype}, shape: [{', '.join(dims)}]}}")
    return lines, symbols
