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

__all__ += ["LayerNorm", "RMSNorm", "GroupNorm"]


class LayerNorm(torch.nn.LayerNorm):
    r"""Layer normalization (Ba et al., 2016, https://arxiv.org/abs/1607.06450)
    over the trailing ``normalized_shape`` dims:

    .. math:: y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} * \gamma + \beta

    with the biased variance, statistics in float32 at least.

    Args:
        normalized_shape: int or shape of the trailing dims to normalize over
        eps: added to the variance. Default: ``1e-5``
        elementwise_affine: learnable per-element ``weight`` (ones) and ``bias``
            (zeros). Default: ``True``
        bias: learn the bias too (with ``elementwise_affine``). Default: ``True``

    Shape:
        - Input: :math:`(N, *)`, ending in ``normalized_shape``
        - Output: :math:`(N, *)`, same shape as the input
    """

    def forward(self, input: Tensor) -> Tensor:
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)


class RMSNorm(torch.nn.RMSNorm):
    r"""Root mean square layer normalization (Zhang and Sennrich, 2019,
    https://arxiv.org/abs/1910.07467) over the trailing ``normalized_shape`` dims:

    .. math:: y = \frac{x}{\sqrt{\mathrm{E}[x^2] + \epsilon}} * \gamma

    Args:
        normalized_shape: int or shape of the trailing dims to normalize over
        eps: added to the mean square; ``None`` means
            ``torch.finfo(torch.float32).eps`` (float64's for float64 input).
            Default: ``None``
        elementwise_affine: learnable per-element ``weight`` (ones). Default: ``True``

    Shape:
        - Input: :math:`(N, *)`, ending in ``normalized_shape``
        - Output: :math:`(N, *)`, same shape as the input
    """

    def forward(self, input: Tensor) -> Tensor:
        return F.rms_norm(input, self.normalized_shape, self.weight, self.eps)


class GroupNorm(torch.nn.GroupNorm):
    r"""Group normalization (Wu and He, 2018, https://arxiv.org/abs/1803.08494):
    the C channels split into ``num_groups`` groups, each (sample, group)
    normalized by its own mean and biased variance, then a per-channel affine map:

    .. math:: y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} * \gamma + \beta

    Args:
        num_groups: number of groups; must divide ``num_channels``
        num_channels: C, the channels expected in the input
        eps: added to the variance. Default: ``1e-5``
        affine: learnable per-channel ``weight`` (ones) and ``bias`` (zeros).
            Default: ``True``

    Shape:
        - Input: :math:`(N, C, *)`
        - Output: :math:`(N, C, *)`, same shape and memory format as the input
    """

    def forward(self, input: Tensor) -> Tensor:
        return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)


# =============================================================================
# pooling
# =============================================================================


# =============================================================================
# dropout
# =============================================================================
