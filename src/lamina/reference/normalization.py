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

# Batch norm normalizes each channel (dimension 1) over every other dimension:
# an input (N, C, *) has M = N * prod(*) values per channel.


def _channel_axes(x: np.ndarray) -> tuple:
    """Every axis but the channel axis 1: the axes batch statistics reduce."""
    return (0,) + tuple(range(2, x.ndim))


def _per_channel(v: np.ndarray, ndim: int) -> np.ndarray:
    """A (C,) vector shaped (1, C, 1, ...) to broadcast against an ndim input."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _stat_dtype(x: np.ndarray):
    """Statistics in float32 at least, float64 for float64 input."""
    return np.float64 if x.dtype == np.float64 else np.float32


# The fast path: a C-contiguous (N, C, *) array is a stack of N*C rows of
# K = prod(*) values, row r belonging to channel r % C. Per-row sums are one
# BLAS matrix-vector product (rows @ ones) or einsum's row-wise dot, then the
# N rows of each channel are added; a per-channel vector becomes a column of
# N*C values that broadcasts along the rows. Other layouts take the plain
# np.sum over axes (0, 2, 3, ...).

def _bn_rows(a: np.ndarray):
    """``a`` as its (N*C, K) rows, or None (not C-contiguous, empty, < 2-D)."""
    if a.ndim < 2 or a.size == 0 or not a.flags.c_contiguous:
        return None
    return a.reshape(a.shape[0] * a.shape[1], -1)


def _bn_channel_sum(row_sums: np.ndarray, n: int) -> np.ndarray:
    """Per-channel totals from the N*C per-row sums."""
    return row_sums.reshape(n, -1).sum(axis=0)


def _bn_column(v: np.ndarray, n: int) -> np.ndarray:
    """A per-channel (C,) vector as the (N*C, 1) column matching the rows."""
    return np.tile(v, n)[:, None]


def _bn_row_blocks(rows):
    """Slices of about 64K elements of whole rows: formulas on one block at a
    time keep their temporaries in cache (the loop is over blocks, not
    elements)."""
    step = max(1, (1 << 16) // max(rows.shape[1], 1))
    return [slice(r, r + step) for r in range(0, rows.shape[0], step)]


def _bn_xhat_rows(rows, mean, rstd, n):
    """xhat = (x - mean) * rstd on the rows, a fresh array."""
    xhat = rows - _bn_column(mean, n)
    xhat *= _bn_column(rstd, n)
    return xhat


def batch_norm_stats(x: np.ndarray):
    """Per-channel batch statistics, two passes so a large mean does not cancel:

        mean = sum(x) / M,    var = sum((x - mean)^2) / M    (biased)

    Returns (mean, var, M)."""
    axes = _channel_axes(x)
    xs = x.astype(_stat_dtype(x), copy=False)
    m = int(np.prod([x.shape[a] for a in axes]))
    rows = _bn_rows(xs)
    if rows is not None:
        n = x.shape[0]
        # np.sum along the rows (pairwise summation): a large mean stays exact
        mean = _bn_channel_sum(rows.sum(axis=1), n) / m
        mean_col, row_sq = _bn_column(mean, n), np.empty(rows.shape[0], rows.dtype)
        for b in _bn_row_blocks(rows):
            d = rows[b] - mean_col[b]
            row_sq[b] = np.einsum("ij,ij->i", d, d)
        var = _bn_channel_sum(row_sq, n) / m
        return mean, var, m
    mean = xs.mean(axis=axes)
    var = np.square(xs - _per_channel(mean, x.ndim)).mean(axis=axes)
    return mean, var, m


def batch_norm_forward(x, weight=None, bias=None, running_mean=None, running_var=None, training=True, eps=1e-5):
    """y = (x - mean) * rstd * weight + bias,   rstd = 1 / sqrt(var + eps), per channel.

    training: mean and the biased var are the batch statistics of each
    channel (over N and every spatial position); otherwise they are
    ``running_mean`` and ``running_var``. weight / bias None mean 1 / 0.

    Returns (y, cache); cache = (x, weight, mean, rstd, training), what
    backward needs. The running-statistics update is a separate step,
    :func:`batch_norm_update_running_stats` (it is not differentiated).
    """
    sdt = _stat_dtype(x)
    if training:
        mean, var, _ = batch_norm_stats(x)
    else:
        mean, var = running_mean.astype(sdt), running_var.astype(sdt)
    rstd = (1.0 / np.sqrt(var + sdt(eps))).astype(sdt)
    mean = mean.astype(sdt)
    y = batch_norm_normalize(x, mean, rstd, weight, bias)
    return y, (x, weight, mean, rstd, training)


def batch_norm_normalize(x, mean, rstd, weight=None, bias=None):
    """y = (x - mean) * (rstd * weight) + bias, per channel, in the statistics' dtype."""
    sdt = mean.dtype
    scale = rstd if weight is None else rstd * weight.astype(sdt)
    rows = _bn_rows(x.astype(sdt, copy=False))
    if rows is not None:
        n = x.shape[0]
        y = rows - _bn_column(mean, n)
        y *= _bn_column(scale, n)
        if bias is not None:
            y += _bn_column(bias.astype(sdt), n)
        return y.reshape(x.shape).astype(x.dtype, copy=False)
    y = (x.astype(sdt, copy=False) - _per_channel(mean, x.ndim)) * _per_channel(scale, x.ndim)
    if bias is not None:
        y = y + _per_channel(bias.astype(sdt), x.ndim)
    return y.astype(x.dtype, copy=False)


