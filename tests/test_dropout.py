"""Dropout, DropConnect and DropBlock2d: statistics, scaling, seeding, train /
eval, p = 0 and p = 1, in-place, memory layouts, the NumPy reference and the
Triton kernels (interpreter) giving bit-identical masks, the modules' state
and torch parity at the edges."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
import lamina.functional as F
import lamina.nn as lnn
from lamina import rng
from lamina.reference import dropout as ref


def within(frac, prob, n, sigmas=5):
    return abs(frac - prob) <= sigmas * math.sqrt(prob * (1 - prob) / n)


# --- dropout: semantics -------------------------------------------------------

@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_fraction_and_scaling(p):
    x = torch.rand(300_000, dtype=torch.float64) + 0.5  # never zero
    y = F.dropout(x, p, seed=2024)
    kept = y != 0
    assert within(kept.double().mean().item(), 1 - p, x.numel())
    torch.testing.assert_close(y[kept], x[kept] * (1 / (1 - p)), rtol=0, atol=0)


def test_float32_scale_matches_torch_formula():
    x = torch.randn(5000)
    p = 0.3
    y = F.dropout(x, p, seed=1)
    kept = y != 0
    # torch: x * (mask / (1 - p)) with the multiplier rounded to float32
    assert torch.equal(y[kept], x[kept] * torch.tensor(1 / (1 - p), dtype=torch.float32))


def test_mask_is_rng_keep_mask():
    x = torch.randn(3, 7, 11, dtype=torch.float64)
    y = F.dropout(x, 0.25, seed=2**45 + 9)
    keep = torch.from_numpy(rng.keep_mask(2**45 + 9, 0, x.shape, 0.25)).to(y.device)
    assert torch.equal(y != 0, keep)


def test_same_seed_same_mask_different_seed_different_mask():
    x = torch.ones(10_000)
    a, b, c = F.dropout(x, 0.5, seed=3), F.dropout(x, 0.5, seed=3), F.dropout(x, 0.5, seed=4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_default_generator_reproduces_and_advances():
    x = torch.ones(10_000)
    torch.manual_seed(7)
    a1, a2 = F.dropout(x, 0.5), F.dropout(x, 0.5)
    torch.manual_seed(7)
    b1, b2 = F.dropout(x, 0.5), F.dropout(x, 0.5)
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert not torch.equal(a1, a2)  # each call draws a new seed
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(F.dropout(x, 0.5, generator=g1), F.dropout(x, 0.5, generator=g2))


def test_eval_p0_and_empty_return_the_input_itself():
    x = torch.randn(4, 5)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x
    assert F.dropout(x, 0.0, inplace=True) is x
    e = torch.empty(0, 3)
    assert F.dropout(e, 0.5) is e
    m = lnn.Dropout(0.5).eval()
    assert m(x) is x


def test_p1_gives_zeros_nan_stays_and_zero_gradient():
    x = torch.tensor([1.0, float("nan"), -2.0, float("inf")], requires_grad=True)
    y = F.dropout(x, 1.0)
    expected = TF.dropout(x.detach(), 1.0)  # torch: x * 0
    torch.testing.assert_close(y.detach(), expected, equal_nan=True)
    y.sum().backward()
    assert torch.equal(x.grad, torch.zeros(4))


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_bad_probability(p):
    x = torch.randn(3)
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1, but got"):
        F.dropout(x, p)
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1"):
        lnn.Dropout(p)


def test_nan_probability_like_torch():
    # torch: the functional raises a RuntimeError, the module's constructor accepts it
    with pytest.raises(RuntimeError, match="dropout probability has to be between 0 and 1"):
        TF.dropout(torch.randn(3), float("nan"))
    with pytest.raises(RuntimeError, match="dropout probability has to be between 0 and 1"):
        F.dropout(torch.randn(3), float("nan"))
    lnn.Dropout(float("nan"))


def test_inplace():
    x = torch.randn(50, 40)
    expected = F.dropout(x, 0.3, seed=11)
    x2 = x.clone()
    out = F.dropout(x2, 0.3, inplace=True, seed=11)
    assert out is x2
    assert torch.equal(x2, expected)
    # a non-leaf in the graph: gradient through the in-place result
    leaf = torch.randn(50, 40, requires_grad=True)
    h = leaf * 1
    F.dropout(h, 0.3, inplace=True, seed=11).sum().backward()
    assert torch.equal(leaf.grad != 0, expected != 0)


def test_backward_regenerates_mask_and_saves_no_tensor():
    x = torch.randn(64, 33, dtype=torch.float64, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = F.dropout(x, 0.4, seed=5)
    # only the one-element seed: the mask is regenerated from (seed, offset)
    assert [(t.dtype, t.numel()) for t in saved] == [(torch.int64, 1)]
    dy = torch.randn_like(y)
    y.backward(dy)
    keep = y.detach() != 0
    torch.testing.assert_close(x.grad, dy * keep / 0.6, rtol=0, atol=1e-15)


def test_channels_last_keeps_format_and_grad_matches_mask():
    x = torch.randn(2, 6, 5, 7).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    y = F.dropout(x, 0.5, seed=21)
    assert y.is_contiguous(memory_format=torch.channels_last)
    keep = torch.from_numpy(rng.keep_mask(21, 0, x.shape, 0.5, x.stride())).to(y.device)
    assert torch.equal(y != 0, keep)
    y.backward(torch.ones(2, 6, 5, 7))  # a contiguous dy against a channels_last y
    assert torch.equal(x.grad != 0, keep)


def test_non_contiguous_input_uses_row_major_mask():
    base = torch.randn(6, 10)
    x = base[:, ::2]
    y = F.dropout(x, 0.5, seed=8)
    keep = torch.from_numpy(rng.keep_mask(8, 0, x.shape, 0.5)).to(y.device)
    assert torch.equal(y != 0, keep)


def test_integer_input_is_torchs_call():
    """Integers go to torch's dropout: its error below p = 1, zeros at p = 1;
    lamina's own seeded stream refuses them."""
    with pytest.raises(RuntimeError) as torchs:
        TF.dropout(torch.arange(4), 0.5)  # (the words differ: CPU "can't be cast", CUDA "not implemented")
    with pytest.raises(RuntimeError, match=re.escape(str(torchs.value))):
        F.dropout(torch.arange(4), 0.5)
    assert torch.equal(F.dropout(torch.arange(4), 1.0), torch.zeros(4, dtype=torch.int64))
    with pytest.raises(RuntimeError, match="floating-point"):
        F.dropout(torch.arange(4), 0.5, seed=1)


