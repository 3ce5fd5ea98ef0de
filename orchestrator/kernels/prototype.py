"""Check a kernel description against its CUDA function without a GPU: the number, order and types of the
``__global__`` function's parameters are compared at compile time by ``static_assert``s that NVRTC
evaluates on ``decltype(&entry)`` (which also works for templates, ``entry<float>``).

The checks are appended to the kernel's source under a ``#line`` of their own, so their diagnostics are
told apart from the user's; each failing assertion names the argument it is about.
"""

from __future__ import annotations

import re

from ..errors import Problem
from ..pipeline.ir import KernelInfo

CHECK_FILE = "<orchestrator signature check>"
MAX_PARAMS = 64

# C types accepted for each dtype; float16/bf16-like storage is any 2-byte type (half_t, __half, ...)
_C_TYPES = {"float32": ("float",), "int8": ("signed char", "char"), "uint8": ("unsigned char",),
            "int32": ("int",), "int64": ("long long", "long"), "bool": ("bool",)}

_PRELUDE = """
namespace orchestrator_check {
struct oc_none {};
template <class OcF> struct oc_fn { static constexpr int oc_arity = -1; };
template <class OcR, class... OcP> struct oc_fn<OcR (*)(OcP...)> { static constexpr int oc_arity = sizeof...(OcP); };
template <int OcI, class... OcP> struct oc_at { using oc_type = oc_none; };
template <class OcH, class... OcT> struct oc_at<0, OcH, OcT...> { using oc_type = OcH; };
template <int OcI, class OcH, class... OcT> struct oc_at<OcI, OcH, OcT...> {
  using oc_type = typename oc_at<OcI - 1, OcT...>::oc_type;
};
template <int OcI, class OcF> struct oc_param { using oc_type = oc_none; };
template <int OcI, class OcR, class... OcP> struct oc_param<OcI, OcR (*)(OcP...)> {
  using oc_type = typename oc_at<OcI, OcP...>::oc_type;
};
template <class OcA, class OcB> struct oc_same { static constexpr bool oc_value = false; };
template <class OcA> struct oc_same<OcA, OcA> { static constexpr bool oc_value = true; };
template <class OcT> struct oc_ptr { static constexpr bool oc_value = false, oc_const = false; using oc_to = oc_none; };
template <class OcT> struct oc_ptr<OcT*> { static constexpr bool oc_value = true, oc_const = false; using oc_to = OcT; };
template <class OcT> struct oc_ptr<const OcT*> {
  static constexpr bool oc_value = true, oc_const = true;
  using oc_to = OcT;
};
template <class OcT> struct oc_ptr<volatile OcT*> : oc_ptr<OcT*> {};
template <class OcT> struct oc_ptr<const volatile OcT*> : oc_ptr<const OcT*> {};
template <class OcT> struct oc_size { static constexpr unsigned oc_value = sizeof(OcT); };
template <> struct oc_size<void> { static constexpr unsigned oc_value = 0; };
template <> struct oc_size<const void> { static constexpr unsigned oc_value = 0; };
template <> struct oc_size<oc_none> { static constexpr unsigned oc_value = 0; };
}  // namespace orchestrator_check
"""

_MARK = re.compile(r'static assertion failed with "orchestrator-check (?P<what>arity|arg) (?P<n>\d+)"')


def expression(kernel: KernelInfo) -> str:
    return f"{kernel.entry}<{', '.join(kernel.template_args)}>" if kernel.template_args else kernel.entry


def check_source(kernel: KernelInfo) -> str:
    """The static checks to append to the kernel's source."""
    n = len(kernel.args)
    lines = [f'\n#line 1 "{CHECK_FILE}"', _PRELUDE, "namespace orchestrator_check {",
             f"using oc_entry = decltype(&{expression(kernel)});"]
    lines += [f'static_assert(oc_fn<oc_entry>::oc_arity != {k}, "orchestrator-check arity {k}");'
              for k in range(MAX_PARAMS + 1) if k != n]
    for i, arg in enumerate(kernel.args):
        p = f"typename oc_param<{i}, oc_entry>::oc_type"
        lines.append(f'static_assert(oc_fn<oc_entry>::oc_arity != {n} || ({_condition(arg.kind, arg.dtype, p)}), '
                     f'"orchestrator-check arg {i}");')
    lines.append("}  // namespace orchestrator_check")
    return "\n".join(lines) + "\n"


def _condition(kind: str, dtype: str, p: str) -> str:
    if kind == "scalar":
        return _is_type(dtype, p)
    pointee = f"typename oc_ptr<{p}>::oc_to"
    const_ok = "true" if kind == "in" else f"!oc_ptr<{p}>::oc_const"
    return f"oc_ptr<{p}>::oc_value && {const_ok} && {_is_type(dtype, pointee)}"


def _is_type(dtype: str, t: str) -> str:
    if dtype in ("float16", "bfloat16"):
        return f"oc_size<{t}>::oc_value == 2"
    return "(" + " || ".join(f"oc_same<{t}, {c}>::oc_value" for c in _C_TYPES[dtype]) + ")"


def expected_type(kind: str, dtype: str) -> str:
    base = "a 2-byte type such as half_t" if dtype in ("float16", "bfloat16") else " or ".join(_C_TYPES[dtype])
    if kind == "scalar":
        return base
    return f"a pointer to {base}" + (" (const allowed)" if kind == "in" else " (not const: the kernel writes it)")


def problems(kernel: KernelInfo, log_text: str) -> list[Problem]:
    """The description/function mismatches found in an NVRTC log of the checked source, one per argument
    (or one for the parameter count), at the argument's place in the description."""
    found: list[Problem] = []
    listed = ", ".join(f"{a.name} ({a.kind} {a.dtype})" for a in kernel.args)
    for match in _MARK.finditer(log_text):
        n = int(match["n"])
        if match["what"] == "arity":
            found.append(Problem(_where(kernel, None), f"kernel '{kernel.name}': the CUDA function "
                                 f"{expression(kernel)} has {n} parameter(s), but the description lists "
                                 f"{len(kernel.args)} argument(s) ({listed}), in the order of the parameters"))
        else:
            arg = kernel.args[n]
            found.append(Problem(_where(kernel, n), f"kernel '{kernel.name}': parameter {n + 1} of "
                                 f"{expression(kernel)} does not match argument '{arg.name}' ({arg.kind} "
                                 f"{arg.dtype}): expected {expected_type(arg.kind, arg.dtype)}"))
    return found


def _where(kernel: KernelInfo, index: int | None):
    if index is not None and index < len(kernel.arg_locations):
        return kernel.arg_locations[index]
    return kernel.args_location or kernel.location