def batch_norm_backward(dy, cache):
    """Gradients of batch norm, with xhat = (x - mean) * rstd, g = weight:

        dbias   = sum(dy)                 dweight = sum(dy * xhat)      (per channel)
        training:  dx = rstd / M * (M * g * dy - g * sum(dy) - xhat * g * sum(dy * xhat))
        eval:      dx = g * rstd * dy     (the running statistics are constants)

    The training form follows from mean and var depending on every x of the
    channel: d mean / dx = 1/M, d var / dx = 2 (x - mean) / M.
    Returns (dx, dweight, dbias)."""
    x, weight, mean, rstd, training = cache
    sum_dy, sum_dy_xhat = batch_norm_backward_reduce(dy, x, mean, rstd)
    if training:
        m = x.size // max(x.shape[1], 1)
        dx = batch_norm_backward_input(dy, x, mean, rstd, weight, sum_dy, sum_dy_xhat, m)
    else:
        g = rstd if weight is None else rstd * weight.astype(rstd.dtype)
        dx = (_per_channel(g, x.ndim) * dy.astype(rstd.dtype, copy=False)).astype(x.dtype, copy=False)
    return dx, sum_dy_xhat, sum_dy


def batch_norm_backward_reduce(dy, x, mean, rstd):
    """The two per-channel sums the backward needs: (sum(dy), sum(dy * xhat)).
    They are also dbias and dweight."""
    sdt = mean.dtype
    axes = _channel_axes(x)
    dys = dy.astype(sdt, copy=False)
    rows, dy_rows = _bn_rows(x.astype(sdt, copy=False)), _bn_rows(dys)
    if rows is not None and dy_rows is not None and dy.shape == x.shape:
        n = x.shape[0]
        mean_col, rstd_col = _bn_column(mean, n), _bn_column(rstd, n)
        row_dy_xhat = np.empty(rows.shape[0], sdt)
        for b in _bn_row_blocks(rows):
            xhat = rows[b] - mean_col[b]
            xhat *= rstd_col[b]
            row_dy_xhat[b] = np.einsum("ij,ij->i", dy_rows[b], xhat)
        sum_dy = _bn_channel_sum(dy_rows @ np.ones(dy_rows.shape[1], sdt), n)
        return sum_dy, _bn_channel_sum(row_dy_xhat, n)
    xhat = (x.astype(sdt, copy=False) - _per_channel(mean, x.ndim)) * _per_channel(rstd, x.ndim)
    return dys.sum(axis=axes), (dys * xhat).sum(axis=axes)


