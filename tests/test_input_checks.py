"""Run-time input checks without a GPU: host scalars, caller device arrays (``__cuda_array_interface__``
and DLPack, faked here), caller output buffers, and the exact one-line messages."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from conftest import write

from orchestrator.errors import InputError
from orchestrator.inputs import DeviceArray, DeviceView, check_inputs, check_output_buffer
from orchestrator.pipeline.load import load_pipeline


class FakeDevice:
    """Anything that exposes ``__cuda_array_interface__`` (a PyTorch or CuPy tensor)."""

    def __init__(self, shape, typestr="<f4", strides=None, address=0x7000):
        self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr, "data": (address, False),
                                         "version": 3, **({} if strides is False else {"strides": strides})}


@pytest.fixture
def base(workdir):
    return load_pipeline(write(workdir, (workdir / "base.yaml").read_text()))


def test_missing_and_unexpected_inputs_are_listed_together(base):
    with pytest.raises(InputError) as info:
        check_inputs(base, {"y": 1, "w": 2})
    assert str(info.value) == f"inputs of pipeline '{base.name}': missing x, flag; unexpected y, w (expected: x, flag)"
    with pytest.raises(InputError, match=r": missing flag \(expected: x, flag\)$"):
        check_inputs(base, {"x": np.ones((1, 4), np.float32)})


def test_host_scalars_take_the_declared_dtype(base):
    x = np.ones((3, 4), np.float32)
    for given in (1, np.int64(7), True, np.array([5], np.int8), np.array(2, np.uint8)):
        arrays, env = check_inputs(base, {"x": x, "flag": given})
        assert arrays["flag"].dtype == np.int32 and arrays["flag"].shape == () and env == {"N": 3}
        assert arrays["flag"] == int(np.asarray(given).reshape(()))
    with pytest.raises(InputError, match=r"^input 'flag' is a host scalar; got an array of shape \[2\]$"):
        check_inputs(base, {"x": x, "flag": [1, 2]})
    with pytest.raises(InputError, match=r"^input 'flag' is a host scalar of dtype int32; got float64$"):
        check_inputs(base, {"x": x, "flag": 1.0})


def test_float_host_scalars_accept_any_number(workdir):
    text = (workdir / "base.yaml").read_text().replace("flag: {dtype: int32", "flag: {dtype: float16")
    pipeline = load_pipeline(write(workdir, text))
    arrays, _ = check_inputs(pipeline, {"x": np.ones((1, 4), np.float32), "flag": 3})
    assert arrays["flag"].dtype == np.float16 and arrays["flag"] == 3
    arrays, _ = check_inputs(pipeline, {"x": np.ones((1, 4), np.float32), "flag": 2.5})
    assert arrays["flag"] == 2.5


def test_float_host_scalars_take_python_ints_of_any_size(workdir):
    text = (workdir / "base.yaml").read_text().replace("flag: {dtype: int32", "flag: {dtype: float32")
    pipeline = load_pipeline(write(workdir, text))
    x = np.ones((1, 4), np.float32)
    assert check_inputs(pipeline, {"x": x, "flag": 2**70})[0]["flag"] == np.float32(2.0**70)  # not an object array
    with pytest.raises(InputError, match=r"^input 'flag' = 8.98846567431158e\+307 is outside the range of float32"):
        check_inputs(pipeline, {"x": x, "flag": 2**1023 - 1})
    assert check_inputs(pipeline, {"x": x, "flag": 2**1023})[0]["flag"] == np.inf  # float() would overflow
    assert check_inputs(pipeline, {"x": x, "flag": -(2**1100)})[0]["flag"] == -np.inf


def test_a_host_scalar_of_another_kind_is_described_shortly(base):
    given = {"x": np.ones((2, 4), np.float32)}
    with pytest.raises(InputError, match=r"^input 'flag' is a host scalar of dtype int32; got str 'abc'$"):
        check_inputs(base, {**given, "flag": "abc"})
    with pytest.raises(InputError, match=r"^input 'flag' is a host scalar of dtype int32; got str '" + "q" * 36 + r"\.\.\.$"):
        check_inputs(base, {**given, "flag": "q" * 39})
    with pytest.raises(InputError, match=r"^input 'flag' is a host scalar of dtype int32; got str '" + "q" * 38 + "'$"):
        check_inputs(base, {**given, "flag": "q" * 38})


def test_output_buffers_given_to_check_inputs(base):
    given = {"x": np.ones((2, 4), np.float32), "flag": 1}
    with pytest.raises(InputError, match=r"^out: q, \(1, 2\), " + "a" * 40 + ", " + "b" * 37 + r"\.\.\. is not an output "
                                         r"\(outputs: z\)$"):
        check_inputs(base, given, out={"q": np.zeros(1), (1, 2): np.zeros(1), "a" * 40: 0, "b" * 41: 0})
    with pytest.raises(InputError, match=r"^out\['z'\]: expected a numpy or device array, got list$"):
        check_inputs(base, given, out={"z": [0.0]})
    frozen = np.zeros((2, 4), np.float32)
    frozen.flags.writeable = False
    with pytest.raises(InputError, match=r"^out\['z'\]: the array is read-only$"):
        check_inputs(base, given, out={"z": frozen})
    with pytest.raises(InputError, match=r"^out\['z'\]: expected a C-contiguous float32 array of shape \[2, 4\], got "
                                         r"float32 \[3, 4\]$"):
        check_inputs(base, given, out={"z": np.zeros((3, 4), np.float32)})
    assert check_inputs(base, given, out={"z": np.zeros((2, 4), np.float32)})[1] == {"N": 2}
    assert check_inputs(base, given, out={"z": FakeDevice((2, 4))})[1] == {"N": 2}


def test_device_arrays_in_another_byte_order_are_refused(base):
    with pytest.raises(InputError, match=r"^input 'x': a device array in non-native byte order \(>f4\); convert it to "
                                         r"native order first$"):
        check_inputs(base, {"x": FakeDevice((2, 4), ">f4"), "flag": 1})
    assert check_inputs(base, {"x": FakeDevice((2, 4), "|f4"), "flag": 1})[1] == {"N": 2}


def test_inputs_after_a_host_scalar_are_checked_too(workdir):
    text = (workdir / "base.yaml").read_text()
    text = text.replace("  x: {dtype: float32, shape: [N, 4]}\n  flag: {dtype: int32, host: true}\n",
                        "  flag: {dtype: int32, host: true}\n  x: {dtype: float32, shape: [N, 4]}\n")
    pipeline = load_pipeline(write(workdir, text))
    assert list(pipeline.inputs) == ["flag", "x"]
    arrays, env = check_inputs(pipeline, {"x": np.ones((2, 4), np.float32), "flag": 1})
    assert set(arrays) == {"flag", "x"} and env == {"N": 2}
    with pytest.raises(InputError, match="input 'x': expected dtype float32"):
        check_inputs(pipeline, {"x": np.ones((2, 4)), "flag": 1})


def test_numpy_inputs_are_made_contiguous(base):
    x = np.ones((4, 8), np.float32)[:, ::2]
    arrays, env = check_inputs(base, {"x": x, "flag": 0})
    assert arrays["x"].flags.c_contiguous and env == {"N": 4}
    with pytest.raises(InputError, match=r"^input 'x': expected dtype float32, got float64$"):
        check_inputs(base, {"x": np.ones((1, 4)), "flag": 0})
    with pytest.raises(InputError, match=r"^input 'x': shape \[1, 5\]: dimension 1 is 5, expected 4"):
        check_inputs(base, {"x": np.ones((1, 5), np.float32), "flag": 0})
    with pytest.raises(InputError, match=r"^input 'x': expected a numpy array or a device array "
                                         r"\(__cuda_array_interface__ or DLPack\), got list$"):
        check_inputs(base, {"x": [[1.0] * 4], "flag": 0})


@pytest.mark.parametrize("strides", [None, (16, 4), False])
def test_device_inputs_are_wrapped_zero_copy(base, strides):
    tensor = FakeDevice((2, 4), strides=strides, address=0xBEEF00)
    arrays, env = check_inputs(base, {"x": tensor, "flag": 1})
    device = arrays["x"]
    assert isinstance(device, DeviceArray) and env == {"N": 2}
    assert (device.address, device.shape, device.dtype, device.owner) == (0xBEEF00, (2, 4), np.float32, tensor)


def test_device_inputs_must_be_contiguous_and_typed(base):
    with pytest.raises(InputError, match=r"^input 'x': device arrays must be C-contiguous \(strides \(4, 8\)\)$"):
        check_inputs(base, {"x": FakeDevice((2, 4), strides=(4, 8)), "flag": 1})
    with pytest.raises(InputError, match="input 'x': expected dtype float32, got float16"):
        check_inputs(base, {"x": FakeDevice((2, 4), "<f2"), "flag": 1})
    with pytest.raises(InputError, match=r"input 'x': shape \[2, 4, 1\]: rank 3"):
        check_inputs(base, {"x": FakeDevice((2, 4, 1)), "flag": 1})


def test_device_views_describe_arena_memory():
    view = DeviceView(0x1000, (2, 3), np.dtype(np.int64))
    assert view.__cuda_array_interface__ == {"shape": (2, 3), "typestr": "<i8", "data": (0x1000, True),
                                             "version": 3, "strides": None}


def test_output_buffers_numpy_device_or_refused():
    shape, dtype = (2, 3), np.dtype(np.float32)
    assert check_output_buffer("z", np.zeros(shape, np.float32), shape, dtype) is None
    for bad in (np.zeros((3, 2), np.float32), np.zeros(shape, np.float64), np.zeros((3, 4), np.float32)[:2, :3]):
        with pytest.raises(InputError, match=r"^out\['z'\]: expected a C-contiguous float32 array of shape \[2, 3\], "
                                             f"got {bad.dtype} \\[{bad.shape[0]}, {bad.shape[1]}\\]$"):
            check_output_buffer("z", bad, shape, dtype)
    device = check_output_buffer("z", FakeDevice(shape, address=0x2000), shape, dtype)
    assert isinstance(device, DeviceArray) and device.address == 0x2000
    for bad in (FakeDevice((2, 4)), FakeDevice(shape, "<i4")):
        with pytest.raises(InputError, match=r"^out\['z'\]: expected float32 of shape \[2, 3\], got "):
            check_output_buffer("z", bad, shape, dtype)
    with pytest.raises(InputError, match=r"^out\['z'\]: expected a numpy or device array, got list$"):
        check_output_buffer("z", [[0.0] * 3] * 2, shape, dtype)
    with pytest.raises(InputError, match=r"^out\['z'\]: device arrays must be C-contiguous"):
        check_output_buffer("z", FakeDevice(shape, strides=(4, 8)), shape, dtype)


class FakeView:
    """What cuda.core's StridedMemoryView.from_dlpack gives for a producer."""

    def __init__(self, shape, strides=None, device_id=0, accessible=True, dtype=np.float32, ptr=0x3000):
        self.shape, self.strides, self.device_id, self.is_device_accessible = shape, strides, device_id, accessible
        self.dtype, self.ptr = np.dtype(dtype), ptr


