"""Evaluate a kernel's declared rules for concrete shapes: symbol bindings, output shapes, derived scalars
and the launch configuration. Pure Python; the CPU and CUDA backends share it."""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import ExecutionError
from ..pipeline import shapes
from ..pipeline.ir import KernelInfo

MAX_GRID = (2**31 - 1, 65535, 65535)  # CUDA's grid limits on every GPU since compute capability 3.0


def bind_symbols(kernel: KernelInfo, in_shapes: Mapping[str, tuple[int, ...]]) -> dict[str, int]:
    """Bind the symbols of the 'in' patterns (``[N, H, W, 3]``) to the actual input shapes."""
    env: dict[str, shapes.Dim] = {}
    for arg in kernel.args:
        if arg.kind == "in" and arg.shape is not None:
            mismatch = shapes.unify(arg.shape, in_shapes[arg.name], env)
            if mismatch:
                raise ExecutionError(f"kernel '{kernel.name}': argument '{arg.name}' of shape "
                                     f"{list(in_shapes[arg.name])}: {mismatch}")
    empty = [f"{sym} = {value}" for sym, value in env.items() if isinstance(value, int) and value < 1]
    if empty:  # shape rules are proven total for symbols >= 1 only
        raise ExecutionError(f"kernel '{kernel.name}': {', '.join(empty)}: a kernel's symbolic dimensions "
                             f"must be at least 1 (its inputs have an empty dimension)")
    return env  # type: ignore[return-value]


def out_shapes(kernel: KernelInfo, env: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
    return {a.name: tuple(int(shapes.evaluate(d, env)) for d in a.shape or ())
            for a in kernel.args if a.kind == "out"}


def derived_scalar(kernel: KernelInfo, name: str, env: Mapping[str, int]) -> int | float:
    value = kernel.arg(name).value
    return shapes.evaluate(value, env) if isinstance(value, str | int) else value  # type: ignore[return-value]


def launch_config(kernel: KernelInfo, env: Mapping[str, int],
                  tensor_shapes: Mapping[str, tuple[int, ...]]) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(grid, block) of a launch: one thread per element of ``launch.threads``, or the explicit grid."""
    launch = kernel.launch
    block = launch.block_dims
    if launch.threads is not None:
        count = 1
        for d in tensor_shapes[launch.threads]:
            count *= d
        per_block = block[0] * block[1] * block[2]
        grid = (max(1, -(-count // per_block)), 1, 1)
    else:
        dims = [int(shapes.evaluate(d, env)) for d in launch.grid or ()]
        dims += [1] * (3 - len(dims))
        grid = (max(1, dims[0]), max(1, dims[1]), max(1, dims[2]))
    for axis, (size, limit) in enumerate(zip(grid, MAX_GRID, strict=True)):
        if size > limit:
            raise ExecutionError(f"kernel '{kernel.name}': grid dimension {'xyz'[axis]} is {size} at these shapes; "
                                 f"CUDA allows at most {limit} (use more threads per block or a 2-D grid)")
    return grid, block  # type: ignore[return-value]
