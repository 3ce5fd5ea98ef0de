"""Check the inputs handed to ``Orchestrator.run`` against the pipeline's declared inputs.

Returns the arrays and the values of the symbolic dimensions (``N``, ``H``...), which shape rules and
launch rules use. Errors are one line and name the input, what was expected and what was given.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import dtypes
from .errors import InputError
from .pipeline import shapes
from .pipeline.constants import native_order
from .pipeline.ir import Pipeline
from .pipeline.source import FileReadError, display_name, open_regular

MAX_INPUT_BYTES = 16 << 30
# the values a host scalar of each dtype may take (computed once: check_inputs runs on every run)
_RANGES: dict[str, tuple[float, float]] = {
    name: ((0, 1) if name == "bool" else
           (int(np.iinfo(dtypes.to_numpy(name)).min), int(np.iinfo(dtypes.to_numpy(name)).max))
           if dtypes.to_numpy(name).kind in "iu" else
           (-float(np.finfo(dtypes.to_numpy(name)).max), float(np.finfo(dtypes.to_numpy(name)).max)))
    for name in dtypes.DTYPES}


def load_npz(path: str | Path, limits: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file (one per input), with one-line errors for everything else: a FIFO or
    device, an ``.npy`` file, a truncated or corrupt archive, pickled objects, members that are not arrays.
    ``limits`` caps the elements of named arrays (see ``max_elements``): every member's header is read and
    checked before its data is, so a header claiming a huge shape allocates nothing."""
    name = display_name(Path(path))
    try:
        file = open_regular(Path(path), MAX_INPUT_BYTES)
    except FileReadError as exc:
        raise InputError(f"inputs: {exc}") from None
    with file:
        magic = file.read(6)
        if magic == b"\x93NUMPY":
            raise InputError(f"{name} is an .npy file (one array); inputs are an .npz with one array per input "
                             f"name: numpy.savez('inputs.npz', image=array, ...)")
        if not magic.startswith(b"PK"):
            raise InputError(f"{name} is not an .npz file (numpy.savez('inputs.npz', name=array, ...) makes one)")
        file.seek(0)
        try:
            with zipfile.ZipFile(file) as archive:
                return {info.filename.removesuffix(".npy"): _npz_member(name, archive, info, limits or {})
                        for info in archive.infolist()}
        except InputError:
            raise
        except Exception as exc:  # BadZipFile, EOFError, zlib.error, ValueError: the file's fault
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"{name}: cannot read the .npz archive ({detail}); is it truncated?") from None


def _npz_member(name: str, archive: zipfile.ZipFile, info: zipfile.ZipInfo, limits: Mapping[str, int]) -> np.ndarray:
    """One array of an .npz archive, its header checked before its data is read."""
    key = info.filename.removesuffix(".npy")
    fmt = np.lib.format
    with archive.open(info) as member:
        if member.read(len(fmt.MAGIC_PREFIX)) != fmt.MAGIC_PREFIX:
            raise InputError(f"{name}: member '{_describe_key(info.filename)}' is not a .npy array "
                             f"(numpy.savez writes one per input)")
        major = member.read(2)[0]
        shape, _, dtype = (fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0)(member)
    if dtype.hasobject:
        raise InputError(f"{name}: '{_describe_key(key)}' is an array of Python objects, which is not loaded "
                         f"(unpickling runs code); save numeric arrays")
    count, what = math.prod(shape), _describe_key(key)
    nbytes = count * dtype.itemsize
    if count > limits.get(key, count):
        why = f"more than input '{what}' takes at its dims' max bounds ({limits[key]:,} elements)"
    elif nbytes > MAX_INPUT_BYTES:
        why = f"more than the limit of {MAX_INPUT_BYTES:,} bytes per input"
    elif nbytes > info.file_size:
        why = f"but the archive holds {info.file_size:,} bytes for it; is it truncated?"
    else:
        why = None
    if why:
        raise InputError(f"{name}: '{what}' claims shape {list(shape)} {dtype} ({nbytes:,} bytes), {why}")
    with archive.open(info) as member:
        return fmt.read_array(member, allow_pickle=False)


def max_elements(pipeline: Pipeline) -> dict[str, int]:
    """The most elements each input can have (host inputs: one), for inputs whose every dimension is a
    number or a bounded symbol (an expression's maximum is not sought: those inputs are left out)."""
    bounds: dict[Any, int] = {dim: b.max for dim, b in pipeline.dims.items()}
    limits = {}
    for name, info in pipeline.inputs.items():
        sizes = [d if isinstance(d, int) else bounds.get(d) for d in info.shape]
        if None not in sizes:
            limits[name] = math.prod(sizes)  # type: ignore[arg-type]
    return limits


