"""The validated pipeline: what loading a YAML file produces and what planning and backends consume.

Everything here is resolved: paths are absolute, ONNX port metadata is read, every tensor has a dtype and
a (possibly symbolic) shape, and every step refers to tensors by their pipeline names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import Location, Problem
from ..layouts import LAYOUT_DTYPE
from .schema import DimBounds, LaunchSpec
from .shapes import Dim, Shape
from .source import YamlPath

TensorOrigin = Literal["input", "host", "constant", "step"]


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: Shape
    origin: TensorOrigin
    path: YamlPath  # where it is defined (an input, a constant, or a step's binding)
    layout: str = "linear"  # see layouts.py; only tensors between snippets can be other than linear

    @property
    def kind(self) -> str:
        """dtype and layout, as error messages show them."""
        return self.dtype if self.layout == "linear" else f"{self.dtype} {self.layout}"


@dataclass(frozen=True)
class Port:
    """A named input or output of an ONNX snippet; ``shape`` uses sanitised symbol names."""

    name: str
    dtype: str
    shape: Shape


@dataclass(frozen=True)
class SnippetInfo:
    name: str
    onnx_path: Path
    precision: str
    workspace: int
    profile: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] | None
    inputs: dict[str, Port]
    outputs: dict[str, Port]
    formats: dict[str, str] = field(default_factory=dict)  # port -> layout, for ports that are not linear
    precision_path: str = "auto"  # how fp16/bf16 is built: auto | flags | converted (backends/cuda/trt.py)
    keep_fp32: tuple[str, ...] = ()  # ONNX op types or node names a converted model keeps in float32
    optimize: bool = False  # graph surgery before building/running (surgery.snippet_onnx_bytes)

    def port_type(self, port: str) -> tuple[str, str]:
        """The dtype and layout the tensor bound to ``port`` has."""
        layout = self.formats.get(port, "linear")
        spec = self.inputs.get(port) or self.outputs[port]
        return LAYOUT_DTYPE[layout] or spec.dtype, layout


@dataclass(frozen=True)
class KernelArgInfo:
    name: str
    kind: Literal["in", "out", "scalar"]
    dtype: str
    shape: tuple[Dim, ...] | None
    value: Dim | float | None


@dataclass(frozen=True)
class KernelInfo:
    name: str
    source: str
    source_path: Path | None  # None for inline code
    include_dirs: tuple[Path, ...]
    entry: str
    template_args: tuple[str, ...]
    defines: dict[str, str | int | float]
    options: tuple[str, ...]
    args: tuple[KernelArgInfo, ...]
    launch: LaunchSpec
    reference_path: Path
    reference_function: str
    location: Location | None = None  # where the kernel's source is declared (for compile errors)
    args_location: Location | None = None  # where its 'args' list is (for signature mismatches)
    arg_locations: tuple[Location, ...] = ()  # each argument's place in the description
    reference_location: Location | None = None  # where 'reference' is declared (for its run-time failures)

    def arg(self, name: str) -> KernelArgInfo:
        return next(a for a in self.args if a.name == name)


# ---- steps and blocks ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """``subject`` (a host input or a one-element tensor) compared with ``rhs``; no op means "is non-zero"."""

    subject: str
    op: Literal["<", "<=", ">", ">=", "==", "!="] | None = None
    rhs: float | str | None = None  # a number or the name of a host input
    negate: bool = False

    def __str__(self) -> str:
        text = self.subject if self.op is None else f"{self.subject} {self.op} {self.rhs}"
        return f"not {text}" if self.negate else text


@dataclass(frozen=True)
class ScalarArg:
    """Where a kernel's scalar argument gets its value: a number, a host input, or a shape expression."""

    literal: float | int | None = None
    host_input: str | None = None
    expression: Dim | None = None


@dataclass(frozen=True)
class SnippetCall:
    id: int
    name: str
    path: YamlPath
    snippet: str
    inputs: dict[str, str]  # ONNX input name -> pipeline tensor
    outputs: dict[str, str]  # ONNX output name -> pipeline tensor

    @property
    def reads(self) -> tuple[str, ...]:
        return tuple(self.inputs.values())

    @property
    def writes(self) -> tuple[str, ...]:
        return tuple(self.outputs.values())


@dataclass(frozen=True)
class KernelCall:
    id: int
    name: str
    path: YamlPath
    kernel: str
    tensors: dict[str, str]  # in/out argument -> pipeline tensor
    scalars: dict[str, ScalarArg]
    in_args: tuple[str, ...]
    out_args: tuple[str, ...]

    @property
    def reads(self) -> tuple[str, ...]:
        return tuple(self.tensors[a] for a in self.in_args)

    @property
    def writes(self) -> tuple[str, ...]:
        return tuple(self.tensors[a] for a in self.out_args)


@dataclass(frozen=True)
class IfBlock:
    id: int
    name: str
    path: YamlPath
    condition: Condition
    then: tuple[Node, ...]
    else_: tuple[Node, ...]
    outputs: tuple[str, ...]  # tensors every branch defines, visible after the block

    @property
    def branches(self) -> tuple[tuple[Node, ...], ...]:
        return (self.then, self.else_)


@dataclass(frozen=True)
class SwitchBlock:
    id: int
    name: str
    path: YamlPath
    subject: str
    cases: tuple[tuple[int, tuple[Node, ...]], ...]
    default: tuple[Node, ...] | None
    outputs: tuple[str, ...]

    @property
    def branches(self) -> tuple[tuple[Node, ...], ...]:
        extra = () if self.default is None else (self.default,)
        return tuple(body for _, body in self.cases) + extra


@dataclass(frozen=True)
class WhileBlock:
    id: int
    name: str
    path: YamlPath
    condition: Condition
    max_iterations: int
    body: tuple[Node, ...]
    carry: tuple[tuple[str, str], ...]  # (state tensor, tensor of the body that replaces it)

    @property
    def branches(self) -> tuple[tuple[Node, ...], ...]:
        return (self.body,)


Step = SnippetCall | KernelCall
Block = IfBlock | SwitchBlock | WhileBlock
Node = Step | Block


@dataclass(frozen=True)
class Pipeline:
    """A loaded and fully validated pipeline."""

    name: str
    file: Path
    dims: dict[str, DimBounds]
    inputs: dict[str, TensorInfo]
    outputs: tuple[str, ...]
    constants: dict[str, np.ndarray]
    snippets: dict[str, SnippetInfo]
    kernels: dict[str, KernelInfo]
    body: tuple[Node, ...]
    tensors: dict[str, TensorInfo]
    warnings: tuple[Problem, ...] = field(default=())

    @property
    def host_inputs(self) -> tuple[str, ...]:
        return tuple(n for n, t in self.inputs.items() if t.origin == "host")


def walk(nodes: tuple[Node, ...]):
    """Every node of a body in program order, blocks before their contents."""
    for node in nodes:
        yield node
        if isinstance(node, IfBlock | SwitchBlock | WhileBlock):
            for branch in node.branches:
                yield from walk(branch)
