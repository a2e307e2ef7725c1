"""Focused tests of the activation family, beyond the op table (tests/test_ops.py):

* nn modules: torch.nn subclasses, extra_repr, PReLU state_dict both ways;
* in place: same object returned, input modified, PyTorch's leaf error,
  gradients equal to PyTorch's through the in-place forms;
* NaN / inf propagation, |x| = 1e4 and dtype extremes: no warnings, PyTorch's values;
* what backward keeps: the output or a uint8 mask for the ReLU family,
  Sigmoid and Tanh, never the float input;
* kernels (Triton interpreter): several programs and tails, channels_last
  kept, PReLU's layouts and its deterministic d(weight) partials;
* torch.library.opcheck of every custom op; bad arguments; reference layers.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
import lamina.functional as F
import lamina.nn as LN
from lamina.reference import activation as ref

BACKENDS = ["reference", "triton"]


def swish_torch(x, beta=1.0):
    return x * torch.sigmoid(beta * x)


# name -> (lamina fn, torch fn); the torch fn is the oracle
OPS = {
    "relu": (F.relu, TF.relu),
    "leaky_relu": (F.leaky_relu, TF.leaky_relu),
    "leaky_relu_0.2": (lambda x: F.leaky_relu(x, 0.2), lambda x: TF.leaky_relu(x, 0.2)),
    "leaky_relu_neg": (lambda x: F.leaky_relu(x, -0.3), lambda x: TF.leaky_relu(x, -0.3)),
    "prelu": (lambda x: F.prelu(x, torch.full((1,), 0.25, dtype=x.dtype)),
              lambda x: TF.prelu(x, torch.full((1,), 0.25, dtype=x.dtype))),
    "sigmoid": (F.sigmoid, torch.sigmoid),
    "tanh": (F.tanh, torch.tanh),
    "gelu": (F.gelu, TF.gelu),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), lambda x: TF.gelu(x, approximate="tanh")),
    "silu": (F.silu, TF.silu),
    "swish_1.7": (lambda x: F.swish(x, 1.7), lambda x: swish_torch(x, 1.7)),
}


def forward_backward(fn, x, dy=None):
    x = x.detach().clone().requires_grad_(True)
    y = fn(x)
    y.backward(torch.ones_like(y) if dy is None else dy)
    return y.detach(), x.grad


# --- nn modules ----------------------------------------------------------------

MODULES = [
    (LN.ReLU, torch.nn.ReLU, {"inplace": True}),
    (LN.LeakyReLU, torch.nn.LeakyReLU, {"negative_slope": 0.2, "inplace": True}),
    (LN.PReLU, torch.nn.PReLU, {"num_parameters": 3, "init": 0.1}),
    (LN.Sigmoid, torch.nn.Sigmoid, {}),
    (LN.Tanh, torch.nn.Tanh, {}),
    (LN.GELU, torch.nn.GELU, {"approximate": "tanh"}),
    (LN.SiLU, torch.nn.SiLU, {"inplace": True}),
]


@pytest.mark.parametrize("ours,theirs,kwargs", MODULES, ids=lambda v: getattr(v, "__name__", ""))
def test_module_matches_torch(ours, theirs, kwargs):
    for kw in ({}, kwargs):
        m, t = ours(**kw), theirs(**kw)
        assert isinstance(m, theirs)
        assert m.extra_repr() == t.extra_repr()
        assert repr(m) == repr(t)
        torch.manual_seed(0)
        x = torch.randn(2, 3, 4)
        torch.testing.assert_close(m(x.clone()), t(x.clone()))


def test_swish_module():
    m = LN.Swish(beta=1.7)
    assert isinstance(m, torch.nn.Module)
    assert m.extra_repr() == "beta=1.7" and repr(m) == "Swish(beta=1.7)"
    assert LN.Swish().beta == 1.0
    assert list(m.state_dict()) == []
    x = torch.randn(5, dtype=torch.float64)
    torch.testing.assert_close(m(x), swish_torch(x, 1.7), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(LN.Swish()(x), TF.silu(x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("num_parameters", [1, 3])
def test_prelu_state_dict_both_ways(num_parameters):
    theirs = torch.nn.PReLU(num_parameters)
    with torch.no_grad():
        theirs.weight.copy_(torch.linspace(0.05, 0.5, num_parameters))
    ours = LN.PReLU(num_parameters, init=0.9)
    ours.load_state_dict(theirs.state_dict())
    torch.testing.assert_close(ours.weight, theirs.weight, rtol=0, atol=0)
    assert list(ours.state_dict()) == ["weight"] and ours.weight.shape == (num_parameters,)

    back = torch.nn.PReLU(num_parameters, init=0.7)
    back.load_state_dict(ours.state_dict())
    torch.testing.assert_close(back.weight, theirs.weight, rtol=0, atol=0)

    x = torch.randn(4, 3, 5)
    y_ours, y_theirs = ours(x), theirs(x)
    torch.testing.assert_close(y_ours, y_theirs)
    y_ours.sum().backward()
    y_theirs.sum().backward()
    torch.testing.assert_close(ours.weight.grad, theirs.weight.grad)


def test_prelu_module_device_dtype():
    m = LN.PReLU(4, init=0.3, dtype=torch.float64)
    assert m.weight.dtype == torch.float64 and torch.all(m.weight == 0.3)
    y = m(torch.randn(2, 4, dtype=torch.float64))
    assert y.dtype == torch.float64


# --- in place ----------------------------------------------------------------

INPLACE = {
    "relu": (lambda x: F.relu(x, inplace=True), lambda x: F.relu(x), lambda x: TF.relu(x)),
    "relu_": (F.relu_, F.relu, TF.relu),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.2, inplace=True), lambda x: F.leaky_relu(x, 0.2),
                   lambda x: TF.leaky_relu(x, 0.2)),
    "leaky_relu_": (lambda x: F.leaky_relu_(x, 0.2), lambda x: F.leaky_relu(x, 0.2),
                    lambda x: TF.leaky_relu(x, 0.2)),
    "silu": (lambda x: F.silu(x, inplace=True), F.silu, TF.silu),
    "nn.ReLU": (LN.ReLU(inplace=True), LN.ReLU(), torch.nn.ReLU()),
    "nn.LeakyReLU": (LN.LeakyReLU(0.1, inplace=True), LN.LeakyReLU(0.1), torch.nn.LeakyReLU(0.1)),
    "nn.SiLU": (LN.SiLU(inplace=True), LN.SiLU(), torch.nn.SiLU()),
}


@pytest.mark.parametrize("name", list(INPLACE))
def test_inplace(name, each_backend):
    # the kernels compute in float32: float64 for the reference, float32 under the interpreter
    dtype = torch.float64 if each_backend == "reference" else torch.float32
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-6, atol=1e-6)
    inplace, outofplace, oracle = INPLACE[name]
    torch.manual_seed(0)
    x = torch.randn(3, 7, dtype=dtype)

    # same object back, modified; the out-of-place form leaves its input alone
    a = x.clone()
    out = inplace(a)
    assert out is a
    torch.testing.assert_close(a, oracle(x), **tol)
    b = x.clone()
    outofplace(b)
    assert torch.equal(b, x)

    # PyTorch's error on a leaf that requires grad, or a view of one; nothing written
    leaf = x.clone().requires_grad_(True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        inplace(leaf)
    with pytest.raises(RuntimeError, match="view of a leaf Variable that requires grad"):
        inplace(leaf[1:])
    assert torch.equal(leaf.detach(), x)
    # ... but not under no_grad
    leaf = x.clone().requires_grad_(True)
    with torch.no_grad():
        inplace(leaf)
    torch.testing.assert_close(leaf.detach(), oracle(x), **tol)

    # gradients through the in-place form equal PyTorch's out-of-place ones
    dy = torch.randn_like(x)
    leaf = x.clone().requires_grad_(True)
    h = leaf * 1.5
    inplace(h)
    h.backward(dy)
    expected = x.clone().requires_grad_(True)
    oracle(expected * 1.5).backward(dy)
    torch.testing.assert_close(leaf.grad, expected.grad, **tol)


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "silu"])
@pytest.mark.parametrize("layout", ["channels_last", "strided view"])
def test_inplace_layouts(name, layout, each_backend):
    """In place on a channels_last tensor (which stays channels_last) and on
    a strided view (written through to its base): values and gradients as
    PyTorch's out-of-place composition."""
    dtype = torch.float64 if each_backend == "reference" else torch.float32
    inplace, _, oracle = INPLACE[name]
    torch.manual_seed(1)
    x, dy = torch.randn(2, 3, 5, 4, dtype=dtype), torch.randn(2, 3, 5, 4, dtype=dtype)
    results = []
    for in_place in (True, False):
        leaf = x.clone().requires_grad_(True)
        h = leaf * 1.5
        if layout == "channels_last":
            h = h.contiguous(memory_format=torch.channels_last)
            out = inplace(h) if in_place else oracle(h)
            assert out.is_contiguous(memory_format=torch.channels_last)
        elif in_place:
            inplace(h[:, :, ::2])
            out = h
        else:
            out = h * 1
            out[:, :, ::2] = oracle(h[:, :, ::2])
        out.backward(dy)
        results.append((out.detach(), leaf.grad))
    (got, got_grad), (want, want_grad) = results
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("api", ["torch", "lamina"])
def test_leaky_relu_inplace_negative_slope(api, each_backend):
    """In place with a negative slope: the forward of the out-of-place form,
    and no backward (PyTorch's error: the output no longer tells x's side);
    a zero slope keeps its backward (PyTorch's test_nn cases)."""
    leaky_relu_ = TF.leaky_relu_ if api == "torch" else F.leaky_relu_
    x = torch.tensor([-1.0, 1.0, -3.0])
    assert torch.equal(leaky_relu_(x.clone(), -2), TF.leaky_relu(x, -2))
    a = x.clone().requires_grad_()
    b = leaky_relu_(a.clone(), -2)
    with pytest.raises(RuntimeError, match="call out-of-place version"):
        b.backward(torch.ones(3))
    a = torch.tensor([-2.0, 0.0, 2.0], requires_grad=True)
    leaky_relu_(a.clone(), 0.0).backward(torch.ones(3))
    assert torch.equal(a.grad, torch.tensor([0.0, 0.0, 1.0]))


