"""Normalization layers: forward and backward in NumPy, the formula beside the code.

Statistics are computed in float32 at least (float64 for float64 input), the
variance by two passes (mean first, then the mean of squared deviations), so a
large mean does not cancel the spread.
"""

from __future__ import annotations

import numpy as np

from .layer import Layer


# =============================================================================
# batch and instance norm
# =============================================================================


# =============================================================================
# layer, RMS and group norm
# =============================================================================
#
# The three share one shape of computation: statistics over a set of elements
# (the trailing normalized_shape dims of a row, or one (sample, group) slice),
# then a per-element affine map. The cache of each forward holds the input,
# its float32 (float64 for float64 input) statistics, the weight and whether
# there was a bias: backward rebuilds xhat from them, so the same cache can be
# made from the tensors that lamina.functional saves.
# (_rn_ marks this section's private helpers, so that they cannot collide
# with the batch/instance norm section's names in the same module.)

def _rn_stat_dtype(x: np.ndarray):
    """float64 statistics for float64 input, float32 for everything else."""
    return np.float64 if x.dtype == np.float64 else np.float32


def _rn_safe_mean(a: np.ndarray, axes) -> np.ndarray:
    """mean over ``axes`` keeping them; NaN (no warning) where they are empty."""
    count = int(np.prod([a.shape[i] for i in axes]))
    return np.sum(a, axis=axes, keepdims=True) / (count if count else np.nan)


def _rn_trailing_axes(x: np.ndarray, n: int):
    return tuple(range(x.ndim - n, x.ndim))


def _rn_normalized_backward(g: np.ndarray, xhat: np.ndarray, rstd: np.ndarray, axes, center: bool):
    """dx of xhat = (x - mean) * rstd (center=True) or xhat = x * rstd, given
    g = dL/dxhat, with the statistics taken over ``axes``:

        center:  dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
        else:    dx = rstd * (g - xhat * mean(g * xhat))
    """
    dx = g - xhat * np.mean(g * xhat, axis=axes, keepdims=True)
    if center:
        dx = dx - np.mean(g, axis=axes, keepdims=True)
    return rstd * dx


def _rn_param_grads(dy, xhat, weight, has_bias, reduce_axes, param_shape):
    """dweight = sum(dy * xhat), dbias = sum(dy) over every axis but the
    parameter's; None where there is no such parameter."""
    dweight = None if weight is None else np.sum(dy * xhat, axis=reduce_axes).reshape(param_shape).astype(weight.dtype)
    dbias = np.sum(dy, axis=reduce_axes).reshape(param_shape).astype(dy.dtype) if has_bias else None
    return dweight, dbias


# --- LayerNorm ---------------------------------------------------------------

def layer_norm_forward(x: np.ndarray, normalized_shape, weight=None, bias=None, eps: float = 1e-5):
    """Layer normalization over the trailing ``len(normalized_shape)`` dims:

        mean = mean(x),  var = mean((x - mean)^2)   (biased, two passes)
        xhat = (x - mean) / sqrt(var + eps)
        y    = xhat * weight + bias                 (weight, bias optional)

    Returns ``y`` and the cache ``(x, mean, rstd, weight, has_bias, ndim)``;
    ``mean`` and ``rstd`` keep the reduced dims (size 1).
    """
    ndim = len(tuple(normalized_shape))
    axes = _rn_trailing_axes(x, ndim)
    xs = x.astype(_rn_stat_dtype(x))
    with np.errstate(invalid="ignore", divide="ignore"):  # empty rows give NaN, as in torch
        mean = _rn_safe_mean(xs, axes)
        var = _rn_safe_mean((xs - mean) ** 2, axes)
        rstd = 1.0 / np.sqrt(var + eps)
    xhat = (xs - mean) * rstd
    y = xhat
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y.astype(x.dtype), (x, mean, rstd, weight, bias is not None, ndim)


