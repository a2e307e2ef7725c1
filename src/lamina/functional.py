"""lamina's PyTorch face: functions with torch.nn.functional's signatures.

Each layer is a pair of ``torch.library`` custom ops, ``lamina::<op>_forward``
and ``lamina::<op>_backward``, with a fake (meta) implementation for
torch.compile and the autograd formula registered once. Inside an op,
:func:`lamina.backend.use_kernels` picks the Triton kernel
(``lamina.kernels.<family>``) or the NumPy reference
(``lamina.reference.<family>``); the forward op returns what backward needs,
so nothing is recomputed twice and nothing extra is kept.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import validate
from .backend import kernels, to_numpy, to_torch, use_kernels
from .reference import activation as ref_activation

__all__ = ["relu"]


# =============================================================================
# activation
# =============================================================================

# --- relu ----------------------------------------------------------------------

@torch.library.custom_op("lamina::relu_forward", mutates_args=())
def _relu_forward(x: Tensor) -> Tensor:
    if use_kernels(x):
        return kernels("activation").relu_forward(x)
    y, _ = ref_activation.relu_forward(to_numpy(x))
    return to_torch(y, x)


@_relu_forward.register_fake
def _(x):
    return torch.empty_like(x)


@torch.library.custom_op("lamina::relu_backward", mutates_args=())
def _relu_backward(dy: Tensor, y: Tensor) -> Tensor:
    if use_kernels(y):
        return kernels("activation").relu_backward(dy, y)
    return to_torch(ref_activation.relu_backward(to_numpy(dy), (to_numpy(y),)), y)


@_relu_backward.register_fake
def _(dy, y):
    return torch.empty_like(y)


def _relu_setup(ctx, inputs, output):
    ctx.save_for_backward(output)


def _relu_grad(ctx, dy):
    (y,) = ctx.saved_tensors
    return _relu_backward(dy, y)


_relu_forward.register_autograd(_relu_grad, setup_context=_relu_setup)


def relu(input: Tensor, inplace: bool = False) -> Tensor:
    r"""relu(input, inplace=False) -> Tensor

    :math:`\text{ReLU}(x) = \max(0, x)`, elementwise. Backward uses the saved
    output, not the input.
    """
    validate.floating(input)
    y = _relu_forward(input)
    return input.copy_(y) if inplace else y


# =============================================================================
# normalization: batch, sync-batch and instance norm
# =============================================================================

from .reference import normalization as ref_norm  # noqa: E402

__all__ += ["batch_norm", "instance_norm"]


def _bn_stat_dtype(x: Tensor) -> torch.dtype:
    """Statistics are float32, float64 for float64 input."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _bn_keep_format(t: Tensor, like: Tensor) -> Tensor:
    """``t`` laid out like ``like`` (channels_last stays channels_last)."""
    if t.stride() == like.stride():
        return t
    return torch.empty_like(like, dtype=t.dtype).copy_(t)


# --- building blocks, on either backend (batch_norm's ops and SyncBatchNorm use them)

def _bn_stats(x: Tensor):
    """Per-channel (mean, biased var) over all dims but 1, in the statistics dtype."""
    sdt = _bn_stat_dtype(x)
    if use_kernels(x):
        mean, var, _ = kernels("normalization").batch_norm_stats(x)
        return mean.to(sdt), var.to(sdt)
    if x.numel() == 0:
        nan = torch.full((x.shape[1],), float("nan"), dtype=sdt, device=x.device)
        return nan, nan.clone()
    mean, var, _ = ref_norm.batch_norm_stats(to_numpy(x))
    return to_torch(mean, x, sdt), to_torch(var, x, sdt)


def _bn_normalize(x: Tensor, mean: Tensor, rstd: Tensor, weight, bias) -> Tensor:
    if use_kernels(x):
        return kernels("normalization").batch_norm_normalize(x, mean.float(), rstd.float(), weight, bias)
    y = ref_norm.batch_norm_normalize(to_numpy(x), to_numpy(mean), to_numpy(rstd), to_numpy(weight), to_numpy(bias))
    return _bn_keep_format(to_torch(y, x), x)


