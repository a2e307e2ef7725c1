"""Normalization kernels and their launchers. Statistics in float32;
cross-program reductions through float32 partial buffers and a second pass
(no atomics), so results are bit-identical run after run."""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from .activation import IDENTITY, _act, _act_grad
from .launch import cdiv, next_power_of_2, row_block, same_layout, warps_for


# =============================================================================
# batch and instance norm
# =============================================================================


#
# A batch-norm input (N, C, *) reaches the kernels in one of two dense layouts:
#
#   "rows": NCHW-contiguous. Seen as a (N*C, S) matrix, S = prod(*): row n*C + c
#           holds channel c of sample n, S contiguous values.
#   "cols": channels_last, or (N, C). Seen as a (N*S, C) row-major matrix: a
#           channel is a column, so its statistics are a column reduction and
#           programs read blocks of rows x a block of contiguous channels.
#
# Training forward = a statistics pass (each program: a slice of one channel, or
# of a block of channels, writes float32 partial (count, mean, M2)), a tiny
# combine pass (Chan's parallel-variance formula across the partials, then
# mean, biased variance and rstd), and a normalize pass. Backward = a
# reduction pass (partial sum(dy), sum(dy * (x - mean))), a tiny combine pass
# (dbias, dweight) and an elementwise dx pass. Partial buffers, not atomics:
# results are bit-identical run to run. Eval = the normalize pass alone.
#
# Instance norm is the same passes with one statistic per (n, c): on rows the
# (1, N*C, S) view, on columns one group of S rows per sample.
#
# Within a program the variance is accumulated around a shift, the mean of the
# program's first tile: sum(x - K) and sum((x - K)^2). With K close to the
# mean nothing large cancels (x = 1e4 + N(0, 1) keeps its unit variance).

_REDUCE_TILE = 2048  # elements a reduction program loads per step
_ELEMENTWISE_TILE = 4096  # elements an elementwise program handles
_REDUCE_WARPS = 4
_REDUCE_PROGRAMS_PER_SM = 8  # the reduction pass's programs, all told (_splits)
_MAX_SPLITS = 1024  # the combine kernels read all of a channel's partials at once
_ELEMENTWISE_WARPS = 8


