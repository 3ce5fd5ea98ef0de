"""One exception tree for everything the user can get wrong, and a separate class for our own bugs.

Every user-facing error renders as one line: ``file:line:col: yaml.path: what is wrong (expected ...)``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_LONG_QUOTED = re.compile(r"(?<!\w)'([^'\s]{81,})'")


def shorten(text: str) -> str:
    """Quoted values longer than 80 characters shown by their start and length (a pasted 100,000-character
    name must not flood the terminal)."""
    return _LONG_QUOTED.sub(lambda m: f"'{m[1][:60]}...' ({len(m[1])} characters)", text)


@dataclass(frozen=True)
class Location:
    """Where in a source file a problem is: the file, 1-based line and column, and the YAML path."""

    file: str
    line: int | None = None
    column: int | None = None
    path: str = ""

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.path}" if self.path else where


@dataclass(frozen=True)
class Problem:
    """One finding of validation: an error or a warning at a location."""

    location: Location
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        tag = "warning: " if self.severity == "warning" else ""
        return shorten(f"{self.location}: {tag}{self.message}")


class OrchestratorError(Exception):
    """Base of every error caused by user input (pipelines, inputs, kernels, models)."""


class ConfigError(OrchestratorError):
    """A pipeline (or a file it names) is invalid. Carries every problem found, one line each."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = [p for p in problems if p.severity == "error"]
        super().__init__("\n".join(str(p) for p in self.problems))


class CompileError(OrchestratorError):
    """A custom kernel failed to compile or a TensorRT engine failed to build."""


class InputError(OrchestratorError):
    """The inputs handed to ``Orchestrator.run`` do not match the pipeline's declared inputs."""


class ExecutionError(OrchestratorError):
    """A step failed while running (a reference function raised, a CUDA call failed, ...)."""


class DeviceError(ExecutionError):
    """The GPU, its driver or the CUDA libraries failed: not the user's input, and not our bug either."""


class CacheError(OrchestratorError):
    """The cache directory cannot be created, read or written."""


class MissingDependencyError(OrchestratorError):
    """An optional library (TensorRT, a CUDA driver) is needed for what was asked but is absent."""


class InternalError(Exception):
    """A bug in orchestrator itself, not in the user's input. Please report it."""
