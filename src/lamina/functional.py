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


# =============================================================================
# dropout
# =============================================================================

from . import rng  # noqa: E402
from .reference import dropout as ref_dropout  # noqa: E402

__all__ += ["dropout", "drop_connect", "drop_block2d"]


def _seed_for(seed: Optional[int], generator: Optional[torch.Generator], like: Tensor) -> Tensor:
    """The Philox seed as a one-element int64 tensor on ``like``'s device.

    Drawn fresh from ``generator`` (default: torch's default CPU generator,
    so torch.manual_seed makes lamina's masks reproducible) unless given.
    A tensor, not a Python int: drawing it needs no host sync, the kernels
    read it on the device, and torch.compile(fullgraph=True) traces it."""
    if seed is None:
        if generator is None:
            drawn = torch.randint(0, 2**63 - 1, (1,), dtype=torch.int64)
        else:
            drawn = torch.randint(0, 2**63 - 1, (1,), dtype=torch.int64, generator=generator, device=generator.device)
        # non_blocking: an async copy of 8 bytes, no wait for the GPU's queue
        return drawn.to(like.device, non_blocking=True)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed must be in [0, 2**63), got {seed}")
    return torch.tensor([seed], dtype=torch.int64, device=like.device)


def _with_strides(t: Tensor, stride) -> Tensor:
    """``t`` laid out with exactly ``stride`` (copied only when it differs)."""
    if tuple(t.stride()) == tuple(stride):
        return t
    out = torch.empty_strided(t.shape, stride, dtype=t.dtype, device=t.device)
    return out.copy_(t)


# --- dropout -------------------------------------------------------------------

@torch.library.custom_op("lamina::dropout_forward", mutates_args=())
def _dropout_forward(x: Tensor, p: float, seed: Tensor, offset: int) -> Tensor:
    if use_kernels(x):
        return kernels("dropout").dropout_forward(x, p, seed, offset)
    y, _ = ref_dropout.dropout_forward(to_numpy(x), p, int(seed.item()), offset)
    return to_torch(y, x)


def _dropout_like(x: Tensor) -> Tensor:
    """An empty tensor laid out as dropout's output: x's layout when x is
    dense (any dimension order), else contiguous (the mask then runs in
    row-major order)."""
    if rng.memory_order(x.shape, x.stride()) is not None:
        return torch.empty_like(x)
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


@_dropout_forward.register_fake
def _(x, p, seed, offset):
    return _dropout_like(x)


@torch.library.custom_op("lamina::dropout_backward", mutates_args=())
def _dropout_backward(dy: Tensor, p: float, seed: Tensor, offset: int) -> Tensor:
    if use_kernels(dy):
        return kernels("dropout").dropout_backward(dy, p, seed, offset)
    return to_torch(ref_dropout.dropout_backward(to_numpy(dy), (p, int(seed.item()), offset)), dy)


@_dropout_backward.register_fake
def _(dy, p, seed, offset):
    return _dropout_like(dy)


def _dropout_setup(ctx, inputs, output):
    _, ctx.p, seed, ctx.offset = inputs
    ctx.save_for_backward(seed)  # one int64: no mask is saved
    # the mask runs along the output's memory order: dy is laid out the same
    # way in backward
    ctx.stride = output.stride()


def _dropout_grad(ctx, dy):
    (seed,) = ctx.saved_tensors
    dy = _with_strides(dy, ctx.stride)
    return _dropout_backward(dy, ctx.p, seed, ctx.offset), None, None, None


_dropout_forward.register_autograd(_dropout_grad, setup_context=_dropout_setup)


def dropout(
    input: Tensor,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    generator: Optional[torch.Generator] = None,
    seed: Optional[int] = None,
) -> Tensor:
    r"""dropout(input, p=0.5, training=True, inplace=False, *, generator=None, seed=None) -> Tensor

    In training, zeroes each element with probability ``p`` and scales the
    kept ones by :math:`1/(1-p)` (Srivastava et al., 2014); ``p = 1`` gives
    ``input * 0``. Not training, ``p = 0`` or an empty input: returns
    ``input`` itself, as torch does.

    Randomness: a Philox seed is drawn from ``generator`` (default: torch's
    default CPU generator, so ``torch.manual_seed`` reproduces the mask), or
    given explicitly as ``seed`` (an int in [0, 2**63)). The mask is
    ``lamina.rng.keep_mask(seed, 0, shape, p, strides)``: element kept when
    its uniform is >= p, the uniforms laid along the tensor's memory order
    (row-major for a non-dense tensor), identical on the CPU reference and the
    GPU kernels. Backward regenerates the mask; nothing is saved but the seed.
    """
    validate.tensor(input)
    _dropout_check_p(p)
    if not training or p == 0 or input.numel() == 0:
        return input
    if not input.is_floating_point():
        raise RuntimeError(f"dropout: expected a floating-point input, got {input.dtype}")
    y = _dropout_forward(input, float(p), _seed_for(seed, generator, input), 0)
    return input.copy_(y) if inplace else y


def _dropout_check_p(p) -> None:
    """torch's checks: ValueError out of [0, 1]; NaN gets past Python's
    comparison and torch's kernel rejects it with a RuntimeError."""
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise TypeError(f"dropout probability p must be a float, got {type(p).__name__}")
    if p < 0.0 or p > 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if p != p:
        raise RuntimeError(f"dropout probability has to be between 0 and 1, but got {p}")


# --- DropConnect ----------------------------------------------------------------