# --- NaN, inf, huge and tiny values --------------------------------------------

SPECIALS = [float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1.0, -1.0, 1e4, -1e4]


@pytest.mark.parametrize("name", list(OPS))
@pytest.mark.parametrize("be", BACKENDS)
def test_nan_inf_and_1e4_match_torch(name, be, backend):
    backend(be)
    lamina_fn, torch_fn = OPS[name]
    values = list(SPECIALS)
    if name == "gelu":
        # torch's CPU gelu(+inf) is NaN on its vectorized path and inf on its
        # scalar one; lamina gives inf (x * Phi(x) with Phi(inf) = 1)
        values.remove(float("inf"))
    dtypes = [torch.float32, torch.float64] if be == "reference" else [torch.float32]
    for dtype in dtypes:
        x = torch.tensor(values, dtype=dtype)
        with warnings.catch_warnings():
            # the interpreter runs NumPy without errstate: its inf * 0 warns
            warnings.simplefilter("ignore" if be == "triton" else "error")
            y, dx = forward_backward(lamina_fn, x)
        y_t, dx_t = forward_backward(torch_fn, x)
        torch.testing.assert_close(y, y_t, equal_nan=True, msg=lambda m: f"{name} forward {dtype}: {m}")
        torch.testing.assert_close(dx, dx_t, equal_nan=True, msg=lambda m: f"{name} backward {dtype}: {m}")
        assert torch.equal(torch.isnan(y), torch.isnan(y_t))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("be", BACKENDS)
