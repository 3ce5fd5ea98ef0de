"""Hostile inputs, third pass (what test_bad_input_corpus.py and test_adversarial.py did not reach): runs
re-entered from an observer, numpy subclasses, outputs that alias the caller's arrays, .npz archives that
lie about their contents, --output paths, integers too long for Python or for their dtype, and kernel
headers (the cache key, and files beside a kernel that it never includes).

Every case is generated at test time; a refused case is one line naming the file (and the line), with no
traceback, and leaves the orchestrator usable.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import BASE, KERNEL_CU

from orchestrator import ExecutionError, InputError, Orchestrator, OrchestratorError
from orchestrator.cli import main

X = np.arange(8, dtype=np.float32).reshape(2, 4) - 3
GOOD = {"x": X, "flag": 1}


def _cli(argv: list[str]) -> tuple[int, list[str], str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    text = err.getvalue()
    return code, [line for line in text.splitlines() if line.strip() and ": warning: " not in line], text


def _one_line(argv: list[str], expect: str, where: str | None = None) -> str:
    code, lines, text = _cli(argv)
    assert code == 1 and "Traceback" not in text and "internal error" not in text, text[:2000]
    assert len(lines) == 1 and expect in lines[0], lines
    if where:
        assert re.search(rf"(^|[\s/]){re.escape(where)}(:\d+)?: ", lines[0]), (where, lines[0])
    return lines[0]


# ---- run-time inputs through the Python API -----------------------------------------------------------

class _Reenter:
    """An observer that calls run() again from inside a step (or holds the instance with acquire())."""

    def __init__(self):
        self.orch: Orchestrator | None = None
        self.error: Exception | None = None

    def step_done(self, step):
        if self.error is None and self.orch is not None:
            try:
                self.orch.run(GOOD)
            except Exception as exc:  # noqa: BLE001 (recorded, then checked)
                self.error = exc

    def branch_taken(self, block, taken):
        pass


def _in_thread(call) -> list:
    """``call()`` in a thread that must finish within 10 s (a deadlock fails the test instead of hanging)."""
    result: list = []
    worker = threading.Thread(target=lambda: result.append(call()), daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "deadlock: the call waited for an instance its own thread holds"
    return result


def test_run_from_an_observer_callback_is_refused_not_a_deadlock(workdir: Path):
    watch = _Reenter()
    orch = Orchestrator(workdir / "base.yaml", device="cpu", observer=watch)
    watch.orch = orch
    (outer,) = _in_thread(lambda: orch.run(GOOD))
    np.testing.assert_array_equal(outer["z"], np.maximum(X, 0) * 2)
    assert isinstance(watch.error, ExecutionError) and "\n" not in str(watch.error)
    assert "already holds all 1 instance(s)" in str(watch.error)
    watch.orch = None
    np.testing.assert_array_equal(orch.run(GOOD)["z"], np.maximum(X, 0) * 2)


def test_run_inside_acquire_is_refused_unless_an_instance_is_free(workdir: Path):
    one = Orchestrator(workdir / "base.yaml", device="cpu")

    def nested(orch: Orchestrator):
        with orch.acquire():
            try:
                return orch.run(GOOD)["z"]
            except ExecutionError as exc:
                return str(exc)

    (message,) = _in_thread(lambda: nested(one))
    assert "it would wait forever" in message
    two = Orchestrator(workdir / "base.yaml", device="cpu", instances=2)
    (z,) = _in_thread(lambda: nested(two))  # the second instance is free: valid, so it runs
    np.testing.assert_array_equal(z, np.maximum(X, 0) * 2)


def test_run_after_close_is_a_user_error(workdir: Path):
    orch = Orchestrator(workdir / "base.yaml", device="cpu")
    orch.close()
    with pytest.raises(OrchestratorError, match=r"^Orchestrator used after close\(\)$"):
        orch.run(GOOD)


MASKED = [
    (np.ma.masked_array(X, mask=X < 0), "a masked array with 3 masked element(s)"),
    (np.ma.masked_array(X, mask=np.ones_like(X, bool)), "a masked array with 8 masked element(s)"),
    (np.ma.masked_array(X), None),  # nothing masked: an ordinary array
    (np.ma.masked_array(X, mask=np.zeros_like(X, bool)), None),
    ("matrix", None),
    (np.memmap, None),  # made in the test: a file-backed array
]


@pytest.mark.parametrize(("value", "refused"), MASKED, ids=["masked3", "masked_all", "nomask", "mask_false",
                                                            "matrix", "memmap"])
def test_numpy_subclasses(workdir: Path, value, refused: str | None):
    if isinstance(value, str):
        with pytest.warns(PendingDeprecationWarning):
            value = np.matrix(X)
    if value is np.memmap:
        value = np.memmap(workdir / "x.dat", np.float32, "w+", shape=X.shape)
        value[:] = X
    orch = Orchestrator(workdir / "base.yaml", device="cpu")
    if refused:
        with pytest.raises(InputError, match=re.escape(f"input 'x': {refused}; the pipeline reads every element")):
            orch.run({"x": value, "flag": 1})
        return
    np.testing.assert_array_equal(orch.run({"x": value, "flag": 1})["z"], np.maximum(X, 0) * 2)


def test_outputs_are_copies_not_the_callers_arrays(workdir: Path):
    """An output that is also an input came back as the caller's own array (README: outputs are copies),
    and a constant output as the pipeline's read-only array."""
    (workdir / "p.yaml").write_text(
        "inputs:\n  x: {dtype: float32, shape: [N, 4]}\noutputs: [z, x, c]\n"
        "constants:\n  c: {value: [1, 2, 3, 4], dtype: float32}\nkernels:\n  scale: scale.yaml\n"
        "steps:\n  - kernel: scale\n    args: {src: x, dst: z, factor: 2.0}\n")
    orch = Orchestrator(workdir / "p.yaml", device="cpu")
    x = X.copy()
    result = orch.run({"x": x})
    assert not np.shares_memory(result["x"], x) and result["x"].flags.writeable
    x[:] = 7  # the caller reuses its buffer: the result of the earlier run stays
    np.testing.assert_array_equal(result["x"], X)
    result["c"][:] = 0  # a writable copy; the pipeline's constant is untouched
    np.testing.assert_array_equal(orch.run({"x": X})["c"], [1, 2, 3, 4])


