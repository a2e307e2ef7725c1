"""Activation kernels: elementwise forward and backward.

Each kernel walks a dense tensor's storage in memory order (contiguous or
channels_last alike), BLOCK elements a program, offsets in int64 so tensors
past 2**31 elements are safe. Math in float32, stored in the input's dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .launch import ELEMENTWISE_BLOCK, ELEMENTWISE_WARPS, dense, elementwise_grid, same_layout


@triton.jit
def _relu_forward_kernel(
    x_ptr,  # input, n elements
    y_ptr,  # output, n elements, same layout as x
    n,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask)
    # x != x keeps NaN, as torch.relu does
    y = tl.where((x > 0) | (x != x), x, 0.0)
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _relu_backward_kernel(
    dy_ptr,  # upstream gradient, n elements
    y_ptr,  # forward output, n elements
    dx_ptr,  # input gradient, n elements
    n,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    dy = tl.load(dy_ptr + offs, mask=mask)
    y = tl.load(y_ptr + offs, mask=mask)
    dx = tl.where(y > 0, dy, 0.0)
    tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)


def relu_forward(x: torch.Tensor) -> torch.Tensor:
    x = dense(x)
    y = torch.empty_like(x)
    n = x.numel()
    if n:
        _relu_forward_kernel[elementwise_grid(n)](x, y, n, BLOCK=ELEMENTWISE_BLOCK, num_warps=ELEMENTWISE_WARPS)
    return y


def relu_backward(dy: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    y = dense(y)
    dy = same_layout(dy, y)
    dx = torch.empty_like(y)
    n = y.numel()
    if n:
        _relu_backward_kernel[elementwise_grid(n)](dy, y, dx, n, BLOCK=ELEMENTWISE_BLOCK, num_warps=ELEMENTWISE_WARPS)
    return dx
