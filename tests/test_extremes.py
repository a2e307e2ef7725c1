"""Numerical extremes, on the CPU reference and under the Triton interpreter:

* sigmoid, tanh, GELU (both forms) and SiLU exact and free of overflow
  warnings at |x| = 1e4 and at the float16 / bfloat16 limits, forward and
  backward;
* LayerNorm, BatchNorm, GroupNorm and RMSNorm accurate when the mean is large
  against the spread (x = 1e4 + N(0, 1)) in float32 and bfloat16: lamina's
  error against float64 is no worse than PyTorch's own on the same input.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as TF

import lamina
import lamina.functional as LF


def extreme_values(dtype):
    """+-1e4, +-the largest finite value, the smallest normal, zero, and some
    ordinary values, all representable in ``dtype``."""
    fi = torch.finfo(dtype)
    vals = [1e4, -1e4, fi.max, -fi.max, fi.tiny, -fi.tiny, 0.0, 1.0, -1.0, 20.0, -20.0, 88.0, -88.0, 200.0, -200.0]
    return torch.tensor(vals, dtype=torch.float64).to(dtype)


ACTIVATIONS = {
    "sigmoid": (LF.sigmoid, torch.sigmoid),
    "tanh": (LF.tanh, torch.tanh),
    "gelu": (LF.gelu, TF.gelu),
    "gelu_tanh": (lambda x: LF.gelu(x, approximate="tanh"), lambda x: TF.gelu(x, approximate="tanh")),
    "silu": (LF.silu, TF.silu),
}

# error allowed against the float64 truth rounded to the dtype: float32 a few
# ulps (the kernels use exp2 / fast erf formulations); 16-bit formats compute
# in float32 and round once, so the rounding of the result (1 ulp) dominates
DTYPE_TOL = {torch.float32: (4e-6, 1e-30), torch.float16: (1e-3, 1e-7), torch.bfloat16: (8e-3, 1e-30)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_extremes_exact_and_quiet(each_backend, name, dtype):
    ours, theirs = ACTIVATIONS[name]
    x = extreme_values(dtype)
    xg = x.clone().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow warning fails the test
        y = ours(xg)
        (dx,) = torch.autograd.grad(y, xg, torch.ones_like(y))
    # the truth: PyTorch in float64 on the same (rounded) values
    x64 = x.double().requires_grad_(True)
    y64 = theirs(x64)
    (dx64,) = torch.autograd.grad(y64, x64, torch.ones_like(y64))
    if name in ("sigmoid", "tanh"):
        # backward from the saved output, as PyTorch: where the output rounds
        # to 1 (sigmoid(20) in float32) the gradient is 0 in both; the yardstick
        # is PyTorch's gradient in the same dtype
        xt = x.clone().requires_grad_(True)
        yt = theirs(xt)
        (dx64,) = torch.autograd.grad(yt, xt, torch.ones_like(yt))
    rtol, atol = DTYPE_TOL[dtype]
    assert torch.isfinite(y).all() == torch.isfinite(y64.to(dtype)).all()
    torch.testing.assert_close(y.double(), y64.to(dtype).double(), rtol=rtol, atol=atol)
    # backward from the saved 16-bit output (sigmoid, tanh) is as exact as
    # that output; the gradient of an input-saving op is computed in float32
    grad_rtol = rtol if dtype == torch.float32 else 2 * rtol
    torch.testing.assert_close(dx.double(), dx64.to(dtype).double(), rtol=grad_rtol, atol=max(atol, 1e-30))


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_saturation_exact_values(each_backend, name):
    """Where the true value is 0, 1, -1 or x itself, lamina gives it exactly."""
    ours, _ = ACTIVATIONS[name]
    x = torch.tensor([1e4, -1e4, 3e38, -3e38])
    y = ours(x)
    exact = {
        "sigmoid": [1.0, 0.0, 1.0, 0.0],
        "tanh": [1.0, -1.0, 1.0, -1.0],
        "gelu": [1e4, -0.0, 3e38, -0.0],
        "gelu_tanh": [1e4, -0.0, 3e38, -0.0],
        "silu": [1e4, -0.0, 3e38, -0.0],
    }[name]
    assert torch.equal(y, torch.tensor(exact))


# ---- norms with a large mean --------------------------------------------------

def large_mean_input(shape, dtype, seed=0):
    g = torch.Generator(torch.get_default_device()).manual_seed(seed)
    return (1e4 + torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype)


def _bn(F, x, w, b):
    return F.batch_norm(x, None, None, w, b, training=True)


NORMS = {
    # name: (call(F, x, weight, bias), input shape, parameter shape)
    "layer_norm": (lambda F, x, w, b: F.layer_norm(x, [x.shape[-1]], w, b), (8, 256), (256,)),
    "rms_norm": (lambda F, x, w, b: F.rms_norm(x, [x.shape[-1]], w), (8, 256), (256,)),
    "batch_norm": (_bn, (16, 4, 24), (4,)),
    "group_norm": (lambda F, x, w, b: F.group_norm(x, 2, w, b), (3, 4, 7, 9), (4,)),
    "instance_norm": (lambda F, x, w, b: F.instance_norm(x, weight=w, bias=b), (3, 4, 50), (4,)),
}


def _run(call, F, x, w, b, dy):
    x = x.detach().clone().requires_grad_(True)
    y = call(F, x, w, b)
    (dx,) = torch.autograd.grad(y, x, dy)
    return y.detach().double(), dx.double()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", list(NORMS))
def test_norm_accurate_with_large_mean(each_backend, name, dtype):
    call, shape, pshape = NORMS[name]
    x = large_mean_input(shape, dtype)
    g = torch.Generator(torch.get_default_device()).manual_seed(1)
    # parameters in the input's dtype (PyTorch's CPU norms want that)
    w = (1 + 0.1 * torch.randn(pshape, generator=g, dtype=torch.float64)).to(dtype)
    b = (0.1 * torch.randn(pshape, generator=g, dtype=torch.float64)).to(dtype)
    dy = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    # truth: PyTorch in float64 on the very same (rounded) input
    y64, dx64 = _run(call, TF, x.double(), w.double(), b.double(), dy.double())
    y_t, dx_t = _run(call, TF, x, w, b, dy)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        y, dx = _run(call, LF, x, w, b, dy)
    # Yardstick: PyTorch's own error. Allowed: 1.5x it, plus a floor of one
    # unit in the last place of an O(1) output in the output dtype, which
    # both implementations must pay for rounding the result (a PyTorch that
    # happens to round the other way at the worst element is not a bug).
    # Plus the rounding of a float32 mean: lamina keeps its statistics in
    # float32 (as PyTorch's CUDA kernels do), PyTorch's CPU kernels
    # accumulate float32 input in double, so half an ulp of |mean| ~ 1e4,
    # times rstd and |weight|, is the most float32 statistics can promise.
    rstd = 1 / (x.double().std() ** 2 + 1e-5).sqrt()  # spread of the whole input: at most the groups'
    mean_rounding = 0.5 * torch.finfo(torch.float32).eps * 1e4 * rstd.item() * w.double().abs().max().item()
    floor = torch.finfo(dtype).eps + mean_rounding
    for what, ours, theirs, truth in (("y", y, y_t, y64), ("dx", dx, dx_t, dx64)):
        scale = truth.abs().max().clamp_min(1.0)
        err = ((ours - truth).abs().max() / scale).item()
        err_t = ((theirs - truth).abs().max() / scale).item()
        assert err <= 1.5 * err_t + floor, f"{name} {dtype} {what}: lamina error {err:.3g}, torch {err_t:.3g}"
    # and the result is really normalized: the error is small in absolute terms
    # (statistics in float32 around a mean of 1e4 keep ~1e-3 of the unit spread)
    assert ((y - y64).abs().max() / y64.abs().max()).item() < (2e-2 if dtype == torch.bfloat16 else 2e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_batch_norm_running_var_with_large_mean(each_backend, dtype):
    """The unbiased variance that goes into running_var is accurate too
    (no E[x^2] - E[x]^2 cancellation)."""
    x = large_mean_input((32, 3, 10), dtype)
    ours_stats = [torch.zeros(3, dtype=dtype), torch.ones(3, dtype=dtype)]
    theirs_stats = [torch.zeros(3, dtype=dtype), torch.ones(3, dtype=dtype)]
    LF.batch_norm(x, *ours_stats, training=True, momentum=1.0)
    TF.batch_norm(x, *theirs_stats, training=True, momentum=1.0)
    truth = x.double().transpose(0, 1).reshape(3, -1).var(dim=1)
    err = (ours_stats[1].double() - truth).abs().max().item()
    err_t = (theirs_stats[1].double() - truth).abs().max().item()
    assert err <= 1.5 * err_t + torch.finfo(dtype).eps * truth.max().item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", ["layer_norm", "batch_norm", "group_norm", "instance_norm"])
def test_constant_large_mean_normalizes_to_zero(each_backend, name, dtype):
    """A constant input at 1e4: the variance is 0, rstd = 1/sqrt(eps) ~ 316
    magnifies any error in the mean. The mean of equal values must come out
    exactly that value, and y exactly 0. (PyTorch's CPU kernels are off here
    in places: 0.027 for float32 batch and instance norm, 0.0625 for bfloat16
    layer norm; lamina is held to the exact answer.)"""
    call, shape, _ = NORMS[name]
    x = torch.full(shape, 1e4, dtype=dtype)
    y = call(LF, x, None, None)
    assert torch.equal(y, torch.zeros_like(y))