def check_inputs(pipeline: Pipeline, given: Mapping[str, Any],
                 out: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, int]]:
    """The inputs as arrays (numpy in native byte order, or device arrays) and the dims they bind; ``out``
    buffers whose shape is known from the dims are checked too, before any work."""
    declared = pipeline.inputs
    if not isinstance(given, Mapping):
        raise InputError(f"inputs of pipeline '{pipeline.name}': expected a mapping of input names to arrays "
                         f"(a dict), got {type(given).__name__} (expected: {', '.join(declared)})")
    if out is not None and not isinstance(out, Mapping):
        raise InputError(f"out: expected a mapping of output names to arrays (a dict), got {type(out).__name__}")
    missing = [n for n in declared if n not in given]
    unexpected = [_describe_key(n) for n in given if n not in declared]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected)}")
        raise InputError(f"inputs of pipeline '{pipeline.name}': {'; '.join(parts)} "
                         f"(expected: {', '.join(declared)})")
    arrays: dict[str, Any] = {}
    env: dict[str, int] = {}
    for name, info in declared.items():
        value = given[name]
        if info.origin == "host":
            arrays[name] = _host_scalar(name, value, info.dtype)
            if arrays[name].dtype.kind == "f" and np.isnan(arrays[name]) and name in decision_inputs(pipeline):
                raise InputError(f"input '{name}' is NaN; it decides a branch or loop of {pipeline.file.name} "
                                 f"(every comparison with NaN is false)")
            continue
        array = _as_array(name, value)
        if dtypes.from_numpy(array.dtype) != info.dtype:
            raise InputError(f"input '{name}': expected dtype {info.dtype}, got {array.dtype}")
        # an input of fixed shape given exactly that shape binds no symbol: skip the general match
        mismatch = None if array.shape == info.shape else shapes.unify(info.shape, array.shape, env)  # type: ignore[arg-type]
        if mismatch:
            raise InputError(f"input '{name}': shape {list(array.shape)}: {mismatch}")
        arrays[name] = array
    _check_bounds(pipeline, env)
    if out:
        _check_out(pipeline, out, env)
    return arrays, env


def _check_out(pipeline: Pipeline, out: Mapping[str, Any], env: dict[str, int]) -> None:
    unknown = [_describe_key(n) for n in out if n not in pipeline.outputs]
    if unknown:
        raise InputError(f"out: {', '.join(unknown)} is not an output (outputs: {', '.join(pipeline.outputs)})")
    for name, buffer in out.items():
        info = pipeline.tensors.get(name)
        if info is None:
            continue
        if not isinstance(buffer, np.ndarray) and not _device_like(buffer):
            raise InputError(f"out['{name}']: expected a numpy or device array, got {type(buffer).__name__}")
        if isinstance(buffer, np.ndarray) and not buffer.flags.writeable:
            raise InputError(f"out['{name}']: the array is read-only")
        # sizes that are numbers or plain input dims, read without parsing (this runs on every run with out=);
        # other shapes are checked by the backend when it writes the output
        shape = tuple(d if isinstance(d, int) else env.get(d) for d in info.shape)
        if None not in shape and isinstance(buffer, np.ndarray):
            check_output_buffer(name, buffer, shape, dtypes.to_numpy(info.dtype))  # type: ignore[arg-type]


@dataclass(frozen=True)
class DeviceArray:
    """A caller's device buffer passed zero-copy (anything with ``__cuda_array_interface__``)."""

    address: int
    shape: tuple[int, ...]
    dtype: np.dtype
    owner: Any  # keeps the caller's object alive for the run

    @classmethod
    def wrap(cls, name: str, obj: Any) -> DeviceArray:
        cai = obj.__cuda_array_interface__
        shape, dtype = tuple(int(d) for d in cai["shape"]), np.dtype(cai["typestr"])
        if dtype.byteorder not in "=|":  # device memory is not converted here: refuse rather than misread
            raise InputError(f"{name}: a device array in non-native byte order ({cai['typestr']}); "
                             f"convert it to native order first")
        strides = cai.get("strides")
        if strides is not None and tuple(strides) != _contiguous_strides(shape, dtype.itemsize):
            raise InputError(f"{name}: device arrays must be C-contiguous (strides {tuple(strides)})")
        return cls(int(cai["data"][0]), shape, dtype, obj)


@dataclass(frozen=True)
class DeviceView:
    """A read-only view of an output in the device arena (``__cuda_array_interface__``), valid until the
    next run: ``torch.as_tensor(view, device="cuda")`` or ``cupy.asarray(view)`` read it without a copy."""

    address: int
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.address, True), "version": 3,
                "strides": None}


def check_output_buffer(name: str, buffer: Any, shape: tuple[int, ...], dtype: np.dtype) -> DeviceArray | None:
    """A caller's buffer for output ``name``: a numpy array (returned as None) or a device array."""
    if isinstance(buffer, np.ndarray):
        if buffer.shape != shape or buffer.dtype != dtype or not buffer.flags.c_contiguous:
            raise InputError(f"out['{name}']: expected a C-contiguous {dtype} array of shape {list(shape)}, "
                             f"got {buffer.dtype} {list(buffer.shape)}")
        return None
    device = _device_array(f"out['{name}']", buffer)
    if device is None:
        raise InputError(f"out['{name}']: expected a numpy or device array, got {type(buffer).__name__}")
    if device.shape != shape or device.dtype != dtype:
        raise InputError(f"out['{name}']: expected {dtype} of shape {list(shape)}, got {device.dtype} "
                         f"{list(device.shape)}")
    return device


