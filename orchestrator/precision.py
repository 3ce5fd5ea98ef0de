"""Reduced precision as part of the model: an fp32 ONNX snippet converted to fp16 or bf16.

TensorRT 11 builds only strongly typed networks (its FP16/BF16 builder flags are gone), so a snippet that
computes in fp16 must say so in its ONNX graph. The conversion is onnxconverter-common's
``convert_float_to_float16`` (what Polygraphy's ``convert --fp-to-fp16`` runs); around it we only fix the
types of the snippet's I/O to what the pipeline sees: float32 ports stay float32 (a Cast at the edge), and
ports kept in the ``hwc8`` boundary format become float16, the type TensorRT's HWC8 format stores. bf16
is the fp16 graph with every float16 retyped to bfloat16 (weights re-rounded from their fp32 values).
Converted models are cached on disk like engines, keyed by the ONNX bytes, the settings and the
converter's version. Pure Python: no CUDA, no TensorRT.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path

import numpy as np

from . import cache
from .errors import CompileError

FORMAT_VERSION = 3  # bump when what we do around the converter changes: converted models are re-made
FP16_MAX = 65504.0


def converter_version() -> str:
    return f"onnxconverter-common {package_version('onnxconverter-common')}; orchestrator {FORMAT_VERSION}"


@dataclass(frozen=True)
class Conversion:
    """What to convert a snippet to: ``fp16`` or ``bf16``; ``keep_fp32``: ONNX op types or node names left
    in float32; ``fp16_ports``: I/O ports stored as float16 (hwc8 boundaries), every other float32 port
    keeps float32."""

    precision: str
    keep_fp32: tuple[str, ...] = ()
    fp16_ports: tuple[str, ...] = ()

    def settings(self) -> dict[str, object]:
        return {"precision": self.precision, "keep_fp32": sorted(self.keep_fp32),
                "fp16_ports": sorted(self.fp16_ports), "converter": converter_version()}


def convert(onnx_bytes: bytes, conversion: Conversion, *, name: str = "model") -> bytes:
    """The snippet's ONNX converted to ``conversion.precision`` (see the module docstring)."""
    import onnx
    from onnxconverter_common import float16

    if conversion.precision not in ("fp16", "bf16"):
        raise CompileError(f"snippet '{name}': cannot convert to '{conversion.precision}' (fp16 or bf16)")
    original = onnx.load_from_string(onnx_bytes)
    model = onnx.load_from_string(onnx_bytes)
    _name_nodes(model.graph)  # the converter tells nodes apart by name (exporters name them; not all do)
    op_types = {node.op_type for node in original.graph.node}
    keep_ops = [k for k in conversion.keep_fp32 if k in op_types]
    keep_nodes = [k for k in conversion.keep_fp32 if k not in op_types]
    block_ops = {*float16.DEFAULT_OP_BLOCK_LIST, *keep_ops}
    _separate_kept_outputs(model.graph, lambda n: n.op_type in block_ops or n.name in keep_nodes)
    _read_inputs_outside_subgraphs(model.graph)
    own_casts = {n.name for n in model.graph.node if n.op_type == "Cast"}
    try:
        with warnings.catch_warnings():  # one warning per weight clipped to the fp16 range: noise
            warnings.simplefilter("ignore")
            model = float16.convert_float_to_float16(model, keep_io_types=True, max_finite_val=FP16_MAX,
                                                     op_block_list=sorted(block_ops), node_block_list=keep_nodes)
    except Exception as exc:  # the converter raises ValueError, KeyError, ... on graphs it cannot handle
        raise CompileError(f"snippet '{name}': fp16 conversion failed: {type(exc).__name__}: {exc}") from None
    _cast_to_fp16(model.graph, own_casts)
    _read_fp16_outputs_inside(model.graph, lambda n: n.op_type in block_ops or n.name in keep_nodes)
    _store_ports_as_fp16(model.graph, conversion.fp16_ports)
    if conversion.precision == "bf16":
        _retype_to_bf16(model.graph, {t.name: t for t in original.graph.initializer})
    return model.SerializeToString()


