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

__all__ += ["Dropout", "DropConnect", "DropBlock2d"]


class Dropout(torch.nn.Dropout):
    r"""In training, zeroes each element with probability ``p`` and scales the
    rest by :math:`\frac{1}{1-p}` (Srivastava et al., "Dropout: A Simple Way
    to Prevent Neural Networks from Overfitting", JMLR 2014); in eval, the
    identity (returns the input itself).

    The mask comes from lamina's counter-based Philox stream, seeded from
    torch's default CPU generator at each call, so ``torch.manual_seed``
    reproduces it; backward regenerates it instead of saving it.

    Args:
        p: probability of an element to be zeroed. Default: ``0.5``
        inplace: do the operation in place. Default: ``False``

    Shape:
        - Input: :math:`(*)`, any number of dimensions.
        - Output: :math:`(*)`, same shape as the input.

    Example::

        >>> m = lamina.nn.Dropout(p=0.2)
        >>> y = m(torch.randn(20, 16))
    """

    def forward(self, input: Tensor) -> Tensor:
        return F.dropout(input, self.p, self.training, self.inplace)


class DropConnect(torch.nn.Module):
    r"""DropConnect (Wan et al., "Regularization of Neural Networks using
    DropConnect", ICML 2013): wraps a layer that has a ``weight`` (for example
    ``nn.Linear`` or ``nn.Conv2d``) and, in training, runs it with a weight
    whose entries are zeroed with probability ``p`` - a fresh mask at every
    forward - and the kept entries scaled by :math:`\frac{1}{1-p}`, as
    dropout scales activations, so the expected weight is the weight. (The
    paper's Gaussian moment matching at inference is not done: in eval the
    wrapped layer runs unchanged.) Gradients reach the wrapped layer's
    weight through the same mask; the bias is not dropped.

    Args:
        module: the layer to wrap; it must have a ``weight`` parameter.
        p: probability of a weight entry to be zeroed. Default: ``0.5``

    The state_dict is the wrapped layer's under ``module.`` (``module.weight``,
    ``module.bias``).

    Shape: those of the wrapped layer.

    Example::

        >>> m = lamina.nn.DropConnect(torch.nn.Linear(20, 30), p=0.3)
        >>> y = m(torch.randn(8, 20))
    """

    def __init__(self, module: torch.nn.Module, p: float = 0.5) -> None:
        super().__init__()
        if not isinstance(getattr(module, "weight", None), torch.Tensor):
            raise TypeError(f"DropConnect: module must have a weight tensor, got {type(module).__name__}")
        F._dropout_check_p(p)
        self.module = module
        self.p = p

    def forward(self, *args, **kwargs):
        if not self.training or self.p == 0:
            return self.module(*args, **kwargs)
        weight = F.drop_connect(self.module.weight, self.p, True)
        return torch.func.functional_call(self.module, {"weight": weight}, args, kwargs)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class DropBlock2d(torch.nn.Module):
    r"""DropBlock (Ghiasi et al., "DropBlock: A regularization method for
    convolutional networks", NeurIPS 2018) with torchvision.ops.DropBlock2d's
    semantics: in training, zeroes square blocks of ``block_size`` x
    ``block_size`` (clipped to the map; must be odd), block seeds drawn with
    :math:`\gamma = \frac{p H W}{b^2 (H-b+1)(W-b+1)}`, and rescales by
    :math:`\frac{\text{numel}}{\epsilon + \sum mask}`. Eval: the identity. See
    :func:`lamina.functional.drop_block2d`.

    Args:
        p: probability of an element to be dropped.
        block_size: side of the square blocks to drop.
        inplace: do the operation in place. Default: ``False``
        eps: added to the denominator of the rescaling. Default: ``1e-06``

    Shape:
        - Input: :math:`(N, C, H, W)`
        - Output: :math:`(N, C, H, W)`, same shape as the input.

    Example::

        >>> m = lamina.nn.DropBlock2d(p=0.1, block_size=3)
        >>> y = m(torch.randn(8, 16, 32, 32))
    """

    def __init__(self, p: float, block_size: int, inplace: bool = False, eps: float = 1e-06) -> None:
        super().__init__()
        self.p = p
        self.block_size = block_size
        self.inplace = inplace
        self.eps = eps

    def forward(self, input: Tensor) -> Tensor:
        return F.drop_block2d(input, self.p, self.block_size, self.inplace, self.eps, self.training)

    def __repr__(self) -> str:
        # torchvision's repr (eps not shown)
        return f"{self.__class__.__name__}(p={self.p}, block_size={self.block_size}, inplace={self.inplace})"
