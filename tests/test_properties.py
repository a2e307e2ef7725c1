"""Property-based tests, one per family: hypothesis draws shapes, strides
(views that are not contiguous), memory formats and arguments; each example
is compared, forward and backward, with PyTorch (the CPU reference runs) and
the Triton kernels under the interpreter with the reference.

Bounded so the file runs in about a minute on two cores: few examples, small
shapes, derandomized so CI sees the same examples every run."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as TF
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import lamina
import lamina.functional as LF
from lamina.optable import _torch_dropout

SETTINGS = dict(max_examples=25, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---- tensors of any layout ----------------------------------------------------

@st.composite
def laid_out(draw, shape, dtype=torch.float32):
    """A tensor of ``shape`` (float64 values rounded to dtype) in one of the
    layouts lamina must handle: contiguous, channels_last (4-D), a transposed
    view, a strided slice of a bigger tensor, an expanded (stride 0) view."""
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator(torch.get_default_device()).manual_seed(seed)
    layout = draw(st.sampled_from(["contiguous", "channels_last", "transposed", "sliced", "expanded"]))
    make = lambda s: torch.randn(s, generator=g, dtype=torch.float64).to(dtype)  # noqa: E731
    if layout == "channels_last" and len(shape) == 4:
        return make(shape).contiguous(memory_format=torch.channels_last)
    if layout == "transposed" and len(shape) >= 2:
        return make(shape[:-2] + (shape[-1], shape[-2])).transpose(-1, -2)
    if layout == "sliced" and len(shape) >= 1:
        return make(shape[:-1] + (2 * shape[-1],))[..., ::2]
    if layout == "expanded" and len(shape) >= 2 and shape[0] > 1:
        return make((1,) + tuple(shape[1:])).expand(shape)
    return make(shape)


def shapes(min_dims=1, max_dims=4, min_side=1, max_side=6):
    return st.lists(st.integers(min_side, max_side), min_size=min_dims, max_size=max_dims).map(tuple)


def forward_backward(fn, x, params=()):
    x = x.detach().requires_grad_(True)  # a view stays a view: its strides reach the op
    params = [p.detach().clone().requires_grad_(True) for p in params]
    before = x.detach().clone()
    out = fn(x, *params)
    y = out[0] if isinstance(out, tuple) else out
    g = torch.Generator(torch.get_default_device()).manual_seed(3)
    dy = torch.randn(y.shape, generator=g, dtype=torch.float64).to(y.dtype)
    grads = torch.autograd.grad(y, [x, *params], dy, allow_unused=True) if y.requires_grad else []
    assert torch.equal(x.detach(), before), "the input was modified"
    return [y.detach()] + [gr for gr in grads if gr is not None]


def check(fn_lamina, fn_torch, x, params=(), rtol=1e-4, atol=1e-5, reduce_len=1):
    """lamina (reference) against torch, then the kernels (interpreter)
    against the reference; reduced gradients get atol * sqrt(length)."""
    lamina.set_backend("reference")
    try:
        ref = forward_backward(fn_lamina, x, params)
        # PyTorch in float64 on the same values: the truth (PyTorch's own
        # float32 rounding noise, e.g. a 3e-5 gradient of a one-element layer
        # norm that is exactly 0, is not held against lamina)
        theirs = [t.to(x.dtype) for t in forward_backward(fn_torch, x.double(), [p.double() for p in params])]
        lamina.set_backend("triton")
        kern = forward_backward(fn_lamina, x, params)
    finally:
        lamina.set_backend("auto")
    assert len(ref) == len(theirs) == len(kern)
    for i, (r, t, k) in enumerate(zip(ref, theirs, kern)):
        tol = atol * (math.sqrt(reduce_len) if i >= 2 else 1)
        assert r.shape == t.shape == k.shape
        torch.testing.assert_close(r, t, rtol=rtol, atol=tol, equal_nan=True, msg=lambda m: f"vs torch, output {i}: {m}")
        torch.testing.assert_close(k, r, rtol=rtol, atol=tol, equal_nan=True, msg=lambda m: f"kernel, output {i}: {m}")
        # the output (not dx: dy here is contiguous) keeps a channels_last
        # input's format as torch's does
        # (unambiguous shapes only: a size-1 C, H or W is both formats)
        if i == 0 and r.dim() == 4 and x.dim() == 4 and min(x.shape[1:]) > 1 and not x.is_contiguous() \
                and x.is_contiguous(memory_format=torch.channels_last):
            assert k.is_contiguous(memory_format=torch.channels_last) == t.is_contiguous(memory_format=torch.channels_last)


# ---- activation ------------------------------------------------------------------

ACTIVATIONS = {
    "relu": (lambda F, x, a: F.relu(x)),
    "leaky_relu": (lambda F, x, a: F.leaky_relu(x, a)),
    "sigmoid": (lambda F, x, a: F.sigmoid(x)),
    "tanh": (lambda F, x, a: F.tanh(x)),
    "gelu": (lambda F, x, a: F.gelu(x)),
    "gelu_tanh": (lambda F, x, a: F.gelu(x, approximate="tanh")),
    "silu": (lambda F, x, a: F.silu(x)),
}
TORCH_ACT = type("T", (), {"relu": staticmethod(TF.relu), "leaky_relu": staticmethod(TF.leaky_relu),
                           "sigmoid": staticmethod(torch.sigmoid), "tanh": staticmethod(torch.tanh),
                           "gelu": staticmethod(TF.gelu), "silu": staticmethod(TF.silu)})


@settings(**SETTINGS)
@given(data=st.data(), name=st.sampled_from(list(ACTIVATIONS)), slope=st.floats(-2, 2))
def test_activation_properties(data, name, slope):
    x = data.draw(laid_out(data.draw(shapes(0, 4, 0, 6))))
    call = ACTIVATIONS[name]
    check(lambda t: call(LF, t, slope), lambda t: call(TORCH_ACT, t, slope), x)


@settings(**SETTINGS)
@given(data=st.data(), per_channel=st.booleans())
def test_prelu_properties(data, per_channel):
    x = data.draw(laid_out(data.draw(shapes(2, 4, 1, 6))))
    w = torch.rand(x.shape[1] if per_channel else 1) * 0.5
    check(LF.prelu, TF.prelu, x, [w], reduce_len=x.numel())


# ---- normalization ---------------------------------------------------------------

@settings(**SETTINGS)
@given(data=st.data(), kind=st.sampled_from(["layer_norm", "rms_norm"]), k=st.integers(1, 2),
       affine=st.booleans(), eps=st.sampled_from([1e-5, 1e-3, 0.1]))
def test_row_norm_properties(data, kind, k, affine, eps):
    x = data.draw(laid_out(data.draw(shapes(k, 4, 1, 7))))
    trailing = list(x.shape[x.dim() - k:])
    params = [torch.rand(trailing) + 0.5, torch.randn(trailing)] if affine else []
    if kind == "layer_norm":
        def call(F):
            return lambda t, *p: F.layer_norm(t, trailing, *p, eps=eps)
    else:
        def call(F):
            return lambda t, *p: F.rms_norm(t, trailing, *p[:1], eps=eps)
        params = params[:1]
    check(call(LF), call(TF), x, params, reduce_len=max(1, x.numel() // max(1, math.prod(trailing))))


@settings(**SETTINGS)
@given(data=st.data(), training=st.booleans(), affine=st.booleans(), momentum=st.sampled_from([0.1, 0.5, None]))
def test_batch_norm_properties(data, training, affine, momentum):
    shape = data.draw(shapes(2, 4, 1, 5))
    assume(not training or math.prod(shape) // shape[1] > 1)
    x = data.draw(laid_out(shape))
    c = shape[1]
    params = [torch.rand(c) + 0.5, torch.randn(c)] if affine else []
    stats = {}

    def call(F, key):
        def run(t, *p):
            stats[key] = [torch.linspace(-1, 1, c, dtype=t.dtype), torch.linspace(0.5, 2, c, dtype=t.dtype)]
            return F.batch_norm(t, *stats[key], *p, training=training, momentum=momentum or 0.0)
        return run

    check(call(LF, "lamina"), call(TF, "torch"), x, params, reduce_len=x.numel() // c)
    torch.testing.assert_close([t.double() for t in stats["lamina"]], stats["torch"], rtol=1e-4, atol=1e-5)


@settings(**{**SETTINGS, "max_examples": 12})  # two checks an example, the slowest kernels
@given(data=st.data(), affine=st.booleans(), groups_choice=st.integers(0, 10))
def test_group_and_instance_norm_properties(data, affine, groups_choice):
    shape = data.draw(shapes(3, 4, 1, 6))
    c = shape[1]
    divisors = [g for g in range(1, c + 1) if c % g == 0]
    groups = divisors[groups_choice % len(divisors)]
    assume(math.prod(shape) // groups > 1 and math.prod(shape[2:]) > 1)
    x = data.draw(laid_out(shape))
    params = [torch.rand(c) + 0.5, torch.randn(c)] if affine else []
    check(lambda t, *p: LF.group_norm(t, groups, *p), lambda t, *p: TF.group_norm(t, groups, *p), x, params,
          reduce_len=x.numel() // c)
    check(lambda t, *p: LF.instance_norm(t, None, None, *p), lambda t, *p: TF.instance_norm(t, None, None, *p),
          x, params, reduce_len=x.numel() // c)


# ---- pooling -----------------------------------------------------------------------

def windows_touch_input(size, k, s, p, d, ceil_mode):
    """Every pooling window (PyTorch's output size) holds an input index."""
    span = size + 2 * p - d * (k - 1) - 1
    out = (span + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return all(any(0 <= o * s - p + i * d < size for i in range(k)) for o in range(out))


@settings(**SETTINGS)
@given(data=st.data(), kind=st.sampled_from(["max", "avg"]), ceil_mode=st.booleans(),
       count_include_pad=st.booleans(), batched=st.booleans())
def test_pool_properties(data, kind, ceil_mode, count_include_pad, batched):
    n = data.draw(st.integers(0, 2)) if batched else None
    c = data.draw(st.integers(1, 3))
    h, w = data.draw(st.integers(1, 9)), data.draw(st.integers(1, 9))
    kh, kw = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    sh, sw = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    ph, pw = data.draw(st.integers(0, kh // 2)), data.draw(st.integers(0, kw // 2))
    dil = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2))) if kind == "max" else (1, 1)
    eff_h, eff_w = dil[0] * (kh - 1) + 1, dil[1] * (kw - 1) + 1
    assume(h + 2 * ph >= eff_h and w + 2 * pw >= eff_w)
    if kind == "max":
        # a dilated window can fall wholly in the padding; PyTorch's CPU
        # backward then writes out of bounds and aborts the process (see
        # tests/test_edges.py::test_max_pool_window_wholly_in_padding)
        assume(all(windows_touch_input(*a, ceil_mode) for a in ((h, kh, sh, ph, dil[0]), (w, kw, sw, pw, dil[1]))))
    shape = (c, h, w) if n is None else (n, c, h, w)
    x = data.draw(laid_out(shape))
    if kind == "max":
        kwargs = dict(kernel_size=(kh, kw), stride=(sh, sw), padding=(ph, pw), dilation=dil, ceil_mode=ceil_mode,
                      return_indices=data.draw(st.booleans()))
    else:
        kwargs = dict(kernel_size=(kh, kw), stride=(sh, sw), padding=(ph, pw), ceil_mode=ceil_mode,
                      count_include_pad=count_include_pad,
                      divisor_override=data.draw(st.sampled_from([None, None, 2, 5])))
    fn = f"{kind}_pool2d"
    check(lambda t: getattr(LF, fn)(t, **kwargs), lambda t: getattr(TF, fn)(t, **kwargs), x)
    if kind == "max" and kwargs["return_indices"]:
        lamina.set_backend("triton")
        try:
            _, idx = LF.max_pool2d(x, **kwargs)
        finally:
            lamina.set_backend("auto")
        _, idx_t = TF.max_pool2d(x, **kwargs)
        assert torch.equal(idx, idx_t)


@settings(**SETTINGS)
@given(data=st.data(), kind=st.sampled_from(["max", "avg"]))
def test_adaptive_pool_properties(data, kind):
    shape = data.draw(st.sampled_from([(2, 3), (3,)])) + (data.draw(st.integers(1, 9)), data.draw(st.integers(1, 9)))
    x = data.draw(laid_out(shape))
    out = (data.draw(st.one_of(st.none(), st.integers(1, 10))), data.draw(st.integers(1, 10)))
    fn = f"adaptive_{kind}_pool2d"
    check(lambda t: getattr(LF, fn)(t, out), lambda t: getattr(TF, fn)(t, out), x)


# ---- dropout -------------------------------------------------------------------------

@settings(**SETTINGS)
@given(data=st.data(), p=st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]), seed=st.integers(0, 2**40))
def test_dropout_properties(data, p, seed):
    """Against PyTorch's formula with lamina's mask (lamina.rng), and the
    kernels bit-identical to the reference (same seed, same mask)."""
    x = data.draw(laid_out(data.draw(shapes(1, 4, 1, 6))))
    check(lambda t: LF.dropout(t, p, seed=seed), lambda t: _torch_dropout(t, p=p, seed=seed), x, rtol=1e-6, atol=1e-7)


@settings(**SETTINGS)
@given(data=st.data(), p=st.sampled_from([0.1, 0.5, 0.9]), block=st.sampled_from([1, 3, 5, 7]), seed=st.integers(0, 2**40))
def test_drop_block_kernels_match_reference(data, p, block, seed):
    shape = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3)), data.draw(st.integers(1, 8)),
             data.draw(st.integers(1, 8)))
    b = min(block, shape[2], shape[3])
    assume(b % 2 == 1)
    x = data.draw(laid_out(shape))
    outs = []
    for backend in ("reference", "triton"):
        lamina.set_backend(backend)
        try:
            outs.append(forward_backward(lambda t: LF.drop_block2d(t, p, block, seed=seed), x))
        finally:
            lamina.set_backend("auto")
    for r, k in zip(*outs):
        torch.testing.assert_close(k, r, rtol=1e-6, atol=1e-6)