def test_module_matches_torch_module():
    m, t = lnn.Dropout(0.3, inplace=True), torch.nn.Dropout(0.3, inplace=True)
    assert isinstance(m, torch.nn.Dropout)
    assert repr(m) == repr(t)
    assert m.state_dict().keys() == t.state_dict().keys()


def test_reference_layer_class():
    layer = ref.Dropout(0.5, seed_source=np.random.default_rng(0))
    x = np.ones((100, 100))
    y = layer(x)
    dx = layer.backward(np.ones_like(x))
    np.testing.assert_array_equal(dx, y)  # dy = 1: dx is the mask times 2
    assert set(np.unique(y)) <= {0.0, 2.0}
    layer.eval()
    assert layer(x) is x


# --- dropout: NumPy reference vs Triton kernels (interpreter) ---------------------

LAYOUTS = ["contiguous", "channels_last", "transposed", "sliced"]


def make(layout, dtype, shape=(2, 3, 41, 53)):
    x = torch.randn(shape).to(dtype)
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "transposed":
        return x.transpose(1, 3).contiguous().transpose(1, 3)
    if layout == "sliced":
        return torch.randn(shape[0], shape[1], shape[2], 2 * shape[3]).to(dtype)[..., ::2]
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_kernel_bit_identical_to_reference(layout, dtype, backend):
    # 2*3*41*53 = 13038 elements: three full 4*GROUP programs and a partial one
    x = make(layout, dtype).requires_grad_(True)
    dy = torch.randn(x.shape).to(dtype)
    out = {}
    for name in ("reference", "triton"):
        backend(name)
        xi = x.detach().clone(memory_format=torch.preserve_format).requires_grad_(True)
        y = F.dropout(xi, 0.35, seed=2**33 + 1)
        y.backward(dy)
        out[name] = (y.detach(), xi.grad)
    # the masks are bit-identical; values too, except that the interpreter
    # rounds float32 -> bfloat16 differently from torch (one bf16 ulp)
    assert torch.equal(out["reference"][0] != 0, out["triton"][0] != 0)
    assert torch.equal(out["reference"][1] != 0, out["triton"][1] != 0)
    if dtype == torch.float32:
        assert torch.equal(out["reference"][0], out["triton"][0])
        assert torch.equal(out["reference"][1], out["triton"][1])
    else:
        torch.testing.assert_close(out["triton"][0], out["reference"][0], rtol=8e-3, atol=0)
        torch.testing.assert_close(out["triton"][1], out["reference"][1], rtol=8e-3, atol=0)
    if layout != "sliced":
        assert out["triton"][0].stride() == x.stride()


