"""A pipeline as a picture: its steps, branches and loops, with every tensor's dtype, shape and planned
bytes, as Mermaid text (rendered by GitHub, GitLab and most Markdown viewers) and Graphviz DOT (and SVG
when Graphviz's ``dot`` program is installed).

Both formats are drawn from one small neutral graph (nodes, clusters, edges) built by walking the
pipeline once: data edges go from the step that defines a tensor to each step that reads it (from every
branch that may define it), control edges from a block's condition to the first node of each branch,
and a loop's carry is a dashed edge back to its condition.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError
from .pipeline.ir import Condition, IfBlock, KernelCall, Node, Pipeline, SnippetCall, SwitchBlock, WhileBlock


@dataclass
class Box:
    id: str
    lines: list[str]
    shape: str  # input | constant | output | step | choice | loop | empty
    cluster: str | None


@dataclass
class Cluster:
    id: str
    label: str
    parent: str | None
    style: str  # block | branch


@dataclass
class Edge:
    src: str
    dst: str
    lines: list[str]
    dashed: bool = False


@dataclass
class Diagram:
    title: str
    boxes: list[Box] = field(default_factory=list)
    clusters: list[Cluster] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)


def build(pipeline: Pipeline, at: str = "max") -> Diagram:
    """The diagram of ``pipeline``, with tensor bytes planned at every dimension's ``at`` bound."""
    return _Builder(pipeline, at).run()


class _Builder:
    def __init__(self, pipeline: Pipeline, at: str):
        self.pipeline = pipeline
        self.sizes, self.offsets, summary = _plan(pipeline, at)
        self.diagram = Diagram(f"{pipeline.name}: {summary}")
        self.producers: dict[str, list[str]] = {}
        self.labelled: set[str] = set()  # tensors whose first edge already carries their full label

    def run(self) -> Diagram:
        for name, info in self.pipeline.inputs.items():
            kind = "host scalar" if info.origin == "host" else "input"
            self._box(f"in_{name}", [f"{kind} {name}"], "input", None)
            self.producers[name] = [f"in_{name}"]
        for name in self.pipeline.constants:
            self._box(f"const_{name}", [f"constant {name}"], "constant", None)
            self.producers[name] = [f"const_{name}"]
        self._body(self.pipeline.body, None)
        for name in self.pipeline.outputs:
            self._box(f"out_{name}", [f"output {name}"], "output", None)
            self._reads(name, f"out_{name}")
        return self.diagram

    # ---- walking the pipeline ------------------------------------------------------------------
    def _body(self, nodes: tuple[Node, ...], cluster: str | None) -> str:
        """Draw a sequence of nodes; returns the id of its first box (an 'empty' box for no nodes)."""
        if not nodes:
            box = f"empty_{len(self.diagram.boxes)}"
            self._box(box, ["(nothing)"], "empty", cluster)
            return box
        first = [self._node(node, cluster) for node in nodes]
        return first[0]

    def _node(self, node: Node, cluster: str | None) -> str:
        if isinstance(node, IfBlock | SwitchBlock):
            return self._choice(node, cluster)
        if isinstance(node, WhileBlock):
            return self._loop(node, cluster)
        box = f"step_{node.id}"
        kind, target = ("snippet", node.snippet) if isinstance(node, SnippetCall) else ("kernel", node.kernel)
        self._box(box, [node.name, kind if target == node.name else f"{kind} {target}"], "step", cluster)
        hosts = [s.host_input for s in node.scalars.values() if s.host_input] if isinstance(node, KernelCall) else []
        for tensor in dict.fromkeys([*node.reads, *hosts]):
            self._reads(tensor, box)
        for tensor in node.writes:
            self.producers[tensor] = [box]
        return box

    def _choice(self, node: IfBlock | SwitchBlock, cluster: str | None) -> str:
        outer = self._cluster(f"block_{node.id}", f"{_kind(node)} '{node.name}'", cluster, "block")
        test = f"if {node.condition}" if isinstance(node, IfBlock) else f"switch {node.subject}"
        box = f"cond_{node.id}"
        self._box(box, [test], "choice", outer)
        for tensor in _condition_reads(node):
            self._reads(tensor, box)
        before, merged = dict(self.producers), {}
        for label, branch in _branches(node):
            self.producers = dict(before)
            inner = self._cluster(f"block_{node.id}_{len(merged)}", label, outer, "branch")
            first = self._body(branch, inner)
            self.diagram.edges.append(Edge(box, first, [label]))
            merged[label] = self.producers
        self.producers = before
        for tensor in node.outputs:
            self.producers[tensor] = _union(p.get(tensor, []) for p in merged.values())
        return box

    def _loop(self, node: WhileBlock, cluster: str | None) -> str:
        outer = self._cluster(f"block_{node.id}", f"while '{node.name}'", cluster, "block")
        box = f"cond_{node.id}"
        self._box(box, [f"while {node.condition}", f"at most {node.max_iterations} iterations"], "loop", outer)
        for tensor in _condition_reads(node):
            self._reads(tensor, box)
        before = dict(self.producers)
        first = self._body(node.body, outer)
        self.diagram.edges.append(Edge(box, first, ["body"]))
        inside = self.producers
        for state, nxt in node.carry:
            for src in inside.get(nxt, []):
                self.diagram.edges.append(Edge(src, box, [f"carry {nxt} -> {state}"], dashed=True))
        self.producers = before
        for state, nxt in node.carry:
            self.producers[state] = _union([before.get(state, []), inside.get(nxt, [])])
        return box

    # ---- drawing ---------------------------------------------------------------------------------
    def _reads(self, tensor: str, dst: str) -> None:
        label = [tensor]
        if tensor not in self.labelled:
            self.labelled.add(tensor)
            label = self._tensor_lines(tensor)
        for src in self.producers.get(tensor, []):
            self.diagram.edges.append(Edge(src, dst, label))
            label = [tensor]  # the full label once per tensor is enough

    def _tensor_lines(self, tensor: str) -> list[str]:
        info = self.pipeline.tensors.get(tensor)
        if info is None:
            return [tensor]
        shape = "scalar" if info.origin == "host" else "[" + ", ".join(str(d) for d in info.shape) + "]"
        lines = [tensor, f"{info.kind} {shape}"]
        if tensor in self.sizes and info.origin != "host":
            where = f" at arena offset {self.offsets[tensor]}" if tensor in self.offsets else ""
            lines.append(f"{human_bytes(self.sizes[tensor])}{where}")
        return lines

    def _box(self, box: str, lines: list[str], shape: str, cluster: str | None) -> None:
        self.diagram.boxes.append(Box(box, lines, shape, cluster))

    def _cluster(self, cid: str, label: str, parent: str | None, style: str) -> str:
        self.diagram.clusters.append(Cluster(cid, label, parent, style))
        return cid


