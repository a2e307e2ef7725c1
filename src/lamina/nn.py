"""``torch.nn`` drop-ins: the same constructor signatures, parameters, buffers,
state_dict keys and ``extra_repr`` as PyTorch's modules, computing through
:mod:`lamina.functional`."""

from __future__ import annotations

import torch
from torch import Tensor

from . import functional as F

__all__ = ["ReLU"]


# =============================================================================
# activation
# =============================================================================

class ReLU(torch.nn.Module):
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

    __constants__ = ["inplace"]

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:
        return F.relu(input, inplace=self.inplace)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


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
