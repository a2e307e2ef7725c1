"""Shared launch helpers for the Triton kernels: block sizes, warps, layouts.

One place for the heuristics so that every family launches the same way.
"""

from __future__ import annotations

import os

import torch

from ..layout import empty_result, is_dense
from ..layout import like as same_layout  # noqa: F401  (the kernels' name for it)

# Unused pointers: a kernel whose flags leave a pointer unused still takes a
# tensor for it. lamina passes one the kernel only reads (usually the input),
# never one it writes: traced by torch.compile (fast_launch.py), a written
# tensor is replaced by a functional copy under the name it is written
# through, and under any other name the graph would keep the stale original.
# tests/gpu_trace_on_meta.py checks that no traced launch has such an alias.

# Elementwise kernels: ELEMENTWISE_WARPS warps a program, each thread one
# 16-byte vector access (elementwise_block). Measured on an H200 with
# scripts/tune_elementwise.py (2**26 elements, ReLU forward, 2026-11-28):
# fp32 1024 elements a program 4157 GB/s, bf16 2048 3953, against 3922 / 3811
# for the 4096 used before, copy 4158 / 3951 and torch 4124 / 3940.
ELEMENTWISE_WARPS = 8


def elementwise_block(element_size: int) -> int:
    """Elements a program for an elementwise kernel over ``element_size``-byte
    values: one 16-byte vector a thread."""
    return 32 * ELEMENTWISE_WARPS * max(1, 16 // element_size)


# Host-side arithmetic in plain Python: triton.cdiv and triton.next_power_of_2
# are constexpr functions in Triton 3.6, about 1 us a call (argument
# unwrapping), and a norm's forward+backward made two dozen of them.
def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The least power of two >= n (0 for 0, as Triton's)."""
    return 1 << (n - 1).bit_length() if n > 0 else 0


def elementwise_grid(n: int, block: int):
    return (cdiv(n, block),)


def row_block(n_cols: int) -> int:
    """The power of two that holds a whole row (for one-row-per-program norms)."""
    return next_power_of_2(max(int(n_cols), 1))


def warps_for(block: int) -> int:
    """More warps for wider rows: about 256 elements a warp, 1 to 16 warps."""
    return max(1, min(16, block // 256))


def dense(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself when dense (any dimension order), else a dense copy in the
    layout PyTorch gives an elementwise result of ``t`` (lamina.layout).
    Elementwise kernels walk a dense tensor's storage in memory order, so the
    output keeps the input's memory format."""
    return t if is_dense(t) else empty_result((t,)).copy_(t)


def _interpreter_loops_fix() -> None:
    """Triton 3.6's interpreter turns a loop bound into a Python int with
    int(array of shape (1,)), which NumPy >= 2.4 refuses, so any
    ``range(.., runtime_value)`` fails under TRITON_INTERPRET=1. Convert
    through .item() instead. Interpreter only; compiled kernels are untouched."""
    from triton.runtime import interpreter

    original = interpreter._patch_lang_tensor
    if getattr(original, "_lamina_fixed", False):
        return

    def patch(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]) if self.handle.data.size == 1 else int(self.handle.data))

    patch._lamina_fixed = True
    interpreter._patch_lang_tensor = patch


def quiet_overflow(module) -> None:
    """Interpreter only: on a GPU exp overflows to inf without a word, and
    the 16-bit sigmoid (activation.py's _logistic_log2) relies on it; NumPy, which
    the interpreter computes with, warns. Each interpreted kernel of
    ``module`` runs under np.errstate(over="ignore"): as quiet as the card
    (other floating-point warnings stay on)."""
    import numpy as np

    for kernel in vars(module).values():
        if type(kernel).__name__ != "InterpretedFunction" or getattr(kernel, "_lamina_quiet", False):
            continue

        def run(*args, _run=kernel.run, **kwargs):
            with np.errstate(over="ignore"):
                return _run(*args, **kwargs)

        kernel.run = run
        kernel._lamina_quiet = True


if os.environ.get("TRITON_INTERPRET") == "1":
    _interpreter_loops_fix()