class DLPackProducer:
    def __init__(self, view):
        self.view = view

    def __dlpack__(self, **kwargs):
        raise AssertionError("read through StridedMemoryView only")


@pytest.fixture
def fake_cuda_core(monkeypatch):
    calls = []

    def from_dlpack(producer, stream_ptr):
        calls.append(stream_ptr)
        if isinstance(producer.view, Exception):
            raise producer.view
        return producer.view

    utils = types.ModuleType("cuda.core.utils")
    utils.StridedMemoryView = types.SimpleNamespace(from_dlpack=from_dlpack)
    monkeypatch.setitem(sys.modules, "cuda.core.utils", utils)
    return calls


@pytest.mark.parametrize("strides", [None, (12, 4, 1)])  # element strides, as DLPack gives them
def test_dlpack_device_arrays_are_read_through_strided_memory_view(base, fake_cuda_core, strides):
    producer = DLPackProducer(FakeView((3, 4), strides=None if strides is None else strides[1:], ptr=0x3000))
    arrays, env = check_inputs(base, {"x": producer, "flag": 0})
    device = arrays["x"]
    assert (device.address, device.shape, device.dtype, env) == (0x3000, (3, 4), np.float32, {"N": 3})
    assert device.owner == (producer, producer.view)  # both stay referenced for the run
    assert fake_cuda_core == [-1]  # no stream ordering: the caller orders its own streams


