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


__all__ += ["LeakyReLU", "PReLU", "Sigmoid", "Tanh", "GELU", "SiLU", "Swish"]


class LeakyReLU(torch.nn.LeakyReLU):
    r"""Applies :math:`\text{LeakyReLU}(x) = x` if :math:`x > 0` else
    :math:`\text{negative\_slope} \cdot x`, elementwise.

    Args:
        negative_slope: the slope for :math:`x \le 0`. Default: ``1e-2``
        inplace: do the operation in place. Default: ``False``

    Shape:
        - Input: :math:`(*)`, any number of dimensions.
        - Output: :math:`(*)`, same shape as the input.
    """

    def forward(self, input: Tensor) -> Tensor:
        return F.leaky_relu(input, self.negative_slope, self.inplace)


class PReLU(torch.nn.PReLU):
    r"""Applies :math:`\text{PReLU}(x) = x` if :math:`x > 0` else :math:`a_c x`
    (He et al., 2015), with a learnable slope per channel (dim 1) or one
    shared slope.

    Args:
        num_parameters: number of slopes: 1 or the number of input channels. Default: 1
        init: the initial value of every slope. Default: 0.25

    Attributes:
        weight: the learnable slopes, shape ``(num_parameters,)``.

    Shape:
        - Input: :math:`(*)`; with ``num_parameters > 1``, :math:`(N, C, *)`.
        - Output: same shape as the input.
    """

    def forward(self, input: Tensor) -> Tensor:
        return F.prelu(input, self.weight)


class Sigmoid(torch.nn.Sigmoid):
    r"""Applies :math:`\sigma(x) = 1 / (1 + e^{-x})` elementwise, stable for any :math:`|x|`.

    Shape:
        - Input: :math:`(*)`. Output: :math:`(*)`, same shape.
    """

    def forward(self, input: Tensor) -> Tensor:
        return F.sigmoid(input)


class Tanh(torch.nn.Tanh):
    r"""Applies :math:`\tanh(x)` elementwise.

    Shape:
        - Input: :math:`(*)`. Output: :math:`(*)`, same shape.
    """

    def forward(self, input: Tensor) -> Tensor:
        return F.tanh(input)


class GELU(torch.nn.GELU):
    r"""Applies :math:`\text{GELU}(x) = x \Phi(x)` elementwise (Hendrycks & Gimpel, 2016).

    Args:
        approximate: ``'none'`` (erf) or ``'tanh'``
            (:math:`\frac12 x (1 + \tanh(\sqrt{2/\pi}(x + 0.044715 x^3)))`). Default: ``'none'``

    Shape:
        - Input: :math:`(*)`. Output: :math:`(*)`, same shape.
    """

    def forward(self, input: Tensor) -> Tensor:
        return F.gelu(input, approximate=self.approximate)


class SiLU(torch.nn.SiLU):
    r"""Applies :math:`\text{SiLU}(x) = x \sigma(x)` elementwise.

    Args:
        inplace: do the operation in place. Default: ``False``

    Shape:
        - Input: :math:`(*)`. Output: :math:`(*)`, same shape.
    """

    def forward(self, input: Tensor) -> Tensor:
        return F.silu(input, inplace=self.inplace)


class Swish(torch.nn.Module):
    r"""Applies :math:`\text{Swish}(x) = x \sigma(\beta x)` elementwise
    (Ramachandran et al., 2017). ``beta=1`` is SiLU. Not in PyTorch.

    Args:
        beta: the fixed slope inside the sigmoid. Default: ``1.0``

    Shape:
        - Input: :math:`(*)`. Output: :math:`(*)`, same shape.

    Example::

        >>> m = lamina.nn.Swish(beta=1.7)
        >>> y = m(torch.randn(2))
    """

    __constants__ = ["beta"]
    beta: float

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        self.beta = beta

    def forward(self, input: Tensor) -> Tensor:
        return F.swish(input, self.beta)

    def extra_repr(self) -> str:
        return f"beta={self.beta}"


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
