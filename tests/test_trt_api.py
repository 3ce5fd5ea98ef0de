"""The TensorRT names our compat module uses exist in the real Python API of every version we support
(8.6.1, 10.13, 11.4: the bindings are fetched at test time, see trt_api.py), and the module uses no name
that its API table does not list."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
from trt_api import VERSIONS, callback_mismatches, check_version, missing_names, unlisted, used_names

from orchestrator.backends.cuda import trt as compat

CUDA = Path(compat.__file__).resolve().parent


@pytest.mark.parametrize("version", VERSIONS)
def test_every_name_on_the_version_path_exists(version):
    result = check_version(version)
    assert result["version"] == version
    assert result["missing"] == [], f"TensorRT {version} lacks {result['missing']}"
    assert result["callbacks"] == []  # our ILogger / IProgressMonitor methods take TensorRT's arguments


def test_callback_check_notices_swapped_arguments():
    class Interface:
        def phase_start(self, phase_name, parent_phase, num_steps):
            """phase_start(self: IProgressMonitor, phase_name: str, parent_phase: str, num_steps: int) -> None"""

    class Ours(Interface):
        def phase_start(self, parent, phase, num_steps):  # the order this module once had
            pass

    assert callback_mismatches(Ours(), Interface) == [
        "Interface.phase_start: ours ['parent', 'phase', 'num_steps'], TensorRT's "
        "['phase_name', 'parent_phase', 'num_steps']"]


def test_the_check_fails_on_a_name_the_version_lacks():
    # TensorRT 11 removed the precision flags: asking for FP16 there must be reported
    result = check_version("11.4.0.106", "BuilderFlag.FP16", "ICudaEngine.device_memory_size")
    assert result["missing"] == ["BuilderFlag.FP16", "ICudaEngine.device_memory_size"]


@pytest.mark.parametrize(("module", "alias"), [("trt.py", "trt"), ("snippet.py", None)])
def test_compat_code_uses_only_listed_names(module, alias):
    # trt.py imports tensorrt as ``trt``; snippet.py's ``trt`` is the compat module, its engines and
    # contexts are TensorRT objects
    used = used_names((CUDA / module).read_text(), alias)
    assert used, "the scan found no TensorRT use at all: the scanner is broken"
    assert unlisted(used, compat.API) == []


def test_checkers_report_what_is_missing_or_unlisted():
    fake = types.SimpleNamespace(Builder=types.SimpleNamespace(create_network=1), float16=2)
    assert missing_names(fake, ["Builder.create_network", "Builder.gone", "Runtime", "float16"]) == \
        ["Builder.gone", "Runtime"]
    source = "x = trt.BuilderFlag.FP16\ny = engine.device_memory_size\nz = trt.ILogger.__init__\nw = other.thing\n"
    assert used_names(source) == {"BuilderFlag.FP16", "ICudaEngine.device_memory_size", "ILogger"}
    api = {"all": ("ILogger.ERROR", "BuilderFlag.TF32")}
    assert unlisted(used_names(source), api) == ["BuilderFlag.FP16", "ICudaEngine.device_memory_size"]


def test_sections_follow_the_major_version():
    assert compat.sections(8) == ("all", "8")
    assert compat.sections(10) == ("all", "10+", "10")
    assert compat.sections(11) == ("all", "10+")
    assert "BuilderFlag.FP16" not in {n for s in compat.sections(11) for n in compat.API[s]}