def _bn_backward_reduce(dy: Tensor, x: Tensor, mean: Tensor, rstd: Tensor):
    """Per-channel (sum(dy), sum(dy * xhat)) in the statistics dtype."""
    if use_kernels(x):
        s1, s2 = kernels("normalization").batch_norm_backward_reduce(dy, x, mean.float(), rstd.float())
        return s1.to(mean.dtype), s2.to(mean.dtype)
    s1, s2 = ref_norm.batch_norm_backward_reduce(to_numpy(dy), to_numpy(x), to_numpy(mean), to_numpy(rstd))
    return to_torch(s1, x, mean.dtype), to_torch(s2, x, mean.dtype)


def _bn_backward_input(dy, x, mean, rstd, weight, sum_dy, sum_dy_xhat, m: int) -> Tensor:
    """Training dx from channel sums over all ``m`` values per channel."""
    if use_kernels(x):
        return kernels("normalization").batch_norm_backward_input(
            dy, x, mean.float(), rstd.float(), weight, sum_dy.float(), sum_dy_xhat.float(), m, training=True
        )
    dx = ref_norm.batch_norm_backward_input(
        to_numpy(dy), to_numpy(x), to_numpy(mean), to_numpy(rstd), to_numpy(weight),
        to_numpy(sum_dy), to_numpy(sum_dy_xhat), m,
    )
    return _bn_keep_format(to_torch(dx, x), x)


# --- batch_norm: the op pair ----------------------------------------------------

