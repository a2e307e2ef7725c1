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

__all__ += ["MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d"]


class MaxPool2d(torch.nn.MaxPool2d):
    r"""2-D max pooling: :math:`y_{n,c,i,j} = \max_{a,b} x_{n,c,\,s_h i - p_h + d_h a,\; s_w j - p_w + d_w b}`.

    Args:
        kernel_size: window size (int or pair)
        stride: window step. Default: ``kernel_size``
        padding: implicit -inf padding on both sides. Default: ``0``
        dilation: spacing between window elements. Default: ``1``
        return_indices: also return PyTorch's int64 indices of the maxima. Default: ``False``
        ceil_mode: round the output size up. Default: ``False``

    Shape:
        - Input: :math:`(N, C, H, W)` or :math:`(C, H, W)`.
        - Output: :math:`(N, C, H_{out}, W_{out})` or :math:`(C, H_{out}, W_{out})`.
    """

    def forward(self, input: Tensor):
        return F.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                            ceil_mode=self.ceil_mode, return_indices=self.return_indices)


class AvgPool2d(torch.nn.AvgPool2d):
    r"""2-D average pooling: the mean of each window, padding counted as zeros.

    Args:
        kernel_size: window size (int or pair)
        stride: window step. Default: ``kernel_size``
        padding: implicit zero padding on both sides. Default: ``0``
        ceil_mode: round the output size up. Default: ``False``
        count_include_pad: count padding in the divisor. Default: ``True``
        divisor_override: divide by this instead of the window size. Default: ``None``

    Shape:
        - Input: :math:`(N, C, H, W)` or :math:`(C, H, W)`.
        - Output: :math:`(N, C, H_{out}, W_{out})` or :math:`(C, H_{out}, W_{out})`.
    """

    def forward(self, input: Tensor) -> Tensor:
        return F.avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)


class AdaptiveAvgPool2d(torch.nn.AdaptiveAvgPool2d):
    r"""Adaptive 2-D average pooling to ``output_size`` (int, pair, ``None`` keeps the input size).

    Output (i, j) averages rows ``floor(i*H/OH)`` to ``ceil((i+1)*H/OH)`` and the matching columns.
    """

    def forward(self, input: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(input, self.output_size)


class AdaptiveMaxPool2d(torch.nn.AdaptiveMaxPool2d):
    r"""Adaptive 2-D max pooling to ``output_size`` (int, pair, ``None`` keeps the input size),
    optionally returning PyTorch's int64 indices (``return_indices``)."""

    def forward(self, input: Tensor):
        return F.adaptive_max_pool2d(input, self.output_size, self.return_indices)



# =============================================================================
# dropout
# =============================================================================