def test_kernel_offset_is_a_counter_offset(backend):
    backend("triton")
    k = lamina.backend.kernels("dropout")
    x = torch.ones(3 * 4 * rng.GROUP + 7)
    y = k.dropout_forward(x, 0.5, torch.tensor([123]), 1000)
    keep = rng.uniforms(123, 1000, x.numel()) >= np.float32(0.5)
    assert torch.equal(y != 0, torch.from_numpy(keep).to(y.device))


# --- DropConnect -------------------------------------------------------------------

def test_drop_connect_functional_is_dropout_on_the_weight():
    w = torch.randn(30, 20, requires_grad=True)
    dw = F.drop_connect(w, 0.4, seed=9)
    assert torch.equal(dw, F.dropout(w, 0.4, seed=9))
    assert F.drop_connect(w, 0.4, training=False) is w
    dw.sum().backward()
    assert torch.equal(w.grad != 0, dw != 0)


def test_drop_connect_module_train_eval_and_state_dict():
    torch.manual_seed(0)
    lin = torch.nn.Linear(20, 30)
    m = lnn.DropConnect(lin, p=0.3)
    assert list(m.state_dict()) == ["module.weight", "module.bias"]
    assert "p=0.3" in repr(m)
    x = torch.randn(8, 20)

    torch.manual_seed(42)
    y = m(x)
    torch.manual_seed(42)
    w = F.drop_connect(lin.weight, 0.3)
    torch.testing.assert_close(y, TF.linear(x, w, lin.bias))
    assert (w == 0).any() and not (lin.weight == 0).any()  # the layer's weight is untouched
    assert not torch.equal(m(x), m(x))  # a fresh mask every forward

    m.eval()
    assert torch.equal(m(x), lin(x))

    # a torch checkpoint of the bare layer loads under the module. prefix, and back
    other = torch.nn.Linear(20, 30)
    m.load_state_dict({"module." + k: v for k, v in other.state_dict().items()})
    assert torch.equal(m.module.weight, other.weight)
    fresh = torch.nn.Linear(20, 30)
    fresh.load_state_dict(m.module.state_dict())
    assert torch.equal(fresh.bias, other.bias)


def test_drop_connect_gradient_reaches_the_weight_through_the_mask():
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    m = lnn.DropConnect(conv, p=0.5)
    x = torch.randn(2, 3, 6, 6)
    torch.manual_seed(3)
    m(x).sum().backward()
    torch.manual_seed(3)
    w = F.drop_connect(conv.weight.detach(), 0.5)
    assert torch.equal(conv.weight.grad == 0, w == 0)
    assert conv.bias.grad is not None


def test_drop_connect_needs_a_weight():
    with pytest.raises(TypeError, match="weight"):
        lnn.DropConnect(torch.nn.ReLU())
    with pytest.raises(ValueError):
        lnn.DropConnect(torch.nn.Linear(2, 2), p=2.0)


# --- DropBlock2d ---------------------------------------------------------------------

