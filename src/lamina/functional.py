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
