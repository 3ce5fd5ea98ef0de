"""TensorRT's real Python API on any machine, and the checks of our compat module against it.

The real Python bindings of a TensorRT version, importable on a machine without TensorRT or a GPU:

PyPI's TensorRT library wheels cannot be had everywhere, but the bindings wheels can: we download the
bindings of one version and link them against stub libraries (every C entry point returns 0), so that
``import tensorrt`` works and every class, method, property and enum member can be inspected. Nothing can
be built or run with them. Cached under ~/.cache/orchestrator-tests/trt-api/VERSION.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

VERSIONS = ("8.6.1", "10.13.3.9", "11.4.0.106")  # the last of each major our users get
CACHE = Path(os.environ.get("ORCHESTRATOR_TEST_CACHE", Path.home() / ".cache" / "orchestrator-tests")) / "trt-api"
_KEEP = re.compile(r"@(GLIBC|GLIBCXX|CXXABI|GCC)|^(_?Py|_ITM_|_ZGTt|__gmon|__pthread|pthread_|dl(open|sym|close|error)$)")


def _package(version: str) -> str:
    major = int(version.split(".")[0])
    return "tensorrt-bindings" if major <= 8 else "tensorrt-cu12-bindings" if major == 10 else "tensorrt-cu13-bindings"


def _run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def bindings_env(version: str) -> dict[str, str]:
    """Environment variables under which ``import tensorrt`` gives ``version``'s real bindings."""
    root = CACHE / version
    if not (root / "ok").exists():
        _materialise(version, root)
    return _env(root)


def _env(root: Path) -> dict[str, str]:
    here = Path(__file__).resolve().parent
    path = [str(root / "site"), str(here.parent), str(here)]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path),
            "LD_LIBRARY_PATH": os.pathsep.join(filter(None, [str(root / "lib"), os.environ.get("LD_LIBRARY_PATH")]))}