def test_dtype_extremes_no_warnings(dtype, be, backend):
    """+-max, +-1e4 and +-smallest normal of each dtype: no NumPy or interpreter
    warnings, and PyTorch's values in the same dtype."""
    backend(be)
    info = torch.finfo(dtype)
    # (moderate values only: where sigmoid/tanh saturate, backward from a
    # 16-bit output is far from float32's; see the test after this one)
    x = torch.tensor([info.max, -info.max, 1e4, -1e4, info.tiny, -info.tiny, 0.5, -0.75], dtype=dtype)
    for name, (lamina_fn, torch_fn) in OPS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            y, dx = forward_backward(lamina_fn, x)
        # the oracle in float32, rounded once (PyTorch's CPU 16-bit autograd
        # rounds every intermediate step)
        y_t, dx_t = (t.to(dtype) for t in forward_backward(torch_fn, x.float()))
        if name == "gelu":
            # torch's CPU kernel forms x * (1 + erf) before halving, which
            # overflows at +max; the true value (and lamina's) is x itself
            y_t[0] = x[0]
        if name == "gelu_tanh":
            # torch's backward multiplies 0 (1 - tanh^2) by an overflowed
            # x^2 term and gets NaN at +-max; the true slopes are 1 and 0
            dx_t[0], dx_t[1] = 1.0, 0.0
        torch.testing.assert_close(y, y_t, equal_nan=True, atol=1e-5, rtol=2e-2,
                                   msg=lambda m: f"{name} forward: {m}")
        torch.testing.assert_close(dx, dx_t, equal_nan=True, atol=1e-5, rtol=2e-2,
                                   msg=lambda m: f"{name} backward: {m}")


