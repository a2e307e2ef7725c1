"""Philox4x32-10 in NumPy, bit-identical to Triton's ``tl.randint`` /
``tl.rand`` (triton/language/random.py), and the random streams lamina's
dropout layers draw from.

Philox (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011)
is counter based: the random numbers at a counter are a pure function of
(seed, counter), so the Triton kernels and this NumPy code produce the same
numbers from the same (seed, offset) without sharing any state, and a backward
pass can regenerate a forward pass's mask instead of saving it.

How Triton maps its arguments (mirrored exactly here):

* key: the seed as uint64, ``k0 = seed & 0xffffffff``, ``k1 = seed >> 32``;
* counter: ``c0 = offset & 0xffffffff``, ``c1 = offset >> 32`` (int64
  offsets; an int32 offset has ``c1 = 0``, the same thing for offsets below
  2**31), ``c2 = c3 = 0``;
* ten rounds; ``randint4x`` returns the four output words, ``randint`` the
  first one;
* uint32 -> float in [0, 1): reinterpret as int32, fold negatives with
  ``x -> -x - 1`` (that is ``~x``), convert to float32 and multiply by the
  float32 constant 4.6566127342e-10 (the largest scale with
  ``(2**31 - 1) * scale < 1`` after rounding).

NumPy only: this module never imports torch.
"""

from __future__ import annotations

import sys

import numpy as np

N_ROUNDS = 10
_KEY_A = 0x9E3779B9  # golden ratio, the Weyl increment of the key
_KEY_B = 0xBB67AE85
_ROUND_A = np.uint64(0xD2511F53)  # the Philox4x32 multipliers
_ROUND_B = np.uint64(0xCD9E8D57)
_MASK32 = 0xFFFFFFFF
_UNIFORM_SCALE = np.float32(4.6566127342e-10)


def _key(seed: int) -> tuple[int, int]:
    """(k0, k1) from the seed, as Triton does: seed -> uint64, split in halves."""
    seed = int(seed) & 0xFFFFFFFFFFFFFFFF  # a negative seed wraps as .to(uint64) does
    return seed & _MASK32, seed >> 32