def _plan(pipeline: Pipeline, at: str) -> tuple[dict[str, int], dict[str, int], str]:
    """Tensor bytes and arena offsets at the ``at`` bound; none when a dimension has no bounds."""
    from .planning import concrete_shapes, dims_at, plan_memory, tensor_bytes

    try:
        sizes = tensor_bytes(pipeline, concrete_shapes(pipeline, dims_at(pipeline, at)))
    except ConfigError:
        return {}, {}, "no memory plan (a dimension has no bounds)"
    plan = plan_memory(pipeline, sizes)
    return sizes, plan.offsets, (f"arena {human_bytes(plan.arena_bytes)} for intermediates at the {at} bound "
                                 f"(naive {human_bytes(plan.naive_bytes)})")


def _kind(node: Node) -> str:
    return "if" if isinstance(node, IfBlock) else "switch"


def _branches(node: IfBlock | SwitchBlock) -> list[tuple[str, tuple[Node, ...]]]:
    if isinstance(node, IfBlock):
        return [("then", node.then), ("else", node.else_)]
    default = [] if node.default is None else [("default", node.default)]
    return [(f"case {key}", body) for key, body in node.cases] + default


def _condition_reads(node: Node) -> list[str]:
    if isinstance(node, SwitchBlock):
        return [node.subject]
    cond: Condition = node.condition  # type: ignore[union-attr]
    return [n for n in (cond.subject, cond.rhs) if isinstance(n, str)]


def _union(lists) -> list[str]:
    return list(dict.fromkeys(item for items in lists for item in items))