@triton.jit
def _bn_reduce_rows_kernel(
    x_ptr,  # (N, C, S) contiguous input
    dy_ptr,  # (N, C, S) upstream gradient (BACKWARD only)
    mean_ptr,  # (C,) float32 channel means (BACKWARD only)
    part_ptr,  # (3, P, C) float32 partials
    N, C, S, tiles_per_prog, s_blocks,
    BACKWARD: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_S: tl.constexpr,
):
    """Program (c, p) of P reduces tiles p, p + P, p + 2P, .. (tiles_per_prog
    of them) of channel c, a tile being BLOCK_N samples x BLOCK_S contiguous
    positions. Interleaved, the P programs read neighbouring tiles at any
    moment: batch norm's channels_last statistics 3757 -> 3807 GB/s (fp32
    64x64x112x112 forward, GPU time, H200, scripts/probe_forward_tiles.py)
    against runs of tiles_per_prog tiles a program; the other layouts the same.
    Statistics: writes (count, mean, M2). BACKWARD: writes (sum dy, sum dy*(x-mean))."""
    c = tl.program_id(0)
    p = tl.program_id(1)
    P = tl.num_programs(1)
    n_tiles = (N + BLOCK_N - 1) // BLOCK_N * s_blocks
    t0 = p  # the first tile (the shift is its mean)
    rn = tl.arange(0, BLOCK_N)[:, None]
    rs = tl.arange(0, BLOCK_S)[None, :]
    if BACKWARD:
        shift = tl.load(mean_ptr + c)
    else:
        # the shift: mean of this program's first tile
        n = (t0 // s_blocks) * BLOCK_N + rn
        s = (t0 % s_blocks) * BLOCK_S + rs
        mask = (n < N) & (s < S)
        x = tl.load(x_ptr + (n.to(tl.int64) * C + c) * S + s, mask=mask, other=0.0).to(tl.float32)
        shift = tl.sum(x) / tl.sum(mask.to(tl.float32))
    acc1 = tl.zeros((BLOCK_N, BLOCK_S), dtype=tl.float32)
    acc2 = tl.zeros((BLOCK_N, BLOCK_S), dtype=tl.float32)
    count = 0
    # a while loop: Triton's interpreter cannot take a runtime bound in range()
    i = 0
    while i < tiles_per_prog:
        # the last programs may run past n_tiles: those tiles are all masked
        t = p + i * P
        n = (t // s_blocks) * BLOCK_N + rn
        s = (t % s_blocks) * BLOCK_S + rs
        mask = (n < N) & (s < S)
        offs = (n.to(tl.int64) * C + c) * S + s
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        d = tl.where(mask, x - shift, 0.0)
        if BACKWARD:
            g = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            acc1 += g
            acc2 += g * d
        else:
            acc1 += d
            acc2 += d * d
            count += tl.where(
                t < n_tiles,
                tl.minimum(N - (t // s_blocks) * BLOCK_N, BLOCK_N) * tl.minimum(S - (t % s_blocks) * BLOCK_S, BLOCK_S),
                0,
            )
        i += 1
    s1 = tl.sum(acc1)
    s2 = tl.sum(acc2)
    out = part_ptr + p * C + c
    if BACKWARD:
        tl.store(out, s1)
        tl.store(out + P * C, s2)
    else:
        cnt = count.to(tl.float32)
        tl.store(out, cnt)
        tl.store(out + P * C, shift + s1 / cnt)
        tl.store(out + 2 * P * C, s2 - s1 * (s1 / cnt))


@triton.jit
def _bn_reduce_cols_kernel(
    x_ptr,  # (G, R, C) row-major input
    dy_ptr,  # (G, R, C) upstream gradient (BACKWARD only)
    mean_ptr,  # (G * C,) float32 channel means (BACKWARD only)
    part_ptr,  # (3, P, G * C) float32 partials
    R, C, tiles_per_prog,
    BACKWARD: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """Program (cb, p, g) reduces row tiles p, p + P, .. (tiles_per_prog of
    them, interleaved as in _bn_reduce_rows_kernel) of the channel block cb
    of group g: BLOCK_R rows x BLOCK_C contiguous channels a step. Batch
    norm has one group of N*S rows; instance norm one group of S rows per
    sample, each (n, c) its own statistic g * C + c.
    Outputs as in _bn_reduce_rows_kernel, one per channel of the block."""
    cb = tl.program_id(0)
    p = tl.program_id(1)
    P = tl.num_programs(1)
    group = tl.program_id(2)
    CT = C * tl.num_programs(2)  # statistics in all
    x_ptr += group.to(tl.int64) * R * C
    dy_ptr += group.to(tl.int64) * R * C
    mean_ptr += group * C
    part_ptr += group * C
    t0 = p  # the first tile (the shift is its mean)
    cols = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < C
    rr = tl.arange(0, BLOCK_R)[:, None]
    if BACKWARD:
        shift = tl.load(mean_ptr + cols, mask=cmask, other=0.0)[None, :]
    else:
        rows = t0 * BLOCK_R + rr
        mask = (rows < R) & cmask[None, :]
        x = tl.load(x_ptr + rows.to(tl.int64) * C + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        shift = (tl.sum(x, axis=0) / tl.minimum(R - t0 * BLOCK_R, BLOCK_R))[None, :]
    acc1 = tl.zeros((BLOCK_R, BLOCK_C), dtype=tl.float32)
    acc2 = tl.zeros((BLOCK_R, BLOCK_C), dtype=tl.float32)
    count = 0
    i = 0
    while i < tiles_per_prog:  # past the last tile the rows are all masked
        t = p + i * P
        rows = t * BLOCK_R + rr
        mask = (rows < R) & cmask[None, :]
        offs = rows.to(tl.int64) * C + cols[None, :]
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        d = tl.where(mask, x - shift, 0.0)
        if BACKWARD:
            g = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            acc1 += g
            acc2 += g * d
        else:
            acc1 += d
            acc2 += d * d
            count += tl.maximum(tl.minimum(R - t * BLOCK_R, BLOCK_R), 0)
        i += 1
    s1 = tl.sum(acc1, axis=0)
    s2 = tl.sum(acc2, axis=0)
    out = part_ptr + p * CT + cols
    if BACKWARD:
        tl.store(out, s1, mask=cmask)
        tl.store(out + P * CT, s2, mask=cmask)
    else:
        cnt = count.to(tl.float32)
        tl.store(out, tl.zeros_like(s1) + cnt, mask=cmask)
        tl.store(out + P * CT, tl.sum(shift, axis=0) + s1 / cnt, mask=cmask)
        tl.store(out + 2 * P * CT, s2 - s1 * (s1 / cnt), mask=cmask)


@triton.jit
def _bn_stats_combine_kernel(
    part_ptr,  # (3, P, C) float32 partial (count, mean, M2)
    mean_ptr,  # (C,) float32 out: mean
    var_ptr,  # (C,) float32 out: biased variance
    rstd_ptr,  # (C,) float32 out: 1 / sqrt(var + eps)
    P, C, M, eps,  # M: values per channel, as a float
    BLOCK_P: tl.constexpr,  # >= P: one program sees all partials of its channels
    BLOCK_C: tl.constexpr,
):
    """Chan et al.'s parallel variance over the P partials of each channel:
        mean = sum(n_p * mean_p) / M,   M2 = sum(M2_p + n_p * (mean_p - mean)^2)."""
    cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    ps = tl.arange(0, BLOCK_P)[:, None]
    mask = (ps < P) & (cols < C)[None, :]
    offs = ps * C + cols[None, :]
    n = tl.load(part_ptr + offs, mask=mask, other=0.0)
    m = tl.load(part_ptr + P * C + offs, mask=mask, other=0.0)
    m2 = tl.load(part_ptr + 2 * P * C + offs, mask=mask, other=0.0)
    mean = tl.sum(n * m, axis=0) / M
    d = m - mean[None, :]
    var = tl.sum(tl.where(mask, m2 + n * d * d, 0.0), axis=0) / M
    cmask = cols < C
    tl.store(mean_ptr + cols, mean, mask=cmask)
    tl.store(var_ptr + cols, var, mask=cmask)
    tl.store(rstd_ptr + cols, 1.0 / tl.sqrt(var + eps), mask=cmask)


@triton.jit
def _bn_sum_partials_kernel(
    part_ptr,  # (2, P, C) float32 partial (sum dy, sum dy*(x-mean))
    rstd_ptr,  # (C,) float32
    sum_dy_ptr,  # (C,) float32 out: sum(dy)          (= dbias)
    sum_dy_xhat_ptr,  # (C,) float32 out: sum(dy * xhat)  (= dweight)
    P, C,
    BLOCK_P: tl.constexpr,  # >= P
    BLOCK_C: tl.constexpr,
):
    cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    ps = tl.arange(0, BLOCK_P)[:, None]
    cmask = cols < C
    mask = (ps < P) & cmask[None, :]
    offs = ps * C + cols[None, :]
    s1 = tl.sum(tl.load(part_ptr + offs, mask=mask, other=0.0), axis=0)
    s2 = tl.sum(tl.load(part_ptr + P * C + offs, mask=mask, other=0.0), axis=0)
    rstd = tl.load(rstd_ptr + cols, mask=cmask, other=0.0)
    tl.store(sum_dy_ptr + cols, s1, mask=cmask)
    tl.store(sum_dy_xhat_ptr + cols, s2 * rstd, mask=cmask)


@triton.jit
def _bn_tile(
    R, K, C, CW, group_rows,
    CHANNELS_ON_ROWS: tl.constexpr, GROUPED: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """The tile of program (i, j) in an (R, K) row-major matrix: its offsets,
    mask, statistic index and feature (weight) index, each a column of BLOCK_R
    rows or a row of BLOCK_K columns where it can be. On rows, row r holds
    statistic r % C of feature r % CW; on columns, column k is feature k and,
    GROUPED (instance norm: one group of group_rows rows per sample),
    statistic (r // group_rows) * K + k, else statistic k."""
    row_ids = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rows = row_ids[:, None]
    cols = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)[None, :]
    mask = (rows < R) & (cols < K)
    offs = rows.to(tl.int64) * K + cols
    if CHANNELS_ON_ROWS:
        # 1-D over the rows: loaded as vectors, made columns by _bn_param
        stat = row_ids % C
        smask = row_ids < R
        feature = stat % CW
    else:
        feature = cols
        if GROUPED:
            stat = (rows // group_rows) * K + cols
            smask = mask
        else:
            stat = cols
            smask = cols < K
    return offs, mask, stat, smask, feature


@triton.jit
def _bn_param(ptr, idx, mask, CHANNELS_ON_ROWS: tl.constexpr):
    """Per-statistic (or per-feature) values at idx, float32, shaped to
    broadcast over the tile. On rows they load as one vector (16-byte loads
    rather than a scalar load per element) and then stand as a column."""
    v = tl.load(ptr + idx, mask=mask, other=0.0).to(tl.float32)
    if CHANNELS_ON_ROWS:
        v = v[:, None]
    return v


@triton.jit
def _bn_normalize_kernel(
    x_ptr,  # (R, K) input
    y_ptr,  # (R, K) output
    mean_ptr, rstd_ptr,  # (C,) float32
    w_ptr, b_ptr,  # (CW,) weight, bias (when HAS_W / HAS_B)
    R, K, C, CW, group_rows,  # CW: num_features, the weight's length
    CHANNELS_ON_ROWS: tl.constexpr,
    GROUPED: tl.constexpr,
    HAS_W: tl.constexpr,
    HAS_B: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """y = (x - mean[i]) * (rstd[i] * w[c]) + b[c], statistic i of channel c."""
    offs, mask, i, imask, f = _bn_tile(R, K, C, CW, group_rows, CHANNELS_ON_ROWS, GROUPED, BLOCK_R, BLOCK_K)
    mean = _bn_param(mean_ptr, i, imask, CHANNELS_ON_ROWS)
    scale = _bn_param(rstd_ptr, i, imask, CHANNELS_ON_ROWS)
    if HAS_W:
        scale *= _bn_param(w_ptr, f, imask, CHANNELS_ON_ROWS)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    y = (x - mean) * scale
    if HAS_B:
        y += _bn_param(b_ptr, f, imask, CHANNELS_ON_ROWS)
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bn_backward_input_kernel(
    dy_ptr, x_ptr,  # (R, K) upstream gradient and input
    dx_ptr,  # (R, K) output
    mean_ptr, rstd_ptr,  # (C,) float32
    w_ptr,  # (CW,) weight (when HAS_W)
    sum_dy_ptr, sum_dy_xhat_ptr,  # (C,) float32 (TRAINING only)
    inv_m,  # 1 / values per statistic
    R, K, C, CW, group_rows,
    CHANNELS_ON_ROWS: tl.constexpr,
    GROUPED: tl.constexpr,
    HAS_W: tl.constexpr,
    TRAINING: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """training: dx = g*rstd*dy - g*rstd*sum(dy)/M - (x - mean) * g*rstd^3*sum(dy*xhat)/rstd/M
       eval:     dx = g*rstd*dy.     (g = weight[c]; coefficients per channel)"""
    offs, mask, i, imask, f = _bn_tile(R, K, C, CW, group_rows, CHANNELS_ON_ROWS, GROUPED, BLOCK_R, BLOCK_K)
    rstd = _bn_param(rstd_ptr, i, imask, CHANNELS_ON_ROWS)
    a = rstd
    if HAS_W:
        a *= _bn_param(w_ptr, f, imask, CHANNELS_ON_ROWS)
    dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    dx = a * dy
    if TRAINING:
        mean = _bn_param(mean_ptr, i, imask, CHANNELS_ON_ROWS)
        sum_dy = _bn_param(sum_dy_ptr, i, imask, CHANNELS_ON_ROWS)
        sum_dy_xhat = _bn_param(sum_dy_xhat_ptr, i, imask, CHANNELS_ON_ROWS)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        b = a * rstd * sum_dy_xhat * inv_m
        dx = dx - (x - mean) * b - a * sum_dy * inv_m
    tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)


# --- launchers -----------------------------------------------------------------

class _Plan(NamedTuple):
    """How the kernels see an input (N, C, *), S = prod(*):

    on_rows: a (rows * C, S) row-major matrix (NCHW contiguous), statistic
    r % C on row r; else a (groups, rows * S, C) row-major array
    (channels_last), statistic g * C + c in column c of group g.
    ``rows`` is N for batch norm; instance norm (per_sample) takes the
    (1, N*C, S) view on rows (rows = 1, C = N*C) and one group per sample on
    columns (rows = 1, groups = N). ``features`` is the weight's length."""

    x: torch.Tensor
    on_rows: bool
    rows: int
    c: int
    s: int
    groups: int
    features: int
    launches: "_Launches"  # this layout's launch arithmetic, filled on first use

    @property
    def stats(self) -> int:  # statistics in all
        return self.c * self.groups

    @property
    def count(self) -> int:  # values per statistic
        return self.rows * self.s


def _channels_innermost(x: torch.Tensor) -> bool:
    """x.movedim(1, -1) is contiguous (channels_last and its kin). For 4-D and
    5-D inputs torch keeps that answer as a flag; asking for it costs no
    movedim (a dispatcher call, ~5 us of host time on a GPU host, and a
    forward+backward planned six times)."""
    if x.dim() == 4:
        return x.is_contiguous(memory_format=torch.channels_last)
    if x.dim() == 5:
        return x.is_contiguous(memory_format=torch.channels_last_3d)
    return x.movedim(1, -1).is_contiguous()


def _layout(x: torch.Tensor, per_sample: bool):
    """(copy, fields): how the kernels see x - whether x must be made
    contiguous first, and _Plan's fields after x. Channels_last-like inputs
    (channel dim innermost) go on columns as they are; everything else is
    made contiguous and goes on rows, except one value per channel ((N, C),
    (N, C, 1, 1)), a plain (N, C) matrix."""
    n, c = x.shape[0], x.shape[1]
    s = x.numel() // max(n * c, 1)
    # is_contiguous() first: the common NCHW case costs no movedim (host time)
    if x.dim() > 2 and s > 1 and not x.is_contiguous() and _channels_innermost(x):
        return False, ((False, 1, c, s, n, c) if per_sample else (False, n, c, s, 1, c))
    copy = not x.is_contiguous()
    if per_sample:
        return copy, (True, 1, n * c, s, 1, c)
    if x.dim() == 2 or s == 1:
        return copy, (False, n, c, 1, 1, c)
    return copy, (True, n, c, s, 1, c)


class _Launches:
    """The launch arithmetic of one layout on one device (grids, block sizes,
    split counts), filled in on first use and kept with the layout in the
    plan cache: a training step plans each layer's input about six times
    (forward and backward, statistics and elementwise passes), always the
    same shapes. Filled lazily, so a shape that makes some piece fail (an
    empty input, which never reaches those launches) fails exactly where
    and as it did before."""

    __slots__ = ("elementwise", "reduce", "act_reduce")

    def __init__(self):
        self.elementwise = self.reduce = None
        self.act_reduce = None  # batch norm + activation's backward reduction (kernels/fused.py)


# Host time: the plan of an input is a function of its shape, strides, device
# and per_sample only, and a model meets a handful of them; computing it
# (is_contiguous checks, the block-size and split arithmetic of every pass)
# cost several microseconds a layer call. Bounded: emptied when full.
_PLAN_CACHE_SIZE = 1024
_plans: dict = {}


def _plan(x: torch.Tensor, per_sample: bool = False) -> _Plan:
    """The plan for x (see _layout), from the plan cache."""
    key = (x.shape, x.stride(), x.device, per_sample)
    hit = _plans.get(key)
    if hit is None:
        copy, fields = _layout(x, per_sample)
        hit = (copy, fields + (_Launches(),))
        if len(_plans) >= _PLAN_CACHE_SIZE:
            _plans.clear()
        _plans[key] = hit
    copy, fields = hit
    return _Plan(x.contiguous() if copy else x, *fields)


def _f32_vectors(count: int, n: int, device: torch.device):
    """``count`` (2 or 3) separate float32 (n,) tensors: separate
    allocations, not views of one buffer, as they become a custom op's
    outputs, which must not alias each other. No generator (host time)."""
    empty, f32 = torch.empty, torch.float32
    if count == 2:
        return empty(n, device=device, dtype=f32), empty(n, device=device, dtype=f32)
    return empty(n, device=device, dtype=f32), empty(n, device=device, dtype=f32), empty(n, device=device, dtype=f32)


def _like(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``t`` with ``x``'s strides, so both walk the same flat index."""
    if t.stride() == x.stride():
        return t
    out = torch.empty_like(x, dtype=t.dtype)
    out.copy_(t)
    return out


def _fit_block(k: int, tile: int) -> int:
    """The block along a row of k contiguous values: the whole row when it fits
    in ``tile``, else the power of two in [tile/4, tile] that pads the row
    least (12544 = 112*112 takes 512: 2% padding, where 2048 would pad 14%)."""
    if k <= tile:
        return next_power_of_2(max(k, 1))
    return min((tile // 4, tile // 2, tile), key=lambda b: (cdiv(k, b) * b, -b))


@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _splits(n_tiles: int, channel_programs: int, device: torch.device):
    """How many programs share one channel (block): enough programs in all to
    fill the GPU a few times over, every program with at least one tile.
    Returns (programs per channel, tiles per program)."""
    if device.type == "cuda":
        # several programs per SM, each streaming many tiles: loads in flight everywhere
        target = _REDUCE_PROGRAMS_PER_SM * _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    else:
        target = 2  # the interpreter: still exercise the multi-program combine
    p = max(1, min(n_tiles, cdiv(target, channel_programs), _MAX_SPLITS))
    per = cdiv(n_tiles, p)
    return cdiv(n_tiles, per), per


def _reduce_launch(plan: _Plan, device: torch.device):
    """(grid, partial buffer shape, scalar arguments, block sizes) of the
    reduction pass of ``plan`` (see _reduce)."""
    n, c, s = plan.rows, plan.c, plan.s
    if plan.on_rows:
        block_s = _fit_block(s, _REDUCE_TILE)
        block_n = min(next_power_of_2(n), max(1, _REDUCE_TILE // block_s))
        s_blocks = cdiv(s, block_s)
        p, per = _splits(cdiv(n, block_n) * s_blocks, c, device)
        return (c, p), (3, p, c), (n, c, s, per, s_blocks), {"BLOCK_N": block_n, "BLOCK_S": block_s}
    r = n * s
    block_c = min(next_power_of_2(c), 128)
    block_r = max(1, _REDUCE_TILE // block_c)
    c_blocks = cdiv(c, block_c)
    p, per = _splits(cdiv(r, block_r), c_blocks * plan.groups, device)
    return (c_blocks, p, plan.groups), (3, p, plan.stats), (r, c, per), {"BLOCK_R": block_r, "BLOCK_C": block_c}


def _reduce(plan: _Plan, dy, mean, backward: bool):
    """Run the statistics (backward=False) or gradient (backward=True) reduction
    pass; returns the (3, P, statistics) float32 partial buffer."""
    x = plan.x
    launch = plan.launches.reduce
    if launch is None:  # first use of this layout (see _Launches)
        launch = plan.launches.reduce = _reduce_launch(plan, x.device)
    grid, part_shape, scalars, blocks = launch
    # the sizes as separate arguments: torch.empty parses a shape tuple ~0.4 us slower (host time)
    part = torch.empty(*part_shape, device=x.device, dtype=torch.float32)
    kernel = _bn_reduce_rows_kernel if plan.on_rows else _bn_reduce_cols_kernel
    kernel[grid](
        x, dy if backward else x, mean if backward else x, part, *scalars,
        BACKWARD=backward, **blocks, num_warps=_REDUCE_WARPS,
    )
    return part


@functools.lru_cache(maxsize=1024)  # pure in two ints; host time
def _combine_blocks(p: int, c: int):
    """Blocks for the combine kernels: all P partials at once, a few channels."""
    block_p = next_power_of_2(p)
    block_c = min(next_power_of_2(c), max(1, 4096 // block_p))
    return block_p, block_c, (cdiv(c, block_c),)


def _elementwise_launch(plan: _Plan):
    """(R, K, group_rows, BLOCK_R, BLOCK_K, grid) for the elementwise kernels
    (computed once per layout, see _Launches)."""
    launch = plan.launches.elementwise
    if launch is None:
        launch = plan.launches.elementwise = _elementwise_arithmetic(plan)
    return launch


def _elementwise_arithmetic(plan: _Plan):
    if plan.on_rows:
        r, k, group_rows = plan.rows * plan.c, plan.s, 1
        block_k = _fit_block(k, _ELEMENTWISE_TILE)
        if _ELEMENTWISE_TILE // block_k < 4:
            # Not a tile of one or two long rows: their per-row statistics,
            # broadcast over thousands of columns, compile to dozens of
            # barriers a program (65 in the sm_90 PTX of the folded normalize
            # at 1 x 4096, 7 at 8 x 512), and batch norm at 32x64x56x56
            # (rows of 3136) took 544 us where 64x64x112x112 took 109 (H200).
            block_k = _fit_block(k, _ELEMENTWISE_TILE // 4)
    else:
        r, k, group_rows = plan.groups * plan.rows * plan.s, plan.c, plan.rows * plan.s
        block_k = min(next_power_of_2(k), 128)
    block_r = max(1, _ELEMENTWISE_TILE // block_k)
    return r, k, group_rows, block_r, block_k, (cdiv(r, block_r), cdiv(k, block_k))


def batch_norm_stats(x: torch.Tensor, eps: float = 0.0, per_sample: bool = False):
    """(mean, biased var, 1/sqrt(var + eps)), float32, per channel of x (N, C, *)
    over all dims but 1; per_sample: per (n, c) over the spatial dims,
    flattened to (N*C,) (instance norm)."""
    return _stats(_plan(x, per_sample), eps)


def _stats(plan: _Plan, eps: float):
    """batch_norm_stats of ``plan.x``, for callers that planned x already."""
    x = plan.x
    # three allocations, not views of one: they become a custom op's
    # outputs, which must not alias each other
    mean, var, rstd = _f32_vectors(3, plan.stats, x.device)
    if x.numel() == 0:
        return mean.fill_(float("nan")), var.fill_(float("nan")), rstd.fill_(float("nan"))
    part = _reduce(plan, None, None, backward=False)
    p = part.shape[1]
    block_p, block_c, grid = _combine_blocks(p, plan.stats)
    _bn_stats_combine_kernel[grid](
        part, mean, var, rstd, p, plan.stats, float(plan.count), eps, BLOCK_P=block_p, BLOCK_C=block_c
    )
    return mean, var, rstd


def batch_norm_normalize(x, mean, rstd, weight=None, bias=None, per_sample: bool = False):
    """y = (x - mean) * rstd * weight + bias; y keeps x's memory format."""
    return _normalize(_plan(x, per_sample), mean, rstd, weight, bias)


def _normalize(plan: _Plan, mean, rstd, weight, bias):
    """batch_norm_normalize of ``plan.x`` (callers that planned x already)."""
    y = torch.empty_like(plan.x)
    if plan.x.numel() == 0:
        return y
    r, k, group_rows, block_r, block_k, grid = _elementwise_launch(plan)
    _bn_normalize_kernel[grid](
        plan.x, y, mean, rstd, weight if weight is not None else mean, bias if bias is not None else mean,
        r, k, plan.c, plan.features, group_rows,
        CHANNELS_ON_ROWS=plan.on_rows, GROUPED=plan.groups > 1, HAS_W=weight is not None, HAS_B=bias is not None,
        BLOCK_R=block_r, BLOCK_K=block_k, num_warps=_ELEMENTWISE_WARPS,
    )
    return y


def batch_norm_backward_reduce(dy, x, mean, rstd, per_sample: bool = False):
    """Per statistic (sum(dy), sum(dy * xhat)), float32."""
    plan = _plan(x, per_sample)
    return _backward_reduce(plan, _like(dy, plan.x), mean, rstd)


def _backward_reduce(plan: _Plan, dy, mean, rstd):
    """batch_norm_backward_reduce of ``plan.x`` and ``dy`` laid out like it."""
    x = plan.x
    if x.numel() == 0:
        return (torch.zeros(plan.stats, device=x.device, dtype=torch.float32),
                torch.zeros(plan.stats, device=x.device, dtype=torch.float32))
    # empty: the combine kernel writes every value
    sum_dy, sum_dy_xhat = _f32_vectors(2, plan.stats, x.device)
    part = _reduce(plan, dy, mean, backward=True)
    p = part.shape[1]
    block_p, block_c, grid = _combine_blocks(p, plan.stats)
    _bn_sum_partials_kernel[grid](part, rstd, sum_dy, sum_dy_xhat, p, plan.stats, BLOCK_P=block_p, BLOCK_C=block_c)
    return sum_dy, sum_dy_xhat


def batch_norm_backward_input(
    dy, x, mean, rstd, weight, sum_dy=None, sum_dy_xhat=None, m=1, training=True, per_sample: bool = False
):
    """dx of batch norm from the sums over all ``m`` values of each statistic
    (training), or dx = weight * rstd * dy (eval). dx keeps x's memory format."""
    plan = _plan(x, per_sample)
    return _backward_input(plan, _like(dy, plan.x), mean, rstd, weight, sum_dy, sum_dy_xhat, m, training)


def _backward_input(plan: _Plan, dy, mean, rstd, weight, sum_dy, sum_dy_xhat, m, training):
    """batch_norm_backward_input of ``plan.x`` and ``dy`` laid out like it."""
    dx = torch.empty_like(plan.x)
    if plan.x.numel() == 0:
        return dx
    r, k, group_rows, block_r, block_k, grid = _elementwise_launch(plan)
    _bn_backward_input_kernel[grid](
        dy, plan.x, dx, mean, rstd, weight if weight is not None else rstd,
        sum_dy if training else rstd, sum_dy_xhat if training else rstd, 1.0 / m,
        r, k, plan.c, plan.features, group_rows,
        CHANNELS_ON_ROWS=plan.on_rows, GROUPED=plan.groups > 1, HAS_W=weight is not None, TRAINING=training,
        BLOCK_R=block_r, BLOCK_K=block_k, num_warps=_ELEMENTWISE_WARPS,
    )
    return dx


# --- NCHW training: the combine folded into the elementwise pass ---------------
#
# On rows (NCHW) each channel has few partials (P <= _FOLD_MAX_PARTIALS), so
# the normalize / dx programs combine them themselves (a few hundred float32
# loads from L2 against a 4096-value tile) and the tiny combine launch goes:
# training forward and backward are two launches each. The programs of
# column block 0 holding sample 0's rows write the per-channel results.

_FOLD_MAX_PARTIALS = 64


@triton.jit
def _bn_rows_chan_ids(R, C, BLOCK_R: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < R
    chan = rows % C
    # the programs that publish the per-channel values: column block 0, sample 0
    publish = row_ok & (rows < C) & (tl.program_id(1) == 0)
    return rows, row_ok, chan, publish


@triton.jit
def _bn_rows_normalize_combine_kernel(
    x_ptr, y_ptr,  # (R, K) = (N*C, S) input and output
    part_ptr,  # (3, P, C) float32 partial (count, mean, M2)
    mean_ptr, var_ptr, rstd_ptr,  # (C,) float32 out (written by the publishing programs)
    w_ptr, b_ptr,  # (C,) weight, bias (when HAS_W / HAS_B)
    R, K, C, P, M, eps,  # M: values per channel, as a float
    HAS_W: tl.constexpr, HAS_B: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_P: tl.constexpr,
):
    rows, row_ok, chan, publish = _bn_rows_chan_ids(R, C, BLOCK_R)
    # Chan's parallel variance over the channel's P partials, per row
    ps = tl.arange(0, BLOCK_P)[None, :]
    pmask = row_ok[:, None] & (ps < P)
    poffs = ps * C + chan[:, None]
    cnt = tl.load(part_ptr + poffs, mask=pmask, other=0.0)
    pmean = tl.load(part_ptr + P * C + poffs, mask=pmask, other=0.0)
    pm2 = tl.load(part_ptr + 2 * P * C + poffs, mask=pmask, other=0.0)
    mean = tl.sum(cnt * pmean, axis=1) / M
    d = pmean - mean[:, None]
    var = tl.sum(tl.where(pmask, pm2 + cnt * d * d, 0.0), axis=1) / M
    rstd = 1.0 / tl.sqrt(var + eps)
    tl.store(mean_ptr + chan, mean, mask=publish)
    tl.store(var_ptr + chan, var, mask=publish)
    tl.store(rstd_ptr + chan, rstd, mask=publish)
    scale = rstd
    if HAS_W:
        scale = scale * tl.load(w_ptr + chan, mask=row_ok, other=0.0).to(tl.float32)
    # y = (x - mean) * scale + b, not x * scale + (b - mean * scale): with a
    # large mean and a small spread the latter cancels to a multiple of
    # ulp(mean * scale)
    shift = tl.zeros_like(scale)
    if HAS_B:
        shift = tl.load(b_ptr + chan, mask=row_ok, other=0.0).to(tl.float32)
    cols = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    mask = row_ok[:, None] & (cols < K)[None, :]
    offs = rows.to(tl.int64)[:, None] * K + cols[None, :]
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    y = (x - mean[:, None]) * scale[:, None] + shift[:, None]
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bn_rows_backward_combine_kernel(
    dy_ptr, x_ptr, dx_ptr,  # (R, K) = (N*C, S)
    part_ptr,  # (3, P, C) float32 partial (sum dy, sum dy*(x-mean), unused)
    mean_ptr, rstd_ptr,  # (C,) float32
    w_ptr,  # (C,) weight (when HAS_W)
    sum_dy_ptr, sum_dy_xhat_ptr,  # (C,) float32 out: dbias, dweight (publishing programs)
    inv_m, R, K, C, P,
    HAS_W: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """dx = a*dy - a*sum(dy)/M - (x - mean) * a*rstd*sum(dy*xhat)/M, a = w*rstd."""
    rows, row_ok, chan, publish = _bn_rows_chan_ids(R, C, BLOCK_R)
    ps = tl.arange(0, BLOCK_P)[None, :]
    pmask = row_ok[:, None] & (ps < P)
    poffs = ps * C + chan[:, None]
    rstd = tl.load(rstd_ptr + chan, mask=row_ok, other=0.0)
    mean = tl.load(mean_ptr + chan, mask=row_ok, other=0.0)
    sum_dy = tl.sum(tl.load(part_ptr + poffs, mask=pmask, other=0.0), axis=1)
    sum_dy_xhat = tl.sum(tl.load(part_ptr + P * C + poffs, mask=pmask, other=0.0), axis=1) * rstd
    tl.store(sum_dy_ptr + chan, sum_dy, mask=publish)
    tl.store(sum_dy_xhat_ptr + chan, sum_dy_xhat, mask=publish)
    a = rstd
    if HAS_W:
        a = a * tl.load(w_ptr + chan, mask=row_ok, other=0.0).to(tl.float32)
    b = a * rstd * sum_dy_xhat * inv_m
    c0 = a * sum_dy * inv_m
    cols = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    mask = row_ok[:, None] & (cols < K)[None, :]
    offs = rows.to(tl.int64)[:, None] * K + cols[None, :]
    dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    dx = a[:, None] * dy - (x - mean[:, None]) * b[:, None] - c0[:, None]
    tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)


def _fold_ok(plan: _Plan, p: int) -> bool:
    return plan.on_rows and plan.groups == 1 and plan.c == plan.features and p <= _FOLD_MAX_PARTIALS


def batch_norm_forward(x, weight, bias, running_mean, running_var, training: bool, eps: float):
    """Returns (y, mean, rstd, var): the statistics used (float32, (C,)); var is
    the biased batch variance in training, running_var otherwise."""
    plan = _plan(x)  # once for every pass (host time)
    if training and x.numel() > 0:
        if plan.on_rows:
            part = _reduce(plan, None, None, backward=False)
            p = part.shape[1]
            if _fold_ok(plan, p):
                mean, var, rstd = _f32_vectors(3, plan.c, x.device)
                y = torch.empty_like(plan.x)
                r, k, _, block_r, block_k, grid = _elementwise_launch(plan)
                _bn_rows_normalize_combine_kernel[grid](
                    plan.x, y, part, mean, var, rstd, weight if weight is not None else part,
                    bias if bias is not None else part, r, k, plan.c, p, float(plan.count), eps,
                    HAS_W=weight is not None, HAS_B=bias is not None,
                    BLOCK_R=block_r, BLOCK_K=block_k, BLOCK_P=next_power_of_2(p), num_warps=_ELEMENTWISE_WARPS,
                )
                return y, mean, rstd, var
            # too many partials to combine in every program: the combine kernel
            mean, var, rstd = _f32_vectors(3, plan.c, x.device)
            block_p, block_c, cgrid = _combine_blocks(p, plan.c)
            _bn_stats_combine_kernel[cgrid](
                part, mean, var, rstd, p, plan.c, float(plan.count), eps, BLOCK_P=block_p, BLOCK_C=block_c
            )
            return _normalize(plan, mean, rstd, weight, bias), mean, rstd, var
    if training:
        mean, var, rstd = _stats(plan, eps)
    else:
        mean, var = running_mean.float(), running_var.float()
        rstd = torch.rsqrt(var + eps)
    return _normalize(plan, mean, rstd, weight, bias), mean, rstd, var


def batch_norm_backward(dy, x, weight, mean, rstd, training: bool, param_grads: bool = True):
    """(dx, dweight, dbias); dweight/dbias are float32 sums (None unless
    ``param_grads`` or training, which needs them for dx)."""
    plan = _plan(x)  # once for every pass (host time)
    dyv = _like(dy, plan.x)
    if training and x.numel() > 0:
        if plan.on_rows and plan.groups == 1:
            part = _reduce(plan, dyv, mean, backward=True)
            p = part.shape[1]
            if _fold_ok(plan, p):
                sum_dy, sum_dy_xhat = _f32_vectors(2, plan.c, x.device)
                dx = torch.empty_like(plan.x)
                r, k, _, block_r, block_k, grid = _elementwise_launch(plan)
                _bn_rows_backward_combine_kernel[grid](
                    dyv, plan.x, dx, part, mean, rstd, weight if weight is not None else part, sum_dy, sum_dy_xhat,
                    1.0 / max(plan.count, 1), r, k, plan.c, p, HAS_W=weight is not None,
                    BLOCK_R=block_r, BLOCK_K=block_k, BLOCK_P=next_power_of_2(p), num_warps=_ELEMENTWISE_WARPS,
                )
                return dx, sum_dy_xhat, sum_dy
            sum_dy, sum_dy_xhat = _f32_vectors(2, plan.c, x.device)
            block_p, block_c, cgrid = _combine_blocks(p, plan.c)
            _bn_sum_partials_kernel[cgrid](part, rstd, sum_dy, sum_dy_xhat, p, plan.c, BLOCK_P=block_p, BLOCK_C=block_c)
            dx = _backward_input(plan, dyv, mean, rstd, weight, sum_dy, sum_dy_xhat, max(plan.count, 1), True)
            return dx, sum_dy_xhat, sum_dy
    sum_dy = sum_dy_xhat = None
    if training or param_grads:
        sum_dy, sum_dy_xhat = _backward_reduce(plan, dyv, mean, rstd)
    m = x.numel() // max(x.shape[1], 1)
    dx = _backward_input(plan, dyv, mean, rstd, weight, sum_dy, sum_dy_xhat, max(m, 1), training)
    return dx, sum_dy_xhat, sum_dy


@triton.jit
def _bn_running_update_kernel(
    running_mean_ptr, running_var_ptr,  # (C,) float32/16-bit, updated in place (when UPDATE_MEAN / UPDATE_VAR)
    mean_ptr, var_ptr,  # (C,) float32 batch mean and biased variance
    C, momentum, unbias,  # unbias = M / (M - 1), NaN when M == 1
    UPDATE_MEAN: tl.constexpr, UPDATE_VAR: tl.constexpr, BLOCK: tl.constexpr,
):
    """running = (1 - momentum) * running + momentum * batch statistic; the
    variance unbiased. One launch instead of half a dozen small torch ops.
    Computed in float32 and rounded once to the buffer's dtype, as PyTorch's
    CUDA batch norm updates 16-bit running statistics."""
    cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = cols < C
    if UPDATE_MEAN:
        r = tl.load(running_mean_ptr + cols, mask=ok, other=0.0).to(tl.float32)
        m = tl.load(mean_ptr + cols, mask=ok, other=0.0)
        new = r * (1.0 - momentum) + m * momentum
        tl.store(running_mean_ptr + cols, new.to(running_mean_ptr.dtype.element_ty), mask=ok)
    if UPDATE_VAR:
        r = tl.load(running_var_ptr + cols, mask=ok, other=0.0).to(tl.float32)
        v = tl.load(var_ptr + cols, mask=ok, other=0.0) * unbias
        new = r * (1.0 - momentum) + v * momentum
        tl.store(running_var_ptr + cols, new.to(running_var_ptr.dtype.element_ty), mask=ok)


def batch_norm_update_running_stats(running_mean, running_var, mean, var, m: int, momentum: float) -> None:
    """In place: running_mean/var (float32 or 16-bit, contiguous, or None) move towards
    the batch mean / unbiased variance (float32, (C,)) by ``momentum``."""
    target = running_mean if running_mean is not None else running_var
    if target is None or target.numel() == 0:
        return
    c = target.numel()
    block = min(1024, next_power_of_2(c))
    _bn_running_update_kernel[(cdiv(c, block),)](
        running_mean if running_mean is not None else target, running_var if running_var is not None else target,
        mean, var, c, float(momentum), m / (m - 1) if m > 1 else float("nan"),
        UPDATE_MEAN=running_mean is not None, UPDATE_VAR=running_var is not None, BLOCK=block,
    )


def _instance_as_groups(x) -> bool:
    """Instance norm is group norm with one channel a group: NCHW planes that
    one program holds whole (forward and backward) take GroupNorm's
    single-tile kernels - one read forward, one pass backward, 1-2 launches -
    rather than batch norm's statistics / normalize passes."""
    if x.dim() < 3 or not x.is_contiguous() or x.numel() == 0 or x.dtype == torch.float64:
        return False
    s = x.numel() // (x.shape[0] * x.shape[1])
    return 1 < row_block(s) <= _RN_WHOLE_GROUP_BACKWARD


def instance_norm_forward(x, weight, bias, eps: float):
    """(y, mean, rstd, var), statistics per (n, c) flattened to (N*C,) float32."""
    if _instance_as_groups(x):
        n, c = x.shape[0], x.shape[1]
        s = x.numel() // (n * c)
        mean, rstd, var = (torch.empty(n * c, dtype=torch.float32, device=x.device) for _ in range(3))
        y = torch.empty_like(x)
        _group_norm_forward_whole_kernel[(n * c,)](
            x, y, weight.contiguous() if weight is not None else x, bias if bias is not None else x, mean, rstd,
            1.0 / s, c, 1, s, c * s, s, 1, eps, HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None,
            var_ptr=var, STORE_VAR=True, C_BLOCK=1, S_BLOCK=row_block(s), num_warps=_whole_group_warps(row_block(s)),
        )
        return y, mean, rstd, var
    mean, var, rstd = batch_norm_stats(x, eps, per_sample=True)
    return batch_norm_normalize(x, mean, rstd, weight, bias, per_sample=True), mean, rstd, var


def instance_norm_backward(dy, x, weight, mean, rstd):
    """(dx, dweight, dbias); the parameter sums of each (n, c) folded over n."""
    n, c = x.shape[0], x.shape[1]
    if _instance_as_groups(x):
        # group norm with C groups: one pass; its per-channel sums fold over n
        dx, dw, db = group_norm_backward(dy, x, c, weight, mean, rstd, True)
        return dx, (dw if weight is not None else torch.zeros_like(db)), db
    sum_dy, sum_dy_xhat = batch_norm_backward_reduce(dy, x, mean, rstd, per_sample=True)
    m = x.numel() // max(n * c, 1)
    dx = batch_norm_backward_input(dy, x, mean, rstd, weight, sum_dy, sum_dy_xhat, max(m, 1), True, per_sample=True)
    return dx, sum_dy_xhat.reshape(n, c).sum(0), sum_dy.reshape(n, c).sum(0)


# =============================================================================
# layer, RMS and group norm
# =============================================================================
#
# LayerNorm and RMSNorm share their kernels (RMS: constexpr flag, no centering).
# The input is seen as (M, N) rows, N = prod(normalized_shape):
#   forward  - a program holds ROWS whole rows in registers (ROWS * BLOCK about
#              4096 elements, so narrow rows still give each program enough
#              work), reads x once, writes y, mean and rstd; rows wider than
#              _WIDE_ROW_FORWARD loop over the row in chunks instead (three reads).
#   backward - a fixed grid of about 4 programs per SM; each walks a
#              contiguous run of rows, writes dx, and keeps its dweight/dbias
#              partial sums in registers, written once at the end as one row
#              of a float32 (programs, 2, N) buffer summed by torch. No atomics.
# GroupNorm sees the input as (N, C, S) with any strides where S flattens
# (NCHW contiguous: S stride 1; channels_last: C stride 1) and tiles each
# (sample, group) block of C/G x S elements, so a group is spread over many
# programs:
#   forward  - tile partials (count, mean, M2) -> per-group combine -> y pass.
#   backward - tile partials of sum(g), sum(g * xhat) and per-channel
#              sum(dy * xhat), sum(dy) -> torch sums -> dx pass.
# (_rn_ marks this section's private helpers, so that they cannot collide
# with the batch/instance norm section's names in the same module.)


_RN_TILE = 4096  # elements a program holds at once (16 KB of float32)
_WIDE_ROW_FORWARD = 16384  # wider rows are looped over in forward
_WIDE_ROW_BACKWARD = 8192  # ... and in backward (more live tensors a row)
_RN_MIN_ROWS_A_PROGRAM = 16  # backward: rows a program walks, at least


def _rn_programs_per_device(t: torch.Tensor, per_sm: int = 4) -> int:
    """``per_sm`` programs an SM on the GPU; a handful under the interpreter
    (so that the row loops run more than once in CI)."""
    if t.is_cuda:
        return per_sm * _sm_count(t.device.index if t.device.index is not None else torch.cuda.current_device())
    return 3


def _rn_stat_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _rows(x: torch.Tensor, normalized_shape, n: int):
    """(t, M, row stride): x seen as M rows of n = prod(normalized_shape)
    values with unit column stride (a copy only when the layout needs one).
    A contiguous x is passed as it is: no reshape call (host time)."""
    m = math.prod(x.shape[: x.dim() - len(normalized_shape)])
    if x.is_contiguous():
        return x, m, n
    x2 = x.reshape(m, n)
    if x2.stride(1) != 1 and n > 1:
        x2 = x2.contiguous()
    return x2, m, x2.stride(0)


@triton.jit
def _div_rn(total, n):
    """total / n, correctly rounded. Triton's '/' on float32 compiles to an
    approximate division (div.full.f32, up to 2 ulp), so even n = 1 may not
    give total back: a one-element layer norm's dx came out rstd * ulp
    instead of 0 (3e-5 at eps=1e-5, on an H100). Used on per-row sums only,
    so its cost does not show."""
    return tl.math.div_rn(total, tl.zeros_like(total) + n)


@triton.jit
def _row_norm_forward_kernel(
    x_ptr,  # (M, N) input rows, row stride stride_x, unit column stride
    y_ptr,  # (M, N) output, contiguous
    w_ptr,  # (N,) weight (unused without HAS_WEIGHT)
    b_ptr,  # (N,) bias (unused without HAS_BIAS)
    mean_ptr,  # (M,) float32 row means (not written for RMS)
    rstd_ptr,  # (M,) float32 row 1/sqrt(var + eps)
    M, N, stride_x, eps,
    RMS: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
    ROWS: tl.constexpr, BLOCK: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK)
    row_ok = rows < M
    col_ok = cols < N
    mask = row_ok[:, None] & col_ok[None, :]
    # (evict_last: 4090 -> 4215 GB/s at 32768x4096 float32 on an H200, the
    # copy roof; scripts/probe_cache_hints.py. As Inductor's own layer norm)
    x = tl.load(x_ptr + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0,
                eviction_policy="evict_last").to(tl.float32)
    if RMS:
        rstd = 1.0 / tl.sqrt(_div_rn(tl.sum(x * x, axis=1), N) + eps)
        xhat = x * rstd[:, None]
    else:
        mean = _div_rn(tl.sum(x, axis=1), N)
        xc = tl.where(mask, x - mean[:, None], 0.0)  # two-pass variance: robust to a large mean
        rstd = 1.0 / tl.sqrt(_div_rn(tl.sum(xc * xc, axis=1), N) + eps)
        xhat = xc * rstd[:, None]
        tl.store(mean_ptr + rows, mean.to(mean_ptr.dtype.element_ty), mask=row_ok)
    tl.store(rstd_ptr + rows, rstd.to(rstd_ptr.dtype.element_ty), mask=row_ok)
    y = xhat
    if HAS_WEIGHT:
        y = y * tl.load(w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    if HAS_BIAS:
        y = y + tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + rows[:, None] * N + cols[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _row_norm_forward_wide_kernel(
    x_ptr, y_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr,  # as in _row_norm_forward_kernel
    M, N, stride_x, eps,
    RMS: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # one row a program, too wide for registers: walk it in BLOCK chunks
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * stride_x
    y_row = y_ptr + row * N
    cols = tl.arange(0, BLOCK)
    mean = 0.0
    if not RMS:
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for start in range(0, N, BLOCK):
            acc += tl.load(x_row + start + cols, mask=start + cols < N, other=0.0).to(tl.float32)
        mean = _div_rn(tl.sum(acc, axis=0), N)
        tl.store(mean_ptr + row, mean.to(mean_ptr.dtype.element_ty))
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, N, BLOCK):
        ok = start + cols < N
        xc = tl.where(ok, tl.load(x_row + start + cols, mask=ok, other=0.0).to(tl.float32) - mean, 0.0)
        acc += xc * xc
    rstd = 1.0 / tl.sqrt(_div_rn(tl.sum(acc, axis=0), N) + eps)
    tl.store(rstd_ptr + row, rstd.to(rstd_ptr.dtype.element_ty))
    for start in range(0, N, BLOCK):
        ok = start + cols < N
        y = (tl.load(x_row + start + cols, mask=ok, other=0.0).to(tl.float32) - mean) * rstd
        if HAS_WEIGHT:
            y = y * tl.load(w_ptr + start + cols, mask=ok, other=0.0).to(tl.float32)
        if HAS_BIAS:
            y = y + tl.load(b_ptr + start + cols, mask=ok, other=0.0).to(tl.float32)
        tl.store(y_row + start + cols, y.to(y_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _row_backward_tile(dy_ptr, x_ptr, mean_ptr, rstd_ptr, rows, end, cols, col_ok, stride_x, stride_dy,
                       RMS: tl.constexpr):
    """One tile's loads of rows below ``end``, as stored (16-bit values stay
    packed until used): (x, dy, mean, rstd, mask); mean is rstd's stand-in
    for RMS."""
    row_ok = rows < end
    mask = row_ok[:, None] & col_ok[None, :]
    x = tl.load(x_ptr + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0)
    dy = tl.load(dy_ptr + rows[:, None] * stride_dy + cols[None, :], mask=mask, other=0.0)
    rstd = tl.load(rstd_ptr + rows, mask=row_ok, other=0.0)
    mean = rstd
    if not RMS:
        mean = tl.load(mean_ptr + rows, mask=row_ok, other=0.0)
    return x, dy, mean, rstd, mask


@triton.jit
def _row_backward_dx(x, dy, mean, rstd, mask, w, N, RMS: tl.constexpr, HAS_WEIGHT: tl.constexpr):
    """From a tile's loads (_row_backward_tile): (dy, xhat, dx) in float32,
    dx = rstd (g - mean(g) - xhat mean(g xhat)), g = dy w (``w`` unused
    without HAS_WEIGHT); no mean(g) for RMS."""
    x = x.to(tl.float32)
    dy = dy.to(tl.float32)
    rstd = rstd.to(tl.float32)
    if RMS:
        xhat = x * rstd[:, None]
    else:
        xhat = tl.where(mask, (x - mean.to(tl.float32)[:, None]) * rstd[:, None], 0.0)
    g = dy
    if HAS_WEIGHT:
        g = dy * w[None, :]
    dx = g - xhat * _div_rn(tl.sum(g * xhat, axis=1), N)[:, None]
    if not RMS:
        dx = dx - _div_rn(tl.sum(g, axis=1), N)[:, None]
    return dy, xhat, dx * rstd[:, None]


@triton.jit
def _row_norm_backward_kernel(
    dy_ptr,  # (M, N) upstream gradient, row stride stride_dy
    x_ptr,  # (M, N) forward input, row stride stride_x
    w_ptr,  # (N,) weight (unused without HAS_WEIGHT)
    mean_ptr, rstd_ptr,  # (M,) float32 saved statistics (mean unused for RMS)
    dx_ptr,  # (M, N) input gradient, contiguous
    part_ptr,  # (programs, 2, N) float32: this program's sum of dy*xhat, then of dy
    M, N, stride_x, stride_dy, rows_per_program,
    RMS: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
    ROWS: tl.constexpr, BLOCK: tl.constexpr,
    PREFETCH: tl.constexpr = False,  # load the next tile before reducing this one
):
    pid = tl.program_id(0)
    first = pid.to(tl.int64) * rows_per_program  # rows_per_program: a multiple of ROWS
    cols = tl.arange(0, BLOCK)
    col_ok = cols < N
    w = 1.0
    if HAS_WEIGHT:
        w = tl.load(w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    # (keeping the partials as whole (ROWS, BLOCK) tiles, summed over rows
    # once at the end, measured slower on an H200: register pressure)
    dw = tl.zeros([BLOCK], dtype=tl.float32)
    db = tl.zeros([BLOCK], dtype=tl.float32)
    # PREFETCH: a software pipeline by hand. Each tile's two row reductions
    # wait on barriers; with the next tile's loads already issued, the
    # memory system stays busy meanwhile (a program an SM leaves it idle)
    end = tl.minimum(M, first + rows_per_program)  # this program's rows
    if PREFETCH:
        x_n, dy_n, mean_n, rstd_n, mask_n = _row_backward_tile(
            dy_ptr, x_ptr, mean_ptr, rstd_ptr, first + tl.arange(0, ROWS), end, cols, col_ok, stride_x, stride_dy, RMS)
    for i in range(0, rows_per_program, ROWS):
        rows = first + i + tl.arange(0, ROWS)
        if PREFETCH:
            x, dy, mean, rstd, mask = x_n, dy_n, mean_n, rstd_n, mask_n
            x_n, dy_n, mean_n, rstd_n, mask_n = _row_backward_tile(
                dy_ptr, x_ptr, mean_ptr, rstd_ptr, rows + ROWS, end, cols, col_ok, stride_x, stride_dy, RMS)
        else:
            x, dy, mean, rstd, mask = _row_backward_tile(
                dy_ptr, x_ptr, mean_ptr, rstd_ptr, rows, end, cols, col_ok, stride_x, stride_dy, RMS)
        dy, xhat, dx = _row_backward_dx(x, dy, mean, rstd, mask, w, N, RMS, HAS_WEIGHT)
        tl.store(dx_ptr + rows[:, None] * N + cols[None, :], dx.to(dx_ptr.dtype.element_ty), mask=mask)
        if HAS_WEIGHT:
            dw += tl.sum(dy * xhat, axis=0)
        if HAS_BIAS:
            db += tl.sum(dy, axis=0)
    part = part_ptr + pid.to(tl.int64) * 2 * N
    if HAS_WEIGHT:
        tl.store(part + cols, dw, mask=col_ok)
    if HAS_BIAS:
        tl.store(part + N + cols, db, mask=col_ok)


@triton.jit
def _row_norm_backward_wide_kernel(
    dy_ptr, x_ptr, w_ptr, mean_ptr, rstd_ptr, dx_ptr,  # as in _row_norm_backward_kernel
    part_ptr,  # (programs, 2, N) float32, zero-filled: accumulated in place, row by row
    M, N, stride_x, stride_dy, rows_per_program,
    RMS: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # rows too wide for registers: two chunked sweeps a row; the partial row
    # belongs to this program alone, so read-modify-write needs no atomics
    pid = tl.program_id(0)
    first = pid.to(tl.int64) * rows_per_program
    cols = tl.arange(0, BLOCK)
    part = part_ptr + pid.to(tl.int64) * 2 * N
    for i in range(0, tl.minimum(rows_per_program, M - first)):
        row = first + i
        x_row = x_ptr + row * stride_x
        dy_row = dy_ptr + row * stride_dy
        rstd = tl.load(rstd_ptr + row).to(tl.float32)
        mean = 0.0
        if not RMS:
            mean = tl.load(mean_ptr + row).to(tl.float32)
        sum_g = tl.zeros([BLOCK], dtype=tl.float32)
        sum_gx = tl.zeros([BLOCK], dtype=tl.float32)
        for start in range(0, N, BLOCK):
            ok = start + cols < N
            xhat = tl.where(ok, (tl.load(x_row + start + cols, mask=ok, other=0.0).to(tl.float32) - mean) * rstd, 0.0)
            g = tl.load(dy_row + start + cols, mask=ok, other=0.0).to(tl.float32)
            if HAS_WEIGHT:
                g = g * tl.load(w_ptr + start + cols, mask=ok, other=0.0).to(tl.float32)
            sum_g += g
            sum_gx += g * xhat
        c_g = _div_rn(tl.sum(sum_g, axis=0), N)
        c_gx = _div_rn(tl.sum(sum_gx, axis=0), N)
        if RMS:
            c_g = 0.0
        for start in range(0, N, BLOCK):
            ok = start + cols < N
            xhat = tl.where(ok, (tl.load(x_row + start + cols, mask=ok, other=0.0).to(tl.float32) - mean) * rstd, 0.0)
            dy = tl.load(dy_row + start + cols, mask=ok, other=0.0).to(tl.float32)
            g = dy
            if HAS_WEIGHT:
                g = dy * tl.load(w_ptr + start + cols, mask=ok, other=0.0).to(tl.float32)
            dx = (g - c_g - xhat * c_gx) * rstd
            tl.store(dx_ptr + row * N + start + cols, dx.to(dx_ptr.dtype.element_ty), mask=ok)
            if HAS_WEIGHT:
                tl.store(part + start + cols, tl.load(part + start + cols, mask=ok) + dy * xhat, mask=ok)
            if HAS_BIAS:
                tl.store(part + N + start + cols, tl.load(part + N + start + cols, mask=ok) + dy, mask=ok)


def _row_tile(n: int, wide: int, tile: int = _RN_TILE):
    """(ROWS, BLOCK, wide?) for rows of n elements, about ``tile`` elements a tile."""
    block = row_block(n)
    if block > wide:
        return 1, 4096, True
    rows = max(1, min(128, tile // block))
    return rows, block, False


def _row_forward_config(n: int, elem_size: int):
    """(ROWS, BLOCK, wide?, warps) of the forward kernel, from a sweep on an
    H200 (scripts/tune_row_norm.py, bench/results/h200-20261128-session9):
    rows up to 1024 wide take 4 KB tiles on 4 warps (8 values a thread):
    131072x1024 at 4139 (fp32) / 3968 (bf16) GB/s of a 4160 copy, where 16
    KB tiles on 16 warps gave 3643 and 8 warps 3428; wider fp32 rows take
    16384-element tiles on 16 warps (4 rows of 4096: 4084 against 3920 for
    one row), 16-bit ones 8192 on 8 warps (32 values a thread)."""
    if row_block(n) <= 1024:
        rows, block, wide = _row_tile(n, _WIDE_ROW_FORWARD, 4096 // elem_size)
        return rows, block, wide, 4
    if elem_size < 4:
        rows, block, wide = _row_tile(n, _WIDE_ROW_FORWARD, 2 * _RN_TILE)
        return rows, block, wide, 8
    rows, block, wide = _row_tile(n, _WIDE_ROW_FORWARD, 4 * _RN_TILE)
    return rows, block, wide, 16


def _row_backward_config(n: int, elem_size: int):
    """(ROWS, BLOCK, wide?, warps, programs per SM, prefetch?) of the backward
    kernel, the best of sweeps on an H200 (scripts/tune_row_norm.py,
    bench/NOTES-perf.md): rows up to 2048 wide: 4096-element tiles, 8 warps,
    2 programs an SM (float32) or 2048-element tiles, 4 warps, 4 an SM
    (16-bit); wider rows: 8192-element tiles on 16 warps, 4 programs an SM
    (float32) or on 8 warps, 1 an SM (16-bit). The next tile is loaded before
    this one is reduced (PREFETCH) except for narrow float32 rows, whose
    tiles it slowed (3884 -> 3395 GB/s); 16-bit backward 2807 -> 3546 GB/s at
    32768x4096, 3050 -> 3464 at 131072x1024 (layer norm)."""
    block = row_block(n)
    if block >= 4096:
        rows, block, wide = _row_tile(n, _WIDE_ROW_BACKWARD, 8192)
        return (rows, block, wide, 16, 4, True) if elem_size >= 4 else (rows, block, wide, 8, 1, True)
    if elem_size >= 4:
        rows, block, wide = _row_tile(n, _WIDE_ROW_BACKWARD, 4096)
        return rows, block, wide, max(1, min(8, rows * block // 512)), 2, False
    rows, block, wide = _row_tile(n, _WIDE_ROW_BACKWARD, 2048)
    return rows, block, wide, max(1, min(4, rows * block // 512)), 4, True


def _row_backward_launch(x: torch.Tensor, m: int, n: int, config=None):
    """(ROWS, BLOCK, wide?, warps, programs, rows a program, prefetch?) of a
    row-norm backward over m rows of n values like x's (also the fused
    add+norm's); ``config`` in _row_backward_config's form overrides its."""
    rows, block, wide, warps, per_sm, prefetch = config or _row_backward_config(n, x.element_size())
    # at least _RN_MIN_ROWS_A_PROGRAM rows each, so the partial buffer stays a
    # few percent of the traffic when there are few rows
    min_rows = _RN_MIN_ROWS_A_PROGRAM if x.is_cuda else 1  # interpreter: several programs even for few rows
    programs = min(_rn_programs_per_device(x, per_sm), cdiv(m, max(rows, min_rows)))
    rows_per_program = cdiv(cdiv(m, programs), rows) * rows
    return rows, block, wide, warps, cdiv(m, rows_per_program), rows_per_program, prefetch


def row_norm_forward(x, normalized_shape, weight, bias, eps: float, rms: bool):
    """LayerNorm (rms=False) or RMSNorm (rms=True) over the trailing
    ``normalized_shape`` dims. Returns (y, mean, rstd): y shaped like x
    (contiguous), mean and rstd flat (M,) in float32 (float64 for float64 x);
    mean is empty for RMS."""
    n = math.prod(normalized_shape)
    x2, m, stride_x = _rows(x, normalized_shape, n)
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    stat = _rn_stat_dtype(x)
    mean = torch.empty(0 if rms else m, dtype=stat, device=x.device)
    rstd = torch.empty(m, dtype=stat, device=x.device)
    if m == 0 or n == 0:
        mean.fill_(float("nan"))
        rstd.fill_(float("nan"))
        return y, mean, rstd
    w = weight.contiguous() if weight is not None else x2
    b = bias.contiguous() if bias is not None else x2
    rows, block, wide, warps = _row_forward_config(n, x.element_size())
    flags = dict(RMS=rms, HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None)
    mean_arg = x2 if rms else mean  # unused with RMS: a read-only stand-in (launch.py)
    if wide:
        _row_norm_forward_wide_kernel[(m,)](x2, y, w, b, mean_arg, rstd, m, n, stride_x, eps, BLOCK=block, num_warps=8, **flags)
    else:
        _row_norm_forward_kernel[(cdiv(m, rows),)](
            x2, y, w, b, mean_arg, rstd, m, n, stride_x, eps, ROWS=rows, BLOCK=block, num_warps=warps, **flags
        )
    return y, mean, rstd


def row_norm_backward(dy, x, normalized_shape, weight, mean, rstd, has_bias: bool, rms: bool):
    """Gradients of row_norm_forward: (dx, dweight, dbias); dweight/dbias are
    empty tensors where there is no weight/bias (always no bias for RMS)."""
    n = math.prod(normalized_shape)
    x2, m, stride_x = _rows(x, normalized_shape, n)
    dy2, _, stride_dy = _rows(dy, normalized_shape, n)
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    has_weight = weight is not None
    pdtype = weight.dtype if has_weight else x.dtype
    # the "no such parameter" placeholder, made only when some result needs it
    # (every torch call costs ~10 us of host time on the autograd thread)
    empty = None if (has_weight and has_bias) else x.new_empty(0, dtype=pdtype)
    if m == 0 or n == 0:
        empty = x.new_empty(0, dtype=pdtype)
        dx.zero_()
        zeros = torch.zeros(normalized_shape, dtype=pdtype, device=x.device)
        return dx, zeros if has_weight else empty, zeros.clone() if has_bias else empty.clone()
    w = weight.contiguous() if has_weight else x2
    rows, block, wide, warps, programs, rows_per_program, prefetch = _row_backward_launch(x, m, n)
    need_partials = has_weight or has_bias
    alloc = torch.zeros if wide else torch.empty
    part = alloc((programs, 2, n) if need_partials else (1,), dtype=torch.float32, device=x.device)
    flags = dict(RMS=rms, HAS_WEIGHT=has_weight, HAS_BIAS=has_bias)
    mean_arg = rstd if rms else mean
    args = (dy2, x2, w, mean_arg, rstd, dx, part, m, n, stride_x, stride_dy, rows_per_program)
    if wide:
        _row_norm_backward_wide_kernel[(programs,)](*args, BLOCK=block, num_warps=8, **flags)
    else:
        _row_norm_backward_kernel[(programs,)](*args, ROWS=rows, BLOCK=block, num_warps=warps,
                                               PREFETCH=prefetch, **flags)
    if not need_partials:
        return dx, empty, empty.clone()
    # the deterministic second pass: one small kernel sums the partial rows
    # and writes both results in the parameter dtype (one launch, not four
    # torch ops); two separate results: a custom op's outputs must not alias
    dweight = torch.empty(normalized_shape, dtype=pdtype, device=x.device) if has_weight else empty
    dbias = torch.empty(normalized_shape, dtype=pdtype, device=x.device) if has_bias else empty.clone()
    # narrow column blocks, so that ~100-250 programs share the (programs x N)
    # sum: 16 programs of 256 columns took 44 us over the 528 x 2 x 4096
    # float32 partials of a 32768x4096 layer norm on an H200, a sixteenth of
    # its backward (scripts/probe_cells.py); ~4096 partials a step
    sum_block = max(32, min(256, next_power_of_2(cdiv(n, 256))))
    sum_rows = max(16, min(next_power_of_2(programs), 4096 // sum_block))
    _row_norm_sum_partials_kernel[(cdiv(n, sum_block),)](
        part, dweight if has_weight else part, dbias if has_bias else part, programs, n, 2 * n, n,
        HAS_WEIGHT=has_weight, HAS_BIAS=has_bias, BLOCK_P=sum_rows, BLOCK=sum_block, num_warps=4,
    )
    return dx, dweight, dbias


@triton.jit
def _row_norm_sum_partials_kernel(
    part_ptr,  # float32 partial sums: [p, 0, col] for dweight, [p, 1, col] for dbias
    dw_ptr, db_ptr,  # (N,) out, in the parameter dtype (when HAS_WEIGHT / HAS_BIAS)
    P, N, stride_p, stride_which,  # strides of part's p and 0/1 dimensions
    HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK: tl.constexpr,
):
    cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = cols < N
    rp = tl.arange(0, BLOCK_P)[:, None]
    acc_w = tl.zeros([BLOCK_P, BLOCK], dtype=tl.float32)
    acc_b = tl.zeros([BLOCK_P, BLOCK], dtype=tl.float32)
    for p in range(0, P, BLOCK_P):
        m = (p + rp < P) & ok[None, :]
        offs = (p + rp).to(tl.int64) * stride_p + cols[None, :]
        if HAS_WEIGHT:
            acc_w += tl.load(part_ptr + offs, mask=m, other=0.0)
        if HAS_BIAS:
            acc_b += tl.load(part_ptr + offs + stride_which, mask=m, other=0.0)
    if HAS_WEIGHT:
        tl.store(dw_ptr + cols, tl.sum(acc_w, axis=0).to(dw_ptr.dtype.element_ty), mask=ok)
    if HAS_BIAS:
        tl.store(db_ptr + cols, tl.sum(acc_b, axis=0).to(db_ptr.dtype.element_ty), mask=ok)


# --- GroupNorm ---------------------------------------------------------------
#
# A program owns one tile of one (sample, group) block: C_BLOCK of its C/G
# channels x S_BLOCK spatial positions, addressed through (stride_n,
# stride_c, stride_s), so NCHW (stride_s = 1) and channels_last (stride_c = 1)
# run the same kernels; the tile is shaped to be long along whichever
# dimension is contiguous. The 1-D grid is (N * G) x tiles_per_group.

@triton.jit
def _group_tile(pid, tiles_per_group, s_tiles, G, CPG, S, stride_n, stride_c, stride_s,
                C_BLOCK: tl.constexpr, S_BLOCK: tl.constexpr):
    """This program's (group row n*G+g, sample n, first channel of the tile's
    group, channel offsets, spatial tile index, mask, element offsets)."""
    ng = pid // tiles_per_group
    tile = pid % tiles_per_group
    n = ng // G
    g = ng % G
    c_in_group = (tile // s_tiles) * C_BLOCK + tl.arange(0, C_BLOCK)
    s_tile = tile % s_tiles
    s = s_tile * S_BLOCK + tl.arange(0, S_BLOCK)
    channels = g * CPG + c_in_group
    mask = (c_in_group < CPG)[:, None] & (s < S)[None, :]
    offs = n * stride_n + channels.to(tl.int64)[:, None] * stride_c + s.to(tl.int64)[None, :] * stride_s
    return ng, n, channels, c_in_group < CPG, s_tile, mask, offs


@triton.jit
def _group_stats_partial_kernel(
    x_ptr,  # (N, C, S) input, strides (stride_n, stride_c, stride_s)
    part_ptr,  # (N*G, tiles_per_group, 3) float32: count, mean, M2 of each tile
    tiles_per_group, s_tiles, G, CPG, S, stride_n, stride_c, stride_s,
    C_BLOCK: tl.constexpr, S_BLOCK: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    ng, n, channels, c_ok, s_tile, mask, offs = _group_tile(
        pid, tiles_per_group, s_tiles, G, CPG, S, stride_n, stride_c, stride_s, C_BLOCK, S_BLOCK)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    count = tl.sum(tl.sum(mask.to(tl.float32), axis=1), axis=0)
    mean = tl.sum(tl.sum(x, axis=1), axis=0) / count
    xc = tl.where(mask, x - mean, 0.0)
    m2 = tl.sum(tl.sum(xc * xc, axis=1), axis=0)
    tl.store(part_ptr + pid * 3, count)
    tl.store(part_ptr + pid * 3 + 1, mean)
    tl.store(part_ptr + pid * 3 + 2, m2)


@triton.jit
def _group_stats_combine_kernel(
    part_ptr,  # (N*G, tiles_per_group, 3) float32 tile partials
    mean_ptr, rstd_ptr,  # (N*G,) group statistics out
    tiles_per_group, eps,
    BLOCK: tl.constexpr,
):
    # Chan's parallel variance: mean = sum(n_i m_i) / n,
    # M2 = sum(M2_i + n_i (m_i - mean)^2): exact, no cancellation
    ng = tl.program_id(0).to(tl.int64)
    base = part_ptr + ng * tiles_per_group * 3
    t = tl.arange(0, BLOCK)
    counts = tl.zeros([BLOCK], dtype=tl.float32)
    sums = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, tiles_per_group, BLOCK):
        ok = start + t < tiles_per_group
        c = tl.load(base + (start + t) * 3, mask=ok, other=0.0)
        counts += c
        sums += c * tl.load(base + (start + t) * 3 + 1, mask=ok, other=0.0)
    total = tl.sum(counts, axis=0)
    mean = tl.sum(sums, axis=0) / total
    m2 = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, tiles_per_group, BLOCK):
        ok = start + t < tiles_per_group
        c = tl.load(base + (start + t) * 3, mask=ok, other=0.0)
        d = tl.load(base + (start + t) * 3 + 1, mask=ok, other=0.0) - mean
        m2 += tl.load(base + (start + t) * 3 + 2, mask=ok, other=0.0) + c * d * d
    rstd = 1.0 / tl.sqrt(tl.sum(m2, axis=0) / total + eps)
    tl.store(mean_ptr + ng, mean.to(mean_ptr.dtype.element_ty))
    tl.store(rstd_ptr + ng, rstd.to(rstd_ptr.dtype.element_ty))


@triton.jit
def _group_norm_apply_kernel(
    x_ptr,  # (N, C, S) input, strides (stride_n, stride_c, stride_s)
    y_ptr,  # (N, C, S) output, same strides as x
    w_ptr, b_ptr,  # (C,) affine (unused without HAS_WEIGHT / HAS_BIAS)
    mean_ptr, rstd_ptr,  # (N*G,) group statistics
    act_param,  # the activation's float (LeakyReLU's slope), for group_norm_act
    tiles_per_group, s_tiles, G, CPG, S, stride_n, stride_c, stride_s,
    HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, ACT: tl.constexpr,  # ACT: IDENTITY for plain group norm
    C_BLOCK: tl.constexpr, S_BLOCK: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    ng, n, channels, c_ok, s_tile, mask, offs = _group_tile(
        pid, tiles_per_group, s_tiles, G, CPG, S, stride_n, stride_c, stride_s, C_BLOCK, S_BLOCK)
    mean = tl.load(mean_ptr + ng).to(tl.float32)
    rstd = tl.load(rstd_ptr + ng).to(tl.float32)
    # y = (x - mean) * scale + b per channel (not x * scale + (b - mean *
    # scale), which cancels when the mean is large against the spread)
    scale = tl.zeros([C_BLOCK], dtype=tl.float32) + rstd
    if HAS_WEIGHT:
        scale = scale * tl.load(w_ptr + channels, mask=c_ok, other=0.0).to(tl.float32)
    shift = tl.zeros([C_BLOCK], dtype=tl.float32)
    if HAS_BIAS:
        shift = tl.load(b_ptr + channels, mask=c_ok, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    y = _act((x - mean) * scale[:, None] + shift[:, None], act_param, ACT)
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _group_dz_xhat(dy_ptr, x_ptr, w_ptr, b_ptr, ng, channels, c_ok, mask, offs, mean_ptr, rstd_ptr, act_param,
                   HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, ACT: tl.constexpr):
    """(dz, xhat, g = dz * w) of a tile; dz = dy * act'(z), z = xhat * w + b
    recomputed from x and the statistics (dz = dy for plain group norm)."""
    mean = tl.load(mean_ptr + ng).to(tl.float32)
    rstd = tl.load(rstd_ptr + ng).to(tl.float32)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    xhat = tl.where(mask, (x - mean) * rstd, 0.0)
    z = xhat
    if HAS_WEIGHT:
        w = tl.load(w_ptr + channels, mask=c_ok, other=0.0).to(tl.float32)[:, None]
        z = z * w
    if HAS_BIAS:
        z = z + tl.load(b_ptr + channels, mask=c_ok, other=0.0).to(tl.float32)[:, None]
    dz = tl.where(mask, _act_grad(dy, z, act_param, ACT), 0.0)
    g = dz
    if HAS_WEIGHT:
        g = dz * w
    return dz, xhat, g


@triton.jit
def _group_norm_backward_partial_kernel(
    dy_ptr, x_ptr,  # (N, C, S), both with strides (stride_n, stride_c, stride_s)
    w_ptr, b_ptr,  # (C,) affine (unused without HAS_WEIGHT / HAS_BIAS; the bias only feeds z)
    mean_ptr, rstd_ptr,  # (N*G,) group statistics
    act_param,  # the activation's float, for group_norm_act
    group_part_ptr,  # (N*G, tiles_per_group, 2) float32: sum(g), sum(g * xhat) of the tile
    channel_part_ptr,  # (2, N, C, s_tiles) float32: sum(dz * xhat), sum(dz) over the tile's positions
    tiles_per_group, s_tiles, N, G, CPG, S, stride_n, stride_c, stride_s,
    HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, ACT: tl.constexpr,  # ACT: IDENTITY for plain group norm
    C_BLOCK: tl.constexpr, S_BLOCK: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    ng, n, channels, c_ok, s_tile, mask, offs = _group_tile(
        pid, tiles_per_group, s_tiles, G, CPG, S, stride_n, stride_c, stride_s, C_BLOCK, S_BLOCK)
    dz, xhat, g = _group_dz_xhat(dy_ptr, x_ptr, w_ptr, b_ptr, ng, channels, c_ok, mask, offs, mean_ptr, rstd_ptr,
                                 act_param, HAS_WEIGHT, HAS_BIAS, ACT)
    tl.store(group_part_ptr + pid * 2, tl.sum(tl.sum(g, axis=1), axis=0))
    tl.store(group_part_ptr + pid * 2 + 1, tl.sum(tl.sum(g * xhat, axis=1), axis=0))
    C = G * CPG
    chan = channel_part_ptr + (n * C + channels) * s_tiles + s_tile
    tl.store(chan, tl.sum(dz * xhat, axis=1), mask=c_ok)
    tl.store(chan + N * C * s_tiles, tl.sum(dz, axis=1), mask=c_ok)


@triton.jit
def _group_norm_backward_dx_kernel(
    dy_ptr, x_ptr, dx_ptr,  # (N, C, S), all with strides (stride_n, stride_c, stride_s)
    w_ptr, b_ptr,  # as in _group_norm_backward_partial_kernel
    mean_ptr, rstd_ptr,  # (N*G,) group statistics
    act_param,
    group_sums_ptr,  # (N*G, 2) float32: sum(g), sum(g * xhat) over the group
    inv_count,  # 1 / (C/G * S), the group size
    tiles_per_group, s_tiles, G, CPG, S, stride_n, stride_c, stride_s,
    HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, ACT: tl.constexpr,
    C_BLOCK: tl.constexpr, S_BLOCK: tl.constexpr,
):
    """dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dz * w."""
    pid = tl.program_id(0).to(tl.int64)
    ng, n, channels, c_ok, s_tile, mask, offs = _group_tile(
        pid, tiles_per_group, s_tiles, G, CPG, S, stride_n, stride_c, stride_s, C_BLOCK, S_BLOCK)
    dz, xhat, g = _group_dz_xhat(dy_ptr, x_ptr, w_ptr, b_ptr, ng, channels, c_ok, mask, offs, mean_ptr, rstd_ptr,
                                 act_param, HAS_WEIGHT, HAS_BIAS, ACT)
    rstd = tl.load(rstd_ptr + ng).to(tl.float32)
    mean_g = tl.load(group_sums_ptr + ng * 2) * inv_count
    mean_gx = tl.load(group_sums_ptr + ng * 2 + 1) * inv_count
    dx = (g - mean_g - xhat * mean_gx) * rstd
    tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _group_norm_forward_whole_kernel(
    x_ptr, y_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr,  # as in _group_norm_apply_kernel
    inv_count,  # 1 / (C/G * S)
    G, CPG, S, stride_n, stride_c, stride_s, eps,
    HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
    C_BLOCK: tl.constexpr, S_BLOCK: tl.constexpr,
    var_ptr=None,  # (N*G,) float32 biased variance out (when STORE_VAR: instance norm's running stats)
    STORE_VAR: tl.constexpr = False,
    act_param=1.0,  # the activation's float (group_norm_act); ACT = IDENTITY: plain group norm
    ACT: tl.constexpr = -1,  # IDENTITY: a literal, as Inductor re-executes this signature without our globals
):
    # the whole (sample, group) block in one tile: statistics and y from a
    # single read, one launch
    pid = tl.program_id(0).to(tl.int64)
    ng, n, channels, c_ok, s_tile, mask, offs = _group_tile(
        pid, 1, 1, G, CPG, S, stride_n, stride_c, stride_s, C_BLOCK, S_BLOCK)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(tl.sum(x, axis=1), axis=0) * inv_count
    # inv_count is rounded, so sum * inv_count can miss the mean by an ulp or
    # two of |mean|: with a large mean and a tiny spread (1e4 + small noise)
    # that offset is what gets normalized. One correction from the residuals
    # (x already in registers) lands on the float32-rounded mean.
    mean = mean + tl.sum(tl.sum(tl.where(mask, x - mean, 0.0), axis=1), axis=0) * inv_count
    xc = tl.where(mask, x - mean, 0.0)
    var = tl.sum(tl.sum(xc * xc, axis=1), axis=0) * inv_count
    rstd = 1.0 / tl.sqrt(var + eps)
    tl.store(mean_ptr + ng, mean.to(mean_ptr.dtype.element_ty))
    tl.store(rstd_ptr + ng, rstd.to(rstd_ptr.dtype.element_ty))
    if STORE_VAR:
        tl.store(var_ptr + ng, var.to(var_ptr.dtype.element_ty))
    scale = tl.zeros([C_BLOCK], dtype=tl.float32) + rstd
    if HAS_WEIGHT:
        scale = scale * tl.load(w_ptr + channels, mask=c_ok, other=0.0).to(tl.float32)
    y = xc * scale[:, None]
    if HAS_BIAS:
        y = y + tl.load(b_ptr + channels, mask=c_ok, other=0.0).to(tl.float32)[:, None]
    y = _act(y, act_param, ACT)
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _group_norm_backward_whole_kernel(
    dy_ptr, x_ptr, dx_ptr, w_ptr, mean_ptr, rstd_ptr,  # as in _group_norm_backward_dx_kernel
    channel_part_ptr,  # (2, N, C, 1) float32: sum(dy * xhat), sum(dy) over the positions
    inv_count, N, G, CPG, S, stride_n, stride_c, stride_s,
    HAS_WEIGHT: tl.constexpr,
    C_BLOCK: tl.constexpr, S_BLOCK: tl.constexpr,
    b_ptr=None,  # (C,) bias: with an activation, part of its recomputed input z
    act_param=1.0,  # the activation's float (group_norm_act); ACT = IDENTITY: plain group norm
    HAS_BIAS: tl.constexpr = False, ACT: tl.constexpr = -1,  # IDENTITY (a literal: see above)
):
    # the whole (sample, group) block in one tile: the group sums need no
    # partials, so dx and the per-channel partials come from one read
    pid = tl.program_id(0).to(tl.int64)
    ng, n, channels, c_ok, s_tile, mask, offs = _group_tile(
        pid, 1, 1, G, CPG, S, stride_n, stride_c, stride_s, C_BLOCK, S_BLOCK)
    # the split kernels' tile read (dz is dy for plain group norm)
    dz, xhat, g = _group_dz_xhat(dy_ptr, x_ptr, w_ptr, b_ptr, ng, channels, c_ok, mask, offs, mean_ptr, rstd_ptr,
                                 act_param, HAS_WEIGHT, HAS_BIAS, ACT)
    rstd = tl.load(rstd_ptr + ng).to(tl.float32)
    mean_g = tl.sum(tl.sum(g, axis=1), axis=0) * inv_count
    mean_gx = tl.sum(tl.sum(g * xhat, axis=1), axis=0) * inv_count
    dx = (g - mean_g - xhat * mean_gx) * rstd
    tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
    C = G * CPG
    chan = channel_part_ptr + n * C + channels
    tl.store(chan, tl.sum(dz * xhat, axis=1), mask=c_ok)
    tl.store(chan + N * C, tl.sum(dz, axis=1), mask=c_ok)


def _group_view(x: torch.Tensor):
    """(x or a contiguous copy, (N, C, S), (stride_n, stride_c, stride_s)) for
    an input (N, C, *spatial): contiguous (NCHW) and channels-last inputs are
    used as they are, anything else is copied to contiguous."""
    n, c = x.shape[0], x.shape[1]
    s = math.prod(x.shape[2:])
    if not x.is_contiguous():
        channels_last = x.dim() > 2 and x.permute(0, *range(2, x.dim()), 1).is_contiguous()
        if channels_last:
            return x, (n, c, s), (s * c, 1, c)
        x = x.contiguous()
    return x, (n, c, s), (c * s, s, 1)


# a (sample, group) block up to this many elements (padded to powers of two)
# is held whole by one program: forward holds x, backward x, dy and more
_RN_WHOLE_GROUP_FORWARD = 16384
_RN_WHOLE_GROUP_BACKWARD = 8192


def _whole_group_warps(block: int) -> int:
    """Warps of the one-group-a-program kernels (group norm's whole-group
    kernels, instance norm's planes): about 1024 elements a warp, 4 to 16.
    A 4096-element plane (instance norm, 16x512x64x64) on 16 warps ran its
    bfloat16 forward at 2515 GB/s and backward at 2561, on 4 warps at 3516
    and 3381; float32 within 2 % either way (H200, scripts/probe_variants.py)."""
    return max(4, min(16, block // 1024))


def _group_tiles(cpg: int, s: int, channels_contiguous: bool, whole_limit: int):
    """(C_BLOCK, S_BLOCK): the whole group when it fits in whole_limit, else
    about _RN_TILE elements, long along the contiguous dim."""
    if row_block(cpg) * row_block(s) <= whole_limit:
        return row_block(cpg), row_block(s)
    if channels_contiguous:
        c_block = min(row_block(cpg), _RN_TILE)
        s_block = min(row_block(s), max(1, _RN_TILE // c_block))
    else:
        s_block = min(row_block(s), _RN_TILE)
        c_block = min(row_block(cpg), max(1, _RN_TILE // s_block))
    return c_block, s_block


def _group_launch(x, num_groups, whole_limit):
    x, (n, c, s), strides = _group_view(x)
    cpg = c // num_groups
    c_block, s_block = _group_tiles(cpg, s, strides[1] == 1 and s > 1, whole_limit)
    s_tiles = cdiv(s, s_block)
    tiles = cdiv(cpg, c_block) * s_tiles
    return x, (n, c, s), strides, cpg, c_block, s_block, s_tiles, tiles


def group_norm_forward(x, num_groups: int, weight, bias, eps: float, act=IDENTITY.value, act_param: float = 1.0):
    """Returns (y, mean, rstd): y like x (same memory format), mean and rstd
    of shape (N*G,) in float32 (float64 for float64 x). ``act`` (an
    activation id, kernels/activation.py) is applied as y is written: group
    norm + activation takes the very kernels of plain group norm."""
    stat = _rn_stat_dtype(x)
    mean = torch.empty(x.shape[0] * num_groups, dtype=stat, device=x.device)
    rstd = torch.empty_like(mean)
    xv, (n, c, s), strides, cpg, c_block, s_block, s_tiles, tiles = _group_launch(x, num_groups, _RN_WHOLE_GROUP_FORWARD)
    y = torch.empty_like(xv)  # a dense tensor: same strides as xv
    if xv.numel() == 0:
        mean.fill_(float("nan"))
        rstd.fill_(float("nan"))
        return y, mean, rstd
    grid = (n * num_groups * tiles,)
    shape_args = (tiles, s_tiles, num_groups, cpg, s) + strides
    warps = warps_for(c_block * s_block)
    w = weight.contiguous() if weight is not None else xv
    b = bias.contiguous() if bias is not None else xv
    flags = dict(HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None, C_BLOCK=c_block, S_BLOCK=s_block, num_warps=warps)
    if tiles == 1:
        flags["num_warps"] = _whole_group_warps(c_block * s_block)
        _group_norm_forward_whole_kernel[grid](xv, y, w, b, mean, rstd, 1.0 / (cpg * s), num_groups, cpg, s, *strides, eps,
                                               act_param=act_param, ACT=act, **flags)
        return y, mean, rstd
    if _gn_persistent_ok(xv, s):
        pgrid, meta = _gn_persistent_launch(xv, n * num_groups, cpg, s, _GN_PERSISTENT_FORWARD, act)
        _gn_persistent_forward_kernel[pgrid](
            xv, y, w, b, mean, rstd, n * num_groups, num_groups, cpg, s, eps, act_param,
            HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None, ACT=act, **meta)
        return y, mean, rstd
    part = torch.empty((n * num_groups, tiles, 3), dtype=torch.float32, device=x.device)
    _group_stats_partial_kernel[grid](xv, part, *shape_args, C_BLOCK=c_block, S_BLOCK=s_block, num_warps=warps)
    _group_stats_combine_kernel[(n * num_groups,)](part, mean, rstd, tiles, eps, BLOCK=min(row_block(tiles), 1024), num_warps=4)
    _group_norm_apply_kernel[grid](xv, y, w, b, mean, rstd, act_param, *shape_args, ACT=act, **flags)
    return y, mean, rstd


def group_norm_backward(dy, x, num_groups: int, weight, mean, rstd, has_bias: bool, bias=None, act=IDENTITY.value,
                        act_param: float = 1.0):
    """Gradients of group_norm_forward: (dx, dweight, dbias), dx in x's memory
    format; dweight/dbias empty tensors where there is no weight/bias. With
    ``act``, through the activation first; its input is recomputed from x,
    the statistics, the weight and ``bias``."""
    xv, (n, c, s), strides, cpg, c_block, s_block, s_tiles, tiles = _group_launch(x, num_groups, _RN_WHOLE_GROUP_BACKWARD)
    dyv = same_layout(dy, xv)
    dx = torch.empty_like(xv)
    has_weight = weight is not None
    pdtype = weight.dtype if has_weight else x.dtype
    empty = None if (has_weight and has_bias) else x.new_empty(0, dtype=pdtype)  # made only when needed
    if xv.numel() == 0:
        empty = x.new_empty(0, dtype=pdtype)
        dx.zero_()
        zeros = torch.zeros(c, dtype=pdtype, device=x.device)
        return dx, zeros if has_weight else empty, zeros.clone() if has_bias else empty.clone()
    weight = weight.contiguous() if has_weight else xv
    grid = (n * num_groups * tiles,)
    shape_args = (tiles, s_tiles, num_groups, cpg, s) + strides
    warps = warps_for(c_block * s_block)
    if tiles > 1 and _gn_persistent_ok(xv, s):
        s_tiles = 1
    channel_part = torch.empty((2, n, c, s_tiles), dtype=torch.float32, device=x.device)
    b = bias if bias is not None else xv  # (the bias only feeds the activation's recomputed input)
    if tiles > 1 and _gn_persistent_ok(xv, s):
        pgrid, meta = _gn_persistent_launch(xv, n * num_groups, cpg, s, _GN_PERSISTENT_BACKWARD, act)
        _gn_persistent_backward_kernel[pgrid](
            dyv, xv, dx, weight, b, mean, rstd, act_param, channel_part, n * num_groups, num_groups, cpg, s,
            HAS_WEIGHT=has_weight, HAS_BIAS=bias is not None, ACT=act, **meta)
    elif tiles == 1:
        _group_norm_backward_whole_kernel[grid](
            dyv, xv, dx, weight, mean, rstd, channel_part, 1.0 / (cpg * s), n, num_groups, cpg, s, *strides,
            HAS_WEIGHT=has_weight, C_BLOCK=c_block, S_BLOCK=s_block, num_warps=_whole_group_warps(c_block * s_block),
            b_ptr=b, act_param=act_param, HAS_BIAS=bias is not None, ACT=act,
        )
    else:
        _group_norm_backward_split(dyv, xv, dx, weight, mean, rstd, channel_part, grid, shape_args, n, num_groups, cpg, s, strides,
                                   has_weight, c_block, s_block, warps, bias=bias, act_param=act_param, act=act)
    if not (has_weight or has_bias):
        return dx, empty, empty.clone()
    if s_tiles == 1:
        dweight, dbias = _channel_sums(channel_part, n, c, pdtype, has_weight, has_bias)
        return dx, dweight if has_weight else empty, dbias if has_bias else empty.clone()
    channel_sums = channel_part.sum(dim=(1, 3))  # (2, C), deterministic
    dweight = channel_sums[0].to(pdtype, copy=True) if has_weight else empty
    dbias = channel_sums[1].to(pdtype, copy=True) if has_bias else empty.clone()
    return dx, dweight, dbias


@functools.lru_cache(maxsize=1024)  # pure in two ints; host time
def _channel_sums_blocks(n: int, c: int):
    """(BLOCK, BLOCK_P, grid) of _channel_sums for N partials of C channels."""
    block = min(128, next_power_of_2(c))
    return block, min(max(16, next_power_of_2(n)), 8192 // block), (cdiv(c, block),)


def _channel_sums(channel_part, n: int, c: int, dtype, has_weight: bool = True, has_bias: bool = True):
    """The two planes of a contiguous (2, N, C, ...) float32 buffer of N
    partial sums per channel (group norm: per-(n, c) sum(dz * xhat) and
    sum(dz)), each summed over N by one small kernel into ``dtype`` (host
    time: one launch instead of a torch sum and two casts); None for the
    one not asked for."""
    dweight = torch.empty(c, dtype=dtype, device=channel_part.device) if has_weight else None
    dbias = torch.empty(c, dtype=dtype, device=channel_part.device) if has_bias else None
    # 8192 partial values a step and plane (64 registers a thread for the two
    # accumulators on 8 warps). A batch-norm backward on channels_last leaves
    # ~1000 partials a channel: at 32 rows a step on 4 warps one program took
    # 51 us for 64 channels on an H200 (scripts/probe_cells.py, f5a3ed3).
    block, block_p, grid = _channel_sums_blocks(n, c)
    _row_norm_sum_partials_kernel[grid](
        channel_part, dweight if has_weight else channel_part, dbias if has_bias else channel_part, n, c, c, n * c,
        HAS_WEIGHT=has_weight, HAS_BIAS=has_bias, BLOCK_P=block_p, BLOCK=block, num_warps=8,
    )
    return dweight, dbias


def _group_norm_backward_split(dyv, xv, dx, weight, mean, rstd, channel_part, grid, shape_args, n, num_groups, cpg, s, strides,
                               has_weight, c_block, s_block, warps, bias=None, act_param=1.0, act=IDENTITY.value):
    """Backward for groups spread over several tiles: tile partials, their
    sums per group, then the dx pass. With ``act`` (group_norm_act) the
    gradient goes through the activation first; ``bias`` is then needed to
    recompute its input."""
    tiles, s_tiles = shape_args[0], shape_args[1]
    group_part = torch.empty((n * num_groups, tiles, 2), dtype=torch.float32, device=xv.device)
    b = bias if bias is not None else xv
    flags = dict(HAS_WEIGHT=has_weight, HAS_BIAS=bias is not None, ACT=act, C_BLOCK=c_block, S_BLOCK=s_block,
                 num_warps=warps)
    _group_norm_backward_partial_kernel[grid](
        dyv, xv, weight, b, mean, rstd, act_param, group_part, channel_part, tiles, s_tiles, n, num_groups, cpg, s,
        *strides, **flags)
    group_sums = group_part.sum(dim=1)  # (N*G, 2), deterministic
    _group_norm_backward_dx_kernel[grid](
        dyv, xv, dx, weight, b, mean, rstd, act_param, group_sums, 1.0 / (cpg * s), *shape_args, **flags)


# --- GroupNorm, one program per (sample, group) at a time ---------------------
#
# For NCHW-contiguous inputs whose groups are too big for one tile, a group
# is one contiguous run of C/G * S values. A persistent grid (a few programs
# per SM) walks the groups; a program reads its group twice: once for the
# statistics (or the backward sums), then again to write y (or dx). Few
# groups are in flight at a time (programs x group bytes, a few tens of MB),
# so the second read mostly hits L2 and DRAM sees x (and dy) about once.
# Within a group the program walks channel by channel, so that the weight and
# bias are scalars and the per-channel backward sums fall out of the loop.

@triton.jit
def _gn_persistent_forward_kernel(
    x_ptr, y_ptr,  # (N, C, S) contiguous: group ng is the (CPG, S) block at ng * CPG * S
    w_ptr, b_ptr,  # (C,) affine (unused without HAS_WEIGHT / HAS_BIAS)
    mean_ptr, rstd_ptr,  # (N*G,) out
    NG, G, CPG, S, eps,
    act_param,  # the activation's float (leaky_relu's slope); ACT = IDENTITY: plain group norm
    HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, ACT: tl.constexpr, CB: tl.constexpr, SB: tl.constexpr,
):
    rc = tl.arange(0, CB)[:, None]
    rs = tl.arange(0, SB)[None, :]
    count = CPG * S
    # ng = program id + k * programs: a tensor under the interpreter too
    for ng0 in range(0, NG, tl.num_programs(0)):
        ng = ng0 + tl.program_id(0)
        if ng < NG:
            base = x_ptr + ng.to(tl.int64) * count
            # shifted sums around the first tile's mean: nothing large cancels
            ok = (rc < CPG) & (rs < S)
            head = tl.load(base + rc * S + rs, mask=ok, other=0.0).to(tl.float32)
            shift = tl.sum(tl.sum(head, axis=1), axis=0) / tl.sum(tl.sum(ok.to(tl.float32), axis=1), axis=0)
            acc1 = tl.zeros([CB, SB], dtype=tl.float32)
            acc2 = tl.zeros([CB, SB], dtype=tl.float32)
            for c in range(0, CPG, CB):
                for s in range(0, S, SB):
                    ok = (c + rc < CPG) & (s + rs < S)
                    x = tl.load(base + (c + rc) * S + s + rs, mask=ok, other=0.0).to(tl.float32)
                    d = tl.where(ok, x - shift, 0.0)
                    acc1 += d
                    acc2 += d * d
            s1 = tl.sum(tl.sum(acc1, axis=1), axis=0) / count
            var = tl.maximum(tl.sum(tl.sum(acc2, axis=1), axis=0) / count - s1 * s1, 0.0)
            mean = shift + s1
            rstd = 1.0 / tl.sqrt(var + eps)
            tl.store(mean_ptr + ng, mean.to(mean_ptr.dtype.element_ty))
            tl.store(rstd_ptr + ng, rstd.to(rstd_ptr.dtype.element_ty))
            out = y_ptr + ng.to(tl.int64) * count
            c0 = (ng % G) * CPG
            for c in range(0, CPG, CB):
                c_ok = c + rc < CPG
                scale = tl.zeros([CB, 1], dtype=tl.float32) + rstd
                if HAS_WEIGHT:
                    scale = scale * tl.load(w_ptr + c0 + c + rc, mask=c_ok, other=0.0).to(tl.float32)
                shift_c = tl.zeros([CB, 1], dtype=tl.float32)  # (x - mean) * scale + b: no cancellation
                if HAS_BIAS:
                    shift_c = shift_c + tl.load(b_ptr + c0 + c + rc, mask=c_ok, other=0.0).to(tl.float32)
                for s in range(0, S, SB):
                    ok = c_ok & (s + rs < S)
                    offs = (c + rc) * S + s + rs
                    x = tl.load(base + offs, mask=ok, other=0.0).to(tl.float32)
                    z = _act((x - mean) * scale + shift_c, act_param, ACT)
                    tl.store(out + offs, z.to(y_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _gn_affine(w_ptr, b_ptr, chans, c_ok, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr):
    """(weight, bias) of the (CB, 1) channels ``chans`` in float32: 1 and 0
    where absent."""
    w = tl.full(chans.shape, 1.0, tl.float32)
    b = tl.zeros(chans.shape, dtype=tl.float32)
    if HAS_WEIGHT:
        w = tl.load(w_ptr + chans, mask=c_ok, other=0.0).to(tl.float32)
    if HAS_BIAS:
        b = tl.load(b_ptr + chans, mask=c_ok, other=0.0).to(tl.float32)
    return w, b


@triton.jit
def _gn_persistent_backward_kernel(
    dy_ptr, x_ptr, dx_ptr,  # (N, C, S) contiguous
    w_ptr,  # (C,) weight (unused without HAS_WEIGHT)
    b_ptr,  # (C,) bias: only an activation's input needs it (unused without HAS_BIAS)
    mean_ptr, rstd_ptr,  # (N*G,) group statistics
    act_param,
    channel_part_ptr,  # (2, N*C) float32 out: sum(dz * xhat), sum(dz) of each (n, c)
    NG, G, CPG, S,
    HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, ACT: tl.constexpr, CB: tl.constexpr, SB: tl.constexpr,
):
    # dz: the gradient reaching the norm's output z = xhat * w + b, through
    # the activation when there is one (recomputing z), else dy itself
    rc = tl.arange(0, CB)[:, None]
    rs = tl.arange(0, SB)[None, :]
    count = CPG * S
    NC = NG * CPG
    # ng = program id + k * programs: a tensor under the interpreter too
    for ng0 in range(0, NG, tl.num_programs(0)):
        ng = ng0 + tl.program_id(0)
        if ng < NG:
            base = ng.to(tl.int64) * count
            mean = tl.load(mean_ptr + ng).to(tl.float32)
            rstd = tl.load(rstd_ptr + ng).to(tl.float32)
            c0 = (ng % G) * CPG
            sum_g = 0.0
            sum_gx = 0.0
            for c in range(0, CPG, CB):
                c_ok = c + rc < CPG
                wc, bc = _gn_affine(w_ptr, b_ptr, c0 + c + rc, c_ok, HAS_WEIGHT, HAS_BIAS)
                acc_dy = tl.zeros([CB, SB], dtype=tl.float32)
                acc_dyx = tl.zeros([CB, SB], dtype=tl.float32)
                for s in range(0, S, SB):
                    ok = c_ok & (s + rs < S)
                    offs = base + (c + rc) * S + s + rs
                    x = tl.load(x_ptr + offs, mask=ok, other=0.0).to(tl.float32)
                    dy = tl.load(dy_ptr + offs, mask=ok, other=0.0).to(tl.float32)
                    dy = _act_grad(dy, (x - mean) * rstd * wc + bc, act_param, ACT)
                    acc_dy += dy
                    acc_dyx += tl.where(ok, dy * (x - mean), 0.0)
                s_dy = tl.sum(acc_dy, axis=1)  # (CB,) per channel
                s_dyx = tl.sum(acc_dyx, axis=1) * rstd
                chans = c + tl.arange(0, CB)
                ch_ok = chans < CPG
                tl.store(channel_part_ptr + ng * CPG + chans, s_dyx, mask=ch_ok)
                tl.store(channel_part_ptr + NC + ng * CPG + chans, s_dy, mask=ch_ok)
                if HAS_WEIGHT:  # the weights _gn_affine loaded for this block
                    w = tl.reshape(wc, (CB,))
                    s_dy = s_dy * w
                    s_dyx = s_dyx * w
                sum_g += tl.sum(s_dy, axis=0)
                sum_gx += tl.sum(s_dyx, axis=0)
            mean_g = sum_g / count
            mean_gx = sum_gx / count
            for c in range(0, CPG, CB):
                c_ok = c + rc < CPG
                wc, bc = _gn_affine(w_ptr, b_ptr, c0 + c + rc, c_ok, HAS_WEIGHT, HAS_BIAS)
                a = wc * rstd
                for s in range(0, S, SB):
                    ok = c_ok & (s + rs < S)
                    offs = base + (c + rc) * S + s + rs
                    x = tl.load(x_ptr + offs, mask=ok, other=0.0).to(tl.float32)
                    dy = tl.load(dy_ptr + offs, mask=ok, other=0.0).to(tl.float32)
                    xhat = (x - mean) * rstd
                    dy = _act_grad(dy, xhat * wc + bc, act_param, ACT)
                    dx = a * dy - rstd * (mean_g + xhat * mean_gx)
                    tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=ok)


# (programs per SM, tile elements, warps) of the forward and backward
# persistent kernels by (4-byte input?, with an activation?); groups in
# flight = SMs x programs per SM. From a sweep at 16x512x64x64, 32 groups,
# on an H200 (scripts/tune_group_norm.py, bench/results/h200-20261128-session9),
# GB/s against the configuration before it: fp32 + SiLU forward 2109 vs
# 1870 (two programs an SM hide the activation's arithmetic); bf16 forward
# 2494 vs 2103 plain and 1822 vs 1744 with SiLU; bf16 + SiLU backward 1334
# vs 929. The rest kept their measured best.
_GN_PERSISTENT_FORWARD = {(True, False): (1, 16384, 16), (True, True): (2, 8192, 16),
                          (False, False): (2, 16384, 16), (False, True): (4, 4096, 16)}
_GN_PERSISTENT_BACKWARD = {(True, False): (1, 16384, 16), (True, True): (1, 16384, 16),
                           (False, False): (4, 4096, 8), (False, True): (2, 8192, 16)}
_GN_PERSISTENT_MIN_S = 1024  # shorter channel runs: the split kernels


def _gn_persistent_ok(xv: torch.Tensor, s: int) -> bool:
    return xv.is_contiguous() and s >= _GN_PERSISTENT_MIN_S


def _gn_persistent_launch(x: torch.Tensor, groups: int, cpg: int, s: int, config, act: int):
    """(grid, meta-parameters) of a persistent GroupNorm kernel (``config``:
    a table above, or one (programs per SM, tile, warps))."""
    if isinstance(config, dict):
        config = config[(x.element_size() >= 4, act != IDENTITY.value)]
    per_sm, tile, warps = config
    sb = min(row_block(s), tile)
    cb = min(row_block(cpg), max(1, tile // sb))
    if x.is_cuda:
        sms = _sm_count(x.device.index if x.device.index is not None else torch.cuda.current_device())
        programs = max(1, min(groups, int(sms * per_sm)))
    else:
        programs = min(groups, 3)  # the interpreter: a few programs, each walking several groups
        warps = 4
    return (programs,), dict(CB=cb, SB=sb, num_warps=warps)
