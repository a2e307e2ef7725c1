"""Autograd beyond first-order reverse mode: forward-mode AD and torch.func
transforms run PyTorch's ops in lamina's layers (under_compile.torch_math),
so tangents, per-sample gradients and batching equal torch's; second
derivatives are exact for pooling, the activations and the norms, and raise
through the fused layers instead of coming out silently as zero
(custom_op.py)."""

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as TF

import lamina.functional as LF

D = torch.float64
CASES = {  # name: (lamina function, torch function, input shape)
    "relu": (LF.relu, TF.relu, (4, 6)),
    "gelu_tanh": (lambda x: LF.gelu(x, approximate="tanh"), lambda x: TF.gelu(x, approximate="tanh"), (4, 6)),
    "layer_norm": (lambda x: LF.layer_norm(x, (6,)), lambda x: TF.layer_norm(x, (6,)), (4, 6)),
    "batch_norm": (lambda x: LF.batch_norm(x, None, None, training=True),
                   lambda x: TF.batch_norm(x, None, None, training=True), (4, 3, 5)),
    "group_norm": (lambda x: LF.group_norm(x, 3), lambda x: TF.group_norm(x, 3), (2, 6, 5)),
    "max_pool2d": (lambda x: LF.max_pool2d(x, 2), lambda x: TF.max_pool2d(x, 2), (2, 3, 6, 6)),
}


@pytest.mark.parametrize("name", CASES)
def test_forward_ad_tangent_equals_torch(name):
    lam, ref, shape = CASES[name]
    x, t = torch.randn(shape, dtype=D), torch.randn(shape, dtype=D)
    with fwAD.dual_level():
        got = fwAD.unpack_dual(lam(fwAD.make_dual(x, t)))
        want = fwAD.unpack_dual(ref(fwAD.make_dual(x, t)))
    assert got.tangent is not None
    torch.testing.assert_close(got.primal, want.primal)
    torch.testing.assert_close(got.tangent, want.tangent)


@pytest.mark.parametrize("name", CASES)
def test_torch_func_transforms_equal_torch(name):
    lam, ref, shape = CASES[name]
    x = torch.randn(shape, dtype=D)
    torch.testing.assert_close(torch.func.grad(lambda t: lam(t).pow(2).sum())(x),
                               torch.func.grad(lambda t: ref(t).pow(2).sum())(x))
    batch = torch.randn((3,) + shape, dtype=D)
    torch.testing.assert_close(torch.func.vmap(lam)(batch), torch.func.vmap(ref)(batch))


FUSED = {  # layers whose backward has no formula of its own: a second derivative raises
    "batch_norm_act": (lambda x: LF.batch_norm_act(x, None, None, training=True, act="silu"),
                       lambda x: TF.silu(TF.batch_norm(x, None, None, training=True))),
    "bias_act": (lambda x: LF.bias_act(x, torch.ones(6, dtype=D), "gelu"), lambda x: TF.gelu(x + 1)),
}


@pytest.mark.parametrize("name", FUSED)
def test_second_derivative_raises(name):
    lam, ref = FUSED[name]
    x = torch.randn(4, 6, 5, 6, dtype=D, requires_grad=True)
    (g,) = torch.autograd.grad(lam(x).pow(2).sum(), x, create_graph=True)
    torch.testing.assert_close(g.detach(), torch.autograd.grad(ref(x).pow(2).sum(), x)[0])
    with pytest.raises(RuntimeError, match="second derivative through this layer is not implemented"):
        g.sum().backward()


