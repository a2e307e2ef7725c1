"""Dropout and DropBlock2d kernels, random numbers from Triton's Philox.

The random stream is lamina.rng's (the NumPy code reproduces it bit for bit):
a program of 4 * GROUP elements makes GROUP Philox calls (``tl.rand4x`` at
counters offset + program * GROUP + j) and gives the k-th of the four
uniforms to the k-th run of GROUP consecutive elements. So each program does
four contiguous, vectorized loads and stores, and the RNG costs a quarter of
a Philox call per element. Dropout walks a dense tensor's storage in memory
order (the mask is laid along memory order, and the output keeps the input's
layout); backward regenerates the same mask from (seed, offset), so no mask
is stored.

DropBlock2d: (1) Bernoulli block seeds on (N, C, H - b + 1, W - b + 1) in
row-major order from the same stream, one byte each; (2) the keep mask, one
byte an element in the input's layout (NCHW or channels_last), each element
dropped when a seed lies in the b x b window above-left of it, plus one
kept-count per program; (3) scale = numel / (eps + sum of the counts), on
the device, no atomics, so it is bit-identical run to run; (4) y = x * mask *
scale. Backward is step (4) on dy with the saved mask and scale.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..rng import GROUP
from .launch import cdiv, dense, same_layout

DROPOUT_WARPS = 4  # 128 threads x 8 elements = one GROUP run: 16-byte bf16 accesses
MASK_BLOCK = 1024
MASK_WARPS = 4


# --- dropout ----------------------------------------------------------------------

@triton.jit
def _stream_tile(seed, offset, pid, GROUP: tl.constexpr):
    """Program ``pid``'s 4 * GROUP elements of the dropout stream (lamina.rng)
    as one (4, GROUP) tile: their offsets, row k the k-th run of GROUP
    consecutive elements, and their uniforms, row k the k-th words of the
    program's GROUP Philox calls. (As four 1-D runs, each run's uniforms came
    out of Philox in another layout than its loads and went through shared
    memory: four round trips and barriers a program, sm_90 SASS.)"""
    j = tl.arange(0, GROUP)
    u0, u1, u2, u3 = tl.rand4x(seed, offset + pid * GROUP + j)
    # [j, m, h] = word 2h + m; moved to [h, m, j], row 2h + m is word 2h + m
    u = tl.reshape(tl.permute(tl.join(tl.join(u0, u1), tl.join(u2, u3)), (2, 1, 0)), (4, GROUP))
    offs = pid * (4 * GROUP) + tl.arange(0, 4)[:, None] * GROUP + j[None, :]
    return offs, u


@triton.jit(do_not_specialize=["offset"])
def _dropout_kernel(
    x_ptr,  # input (or dy), n elements, dense
    y_ptr,  # output (or dx), n elements, x's layout
    n,
    p,  # float32: keep when u >= p
    multiplier,  # float32: 1 / (1 - p), 0 when p == 1
    seed_ptr,  # int64, one element: the Philox seed (read on the device: no host sync)
    offset,  # first Philox counter
    GROUP: tl.constexpr,
):
    offs, u = _stream_tile(tl.load(seed_ptr), offset, tl.program_id(0).to(tl.int64), GROUP)
    inside = offs < n
    x = tl.load(x_ptr + offs, mask=inside)
    y = x.to(tl.float32) * tl.where(u >= p, multiplier, 0.0)  # a dropped x becomes x * 0: NaN stays NaN, as in torch
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=inside)


def _dropout(x: torch.Tensor, p: float, seed: torch.Tensor, offset: int) -> torch.Tensor:
    y = torch.empty_like(x)
    n = x.numel()
    if n:
        multiplier = 0.0 if p == 1 else 1.0 / (1.0 - p)
        grid = (cdiv(n, 4 * GROUP),)
        _dropout_kernel[grid](x, y, n, p, multiplier, seed, offset, GROUP=GROUP, num_warps=DROPOUT_WARPS)
    return y


def dropout_forward(x: torch.Tensor, p: float, seed: torch.Tensor, offset: int) -> torch.Tensor:
    """y = x * mask / (1 - p); the mask runs along x's memory order (a
    non-dense x is made contiguous first). ``seed``: one int64 on x's device."""
    return _dropout(dense(x), p, seed, offset)


def dropout_backward(dy: torch.Tensor, p: float, seed: torch.Tensor, offset: int) -> torch.Tensor:
    """dx = dy * mask / (1 - p), the forward's mask regenerated. dy must
    already have the forward output's layout (the caller restrides it)."""
    return _dropout(dense(dy), p, seed, offset)


# --- DropBlock2d ------------------------------------------------------------------

@triton.jit(do_not_specialize=["offset"])
def _bernoulli_kernel(
    z_ptr,  # uint8 block seeds, n elements, row-major (N, C, H - b + 1, W - b + 1)
    n,
    prob,  # float32: z = [u < prob]
    seed_ptr,  # int64, one element: the Philox seed
    offset,
    GROUP: tl.constexpr,
):
    seed = tl.load(seed_ptr)
    pid = tl.program_id(0).to(tl.int64)
    j = tl.arange(0, GROUP)
    u0, u1, u2, u3 = tl.rand4x(seed, offset + pid * GROUP + j)
    start = pid * (4 * GROUP) + j
    tl.store(z_ptr + start, (u0 < prob).to(tl.uint8), mask=start < n)
    tl.store(z_ptr + start + GROUP, (u1 < prob).to(tl.uint8), mask=start + GROUP < n)
    tl.store(z_ptr + start + 2 * GROUP, (u2 < prob).to(tl.uint8), mask=start + 2 * GROUP < n)
    tl.store(z_ptr + start + 3 * GROUP, (u3 < prob).to(tl.uint8), mask=start + 3 * GROUP < n)


