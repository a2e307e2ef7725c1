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


# =============================================================================
# normalization: layer, RMS and group norm
# =============================================================================

from typing import List as _List  # noqa: E402

from .reference import normalization as ref_rownorm  # noqa: E402

__all__ += ["layer_norm", "rms_norm", "group_norm"]

# The forward ops return (y, mean, rstd) with the statistics in float32
# (float64 for float64 input), flat over the rows / (sample, group) pairs;
# backward rebuilds xhat from x and them. Backward returns (dx, dweight,
# dbias) with empty tensors standing for "no such parameter", which the
# autograd formulas turn into None.
# (_rn_ marks this section's private helpers, so that they cannot collide
# with the batch/instance norm section's names in the same module.)


def _rn_stat_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _rn_lead_numel(x: Tensor, normalized_shape) -> int:
    n = 1
    for size in x.shape[: x.dim() - len(normalized_shape)]:
        n *= size
    return n


def _rn_stats_to_torch(a, like: Tensor) -> Tensor:
    return to_torch(a.reshape(-1), like, _rn_stat_dtype(like))


def _rn_param_grad_to_torch(g, param: Optional[Tensor], like: Tensor) -> Tensor:
    if g is None or param is None:
        return like.new_empty(0, dtype=param.dtype if param is not None else like.dtype)
    return to_torch(g, param)


def _check_normalized_shape(input: Tensor, normalized_shape, weight=None, bias=None) -> list:
    validate.floating(input)
    if isinstance(normalized_shape, int) or not all(isinstance(s, int) for s in normalized_shape):
        raise TypeError(f"normalized_shape must be a tuple or list of ints, got {normalized_shape!r}")
    shape = [int(s) for s in normalized_shape]
    if not shape:
        raise RuntimeError(
            "Expected normalized_shape to be at least 1-dimensional, i.e., containing at least one element, "
            f"but got normalized_shape = {shape}")
    if input.dim() < len(shape) or list(input.shape[input.dim() - len(shape):]) != shape:
        raise RuntimeError(
            f"Given normalized_shape={shape}, expected input with shape [*, {', '.join(map(str, shape))}], "
            f"but got input of size{list(input.shape)}")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and list(p.shape) != shape:
            raise RuntimeError(
                f"Expected {name} to be of same shape as normalized_shape, but got {name} of shape "
                f"{list(p.shape)} and normalized_shape = {shape}")
    validate.same_device(input, weight=weight, bias=bias)
    return shape


def _row_norm_cache_stats(x: Tensor, normalized_shape, stat: Tensor):
    """A flat (M,) statistic as the reference keeps it: leading dims, then 1s."""
    lead = tuple(x.shape[: x.dim() - len(normalized_shape)])
    return to_numpy(stat).reshape(lead + (1,) * len(normalized_shape))


# --- layer_norm ------------------------------------------------------------------

