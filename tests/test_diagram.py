"""`orchestrator graph`: Mermaid and DOT text of every example pipeline and of generated nested pipelines
show every step, block, branch and tensor (with shape and bytes), with edges only between drawn nodes."""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET

import flow_corpus
import pytest
from conftest import ROOT, write
from test_control_flow import NESTED, SWITCH, WHILE

from orchestrator import diagram
from orchestrator.cli import main
from orchestrator.pipeline.ir import IfBlock, KernelCall, SnippetCall, SwitchBlock, WhileBlock, walk
from orchestrator.pipeline.load import load_pipeline

EXAMPLES = sorted((ROOT / "pipelines").glob("*.yaml"))


def check(pipeline_path):
    pipeline = load_pipeline(pipeline_path)
    drawing = diagram.build(pipeline)
    ids = {b.id for b in drawing.boxes}
    assert len(ids) == len(drawing.boxes)
    assert all(e.src in ids and e.dst in ids for e in drawing.edges)
    mermaid, dot = diagram.mermaid(drawing), diagram.dot(drawing)
    steps = [n for n in walk(pipeline.body) if isinstance(n, SnippetCall | KernelCall)]
    blocks = [n for n in walk(pipeline.body) if isinstance(n, IfBlock | SwitchBlock | WhileBlock)]
    for step in steps:
        assert re.search(rf'step_{step.id}\["{re.escape(step.name)}<br/>', mermaid)
        assert f'step_{step.id} [label="{step.name}\\n' in dot
    for block in blocks:
        assert f"subgraph block_{block.id} " in mermaid and f"subgraph cluster_block_{block.id} {{" in dot
        labels = {e.lines[0] for e in drawing.edges if e.src == f"cond_{block.id}" and not e.dashed}
        if isinstance(block, WhileBlock):
            assert labels == {"body"}
            assert sum(e.dashed and e.dst == f"cond_{block.id}" for e in drawing.edges) >= len(block.carry)
        else:
            want = {"then", "else"} if isinstance(block, IfBlock) else \
                {f"case {k}" for k, _ in block.cases} | ({"default"} if block.default is not None else set())
            assert labels == want
    stripped = [line.strip() for line in mermaid.splitlines()]
    assert sum(line.startswith("subgraph ") for line in stripped) == stripped.count("end") == \
        len(blocks) + sum(len(b.branches) for b in blocks if not isinstance(b, WhileBlock))
    for name, info in pipeline.tensors.items():
        read = any(name in e.lines[:1] for e in drawing.edges)
        if read and info.origin != "host":
            shape = "[" + ", ".join(map(str, info.shape)) + "]"
            assert re.search(rf'"{name}<br/>{info.kind} {re.escape(shape)}(<br/>[^"]+)?"', mermaid), name
    return pipeline, drawing, mermaid, dot


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_is_drawn_completely(path):
    pipeline, drawing, mermaid, dot = check(path)
    assert mermaid.startswith("flowchart TD\n") and dot.startswith("digraph pipeline {")
    assert "arena" in drawing.title  # every example has dims bounds: bytes are planned
    for output in pipeline.outputs:
        assert any(e.dst == f"out_{output}" for e in drawing.edges)


def test_control_flow_test_pipelines_are_drawn_completely(workdir):
    for name, text in {"switch": SWITCH % "", "while": WHILE % 4, "nested": NESTED}.items():
        _, drawing, _, _ = check(write(workdir, text, f"{name}.yaml"))
        # N has no bounds in the switch pipeline: drawn without bytes
        assert ("no memory plan" in drawing.title) == (name == "switch")


@pytest.mark.parametrize("seed", range(30))
def test_random_nested_pipelines_are_drawn_completely(workdir, seed):
    pipeline, drawing, mermaid, _ = check(write(workdir, flow_corpus.pipeline_text(seed), f"r{seed}.yaml"))
    assert any(e.dst == "out_z" for e in drawing.edges) and "arena" in drawing.title


def test_labels_are_escaped():
    odd = 'a "quoted" <tag> & more\\'
    drawing = diagram.Diagram("t", [diagram.Box("b", [odd, "x < y"], "step", None)],
                              [], [diagram.Edge("b", "b", [odd], dashed=True)])
    mermaid, dot = diagram.mermaid(drawing), diagram.dot(drawing)
    label = "a #34;quoted#34; #60;tag#62; #38; more\\"
    assert f'b["{label}<br/>x #60; y"]' in mermaid and f'b -.->|"{label}"| b' in mermaid
    assert 'b [label="a \\"quoted\\" <tag> & more\\\\\\nx < y", shape=box' in dot


def test_cli_writes_mermaid_and_dot_and_never_fails_without_graphviz(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no 'dot' program
    assert main(["graph", str(ROOT / "pipelines/sharpen.yaml"), "-o", str(tmp_path / "g"), "--mermaid"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "g/sharpen.mmd").read_text().startswith("flowchart TD")
    assert (tmp_path / "g/sharpen.dot").read_text().startswith("digraph")
    assert not (tmp_path / "g/sharpen.svg").exists() and "no SVG: Graphviz's 'dot' program is not installed" in out
    assert "while confidence #60; target<br/>at most 6 iterations" in out
    (tmp_path / "file").write_text("")
    assert main(["graph", str(ROOT / "pipelines/sharpen.yaml"), "-o", str(tmp_path / "file")]) == 1
    assert "not a folder" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot program is not installed")
@pytest.mark.parametrize("name", ["cascade", "modes", "sharpen"])
def test_svg_is_rendered_when_graphviz_is_installed(tmp_path, name):
    assert main(["graph", str(ROOT / f"pipelines/{name}.yaml"), "-o", str(tmp_path)]) == 0
    root = ET.parse(tmp_path / f"{name}.svg").getroot()
    assert root.tag.endswith("svg")
    text = " ".join(t.text or "" for t in root.iter() if t.tag.endswith("text"))
    assert "at arena offset" in text