def test_reference_large_inputs_float64_no_warnings():
    x = np.array([1e300, -1e300, 1e4, -1e4, 710.0, -710.0, 40.0, -40.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
            for fwd, bwd, args in [
                (ref.sigmoid_forward, ref.sigmoid_backward, ()),
                (ref.tanh_forward, ref.tanh_backward, ()),
                (ref.gelu_forward, ref.gelu_backward, ("none",)),
                (ref.gelu_forward, ref.gelu_backward, ("tanh",)),
                (ref.swish_forward, ref.swish_backward, (1.0,)),
            ]:
                y, cache = fwd(x, *args)
                dx = bwd(np.ones_like(x), cache)
                assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))


@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_saved_output_backward_matches_torch_in_16_bit(name, dtype, backend):
    """Backward from the saved 16-bit output, as PyTorch's CUDA kernels do:
    the derivative formed in float32 from the output as stored, rounded once.
    (PyTorch's CPU kernels round every step in bfloat16.) Where the curve
    saturates this is far from the float64 derivative, in PyTorch too, so the
    op table keeps tanh's inputs moderate."""
    backend("triton")
    lamina_fn, torch_fn = OPS[name]
    torch.manual_seed(0)
    x = (4 * torch.randn(64, dtype=torch.float64)).to(dtype)
    dy = torch.randn(64, dtype=torch.float64).to(dtype)
    y, dx = forward_backward(lamina_fn, x, dy)
    torch.testing.assert_close(y, torch_fn(x.float()).to(dtype))
    yf = y.float()
    slope = yf * (1 - yf) if name == "sigmoid" else 1 - yf * yf
    # one rounding to the dtype apart (the interpreter truncates to bfloat16)
    torch.testing.assert_close(dx, (dy.float() * slope).to(dtype), rtol=2 * torch.finfo(dtype).eps, atol=0)


# --- what backward keeps -------------------------------------------------------

def saved_by(fn, x):
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = fn(x)
    return y, saved