def expected_drop_fraction(p, b, H, W):
    """Mean over positions of P(dropped) = 1 - (1 - gamma)^k, k the number of
    block seeds whose b x b block covers the position."""
    gamma = p * H * W / (b**2 * (H - b + 1) * (W - b + 1))
    cover_h = np.array([min(h, H - b) - max(0, h - b + 1) + 1 for h in range(H)])
    cover_w = np.array([min(w, W - b) - max(0, w - b + 1) + 1 for w in range(W)])
    k = cover_h[:, None] * cover_w[None, :]
    return float(np.mean(1 - (1 - gamma) ** k)), gamma


@pytest.mark.parametrize("p,b", [(0.1, 3), (0.3, 5), (0.2, 1)])
def test_drop_block_statistics(p, b):
    N, C, H, W = 16, 32, 12, 14
    x = torch.ones(N, C, H, W, dtype=torch.float64)
    y = F.drop_block2d(x, p, b, seed=77)
    dropped = (y == 0).double()
    frac, gamma = expected_drop_fraction(p, b, H, W)
    # planes are independent: compare the mean of N*C plane fractions
    per_plane = dropped.mean(dim=(2, 3)).flatten()
    sd = per_plane.std().item() / math.sqrt(per_plane.numel())
    assert abs(per_plane.mean().item() - frac) < 5 * sd + 1e-3
    # the seeds themselves are Bernoulli(gamma)
    z = rng.bernoulli(77, 0, (N, C, H - b + 1, W - b + 1), gamma)
    assert within(z.mean(), gamma, z.size)
    # rescaled so the mean is kept: numel / (eps + kept) on the kept elements
    kept = (y != 0).sum().item()
    torch.testing.assert_close(y[y != 0], torch.full((kept,), x.numel() / (1e-6 + kept), dtype=torch.float64))


def test_drop_block_blocks_are_whole_squares():
    x = torch.ones(1, 1, 20, 20, dtype=torch.float64)
    y = F.drop_block2d(x, 0.3, 5, seed=3)
    z = rng.bernoulli(3, 0, (1, 1, 16, 16), expected_drop_fraction(0.3, 5, 20, 20)[1])[0, 0]
    expected = np.zeros((20, 20), dtype=bool)
    for i, j in zip(*np.nonzero(z)):
        expected[i:i + 5, j:j + 5] = True
    assert z.any()
    assert np.array_equal((y[0, 0] == 0).cpu().numpy(), expected)


def test_drop_block_scale_is_numel_over_kept():
    x = torch.randn(4, 3, 10, 10, dtype=torch.float64)
    y = F.drop_block2d(x, 0.3, 3, eps=0.5, seed=12)
    mask = ref.drop_block2d_mask(x.shape, 0.3, 3, 12)
    scale = x.numel() / (0.5 + mask.sum())
    torch.testing.assert_close(y, x * torch.from_numpy(mask).to(x.device) * scale, rtol=1e-15, atol=0)


def test_drop_block_edges():
    x = torch.randn(2, 3, 5, 5)
    assert F.drop_block2d(x, 0.5, 3, training=False) is x
    assert F.drop_block2d(x, 0.0, 3) is x
    with pytest.raises(ValueError, match="drop probability has to be between 0 and 1"):
        F.drop_block2d(x, 1.2, 3)
    with pytest.raises(ValueError, match="input should be 4 dimensional"):
        F.drop_block2d(torch.randn(3, 5, 5), 0.5, 3)
    with pytest.raises(ValueError, match="block size should be odd"):
        F.drop_block2d(x, 0.5, 4)
    with pytest.raises(ValueError, match="block size should be odd"):
        F.drop_block2d(torch.randn(1, 1, 4, 6), 0.5, 5)  # clipped to 4
    # clipped to the map: block 7 on a 5 x 5 map is 5 x 5 (gamma = p, one seed a plane)
    y = F.drop_block2d(torch.ones(64, 8, 5, 5, dtype=torch.float64), 0.5, 7, seed=1)
    planes = (y == 0).all(dim=(2, 3)) | (y != 0).all(dim=(2, 3))
    assert planes.all()
    # p = 1 with b = H = W drops everything: scale numel / eps, output 0
    assert torch.equal(F.drop_block2d(torch.ones(2, 2, 3, 3), 1.0, 3, seed=0), torch.zeros(2, 2, 3, 3))


