"""Normalization kernels and their launchers. Statistics in float32;
cross-program reductions through float32 partial buffers and a second pass
(no atomics), so results are bit-identical run after run."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


# =============================================================================
# batch and instance norm
# =============================================================================

import functools  # noqa: E402
from typing import NamedTuple  # noqa: E402

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
    """Program (c, p) reduces tiles [p * tiles_per_prog, ...) of channel c,
    a tile being BLOCK_N samples x BLOCK_S contiguous positions.
    Statistics: writes (count, mean, M2). BACKWARD: writes (sum dy, sum dy*(x-mean))."""
    c = tl.program_id(0)
    p = tl.program_id(1)
    P = tl.num_programs(1)
    n_tiles = (N + BLOCK_N - 1) // BLOCK_N * s_blocks
    t0 = p * tiles_per_prog
    t1 = tl.minimum(t0 + tiles_per_prog, n_tiles)
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
    t = t0
    while t < t0 + tiles_per_prog:
        # the last program may run past n_tiles: those tiles are all masked
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
        t += 1
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
    """Program (cb, p, g) reduces row tiles [p * tiles_per_prog, ...) of the
    channel block cb of group g: BLOCK_R rows x BLOCK_C contiguous channels a
    step. Batch norm has one group of N*S rows; instance norm one group of S
    rows per sample, each (n, c) its own statistic g * C + c.
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
    n_tiles = (R + BLOCK_R - 1) // BLOCK_R
    t0 = p * tiles_per_prog
    t1 = tl.minimum(t0 + tiles_per_prog, n_tiles)
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
    t = t0
    while t < t0 + tiles_per_prog:  # past n_tiles the rows are all masked
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
        t += 1
    s1 = tl.sum(acc1, axis=0)
    s2 = tl.sum(acc2, axis=0)
    out = part_ptr + p * CT + cols
    if BACKWARD:
        tl.store(out, s1, mask=cmask)
        tl.store(out + P * CT, s2, mask=cmask)
    else:
        cnt = (tl.minimum(t1 * BLOCK_R, R) - t0 * BLOCK_R).to(tl.float32)
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

    @property
    def stats(self) -> int:  # statistics in all
        return self.c * self.groups

    @property
    def count(self) -> int:  # values per statistic
        return self.rows * self.s


