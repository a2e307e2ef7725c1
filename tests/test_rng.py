"""lamina.rng: Philox4x32-10 in NumPy against the published known-answer
vectors and, bit for bit, against Triton's tl.randint / tl.rand (under the
interpreter on a machine without CUDA)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina  # noqa: F401  (switches the Triton interpreter on before triton is imported)
from lamina import rng

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SEEDS = [0, 1, 12345, 2**31 - 1, 2**31, 2**32 + 7, 2**40 + 3, 2**63 - 5]


# Random123's kat_vectors for philox4x32_10: (counter, key) -> output
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter,key,expected", KNOWN_ANSWERS)
def test_philox_known_answers(counter, key, expected):
    seed = key[0] | (key[1] << 32)  # Triton's key: (seed low word, seed high word)
    out = rng.philox(seed, *(np.array([c], dtype=np.uint32) for c in counter))
    assert tuple(int(o[0]) for o in out) == expected


@triton.jit
def _draw_kernel(off_ptr, ints_ptr, floats_ptr, seed, N: tl.constexpr):
    """ints: randint4x (4 x N uint32 as int64); floats: rand, then rand4x."""
    i = tl.arange(0, N)
    offs = tl.load(off_ptr + i)
    r0, r1, r2, r3 = tl.randint4x(seed, offs)
    tl.store(ints_ptr + i, r0.to(tl.int64))
    tl.store(ints_ptr + N + i, r1.to(tl.int64))
    tl.store(ints_ptr + 2 * N + i, r2.to(tl.int64))
    tl.store(ints_ptr + 3 * N + i, r3.to(tl.int64))
    tl.store(ints_ptr + 4 * N + i, tl.randint(seed, offs).to(tl.int64))
    u0, u1, u2, u3 = tl.rand4x(seed, offs)
    tl.store(floats_ptr + i, tl.rand(seed, offs))
    tl.store(floats_ptr + N + i, u0)
    tl.store(floats_ptr + 2 * N + i, u1)
    tl.store(floats_ptr + 3 * N + i, u2)
    tl.store(floats_ptr + 4 * N + i, u3)


def triton_draws(seed, offsets):
    n = offsets.numel()
    ints = torch.empty(5 * n, dtype=torch.int64, device=DEVICE)
    floats = torch.empty(5 * n, dtype=torch.float32, device=DEVICE)
    _draw_kernel[(1,)](offsets.to(DEVICE), ints, floats, seed, N=n)
    return ints.cpu().numpy().reshape(5, n), floats.cpu().numpy().reshape(5, n)


OFFSETS = {
    "int32": torch.arange(64, dtype=torch.int32) * 977 + 3,
    "int64-small": torch.arange(64, dtype=torch.int64) * 131,
    "int64-past-2**32": torch.arange(64, dtype=torch.int64) * 2**29 + 2**32 - 7,
    "int64-huge": torch.arange(64, dtype=torch.int64) * 7 + 2**62 + 11,
}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("offsets", list(OFFSETS), ids=list(OFFSETS))
def test_bit_identical_to_triton(seed, offsets):
    offs = OFFSETS[offsets]
    ints, floats = triton_draws(seed, offs)
    o = offs.cpu().numpy()  # (LAMINA_TEST_DEVICE=cuda makes OFFSETS card tensors)
    r4 = rng.randint4x(seed, o)
    for k in range(4):
        np.testing.assert_array_equal(ints[k], r4[k].astype(np.int64))
    np.testing.assert_array_equal(ints[4], rng.randint(seed, o).astype(np.int64))
    u4 = rng.rand4x(seed, o)
    np.testing.assert_array_equal(floats[0].view(np.uint32), rng.rand(seed, o).view(np.uint32))
    for k in range(4):
        np.testing.assert_array_equal(floats[1 + k].view(np.uint32), u4[k].view(np.uint32))


def test_uniform_range_and_extremes():
    # the words that map to the ends of [0, 1): 0 and 0xFFFFFFFF (int32 -1) give 0,
    # 0x7FFFFFFF and 0x80000000 give the largest value, still below 1
    words = np.array([0, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 1], dtype=np.uint32)
    u = rng.uint_to_uniform(words)
    assert u.dtype == np.float32
    assert u[0] == 0 and u[1] == 0
    assert u[2] == u[3] and u[2] < 1 and u[2] > 0.9999
    assert u[4] > 0
    big = rng.rand(3, np.arange(200_000))
    assert big.min() >= 0 and big.max() < 1
    assert abs(big.mean() - 0.5) < 5 * np.sqrt(1 / 12 / big.size)


def test_uniforms_stream_layout():
    """u[i] = rand4x(seed, offset + g*GROUP + j)[k] for i = g*4*GROUP + k*GROUP + j."""
    G = rng.GROUP
    n = 2 * 4 * G + 5  # two full groups and a partial third
    seed, offset = 2**35 + 1, 17
    u = rng.uniforms(seed, offset, n)
    i = np.arange(n)
    g, k, j = i // (4 * G), (i // G) % 4, i % G
    lanes = rng.rand4x(seed, offset + g * G + j)
    expected = np.choose(k, lanes)
    np.testing.assert_array_equal(u.view(np.uint32), expected.view(np.uint32))
    assert rng.counters_used(n) == 3 * G
    # a stream is a prefix of any longer stream from the same (seed, offset)
    np.testing.assert_array_equal(rng.uniforms(seed, offset, 100), u[:100])


def test_keep_mask_follows_memory_order():
    seed, p = 99, 0.4
    shape = (2, 3, 4, 5)
    x = torch.empty(shape).contiguous(memory_format=torch.channels_last)
    cl = rng.keep_mask(seed, 0, shape, p, x.stride())
    flat = rng.uniforms(seed, 0, 120) >= np.float32(p)
    # storage position of (n, c, h, w) in channels_last is ((n*H + h)*W + w)*C + c
    np.testing.assert_array_equal(cl, flat.reshape(2, 4, 5, 3).transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(rng.keep_mask(seed, 0, shape, p), flat.reshape(shape))
    # a non-dense layout falls back to row-major order
    np.testing.assert_array_equal(rng.keep_mask(seed, 0, shape, p, (200, 40, 10, 2)), flat.reshape(shape))


def test_memory_order():
    assert rng.memory_order((2, 3, 4), (12, 4, 1)) == [0, 1, 2]
    assert rng.memory_order((2, 3, 4, 5), (60, 1, 15, 3)) == [0, 2, 3, 1]
    assert rng.memory_order((2, 1, 4), (4, 99, 1)) == [1, 0, 2]
    assert rng.memory_order((2, 3), (6, 2)) is None  # a gap
    assert rng.memory_order((2, 3), (0, 1)) is None  # expanded


def test_bernoulli_rate():
    z = rng.bernoulli(5, 0, (400, 500), 0.07)
    assert z.dtype == bool and z.shape == (400, 500)
    assert abs(z.mean() - 0.07) < 5 * np.sqrt(0.07 * 0.93 / z.size)
    assert not rng.bernoulli(5, 0, (1000,), 0.0).any() and rng.bernoulli(5, 0, (1000,), 1.0).all()