def test_drop_block_inplace():
    x = torch.randn(2, 3, 9, 9)
    expected = F.drop_block2d(x, 0.3, 3, seed=4)
    x2 = x.clone()
    out = F.drop_block2d(x2, 0.3, 3, inplace=True, seed=4)
    assert out is x2 and torch.equal(x2, expected)


def test_drop_block_module():
    m = lnn.DropBlock2d(0.2, 3)
    assert repr(m) == "DropBlock2d(p=0.2, block_size=3, inplace=False)"
    assert (m.p, m.block_size, m.inplace, m.eps) == (0.2, 3, False, 1e-6)
    assert m.state_dict() == {}
    x = torch.randn(2, 3, 8, 8)
    torch.manual_seed(5)
    y = m(x)
    torch.manual_seed(5)
    assert torch.equal(y, F.drop_block2d(x, 0.2, 3))
    assert m.eval()(x) is x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "transposed"])
def test_drop_block_kernel_bit_identical_to_reference(layout, dtype, backend):
    x = make(layout, dtype, shape=(2, 3, 9, 13))
    dy = torch.randn(x.shape).to(dtype)
    out = {}
    for name in ("reference", "triton"):
        backend(name)
        xi = x.detach().clone(memory_format=torch.preserve_format).requires_grad_(True)
        y = F.drop_block2d(xi, 0.4, 3, seed=2**34 + 5)
        y.backward(dy)
        out[name] = (y.detach(), xi.grad)
    assert torch.equal(out["reference"][0], out["triton"][0])
    assert torch.equal(out["reference"][1], out["triton"][1])
    if layout == "channels_last":
        assert out["triton"][0].is_contiguous(memory_format=torch.channels_last)


# --- torch.library registration: schema, fake (meta) impls, autograd ------------------

@pytest.mark.parametrize("name", ["reference", "triton"])
def test_opcheck(name, backend):
    backend(name)
    cl = torch.randn(2, 3, 5, 7).contiguous(memory_format=torch.channels_last)
    transposed = torch.randn(2, 3, 7, 5).transpose(2, 3)
    sliced = torch.randn(2, 3, 5, 14)[..., ::2]
    for x in (cl, transposed, sliced):
        x = x.requires_grad_(True)
        seed = torch.tensor([2**40 + 5])
        torch.library.opcheck(torch.ops.lamina.dropout_forward.default, (x, 0.3, seed, 0))
        torch.library.opcheck(torch.ops.lamina.dropout_backward.default, (x.detach(), 0.3, seed, 0))
        torch.library.opcheck(torch.ops.lamina.drop_block2d_forward.default, (x, 0.3, 3, 1e-6, seed, 0))


@pytest.mark.parametrize("name", ["reference", "triton"])
def test_compiles_fullgraph(name, backend):
    backend(name)
    x = torch.randn(4, 3, 5, 5, requires_grad=True)
    f = torch.compile(lambda x: F.dropout(x, 0.3) * 2 + F.drop_block2d(x, 0.2, 3), backend="aot_eager", fullgraph=True)
    y = f(x)
    y.sum().backward()
    assert y.shape == x.shape and x.grad is not None
    g = torch.compile(lambda x: F.dropout(x, 0.3, seed=9), backend="aot_eager", fullgraph=True)
    assert torch.equal(g(x), F.dropout(x, 0.3, seed=9))


def test_reference_drop_block_layer_class():
    layer = ref.DropBlock2d(0.3, 3, seed_source=np.random.default_rng(1))
    x = np.ones((4, 2, 9, 9))
    y = layer(x)
    kept = np.count_nonzero(y)
    assert 0 < kept < x.size
    np.testing.assert_allclose(y[y != 0], x.size / (1e-6 + kept), rtol=1e-15)
    np.testing.assert_array_equal(layer.backward(np.ones_like(x)), y)
    assert layer.eval()(x) is x


def test_bad_seed():
    x = torch.randn(4)
    with pytest.raises(TypeError, match="seed must be an int"):
        F.dropout(x, 0.5, seed=1.5)
    with pytest.raises(ValueError, match="seed must be in"):
        F.drop_block2d(torch.randn(1, 1, 5, 5), 0.5, 3, seed=-1)