@triton.jit
def _drop_block_mask_kernel(
    z_ptr,  # uint8 block seeds, row-major (N, C, HZ, WZ)
    mask_ptr,  # uint8 keep mask, n = N*C*H*W elements in the input's layout
    count_ptr,  # int32 kept elements, one per program
    C, H, W, HZ, WZ, n,
    BLOCK_SIZE: tl.constexpr,  # b, the (odd) block side
    CHANNELS_LAST: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    # the logical (n, c, h, w) of each storage position
    if CHANNELS_LAST:
        c = offs % C
        rest = offs // C
        w = rest % W
        rest = rest // W
        h = rest % H
        b = rest // H
    else:
        w = offs % W
        rest = offs // W
        h = rest % H
        rest = rest // H
        c = rest % C
        b = rest // C
    plane = (b * C + c) * HZ
    dropped = tl.zeros([BLOCK], dtype=tl.int1)
    # a seed at (i, j) drops rows i..i+b-1 and columns j..j+b-1
    for dh in tl.static_range(BLOCK_SIZE):
        i = h - dh
        row_ok = inside & (i >= 0) & (i < HZ)
        for dw in tl.static_range(BLOCK_SIZE):
            j = w - dw
            ok = row_ok & (j >= 0) & (j < WZ)
            z = tl.load(z_ptr + (plane + i) * WZ + j, mask=ok, other=0)
            dropped = dropped | (z != 0)
    keep = tl.where(dropped, 0, 1).to(tl.int32)
    tl.store(mask_ptr + offs, keep.to(tl.uint8), mask=inside)
    tl.store(count_ptr + pid, tl.sum(tl.where(inside, keep, 0), axis=0))


@triton.jit
def _masked_scale_kernel(
    x_ptr,  # input (or dy), n elements
    mask_ptr,  # uint8 keep mask, n elements, same layout
    scale_ptr,  # one number: numel / (eps + kept), float32 (float64 for float64 x)
    y_ptr,  # output (or dx), n elements, same layout
    n,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    x = tl.load(x_ptr + offs, mask=inside)
    keep = tl.load(mask_ptr + offs, mask=inside, other=0)
    scale = tl.load(scale_ptr)
    y = x.to(scale.dtype) * tl.where(keep != 0, scale, 0.0)
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=inside)


def _drop_block_layout(x: torch.Tensor):
    """x in a layout the mask kernel walks (NCHW or channels_last), and which."""
    if x.is_contiguous():  # first: a tensor can be both (C == 1 or H == W == 1)
        return x, False
    if x.is_contiguous(memory_format=torch.channels_last):
        return x, True
    return x.contiguous(), False


def _masked_scale(x: torch.Tensor, mask: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    y = torch.empty_like(mask, dtype=x.dtype)
    n = x.numel()
    if n:
        grid = (cdiv(n, 4 * GROUP),)
        _masked_scale_kernel[grid](x, mask, scale, y, n, BLOCK=4 * GROUP, num_warps=DROPOUT_WARPS)
    return y


def drop_block2d_forward(x: torch.Tensor, p: float, block_size: int, eps: float, seed: torch.Tensor, offset: int):
    """Returns (y, mask, scale): mask uint8 in y's layout, scale a 1-element
    tensor; backward needs exactly these two."""
    x, channels_last = _drop_block_layout(x)
    N, C, H, W = x.shape
    HZ, WZ = H - block_size + 1, W - block_size + 1
    gamma = (p * H * W) / (block_size**2 * (HZ * WZ))
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32

    z = torch.empty((N, C, HZ, WZ), dtype=torch.uint8, device=x.device)
    if z.numel():
        grid = (cdiv(z.numel(), 4 * GROUP),)
        _bernoulli_kernel[grid](z, z.numel(), gamma, seed, offset, GROUP=GROUP, num_warps=DROPOUT_WARPS)

    n = x.numel()
    layout = torch.channels_last if channels_last else torch.contiguous_format
    mask = torch.empty_like(x, dtype=torch.uint8, memory_format=layout)
    counts = torch.zeros(max(cdiv(n, MASK_BLOCK), 1), dtype=torch.int32, device=x.device)
    if n:
        _drop_block_mask_kernel[(cdiv(n, MASK_BLOCK),)](
            z, mask, counts, C, H, W, HZ, WZ, n,
            BLOCK_SIZE=block_size, CHANNELS_LAST=channels_last, BLOCK=MASK_BLOCK, num_warps=MASK_WARPS,
        )
    # the second pass of the count reduction; the division stays on the device
    # (float32 arithmetic for float32..bfloat16 input, as the reference does)
    kept = counts.sum(dtype=torch.int64).to(compute) + eps
    scale = torch.full((1,), float(n), dtype=compute, device=x.device) / kept
    return _masked_scale(x, mask, scale), mask, scale


def drop_block2d_backward(dy: torch.Tensor, mask: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """dx = dy * mask * scale."""
    return _masked_scale(same_layout(dy, mask), mask, scale)