@pytest.mark.parametrize("name,keeps", [
    ("relu", "output"), ("leaky_relu", "output"), ("leaky_relu_0.2", "output"),
    ("leaky_relu_neg", "mask"), ("sigmoid", "output"), ("tanh", "output"),
])
@pytest.mark.parametrize("be", BACKENDS)
def test_backward_keeps_output_or_mask(name, keeps, be, backend):
    backend(be)
    x = torch.randn(4, 5, requires_grad=True)
    y, saved = saved_by(OPS[name][0], x)
    assert len(saved) == 1
    (s,) = saved
    assert s.data_ptr() != x.data_ptr()
    if keeps == "output":
        assert s.data_ptr() == y.data_ptr() and s.dtype == y.dtype
    else:
        assert s.dtype == torch.uint8 and s.shape == x.shape
        assert torch.equal(s.bool(), x.detach() > 0)


# --- kernels: several programs, tails, layouts -----------------------------------

@pytest.mark.parametrize("name", ["leaky_relu_neg", "gelu", "swish_1.7", "relu"])
def test_kernels_many_programs(name, backend):
    """Many programs and a tail of 5 (8 full float32 blocks of elementwise_block(4) = 1024)."""
    lamina_fn, torch_fn = OPS[name]
    torch.manual_seed(0)
    x = torch.randn(2 * 4096 + 5)
    dy = torch.randn_like(x)
    backend("triton")
    y, dx = forward_backward(lamina_fn, x, dy)
    y_t, dx_t = forward_backward(torch_fn, x, dy)
    torch.testing.assert_close(y, y_t, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dx, dx_t, rtol=1e-5, atol=1e-5)


def _layout(name: str, t: torch.Tensor) -> torch.Tensor:
    if name == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if name == "permuted":  # dense, H and W swapped in memory
        return t.transpose(2, 3).contiguous().transpose(2, 3)
    if name == "sliced":  # not dense
        return torch.cat([t, t], dim=3)[..., ::2]
    return t


# (input layout, upstream-gradient layout): channels_last kept, and where the
# two differ, the gradient laid out as PyTorch's backward lays it out (led by
# the saved tensor for the ReLU family and PReLU, by the gradient otherwise)
LAYOUT_PAIRS = [("channels_last", "channels_last"), ("channels_last", "contiguous"), ("contiguous", "channels_last"),
                ("permuted", "contiguous"), ("sliced", "permuted"), ("permuted", "sliced")]
PRELU_3 = (lambda x: F.prelu(x, torch.tensor([0.1, 0.2, 0.3], dtype=x.dtype)),
           lambda x: TF.prelu(x, torch.tensor([0.1, 0.2, 0.3], dtype=x.dtype)))


@pytest.mark.parametrize("pair", LAYOUT_PAIRS, ids="-".join)
@pytest.mark.parametrize("name", [n for n in OPS if not n.startswith("swish")] + ["prelu_per_channel"])
def test_layouts_are_pytorchs(name, pair, each_backend):
    lamina_fn, torch_fn = PRELU_3 if name == "prelu_per_channel" else OPS[name]
    dtype = torch.float64 if each_backend == "reference" else torch.float32
    torch.manual_seed(0)
    x = _layout(pair[0], torch.randn(2, 3, 5, 4, dtype=dtype)).requires_grad_(True)
    dy = _layout(pair[1], torch.randn(2, 3, 5, 4, dtype=dtype))
    # autograd.grad: the backward's own result (a leaf's .grad may be restrided)
    (y, dx), (y_t, dx_t) = ((y, *torch.autograd.grad(y, x, dy)) for y in (lamina_fn(x), torch_fn(x)))
    assert (y.stride(), dx.stride()) == (y_t.stride(), dx_t.stride())
    torch.testing.assert_close(y, y_t, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dx, dx_t, rtol=1e-5, atol=1e-5)