def converted(onnx_bytes: bytes, conversion: Conversion, root: Path, *, name: str) -> bytes:
    """``convert`` through the on-disk cache under ``root / 'converted'``."""
    key = cache.digest(onnx_bytes, conversion.settings())
    path = root / "converted" / f"{name}-{key[:32]}.onnx"
    data = cache.read(path)
    if data is None:
        data = convert(onnx_bytes, conversion, name=name)
        cache.write_atomic(path, data)
    return data


def _name_nodes(graph) -> None:
    taken = {node.name for node in graph.node}
    for i, node in enumerate(graph.node):
        if not node.name:
            node.name = next(n for n in (f"{node.op_type}_{i}", *(f"{node.op_type}_{i}_{j}" for j in range(1, 99)))
                             if n not in taken)
            taken.add(node.name)


def _separate_kept_outputs(graph, keeps_fp32) -> None:
    """A graph output written by a node kept in float32 trips the converter's cast clean-up ("the
    downstream node of the second cast node should be graph output"): such an output gets an Identity of
    its own, which the converter handles like any fp16 node."""
    from onnx import helper

    outputs = {o.name for o in graph.output}
    for node in list(graph.node):
        for i, name in enumerate(node.output):
            if name in outputs and keeps_fp32(node):
                inner = f"{name}__kept_fp32"
                node.output[i] = inner
                for reader in graph.node:
                    reader.input[:] = [inner if x == name else x for x in reader.input]
                graph.node.append(helper.make_node("Identity", [inner], [name], name=f"{name}__output"))


def _subgraphs(graph) -> Iterable:
    """Every If/Loop/Scan body under ``graph``, at any depth."""
    for node in graph.node:
        for attr in node.attribute:
            for body in [attr.g] if attr.HasField("g") else list(attr.graphs):
                yield body
                yield from _subgraphs(body)


def _read_inputs_outside_subgraphs(graph) -> None:
    """A float32 graph input that only an If/Loop/Scan body reads (an outer-scope tensor) gets no cast to
    float16 from the converter (it casts where main-graph nodes read an input), so the body mixed float32
    and float16: such bodies read the input through an Identity in the main graph, which the converter
    types float16 with a cast before it."""
    from onnx import TensorProto, helper

    bodies = list(_subgraphs(graph))
    for value in graph.input:
        if value.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        readers = [n for body in bodies for n in body.node if value.name in n.input]
        if not readers:
            continue
        inner = f"{value.name}__outer"
        for node in readers:
            node.input[:] = [inner if i == value.name else i for i in node.input]
        graph.node.insert(0, helper.make_node("Identity", [value.name], [inner], name=f"{value.name}__to_subgraphs"))


def _cast_to_fp16(graph, own_casts: set[str]) -> None:
    """The converter types a model's own ``Cast(to=float)`` outputs float16 (an exporter's int64 -> float of
    a position index or a mask) but leaves ``to`` at float, which onnxruntime and TensorRT refuse: such a
    Cast (one of ``own_casts``, by node name; not the converter's casts) casts to float16."""
    from onnx import TensorProto, helper

    fp16 = {v.name for v in graph.value_info if v.type.tensor_type.elem_type == TensorProto.FLOAT16}
    for node in graph.node:
        if node.op_type != "Cast" or node.name not in own_casts or node.output[0] not in fp16:
            continue
        for i, attr in enumerate(node.attribute):
            if attr.name == "to" and attr.i == TensorProto.FLOAT:
                node.attribute[i].CopyFrom(helper.make_attribute("to", TensorProto.FLOAT16))