def human_bytes(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


# ---- Mermaid ---------------------------------------------------------------------------------------

_MERMAID_SHAPES = {"input": '(["{}"])', "output": '(["{}"])', "constant": '[("{}")]', "step": '["{}"]',
                   "choice": '{{"{}"}}', "loop": '{{{{"{}"}}}}', "empty": '["{}"]'}


def mermaid(diagram: Diagram) -> str:
    lines = ["flowchart TD", f"  %% {diagram.title}"]
    lines += _mermaid_cluster(diagram, None, "  ")
    for edge in diagram.edges:
        arrow = "-.->" if edge.dashed else "-->"
        lines.append(f'  {edge.src} {arrow}|"{_mermaid_text(edge.lines)}"| {edge.dst}')
    lines += ["  classDef io fill:#e8f4ff,stroke:#4a90d9", "  classDef control fill:#fff4e0,stroke:#d9a04a"]
    io = [b.id for b in diagram.boxes if b.shape in ("input", "output", "constant")]
    control = [b.id for b in diagram.boxes if b.shape in ("choice", "loop")]
    lines += [f"  class {','.join(ids)} {name}" for ids, name in ((io, "io"), (control, "control")) if ids]
    return "\n".join(lines) + "\n"


def _mermaid_cluster(diagram: Diagram, parent: str | None, indent: str) -> list[str]:
    lines = [f"{indent}{b.id}{_MERMAID_SHAPES[b.shape].format(_mermaid_text(b.lines))}"
             for b in diagram.boxes if b.cluster == parent]
    for cluster in (c for c in diagram.clusters if c.parent == parent):
        lines.append(f'{indent}subgraph {cluster.id} ["{_mermaid_text([cluster.label])}"]')
        lines += _mermaid_cluster(diagram, cluster.id, indent + "  ")
        lines.append(f"{indent}end")
    return lines


def _mermaid_text(lines: list[str]) -> str:
    # Mermaid entity codes: quotes and angle brackets would end the label or start HTML
    escaped = (line.replace("&", "#38;").replace('"', "#34;").replace("<", "#60;").replace(">", "#62;")
               for line in lines)
    return "<br/>".join(escaped)


# ---- Graphviz ---------------------------------------------------------------------------------------

_DOT_SHAPES = {"input": "shape=ellipse", "output": "shape=ellipse, peripheries=2", "constant": "shape=cylinder",
               "step": "shape=box, style=rounded", "choice": "shape=diamond", "loop": "shape=hexagon",
               "empty": "shape=plaintext"}


def dot(diagram: Diagram) -> str:
    lines = ["digraph pipeline {", f"  label={_dot_text([diagram.title])}; labelloc=t; rankdir=TB;",
             '  node [fontname="Helvetica", fontsize=11]; edge [fontname="Helvetica", fontsize=9];']
    lines += _dot_cluster(diagram, None, "  ")
    for edge in diagram.edges:
        style = ", style=dashed, constraint=false" if edge.dashed else ""
        lines.append(f"  {edge.src} -> {edge.dst} [label={_dot_text(edge.lines)}{style}];")
    return "\n".join(lines + ["}"]) + "\n"


def _dot_cluster(diagram: Diagram, parent: str | None, indent: str) -> list[str]:
    lines = [f"{indent}{b.id} [label={_dot_text(b.lines)}, {_DOT_SHAPES[b.shape]}];"
             for b in diagram.boxes if b.cluster == parent]
    for cluster in (c for c in diagram.clusters if c.parent == parent):
        style = "rounded" if cluster.style == "block" else "dashed"
        lines.append(f"{indent}subgraph cluster_{cluster.id} {{")
        lines.append(f"{indent}  label={_dot_text([cluster.label])}; style={style};")
        lines += _dot_cluster(diagram, cluster.id, indent + "  ")
        lines.append(f"{indent}}}")
    return lines


def _dot_text(lines: list[str]) -> str:
    return '"' + "\\n".join(line.replace("\\", "\\\\").replace('"', '\\"') for line in lines) + '"'


def render_svg(dot_file: Path, svg_file: Path) -> str | None:
    """Render ``dot_file`` with Graphviz; returns why not when it cannot (never raises)."""
    program = shutil.which("dot")
    if program is None:
        return "Graphviz's 'dot' program is not installed (e.g. apt-get install graphviz)"
    try:
        result = subprocess.run([program, "-Tsvg", str(dot_file), "-o", str(svg_file)], capture_output=True,
                                text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"'dot' failed: {exc}"
    if result.returncode != 0:
        return f"'dot' failed: {(result.stderr.strip().splitlines() or ['exit ' + str(result.returncode)])[0]}"
    return None
