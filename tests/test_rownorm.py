"""Focused tests for LayerNorm, RMSNorm and GroupNorm beyond the op table:
PyTorch module parity (state_dict both ways, extra_repr, errors), the eps=None
rule of rms_norm, precision with a large mean, memory format, determinism."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF

import lamina
import lamina.functional as F
import lamina.nn as N


def randomize(module):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p))
    return module


MODULE_PAIRS = [
    (lambda: N.LayerNorm(8), lambda: torch.nn.LayerNorm(8)),
    (lambda: N.LayerNorm([3, 8], bias=False), lambda: torch.nn.LayerNorm([3, 8], bias=False)),
    (lambda: N.LayerNorm(8, elementwise_affine=False), lambda: torch.nn.LayerNorm(8, elementwise_affine=False)),
    (lambda: N.RMSNorm(8), lambda: torch.nn.RMSNorm(8)),
    (lambda: N.RMSNorm([3, 8], eps=1e-6, elementwise_affine=False), lambda: torch.nn.RMSNorm([3, 8], eps=1e-6, elementwise_affine=False)),
    (lambda: N.GroupNorm(2, 6), lambda: torch.nn.GroupNorm(2, 6)),
    (lambda: N.GroupNorm(3, 6, eps=1e-3, affine=False), lambda: torch.nn.GroupNorm(3, 6, eps=1e-3, affine=False)),
]


def module_input(torch_module):
    if isinstance(torch_module, torch.nn.GroupNorm):
        return torch.randn(4, torch_module.num_channels, 5, 3)
    return torch.randn(4, 3, 8)


@pytest.mark.parametrize("make_lamina,make_torch", MODULE_PAIRS)
def test_modules_match_torch(make_lamina, make_torch):
    torch.manual_seed(0)
    ours, theirs = make_lamina(), randomize(make_torch())
    assert repr(ours) == repr(make_torch())  # extra_repr, defaults included
    # a torch checkpoint loads into lamina's module and back, same keys
    ours.load_state_dict(theirs.state_dict())
    assert list(ours.state_dict()) == list(theirs.state_dict())
    make_torch().load_state_dict(ours.state_dict())
    x = module_input(theirs)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ours(xa), theirs(xb)
    torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-5)
    dy = torch.randn_like(ya)
    ya.backward(dy)
    yb.backward(dy)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-5)
    for (name, pa), pb in zip(ours.named_parameters(), theirs.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-4, atol=1e-4, msg=name)


@pytest.mark.parametrize(
    "call",
    [
        lambda m, x: m.layer_norm(x, [4]),
        lambda m, x: m.layer_norm(x, [5], torch.ones(4)),
        lambda m, x: m.layer_norm(x, [5], None, torch.ones(4)),
        lambda m, x: m.layer_norm(x, []),
        lambda m, x: m.layer_norm(x, [2, 6, 5, 1]),
        lambda m, x: m.rms_norm(x, [6, 4]),
        lambda m, x: m.rms_norm(x, [5], torch.ones(5, 1)),
        lambda m, x: m.group_norm(x, 4),
        lambda m, x: m.group_norm(x, 3, torch.ones(5)),
        lambda m, x: m.group_norm(x, 3, None, torch.ones(6, 1)),
        lambda m, x: m.group_norm(x[0, 0], 1),
        lambda m, x: m.group_norm(torch.randn(1, 3, 1), 3),
    ],
)
def test_bad_input_raises_like_torch(call):
    x = torch.randn(2, 6, 5)
    with pytest.raises(Exception) as theirs:
        call(TF, x)
    with pytest.raises(type(theirs.value)):
        call(F, x)


def test_group_norm_module_checks_divisibility():
    with pytest.raises(ValueError, match="divisible"):
        N.GroupNorm(4, 6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("with_kernels", [False, True])
def test_rms_norm_default_eps_follows_torch(dtype, with_kernels, backend):
    """eps=None is float32's epsilon (float64's for float64 input); with
    values this small it dominates the mean square."""
    if with_kernels and dtype == torch.float64:
        pytest.skip("kernels compute float64 input in float32")
    backend("triton" if with_kernels else "auto")
    x = torch.randn(3, 16, dtype=dtype) * 1e-5
    w = torch.randn(16, dtype=dtype)
    torch.testing.assert_close(F.rms_norm(x, [16], w), TF.rms_norm(x, [16], w), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(N.RMSNorm(16, dtype=dtype)(x), torch.nn.RMSNorm(16, dtype=dtype)(x), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("op", ["layer_norm", "group_norm"])
@pytest.mark.parametrize("with_kernels", [False, True])
def test_large_mean_no_worse_than_torch(op, with_kernels, backend):
    """1e4 + N(0, 1) in float32: E[x^2] - E[x]^2 would lose the whole
    variance; two passes keep the error at torch's level."""
    backend("triton" if with_kernels else "auto")
    torch.manual_seed(0)
    x = (1e4 + torch.randn(4, 8, 96, dtype=torch.float64)).float()
    if op == "layer_norm":
        fn = lambda m, t: m.layer_norm(t, [96])  # noqa: E731
    else:
        fn = lambda m, t: m.group_norm(t, 4)  # noqa: E731
    exact = fn(TF, x.double())
    ours = (fn(F, x).double() - exact).abs().max().item()
    theirs = (fn(TF, x).double() - exact).abs().max().item()
    assert ours <= 1.5 * theirs + 1e-5, (ours, theirs)


