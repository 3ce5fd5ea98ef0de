"""A pool of execution instances: ``run`` from any thread takes a free one (blocking, with an optional
timeout) and gives it back when done, so N instances serve N concurrent runs."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

from .errors import ExecutionError

T = TypeVar("T")


class PoolTimeout(ExecutionError):
    """No instance became free within the timeout."""


class ClosedError(ExecutionError):
    """The Orchestrator was used after ``close()``."""


class InstancePool(Generic[T]):
    """Hands out instances one caller at a time. Last in, first out: at low concurrency the same
    (warm) instance serves every run."""

    def __init__(self, instances: list[T], timeout: float | None = None):
        self.instances = list(instances)
        self.timeout = timeout
        self._free: queue.LifoQueue[T] = queue.LifoQueue()
        for instance in self.instances:
            self._free.put(instance)
        self._closed = threading.Event()
        self._held = threading.local()  # how many instances the current thread holds

    @contextmanager
    def acquire(self, timeout: float | None = None) -> Iterator[T]:
        """A free instance for the duration of the ``with`` block."""
        instance = self.take(timeout)
        try:
            yield instance
        finally:
            self.give(instance)

    def give(self, instance: T) -> None:
        """Return an instance from ``take``."""
        self._held.count = getattr(self._held, "count", 1) - 1
        self._free.put(instance)

    def take(self, timeout: float | None = None) -> T:
        """A free instance (waiting up to ``timeout`` s, default the pool's); give it back with ``give``."""
        timeout = self.timeout if timeout is None else timeout
        if self._closed.is_set():
            raise ClosedError("Orchestrator used after close()")
        held = getattr(self._held, "count", 0)
        if held >= len(self.instances) and timeout is None:  # it would wait for this very thread, forever
            raise ExecutionError(f"run() called while this thread already holds all {held} instance(s) "
                                 f"(from an observer callback, or inside acquire()); it would wait forever: "
                                 f"run it after the outer run returns, or pass more instances=")
        try:
            instance = self._free.get(timeout=timeout)
        except queue.Empty:
            raise PoolTimeout(f"no free instance within {timeout:g} s (all {len(self.instances)} busy); "
                              f"pass more instances= or a longer timeout=") from None
        if self._closed.is_set():
            self._free.put(instance)
            raise ClosedError("Orchestrator used after close()")
        self._held.count = held + 1
        return instance

    def drain(self) -> list[T]:
        """Mark closed and wait until every instance is back (runs in flight finish first)."""
        self._closed.set()
        return [self._free.get() for _ in self.instances]
