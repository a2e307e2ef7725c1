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

import functools
from typing import Optional

import torch
import torch.fx
import torch.nn.functional as TF
from torch import Tensor

from . import functional as F
from . import under_compile

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

    def _torch_forward(self, input: Tensor):
        return TF.relu(input, inplace=self.inplace)


__all__ += ["LeakyReLU", "PReLU", "Sigmoid", "Tanh", "GELU", "SiLU", "Swish"]


class LeakyReLU(torch.nn.LeakyReLU):
    r"""Applies the leaky rectified linear unit elementwise:

    .. math:: \text{LeakyReLU}(x) = \begin{cases} x & x > 0 \\ \text{negative\_slope} \cdot x & \text{otherwise} \end{cases}

    Args:
        negative_slope (float): the slope for :math:`x \le 0`. Default: ``0.01``
        inplace (bool): do the operation in place. Default: ``False``

    Shape:
        - Input: :math:`(*)`, any number of dimensions.
        - Output: :math:`(*)`, same shape as the input.

    Example::

        >>> m = lamina.nn.LeakyReLU(0.1)
        >>> m(torch.tensor([-1.0, 2.0]))
        tensor([-0.1000,  2.0000])
    """

    def forward(self, input: Tensor) -> Tensor:
        return F.leaky_relu(input, self.negative_slope, self.inplace)

    def _torch_forward(self, input: Tensor):
        return TF.leaky_relu(input, self.negative_slope, self.inplace)


class PReLU(torch.nn.PReLU):
    r"""Parametric ReLU (He et al., 2015, "Delving Deep into Rectifiers"), with a
    learnable slope per channel (dim 1) or one shared slope:

    .. math:: \text{PReLU}(x) = \begin{cases} x & x > 0 \\ a_c x & \text{otherwise} \end{cases}

    Args:
        num_parameters (int): number of slopes: 1 or the number of input channels. Default: ``1``
        init (float): the initial value of every slope. Default: ``0.25``
        device (torch.device, optional): where to create the parameters and buffers. Default: ``None``
        dtype (torch.dtype, optional): their floating dtype. Default: ``None``

    Attributes:
        weight: the learnable slopes, shape ``(num_parameters,)``.

    Shape:
        - Input: :math:`(*)`; with ``num_parameters > 1``, :math:`(N, C, *)`.
        - Output: same shape as the input.

    Example::

        >>> m = lamina.nn.PReLU(num_parameters=3)
        >>> y = m(torch.randn(2, 3, 4))
        >>> y.shape
        torch.Size([2, 3, 4])
    """

    def forward(self, input: Tensor) -> Tensor:
        return F.prelu(input, self.weight)

    def _torch_forward(self, input: Tensor):
        return TF.prelu(input, self.weight)


class Sigmoid(torch.nn.Sigmoid):
    r"""Applies the logistic sigmoid elementwise, stable for any :math:`|x|`:

    .. math:: \sigma(x) = \frac{1}{1 + e^{-x}}

    Args:
        None: the module takes no arguments.

    Shape:
        - Input: :math:`(*)`, any number of dimensions.
        - Output: :math:`(*)`, same shape as the input.

    Example::

        >>> m = lamina.nn.Sigmoid()
        >>> m(torch.zeros(2))
        tensor([0.5000, 0.5000])
    """

    def forward(self, input: Tensor) -> Tensor:
        return F.sigmoid(input)

    def _torch_forward(self, input: Tensor):
        return torch.sigmoid(input)


class Tanh(torch.nn.Tanh):
    r"""Applies the hyperbolic tangent elementwise:

    .. math:: \tanh(x) = \frac{e^{x} - e^{-x}}{e^{x} + e^{-x}}

    Args:
        None: the module takes no arguments.

    Shape:
        - Input: :math:`(*)`, any number of dimensions.
        - Output: :math:`(*)`, same shape as the input.

    Example::

        >>> m = lamina.nn.Tanh()
        >>> y = m(torch.randn(3, 2))
        >>> y.shape
        torch.Size([3, 2])
    """

    def forward(self, input: Tensor) -> Tensor:
        return F.tanh(input)

    def _torch_forward(self, input: Tensor):
        return torch.tanh(input)


class GELU(torch.nn.GELU):
    r"""Applies the Gaussian error linear unit (Hendrycks & Gimpel, 2016)
    elementwise, :math:`\Phi` the standard normal CDF:

    .. math:: \text{GELU}(x) = x \Phi(x)

    Args:
        approximate (str): ``'none'`` (erf) or ``'tanh'``
            (:math:`\frac12 x (1 + \tanh(\sqrt{2/\pi}(x + 0.044715 x^3)))`). Default: ``'none'``

    Shape:
        - Input: :math:`(*)`, any number of dimensions.
        - Output: :math:`(*)`, same shape as the input.

    Example::

        >>> m = lamina.nn.GELU(approximate='tanh')
        >>> y = m(torch.randn(4))
        >>> y.shape
        torch.Size([4])
    """

    def forward(self, input: Tensor) -> Tensor:
        return F.gelu(input, approximate=self.approximate)

    def _torch_forward(self, input: Tensor):
        return TF.gelu(input, approximate=self.approximate)


class SiLU(torch.nn.SiLU):
    r"""Applies the sigmoid linear unit (Elfwing et al., 2018; Swish with
    :math:`\beta = 1`, Ramachandran et al., 2017) elementwise:

    .. math:: \text{SiLU}(x) = x \sigma(x)

    Args:
        inplace (bool): do the operation in place. Default: ``False``

    Shape:
        - Input: :math:`(*)`, any number of dimensions.
        - Output: :math:`(*)`, same shape as the input.

    Example::

        >>> m = lamina.nn.SiLU()
        >>> y = m(torch.randn(2, 5))
        >>> y.shape
        torch.Size([2, 5])
    """

    def forward(self, input: Tensor) -> Tensor:
        return F.silu(input, inplace=self.inplace)

    def _torch_forward(self, input: Tensor):
        return TF.silu(input, inplace=self.inplace)


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

    def _torch_forward(self, input: Tensor):
        return input * torch.sigmoid(self.beta * input)

    def extra_repr(self) -> str:
        return f"beta={self.beta}"


# =============================================================================
# normalization: batch, sync-batch and instance norm
# =============================================================================