def _device_like(value: Any) -> bool:
    return hasattr(value, "__cuda_array_interface__") or hasattr(value, "__dlpack__")


def _device_array(name: str, value: Any) -> DeviceArray | None:
    if hasattr(value, "__cuda_array_interface__"):
        return DeviceArray.wrap(name, value)
    if hasattr(value, "__dlpack__"):
        return from_dlpack(name, value)
    return None


def from_dlpack(name: str, value: Any) -> DeviceArray:
    """A CUDA array from the DLPack protocol, read through cuda.core's StridedMemoryView (which handles
    every DLPack version); the view and the producer stay referenced for the run."""
    from cuda.core.utils import StridedMemoryView

    try:
        view = StridedMemoryView.from_dlpack(value, stream_ptr=-1)  # the caller orders its own streams
    except Exception as exc:  # BufferError, or the producer's own error
        raise InputError(f"{name}: cannot read it through DLPack ({exc})") from None
    if view.device_id < 0 or not view.is_device_accessible:
        raise InputError(f"{name}: a DLPack array in host memory; pass a numpy array, or a CUDA array")
    shape = tuple(int(d) for d in view.shape)
    if view.strides is not None and tuple(view.strides) != _contiguous_strides(shape, 1):
        raise InputError(f"{name}: DLPack arrays must be C-contiguous")
    return DeviceArray(int(view.ptr), shape, np.dtype(view.dtype), (value, view))


def _contiguous_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    strides, step = [], itemsize
    for dim in reversed(shape):
        strides.append(step)
        step *= dim
    return tuple(reversed(strides))


def _as_array(name: str, value: Any) -> np.ndarray | DeviceArray:
    if isinstance(value, np.ma.MaskedArray) and np.ma.is_masked(value):
        raise InputError(f"input '{name}': a masked array with {np.ma.count_masked(value)} masked element(s); "
                         f"the pipeline reads every element: pass value.filled(...) or value.data")
    if isinstance(value, np.ndarray):
        return native_order(np.asarray(value, order="C"))  # not ascontiguousarray: it makes rank 0 rank 1
    device = _device_array(f"input '{name}'", value)
    if device is None:
        raise InputError(f"input '{name}': expected a numpy array or a device array "
                         f"(__cuda_array_interface__ or DLPack), got {type(value).__name__}")
    return device


def _host_scalar(name: str, value: Any, dtype: str) -> np.ndarray:
    if type(value) is int and dtype.startswith("float"):  # noqa: E721 (not bool); 2**70 is an object array
        value = float(value) if abs(value) < 2**1023 else math.inf if value > 0 else -math.inf  # no float(value)
    try:
        array = value if isinstance(value, np.ndarray) else np.asarray(value)
    except (ValueError, TypeError):
        array = np.asarray(None)
    if array.dtype.kind not in "biuf":
        raise InputError(f"input '{name}' is a host scalar of dtype {dtype}; got {_describe(value)}")
    if array.size != 1:
        raise InputError(f"input '{name}' is a host scalar; got an array of shape {list(array.shape)}")
    scalar = array.item()
    low, high = _RANGES[dtype]
    if array.dtype.kind == "f" and isinstance(low, int):
        raise InputError(f"input '{name}' is a host scalar of dtype {dtype}; got {array.dtype}")
    if not low <= scalar <= high and scalar == scalar and abs(scalar) != math.inf:  # NaN, +-inf pass
        raise InputError(f"input '{name}' = {scalar} is outside the range of {dtype} ({low} to {high})")
    return np.asarray(scalar, dtypes.to_numpy(dtype))


def _describe_key(key: Any) -> str:
    """An input or output name as given (a caller may pass any hashable), shortened for the message."""
    text = key if isinstance(key, str) else repr(key)
    return text if len(text) <= 40 else text[:37] + "..."


def decision_inputs(pipeline: Pipeline) -> frozenset[str]:
    """The names that conditions and switches read (only looked up when a host scalar is NaN: rare)."""
    from .pipeline.ir import IfBlock, SwitchBlock, WhileBlock, walk

    names: set[str] = set()
    for node in walk(pipeline.body):
        if isinstance(node, IfBlock | WhileBlock):
            names.add(node.condition.subject)
            if isinstance(node.condition.rhs, str):
                names.add(node.condition.rhs)
        elif isinstance(node, SwitchBlock):
            names.add(node.subject)
    return frozenset(names)


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _check_bounds(pipeline: Pipeline, env: dict[str, int]) -> None:
    empty = [f"{dim} = {value}" for dim, value in env.items() if isinstance(value, int) and value < 1]
    if empty:  # shape rules are proven total for symbols >= 1 only
        raise InputError(f"dimension {', '.join(empty)}: symbolic dimensions must be at least 1 "
                         f"(an input has an empty dimension)")
    for dim, bounds in pipeline.dims.items():
        value = env.get(dim)
        if value is not None and not bounds.min <= value <= bounds.max:
            raise InputError(f"dimension {dim} = {value} is outside dims.{dim} of {pipeline.file.name} "
                             f"(min {bounds.min}, max {bounds.max})")