@pytest.mark.parametrize("with_kernels", [False, True])
def test_group_norm_keeps_channels_last(with_kernels, backend):
    backend("triton" if with_kernels else "auto")
    x = torch.randn(2, 6, 5, 7).contiguous(memory_format=torch.channels_last).requires_grad_()
    w, b = torch.randn(6, requires_grad=True), torch.randn(6, requires_grad=True)
    y = F.group_norm(x, 3, w, b)
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, TF.group_norm(x, 3, w, b), rtol=1e-5, atol=1e-5)
    (dx,) = torch.autograd.grad(y, x, torch.randn_like(y))
    assert dx.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("op", ["layer_norm", "rms_norm", "group_norm"])
def test_kernel_gradients_bit_identical_run_to_run(op, backend):
    """Parameter gradients go through per-program partials, not atomics."""
    backend("triton")
    torch.manual_seed(0)
    x = torch.randn(5, 6, 40)
    w, b = torch.randn(40), torch.randn(40)
    if op == "group_norm":
        w, b = torch.randn(6), torch.randn(6)
    calls = {
        "layer_norm": lambda x, w, b: F.layer_norm(x, [40], w, b),
        "rms_norm": lambda x, w, b: F.rms_norm(x, [40], w) + 0 * b.sum(),
        "group_norm": lambda x, w, b: F.group_norm(x, 3, w, b),
    }
    dy = torch.randn(5, 6, 40)

    def grads():
        leaves = [t.clone().requires_grad_() for t in (x, w, b)]
        y = calls[op](*leaves)
        return torch.autograd.grad(y, leaves, dy)

    for first, second in zip(grads(), grads()):
        assert torch.equal(first, second)


@pytest.mark.parametrize("with_kernels", [False, True])
def test_empty_inputs_like_torch(with_kernels, backend):
    backend("triton" if with_kernels else "auto")
    w, b = torch.randn(5, requires_grad=True), torch.randn(5, requires_grad=True)
    for fn, shape in (
        (lambda m, x: m.layer_norm(x, [5], w, b), (0, 5)),
        (lambda m, x: m.rms_norm(x, [5], w), (0, 5)),
        (lambda m, x: m.group_norm(x, 5, w, b), (0, 5, 3)),
    ):
        x = torch.randn(shape, requires_grad=True)
        y = fn(F, x)
        assert y.shape == fn(TF, x).shape
        dx, dw = torch.autograd.grad(y.sum(), (x, w))
        assert dx.shape == x.shape
        assert torch.equal(dw, torch.zeros(5))
    assert F.layer_norm(torch.randn(3, 0), [0]).shape == (3, 0)


def test_torch_compile_fullgraph_sees_plain_ops():
    """Fake implementations and the autograd formula work under
    torch.compile(fullgraph=True) (aot_eager: no C++ compiler needed)."""
    torch.manual_seed(0)
    x, w, b = torch.randn(2, 6, 5, requires_grad=True), torch.randn(5, requires_grad=True), torch.randn(6, requires_grad=True)
    for fn in (
        lambda x, w, b: F.layer_norm(x, [5], w, None),
        lambda x, w, b: F.rms_norm(x, [5], w),
        lambda x, w, b: F.group_norm(x, 3, None, b),
    ):
        compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
        y = compiled(x, w, b)
        torch.testing.assert_close(y, fn(x, w, b))
        grads = torch.autograd.grad(y.square().sum(), (x, w, b), allow_unused=True)
        expected = torch.autograd.grad(fn(x, w, b).square().sum(), (x, w, b), allow_unused=True)
        for g, e in zip(grads, expected):
            assert (g is None) == (e is None)
            if g is not None:
                torch.testing.assert_close(g, e)