import inspect  # noqa: E402
import warnings  # noqa: E402

import torch.distributed as _dist  # noqa: E402

from . import validate  # noqa: E402

__all__ += ["BatchNorm1d", "BatchNorm2d", "SyncBatchNorm", "InstanceNorm1d", "InstanceNorm2d"]


def _batch_norm_module_forward(module, input: Tensor) -> Tensor:
    """torch.nn's _BatchNorm.forward, computing through lamina.functional:
    momentum=None is a cumulative average (factor 1 / num_batches_tracked);
    eval uses the running statistics when they are tracked."""
    module._check_input_dim(input)
    running_mean, running_var, bn_training, factor = _batch_norm_module_state(module)
    weight, bias = _module_tensor(module, module._parameters, "weight"), _module_tensor(module, module._parameters, "bias")
    return F.batch_norm(input, running_mean, running_var, weight, bias, bn_training, factor, module.eps)


def _torch_batch_norm(input: Tensor, running_mean: Optional[Tensor], running_var: Optional[Tensor],
                      weight: Optional[Tensor], bias: Optional[Tensor], num_batches_tracked: Optional[Tensor],
                      training: bool, track_running_stats: bool, momentum: Optional[float], eps: float) -> Tensor:
    """A batch-norm module's forward under TorchScript (the note at the end
    of this module): torch.nn's _BatchNorm.forward in PyTorch's ops."""
    factor = 0.0
    if momentum is not None:
        factor = momentum
    if training and track_running_stats and num_batches_tracked is not None:
        num_batches_tracked.add_(1)
        if momentum is None:
            factor = 1.0 / float(num_batches_tracked)
    bn_training = training or (running_mean is None and running_var is None)
    if training and not track_running_stats:
        running_mean = None
        running_var = None
    return TF.batch_norm(input, running_mean, running_var, weight, bias, bn_training, factor, eps)


def _module_tensor(module, table, name: str):
    """``getattr(module, name)`` for a parameter or buffer, read from its
    table (``module._parameters`` / ``module._buffers``) when registered
    there: nn.Module.__getattr__, the path of every such read, costs about
    half a microsecond of host time. Exact: a name registered in the table
    is in neither the instance dict nor a property (nn.Module's setattr
    and register_* keep it so; torch.nn.utils.parametrize takes the name
    out of the table first); anything else takes getattr."""
    return table[name] if name in table else getattr(module, name)


def _batch_norm_module_state(module):
    """(running_mean, running_var, bn_training, factor) for one forward, as
    torch.nn's _BatchNorm.forward decides them, counting the batch in
    num_batches_tracked. Each buffer is read once: a module's buffer and
    parameter reads go through nn.Module.__getattr__, about half a
    microsecond of host time apiece, and the forward read them eight times."""
    training, momentum, buffers = module.training, module.momentum, module._buffers
    running_mean = _module_tensor(module, buffers, "running_mean")
    running_var = _module_tensor(module, buffers, "running_var")
    factor = 0.0 if momentum is None else momentum
    if training and module.track_running_stats:
        tracked = _module_tensor(module, buffers, "num_batches_tracked")
        if tracked is not None:
            tracked.add_(1)
            factor = 1.0 / float(tracked) if momentum is None else momentum
    bn_training = training or (running_mean is None and running_var is None)
    if training and not module.track_running_stats:
        running_mean = running_var = None
    return running_mean, running_var, bn_training, factor


class BatchNorm1d(torch.nn.BatchNorm1d):
    r"""Batch normalization (Ioffe & Szegedy, 2015, "Batch Normalization:
    Accelerating Deep Network Training by Reducing Internal Covariate Shift")
    over a 2D or 3D input :math:`(N, C)` or :math:`(N, C, L)`, per channel:

    .. math:: y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} * \gamma + \beta

    Training: statistics of the batch (biased variance to normalize, unbiased
    into ``running_var``); eval: the running statistics. Same arguments,
    buffers and state_dict as :class:`torch.nn.BatchNorm1d`.

    Args:
        num_features (int): C, the number of channels.
        eps (float): added to the variance for stability. Default: ``1e-05``
        momentum (float, optional): running-statistics factor; ``None`` for a
            cumulative average. Default: ``0.1``
        affine (bool): learnable per-channel ``weight`` (ones) and ``bias`` (zeros). Default: ``True``
        track_running_stats (bool): keep ``running_mean`` / ``running_var`` and use
            them in eval. Default: ``True``
        device (torch.device, optional): where to create the parameters and buffers. Default: ``None``
        dtype (torch.dtype, optional): their floating dtype. Default: ``None``
        bias (bool): learn the bias too (with ``affine``). Default: ``True``

    Shape:
        - Input: :math:`(N, C)` or :math:`(N, C, L)`.
        - Output: same shape as the input.

    Example::

        >>> m = lamina.nn.BatchNorm1d(3)
        >>> y = m(torch.randn(4, 3, 5))
        >>> y.shape, m.num_batches_tracked.item()
        (torch.Size([4, 3, 5]), 1)
    """

    def forward(self, input: Tensor) -> Tensor:
        return _batch_norm_module_forward(self, input)

    def _torch_forward(self, input: Tensor):
        self._check_input_dim(input)
        return _torch_batch_norm(input, self.running_mean, self.running_var, self.weight, self.bias,
                                 self.num_batches_tracked, self.training, self.track_running_stats, self.momentum, self.eps)