@torch.library.custom_op("lamina::batch_norm_forward", mutates_args=())
def _batch_norm_forward(
    x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
    running_mean: Optional[Tensor], running_var: Optional[Tensor], training: bool, eps: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(y, mean, rstd, var): the statistics used, per channel, in the statistics
    dtype; var is the biased batch variance (training) or running_var."""
    sdt = _bn_stat_dtype(x)
    if use_kernels(x):
        y, mean, rstd, var = kernels("normalization").batch_norm_forward(
            x, weight, bias, running_mean, running_var, training, eps
        )
        # eval: mean and var are the running buffers; outputs may not alias inputs
        return y, mean.to(sdt, copy=not training), rstd.to(sdt), var.to(sdt, copy=not training)
    if training:
        mean, var = _bn_stats(x)
    else:
        # copies: a custom op's outputs may not alias its inputs
        mean, var = running_mean.to(sdt, copy=True), running_var.to(sdt, copy=True)
    rstd = torch.rsqrt(var + eps)
    if x.numel() == 0:
        return torch.empty_like(x), mean, rstd, var
    return _bn_normalize(x, mean, rstd, weight, bias), mean, rstd, var


@_batch_norm_forward.register_fake
def _(x, weight, bias, running_mean, running_var, training, eps):
    c = x.shape[1]
    sdt = _bn_stat_dtype(x)
    return torch.empty_like(x), x.new_empty(c, dtype=sdt), x.new_empty(c, dtype=sdt), x.new_empty(c, dtype=sdt)


@torch.library.custom_op("lamina::batch_norm_backward", mutates_args=())
def _batch_norm_backward(
    dy: Tensor, x: Tensor, weight: Optional[Tensor], mean: Tensor, rstd: Tensor, training: bool,
    param_grads: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """(dx, dweight, dbias); dweight = sum(dy * xhat) and dbias = sum(dy) per
    channel in the statistics dtype. In eval with ``param_grads`` False the
    kernels skip the reduction pass (dx needs no sums) and return zeros."""
    if use_kernels(x):
        dx, dw, db = kernels("normalization").batch_norm_backward(
            dy, x, weight, mean.float(), rstd.float(), training, param_grads
        )
        if dw is None:  # two tensors: a custom op's outputs may not alias each other
            dw, db = torch.zeros_like(mean), torch.zeros_like(mean)
        return dx, dw.to(mean.dtype), db.to(mean.dtype)
    dx, dw, db = ref_norm.batch_norm_backward(
        to_numpy(dy), (to_numpy(x), to_numpy(weight), to_numpy(mean), to_numpy(rstd), training)
    )
    return _bn_keep_format(to_torch(dx, x), x), to_torch(dw, x, mean.dtype), to_torch(db, x, mean.dtype)


@_batch_norm_backward.register_fake
def _(dy, x, weight, mean, rstd, training, param_grads=True):
    return torch.empty_like(x), torch.empty_like(mean), torch.empty_like(mean)


def _batch_norm_setup(ctx, inputs, output):
    x, weight, bias, _, _, training, _ = inputs
    _, mean, rstd, _ = output
    ctx.save_for_backward(x, weight, mean, rstd)
    ctx.training = training
    ctx.bias_dtype = None if bias is None else bias.dtype


def _batch_norm_grad(ctx, dy, _dmean, _drstd, _dvar):
    x, weight, mean, rstd = ctx.saved_tensors
    param_grads = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
    dx, dw, db = _batch_norm_backward(dy, x, weight, mean, rstd, ctx.training, param_grads)
    return (
        dx,
        None if weight is None else dw.to(weight.dtype),
        None if ctx.bias_dtype is None else db.to(ctx.bias_dtype),
        None, None, None, None,
    )


_batch_norm_forward.register_autograd(_batch_norm_grad, setup_context=_batch_norm_setup)


def _bn_check_params(x: Tensor, **params) -> None:
    """Each given per-channel tensor has C = x.shape[1] elements, as torch checks."""
    c = x.shape[1]
    for name, t in params.items():
        if t is None:
            continue
        validate.tensor(t, name)
        if t.numel() != c:
            raise RuntimeError(f"{name} should contain {c} elements not {t.numel()}")
    validate.same_device(x, **params)


@torch.no_grad()
def _bn_update_running_stats(running_mean, running_var, mean, var, m: int, momentum: float) -> None:
    """running = (1 - momentum) * running + momentum * batch statistic, in
    place; running_var takes the unbiased variance var * M / (M - 1)."""
    if running_mean is not None:
        running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
    if running_var is not None:
        unbiased = var * (m / (m - 1)) if m > 1 else torch.full_like(var, float("nan"))
        running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)


def batch_norm(
    input: Tensor,
    running_mean: Optional[Tensor],
    running_var: Optional[Tensor],
    weight: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    r"""batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5) -> Tensor

    Batch normalization over dimension 1 of an input :math:`(N, C, *)`:

    .. math:: y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} * \gamma + \beta

    training: the mean and biased variance of each channel over the batch and
    spatial dimensions; ``running_mean`` / ``running_var``, when given, are
    updated in place with ``momentum`` (unbiased variance). Otherwise the
    running statistics are used. Statistics in float32 (float64 for float64).
    """
    validate.floating(input)
    if input.dim() < 2:
        raise ValueError(f"batch_norm: expected input with at least 2 dimensions (N, C, *), got {input.dim()}D input")
    _bn_check_params(input, running_mean=running_mean, running_var=running_var, weight=weight, bias=bias)
    if training:
        size = list(input.shape)
        if input.numel() // max(size[1], 1) == 1 and size[1] > 0:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {input.size()}")
        if eps <= 0.0:
            raise ValueError(f"batch_norm eps must be positive during training, but got {eps}")
    else:
        if eps < 0.0:
            raise ValueError(f"batch_norm eps must be non-negative, but got {eps}")
        if running_mean is None or running_var is None:
            raise RuntimeError("running_mean and running_var must be defined in evaluation mode")
    y, mean, _, var = _batch_norm_forward(input, weight, bias, running_mean, running_var, bool(training), float(eps))
    if training and input.numel() > 0:
        _bn_update_running_stats(running_mean, running_var, mean, var, input.numel() // input.shape[1], momentum)
    return y


# --- instance_norm: the op pair -------------------------------------------------

def _instance_view(t: Tensor) -> Tensor:
    """(N, C, *) as (1, N*C, *): each (n, c) pair is one batch-norm channel."""
    return t.reshape((1, t.shape[0] * t.shape[1]) + tuple(t.shape[2:]))


@torch.library.custom_op("lamina::instance_norm_forward", mutates_args=())
def _instance_norm_forward(
    x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], eps: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(y, mean, rstd, var), the statistics per (n, c) flattened to (N*C,)."""
    if use_kernels(x):
        sdt = _bn_stat_dtype(x)
        y, mean, rstd, var = kernels("normalization").instance_norm_forward(x, weight, bias, eps)
        return y, mean.to(sdt), rstd.to(sdt), var.to(sdt)
    # the reference: batch norm of the (1, N*C, *) view, weight and bias repeated
    n = x.shape[0]
    w = None if weight is None else weight.repeat(n)
    b = None if bias is None else bias.repeat(n)
    view = _instance_view(x)
    y, mean, rstd, var = _batch_norm_forward(view, w, b, None, None, True, eps)
    return _bn_keep_format(y.reshape(x.shape), x), mean, rstd, var