def drop_connect(
    weight: Tensor,
    p: float = 0.5,
    training: bool = True,
    *,
    generator: Optional[torch.Generator] = None,
    seed: Optional[int] = None,
) -> Tensor:
    r"""drop_connect(weight, p=0.5, training=True, *, generator=None, seed=None) -> Tensor

    DropConnect (Wan et al., "Regularization of Neural Networks using
    DropConnect", ICML 2013): the weight with each entry zeroed with
    probability ``p`` and the kept ones scaled by :math:`1/(1-p)` (as dropout
    does, so the expected weight is unchanged; the paper's inference-time
    moment matching is not done: eval uses the plain weight). It is
    :func:`dropout` applied to the weight: same ops, same mask rule, and the
    gradient flows to the weight.
    """
    return dropout(weight, p, training, generator=generator, seed=seed)


# --- DropBlock2d -----------------------------------------------------------------

def _scale_dtype(x: Tensor) -> torch.dtype:
    """DropBlock's scale is computed in float32 (float64 for float64 input)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _drop_block_format(x: Tensor) -> torch.memory_format:
    """The layout of DropBlock's output and mask: channels_last for a
    channels_last input, contiguous for everything else (as the kernels)."""
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


@torch.library.custom_op("lamina::drop_block2d_forward", mutates_args=())
def _drop_block2d_forward(
    x: Tensor, p: float, block_size: int, eps: float, seed: Tensor, offset: int
) -> tuple[Tensor, Tensor, Tensor]:
    if use_kernels(x):
        return kernels("dropout").drop_block2d_forward(x, p, block_size, eps, seed, offset)
    y, (mask, scale) = ref_dropout.drop_block2d_forward(to_numpy(x), p, block_size, int(seed.item()), offset, eps)
    fmt = _drop_block_format(x)
    return (to_torch(y, x).contiguous(memory_format=fmt), to_torch(mask, x, torch.uint8).contiguous(memory_format=fmt),
            to_torch(scale.reshape(1), x, _scale_dtype(x)))


@_drop_block2d_forward.register_fake
def _(x, p, block_size, eps, seed, offset):
    fmt = _drop_block_format(x)
    return (torch.empty_like(x, memory_format=fmt), torch.empty_like(x, dtype=torch.uint8, memory_format=fmt),
            x.new_empty((1,), dtype=_scale_dtype(x)))


@torch.library.custom_op("lamina::drop_block2d_backward", mutates_args=())
def _drop_block2d_backward(dy: Tensor, mask: Tensor, scale: Tensor) -> Tensor:
    if use_kernels(dy):
        return kernels("dropout").drop_block2d_backward(dy, mask, scale)
    cache = (to_numpy(mask).astype(bool), to_numpy(scale)[0])
    return to_torch(ref_dropout.drop_block2d_backward(to_numpy(dy), cache), dy)


@_drop_block2d_backward.register_fake
def _(dy, mask, scale):
    return torch.empty_like(dy)


def _drop_block2d_setup(ctx, inputs, output):
    _, mask, scale = output
    ctx.save_for_backward(mask, scale)
    ctx.mark_non_differentiable(mask, scale)


def _drop_block2d_grad(ctx, dy, _dmask, _dscale):
    mask, scale = ctx.saved_tensors
    return _drop_block2d_backward(dy, mask, scale), None, None, None, None, None


_drop_block2d_forward.register_autograd(_drop_block2d_grad, setup_context=_drop_block2d_setup)


def drop_block2d(
    input: Tensor,
    p: float,
    block_size: int,
    inplace: bool = False,
    eps: float = 1e-06,
    training: bool = True,
    *,
    generator: Optional[torch.Generator] = None,
    seed: Optional[int] = None,
) -> Tensor:
    r"""drop_block2d(input, p, block_size, inplace=False, eps=1e-06, training=True, *, generator=None, seed=None) -> Tensor

    DropBlock (Ghiasi et al., "DropBlock: A regularization method for
    convolutional networks", NeurIPS 2018) with torchvision.ops semantics:
    with ``b = min(block_size, H, W)`` (must be odd),
    :math:`\gamma = \frac{p H W}{b^2 (H-b+1)(W-b+1)}`; block seeds
    :math:`z \sim \text{Bernoulli}(\gamma)` on :math:`(N, C, H-b+1, W-b+1)`;
    each seed zeroes the :math:`b \times b` block it starts; then
    :math:`y = x \cdot mask \cdot \frac{\text{numel}}{\epsilon + \sum mask}`.
    Not training or ``p = 0``: returns ``input`` itself.

    Randomness as in :func:`dropout` (``generator`` or explicit ``seed``): the
    seeds are ``lamina.rng.bernoulli(seed, 0, (N, C, H-b+1, W-b+1), gamma)``,
    identical on the CPU reference and the GPU kernels and independent of the
    memory layout. Backward uses the saved one-byte mask and the scale.

    Shape: input and output :math:`(N, C, H, W)`.
    """
    validate.tensor(input)
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"drop probability has to be between 0 and 1, but got {p}.")
    if input.ndim != 4:
        raise ValueError(f"input should be 4 dimensional. Got {input.ndim} dimensions.")
    if not training or p == 0.0:
        return input
    N, C, H, W = input.shape
    block_size = min(block_size, W, H)
    if block_size % 2 == 0:
        raise ValueError(f"block size should be odd. Got {block_size} which is even.")
    if block_size < 1:
        raise ValueError(f"block_size must be a positive odd integer, got {block_size}")
    if not input.is_floating_point():
        raise RuntimeError(f"drop_block2d: expected a floating-point input, got {input.dtype}")
    y, _, _ = _drop_block2d_forward(input, float(p), int(block_size), float(eps), _seed_for(seed, generator, input), 0)
    return input.copy_(y) if inplace else y