def _plan(x: torch.Tensor, per_sample: bool = False) -> _Plan:
    """The plan for x: channels_last-like inputs (channel dim innermost) go on
    columns as they are; everything else is made contiguous and goes on rows,
    except one value per channel ((N, C), (N, C, 1, 1)), a plain (N, C) matrix."""
    n, c = x.shape[0], x.shape[1]
    s = x.numel() // max(n * c, 1)
    if x.dim() > 2 and s > 1 and x.movedim(1, -1).is_contiguous() and not x.is_contiguous():
        return _Plan(x, False, 1, c, s, n, c) if per_sample else _Plan(x, False, n, c, s, 1, c)
    x = x.contiguous()
    if per_sample:
        return _Plan(x, True, 1, n * c, s, 1, c)
    if x.dim() == 2 or s == 1:
        return _Plan(x, False, n, c, 1, 1, c)
    return _Plan(x, True, n, c, s, 1, c)


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
        return triton.next_power_of_2(max(k, 1))
    return min((tile // 4, tile // 2, tile), key=lambda b: (triton.cdiv(k, b) * b, -b))


@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _splits(n_tiles: int, channel_programs: int, device: torch.device):
    """How many programs share one channel (block): enough programs in all to
    fill the GPU a few times over, every program with at least one tile.
    Returns (programs per channel, tiles per program)."""
    if device.type == "cuda":
        # several programs per SM, each streaming many tiles: loads in flight everywhere
        target = 8 * _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    else:
        target = 2  # the interpreter: still exercise the multi-program combine
    p = max(1, min(n_tiles, triton.cdiv(target, channel_programs), _MAX_SPLITS))
    per = triton.cdiv(n_tiles, p)
    return triton.cdiv(n_tiles, per), per


def _reduce(plan: _Plan, dy, mean, backward: bool):
    """Run the statistics (backward=False) or gradient (backward=True) reduction
    pass; returns the (3, P, statistics) float32 partial buffer."""
    x, n, c, s = plan.x, plan.rows, plan.c, plan.s
    if plan.on_rows:
        block_s = _fit_block(s, _REDUCE_TILE)
        block_n = min(triton.next_power_of_2(n), max(1, _REDUCE_TILE // block_s))
        s_blocks = triton.cdiv(s, block_s)
        p, per = _splits(triton.cdiv(n, block_n) * s_blocks, c, x.device)
        part = torch.empty((3, p, c), device=x.device, dtype=torch.float32)
        _bn_reduce_rows_kernel[(c, p)](
            x, dy if backward else x, mean if backward else part, part, n, c, s, per, s_blocks,
            BACKWARD=backward, BLOCK_N=block_n, BLOCK_S=block_s, num_warps=_REDUCE_WARPS,
        )
    else:
        r = n * s
        block_c = min(triton.next_power_of_2(c), 128)
        block_r = max(1, _REDUCE_TILE // block_c)
        c_blocks = triton.cdiv(c, block_c)
        p, per = _splits(triton.cdiv(r, block_r), c_blocks * plan.groups, x.device)
        part = torch.empty((3, p, plan.stats), device=x.device, dtype=torch.float32)
        _bn_reduce_cols_kernel[(c_blocks, p, plan.groups)](
            x, dy if backward else x, mean if backward else part, part, r, c, per,
            BACKWARD=backward, BLOCK_R=block_r, BLOCK_C=block_c, num_warps=_REDUCE_WARPS,
        )
    return part


def _combine_blocks(p: int, c: int):
    """Blocks for the combine kernels: all P partials at once, a few channels."""
    block_p = triton.next_power_of_2(p)
    block_c = min(triton.next_power_of_2(c), max(1, 4096 // block_p))
    return block_p, block_c, (triton.cdiv(c, block_c),)


def _elementwise_launch(plan: _Plan):
    """(R, K, group_rows, BLOCK_R, BLOCK_K, grid) for the elementwise kernels."""
    if plan.on_rows:
        r, k, group_rows = plan.rows * plan.c, plan.s, 1
        block_k = _fit_block(k, _ELEMENTWISE_TILE)
    else:
        r, k, group_rows = plan.groups * plan.rows * plan.s, plan.c, plan.rows * plan.s
        block_k = min(triton.next_power_of_2(k), 128)
    block_r = max(1, _ELEMENTWISE_TILE // block_k)
    return r, k, group_rows, block_r, block_k, (triton.cdiv(r, block_r), triton.cdiv(k, block_k))


def batch_norm_stats(x: torch.Tensor, eps: float = 0.0, per_sample: bool = False):
    """(mean, biased var, 1/sqrt(var + eps)), float32, per channel of x (N, C, *)
    over all dims but 1; per_sample: per (n, c) over the spatial dims,
    flattened to (N*C,) (instance norm)."""
    plan = _plan(x, per_sample)
    mean, var, rstd = (torch.empty(plan.stats, device=x.device, dtype=torch.float32) for _ in range(3))
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
    plan = _plan(x, per_sample)
    y = torch.empty_like(plan.x)
    if x.numel() == 0:
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
    sum_dy = torch.zeros(plan.stats, device=x.device, dtype=torch.float32)
    sum_dy_xhat = torch.zeros(plan.stats, device=x.device, dtype=torch.float32)
    if x.numel() == 0:
        return sum_dy, sum_dy_xhat
    part = _reduce(plan, _like(dy, plan.x), mean, backward=True)
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
    dy = _like(dy, plan.x)
    dx = torch.empty_like(plan.x)
    if x.numel() == 0:
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


def batch_norm_forward(x, weight, bias, running_mean, running_var, training: bool, eps: float):
    """Returns (y, mean, rstd, var): the statistics used (float32, (C,)); var is
    the biased batch variance in training, running_var otherwise."""
    if training:
        mean, var, rstd = batch_norm_stats(x, eps)
    else:
        mean, var = running_mean.float(), running_var.float()
        rstd = torch.rsqrt(var + eps)
    return batch_norm_normalize(x, mean, rstd, weight, bias), mean, rstd, var


def batch_norm_backward(dy, x, weight, mean, rstd, training: bool, param_grads: bool = True):
    """(dx, dweight, dbias); dweight/dbias are float32 sums (None unless
    ``param_grads`` or training, which needs them for dx)."""
    sum_dy = sum_dy_xhat = None
    if training or param_grads:
        sum_dy, sum_dy_xhat = batch_norm_backward_reduce(dy, x, mean, rstd)
    m = x.numel() // max(x.shape[1], 1)
    dx = batch_norm_backward_input(dy, x, mean, rstd, weight, sum_dy, sum_dy_xhat, max(m, 1), training)
    return dx, sum_dy_xhat, sum_dy


def instance_norm_forward(x, weight, bias, eps: float):
    """(y, mean, rstd, var), statistics per (n, c) flattened to (N*C,) float32."""
    mean, var, rstd = batch_norm_stats(x, eps, per_sample=True)
    return batch_norm_normalize(x, mean, rstd, weight, bias, per_sample=True), mean, rstd, var


def instance_norm_backward(dy, x, weight, mean, rstd):
    """(dx, dweight, dbias); the parameter sums of each (n, c) folded over n."""
    n, c = x.shape[0], x.shape[1]
    sum_dy, sum_dy_xhat = batch_norm_backward_reduce(dy, x, mean, rstd, per_sample=True)
    m = x.numel() // max(n * c, 1)
    dx = batch_norm_backward_input(dy, x, mean, rstd, weight, sum_dy, sum_dy_xhat, max(m, 1), True, per_sample=True)
    return dx, sum_dy_xhat.reshape(n, c).sum(0), sum_dy.reshape(n, c).sum(0)


# =============================================================================
# layer, RMS and group norm
# =============================================================================