PRELU_LAYOUTS = {
    # channels on rows, 2 blocks along H*W = 4100
    "rows_multi_block": (lambda: torch.randn(2, 3, 4100), 3),
    # channels on columns (channels_last), 4 row blocks of 1024
    "channels_last_multi_block": (lambda: torch.randn(2, 3, 40, 40).contiguous(memory_format=torch.channels_last), 3),
    # (N, C) with C wider than one tile: 2 column blocks
    "wide_channels": (lambda: torch.randn(3, 5000), 5000),
    # a non-dense view
    "strided": (lambda: torch.randn(4, 6, 10)[:, ::2, ::3], 3),
    "one_weight_4d": (lambda: torch.randn(2, 3, 5, 7), 1),
    "one_weight_1d": (lambda: torch.randn(11), 1),
    "one_weight_0d": (lambda: torch.randn(()), 1),
    "empty": (lambda: torch.randn(0, 3, 4), 3),
}


@pytest.mark.parametrize("layout", list(PRELU_LAYOUTS))
@pytest.mark.parametrize("be", BACKENDS)
def test_prelu_layouts(layout, be, backend):
    backend(be)
    make, channels = PRELU_LAYOUTS[layout]
    torch.manual_seed(0)
    x = make()
    weight = 0.05 + 0.5 * torch.rand(channels)
    dy = torch.randn(x.shape)

    def run(fn):
        xx = x.detach().clone().requires_grad_(True)
        w = weight.clone().requires_grad_(True)
        y = fn(xx, w)
        y.backward(dy)
        return y.detach(), xx.grad, w.grad

    y, dx, dw = run(F.prelu)
    y_t, dx_t, dw_t = run(TF.prelu)
    torch.testing.assert_close(y, y_t, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dx, dx_t, rtol=1e-5, atol=1e-5)
    reduce_len = max(1, x.numel() // channels)
    torch.testing.assert_close(dw, dw_t, rtol=1e-5, atol=1e-5 * reduce_len ** 0.5)
    if be == "triton" and x.is_contiguous(memory_format=torch.channels_last) and x.dim() == 4:
        assert y.is_contiguous(memory_format=torch.channels_last)


def test_prelu_weight_gradient_deterministic(backend):
    backend("triton")
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4100)
    w = torch.rand(3)
    dy = torch.randn_like(x)
    kernels = lamina.backend.kernels("activation")
    first = kernels.prelu_backward(dy, x, w)
    second = kernels.prelu_backward(dy, x, w)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


# --- custom ops, bad input -----------------------------------------------------

OPCHECKS = [
    ("relu_forward", lambda x: (x,)),
    ("leaky_relu_forward", lambda x: (x, 0.2)),
    ("leaky_relu_forward", lambda x: (x, -0.3)),
    ("prelu_forward", lambda x: (x, torch.rand(3, dtype=x.dtype, requires_grad=True))),
    ("sigmoid_forward", lambda x: (x,)),
    ("tanh_forward", lambda x: (x,)),
    ("gelu_forward", lambda x: (x, "none")),
    ("gelu_forward", lambda x: (x, "tanh")),
    ("silu_forward", lambda x: (x,)),
    ("swish_forward", lambda x: (x, 1.7)),
]