class BatchNorm2d(torch.nn.BatchNorm2d):
    r"""Batch normalization (Ioffe & Szegedy, 2015) over a 4D input
    :math:`(N, C, H, W)`, per channel:

    .. math:: y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} * \gamma + \beta

    Arguments, buffers and state_dict as :class:`torch.nn.BatchNorm2d`; see
    :class:`BatchNorm1d`. NCHW and channels_last inputs are both fast; the
    output keeps the input's memory format.

    Args:
        num_features (int): C, the number of channels.
        eps (float): added to the variance for stability. Default: ``1e-05``
        momentum (float, optional): running-statistics factor; ``None`` for a
            cumulative average. Default: ``0.1``
        affine (bool): learnable per-channel ``weight`` (ones) and ``bias`` (zeros). Default: ``True``
        track_running_stats (bool): keep ``running_mean`` / ``running_var`` and use
            them in eval. Default: ``True``
        device (torch.device, optional): where to create the parameters and buffers. Default: ``None``
        dtype (torch.dtype, optional): their floating dtype. Default: ``None``
        bias (bool): learn the bias too (with ``affine``). Default: ``True``

    Shape:
        - Input: :math:`(N, C, H, W)`.
        - Output: same shape (and memory format) as the input.

    Example::

        >>> m = lamina.nn.BatchNorm2d(3)
        >>> y = m(torch.randn(2, 3, 4, 4))
        >>> m.eval()(torch.randn(1, 3, 2, 2)).shape
        torch.Size([1, 3, 2, 2])
    """

    def forward(self, input: Tensor) -> Tensor:
        return _batch_norm_module_forward(self, input)

    _torch_forward = BatchNorm1d._torch_forward  # (TorchScript names a method by its def: the same one)


# --- SyncBatchNorm ----------------------------------------------------------------

class _SyncBatchNormFunction(torch.autograd.Function):
    """Batch norm whose statistics span every process of a group.

    forward: local (count, mean, M2) per channel; ONE all_reduce of a
    (world, 3, C) buffer where each rank fills its own row (an all-gather by
    summation), then Chan's formula merges the ranks' rows, so a large mean
    does not cancel. backward: local (sum dy, sum dy * xhat); ONE all_reduce
    of the two packed; dx uses the global sums and the global count.
    dweight / dbias are the local sums, as torch's SyncBatchNorm returns them
    (data-parallel training then averages them across ranks)."""

    @staticmethod
    def forward(ctx, input, weight, bias, running_mean, running_var, eps, momentum, process_group, world_size):
        c = input.shape[1]
        count = input.numel() // c
        mean, var = F._bn_stats(input)
        sdt = mean.dtype
        packed = torch.zeros((world_size, 3, c), dtype=sdt, device=input.device)
        rank = _dist.get_rank(process_group)
        if count > 0:
            packed[rank, 0] = count
            packed[rank, 1] = mean
            packed[rank, 2] = var * count
        _dist.all_reduce(packed, group=process_group)
        counts, means, m2s = packed[:, 0], packed[:, 1], packed[:, 2]
        total = counts.sum(0)
        m = int(total[0].item())  # values per channel over all ranks
        if m == 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {input.size()}")
        # Chan et al.: merge the ranks' (count, mean, M2)
        g_mean = (counts * means).sum(0) / total
        g_var = (m2s + counts * (means - g_mean) ** 2).sum(0) / total
        rstd = torch.rsqrt(g_var + eps)
        if m > 0:
            F._bn_update_running_stats(running_mean, running_var, g_mean, g_var, m, momentum)
        y = F._bn_normalize(input, g_mean, rstd, weight, bias) if input.numel() else torch.empty_like(input)
        ctx.save_for_backward(input, weight, g_mean, rstd)
        ctx.process_group, ctx.m = process_group, m
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, dy):
        input, weight, mean, rstd = ctx.saved_tensors
        c = input.shape[1]
        if input.numel():
            sum_dy, sum_dy_xhat = F._bn_backward_reduce(dy, input, mean, rstd)
        else:
            sum_dy = sum_dy_xhat = torch.zeros(c, dtype=mean.dtype, device=input.device)
        dx = None
        if ctx.needs_input_grad[0]:
            packed = torch.stack([sum_dy, sum_dy_xhat])
            _dist.all_reduce(packed, group=ctx.process_group)
            dx = (
                F._bn_backward_input(dy, input, mean, rstd, weight, packed[0], packed[1], ctx.m)
                if input.numel() else torch.empty_like(input)
            )
        dw = sum_dy_xhat.to(weight.dtype) if weight is not None and ctx.needs_input_grad[1] else None
        db = sum_dy.to(weight.dtype if weight is not None else dy.dtype) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, dw, db, None, None, None, None, None, None


