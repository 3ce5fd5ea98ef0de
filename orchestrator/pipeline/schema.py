"""The pipeline language: Pydantic v2 models of a pipeline YAML file (and of kernel description files).

These models check the *form* of a file (keys, types, enums, expression syntax). Whether the pieces fit
together (tensors defined before use, dtypes and shapes across steps, ONNX port names) is checked by
``validate.py`` on the parsed models. Nothing here knows about CUDA.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ByteSize,
    ConfigDict,
    Discriminator,
    Field,
    PositiveInt,
    StringConstraints,
    Tag,
    model_validator,
)

from ..dtypes import DTypeName
from ..layouts import Layout
from . import shapes

Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
"""Pipeline tensor, dimension, kernel argument and step names: C-like identifiers."""


def _check_dim(value: int | str) -> int | str:
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"dimension {value} is negative")
        return value
    shapes.check_total(value)  # raises ShapeExprError (a ValueError) with a readable message
    return value


DimExpr = Annotated[int | str, Field(union_mode="left_to_right"), AfterValidator(_check_dim)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


DimSize = Annotated[PositiveInt, Field(le=2**31 - 1)]
"""A bound of a symbolic dimension: TensorRT 8.6 dimensions and kernels' element counts are 32-bit."""


class DimBounds(Model):
    """Bounds of a symbolic dimension, used for TensorRT optimisation profiles and memory planning."""

    min: DimSize
    opt: DimSize
    max: DimSize

    @model_validator(mode="after")
    def _ordered(self) -> DimBounds:
        if not self.min <= self.opt <= self.max:
            raise ValueError(f"bounds must satisfy min <= opt <= max (got {self.min}, {self.opt}, {self.max})")
        return self


class InputSpec(Model):
    """A pipeline input: a device tensor, or (``host: true``) a host scalar for conditions and kernel scalars."""

    dtype: DTypeName
    shape: list[DimExpr] = []
    host: bool = False

    @model_validator(mode="after")
    def _host_is_scalar(self) -> InputSpec:
        if self.host and self.shape:
            raise ValueError("a host input must be a scalar (shape: [])")
        return self


class ConstantSpec(Model):
    """A small constant array: inline ``value``, or a ``file`` (.npy, .npz or .safetensors; ``key`` selects)."""

    value: Any = None
    file: str | None = None
    key: str | None = None
    dtype: DTypeName | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ConstantSpec:
        if (self.value is None) == (self.file is None):
            raise ValueError("give exactly one of 'value' or 'file'")
        if self.value is not None and self.dtype is None:
            raise ValueError("an inline 'value' needs a 'dtype'")
        return self


class ProfileShapes(Model):
    min: list[PositiveInt]
    opt: list[PositiveInt]
    max: list[PositiveInt]


class SnippetSpec(Model):
    """An ONNX model built into one TensorRT engine (or run by onnxruntime on the CPU)."""

    onnx: str = Field(description="path of the ONNX file, relative to this pipeline file")
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    workspace: ByteSize = Field(ByteSize(256 << 20), description="TensorRT workspace limit, e.g. 256MiB")
    profile: dict[str, ProfileShapes] | None = Field(
        None, description="optimisation profile per ONNX input; default: derived from the pipeline's dims")
    formats: dict[str, Layout] = Field(
        {}, description="memory layout per ONNX input/output (default linear); 'hwc8' keeps a tensor passed "
                        "between fp16 snippets in TensorRT's FP16 channels-last format, so that no reformat "
                        "runs at the boundary (every snippet that reads the tensor must use it too)")
    precision_path: Literal["auto", "flags", "converted"] = Field(
        "auto", description="how fp16/bf16 is built: 'flags' = the fp32 model with TensorRT's FP16/BF16 "
                            "builder flag (TensorRT 8.6 and 10), 'converted' = the model converted to "
                            "fp16/bf16 and built strongly typed (TensorRT 10+, and on 8.6 with the FP16 "
                            "flag); 'auto' = converted on TensorRT 11+ or when keep_fp32 is set, else flags")
    keep_fp32: list[str] = Field(
        [], description="ONNX op types (e.g. ReduceMean) or node names that a converted fp16/bf16 model "
                        "keeps in float32 (e.g. reductions that would overflow)")
    optimize: bool = Field(
        False, description="run graph surgery (constant folding, no-op and trivial linear removal, common "
                           "subexpressions; see `orchestrator optimize`) before the engine build and the CPU "
                           "reference; the result is cached by content")