def test_custom_ops_pass_opcheck():
    x = torch.randn(3, 4, 6, dtype=torch.float64)
    w, b = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    torch.library.opcheck(torch.ops.lamina.layer_norm_forward.default, (x, [6], w, b, 1e-5))
    torch.library.opcheck(torch.ops.lamina.rms_norm_forward.default, (x, [6], w, 1e-6))
    torch.library.opcheck(torch.ops.lamina.group_norm_forward.default, (x, 2, torch.randn(4, dtype=torch.float64), None, 1e-5))


@pytest.mark.parametrize(
    "op,shape",
    [
        ("layer_norm", (3, 17000)),  # wider than one block: looped forward and backward
        ("rms_norm", (3, 17000)),
        ("layer_norm", (5, 9000)),  # one-block forward, looped backward
        ("layer_norm", (300, 40)),  # several backward programs, each over several row tiles
        ("rms_norm", (300, 40)),
        ("group_norm", (1, 8, 70, 70)),  # groups spread over several tiles
        ("group_norm", (2, 64, 3, 3)),  # many channels a group, the whole group in one tile
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_kernels_on_large_shapes(op, shape, channels_last, backend):
    """The kernel paths the table's small interpreter shapes do not reach,
    float32 against PyTorch."""
    if channels_last and len(shape) != 4:
        pytest.skip("channels_last is 4-D")
    backend("triton")
    torch.manual_seed(0)
    x = torch.randn(shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    features = shape[1] if op == "group_norm" else shape[-1]
    w, b = torch.randn(features) * 0.5 + 1, torch.randn(features)
    calls = {
        "layer_norm": lambda m, x, w, b: m.layer_norm(x, [features], w, b),
        "rms_norm": lambda m, x, w, b: m.rms_norm(x, [features], w) + b,
        "group_norm": lambda m, x, w, b: m.group_norm(x, 2, w, b),
    }
    dy = torch.randn(shape)
    results = []
    for m in (F, TF):
        leaves = [t.clone().requires_grad_() for t in (x, w, b)]
        y = calls[op](m, *leaves)
        results.append((y, *torch.autograd.grad(y, leaves, dy)))
    rows = x.numel() // features
    for name, ours, theirs in zip(("y", "dx", "dweight", "dbias"), *results):
        atol = 1e-5 * (rows ** 0.5 if name in ("dweight", "dbias") else 1)
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=max(atol, 1e-4), msg=name)


@pytest.mark.parametrize("op", ["layer_norm", "rms_norm", "add_layer_norm", "add_rms_norm"])
@pytest.mark.parametrize("rows", [300, 301, 7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_row_backward_prefetch_is_bitwise_the_plain_loop(op, rows, dtype, backend, monkeypatch):
    """The backward kernels' software pipeline (PREFETCH: the next tile loaded
    before this one is reduced; the row norms' and the fused add+norm's)
    computes the same thing in the same order: bitwise equal to the plain
    loop, with programs ending mid-tile (301 rows) and fewer rows than a
    tile's worth of programs (7)."""
    from lamina.kernels import normalization as N

    backend("triton")
    torch.manual_seed(0)
    x, dy = torch.randn(rows, 40, dtype=dtype), torch.randn(rows, 40, dtype=dtype)
    w, b, residual = torch.randn(40, dtype=dtype), torch.randn(40, dtype=dtype), torch.randn(rows, 40, dtype=dtype)
    call = {"layer_norm": lambda x, w, b: F.layer_norm(x, [40], w, b),
            "rms_norm": lambda x, w, b: F.rms_norm(x, [40], w) + b,
            "add_layer_norm": lambda x, w, b: F.add_layer_norm(x, residual, [40], w, b),
            "add_rms_norm": lambda x, w, b: F.add_rms_norm(x, residual, [40], w) + b}[op]
    results = []
    tuned = N._row_backward_config
    for prefetch in (False, True):
        monkeypatch.setattr(N, "_row_backward_config", lambda n, e, p=prefetch: tuned(n, e)[:5] + (p,))
        leaves = [t.clone().requires_grad_() for t in (x, w, b)]
        results.append(torch.autograd.grad(call(*leaves), leaves, dy))
    for plain, pipelined in zip(*results):
        assert torch.equal(plain, pipelined)
