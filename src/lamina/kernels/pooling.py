"""Pooling kernels: max, average and adaptive pools, forward and backward.

Every kernel works on 2-D tiles (_tile): (rows x columns) of one (n, c)
plane for NCHW, or (positions x channels) of one sample for channels_last, so
every window offset is one load of a tile's columns or channels. The tile's
coordinates come from the program ids and aranges instead of six integer
divisions of a flat index by runtime sizes per element; on an H200 that
improved 24 of the 32 benchmark cells against eager (the backward gathers
and channels_last most, up to 2.2x), while
max pooling 3x3/s2 on NCHW stayed bound by its stride-2 scalar loads
(bench/results/h200-20261128-0040-pool); the forward now reads such rows as
contiguous segments split into even and odd columns (PAIRS). The window is read through the
input's strides, so any strided input works without a copy. The output
keeps the input's memory format.

Backward is a gather, not a scatter: each program computes a tile of dx, tiled
as the forward's output; for every window offset it works out which output
window (if any) would read this element at that offset and adds that
window's gradient when the saved window position says the maximum was here
(max) or always, divided by the window's divisor (average). Every dx element
is written once by one program: deterministic, no atomics. When windows do not
overlap (stride >= dilated kernel, e.g. 2x2/s2) each element has at most one
window, found by one division.

Max pool saves, per output, the window position of the maximum (uint8 for
windows up to 256 elements) -- the same compact format as the NumPy reference
-- and writes PyTorch's int64 indices only when asked. Ties go to the first
maximum in row-major window order, NaN wins (the last NaN), as in PyTorch.

Math in float32, stored in the input's dtype. Index arithmetic is int32 unless
a tensor spans 2**31 elements, then int64 (INDEX64).

When torch has imported triton before TRITON_INTERPRET was set (importing
torch._dynamo does), triton.language's own @jit helpers (tl.zeros, tl.sum, ...)
cannot run under the interpreter; the kernels here use only builtins (tl.full,
and tl.reduce with a combine function of their own), so they run either way.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from .launch import cdiv, next_power_of_2, same_layout

TILE = 1024  # elements a program (a 2-D tile: _tile / _tiling)
WARPS = 4
# The forward's programs: the same tiles on 8 warps, two outputs a thread.
# GPU time on an H200 at 64x64x112x112 channels_last (torch.profiler,
# scripts/probe_forward_tiles.py, 2026-11-28 session 13), GB/s on 4 -> 8
# warps: max 3x3/s2 fp32 2610 -> 3456 (torch.compile 2737), bf16 1980 ->
# 2078; max 2x2 fp32 3769 -> 3924; average 2x2 fp32 3974 -> 4115, bf16
# 3801 -> 3951; max 2x2 bf16 3530 -> 3515.
FORWARD_WARPS = 8
# the NCHW forward with even/odd segment reads (PAIRS): 1024 outputs a
# program for max, 2048 for average, on 8 warps. Same probe, GB/s against
# 2048 for max: 3x3/s2 fp32 2547 -> 2998 (compile 2357), bf16 1106 -> 1533
# (compile 1168), 2x2 bf16 2034 -> 2442, 2x2 fp32 3880 -> 3867; average 2x2
# bf16 took 3320 on 2048 and 2805 on 1024 (fp32 3922 and 3996). Loads
# with evict_last (Inductor's pooling loads) changed nothing beyond noise.
PAIRS_TILE = 2048
PAIRS_MAX_TILE = 1024
PAIRS_WARPS = 8
# the NCHW stride-2 backward by parity: (u, v) pairs a program, 4 dx elements
# each (PARITY_BACKWARD = False: the gather kernel, for A/B on a card)
PAIRS_BACKWARD_TILE = 512
PARITY_BACKWARD = True
# the per-plane reduction of global average pooling: this many elements a
# program (whole planes of H*W contiguous elements, padded to a power of two)
PLANE_BLOCK = 4096
PLANE_WARPS = 4
# global average pooling of channels_last inputs: a program's tile, about
# GLOBAL_CL_TILE elements, its rows GLOBAL_CL_ROW_BYTES of channels (512
# float32, 1024 16-bit). GPU time at 256x2048x7x7 on an H200
# (scripts/probe_forward_tiles.py, session 13), GB/s fp32 / bf16: 4096 x 64
# channels 3045 / 1946; 8192 x 512 3209 / 2498; 8192 x 1024 3133 / 2947
# (eager 3031 / 2513; the adaptive kernel's one-position tiles took 0.036 /
# 0.026 ms in the session-12 matrix, about 2900 / 2000); mostly slower on 8
# warps.
GLOBAL_CL_TILE = 8192
GLOBAL_CL_ROW_BYTES = 2048
GLOBAL_CL_WARPS = 4


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _needs_int64(*tensors) -> bool:
    """True when some element offset of some tensor can reach 2**31."""
    for t in tensors:
        if t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last):
            span = t.numel()  # dense: the offsets end at numel - 1 (a flag read, no Python sum)
        else:
            span = sum((s - 1) * st for s, st in zip(t.shape, t.stride()) if s > 0) + 1
        if span >= 2**31 or t.numel() >= 2**31:
            return True
    return False


def _new_pool_tensor(shape, like_channels_last: bool, dtype, device):
    # one output position (global pooling): the contiguous strides are
    # channels_last too, and they are the ones Inductor gives the buffer;
    # with channels_last strides (C, 1, C, C) there a card showed Inductor
    # copying the kernel's output onto itself (KeyError in its scheduler,
    # torch 2.11)
    fmt = torch.channels_last if like_channels_last and shape[2] * shape[3] != 1 else torch.contiguous_format
    return torch.empty(shape, dtype=dtype, device=device, memory_format=fmt)


def _position_dtype(window_size: int) -> torch.dtype:
    return torch.uint8 if window_size <= 256 else (torch.int16 if window_size <= 32767 else torch.int32)


def _strides(t: torch.Tensor):
    return tuple(t.stride())


@triton.jit
def _tile(C, A, B, blocks_a, CHANNELS_LAST: tl.constexpr, INDEX64: tl.constexpr,
          BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr):
    """(n, c, a, b, mask): the coordinates of this program's tile of an
    (N, C, A, B) tensor, each broadcastable to (BLOCK_A, BLOCK_B).
    NCHW: program (plane * blocks_a + i, j) takes rows i*BLOCK_A.. and columns
    j*BLOCK_B.. of plane n*C + c; channels_last: program (n * blocks_a + i, j)
    takes positions a*B + b in i*BLOCK_A.. and channels j*BLOCK_B..
    (grid: (N*C*blocks_a, cdiv(B, BLOCK_B)) or (N*blocks_a, cdiv(C, BLOCK_B)))."""
    pid = tl.program_id(0)
    if INDEX64:
        pid = pid.to(tl.int64)
    outer = pid // blocks_a
    i = pid - outer * blocks_a
    ra = i * BLOCK_A + tl.arange(0, BLOCK_A)[:, None]
    rb = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)[None, :]
    if INDEX64:
        ra = ra.to(tl.int64)
        rb = rb.to(tl.int64)
    if CHANNELS_LAST:
        n = outer
        a = ra // B  # one division a position, shared by the tile's channels
        b = ra - a * B
        c = rb
        mask = (ra < A * B) & (c < C)
    else:
        n = outer // C
        c = outer - n * C
        a = ra
        b = rb
        mask = (a < A) & (b < B)
    return n, c, a, b, mask


@triton.jit
def _max_update(v, best, pos, k):
    """One window element v (window position k) into the running (best,
    pos): strict > keeps the first max; NaN always wins (the last NaN).
    Where the window leaves the input the loads give -inf (_outside), which
    never wins, so no mask is needed here. ``pos`` starts at the window's
    first valid position, so a window of -inf values answers that position,
    as PyTorch does."""
    better = (v > best) | (v != v)
    return tl.where(better, v, best), tl.where(better, k, pos)


@triton.jit
def _outside(IS_MAX: tl.constexpr):
    """What a masked window load gives: -inf for max (never wins), 0 for
    average (adds nothing). The window updates then need no mask: on an
    H200-class sm_90 build the masks were most of a max-pool forward's
    instructions (4 integer compares a window element)."""
    if IS_MAX:
        return float("-inf")
    else:
        return 0.0


@triton.jit
def _first_inside(start, D: tl.constexpr):
    """The first window offset i with start + i * D >= 0 (start: the window's
    first input coordinate, negative in the padding)."""
    return tl.where(start < 0, (-start + (D - 1)) // D, 0)


# =============================================================================
# max pool and average pool: forward
# =============================================================================

# Windows of up to this many elements are unrolled in the forward kernel, so
# that all their loads are in flight at once (a loop waits for each row's);
# bigger ones keep the loop (compile time).
UNROLL_WINDOW = tl.constexpr(16)


@triton.jit
def _pool_window_row(i, base, h0, w0, oh, mask, H, W, OH, sxh, sxw, seg, best, pos, acc,
                     KW: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
                     IS_MAX: tl.constexpr, PAIRS: tl.constexpr, UNROLL: tl.constexpr,
                     BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr):
    """Window row i of every output of the tile into (best, pos) (max) or
    acc (average)."""
    ih = h0 + i * DH
    row_ok = mask & (ih >= 0) & (ih < H)
    if PAIRS:
        # A stride-2 window read column by column is a stride-2 scalar load
        # per window column (9 an output for 3x3, no vectors). Instead each
        # input row under the tile is read as segments of 2 * BLOCK_B
        # contiguous values starting at an even column (vector loads), each
        # split into its even and odd columns: segment u (columns 2*ow0 + 2u
        # ...) holds window column 2u + PW of every output of the tile in its
        # even half and 2u + PW + 1 in its odd half.
        seg_row_ok = (ih >= 0) & (ih < H) & (oh < OH)
        for v in tl.static_range((KW - 1 - PW) // 2 + (PW + 1) // 2 + 1):
            two_u = 2 * v - 2 * ((PW + 1) // 2)  # 2u: u from floor(-PW / 2) up
            seg_w = tl.program_id(1) * (2 * BLOCK_B) + two_u + seg
            # (a column outside the input loads _outside, and so does every
            # column of a row outside it: that is each window's own bound)
            both = tl.load(base + ih * sxh + seg_w, mask=seg_row_ok & (seg_w >= 0) & (seg_w < W),
                           other=_outside(IS_MAX))
            even, odd = tl.split(tl.reshape(both.to(tl.float32), (BLOCK_A, BLOCK_B, 2)))
            if two_u + PW >= 0:
                best, pos, acc = _window_element(even, i * KW + two_u + PW, best, pos, acc, IS_MAX)
            if two_u + PW + 1 < KW:
                best, pos, acc = _window_element(odd, i * KW + two_u + PW + 1, best, pos, acc, IS_MAX)
    elif UNROLL:
        for j in tl.static_range(KW):
            best, pos, acc = _window_load(base, ih, w0, row_ok, W, sxh, sxw, i, j, best, pos, acc, KW, DW, IS_MAX)
    else:
        for j in range(KW):
            best, pos, acc = _window_load(base, ih, w0, row_ok, W, sxh, sxw, i, j, best, pos, acc, KW, DW, IS_MAX)
    return best, pos, acc


@triton.jit
def _window_load(base, ih, w0, row_ok, W, sxh, sxw, i, j, best, pos, acc,
                 KW: tl.constexpr, DW: tl.constexpr, IS_MAX: tl.constexpr):
    """Window element (i, j) of every output, read through the strides."""
    iw = w0 + j * DW
    ok = row_ok & (iw >= 0) & (iw < W)
    v = tl.load(base + ih * sxh + iw * sxw, mask=ok, other=_outside(IS_MAX)).to(tl.float32)
    return _window_element(v, i * KW + j, best, pos, acc, IS_MAX)


@triton.jit
def _window_element(v, k, best, pos, acc, IS_MAX: tl.constexpr):
    """One window element v at window position k (_outside where the
    window leaves the input)."""
    if IS_MAX:
        best, pos = _max_update(v, best, pos, k)
    else:
        acc += v
    return best, pos, acc


@triton.jit
def _pool2d_forward_kernel(
    x_ptr,  # input (N, C, H, W), any strides
    y_ptr,  # output (N, C, OH, OW), NCHW or NHWC, strides sy*
    pos_ptr,  # max: window position of each max, same strides as y
    idx_ptr,  # max with WRITE_INDICES: int64 indices h*W + w, same strides as y
    C, H, W, OH, OW, blocks_a,
    sxn, sxc, sxh, sxw,
    syn, syc, syh, syw,
    DIVISOR,  # average: divisor_override as a float (used when HAS_DIVISOR)
    # the geometry is compile-time: divisions by the stride become multiplies
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
    IS_MAX: tl.constexpr, COUNT_INCLUDE_PAD: tl.constexpr, HAS_DIVISOR: tl.constexpr, WRITE_INDICES: tl.constexpr,
    CHANNELS_LAST: tl.constexpr, INDEX64: tl.constexpr, BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr,
    PAIRS: tl.constexpr = False,  # NCHW, column stride 2, no column dilation, sxw == 1
):
    n, c, oh, ow, mask = _tile(C, OH, OW, blocks_a, CHANNELS_LAST, INDEX64, BLOCK_A, BLOCK_B)
    base = x_ptr + n * sxn + c * sxc
    o = n * syn + c * syc + oh * syh + ow * syw
    h0 = oh * SH - PH
    w0 = ow * SW - PW
    # max: (best, pos); average: acc (the unused ones are compiled away)
    best = tl.full([BLOCK_A, BLOCK_B], float("-inf"), tl.float32)
    # (a running 'seen' flag instead cost 3 more operations a window element)
    pos = (_first_inside(h0, DH) * KW + _first_inside(w0, DW)).to(tl.int32) + tl.full([BLOCK_A, BLOCK_B], 0, tl.int32)
    acc = tl.full([BLOCK_A, BLOCK_B], 0.0, tl.float32)
    seg = tl.arange(0, 2 * BLOCK_B)[None, :]  # PAIRS: a row segment's columns
    if KH * KW <= UNROLL_WINDOW:
        # unrolled: every row's loads are issued before the first compare
        for i in tl.static_range(KH):
            best, pos, acc = _pool_window_row(
                i, base, h0, w0, oh, mask, H, W, OH, sxh, sxw, seg, best, pos, acc,
                KW, PW, DH, DW, IS_MAX, PAIRS, True, BLOCK_A, BLOCK_B)
    else:
        for i in range(KH):
            best, pos, acc = _pool_window_row(
                i, base, h0, w0, oh, mask, H, W, OH, sxh, sxw, seg, best, pos, acc,
                KW, PW, DH, DW, IS_MAX, PAIRS, False, BLOCK_A, BLOCK_B)
    if IS_MAX:
        tl.store(y_ptr + o, best.to(y_ptr.dtype.element_ty), mask=mask)
        tl.store(pos_ptr + o, pos.to(pos_ptr.dtype.element_ty), mask=mask)
        if WRITE_INDICES:
            ih = (h0 + (pos // KW) * DH).to(tl.int64)
            iw = (w0 + (pos % KW) * DW).to(tl.int64)
            tl.store(idx_ptr + o, ih * W + iw, mask=mask)
    else:
        divisor = _avg_divisor(oh, ow, H, W, SH, SW, PH, PW, KH, KW, DIVISOR, HAS_DIVISOR, COUNT_INCLUDE_PAD)
        divisor = tl.where(mask, divisor, 1.0)  # the tile's positions past the output: no 0 / 0
        tl.store(y_ptr + o, (acc / divisor).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _avg_divisor(oh, ow, H, W, SH: tl.constexpr, SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
                 KH: tl.constexpr, KW: tl.constexpr, DIVISOR, HAS_DIVISOR: tl.constexpr,
                 COUNT_INCLUDE_PAD: tl.constexpr):
    """PyTorch's divisor of window (oh, ow): the window clipped to input +
    padding, or to the input alone, or the override."""
    hs = oh * SH - PH
    ws = ow * SW - PW
    he = tl.minimum(hs + KH, H + PH)
    we = tl.minimum(ws + KW, W + PW)
    if COUNT_INCLUDE_PAD:
        count = (he - hs) * (we - ws)
    else:
        count = (tl.minimum(he, H) - tl.maximum(hs, 0)) * (tl.minimum(we, W) - tl.maximum(ws, 0))
    count = count.to(tl.float32)
    if HAS_DIVISOR:
        count = tl.full(count.shape, 1.0, tl.float32) * DIVISOR
    return count


# =============================================================================
# max pool and average pool: backward (gather)
# =============================================================================

@triton.jit
def _window_of(t, S: tl.constexpr, D: tl.constexpr, K: tl.constexpr, O, NON_OVERLAP: tl.constexpr, i):
    """For input coordinate t + pad and window offset i (general case) -- or
    the only candidate offset (NON_OVERLAP) -- the output index and whether it exists."""
    if NON_OVERLAP:
        o = t // S
        r = t - o * S  # offset * dilation inside the window
        ok = (r % D == 0) & (r // D < K) & (o < O)
        return o, ok, r // D
    else:
        u = t - i * D
        o = u // S
        ok = (u >= 0) & (u - o * S == 0) & (o < O)
        return o, ok, i


@triton.jit
def _window_gradient(dy_ptr, pos_ptr, off, ok, oh, ow, k, H, W, DIVISOR,
                     KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                     PH: tl.constexpr, PW: tl.constexpr,
                     IS_MAX: tl.constexpr, COUNT_INCLUDE_PAD: tl.constexpr, HAS_DIVISOR: tl.constexpr):
    """What output window (oh, ow), at offset ``off`` of dy, sends to inputs
    at its window position k (where ``ok``): its dy if its max sat there, or
    its dy over its divisor (average)."""
    if IS_MAX:
        p = tl.load(pos_ptr + off, mask=ok, other=0).to(tl.int32)
        g = tl.load(dy_ptr + off, mask=ok & (p == k), other=0.0).to(tl.float32)
    else:
        g = tl.load(dy_ptr + off, mask=ok, other=0.0).to(tl.float32)
        divisor = _avg_divisor(oh, ow, H, W, SH, SW, PH, PW, KH, KW, DIVISOR, HAS_DIVISOR, COUNT_INCLUDE_PAD)
        g = g / tl.where(ok, divisor, 1.0)  # g is 0 where not ok; a window off the grid may count 0: no 0 / 0
    return g


@triton.jit
def _overlap_candidate(dy_ptr, pos_ptr, base, qh, qw, h, w, mask, H, W, OH, OW, syh, syw, DIVISOR,
                       KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                       PH: tl.constexpr, PW: tl.constexpr,
                       IS_MAX: tl.constexpr, COUNT_INCLUDE_PAD: tl.constexpr, HAS_DIVISOR: tl.constexpr):
    """What candidate window (qh, qw) of an undilated pool sends to input (h, w):
    the window starting qh (qw) strides before the last one that holds it."""
    oh = (h + PH) // SH - ((KH + SH - 1) // SH - 1 - qh)
    i = h + PH - oh * SH
    ow = (w + PW) // SW - ((KW + SW - 1) // SW - 1 - qw)
    j = w + PW - ow * SW
    ok = mask & (oh >= 0) & (oh < OH) & (i < KH) & (ow >= 0) & (ow < OW) & (j < KW)
    return _window_gradient(dy_ptr, pos_ptr, base + oh * syh + ow * syw, ok, oh, ow, i * KW + j, H, W,
                            DIVISOR, KH, KW, SH, SW, PH, PW, IS_MAX, COUNT_INCLUDE_PAD, HAS_DIVISOR)


@triton.jit
def _pool2d_backward_kernel(
    dy_ptr,  # (N, C, OH, OW), strides sy*
    pos_ptr,  # max: saved window positions, same strides as dy
    dx_ptr,  # (N, C, H, W), NCHW or NHWC, strides sd*
    C, H, W, OH, OW, blocks_a,
    syn, syc, syh, syw,
    sdn, sdc, sdh, sdw,
    DIVISOR,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
    IS_MAX: tl.constexpr, COUNT_INCLUDE_PAD: tl.constexpr, HAS_DIVISOR: tl.constexpr, NON_OVERLAP: tl.constexpr,
    CHANNELS_LAST: tl.constexpr, INDEX64: tl.constexpr, BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr,
):
    n, c, h, w, mask = _tile(C, H, W, blocks_a, CHANNELS_LAST, INDEX64, BLOCK_A, BLOCK_B)
    base = n * syn + c * syc
    acc = tl.full([BLOCK_A, BLOCK_B], 0.0, tl.float32)
    if NON_OVERLAP:
        # one candidate window per dimension, found by one division
        oh, ok_h, i = _window_of(h + PH, SH, DH, KH, OH, True, 0)
        ow, ok_w, j = _window_of(w + PW, SW, DW, KW, OW, True, 0)
        ok = mask & ok_h & ok_w
        acc = _window_gradient(dy_ptr, pos_ptr, base + oh * syh + ow * syw, ok, oh, ow, i * KW + j, H, W, DIVISOR,
                               KH, KW, SH, SW, PH, PW, IS_MAX, COUNT_INCLUDE_PAD, HAS_DIVISOR)
    elif DH == 1 and DW == 1:
        # undilated overlapping windows: the windows holding input t start at
        # o*S for o in [(t - K) // S + 1, t // S], at most cdiv(K, S) of them
        # (2 x 2 for 3x3 stride 2, where the loop below tries all 9 offsets);
        # unrolled when few (all loads in flight at once), as in the forward
        if ((KH + SH - 1) // SH) * ((KW + SW - 1) // SW) <= UNROLL_WINDOW:
            for qh in tl.static_range((KH + SH - 1) // SH):
                for qw in tl.static_range((KW + SW - 1) // SW):
                    acc += _overlap_candidate(dy_ptr, pos_ptr, base, qh, qw, h, w, mask, H, W, OH, OW, syh, syw,
                                              DIVISOR, KH, KW, SH, SW, PH, PW, IS_MAX, COUNT_INCLUDE_PAD, HAS_DIVISOR)
        else:
            for qh in range((KH + SH - 1) // SH):
                for qw in range((KW + SW - 1) // SW):
                    acc += _overlap_candidate(dy_ptr, pos_ptr, base, qh, qw, h, w, mask, H, W, OH, OW, syh, syw,
                                              DIVISOR, KH, KW, SH, SW, PH, PW, IS_MAX, COUNT_INCLUDE_PAD, HAS_DIVISOR)
    else:
        for i in range(KH):
            oh, ok_h, _i = _window_of(h + PH, SH, DH, KH, OH, False, i)
            ok_h = mask & ok_h
            for j in range(KW):
                ow, ok_w, _j = _window_of(w + PW, SW, DW, KW, OW, False, j)
                ok = ok_h & ok_w
                acc += _window_gradient(dy_ptr, pos_ptr, base + oh * syh + ow * syw, ok, oh, ow, i * KW + j, H, W,
                                        DIVISOR, KH, KW, SH, SW, PH, PW, IS_MAX, COUNT_INCLUDE_PAD, HAS_DIVISOR)
    tl.store(dx_ptr + n * sdn + c * sdc + h * sdh + w * sdw, acc.to(dx_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _pairs_gradient(dy_ptr, pos_ptr, base, u, v, tile_ok, mh, mw, rh, rw, H, W, OH, OW, syh, syw, DIVISOR,
                    KH: tl.constexpr, KW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
                    IS_MAX: tl.constexpr, COUNT_INCLUDE_PAD: tl.constexpr, HAS_DIVISOR: tl.constexpr):
    """What window (u - mh, v - mw) sends to input (2u + rh - PH, 2v + rw - PW):
    its window position there is (2 mh + rh, 2 mw + rw)."""
    oh = u - mh
    ow = v - mw
    ok = tile_ok & (oh >= 0) & (oh < OH) & (ow >= 0) & (ow < OW)  # a window off the grid reads nothing
    return _window_gradient(dy_ptr, pos_ptr, base + oh * syh + ow * syw, ok, oh, ow, (2 * mh + rh) * KW + 2 * mw + rw,
                            H, W, DIVISOR, KH, KW, 2, 2, PH, PW, IS_MAX, COUNT_INCLUDE_PAD, HAS_DIVISOR)


@triton.jit
def _pairs_parity(dy_ptr, pos_ptr, base, u, v, tile_ok, rh, rw, H, W, OH, OW, syh, syw, DIVISOR,
                  KH: tl.constexpr, KW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
                  IS_MAX: tl.constexpr, COUNT_INCLUDE_PAD: tl.constexpr, HAS_DIVISOR: tl.constexpr,
                  BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr):
    """dx at rows 2u + rh - PH, columns 2v + rw - PW: the windows u - mh,
    v - mw whose offsets 2 mh + rh, 2 mw + rw fall inside the kernel."""
    acc = tl.full([BLOCK_A, BLOCK_B], 0.0, tl.float32)
    for mh in tl.static_range((KH - rh + 1) // 2):
        for mw in tl.static_range((KW - rw + 1) // 2):
            acc += _pairs_gradient(dy_ptr, pos_ptr, base, u, v, tile_ok, mh, mw, rh, rw, H, W, OH, OW, syh, syw,
                                   DIVISOR, KH, KW, PH, PW, IS_MAX, COUNT_INCLUDE_PAD, HAS_DIVISOR)
    return acc


@triton.jit
def _pool2d_backward_pairs_kernel(
    dy_ptr,  # (N, C, OH, OW), strides sy*
    pos_ptr,  # max: saved window positions, same strides as dy
    dx_ptr,  # (N, C, H, W) contiguous
    C, H, W, OH, OW, U, V, blocks_a,
    syn, syc, syh, syw,
    DIVISOR,
    KH: tl.constexpr, KW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
    IS_MAX: tl.constexpr, COUNT_INCLUDE_PAD: tl.constexpr, HAS_DIVISOR: tl.constexpr,
    INDEX64: tl.constexpr, BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr,
):
    """Backward of an undilated stride-2 pool on NCHW, by parity. Input row
    2u + r - PH (r = 0, 1) lies in windows u - m at offset 2m + r, so a tile
    of (u, v) reads dy (and the window positions) as a few shifted tiles of
    plain contiguous loads, shared by the four (row, column) parities, and
    writes each dx row as the even and odd columns interleaved: contiguous
    stores. The gather kernel above instead did, per dx element, a scalar
    load of dy and of the position for every window that might hold it.
    Every dx element is written once, by one program (u, v cover H + PH and
    W + PW in pairs)."""
    n, c, u, v, tile_ok = _tile(C, U, V, blocks_a, False, INDEX64, BLOCK_A, BLOCK_B)
    base = n * syn + c * syc
    plane = dx_ptr + (n * C + c) * H * W
    # the columns of a row: 2v - PW and 2v + 1 - PW for each v of the tile, in order
    w = 2 * (tl.program_id(1) * BLOCK_B) - PW + tl.arange(0, 2 * BLOCK_B)[None, :]
    for rh in tl.static_range(2):
        even = _pairs_parity(dy_ptr, pos_ptr, base, u, v, tile_ok, rh, 0, H, W, OH, OW, syh, syw, DIVISOR,
                             KH, KW, PH, PW, IS_MAX, COUNT_INCLUDE_PAD, HAS_DIVISOR, BLOCK_A, BLOCK_B)
        odd = _pairs_parity(dy_ptr, pos_ptr, base, u, v, tile_ok, rh, 1, H, W, OH, OW, syh, syw, DIVISOR,
                            KH, KW, PH, PW, IS_MAX, COUNT_INCLUDE_PAD, HAS_DIVISOR, BLOCK_A, BLOCK_B)
        row = tl.reshape(tl.join(even, odd), [BLOCK_A, 2 * BLOCK_B])
        h = 2 * u - PH + rh  # (BLOCK_A, 1)
        ok = (h >= 0) & (h < H) & (w >= 0) & (w < W) & (u < U)
        tl.store(plane + h * W + w, row.to(dx_ptr.dtype.element_ty), mask=ok)


# =============================================================================
# launchers: max pool and average pool
# =============================================================================

@functools.lru_cache(maxsize=1024)  # pure in its ints, asked twice a pool's forward+backward (host time)
def _tiling(n: int, c: int, a: int, b: int, channels_last: bool, tile: int):
    """(blocks_a, BLOCK_A, BLOCK_B, grid) of the 2-D tiles _tile walks over an
    (n, c, a, b) tensor: about ``tile`` elements a program, the inner block the
    contiguous dimension (columns b for NCHW, channels for channels_last)."""
    inner, outer_len = (c, a * b) if channels_last else (b, a)
    block_b = min(next_power_of_2(inner), 128)
    block_a = max(1, min(tile // block_b, next_power_of_2(outer_len)))
    blocks_a = cdiv(outer_len, block_a)
    grid = ((n if channels_last else n * c) * blocks_a, cdiv(inner, block_b))
    return blocks_a, block_a, block_b, grid


def _launch_forward(x, kernel_size, stride, padding, dilation, out_hw, is_max, return_indices=False,
                    count_include_pad=True, divisor_override=0):
    n, c, h, w = x.shape
    oh, ow = out_hw
    cl = _is_channels_last(x)
    y = _new_pool_tensor((n, c, oh, ow), cl, x.dtype, x.device)
    pos = _new_pool_tensor((n, c, oh, ow), cl, _position_dtype(kernel_size[0] * kernel_size[1]), x.device) if is_max else x
    idx = (_new_pool_tensor((n, c, oh, ow), cl, torch.int64, x.device) if return_indices
           else x.new_empty((0,), dtype=torch.int64))
    pairs = not cl and stride[1] == 2 and dilation[1] == 1 and x.stride(3) == 1
    if y.numel():
        tile = (PAIRS_MAX_TILE if is_max else PAIRS_TILE) if pairs else TILE
        blocks_a, block_a, block_b, grid = _tiling(n, c, oh, ow, cl, tile)
        _pool2d_forward_kernel[grid](
            x, y, pos, idx if return_indices else x,
            c, h, w, oh, ow, blocks_a, *_strides(x), *_strides(y), float(divisor_override or 0),
            KH=kernel_size[0], KW=kernel_size[1], SH=stride[0], SW=stride[1],
            PH=padding[0], PW=padding[1], DH=dilation[0], DW=dilation[1], IS_MAX=is_max,
            COUNT_INCLUDE_PAD=bool(count_include_pad), HAS_DIVISOR=bool(divisor_override),
            WRITE_INDICES=bool(return_indices), CHANNELS_LAST=cl, INDEX64=_needs_int64(x, y),
            BLOCK_A=block_a, BLOCK_B=block_b, num_warps=PAIRS_WARPS if pairs else FORWARD_WARPS, PAIRS=pairs,
        )
    return y, pos, idx


def _launch_backward(dy, pos, input_size, kernel_size, stride, padding, dilation, channels_last, is_max,
                     count_include_pad=True, divisor_override=0):
    n, c, h, w = input_size
    oh, ow = dy.shape[2:]
    if is_max:
        dy = same_layout(dy, pos)
    dx = _new_pool_tensor((n, c, h, w), channels_last, dy.dtype, dy.device)
    # each input element lies in at most one window along a dimension
    non_overlap = all(s >= (k - 1) * d + 1 for k, s, d in zip(kernel_size, stride, dilation))
    if dx.numel() and PARITY_BACKWARD and not channels_last and tuple(stride) == (2, 2) \
            and tuple(dilation) == (1, 1) and kernel_size[0] * kernel_size[1] <= UNROLL_WINDOW.value:
        # stride 2 on NCHW: by parity (_pool2d_backward_pairs_kernel)
        u, v = cdiv(h + padding[0], 2), cdiv(w + padding[1], 2)
        blocks_a, block_a, block_b, grid = _tiling(n, c, u, v, False, PAIRS_BACKWARD_TILE)
        _pool2d_backward_pairs_kernel[grid](
            dy, pos if is_max else dy, dx, c, h, w, oh, ow, u, v, blocks_a, *_strides(dy),
            float(divisor_override or 0), KH=kernel_size[0], KW=kernel_size[1], PH=padding[0], PW=padding[1],
            IS_MAX=is_max, COUNT_INCLUDE_PAD=bool(count_include_pad), HAS_DIVISOR=bool(divisor_override),
            INDEX64=_needs_int64(dx, dy), BLOCK_A=block_a, BLOCK_B=block_b, num_warps=WARPS,
        )
    elif dx.numel():
        blocks_a, block_a, block_b, grid = _tiling(n, c, h, w, bool(channels_last), TILE)
        _pool2d_backward_kernel[grid](
            dy, pos if is_max else dy, dx,
            c, h, w, oh, ow, blocks_a, *_strides(dy), *_strides(dx), float(divisor_override or 0),
            KH=kernel_size[0], KW=kernel_size[1], SH=stride[0], SW=stride[1],
            PH=padding[0], PW=padding[1], DH=dilation[0], DW=dilation[1], IS_MAX=is_max,
            COUNT_INCLUDE_PAD=bool(count_include_pad), HAS_DIVISOR=bool(divisor_override),
            NON_OVERLAP=non_overlap, CHANNELS_LAST=bool(channels_last), INDEX64=_needs_int64(dx, dy),
            BLOCK_A=block_a, BLOCK_B=block_b, num_warps=WARPS,
        )
    return dx


def max_pool2d_forward(x, kernel_size, stride, padding, dilation, out_hw, return_indices):
    """(y, window positions, int64 indices or an empty tensor)."""
    return _launch_forward(x, kernel_size, stride, padding, dilation, out_hw, True, return_indices)


def max_pool2d_backward(dy, pos, input_size, kernel_size, stride, padding, dilation, channels_last):
    return _launch_backward(dy, pos, input_size, kernel_size, stride, padding, dilation, channels_last, True)


def avg_pool2d_forward(x, kernel_size, stride, padding, out_hw, count_include_pad, divisor_override):
    y, _, _ = _launch_forward(x, kernel_size, stride, padding, (1, 1), out_hw, False,
                              count_include_pad=count_include_pad, divisor_override=divisor_override)
    return y


def avg_pool2d_backward(dy, input_size, kernel_size, stride, padding, count_include_pad, divisor_override, channels_last):
    return _launch_backward(dy, None, input_size, kernel_size, stride, padding, (1, 1), channels_last, False,
                            count_include_pad, divisor_override)


# =============================================================================
# adaptive pools
# =============================================================================

@triton.jit
def _adaptive_pool2d_forward_kernel(
    x_ptr,  # input (N, C, H, W), any strides
    y_ptr,  # output (N, C, OH, OW), NCHW or NHWC, strides sy*
    pos_ptr,  # max: window position kh * KMAX_W + kw, same strides as y
    idx_ptr,  # max with WRITE_INDICES: int64 h*W + w, same strides as y
    C, H, W, OH, OW, blocks_a,
    sxn, sxc, sxh, sxw,
    syn, syc, syh, syw,
    KMAX_H: tl.constexpr, KMAX_W: tl.constexpr,  # the largest window
    IS_MAX: tl.constexpr, WRITE_INDICES: tl.constexpr,
    CHANNELS_LAST: tl.constexpr, INDEX64: tl.constexpr, BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr,
):
    n, c, oh, ow, mask = _tile(C, OH, OW, blocks_a, CHANNELS_LAST, INDEX64, BLOCK_A, BLOCK_B)
    base = x_ptr + n * sxn + c * sxc
    o = n * syn + c * syc + oh * syh + ow * syw
    hs = (oh * H) // OH
    he = ((oh + 1) * H + OH - 1) // OH
    ws = (ow * W) // OW
    we = ((ow + 1) * W + OW - 1) // OW
    if IS_MAX:
        best = tl.full([BLOCK_A, BLOCK_B], float("-inf"), tl.float32)
        pos = tl.full([BLOCK_A, BLOCK_B], 0, tl.int32)  # an adaptive window's first element is inside
    else:
        acc = tl.full([BLOCK_A, BLOCK_B], 0.0, tl.float32)
    for i in range(KMAX_H):
        ih = hs + i
        row_ok = mask & (ih < he)
        for j in range(KMAX_W):
            iw = ws + j
            ok = row_ok & (iw < we)
            v = tl.load(base + ih * sxh + iw * sxw, mask=ok, other=_outside(IS_MAX)).to(tl.float32)
            if IS_MAX:
                best, pos = _max_update(v, best, pos, i * KMAX_W + j)
            else:
                acc += v
    if IS_MAX:
        tl.store(y_ptr + o, best.to(y_ptr.dtype.element_ty), mask=mask)
        tl.store(pos_ptr + o, pos.to(pos_ptr.dtype.element_ty), mask=mask)
        if WRITE_INDICES:
            ih = (hs + pos // KMAX_W).to(tl.int64)
            iw = (ws + pos % KMAX_W).to(tl.int64)
            tl.store(idx_ptr + o, ih * W + iw, mask=mask)
    else:
        count = ((he - hs) * (we - ws)).to(tl.float32)
        tl.store(y_ptr + o, (acc / count).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _global_avg_pool_nchw_kernel(
    x_ptr,  # (rows, HW) contiguous: one row per (n, c) plane
    y_ptr,  # (rows,)
    rows, HW,
    ROWS: tl.constexpr, BLOCK_HW: tl.constexpr, CHUNKS: tl.constexpr,  # CHUNKS * BLOCK_HW >= HW
    INDEX64: tl.constexpr,
):
    """Global average pool of contiguous NCHW planes: ROWS planes a program,
    each summed along its HW contiguous elements."""
    pid = tl.program_id(0)
    if INDEX64:
        pid = pid.to(tl.int64)
    r = pid * ROWS + tl.arange(0, ROWS)
    row_ok = r < rows
    cols = tl.arange(0, BLOCK_HW)
    acc = tl.full([ROWS, BLOCK_HW], 0.0, tl.float32)
    for k in range(CHUNKS):
        start = k * BLOCK_HW
        ok = row_ok[:, None] & ((start + cols) < HW)[None, :]
        acc += tl.load(x_ptr + r[:, None] * HW + (start + cols)[None, :], mask=ok, other=0.0).to(tl.float32)
    tl.store(y_ptr + r, (tl.reduce(acc, 1, _add) / HW).to(y_ptr.dtype.element_ty), mask=row_ok)


@triton.jit
def _positions_chunk(base, hw, c, HW, C):
    """Positions hw (a column) x channels c (a row) of a channels_last sample, float32."""
    return tl.load(base + hw * C + c, mask=(hw < HW) & (c < C), other=0.0).to(tl.float32)


@triton.jit
def _global_avg_pool_cl_kernel(
    x_ptr,  # (N, H*W, C): a dense channels_last input, C contiguous channels a position
    y_ptr,  # (N, C) contiguous
    C, HW,
    BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr, CHUNKS: tl.constexpr,  # CHUNKS * BLOCK_HW >= HW
    INDEX64: tl.constexpr,
):
    """Global average pool of a channels_last input: program (n, j) sums
    channels j*BLOCK_C.. of sample n over all its positions, a (positions x
    channels) tile at a time. The adaptive kernel's (1 x channels) tiles
    read one position a loop step (256 bytes in bf16), half the copy rate at
    256x2048x7x7."""
    n = tl.program_id(0)
    hw = tl.arange(0, BLOCK_HW)[:, None]
    if INDEX64:  # (a sample alone can pass 2**31 elements)
        n = n.to(tl.int64)
        hw = hw.to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)[None, :]
    base = x_ptr + n * HW * C
    acc = tl.full([BLOCK_HW, BLOCK_C], 0.0, tl.float32)
    if CHUNKS <= 8:  # unrolled (7x7 takes 4): every chunk's loads in flight at once
        for k in tl.static_range(CHUNKS):
            acc += _positions_chunk(base, k * BLOCK_HW + hw, c, HW, C)
    else:  # large planes: a loop (compile time)
        for k in range(CHUNKS):
            acc += _positions_chunk(base, k * BLOCK_HW + hw, c, HW, C)
    total = tl.reduce(acc, 0, _add)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    tl.store(y_ptr + n * C + cols, (total / HW).to(y_ptr.dtype.element_ty), mask=cols < C)


@triton.jit
def _global_avg_pool_backward_kernel(
    dy_ptr,  # (N, C, 1, 1), strides syn, syc
    dx_ptr,  # (N, C, H, W), NCHW or NHWC, strides sd*
    N, C, H, W, blocks_a,
    syn, syc, sdn, sdc, sdh, sdw,
    CHANNELS_LAST: tl.constexpr, INDEX64: tl.constexpr, BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr,
):
    """dx = dy / (H*W) broadcast over each plane, a tile at a time (_tile):
    channels_last as (positions x channels) of a sample; NCHW as (planes x
    positions), the N*C planes being the rows of one (1, 1, N*C, H*W) matrix."""
    if CHANNELS_LAST:
        n, c, h, w, mask = _tile(C, H, W, blocks_a, True, INDEX64, BLOCK_A, BLOCK_B)
        zero = h * 0
        out = n * sdn + c * sdc + h * sdh + w * sdw
    else:
        _n, _c, plane, hw, mask = _tile(1, N * C, H * W, blocks_a, False, INDEX64, BLOCK_A, BLOCK_B)
        n = plane // C  # one division a row of the tile
        c = plane - n * C
        zero = hw * 0
        out = plane * (H * W) + hw
    g = tl.load(dy_ptr + n * syn + c * syc + zero, mask=mask, other=0.0).to(tl.float32)
    tl.store(dx_ptr + out, (g / (H * W)).to(dx_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _adaptive_pool2d_backward_kernel(
    dy_ptr,  # (N, C, OH, OW), strides sy*
    pos_ptr,  # max: saved window positions, same strides as dy
    dx_ptr,  # (N, C, H, W), NCHW or NHWC, strides sd*
    C, H, W, OH, OW, blocks_a,
    syn, syc, syh, syw,
    sdn, sdc, sdh, sdw,
    KMAX_W,  # max: the position stride of a window row
    COVER_H: tl.constexpr, COVER_W: tl.constexpr,  # most windows covering one row / column
    IS_MAX: tl.constexpr, CHANNELS_LAST: tl.constexpr, INDEX64: tl.constexpr,
    BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr,
):
    n, c, h, w, mask = _tile(C, H, W, blocks_a, CHANNELS_LAST, INDEX64, BLOCK_A, BLOCK_B)
    base = n * syn + c * syc
    # windows covering row h: oh from floor(h*OH/H) to ceil((h+1)*OH/H) - 1
    oh_lo = (h * OH) // H
    oh_hi = ((h + 1) * OH + H - 1) // H - 1
    ow_lo = (w * OW) // W
    ow_hi = ((w + 1) * OW + W - 1) // W - 1
    acc = tl.full([BLOCK_A, BLOCK_B], 0.0, tl.float32)
    for m in range(COVER_H):
        oh = oh_lo + m
        ok_h = mask & (oh <= oh_hi)
        hs = (oh * H) // OH
        he = ((oh + 1) * H + OH - 1) // OH
        for k in range(COVER_W):
            ow = ow_lo + k
            ok = ok_h & (ow <= ow_hi)
            ws = (ow * W) // OW
            off = base + oh * syh + ow * syw
            if IS_MAX:
                p = tl.load(pos_ptr + off, mask=ok, other=0).to(tl.int32)
                hit = ok & (p == (h - hs) * KMAX_W + (w - ws))
                acc += tl.load(dy_ptr + off, mask=hit, other=0.0).to(tl.float32)
            else:
                we = ((ow + 1) * W + OW - 1) // OW
                g = tl.load(dy_ptr + off, mask=ok, other=0.0).to(tl.float32)
                acc += tl.where(ok, g / ((he - hs) * (we - ws)).to(tl.float32), 0.0)
    tl.store(dx_ptr + n * sdn + c * sdc + h * sdh + w * sdw, acc.to(dx_ptr.dtype.element_ty), mask=mask)


def _largest_window(size, out):
    """The largest adaptive window along one dimension (max of ceil - floor)."""
    if out == 0:
        return 1
    return max(-(-((i + 1) * size) // out) - (i * size) // out for i in range(out))


def _most_covering(size, out):
    """The most adaptive windows that cover one input index along a dimension."""
    if size == 0 or out == 0:
        return 1
    return max(-(-((i + 1) * out) // size) - (i * out) // size for i in range(size))


def _adaptive_forward(x, output_size, is_max, return_indices=False):
    n, c, h, w = x.shape
    oh, ow = output_size
    cl = _is_channels_last(x)
    kh, kw = _largest_window(h, oh), _largest_window(w, ow)
    y = _new_pool_tensor((n, c, oh, ow), cl, x.dtype, x.device)
    pos = _new_pool_tensor((n, c, oh, ow), cl, _position_dtype(kh * kw), x.device) if is_max else x
    idx = (_new_pool_tensor((n, c, oh, ow), cl, torch.int64, x.device) if return_indices
           else x.new_empty((0,), dtype=torch.int64))
    if y.numel():
        blocks_a, block_a, block_b, grid = _tiling(n, c, oh, ow, cl, TILE)
        _adaptive_pool2d_forward_kernel[grid](
            x, y, pos, idx if return_indices else x,
            c, h, w, oh, ow, blocks_a, *_strides(x), *_strides(y),
            KMAX_H=kh, KMAX_W=kw, IS_MAX=is_max, WRITE_INDICES=bool(return_indices),
            CHANNELS_LAST=cl, INDEX64=_needs_int64(x, y), BLOCK_A=block_a, BLOCK_B=block_b, num_warps=WARPS,
        )
    return y, pos, idx


def _global_average(x):
    """Global average pooling of a dense NCHW or channels_last x, or None
    for other strides (the adaptive kernel's). Its own path, ahead of the
    adaptive one's window sizes and index buffers: the ResNet head's pool
    is a ~20 us kernel, and host time shows there (session 13's matrix)."""
    n, c, h, w = x.shape
    if x.is_contiguous():
        y = x.new_empty((n, c, 1, 1))
        rows, hw = n * c, h * w
        if rows and hw:  # (an empty plane never gets here: lamina.validate refuses it, as PyTorch's CUDA pools do)
            block_hw = min(next_power_of_2(hw), 256)
            plane_rows = PLANE_BLOCK // block_hw  # about PLANE_BLOCK elements in flight a program
            _global_avg_pool_nchw_kernel[(cdiv(rows, plane_rows),)](
                x, y, rows, hw, ROWS=plane_rows, BLOCK_HW=block_hw, CHUNKS=cdiv(hw, block_hw),
                INDEX64=_needs_int64(x), num_warps=PLANE_WARPS,
            )
        return y
    if not _is_channels_last(x):
        return None
    y = x.new_empty((n, c, 1, 1))  # (contiguous strides: see _new_pool_tensor)
    hw = h * w
    if n and c and hw:
        block_c = min(next_power_of_2(c), GLOBAL_CL_ROW_BYTES // x.element_size())
        block_hw = min(next_power_of_2(hw), max(1, GLOBAL_CL_TILE // block_c))
        _global_avg_pool_cl_kernel[(n, cdiv(c, block_c))](
            x, y, c, hw, BLOCK_HW=block_hw, BLOCK_C=block_c, CHUNKS=cdiv(hw, block_hw),
            INDEX64=_needs_int64(x), num_warps=GLOBAL_CL_WARPS,
        )
    return y


def _adaptive_backward(dy, pos, input_size, channels_last, is_max):
    n, c, h, w = input_size
    oh, ow = dy.shape[2:]
    if is_max:
        dy = same_layout(dy, pos)
    dx = _new_pool_tensor((n, c, h, w), channels_last, dy.dtype, dy.device)
    total = dx.numel()
    if total and not is_max and oh == 1 and ow == 1:
        # NCHW: the planes as rows of one (N*C, H*W) matrix (small planes, e.g. 7x7, make poor tiles alone)
        tiling = _tiling(n, c, h, w, True, TILE) if channels_last else _tiling(1, 1, n * c, h * w, False, TILE)
        blocks_a, block_a, block_b, grid = tiling
        _global_avg_pool_backward_kernel[grid](
            dy, dx, n, c, h, w, blocks_a, dy.stride(0), dy.stride(1), *_strides(dx),
            CHANNELS_LAST=bool(channels_last), INDEX64=_needs_int64(dx, dy),
            BLOCK_A=block_a, BLOCK_B=block_b, num_warps=WARPS,
        )
    elif total and oh and ow:
        blocks_a, block_a, block_b, grid = _tiling(n, c, h, w, bool(channels_last), TILE)
        _adaptive_pool2d_backward_kernel[grid](
            dy, pos if is_max else dy, dx,
            c, h, w, oh, ow, blocks_a, *_strides(dy), *_strides(dx),
            _largest_window(w, ow),
            COVER_H=_most_covering(h, oh), COVER_W=_most_covering(w, ow),
            IS_MAX=is_max, CHANNELS_LAST=bool(channels_last), INDEX64=_needs_int64(dx, dy),
            BLOCK_A=block_a, BLOCK_B=block_b, num_warps=WARPS,
        )
    elif total:
        dx.zero_()
    return dx


def adaptive_avg_pool2d_forward(x, output_size):
    if output_size[0] == 1 and output_size[1] == 1:
        y = _global_average(x)
        if y is not None:
            return y
    return _adaptive_forward(x, output_size, False)[0]


def adaptive_avg_pool2d_backward(dy, input_size, channels_last):
    return _adaptive_backward(dy, None, input_size, channels_last, False)


def adaptive_max_pool2d_forward(x, output_size, return_indices):
    """(y, window positions, int64 indices or an empty tensor)."""
    return _adaptive_forward(x, output_size, True, return_indices)


def adaptive_max_pool2d_backward(dy, pos, input_size, channels_last):
    return _adaptive_backward(dy, pos, input_size, channels_last, True)