class KernelArg(Model):
    """One parameter of a kernel, in the order of the CUDA function's parameters."""

    name: Name
    kind: Literal["in", "out", "scalar"]
    dtype: DTypeName
    shape: list[DimExpr] | None = Field(
        None, description="in: a pattern that binds symbols (e.g. [N, 3, H, W]); out: the shape rule")
    value: DimExpr | float | None = Field(
        None, description="scalar: computed from the bound symbols (e.g. 'H * W'); else the step binds it")

    @model_validator(mode="after")
    def _fits_kind(self) -> KernelArg:
        if self.kind == "out" and self.shape is None:
            raise ValueError("an 'out' argument needs a 'shape' rule")
        if self.kind != "scalar" and self.value is not None:
            raise ValueError("only a 'scalar' argument may have a 'value'")
        if self.kind == "scalar" and self.shape is not None:
            raise ValueError("a 'scalar' argument has no 'shape'")
        return self


MAX_BLOCK = (1024, 1024, 64)  # CUDA's limits on every GPU since compute capability 2.0
MAX_BLOCK_THREADS = 1024
MAX_SHARED_BYTES = 48 << 10  # more dynamic shared memory needs an opt-in attribute the backend does not set


def _check_block(value: list[int] | int) -> list[int] | int:
    dims = [value] if isinstance(value, int) else value
    if not 1 <= len(dims) <= 3:
        raise ValueError(f"a block has 1 to 3 dimensions (x, y, z), got {len(dims)}")
    for axis, (size, limit) in enumerate(zip(dims, MAX_BLOCK, strict=False)):
        if size > limit:
            raise ValueError(f"block dimension {'xyz'[axis]} is {size}; CUDA allows at most {limit}")
    threads = dims[0] * (dims[1] if len(dims) > 1 else 1) * (dims[2] if len(dims) > 2 else 1)
    if threads > MAX_BLOCK_THREADS:
        raise ValueError(f"a block of {' x '.join(map(str, dims))} = {threads} threads; CUDA allows at most "
                         f"{MAX_BLOCK_THREADS} threads per block")
    return value


class LaunchSpec(Model):
    """How many threads: one per element of a tensor argument (``threads``), or an explicit ``grid``."""

    threads: str | None = Field(None, description="one thread per element of this argument")
    grid: list[DimExpr] | None = Field(None, min_length=1, max_length=3)
    block: Annotated[list[PositiveInt] | PositiveInt, AfterValidator(_check_block)] = Field(
        256, description="threads per block: x or [x, y, z], at most 1024 in all")
    shared_bytes: int = Field(0, ge=0, le=MAX_SHARED_BYTES,
                              description="dynamic shared memory per block, at most 48 KiB")

    @model_validator(mode="after")
    def _one_rule(self) -> LaunchSpec:
        if (self.threads is None) == (self.grid is None):
            raise ValueError("give exactly one of 'threads' or 'grid'")
        return self

    @property
    def block_dims(self) -> tuple[int, int, int]:
        dims = [self.block] if isinstance(self.block, int) else list(self.block)
        return tuple(dims + [1] * (3 - len(dims)))[:3]  # type: ignore[return-value]


class KernelSpec(Model):
    """A custom CUDA kernel compiled with NVRTC, with a numpy reference for the CPU backend and tests."""

    source: str | None = Field(None, description="CUDA source file, relative to the file declaring the kernel")
    code: str | None = Field(None, description="inline CUDA source (instead of 'source')")
    entry: str = Field(description="name of the __global__ function (a template name with template_args)")
    template_args: list[str] = []
    defines: dict[str, str | int | float] = {}
    options: list[str] = []
    args: list[KernelArg]
    launch: LaunchSpec
    reference: str = Field(description="numpy reference 'file.py:function', relative to the declaring file")

    @model_validator(mode="after")
    def _one_source(self) -> KernelSpec:
        if (self.source is None) == (self.code is None):
            raise ValueError("give exactly one of 'source' or 'code'")
        if ":" not in self.reference:
            raise ValueError("'reference' must look like 'file.py:function'")
        names = [a.name for a in self.args]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"argument names must be unique (repeated: {', '.join(dupes)})")
        return self