@pytest.mark.parametrize("op,args", OPCHECKS, ids=[f"{o}-{i}" for i, (o, _) in enumerate(OPCHECKS)])
def test_opcheck(op, args, backend):
    """Schemas, fake (meta) implementations and autograd registration."""
    backend("auto")
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(getattr(torch.ops.lamina, op).default, args(x),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


def test_bad_arguments():
    x = torch.randn(2, 3)
    with pytest.raises(RuntimeError, match="approximate"):
        F.gelu(x, approximate="fast")
    with pytest.raises(RuntimeError, match="Mismatch of parameter numbers"):
        F.prelu(x, torch.rand(4))
    with pytest.raises(RuntimeError, match="Mismatch of parameter numbers"):
        F.prelu(torch.randn(5), torch.rand(5))
    with pytest.raises(RuntimeError, match="scalar or 1D"):
        F.prelu(x, torch.rand(1, 3))
    with pytest.raises(RuntimeError, match="zero-dim"):
        F.prelu(torch.randn(()), torch.rand(3))
    with pytest.raises(RuntimeError, match="Type promoting"):
        F.prelu(x, torch.rand(3, dtype=torch.float64))
    with pytest.raises(TypeError, match="weight"):
        F.prelu(x, 0.25)
    with pytest.raises(TypeError, match="input"):
        F.sigmoid([1.0, 2.0])
    # torch's own checks stay on the module constructors
    with pytest.raises(TypeError):
        LN.PReLU(num_parameters=2.5)


# --- the reference layer classes --------------------------------------------------

def test_reference_layers():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4))
    dy = rng.standard_normal((2, 3, 4))
    layers = [
        (ref.ReLU(), ref.relu_forward, ref.relu_backward, ()),
        (ref.LeakyReLU(-0.3), ref.leaky_relu_forward, ref.leaky_relu_backward, (-0.3,)),
        (ref.Sigmoid(), ref.sigmoid_forward, ref.sigmoid_backward, ()),
        (ref.Tanh(), ref.tanh_forward, ref.tanh_backward, ()),
        (ref.GELU("tanh"), ref.gelu_forward, ref.gelu_backward, ("tanh",)),
        (ref.SiLU(), ref.silu_forward, ref.silu_backward, ()),
        (ref.Swish(1.7), ref.swish_forward, ref.swish_backward, (1.7,)),
    ]
    for layer, fwd, bwd, args in layers:
        with pytest.raises(RuntimeError, match="before forward"):
            type(layer)(*args).backward(dy)
        y, cache = fwd(x, *args)
        np.testing.assert_array_equal(layer(x), y)
        np.testing.assert_array_equal(layer.backward(dy), bwd(dy, cache))

    prelu = ref.PReLU(3, init=0.2)
    y = prelu(x)
    dx = prelu.backward(dy)
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.full((3,), 0.2, dtype=torch.float64, requires_grad=True)
    yt = TF.prelu(xt, wt)
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, yt.detach().cpu().numpy(), rtol=1e-12)  # (.cpu(): LAMINA_TEST_DEVICE=cuda)
    np.testing.assert_allclose(dx, xt.grad.cpu().numpy(), rtol=1e-12)
    np.testing.assert_allclose(prelu.grads["weight"], wt.grad.cpu().numpy(), rtol=1e-12)


@pytest.mark.parametrize("erf", ["_erf", "_erf_cody"])
def test_reference_erf_is_exact(erf):
    """Both ways to erf (SciPy's when installed, and Cody's NumPy fallback)
    agree with math.erf to a few float64 ulps, on every range boundary."""
    import math

    erf = getattr(ref, erf)
    xs = np.concatenate([np.linspace(-30, 30, 20001), [0.0, -0.0, 1e-300, 0.46875, 0.47, 4.0, 4.01, 5.9, 6.0, 27.0, 28.0]])
    expected = np.array([math.erf(v) for v in xs])
    np.testing.assert_allclose(erf(xs), expected, rtol=4e-15, atol=1e-300)
    assert np.isnan(erf(np.array([np.nan]))[0])
    assert np.array_equal(erf(np.array([np.inf, -np.inf])), [1.0, -1.0])
    assert ref._erf(np.array([1.0], dtype=np.float32)).dtype == np.float32


def test_reference_keeps_float32():
    x = np.linspace(-3, 3, 7, dtype=np.float32)
    for fwd, args in [(ref.relu_forward, ()), (ref.leaky_relu_forward, (0.2,)), (ref.leaky_relu_forward, (-0.2,)),
                      (ref.sigmoid_forward, ()), (ref.tanh_forward, ()), (ref.gelu_forward, ("none",)),
                      (ref.gelu_forward, ("tanh",)), (ref.silu_forward, ()), (ref.swish_forward, (1.7,))]:
        y, _ = fwd(x, *args)
        assert y.dtype == np.float32, fwd.__name__


# --- PyTorch's face: signatures, torch.compile -------------------------------------