def layer_norm_backward(dy: np.ndarray, cache):
    """With g = dy * weight and means over the normalized dims:

        dx      = rstd * (g - mean(g) - xhat * mean(g * xhat))
        dweight = sum over the leading dims of dy * xhat
        dbias   = sum over the leading dims of dy

    Returns ``(dx, dweight, dbias)``, None for a missing weight or bias.
    """
    x, mean, rstd, weight, has_bias, ndim = cache
    axes = _rn_trailing_axes(x, ndim)
    xhat = (x.astype(mean.dtype) - mean) * rstd
    dys = dy.astype(mean.dtype)
    g = dys if weight is None else dys * weight
    dx = _rn_normalized_backward(g, xhat, rstd, axes, center=True) if x.size else np.zeros_like(xhat)
    lead = tuple(range(x.ndim - ndim))
    dweight, dbias = _rn_param_grads(dys, xhat, weight, has_bias, lead, x.shape[x.ndim - ndim:])
    return dx.astype(x.dtype), dweight, dbias


class LayerNorm(Layer):
    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True, dtype=np.float32):
        super().__init__()
        self.normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.eps = eps
        if elementwise_affine:
            self.params["weight"] = np.ones(self.normalized_shape, dtype)
            if bias:
                self.params["bias"] = np.zeros(self.normalized_shape, dtype)

    def forward(self, x):
        y, self._cache = layer_norm_forward(x, self.normalized_shape, self.params.get("weight"), self.params.get("bias"), self.eps)
        return y

    def backward(self, dy):
        dx, dweight, dbias = layer_norm_backward(dy, self._need_cache())
        self.grads = {k: v for k, v in (("weight", dweight), ("bias", dbias)) if v is not None}
        return dx


# --- RMSNorm -----------------------------------------------------------------

def rms_eps(dtype, eps=None) -> float:
    """eps=None means the machine epsilon of the computation dtype, as in
    torch.nn.functional.rms_norm: float64's for float64 input, float32's for
    float32, float16 and bfloat16 (all computed in float32)."""
    if eps is not None:
        return eps
    return float(np.finfo(np.float64 if dtype == np.float64 else np.float32).eps)


def rms_norm_forward(x: np.ndarray, normalized_shape, weight=None, eps=None):
    """Root-mean-square normalization over the trailing dims (no centering):

        rstd = 1 / sqrt(mean(x^2) + eps)
        y    = x * rstd * weight                   (weight optional)

    Returns ``y`` and the cache ``(x, rstd, weight, ndim)``.
    """
    ndim = len(tuple(normalized_shape))
    axes = _rn_trailing_axes(x, ndim)
    xs = x.astype(_rn_stat_dtype(x))
    with np.errstate(invalid="ignore", divide="ignore"):
        rstd = 1.0 / np.sqrt(_rn_safe_mean(xs * xs, axes) + rms_eps(x.dtype, eps))
    y = xs * rstd
    if weight is not None:
        y = y * weight
    return y.astype(x.dtype), (x, rstd, weight, ndim)


def rms_norm_backward(dy: np.ndarray, cache):
    """With g = dy * weight, xhat = x * rstd and means over the normalized dims:

        dx      = rstd * (g - xhat * mean(g * xhat))
        dweight = sum over the leading dims of dy * xhat

    Returns ``(dx, dweight)``, dweight None without a weight.
    """
    x, rstd, weight, ndim = cache
    axes = _rn_trailing_axes(x, ndim)
    xhat = x.astype(rstd.dtype) * rstd
    dys = dy.astype(rstd.dtype)
    g = dys if weight is None else dys * weight
    dx = _rn_normalized_backward(g, xhat, rstd, axes, center=False) if x.size else np.zeros_like(xhat)
    lead = tuple(range(x.ndim - ndim))
    dweight, _ = _rn_param_grads(dys, xhat, weight, False, lead, x.shape[x.ndim - ndim:])
    return dx.astype(x.dtype), dweight


class RMSNorm(Layer):
    def __init__(self, normalized_shape, eps=None, elementwise_affine: bool = True, dtype=np.float32):
        super().__init__()
        self.normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.eps = eps
        if elementwise_affine:
            self.params["weight"] = np.ones(self.normalized_shape, dtype)

    def forward(self, x):
        y, self._cache = rms_norm_forward(x, self.normalized_shape, self.params.get("weight"), self.eps)
        return y

    def backward(self, dy):
        dx, dweight = rms_norm_backward(dy, self._need_cache())
        self.grads = {} if dweight is None else {"weight": dweight}
        return dx


