"""What the control flow did: the case each ``if``/``switch`` took and how many times each ``while`` ran
(and whether it stopped at ``max_iterations``), gathered by an executor observer for run/debug/profile."""

from __future__ import annotations

import statistics
from collections import Counter

from .pipeline.ir import IfBlock, Node, Step, SwitchBlock, WhileBlock

MAX_REACHED = "max_iterations reached"


def loop_label(iterations: int, limit: int) -> str:
    """How a ``while`` block reports itself to observers: ``"3 iterations"``, or with ``MAX_REACHED``."""
    label = f"{iterations} iteration{'' if iterations == 1 else 's'}"
    return f"{label} ({MAX_REACHED})" if iterations >= limit else label


def iterations_of(label: str) -> int:
    return int(label.split(" ", 1)[0])


def block_kind(block: Node) -> str:
    return {IfBlock: "if", SwitchBlock: "switch", WhileBlock: "while"}.get(type(block), "step")


class DecisionLog:
    """An executor observer that records every decision, over one run or many (``clear`` between phases)."""

    def __init__(self) -> None:
        self.blocks: dict[int, Node] = {}
        self.taken: dict[int, list[str]] = {}

    def step_done(self, step: Step) -> None:
        pass

    def branch_taken(self, block: Node, taken: str) -> None:
        self.blocks.setdefault(block.id, block)
        self.taken.setdefault(block.id, []).append(taken)

    def clear(self) -> None:
        self.taken.clear()

    def max_hits(self) -> list[str]:
        """Names of the loops that stopped at max_iterations at least once."""
        return [self.blocks[b].name for b, labels in self.taken.items()
                if any(MAX_REACHED in label for label in labels)]

    def lines(self) -> list[str]:
        """One line per block that ran, in program order."""
        return [self._line(self.blocks[b], self.taken[b]) for b in sorted(self.taken)]

    @staticmethod
    def _line(block: Node, labels: list[str]) -> str:
        head = f"{block_kind(block)} '{block.name}'"
        if not isinstance(block, WhileBlock):
            counts = Counter(labels)
            if len(labels) == 1:
                return f"{head}: took {labels[0]}"
            return f"{head}: took " + ", ".join(f"{t} {n}x" for t, n in counts.most_common())
        counts = [iterations_of(label) for label in labels]
        hits = sum(MAX_REACHED in label for label in labels)
        if len(labels) == 1:
            return f"{head}: {labels[0]}"
        limit = f"; stopped at max_iterations ({block.max_iterations}) {hits} of {len(labels)} times" if hits else ""
        return (f"{head}: {min(counts)}..{max(counts)} iterations (median {statistics.median(counts):g}) "
                f"over {len(labels)} executions{limit}")
