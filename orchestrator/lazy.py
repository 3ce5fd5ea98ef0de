"""Lazy imports of optional GPU libraries: ``import orchestrator`` (and every submodule) works without
them; the first use of a missing one raises MissingDependencyError naming the module and the fix."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from .errors import MissingDependencyError

_INSTALL_HINTS = {
    "tensorrt": "pip install 'orchestrator[tensorrt]' (TensorRT >= 8.6)",
    "cuda": "pip install cuda-python (and an NVIDIA driver)",
}


class LazyModule(ModuleType):
    def __init__(self, name: str):
        super().__init__(name)
        self._module: ModuleType | None = None

    def _load(self) -> ModuleType:
        if self._module is None:
            try:
                self._module = importlib.import_module(self.__name__)
            except ImportError as exc:
                hint = _INSTALL_HINTS.get(self.__name__.split(".")[0], f"pip install {self.__name__}")
                raise MissingDependencyError(f"module '{self.__name__}' is needed for the CUDA backend but "
                                             f"cannot be imported ({exc}); install it with: {hint}") from None
            # From now on attributes are found in our own namespace: ``__getattr__`` (reached only after a
            # failed lookup, an exception inside) cost ~2 µs per driver call on the hot path.
            self.__dict__.update({k: v for k, v in vars(self._module).items() if not k.startswith("__")})
        return self._module

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._load(), attr)


def lazy_import(name: str) -> Any:
    return LazyModule(name)