@pytest.mark.parametrize("name", ["relu", "leaky_relu", "silu", "sigmoid", "tanh"])
def test_functional_signature_is_torchs(name):
    import inspect

    ours = inspect.signature(getattr(F, name))
    theirs = inspect.signature(getattr(TF, name))
    assert [(p.name, p.default) for p in ours.parameters.values()] == \
           [(p.name, p.default) for p in theirs.parameters.values()]


def test_torch_compile_fullgraph(backend):
    """Every activation's custom ops trace into one graph, forward and backward."""
    backend("auto")

    def f(x, w):
        return (F.gelu(F.leaky_relu(x, -0.2), approximate="tanh").sum() + F.prelu(F.silu(x), w).sum()
                + F.swish(F.tanh(F.sigmoid(x)), 1.7).sum() + F.gelu(F.relu(x)).sum())

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    w = torch.rand(3, dtype=torch.float64, requires_grad=True)
    got = torch.autograd.grad(compiled(x, w), (x, w))
    expected = torch.autograd.grad(f(x, w), (x, w))
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


def test_gelu_erfc_form_is_float32_accurate():
    # 16-bit GELU runs the Gaussian CDF through erfc's exponential form
    # (kernels.activation.GELU_ERFC), not erff. Run on float32 tensors, its
    # kernels show the form's own error: within 4e-6 relative of the exact
    # GELU for |x| < 6 and its derivative within 1e-6, far below a 16-bit
    # rounding (2**-9 relative for bfloat16)
    from lamina.backend import kernels

    act = kernels("activation")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.cat([torch.linspace(-6, 6, 4001, dtype=torch.float64), torch.tensor([-30.0, 30.0, 1e30, -1e30])])
    x32 = x.float().to(device)
    y = act.activation_forward(x32, act.GELU_ERFC).double().cpu()
    dx = act.activation_backward(torch.ones_like(x32), x32, act.GELU_ERFC).double().cpu()
    xe = x32.double().cpu()
    cdf = 0.5 * torch.erfc(-xe / 2**0.5)
    pdf = torch.exp(-0.5 * xe * xe) / (2 * torch.pi) ** 0.5
    torch.testing.assert_close(y, xe * cdf, rtol=4e-6, atol=1e-30)
    torch.testing.assert_close(dx, cdf + xe * pdf, rtol=0, atol=1e-6)
    # and a NaN stays NaN in both directions
    nan = torch.tensor([float("nan")], device=device)
    assert act.activation_forward(nan, act.GELU_ERFC).isnan().all()
    assert act.activation_backward(torch.ones_like(nan), nan, act.GELU_ERFC).isnan().all()


def test_tanh_16bit_form_is_accurate_to_a_16bit_rounding():
    # 16-bit tanh runs a short form (kernels.activation.TANH_16BIT). Run on
    # float32 tensors, its kernel shows the form's own error: within 1.5e-5
    # relative of tanh everywhere (a float16 half-ulp is 2.4e-4), odd to
    # float32 rounding, saturated at +-1, and NaN stays NaN; its backward is
    # tanh's (from y)
    from lamina.backend import kernels

    act = kernels("activation")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.cat([torch.linspace(-12, 12, 6001, dtype=torch.float64), torch.logspace(-30, 0, 301, dtype=torch.float64),
                   torch.tensor([0.25, -0.25, 0.2499999, 1e30, -1e30, float("inf"), float("-inf"), 0.0, -0.0])])
    x32 = x.float().to(device)
    y = act.activation_forward(x32, act.TANH_16BIT).double().cpu()
    torch.testing.assert_close(y, torch.tanh(x32.double().cpu()), rtol=1.5e-5, atol=0)
    torch.testing.assert_close(act.activation_forward(-x32, act.TANH_16BIT).double().cpu(), -y, rtol=1e-6, atol=0)
    assert act.activation_forward(torch.tensor([float("nan")], device=device), act.TANH_16BIT).isnan().all()
    dx = act.activation_backward(torch.ones_like(x32), y.float().to(device), act.TANH_16BIT).double().cpu()
    torch.testing.assert_close(dx, 1 - y * y, rtol=1e-6, atol=1e-7)
