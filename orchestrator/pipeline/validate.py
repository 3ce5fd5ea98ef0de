"""Semantic validation: turn a schema-valid PipelineSpec into a resolved ``Pipeline``, or report every
problem at once.

Checks: files exist and parse (ONNX, kernel sources, references, constants); every tensor is defined once
and before it is used; bindings name real ONNX ports and kernel arguments; dtypes and (symbolic) shapes
agree between steps; branches define the same tensors; conditions name host inputs or one-element tensors.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import numpy as np

from .. import dtypes
from ..errors import ConfigError, Problem
from ..kernels import includes
from . import shapes
from .conditions import parse_condition
from .constants import ConstantLoadError, load_constant
from .ir import (
    Condition,
    IfBlock,
    KernelArgInfo,
    KernelCall,
    KernelInfo,
    Node,
    Pipeline,
    ScalarArg,
    SnippetCall,
    SnippetInfo,
    SwitchBlock,
    TensorInfo,
    WhileBlock,
)
from .onnx_meta import OnnxReadError, onnx_op_types_and_nodes, read_ports
from .references import ReferenceLoadError, load_reference
from .schema import (
    IfStep,
    KernelSpec,
    KernelStep,
    PipelineSpec,
    SnippetSpec,
    SnippetStep,
    SwitchStep,
    WhileStep,
)
from .source import FileReadError, SourceMap, YamlPath, absent, display_name, is_folder, read_text, resolve

Scope = dict[str, TensorInfo]
_CODE_NOISE = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"', re.S)  # comments and string literals
UNKNOWN = "?"  # dtype of a tensor whose producer failed validation: checks against it are skipped


def did_you_mean(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def listing(names, limit: int = 10) -> str:
    names = list(names)
    text = ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")
    return text or "none"


class Validator:
    def __init__(self, spec: PipelineSpec, smap: SourceMap, file: Path, kernel_dirs: dict[str, Path]):
        self.spec, self.smap, self.file = spec, smap, file
        self.base = file.parent
        self.kernel_dirs = kernel_dirs
        self.problems: list[Problem] = []
        self.tensors: dict[str, TensorInfo] = {}
        self.retired: dict[str, str] = {}  # branch- or loop-local names -> why they are not visible
        self.used: set[str] = set()
        self.step_names: set[str] = set()
        self.called: set[str] = set()  # snippets and kernels that some step runs
        self.next_id = 0

    # ---- reporting ----------------------------------------------------------------------------
    def error(self, path: YamlPath, message: str, *, key: bool = False) -> None:
        self.problems.append(self.smap.problem(path, message, key=key))

    def warn(self, path: YamlPath, message: str) -> None:
        self.problems.append(self.smap.problem(path, message, severity="warning"))

    def where(self, path: YamlPath) -> str:
        loc = self.smap.locate(path)
        return f"{loc.file}:{loc.line}" if loc.line else loc.file

    # ---- top level ----------------------------------------------------------------------------
    def run(self) -> Pipeline:
        scope: Scope = {}
        inputs = self.inputs(scope)
        constants = self.constants(scope)
        snippets = self.snippets()
        kernels = self.kernels()
        self.snippet_infos, self.kernel_infos = snippets, kernels
        self.failed_snippets = set(self.spec.snippets) - set(snippets)
        self.failed_kernels = set(self.spec.kernels) - set(kernels)
        body = self.block(self.spec.steps, ("steps",), scope)
        outputs = self.outputs(scope)
        body = self.duplicate_steps(body)
        self.unused(inputs, constants)
        self.unused_definitions(snippets, kernels)
        errors = [p for p in self.problems if p.severity == "error"]
        if errors:
            raise ConfigError(self.problems)
        return Pipeline(
            name=self.spec.name or self.file.stem, file=self.file, dims=dict(self.spec.dims),
            inputs=inputs, outputs=outputs, constants=constants, snippets=snippets, kernels=kernels,
            body=body, tensors=dict(self.tensors),
            warnings=tuple(p for p in self.problems if p.severity == "warning"))

    def inputs(self, scope: Scope) -> dict[str, TensorInfo]:
        result = {}
        for name, spec in self.spec.inputs.items():
            info = TensorInfo(name, spec.dtype, tuple(spec.shape), "host" if spec.host else "input",
                              ("inputs", name))
            scope[name] = self.tensors[name] = result[name] = info
        return result

    def constants(self, scope: Scope) -> dict[str, np.ndarray]:
        result = {}
        for name, spec in self.spec.constants.items():
            path = ("constants", name)
            if name in scope:
                self.error(path, f"'{name}' is both an input and a constant (names must be unique)", key=True)
                continue
            try:
                array = load_constant(spec, self.base)
            except ConstantLoadError as exc:
                self.error(path + (("file",) if spec.file else ("value",)), str(exc))
                continue
            result[name] = array
            info = TensorInfo(name, spec.dtype or dtypes.from_numpy(array.dtype) or "", array.shape,
                              "constant", path)
            scope[name] = self.tensors[name] = info
        return result

    def snippets(self) -> dict[str, SnippetInfo]:
        result = {}
        for name, spec in self.spec.snippets.items():
            info = self.snippet(name, spec)
            if info is not None:
                result[name] = info
        return result

    def snippet(self, name: str, spec: SnippetSpec) -> SnippetInfo | None:
        path = ("snippets", name)
        onnx_path = resolve(self.base / spec.onnx)
        if absent(onnx_path):
            self.error(path + ("onnx",), f"ONNX file not found: {display_name(onnx_path)} "
                                         f"(paths are relative to {display_name(self.base)}/)")
            return None
        try:
            inputs, outputs = read_ports(onnx_path)
        except OnnxReadError as exc:
            self.error(path + ("onnx",), str(exc))
            return None
        profile = None
        if spec.profile is not None:
            profile = {}
            for port, bounds in spec.profile.items():
                if port not in inputs:
                    self.error(path + ("profile", port), f"{onnx_path.name} has no input '{port}' "
                               f"(its inputs: {listing(inputs)}){did_you_mean(port, inputs)}", key=True)
                    continue
                rank = len(inputs[port].shape)
                ranks = {len(bounds.min), len(bounds.opt), len(bounds.max)}
                if ranks != {rank}:
                    self.error(path + ("profile", port), f"min/opt/max must each have {rank} dimensions")
                    continue
                if not all(a <= b <= c for a, b, c in zip(bounds.min, bounds.opt, bounds.max, strict=True)):
                    self.error(path + ("profile", port), "each dimension must satisfy min <= opt <= max")
                    continue
                profile[port] = (tuple(bounds.min), tuple(bounds.opt), tuple(bounds.max))
        formats = self.formats(path, spec, onnx_path.name, {**inputs, **outputs})
        if spec.optimize:
            from ..surgery.snippets import optimize_problem

            problem = optimize_problem(onnx_path)
            if problem:
                self.error(path + ("optimize",), problem)
        self.precision_options(path, spec, onnx_path)
        return SnippetInfo(name, onnx_path, spec.precision, int(spec.workspace), profile, inputs, outputs, formats,
                           spec.precision_path, tuple(spec.keep_fp32), spec.optimize)
    def precision_options(self, path: YamlPath, spec: SnippetSpec, onnx_path: Path) -> None:
        if spec.precision == "fp32":
            for key in ("precision_path", "keep_fp32"):
                if key in spec.model_fields_set:
                    self.error(path + (key,), f"'{key}' applies to fp16/bf16 snippets (this one is fp32)", key=True)
            return
        if spec.keep_fp32 and spec.precision_path == "flags":
            self.error(path + ("keep_fp32",), "keep_fp32 needs the converted precision path (precision_path: "
                                              "converted or auto); builder flags choose precision per layer")
        if spec.keep_fp32:
            ops, nodes = onnx_op_types_and_nodes(onnx_path)
            for i, entry in enumerate(spec.keep_fp32):
                if entry not in ops and entry not in nodes:
                    self.error(path + ("keep_fp32", i), f"{onnx_path.name} has no op type or node named "
                                                        f"'{entry}'{did_you_mean(entry, sorted(ops | nodes))}")

    def formats(self, path: YamlPath, spec: SnippetSpec, onnx_name: str, ports: dict) -> dict[str, str]:
        result = {}
        for port, layout in spec.formats.items():
            where = path + ("formats", port)
            if port not in ports:
                self.error(where, f"{onnx_name} has no input or output '{port}' (its ports: {listing(ports)})"
                                  f"{did_you_mean(port, ports)}", key=True)
            elif layout == "linear":
                continue
            elif spec.precision != "fp16":
                self.error(where, f"'{layout}' is TensorRT's FP16 format; it needs precision: fp16 "
                                  f"(this snippet is {spec.precision})")
            elif len(ports[port].shape) != 4:
                self.error(where, f"'{layout}' is a layout of 4-D (NCHW) tensors; '{port}' has shape "
                                  f"{shapes.format_shape(ports[port].shape)}")
            elif ports[port].dtype not in ("float32", "float16"):
                self.error(where, f"'{layout}' stores floating-point tensors; '{port}' is {ports[port].dtype}")
            else:
                result[port] = layout
        return result

    def kernels(self) -> dict[str, KernelInfo]:
        result = {}
        for name, spec in self.spec.kernels.items():
            info = self.kernel(name, spec, self.kernel_dirs.get(name, self.base))
            if info is not None:
                result[name] = info
        return result

    def kernel(self, name: str, spec: KernelSpec, base: Path) -> KernelInfo | None:
        path = ("kernels", name)
        before = len(self.problems)
        source_path, source = None, spec.code
        if spec.source is not None:
            source_path = resolve(base / spec.source)
            if absent(source_path):
                self.error(path + ("source",), f"kernel source not found: {display_name(source_path)} "
                                               f"(paths are relative to {display_name(base)}/)")
                source = None
            else:
                try:
                    source = read_text(source_path)
                except FileReadError as exc:
                    self.error(path + ("source",), str(exc))
                    source = None
        if source is not None:
            self.kernel_entry(spec, source, path + (("source",) if spec.source is not None else ("code",)))
        ref_file, _, ref_func = spec.reference.rpartition(":")
        ref_path = resolve(base / ref_file)
        if absent(ref_path):
            self.error(path + ("reference",), f"reference file not found: {display_name(ref_path)}")
        else:
            try:
                load_reference(ref_path, ref_func)
            except ReferenceLoadError as exc:
                self.error(path + ("reference",), str(exc))
        self.kernel_symbols(spec, path)
        folders, options = self.kernel_includes(spec, base, path)
        if len(self.problems) > before and any(p.severity == "error" for p in self.problems[before:]):
            return None
        args = tuple(KernelArgInfo(a.name, a.kind, a.dtype, None if a.shape is None else tuple(a.shape), a.value)
                     for a in spec.args)
        include_dirs = includes.include_dirs(source_path.parent if source_path else base, folders)
        where = self.smap.locate(path + (("source",) if spec.source is not None else ("code",)))
        return KernelInfo(name, source or "", source_path, include_dirs, spec.entry, tuple(spec.template_args),
                          dict(spec.defines), tuple(options), args, spec.launch, ref_path, ref_func, where,
                          self.smap.locate(path + ("args",), key=True),
                          tuple(self.smap.locate(path + ("args", i)) for i in range(len(spec.args))),
                          self.smap.locate(path + ("reference",)))

    def kernel_includes(self, spec: KernelSpec, base: Path, path: YamlPath) -> tuple[list[Path], list[str]]:
        """-I folders from the options, resolved from the kernel description's folder (must exist)."""
        folders, options, where = includes.split_include_options(spec.options, base)
        for folder, index in zip(folders, where, strict=True):
            if not is_folder(folder):
                self.error(path + ("options", index), f"include folder not found: {display_name(folder)} "
                                                      f"(relative -I paths are resolved from {display_name(base)}/)")
        return folders, options

    def kernel_entry(self, spec: KernelSpec, source: str, where: YamlPath) -> None:
        """The source has code, and the entry point appears in it outside comments and strings."""
        code = _CODE_NOISE.sub(" ", source)
        if not code.strip():
            self.error(where, "the kernel source is empty (or only comments)")
        elif not re.search(rf"\b{re.escape(spec.entry)}\b", code):
            where = where[:-1] + ("entry",)
            in_comment = re.search(rf"\b{re.escape(spec.entry)}\b", source) is not None
            self.error(where, f"entry point '{spec.entry}' does not appear in the kernel source"
                              + (" (only in a comment or string)" if in_comment else ""))

    def kernel_symbols(self, spec: KernelSpec, path: YamlPath) -> None:
        """Every symbol in out shapes, scalar values and the grid must be bound by an 'in' pattern."""
        bound = set()
        for arg in spec.args:
            if arg.kind == "in" and arg.shape:
                bound |= {d for d in arg.shape if isinstance(d, str) and d.isidentifier()}
        for i, arg in enumerate(spec.args):
            exprs = list(arg.shape or []) if arg.kind == "out" else [arg.value] if isinstance(arg.value, str) else []
            for dim in exprs:
                free = shapes.symbols(dim) - bound
                if free:
                    self.error(path + ("args", i), f"'{dim}' uses {listing(sorted(free))}, which no 'in' "
                               f"argument's shape binds (bound symbols: {listing(sorted(bound))})")
        names = {a.name: a for a in spec.args}
        if spec.launch.threads is not None:
            arg = names.get(spec.launch.threads)
            if arg is None or arg.kind == "scalar":
                self.error(path + ("launch", "threads"), f"'{spec.launch.threads}' is not a tensor argument "
                           f"of this kernel (its tensor arguments: "
                           f"{listing(a.name for a in spec.args if a.kind != 'scalar')})")
        for dim in spec.launch.grid or []:
            free = shapes.symbols(dim) - bound
            if free:
                self.error(path + ("launch", "grid"), f"'{dim}' uses {listing(sorted(free))}, which no 'in' "
                           f"argument's shape binds (bound symbols: {listing(sorted(bound))})")

    # ---- steps ----------------------------------------------------------------------------------
    def block(self, steps, path: YamlPath, scope: Scope) -> tuple[Node, ...]:
        nodes = []
        for i, step in enumerate(steps):
            node = self.step(step, path + (i,), scope)
            if node is not None:
                nodes.append(node)
        return tuple(nodes)

    def step(self, step, path: YamlPath, scope: Scope) -> Node | None:
        if isinstance(step, SnippetStep):
            return self.snippet_step(step, path, scope)
        if isinstance(step, KernelStep):
            return self.kernel_step(step, path, scope)
        if isinstance(step, IfStep):
            return self.if_step(step, path, scope)
        if isinstance(step, SwitchStep):
            return self.switch_step(step, path, scope)
        return self.while_step(step, path, scope)

    def name_step(self, explicit: str | None, default: str, path: YamlPath) -> tuple[int, str]:
        if explicit is not None and explicit in self.step_names:
            self.error(path + ("name",), f"step name '{explicit}' is used twice (step names must be unique)")
        name = explicit or default
        k = 2
        while name in self.step_names:
            name, k = f"{default}_{k}", k + 1
        self.step_names.add(name)
        self.next_id += 1
        return self.next_id - 1, name

    def use(self, name: str, path: YamlPath, scope: Scope, *, key: bool = False) -> TensorInfo | None:
        if name in scope:
            self.used.add(name)
            return scope[name]
        if name in self.retired:
            self.error(path, f"tensor '{name}' is not visible here: {self.retired[name]}", key=key)
        else:
            self.error(path, f"tensor '{name}' is not defined before this step (defined tensors: "
                             f"{listing(scope)}){did_you_mean(name, scope)}", key=key)
        return None

    def use_device(self, name: str, path: YamlPath, scope: Scope, *, key: bool = False) -> TensorInfo | None:
        info = self.use(name, path, scope, key=key)
        if info is not None and info.origin == "host":
            self.error(path, f"'{name}' is a host input: it can feed conditions and scalar arguments, "
                             f"not tensor ports (declare it without 'host: true' to make it a device tensor)")
            return None
        return info

    def define(self, name: str, dtype: str, shape, path: YamlPath, scope: Scope, layout: str = "linear") -> None:
        if name in scope:
            self.error(path, f"tensor '{name}' is already defined at {self.where(scope[name].path)} "
                             f"(each tensor is defined once; choose another name)")
            return
        if name in self.retired:
            self.error(path, f"tensor '{name}' is already defined ({self.retired[name]}); choose another name")
            return
        info = TensorInfo(name, dtype, tuple(shape), "step", path, layout)
        scope[name] = info
        self.tensors.setdefault(name, info)

    def unknown_step(self, reads, writes, path: YamlPath, scope: Scope) -> None:
        """A step whose snippet or kernel failed to load: define its outputs as unknown, so that the
        steps after it are still checked without a cascade of 'not defined' errors."""
        for name in reads:
            self.use(name, path, scope)
        for name in writes:
            if name not in scope:
                scope[name] = TensorInfo(name, UNKNOWN, (), "step", path)
                self.used.add(name)

    def snippet_step(self, step: SnippetStep, path: YamlPath, scope: Scope) -> SnippetCall | None:
        step_id, name = self.name_step(step.name, step.snippet, path)
        self.called.add(step.snippet)
        info = self.snippet_infos.get(step.snippet)
        if info is None:
            if step.snippet not in self.failed_snippets:
                self.error(path + ("snippet",), f"unknown snippet '{step.snippet}' (defined snippets: "
                           f"{listing(self.spec.snippets)}){did_you_mean(step.snippet, self.spec.snippets)}")
            self.unknown_step(step.inputs.values(), step.outputs.values(), path, scope)
            return None
        onnx_name = info.onnx_path.name
        for port in step.inputs:
            if port not in info.inputs:
                self.error(path + ("inputs", port), f"{onnx_name} has no input '{port}' (its inputs: "
                           f"{listing(info.inputs)}){did_you_mean(port, info.inputs)}", key=True)
        for port in step.outputs:
            if port not in info.outputs:
                self.error(path + ("outputs", port), f"{onnx_name} has no output '{port}' (its outputs: "
                           f"{listing(info.outputs)}){did_you_mean(port, info.outputs)}", key=True)
        env: dict[str, shapes.Dim] = {}
        inputs = {}
        for port, spec in info.inputs.items():
            tensor = step.inputs.get(port, port)
            where = path + ("inputs", port) if port in step.inputs else path + ("snippet",)
            if port not in step.inputs and tensor not in scope:
                self.error(where, f"input '{port}' of {onnx_name} is not bound (add inputs: {{{port}: <tensor>}})")
                continue
            t = self.use_device(tensor, where, scope)
            inputs[port] = tensor
            if t is None or t.dtype == UNKNOWN:
                continue
            dtype, layout = info.port_type(port)
            if (t.dtype, t.layout) != (dtype, layout):
                hint = "" if t.layout == layout else (
                    f" (a tensor has one layout: give '{port}' the same 'formats' entry as the port that "
                    f"writes '{tensor}', or neither)")
                expected = dtype if layout == "linear" else f"{dtype} {layout}"
                self.error(where, f"tensor '{tensor}' is {t.kind} but input '{port}' of {onnx_name} "
                                  f"expects {expected}{hint}")
            mismatch = (shapes.unify(spec.shape, t.shape, env) or self.fixed_dims(spec.shape, t.shape)
                        or self.tied_dims(spec.shape, t.shape, env))
            if mismatch:
                self.error(where, f"tensor '{tensor}' has shape {shapes.format_shape(t.shape)}; input "
                                  f"'{port}' of {onnx_name}: {mismatch}")
        outputs = {}
        for port, spec in info.outputs.items():
            tensor = step.outputs.get(port, port)
            where = path + ("outputs", port) if port in step.outputs else path + ("snippet",)
            shape = tuple(self.output_dim(d, env, f"{name}_{port}_{axis}") for axis, d in enumerate(spec.shape))
            dtype, layout = info.port_type(port)
            self.define(tensor, dtype, shape, where, scope, layout)
            outputs[port] = tensor
        return SnippetCall(step_id, name, path, step.snippet, inputs, outputs)

    def fixed_dims(self, pattern, actual) -> str | None:
        """A fixed size in ``pattern`` (an ONNX model exported with batch 1) facing a symbolic size that the
        pipeline's dims let take other values."""
        bounds = {name: (b.min, b.max) for name, b in self.spec.dims.items()}
        for axis, (want, got) in enumerate(zip(pattern, actual, strict=False)):
            if not isinstance(want, int) or isinstance(got, int):
                continue
            span = shapes.value_range(got, bounds)
            if span is not None and span != (want, want):
                free = sorted(shapes.symbols(got))
                dims = ", ".join(f"dims.{n}: {bounds[n][0]}..{bounds[n][1]}" for n in free)
                return (f"dimension {axis} is fixed at {want}, but '{got}' ranges over {_span(span)} ({dims}); "
                        f"export the model with a dynamic dimension there, or narrow the dims")
        return None

    def tied_dims(self, pattern, actual, env: dict) -> str | None:
        """A model dimension that repeats a symbol bound on an earlier axis (``[N, N]``) facing a fixed size
        that the symbol's value there (a pipeline dimension) does not always have."""
        bounds = {name: (b.min, b.max) for name, b in self.spec.dims.items()}
        for axis, (want, got) in enumerate(zip(pattern, actual, strict=False)):
            expected = shapes.evaluate(want, env)
            if (isinstance(want, int) or not isinstance(got, int) or isinstance(expected, int)
                    or shapes.symbols(want) - set(env)):
                continue
            span = shapes.value_range(expected, bounds)
            if span is not None and span != (got, got):
                tie = next((f"dimension {j} ('{want}')" for j, d in enumerate(pattern[:axis]) if d == want),
                           f"'{want}'")
                return (f"dimension {axis} is {got}, but the model ties it to {tie}, here '{expected}', which "
                        f"ranges over {_span(span)}")
        return None

    @staticmethod
    def output_dim(dim: shapes.Dim, env: dict, fresh: str) -> shapes.Dim:
        """An output dimension in terms of the step's bound symbols; data-dependent ones get a fresh name."""
        if isinstance(dim, str) and shapes.symbols(dim) - set(env):
            return re.sub(r"\W", "_", fresh)
        return shapes.evaluate(dim, env)

    def kernel_step(self, step: KernelStep, path: YamlPath, scope: Scope) -> KernelCall | None:
        step_id, name = self.name_step(step.name, step.kernel, path)
        self.called.add(step.kernel)
        info = self.kernel_infos.get(step.kernel)
        if info is None:
            if step.kernel not in self.failed_kernels:
                self.error(path + ("kernel",), f"unknown kernel '{step.kernel}' (defined kernels: "
                           f"{listing(self.spec.kernels)}){did_you_mean(step.kernel, self.spec.kernels)}")
            bound = [b for b in step.args.values() if isinstance(b, str)]
            self.unknown_step([b for b in bound if b in scope], [b for b in bound if b not in scope], path, scope)
            return None
        arg_names = [a.name for a in info.args]
        for arg in step.args:
            if arg not in arg_names:
                self.error(path + ("args", arg), f"kernel '{step.kernel}' has no argument '{arg}' (its "
                           f"arguments: {listing(arg_names)}){did_you_mean(arg, arg_names)}", key=True)
        env: dict[str, shapes.Dim] = {}
        tensors: dict[str, str] = {}
        scalars: dict[str, ScalarArg] = {}
        for arg in info.args:
            if arg.kind == "in":
                self.kernel_input(step, arg, path, scope, env, tensors)
            elif arg.kind == "scalar":
                scalar = self.kernel_scalar(step, arg, path, scope)
                if scalar is not None:
                    scalars[arg.name] = scalar
        for arg in info.args:
            if arg.kind == "out":
                self.kernel_output(step, arg, path, scope, env, tensors)
        ins = tuple(a.name for a in info.args if a.kind == "in")
        outs = tuple(a.name for a in info.args if a.kind == "out")
        return KernelCall(step_id, name, path, step.kernel, tensors, scalars, ins, outs)

    def kernel_input(self, step, arg: KernelArgInfo, path, scope, env, tensors) -> None:
        where = path + ("args", arg.name)
        bound = step.args.get(arg.name)
        if bound is None:
            self.error(path + ("args",), f"tensor argument '{arg.name}' of kernel '{step.kernel}' is not bound")
            return
        if not isinstance(bound, str):
            self.error(where, f"argument '{arg.name}' is a tensor; bind it to a tensor name, not {bound!r}")
            return
        t = self.use_device(bound, where, scope)
        tensors[arg.name] = bound
        if t is None or t.dtype == UNKNOWN:
            return
        if t.layout != "linear":
            self.error(where, f"tensor '{bound}' is stored as {t.layout} (a TensorRT format, chosen by the "
                              f"'formats' of the snippet that writes it at {self.where(t.path)}); kernels "
                              f"read linear tensors: drop that 'formats' entry")
            return
        if t.dtype != arg.dtype:
            self.error(where, f"tensor '{bound}' is {t.dtype} but argument '{arg.name}' of kernel "
                              f"'{step.kernel}' expects {arg.dtype}")
        if arg.shape is not None:
            mismatch = shapes.unify(arg.shape, t.shape, env) or self.fixed_dims(arg.shape, t.shape)
            if mismatch:
                self.error(where, f"tensor '{bound}' has shape {shapes.format_shape(t.shape)}; argument "
                                  f"'{arg.name}' of kernel '{step.kernel}': {mismatch}")

    def kernel_scalar(self, step, arg: KernelArgInfo, path, scope) -> ScalarArg | None:
        where = path + ("args", arg.name)
        bound = step.args.get(arg.name)
        if arg.value is not None:
            if bound is not None:
                self.error(where, f"scalar '{arg.name}' is computed by the kernel description "
                                  f"(value: {arg.value}); do not bind it")
            if isinstance(arg.value, str | int) and not isinstance(arg.value, bool):
                return ScalarArg(expression=arg.value)
            return ScalarArg(literal=arg.value)
        if bound is None:
            self.error(path + ("args",), f"scalar argument '{arg.name}' of kernel '{step.kernel}' is not bound")
            return None
        is_int = arg.dtype not in ("float32", "float16")
        if isinstance(bound, str):
            t = self.use(bound, where, scope)
            if t is None:
                return None
            if t.origin != "host":
                self.error(where, f"scalar argument '{arg.name}' must be bound to a number or a host input; "
                                  f"'{bound}' is a device tensor")
                return None
            if is_int and t.dtype in ("float32", "float16"):
                self.error(where, f"scalar argument '{arg.name}' is {arg.dtype} but host input '{bound}' "
                                  f"is {t.dtype}")
            return ScalarArg(host_input=bound)
        if is_int and not isinstance(bound, int):
            self.error(where, f"scalar argument '{arg.name}' is {arg.dtype}; {bound!r} is not an integer")
            return None
        outside = _outside_range(bound, dtypes.to_numpy(arg.dtype))
        if outside:
            text = repr(bound) if len(repr(bound)) <= 40 else f"{repr(bound)[:20]}... ({len(repr(bound))} digits)"
            self.error(where, f"scalar argument '{arg.name}' is {arg.dtype}; {text} is {outside}")
            return None
        return ScalarArg(literal=bound)

    def kernel_output(self, step, arg: KernelArgInfo, path, scope, env, tensors) -> None:
        bound = step.args.get(arg.name)
        if bound is None:
            self.error(path + ("args",), f"output argument '{arg.name}' of kernel '{step.kernel}' is not bound "
                                         f"(bind it to the name of the tensor it defines)")
            return
        where = path + ("args", arg.name)
        if not isinstance(bound, str):
            self.error(where, f"argument '{arg.name}' is an output tensor; bind it to a new tensor name")
            return
        shape = tuple(shapes.evaluate(d, env) for d in arg.shape or ())
        self.define(bound, arg.dtype, shape, where, scope)
        tensors[arg.name] = bound

    # ---- control flow -------------------------------------------------------------------------
    def condition(self, text: str, path: YamlPath, scope: Scope) -> Condition | None:
        try:
            cond = parse_condition(text)
        except ValueError as exc:
            self.error(path, str(exc))
            return None
        ok = self.scalar_subject(cond.subject, path, scope)
        if isinstance(cond.rhs, str):
            rhs = self.use(cond.rhs, path, scope)
            if rhs is not None and rhs.origin != "host":
                self.error(path, f"'{cond.rhs}' must be a number or a host input to compare with")
                ok = False
        return cond if ok else None

    def scalar_subject(self, name: str, path: YamlPath, scope: Scope) -> bool:
        t = self.use(name, path, scope)
        if t is None:
            return False
        if t.dtype == UNKNOWN:
            return True
        if t.origin != "host" and shapes.num_elements(t.shape) != 1:
            self.error(path, f"tensor '{name}' has shape {shapes.format_shape(t.shape)}; a condition needs a "
                             f"host input or a tensor of one element (shape [] or [1])")
            return False
        return True

    def branch(self, steps, path: YamlPath, scope: Scope) -> tuple[tuple[Node, ...], Scope]:
        inner = dict(scope)
        return self.block(steps, path, inner), inner

    def merge(self, branches: list[tuple[str, Scope]], path: YamlPath, scope: Scope) -> tuple[str, ...]:
        """Tensors defined by every branch become visible after the block; the rest stay local."""
        news = [(label, {n: t for n, t in inner.items() if n not in scope}) for label, inner in branches]
        common = [n for n in news[0][1] if all(n in d for _, d in news[1:])] if news else []
        for name in common:
            first_label, first = news[0][0], news[0][1][name]
            for label, defs in news[1:]:
                other = defs[name]
                if UNKNOWN in (first.dtype, other.dtype):
                    continue  # defined by a step that failed: its error is reported already
                if other.kind != first.kind:
                    self.error(path, f"tensor '{name}' is {first.kind} in {first_label} but {other.kind} in "
                                     f"{label} (branches must define their outputs alike)")
                elif _never_agree(first.shape, other.shape):
                    self.error(path, f"tensor '{name}' has shape {shapes.format_shape(first.shape)} in "
                                     f"{first_label} but {shapes.format_shape(other.shape)} in {label}")
        for label, defs in news:
            for name in defs:
                if name not in common:
                    missing = [lb for lb, d in news if name not in d]
                    self.retired.setdefault(name, f"it is defined in {label} of the block at "
                                            f"{self.where(path)} but not in {', '.join(missing) or 'the skipped case'}")
        for name in common:
            scope[name] = news[0][1][name]
        return tuple(common)

    def if_step(self, step: IfStep, path: YamlPath, scope: Scope) -> IfBlock | None:
        step_id, name = self.name_step(step.name, "if", path)
        cond = self.condition(step.if_, path + ("if",), scope)
        then, then_scope = self.branch(step.then, path + ("then",), scope)
        else_, else_scope = self.branch(step.else_, path + ("else",), scope)
        outputs = self.merge([("'then'", then_scope), ("'else'", else_scope)], path, scope)
        if cond is None:
            return None
        return IfBlock(step_id, name, path, cond, then, else_, outputs)

    def switch_step(self, step: SwitchStep, path: YamlPath, scope: Scope) -> SwitchBlock | None:
        step_id, name = self.name_step(step.name, "switch", path)
        ok = self.scalar_subject(step.switch, path + ("switch",), scope)
        subject = scope.get(step.switch)
        if ok and subject is not None and subject.dtype not in ("int32", "int64", "int8", "uint8", "bool"):
            self.error(path + ("switch",), f"'{step.switch}' is {subject.dtype}; a switch needs an integer value")
            ok = False
        cases, branches = [], []
        for key, steps in step.cases.items():
            body, inner = self.branch(steps, path + ("cases", key), scope)
            cases.append((key, body))
            branches.append((f"case {key}", inner))
        default = None
        if step.default is not None:
            default, inner = self.branch(step.default, path + ("default",), scope)
            branches.append(("default", inner))
        outputs = self.merge(branches, path, scope)
        if not ok:
            return None
        return SwitchBlock(step_id, name, path, step.switch, tuple(cases), default, outputs)

    def while_step(self, step: WhileStep, path: YamlPath, scope: Scope) -> WhileBlock | None:
        step_id, name = self.name_step(step.name, "while", path)
        cond = self.condition(step.while_, path + ("while",), scope)
        body, inner = self.branch(step.body, path + ("body",), scope)
        carry = []
        for state, nxt in step.carry.items():
            where = path + ("carry", state)
            s = self.use_device(state, where, scope, key=True)
            n = inner.get(nxt) if nxt not in scope else None
            if n is None:
                self.error(where, f"'{nxt}' must be a tensor defined inside the loop body")
            elif s is not None:
                self.used.add(nxt)
                if UNKNOWN not in (s.dtype, n.dtype) and (s.kind != n.kind or _never_agree(s.shape, n.shape)):
                    self.error(where, f"'{nxt}' ({n.kind} {shapes.format_shape(n.shape)}) cannot replace "
                                      f"'{state}' ({s.kind} {shapes.format_shape(s.shape)}): dtype and shape "
                                      f"must match")
                carry.append((state, nxt))
        if cond is not None and cond.subject not in step.carry and scope.get(cond.subject, None) is not None \
                and scope[cond.subject].origin != "host":
            self.warn(path + ("while",), f"the loop condition reads '{cond.subject}', which the body never "
                                         f"updates (add it to 'carry')")
        for n in inner:
            if n not in scope:
                self.retired.setdefault(n, f"it is local to the loop body at {self.where(path)} "
                                           f"(pass values out with 'carry')")
        if cond is None:
            return None
        return WhileBlock(step_id, name, path, cond, step.max_iterations, body, tuple(carry))

    # ---- outputs and warnings -----------------------------------------------------------------
    def outputs(self, scope: Scope) -> tuple[str, ...]:
        seen = set()
        for i, name in enumerate(self.spec.outputs):
            if name in seen:
                self.error(("outputs", i), f"output '{name}' is listed twice")
            seen.add(name)
            t = self.use(name, ("outputs", i), scope)
            if t is not None and t.origin == "host":
                self.error(("outputs", i), f"'{name}' is a host input and cannot be an output")
            elif t is not None and t.layout != "linear":
                self.error(("outputs", i), f"output '{name}' is stored as {t.layout} (a TensorRT format, chosen "
                                           f"at {self.where(t.path)}); outputs are linear: drop that 'formats' "
                                           f"entry")
        return tuple(self.spec.outputs)

    def unused(self, inputs, constants) -> None:
        for name, t in self.tensors.items():
            if name in self.used or name in self.spec.outputs:
                continue
            kind = {"input": "input", "host": "input", "constant": "constant"}.get(t.origin, "tensor")
            what = "is never used" if t.origin != "step" else "is computed but never used"
            self.warn(t.path, f"{kind} '{name}' {what}")

    def duplicate_steps(self, body: tuple[Node, ...]) -> tuple[Node, ...]:
        """Warn where a step repeats an earlier one (see surgery/steps.py); with ``optimize: true``, the
        body with repeats computed once (their tensors renamed to the first step's)."""
        from ..surgery.steps import deduplicate, find_duplicates

        for first, repeat in find_duplicates(body):
            what, target = ("snippet", repeat.snippet) if isinstance(repeat, SnippetCall) else ("kernel", repeat.kernel)
            self.warn(repeat.path, f"step '{repeat.name}' repeats step '{first.name}' at {self.where(first.path)}: "
                                   f"the same {what} '{target}' on the same tensors and arguments; use its "
                                   f"outputs ({', '.join(first.writes)}) instead of computing them twice"
                                   + (" (optimize: true computes it once)" if self.spec.optimize else ""))
        if not self.spec.optimize:
            return body
        body, renamed = deduplicate(body, tuple(self.spec.outputs))
        for tensor, first in renamed.items():
            self.tensors.pop(tensor, None)
            if tensor in self.used:
                self.used.add(first)  # its readers now read the first step's tensor
        return body

    def unused_definitions(self, snippets, kernels) -> None:
        for name in snippets:
            if name not in self.called:
                self.warn(("snippets", name), f"snippet '{name}' is never run")
        for name in kernels:
            if name not in self.called:
                self.warn(("kernels", name), f"kernel '{name}' is never run")
        for name in self.spec.dims:
            if not any(name in shapes.symbols(d) for t in self.spec.inputs.values() for d in t.shape):
                self.warn(("dims", name), f"dimension '{name}' is not used by any input shape")


