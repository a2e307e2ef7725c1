"""Dropout, DropConnect and DropBlock2d: forward and backward in NumPy.

The randomness comes from :mod:`lamina.rng` (counter-based Philox), so the
masks are a pure function of (seed, offset, shape, layout) and are identical
to the Triton kernels'. Backward regenerates the dropout mask from
(seed, offset) instead of keeping it: the cache holds four numbers.

Nothing here modifies its input. NumPy only (lamina.rng is NumPy only).
"""

from __future__ import annotations

import numpy as np

from .. import rng
from .layer import Layer


# --- dropout ------------------------------------------------------------------

def _memory_layout(x: np.ndarray):
    """x as it lies in memory: (x_flat_order, axes) where x_flat_order =
    x.transpose(axes) is C-ordered. A non-dense x is made C-contiguous first
    (as the kernels do), so its stream runs in row-major order."""
    order = rng.memory_order(x.shape, [s // x.itemsize for s in x.strides]) if x.size else None
    if order is None:
        x = np.ascontiguousarray(x)
        order = list(range(x.ndim))
    return x.transpose(order), order


def dropout_multiplier(p: float, dtype) -> np.ndarray:
    """The value a kept element is multiplied by: 1 / (1 - p), and 0 for p = 1
    (every element dropped, x * 0, so NaN stays NaN as in PyTorch)."""
    return np.asarray(0.0 if p == 1 else 1.0 / (1.0 - p), dtype=dtype)


def dropout_forward(x: np.ndarray, p: float, seed: int, offset: int = 0):
    """y = x * m / (1 - p), m_i = [u_i >= p], u the Philox stream of
    (seed, offset) laid along x's memory order (lamina.rng.uniforms).

    P(m_i = 1) = 1 - p, so E[y] = x. A dropped element is x * 0 (NaN and inf
    give NaN, as in PyTorch). The output keeps x's memory layout."""
    xt, order = _memory_layout(x)
    flat = xt.reshape(-1)  # a view: xt is C-ordered
    out = np.empty_like(flat)
    scale, zero, threshold = dropout_multiplier(p, x.dtype), np.zeros((), x.dtype), np.float32(p)
    # piece by piece along the stream, so each piece of uniforms is used
    # while it is still in cache (no 25 MB uniform or mask arrays)
    with np.errstate(invalid="ignore"):  # inf * 0 is NaN, as in torch
        for start, u in rng.uniform_blocks(seed, offset, flat.size):
            stop = start + u.size
            m = np.where(u >= threshold, scale, zero)
            np.multiply(flat[start:stop], m, out=out[start:stop])
    y = out.reshape(xt.shape).transpose(np.argsort(order))
    return y, (p, seed, offset)


def dropout_backward(dy: np.ndarray, cache):
    """dx = dy * m / (1 - p), the same mask regenerated from (seed, offset).
    dy must have the forward output's memory layout (the mask runs along it)."""
    p, seed, offset = cache
    dx, _ = dropout_forward(dy, p, seed, offset)
    return dx


_IDENTITY = ("identity",)  # the cache of a forward that was the identity (eval, p = 0)


class Dropout(Layer):
    """Dropout(p): each forward draws a fresh seed from ``seed_source``
    (a numpy Generator); eval and p = 0 are the identity."""

    def __init__(self, p: float = 0.5, seed_source: np.random.Generator | None = None):
        super().__init__()
        self.p = p
        self._seeds = seed_source if seed_source is not None else np.random.default_rng()

    def forward(self, x):
        if not self.training or self.p == 0:
            self._cache = _IDENTITY
            return x
        seed = int(self._seeds.integers(0, 2**63 - 1))
        y, self._cache = dropout_forward(x, self.p, seed)
        return y

    def backward(self, dy):
        cache = self._need_cache()
        return dy if cache is _IDENTITY else dropout_backward(dy, cache)


# --- DropConnect ----------------------------------------------------------------
# DropConnect (Wan et al., 2013) is dropout applied to a layer's weight
# instead of its activations: drop_connect_forward(w, ...) is
# dropout_forward(w, ...), and its backward gives d(weight).

drop_connect_forward = dropout_forward
drop_connect_backward = dropout_backward


# --- DropBlock2d ------------------------------------------------------------------

def drop_block2d_gamma(p: float, block_size: int, height: int, width: int) -> float:
    """The Bernoulli rate of block centres that drops about a fraction p:
    gamma = p H W / (b^2 (H - b + 1)(W - b + 1))."""
    return (p * height * width) / (block_size**2 * ((height - block_size + 1) * (width - block_size + 1)))


def drop_block2d_mask(shape, p: float, block_size: int, seed: int, offset: int = 0) -> np.ndarray:
    """The keep mask (bool, N x C x H x W) of DropBlock2d.

    Block seeds z ~ Bernoulli(gamma) on (N, C, H - b + 1, W - b + 1), drawn as
    ``rng.bernoulli`` in row-major order. A seed at (i, j) drops the b x b
    block [i, i + b) x [j, j + b), which lies wholly inside the map. (This is
    torchvision's pad-by-b//2 then max-pool(b, stride 1, padding b//2) for an
    odd b, written as the union of shifted copies.)"""
    n, c, h, w = shape
    hz, wz = h - block_size + 1, w - block_size + 1
    gamma = drop_block2d_gamma(p, block_size, h, w)
    seeds = rng.bernoulli(seed, offset, (n, c, hz, wz), gamma)
    dropped = np.zeros((n, c, h, w), dtype=bool)
    for a in range(block_size):  # loops over window offsets, not elements
        for b in range(block_size):
            dropped[:, :, a:a + hz, b:b + wz] |= seeds
    return ~dropped


def drop_block2d_scale(mask: np.ndarray, eps: float, dtype) -> np.ndarray:
    """numel / (eps + number kept), in dtype (float32 at least)."""
    dtype = np.promote_types(dtype, np.float32)
    return np.asarray(mask.size, dtype) / (np.asarray(eps, dtype) + np.asarray(np.count_nonzero(mask), dtype))


def _masked_scale(x: np.ndarray, mask: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """x * (scale where mask else 0), computed in scale's dtype, cast to x's."""
    m = np.where(mask, scale, np.zeros((), scale.dtype))
    with np.errstate(invalid="ignore"):  # inf * 0 is NaN, as in torch
        return (x.astype(scale.dtype, copy=False) * m).astype(x.dtype, copy=False)


def drop_block2d_forward(x: np.ndarray, p: float, block_size: int, seed: int, offset: int = 0, eps: float = 1e-6):
    """y = x * mask * numel / (eps + sum(mask)), mask from drop_block2d_mask.

    ``block_size`` is already clipped to min(block_size, H, W) and odd.
    The cache is (mask, scale): rebuilding the mask in backward would repeat
    the b x b window pass and the global sum, while the mask is one bit of
    information per element (the kernels keep it as one byte) and the scale
    one number."""
    mask = drop_block2d_mask(x.shape, p, block_size, seed, offset)
    scale = drop_block2d_scale(mask, eps, x.dtype)
    return _masked_scale(x, mask, scale), (mask, scale)


def drop_block2d_backward(dy: np.ndarray, cache):
    """dx = dy * mask * scale."""
    mask, scale = cache
    return _masked_scale(dy, mask, scale)


class DropBlock2d(Layer):
    """DropBlock2d(p, block_size, eps): each forward draws a fresh seed from
    ``seed_source`` (a numpy Generator); eval and p = 0 are the identity.
    ``block_size`` is clipped to the map and must then be odd."""

    def __init__(self, p: float, block_size: int, eps: float = 1e-6,
                 seed_source: np.random.Generator | None = None):
        super().__init__()
        self.p, self.block_size, self.eps = p, block_size, eps
        self._seeds = seed_source if seed_source is not None else np.random.default_rng()

    def forward(self, x):
        if not self.training or self.p == 0:
            self._cache = _IDENTITY
            return x
        b = min(self.block_size, x.shape[2], x.shape[3])
        if b % 2 == 0:
            raise ValueError(f"block size should be odd. Got {b} which is even.")
        seed = int(self._seeds.integers(0, 2**63 - 1))
        y, self._cache = drop_block2d_forward(x, self.p, b, seed, 0, self.eps)
        return y

    def backward(self, dy):
        cache = self._need_cache()
        return dy if cache is _IDENTITY else drop_block2d_backward(dy, cache)