def _materialise(version: str, root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
    (root / "dl").mkdir(parents=True)
    py = f"{sys.version_info[0]}{sys.version_info[1]}"
    _run(sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", py,
         "--implementation", "cp", "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
         "-d", str(root / "dl"), f"{_package(version)}=={version}")
    with zipfile.ZipFile(next((root / "dl").glob("*.whl"))) as wheel:
        wheel.extractall(root / "site")
    (root / "site" / "tensorrt_bindings").rename(root / "site" / "tensorrt")
    binding = next((root / "site" / "tensorrt").glob("tensorrt*.so"))
    _write_stubs(version, binding, root / "lib")
    check = subprocess.run([sys.executable, "-c", "import tensorrt"], env=_env(root), capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"TensorRT {version} bindings do not import: {check.stderr.strip()[-500:]}")
    (root / "ok").touch()


def _write_stubs(version: str, binding: Path, lib: Path) -> None:
    """One stub library per TensorRT library the bindings link, defining every symbol they import."""
    lib.mkdir(parents=True)
    symbols = sorted({line.split()[-1].split("@")[0] for line in _run("nm", "-D", "--undefined-only", str(binding)).splitlines()
                      if line.strip() and not _KEEP.search(line.split()[-1])})
    a, b, c = (int(x) for x in version.split(".")[:3])
    number = a * 10000 + b * 100 + c
    versioned = {"getInferLibVersion", "getNvOnnxParserVersion"}
    source = [f"void* {s}(void) {{ return 0; }}" for s in symbols if s not in versioned]
    source += [f"int {s}(void) {{ return {number}; }}" for s in sorted(versioned)]
    (lib / "stub.c").write_text("\n".join(source) + "\n")
    for soname in re.findall(r"Shared library: \[(libnv[^\]]*)\]", _run("readelf", "-d", str(binding))):
        _run("gcc", "-shared", "-fPIC", "-o", str(lib / soname), str(lib / "stub.c"), f"-Wl,-soname,{soname}")


# ---- the checks -------------------------------------------------------------------------------------
# Names of variables (or ``self.`` attributes) that hold TensorRT objects in the compat code, by class.
HOLDERS = {"builder": "Builder", "network": "INetworkDefinition", "parser": "OnnxParser", "config": "IBuilderConfig",
           "opt": "IOptimizationProfile", "tensor": "ITensor", "merged": "ITimingCache", "engine": "ICudaEngine",
           "context": "IExecutionContext", "ctx": "IExecutionContext"}


def missing_names(module, names) -> list[str]:
    """The dotted names (``Class.member``) that ``module`` lacks."""
    missing = []
    for name in names:
        obj = module
        for part in name.split("."):
            if not hasattr(obj, part):
                missing.append(name)
                break
            obj = getattr(obj, part)
    return missing


def used_names(source: str, alias: str | None = "trt") -> set[str]:
    """The TensorRT names a module's source uses: ``alias.X.Y`` chains (``alias``: the name tensorrt is
    imported as, None where it is not), and members of the variables in ``HOLDERS``
    (``engine.device_memory_size_v2`` -> ``ICudaEngine.device_memory_size_v2``)."""
    import ast

    used = set()
    tree = ast.parse(source)
    inner = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        chain, base = [node.attr], node.value
        while isinstance(base, ast.Attribute):
            chain.insert(0, base.attr)
            base = base.value
        if isinstance(base, ast.Name) and base.id == alias and id(node) not in inner:
            names = [part for part in chain if not part.startswith("__")]
            if names:
                used.add(".".join(names))
        holder = node.value.attr if isinstance(node.value, ast.Attribute) else getattr(node.value, "id", None)
        if holder in HOLDERS:
            used.add(f"{HOLDERS[holder]}.{node.attr}")
    return used


def unlisted(used: set[str], api: dict[str, tuple[str, ...]]) -> list[str]:
    """Used names that no section of ``api`` lists (prefixes of listed names count: ``trt.ILogger``)."""
    listed = {name for names in api.values() for name in names}
    prefixes = {".".join(n.split(".")[:i]) for n in listed for i in range(1, n.count(".") + 1)}
    return sorted(u for u in used if u not in listed and u not in prefixes)


def callback_mismatches(ours: object, base: type) -> list[str]:
    """Methods of our subclass ``ours`` of a TensorRT interface ``base`` whose parameter names differ from
    the interface's (TensorRT calls them positionally: a swapped order would go unnoticed)."""
    import inspect

    found = []
    for name, method in vars(type(ours)).items():
        if name.startswith("_") or not callable(method) or not hasattr(base, name):
            continue
        doc = (getattr(base, name).__doc__ or "").strip().splitlines()[0]
        theirs = [p.split(":")[0].strip() for p in doc[doc.index("(") + 1:doc.index(")")].split(",")][1:]
        mine = list(inspect.signature(method).parameters)[1:]
        if mine != theirs:
            found.append(f"{base.__name__}.{name}: ours {mine}, TensorRT's {theirs}")
    return found


CHECK = """
import json, sys
import tensorrt
from orchestrator.backends.cuda import trt as compat
from trt_api import callback_mismatches, missing_names
major = int(tensorrt.__version__.split(".")[0])
names = [n for s in compat.sections(major) for n in compat.API[s]] + sys.argv[1:]
callbacks = callback_mismatches(compat.logger(), tensorrt.ILogger)
monitor = compat._progress_monitor("check")
if monitor is not None:
    callbacks += callback_mismatches(monitor, tensorrt.IProgressMonitor)
print(json.dumps({"version": tensorrt.__version__, "sections": compat.sections(major),
                  "missing": missing_names(tensorrt, names), "callbacks": callbacks}))
"""


def check_version(version: str, *extra: str) -> dict:
    """Our compat module's names for ``version`` (plus ``extra``) checked against its real bindings."""
    import json

    out = subprocess.run([sys.executable, "-c", CHECK, *extra], env=bindings_env(version), capture_output=True,
                         text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"the API check under TensorRT {version} failed: {out.stderr.strip()[-800:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
