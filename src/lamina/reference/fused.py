"""Fused layers in NumPy: each one the composition of lamina's unfused
reference ops, so the fused kernels have an oracle that is correct by
construction.

    batch_norm_act   z = batch_norm(x), y = act(z)
    group_norm_act   z = group_norm(x), y = act(z)
    add_layer_norm   s = dropout(x) + residual, y = layer_norm(s)
    add_rms_norm     s = dropout(x) + residual, y = rms_norm(s)
    bias_act         y = act(x + bias), bias over the last dim
    dropout_add      y = dropout(x) + residual

The activations ``act`` are ``relu``, ``leaky_relu``, ``silu``, ``gelu``
(``approximate`` 'none' or 'tanh') and ``identity``.

One piece is new math rather than composition: the backward of the in-place
batch-norm + activation (In-Place Activated BatchNorm, Rota Bulo et al.,
CVPR 2018), which keeps only the output y and recovers
``xhat = (act^-1(y) - bias) / weight`` from it. It needs an invertible
activation (``identity``, ``leaky_relu`` with a positive slope) and a weight
with no zero entry.

NumPy only.
"""

from __future__ import annotations

import numpy as np

from . import activation, dropout, normalization

ACTIVATIONS = ("relu", "leaky_relu", "silu", "gelu", "identity")
INVERTIBLE = ("leaky_relu", "identity")  # (leaky_relu with a positive slope)


# --- the activation of a fused layer -------------------------------------------

def act_forward(z: np.ndarray, act: str, negative_slope: float = 0.01, approximate: str = "none"):
    """y = act(z) through lamina's reference activations; returns (y, cache)."""
    if act == "identity":
        return z, ("identity",)
    if act == "relu":
        y, cache = activation.relu_forward(z)
    elif act == "leaky_relu":
        y, cache = activation.leaky_relu_forward(z, negative_slope)
    elif act == "silu":
        y, cache = activation.silu_forward(z)
    elif act == "gelu":
        y, cache = activation.gelu_forward(z, approximate)
    else:
        raise ValueError(f"act must be one of {ACTIVATIONS}, got {act!r}")
    return y, (act, cache)


def act_backward(dy: np.ndarray, cache) -> np.ndarray:
    """dz = dy * act'(z)."""
    if cache[0] == "identity":
        return dy
    act, inner = cache
    return getattr(activation, f"{act}_backward")(dy, inner)


# --- batch norm + activation -----------------------------------------------------

def batch_norm_act_forward(x, weight=None, bias=None, running_mean=None, running_var=None, training=True,
                           eps=1e-5, act="relu", negative_slope=0.01):
    """y = act(batch_norm(x)). Returns (y, cache); cache = (batch-norm cache,
    activation cache). The batch statistics are cache[0][2] (mean) and
    cache[0][3] (rstd)."""
    z, bn_cache = normalization.batch_norm_forward(x, weight, bias, running_mean, running_var, training, eps)
    y, act_cache = act_forward(z, act, negative_slope)
    return y, (bn_cache, act_cache)


def batch_norm_act_backward(dy, cache):
    """(dx, dweight, dbias): dz = dy * act'(z), then batch norm's backward."""
    bn_cache, act_cache = cache
    return normalization.batch_norm_backward(act_backward(dy, act_cache), bn_cache)


def _inverse_act(y, act, negative_slope):
    """(z, act'(z)): the activation input recovered from y, and the slope
    of act there, read from the sign of y."""
    if act == "identity":
        return y, np.ones((), y.dtype)
    # leaky_relu, slope > 0: sign(y) = sign(z)
    z = np.where(y >= 0, y, y / np.asarray(negative_slope, y.dtype))
    slope = np.where(y > 0, np.ones((), y.dtype), np.asarray(negative_slope, y.dtype))
    return z, slope


def batch_norm_act_backward_from_output(dy, y, weight, bias, mean, rstd, training, act="leaky_relu",
                                        negative_slope=0.01):
    """Backward of y = act(z), z = xhat * weight + bias, from y alone (in place):

        z    = act^-1(y),   dz = dy * act'(z)   (act' read from the sign of y)
        xhat = (z - bias) / weight
        dbias = sum(dz),    dweight = sum(dz * xhat)                 per channel
        training:  dx = weight * rstd / M * (M dz - sum(dz) - xhat * sum(dz * xhat))
        eval:      dx = weight * rstd * dz

    ``mean`` is not needed (xhat comes from y); it is accepted so the
    signature matches the saved statistics. Returns (dx, dweight, dbias)."""
    sdt = rstd.dtype
    nd = y.ndim
    ys = y.astype(sdt, copy=False)
    z, slope = _inverse_act(ys, act, negative_slope)
    dz = dy.astype(sdt, copy=False) * slope
    per_channel = normalization._per_channel
    if bias is not None:
        z = z - per_channel(bias.astype(sdt), nd)
    xhat = z if weight is None else z / per_channel(weight.astype(sdt), nd)
    axes = normalization._channel_axes(y)
    sum_dz, sum_dz_xhat = dz.sum(axis=axes), (dz * xhat).sum(axis=axes)
    g = rstd if weight is None else rstd * weight.astype(sdt)
    if training:
        m = y.size // max(y.shape[1], 1)
        dx = per_channel(g / m, nd) * (m * dz - per_channel(sum_dz, nd) - xhat * per_channel(sum_dz_xhat, nd))
    else:
        dx = per_channel(g, nd) * dz
    return dx.astype(y.dtype, copy=False), sum_dz_xhat, sum_dz