def _mul_hi_lo(a: np.uint64, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The high and low 32-bit words of the 64-bit product a * x (x uint32).

    One uint64 product, read back as its two uint32 halves (views, no shift
    or mask passes); on a big-endian machine the halves swap places."""
    product = x.astype(np.uint64)
    product *= a
    halves = product.view(np.uint32).reshape(x.shape + (2,))
    lo, hi = (halves[..., 0], halves[..., 1]) if _LITTLE_ENDIAN else (halves[..., 1], halves[..., 0])
    return hi, lo


_LITTLE_ENDIAN = sys.byteorder == "little"


def philox(seed: int, c0, c1, c2, c3, n_rounds: int = N_ROUNDS):
    """Philox4x32 on counters (c0, c1, c2, c3) (uint32 arrays of one shape)
    under the key from ``seed``; returns the four uint32 output words."""
    k0, k1 = _key(seed)
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint32) for c in (c0, c1, c2, c3))
    for _ in range(n_rounds):
        hi_b, lo_b = _mul_hi_lo(_ROUND_B, c2)
        hi_a, lo_a = _mul_hi_lo(_ROUND_A, c0)
        c0 = np.bitwise_xor(hi_b, c1)
        c0 ^= np.uint32(k0)
        c2 = np.bitwise_xor(hi_a, c3)
        c2 ^= np.uint32(k1)
        c1, c3 = lo_b, lo_a
        k0 = (k0 + _KEY_A) & _MASK32
        k1 = (k1 + _KEY_B) & _MASK32
    return c0, np.ascontiguousarray(c1), c2, np.ascontiguousarray(c3)


def _counters(offsets) -> tuple[np.ndarray, np.ndarray]:
    """Low and high words of int64 offsets (Triton's offset_lo / offset_hi)."""
    offsets = np.asarray(offsets, dtype=np.int64)
    lo = (offsets & _MASK32).astype(np.uint32)
    hi = ((offsets >> 32) & _MASK32).astype(np.uint32)  # arithmetic shift, like tl's >>
    return lo, hi


def randint4x(seed: int, offsets, n_rounds: int = N_ROUNDS):
    """Four uint32 arrays, as ``tl.randint4x(seed, offsets)`` with int64 offsets."""
    lo, hi = _counters(offsets)
    zero = np.zeros_like(lo)
    return philox(seed, lo, hi, zero, zero, n_rounds)


def randint(seed: int, offsets, n_rounds: int = N_ROUNDS) -> np.ndarray:
    """uint32 array, as ``tl.randint(seed, offsets)``: the first word of randint4x."""
    return randint4x(seed, offsets, n_rounds)[0]


def uint_to_uniform(x: np.ndarray) -> np.ndarray:
    """uint32 -> float32 in [0, 1), exactly as Triton's uint_to_uniform_float."""
    x = np.asarray(x, dtype=np.uint32).view(np.int32)
    x = x ^ (x >> 31)  # ~x (= -x - 1, no int32 overflow) where x < 0, else x
    u = x.astype(np.float32)
    u *= _UNIFORM_SCALE
    return u


def rand(seed: int, offsets, n_rounds: int = N_ROUNDS) -> np.ndarray:
    """float32 array in [0, 1), as ``tl.rand(seed, offsets)``."""
    return uint_to_uniform(randint(seed, offsets, n_rounds))


def rand4x(seed: int, offsets, n_rounds: int = N_ROUNDS):
    """Four float32 arrays in [0, 1), as ``tl.rand4x(seed, offsets)``."""
    return tuple(uint_to_uniform(r) for r in randint4x(seed, offsets, n_rounds))


# --- the stream dropout layers draw from ---------------------------------------
#
# One Philox call gives four words; using all four makes the RNG four times
# cheaper, which matters: one Philox call costs ~60 integer instructions, and
# one call per element would make dropout compute bound on an H100. The four
# uniforms of a call go to four runs of GROUP consecutive elements, so a
# kernel program of 4 * GROUP elements makes GROUP calls and does four plain
# contiguous loads and stores:
#
#     element i:  g = i // (4 * GROUP),  k = (i // GROUP) % 4,  j = i % GROUP
#     u[i] = rand4x(seed, offset + g * GROUP + j)[k]
#
# GROUP is part of the contract between NumPy and the kernels (they import it
# from here); changing it changes every mask.

GROUP = 1024


def counters_used(n: int) -> int:
    """How many Philox counters a stream of n uniforms consumes from ``offset``
    (a second stream under the same seed may start at offset + this)."""
    return -(-int(n) // (4 * GROUP)) * GROUP


# Groups per block of uniform_blocks: 16 groups are 16K Philox counters, so
# the rounds' uint64 products (128 KiB) stay in cache.
_GROUPS_PER_BLOCK = 16


def uniform_blocks(seed: int, offset: int, n: int):
    """The stream u[0..n) of uniforms (layout above) in consecutive pieces:
    yields (start, u[start:start + len]) with whole groups per piece, so that
    a consumer can use each piece while it is still in cache."""
    groups = -(-int(n) // (4 * GROUP))
    for g0 in range(0, groups, _GROUPS_PER_BLOCK):
        g1 = min(groups, g0 + _GROUPS_PER_BLOCK)
        counters = int(offset) + np.arange(g0 * GROUP, g1 * GROUP, dtype=np.int64)
        u = np.empty((g1 - g0, 4, GROUP), dtype=np.float32)
        for lane, word in enumerate(randint4x(seed, counters)):
            u[:, lane, :] = uint_to_uniform(word).reshape(g1 - g0, GROUP)
        start = g0 * 4 * GROUP
        yield start, u.reshape(-1)[:n - start]


def uniforms(seed: int, offset: int, n: int) -> np.ndarray:
    """The stream u[0..n) of float32 uniforms in [0, 1) (layout above)."""
    out = np.empty(int(n), dtype=np.float32)
    for start, u in uniform_blocks(seed, offset, n):
        out[start:start + u.size] = u
    return out


def memory_order(shape, strides) -> list[int] | None:
    """The axes of a dense array from slowest to fastest in memory, or None
    when the array does not cover its storage densely (gaps, overlaps).

    ``strides`` in elements. Same test as lamina.kernels.launch.is_dense:
    axes of size 1 take no part (their stride is meaningless; they go first)."""
    shape, strides = tuple(shape), tuple(strides)
    ones = [d for d in range(len(shape)) if shape[d] == 1]
    big = sorted((d for d in range(len(shape)) if shape[d] != 1), key=lambda d: strides[d])
    expected = 1
    for d in big:
        if strides[d] != expected:
            return None
        expected *= shape[d]
    return ones + big[::-1]


def keep_mask(seed: int, offset: int, shape, p: float, strides=None) -> np.ndarray:
    """Dropout's keep mask for an array of ``shape``: element kept when its
    uniform is >= p (float32 comparison), so P(keep) = 1 - p, p = 0 keeps all
    and p = 1 none.

    The stream is laid along memory order: with ``strides`` (in elements) of a
    dense array the element at storage position s gets u[s]; with
    ``strides=None`` or a non-dense layout, row-major (C) order."""
    shape = tuple(shape)
    n = int(np.prod(shape, dtype=np.int64))
    order = memory_order(shape, strides) if strides is not None else None
    if order is None:
        order = list(range(len(shape)))
    u = uniforms(seed, offset, n).reshape([shape[d] for d in order])
    return np.asarray(u >= np.float32(p)).transpose(np.argsort(order))


def bernoulli(seed: int, offset: int, shape, prob: float) -> np.ndarray:
    """Bernoulli(prob) draws over ``shape`` in row-major order: u < prob
    (float32 comparison)."""
    shape = tuple(shape)
    n = int(np.prod(shape, dtype=np.int64))
    return np.asarray(uniforms(seed, offset, n) < np.float32(prob)).reshape(shape)
