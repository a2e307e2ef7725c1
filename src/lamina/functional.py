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


# =============================================================================
# pooling
# =============================================================================


from .reference import pooling as ref_pooling  # noqa: E402

__all__ += ["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d"]


def _is_channels_last(x: Tensor) -> bool:
    """4-D and laid out NHWC (and not also plain contiguous, as size-1 dims allow)."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _like_layout(t: Tensor, channels_last: bool) -> Tensor:
    """The reference computes NCHW; give results the input's memory format."""
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t


def _empty_pool(x: Tensor, oh: int, ow: int, dtype=None) -> Tensor:
    n, c = x.shape[:2]
    fmt = torch.channels_last if _is_channels_last(x) else torch.contiguous_format
    return torch.empty((n, c, oh, ow), dtype=x.dtype if dtype is None else dtype, device=x.device, memory_format=fmt)


def _pool_output_hw(x, kernel_size, stride, padding, dilation, ceil_mode):
    h, w = x.shape[-2:]
    return (ref_pooling.pool_output_size(h, kernel_size[0], stride[0], padding[0], dilation[0], ceil_mode),
            ref_pooling.pool_output_size(w, kernel_size[1], stride[1], padding[1], dilation[1], ceil_mode))


def _position_dtype(window_size: int) -> torch.dtype:
    """torch's match for ref_pooling.position_dtype (uint8, then wider signed)."""
    return torch.uint8 if window_size <= 256 else (torch.int16 if window_size <= 32767 else torch.int32)


# --- max_pool2d -----------------------------------------------------------------

