"""The README stays true: its fresh-machine path is two commands and CI runs the second as written, its
example command names real files, and its diagram is what `orchestrator graph` draws today."""

from __future__ import annotations

import re
import shlex

from conftest import ROOT

from orchestrator import diagram
from orchestrator.cli import build_parser
from orchestrator.pipeline.load import load_pipeline

README = (ROOT / "README.md").read_text()


def fenced(after: str, language: str) -> str:
    section = README[README.index(after):]
    return re.search(rf"```{language}\n(.*?)```", section, re.S).group(1)


def test_fresh_machine_path_is_two_commands_and_ci_runs_the_second():
    setup_and_run, setup_and_test = fenced("## On a fresh machine", "bash").strip().splitlines()
    ci = (ROOT / ".ci/run").read_text().splitlines()
    assert setup_and_test in ci
    assert ci.index(setup_and_test) < next(i for i, line in enumerate(ci) if "ruff check ." in line)
    words = shlex.split(setup_and_run)
    run = words[words.index(".venv/bin/orchestrator") + 1:]
    args = build_parser().parse_args(run)
    assert args.command == "run" and (ROOT / args.pipeline).is_file() and (ROOT / args.inputs).is_file()


def test_the_readme_diagram_is_what_graph_draws():
    drawn = diagram.mermaid(diagram.build(load_pipeline(ROOT / "pipelines/cascade.yaml")))
    assert fenced("## Seeing a pipeline", "mermaid") == drawn, \
        "README's diagram is stale: paste in `orchestrator graph pipelines/cascade.yaml --mermaid`"