# ---- .npz input files that lie about what they hold ------------------------------------------------------

def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def _claimed(shape: tuple[int, ...], dtype: str = "<f4", data: bytes = b"\0" * 64) -> bytes:
    """An .npy header claiming ``shape`` followed by a few bytes: nothing that big is ever allocated."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": dtype, "fortran_order": False, "shape": shape})
    return header.getvalue() + data


def _archive(path: Path, members: dict[str, bytes], deflate: bool = False) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


FLAG = _npy(np.int32(1))
NPZ = {
    "object_array": ({"x.npy": _npy(np.array([X, 1], dtype=object)), "flag.npy": FLAG},
                     "'x' is an array of Python objects, which is not loaded (unpickling runs code)"),
    "object_host_scalar": ({"x.npy": _npy(X), "flag.npy": _npy(np.array(1, dtype=object))},
                           "'flag' is an array of Python objects"),
    "text_member": ({"x.npy": b"hello, not an array", "flag.npy": FLAG}, "member 'x.npy' is not a .npy array"),
    "empty_member": ({"x.npy": b"", "flag.npy": FLAG}, "member 'x.npy' is not a .npy array"),
    "huge_unbounded": ({"x.npy": _claimed((2, 1 << 36)), "flag.npy": FLAG},
                       "'x' claims shape [2, 68719476736] float32 (549,755,813,888 bytes), more than the limit"),
    "huge_over_dims": ({"x.npy": _claimed((9, 4)), "flag.npy": FLAG},
                       "'x' claims shape [9, 4] float32 (144 bytes), more than input 'x' takes at its dims' max "
                       "bounds (16 elements)"),
    "huge_deflated": ({"x.npy": _claimed((1 << 20, 1 << 10)), "flag.npy": FLAG},
                      "more than input 'x' takes at its dims' max bounds"),
    "claims_more_than_held": ({"x.npy": _claimed((2, 1000), data=b"\0" * 8), "flag.npy": FLAG},
                              "'x' claims shape [2, 1000] float32 (8,000 bytes), but the archive holds 136 bytes"),
    "host_scalar_huge": ({"x.npy": _npy(X), "flag.npy": _claimed((1 << 30,), "<i4")},
                         "more than input 'flag' takes at its dims' max bounds (1 elements)"),
    "version_2_header": ({"x.npy": b"\x93NUMPY\x02\x00" + b"\xff\xff\xff\x7f", "flag.npy": FLAG},
                         "cannot read the .npz archive"),
}


@pytest.mark.parametrize("case", NPZ, ids=list(NPZ))
def test_lying_npz_is_one_line_and_reads_no_data(workdir: Path, case: str):
    members, expect = NPZ[case]
    path = workdir / "in.npz"
    _archive(path, members, deflate=case == "huge_deflated")
    pipeline = workdir / "base.yaml"
    if case.startswith(("huge_over", "huge_deflated", "host_scalar")):
        pipeline.write_text(BASE + "dims:\n  N: {min: 1, opt: 2, max: 4}\n")
    _one_line(["run", str(pipeline), "--inputs", str(path), "--device", "cpu"], expect, "in.npz")


def test_npz_members_in_any_valid_form_are_read(workdir: Path):
    """Members without the .npy suffix, deflated members, Fortran order, big-endian, a (1,) host scalar."""
    _archive(workdir / "in.npz", {"x": _npy(np.asfortranarray(X.astype(">f4"))), "flag.npy": _npy(np.array([2]))},
             deflate=True)
    code, lines, err = _cli(["run", str(workdir / "base.yaml"), "--inputs", str(workdir / "in.npz"),
                             "--device", "cpu", "--output", str(workdir / "out.npz")])
    assert code == 0 and not lines, err
    with np.load(workdir / "out.npz") as out:
        np.testing.assert_array_equal(out["z"], np.maximum(X, 0) * 2)


def test_npz_headers_are_checked_against_limits_before_any_data(tmp_path: Path):
    """load_npz directly: a limit is the most elements allowed (exactly that many is fine), sizes are printed
    with thousands separators, the byte cap is 16 GiB, a version 2.0 header is read, long names are cut."""
    from orchestrator.inputs import MAX_INPUT_BYTES, load_npz

    path = tmp_path / "in.npz"
    _archive(path, {"x.npy": _npy(np.zeros((2, 617), np.float32)), "flag": FLAG})
    got = load_npz(path, {"x": 1234, "flag": 1})
    assert list(got) == ["x", "flag"] and got["x"].shape == (2, 617) and got["flag"] == 1
    with pytest.raises(InputError, match=r"^\S*in.npz: 'x' claims shape \[2, 617\] float32 \(4,936 bytes\), more than "
                                         r"input 'x' takes at its dims' max bounds \(1,233 elements\)$"):
        load_npz(path, {"x": 1233})
    assert load_npz(path, {"other": 1})["x"].shape == (2, 617)  # a limit applies to its own input only
    assert MAX_INPUT_BYTES == 16 << 30
    _archive(path, {"x.npy": _claimed((1 << 32, 1), "<f4")})  # exactly the cap: only the data is missing
    with pytest.raises(InputError, match=r"\(17,179,869,184 bytes\), but the archive holds 192 bytes for it"):
        load_npz(path)
    _archive(path, {"x.npy": _claimed((1 << 32, 1), "<c8")})
    with pytest.raises(InputError, match=r"^\S*in.npz: 'x' claims shape \[4294967296, 1\] complex64 \(34,359,738,368 "
                                         r"bytes\), more than the limit of 17,179,869,184 bytes per input$"):
        load_npz(path)
    header = io.BytesIO()
    np.lib.format.write_array_header_2_0(header, {"descr": "<i2", "fortran_order": False, "shape": (3,)})
    v2 = header.getvalue() + np.array([1, 2, 3], "<i2").tobytes()
    long = "k" * 45
    _archive(path, {"v2.npy": v2, long: _npy(np.array([X, 1], object))})
    with pytest.raises(InputError, match=r"^\S*in.npz: '" + "k" * 37 + r"\.\.\.' is an array of Python objects, which "
                                         r"is not loaded \(unpickling runs code\); save numeric arrays$"):
        load_npz(path)
    _archive(path, {"v2.npy": v2})
    assert load_npz(path)["v2"].tolist() == [1, 2, 3]
    _archive(path, {long + ".npy": b"text"})
    with pytest.raises(InputError, match=r"^\S*in.npz: member '" + "k" * 37 + r"\.\.\.' is not a \.npy array "
                                         r"\(numpy.savez writes one per input\)$"):
        load_npz(path)
    _archive(path, {"x.npy": _claimed((2, 1000), data=b"\0" * 8)})
    with pytest.raises(InputError, match=r"^\S*in.npz: 'x' claims shape \[2, 1000\] float32 \(8,000 bytes\), but the "
                                         r"archive holds 136 bytes for it; is it truncated\?$"):
        load_npz(path)


def test_files_that_are_not_npz_archives_are_named(tmp_path: Path):
    from orchestrator.inputs import load_npz

    with pytest.raises(InputError, match=r"^inputs: cannot read \S*missing.npz: No such file or directory$"):
        load_npz(tmp_path / "missing.npz")
    np.save(tmp_path / "a.npy", X)
    with pytest.raises(InputError, match=r"^\S*a.npy is an .npy file \(one array\); inputs are an .npz with one array "
                                         r"per input name: numpy.savez\('inputs.npz', image=array, ...\)$"):
        load_npz(tmp_path / "a.npy")
    (tmp_path / "t.npz").write_bytes(b"\x93NUMPz and more")
    with pytest.raises(InputError, match=r"^\S*t.npz is not an .npz file \(numpy.savez\('inputs.npz', name=array, "
                                         r"...\) makes one\)$"):
        load_npz(tmp_path / "t.npz")
    (tmp_path / "pk.npz").write_bytes(b"PK\x03\x04")
    with pytest.raises(InputError, match=r"^\S*pk.npz: cannot read the .npz archive \(File is not a zip file\); is it "
                                         r"truncated\?$"):
        load_npz(tmp_path / "pk.npz")


def test_an_archive_error_without_a_message_is_named_by_its_type(tmp_path: Path):
    """The central directory gives the member 1,000 bytes more than the file has, and its header claims 800 bytes
    of data where 24 follow (within the claimed size, so not refused from the header): zipfile's read ends in a
    bare EOFError, whose message is empty."""
    import struct

    from orchestrator.inputs import load_npz

    path = tmp_path / "short.npz"
    _archive(path, {"x.npy": _claimed((200,), data=b"\0" * 24)})
    data = bytearray(path.read_bytes())
    entry = data.find(b"PK\x01\x02")  # the central directory's entry for x.npy: sizes at offsets 20 and 24
    struct.pack_into("<II", data, entry + 20, *(size + 1000 for size in struct.unpack_from("<II", data, entry + 20)))
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"^\S*short.npz: cannot read the .npz archive \(EOFError\); is it "
                                         r"truncated\?$"):
        load_npz(path)


def test_a_member_claiming_exactly_its_stored_size_is_found_short_when_read(tmp_path: Path):
    """200 bytes claimed, 200 stored, 128 of them the header: not more than the archive holds, so the header
    check lets it through, and reading its data finds it truncated."""
    from orchestrator.inputs import load_npz

    path = tmp_path / "exact.npz"
    _archive(path, {"x.npy": _claimed((200,), "|u1", data=b"\0" * 72)})
    with pytest.raises(InputError, match=r"^\S*exact.npz: cannot read the .npz archive \(EOF: reading array data, "
                                         r"expected 200 bytes got 72\); is it truncated\?$"):
        load_npz(path)


def test_max_elements_of_inputs_with_bounded_dims(workdir: Path):
    from orchestrator.inputs import max_elements
    from orchestrator.pipeline.load import load_pipeline

    text = BASE.replace("  flag: {dtype: int32, host: true}\n", "  flag: {dtype: int32, host: true}\n"
                        "  m: {dtype: float32, shape: [M, 3]}\n  e: {dtype: float32, shape: [2*N]}\n"
                        "  f: {dtype: float32, shape: [5, 7]}\n")
    (workdir / "more.yaml").write_text(text + "dims:\n  N: {min: 1, opt: 2, max: 6}\n")
    pipeline = load_pipeline(workdir / "more.yaml")
    assert max_elements(pipeline) == {"x": 24, "flag": 1, "f": 35}


# ---- --output ------------------------------------------------------------------------------------------

def _run_to(workdir: Path, output: str) -> tuple[int, list[str], str]:
    np.savez(workdir / "in.npz", x=X, flag=np.int32(1))
    return _cli(["run", str(workdir / "base.yaml"), "--inputs", str(workdir / "in.npz"), "--device", "cpu",
                 "--output", output])


@pytest.mark.parametrize("name", ["result", "result.out", "result.npz.tmp"])
def test_output_is_written_at_exactly_the_path_given(workdir: Path, name: str):
    """np.savez appended '.npz' to a name without it, while the command said it wrote the name given."""
    code, _, err = _run_to(workdir, str(workdir / name))
    assert code == 0, err
    assert sorted(p.name for p in workdir.iterdir() if p.name.startswith("result")) == [name]
    with np.load(workdir / name) as out:
        np.testing.assert_array_equal(out["z"], np.maximum(X, 0) * 2)


def test_output_to_a_full_device_is_one_line(workdir: Path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    code, lines, err = _run_to(workdir, "/dev/full")
    assert code == 1 and "Traceback" not in err and lines == ["error: --output /dev/full: cannot write: No space "
                                                             "left on device"], err


def test_a_failed_output_write_leaves_the_earlier_file_whole(workdir: Path, monkeypatch):
    from orchestrator import cache

    assert _run_to(workdir, str(workdir / "out.npz"))[0] == 0
    before = (workdir / "out.npz").read_bytes()

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache.os, "fsync", full)
    code, lines, _ = _run_to(workdir, str(workdir / "out.npz"))
    assert code == 1 and len(lines) == 1 and "No space left on device" in lines[0], lines
    assert (workdir / "out.npz").read_bytes() == before
    assert [p.name for p in workdir.iterdir() if p.name.startswith(".out.npz")] == []


# ---- integers too long for Python, or for their dtype ------------------------------------------------

DIGITS = "9" * 5000
NUMBERS = {
    "factor_5000_digits": (("factor: 2.0", f"factor: {DIGITS}"), "an integer written with 5,000 characters", 15),
    "hex_5000_digits": (("factor: 2.0", "factor: 0x" + "f" * 5000), "an integer written with 5,002 characters", 15),
    "shape_5000_digits": (("[N, 4]", f"[N, {DIGITS}]"), "an integer written with 5,000 characters", 2),
    "dim_max_5000_digits": ((None, f"dims:\n  N: {{min: 1, opt: 1, max: {DIGITS}}}\n"),
                            "an integer written with 5,000 characters", 17),
    "constant_5000_digits": ((None, f"constants:\n  c: {{value: [{DIGITS}], dtype: int32}}\n"),
                             "an integer written with 5,000 characters", 17),
    "dim_max_over_int64": ((None, "dims:\n  N: {min: 1, opt: 2, max: 99999999999999999999999}\n"),
                           "dims.N.max: expected less than or equal to 2147483647", 17),
    "dim_max_2_31": ((None, "dims:\n  N: {min: 1, opt: 2, max: 2147483648}\n"),
                     "dims.N.max: expected less than or equal to 2147483647", 17),
    "float_scalar_1e39": (("factor: 2.0", "factor: 1e39"),
                          "scalar argument 'factor' is float32; 1e+39 is beyond its range (largest 3.40282e+38)", 15),
    "float_scalar_90_digit_int": (("factor: 2.0", "factor: " + "9" * 90),
                                  "is float32; 99999999999999999999... (90 digits) is beyond its range", 15),
}


@pytest.mark.parametrize("case", NUMBERS, ids=list(NUMBERS))
@pytest.mark.parametrize("command", ["validate", "plan"])
def test_numbers_out_of_range_are_located(workdir: Path, case: str, command: str):
    (old, new), expect, line = NUMBERS[case]
    text = BASE + new if old is None else BASE.replace(old, new)
    (workdir / "base.yaml").write_text(text)
    _one_line([command, str(workdir / "base.yaml")], expect, f"base.yaml:{line}")


@pytest.mark.parametrize(("value", "expect"), [
    ("2147483648", "scalar argument 'factor' is int32; 2147483648 is outside its range (-2147483648 to 2147483647)"),
    ("-2147483649", "-2147483649 is outside its range"),
    ("99999999999999999999999999", "99999999999999999999999999 is outside its range"),
    ("2147483647", None), ("-2147483648", None), ("0x7fffffff", None),
])
def test_int_kernel_scalar_literals_must_fit(workdir: Path, value: str, expect: str | None):
    kernel = (workdir / "scale.yaml").read_text()
    (workdir / "scale.yaml").write_text(kernel.replace("{name: factor, kind: scalar, dtype: float32}",
                                                       "{name: factor, kind: scalar, dtype: int32}"))
    (workdir / "base.yaml").write_text(BASE.replace("factor: 2.0", f"factor: {value}"))
    if expect is None:
        assert _cli(["validate", str(workdir / "base.yaml")])[0] == 0
    else:
        _one_line(["validate", str(workdir / "base.yaml")], expect, "base.yaml:15")


@pytest.mark.parametrize("value", ["3.4e38", ".inf", "-.inf", ".nan", "1e-45"])
def test_float_kernel_scalars_in_range_or_written_as_special_values_are_kept(workdir: Path, value: str):
    (workdir / "base.yaml").write_text(BASE.replace("factor: 2.0", f"factor: {value}"))
    code, lines, err = _cli(["validate", str(workdir / "base.yaml")])
    assert code == 0 and not lines, err


# ---- kernel headers: the cache key and files a kernel does not include --------------------------------

def _nvrtc() -> None:
    try:
        from orchestrator.kernels.nvrtc import nvrtc_version

        nvrtc_version()
    except Exception:  # noqa: BLE001
        pytest.skip("NVRTC (cuda-python's nvrtc library) cannot be loaded here")


def _compile(workdir: Path) -> tuple[int, list[str], str]:
    return _cli(["compile", str(workdir / "base.yaml"), "--arch", "sm_90", "--cache-dir", str(workdir / "cache")])


def test_editing_a_header_in_a_subfolder_recompiles(workdir: Path):
    """Only headers directly in an include folder were in the cache key: an edit to detail/factor.cuh kept
    the cubin compiled from the old text."""
    _nvrtc()
    (workdir / "detail").mkdir()
    (workdir / "detail" / "factor.cuh").write_text('#include "more.cuh"\n')
    (workdir / "detail" / "more.cuh").write_text("#define EXTRA 1.0f\n")
    (workdir / "scale.cu").write_text('#include "detail/factor.cuh"\n' + KERNEL_CU.replace("* factor;",
                                                                                           "* factor * EXTRA;"))
    assert _compile(workdir)[0] == 0
    (workdir / "detail" / "more.cuh").write_text('#error "edited"\n')  # two levels down
    code, lines, err = _compile(workdir)
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert re.search(r"detail/more\.cuh:1: kernel 'scale' failed to compile: #error", lines[0]), lines[0]


def _symlink_loop(path: Path) -> None:
    path.symlink_to(path.name)


STRAYS = {
    "symlink_loop": _symlink_loop,
    "dangling_symlink": lambda p: p.symlink_to("nowhere.cuh"),
    "fifo": lambda p: os.mkfifo(p),
    "latin1": lambda p: p.write_bytes(b"// caf\xe9\n"),
    "binary": lambda p: p.write_bytes(b"\0\1\2"),
}


@pytest.mark.parametrize("stray", STRAYS, ids=list(STRAYS))
def test_a_file_the_kernel_does_not_include_does_not_matter(workdir: Path, stray: str):
    """Every *.cuh and *.h beside a kernel was read for its cache key: a stray one (an editor's symlink, a
    FIFO, a Latin-1 header of another project) made every kernel there fail to compile."""
    _nvrtc()
    STRAYS[stray](workdir / "stray.h")
    code, lines, err = _compile(workdir)
    assert code == 0 and not lines, err


@pytest.mark.parametrize("stray", ["symlink_loop", "fifo"])
def test_a_header_the_kernel_includes_is_still_read_safely(workdir: Path, stray: str):
    _nvrtc()
    STRAYS[stray](workdir / "stray.h")
    (workdir / "scale.cu").write_text('#include "stray.h"\n' + KERNEL_CU)
    expect = "Too many levels of symbolic links" if stray == "symlink_loop" else "stray.h is a named pipe"
    _one_line(["validate", str(workdir / "base.yaml"), "--compile"], expect, "scale.yaml:1")