class SyncBatchNorm(torch.nn.SyncBatchNorm):
    r"""Batch normalization (Ioffe & Szegedy, 2015) whose statistics are computed
    over the whole mini-batch across every process of ``process_group``
    (default: the world):

    .. math:: y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} * \gamma + \beta

    One all_reduce forward (the ranks' count, mean and M2 per channel) and
    one backward (sum dy and sum dy * xhat per channel). Outside a
    distributed run, in eval, or with one process it is :class:`BatchNorm2d`.
    Unlike torch's, CPU tensors (gloo) are accepted. Arguments, buffers and
    state_dict as :class:`torch.nn.SyncBatchNorm`.

    Args:
        num_features (int): C, the number of channels.
        eps (float): added to the variance for stability. Default: ``1e-05``
        momentum (float, optional): running-statistics factor; ``None`` for a
            cumulative average. Default: ``0.1``
        affine (bool): learnable per-channel ``weight`` (ones) and ``bias`` (zeros). Default: ``True``
        track_running_stats (bool): keep ``running_mean`` / ``running_var`` and use
            them in eval. Default: ``True``
        process_group (ProcessGroup, optional): the processes whose batches are
            pooled. Default: ``None`` (the world)
        device (torch.device, optional): where to create the parameters and buffers. Default: ``None``
        dtype (torch.dtype, optional): their floating dtype. Default: ``None``
        bias (bool): learn the bias too (with ``affine``). Default: ``True``

    Shape:
        - Input: :math:`(N, C, *)`.
        - Output: same shape as the input.

    Example::

        >>> m = lamina.nn.SyncBatchNorm(3)  # no process group here: plain batch norm
        >>> y = m(torch.randn(2, 3, 4, 4))
        >>> y.shape
        torch.Size([2, 3, 4, 4])
    """

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        self._check_non_zero_input_channels(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        bn_training = self.training or (self.running_mean is None and self.running_var is None)
        use_running = not self.training or self.track_running_stats
        running_mean = self.running_mean if use_running else None
        running_var = self.running_var if use_running else None
        need_sync = bn_training and self.training and _dist.is_available() and _dist.is_initialized()
        if need_sync:
            process_group = self.process_group or _dist.group.WORLD
            world_size = _dist.get_world_size(process_group)
            need_sync = world_size > 1
        if not need_sync:
            return F.batch_norm(input, running_mean, running_var, self.weight, self.bias, bn_training, factor, self.eps)
        validate.floating(input)
        return _SyncBatchNormFunction.apply(
            input, self.weight, self.bias, running_mean, running_var, self.eps, factor, process_group, world_size
        )

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        """Every BatchNorm*d in ``module`` replaced by a lamina SyncBatchNorm that
        shares its parameters and buffers (``module`` itself is returned converted
        when it is a batch norm)."""
        converted = module
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            kwargs = {}
            if "bias" in inspect.signature(torch.nn.SyncBatchNorm.__init__).parameters:
                kwargs["bias"] = module.bias is not None  # torch versions with BatchNorm(bias=...)
            converted = cls(
                module.num_features, module.eps, module.momentum, module.affine,
                module.track_running_stats, process_group, **kwargs,
            )
            if module.affine:
                with torch.no_grad():
                    converted.weight = module.weight
                    converted.bias = module.bias
            converted.running_mean = module.running_mean
            converted.running_var = module.running_var
            converted.num_batches_tracked = module.num_batches_tracked
            converted.training = module.training
            if hasattr(module, "qconfig"):
                converted.qconfig = module.qconfig
        for name, child in module.named_children():
            converted.add_module(name, cls.convert_sync_batchnorm(child, process_group))
        return converted


# --- InstanceNorm -----------------------------------------------------------------

def _instance_norm_module_forward(module, input: Tensor) -> Tensor:
    """torch.nn's _InstanceNorm.forward through lamina.functional: unbatched
    input gets a batch of one; running statistics (when tracked) are updated in
    training and used in eval."""
    module._check_input_dim(input)
    no_batch_dim = module._get_no_batch_dim()
    feature_dim = input.dim() - no_batch_dim
    if input.size(feature_dim) != module.num_features:
        if module.affine:
            raise ValueError(
                f"expected input's size at dim={feature_dim} to match num_features"
                f" ({module.num_features}), but got: {input.size(feature_dim)}."
            )
        warnings.warn(
            f"input's size at dim={feature_dim} does not match num_features. "
            "You can silence this warning by not passing in num_features, "
            "which is not used because affine=False"
        )
    unbatched = input.dim() == no_batch_dim
    x = input.unsqueeze(0) if unbatched else input
    y = F.instance_norm(
        x, module.running_mean, module.running_var, module.weight, module.bias,
        module.training or not module.track_running_stats,
        module.momentum if module.momentum is not None else 0.0, module.eps,
    )
    return y.squeeze(0) if unbatched else y


class InstanceNorm1d(torch.nn.InstanceNorm1d):
    r"""Instance normalization (Ulyanov et al., 2016, "Instance Normalization: The
    Missing Ingredient for Fast Stylization") over a 2D (unbatched) or 3D input
    :math:`(N, C, L)`: each (n, c) normalized over L,

    .. math:: y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} * \gamma + \beta

    Arguments (``affine`` and ``track_running_stats`` default ``False``),
    buffers and state_dict as :class:`torch.nn.InstanceNorm1d`.

    Args:
        num_features (int): C, the number of channels.
        eps (float): added to the variance for stability. Default: ``1e-05``
        momentum (float): running-statistics factor. Default: ``0.1``
        affine (bool): learnable per-channel ``weight`` and ``bias``. Default: ``False``
        track_running_stats (bool): keep running statistics and use them in eval. Default: ``False``
        device (torch.device, optional): where to create the parameters and buffers. Default: ``None``
        dtype (torch.dtype, optional): their floating dtype. Default: ``None``
        bias (bool): learn the bias too (with ``affine``). Default: ``True``

    Shape:
        - Input: :math:`(N, C, L)` or :math:`(C, L)`.
        - Output: same shape as the input.

    Example::

        >>> m = lamina.nn.InstanceNorm1d(3, affine=True)
        >>> y = m(torch.randn(2, 3, 10))
        >>> y.shape
        torch.Size([2, 3, 10])
    """

    def forward(self, input: Tensor) -> Tensor:
        return _instance_norm_module_forward(self, input)

    def _torch_forward(self, input: Tensor):
        self._check_input_dim(input)
        if input.dim() == self._get_no_batch_dim():
            return self._apply_instance_norm(input.unsqueeze(0)).squeeze(0)
        return self._apply_instance_norm(input)


class InstanceNorm2d(torch.nn.InstanceNorm2d):
    r"""Instance normalization (Ulyanov et al., 2016) over a 3D (unbatched) or 4D
    input :math:`(N, C, H, W)`: each (n, c) normalized over H x W,

    .. math:: y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} * \gamma + \beta

    See :class:`InstanceNorm1d`.

    Args:
        num_features (int): C, the number of channels.
        eps (float): added to the variance for stability. Default: ``1e-05``
        momentum (float): running-statistics factor. Default: ``0.1``
        affine (bool): learnable per-channel ``weight`` and ``bias``. Default: ``False``
        track_running_stats (bool): keep running statistics and use them in eval. Default: ``False``
        device (torch.device, optional): where to create the parameters and buffers. Default: ``None``
        dtype (torch.dtype, optional): their floating dtype. Default: ``None``
        bias (bool): learn the bias too (with ``affine``). Default: ``True``

    Shape:
        - Input: :math:`(N, C, H, W)` or :math:`(C, H, W)`.
        - Output: same shape as the input.

    Example::

        >>> m = lamina.nn.InstanceNorm2d(3)
        >>> y = m(torch.randn(2, 3, 4, 4))
        >>> y.shape
        torch.Size([2, 3, 4, 4])
    """

    def forward(self, input: Tensor) -> Tensor:
        return _instance_norm_module_forward(self, input)

    _torch_forward = InstanceNorm1d._torch_forward  # (TorchScript names a method by its def: the same one)



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
        normalized_shape (int or list or torch.Size): the trailing dims to normalize over.
        eps (float): added to the variance. Default: ``1e-05``
        elementwise_affine (bool): learnable per-element ``weight`` (ones) and ``bias``
            (zeros). Default: ``True``
        bias (bool): learn the bias too (with ``elementwise_affine``). Default: ``True``
        device (torch.device, optional): where to create the parameters and buffers. Default: ``None``
        dtype (torch.dtype, optional): their floating dtype. Default: ``None``

    Shape:
        - Input: :math:`(N, *)`, ending in ``normalized_shape``.
        - Output: :math:`(N, *)`, same shape as the input.

    Example::

        >>> m = lamina.nn.LayerNorm(8)
        >>> y = m(torch.randn(2, 5, 8))
        >>> y.shape
        torch.Size([2, 5, 8])
    """

    def forward(self, input: Tensor) -> Tensor:
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def _torch_forward(self, input: Tensor):
        return TF.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)


class RMSNorm(torch.nn.RMSNorm):
    r"""Root mean square layer normalization (Zhang & Sennrich, 2019,
    https://arxiv.org/abs/1910.07467) over the trailing ``normalized_shape`` dims:

    .. math:: y = \frac{x}{\sqrt{\mathrm{E}[x^2] + \epsilon}} * \gamma

    Args:
        normalized_shape (int or list or torch.Size): the trailing dims to normalize over.
        eps (float, optional): added to the mean square; ``None`` means
            ``torch.finfo(torch.float32).eps`` (float64's for float64 input).
            Default: ``None``
        elementwise_affine (bool): learnable per-element ``weight`` (ones). Default: ``True``
        device (torch.device, optional): where to create the parameters and buffers. Default: ``None``
        dtype (torch.dtype, optional): their floating dtype. Default: ``None``

    Shape:
        - Input: :math:`(N, *)`, ending in ``normalized_shape``.
        - Output: :math:`(N, *)`, same shape as the input.

    Example::

        >>> m = lamina.nn.RMSNorm([4, 8])
        >>> y = m(torch.randn(3, 4, 8))
        >>> y.shape
        torch.Size([3, 4, 8])
    """

    def forward(self, input: Tensor) -> Tensor:
        return F.rms_norm(input, self.normalized_shape, self.weight, self.eps)

    def _torch_forward(self, input: Tensor):
        return TF.rms_norm(input, self.normalized_shape, self.weight, self.eps)


class GroupNorm(torch.nn.GroupNorm):
    r"""Group normalization (Wu & He, 2018, https://arxiv.org/abs/1803.08494):
    the C channels split into ``num_groups`` groups, each (sample, group)
    normalized by its own mean and biased variance, then a per-channel affine map:

    .. math:: y = \frac{x - \mathrm{E}_g[x]}{\sqrt{\mathrm{Var}_g[x] + \epsilon}} * \gamma_c + \beta_c

    Args:
        num_groups (int): number of groups; must divide ``num_channels``.
        num_channels (int): C, the channels expected in the input.
        eps (float): added to the variance. Default: ``1e-05``
        affine (bool): learnable per-channel ``weight`` (ones) and ``bias`` (zeros).
            Default: ``True``
        device (torch.device, optional): where to create the parameters and buffers. Default: ``None``
        dtype (torch.dtype, optional): their floating dtype. Default: ``None``
        bias (bool): learn the bias too (with ``affine``). Default: ``True``

    Shape:
        - Input: :math:`(N, C, *)`.
        - Output: :math:`(N, C, *)`, same shape and memory format as the input.

    Example::

        >>> m = lamina.nn.GroupNorm(2, 6)
        >>> y = m(torch.randn(2, 6, 4, 4))
        >>> y.shape
        torch.Size([2, 6, 4, 4])
    """

    def forward(self, input: Tensor) -> Tensor:
        return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def _torch_forward(self, input: Tensor):
        return TF.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)


# =============================================================================
# pooling
# =============================================================================

__all__ += ["MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d"]


class MaxPool2d(torch.nn.MaxPool2d):
    r"""2-D max pooling over each window, positions outside the input ignored:

    .. math:: y_{n,c,i,j} = \max_{a<k_h,\,b<k_w} x_{n,c,\,s_h i - p_h + d_h a,\; s_w j - p_w + d_w b}

    Args:
        kernel_size (int or tuple): window size :math:`(k_h, k_w)`.
        stride (int or tuple, optional): window step. Default: ``None`` (``kernel_size``)
        padding (int or tuple): implicit :math:`-\infty` padding on both sides. Default: ``0``
        dilation (int or tuple): spacing between window elements. Default: ``1``
        return_indices (bool): also return PyTorch's int64 indices of the maxima. Default: ``False``
        ceil_mode (bool): round the output size up. Default: ``False``

    Shape:
        - Input: :math:`(N, C, H_{in}, W_{in})` or :math:`(C, H_{in}, W_{in})`.
        - Output: :math:`(N, C, H_{out}, W_{out})` or :math:`(C, H_{out}, W_{out})`, with
          :math:`H_{out} = \lfloor (H_{in} + 2 p_h - d_h (k_h - 1) - 1) / s_h \rfloor + 1`
          (ceil with ``ceil_mode``), and likewise :math:`W_{out}`.

    Example::

        >>> m = lamina.nn.MaxPool2d(3, stride=2, padding=1)
        >>> y = m(torch.randn(1, 2, 8, 8))
        >>> y.shape
        torch.Size([1, 2, 4, 4])
    """

    def forward(self, input: Tensor):
        return F.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                            ceil_mode=self.ceil_mode, return_indices=self.return_indices)

    def _torch_forward(self, input: Tensor):
        return TF.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                             ceil_mode=self.ceil_mode, return_indices=self.return_indices)


class AvgPool2d(torch.nn.AvgPool2d):
    r"""2-D average pooling: the mean of each window, padding counted as zeros:

    .. math:: y_{n,c,i,j} = \frac{1}{D_{ij}} \sum_{a<k_h,\,b<k_w} x_{n,c,\,s_h i - p_h + a,\; s_w j - p_w + b}

    :math:`D_{ij}` is ``divisor_override`` if given, else the window's size
    clipped to input + padding (``count_include_pad=True``) or to the input alone.

    Args:
        kernel_size (int or tuple): window size :math:`(k_h, k_w)`.
        stride (int or tuple, optional): window step. Default: ``None`` (``kernel_size``)
        padding (int or tuple): implicit zero padding on both sides. Default: ``0``
        ceil_mode (bool): round the output size up. Default: ``False``
        count_include_pad (bool): count padding in the divisor. Default: ``True``
        divisor_override (int, optional): divide by this instead of the window size. Default: ``None``

    Shape:
        - Input: :math:`(N, C, H_{in}, W_{in})` or :math:`(C, H_{in}, W_{in})`.
        - Output: :math:`(N, C, H_{out}, W_{out})` or :math:`(C, H_{out}, W_{out})`, with
          :math:`H_{out} = \lfloor (H_{in} + 2 p_h - k_h) / s_h \rfloor + 1`
          (ceil with ``ceil_mode``), and likewise :math:`W_{out}`.

    Example::

        >>> m = lamina.nn.AvgPool2d(2)
        >>> m(torch.arange(16.0).reshape(1, 1, 4, 4))
        tensor([[[[ 2.5000,  4.5000],
                  [10.5000, 12.5000]]]])
    """

    def forward(self, input: Tensor) -> Tensor:
        return F.avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)

    def _torch_forward(self, input: Tensor):
        return TF.avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                             self.count_include_pad, self.divisor_override)


class AdaptiveAvgPool2d(torch.nn.AdaptiveAvgPool2d):
    r"""Adaptive 2-D average pooling to a fixed ``output_size``. Output (i, j)
    averages input rows :math:`\lfloor i H / H_{out} \rfloor` to
    :math:`\lceil (i+1) H / H_{out} \rceil` (exclusive) and the matching columns:

    .. math:: y_{n,c,i,j} = \operatorname{mean}_{h \in R_i,\, w \in C_j} x_{n,c,h,w}

    Args:
        output_size (int or tuple): :math:`(H_{out}, W_{out})`; an int for a
            square output, a ``None`` entry keeps the input's size.

    Shape:
        - Input: :math:`(N, C, H, W)` or :math:`(C, H, W)`.
        - Output: :math:`(N, C, H_{out}, W_{out})` or :math:`(C, H_{out}, W_{out})`.

    Example::

        >>> m = lamina.nn.AdaptiveAvgPool2d(1)
        >>> y = m(torch.randn(2, 3, 7, 7))
        >>> y.shape
        torch.Size([2, 3, 1, 1])
    """

    def forward(self, input: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(input, self.output_size)

    def _torch_forward(self, input: Tensor):
        return TF.adaptive_avg_pool2d(input, self.output_size)


class AdaptiveMaxPool2d(torch.nn.AdaptiveMaxPool2d):
    r"""Adaptive 2-D max pooling to a fixed ``output_size``. Output (i, j) is the
    max of input rows :math:`\lfloor i H / H_{out} \rfloor` to
    :math:`\lceil (i+1) H / H_{out} \rceil` (exclusive) and the matching columns:

    .. math:: y_{n,c,i,j} = \max_{h \in R_i,\, w \in C_j} x_{n,c,h,w}

    Args:
        output_size (int or tuple): :math:`(H_{out}, W_{out})`; an int for a
            square output, a ``None`` entry keeps the input's size.
        return_indices (bool): also return PyTorch's int64 indices (flat
            ``h*W + w``). Default: ``False``

    Shape:
        - Input: :math:`(N, C, H, W)` or :math:`(C, H, W)`.
        - Output: :math:`(N, C, H_{out}, W_{out})` or :math:`(C, H_{out}, W_{out})`.

    Example::

        >>> m = lamina.nn.AdaptiveMaxPool2d((2, 3), return_indices=True)
        >>> y, idx = m(torch.randn(1, 4, 6, 9))
        >>> y.shape, idx.shape
        (torch.Size([1, 4, 2, 3]), torch.Size([1, 4, 2, 3]))
    """

    def forward(self, input: Tensor):
        return F.adaptive_max_pool2d(input, self.output_size, self.return_indices)

    def _torch_forward(self, input: Tensor):
        return TF.adaptive_max_pool2d(input, self.output_size, self.return_indices)



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

    def _torch_forward(self, input: Tensor):
        return TF.dropout(input, self.p, self.training, self.inplace)


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

    def _torch_forward(self, input: Tensor):
        # the same recipe in PyTorch's ops and random numbers: block seeds
        # drawn where a whole block fits, each grown to a block by a max pool
        if not self.training or self.p == 0.0:
            return input
        n, c, h, w = input.shape
        b = min(min(self.block_size, w), h)
        gamma = self.p * h * w / (b * b * (h - b + 1) * (w - b + 1))
        seeds = torch.bernoulli(torch.full([n, c, h - b + 1, w - b + 1], gamma, dtype=input.dtype, device=input.device))
        keep = 1.0 - TF.max_pool2d(TF.pad(seeds, [b // 2, b // 2, b // 2, b // 2]), [b, b], [1, 1], [b // 2, b // 2])
        scale = keep.numel() / (self.eps + keep.sum())
        if self.inplace:
            return input.mul_(keep).mul_(scale)
        return input * keep * scale

    def __repr__(self) -> str:
        # torchvision's repr (eps not shown)
        return f"{self.__class__.__name__}(p={self.p}, block_size={self.block_size}, inplace={self.inplace})"


# =============================================================================
# fused
# =============================================================================

__all__ += ["BatchNormAct2d", "GroupNormAct", "AddLayerNorm", "AddRMSNorm"]


class BatchNormAct2d(torch.nn.BatchNorm2d):
    r"""Batch normalization (Ioffe & Szegedy, 2015) of a 4D input
    :math:`(N, C, H, W)` followed by an activation, in one pass after the statistics:

    .. math:: y = \mathrm{act}\left(\frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} * \gamma + \beta\right)

    A :class:`torch.nn.BatchNorm2d` (same parameters, buffers and state_dict
    keys: a BatchNorm2d checkpoint loads unchanged, and back) with two more
    attributes. Backward recomputes the activation's input; no pre-activation
    tensor is kept.

    Args:
        num_features (int): C, the number of channels.
        eps (float): added to the variance for stability. Default: ``1e-05``
        momentum (float, optional): running-statistics factor; ``None`` for a
            cumulative average. Default: ``0.1``
        affine (bool): learnable per-channel ``weight`` and ``bias``. Default: ``True``
        track_running_stats (bool): keep running statistics and use them in eval. Default: ``True``
        act (str): 'relu', 'leaky_relu', 'silu', 'gelu' or 'identity'. Default: ``'relu'``
        inplace (bool): write the output over the input. With an invertible act
            ('identity', 'leaky_relu' with a positive slope) this is In-Place
            Activated BatchNorm (Rota Bulo et al., CVPR 2018): backward keeps
            only the output, the statistics and the parameters (the weight
            must have no zero entry). Default: ``False``
        device (torch.device, optional): where to create the parameters and buffers. Default: ``None``
        dtype (torch.dtype, optional): their floating dtype. Default: ``None``
        negative_slope (float): the slope of 'leaky_relu'. Default: ``0.01``

    Shape:
        - Input: :math:`(N, C, H, W)`.
        - Output: same shape and memory format as the input.

    Example::

        >>> m = lamina.nn.BatchNormAct2d(3, act='leaky_relu', negative_slope=0.1)
        >>> y = m(torch.randn(2, 3, 4, 4))
        >>> sorted(m.state_dict()) == sorted(torch.nn.BatchNorm2d(3).state_dict())
        True
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, act: str = "relu", inplace: bool = False, device=None, dtype=None,
                 negative_slope: float = 0.01) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        F._fu_check_act(act, F._FUSED_NORM_ACTS)
        self.act = act
        self.inplace = inplace
        self.negative_slope = negative_slope

    def extra_repr(self) -> str:
        slope = f", negative_slope={self.negative_slope}" if self.act == "leaky_relu" else ""
        return f"{super().extra_repr()}, act={self.act!r}{slope}, inplace={self.inplace}"

    def forward(self, input: Tensor) -> Tensor:
        # torch.nn's _BatchNorm.forward (momentum=None: a cumulative average)
        self._check_input_dim(input)
        running_mean, running_var, bn_training, factor = _batch_norm_module_state(self)
        weight, bias = _module_tensor(self, self._parameters, "weight"), _module_tensor(self, self._parameters, "bias")
        return F.batch_norm_act(
            input, running_mean, running_var, weight, bias, bn_training, factor, self.eps,
            act=self.act, negative_slope=self.negative_slope, inplace=self.inplace,
        )

    def _torch_forward(self, input: Tensor):
        self._check_input_dim(input)
        y = _torch_batch_norm(input, self.running_mean, self.running_var, self.weight, self.bias,
                              self.num_batches_tracked, self.training, self.track_running_stats, self.momentum, self.eps)
        return under_compile.activation(y, self.act, self.negative_slope)


class GroupNormAct(torch.nn.GroupNorm):
    r"""Group normalization (Wu & He, 2018) followed by an activation (SiLU by
    default, as in diffusion U-Nets), fused:

    .. math:: y = \mathrm{act}\left(\frac{x - \mathrm{E}_g[x]}{\sqrt{\mathrm{Var}_g[x] + \epsilon}} * \gamma_c + \beta_c\right)

    A :class:`torch.nn.GroupNorm` (same parameters and state_dict) plus ``act``.

    Args:
        num_groups (int): number of groups; must divide ``num_channels``.
        num_channels (int): C, the channels expected in the input.
        eps (float): added to the variance. Default: ``1e-05``
        affine (bool): learnable per-channel ``weight`` and ``bias``. Default: ``True``
        act (str): 'silu', 'relu', 'leaky_relu', 'gelu' or 'identity'. Default: ``'silu'``
        device (torch.device, optional): where to create the parameters and buffers. Default: ``None``
        dtype (torch.dtype, optional): their floating dtype. Default: ``None``

    Shape:
        - Input: :math:`(N, C, *)`.
        - Output: same shape and memory format as the input.

    Example::

        >>> m = lamina.nn.GroupNormAct(4, 8)
        >>> y = m(torch.randn(2, 8, 3, 3))
        >>> y.shape
        torch.Size([2, 8, 3, 3])
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True,
                 act: str = "silu", device=None, dtype=None) -> None:
        super().__init__(num_groups, num_channels, eps, affine, device, dtype)
        F._fu_check_act(act, F._FUSED_NORM_ACTS)
        self.act = act

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, act={self.act!r}"

    def forward(self, input: Tensor) -> Tensor:
        return F.group_norm_act(input, self.num_groups, self.weight, self.bias, self.eps, self.act)

    def _torch_forward(self, input: Tensor):
        return under_compile.activation(TF.group_norm(input, self.num_groups, self.weight, self.bias, self.eps), self.act)


class AddLayerNorm(torch.nn.LayerNorm):
    r"""Residual add (with dropout on the branch) and layer normalization (Ba et
    al., 2016) in one pass:

    .. math:: s = \mathrm{dropout}(x) + \mathrm{residual}, \quad
              y = \frac{s - \mathrm{E}[s]}{\sqrt{\mathrm{Var}[s] + \epsilon}} * \gamma + \beta

    ``forward(x, residual)`` returns y, or (y, s) with ``prenorm=True``.

    A :class:`torch.nn.LayerNorm` (same parameters and state_dict) plus
    ``dropout_p`` (applied in training only) and ``prenorm``.

    Args:
        normalized_shape (int or list or torch.Size): the trailing dims to normalize over.
        eps (float): added to the variance. Default: ``1e-05``
        elementwise_affine (bool): learnable per-element ``weight`` and ``bias``. Default: ``True``
        bias (bool): learn the bias too (with ``elementwise_affine``). Default: ``True``
        dropout_p (float): dropout probability on ``x`` in training. Default: ``0.0``
        prenorm (bool): also return the sum s (the next residual). Default: ``False``
        device (torch.device, optional): where to create the parameters and buffers. Default: ``None``
        dtype (torch.dtype, optional): their floating dtype. Default: ``None``

    Shape:
        - x, residual: :math:`(*, \text{normalized\_shape})`.
        - Output: y of the same shape (and s, same shape, with ``prenorm``).

    Example::

        >>> m = lamina.nn.AddLayerNorm(8, dropout_p=0.1, prenorm=True)
        >>> y, s = m(torch.randn(2, 4, 8), torch.randn(2, 4, 8))
        >>> y.shape, s.shape
        (torch.Size([2, 4, 8]), torch.Size([2, 4, 8]))
    """

    __constants__ = [*torch.nn.LayerNorm.__constants__, "prenorm"]  # (TorchScript: see _torch_forward)

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
                 dropout_p: float = 0.0, prenorm: bool = False, device=None, dtype=None) -> None:
        super().__init__(normalized_shape, eps, elementwise_affine, bias, device, dtype)
        self.dropout_p = dropout_p
        self.prenorm = prenorm

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, dropout_p={self.dropout_p}, prenorm={self.prenorm}"

    def forward(self, x: Tensor, residual: Tensor):
        return F.add_layer_norm(x, residual, self.normalized_shape, self.weight, self.bias, self.eps,
                                self.dropout_p, self.training, self.prenorm)

    def _torch_forward(self, x: Tensor, residual: Tensor):
        total = TF.dropout(x, self.dropout_p, self.training) + residual
        y = TF.layer_norm(total, self.normalized_shape, self.weight, self.bias, self.eps)
        if self.prenorm:  # (a constant: one return type a scripted module)
            return y, total
        return y


class AddRMSNorm(torch.nn.RMSNorm):
    r"""Residual add (with dropout on the branch) and RMS normalization (Zhang &
    Sennrich, 2019) in one pass:

    .. math:: s = \mathrm{dropout}(x) + \mathrm{residual}, \quad
              y = \frac{s}{\sqrt{\mathrm{E}[s^2] + \epsilon}} * \gamma

    ``forward(x, residual)`` returns y, or (y, s) with ``prenorm=True``.

    A :class:`torch.nn.RMSNorm` (same parameters and state_dict) plus
    ``dropout_p`` (applied in training only) and ``prenorm``.

    Args:
        normalized_shape (int or list or torch.Size): the trailing dims to normalize over.
        eps (float, optional): added to the mean square; ``None`` means the
            machine epsilon of the computation dtype. Default: ``None``
        elementwise_affine (bool): learnable per-element ``weight``. Default: ``True``
        dropout_p (float): dropout probability on ``x`` in training. Default: ``0.0``
        prenorm (bool): also return the sum s (the next residual). Default: ``False``
        device (torch.device, optional): where to create the parameters and buffers. Default: ``None``
        dtype (torch.dtype, optional): their floating dtype. Default: ``None``

    Shape:
        - x, residual: :math:`(*, \text{normalized\_shape})`.
        - Output: y of the same shape (and s, same shape, with ``prenorm``).

    Example::

        >>> m = lamina.nn.AddRMSNorm(8)
        >>> y = m(torch.randn(3, 8), torch.randn(3, 8))
        >>> y.shape
        torch.Size([3, 8])
    """

    __constants__ = [*torch.nn.RMSNorm.__constants__, "prenorm"]  # (TorchScript: see _torch_forward)

    def __init__(self, normalized_shape, eps: float | None = None, elementwise_affine: bool = True,
                 dropout_p: float = 0.0, prenorm: bool = False, device=None, dtype=None) -> None:
        super().__init__(normalized_shape, eps, elementwise_affine, device, dtype)
        self.dropout_p = dropout_p
        self.prenorm = prenorm

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, dropout_p={self.dropout_p}, prenorm={self.prenorm}"

    def forward(self, x: Tensor, residual: Tensor):
        return F.add_rms_norm(x, residual, list(self.normalized_shape), self.weight, self.eps,
                              self.dropout_p, self.training, self.prenorm)

    def _torch_forward(self, x: Tensor, residual: Tensor):
        total = TF.dropout(x, self.dropout_p, self.training) + residual
        y = TF.rms_norm(total, self.normalized_shape, self.weight, self.eps)
        if self.prenorm:  # (a constant: one return type a scripted module)
            return y, total
        return y


# =============================================================================
# torch.fx: lamina's modules are leaves, as torch.nn's are
# =============================================================================
#
# torch.fx's symbolic trace keeps torch.nn's modules as single call_module
# nodes (its default tracer tells them by their module path) and traces into
# every other module's forward. Traced into, a lamina module's argument checks
# meet fx Proxies, so tracing a model with lamina layers failed (torchvision's
# feature extraction, timm's FX tests). Each forward below records itself as a
# call_module node when it is given a Proxy, whatever the tracer; traced as
# the root (torch.fx.symbolic_trace(lamina.nn.ReLU())), a module gives its
# PyTorch form (_torch_forward, the TorchScript note below), op by op.

def _fx_leaf(forward):
    @functools.wraps(forward)
    def leaf_forward(self, *args, **kwargs):
        if args and isinstance(args[0], torch.fx.Proxy):
            tracer = args[0].tracer
            if getattr(tracer, "root", None) is self and hasattr(self, "_torch_forward"):
                # traced as the root, a module is no leaf of itself: its
                # PyTorch form op by op, as a torch.nn module traces
                return self._torch_forward(*args, **kwargs)
            return tracer.create_proxy("call_module", tracer.path_of_module(self), args, kwargs)
        return forward(self, *args, **kwargs)

    return leaf_forward


# =============================================================================
# TorchScript: lamina's modules script as PyTorch's
# =============================================================================
#
# torch.jit.script compiles a module's forward from its source, and lamina's
# kernels and NumPy reference are Python it cannot compile. So each forward
# is one of the two below: in Python, the module's own (lamina's) forward;
# under torch.jit.script, its _torch_forward: what torch.nn's module of the
# same name computes, in PyTorch's ops (and, for the fused layers, the
# composition of them). A scripted lamina model runs PyTorch's kernels, with
# the same parameters and buffers. TorchScript skips the branch it does not
# take, so lamina's Python is never compiled. (DropConnect, which wraps any
# module, and SyncBatchNorm, whose torch.nn twin does not script either,
# keep their forward.)

def _forward_one(self, input: Tensor):
    if torch.jit.is_scripting():
        return self._torch_forward(input)
    return self._lamina_forward(input)


def _forward_two(self, x: Tensor, residual: Tensor):
    if torch.jit.is_scripting():
        return self._torch_forward(x, residual)
    return self._lamina_forward(x, residual)


for _cls in list(globals().values()):
    if isinstance(_cls, type) and issubclass(_cls, torch.nn.Module) and _cls.__module__ == __name__:
        if "_torch_forward" in vars(_cls):
            _cls._lamina_forward = _fx_leaf(_cls.forward)
            _cls.forward = _forward_two if "residual" in inspect.signature(_cls.forward).parameters else _forward_one
        else:
            _cls.forward = _fx_leaf(_cls.forward)
del _cls
