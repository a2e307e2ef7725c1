"""Pooling at the edges, against PyTorch: indices, NaN, ties, -inf windows,
ceil_mode output sizes, memory format, errors, nn modules, fake impls.

Each check runs on the NumPy reference and, where marked, on the Triton
kernels under the interpreter (small shapes: the interpreter is slow).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF

import lamina
import lamina.functional as F
import lamina.nn as LN

BACKENDS = ["reference", "triton"]


def seeded(seed: int, draw, *args, **kwargs):
    """draw(*args, generator=...) from a CPU generator seeded ``seed``, drawn
    on the CPU and moved to the default device (LAMINA_TEST_DEVICE=cuda
    makes that the card, where a CPU generator cannot draw)."""
    g = torch.Generator().manual_seed(seed)
    return draw(*args, generator=g, device="cpu", **kwargs).to(torch.get_default_device())


def forward_backward(fn, x, kwargs, dy_seed=0):
    """(y, indices or None, dx) of fn with a fixed random upstream gradient."""
    x = x.detach().clone(memory_format=torch.preserve_format).requires_grad_(True)
    out = fn(x, **kwargs)
    y, idx = out if isinstance(out, tuple) else (out, None)
    dy = seeded(dy_seed, torch.randn, y.shape, dtype=torch.float64).to(y.dtype)
    (dx,) = torch.autograd.grad(y, x, dy)
    return y.detach(), idx, dx


def assert_same(name, kwargs, x):
    """lamina's fn equals torch's: values (NaN in place), indices exactly,
    gradients (to rounding: overlapping windows add in another order)."""
    y, idx, dx = forward_backward(getattr(F, name), x, kwargs)
    y_t, idx_t, dx_t = forward_backward(getattr(TF, name), x, kwargs)
    exact = dict(rtol=0, atol=0) if "max" in name else {}  # a max is exact, a mean is rounded
    torch.testing.assert_close(y, y_t, equal_nan=True, **exact)
    if idx_t is not None:
        assert idx.dtype == torch.int64
        assert torch.equal(idx, idx_t), f"indices differ:\n{idx}\n{idx_t}"
    torch.testing.assert_close(dx, dx_t, equal_nan=True)


MAX_KWARGS = [
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=2),
    dict(kernel_size=3, stride=1, padding=1),
    dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 1), dilation=(2, 1)),
    dict(kernel_size=2, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=3, stride=2, ceil_mode=True),
]


# --- indices, ties, NaN, -inf ---------------------------------------------------

def tie_input(shape, seed=0):
    """Few distinct values: most windows hold several equal maxima."""
    return seeded(seed, torch.randint, 0, 3, shape).to(torch.float32)


def nan_input(shape, seed=0):
    """Random values with NaNs, some windows holding two or more."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, device="cpu")
    x[torch.rand(shape, generator=g, device="cpu") < 0.2] = float("nan")
    return x.to(torch.get_default_device())  # (as seeded())


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("kwargs", MAX_KWARGS)
@pytest.mark.parametrize("make", [torch.randn, tie_input, nan_input], ids=["randn", "ties", "nan"])
def test_max_pool2d_indices_ties_nan(backend, backend_name, kwargs, make):
    backend(backend_name)
    x = make((2, 3, 7, 9))
    assert_same("max_pool2d", dict(kwargs, return_indices=True), x)
    assert_same("max_pool2d", dict(kwargs, return_indices=True), x.contiguous(memory_format=torch.channels_last))


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("output_size", [(3, 4), (1, 1), (9, 11), (None, 2)])
@pytest.mark.parametrize("make", [torch.randn, tie_input, nan_input], ids=["randn", "ties", "nan"])
def test_adaptive_max_pool2d_indices_ties_nan(backend, backend_name, output_size, make):
    backend(backend_name)
    x = make((2, 3, 7, 9))
    assert_same("adaptive_max_pool2d", dict(output_size=output_size, return_indices=True), x)
    assert_same("adaptive_max_pool2d", dict(output_size=output_size, return_indices=True),
                x.contiguous(memory_format=torch.channels_last))


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_max_pool2d_all_minus_inf_windows(backend, backend_name):
    """A window with nothing above -inf points, like PyTorch, at its first element inside the input."""
    backend(backend_name)
    x = torch.full((1, 2, 5, 6), float("-inf"))
    x[0, 1, 2, 3] = 1.0
    for kwargs in [dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=2, stride=2, padding=1, ceil_mode=True),
                   dict(kernel_size=3, stride=1, padding=1, dilation=2)]:
        assert_same("max_pool2d", dict(kwargs, return_indices=True), x)
    assert_same("adaptive_max_pool2d", dict(output_size=(2, 4), return_indices=True), x)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_large_windows_use_wider_positions(backend, backend_name):
    """Windows of more than 256 elements (positions no longer fit uint8)."""
    backend(backend_name)
    x = tie_input((1, 2, 20, 19), seed=3)
    assert_same("adaptive_max_pool2d", dict(output_size=(1, 1), return_indices=True), x)
    assert_same("max_pool2d", dict(kernel_size=(17, 16), stride=3, return_indices=True), x)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_nan_propagates_in_average_pools(backend, backend_name):
    backend(backend_name)
    x = nan_input((1, 2, 6, 7), seed=1)
    for kwargs in [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1, count_include_pad=False)]:
        assert_same("avg_pool2d", kwargs, x)
    assert_same("adaptive_avg_pool2d", dict(output_size=(4, 3)), x)