@torch.library.custom_op("lamina::layer_norm_forward", mutates_args=())
def _layer_norm_forward(
    x: Tensor, normalized_shape: _List[int], weight: Optional[Tensor], bias: Optional[Tensor], eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    if use_kernels(x):
        return kernels("normalization").row_norm_forward(x, normalized_shape, weight, bias, eps, rms=False)
    y, (_, mean, rstd, _, _, _) = ref_rownorm.layer_norm_forward(
        to_numpy(x), normalized_shape, to_numpy(weight), to_numpy(bias), eps)
    return to_torch(y, x), _rn_stats_to_torch(mean, x), _rn_stats_to_torch(rstd, x)


@_layer_norm_forward.register_fake
def _(x, normalized_shape, weight, bias, eps):
    m = _rn_lead_numel(x, normalized_shape)
    stat = _rn_stat_dtype(x)
    return x.new_empty(x.shape), x.new_empty(m, dtype=stat), x.new_empty(m, dtype=stat)


@torch.library.custom_op("lamina::layer_norm_backward", mutates_args=())
def _layer_norm_backward(
    dy: Tensor, x: Tensor, normalized_shape: _List[int], weight: Optional[Tensor], mean: Tensor, rstd: Tensor, has_bias: bool
) -> tuple[Tensor, Tensor, Tensor]:
    if use_kernels(x):
        return kernels("normalization").row_norm_backward(dy, x, normalized_shape, weight, mean, rstd, has_bias, rms=False)
    cache = (to_numpy(x), _row_norm_cache_stats(x, normalized_shape, mean), _row_norm_cache_stats(x, normalized_shape, rstd),
             to_numpy(weight), has_bias, len(normalized_shape))
    dx, dweight, dbias = ref_rownorm.layer_norm_backward(to_numpy(dy), cache)
    pdtype = weight.dtype if weight is not None else x.dtype
    dbias_t = to_torch(dbias, x, pdtype) if has_bias else x.new_empty(0, dtype=pdtype)
    return to_torch(dx, x), _rn_param_grad_to_torch(dweight, weight, x), dbias_t


@_layer_norm_backward.register_fake
def _(dy, x, normalized_shape, weight, mean, rstd, has_bias):
    pdtype = weight.dtype if weight is not None else x.dtype
    dweight = x.new_empty(normalized_shape if weight is not None else 0, dtype=pdtype)
    dbias = x.new_empty(normalized_shape if has_bias else 0, dtype=pdtype)
    return x.new_empty(x.shape), dweight, dbias


def _layer_norm_setup(ctx, inputs, output):
    x, normalized_shape, weight, bias, eps = inputs
    _, mean, rstd = output
    ctx.normalized_shape = normalized_shape
    ctx.has_bias = bias is not None
    ctx.save_for_backward(x, weight, mean, rstd)


def _layer_norm_grad(ctx, dy, _dmean, _drstd):
    x, weight, mean, rstd = ctx.saved_tensors
    dx, dweight, dbias = _layer_norm_backward(dy, x, ctx.normalized_shape, weight, mean, rstd, ctx.has_bias)
    return dx, None, dweight if weight is not None else None, dbias if ctx.has_bias else None, None


_layer_norm_forward.register_autograd(_layer_norm_grad, setup_context=_layer_norm_setup)


def layer_norm(
    input: Tensor, normalized_shape: _List[int], weight: Optional[Tensor] = None, bias: Optional[Tensor] = None, eps: float = 1e-5
) -> Tensor:
    r"""layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5) -> Tensor

    Layer normalization over the trailing ``normalized_shape`` dims:
    :math:`y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} * \gamma + \beta`
    (biased variance). See :class:`lamina.nn.LayerNorm`.
    """
    shape = _check_normalized_shape(input, normalized_shape, weight, bias)
    y, _, _ = _layer_norm_forward(input, shape, weight, bias, float(eps))
    return y


# --- rms_norm --------------------------------------------------------------------

@torch.library.custom_op("lamina::rms_norm_forward", mutates_args=())
def _rms_norm_forward(x: Tensor, normalized_shape: _List[int], weight: Optional[Tensor], eps: float) -> tuple[Tensor, Tensor]:
    if use_kernels(x):
        y, _, rstd = kernels("normalization").row_norm_forward(x, normalized_shape, weight, None, eps, rms=True)
        return y, rstd
    y, (_, rstd, _, _) = ref_rownorm.rms_norm_forward(to_numpy(x), normalized_shape, to_numpy(weight), eps)
    return to_torch(y, x), _rn_stats_to_torch(rstd, x)


@_rms_norm_forward.register_fake
def _(x, normalized_shape, weight, eps):
    return x.new_empty(x.shape), x.new_empty(_rn_lead_numel(x, normalized_shape), dtype=_rn_stat_dtype(x))


@torch.library.custom_op("lamina::rms_norm_backward", mutates_args=())
def _rms_norm_backward(
    dy: Tensor, x: Tensor, normalized_shape: _List[int], weight: Optional[Tensor], rstd: Tensor
) -> tuple[Tensor, Tensor]:
    if use_kernels(x):
        dx, dweight, _ = kernels("normalization").row_norm_backward(dy, x, normalized_shape, weight, None, rstd, False, rms=True)
        return dx, dweight
    cache = (to_numpy(x), _row_norm_cache_stats(x, normalized_shape, rstd), to_numpy(weight), len(normalized_shape))
    dx, dweight = ref_rownorm.rms_norm_backward(to_numpy(dy), cache)
    return to_torch(dx, x), _rn_param_grad_to_torch(dweight, weight, x)


@_rms_norm_backward.register_fake
def _(dy, x, normalized_shape, weight, rstd):
    dweight = x.new_empty(normalized_shape, dtype=weight.dtype) if weight is not None else x.new_empty(0)
    return x.new_empty(x.shape), dweight


def _rms_norm_setup(ctx, inputs, output):
    x, normalized_shape, weight, eps = inputs
    ctx.normalized_shape = normalized_shape
    ctx.save_for_backward(x, weight, output[1])


def _rms_norm_grad(ctx, dy, _drstd):
    x, weight, rstd = ctx.saved_tensors
    dx, dweight = _rms_norm_backward(dy, x, ctx.normalized_shape, weight, rstd)
    return dx, None, dweight if weight is not None else None, None


_rms_norm_forward.register_autograd(_rms_norm_grad, setup_context=_rms_norm_setup)


def rms_norm(input: Tensor, normalized_shape: _List[int], weight: Optional[Tensor] = None, eps: Optional[float] = None) -> Tensor:
    r"""rms_norm(input, normalized_shape, weight=None, eps=None) -> Tensor

    Root-mean-square normalization over the trailing ``normalized_shape`` dims:
    :math:`y = \frac{x}{\sqrt{\mathrm{E}[x^2] + \epsilon}} * \gamma`. ``eps=None``
    uses ``torch.finfo(torch.float32).eps`` (``float64``'s for float64 input), as
    PyTorch does. See :class:`lamina.nn.RMSNorm`.
    """
    shape = _check_normalized_shape(input, normalized_shape, weight)
    if eps is None:  # torch's rule: the epsilon of the computation dtype
        eps = torch.finfo(torch.float64 if input.dtype == torch.float64 else torch.float32).eps
    y, _ = _rms_norm_forward(input, shape, weight, float(eps))
    return y


# --- group_norm ------------------------------------------------------------------

def _rn_like_memory_format(t: Tensor, x: Tensor) -> Tensor:
    """t (contiguous) in x's channels-last format when x has it, as torch's
    group_norm keeps the input's memory format."""
    if not x.is_contiguous():
        for fmt, dim in ((torch.channels_last, 4), (torch.channels_last_3d, 5)):
            if x.dim() == dim and x.is_contiguous(memory_format=fmt):
                return t.contiguous(memory_format=fmt)
    return t


@torch.library.custom_op("lamina::group_norm_forward", mutates_args=())
def _group_norm_forward(
    x: Tensor, num_groups: int, weight: Optional[Tensor], bias: Optional[Tensor], eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    if use_kernels(x):
        return kernels("normalization").group_norm_forward(x, num_groups, weight, bias, eps)
    y, (_, mean, rstd, _, _) = ref_rownorm.group_norm_forward(to_numpy(x), num_groups, to_numpy(weight), to_numpy(bias), eps)
    return _rn_like_memory_format(to_torch(y, x), x), _rn_stats_to_torch(mean, x), _rn_stats_to_torch(rstd, x)


@_group_norm_forward.register_fake
def _(x, num_groups, weight, bias, eps):
    stat = _rn_stat_dtype(x)
    m = x.shape[0] * num_groups
    return torch.empty_like(x), x.new_empty(m, dtype=stat), x.new_empty(m, dtype=stat)


@torch.library.custom_op("lamina::group_norm_backward", mutates_args=())
def _group_norm_backward(
    dy: Tensor, x: Tensor, num_groups: int, weight: Optional[Tensor], mean: Tensor, rstd: Tensor, has_bias: bool
) -> tuple[Tensor, Tensor, Tensor]:
    if use_kernels(x):
        return kernels("normalization").group_norm_backward(dy, x, num_groups, weight, mean, rstd, has_bias)
    n = x.shape[0]
    cache = (to_numpy(x), to_numpy(mean).reshape(n, num_groups), to_numpy(rstd).reshape(n, num_groups), to_numpy(weight), has_bias)
    dx, dweight, dbias = ref_rownorm.group_norm_backward(to_numpy(dy), cache)
    pdtype = weight.dtype if weight is not None else x.dtype
    dbias_t = to_torch(dbias, x, pdtype) if has_bias else x.new_empty(0, dtype=pdtype)
    return _rn_like_memory_format(to_torch(dx, x), x), _rn_param_grad_to_torch(dweight, weight, x), dbias_t


@_group_norm_backward.register_fake
def _(dy, x, num_groups, weight, mean, rstd, has_bias):
    pdtype = weight.dtype if weight is not None else x.dtype
    c = x.shape[1]
    return torch.empty_like(x), x.new_empty(c if weight is not None else 0, dtype=pdtype), x.new_empty(c if has_bias else 0, dtype=pdtype)


def _group_norm_setup(ctx, inputs, output):
    x, num_groups, weight, bias, eps = inputs
    _, mean, rstd = output
    ctx.num_groups = num_groups
    ctx.has_bias = bias is not None
    ctx.save_for_backward(x, weight, mean, rstd)


def _group_norm_grad(ctx, dy, _dmean, _drstd):
    x, weight, mean, rstd = ctx.saved_tensors
    dx, dweight, dbias = _group_norm_backward(dy, x, ctx.num_groups, weight, mean, rstd, ctx.has_bias)
    return dx, None, dweight if weight is not None else None, dbias if ctx.has_bias else None, None


_group_norm_forward.register_autograd(_group_norm_grad, setup_context=_group_norm_setup)


def group_norm(
    input: Tensor, num_groups: int, weight: Optional[Tensor] = None, bias: Optional[Tensor] = None, eps: float = 1e-5
) -> Tensor:
    r"""group_norm(input, num_groups, weight=None, bias=None, eps=1e-5) -> Tensor

    Group normalization of ``input`` (N, C, \*): the C channels split into
    ``num_groups`` groups, each (sample, group) normalized by its own mean and
    biased variance, then a per-channel :math:`\gamma, \beta`. See
    :class:`lamina.nn.GroupNorm`.
    """
    validate.floating(input)
    if input.dim() < 2:
        raise RuntimeError(f"Expected at least 2 dimensions for input tensor but received {input.dim()}")
    n, c = input.shape[0], input.shape[1]
    if not isinstance(num_groups, int) or num_groups <= 0 or c % num_groups:
        raise RuntimeError(
            "Expected number of channels in input to be divisible by num_groups, but got input of shape "
            f"{list(input.shape)} and num_groups={num_groups}")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and (p.dim() != 1 or p.numel() != c):
            raise RuntimeError(
                f"Expected {name} to be a vector of size equal to the number of channels in input, but got "
                f"{name} of shape {list(p.shape)} and input of shape {list(input.shape)}")
    validate.same_device(input, weight=weight, bias=bias)
    per_group = n * c // num_groups
    for size in input.shape[2:]:
        per_group *= size
    if per_group == 1:  # torch's _verify_batch_size on (N * C / G, G, *spatial)
        raise ValueError(
            "Expected more than 1 value per channel when training, got input size "
            f"{[n * c // num_groups, num_groups] + list(input.shape[2:])}")
    y, _, _ = _group_norm_forward(input, num_groups, weight, bias, float(eps))
    return y


# =============================================================================
# pooling
# =============================================================================


# =============================================================================
# dropout
# =============================================================================
