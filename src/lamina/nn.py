"""``torch.nn`` drop-ins: the same constructor signatures, parameters, buffers,
state_dict keys and ``extra_repr`` as PyTorch's modules, computing through
:mod:`lamina.functional`.

Where PyTorch has the layer, lamina's module subclasses PyTorch's and replaces
only ``forward``: constructor, argument checks, parameters, buffers,
state_dict (and its loading hooks), ``extra_repr`` and ``isinstance`` are
PyTorch's own, so checkpoints load either way and code that inspects module
types keeps working. Layers PyTorch lacks are plain ``nn.Module`` subclasses
written in the same style."""

from __future__ import annotations

import torch
from torch import Tensor

from . import functional as F

__all__ = ["ReLU"]


# =============================================================================
# activation
# =============================================================================

class ReLU(torch.nn.ReLU):
    r"""Applies :math:`\text{ReLU}(x) = \max(0, x)` elementwise.

    Args:
        inplace: do the operation in place. Default: ``False``

    Shape:
        - Input: :math:`(*)`, any number of dimensions.
        - Output: :math:`(*)`, same shape as the input.

    Example::

        >>> m = lamina.nn.ReLU()
        >>> y = m(torch.randn(2))
    """

    def forward(self, input: Tensor) -> Tensor:
        return F.relu(input, inplace=self.inplace)


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