def batch_norm_backward_input(dy, x, mean, rstd, weight, sum_dy, sum_dy_xhat, m):
    """Training dx from the channel sums over all M values (M may span several
    processes, as in sync batch norm):

        dx = g * rstd / M * (M * dy - sum(dy) - xhat * sum(dy * xhat))
    """
    sdt = mean.dtype
    nd = x.ndim
    g = rstd if weight is None else rstd * weight.astype(sdt)
    rows, dy_rows = _bn_rows(x.astype(sdt, copy=False)), _bn_rows(dy.astype(sdt, copy=False))
    if rows is not None and dy_rows is not None and dy.shape == x.shape:
        # the same formula, as dx = g dy - g sum(dy) / M - xhat * g sum(dy xhat) / M
        n = x.shape[0]
        mean_col, rstd_col, g_col = _bn_column(mean, n), _bn_column(rstd, n), _bn_column(g, n)
        c1_col, c2_col = _bn_column(g * sum_dy / m, n), _bn_column(g * sum_dy_xhat / m, n)
        dx = np.empty(rows.shape, sdt)
        for b in _bn_row_blocks(rows):
            xhat = rows[b] - mean_col[b]
            xhat *= rstd_col[b]
            xhat *= c2_col[b]
            np.multiply(dy_rows[b], g_col[b], out=dx[b])
            dx[b] -= c1_col[b]
            dx[b] -= xhat
        return dx.reshape(x.shape).astype(x.dtype, copy=False)
    xhat = (x.astype(sdt, copy=False) - _per_channel(mean, nd)) * _per_channel(rstd, nd)
    dx = _per_channel(g / m, nd) * (
        m * dy.astype(sdt, copy=False) - _per_channel(sum_dy, nd) - xhat * _per_channel(sum_dy_xhat, nd)
    )
    return dx.astype(x.dtype, copy=False)


def batch_norm_update_running_stats(running_mean, running_var, mean, var, m, momentum):
    """The running statistics after one training step (returned, not modified):

        running_mean = (1 - momentum) * running_mean + momentum * mean
        running_var  = (1 - momentum) * running_var  + momentum * var * M / (M - 1)

    running_var takes the unbiased variance; ``var`` is the biased one the
    forward normalized with. Returned in the buffers' dtype."""
    unbiased = var * (m / (m - 1)) if m > 1 else np.full_like(var, np.nan)
    new_mean = (1 - momentum) * running_mean + momentum * mean
    new_var = (1 - momentum) * running_var + momentum * unbiased
    return new_mean.astype(running_mean.dtype), new_var.astype(running_var.dtype)


def _instance_view(x: np.ndarray) -> np.ndarray:
    """(N, C, *) seen as (1, N*C, *): each (n, c) pair becomes one channel."""
    return x.reshape((1, x.shape[0] * x.shape[1]) + x.shape[2:])


def instance_norm_forward(x, weight=None, bias=None, eps=1e-5):
    """y = (x - mean) * rstd * weight[c] + bias[c], with mean and the biased var
    of each (n, c) over the spatial dimensions: batch norm of the (1, N*C, *)
    view, weight and bias repeated N times. Returns (y, cache)."""
    n = x.shape[0]
    w = None if weight is None else np.tile(weight, n)
    b = None if bias is None else np.tile(bias, n)
    y, cache = batch_norm_forward(_instance_view(x), w, b, training=True, eps=eps)
    return y.reshape(x.shape), (x.shape, weight is not None, cache)


def instance_norm_backward(dy, cache):
    """Batch norm's training backward on the (1, N*C, *) view; dweight and dbias
    of the repeated parameters are summed over n. Returns (dx, dweight, dbias)."""
    shape, has_weight, bn_cache = cache
    dx, dw, db = batch_norm_backward(_instance_view(dy), bn_cache)
    n, c = shape[0], shape[1]
    return dx.reshape(shape), dw.reshape(n, c).sum(axis=0), db.reshape(n, c).sum(axis=0)


def instance_norm_stats(x: np.ndarray):
    """Per-channel running-statistics inputs for instance norm, as torch uses them:
    the (n, c) means and unbiased variances averaged over n.
    Returns (mean, unbiased var) of shape (C,)."""
    mean, var, m = batch_norm_stats(_instance_view(x))
    n, c = x.shape[0], x.shape[1]
    unbiased = var * (m / (m - 1)) if m > 1 else np.full_like(var, np.nan)
    return mean.reshape(n, c).mean(axis=0), unbiased.reshape(n, c).mean(axis=0)