@torch.library.custom_op("lamina::max_pool2d_forward", mutates_args=())
def _max_pool2d_forward(x: Tensor, kernel_size: list[int], stride: list[int], padding: list[int], dilation: list[int],
                        ceil_mode: bool, return_indices: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(y, window position of each max, int64 indices or an empty tensor)."""
    if use_kernels(x):
        oh, ow = _pool_output_hw(x, kernel_size, stride, padding, dilation, ceil_mode)
        return kernels("pooling").max_pool2d_forward(x, kernel_size, stride, padding, dilation, (oh, ow), return_indices)
    y, cache = ref_pooling.max_pool2d_forward(to_numpy(x), kernel_size, stride, padding, dilation, ceil_mode)
    cl = _is_channels_last(x)
    pos = torch.from_numpy(cache[0]).to(device=x.device, dtype=_position_dtype(kernel_size[0] * kernel_size[1]))
    indices = (_like_layout(torch.from_numpy(ref_pooling.max_pool2d_indices(cache)).to(x.device), cl) if return_indices
               else x.new_empty((0,), dtype=torch.int64))
    return _like_layout(to_torch(y, x), cl), _like_layout(pos, cl), indices


@_max_pool2d_forward.register_fake
def _(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    oh, ow = _pool_output_hw(x, kernel_size, stride, padding, dilation, ceil_mode)
    indices = _empty_pool(x, oh, ow, torch.int64) if return_indices else x.new_empty((0,), dtype=torch.int64)
    return _empty_pool(x, oh, ow), _empty_pool(x, oh, ow, _position_dtype(kernel_size[0] * kernel_size[1])), indices


@torch.library.custom_op("lamina::max_pool2d_backward", mutates_args=())
def _max_pool2d_backward(dy: Tensor, pos: Tensor, input_size: list[int], kernel_size: list[int], stride: list[int],
                         padding: list[int], dilation: list[int], channels_last: bool) -> Tensor:
    if use_kernels(dy):
        return kernels("pooling").max_pool2d_backward(dy, pos, input_size, kernel_size, stride, padding, dilation, channels_last)
    cache = (to_numpy(pos), tuple(input_size), tuple(kernel_size), tuple(stride), tuple(padding), tuple(dilation))
    return _like_layout(to_torch(ref_pooling.max_pool2d_backward(to_numpy(dy), cache), dy), channels_last)


@_max_pool2d_backward.register_fake
def _(dy, pos, input_size, kernel_size, stride, padding, dilation, channels_last):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(input_size, dtype=dy.dtype, device=dy.device, memory_format=fmt)


def _max_pool2d_setup(ctx, inputs, output):
    x, kernel_size, stride, padding, dilation, _, _ = inputs
    ctx.geometry = (list(x.shape), kernel_size, stride, padding, dilation, _is_channels_last(x))
    ctx.save_for_backward(output[1])


def _max_pool2d_grad(ctx, dy, _dpos, _dindices):
    (pos,) = ctx.saved_tensors
    input_size, kernel_size, stride, padding, dilation, cl = ctx.geometry
    return _max_pool2d_backward(dy, pos, input_size, kernel_size, stride, padding, dilation, cl), None, None, None, None, None, None


_max_pool2d_forward.register_autograd(_max_pool2d_grad, setup_context=_max_pool2d_setup)


def _gather_at(ddx: Tensor, indices: Tensor) -> Tensor:
    """ddx (N, C, H, W) read at flat per-plane indices (N, C, OH, OW)."""
    return ddx.flatten(2).gather(2, indices.flatten(2)).view(indices.shape)


def _max_pool2d_indices(pos, input_size, kernel_size, stride, padding, dilation):
    """PyTorch's int64 indices from the saved window positions, in torch ops."""
    oh, ow = pos.shape[2:]
    p = pos.long()
    rows = (torch.arange(oh, device=p.device) * stride[0] - padding[0]).view(oh, 1) + (p // kernel_size[1]) * dilation[0]
    cols = (torch.arange(ow, device=p.device) * stride[1] - padding[1]).view(1, ow) + (p % kernel_size[1]) * dilation[1]
    return rows * input_size[3] + cols


def _max_pool2d_backward_setup(ctx, inputs, output):
    _, pos, *geometry = inputs
    ctx.geometry = geometry[:-1]
    ctx.save_for_backward(pos)


def _max_pool2d_backward_grad(ctx, ddx):
    """Double backward: dx = scatter of dy to the maxima is linear in dy, its
    adjoint reads ddx at the maxima."""
    (pos,) = ctx.saved_tensors
    return (_gather_at(ddx, _max_pool2d_indices(pos, *ctx.geometry)),) + (None,) * 7


_max_pool2d_backward.register_autograd(_max_pool2d_backward_grad, setup_context=_max_pool2d_backward_setup)


def max_pool2d(input: Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False,
               return_indices: bool = False):
    r"""max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False)

    :math:`y_{n,c,i,j} = \max_{a<k_h,\,b<k_w} x_{n,c,\,s_h i - p_h + d_h a,\; s_w j - p_w + d_w b}`
    over the positions inside the input. ``stride`` defaults to ``kernel_size``.
    With ``return_indices`` also returns PyTorch's int64 indices (flat
    ``h*W + w`` within each plane). Input (N, C, H, W) or (C, H, W).
    """
    op = "max_pool2d"
    validate.pool_input(input, op)
    kernel_size = validate.pool_pair(kernel_size, "kernel_size", op)
    stride = validate.pool_pair(stride, "stride", op, allow_none=True) or kernel_size
    padding = validate.pool_pair(padding, "padding", op)
    dilation = validate.pool_pair(dilation, "dilation", op)
    validate.pool_geometry(input, op, kernel_size, stride, padding, dilation, ceil_mode)
    batched = input.dim() == 4
    x = input if batched else input.unsqueeze(0)
    y, _, indices = _max_pool2d_forward(x, list(kernel_size), list(stride), list(padding), list(dilation),
                                        bool(ceil_mode), bool(return_indices))
    if not batched:
        y = y.squeeze(0)
        indices = indices.squeeze(0) if return_indices else indices
    return (y, indices) if return_indices else y


# --- avg_pool2d -----------------------------------------------------------------

@torch.library.custom_op("lamina::avg_pool2d_forward", mutates_args=())
def _avg_pool2d_forward(x: Tensor, kernel_size: list[int], stride: list[int], padding: list[int], ceil_mode: bool,
                        count_include_pad: bool, divisor_override: int) -> Tensor:
    """divisor_override 0 means none."""
    if use_kernels(x):
        oh, ow = _pool_output_hw(x, kernel_size, stride, padding, (1, 1), ceil_mode)
        return kernels("pooling").avg_pool2d_forward(x, kernel_size, stride, padding, (oh, ow), count_include_pad, divisor_override)
    y, _ = ref_pooling.avg_pool2d_forward(to_numpy(x), kernel_size, stride, padding, ceil_mode, count_include_pad,
                                          divisor_override or None)
    return _like_layout(to_torch(y, x), _is_channels_last(x))


@_avg_pool2d_forward.register_fake
def _(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    return _empty_pool(x, *_pool_output_hw(x, kernel_size, stride, padding, (1, 1), ceil_mode))


@torch.library.custom_op("lamina::avg_pool2d_backward", mutates_args=())
def _avg_pool2d_backward(dy: Tensor, input_size: list[int], kernel_size: list[int], stride: list[int], padding: list[int],
                         count_include_pad: bool, divisor_override: int, channels_last: bool) -> Tensor:
    if use_kernels(dy):
        return kernels("pooling").avg_pool2d_backward(dy, input_size, kernel_size, stride, padding, count_include_pad,
                                                      divisor_override, channels_last)
    g = to_numpy(dy)
    divisor = ref_pooling.avg_pool2d_divisor(input_size[2:], g.shape[2:], kernel_size, stride, padding, count_include_pad,
                                             divisor_override or None, g.dtype)
    cache = (divisor, tuple(input_size), tuple(kernel_size), tuple(stride), tuple(padding))
    return _like_layout(to_torch(ref_pooling.avg_pool2d_backward(g, cache), dy), channels_last)


@_avg_pool2d_backward.register_fake
def _(dy, input_size, kernel_size, stride, padding, count_include_pad, divisor_override, channels_last):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(input_size, dtype=dy.dtype, device=dy.device, memory_format=fmt)


def _avg_pool2d_setup(ctx, inputs, output):
    x, kernel_size, stride, padding, _, count_include_pad, divisor_override = inputs
    ctx.geometry = (list(x.shape), kernel_size, stride, padding, count_include_pad, divisor_override, _is_channels_last(x))


def _avg_pool2d_grad(ctx, dy):
    return (_avg_pool2d_backward(dy, *ctx.geometry),) + (None,) * 6


_avg_pool2d_forward.register_autograd(_avg_pool2d_grad, setup_context=_avg_pool2d_setup)


def _avg_pool2d_backward_setup(ctx, inputs, output):
    dy, input_size, kernel_size, stride, padding, count_include_pad, divisor_override, _ = inputs
    # the forward's ceil_mode: whichever rounding gives dy's size
    floor_hw = _pool_output_hw(torch.empty(input_size, device="meta"), kernel_size, stride, padding, (1, 1), False)
    ceil_mode = tuple(floor_hw) != tuple(dy.shape[2:])
    ctx.args = (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


def _avg_pool2d_backward_grad(ctx, ddx):
    """Double backward: backward is the transpose of the (linear) average
    pool, so its adjoint is the average pool itself."""
    return (_avg_pool2d_forward(ddx, *ctx.args),) + (None,) * 7


_avg_pool2d_backward.register_autograd(_avg_pool2d_backward_grad, setup_context=_avg_pool2d_backward_setup)


def avg_pool2d(input: Tensor, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: Optional[int] = None) -> Tensor:
    r"""avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None)

    :math:`y_{n,c,i,j} = \frac{1}{D_{ij}} \sum_{a<k_h,\,b<k_w} x_{n,c,\,s_h i - p_h + a,\; s_w j - p_w + b}`
    with padding read as zeros; :math:`D_{ij}` is ``divisor_override`` if
    given, else the window's size clipped to input + padding
    (``count_include_pad=True``) or to the input alone.
    """
    op = "avg_pool2d"
    validate.pool_input(input, op)
    kernel_size = validate.pool_pair(kernel_size, "kernel_size", op)
    stride = validate.pool_pair(stride, "stride", op, allow_none=True) or kernel_size
    padding = validate.pool_pair(padding, "padding", op)
    validate.pool_geometry(input, op, kernel_size, stride, padding, (1, 1), ceil_mode)
    if divisor_override is not None and divisor_override == 0:
        raise RuntimeError("avg_pool2d: divisor_override must be non-zero (divisor must be not zero)")
    batched = input.dim() == 4
    x = input if batched else input.unsqueeze(0)
    y = _avg_pool2d_forward(x, list(kernel_size), list(stride), list(padding), bool(ceil_mode), bool(count_include_pad),
                            int(divisor_override or 0))
    return y if batched else y.squeeze(0)


# --- adaptive_avg_pool2d ----------------------------------------------------------

@torch.library.custom_op("lamina::adaptive_avg_pool2d_forward", mutates_args=())
def _adaptive_avg_pool2d_forward(x: Tensor, output_size: list[int]) -> Tensor:
    if use_kernels(x):
        return kernels("pooling").adaptive_avg_pool2d_forward(x, output_size)
    y, _ = ref_pooling.adaptive_avg_pool2d_forward(to_numpy(x), output_size)
    return _like_layout(to_torch(y, x), _is_channels_last(x))


@_adaptive_avg_pool2d_forward.register_fake
def _(x, output_size):
    return _empty_pool(x, *output_size)


@torch.library.custom_op("lamina::adaptive_avg_pool2d_backward", mutates_args=())
def _adaptive_avg_pool2d_backward(dy: Tensor, input_size: list[int], channels_last: bool) -> Tensor:
    if use_kernels(dy):
        return kernels("pooling").adaptive_avg_pool2d_backward(dy, input_size, channels_last)
    g = to_numpy(dy)
    cache = (ref_pooling.adaptive_avg_count(input_size[2:], g.shape[2:], g.dtype), tuple(input_size))
    return _like_layout(to_torch(ref_pooling.adaptive_avg_pool2d_backward(g, cache), dy), channels_last)


@_adaptive_avg_pool2d_backward.register_fake
def _(dy, input_size, channels_last):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(input_size, dtype=dy.dtype, device=dy.device, memory_format=fmt)


def _adaptive_avg_pool2d_setup(ctx, inputs, output):
    ctx.geometry = (list(inputs[0].shape), _is_channels_last(inputs[0]))


def _adaptive_avg_pool2d_grad(ctx, dy):
    return _adaptive_avg_pool2d_backward(dy, *ctx.geometry), None


_adaptive_avg_pool2d_forward.register_autograd(_adaptive_avg_pool2d_grad, setup_context=_adaptive_avg_pool2d_setup)


def _adaptive_avg_pool2d_backward_setup(ctx, inputs, output):
    ctx.output_size = list(inputs[0].shape[2:])


def _adaptive_avg_pool2d_backward_grad(ctx, ddx):
    """Double backward: the adjoint of the (linear) backward is the pool itself."""
    return _adaptive_avg_pool2d_forward(ddx, ctx.output_size), None, None


_adaptive_avg_pool2d_backward.register_autograd(_adaptive_avg_pool2d_backward_grad,
                                                setup_context=_adaptive_avg_pool2d_backward_setup)


def adaptive_avg_pool2d(input: Tensor, output_size) -> Tensor:
    r"""adaptive_avg_pool2d(input, output_size) -> Tensor

    Output (i, j) averages input rows ``floor(i*H/OH)`` to ``ceil((i+1)*H/OH)``
    (exclusive) and the matching columns. ``output_size``: int or pair, a
    ``None`` entry keeps the input's size.
    """
    op = "adaptive_avg_pool2d"
    validate.pool_input(input, op, nonempty=2)
    output_size = validate.adaptive_output_size(input, output_size, op)
    batched = input.dim() == 4
    x = input if batched else input.unsqueeze(0)
    y = _adaptive_avg_pool2d_forward(x, list(output_size))
    return y if batched else y.squeeze(0)


# --- adaptive_max_pool2d ----------------------------------------------------------

@torch.library.custom_op("lamina::adaptive_max_pool2d_forward", mutates_args=())
def _adaptive_max_pool2d_forward(x: Tensor, output_size: list[int], return_indices: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(y, window position of each max as kh*KW + kw, int64 indices or an empty tensor)."""
    if use_kernels(x):
        return kernels("pooling").adaptive_max_pool2d_forward(x, output_size, return_indices)
    y, cache = ref_pooling.adaptive_max_pool2d_forward(to_numpy(x), output_size)
    cl = _is_channels_last(x)
    pos = torch.from_numpy(cache[0]).to(device=x.device, dtype=_adaptive_position_dtype(x, output_size))
    indices = (_like_layout(torch.from_numpy(ref_pooling.adaptive_max_pool2d_indices(cache)).to(x.device), cl)
               if return_indices else x.new_empty((0,), dtype=torch.int64))
    return _like_layout(to_torch(y, x), cl), _like_layout(pos, cl), indices


def _adaptive_position_dtype(x, output_size):
    kh, kw = (int((e - s).max(initial=1)) for s, e in
              (ref_pooling.adaptive_windows(x.shape[2 + d], output_size[d]) for d in range(2)))
    return _position_dtype(kh * kw)


@_adaptive_max_pool2d_forward.register_fake
def _(x, output_size, return_indices):
    indices = _empty_pool(x, *output_size, dtype=torch.int64) if return_indices else x.new_empty((0,), dtype=torch.int64)
    return _empty_pool(x, *output_size), _empty_pool(x, *output_size, dtype=_adaptive_position_dtype(x, output_size)), indices


@torch.library.custom_op("lamina::adaptive_max_pool2d_backward", mutates_args=())
def _adaptive_max_pool2d_backward(dy: Tensor, pos: Tensor, input_size: list[int], channels_last: bool) -> Tensor:
    if use_kernels(dy):
        return kernels("pooling").adaptive_max_pool2d_backward(dy, pos, input_size, channels_last)
    oh, ow = dy.shape[2:]
    start, end = ref_pooling.adaptive_windows(input_size[3], ow)
    kw_max = int((end - start).max(initial=1))
    cache = (to_numpy(pos), kw_max, tuple(input_size))
    return _like_layout(to_torch(ref_pooling.adaptive_max_pool2d_backward(to_numpy(dy), cache), dy), channels_last)


@_adaptive_max_pool2d_backward.register_fake
def _(dy, pos, input_size, channels_last):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(input_size, dtype=dy.dtype, device=dy.device, memory_format=fmt)


def _adaptive_max_pool2d_setup(ctx, inputs, output):
    ctx.geometry = (list(inputs[0].shape), _is_channels_last(inputs[0]))
    ctx.save_for_backward(output[1])


def _adaptive_max_pool2d_grad(ctx, dy, _dpos, _dindices):
    (pos,) = ctx.saved_tensors
    return _adaptive_max_pool2d_backward(dy, pos, *ctx.geometry), None, None


_adaptive_max_pool2d_forward.register_autograd(_adaptive_max_pool2d_grad, setup_context=_adaptive_max_pool2d_setup)


def _adaptive_max_pool2d_indices(pos, input_size):
    """PyTorch's int64 indices from the saved positions (kh * KW + kw), in torch ops."""
    oh, ow = pos.shape[2:]
    hs, _ = ref_pooling.adaptive_windows(input_size[2], oh)
    ws, we = ref_pooling.adaptive_windows(input_size[3], ow)
    kw_max = int((we - ws).max(initial=1))
    p = pos.long()
    rows = torch.as_tensor(hs, device=p.device).view(oh, 1) + p // kw_max
    cols = torch.as_tensor(ws, device=p.device).view(1, ow) + p % kw_max
    return rows * input_size[3] + cols


def _adaptive_max_pool2d_backward_setup(ctx, inputs, output):
    ctx.input_size = inputs[2]
    ctx.save_for_backward(inputs[1])


def _adaptive_max_pool2d_backward_grad(ctx, ddx):
    """Double backward: read ddx at the maxima (see _max_pool2d_backward_grad)."""
    (pos,) = ctx.saved_tensors
    return _gather_at(ddx, _adaptive_max_pool2d_indices(pos, ctx.input_size)), None, None, None


_adaptive_max_pool2d_backward.register_autograd(_adaptive_max_pool2d_backward_grad,
                                                setup_context=_adaptive_max_pool2d_backward_setup)


def adaptive_max_pool2d(input: Tensor, output_size, return_indices: bool = False):
    r"""adaptive_max_pool2d(input, output_size, return_indices=False)

    Output (i, j) is the max of input rows ``floor(i*H/OH)`` to
    ``ceil((i+1)*H/OH)`` (exclusive) and the matching columns; with
    ``return_indices`` also PyTorch's int64 indices (flat ``h*W + w``).
    """
    op = "adaptive_max_pool2d"
    validate.pool_input(input, op, nonempty=3 if input.dim() == 4 else 2)
    output_size = validate.adaptive_output_size(input, output_size, op)
    batched = input.dim() == 4
    x = input if batched else input.unsqueeze(0)
    y, _, indices = _adaptive_max_pool2d_forward(x, list(output_size), bool(return_indices))
    if not batched:
        y = y.squeeze(0)
        indices = indices.squeeze(0) if return_indices else indices
    return (y, indices) if return_indices else y


# =============================================================================
# dropout
# =============================================================================