def _span(span: tuple[float, float]) -> str:
    return "..".join(str(int(v)) if np.isfinite(v) else str(v) for v in span)


def _never_agree(a, b) -> bool:
    """Whether two shapes differ whatever their symbols' values: another rank, two different numbers on
    one axis, or a symbol bound by one axis to a number that another axis contradicts ([N, N] vs [2, 3]).
    ``unify`` binds the symbols of its first shape only, so both orders are asked."""
    return shapes.unify(a, b, {}) is not None or shapes.unify(b, a, {}) is not None


def _outside_range(value: int | float, dtype: np.dtype) -> str | None:
    """Why a literal kernel scalar does not fit its dtype (it would wrap, or round to infinity), or None.
    NaN and infinities written as such (.nan, .inf) are taken as meant."""
    if dtype.kind in "iu":
        low, high = int(np.iinfo(dtype).min), int(np.iinfo(dtype).max)
        return None if low <= value <= high else f"outside its range ({low} to {high})"
    largest = float(np.finfo(dtype).max) if dtype.kind == "f" else 0.0
    try:
        too_big = dtype.kind == "f" and largest < abs(float(value)) < float("inf")
    except OverflowError:  # an integer beyond any float
        too_big = True
    return f"beyond its range (largest {largest:.6g})" if too_big else None