class BatchNorm(Layer):
    """Batch norm over dimension 1 of (N, C) or (N, C, *) inputs, with running
    statistics as torch.nn.BatchNorm*d keeps them: momentum=None means a
    cumulative average (factor 1 / num_batches_tracked); eval uses the running
    statistics when tracked, else the batch statistics."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, dtype=np.float64):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        if affine:
            self.params = {"weight": np.ones(num_features, dtype), "bias": np.zeros(num_features, dtype)}
        self.track_running_stats = track_running_stats
        if track_running_stats:
            self.running_mean = np.zeros(num_features, dtype)
            self.running_var = np.ones(num_features, dtype)
            self.num_batches_tracked = 0
        else:
            self.running_mean = self.running_var = None

    def forward(self, x):
        use_batch_stats = self.training or self.running_mean is None
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked += 1
            factor = 1.0 / self.num_batches_tracked if self.momentum is None else self.momentum
        y, self._cache = batch_norm_forward(
            x, self.params.get("weight"), self.params.get("bias"),
            self.running_mean, self.running_var, training=use_batch_stats, eps=self.eps,
        )
        if use_batch_stats and self.running_mean is not None and x.size:
            mean, var, m = batch_norm_stats(x)
            self.running_mean, self.running_var = batch_norm_update_running_stats(
                self.running_mean, self.running_var, mean, var, m, factor
            )
        return y

    def backward(self, dy):
        dx, dw, db = batch_norm_backward(dy, self._need_cache())
        if self.params:
            self.grads = {"weight": dw, "bias": db}
        return dx


class InstanceNorm(Layer):
    """Instance norm over (N, C, *) inputs: each (n, c) normalized over its
    spatial values; optional per-channel affine weight and bias."""

    def __init__(self, num_features, eps=1e-5, affine=False, dtype=np.float64):
        super().__init__()
        self.eps = eps
        if affine:
            self.params = {"weight": np.ones(num_features, dtype), "bias": np.zeros(num_features, dtype)}

    def forward(self, x):
        y, self._cache = instance_norm_forward(x, self.params.get("weight"), self.params.get("bias"), self.eps)
        return y

    def backward(self, dy):
        dx, dw, db = instance_norm_backward(dy, self._need_cache())
        if self.params:
            self.grads = {"weight": dw, "bias": db}
        return dx



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


def _rn_rows(a: np.ndarray, axes):
    """``a`` as a 2-D (rows, count) view when ``axes`` are its trailing axes
    and it is contiguous (the usual case: LayerNorm rows, GroupNorm
    (sample, group) slices), else None."""
    count = int(np.prod([a.shape[i] for i in axes]))
    if count and tuple(axes) == tuple(range(a.ndim - len(axes), a.ndim)) and a.flags.c_contiguous:
        return a.reshape(-1, count)
    return None


def _rn_keep(a: np.ndarray, axes):
    return tuple(1 if i in axes else n for i, n in enumerate(a.shape))


def _rn_safe_mean(a: np.ndarray, axes) -> np.ndarray:
    """mean over ``axes`` keeping them; NaN (no warning) where they are empty.
    Rows are summed as one matrix-vector product where they can be (BLAS is
    several times faster than np.sum's row-by-row reduction of short rows)."""
    count = int(np.prod([a.shape[i] for i in axes]))
    rows = _rn_rows(a, axes)
    if rows is not None:
        sums = (rows @ np.ones(count, a.dtype)).reshape(_rn_keep(a, axes))
    else:
        sums = np.sum(a, axis=axes, keepdims=True)
    return sums / (count if count else np.nan)


def _rn_dot_mean(a: np.ndarray, b: np.ndarray, axes) -> np.ndarray:
    """mean of a * b over ``axes`` (kept), without the product's temporary
    array where the rows allow it (einsum's row-wise dot)."""
    count = int(np.prod([a.shape[i] for i in axes]))
    ra, rb = _rn_rows(a, axes), _rn_rows(b, axes)
    if ra is not None and rb is not None and a.shape == b.shape:
        sums = np.einsum("ij,ij->i", ra, rb).reshape(_rn_keep(a, axes))
    else:
        sums = np.sum(a * b, axis=axes, keepdims=True)
    return sums / (count if count else np.nan)


def _rn_sum_product(a: np.ndarray, b: np.ndarray, axes) -> np.ndarray:
    """sum of a * b over ``axes`` (dropped), with no temporary array."""
    letters = "abcdefghijklmnopqrstuvwxyz"[: a.ndim]
    kept = "".join(c for i, c in enumerate(letters) if i not in axes)
    return np.einsum(f"{letters},{letters}->{kept}", a, b)


def _rn_trailing_axes(x: np.ndarray, n: int):
    return tuple(range(x.ndim - n, x.ndim))


def _rn_normalized_backward(g: np.ndarray, xhat: np.ndarray, rstd: np.ndarray, axes, center: bool):
    """dx of xhat = (x - mean) * rstd (center=True) or xhat = x * rstd, given
    g = dL/dxhat, with the statistics taken over ``axes``:

        center:  dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
        else:    dx = rstd * (g - xhat * mean(g * xhat))
    """
    dx = xhat * _rn_dot_mean(g, xhat, axes)
    np.subtract(g, dx, out=dx)
    if center:
        dx -= _rn_safe_mean(g, axes)
    dx *= rstd
    return dx


def _rn_param_grads(dy, xhat, weight, has_bias, reduce_axes, param_shape):
    """dweight = sum(dy * xhat), dbias = sum(dy) over every axis but the
    parameter's; None where there is no such parameter."""
    dweight = None if weight is None else _rn_sum_product(dy, xhat, reduce_axes).reshape(param_shape).astype(weight.dtype)
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
    xs = x.astype(_rn_stat_dtype(x), copy=False)
    rows = _rn_rows(xs, axes)
    if rows is not None and rows.shape[0]:
        return _layer_norm_forward_rows(x, rows, axes, weight, bias, eps, ndim)
    with np.errstate(invalid="ignore", divide="ignore"):  # empty rows give NaN, as in torch
        mean = _rn_safe_mean(xs, axes)
        xhat = xs - mean
        var = _rn_dot_mean(xhat, xhat, axes)
        rstd = 1.0 / np.sqrt(var + eps)
    xhat *= rstd
    y = xhat
    if weight is not None:
        y = y * weight
    if bias is not None:
        y += bias
    return y.astype(x.dtype, copy=False), (x, mean, rstd, weight, bias is not None, ndim)


def layer_norm_backward(dy: np.ndarray, cache):
    """With g = dy * weight and means over the normalized dims:

        dx      = rstd * (g - mean(g) - xhat * mean(g * xhat))
        dweight = sum over the leading dims of dy * xhat
        dbias   = sum over the leading dims of dy

    Returns ``(dx, dweight, dbias)``, None for a missing weight or bias.
    """
    x, mean, rstd, weight, has_bias, ndim = cache
    axes = _rn_trailing_axes(x, ndim)
    rows, dy_rows = _rn_rows(x.astype(mean.dtype, copy=False), axes), _rn_rows(dy.astype(mean.dtype, copy=False), axes)
    if rows is not None and dy_rows is not None and rows.shape[0] and dy.shape == x.shape:
        return _layer_norm_backward_rows(x, rows, dy_rows, mean, rstd, weight, has_bias, ndim)
    xhat = x.astype(mean.dtype, copy=False) - mean
    xhat *= rstd
    dys = dy.astype(mean.dtype, copy=False)
    g = dys if weight is None else dys * weight
    dx = _rn_normalized_backward(g, xhat, rstd, axes, center=True) if x.size else np.zeros_like(xhat)
    lead = tuple(range(x.ndim - ndim))
    dweight, dbias = _rn_param_grads(dys, xhat, weight, has_bias, lead, x.shape[x.ndim - ndim:])
    return dx.astype(x.dtype, copy=False), dweight, dbias


# The fast path of layer norm: C-contiguous input as (rows, K) with K the
# normalized size, processed in blocks of ~32K elements of whole rows so the
# formula's temporaries stay in cache. Same formulas, same statistics.
#
# Why it is shaped the way it is (K = 56 on the bench input): an operation
# between a block and a per-row vector (mean, rstd) runs NumPy's inner loop
# once per row, K elements at a time, and costs about twice a plain
# elementwise pass; one with the per-column weight is made plain by tiling
# the weight to the block's shape once. Row sums are matrix-vector products
# (BLAS), several times faster than np.sum along short rows.

def _ln_blocks(rows):
    """Slices of whole rows, ~64K elements each (GroupNorm's fast path)."""
    step = max(1, (1 << 16) // rows.shape[1])
    return [slice(r, r + step) for r in range(0, rows.shape[0], step)]


def _ln_step(rows):
    """Rows per block: about 32K elements (six block-sized arrays fit in L2)."""
    return min(rows.shape[0], max(1, (1 << 15) // rows.shape[1]))


def _ln_tile(v, step, dtype):
    """A per-column vector (or None) repeated over a block's rows."""
    return None if v is None else np.tile(v.reshape(-1).astype(dtype, copy=False), (step, 1))


def _layer_norm_forward_rows(x, rows, axes, weight, bias, eps, ndim):
    k = rows.shape[1]
    step = _ln_step(rows)
    ones = np.ones(k, rows.dtype)
    w, b_ = _ln_tile(weight, step, rows.dtype), _ln_tile(bias, step, rows.dtype)
    y = np.empty(rows.shape, rows.dtype)
    mean, rstd = np.empty(rows.shape[0], rows.dtype), np.empty(rows.shape[0], rows.dtype)
    with np.errstate(invalid="ignore", divide="ignore"):
        for start in range(0, rows.shape[0], step):
            b = slice(start, start + step)
            m = min(step, rows.shape[0] - start)  # rows in this block
            mean[b] = rows[b] @ ones / k
            d = np.subtract(rows[b], mean[b, None], out=y[b])
            rstd[b] = 1.0 / np.sqrt(np.einsum("ij,ij->i", d, d) / k + eps)
            d *= rstd[b, None]
            if w is not None:
                d *= w[:m]
            if b_ is not None:
                d += b_[:m]
    keep = _rn_keep(x, axes)
    return (y.reshape(x.shape).astype(x.dtype, copy=False),
            (x, mean.reshape(keep), rstd.reshape(keep), weight, bias is not None, ndim))


def _layer_norm_backward_rows(x, rows, dy_rows, mean, rstd, weight, has_bias, ndim):
    """layer_norm_backward's formulas with rstd moved inside, so that xhat and
    g are never formed: with d = x - mean (so xhat = rstd d), r = rstd dy and
    P = r * d (= dy * xhat),

        dweight = sum over rows of P
        mean(g) = (r @ w) / (rstd K),  mean(g * xhat) = (P @ w) / K
        dx      = r * w - (d * rstd^2 mean(g * xhat) + rstd mean(g))

    Four per-row broadcasts instead of six, every row sum a matrix-vector
    product; d is centred before anything is multiplied, so a large mean
    costs no accuracy (tests/test_extremes.py)."""
    k = rows.shape[1]
    step = _ln_step(rows)
    ones_rows = np.ones(step, rows.dtype)
    w = np.ones(k, rows.dtype) if weight is None else weight.reshape(-1).astype(rows.dtype, copy=False)
    w_tiled = _ln_tile(weight, step, rows.dtype)
    w_over_k = w / k  # the row means below are one product each
    mean, rstd = mean.reshape(-1), rstd.reshape(-1)
    rstd2 = rstd * rstd
    dx = np.empty(rows.shape, rows.dtype)
    dweight = np.zeros(k, rows.dtype)
    dbias = np.zeros(k, rows.dtype)
    d_block, r_block, p_block = (np.empty((step, k), rows.dtype) for _ in range(3))
    with np.errstate(invalid="ignore"):  # inf in a row: inf - inf, NaN as in torch
        for start in range(0, rows.shape[0], step):
            b = slice(start, start + step)
            m = min(step, rows.shape[0] - start)  # rows in this block
            rs = rstd[b]
            d = np.subtract(rows[b], mean[b, None], out=d_block[:m])
            r = np.multiply(dy_rows[b], rs[:, None], out=r_block[:m])
            p = np.multiply(r, d, out=p_block[:m])
            # column sums of a block by BLAS (np.sum down short columns is slow)
            if weight is not None:
                dweight += ones_rows[:m] @ p
            if has_bias:
                dbias += ones_rows[:m] @ dy_rows[b]
            rstd_mean_g = r @ w_over_k
            rstd2_mean_gxhat = p @ w_over_k
            rstd2_mean_gxhat *= rstd2[b]
            d *= rstd2_mean_gxhat[:, None]
            d += rstd_mean_g[:, None]
            if w_tiled is not None:
                r *= w_tiled[:m]
            np.subtract(r, d, out=dx[b])
    pshape = x.shape[x.ndim - ndim:]
    return (dx.reshape(x.shape).astype(x.dtype, copy=False),
            None if weight is None else dweight.reshape(pshape).astype(weight.dtype),
            dbias.reshape(pshape).astype(dy_rows.dtype) if has_bias else None)


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
        rstd = 1.0 / np.sqrt(_rn_dot_mean(xs, xs, axes) + rms_eps(x.dtype, eps))
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
    xs = _rn_grouped(x.astype(_rn_stat_dtype(x), copy=False), num_groups)
    if xs.size and xs.flags.c_contiguous:
        return _group_norm_forward_rows(x, xs, weight, bias, eps)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = _rn_safe_mean(xs, (2,))
        xc = xs - mean
        var = _rn_dot_mean(xc, xc, (2,))
        rstd = 1.0 / np.sqrt(var + eps)
    xc *= rstd
    xhat = xc.reshape(x.shape)
    channel = (1, -1) + (1,) * (x.ndim - 2)  # broadcast a (C,) vector over (N, C, *S)
    y = xhat  # a fresh array (xs - mean): the affine map can work in place
    if weight is not None:
        y *= weight.reshape(channel).astype(y.dtype, copy=False)
    if bias is not None:
        y += bias.reshape(channel).astype(y.dtype, copy=False)
    return y.astype(x.dtype, copy=False), (x, mean[..., 0], rstd[..., 0], weight, bias is not None)


def _group_norm_forward_rows(x, xs, weight, bias, eps):
    """group_norm_forward on the (N*G, C/G * K) rows of C-contiguous x, in
    blocks of whole rows (temporaries in cache); the per-channel affine map
    sees each block as (rows, C/G, K). Same formulas as the general path."""
    n, num_groups = xs.shape[0], xs.shape[1]
    rows = xs.reshape(n * num_groups, -1)
    length, per_group = rows.shape[1], x.shape[1] // num_groups
    ones = np.ones(length, rows.dtype)
    # (C,) -> one (C/G,) slice per row: row r is group r % G
    per_row = lambda v: None if v is None else np.tile(v.astype(rows.dtype).reshape(num_groups, per_group), (n, 1))[:, :, None]
    w_rows, b_rows = per_row(weight), per_row(bias)
    y = np.empty(rows.shape, rows.dtype)
    mean, rstd = np.empty(rows.shape[0], rows.dtype), np.empty(rows.shape[0], rows.dtype)
    with np.errstate(invalid="ignore", divide="ignore"):
        for b in _ln_blocks(rows):
            mean[b] = rows[b] @ ones / length
            d = np.subtract(rows[b], mean[b, None], out=y[b])
            rstd[b] = 1.0 / np.sqrt(np.einsum("ij,ij->i", d, d) / length + eps)
            d *= rstd[b, None]
            d3 = d.reshape(d.shape[0], per_group, -1)
            if w_rows is not None:
                d3 *= w_rows[b]
            if b_rows is not None:
                d3 += b_rows[b]
    return (y.reshape(x.shape).astype(x.dtype, copy=False),
            (x, mean.reshape(n, num_groups), rstd.reshape(n, num_groups), weight, bias is not None))


def group_norm_backward(dy: np.ndarray, cache):
    """With g = dy * weight[c] and means over each (sample, group) slice:

        dx      = rstd * (g - mean(g) - xhat * mean(g * xhat))
        dweight = sum over (N, *S) of dy * xhat,   dbias = sum over (N, *S) of dy

    Returns ``(dx, dweight, dbias)``, None for a missing weight or bias.
    """
    x, mean, rstd, weight, has_bias = cache
    num_groups = mean.shape[1]
    stat = mean.dtype
    rows, dy_rows = _bn_rows(x.astype(stat, copy=False)), _bn_rows(dy.astype(stat, copy=False))
    if rows is not None and dy_rows is not None and dy.shape == x.shape:
        return _group_norm_backward_rows(rows, dy_rows, x, dy, mean, rstd, weight, has_bias)
    mean, rstd = mean[..., None], rstd[..., None]
    xhat = _rn_grouped(x.astype(stat, copy=False), num_groups) - mean
    xhat *= rstd
    channel = (1, -1) + (1,) * (x.ndim - 2)
    dys = dy.astype(stat, copy=False)
    g = dys if weight is None else dys * weight.reshape(channel)
    if x.size:
        dx = _rn_normalized_backward(_rn_grouped(g, num_groups), xhat, rstd, (2,), center=True).reshape(x.shape)
    else:
        dx = np.zeros(x.shape, stat)
    dy_rows, xhat_rows = _bn_rows(dys), _bn_rows(xhat.reshape(x.shape))
    if dy_rows is not None and xhat_rows is not None and dy.shape == x.shape:
        # per-channel sums as row sums of the (N*C, K) rows (see batch norm)
        n = x.shape[0]
        dweight = None if weight is None else _bn_channel_sum(np.einsum("ij,ij->i", dy_rows, xhat_rows), n).astype(weight.dtype)
        dbias = _bn_channel_sum(dy_rows @ np.ones(dy_rows.shape[1], stat), n).astype(dy.dtype) if has_bias else None
        return dx.astype(x.dtype, copy=False), dweight, dbias
    reduce_axes = (0,) + tuple(range(2, x.ndim))
    dweight, dbias = _rn_param_grads(dys, xhat.reshape(x.shape), weight, has_bias, reduce_axes, (x.shape[1],))
    return dx.astype(x.dtype, copy=False), dweight, dbias


def _group_norm_backward_rows(rows, dy_rows, x, dy, mean, rstd, weight, has_bias):
    """group_norm_backward on the (N*C, K) rows of C-contiguous x and dy, in
    two passes over blocks of whole rows (temporaries stay in cache): the
    first gathers the row sums of g, g * xhat, dy and dy * xhat, the second
    forms dx = rstd * (g - mean(g) - xhat * mean(g * xhat)); the group means
    add the C/G rows of each group. Same formulas as the general path."""
    n, c = x.shape[0], x.shape[1]
    num_groups = mean.shape[1]
    count = rows.shape[1] * (c // num_groups)  # elements per (sample, group)
    per_row = lambda v: np.repeat(v.reshape(-1), c // num_groups)[:, None]  # (N, G) -> (N*C, 1)
    mean_col, rstd_col = per_row(mean), per_row(rstd)
    w_col = None if weight is None else _bn_column(weight.astype(rows.dtype), n)
    blocks = _bn_row_blocks(rows)

    def xhat_and_g(b):
        xhat = rows[b] - mean_col[b]
        xhat *= rstd_col[b]
        return xhat, (dy_rows[b] if w_col is None else dy_rows[b] * w_col[b])

    row_dy = dy_rows @ np.ones(rows.shape[1], rows.dtype)
    row_dy_xhat, row_g, row_g_xhat = (np.empty(rows.shape[0], rows.dtype) for _ in range(3))
    for b in blocks:
        xhat, g = xhat_and_g(b)
        row_dy_xhat[b] = np.einsum("ij,ij->i", dy_rows[b], xhat)
        row_g[b] = g.sum(axis=1)
        row_g_xhat[b] = np.einsum("ij,ij->i", g, xhat)
    group_mean = lambda v: per_row(v.reshape(n, num_groups, -1).sum(axis=2) / count)
    mean_g, mean_g_xhat = group_mean(row_g), group_mean(row_g_xhat)
    dx = np.empty(rows.shape, rows.dtype)
    for b in blocks:
        xhat, g = xhat_and_g(b)
        xhat *= mean_g_xhat[b]
        np.subtract(g, xhat, out=dx[b])
        dx[b] -= mean_g[b]
        dx[b] *= rstd_col[b]
    dweight = None if weight is None else _bn_channel_sum(row_dy_xhat, n).astype(weight.dtype)
    dbias = _bn_channel_sum(row_dy, n).astype(dy.dtype) if has_bias else None
    return dx.reshape(x.shape).astype(x.dtype, copy=False), dweight, dbias


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