@pytest.mark.parametrize(("view", "message"), [
    (FakeView((3, 4), device_id=-1), r"^input 'x': a DLPack array in host memory; pass a numpy array, or a CUDA array$"),
    (FakeView((3, 4), accessible=False), "a DLPack array in host memory"),
    (FakeView((3, 4), strides=(1, 3)), r"^input 'x': DLPack arrays must be C-contiguous$"),
    (BufferError("stream mismatch"), r"^input 'x': cannot read it through DLPack \(stream mismatch\)$"),
])
def test_dlpack_arrays_that_cannot_be_used_are_refused(base, fake_cuda_core, view, message):
    with pytest.raises(InputError, match=message):
        check_inputs(base, {"x": DLPackProducer(view), "flag": 0})


# ---- what tests/MUTATION.md found unchecked in inputs.py: messages, NaN deciding inputs, edges ---------

def test_inputs_or_out_that_are_not_mappings_are_refused_with_what_was_expected(base):
    with pytest.raises(InputError) as info:
        check_inputs(base, [np.ones((2, 4), np.float32), 1])
    assert str(info.value) == (f"inputs of pipeline '{base.name}': expected a mapping of input names to arrays "
                               "(a dict), got list (expected: x, flag)")
    with pytest.raises(InputError) as info:
        check_inputs(base, {"x": np.ones((2, 4), np.float32), "flag": 1}, out=[np.zeros((2, 4), np.float32)])
    assert str(info.value) == "out: expected a mapping of output names to arrays (a dict), got list"