@_instance_norm_forward.register_fake
def _(x, weight, bias, eps):
    nc = x.shape[0] * x.shape[1]
    sdt = _bn_stat_dtype(x)
    return torch.empty_like(x), x.new_empty(nc, dtype=sdt), x.new_empty(nc, dtype=sdt), x.new_empty(nc, dtype=sdt)


@torch.library.custom_op("lamina::instance_norm_backward", mutates_args=())
def _instance_norm_backward(
    dy: Tensor, x: Tensor, weight: Optional[Tensor], mean: Tensor, rstd: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """(dx, dweight, dbias): batch norm's training backward on the (1, N*C, *)
    view, the parameter sums folded back over n."""
    if use_kernels(x):
        dx, dw, db = kernels("normalization").instance_norm_backward(dy, x, weight, mean.float(), rstd.float())
        return dx, dw.to(mean.dtype), db.to(mean.dtype)
    n, c = x.shape[0], x.shape[1]
    w = None if weight is None else weight.repeat(n)
    dx, dw, db = _batch_norm_backward(_instance_view(dy), _instance_view(x), w, mean, rstd, True)
    return _bn_keep_format(dx.reshape(x.shape), x), dw.reshape(n, c).sum(0), db.reshape(n, c).sum(0)


@_instance_norm_backward.register_fake
def _(dy, x, weight, mean, rstd):
    c = x.shape[1]
    return torch.empty_like(x), mean.new_empty(c), mean.new_empty(c)


def _instance_norm_setup(ctx, inputs, output):
    x, weight, bias, _ = inputs
    _, mean, rstd, _ = output
    ctx.save_for_backward(x, weight, mean, rstd)
    ctx.bias_dtype = None if bias is None else bias.dtype


def _instance_norm_grad(ctx, dy, _dmean, _drstd, _dvar):
    x, weight, mean, rstd = ctx.saved_tensors
    dx, dw, db = _instance_norm_backward(dy, x, weight, mean, rstd)
    return (
        dx,
        None if weight is None else dw.to(weight.dtype),
        None if ctx.bias_dtype is None else db.to(ctx.bias_dtype),
        None,
    )


_instance_norm_forward.register_autograd(_instance_norm_grad, setup_context=_instance_norm_setup)


def instance_norm(
    input: Tensor,
    running_mean: Optional[Tensor] = None,
    running_var: Optional[Tensor] = None,
    weight: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    r"""instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True, momentum=0.1, eps=1e-5) -> Tensor

    Instance normalization: each (n, c) of an input :math:`(N, C, *)` is
    normalized over its spatial values,

    .. math:: y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} * \gamma_c + \beta_c

    With ``use_input_stats=False`` the running statistics are used instead
    (batch norm in eval mode). Given running statistics are updated, as
    torch does, with the (n, c) means and unbiased variances averaged over n.
    """
    validate.floating(input)
    if input.dim() < 2:
        raise ValueError(f"instance_norm: expected input with at least 2 dimensions (N, C, *), got {input.dim()}D input")
    _bn_check_params(input, running_mean=running_mean, running_var=running_var, weight=weight, bias=bias)
    if not use_input_stats:
        if running_mean is None or running_var is None:
            raise RuntimeError("Expected running_mean and running_var to be defined when use_input_stats is false")
        return batch_norm(input, running_mean, running_var, weight, bias, False, momentum, eps)
    spatial = 1
    for d in input.shape[2:]:
        spatial *= d
    if spatial == 1:
        raise ValueError(f"Expected more than 1 spatial element when training, got input size {input.size()}")
    y, mean, _, var = _instance_norm_forward(input, weight, bias, float(eps))
    if input.numel() > 0 and (running_mean is not None or running_var is not None):
        n, c = input.shape[0], input.shape[1]
        with torch.no_grad():
            # the biased variances averaged over n; the update makes them unbiased
            _bn_update_running_stats(
                running_mean, running_var, mean.reshape(n, c).mean(0), var.reshape(n, c).mean(0), spatial, momentum
            )
    return y



# =============================================================================
# normalization: layer, RMS and group norm
# =============================================================================


# =============================================================================
# pooling
# =============================================================================


# =============================================================================
# dropout
# =============================================================================
