"""Activation kernels: one elementwise forward and one elementwise backward
kernel for every activation, chosen by a compile-time activation id, plus a
PReLU pair that knows channels.

The elementwise kernels walk a dense tensor's storage in memory order
(contiguous or channels_last alike), BLOCK elements a program, offsets in
int64 so tensors past 2**31 elements are safe. Math in float32, stored in the
input's dtype. ``ACT`` is a ``tl.constexpr``, so each activation compiles to
its own specialised kernel with no runtime branching; ``param`` carries the
one float an activation may take (LeakyReLU's slope, Swish's beta).

What backward reads (``saved``) is what the activation needs and no more:
the output for ReLU, LeakyReLU (slope >= 0), Sigmoid and Tanh; a uint8 mask
[x > 0] for LeakyReLU with a negative slope; the input for GELU and
SiLU/Swish.

PReLU's weight gradient is a reduction per channel, so PReLU walks the tensor
as a row-major matrix (R, K) in 2-D tiles whose channel is constant along
one axis: NCHW-like layouts put channels on rows (row r = (n, c), channel
r % C, K = H*W), channels_last-like layouts on columns (K = C). Each tile
writes its float32 partial sums of d(weight) to its own slot and a second
pass (a torch sum over the partial buffer) finishes them: no atomics, the
same result run after run.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..layout import empty_result, in_result_layout
from .launch import (
    ELEMENTWISE_WARPS, cdiv, dense, elementwise_block, elementwise_grid, is_dense, next_power_of_2, same_layout,
)

# Activation ids: constexpr so the kernels can compare against them; the
# launchers pass the plain int (``.value``).
RELU = tl.constexpr(0)
LEAKY_RELU = tl.constexpr(1)
SIGMOID = tl.constexpr(2)
TANH = tl.constexpr(3)
GELU = tl.constexpr(4)
GELU_TANH = tl.constexpr(5)
SWISH = tl.constexpr(6)  # SiLU is Swish with beta = 1
# GELU (erf form) for 16-bit tensors: the Gaussian CDF through erfc's
# exponential form (_gauss_cdf) instead of libdevice's erff, whose 351 sm_90
# PTX instructions and 16 branches a thread made bfloat16 GELU bound by
# instructions (0.64 of copy bandwidth forward on an H200). Accurate to
# ~4e-6 relative: far below a 16-bit rounding, not float32's (float32 GELU
# is bound by bytes and keeps erff).
GELU_ERFC = tl.constexpr(7)
# Tanh for 16-bit tensors (_tanh_16bit): a two-term series near 0 and one
# exp and one division beyond, about half the instructions of the float32
# form, whose 8e-8 accuracy a 16-bit rounding throws away (bfloat16 tanh
# forward ran at 0.75 of copy bandwidth on an H200, bound by instructions).
TANH_16BIT = tl.constexpr(8)
# Swish/SiLU and the tanh-GELU for 16-bit tensors: their sigmoid as
# 1 / (1 + 2^-w), w = z log2(e) (_logistic_log2), three instructions an
# element fewer than the float32 form, which keeps exp(z)'s tiny values below
# z = -88 that a 16-bit result (or PyTorch's CUDA kernels, with this same
# form) gives as 0 anyway. (bfloat16 SiLU forward ran at 0.84 of copy on an
# H200, 0.91x torch.compile, bound by instructions.)
#
# The 16-bit forms take their exponentials as tl.exp2 on an argument whose
# log2(e) scale is folded into the caller's constants: one multiply fewer,
# and exp2 compiles to the flush-to-zero ex2 (tl.exp's float32 ex2 spends
# four more instructions on results below 2^-126, values that vanish next to
# the 1 they are added to, or lie below a 16-bit result's resolution).
SWISH_16BIT = tl.constexpr(9)
GELU_TANH_16BIT = tl.constexpr(10)

# Past this |x| tanh, the Gaussian and sigmoid have saturated in float32, so
# polynomials in x are evaluated on x clipped here (no overflow of x*x, x**3).
SATURATED = tl.constexpr(20.0)
SQRT1_2 = tl.constexpr(0.7071067811865476)
INV_SQRT_2PI = tl.constexpr(0.3989422804014327)
GELU_TANH_SCALE = tl.constexpr(0.7978845608028654)  # sqrt(2/pi)
GELU_TANH_CUBIC = tl.constexpr(0.044715)
LOG2E = tl.constexpr(1.4426950408889634)
# the tanh-GELU gate's argument in log2 units: 2u log2(e) = x (A + B x^2)
GELU_TANH_A = tl.constexpr(2.0 * 0.7978845608028654 * 1.4426950408889634)
GELU_TANH_B = tl.constexpr(2.0 * 0.7978845608028654 * 0.044715 * 1.4426950408889634)


# --- float32 math shared by the kernels -------------------------------------

@triton.jit
def _sigmoid(x):
    # z = exp(-|x|) <= 1 never overflows; NaN falls through to z * r = NaN.
    # One division (16-bit activations are bound by instructions, not bytes)
    z = tl.exp(-tl.abs(x))
    r = 1.0 / (1.0 + z)
    return tl.where(x >= 0, r, z * r)


@triton.jit
def _logistic_log2(w):
    """sigmoid(z) for w = z log2(e): 1 / (1 + 2^-w), which is 0 where 2^-w
    overflows (z < -88) and NaN for NaN (the 16-bit forms' sigmoid)."""
    return 1.0 / (1.0 + tl.exp2(-w))


@triton.jit
def _gauss_cdf(x):
    """Phi(x) = erfc(-x / sqrt 2) / 2 with erfc(z) = t exp(-z^2 + P(t)),
    t = 1 / (1 + z/2), z = |x| / sqrt 2 >= 0: one division, one exp, no
    branch. P (degree 7) was fitted here by iteratively reweighted least
    squares to log(erfc(z) / t) + z^2 over z in [0, 12]: erfc to 6.8e-7
    relative in float64; evaluated in float32, x * Phi(x) is within 3.8e-6
    relative of the exact GELU for |x| < 6 (exp(-z^2)'s argument rounds),
    its derivative within 6e-7 absolute. The exponent is taken in log2
    units (P's coefficients times log2(e)) for exp2.
    For x < 0 Phi is the small erfc term itself, so no 1 + erf(..) cancels.
    No clip: for a huge |x| z^2 is inf and 2^-inf = 0 (Phi 0 or 1, as it
    has saturated); NaN stays NaN."""
    ax = tl.abs(x)
    t = 1.0 / (1.0 + ax * (0.5 * SQRT1_2))
    p = -0.18638476729393005 * LOG2E
    p = p * t + 0.7458659410476685 * LOG2E
    p = p * t - 0.9915722608566284 * LOG2E
    p = p * t + 0.34162792563438416 * LOG2E
    p = p * t - 0.03567205369472504 * LOG2E
    p = p * t + 0.39289411902427673 * LOG2E
    p = p * t + 0.998723566532135 * LOG2E
    p = p * t - 1.2654831409454346 * LOG2E
    h = 0.5 * t * tl.exp2(p - ax * ax * (0.5 * LOG2E))
    return tl.where(x < 0, h, 1.0 - h)


@triton.jit
def _gelu_tanh_gate(xc, SHORT: tl.constexpr):
    """(1 + tanh(u)) / 2 = sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3): the
    tanh-GELU's gate without a tanh, whose 1 + tanh(u) would cancel for
    negative x. ``xc``: x clipped to +-SATURATED (no overflow of x^3), or
    with SHORT x itself (an overflowing x^3 meets 1 / (1 + inf) = 0 or
    1 / (1 + 0) = 1, as the gate saturates)."""
    if SHORT:
        return _logistic_log2(xc * (GELU_TANH_A + GELU_TANH_B * xc * xc))
    else:
        return _sigmoid(2.0 * GELU_TANH_SCALE * (xc + GELU_TANH_CUBIC * xc * xc * xc))


@triton.jit
def _tanh(x):
    # Triton has no portable tanh. Near 0, 1 - 2/(e^2x + 1) loses relative
    # precision, so |x| < 0.625 uses an odd polynomial x + x^3 P(x^2), P fitted
    # here by weighted least squares (max relative error 8e-8 in float32);
    # beyond, (1 - e) / (1 + e) with e = exp(-2|x|) <= 0.29, which cannot
    # overflow. NaN fails |x| < 0.625 and propagates through exp.
    ax = tl.abs(x)
    xs = tl.where(ax < 0.625, x, 0.0)  # both sides are computed: keep huge x out of x^3
    z = xs * xs
    p = (((-0.0057189627550542355 * z + 0.020653124898672104) * z - 0.05374465882778168) * z
         + 0.13331513106822968) * z - 0.3333328664302826
    small = xs + xs * z * p
    e = tl.exp(-2.0 * tl.where(ax > SATURATED, SATURATED, ax))  # no -inf from a huge x; NaN stays
    big = (1.0 - e) / (1.0 + e)
    big = tl.where(x < 0, -big, big)
    return tl.where(ax < 0.625, small, big)


@triton.jit
def _tanh_16bit(x):
    # On a = |x|, x's sign put back as a bit (exactly odd, -0 stays -0):
    # a < 1/16: a - a^3/3, relative error below 2 a^4/15 = 3e-6; beyond,
    # (1 - e) / (1 + e), e = exp(-2a) in (0, 0.89], whose 1 - e cancels to
    # ~2e-6 relative at a = 1/16. Both under a 16-bit half-ulp (2.4e-4 for
    # float16). No clamp: e never overflows (2^-inf = 0 gives 1); a huge a
    # makes a^2 inf, which fails the test; NaN stays NaN.
    a = tl.abs(x)
    z = a * a
    e = tl.exp2(a * (-2.0 * LOG2E))
    g = tl.where(z < 0.00390625, a - a * z * 0.3333333333333333, (1.0 - e) / (1.0 + e))
    sign = x.to(tl.uint32, bitcast=True) & 0x80000000
    return (g.to(tl.uint32, bitcast=True) | sign).to(tl.float32, bitcast=True)


@triton.jit
def _store(ptrs, value, mask):
    # float32 math, stored in the tensor's dtype. (On the GPU the cast rounds
    # to nearest even; Triton 3.6's interpreter truncates to bfloat16, so
    # interpreter bfloat16 results may sit 1 ulp below the GPU's.)
    tl.store(ptrs, value.to(ptrs.dtype.element_ty), mask=mask)


@triton.jit
def _clip_huge(x):
    # |x| <= 1e30 keeps beta * x finite for any sane beta; sigmoid(beta * x)
    # has saturated long before (NaN stays: it fails both tests)
    return tl.where(x > 1e30, 1e30, tl.where(x < -1e30, -1e30, x))


@triton.jit
def _clip_saturated(x):
    # a clamp that keeps NaN (tl.clamp / tl.minimum may drop it)
    return tl.where(x > SATURATED, SATURATED, tl.where(x < -SATURATED, -SATURATED, x))


@triton.jit
def _activate(x, param, ACT: tl.constexpr):
    """y = act(x) in float32."""
    if ACT == RELU:
        y = tl.where((x > 0) | (x != x), x, 0.0)  # x != x keeps NaN, as torch.relu does
    elif ACT == LEAKY_RELU:
        y = tl.where(x > 0, x, x * param)
    elif ACT == SIGMOID:
        y = _sigmoid(x)
    elif ACT == TANH:
        y = _tanh(x)
    elif ACT == TANH_16BIT:
        y = _tanh_16bit(x)
    elif ACT == GELU:
        y = 0.5 * x * (1.0 + tl.math.erf(x * SQRT1_2))
    elif ACT == GELU_TANH:
        y = x * _gelu_tanh_gate(_clip_saturated(x), False)
    elif ACT == GELU_TANH_16BIT:
        y = x * _gelu_tanh_gate(x, True)
    elif ACT == GELU_ERFC:
        y = x * _gauss_cdf(x)
    elif ACT == SWISH_16BIT:  # (no clip: an overflowing beta * x meets 1 / (1 + inf) = 0, not NaN)
        y = x * _logistic_log2(x * (param * LOG2E))
    else:  # SWISH
        y = x * _sigmoid(_clip_huge(x) * param)
    return y


# "no activation": the fused norms' ACT when the layer has none
IDENTITY = tl.constexpr(-1)


@triton.jit
def _act(z, param, ACT: tl.constexpr):
    """_activate, or z itself for IDENTITY."""
    if ACT == IDENTITY:
        return z
    else:
        return _activate(z, param, ACT)


@triton.jit
def _act_grad(dy, z, param, ACT: tl.constexpr):
    """dy * act'(z) from the pre-activation z (recomputed, never saved)."""
    if ACT == IDENTITY:
        return dy
    elif ACT == RELU:  # as torch's threshold_backward on y = relu(z): NaN passes dy
        return tl.where(z <= 0, 0.0, dy)
    elif ACT == LEAKY_RELU:
        return tl.where(z > 0, dy, dy * param)
    else:  # the GELUs and Swish take the input
        return _activate_grad(dy, z, param, ACT)


@triton.jit
def _activate_grad(dy, saved, param, ACT: tl.constexpr):
    """dx in float32 from dy and what forward saved (see the module docstring)."""
    if ACT == RELU:  # saved: y; NaN passes dy through, as PyTorch's threshold_backward
        dx = tl.where(saved <= 0, 0.0, dy)
    elif ACT == LEAKY_RELU:  # saved: y (slope >= 0) or the mask [x > 0]
        dx = tl.where(saved > 0, dy, dy * param)
    elif ACT == SIGMOID:  # saved: y
        dx = dy * saved * (1.0 - saved)
    elif (ACT == TANH) or (ACT == TANH_16BIT):  # saved: y
        dx = dy * (1.0 - saved * saved)
    elif ACT == GELU:  # saved: x
        xc = _clip_saturated(saved)
        cdf = 0.5 * (1.0 + tl.math.erf(saved * SQRT1_2))
        pdf = INV_SQRT_2PI * tl.exp(-0.5 * xc * xc)
        dx = dy * (cdf + saved * pdf)
    elif ACT == GELU_ERFC:  # saved: x
        xc = _clip_saturated(saved)
        dx = dy * (_gauss_cdf(saved) + saved * (INV_SQRT_2PI * tl.exp2(xc * xc * (-0.5 * LOG2E))))
    elif (ACT == GELU_TANH) or (ACT == GELU_TANH_16BIT):
        # saved: x; with s = sigmoid(2u): (1 + t) / 2 = s, (1 - t^2) / 2 = 2 s (1 - s)
        xc = _clip_saturated(saved)
        s = _gelu_tanh_gate(xc, ACT == GELU_TANH_16BIT)
        du = GELU_TANH_SCALE * (1.0 + 3.0 * GELU_TANH_CUBIC * xc * xc)
        dx = dy * (s + saved * (2.0 * s * (1.0 - s) * du))  # s (1 - s) is 0 where saturated: no inf * 0
    else:  # SWISH, SWISH_16BIT, saved: x; beta*s*(1-s) first so a huge x meets 0, not inf*0
        if ACT == SWISH_16BIT:
            s = _logistic_log2(saved * (param * LOG2E))
        else:
            s = _sigmoid(_clip_huge(saved) * param)
        dx = dy * (s + (param * s * (1.0 - s)) * saved)
    return dx


# --- the elementwise kernels --------------------------------------------------

@triton.jit
def _activation_forward_kernel(
    x_ptr,  # input, n elements
    y_ptr,  # output, n elements, same layout as x
    mask_ptr,  # uint8 [x > 0], n elements; written only when WRITE_MASK
    n,
    param,  # float: LeakyReLU's slope or Swish's beta
    ACT: tl.constexpr,
    WRITE_MASK: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    x = tl.load(x_ptr + offs, mask=inside, other=0.0).to(tl.float32)
    y = _activate(x, param, ACT)
    _store(y_ptr + offs, y, inside)
    if WRITE_MASK:
        tl.store(mask_ptr + offs, (x > 0).to(tl.uint8), mask=inside)


@triton.jit
def _activation_backward_kernel(
    dy_ptr,  # upstream gradient, n elements
    saved_ptr,  # what forward saved (y, x or a uint8 mask), n elements
    dx_ptr,  # input gradient, n elements
    n,
    param,
    ACT: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    dy = tl.load(dy_ptr + offs, mask=inside, other=0.0).to(tl.float32)
    saved = tl.load(saved_ptr + offs, mask=inside, other=0).to(tl.float32)
    dx = _activate_grad(dy, saved, param, ACT)
    _store(dx_ptr + offs, dx, inside)


def forward_warps(act_id: int) -> int:
    """Warps for a forward program of elementwise_block elements (the
    activations', bias_act's): the float32 erf-GELU (libdevice's erff, ~40
    instructions an element) keeps up with the copy only with two vectors a
    thread, so half the warps. On an H200: activation forward 4118 GB/s on 4
    warps, 4014 on 8, eager 4113 (probe_activation_forms.py); bias + GELU
    32768x4096 4211 on 4, 3900 on 8, torch.compile 4195
    (probe_cache_hints.py). Its backward was not measured that way: 8 warps
    stay."""
    return ELEMENTWISE_WARPS // 2 if act_id == GELU.value else ELEMENTWISE_WARPS


def activation_forward(x: torch.Tensor, act, param: float = 0.0, write_mask: bool = False, out=None):
    """y = act(x) in x's memory format; with write_mask also the uint8 mask
    [x > 0]. ``out=x`` writes y over x (each element is read before it is
    written, by the same thread); a non-dense ``out`` gets a copy."""
    if out is not None and not is_dense(out):
        result = activation_forward(x, act, param, write_mask)
        out.copy_(result[0] if write_mask else result)
        return (out, result[1]) if write_mask else out
    x = x if out is x else dense(x)  # (out is dense by now: asked once, host time)
    y = torch.empty_like(x) if out is None else out
    mask = torch.empty_like(x, dtype=torch.uint8) if write_mask else x
    n = x.numel()
    if n:
        block = elementwise_block(x.element_size())
        _activation_forward_kernel[elementwise_grid(n, block)](
            x, y, mask, n, float(param), ACT=act.value, WRITE_MASK=write_mask,
            BLOCK=block, num_warps=forward_warps(act.value))
    return (y, mask) if write_mask else y


def activation_backward(dy: torch.Tensor, saved: torch.Tensor, act, param: float = 0.0,
                        dy_first: bool = False) -> torch.Tensor:
    """dx from dy and what forward saved, in dy's dtype and in the layout
    PyTorch's backward gives it (lamina.layout): led by saved (ReLU,
    LeakyReLU) or, with ``dy_first``, by dy (Sigmoid, Tanh, GELU, SiLU)."""
    if dy.stride() == saved.stride() and is_dense(saved):  # one dense layout: the common case (host time)
        dx = torch.empty_like(saved, dtype=dy.dtype)
    else:
        dx = empty_result((dy, saved) if dy_first else (saved, dy), dy.dtype)
        saved = same_layout(saved, dx)
        dy = same_layout(dy, dx)
    n = saved.numel()
    if n:
        block = elementwise_block(dx.element_size())
        _activation_backward_kernel[elementwise_grid(n, block)](
            dy, saved, dx, n, float(param), ACT=act.value, BLOCK=block, num_warps=ELEMENTWISE_WARPS)
    return dx


# activation_inplace's name -> (kernel id, its fixed param or None: the caller's)
_INPLACE_ACTS = {"relu": (RELU, 0.0), "leaky_relu": (LEAKY_RELU, None), "silu": (SWISH, 1.0)}


def activation_inplace(x: torch.Tensor, name: str, param: float = 0.0) -> None:
    """x <- act(x) for the activations with an in-place form (relu, leaky_relu
    with param = negative_slope, silu)."""
    act, fixed = _INPLACE_ACTS[name]  # a constant table, not a dict built a call (host time)
    activation_forward(x, act, param if fixed is None else fixed, out=x)


# --- the launchers, one pair per activation -----------------------------------

def relu_forward(x):
    return activation_forward(x, RELU)


def relu_backward(dy, y):
    return activation_backward(dy, y, RELU)


def leaky_relu_forward(x, negative_slope):
    """(y, mask): the uint8 mask [x > 0] for a negative slope, else an empty
    tensor (backward then reads [x > 0] from y itself)."""
    if negative_slope >= 0:
        return activation_forward(x, LEAKY_RELU, negative_slope), x.new_empty((0,), dtype=torch.uint8)
    return activation_forward(x, LEAKY_RELU, negative_slope, write_mask=True)


def leaky_relu_backward(dy, saved, negative_slope):
    return activation_backward(dy, saved, LEAKY_RELU, negative_slope)


def sigmoid_forward(x):
    return activation_forward(x, SIGMOID)


def sigmoid_backward(dy, y):
    return activation_backward(dy, y, SIGMOID, dy_first=True)


def _sixteen_bit(dtype: torch.dtype) -> bool:
    """The short 16-bit forms (TANH_16BIT, GELU_ERFC, GELU_TANH_16BIT, SWISH_16BIT) apply."""
    return dtype in (torch.float16, torch.bfloat16)


def tanh_forward(x):
    return activation_forward(x, TANH_16BIT if _sixteen_bit(x.dtype) else TANH)


def tanh_backward(dy, y):
    return activation_backward(dy, y, TANH, dy_first=True)


def gelu_id(approximate: str, dtype: torch.dtype):
    """The kernel id of GELU: the tanh form (its short sigmoid for 16-bit
    tensors, GELU_TANH_16BIT), or the erf form (erfc's exponential form for
    16-bit tensors, GELU_ERFC)."""
    sixteen = _sixteen_bit(dtype)
    if approximate == "tanh":
        return GELU_TANH_16BIT if sixteen else GELU_TANH
    return GELU_ERFC if sixteen else GELU


def gelu_forward(x, approximate="none"):
    return activation_forward(x, gelu_id(approximate, x.dtype))


def gelu_backward(dy, x, approximate="none"):
    return activation_backward(dy, x, gelu_id(approximate, x.dtype), dy_first=True)


def swish_id(dtype: torch.dtype):
    """The kernel id of Swish/SiLU: the short sigmoid for 16-bit tensors (SWISH_16BIT)."""
    return SWISH_16BIT if _sixteen_bit(dtype) else SWISH


def swish_forward(x, beta=1.0):
    return activation_forward(x, swish_id(x.dtype), beta)


def swish_backward(dy, x, beta=1.0):
    return activation_backward(dy, x, swish_id(x.dtype), beta, dy_first=True)


def silu_forward(x):
    return swish_forward(x, 1.0)


def silu_backward(dy, x):
    return swish_backward(dy, x, 1.0)


# --- PReLU -----------------------------------------------------------------------

PRELU_TILE = 4096  # elements a backward program (the forward's: one 16-byte vector a thread, elementwise_block)


@triton.jit
def _prelu_tile(pid, R, K, C, n_k_blocks, CHANNEL_ON_ROWS: tl.constexpr,
                BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, w_ptr):
    """Offsets, bounds mask and broadcast slope of this program's tile."""
    rb = pid // n_k_blocks
    kb = pid % n_k_blocks
    rows = rb * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = kb * BLOCK_K + tl.arange(0, BLOCK_K)
    offs = rows.to(tl.int64)[:, None] * K + cols[None, :]
    inside = (rows < R)[:, None] & (cols < K)[None, :]
    if CHANNEL_ON_ROWS:
        a = tl.load(w_ptr + rows % C, mask=rows < R, other=0.0).to(tl.float32)[:, None]
    else:
        a = tl.load(w_ptr + cols, mask=cols < K, other=0.0).to(tl.float32)[None, :]
    return rows, cols, offs, inside, a


@triton.jit
def _prelu_forward_kernel(
    x_ptr,  # input, seen as a row-major (R, K) matrix
    w_ptr,  # weight, (C,)
    y_ptr,  # output, (R, K) like x
    R, K, C, n_k_blocks,
    CHANNEL_ON_ROWS: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    rows, cols, offs, inside, a = _prelu_tile(tl.program_id(0), R, K, C, n_k_blocks,
                                              CHANNEL_ON_ROWS, BLOCK_R, BLOCK_K, w_ptr)
    x = tl.load(x_ptr + offs, mask=inside, other=0.0, eviction_policy="evict_last").to(tl.float32)
    y = tl.where(x > 0, x, a * x)
    _store(y_ptr + offs, y, inside)


@triton.jit
def _prelu_backward_kernel(
    dy_ptr,  # upstream gradient, (R, K) like x
    x_ptr,  # forward input, (R, K)
    w_ptr,  # weight, (C,)
    dx_ptr,  # input gradient, (R, K)
    partial_ptr,  # float32 d(weight) partials: (R, n_k_blocks) on rows, (n_r_blocks, K) on columns
    R, K, C, n_k_blocks,
    CHANNEL_ON_ROWS: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    rows, cols, offs, inside, a = _prelu_tile(pid, R, K, C, n_k_blocks,
                                              CHANNEL_ON_ROWS, BLOCK_R, BLOCK_K, w_ptr)
    dy = tl.load(dy_ptr + offs, mask=inside, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + offs, mask=inside, other=0.0).to(tl.float32)
    positive = x > 0
    _store(dx_ptr + offs, tl.where(positive, dy, a * dy), inside)
    contribution = tl.where(positive, 0.0, dy * x)  # 0 outside the tile: x = dy = 0 there
    if CHANNEL_ON_ROWS:
        tl.store(partial_ptr + rows.to(tl.int64) * n_k_blocks + pid % n_k_blocks,
                 tl.sum(contribution, axis=1), mask=rows < R)
    else:
        tl.store(partial_ptr + (pid // n_k_blocks).to(tl.int64) * K + cols,
                 tl.sum(contribution, axis=0), mask=cols < K)


def _prelu_plan(x: torch.Tensor, num_weights: int):
    """x (dense) and its (R, K) matrix view: (x, R, K, C, channel_on_rows).

    One weight: every element has channel 0 (R = 1, K = numel). Channel dim
    innermost in memory (channels_last, or (N, C)): channel = column, K = C.
    Otherwise the contiguous (N, C, *) layout: channel = row % C, K = prod(*).
    """
    n = x.numel()
    if num_weights == 1 or n == 0:
        return dense(x), 1, n, 1, True
    C = x.shape[1]
    if is_dense(x) and x.stride(1) == 1:
        return x, n // C, C, C, False
    x = x.contiguous()
    R = x.shape[0] * C
    return x, R, n // R, C, True


def _prelu_blocks(R, K, tile=PRELU_TILE):
    block_k = min(next_power_of_2(K), tile)
    block_r = min(max(1, tile // block_k), next_power_of_2(R))
    return block_r, block_k, cdiv(K, block_k), cdiv(R, block_r)


def prelu_forward(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """y in the layout PyTorch gives it (lamina.layout): where the plan walks
    a copy of x in another layout, y is copied back."""
    original = x
    x, R, K, C, on_rows = _prelu_plan(x, weight.numel())
    y = torch.empty_like(x)
    if x.numel():
        # (float32 64x64x128x128 on an H200, probe_cache_hints.py: 4096-element
        # tiles 3915 GB/s, 1024 4134, 1024 with evict_last loads 4219;
        # torch.compile 4129)
        block_r, block_k, n_k, n_r = _prelu_blocks(R, K, elementwise_block(x.element_size()))
        _prelu_forward_kernel[(n_r * n_k,)](
            x, weight.contiguous(), y, R, K, C, n_k, CHANNEL_ON_ROWS=on_rows,
            BLOCK_R=block_r, BLOCK_K=block_k, num_warps=ELEMENTWISE_WARPS)
    return y if x is original else in_result_layout(y, (original,))


def prelu_backward(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor):
    """(dx, dweight); dweight has weight's shape and dtype, dx the layout
    PyTorch's backward gives it (led by x, then dy)."""
    original = (x, dy)
    x, R, K, C, on_rows = _prelu_plan(x, weight.numel())
    dy = same_layout(dy, x)
    dx = torch.empty_like(x, dtype=dy.dtype)
    if not x.numel():
        return dx, torch.zeros_like(weight)
    block_r, block_k, n_k, n_r = _prelu_blocks(R, K)
    partial = torch.empty((R, n_k) if on_rows else (n_r, K), device=x.device, dtype=torch.float32)
    _prelu_backward_kernel[(n_r * n_k,)](
        dy, x, weight.contiguous(), dx, partial, R, K, C, n_k, CHANNEL_ON_ROWS=on_rows,
        BLOCK_R=block_r, BLOCK_K=block_k, num_warps=ELEMENTWISE_WARPS)
    if on_rows:  # row r = (outer, channel r % C): sum over outer and the k blocks
        dweight = partial.view(R // C, C, n_k).sum(dim=(0, 2))
    else:
        dweight = partial.sum(dim=0)
    if x is not original[0] or dy is not original[1]:  # copies were walked
        dx = in_result_layout(dx, original)
    return dx, dweight.reshape(weight.shape).to(weight.dtype)
