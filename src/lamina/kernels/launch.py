"""Shared launch helpers for the Triton kernels: block sizes, warps, layouts.

One place for the heuristics so that every family launches the same way.
"""

from __future__ import annotations

import os

import torch

# Elementwise kernels: each program handles ELEMENTWISE_BLOCK elements; 16-byte
# vector accesses need at least 4 (fp32) or 8 (16-bit) contiguous elements a
# thread, and a large block keeps enough loads in flight to reach bandwidth.
ELEMENTWISE_BLOCK = 4096
ELEMENTWISE_WARPS = 8


# Host-side arithmetic in plain Python: triton.cdiv and triton.next_power_of_2
# are constexpr functions in Triton 3.6, about 1 us a call (argument
# unwrapping), and a norm's forward+backward made two dozen of them.
def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The least power of two >= n (0 for 0, as Triton's)."""
    return 1 << (n - 1).bit_length() if n > 0 else 0


def elementwise_grid(n: int, block: int = ELEMENTWISE_BLOCK):
    return (cdiv(n, block),)


def row_block(n_cols: int) -> int:
    """The power of two that holds a whole row (for one-row-per-program norms)."""
    return next_power_of_2(max(int(n_cols), 1))


def warps_for(block: int) -> int:
    """More warps for wider rows: about 256 elements a warp, 1 to 16 warps."""
    return max(1, min(16, block // 256))


def is_dense(t: torch.Tensor) -> bool:
    """True when ``t`` covers its storage span without gaps or overlaps in some
    dimension order (contiguous, channels_last, any permutation of them)."""
    if t.is_contiguous():
        return True
    expected = 1
    for size, stride in sorted(zip(t.shape, t.stride()), key=lambda p: p[1]):
        if size == 1:
            continue
        if stride != expected:
            return False
        expected *= size
    return True


def dense(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself when dense (any dimension order), else a contiguous copy.
    Elementwise kernels walk a dense tensor's storage in memory order, so the
    output keeps the input's memory format."""
    return t if is_dense(t) else t.contiguous()


def same_layout(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` with exactly ``like``'s strides (copied only when they differ), so
    two tensors can be walked with one flat index."""
    if t.stride() == like.stride() and is_dense(t):
        return t
    out = torch.empty_like(like, dtype=t.dtype)
    out.copy_(t)
    return out


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


if os.environ.get("TRITON_INTERPRET") == "1":
    _interpreter_loops_fix()