def test_empty_symbolic_dimensions_are_refused_all_named(workdir):
    pipeline = load_pipeline(write(workdir, (workdir / "base.yaml").read_text().replace("[N, 4]", "[N, M]")))
    assert check_inputs(pipeline, {"x": np.ones((2, 3), np.float32), "flag": 1})[1] == {"N": 2, "M": 3}
    with pytest.raises(InputError) as info:
        check_inputs(pipeline, {"x": np.ones((0, 0), np.float32), "flag": 1})
    assert str(info.value) == ("dimension N = 0, M = 0: symbolic dimensions must be at least 1 (an input has an "
                               "empty dimension)")


def test_out_names_that_are_not_outputs_list_every_output(workdir):
    pipeline = load_pipeline(write(workdir, (workdir / "base.yaml").read_text().replace("outputs: [z]",
                                                                                          "outputs: [z, y]")))
    with pytest.raises(InputError) as info:
        check_inputs(pipeline, {"x": np.ones((2, 4), np.float32), "flag": 1}, out={"q": np.zeros(1)})
    assert str(info.value) == "out: q is not an output (outputs: z, y)"


def test_a_dlpack_only_out_buffer_is_taken_as_a_device_array(base):
    """Only ``__dlpack__`` (no ``__cuda_array_interface__``): accepted here, read when the run writes it."""
    given = {"x": np.ones((2, 4), np.float32), "flag": 1}
    assert check_inputs(base, given, out={"z": DLPackProducer(FakeView((2, 4)))})[1] == {"N": 2}


def test_int_host_scalars_at_the_edges_of_their_dtype_are_kept(base):
    x = np.ones((1, 4), np.float32)
    for edge in (2**31 - 1, -(2**31)):
        assert check_inputs(base, {"x": x, "flag": edge})[0]["flag"] == edge
    with pytest.raises(InputError, match=r"^input 'flag' = 2147483648 is outside the range of int32"):
        check_inputs(base, {"x": x, "flag": 2**31})


def test_a_ragged_host_scalar_is_described(base):
    with pytest.raises(InputError) as info:
        check_inputs(base, {"x": np.ones((1, 4), np.float32), "flag": [[1, 2], [3]]})
    assert str(info.value) == "input 'flag' is a host scalar of dtype int32; got list [[1, 2], [3]]"


DECIDING = """\
inputs:
  x: {dtype: float32, shape: [N, 4]}
  a: {dtype: float32, host: true}
  b: {dtype: float32, host: true}
  f: {dtype: float32, host: true}
outputs: [z]
kernels:
  scale: scale.yaml
steps:
  - if: a > b
    then:
      - kernel: scale
        args: {src: x, dst: z, factor: f}
    else:
      - kernel: scale
        args: {src: x, dst: z, factor: 2.0}
"""


@pytest.mark.parametrize("name", ["a", "b"])  # the condition's subject and its right-hand side
def test_a_nan_host_scalar_that_decides_a_branch_is_refused(workdir, name):
    pipeline = load_pipeline(write(workdir, DECIDING))
    given = {"x": np.ones((1, 4), np.float32), "a": 1.0, "b": 0.0, "f": 2.0, name: float("nan")}
    with pytest.raises(InputError) as info:
        check_inputs(pipeline, given)
    assert str(info.value) == (f"input '{name}' is NaN; it decides a branch or loop of pipeline.yaml (every "
                               "comparison with NaN is false)")


def test_a_nan_host_scalar_that_decides_nothing_is_passed_on(workdir):
    pipeline = load_pipeline(write(workdir, DECIDING))
    arrays, _ = check_inputs(pipeline, {"x": np.ones((1, 4), np.float32), "a": 1.0, "b": 0.0, "f": float("nan")})
    assert np.isnan(arrays["f"]) and arrays["f"].dtype == np.float32