# --- GroupNorm ---------------------------------------------------------------

def _rn_grouped(a: np.ndarray, num_groups: int) -> np.ndarray:
    """(N, C, *S) -> (N, G, C/G * prod(S)): one row per (sample, group)."""
    return a.reshape(a.shape[0], num_groups, a.shape[1] // num_groups * int(np.prod(a.shape[2:])))


def group_norm_forward(x: np.ndarray, num_groups: int, weight=None, bias=None, eps: float = 1e-5):
    """Group normalization of x (N, C, *S): the C channels split into G groups
    of C/G; each (sample, group) slice of C/G * prod(S) elements is
    normalized by its own statistics, then a per-channel affine map:

        mean = mean(x[n, g]),  var = mean((x[n, g] - mean)^2)
        y[n, c] = (x[n, c] - mean[n, g(c)]) * rstd[n, g(c)] * weight[c] + bias[c]

    Returns ``y`` and the cache ``(x, mean, rstd, weight, has_bias)``, with
    ``mean`` and ``rstd`` of shape (N, G).
    """
    xs = _rn_grouped(x.astype(_rn_stat_dtype(x)), num_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = _rn_safe_mean(xs, (2,))
        var = _rn_safe_mean((xs - mean) ** 2, (2,))
        rstd = 1.0 / np.sqrt(var + eps)
    xhat = ((xs - mean) * rstd).reshape(x.shape)
    channel = (1, -1) + (1,) * (x.ndim - 2)  # broadcast a (C,) vector over (N, C, *S)
    y = xhat
    if weight is not None:
        y = y * weight.reshape(channel)
    if bias is not None:
        y = y + bias.reshape(channel)
    return y.astype(x.dtype), (x, mean[..., 0], rstd[..., 0], weight, bias is not None)


def group_norm_backward(dy: np.ndarray, cache):
    """With g = dy * weight[c] and means over each (sample, group) slice:

        dx      = rstd * (g - mean(g) - xhat * mean(g * xhat))
        dweight = sum over (N, *S) of dy * xhat,   dbias = sum over (N, *S) of dy

    Returns ``(dx, dweight, dbias)``, None for a missing weight or bias.
    """
    x, mean, rstd, weight, has_bias = cache
    num_groups = mean.shape[1]
    stat = mean.dtype
    mean, rstd = mean[..., None], rstd[..., None]
    xhat = (_rn_grouped(x.astype(stat), num_groups) - mean) * rstd
    channel = (1, -1) + (1,) * (x.ndim - 2)
    dys = dy.astype(stat)
    g = dys if weight is None else dys * weight.reshape(channel)
    if x.size:
        dx = _rn_normalized_backward(_rn_grouped(g, num_groups), xhat, rstd, (2,), center=True).reshape(x.shape)
    else:
        dx = np.zeros(x.shape, stat)
    reduce_axes = (0,) + tuple(range(2, x.ndim))
    dweight, dbias = _rn_param_grads(dys, xhat.reshape(x.shape), weight, has_bias, reduce_axes, (x.shape[1],))
    return dx.astype(x.dtype), dweight, dbias


class GroupNorm(Layer):
    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True, dtype=np.float32):
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"num_channels ({num_channels}) must be divisible by num_groups ({num_groups})")
        self.num_groups, self.eps = num_groups, eps
        if affine:
            self.params["weight"] = np.ones(num_channels, dtype)
            self.params["bias"] = np.zeros(num_channels, dtype)

    def forward(self, x):
        y, self._cache = group_norm_forward(x, self.num_groups, self.params.get("weight"), self.params.get("bias"), self.eps)
        return y

    def backward(self, dy):
        dx, dweight, dbias = group_norm_backward(dy, self._need_cache())
        self.grads = {k: v for k, v in (("weight", dweight), ("bias", dbias)) if v is not None}
        return dx