@pytest.mark.parametrize("shape", [(2, 130, 9, 40), (3, 5, 7, 7), (1, 64, 1, 3)])
def test_global_average_channels_last(backend, monkeypatch, shape):
    """Global average pooling of channels_last inputs has its own kernel
    (positions x channels tiles), here on small tiles: several channel blocks
    and several chunks of positions (130 channels, 360 positions), the
    ResNet head's 7x7, a single row."""
    from lamina.kernels import pooling

    backend("triton")
    monkeypatch.setattr(pooling, "GLOBAL_CL_TILE", 1024)
    monkeypatch.setattr(pooling, "GLOBAL_CL_ROW_BYTES", 256)  # 64 float32 channels
    x = seeded(2, torch.randn, *shape).contiguous(memory_format=torch.channels_last)
    for output_size in (1, (1, 1)):
        assert_same("adaptive_avg_pool2d", dict(output_size=output_size), x)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_three_d_input_and_empty_batch(backend, backend_name):
    backend(backend_name)
    x = torch.randn(3, 8, 8)
    assert_same("max_pool2d", dict(kernel_size=3, stride=2, padding=1, return_indices=True), x)
    assert_same("adaptive_max_pool2d", dict(output_size=3, return_indices=True), x)
    for name, kwargs in [("max_pool2d", dict(kernel_size=2, return_indices=True)), ("avg_pool2d", dict(kernel_size=2)),
                         ("adaptive_avg_pool2d", dict(output_size=3)),
                         ("adaptive_max_pool2d", dict(output_size=3, return_indices=True))]:
        out = getattr(F, name)(torch.randn(0, 3, 8, 8), **kwargs)
        out_t = getattr(TF, name)(torch.randn(0, 3, 8, 8), **kwargs)
        for a, b in zip(out if isinstance(out, tuple) else (out,), out_t if isinstance(out_t, tuple) else (out_t,)):
            assert a.shape == b.shape and a.dtype == b.dtype


# --- ceil_mode output sizes -----------------------------------------------------