SECOND_ORDER = {  # pooling: formulas of its own; activations: their backward in PyTorch's ops
    "avg_pool2d": lambda x: LF.avg_pool2d(x, 2),
    "max_pool2d": lambda x: LF.max_pool2d(x, 2, 1),
    "adaptive_avg_pool2d": lambda x: LF.adaptive_avg_pool2d(x, 3),
    "adaptive_max_pool2d": lambda x: LF.adaptive_max_pool2d(x, (4, 5)),
    "max_pool2d_ceil": lambda x: LF.max_pool2d(x, 3, 2, 1, ceil_mode=True),
    "avg_pool2d_ceil_divisor": lambda x: LF.avg_pool2d(x, 3, 2, 1, ceil_mode=True, divisor_override=4),
    "relu": LF.relu,
    "leaky_relu": lambda x: LF.leaky_relu(x, 0.2),
    "sigmoid": LF.sigmoid,
    "tanh": LF.tanh,
    "gelu": LF.gelu,
    "gelu_tanh": lambda x: LF.gelu(x, approximate="tanh"),
    "silu": LF.silu,
    "swish": lambda x: LF.swish(x, 1.5),
    "prelu": lambda x: LF.prelu(x, torch.linspace(0.1, 0.3, 2, dtype=D)),
    # norms: their gradients in PyTorch's ops when built with create_graph
    "layer_norm": lambda x: LF.layer_norm(x, (6,)),
    "rms_norm": lambda x: LF.rms_norm(x, (6, 6)),
    "group_norm": lambda x: LF.group_norm(x, 2),
    "instance_norm": LF.instance_norm,
    "batch_norm_train": lambda x: LF.batch_norm(x, None, None, training=True),
    "batch_norm_eval": lambda x: LF.batch_norm(x, torch.zeros(2, dtype=D), torch.full((2,), 2.0, dtype=D)),
    # dropout: dy times the regenerated (or saved) mask, in PyTorch's ops
    "dropout": lambda x: LF.dropout(x, 0.3, seed=1),
    "drop_block2d": lambda x: LF.drop_block2d(x, 0.3, 3, seed=2),
}


@pytest.mark.parametrize("name", SECOND_ORDER)
def test_second_derivative_is_exact(name):
    x = torch.randn(1, 2, 6, 6, dtype=D, requires_grad=True)
    assert torch.autograd.gradgradcheck(SECOND_ORDER[name], (x,))


def test_parameter_second_derivatives():
    x = torch.randn(2, 3, 4, dtype=D, requires_grad=True)
    w, b = torch.rand(3, dtype=D, requires_grad=True), torch.rand(3, dtype=D, requires_grad=True)
    assert torch.autograd.gradgradcheck(LF.prelu, (x, w))
    assert torch.autograd.gradgradcheck(lambda t, w_, b_: LF.batch_norm(t, None, None, w_, b_, training=True), (x, w, b))
    w4, b4 = torch.rand(4, dtype=D, requires_grad=True), torch.rand(4, dtype=D, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda t, w_, b_: LF.layer_norm(t, (4,), w_, b_), (x, w4, b4))


def test_prelu_double_backward_at_non_finite_inputs():
    """With create_graph=True prelu's backward takes its PyTorch form: a NaN
    input takes the weight's side there too, as in PyTorch and the
    reference (x > 0 is false for NaN; x <= 0 is false as well)."""
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), 2.0, -3.0, 0.0], dtype=D)
    w = torch.tensor(0.25, dtype=D, requires_grad=True)
    dy = torch.full_like(x, 0.5)
    grads = []
    for prelu, create_graph in ((TF.prelu, True), (LF.prelu, True), (LF.prelu, False)):
        xx = x.clone().requires_grad_()
        grads.append(torch.autograd.grad(prelu(xx, w), (xx, w), dy, create_graph=create_graph))
    for lamina_grads in grads[1:]:
        for got, want in zip(lamina_grads, grads[0]):
            torch.testing.assert_close(got, want, equal_nan=True)


BATCHED = ["relu", "gelu", "silu", "layer_norm", "rms_norm", "batch_norm_train", "instance_norm", "group_norm",
           "max_pool2d", "max_pool2d_ceil", "avg_pool2d", "avg_pool2d_ceil_divisor", "adaptive_avg_pool2d",
           "adaptive_max_pool2d", "dropout", "drop_block2d"]


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("name", BATCHED)
def test_batched_gradients(name, layout):
    """gradcheck's batched-gradient check (autograd's own vmap over the
    backward, as in is_grads_batched; OpInfo's default): the backward
    formulas take PyTorch's ops there. Pooling's second derivatives too."""
    x = torch.randn(1, 2, 6, 6, dtype=D)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    assert torch.autograd.gradcheck(SECOND_ORDER[name], (x,), check_batched_grad=True)
    if "pool" in name or "drop" in name:
        assert torch.autograd.gradgradcheck(SECOND_ORDER[name], (x,), check_batched_grad=True)


@pytest.mark.parametrize("shape", [(2, 6, 5), (0, 6)])
def test_group_norm_batched_parameter_gradients(shape):
    x = torch.randn(shape, dtype=D, requires_grad=True)
    w, b = torch.rand(6, dtype=D, requires_grad=True), torch.rand(6, dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: LF.group_norm(a[0], 3, *a[1:]), (x, w, b), check_batched_grad=True)
    assert torch.autograd.gradgradcheck(lambda *a: LF.group_norm(a[0], 3, *a[1:]), (x, w, b))