# ---- steps ---------------------------------------------------------------------------------------


class SnippetStep(Model):
    """Run a snippet: bind its ONNX input/output names to pipeline tensors (unbound names map to themselves)."""

    snippet: str
    name: Name | None = None
    inputs: dict[str, Name] = {}
    outputs: dict[str, Name] = {}


class KernelStep(Model):
    """Run a kernel: bind each argument to a tensor name, a number, or a host input."""

    kernel: str
    name: Name | None = None
    args: dict[str, Name | int | float] = {}


class IfStep(Model):
    """Run ``then`` or ``else`` depending on a condition such as ``maxprob < threshold`` or ``use_hq``."""

    if_: str = Field(alias="if")
    name: Name | None = None
    then: list[Step]
    else_: list[Step] = Field([], alias="else")


class SwitchStep(Model):
    """Run the case whose key equals an integer host input or one-element device tensor."""

    switch: Name
    name: Name | None = None
    cases: dict[int, list[Step]] = Field(min_length=1)
    default: list[Step] | None = None


class WhileStep(Model):
    """Repeat ``body`` while a condition holds, at most ``max_iterations`` times.

    ``carry`` maps a tensor defined before the loop to the body tensor that replaces it after each iteration.
    """

    while_: str = Field(alias="while")
    name: Name | None = None
    max_iterations: PositiveInt
    body: list[Step] = Field(min_length=1)
    carry: dict[Name, Name] = {}


STEP_KINDS = ("snippet", "kernel", "if", "switch", "while")
STEP_TAGS = frozenset(f"<{k}>" for k in STEP_KINDS)


def _step_kind(value: Any) -> str | None:
    if isinstance(value, BaseModel):
        return f"<{type(value).__name__.removesuffix('Step').lower()}>"
    if isinstance(value, dict):
        kinds = [k for k in STEP_KINDS if k in value]
        return f"<{kinds[0]}>" if len(kinds) == 1 else None
    return None


Step = Annotated[
    Annotated[SnippetStep, Tag("<snippet>")] | Annotated[KernelStep, Tag("<kernel>")]
    | Annotated[IfStep, Tag("<if>")] | Annotated[SwitchStep, Tag("<switch>")]
    | Annotated[WhileStep, Tag("<while>")],
    Discriminator(_step_kind, custom_error_type="step_kind",
                  custom_error_message="a step needs exactly one of the keys: " + ", ".join(STEP_KINDS)),
]


class PipelineSpec(Model):
    """A whole pipeline file."""

    name: str | None = None
    dims: dict[Name, DimBounds] = {}
    inputs: dict[Name, InputSpec] = Field(min_length=1)
    outputs: list[Name] = Field(min_length=1)
    constants: dict[Name, ConstantSpec] = {}
    snippets: dict[Name, SnippetSpec] = {}
    kernels: dict[Name, KernelSpec] = Field(
        {}, description="inline kernel descriptions, or the path of a kernel YAML file (a string)")
    steps: list[Step] = Field(min_length=1)
    optimize: bool = Field(
        False, description="compute a step that repeats an earlier one (same snippet or kernel, arguments and "
                           "tensors) once, reading the earlier step's outputs instead (snippets have their own "
                           "'optimize' for graph surgery)")


for _model in (IfStep, SwitchStep, WhileStep, PipelineSpec):
    _model.model_rebuild()


def json_schema() -> dict[str, Any]:
    """JSON Schema of pipeline files, for editor autocompletion (kernels may also be file paths)."""
    schema = PipelineSpec.model_json_schema(by_alias=True)
    for pattern, kernel in schema["properties"]["kernels"]["patternProperties"].items():
        schema["properties"]["kernels"]["patternProperties"][pattern] = {"anyOf": [kernel, {"type": "string"}]}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "orchestrator pipeline"
    return schema