# --- group norm + activation -----------------------------------------------------

def group_norm_act_forward(x, num_groups, weight=None, bias=None, eps=1e-5, act="silu", negative_slope=0.01):
    """y = act(group_norm(x)). Returns (y, cache); the group statistics are
    cache[0][1] (mean) and cache[0][2] (rstd), shaped (N, G)."""
    z, gn_cache = normalization.group_norm_forward(x, num_groups, weight, bias, eps)
    y, act_cache = act_forward(z, act, negative_slope)
    return y, (gn_cache, act_cache)


def group_norm_act_backward(dy, cache):
    """(dx, dweight, dbias): dz = dy * act'(z), then group norm's backward."""
    gn_cache, act_cache = cache
    return normalization.group_norm_backward(act_backward(dy, act_cache), gn_cache)


# --- residual add (+ dropout) + layer / RMS norm ------------------------------------

def dropout_add_forward(x, residual, p, seed, offset=0):
    """y = dropout(x) + residual (dropout's mask along x's memory order).
    Returns (y, cache); backward regenerates the mask: the cache is
    (p, seed, offset)."""
    if p == 0:
        return x + residual, (0.0, seed, offset)
    xd, cache = dropout.dropout_forward(x, p, seed, offset)
    return xd + residual, cache


def dropout_add_backward(dy, cache):
    """(dx, dresidual) = (dropout's backward of dy, dy)."""
    p = cache[0]
    return (dy if p == 0 else dropout.dropout_backward(dy, cache)), dy


def add_layer_norm_forward(x, residual, normalized_shape, weight=None, bias=None, eps=1e-5, p=0.0, seed=0):
    """s = dropout(x) + residual,  y = layer_norm(s). Returns (y, s, cache)."""
    s, drop_cache = dropout_add_forward(x, residual, p, seed)
    y, ln_cache = normalization.layer_norm_forward(s, normalized_shape, weight, bias, eps)
    return y, s, (drop_cache, ln_cache)


def add_layer_norm_backward(dy, cache, ds=None):
    """(dx, dresidual, dweight, dbias); ``ds`` the gradient that reaches s
    directly (prenorm: s is also an output)."""
    drop_cache, ln_cache = cache
    dsum, dweight, dbias = normalization.layer_norm_backward(dy, ln_cache)
    if ds is not None:
        dsum = dsum + ds
    dx, dres = dropout_add_backward(dsum, drop_cache)
    return dx, dres, dweight, dbias


def add_rms_norm_forward(x, residual, normalized_shape, weight=None, eps=None, p=0.0, seed=0):
    """s = dropout(x) + residual,  y = rms_norm(s). Returns (y, s, cache)."""
    s, drop_cache = dropout_add_forward(x, residual, p, seed)
    y, rms_cache = normalization.rms_norm_forward(s, normalized_shape, weight, eps)
    return y, s, (drop_cache, rms_cache)


def add_rms_norm_backward(dy, cache, ds=None):
    """(dx, dresidual, dweight)."""
    drop_cache, rms_cache = cache
    dsum, dweight = normalization.rms_norm_backward(dy, rms_cache)
    if ds is not None:
        dsum = dsum + ds
    dx, dres = dropout_add_backward(dsum, drop_cache)
    return dx, dres, dweight


# --- bias + activation -------------------------------------------------------------

def bias_act_forward(x, bias, act="gelu", approximate="none"):
    """y = act(x + bias), bias (N,) added along the last dim (after a Linear)."""
    y, act_cache = act_forward(x + bias, act, approximate=approximate)
    return y, act_cache


def bias_act_backward(dy, cache):
    """(dx, dbias): dx = dy * act'(x + bias), dbias = dx summed over every
    dim but the last."""
    dx = act_backward(dy, cache)
    return dx, dx.reshape(-1, dx.shape[-1]).sum(axis=0) if dx.ndim else dx
