"""Fused-layer kernels: one pass over memory where the unfused layers take
several. Math in float32, outputs in the input's dtype, cross-program sums
through float32 partial buffers summed by torch (no atomics: bit-identical
run to run).

* batch norm + activation: the batch statistics come from the batch-norm
  statistics pass of kernels/normalization.py (``batch_norm_stats``); then
  ONE pass y = act((x - mean) * rstd * w + b). Backward never reads a saved
  pre-activation: a reduction pass and a dx pass each recompute
  z = xhat * w + b from x and the statistics. In place (invertible act),
  y overwrites x and both backward passes recover xhat = (act^-1(y) - b) / w
  from y (In-Place Activated BatchNorm, Rota Bulo et al., 2018).
  Tiles follow the batch-norm kernels' view (``_plan``): NCHW as (N*C, S)
  rows with a channel per row, channels_last as (N*S, C) with a channel per
  column.
* group norm + activation: group statistics from group norm's statistics
  kernels, one normalize+act pass; backward recomputes z in both passes.
* residual add (+ dropout) + layer / RMS norm: one program holds whole rows,
  reads x and residual, applies the dropout mask of lamina's Philox stream
  (lamina.rng's element -> counter rule, so it matches dropout bit for bit),
  forms s = dropout(x) + residual and writes the normalized output. With
  prenorm s is an output: written, and backward reads it back (dy, s in;
  ds out). Without, s is never written: backward rebuilds it from x and
  residual, the same mask and the same rounding (_dropout_sum), bit for
  bit. Forward then moves 3n values instead of 4n and backward 4n instead
  of 3n, the same total, but x and residual are the caller's tensors, alive
  anyway, where a saved s would be n of memory kept for backward alone.
  Backward writes ds (= dresidual) and, with dropout, dx = the masked ds
  (the mask drawn once a tile, for s and dx).
* bias + activation: y = act(x + b); backward dx and per-program float32
  partial column sums for dbias.
* dropout + residual add: the dropout kernel's stream layout plus one more
  load; backward is dropout's own (mask regenerated).
"""

from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

from ..rng import GROUP
from .activation import IDENTITY, LEAKY_RELU, RELU, SWISH, _act, _act_grad, forward_warps, gelu_id
from .launch import ELEMENTWISE_WARPS, cdiv, dense, elementwise_block, row_block, same_layout
from .normalization import (  # the statistics passes are reused, not copied
    _div_rn,
    _channel_sums,
    _elementwise_launch,
    _plan,
    _row_backward_dx,
    _row_backward_launch,
    _row_backward_tile,
    _row_forward_config,
    _stats,
    group_norm_backward,
    group_norm_forward,
    row_norm_backward,
    row_norm_forward,
)
from .dropout import _stream_tile
from .dropout import dropout_backward as _dropout_kernel_backward

_ACT_IDS = {"relu": RELU.value, "leaky_relu": LEAKY_RELU.value, "silu": SWISH.value, "identity": IDENTITY.value}


def act_id(act: str, approximate: str = "none", dtype: torch.dtype = torch.float32) -> int:
    """The kernel id of ``act`` on ``dtype`` tensors (GELU's depends on both)."""
    if act == "gelu":
        return gelu_id(approximate, dtype).value
    return _ACT_IDS[act]


def act_param(act: str, negative_slope: float) -> float:
    """The one float an activation takes: LeakyReLU's slope, SiLU's beta = 1."""
    return float(negative_slope) if act == "leaky_relu" else 1.0


# --- activations of z, their derivative from z, and their inverse from y -------------

@triton.jit
def _inverse_act(y, dy, param, ACT: tl.constexpr):
    """(z, dz) from the output y of an invertible act (identity, leaky_relu
    with a positive slope, whose sign(y) = sign(z))."""
    if ACT == IDENTITY:
        return y, dy
    else:
        z = tl.where(y >= 0, y, y / param)
        return z, tl.where(y > 0, dy, dy * param)


# =============================================================================
# batch norm + activation
# =============================================================================

_BN_WARPS = 8