def _read_fp16_outputs_inside(graph, keeps_fp32) -> None:
    """A graph output that later nodes also read is cast to float32 for the output by the converter, but
    its readers still name it: let the float16 readers read the float16 value before the cast."""

    for output in graph.output:
        cast = next((n for n in graph.node if output.name in n.output), None)
        if cast is None or cast.name != cast.input[0] or not cast.name.endswith(f"_cast_to_{output.name}"):
            continue  # not the converter's cast (it names the cast and its input alike)
        for node in graph.node:
            if node is not cast and output.name in node.input and not keeps_fp32(node):
                node.input[:] = [cast.input[0] if i == output.name else i for i in node.input]


def _store_ports_as_fp16(graph, ports: Iterable[str]) -> None:
    """Make the named float32 graph inputs/outputs float16, casting where a float32 node meets them."""
    from onnx import TensorProto, helper

    ports = set(ports)
    for value in graph.input:
        if value.name in ports and value.type.tensor_type.elem_type == TensorProto.FLOAT:
            value.type.tensor_type.elem_type = TensorProto.FLOAT16
            _cast_float32_readers(graph, value.name)
    for value in graph.output:
        if value.name in ports and value.type.tensor_type.elem_type == TensorProto.FLOAT:
            producer = next((n for n in graph.node if value.name in n.output), None)
            value.type.tensor_type.elem_type = TensorProto.FLOAT16
            if producer is None:  # an input passed straight through, made float16 above
                continue
            if producer.op_type == "Cast":  # the converter's cast back to float32: cast to float16 instead
                del producer.attribute[:]
                producer.attribute.append(helper.make_attribute("to", TensorProto.FLOAT16))
            else:  # a node kept in float32 writes the output
                inner = f"{value.name}__fp32"
                producer.output[:] = [inner if o == value.name else o for o in producer.output]
                for node in graph.node:
                    node.input[:] = [inner if i == value.name else i for i in node.input]
                graph.node.append(helper.make_node("Cast", [inner], [value.name], to=TensorProto.FLOAT16,
                                                   name=f"{value.name}__to_fp16"))


def _cast_float32_readers(graph, name: str) -> None:
    """Readers of the (now float16) input ``name``: the converter's casts to float16 become no-ops and
    stay; any other reader computes in float32 and gets the input through one Cast."""
    from onnx import TensorProto, helper

    def is_fp16_cast(node) -> bool:
        to = [helper.get_attribute_value(a) for a in node.attribute if a.name == "to"]
        return node.op_type == "Cast" and to == [TensorProto.FLOAT16]

    readers = [n for n in graph.node if name in n.input and not is_fp16_cast(n)]
    if not readers:
        return
    inner = f"{name}__fp32"
    for node in readers:
        node.input[:] = [inner if i == name else i for i in node.input]
    graph.node.insert(0, helper.make_node("Cast", [name], [inner], to=TensorProto.FLOAT, name=f"{name}__to_fp32"))


def _retype_to_bf16(graph, originals: dict) -> None:
    """Every float16 in the (converted) graph becomes bfloat16."""
    from onnx import TensorProto, helper, numpy_helper

    fp16, bf16 = TensorProto.FLOAT16, TensorProto.BFLOAT16
    for tensor in graph.initializer:
        if tensor.data_type == fp16:
            source = originals.get(tensor.name, tensor)
            tensor.CopyFrom(_bf16_tensor(numpy_helper.to_array(source), tensor.name))
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.type.tensor_type.elem_type == fp16:
            value.type.tensor_type.elem_type = bf16
    for node in graph.node:
        for i, attr in enumerate(node.attribute):
            if node.op_type == "Cast" and attr.name == "to" and attr.i == fp16:
                node.attribute[i].CopyFrom(helper.make_attribute("to", bf16))
            elif attr.type == attr.TENSOR and attr.t.data_type == fp16:
                attr.t.CopyFrom(_bf16_tensor(numpy_helper.to_array(attr.t), attr.t.name))


def _bf16_tensor(array: np.ndarray, name: str):
    """A BFLOAT16 TensorProto of ``array``, rounded to nearest even."""
    from onnx import TensorProto, helper

    bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    return helper.make_tensor(name, TensorProto.BFLOAT16, array.shape, rounded.tobytes(), raw=True)