def test_output_sizes_match_torch_everywhere():
    """A sweep of sizes, kernels, strides, paddings, dilations, ceil_mode: the
    same output shape (or the same error) as PyTorch, and the same values."""
    lamina.set_backend("auto")
    for size in range(1, 9):
        x = torch.randn(1, 1, size, size + 1, dtype=torch.float64)
        for k in range(1, 5):
            for s in range(1, 4):
                for d in (1, 2):
                    for p in range(0, ((k - 1) * d + 1) // 2 + 1):
                        for ceil in (False, True):
                            kwargs = dict(kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=ceil)
                            try:
                                expected = TF.max_pool2d(x, **kwargs)
                            except RuntimeError:
                                with pytest.raises(RuntimeError):
                                    F.max_pool2d(x, **kwargs)
                                continue
                            torch.testing.assert_close(F.max_pool2d(x, **kwargs), expected, rtol=0, atol=0)
                            if d == 1 and p <= k // 2:
                                avg = dict(kernel_size=k, stride=s, padding=p, ceil_mode=ceil)
                                for cip in (True, False):
                                    torch.testing.assert_close(F.avg_pool2d(x, **avg, count_include_pad=cip),
                                                               TF.avg_pool2d(x, **avg, count_include_pad=cip))


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_ceil_mode_edge_windows(backend, backend_name):
    """Last windows that hang past the input (kept) or would start in the right padding (dropped)."""
    backend(backend_name)
    for h, kwargs in [(8, dict(kernel_size=2, stride=2, padding=1, ceil_mode=True)),  # last window = 1 element + pad
                      (7, dict(kernel_size=2, stride=2, padding=1, ceil_mode=True)),  # would start in the pad: dropped
                      (6, dict(kernel_size=3, stride=2, ceil_mode=True)),  # hangs past the input, no padding
                      (7, dict(kernel_size=2, stride=2, ceil_mode=True)),  # tiles, the last one hanging over
                      (5, dict(kernel_size=3, stride=3, padding=1, ceil_mode=True))]:
        x = torch.randn(1, 2, h, h)
        assert_same("max_pool2d", dict(kwargs, return_indices=True), x)
        for cip in (True, False):
            assert_same("avg_pool2d", dict(kwargs, count_include_pad=cip), x)
        assert_same("avg_pool2d", dict(kwargs, divisor_override=2), x)


# --- memory format ---------------------------------------------------------------

@pytest.mark.parametrize("backend_name", BACKENDS)
def test_channels_last_kept(backend, backend_name):
    backend(backend_name)
    x = torch.randn(2, 3, 6, 5).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    for y in [F.max_pool2d(x, 2), F.avg_pool2d(x, 2), F.adaptive_avg_pool2d(x, 3), F.adaptive_max_pool2d(x, 3)]:
        assert y.is_contiguous(memory_format=torch.channels_last)
        (dx,) = torch.autograd.grad(y.sum(), x)
        assert dx.is_contiguous(memory_format=torch.channels_last)


# --- errors ----------------------------------------------------------------------

BAD_CALLS = [
    ("max_pool2d", (1, 3, 4, 4), dict(kernel_size=3, padding=2)),  # padding > half the kernel
    ("max_pool2d", (1, 3, 4, 4), dict(kernel_size=0)),
    ("max_pool2d", (1, 3, 4, 4), dict(kernel_size=2, stride=0)),
    ("max_pool2d", (1, 3, 4, 4), dict(kernel_size=2, stride=-1)),
    ("max_pool2d", (1, 3, 4, 4), dict(kernel_size=2, dilation=0)),
    ("max_pool2d", (1, 3, 4, 4), dict(kernel_size=5)),  # empty output
    ("max_pool2d", (1, 3, 4, 4), dict(kernel_size=(2, 2, 2))),
    ("max_pool2d", (4, 4), dict(kernel_size=2)),
    ("max_pool2d", (1, 0, 4, 4), dict(kernel_size=2)),
    ("avg_pool2d", (1, 3, 4, 4), dict(kernel_size=3, padding=2)),
    ("avg_pool2d", (1, 3, 4, 4), dict(kernel_size=5)),
    ("avg_pool2d", (1, 3, 4, 4), dict(kernel_size=2, divisor_override=0)),
    ("adaptive_avg_pool2d", (4, 4), dict(output_size=2)),
    ("adaptive_max_pool2d", (1, 3, 4, 4), dict(output_size=(2, 2, 2))),
    ("adaptive_avg_pool2d", (1, 3, 0, 4), dict(output_size=2)),
    ("adaptive_max_pool2d", (1, 0, 4, 4), dict(output_size=2)),
    ("avg_pool2d", (0, 4, 4), dict(kernel_size=2)),
]


@pytest.mark.parametrize("name,shape", [("adaptive_avg_pool2d", (1, 0, 4, 4)), ("adaptive_avg_pool2d", (0, 4, 4)),
                                        ("adaptive_max_pool2d", (0, 4, 4))])
def test_empty_channels_allowed_like_torch(name, shape):
    x = torch.randn(shape)
    assert getattr(F, name)(x, 2).shape == getattr(TF, name)(x, 2).shape


@pytest.mark.parametrize("name,shape,kwargs", BAD_CALLS)
def test_errors_like_torch(name, shape, kwargs):
    x = torch.randn(shape)
    with pytest.raises(Exception) as expected:
        getattr(TF, name)(x, **kwargs)
    with pytest.raises(expected.type):
        getattr(F, name)(x, **kwargs)


def test_integer_input_is_torchs_answer():
    """lamina pools floats; integer pooling is handed to PyTorch's op."""
    x = torch.arange(32, dtype=torch.int32).reshape(2, 1, 4, 4)
    assert torch.equal(F.max_pool2d(x, 2), torch.nn.functional.max_pool2d(x, 2))


# --- nn modules --------------------------------------------------------------------

@pytest.mark.parametrize("ours,theirs,args", [
    (LN.MaxPool2d, torch.nn.MaxPool2d, dict(kernel_size=3, stride=2, padding=1, return_indices=True, ceil_mode=True)),
    (LN.AvgPool2d, torch.nn.AvgPool2d, dict(kernel_size=3, stride=2, padding=1, count_include_pad=False, divisor_override=2)),
    (LN.AdaptiveAvgPool2d, torch.nn.AdaptiveAvgPool2d, dict(output_size=(3, None))),
    (LN.AdaptiveMaxPool2d, torch.nn.AdaptiveMaxPool2d, dict(output_size=(3, 4), return_indices=True)),
])
def test_nn_modules_match_torch(ours, theirs, args):
    m, t = ours(**args), theirs(**args)
    assert isinstance(m, theirs)
    assert repr(m) == repr(t) and m.state_dict().keys() == t.state_dict().keys()
    x = torch.randn(2, 3, 7, 9, dtype=torch.float64)
    out, out_t = m(x), t(x)
    for a, b in zip(out if isinstance(out, tuple) else (out,), out_t if isinstance(out_t, tuple) else (out_t,)):
        torch.testing.assert_close(a, b)


# --- torch.library: fake impls agree with the real ones ------------------------------

@pytest.mark.parametrize("op,args", [
    ("max_pool2d_forward", ((2, 3, 7, 9), [3, 3], [2, 2], [1, 1], [1, 1], True, True)),
    ("avg_pool2d_forward", ((2, 3, 7, 9), [3, 3], [2, 2], [1, 1], True, False, 0)),
    ("adaptive_avg_pool2d_forward", ((2, 3, 7, 9), [3, 4])),
    ("adaptive_max_pool2d_forward", ((2, 3, 7, 9), [3, 4], True)),
])
def test_opcheck(op, args):
    lamina.set_backend("auto")
    shape, *rest = args
    for x in [torch.randn(shape, dtype=torch.float64),
              torch.randn(shape, dtype=torch.float64).contiguous(memory_format=torch.channels_last)]:
        torch.library.opcheck(getattr(torch.ops.lamina, op), (x.requires_grad_(True), *rest),
                              test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


def test_empty_stride_means_kernel_size():
    x = torch.randn(2, 3, 7, 9)
    assert torch.equal(F.max_pool2d(x, 3, stride=[]), TF.max_pool2d(x, 3, stride=[]))
    assert torch.equal(F.avg_pool2d(x, 2, stride=()), TF.avg_pool2d(x, 2, stride=()))


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_max_pool_saves_compact_positions(backend, backend_name):
    """What backward keeps is one uint8 per output (window position), not int64 indices."""
    backend(backend_name)
    x = torch.randn(1, 2, 6, 6)
    y, pos, indices = torch.ops.lamina.max_pool2d_forward(x, [3, 3], [2, 2], [1, 1], [1, 1], False, False)
    assert pos.dtype == torch.uint8 and pos.shape == y.shape and indices.numel() == 0
    _, expected = TF.max_pool2d(x, 3, 2, 1, return_indices=True)
    row, col = pos.long() // 3, pos.long() % 3
    oh, ow = torch.arange(3).view(3, 1), torch.arange(3).view(1, 3)
    assert torch.equal((oh * 2 - 1 + row) * 6 + (ow * 2 - 1 + col), expected)


@pytest.mark.parametrize("name,kwargs", [
    ("max_pool2d", dict(kernel_size=3, stride=2, padding=1)),
    ("max_pool2d", dict(kernel_size=2, stride=2, ceil_mode=True)),
    ("avg_pool2d", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
    ("avg_pool2d", dict(kernel_size=2, divisor_override=3)),
    ("adaptive_avg_pool2d", dict(output_size=(3, 4))),
    ("adaptive_max_pool2d", dict(output_size=(3, 4))),
])
def test_double_backward(name, kwargs):
    lamina.set_backend("auto")
    x = torch.randn(1, 2, 7, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda t: getattr(F, name)(t, **kwargs), (x,))
    # and equal to PyTorch's
    dy = torch.randn_like(getattr(TF, name)(x, **kwargs))
    ddx = torch.randn_like(x)
    outs = []
    for fn in (getattr(F, name), getattr(TF, name)):
        (dx,) = torch.autograd.grad(fn(x, **kwargs), x, dy.requires_grad_(True), create_graph=True)
        outs.append(torch.autograd.grad(dx, dy, ddx)[0])
    torch.testing.assert_close(outs[0], outs[1])


# --- 64-bit offsets --------------------------------------------------------------

@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("name,kwargs", [("max_pool2d", dict(kernel_size=3, stride=2, padding=1)),
                                         ("avg_pool2d", dict(kernel_size=2)),
                                         ("max_pool2d", dict(kernel_size=(2, 3), stride=1, dilation=(2, 1))),
                                         ("adaptive_avg_pool2d", dict(output_size=1)),
                                         ("adaptive_avg_pool2d", dict(output_size=(4, 3))),
                                         ("adaptive_max_pool2d", dict(output_size=(4, 3), return_indices=True))])
def test_int64_offsets_match_torch(backend, monkeypatch, name, kwargs, layout):
    """The kernels' 64-bit offset path (taken past 2**31 elements, which only
    a card can hold: scripts/gpu_extremes.py) forced on small tensors under
    the interpreter: the same values as torch's."""
    from lamina.kernels import pooling

    backend("triton")
    monkeypatch.setattr(pooling, "_needs_int64", lambda *tensors: True)
    x = seeded(1, torch.randn, 2, 5, 9, 7)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        x = seeded(1, torch.randn, 2, 5, 9, 14)[..., ::2]
    assert_same(name, kwargs, x)


# --- stride-2 columns read as contiguous row segments ----------------------------

@pytest.mark.parametrize("name,kwargs", [
    ("max_pool2d", dict(kernel_size=3, stride=2, padding=1)),
    ("max_pool2d", dict(kernel_size=2, stride=2)),
    ("max_pool2d", dict(kernel_size=(3, 5), stride=2, padding=(1, 2), dilation=(2, 1), ceil_mode=True)),
    ("max_pool2d", dict(kernel_size=4, stride=(1, 2), padding=1, return_indices=True)),
    ("avg_pool2d", dict(kernel_size=3, stride=2, padding=1, count_include_pad=False)),
    ("avg_pool2d", dict(kernel_size=2, stride=2)),
])
@pytest.mark.parametrize("make", [torch.randn, tie_input, nan_input], ids=["randn", "ties", "nan"])
def test_stride2_row_segments(backend, name, kwargs, make):
    """NCHW with column stride 2 loads each input row under a tile as
    segments of contiguous columns split into even and odd ones (PAIRS in
    kernels/pooling.py): rows 300 wide give two column programs, so the
    segments of the second start mid-row; odd and even padding shift which
    half holds which window column."""
    backend("triton")
    assert_same(name, kwargs, make((2, 3, 7, 300)))


@pytest.mark.parametrize("name,kwargs", [
    ("max_pool2d", dict(kernel_size=3, stride=2, padding=1)),
    ("max_pool2d", dict(kernel_size=2, stride=2)),
    ("max_pool2d", dict(kernel_size=(3, 4), stride=2, padding=(0, 2), ceil_mode=True)),
    ("max_pool2d", dict(kernel_size=1, stride=2)),
    ("avg_pool2d", dict(kernel_size=3, stride=2, padding=1, count_include_pad=False)),
    ("avg_pool2d", dict(kernel_size=(2, 3), stride=2, padding=(1, 0), ceil_mode=True, divisor_override=5)),
])
@pytest.mark.parametrize("make", [torch.randn, tie_input, nan_input], ids=["randn", "ties", "nan"])
def test_stride2_backward_by_parity(backend, name, kwargs, make):
    """The NCHW stride-2 backward by parity (_pool2d_backward_pairs_kernel):
    70 x 71 planes give several programs down and across each plane, odd
    widths and padding shift where the even and odd columns start, ceil_mode
    leaves inputs no window reads (their gradient 0)."""
    backend("triton")
    assert_same(name, kwargs, make((2, 3, 70, 71)))