@triton.jit
def _bn_act_tile(ti, tj, R, K, C, CHANNELS_ON_ROWS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    """Offsets and mask of tile (ti, tj) of the (R, K) matrix, and the
    channel of each row (on rows, a vector) or column (on columns, a row)."""
    rows = ti * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tj * BLOCK_K + tl.arange(0, BLOCK_K)
    mask = (rows < R)[:, None] & (cols < K)[None, :]
    offs = rows.to(tl.int64)[:, None] * K + cols[None, :]
    if CHANNELS_ON_ROWS:
        channel = rows % C
        cmask = rows < R
    else:
        channel = cols
        cmask = cols < K
    return offs, mask, channel, cmask


@triton.jit
def _per_channel(ptr, channel, cmask, CHANNELS_ON_ROWS: tl.constexpr, other):
    """Per-channel float32 values shaped to broadcast over the tile (loaded
    as one vector either way); ``other`` outside the tile."""
    v = tl.load(ptr + channel, mask=cmask, other=other).to(tl.float32)
    if CHANNELS_ON_ROWS:
        return v[:, None]
    else:
        return v[None, :]


@triton.jit
def _bn_act_forward_kernel(
    x_ptr,  # (R, K) input
    y_ptr,  # (R, K) output (may be x_ptr: in place)
    mean_ptr, rstd_ptr,  # (C,) float32 statistics
    w_ptr, b_ptr,  # (C,) weight, bias (when HAS_W / HAS_B)
    param,  # the activation's float (leaky slope; 1 for silu)
    R, K, C,
    CHANNELS_ON_ROWS: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr, ACT: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """y = act((x - mean) * scale + b), scale = rstd * w. (Not x * scale +
    (b - mean * scale): with a large mean against the spread that cancels.)"""
    offs, mask, ch, cmask = _bn_act_tile(tl.program_id(0), tl.program_id(1), R, K, C, CHANNELS_ON_ROWS, BLOCK_R, BLOCK_K)
    scale = _per_channel(rstd_ptr, ch, cmask, CHANNELS_ON_ROWS, 0.0)
    if HAS_W:
        scale *= _per_channel(w_ptr, ch, cmask, CHANNELS_ON_ROWS, 0.0)
    mean = _per_channel(mean_ptr, ch, cmask, CHANNELS_ON_ROWS, 0.0)
    shift = tl.zeros_like(scale)
    if HAS_B:
        shift += _per_channel(b_ptr, ch, cmask, CHANNELS_ON_ROWS, 0.0)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    y = _act((x - mean) * scale + shift, param, ACT)
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bn_act_dz_xhat(dy_ptr, x_ptr, offs, mask, ch, cmask, mean_ptr, rstd_ptr, w_ptr, b_ptr, param,
                    CHANNELS_ON_ROWS: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
                    ACT: tl.constexpr, FROM_OUTPUT: tl.constexpr):
    """(dz, xhat) of a tile, recomputed: from x and the statistics, or
    (FROM_OUTPUT, in place) from y through the inverse activation."""
    dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    v = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if FROM_OUTPUT:
        z, dz = _inverse_act(v, dy, param, ACT)
        if HAS_B:
            z = z - _per_channel(b_ptr, ch, cmask, CHANNELS_ON_ROWS, 0.0)
        xhat = z
        if HAS_W:  # (1 outside the tile: no 0 / 0 there)
            xhat = z / _per_channel(w_ptr, ch, cmask, CHANNELS_ON_ROWS, 1.0)
    else:
        mean = _per_channel(mean_ptr, ch, cmask, CHANNELS_ON_ROWS, 0.0)
        xhat = (v - mean) * _per_channel(rstd_ptr, ch, cmask, CHANNELS_ON_ROWS, 0.0)
        z = xhat
        if HAS_W:
            z = z * _per_channel(w_ptr, ch, cmask, CHANNELS_ON_ROWS, 0.0)
        if HAS_B:
            z = z + _per_channel(b_ptr, ch, cmask, CHANNELS_ON_ROWS, 0.0)
        dz = _act_grad(dy, z, param, ACT)
    dz = tl.where(mask, dz, 0.0)
    xhat = tl.where(mask, xhat, 0.0)
    return dz, xhat


@triton.jit
def _bn_act_backward_reduce_kernel(
    dy_ptr, x_ptr,  # (R, K) upstream gradient and input (FROM_OUTPUT: the output y)
    mean_ptr, rstd_ptr, w_ptr, b_ptr, param,
    part_ptr,  # float32 (2, P, C): sum(dz), sum(dz * xhat); P = samples x groups on rows, groups on columns
    plane,  # elements in one of the two planes of part
    R, K, C, tiles,  # tiles: how many tiles a program walks along the reduced direction
    CHANNELS_ON_ROWS: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr, ACT: tl.constexpr,
    FROM_OUTPUT: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """On rows (a channel a row), program (i, g) walks column tiles
    [g * tiles, ...) of row block i; on columns (a channel a column), program
    (g, j) walks row tiles [g * tiles, ...) of column block j. The sums stay
    in registers and are written once: a partial buffer that is small next
    to the tensor."""
    acc1 = tl.zeros((BLOCK_R, BLOCK_K), dtype=tl.float32)
    acc2 = tl.zeros((BLOCK_R, BLOCK_K), dtype=tl.float32)
    for t in range(0, tiles):
        if CHANNELS_ON_ROWS:
            ti = tl.program_id(0)
            tj = tl.program_id(1) * tiles + t
        else:
            ti = tl.program_id(0) * tiles + t
            tj = tl.program_id(1)
        offs, mask, ch, cmask = _bn_act_tile(ti, tj, R, K, C, CHANNELS_ON_ROWS, BLOCK_R, BLOCK_K)
        dz, xhat = _bn_act_dz_xhat(dy_ptr, x_ptr, offs, mask, ch, cmask, mean_ptr, rstd_ptr, w_ptr, b_ptr, param,
                                   CHANNELS_ON_ROWS, HAS_W, HAS_B, ACT, FROM_OUTPUT)
        acc1 += dz
        acc2 += dz * xhat
    if CHANNELS_ON_ROWS:  # one partial a row (a (sample, channel) pair) and column group
        groups = tl.num_programs(1)
        rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        sample = rows // C
        out = part_ptr + (sample.to(tl.int64) * groups + tl.program_id(1)) * C + rows % C
        tl.store(out, tl.sum(acc1, axis=1), mask=rows < R)
        tl.store(out + plane, tl.sum(acc2, axis=1), mask=rows < R)
    else:  # one partial a channel (column) and row group
        cols = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
        out = part_ptr + tl.program_id(0).to(tl.int64) * K + cols
        tl.store(out, tl.sum(acc1, axis=0), mask=cols < K)
        tl.store(out + plane, tl.sum(acc2, axis=0), mask=cols < K)


@triton.jit
def _bn_act_backward_input_kernel(
    dy_ptr, x_ptr,  # (R, K) upstream gradient and input (FROM_OUTPUT: the output y)
    dx_ptr,  # (R, K) output
    mean_ptr, rstd_ptr, w_ptr, b_ptr, param,
    sum_dz_ptr, sum_dz_xhat_ptr,  # (C,) float32 (TRAINING only)
    inv_m, R, K, C,
    CHANNELS_ON_ROWS: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr, ACT: tl.constexpr,
    FROM_OUTPUT: tl.constexpr, TRAINING: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """training: dx = a * (dz - sum(dz)/M - xhat * sum(dz*xhat)/M); eval: a * dz; a = rstd * w."""
    offs, mask, ch, cmask = _bn_act_tile(tl.program_id(0), tl.program_id(1), R, K, C, CHANNELS_ON_ROWS, BLOCK_R, BLOCK_K)
    dz, xhat = _bn_act_dz_xhat(dy_ptr, x_ptr, offs, mask, ch, cmask, mean_ptr, rstd_ptr, w_ptr, b_ptr, param,
                               CHANNELS_ON_ROWS, HAS_W, HAS_B, ACT, FROM_OUTPUT)
    a = _per_channel(rstd_ptr, ch, cmask, CHANNELS_ON_ROWS, 0.0)
    if HAS_W:
        a *= _per_channel(w_ptr, ch, cmask, CHANNELS_ON_ROWS, 0.0)
    if TRAINING:
        mean_dz = _per_channel(sum_dz_ptr, ch, cmask, CHANNELS_ON_ROWS, 0.0) * inv_m
        mean_dz_xhat = _per_channel(sum_dz_xhat_ptr, ch, cmask, CHANNELS_ON_ROWS, 0.0) * inv_m
        dz = dz - mean_dz - xhat * mean_dz_xhat
    tl.store(dx_ptr + offs, (a * dz).to(dx_ptr.dtype.element_ty), mask=mask)


@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _reduce_programs(device: torch.device) -> int:
    """Programs for a reduction pass: several per SM on the GPU; two under
    the interpreter (so both the loop and the cross-program sum run)."""
    if device.type == "cuda":
        return 8 * _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    return 2


def _vector(t):
    """A parameter as the kernels index it: contiguous (None stays None)."""
    return None if t is None else t.contiguous()


def batch_norm_act_forward(x, weight, bias, running_mean, running_var, training: bool, eps: float,
                           act: str, negative_slope: float, out=None):
    """(y, mean, rstd, var): statistics (C,) float32 - the batch's (var biased)
    in training, the running ones otherwise. ``out``: where y goes (x itself
    for the in-place layer); default a new tensor in x's memory format."""
    weight, bias = _vector(weight), _vector(bias)
    plan = _plan(x)  # once, for the statistics and the elementwise pass (host time)
    if training:
        mean, var, rstd = _stats(plan, eps)
    else:
        mean, var = running_mean.float(), running_var.float()
        rstd = torch.rsqrt(var + eps)
    r, k, _, block_r, block_k, grid = _elementwise_launch(plan)
    y = torch.empty_like(plan.x) if out is None else out
    if x.numel():
        if out is not None and plan.x.data_ptr() != out.data_ptr():  # a non-dense x: write back through a copy
            y = torch.empty_like(plan.x)
        _bn_act_forward_kernel[grid](
            plan.x, y, mean, rstd, weight if weight is not None else mean, bias if bias is not None else mean,
            act_param(act, negative_slope), r, k, plan.c,
            CHANNELS_ON_ROWS=plan.on_rows, HAS_W=weight is not None, HAS_B=bias is not None,
            ACT=act_id(act, dtype=x.dtype), BLOCK_R=block_r, BLOCK_K=block_k, num_warps=_BN_WARPS,
        )
        if out is not None and y is not out:
            y = out.copy_(y)
    return y, mean, rstd, var


def _bn_act_reduce_launch(plan, grid, device):
    """(reduce grid, tiles per program, partials) of batch_norm_act_backward's
    reduction pass: the reduced direction split into groups, enough programs
    to fill the GPU; partials (2, P, C), P = samples x groups on rows, groups
    on columns."""
    blocks, reduced_tiles = (grid[0], grid[1]) if plan.on_rows else (grid[1], grid[0])
    groups = max(1, min(reduced_tiles, cdiv(_reduce_programs(device), blocks)))
    tiles = cdiv(reduced_tiles, groups)
    groups = cdiv(reduced_tiles, tiles)
    partials = plan.rows * groups if plan.on_rows else groups  # rows * C // C on rows
    return ((blocks, groups) if plan.on_rows else (groups, blocks)), tiles, partials


def batch_norm_act_backward(dy, x, weight, bias, mean, rstd, training: bool, act: str, negative_slope: float,
                            param_grads: bool = True, from_output: bool = False):
    """(dx, dweight, dbias), dweight/dbias float32 (None when neither training
    nor ``param_grads`` asks for the sums). ``x`` is the input, or with
    ``from_output`` the in-place output y."""
    weight, bias = _vector(weight), _vector(bias)
    plan = _plan(x)
    r, k, _, block_r, block_k, grid = _elementwise_launch(plan)
    dy = same_layout(dy, plan.x)
    dx = torch.empty_like(plan.x)
    c = plan.c
    flags = dict(CHANNELS_ON_ROWS=plan.on_rows, HAS_W=weight is not None, HAS_B=bias is not None,
                 ACT=act_id(act, dtype=x.dtype), FROM_OUTPUT=from_output, BLOCK_R=block_r, BLOCK_K=block_k,
                 num_warps=_BN_WARPS)
    w = weight if weight is not None else rstd
    b = bias if bias is not None else rstd
    param = act_param(act, negative_slope)
    sum_dz = sum_dz_xhat = None
    if training or param_grads:
        if x.numel() == 0:
            sum_dz = torch.zeros(c, device=x.device, dtype=torch.float32)
            sum_dz_xhat = torch.zeros(c, device=x.device, dtype=torch.float32)
        else:
            launch = plan.launches.act_reduce
            if launch is None:  # once per layout (host time), see normalization._Launches
                launch = plan.launches.act_reduce = _bn_act_reduce_launch(plan, grid, x.device)
            reduce_grid, tiles, partials = launch
            part = torch.empty(2, partials, c, device=x.device, dtype=torch.float32)  # (sizes unpacked: host time)
            _bn_act_backward_reduce_kernel[reduce_grid](dy, plan.x, mean, rstd, w, b, param, part, part.stride(0),
                                                        r, k, c, tiles, **flags)
            # the deterministic second pass, one small kernel into two separate
            # tensors (a custom op's outputs may not alias): one launch where a
            # torch sum and a clone were two ops of host time
            sum_dz, sum_dz_xhat = _channel_sums(part, partials, c, torch.float32)
    if x.numel():
        m = max(x.numel() // max(c, 1), 1)
        _bn_act_backward_input_kernel[grid](
            dy, plan.x, dx, mean, rstd, w, b, param,
            sum_dz if training else rstd, sum_dz_xhat if training else rstd, 1.0 / m, r, k, c,
            TRAINING=training, **flags,
        )
    return dx, sum_dz_xhat, sum_dz


# =============================================================================
# group norm + activation
# =============================================================================

def group_norm_act_forward(x, num_groups: int, weight, bias, eps: float, act: str, negative_slope: float = 0.01):
    """(y, mean, rstd): y like x (same memory format), statistics (N*G,) float32.
    Group norm's own kernels, each path (one tile a group, the persistent
    walk, the split passes) with the activation applied as y is written:
    the fused layer reads x as the plain norm does and skips the
    activation's pass (until 2026-11-28 groups of one tile took the split
    passes here, where plain group norm takes one launch)."""
    return group_norm_forward(x, num_groups, weight, bias, eps, act_id(act, dtype=x.dtype), act_param(act, negative_slope))


def group_norm_act_backward(dy, x, num_groups: int, weight, bias, mean, rstd, act: str, negative_slope: float = 0.01):
    """(dx, dweight, dbias): group norm's backward, the gradient taken through
    the activation first (its input recomputed); dweight / dbias empty where
    there is no weight / bias."""
    return group_norm_backward(dy, x, num_groups, weight, mean, rstd, bias is not None, bias=bias,
                               act=act_id(act, dtype=x.dtype), act_param=act_param(act, negative_slope))


# =============================================================================
# residual add (+ dropout) + layer / RMS norm
# =============================================================================

_WIDE_ROW = 8192  # wider rows: the unfused kernels (dropout_add, then the row norm)
# With dropout, the row kernel makes one Philox call an element (it needs
# word (i // GROUP) % 4 of counter f(i), and the other three words belong to
# elements of other rows), where the dropout kernel's stream-aligned layout
# makes a quarter of a call. Estimated on an H100: ~40 integer multiplies a
# call, about 370 G elements/s, close to the bf16 memory rate (~8 bytes an
# element). If the GPU benchmark shows the fused dropout path compute bound,
# set this False: p > 0 then runs dropout_add's stream-aligned kernel and
# the row norm (one more read of s: 5n bytes instead of 4n).
DROPOUT_IN_ROW_KERNEL = True


GROUP_C = tl.constexpr(GROUP)


@triton.jit
def _stream_uniform(seed, offset, i):
    """The uniform of element i of lamina's dropout stream (lamina.rng):
    element i takes word (i // GROUP) % 4 of Philox at counter
    offset + (i // (4 GROUP)) * GROUP + i % GROUP."""
    g = i // (4 * GROUP_C)
    k = (i // GROUP_C) % 4
    u0, u1, u2, u3 = tl.rand4x(seed, offset + g * GROUP_C + i % GROUP_C)
    return tl.where(k == 0, u0, tl.where(k == 1, u1, tl.where(k == 2, u2, u3)))


@triton.jit
def _keep_scale(seed, offset, offs, p, multiplier):
    """Dropout's factor for each element of a tile: ``multiplier`` where the
    stream keeps it (u >= p), 0 where it drops it."""
    return tl.where(_stream_uniform(seed, offset, offs) >= p, multiplier, 0.0)


@triton.jit
def _dropout_sum(x, r, scale, DROPOUT: tl.constexpr, dtype: tl.constexpr):
    """s = dropout(x) + r of a tile, rounded to ``dtype`` (the tensors'):
    the one expression of s in both kernels, so that backward's recomputed
    s is forward's bit for bit (the same operations, hence the same
    rounding and, compiled, the same contraction into FMA)."""
    x = x.to(tl.float32)
    if DROPOUT:
        x = x * scale
    return (x + r.to(tl.float32)).to(dtype)


@triton.jit
def _add_norm_forward_kernel(
    x_ptr, res_ptr,  # (M, N) contiguous: the branch and the residual
    s_ptr,  # (M, N) out: s = dropout(x) + residual (when STORE_S)
    y_ptr,  # (M, N) out: norm(s)
    w_ptr, b_ptr,  # (N,) (when HAS_W / HAS_B)
    mean_ptr, rstd_ptr,  # (M,) float32 out (mean not for RMS)
    seed_ptr, offset, p, multiplier,  # dropout: keep when u >= p, kept values times multiplier
    M, N, eps,
    RMS: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr, DROPOUT: tl.constexpr,
    ROWS: tl.constexpr, BLOCK: tl.constexpr,
    STORE_S: tl.constexpr = True,  # off: s is not an output, backward rebuilds it from x and residual
):
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK)
    col_ok = cols < N
    mask = (rows < M)[:, None] & col_ok[None, :]
    offs = rows[:, None] * N + cols[None, :]
    x = tl.load(x_ptr + offs, mask=mask, other=0.0, eviction_policy="evict_last")  # (as the row norm's)
    scale = 1.0
    if DROPOUT:
        scale = _keep_scale(tl.load(seed_ptr), offset, offs, p, multiplier)
    r = tl.load(res_ptr + offs, mask=mask, other=0.0, eviction_policy="evict_last")
    s = _dropout_sum(x, r, scale, DROPOUT, y_ptr.dtype.element_ty)
    if STORE_S:
        tl.store(s_ptr + offs, s, mask=mask)
    s = s.to(tl.float32)  # normalize the rounded s, the one backward reads or rebuilds
    if RMS:
        rstd = 1.0 / tl.sqrt(_div_rn(tl.sum(s * s, axis=1), N) + eps)
        xhat = s * rstd[:, None]
    else:
        mean = _div_rn(tl.sum(s, axis=1), N)
        sc = tl.where(mask, s - mean[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(_div_rn(tl.sum(sc * sc, axis=1), N) + eps)
        xhat = sc * rstd[:, None]
        tl.store(mean_ptr + rows, mean, mask=rows < M)
    tl.store(rstd_ptr + rows, rstd, mask=rows < M)
    y = xhat
    if HAS_W:
        y = y * tl.load(w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    if HAS_B:
        y = y + tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _add_norm_backward_tile(dy_ptr, v_ptr, res_ptr, mean_ptr, rstd_ptr, rows, end, cols, col_ok, N,
                            RMS: tl.constexpr, RECOMPUTE: tl.constexpr):
    """The row norm's loads of one tile (_row_backward_tile: (v, dy, mean,
    rstd, mask), v from v_ptr) and, with RECOMPUTE, the residual's tile r
    (v is then x, to be summed with r; without, v is s and r is v, unused)."""
    v, dy, mean, rstd, mask = _row_backward_tile(dy_ptr, v_ptr, mean_ptr, rstd_ptr, rows, end, cols, col_ok, N, N, RMS)
    r = v
    if RECOMPUTE:
        r = tl.load(res_ptr + rows[:, None] * N + cols[None, :], mask=mask, other=0.0)
    return v, r, dy, mean, rstd, mask


@triton.jit
def _add_norm_backward_kernel(
    dy_ptr,  # (M, N) contiguous: gradient of the normalized output
    dsx_ptr,  # (M, N) contiguous: gradient reaching s directly (when HAS_DS, prenorm)
    v_ptr,  # (M, N) the saved s; with RECOMPUTE the forward's x
    res_ptr,  # (M, N) with RECOMPUTE: the forward's residual
    w_ptr, mean_ptr, rstd_ptr,
    ds_ptr,  # (M, N) out: ds = dresidual
    dx_ptr,  # (M, N) out: dx = masked ds (DROPOUT)
    part_ptr,  # (programs, 2, N) float32: sum(dy * xhat), sum(dy) of this program's rows
    seed_ptr, offset, p, multiplier,
    M, N, rows_per_program,
    RMS: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr, HAS_DS: tl.constexpr, DROPOUT: tl.constexpr,
    ROWS: tl.constexpr, BLOCK: tl.constexpr,
    PREFETCH: tl.constexpr = False,  # the row norm backward's software pipeline (_row_norm_backward_kernel)
    RECOMPUTE: tl.constexpr = False,  # rebuild s from x and residual as the forward made it (no s saved)
):
    pid = tl.program_id(0)
    first = pid.to(tl.int64) * rows_per_program
    cols = tl.arange(0, BLOCK)
    col_ok = cols < N
    w = 1.0
    if HAS_W:
        w = tl.load(w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    if DROPOUT:
        seed = tl.load(seed_ptr)
    dw = tl.zeros([BLOCK], dtype=tl.float32)
    db = tl.zeros([BLOCK], dtype=tl.float32)
    end = tl.minimum(M, first + rows_per_program)  # this program's rows
    if PREFETCH:
        v_n, r_n, dy_n, mean_n, rstd_n, mask_n = _add_norm_backward_tile(
            dy_ptr, v_ptr, res_ptr, mean_ptr, rstd_ptr, first + tl.arange(0, ROWS), end, cols, col_ok, N, RMS, RECOMPUTE)
    for i in range(0, rows_per_program, ROWS):
        rows = first + i + tl.arange(0, ROWS)
        offs = rows[:, None] * N + cols[None, :]
        if PREFETCH:
            v, r, dy, mean, rstd, mask = v_n, r_n, dy_n, mean_n, rstd_n, mask_n
            v_n, r_n, dy_n, mean_n, rstd_n, mask_n = _add_norm_backward_tile(
                dy_ptr, v_ptr, res_ptr, mean_ptr, rstd_ptr, rows + ROWS, end, cols, col_ok, N, RMS, RECOMPUTE)
        else:
            v, r, dy, mean, rstd, mask = _add_norm_backward_tile(
                dy_ptr, v_ptr, res_ptr, mean_ptr, rstd_ptr, rows, end, cols, col_ok, N, RMS, RECOMPUTE)
        s = v
        if RECOMPUTE:  # forward's s: the same mask (drawn once a tile, for s and dx), sum and rounding
            scale = 1.0
            if DROPOUT:
                scale = _keep_scale(seed, offset, offs, p, multiplier)
            s = _dropout_sum(v, r, scale, DROPOUT, ds_ptr.dtype.element_ty)
        dy, xhat, ds = _row_backward_dx(s, dy, mean, rstd, mask, w, N, RMS, HAS_W)
        if HAS_DS:
            ds = ds + tl.load(dsx_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(ds_ptr + offs, ds.to(ds_ptr.dtype.element_ty), mask=mask)
        if DROPOUT:
            if not RECOMPUTE:  # (drawn where used, as before RECOMPUTE: not held across the row reductions)
                scale = _keep_scale(seed, offset, offs, p, multiplier)
            tl.store(dx_ptr + offs, (ds * scale).to(dx_ptr.dtype.element_ty), mask=mask)
        if HAS_W:
            dw += tl.sum(dy * xhat, axis=0)
        if HAS_B:
            db += tl.sum(dy, axis=0)
    part = part_ptr + pid.to(tl.int64) * 2 * N
    if HAS_W:
        tl.store(part + cols, dw, mask=col_ok)
    if HAS_B:
        tl.store(part + N + cols, db, mask=col_ok)


def _multiplier(p: float) -> float:
    return 0.0 if p == 1 else 1.0 / (1.0 - p)


def _programs(t: torch.Tensor) -> int:
    """About four programs an SM on the GPU; a few under the interpreter (so
    the row loops run more than once in CI)."""
    if t.is_cuda:
        return 4 * _sm_count(t.device.index if t.device.index is not None else torch.cuda.current_device())
    return 3


def add_norm_forward(x, residual, normalized_shape, weight, bias, eps: float, p: float, seed, offset: int, rms: bool,
                     keep_sum: bool = True):
    """(y, s, mean, rstd) for contiguous x and residual: s = dropout(x) +
    residual (p = 0: no dropout), y = layer_norm(s) or rms_norm(s); mean and
    rstd flat (M,) float32 (mean empty for RMS). Without ``keep_sum`` s is
    not written (an empty tensor in its place): add_norm_backward rebuilds
    it from x and residual."""
    weight, bias = _vector(weight), _vector(bias)
    n = math.prod(normalized_shape)
    m = x.numel() // max(n, 1)
    if _add_norm_unfused(n, m, p):
        s = dropout_add_forward(x, residual, p, seed, offset)
        y, mean, rstd = row_norm_forward(s, normalized_shape, weight, bias, eps, rms)
        return y, s if keep_sum else x.new_empty(0), mean, rstd
    s = torch.empty_like(x) if keep_sum else x.new_empty(0)
    y = torch.empty_like(x)
    mean = torch.empty(0 if rms else m, dtype=torch.float32, device=x.device)
    rstd = torch.empty(m, dtype=torch.float32, device=x.device)
    # the row norm's forward tiles (rows <= _WIDE_ROW are never 'wide' there)
    rows, block, _, warps = _row_forward_config(n, x.element_size())
    _add_norm_forward_kernel[(cdiv(m, rows),)](
        x, residual, s if keep_sum else x, y, weight if weight is not None else x, bias if bias is not None else x,
        x if rms else mean, rstd, seed if p > 0 else x, offset, p, _multiplier(p), m, n, eps,
        RMS=rms, HAS_W=weight is not None, HAS_B=bias is not None, DROPOUT=p > 0,
        ROWS=rows, BLOCK=block, num_warps=warps, STORE_S=keep_sum,
    )
    return y, s, mean, rstd


def add_norm_backward(dy, ds_out, s, normalized_shape, weight, mean, rstd, has_bias: bool, p: float, seed,
                      offset: int, rms: bool, x=None, residual=None):
    """(ds, dx, dweight, dbias): ds = dresidual; dx the masked ds (None when
    p = 0: then dx is ds); dweight/dbias float32 (None when absent). ``s``
    the saved sum, or None: then ``x`` and ``residual`` (add_norm_forward's
    contiguous inputs) are given and s is rebuilt from them as the forward
    made it, bit for bit."""
    weight = _vector(weight)
    recompute = s is None
    like = x if recompute else s
    n = math.prod(normalized_shape)
    m = like.numel() // max(n, 1)
    dy = dy.contiguous()
    has_weight = weight is not None
    if _add_norm_unfused(n, m, p):
        if recompute:  # the forward's own unfused s
            s = dropout_add_forward(x, residual, p, seed, offset)
        ds, dw, db = row_norm_backward(dy, s, normalized_shape, weight, mean, rstd, has_bias, rms)
        if ds_out is not None:
            ds = ds + ds_out
        dx = _dropout_kernel_backward(ds, p, seed, offset) if p > 0 else None
        return ds, dx, dw.float() if has_weight else None, db.float() if has_bias else None
    ds = torch.empty_like(like)
    dx = torch.empty_like(like) if p > 0 else None
    # the row norm's tuned tiles (rows <= _WIDE_ROW are never 'wide' there);
    # at 32768 x 4096 bf16 the old 4096-element tiles on 16 warps, 4 programs
    # an SM, took 405 us where the forward took 265 (H200, scripts/probe_cells.py)
    config = None
    if recompute and like.element_size() >= 4 and row_block(n) >= 4096:
        # Rebuilding s holds a fourth tile (the residual's) in the software
        # pipeline: float32 rows of 4096 on the row norm's 2-row tiles, 4
        # programs an SM, moved 3248 GB/s (layer norm; RMS 3908); on 1-row
        # tiles, 16 warps, 1 program an SM 4013 (RMS 4063; H200, session 13,
        # probe_forward_tiles.py addnormsweep). 16-bit keeps the row norm's.
        config = (1, row_block(n), False, 16, 1, True)
    rows, block, _, warps, programs, rows_per_program, prefetch = _row_backward_launch(like, m, n, config)
    part = torch.empty((programs, 2, n) if (has_weight or has_bias) else (1,), dtype=torch.float32, device=like.device)
    _add_norm_backward_kernel[(programs,)](
        dy, ds_out.contiguous() if ds_out is not None else dy, like, residual if recompute else like,
        weight if has_weight else like, rstd if rms else mean, rstd, ds, like if dx is None else dx, part,
        seed if p > 0 else rstd, offset, p, _multiplier(p), m, n, rows_per_program,
        RMS=rms, HAS_W=has_weight, HAS_B=has_bias, HAS_DS=ds_out is not None, DROPOUT=p > 0,
        ROWS=rows, BLOCK=block, num_warps=warps, PREFETCH=prefetch, RECOMPUTE=recompute,
    )
    dw = part[:, 0].sum(dim=0).reshape(normalized_shape) if has_weight else None
    db = part[:, 1].sum(dim=0).reshape(normalized_shape) if has_bias else None
    return ds, dx, dw, db


def _add_norm_unfused(n: int, m: int, p: float) -> bool:
    """Whether add_norm_forward / add_norm_backward take the unfused kernels
    (dropout_add, then the row norm): no rows, rows too wide for one
    program, or dropout kept out of the row kernel. One rule for both, so a
    backward that rebuilds s rebuilds it with the kernel that made it."""
    return n == 0 or m == 0 or row_block(n) > _WIDE_ROW or (p > 0 and not DROPOUT_IN_ROW_KERNEL)


# =============================================================================
# bias + activation
# =============================================================================

_BIAS_BLOCK = 4096
_BIAS_WARPS = 8


@triton.jit
def _bias_act_forward_kernel(
    x_ptr,  # (M, N) contiguous
    b_ptr,  # (N,)
    y_ptr,  # (M, N) out
    M, N,
    ACT: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Program (i, j): a ROWS x BLOCK_N tile; the bias block is loaded once
    as a vector (no per-element index arithmetic). Rows on grid axis 0,
    which has no 65535 limit."""
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < N
    mask = (rows < M)[:, None] & col_ok[None, :]
    offs = rows[:, None] * N + cols[None, :]
    b = tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    x = tl.load(x_ptr + offs, mask=mask, other=0.0, eviction_policy="evict_last").to(tl.float32)  # (as the row norm's)
    tl.store(y_ptr + offs, _act(x + b, 1.0, ACT).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bias_act_backward_kernel(
    dy_ptr, x_ptr, b_ptr,  # (M, N) contiguous, (N,)
    dx_ptr,  # (M, N) out
    part_ptr,  # (row programs, N) float32: this program's column sums of dx
    M, N, rows_per_program,
    ACT: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Program (j, i): columns block j, rows [i * rows_per_program, ...)."""
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < N
    first = tl.program_id(1).to(tl.int64) * rows_per_program
    b = tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    # the column sums stay a whole tile until the end: summing over the
    # tile's rows every step is a cross-warp reduction (shared memory and
    # barriers) an iteration
    acc = tl.zeros([ROWS, BLOCK_N], dtype=tl.float32)
    for i in range(0, rows_per_program, ROWS):
        rows = first + i + tl.arange(0, ROWS)
        mask = (rows < M)[:, None] & col_ok[None, :]
        offs = rows[:, None] * N + cols[None, :]
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dx = tl.where(mask, _act_grad(dy, x + b, 1.0, ACT), 0.0)
        tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
        acc += dx
    tl.store(part_ptr + tl.program_id(1).to(tl.int64) * N + cols, tl.sum(acc, axis=0), mask=col_ok)


def _bias_tile(big_n: int, elements: int = _BIAS_BLOCK):
    """(ROWS, BLOCK_N): about ``elements`` elements, up to 1024 columns wide."""
    block_n = min(row_block(big_n), 1024)
    return max(1, elements // block_n), block_n


def bias_act_forward(x, bias, act: str, approximate: str):
    """y = act(x + bias) for a contiguous x (..., N) and bias (N,)."""
    y = torch.empty_like(x)
    big_n = bias.numel()
    m = x.numel() // max(big_n, 1)
    if x.numel():
        rows, block_n = _bias_tile(big_n, elementwise_block(x.element_size()))  # one 16-byte vector a thread
        grid = (cdiv(m, rows), cdiv(big_n, block_n))
        act_value = act_id(act, approximate, x.dtype)
        _bias_act_forward_kernel[grid](x, bias, y, m, big_n, ACT=act_value, ROWS=rows,
                                       BLOCK_N=block_n, num_warps=forward_warps(act_value))
    return y


def bias_act_backward(dy, x, bias, act: str, approximate: str):
    """(dx, dbias float32): dbias from per-program partial column sums + a torch sum."""
    dy = same_layout(dy, x)
    dx = torch.empty_like(x)
    big_n = bias.numel()
    m = x.numel() // max(big_n, 1)
    if x.numel() == 0:
        return dx, torch.zeros(big_n, dtype=torch.float32, device=x.device)
    rows, block_n = _bias_tile(big_n)
    col_blocks = cdiv(big_n, block_n)
    row_programs = max(1, min(cdiv(m, rows), cdiv(_programs(x), col_blocks)))
    rows_per_program = cdiv(cdiv(m, row_programs), rows) * rows
    row_programs = cdiv(m, rows_per_program)
    part = torch.empty((row_programs, big_n), dtype=torch.float32, device=x.device)
    _bias_act_backward_kernel[(col_blocks, row_programs)](
        dy, x, bias, dx, part, m, big_n, rows_per_program,
        ACT=act_id(act, approximate, x.dtype), ROWS=rows, BLOCK_N=block_n, num_warps=_BIAS_WARPS,
    )
    return dx, part.sum(dim=0)


# =============================================================================
# dropout + residual add
# =============================================================================

_DROPOUT_WARPS = 4  # as the dropout kernel: 128 threads x 8 elements = one GROUP run


@triton.jit(do_not_specialize=["offset"])
def _dropout_add_kernel(
    x_ptr, r_ptr,  # n elements each, one dense layout
    y_ptr,  # out, same layout
    n, p, multiplier,
    seed_ptr,  # int64, one element
    offset,
    GROUP: tl.constexpr,
):
    # the dropout kernel's stream layout and tile; s as the add + norm kernels form it
    offs, u = _stream_tile(tl.load(seed_ptr), offset, tl.program_id(0).to(tl.int64), GROUP)
    inside = offs < n
    x = tl.load(x_ptr + offs, mask=inside)
    r = tl.load(r_ptr + offs, mask=inside)
    # (a dropped x is x * 0: NaN stays NaN, as in torch)
    y = _dropout_sum(x, r, tl.where(u >= p, multiplier, 0.0), True, y_ptr.dtype.element_ty)
    tl.store(y_ptr + offs, y, mask=inside)


def dropout_add_forward(x, residual, p: float, seed, offset: int):
    """y = dropout(x) + residual, the mask along x's memory order (a non-dense
    x is made contiguous); y keeps x's layout. p = 0: x + residual."""
    x = dense(x)
    residual = same_layout(residual, x)
    y = torch.empty_like(x)
    n = x.numel()
    if n:
        grid = (cdiv(n, 4 * GROUP),)
        _dropout_add_kernel[grid](x, residual, y, n, p, _multiplier(p), seed if p > 0 else _zero_seed(x), offset,
                                  GROUP=GROUP, num_warps=_DROPOUT_WARPS)
    return y


def _zero_seed(x):
    return torch.zeros(1, dtype=torch.int64, device=x.device)
