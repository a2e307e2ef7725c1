"""lamina's PyTorch face: functions with torch.nn.functional's signatures.

Each layer is a pair of ``torch.library`` custom ops, ``lamina::<op>_forward``
and ``lamina::<op>_backward``, with a fake (meta) implementation for
torch.compile and the autograd formula registered once (through
:mod:`lamina.custom_op`, which skips the dispatcher in eager mode). Inside an op,
:func:`lamina.backend.use_kernels` picks the Triton kernel
(``lamina.kernels.<family>``) or the NumPy reference
(``lamina.reference.<family>``); the forward op returns what backward needs,
so nothing is recomputed twice and nothing extra is kept. Inside
torch.compile on a GPU a layer is, by default, torch.nn.functional's own op
instead (:mod:`lamina.under_compile`: the compile modes).
"""

from __future__ import annotations

import functools
import math
from typing import Optional

import torch
import torch.nn.functional as TF
from torch import Tensor
from torch._C._functorch import is_legacy_batchedtensor

from . import validate
from . import under_compile
from .custom_op import PLAIN_TENSORS, custom_op, differentiable_backward, eager_apply
from .under_compile import torch_math
from .backend import kernels, to_numpy, to_torch, use_kernels
from .layout import empty_result, in_result_layout
from .reference import activation as ref_activation

__all__ = ["relu"]


# =============================================================================
# activation
# =============================================================================

# --- shared by the activations ---------------------------------------------------

__all__ += ["relu_", "leaky_relu", "leaky_relu_", "prelu", "sigmoid", "tanh", "gelu", "silu", "swish"]


def _act_kernels():
    return kernels("activation")


def _write_inplace(input: Tensor, y: Tensor) -> Tensor:
    """Copy y into input: batch_norm_act's in-place form when its activation
    cannot be inverted (the activations themselves write in place, see
    _activation_in_place). Autograd sees a copy (so a leaf that requires grad
    raises PyTorch's own error) and the gradient flows back through y's op."""
    return input.copy_(y)


def _original_for_inplace(input: Tensor, inplace: bool) -> Tensor:
    """An op run in place whose backward needs the input (batch_norm_act with
    a non-invertible activation) must keep the input's original values: a
    copy, made only when autograd will need it."""
    if inplace and input.requires_grad and torch.is_grad_enabled():
        return input.clone()
    return input


# --- the parameterless activations: one custom-op pair each ---------------------

def _activation_op(name: str, saves: str, param_type: str | None = None, reference_cache_extra: tuple = (),
                   torch_backward=None, dy_first: bool = True):
    """``lamina::<name>_forward`` / ``lamina::<name>_backward`` for an
    elementwise activation: forward f(x) (or f(x, param), ``param`` one
    argument of type ``param_type``: gelu's approximate, swish's beta);
    backward from the one tensor saved, the output y (``saves='output'``:
    relu, sigmoid, tanh) or the input x (``saves='input'``). CUDA tensors run
    the kernels' ``<name>_forward`` / ``<name>_backward``, the others the
    reference's (its backward cache is (saved, *param) +
    ``reference_cache_extra``). ``torch_backward(dy, saved, *param)``: the
    backward in PyTorch's differentiable ops, for second derivatives.
    Results are laid out as PyTorch's (lamina.layout), the gradient led by
    dy (``dy_first``, as PyTorch's sigmoid/tanh/gelu/silu backward) or by
    the saved tensor (relu's threshold_backward)."""
    ref_forward = getattr(ref_activation, f"{name}_forward")
    ref_backward = getattr(ref_activation, f"{name}_backward")

    def run_forward(x, *param):
        if use_kernels(x):
            return getattr(_act_kernels(), f"{name}_forward")(x, *param)
        y, _ = ref_forward(to_numpy(x), *param)
        return in_result_layout(to_torch(y, x), (x,))

    def grad_operands(dy, saved):
        return (dy, saved) if dy_first else (saved, dy)

    def run_backward(dy, saved, *param):
        if use_kernels(saved):
            return getattr(_act_kernels(), f"{name}_backward")(dy, saved, *param)
        cache = (to_numpy(saved),) + param + reference_cache_extra
        return in_result_layout(to_torch(ref_backward(to_numpy(dy), cache), dy), grad_operands(dy, saved))

    # torch.library reads the op's schema from the Python signature
    if param_type is None:
        def forward(x: Tensor) -> Tensor:
            return run_forward(x)

        def backward(dy: Tensor, saved: Tensor) -> Tensor:
            return run_backward(dy, saved)
    else:
        def forward(x: Tensor, param) -> Tensor:
            return run_forward(x, param)

        def backward(dy: Tensor, saved: Tensor, param) -> Tensor:
            return run_backward(dy, saved, param)

        forward.__annotations__["param"] = backward.__annotations__["param"] = param_type
    forward.__name__, backward.__name__ = f"_{name}_forward", f"_{name}_backward"
    forward_op = custom_op(f"lamina::{name}_forward", mutates_args=())(forward)
    backward_op = custom_op(f"lamina::{name}_backward", mutates_args=())(backward)
    forward_op.register_fake(lambda x, param=None: empty_result((x,)))
    backward_op.register_fake(lambda dy, saved, param=None: empty_result(grad_operands(dy, saved), dy.dtype))

    def setup(ctx, inputs, output):
        ctx.save_for_backward(output if saves == "output" else inputs[0])
        ctx.param = inputs[1:]

    def grad(ctx, dy):
        (saved,) = ctx.saved_tensors
        return (backward_op(dy, saved, *ctx.param),) + (None,) * len(ctx.param)

    forward_op.register_autograd(grad, setup_context=setup)
    backward_op.differentiable = torch_backward
    return forward_op, backward_op


def _torch_only_dtype(t) -> bool:
    """``t`` is a tensor of a dtype PyTorch's layer takes and lamina computes
    in neither implementation (integers, bool, complex): lamina hands such a
    call to PyTorch's own op, the reference for those dtypes."""
    return isinstance(t, Tensor) and not t.is_floating_point()


# --- relu ----------------------------------------------------------------------

_relu_forward, _relu_backward = _activation_op(
    "relu", saves="output", torch_backward=lambda dy, y: torch.ops.aten.threshold_backward(dy, y, 0), dy_first=False)


def relu(input: Tensor, inplace: bool = False) -> Tensor:
    r"""relu(input, inplace=False) -> Tensor

    Applies the rectified linear unit elementwise:

    .. math:: \text{ReLU}(x) = \max(0, x)

    Backward uses the saved output, not the input.

    Args:
        input (Tensor): the input tensor.
        inplace (bool): write the result into ``input``. Default: ``False``

    Shape:
        - Input: :math:`(*)`, any number of dimensions.
        - Output: :math:`(*)`, same shape as the input.

    Example::

        >>> import torch, lamina
        >>> y = lamina.functional.relu(torch.randn(4))
        >>> y.shape
        torch.Size([4])
    """
    if _torch_only_dtype(input):
        return TF.relu(input, inplace)
    validate.floating(input)
    if inplace and _is_relu_output(input):
        return input  # relu(y) is y, and y's gradient already masks y == 0 (see _mark_relu_output)
    if torch_math(input):  # inside torch.compile on a GPU (under_compile.py)
        return TF.relu(input, inplace)
    return _activation_in_place(input, "relu") if inplace else _relu_forward(input)


def _mark_relu_output(y: Tensor) -> None:
    """Marks y, a fused norm's ReLU output, as of its current version: an
    in-place relu of y then returns y untouched. A model that calls its ReLU module
    after a batch norm fused with that ReLU (torchvision's ResNet blocks share
    one ``self.relu`` between the norm outputs and the residual sum, so
    lamina.patch(fuse=True) cannot drop the module) then pays no second pass
    and no second autograd node. Exact: relu(y) == y for y = max(z, 0), and
    the fused layer's backward zeroes the gradient where z <= 0, which is
    where relu's backward would (NaN passes both). Any in-place change of y
    bumps its version and voids the mark (a write through ``y.data``, which
    PyTorch does not count, is not seen). Plain tensors in eager mode only:
    a tracer sees every op."""
    if not torch.compiler.is_compiling() and type(y) is torch.Tensor and not y.is_inference():
        y._lamina_relu_version = y._version  # (inference tensors have no version counter: left unmarked)


def _is_relu_output(x: Tensor) -> bool:
    if torch.compiler.is_compiling() or type(x) is not torch.Tensor:
        return False
    mark = getattr(x, "_lamina_relu_version", None)
    # a marked tensor made a leaf that requires grad (requires_grad_() after
    # no_grad) takes the in-place path, which refuses it as PyTorch does
    return mark is not None and mark == x._version and not (x.is_leaf and x.requires_grad)


def relu_(input: Tensor) -> Tensor:
    r"""relu_(input) -> Tensor

    In-place version of :func:`relu`: :math:`x \leftarrow \max(0, x)`.

    Args:
        input (Tensor): the tensor to overwrite with its ReLU.

    Shape:
        - Input: :math:`(*)`, any number of dimensions.
        - Output: :math:`(*)`, the input itself.

    Example::

        >>> import torch, lamina
        >>> x = torch.tensor([-1.0, 2.0])
        >>> y = lamina.functional.relu_(x)
        >>> x
        tensor([0., 2.])
    """
    return relu(input, inplace=True)


# --- leaky_relu --------------------------------------------------------------------

@custom_op("lamina::leaky_relu_forward", mutates_args=())
def _leaky_relu_forward(x: Tensor, negative_slope: float) -> tuple[Tensor, Tensor]:
    """(y, mask): mask is uint8 [x > 0] for a negative slope, else empty."""
    if use_kernels(x):
        y, mask = _act_kernels().leaky_relu_forward(x, negative_slope)
        return y, mask
    y, (saved, _) = ref_activation.leaky_relu_forward(to_numpy(x), negative_slope)
    y = in_result_layout(to_torch(y, x), (x,))
    if negative_slope >= 0:
        return y, x.new_empty((0,), dtype=torch.uint8)
    return y, in_result_layout(to_torch(saved, x, dtype=torch.uint8), (x,))


@_leaky_relu_forward.register_fake
def _(x, negative_slope):
    if negative_slope >= 0:
        return empty_result((x,)), x.new_empty((0,), dtype=torch.uint8)
    return empty_result((x,)), empty_result((x,), torch.uint8)


@custom_op("lamina::leaky_relu_backward", mutates_args=())
def _leaky_relu_backward(dy: Tensor, saved: Tensor, negative_slope: float) -> Tensor:
    """saved: the output y (negative_slope >= 0) or the uint8 mask [x > 0]."""
    if use_kernels(dy):
        return _act_kernels().leaky_relu_backward(dy, saved, negative_slope)
    dx = ref_activation.leaky_relu_backward(to_numpy(dy), (to_numpy(saved), negative_slope))
    return in_result_layout(to_torch(dx, dy), (saved, dy))  # led by saved, as PyTorch's leaky_relu_backward


# second derivatives: x > 0 exactly where the saved output or mask is > 0
_leaky_relu_backward.differentiable = (
    lambda dy, saved, negative_slope: torch.where(saved > 0, dy, dy * negative_slope))


@_leaky_relu_backward.register_fake
def _(dy, saved, negative_slope):
    return empty_result((saved, dy), dy.dtype)


def _leaky_relu_setup(ctx, inputs, output):
    y, mask = output
    ctx.negative_slope = inputs[1]
    ctx.save_for_backward(y if ctx.negative_slope >= 0 else mask)


def _leaky_relu_grad(ctx, dy, _dmask):
    (saved,) = ctx.saved_tensors
    return _leaky_relu_backward(dy, saved, ctx.negative_slope), None


_leaky_relu_forward.register_autograd(_leaky_relu_grad, setup_context=_leaky_relu_setup)


def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    r"""leaky_relu(input, negative_slope=0.01, inplace=False) -> Tensor

    Applies the leaky rectified linear unit elementwise:

    .. math:: \text{LeakyReLU}(x) = \begin{cases} x & x > 0 \\ \text{negative\_slope} \cdot x & \text{otherwise} \end{cases}

    Backward keeps the output when ``negative_slope >= 0`` and a one-byte
    mask ``x > 0`` when it is negative, never the input. As in PyTorch, the
    in-place form with a negative slope has no backward (its input is gone,
    and the sign of the output no longer tells which side x was on).

    Args:
        input (Tensor): the input tensor.
        negative_slope (float): the slope for :math:`x \le 0`. Default: ``0.01``
        inplace (bool): write the result into ``input``. Default: ``False``

    Shape:
        - Input: :math:`(*)`, any number of dimensions.
        - Output: :math:`(*)`, same shape as the input.

    Example::

        >>> import torch, lamina
        >>> y = lamina.functional.leaky_relu(torch.tensor([-2.0, 3.0]), negative_slope=0.5)
        >>> y
        tensor([-1.,  3.])
    """
    validate.floating(input)
    validate.number(negative_slope, "negative_slope", "leaky_relu")
    if torch_math(input):  # inside torch.compile on a GPU (under_compile.py)
        return TF.leaky_relu(input, negative_slope, inplace)
    if inplace:
        return _activation_in_place(input, "leaky_relu", float(negative_slope))
    return _leaky_relu_forward(input, float(negative_slope))[0]


def leaky_relu_(input: Tensor, negative_slope: float = 0.01) -> Tensor:
    r"""leaky_relu_(input, negative_slope=0.01) -> Tensor

    In-place version of :func:`leaky_relu`.

    Args:
        input (Tensor): the tensor to overwrite with its leaky ReLU.
        negative_slope (float): the slope for :math:`x \le 0`. Default: ``0.01``

    Shape:
        - Input: :math:`(*)`, any number of dimensions.
        - Output: :math:`(*)`, the input itself.

    Example::

        >>> import torch, lamina
        >>> x = torch.randn(3)
        >>> y = lamina.functional.leaky_relu_(x, 0.2)
        >>> y is x
        True
    """
    return leaky_relu(input, negative_slope, inplace=True)


# --- prelu -------------------------------------------------------------------------

@custom_op("lamina::prelu_forward", mutates_args=())
def _prelu_forward(x: Tensor, weight: Tensor) -> Tensor:
    if use_kernels(x):
        return _act_kernels().prelu_forward(x, weight)
    y, _ = ref_activation.prelu_forward(to_numpy(x), to_numpy(weight))
    return in_result_layout(to_torch(y, x), (x,))


@_prelu_forward.register_fake
def _(x, weight):
    return empty_result((x,))


@custom_op("lamina::prelu_backward", mutates_args=())
def _prelu_backward(dy: Tensor, x: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    if use_kernels(x):
        return _act_kernels().prelu_backward(dy, x, weight)
    dx, dweight = ref_activation.prelu_backward(to_numpy(dy), (to_numpy(x), to_numpy(weight)))
    return in_result_layout(to_torch(dx, x), (x, dy)), to_torch(dweight, weight)


def _prelu_grad_torch(dy: Tensor, x: Tensor, weight: Tensor):
    """prelu's (dx, dweight) in PyTorch's ops (second derivatives): weight
    per channel (dim 1) or one for all."""
    per_channel = weight.numel() > 1
    w = weight.reshape((1, -1) + (1,) * (x.dim() - 2)) if per_channel else weight.reshape(())
    positive = x > 0  # (not x <= 0: a NaN input takes the weight's side, as in PyTorch and the reference)
    dx = torch.where(positive, dy, w * dy)
    dw_elem = torch.where(positive, torch.zeros_like(dy), x * dy)
    dims = [d for d in range(x.dim()) if not (per_channel and d == 1)]
    return dx, dw_elem.sum(dim=dims).reshape(weight.shape)


_prelu_backward.differentiable = _prelu_grad_torch


@_prelu_backward.register_fake
def _(dy, x, weight):
    return empty_result((x, dy), dy.dtype), torch.empty_like(weight)


def _prelu_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _prelu_grad(ctx, dy):
    x, weight = ctx.saved_tensors
    dx, dweight = _prelu_backward(dy, x, weight)
    return (dx if ctx.needs_input_grad[0] else None), (dweight if ctx.needs_input_grad[1] else None)


_prelu_forward.register_autograd(_prelu_grad, setup_context=_prelu_setup)


def prelu(input: Tensor, weight: Tensor) -> Tensor:
    r"""prelu(input, weight) -> Tensor

    Parametric ReLU (He et al., 2015, "Delving Deep into Rectifiers"):

    .. math:: \text{PReLU}(x) = \begin{cases} x & x > 0 \\ a_c x & \text{otherwise} \end{cases}

    with :math:`a_c` = ``weight[c]`` for the channel ``c`` (dim 1) of ``x``, or the
    single weight for every element when ``weight`` has one element.
    Backward returns ``d(weight)`` summed per channel.

    Args:
        input (Tensor): the input tensor; its channels are dim 1 (dim 0 for a 1-D input).
        weight (Tensor): the learnable slopes, 1 element or one per channel.

    Shape:
        - Input: :math:`(N, C, *)` (or :math:`(*)` with a one-element weight).
        - Weight: :math:`(1)` or :math:`(C)`.
        - Output: same shape as the input.

    Example::

        >>> import torch, lamina
        >>> x = torch.randn(2, 3, 4)
        >>> y = lamina.functional.prelu(x, torch.full((3,), 0.25))
        >>> y.shape
        torch.Size([2, 3, 4])
    """
    validate.floating(input)
    validate.prelu_weight(input, weight)
    if torch_math(input):  # inside torch.compile on a GPU (under_compile.py)
        return TF.prelu(input, weight)
    return _prelu_forward(input, weight)


# --- sigmoid -----------------------------------------------------------------------

_sigmoid_forward, _sigmoid_backward = _activation_op("sigmoid", saves="output",
                                                     torch_backward=torch.ops.aten.sigmoid_backward)


def sigmoid(input: Tensor) -> Tensor:
    r"""sigmoid(input) -> Tensor

    Applies the logistic sigmoid elementwise, stable for any :math:`|x|`:

    .. math:: \sigma(x) = \frac{1}{1 + e^{-x}}

    Backward uses the saved output: :math:`\sigma (1 - \sigma)`.

    Args:
        input (Tensor): the input tensor.

    Shape:
        - Input: :math:`(*)`, any number of dimensions.
        - Output: :math:`(*)`, same shape as the input.

    Example::

        >>> import torch, lamina
        >>> lamina.functional.sigmoid(torch.zeros(2))
        tensor([0.5000, 0.5000])
    """
    if _torch_only_dtype(input):
        return torch.sigmoid(input)
    validate.floating(input)
    if torch_math(input):  # inside torch.compile on a GPU (under_compile.py)
        return torch.sigmoid(input)
    return _sigmoid_forward(input)


# --- tanh --------------------------------------------------------------------------

_tanh_forward, _tanh_backward = _activation_op("tanh", saves="output", torch_backward=torch.ops.aten.tanh_backward)


def tanh(input: Tensor) -> Tensor:
    r"""tanh(input) -> Tensor

    Applies the hyperbolic tangent elementwise:

    .. math:: \tanh(x) = \frac{e^{x} - e^{-x}}{e^{x} + e^{-x}}

    Backward uses the saved output: :math:`1 - \tanh^2(x)`.

    Args:
        input (Tensor): the input tensor.

    Shape:
        - Input: :math:`(*)`, any number of dimensions.
        - Output: :math:`(*)`, same shape as the input.

    Example::

        >>> import torch, lamina
        >>> lamina.functional.tanh(torch.zeros(2))
        tensor([0., 0.])
    """
    if _torch_only_dtype(input):
        return torch.tanh(input)
    validate.floating(input)
    if torch_math(input):  # inside torch.compile on a GPU (under_compile.py)
        return torch.tanh(input)
    return _tanh_forward(input)


# --- gelu --------------------------------------------------------------------------

_gelu_forward, _gelu_backward = _activation_op(
    "gelu", saves="input", param_type="str",
    torch_backward=lambda dy, x, approximate: torch.ops.aten.gelu_backward(dy, x, approximate=approximate))


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    r"""gelu(input, approximate='none') -> Tensor

    Gaussian error linear unit (Hendrycks & Gimpel, 2016), elementwise:

    .. math:: \text{GELU}(x) = x \Phi(x)

    :math:`\Phi` the standard normal CDF. ``approximate='tanh'`` uses
    :math:`\Phi(x) \approx \frac12 (1 + \tanh(\sqrt{2/\pi}(x + 0.044715 x^3)))`.
    Analytic backward for both forms.

    Args:
        input (Tensor): the input tensor.
        approximate (str): ``'none'`` (exact, with erf) or ``'tanh'``. Default: ``'none'``

    Shape:
        - Input: :math:`(*)`, any number of dimensions.
        - Output: :math:`(*)`, same shape as the input.

    Example::

        >>> import torch, lamina
        >>> y = lamina.functional.gelu(torch.randn(4), approximate='tanh')
        >>> y.shape
        torch.Size([4])
    """
    validate.floating(input)
    if not isinstance(approximate, str):
        raise TypeError(f"gelu(): argument 'approximate' must be str, not {type(approximate).__name__}")
    if approximate not in ("none", "tanh"):
        raise RuntimeError(f"approximate argument must be either none or tanh, got {approximate!r}.")
    if torch_math(input):  # inside torch.compile on a GPU (under_compile.py)
        return TF.gelu(input, approximate=approximate)
    return _gelu_forward(input, approximate)


# --- silu and swish ------------------------------------------------------------

# the reference computes silu as swish with beta = 1
def _swish_grad_torch(dy: Tensor, x: Tensor, beta: float) -> Tensor:
    """dy * d/dx [x sigmoid(beta x)] in PyTorch's ops (second derivatives)."""
    s = torch.sigmoid(beta * x)
    return dy * s * (1 + beta * x * (1 - s))


_silu_forward, _silu_backward = _activation_op(
    "silu", saves="input", reference_cache_extra=(1.0,),
    torch_backward=lambda dy, x: _swish_grad_torch(dy, x, 1.0))  # (aten's silu_backward has no derivative)


def silu(input: Tensor, inplace: bool = False) -> Tensor:
    r"""silu(input, inplace=False) -> Tensor

    Sigmoid linear unit (Elfwing et al., 2018; Swish with :math:`\beta = 1` in
    Ramachandran et al., 2017), elementwise:

    .. math:: \text{SiLU}(x) = x \sigma(x)

    Backward uses the input: :math:`\sigma(x)(1 + x(1 - \sigma(x)))`.

    Args:
        input (Tensor): the input tensor.
        inplace (bool): write the result into ``input``. Default: ``False``

    Shape:
        - Input: :math:`(*)`, any number of dimensions.
        - Output: :math:`(*)`, same shape as the input.

    Example::

        >>> import torch, lamina
        >>> y = lamina.functional.silu(torch.randn(2, 3))
        >>> y.shape
        torch.Size([2, 3])
    """
    if _torch_only_dtype(input):
        return TF.silu(input, inplace)
    validate.floating(input)
    if torch_math(input):  # inside torch.compile on a GPU (under_compile.py)
        return TF.silu(input, inplace)
    return _activation_in_place(input, "silu") if inplace else _silu_forward(input)


# --- the in-place activations: one autograd node each, as PyTorch's relu_ -----------
# (Writing an out-of-place result back with copy_ costs more than the copy: the
# copy's autograd node hands the overwritten values a zero gradient, which
# autograd adds to the real one -- a fill and an add per layer, and on
# channels_last layout changes too: 30 ms of a 100 ms ResNet-50 step on an
# H200, scripts/probe_step_profile.py.)

@custom_op("lamina::activation_inplace", mutates_args=("x",))
def _activation_inplace(x: Tensor, name: str, param: float) -> None:
    """x <- act(x) for relu, leaky_relu (param: negative_slope) and silu."""
    if use_kernels(x):
        _act_kernels().activation_inplace(x, name, param)
        return
    if name == "leaky_relu":
        y = _leaky_relu_forward.fn(x, param)[0]
    else:
        y = (_relu_forward if name == "relu" else _silu_forward).fn(x)
    x.copy_(y)


@_activation_inplace.register_fake
def _(x, name, param):
    return None


class _ActivationInPlace(torch.autograd.Function):
    """The in-place activation under autograd: x marked dirty, backward from
    the output itself (relu, leaky_relu with a slope >= 0) or a copy of the
    input taken first (silu, whose gradient needs x, as PyTorch's silu_
    does). leaky_relu with a negative slope has no backward, as PyTorch's."""

    @staticmethod
    def forward(ctx, x, name, param):
        original = x.clone() if name == "silu" else None
        _activation_inplace(x, name, param)
        ctx.mark_dirty(x)
        ctx.name, ctx.param = name, param
        ctx.save_for_backward(original if original is not None else x)
        return x

    @staticmethod
    def backward(ctx, dy):
        if ctx.name == "leaky_relu" and ctx.param < 0:
            raise RuntimeError(
                "In-place leakyReLu backward calculation is triggered with a negative slope which is not "
                "supported. This is caused by calling in-place forward function with a negative slope, "
                "please call out-of-place version instead.")  # (PyTorch's words)
        (saved,) = ctx.saved_tensors
        if ctx.name == "relu":
            return _relu_backward(dy, saved), None, None
        if ctx.name == "leaky_relu":
            return _leaky_relu_backward(dy, saved, ctx.param), None, None
        return _silu_backward(dy, saved), None, None


_activation_in_place_apply = eager_apply(_ActivationInPlace)  # _ActivationInPlace.apply (host time)


def _activation_in_place(input: Tensor, name: str, param: float = 0.0) -> Tensor:
    if torch.is_grad_enabled() and input.requires_grad:
        # PyTorch's checks, made before anything is written
        if input.is_leaf:
            raise RuntimeError("a leaf Variable that requires grad is being used in an in-place operation.")
        if input._base is not None and input._base.is_leaf:
            raise RuntimeError("a view of a leaf Variable that requires grad is being used in an in-place operation.")
        return _activation_in_place_apply(input, name, param)
    _activation_inplace(input, name, param)
    return input


_swish_forward, _swish_backward = _activation_op("swish", saves="input", param_type="float",
                                                 torch_backward=lambda dy, x, beta: _swish_grad_torch(dy, x, beta))


def swish(input: Tensor, beta: float = 1.0) -> Tensor:
    r"""swish(input, beta=1.0) -> Tensor

    Swish (Ramachandran et al., 2017, "Searching for Activation Functions"),
    elementwise; ``beta=1`` is SiLU. Not in PyTorch.

    .. math:: \text{Swish}(x) = x \sigma(\beta x)

    Args:
        input (Tensor): the input tensor.
        beta (float): the fixed slope inside the sigmoid. Default: ``1.0``

    Shape:
        - Input: :math:`(*)`, any number of dimensions.
        - Output: :math:`(*)`, same shape as the input.

    Example::

        >>> import torch, lamina
        >>> y = lamina.functional.swish(torch.randn(4), beta=2.0)
        >>> y.shape
        torch.Size([4])
    """
    validate.floating(input)
    if torch_math(input):  # inside torch.compile on a GPU (under_compile.py)
        return input * torch.sigmoid(beta * input)
    return _swish_forward(input, float(beta))


# =============================================================================
# normalization: batch, sync-batch and instance norm
# =============================================================================

from .reference import normalization as ref_norm  # noqa: E402

__all__ += ["batch_norm", "instance_norm"]


def _bn_stat_dtype(x: Tensor) -> torch.dtype:
    """Statistics are float32, float64 for float64 input."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _as(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``t`` in ``dtype``; ``t`` itself when it already is (no dispatcher call:
    a no-op ``.to`` still costs microseconds of host time on a CUDA tensor)."""
    return t if t.dtype == dtype else t.to(dtype)


def _f32(t: Tensor) -> Tensor:
    """``t`` in float32, as the kernels read statistics (see :func:`_as`)."""
    return _as(t, torch.float32)


def _bn_stats_out(mean: Tensor, rstd: Tensor, var: Tensor, sdt: torch.dtype, training: bool):
    """A batch-norm kernel's (mean, rstd, var) as op outputs in the statistics
    dtype: in eval mean and var are the running buffers themselves, copied
    (a custom op's outputs may not alias its inputs); no call where nothing
    changes (host time)."""
    if not training:
        mean, var = mean.to(sdt, copy=True), var.to(sdt, copy=True)
    return _as(mean, sdt), _as(rstd, sdt), _as(var, sdt)


def _bn_keep_format(t: Tensor, like: Tensor) -> Tensor:
    """``t`` laid out like ``like`` (channels_last stays channels_last)."""
    if t.stride() == like.stride():
        return t
    return torch.empty_like(like, dtype=t.dtype).copy_(t)


# --- building blocks, on either backend (batch_norm's ops and SyncBatchNorm use them)

def _bn_stats(x: Tensor):
    """Per-channel (mean, biased var) over all dims but 1, in the statistics dtype."""
    sdt = _bn_stat_dtype(x)
    if use_kernels(x):
        mean, var, _ = kernels("normalization").batch_norm_stats(x)
        return _as(mean, sdt), _as(var, sdt)
    if x.numel() == 0:
        nan = torch.full((x.shape[1],), float("nan"), dtype=sdt, device=x.device)
        return nan, nan.clone()
    mean, var, _ = ref_norm.batch_norm_stats(to_numpy(x))
    return to_torch(mean, x, sdt), to_torch(var, x, sdt)


def _bn_normalize(x: Tensor, mean: Tensor, rstd: Tensor, weight, bias) -> Tensor:
    if use_kernels(x):
        return kernels("normalization").batch_norm_normalize(x, _f32(mean), _f32(rstd), weight, bias)
    y = ref_norm.batch_norm_normalize(to_numpy(x), to_numpy(mean), to_numpy(rstd), to_numpy(weight), to_numpy(bias))
    return _bn_keep_format(to_torch(y, x), x)


def _bn_backward_reduce(dy: Tensor, x: Tensor, mean: Tensor, rstd: Tensor):
    """Per-channel (sum(dy), sum(dy * xhat)) in the statistics dtype."""
    if use_kernels(x):
        s1, s2 = kernels("normalization").batch_norm_backward_reduce(dy, x, _f32(mean), _f32(rstd))
        return _as(s1, mean.dtype), _as(s2, mean.dtype)
    s1, s2 = ref_norm.batch_norm_backward_reduce(to_numpy(dy), to_numpy(x), to_numpy(mean), to_numpy(rstd))
    return to_torch(s1, x, mean.dtype), to_torch(s2, x, mean.dtype)


def _bn_backward_input(dy, x, mean, rstd, weight, sum_dy, sum_dy_xhat, m: int) -> Tensor:
    """Training dx from channel sums over all ``m`` values per channel."""
    if use_kernels(x):
        return kernels("normalization").batch_norm_backward_input(
            dy, x, _f32(mean), _f32(rstd), weight, _f32(sum_dy), _f32(sum_dy_xhat), m, training=True
        )
    dx = ref_norm.batch_norm_backward_input(
        to_numpy(dy), to_numpy(x), to_numpy(mean), to_numpy(rstd), to_numpy(weight),
        to_numpy(sum_dy), to_numpy(sum_dy_xhat), m,
    )
    return _bn_keep_format(to_torch(dx, x), x)


# --- batch_norm: the op pair ----------------------------------------------------

@custom_op("lamina::batch_norm_forward", mutates_args=())
def _batch_norm_forward(
    x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
    running_mean: Optional[Tensor], running_var: Optional[Tensor], training: bool, eps: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(y, mean, rstd, var): the statistics used, per channel, in the statistics
    dtype; var is the biased batch variance (training) or running_var."""
    sdt = _bn_stat_dtype(x)
    if use_kernels(x):
        y, mean, rstd, var = kernels("normalization").batch_norm_forward(
            x, weight, bias, running_mean, running_var, training, eps
        )
        return (y,) + _bn_stats_out(mean, rstd, var, sdt, training)
    if training:
        mean, var = _bn_stats(x)
    else:
        # copies: a custom op's outputs may not alias its inputs
        mean, var = running_mean.to(sdt, copy=True), running_var.to(sdt, copy=True)
    rstd = torch.rsqrt(var + eps)
    if x.numel() == 0:
        return torch.empty_like(x), mean, rstd, var
    return _bn_normalize(x, mean, rstd, weight, bias), mean, rstd, var


@_batch_norm_forward.register_fake
def _(x, weight, bias, running_mean, running_var, training, eps):
    c = x.shape[1]
    sdt = _bn_stat_dtype(x)
    return torch.empty_like(x), x.new_empty(c, dtype=sdt), x.new_empty(c, dtype=sdt), x.new_empty(c, dtype=sdt)


@custom_op("lamina::batch_norm_backward", mutates_args=())
def _batch_norm_backward(
    dy: Tensor, x: Tensor, weight: Optional[Tensor], mean: Tensor, rstd: Tensor, training: bool,
    param_grads: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """(dx, dweight, dbias); dweight = sum(dy * xhat) and dbias = sum(dy) per
    channel in the statistics dtype. In eval with ``param_grads`` False the
    kernels skip the reduction pass (dx needs no sums) and return zeros."""
    if use_kernels(x):
        dx, dw, db = kernels("normalization").batch_norm_backward(
            dy, x, weight, _f32(mean), _f32(rstd), training, param_grads
        )
        if dw is None:  # two tensors: a custom op's outputs may not alias each other
            dw, db = torch.zeros_like(mean), torch.zeros_like(mean)
        return dx, _as(dw, mean.dtype), _as(db, mean.dtype)
    dx, dw, db = ref_norm.batch_norm_backward(
        to_numpy(dy), (to_numpy(x), to_numpy(weight), to_numpy(mean), to_numpy(rstd), training)
    )
    return _bn_keep_format(to_torch(dx, x), x), to_torch(dw, x, mean.dtype), to_torch(db, x, mean.dtype)


@_batch_norm_backward.register_fake
def _(dy, x, weight, mean, rstd, training, param_grads=True):
    return torch.empty_like(x), torch.empty_like(mean), torch.empty_like(mean)


def _norm_grads_torch(torch_forward, dy, x, weight, has_bias: bool, bias_dims):
    """(dx, dweight, dbias) of ``torch_forward(x, weight)`` (a norm in
    PyTorch's ops, its bias left out) at upstream gradient dy, built with
    create_graph: inside a backward run with create_graph=True the norms'
    gradients are PyTorch's, exact to any order. dbias is dy summed over
    ``bias_dims``."""
    wanted = [t for t in (x, weight) if t is not None and t.requires_grad]
    with torch.enable_grad():
        y = torch_forward(x, weight)
        found = iter(torch.autograd.grad(y, wanted, dy, create_graph=True, allow_unused=True)) if wanted else iter(())
    dx = next(found) if x.requires_grad else None
    dweight = next(found) if weight is not None and weight.requires_grad else None
    dbias = (dy.sum(dim=bias_dims) if bias_dims else dy) if has_bias else None  # (sum(dim=[]) sums all)
    return dx, dweight, dbias


def _bias_dims(x: Tensor, how) -> list:
    """The dims a norm's bias gradient sums over: all but the normalized
    trailing ones (layer norm: ``how`` the normalized shape), or all but the
    channels (group norm: ``how`` the group count)."""
    if isinstance(how, int):
        return [d for d in range(x.dim()) if d != 1]
    return list(range(x.dim() - len(how)))


def _batch_norm_setup(ctx, inputs, output):
    x, weight, bias, _, _, training, eps = inputs
    _, mean, rstd, _ = output
    ctx.save_for_backward(x, weight, mean, rstd)
    ctx.training, ctx.eps = training, eps
    ctx.bias_dtype = None if bias is None else bias.dtype


def _batch_norm_torch(x: Tensor, weight, mean: Tensor, rstd: Tensor, training: bool, eps: float) -> Tensor:
    """Batch norm without bias in PyTorch's ops (second derivatives): batch
    statistics in training, the saved (running) ones otherwise."""
    if training:
        return TF.batch_norm(x, None, None, weight, None, True, 0.0, eps)
    per_channel = (1, -1) + (1,) * (x.dim() - 2)
    # detached: constants in evaluation (the op's own outputs: through them
    # autograd would come back into this very formula)
    y = (x - mean.detach().reshape(per_channel).to(x.dtype)) * rstd.detach().reshape(per_channel).to(x.dtype)
    return y if weight is None else y * weight.reshape(per_channel)


def _batch_norm_grad(ctx, dy, _dmean, _drstd, _dvar):
    x, weight, mean, rstd = ctx.saved_tensors
    param_grads = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
    if differentiable_backward(dy):  # create_graph=True, or batched: PyTorch's ops, differentiable again
        dx, dw, db = _norm_grads_torch(lambda t, w: _batch_norm_torch(t, w, mean, rstd, ctx.training, ctx.eps),
                                       dy, x, weight, ctx.bias_dtype is not None, _bias_dims(x, 1))
    else:
        dx, dw, db = _batch_norm_backward(dy, x, weight, mean, rstd, ctx.training, param_grads)
    return (
        dx,
        None if weight is None else _as(dw, weight.dtype),
        None if ctx.bias_dtype is None else _as(db, ctx.bias_dtype),
        None, None, None, None,
    )


_batch_norm_forward.register_autograd(_batch_norm_grad, setup_context=_batch_norm_setup)


def _bn_check_params(x: Tensor, running_mean, running_var, weight, bias) -> None:
    """Each given per-channel tensor has C = x.shape[1] elements, as torch checks."""
    c = x.shape[1]
    # host time: one pass that finds nothing wrong in the common case; any
    # doubt goes to the checks below, which raise in their order. (Positional
    # arguments, not **params: the keyword dict cost 0.14 us of 1.1, CPU host.)
    device = x.device
    for t in (running_mean, running_var, weight, bias):
        if t is not None and not (type(t) in PLAIN_TENSORS and t.numel() == c and t.device == device):
            break
    else:
        return
    params = {"running_mean": running_mean, "running_var": running_var, "weight": weight, "bias": bias}
    for name, t in params.items():
        if t is None:
            continue
        validate.tensor(t, name)
        if t.numel() != c:
            raise RuntimeError(f"{name} should contain {c} elements not {t.numel()}")
    validate.same_device(x, **params)


_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _running_ok(r, device) -> bool:
    """A running buffer the update kernel takes (None: nothing to update)."""
    return r is None or (r.dtype in _KERNEL_DTYPES and r.is_contiguous() and r.device == device)


def _bn_update_running_stats(running_mean, running_var, mean, var, m: int, momentum: float) -> None:
    """running = (1 - momentum) * running + momentum * batch statistic, in
    place; running_var takes the unbiased variance var * M / (M - 1).
    On the kernels, in eager mode, with float32 or 16-bit buffers: one kernel launch
    (host time) instead of six small torch ops; torch.compile sees the ops."""
    if (
        use_kernels(mean) and mean.dtype == torch.float32 and not torch.compiler.is_compiling()
        and _running_ok(running_mean, mean.device) and _running_ok(running_var, mean.device)  # (no generator: host time)
    ):
        kernels("normalization").batch_norm_update_running_stats(running_mean, running_var, mean, var, m, momentum)
        return
    # no_grad here only: entering it costs host time the kernel path skips
    with torch.no_grad():
        if running_mean is not None:
            running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
        if running_var is not None:
            unbiased = var * (m / (m - 1)) if m > 1 else torch.full_like(var, float("nan"))
            running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)


@functools.cache
def _torch_refuses_zero_eps_in_eval() -> bool:
    """PyTorch 2.11 refuses eps=0 in evaluation mode too; 2.13 only in
    training. lamina does what the installed PyTorch does."""
    try:
        torch.nn.functional.batch_norm(torch.ones(2, 1, device="cpu"), torch.zeros(1, device="cpu"),
                                       torch.ones(1, device="cpu"), eps=0.0)
    except ValueError:
        return True
    return False


def batch_norm(
    input: Tensor,
    running_mean: Optional[Tensor],
    running_var: Optional[Tensor],
    weight: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    r"""batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5) -> Tensor

    Batch normalization (Ioffe & Szegedy, 2015, "Batch Normalization:
    Accelerating Deep Network Training by Reducing Internal Covariate Shift")
    over dimension 1 of an input :math:`(N, C, *)`:

    .. math:: y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} * \gamma + \beta

    training: the mean and biased variance of each channel over the batch and
    spatial dimensions; ``running_mean`` / ``running_var``, when given, are
    updated in place with ``momentum`` (unbiased variance). Otherwise the
    running statistics are used. Statistics in float32 (float64 for float64).

    Args:
        input (Tensor): the input, channels in dim 1.
        running_mean (Tensor, optional): per-channel running mean, :math:`(C)`;
            updated in place in training, used when not training.
        running_var (Tensor, optional): per-channel running variance, :math:`(C)`.
        weight (Tensor, optional): per-channel scale :math:`\gamma`. Default: ``None`` (1)
        bias (Tensor, optional): per-channel shift :math:`\beta`. Default: ``None`` (0)
        training (bool): normalize with the batch statistics. Default: ``False``
        momentum (float): weight of the batch statistic in the running update. Default: ``0.1``
        eps (float): added to the variance for stability. Default: ``1e-5``

    Shape:
        - Input: :math:`(N, C)` or :math:`(N, C, *)`.
        - Output: same shape as the input.

    Example::

        >>> import torch, lamina
        >>> x = torch.randn(4, 3, 5)
        >>> rm, rv = torch.zeros(3), torch.ones(3)
        >>> y = lamina.functional.batch_norm(x, rm, rv, training=True)
        >>> y.shape
        torch.Size([4, 3, 5])
    """
    validate.floating(input)
    if input.dim() < 2:
        if input.dim() == 1 and input.numel() == 0:
            return input.clone()  # PyTorch returns the empty batch
        raise validate.DimensionError(
            f"batch_norm: expected input with at least 2 dimensions (N, C, *), got {input.dim()}D input")
    _bn_check_params(input, running_mean, running_var, weight, bias)
    if ((running_mean is not None and running_mean.requires_grad)
            or (running_var is not None and running_var.requires_grad)) and torch.is_grad_enabled():
        name = "running_mean" if running_mean is not None and running_mean.requires_grad else "running_var"
        raise RuntimeError(f"batch_norm is not differentiable with respect to argument '{name}'. "
                           "This input cannot have requires_grad True.")
    if input.is_cuda:
        # PyTorch's CUDA batch norm takes running statistics of any floating
        # dtype (its CPU kernels refuse a mismatch): read as the statistics'
        # dtype here (in evaluation only: training does not read them, and
        # a conversion is a dispatcher call of host time), updated in their
        # own dtype below
        validate.param_dtype(input, "batch_norm", weight=weight, bias=bias)
        if training:
            stats_in = (None, None)
        else:
            sdt = _bn_stat_dtype(input)
            stats_in = tuple(_as(t, sdt) if t is not None and t.is_floating_point() else t
                             for t in (running_mean, running_var))
    else:
        validate.param_dtype(input, "batch_norm", running_mean=running_mean, running_var=running_var, weight=weight, bias=bias)
        stats_in = (running_mean, running_var)
    # (straight-line checks, no loops or generators: this runs every layer call)
    if running_mean is not None and running_mean.dim() != 1:
        raise RuntimeError(f"batch_norm: expected running_mean to be a 1-D tensor of C elements, got shape {list(running_mean.shape)}")
    if running_var is not None and running_var.dim() != 1:
        raise RuntimeError(f"batch_norm: expected running_var to be a 1-D tensor of C elements, got shape {list(running_var.shape)}")
    # torch takes weight and bias of any shape with C elements, e.g. (C, 1)
    if weight is not None and weight.dim() != 1:
        weight = weight.reshape(-1)
    if bias is not None and bias.dim() != 1:
        bias = bias.reshape(-1)
    if training:
        size = list(input.shape)
        if input.numel() // max(size[1], 1) == 1 and size[1] > 0:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {input.size()}")
        if eps <= 0.0:
            raise ValueError(f"batch_norm eps must be positive during training, but got {eps}")
    else:
        if eps < 0.0:
            raise ValueError(f"batch_norm eps must be non-negative, but got {eps}")
        if eps == 0.0 and _torch_refuses_zero_eps_in_eval():
            raise ValueError(f"batch_norm eps must be positive, but got {eps}")
        if running_mean is None or running_var is None:
            raise RuntimeError("running_mean and running_var must be defined in evaluation mode")
    if torch_math(input):  # inside torch.compile on a GPU (under_compile.py)
        return TF.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)
    y, mean, _, var = _batch_norm_forward(input, weight, bias, *stats_in, bool(training), float(eps))
    if training and input.numel() > 0:
        _bn_update_running_stats(running_mean, running_var, mean, var, input.numel() // input.shape[1], momentum)
    return y


# --- instance_norm: the op pair -------------------------------------------------

def _instance_view(t: Tensor) -> Tensor:
    """(N, C, *) as (1, N*C, *): each (n, c) pair is one batch-norm channel."""
    return t.reshape((1, t.shape[0] * t.shape[1]) + tuple(t.shape[2:]))


@custom_op("lamina::instance_norm_forward", mutates_args=())
def _instance_norm_forward(
    x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], eps: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(y, mean, rstd, var), the statistics per (n, c) flattened to (N*C,)."""
    if use_kernels(x):
        sdt = _bn_stat_dtype(x)
        y, mean, rstd, var = kernels("normalization").instance_norm_forward(x, weight, bias, eps)
        return y, _as(mean, sdt), _as(rstd, sdt), _as(var, sdt)
    # the reference: batch norm of the (1, N*C, *) view, weight and bias repeated
    n = x.shape[0]
    w = None if weight is None else weight.repeat(n)
    b = None if bias is None else bias.repeat(n)
    view = _instance_view(x)
    y, mean, rstd, var = _batch_norm_forward(view, w, b, None, None, True, eps)
    return _bn_keep_format(y.reshape(x.shape), x), mean, rstd, var


@_instance_norm_forward.register_fake
def _(x, weight, bias, eps):
    nc = x.shape[0] * x.shape[1]
    sdt = _bn_stat_dtype(x)
    return torch.empty_like(x), x.new_empty(nc, dtype=sdt), x.new_empty(nc, dtype=sdt), x.new_empty(nc, dtype=sdt)


@custom_op("lamina::instance_norm_backward", mutates_args=())
def _instance_norm_backward(
    dy: Tensor, x: Tensor, weight: Optional[Tensor], mean: Tensor, rstd: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """(dx, dweight, dbias): batch norm's training backward on the (1, N*C, *)
    view, the parameter sums folded back over n."""
    if use_kernels(x):
        dx, dw, db = kernels("normalization").instance_norm_backward(dy, x, weight, _f32(mean), _f32(rstd))
        return dx, _as(dw, mean.dtype), _as(db, mean.dtype)
    n, c = x.shape[0], x.shape[1]
    w = None if weight is None else weight.repeat(n)
    dx, dw, db = _batch_norm_backward(_instance_view(dy), _instance_view(x), w, mean, rstd, True)
    return _bn_keep_format(dx.reshape(x.shape), x), dw.reshape(n, c).sum(0), db.reshape(n, c).sum(0)


@_instance_norm_backward.register_fake
def _(dy, x, weight, mean, rstd):
    c = x.shape[1]
    return torch.empty_like(x), mean.new_empty(c), mean.new_empty(c)


def _instance_norm_setup(ctx, inputs, output):
    x, weight, bias, eps = inputs
    _, mean, rstd, _ = output
    ctx.save_for_backward(x, weight, mean, rstd)
    ctx.eps = eps
    ctx.bias_dtype = None if bias is None else bias.dtype


def _instance_norm_grad(ctx, dy, _dmean, _drstd, _dvar):
    x, weight, mean, rstd = ctx.saved_tensors
    if differentiable_backward(dy):  # create_graph=True, or batched: PyTorch's ops, differentiable again
        dx, dw, db = _norm_grads_torch(lambda t, w: TF.instance_norm(t, None, None, w, None, True, 0.0, ctx.eps),
                                       dy, x, weight, ctx.bias_dtype is not None, _bias_dims(x, 1))
    else:
        dx, dw, db = _instance_norm_backward(dy, x, weight, mean, rstd)
        if not dx.is_contiguous():  # PyTorch's is contiguous (see instance_norm)
            dx = dx.contiguous()
    return (
        dx,
        None if weight is None else _as(dw, weight.dtype),
        None if ctx.bias_dtype is None else _as(db, ctx.bias_dtype),
        None,
    )


_instance_norm_forward.register_autograd(_instance_norm_grad, setup_context=_instance_norm_setup)


def instance_norm(
    input: Tensor,
    running_mean: Optional[Tensor] = None,
    running_var: Optional[Tensor] = None,
    weight: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    r"""instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True, momentum=0.1, eps=1e-5) -> Tensor

    Instance normalization (Ulyanov et al., 2016, "Instance Normalization: The
    Missing Ingredient for Fast Stylization"): each (n, c) of an input
    :math:`(N, C, *)` is normalized over its spatial values,

    .. math:: y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} * \gamma_c + \beta_c

    With ``use_input_stats=False`` the running statistics are used instead
    (batch norm in eval mode). Given running statistics are updated, as
    torch does, with the (n, c) means and unbiased variances averaged over n.

    Args:
        input (Tensor): the input :math:`(N, C, *)`.
        running_mean (Tensor, optional): per-channel running mean :math:`(C)`. Default: ``None``
        running_var (Tensor, optional): per-channel running variance :math:`(C)`. Default: ``None``
        weight (Tensor, optional): per-channel scale :math:`\gamma`. Default: ``None``
        bias (Tensor, optional): per-channel shift :math:`\beta`. Default: ``None``
        use_input_stats (bool): normalize with each instance's own statistics. Default: ``True``
        momentum (float): weight of the new statistic in the running update. Default: ``0.1``
        eps (float): added to the variance for stability. Default: ``1e-5``

    Shape:
        - Input: :math:`(N, C, *)` with at least one spatial dim.
        - Output: same shape as the input.

    Example::

        >>> import torch, lamina
        >>> y = lamina.functional.instance_norm(torch.randn(2, 3, 8))
        >>> y.shape
        torch.Size([2, 3, 8])
    """
    validate.floating(input)
    if input.dim() < 2:
        raise ValueError(f"instance_norm: expected input with at least 2 dimensions (N, C, *), got {input.dim()}D input")
    _bn_check_params(input, running_mean, running_var, weight, bias)
    validate.param_dtype(input, "instance_norm", running_mean=running_mean, running_var=running_var,
                         weight=weight, bias=bias)
    if not use_input_stats:
        if running_mean is None or running_var is None:
            raise RuntimeError("Expected running_mean and running_var to be defined when use_input_stats is false")
        # PyTorch's layouts (see below): output and gradient contiguous
        return batch_norm(input.contiguous(), running_mean, running_var, weight, bias, False, momentum, eps)
    spatial = 1
    for d in input.shape[2:]:
        spatial *= d
    if spatial == 1:
        raise ValueError(f"Expected more than 1 spatial element when training, got input size {input.size()}")
    if torch_math(input):  # inside torch.compile on a GPU (under_compile.py)
        return TF.instance_norm(input, running_mean, running_var, weight, bias, True, momentum, eps)
    y, mean, _, var = _instance_norm_forward(input, weight, bias, float(eps))
    if input.numel() > 0 and (running_mean is not None or running_var is not None):
        n, c = input.shape[0], input.shape[1]
        with torch.no_grad():
            # the biased variances averaged over n; the update makes them unbiased
            _bn_update_running_stats(
                running_mean, running_var, mean.reshape(n, c).mean(0), var.reshape(n, c).mean(0), spatial, momentum
            )
    # PyTorch's instance norm normalizes a contiguous (1, N*C, *) view: its
    # output is contiguous whatever the input's layout
    return y if y.is_contiguous() else y.contiguous()



# =============================================================================
# normalization: layer, RMS and group norm
# =============================================================================

from typing import List as _List  # noqa: E402

from .reference import normalization as ref_rownorm  # noqa: E402

__all__ += ["layer_norm", "rms_norm", "group_norm"]

# The forward ops return (y, mean, rstd) with the statistics in float32
# (float64 for float64 input), flat over the rows / (sample, group) pairs;
# backward rebuilds xhat from x and them. Backward returns (dx, dweight,
# dbias) with empty tensors standing for "no such parameter", which the
# autograd formulas turn into None.
# (_rn_ marks this section's private helpers, so that they cannot collide
# with the batch/instance norm section's names in the same module.)


def _rn_stat_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _rn_lead_numel(x: Tensor, normalized_shape) -> int:
    n = 1
    for size in x.shape[: x.dim() - len(normalized_shape)]:
        n *= size
    return n


def _rn_stats_to_torch(a, like: Tensor) -> Tensor:
    return to_torch(a.reshape(-1), like, _rn_stat_dtype(like))


def _rn_param_grad_to_torch(g, param: Optional[Tensor], like: Tensor) -> Tensor:
    if g is None or param is None:
        return like.new_empty(0, dtype=param.dtype if param is not None else like.dtype)
    return to_torch(g, param)


def _check_normalized_shape(input: Tensor, normalized_shape, weight=None, bias=None) -> list:
    validate.floating(input)
    # isinstance first: torch 2.11's dynamo cannot trace operator.index raising
    # TypeError on a tuple (GPT-2 under lamina.patch + torch.compile on the H200)
    if not isinstance(normalized_shape, (list, tuple)) or any(validate.as_int(s) is None for s in normalized_shape):
        raise TypeError(f"normalized_shape must be a tuple or list of ints, got {normalized_shape!r}")
    shape = [validate.as_int(s) for s in normalized_shape]
    if not shape:
        raise RuntimeError(
            "Expected normalized_shape to be at least 1-dimensional, i.e., containing at least one element, "
            f"but got normalized_shape = {shape}")
    if input.dim() < len(shape) or list(input.shape[input.dim() - len(shape):]) != shape:
        raise RuntimeError(
            f"Given normalized_shape={shape}, expected input with shape [*, {', '.join(map(str, shape))}], "
            f"but got input of size{list(input.shape)}")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and list(p.shape) != shape:
            raise RuntimeError(
                f"Expected {name} to be of same shape as normalized_shape, but got {name} of shape "
                f"{list(p.shape)} and normalized_shape = {shape}")
    validate.same_device(input, weight=weight, bias=bias)
    return shape


def _row_norm_cache_stats(x: Tensor, normalized_shape, stat: Tensor):
    """A flat (M,) statistic as the reference keeps it: leading dims, then 1s."""
    lead = tuple(x.shape[: x.dim() - len(normalized_shape)])
    return to_numpy(stat).reshape(lead + (1,) * len(normalized_shape))


# --- layer_norm ------------------------------------------------------------------

@custom_op("lamina::layer_norm_forward", mutates_args=())
def _layer_norm_forward(
    x: Tensor, normalized_shape: _List[int], weight: Optional[Tensor], bias: Optional[Tensor], eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    if use_kernels(x):
        return kernels("normalization").row_norm_forward(x, normalized_shape, weight, bias, eps, rms=False)
    y, (_, mean, rstd, _, _, _) = ref_rownorm.layer_norm_forward(
        to_numpy(x), normalized_shape, to_numpy(weight), to_numpy(bias), eps)
    return to_torch(y, x), _rn_stats_to_torch(mean, x), _rn_stats_to_torch(rstd, x)


@_layer_norm_forward.register_fake
def _(x, normalized_shape, weight, bias, eps):
    m = _rn_lead_numel(x, normalized_shape)
    stat = _rn_stat_dtype(x)
    return x.new_empty(x.shape), x.new_empty(m, dtype=stat), x.new_empty(m, dtype=stat)


@custom_op("lamina::layer_norm_backward", mutates_args=())
def _layer_norm_backward(
    dy: Tensor, x: Tensor, normalized_shape: _List[int], weight: Optional[Tensor], mean: Tensor, rstd: Tensor, has_bias: bool
) -> tuple[Tensor, Tensor, Tensor]:
    if use_kernels(x):
        return kernels("normalization").row_norm_backward(dy, x, normalized_shape, weight, mean, rstd, has_bias, rms=False)
    cache = (to_numpy(x), _row_norm_cache_stats(x, normalized_shape, mean), _row_norm_cache_stats(x, normalized_shape, rstd),
             to_numpy(weight), has_bias, len(normalized_shape))
    dx, dweight, dbias = ref_rownorm.layer_norm_backward(to_numpy(dy), cache)
    pdtype = weight.dtype if weight is not None else x.dtype
    dbias_t = to_torch(dbias, x, pdtype) if has_bias else x.new_empty(0, dtype=pdtype)
    return to_torch(dx, x), _rn_param_grad_to_torch(dweight, weight, x), dbias_t


@_layer_norm_backward.register_fake
def _(dy, x, normalized_shape, weight, mean, rstd, has_bias):
    pdtype = weight.dtype if weight is not None else x.dtype
    dweight = x.new_empty(normalized_shape if weight is not None else 0, dtype=pdtype)
    dbias = x.new_empty(normalized_shape if has_bias else 0, dtype=pdtype)
    return x.new_empty(x.shape), dweight, dbias


def _register_affine_norm_autograd(forward_op, backward_op, torch_forward, contiguous_dx: bool) -> None:
    """Autograd for a norm op ``(x, how, weight, bias, eps) -> (y, mean, rstd)``
    (``how``: layer norm's normalized_shape, group norm's num_groups) whose
    backward op is ``(dy, x, how, weight, mean, rstd, has_bias) -> (dx,
    dweight, dbias)``; the statistics' own gradients are ignored.
    ``torch_forward(x, how, weight, eps)``: the norm in PyTorch's ops, no bias
    (second derivatives, _norm_grads_torch). ``contiguous_dx``: dx is
    contiguous whatever x's layout, as PyTorch's (layer norm's) is."""

    def setup(ctx, inputs, output):
        x, how, weight, bias, eps = inputs
        ctx.how, ctx.has_bias, ctx.eps = how, bias is not None, eps
        ctx.save_for_backward(x, weight, output[1], output[2])

    def grad(ctx, dy, _dmean, _drstd):
        x, weight, mean, rstd = ctx.saved_tensors
        if differentiable_backward(dy):  # create_graph=True, or batched
            dx, dweight, dbias = _norm_grads_torch(
                lambda t, w: torch_forward(t, ctx.how, w, ctx.eps), dy, x, weight, ctx.has_bias,
                _bias_dims(x, ctx.how))
        else:
            dx, dweight, dbias = backward_op(dy, x, ctx.how, weight, mean, rstd, ctx.has_bias)
            if contiguous_dx and not dx.is_contiguous():  # (the NumPy reference keeps x's order)
                dx = dx.contiguous()
        return dx, None, dweight if weight is not None else None, dbias if ctx.has_bias else None, None

    forward_op.register_autograd(grad, setup_context=setup)


_register_affine_norm_autograd(_layer_norm_forward, _layer_norm_backward,
                               lambda x, shape, w, eps: TF.layer_norm(x, shape, w, None, eps), contiguous_dx=True)


def layer_norm(
    input: Tensor, normalized_shape: _List[int], weight: Optional[Tensor] = None, bias: Optional[Tensor] = None, eps: float = 1e-5
) -> Tensor:
    r"""layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5) -> Tensor

    Layer normalization (Ba et al., 2016, "Layer Normalization") over the
    trailing ``normalized_shape`` dims, with the biased variance:

    .. math:: y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} * \gamma + \beta

    See :class:`lamina.nn.LayerNorm`.

    Args:
        input (Tensor): the input :math:`(*, \text{normalized\_shape})`.
        normalized_shape (list of int): the trailing shape to normalize over.
        weight (Tensor, optional): elementwise scale :math:`\gamma` of shape
            ``normalized_shape``. Default: ``None``
        bias (Tensor, optional): elementwise shift :math:`\beta`. Default: ``None``
        eps (float): added to the variance for stability. Default: ``1e-5``

    Shape:
        - Input: :math:`(*, \text{normalized\_shape})`.
        - Output: same shape as the input.

    Example::

        >>> import torch, lamina
        >>> y = lamina.functional.layer_norm(torch.randn(2, 5, 8), [8])
        >>> y.shape
        torch.Size([2, 5, 8])
    """
    shape = _check_normalized_shape(input, normalized_shape, weight, bias)
    validate.param_dtype(input, "layer_norm", weight=weight, bias=bias)
    if torch_math(input):  # inside torch.compile on a GPU (under_compile.py)
        return TF.layer_norm(input, shape, weight, bias, eps)
    y, _, _ = _layer_norm_forward(input, shape, weight, bias, float(eps))
    # PyTorch's layer norm returns a contiguous tensor whatever the input's
    # layout; the NumPy reference keeps a permuted input's order
    return y if y.is_contiguous() else y.contiguous()


# --- rms_norm --------------------------------------------------------------------

@custom_op("lamina::rms_norm_forward", mutates_args=())
def _rms_norm_forward(x: Tensor, normalized_shape: _List[int], weight: Optional[Tensor], eps: float) -> tuple[Tensor, Tensor]:
    if use_kernels(x):
        y, _, rstd = kernels("normalization").row_norm_forward(x, normalized_shape, weight, None, eps, rms=True)
        return y, rstd
    y, (_, rstd, _, _) = ref_rownorm.rms_norm_forward(to_numpy(x), normalized_shape, to_numpy(weight), eps)
    return to_torch(y, x), _rn_stats_to_torch(rstd, x)


@_rms_norm_forward.register_fake
def _(x, normalized_shape, weight, eps):
    return x.new_empty(x.shape), x.new_empty(_rn_lead_numel(x, normalized_shape), dtype=_rn_stat_dtype(x))


@custom_op("lamina::rms_norm_backward", mutates_args=())
def _rms_norm_backward(
    dy: Tensor, x: Tensor, normalized_shape: _List[int], weight: Optional[Tensor], rstd: Tensor
) -> tuple[Tensor, Tensor]:
    if use_kernels(x):
        dx, dweight, _ = kernels("normalization").row_norm_backward(dy, x, normalized_shape, weight, None, rstd, False, rms=True)
        return dx, dweight
    cache = (to_numpy(x), _row_norm_cache_stats(x, normalized_shape, rstd), to_numpy(weight), len(normalized_shape))
    dx, dweight = ref_rownorm.rms_norm_backward(to_numpy(dy), cache)
    return to_torch(dx, x), _rn_param_grad_to_torch(dweight, weight, x)


@_rms_norm_backward.register_fake
def _(dy, x, normalized_shape, weight, rstd):
    dweight = x.new_empty(normalized_shape, dtype=weight.dtype) if weight is not None else x.new_empty(0)
    return x.new_empty(x.shape), dweight


def _rms_norm_setup(ctx, inputs, output):
    x, normalized_shape, weight, eps = inputs
    ctx.normalized_shape, ctx.eps = normalized_shape, eps
    ctx.save_for_backward(x, weight, output[1])


def _rms_norm_grad(ctx, dy, _drstd):
    x, weight, rstd = ctx.saved_tensors
    if differentiable_backward(dy):  # create_graph=True, or batched: PyTorch's ops, differentiable again
        dx, dweight, _ = _norm_grads_torch(lambda t, w: TF.rms_norm(t, ctx.normalized_shape, w, ctx.eps),
                                           dy, x, weight, False, None)
    else:
        dx, dweight = _rms_norm_backward(dy, x, ctx.normalized_shape, weight, rstd)
        if not (dx.is_contiguous() and dy.is_contiguous()):
            # PyTorch's rms_norm is elementwise math: its dx takes the
            # upstream gradient's layout when that is dense (a channels_last
            # y's gradient gives a channels_last dx), else is contiguous, as
            # empty_like(dy); the kernels write rows, the reference x's order
            dx = torch.empty_like(dy).copy_(dx)
        if weight is not None and not dweight.is_contiguous():  # (the reference sums in x's order)
            dweight = dweight.contiguous()
    return dx, None, dweight if weight is not None else None, None


_rms_norm_forward.register_autograd(_rms_norm_grad, setup_context=_rms_norm_setup)


def rms_norm(input: Tensor, normalized_shape: _List[int], weight: Optional[Tensor] = None, eps: Optional[float] = None) -> Tensor:
    r"""rms_norm(input, normalized_shape, weight=None, eps=None) -> Tensor

    Root-mean-square layer normalization (Zhang & Sennrich, 2019) over the
    trailing ``normalized_shape`` dims:

    .. math:: y = \frac{x}{\sqrt{\mathrm{E}[x^2] + \epsilon}} * \gamma

    ``eps=None`` uses ``torch.finfo(torch.float32).eps`` (``float64``'s for
    float64 input), as PyTorch does. See :class:`lamina.nn.RMSNorm`.

    Args:
        input (Tensor): the input :math:`(*, \text{normalized\_shape})`.
        normalized_shape (list of int): the trailing shape to normalize over.
        weight (Tensor, optional): elementwise scale :math:`\gamma`. Default: ``None``
        eps (float, optional): added to the mean square. Default: ``None``

    Shape:
        - Input: :math:`(*, \text{normalized\_shape})`.
        - Output: same shape as the input.

    Example::

        >>> import torch, lamina
        >>> y = lamina.functional.rms_norm(torch.randn(3, 8), [8], torch.ones(8))
        >>> y.shape
        torch.Size([3, 8])
    """
    if _torch_only_dtype(input):
        return TF.rms_norm(input, normalized_shape, weight, eps)
    shape = _check_normalized_shape(input, normalized_shape, weight)
    if eps is None:  # torch's rule: the epsilon of the computation dtype
        eps = torch.finfo(torch.float64 if input.dtype == torch.float64 else torch.float32).eps
    if torch_math(input):  # inside torch.compile on a GPU (under_compile.py)
        return TF.rms_norm(input, shape, weight, eps)
    y, _ = _rms_norm_forward(input, shape, weight, float(eps))
    if not input.is_contiguous():
        # PyTorch's rms_norm is elementwise math, whose output keeps a dense
        # input's layout (channels_last stays channels_last); the kernels
        # write rows
        y = torch.empty_like(input).copy_(y)
    return y


# --- group_norm ------------------------------------------------------------------

def _rn_like_memory_format(t: Tensor, x: Tensor) -> Tensor:
    """t (contiguous) in x's channels-last format when x has it, as torch's
    group_norm keeps the input's memory format."""
    if not x.is_contiguous():
        for fmt, dim in ((torch.channels_last, 4), (torch.channels_last_3d, 5)):
            if x.dim() == dim and x.is_contiguous(memory_format=fmt):
                return t.contiguous(memory_format=fmt)
    return t


@custom_op("lamina::group_norm_forward", mutates_args=())
def _group_norm_forward(
    x: Tensor, num_groups: int, weight: Optional[Tensor], bias: Optional[Tensor], eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    if use_kernels(x):
        return kernels("normalization").group_norm_forward(x, num_groups, weight, bias, eps)
    y, (_, mean, rstd, _, _) = ref_rownorm.group_norm_forward(to_numpy(x), num_groups, to_numpy(weight), to_numpy(bias), eps)
    return _rn_like_memory_format(to_torch(y, x), x), _rn_stats_to_torch(mean, x), _rn_stats_to_torch(rstd, x)


@_group_norm_forward.register_fake
def _(x, num_groups, weight, bias, eps):
    stat = _rn_stat_dtype(x)
    m = x.shape[0] * num_groups
    return torch.empty_like(x), x.new_empty(m, dtype=stat), x.new_empty(m, dtype=stat)


@custom_op("lamina::group_norm_backward", mutates_args=())
def _group_norm_backward(
    dy: Tensor, x: Tensor, num_groups: int, weight: Optional[Tensor], mean: Tensor, rstd: Tensor, has_bias: bool
) -> tuple[Tensor, Tensor, Tensor]:
    if use_kernels(x):
        return kernels("normalization").group_norm_backward(dy, x, num_groups, weight, mean, rstd, has_bias)
    n = x.shape[0]
    cache = (to_numpy(x), to_numpy(mean).reshape(n, num_groups), to_numpy(rstd).reshape(n, num_groups), to_numpy(weight), has_bias)
    dx, dweight, dbias = ref_rownorm.group_norm_backward(to_numpy(dy), cache)
    pdtype = weight.dtype if weight is not None else x.dtype
    dbias_t = to_torch(dbias, x, pdtype) if has_bias else x.new_empty(0, dtype=pdtype)
    return _rn_like_memory_format(to_torch(dx, x), x), _rn_param_grad_to_torch(dweight, weight, x), dbias_t


@_group_norm_backward.register_fake
def _(dy, x, num_groups, weight, mean, rstd, has_bias):
    pdtype = weight.dtype if weight is not None else x.dtype
    c = x.shape[1]
    return torch.empty_like(x), x.new_empty(c if weight is not None else 0, dtype=pdtype), x.new_empty(c if has_bias else 0, dtype=pdtype)


def _group_norm_torch(x: Tensor, groups: int, weight: Optional[Tensor], eps: float) -> Tensor:
    """group_norm (no bias) in elementary PyTorch ops, for the backward's
    PyTorch form: autograd's batched gradients run it under a vmap, where the
    backward of torch's own group_norm broadcasts its statistics wrongly."""
    n, c = x.shape[:2]
    xg = x.reshape(n, groups, (c // groups) * math.prod(x.shape[2:]))  # (no -1: n may be 0)
    mean = xg.mean(-1, keepdim=True)
    centered = xg - mean
    y = (centered * torch.rsqrt((centered * centered).mean(-1, keepdim=True) + eps)).reshape(x.shape)
    return y if weight is None else y * weight.reshape((1, c) + (1,) * (x.dim() - 2))


_register_affine_norm_autograd(_group_norm_forward, _group_norm_backward, _group_norm_torch, contiguous_dx=False)


def group_norm(
    input: Tensor, num_groups: int, weight: Optional[Tensor] = None, bias: Optional[Tensor] = None, eps: float = 1e-5
) -> Tensor:
    r"""group_norm(input, num_groups, weight=None, bias=None, eps=1e-5) -> Tensor

    Group normalization (Wu & He, 2018) of ``input`` (N, C, \*): the C channels
    split into ``num_groups`` groups, each (sample, group) normalized by its
    own mean and biased variance, then a per-channel :math:`\gamma, \beta`:

    .. math:: y = \frac{x - \mathrm{E}_g[x]}{\sqrt{\mathrm{Var}_g[x] + \epsilon}} * \gamma_c + \beta_c

    See :class:`lamina.nn.GroupNorm`.

    Args:
        input (Tensor): the input :math:`(N, C, *)`.
        num_groups (int): number of groups; must divide C.
        weight (Tensor, optional): per-channel scale :math:`\gamma`. Default: ``None``
        bias (Tensor, optional): per-channel shift :math:`\beta`. Default: ``None``
        eps (float): added to the variance for stability. Default: ``1e-5``

    Shape:
        - Input: :math:`(N, C, *)`.
        - Output: same shape as the input.

    Example::

        >>> import torch, lamina
        >>> y = lamina.functional.group_norm(torch.randn(2, 6, 4, 4), 3)
        >>> y.shape
        torch.Size([2, 6, 4, 4])
    """
    validate.floating(input)
    if input.dim() < 2:
        raise RuntimeError(f"Expected at least 2 dimensions for input tensor but received {input.dim()}")
    n, c = input.shape[0], input.shape[1]
    if validate.as_int(num_groups) is None:
        raise TypeError(f"group_norm(): argument 'num_groups' must be int, not {type(num_groups).__name__}")
    num_groups = validate.as_int(num_groups)
    if num_groups == 0:
        raise validate.ZeroGroupsError("group_norm: Expected num_groups to be greater than 0, got 0")
    if num_groups < 0:
        raise RuntimeError(f"group_norm: Expected num_groups to be greater than 0, got {num_groups}")
    if c % num_groups:
        raise RuntimeError(
            "Expected number of channels in input to be divisible by num_groups, but got input of shape "
            f"{list(input.shape)} and num_groups={num_groups}")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and (p.dim() != 1 or p.numel() != c):
            raise RuntimeError(
                f"Expected {name} to be a vector of size equal to the number of channels in input, but got "
                f"{name} of shape {list(p.shape)} and input of shape {list(input.shape)}")
    validate.same_device(input, weight=weight, bias=bias)
    validate.param_dtype(input, "group_norm", weight=weight, bias=bias)
    per_group = n * c // num_groups
    for size in input.shape[2:]:
        per_group *= size
    if per_group == 1:  # torch's _verify_batch_size on (N * C / G, G, *spatial)
        raise ValueError(
            "Expected more than 1 value per channel when training, got input size "
            f"{[n * c // num_groups, num_groups] + list(input.shape[2:])}")
    if torch_math(input):  # inside torch.compile on a GPU (under_compile.py)
        return TF.group_norm(input, num_groups, weight, bias, eps)
    y, _, _ = _group_norm_forward(input, num_groups, weight, bias, float(eps))
    return y


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

@custom_op("lamina::max_pool2d_forward", mutates_args=())
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


@custom_op("lamina::max_pool2d_backward", mutates_args=())
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
    """ddx (N, C, H, W) read at flat per-plane indices (N, C, OH, OW).
    (reshape, not flatten: autograd's batched gradients run this under a
    vmap that has no rule for flatten)"""
    n, c = indices.shape[:2]
    return ddx.reshape(n, c, -1).gather(2, indices.reshape(n, c, -1)).view(indices.shape)


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


def _scatter_to(dy: Tensor, indices: Tensor, input_size, channels_last: bool) -> Tensor:
    """dx (N, C, H, W): dy added at flat per-plane indices (N, C, OH, OW) --
    a max pool's backward in PyTorch's ops, taken where a backward must run
    batched (custom_op.differentiable_backward)."""
    n, c, h, w = input_size
    dx = torch.zeros((n, c, h * w), dtype=dy.dtype, device=dy.device)
    dx = dx.scatter_add(2, indices.reshape(n, c, -1), dy.reshape(n, c, -1)).view(n, c, h, w)
    return _pool_grad_layout(dx, channels_last)


def _pool_grad_layout(dx: Tensor, channels_last: bool) -> Tensor:
    """A pooling gradient from PyTorch's ops in the input's memory format;
    under autograd's batched gradients (a vmap that cannot ask a tensor for
    channels_last) as it comes."""
    if is_legacy_batchedtensor(dx):
        return dx
    return dx.contiguous(memory_format=torch.channels_last) if channels_last else dx.contiguous()


_max_pool2d_backward.differentiable = (
    lambda dy, pos, input_size, kernel_size, stride, padding, dilation, channels_last: _scatter_to(
        dy, _max_pool2d_indices(pos, input_size, kernel_size, stride, padding, dilation), input_size, channels_last))


def max_pool2d(input: Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False,
               return_indices: bool = False):
    r"""max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False)

    2-D max pooling over each window, positions outside the input ignored:

    .. math:: y_{n,c,i,j} = \max_{a<k_h,\,b<k_w} x_{n,c,\,s_h i - p_h + d_h a,\; s_w j - p_w + d_w b}

    With ``return_indices`` also returns PyTorch's int64 indices (flat
    ``h*W + w`` within each plane).

    Args:
        input (Tensor): the input :math:`(N, C, H, W)` or :math:`(C, H, W)`.
        kernel_size (int or tuple): window size :math:`(k_h, k_w)`.
        stride (int or tuple, optional): window step. Default: ``None`` (``kernel_size``)
        padding (int or tuple): implicit :math:`-\infty` padding on both sides. Default: ``0``
        dilation (int or tuple): spacing between window elements. Default: ``1``
        ceil_mode (bool): round the output size up instead of down. Default: ``False``
        return_indices (bool): also return the argmax indices. Default: ``False``

    Shape:
        - Input: :math:`(N, C, H_{in}, W_{in})` or :math:`(C, H_{in}, W_{in})`.
        - Output: :math:`(N, C, H_{out}, W_{out})` or :math:`(C, H_{out}, W_{out})`, with
          :math:`H_{out} = \lfloor (H_{in} + 2 p_h - d_h (k_h - 1) - 1) / s_h \rfloor + 1`
          (ceil with ``ceil_mode``), and likewise :math:`W_{out}`.

    Example::

        >>> import torch, lamina
        >>> y, idx = lamina.functional.max_pool2d(torch.randn(1, 2, 6, 6), 2, return_indices=True)
        >>> y.shape, idx.dtype
        (torch.Size([1, 2, 3, 3]), torch.int64)
    """
    op = "max_pool2d"
    if _torch_only_dtype(input):
        return TF.max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode=ceil_mode,
                             return_indices=return_indices)
    validate.pool_input(input, op, nonempty=0)
    kernel_size = validate.pool_pair(kernel_size, "kernel_size", op)
    stride = validate.pool_pair(stride, "stride", op, allow_none=True) or kernel_size
    padding = validate.pool_pair(padding, "padding", op)
    dilation = validate.pool_pair(dilation, "dilation", op)
    validate.pool_geometry(input, op, kernel_size, stride, padding, dilation, ceil_mode)
    if torch_math(input):  # inside torch.compile on a GPU (under_compile.py)
        return TF.max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)
    batched = input.dim() == 4
    x = input if batched else input.unsqueeze(0)
    y, _, indices = _max_pool2d_forward(x, list(kernel_size), list(stride), list(padding), list(dilation),
                                        bool(ceil_mode), bool(return_indices))
    if not batched:
        y = y.squeeze(0)
        indices = indices.squeeze(0) if return_indices else indices
    return (y, indices) if return_indices else y


# --- avg_pool2d -----------------------------------------------------------------

@custom_op("lamina::avg_pool2d_forward", mutates_args=())
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


@custom_op("lamina::avg_pool2d_backward", mutates_args=())
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


def _avg_pool2d_ceil_mode(dy: Tensor, input_size, kernel_size, stride, padding) -> bool:
    """The forward's ceil_mode: whichever rounding gives dy's size."""
    floor_hw = _pool_output_hw(torch.empty(input_size, device="meta"), kernel_size, stride, padding, (1, 1), False)
    return tuple(floor_hw) != tuple(dy.shape[2:])


def _avg_pool2d_backward_setup(ctx, inputs, output):
    dy, input_size, kernel_size, stride, padding, count_include_pad, divisor_override, _ = inputs
    ceil_mode = _avg_pool2d_ceil_mode(dy, input_size, kernel_size, stride, padding)
    ctx.args = (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


def _avg_pool2d_backward_torch(dy, input_size, kernel_size, stride, padding, count_include_pad, divisor_override,
                               channels_last):
    """avg_pool2d's backward in PyTorch's op (batched gradients); the input
    it asks for is read for its size only."""
    like = torch.zeros((), dtype=dy.dtype, device=dy.device).expand(input_size)
    dx = torch.ops.aten.avg_pool2d_backward(dy, like, kernel_size, stride, padding,
                                            _avg_pool2d_ceil_mode(dy, input_size, kernel_size, stride, padding),
                                            count_include_pad, divisor_override or None)
    return _pool_grad_layout(dx, channels_last)


_avg_pool2d_backward.differentiable = _avg_pool2d_backward_torch


def _avg_pool2d_backward_grad(ctx, ddx):
    """Double backward: backward is the transpose of the (linear) average
    pool, so its adjoint is the average pool itself (PyTorch's: the double
    backward may run batched)."""
    kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override = ctx.args
    return (TF.avg_pool2d(ddx, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override or None),
            ) + (None,) * 7


_avg_pool2d_backward.register_autograd(_avg_pool2d_backward_grad, setup_context=_avg_pool2d_backward_setup)


def avg_pool2d(input: Tensor, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: Optional[int] = None) -> Tensor:
    r"""avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None)

    2-D average pooling, padding read as zeros:

    .. math:: y_{n,c,i,j} = \frac{1}{D_{ij}} \sum_{a<k_h,\,b<k_w} x_{n,c,\,s_h i - p_h + a,\; s_w j - p_w + b}

    :math:`D_{ij}` is ``divisor_override`` if given, else the window's size
    clipped to input + padding (``count_include_pad=True``) or to the input alone.

    Args:
        input (Tensor): the input :math:`(N, C, H, W)` or :math:`(C, H, W)`.
        kernel_size (int or tuple): window size :math:`(k_h, k_w)`.
        stride (int or tuple, optional): window step. Default: ``None`` (``kernel_size``)
        padding (int or tuple): implicit zero padding on both sides. Default: ``0``
        ceil_mode (bool): round the output size up instead of down. Default: ``False``
        count_include_pad (bool): count padded zeros in the divisor. Default: ``True``
        divisor_override (int, optional): fixed divisor for every window. Default: ``None``

    Shape:
        - Input: :math:`(N, C, H_{in}, W_{in})` or :math:`(C, H_{in}, W_{in})`.
        - Output: :math:`(N, C, H_{out}, W_{out})` or :math:`(C, H_{out}, W_{out})`, with
          :math:`H_{out} = \lfloor (H_{in} + 2 p_h - k_h) / s_h \rfloor + 1`
          (ceil with ``ceil_mode``), and likewise :math:`W_{out}`.

    Example::

        >>> import torch, lamina
        >>> y = lamina.functional.avg_pool2d(torch.randn(1, 2, 5, 5), 3, stride=2, padding=1)
        >>> y.shape
        torch.Size([1, 2, 3, 3])
    """
    op = "avg_pool2d"
    if _torch_only_dtype(input):
        return TF.avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    if isinstance(input, torch.Tensor) and input.dim() < 3:
        # PyTorch reads input.size(-3) first: an IndexError
        raise validate.InputDimensionError(
            f"{op}: expected a 3D (C, H, W) or 4D (N, C, H, W) input, got {input.dim()}D input of shape {tuple(input.shape)}")
    validate.pool_input(input, op, nonempty=0)
    kernel_size = validate.pool_pair(kernel_size, "kernel_size", op)
    stride = validate.pool_pair(stride, "stride", op, allow_none=True) or kernel_size
    padding = validate.pool_pair(padding, "padding", op)
    validate.pool_geometry(input, op, kernel_size, stride, padding, (1, 1), ceil_mode)
    if divisor_override is not None and divisor_override == 0:
        raise RuntimeError("avg_pool2d: divisor_override must be non-zero (divisor must be not zero)")
    if torch_math(input):  # inside torch.compile on a GPU (under_compile.py)
        return TF.avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    batched = input.dim() == 4
    x = input if batched else input.unsqueeze(0)
    y = _avg_pool2d_forward(x, list(kernel_size), list(stride), list(padding), bool(ceil_mode), bool(count_include_pad),
                            int(divisor_override or 0))
    return y if batched else y.squeeze(0)


# --- adaptive_avg_pool2d ----------------------------------------------------------

@custom_op("lamina::adaptive_avg_pool2d_forward", mutates_args=())
def _adaptive_avg_pool2d_forward(x: Tensor, output_size: list[int]) -> Tensor:
    if use_kernels(x):
        return kernels("pooling").adaptive_avg_pool2d_forward(x, output_size)
    y, _ = ref_pooling.adaptive_avg_pool2d_forward(to_numpy(x), output_size)
    return _like_layout(to_torch(y, x), _is_channels_last(x))


@_adaptive_avg_pool2d_forward.register_fake
def _(x, output_size):
    return _empty_pool(x, *output_size)


@custom_op("lamina::adaptive_avg_pool2d_backward", mutates_args=())
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
    # the gradient's layout is PyTorch's: its 1x1 pool is a mean over (H, W),
    # whose backward (an expanded gradient divided) is contiguous whatever
    # the input's layout; other sizes keep the input's
    global_mean = list(inputs[1]) == [1, 1]
    ctx.geometry = (list(inputs[0].shape), _is_channels_last(inputs[0]) and not global_mean)


def _adaptive_avg_pool2d_grad(ctx, dy):
    return _adaptive_avg_pool2d_backward(dy, *ctx.geometry), None


_adaptive_avg_pool2d_forward.register_autograd(_adaptive_avg_pool2d_grad, setup_context=_adaptive_avg_pool2d_setup)


def _adaptive_avg_pool2d_backward_setup(ctx, inputs, output):
    ctx.output_size = list(inputs[0].shape[2:])


def _adaptive_avg_pool2d_backward_grad(ctx, ddx):
    """Double backward: the adjoint of the (linear) backward is the pool
    itself (PyTorch's: the double backward may run batched)."""
    return TF.adaptive_avg_pool2d(ddx, ctx.output_size), None, None


_adaptive_avg_pool2d_backward.register_autograd(_adaptive_avg_pool2d_backward_grad,
                                                setup_context=_adaptive_avg_pool2d_backward_setup)


def _adaptive_avg_pool2d_backward_torch(dy, input_size, channels_last):
    """In PyTorch's op (batched gradients); its input is read for its size."""
    like = torch.zeros((), dtype=dy.dtype, device=dy.device).expand(input_size)
    dx = torch.ops.aten._adaptive_avg_pool2d_backward(dy, like)
    return _pool_grad_layout(dx, channels_last)


_adaptive_avg_pool2d_backward.differentiable = _adaptive_avg_pool2d_backward_torch


def adaptive_avg_pool2d(input: Tensor, output_size) -> Tensor:
    r"""adaptive_avg_pool2d(input, output_size) -> Tensor

    2-D average pooling to a fixed output size. Output (i, j) averages input
    rows :math:`\lfloor i H / H_{out} \rfloor` to :math:`\lceil (i+1) H / H_{out} \rceil`
    (exclusive) and the matching columns.

    Args:
        input (Tensor): the input :math:`(N, C, H, W)` or :math:`(C, H, W)`.
        output_size (int or tuple): :math:`(H_{out}, W_{out})`; an int for a square
            output, a ``None`` entry keeps the input's size.

    Shape:
        - Input: :math:`(N, C, H, W)` or :math:`(C, H, W)`.
        - Output: :math:`(N, C, H_{out}, W_{out})` or :math:`(C, H_{out}, W_{out})`.

    Example::

        >>> import torch, lamina
        >>> y = lamina.functional.adaptive_avg_pool2d(torch.randn(1, 3, 7, 5), (2, None))
        >>> y.shape
        torch.Size([1, 3, 2, 5])
    """
    op = "adaptive_avg_pool2d"
    validate.adaptive_input_dims(input, output_size)
    validate.pool_input(input, op, nonempty=2)
    output_size = validate.adaptive_output_size(input, output_size, op)
    if torch_math(input):  # inside torch.compile on a GPU (under_compile.py)
        return TF.adaptive_avg_pool2d(input, output_size)
    batched = input.dim() == 4
    x = input if batched else input.unsqueeze(0)
    y = _adaptive_avg_pool2d_forward(x, list(output_size))
    return y if batched else y.squeeze(0)


# --- adaptive_max_pool2d ----------------------------------------------------------

@custom_op("lamina::adaptive_max_pool2d_forward", mutates_args=())
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


@custom_op("lamina::adaptive_max_pool2d_backward", mutates_args=())
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
_adaptive_max_pool2d_backward.differentiable = (
    lambda dy, pos, input_size, channels_last: _scatter_to(
        dy, _adaptive_max_pool2d_indices(pos, input_size), input_size, channels_last))


def adaptive_max_pool2d(input: Tensor, output_size, return_indices: bool = False):
    r"""adaptive_max_pool2d(input, output_size, return_indices=False)

    2-D max pooling to a fixed output size. Output (i, j) is the max of input
    rows :math:`\lfloor i H / H_{out} \rfloor` to :math:`\lceil (i+1) H / H_{out} \rceil`
    (exclusive) and the matching columns; with ``return_indices`` also
    PyTorch's int64 indices (flat ``h*W + w``).

    Args:
        input (Tensor): the input :math:`(N, C, H, W)` or :math:`(C, H, W)`.
        output_size (int or tuple): :math:`(H_{out}, W_{out})`; an int for a square
            output, a ``None`` entry keeps the input's size.
        return_indices (bool): also return the argmax indices. Default: ``False``

    Shape:
        - Input: :math:`(N, C, H, W)` or :math:`(C, H, W)`.
        - Output: :math:`(N, C, H_{out}, W_{out})` or :math:`(C, H_{out}, W_{out})`.

    Example::

        >>> import torch, lamina
        >>> y = lamina.functional.adaptive_max_pool2d(torch.randn(2, 3, 9, 9), 4)
        >>> y.shape
        torch.Size([2, 3, 4, 4])
    """
    op = "adaptive_max_pool2d"
    validate.adaptive_input_dims(input, output_size)
    validate.pool_input(input, op, nonempty=3 if input.dim() == 4 else 2)
    output_size = validate.adaptive_output_size(input, output_size, op)
    if torch_math(input):  # inside torch.compile on a GPU (under_compile.py)
        return TF.adaptive_max_pool2d(input, output_size, return_indices)
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

from . import rng  # noqa: E402
from .reference import dropout as ref_dropout  # noqa: E402

__all__ += ["dropout", "drop_connect", "drop_block2d"]


def _seed_for(seed: Optional[int], generator: Optional[torch.Generator], like: Tensor) -> Tensor:
    """The Philox seed as a one-element int64 tensor on ``like``'s device.

    Drawn fresh from ``generator`` (default: torch's default CPU generator,
    so torch.manual_seed makes lamina's masks reproducible; during a CUDA
    graph capture, the CUDA generator) unless given.
    A tensor, not a Python int: drawing it needs no host sync, the kernels
    read it on the device, and torch.compile(fullgraph=True) traces it."""
    if seed is None:
        # (torch.compile cannot trace the capture test, a bool; its graphs
        # draw on the host as eager does, so the same torch.manual_seed gives
        # the same masks compiled or not)
        if (generator is None and like.is_cuda and not torch.compiler.is_compiling()
                and torch.cuda.is_current_stream_capturing()):
            # inside a CUDA graph capture: drawn on the device by the CUDA
            # generator, which the graph advances at every replay (a host
            # draw would be copied in once and frozen into the graph)
            return torch.randint(0, 2**63 - 1, (1,), dtype=torch.int64, device=like.device)
        if generator is None:
            drawn = torch.randint(0, 2**63 - 1, (1,), dtype=torch.int64, device="cpu")
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

@custom_op("lamina::dropout_forward", mutates_args=())
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


@custom_op("lamina::dropout_backward", mutates_args=())
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
    if differentiable_backward(dy):
        # create_graph=True or batched: dy times the mask regenerated on a
        # plain tensor of ones laid out as the output, in PyTorch's ops
        ones = torch.empty_strided(dy.shape, ctx.stride, dtype=dy.dtype, device=dy.device).fill_(1.0)
        return dy * _dropout_backward(ones, ctx.p, seed, ctx.offset), None, None, None
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

    Dropout (Srivastava et al., 2014, "Dropout: A Simple Way to Prevent Neural
    Networks from Overfitting"): in training, zeroes each element with
    probability ``p`` and scales the kept ones,

    .. math:: y = \frac{m \odot x}{1 - p}, \quad m_i \sim \text{Bernoulli}(1 - p)

    ``p = 1`` gives ``input * 0``. Not training, ``p = 0`` or an empty input:
    returns ``input`` itself, as torch does.

    Randomness: a Philox seed is drawn from ``generator`` (default: torch's
    default CPU generator, so ``torch.manual_seed`` reproduces the mask), or
    given explicitly as ``seed`` (an int in [0, 2**63)). The mask is
    ``lamina.rng.keep_mask(seed, 0, shape, p, strides)``: element kept when
    its uniform is >= p, the uniforms laid along the tensor's memory order
    (row-major for a non-dense tensor), identical on the CPU reference and the
    GPU kernels. Backward regenerates the mask; nothing is saved but the seed.

    Args:
        input (Tensor): the input tensor.
        p (float): probability of zeroing an element, in [0, 1]. Default: ``0.5``
        training (bool): apply dropout; otherwise the identity. Default: ``True``
        inplace (bool): write the result into ``input``. Default: ``False``
        generator (torch.Generator, optional): source of the seed. Default: ``None``
        seed (int, optional): explicit Philox seed (overrides ``generator``). Default: ``None``

    Shape:
        - Input: :math:`(*)`, any number of dimensions.
        - Output: :math:`(*)`, same shape as the input.

    Example::

        >>> import torch, lamina
        >>> y = lamina.functional.dropout(torch.ones(8), p=0.25, seed=0)
        >>> bool(((y == 0) | (y == 1 / 0.75)).all())
        True
    """
    validate.tensor(input)
    _dropout_check_p(p)
    if not training or p == 0 or input.numel() == 0:
        return input
    if not input.is_floating_point():
        if seed is None and generator is None:
            return TF.dropout(input, p, training, inplace)  # torch's answer for integers (p = 1: zeros; else its error)
        raise NotImplementedError(f"dropout: expected a floating-point input, got {input.dtype}")
    if seed is None and generator is None and torch_math(input):  # (under_compile.py: torch's random numbers)
        return TF.dropout(input, p, training, inplace)
    y = _dropout_forward(input, float(p), _seed_for(seed, generator, input), 0)
    return input.copy_(y) if inplace else y


def _dropout_check_p(p) -> None:
    """torch's checks: ValueError out of [0, 1]; NaN gets past Python's
    comparison and torch's kernel rejects it with a RuntimeError."""
    if not isinstance(p, (int, float)):  # (a bool is an int: dropout(x, True) is p = 1, as in torch)
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
    probability ``p`` and the kept ones scaled by :math:`1/(1-p)`,

    .. math:: W' = \frac{M \odot W}{1 - p}, \quad M_{ij} \sim \text{Bernoulli}(1 - p)

    (as dropout does, so the expected weight is unchanged; the paper's
    inference-time moment matching is not done: eval uses the plain weight). It
    is :func:`dropout` applied to the weight: same ops, same mask rule, and the
    gradient flows to the weight.

    Args:
        weight (Tensor): the weight to drop entries from.
        p (float): probability of zeroing an entry, in [0, 1]. Default: ``0.5``
        training (bool): apply the mask; otherwise the weight itself. Default: ``True``
        generator (torch.Generator, optional): source of the seed. Default: ``None``
        seed (int, optional): explicit Philox seed (overrides ``generator``). Default: ``None``

    Shape:
        - Weight: :math:`(*)`, any shape.
        - Output: :math:`(*)`, same shape as the weight.

    Example::

        >>> import torch, lamina
        >>> w = torch.randn(4, 3)
        >>> w2 = lamina.functional.drop_connect(w, p=0.1, seed=1)
        >>> y = torch.nn.functional.linear(torch.randn(2, 3), w2)
        >>> y.shape
        torch.Size([2, 4])
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


@custom_op("lamina::drop_block2d_forward", mutates_args=())
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


@custom_op("lamina::drop_block2d_backward", mutates_args=())
def _drop_block2d_backward(dy: Tensor, mask: Tensor, scale: Tensor) -> Tensor:
    if use_kernels(dy):
        return kernels("dropout").drop_block2d_backward(dy, mask, scale)
    cache = (to_numpy(mask).astype(bool), to_numpy(scale)[0])
    return to_torch(ref_dropout.drop_block2d_backward(to_numpy(dy), cache), dy)


# create_graph=True or batched: dy * mask * scale in PyTorch's ops
_drop_block2d_backward.differentiable = lambda dy, mask, scale: dy * (mask.to(dy.dtype) * scale.to(dy.dtype))


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

    .. math:: y = x \cdot mask \cdot \frac{\text{numel}}{\epsilon + \sum mask}

    Not training or ``p = 0``: returns ``input`` itself.

    Randomness as in :func:`dropout` (``generator`` or explicit ``seed``): the
    seeds are ``lamina.rng.bernoulli(seed, 0, (N, C, H-b+1, W-b+1), gamma)``,
    identical on the CPU reference and the GPU kernels and independent of the
    memory layout. Backward uses the saved one-byte mask and the scale.

    Args:
        input (Tensor): the input :math:`(N, C, H, W)`.
        p (float): probability of dropping an element, in [0, 1].
        block_size (int): side of each dropped square block (odd).
        inplace (bool): write the result into ``input``. Default: ``False``
        eps (float): added to the kept count in the rescale. Default: ``1e-06``
        training (bool): apply DropBlock; otherwise the identity. Default: ``True``
        generator (torch.Generator, optional): source of the seed. Default: ``None``
        seed (int, optional): explicit Philox seed (overrides ``generator``). Default: ``None``

    Shape:
        - Input: :math:`(N, C, H, W)`.
        - Output: :math:`(N, C, H, W)`, same shape as the input.

    Example::

        >>> import torch, lamina
        >>> y = lamina.functional.drop_block2d(torch.randn(2, 3, 8, 8), p=0.2, block_size=3, seed=0)
        >>> y.shape
        torch.Size([2, 3, 8, 8])
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


# =============================================================================
# fused
# =============================================================================
#
# Fused layers: one custom-op pair each, the forward returning what backward
# needs and nothing that backward can recompute (no pre-activation z, no
# dropout mask). CPU tensors run the composition of the reference ops
# (lamina.reference.fused); the kernels are lamina.kernels.fused.

from .reference import fused as ref_fused  # noqa: E402

__all__ += ["batch_norm_act", "group_norm_act", "add_layer_norm", "add_rms_norm", "bias_act", "dropout_add"]

_FUSED_NORM_ACTS = ("relu", "leaky_relu", "silu", "gelu", "identity")
_FUSED_BIAS_ACTS = ("relu", "gelu", "silu", "identity")


def _fu_check_act(act, allowed) -> None:
    if act not in allowed:
        raise ValueError(f"act must be one of {allowed}, got {act!r}")


def _fu_invertible(act: str, negative_slope: float) -> bool:
    """Activations whose input can be recovered from their output: what the
    in-place batch norm + activation needs (Rota Bulo et al., 2018)."""
    return act == "identity" or (act == "leaky_relu" and negative_slope > 0)


def _fu_no_seed(like: Tensor) -> Tensor:
    """The seed argument of an op that draws nothing (p = 0)."""
    return torch.zeros(1, dtype=torch.int64, device=like.device)


# --- batch_norm_act ----------------------------------------------------------------

@custom_op("lamina::batch_norm_act_forward", mutates_args=())
def _batch_norm_act_forward(
    x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], running_mean: Optional[Tensor],
    running_var: Optional[Tensor], training: bool, eps: float, act: str, negative_slope: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(y, mean, rstd, var) as batch_norm's forward, y = act(batch_norm(x))."""
    sdt = _bn_stat_dtype(x)
    if use_kernels(x):
        y, mean, rstd, var = kernels("fused").batch_norm_act_forward(
            x, weight, bias, running_mean, running_var, training, eps, act, negative_slope)
        return (y,) + _bn_stats_out(mean, rstd, var, sdt, training)
    if training:
        mean, var = _bn_stats(x)
    else:
        mean, var = running_mean.to(sdt, copy=True), running_var.to(sdt, copy=True)
    rstd = torch.rsqrt(var + eps)
    if x.numel() == 0:
        return torch.empty_like(x), mean, rstd, var
    y, _ = ref_fused.batch_norm_act_forward(
        to_numpy(x), to_numpy(weight), to_numpy(bias), to_numpy(mean), to_numpy(var), False, eps, act, negative_slope)
    # (eval mode of the reference with the statistics just computed: the same y)
    return _bn_keep_format(to_torch(y, x), x), mean, rstd, var


@_batch_norm_act_forward.register_fake
def _(x, weight, bias, running_mean, running_var, training, eps, act, negative_slope):
    c, sdt = x.shape[1], _bn_stat_dtype(x)
    return torch.empty_like(x), x.new_empty(c, dtype=sdt), x.new_empty(c, dtype=sdt), x.new_empty(c, dtype=sdt)


@custom_op("lamina::batch_norm_act_backward", mutates_args=())
def _batch_norm_act_backward(
    dy: Tensor, x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], mean: Tensor, rstd: Tensor,
    training: bool, act: str, negative_slope: float, from_output: bool, param_grads: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """(dx, dweight, dbias). ``x`` is the forward input, or with ``from_output``
    the in-place output y; either way z is recomputed, never read."""
    if use_kernels(x):
        dx, dw, db = kernels("fused").batch_norm_act_backward(
            dy, x, weight, bias, _f32(mean), _f32(rstd), training, act, negative_slope, param_grads, from_output)
        if dw is None:
            dw, db = torch.zeros_like(mean), torch.zeros_like(mean)
        return dx, _as(dw, mean.dtype), _as(db, mean.dtype)
    xn, w, b, mn, rs = to_numpy(x), to_numpy(weight), to_numpy(bias), to_numpy(mean), to_numpy(rstd)
    if from_output:
        dx, dw, db = ref_fused.batch_norm_act_backward_from_output(
            to_numpy(dy), xn, w, b, mn, rs, training, act, negative_slope)
    else:
        z = ref_norm.batch_norm_normalize(xn, mn, rs, w, b)  # recomputed from x and the statistics
        _, act_cache = ref_fused.act_forward(z, act, negative_slope)
        dx, dw, db = ref_fused.batch_norm_act_backward(to_numpy(dy), ((xn, w, mn, rs, training), act_cache))
    return _bn_keep_format(to_torch(dx, x), x), to_torch(dw, x, mean.dtype), to_torch(db, x, mean.dtype)


@_batch_norm_act_backward.register_fake
def _(dy, x, weight, bias, mean, rstd, training, act, negative_slope, from_output, param_grads):
    return torch.empty_like(x), torch.empty_like(mean), torch.empty_like(mean)


def _batch_norm_act_setup(ctx, inputs, output):
    x, weight, bias, _, _, training, _, act, negative_slope = inputs
    _, mean, rstd, _ = output
    ctx.save_for_backward(x, weight, bias, mean, rstd)  # x, not z: z is recomputed
    ctx.training, ctx.act, ctx.negative_slope = training, act, negative_slope


def _batch_norm_act_param_grads(ctx, dw, db, weight, bias):
    return (None if weight is None or not ctx.needs_input_grad[1] else _as(dw, weight.dtype),
            None if bias is None or not ctx.needs_input_grad[2] else _as(db, bias.dtype))


def _batch_norm_act_grad(ctx, dy, _dmean, _drstd, _dvar):
    x, weight, bias, mean, rstd = ctx.saved_tensors
    param_grads = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
    dx, dw, db = _batch_norm_act_backward(
        dy, x, weight, bias, mean, rstd, ctx.training, ctx.act, ctx.negative_slope, False, param_grads)
    return (dx, *_batch_norm_act_param_grads(ctx, dw, db, weight, bias), None, None, None, None, None, None)


_batch_norm_act_forward.register_autograd(_batch_norm_act_grad, setup_context=_batch_norm_act_setup)


@custom_op("lamina::batch_norm_act_inplace_forward", mutates_args=("x",))
def _batch_norm_act_inplace_forward(
    x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], running_mean: Optional[Tensor],
    running_var: Optional[Tensor], training: bool, eps: float, act: str, negative_slope: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """y = act(batch_norm(x)) written over x; returns (mean, rstd, var)."""
    sdt = _bn_stat_dtype(x)
    if use_kernels(x):
        _, mean, rstd, var = kernels("fused").batch_norm_act_forward(
            x, weight, bias, running_mean, running_var, training, eps, act, negative_slope, out=x)
        return _bn_stats_out(mean, rstd, var, sdt, training)
    y, mean, rstd, var = _batch_norm_act_forward(x, weight, bias, running_mean, running_var, training, eps, act,
                                                 negative_slope)
    x.copy_(y)
    return mean, rstd, var


@_batch_norm_act_inplace_forward.register_fake
def _(x, weight, bias, running_mean, running_var, training, eps, act, negative_slope):
    c, sdt = x.shape[1], _bn_stat_dtype(x)
    return x.new_empty(c, dtype=sdt), x.new_empty(c, dtype=sdt), x.new_empty(c, dtype=sdt)


class _BatchNormActInplace(torch.autograd.Function):
    """In-Place Activated BatchNorm (Rota Bulo, Porzi, Kontschieder, "In-Place
    Activated BatchNorm for Memory-Optimized Training of DNNs", CVPR 2018):
    y overwrites x, and backward keeps only y, the statistics and the
    parameters, recovering xhat = (act^-1(y) - bias) / weight."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, training, eps, act, negative_slope):
        mean, rstd, var = _batch_norm_act_inplace_forward(
            x, weight, bias, running_mean, running_var, training, eps, act, negative_slope)
        ctx.mark_dirty(x)
        ctx.mark_non_differentiable(mean, var)
        ctx.save_for_backward(x, weight, bias, mean, rstd)  # x holds y now
        ctx.training, ctx.act, ctx.negative_slope = training, act, negative_slope
        return x, mean, var

    @staticmethod
    def backward(ctx, dy, _dmean, _dvar):
        y, weight, bias, mean, rstd = ctx.saved_tensors
        param_grads = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        dx, dw, db = _batch_norm_act_backward(
            dy, y, weight, bias, mean, rstd, ctx.training, ctx.act, ctx.negative_slope, True, param_grads)
        return (dx, *_batch_norm_act_param_grads(ctx, dw, db, weight, bias), None, None, None, None, None, None)


def batch_norm_act(
    input: Tensor,
    running_mean: Optional[Tensor],
    running_var: Optional[Tensor],
    weight: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    act: str = "relu",
    negative_slope: float = 0.01,
    inplace: bool = False,
) -> Tensor:
    r"""batch_norm_act(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5, act='relu', negative_slope=0.01, inplace=False) -> Tensor

    Batch normalization (Ioffe & Szegedy, 2015) followed by an activation, in
    one pass after the statistics:

    .. math:: y = \mathrm{act}\left(\frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} * \gamma + \beta\right)

    See :func:`batch_norm` for the statistics and the running update.
    Backward recomputes the activation's input from x and the statistics;
    nothing else is saved.

    ``inplace=True`` with an invertible activation ('identity', or
    'leaky_relu' with ``negative_slope > 0``) writes y over ``input`` and
    saves only y, the statistics and the parameters (In-Place Activated
    BatchNorm, Rota Bulo et al., 2018); the weight must then have no zero
    entry. With another activation, ``inplace=True`` computes out of place
    and copies y into ``input``.

    Args:
        input (Tensor): the input, channels in dim 1.
        running_mean (Tensor, optional): per-channel running mean :math:`(C)`.
        running_var (Tensor, optional): per-channel running variance :math:`(C)`.
        weight (Tensor, optional): per-channel scale :math:`\gamma`. Default: ``None``
        bias (Tensor, optional): per-channel shift :math:`\beta`. Default: ``None``
        training (bool): normalize with the batch statistics. Default: ``False``
        momentum (float): weight of the batch statistic in the running update. Default: ``0.1``
        eps (float): added to the variance for stability. Default: ``1e-5``
        act (str): 'relu', 'leaky_relu', 'silu', 'gelu' or 'identity'. Default: ``'relu'``
        negative_slope (float): the slope of 'leaky_relu' for negative inputs. Default: ``0.01``
        inplace (bool): write the result into ``input``. Default: ``False``

    Shape:
        - Input: :math:`(N, C)` or :math:`(N, C, *)`.
        - Output: same shape as the input.

    Example::

        >>> import torch, lamina
        >>> x = torch.randn(4, 3, 2, 2)
        >>> y = lamina.functional.batch_norm_act(x, torch.zeros(3), torch.ones(3), training=True, act='silu')
        >>> y.shape
        torch.Size([4, 3, 2, 2])
    """
    validate.floating(input)
    _fu_check_act(act, _FUSED_NORM_ACTS)
    if input.dim() < 2:
        raise ValueError(f"batch_norm_act: expected input with at least 2 dimensions (N, C, *), got {input.dim()}D input")
    _bn_check_params(input, running_mean, running_var, weight, bias)
    if training:
        if input.numel() // max(input.shape[1], 1) == 1 and input.shape[1] > 0:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {input.size()}")
        if eps <= 0.0:
            raise ValueError(f"batch_norm eps must be positive during training, but got {eps}")
    elif running_mean is None or running_var is None:
        raise RuntimeError("running_mean and running_var must be defined in evaluation mode")
    if not inplace and torch_math(input):  # inside torch.compile on a GPU (under_compile.py)
        y = TF.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)
        return under_compile.activation(y, act, negative_slope)
    args = (weight, bias, running_mean, running_var, bool(training), float(eps), act, float(negative_slope))
    if inplace and _fu_invertible(act, negative_slope) and input.numel() > 0:
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (input, weight, bias)):
            y, mean, var = _BatchNormActInplace.apply(input, *args)
        else:
            mean, _, var = _batch_norm_act_inplace_forward(input, *args)
            y = input
    else:
        original = _original_for_inplace(input, inplace)
        y, mean, _, var = _batch_norm_act_forward(original, *args)
        if inplace:
            y = _write_inplace(input, y)
    if training and input.numel() > 0:
        _bn_update_running_stats(running_mean, running_var, mean, var, input.numel() // input.shape[1], momentum)
    if act == "relu":
        _mark_relu_output(y)
    return y


# --- group_norm_act ----------------------------------------------------------------

@custom_op("lamina::group_norm_act_forward", mutates_args=())
def _group_norm_act_forward(
    x: Tensor, num_groups: int, weight: Optional[Tensor], bias: Optional[Tensor], eps: float, act: str,
    negative_slope: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """(y, mean, rstd), y = act(group_norm(x)), statistics flat (N*G,)."""
    if use_kernels(x):
        y, mean, rstd = kernels("fused").group_norm_act_forward(
            x, num_groups, None if weight is None else weight.contiguous(),
            None if bias is None else bias.contiguous(), eps, act, negative_slope)
        return y, mean.to(_rn_stat_dtype(x)), rstd.to(_rn_stat_dtype(x))
    y, ((_, mean, rstd, _, _), _) = ref_fused.group_norm_act_forward(
        to_numpy(x), num_groups, to_numpy(weight), to_numpy(bias), eps, act, negative_slope)
    return _rn_like_memory_format(to_torch(y, x), x), _rn_stats_to_torch(mean, x), _rn_stats_to_torch(rstd, x)


@_group_norm_act_forward.register_fake
def _(x, num_groups, weight, bias, eps, act, negative_slope):
    stat, m = _rn_stat_dtype(x), x.shape[0] * num_groups
    return torch.empty_like(x), x.new_empty(m, dtype=stat), x.new_empty(m, dtype=stat)


@custom_op("lamina::group_norm_act_backward", mutates_args=())
def _group_norm_act_backward(
    dy: Tensor, x: Tensor, num_groups: int, weight: Optional[Tensor], bias: Optional[Tensor], mean: Tensor,
    rstd: Tensor, eps: float, act: str, negative_slope: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """(dx, dweight, dbias), empty tensors for a missing weight / bias."""
    pdtype = weight.dtype if weight is not None else x.dtype
    if use_kernels(x):
        dx, dw, db = kernels("fused").group_norm_act_backward(
            dy, x, num_groups, None if weight is None else weight.contiguous(),
            None if bias is None else bias.contiguous(), _f32(mean), _f32(rstd), act, negative_slope)
        empty = x.new_empty(0, dtype=pdtype)
        return dx, _as(dw, pdtype) if weight is not None else empty, _as(db, pdtype) if bias is not None else empty.clone()
    # the reference forward again (statistics identical, z recomputed), then its backward
    _, cache = ref_fused.group_norm_act_forward(
        to_numpy(x), num_groups, to_numpy(weight), to_numpy(bias), eps, act, negative_slope)
    dx, dw, db = ref_fused.group_norm_act_backward(to_numpy(dy), cache)
    dbias = to_torch(db, x, pdtype) if bias is not None else x.new_empty(0, dtype=pdtype)
    return _rn_like_memory_format(to_torch(dx, x), x), _rn_param_grad_to_torch(dw, weight, x), dbias


@_group_norm_act_backward.register_fake
def _(dy, x, num_groups, weight, bias, mean, rstd, eps, act, negative_slope):
    pdtype = weight.dtype if weight is not None else x.dtype
    c = x.shape[1]
    return (torch.empty_like(x), x.new_empty(c if weight is not None else 0, dtype=pdtype),
            x.new_empty(c if bias is not None else 0, dtype=pdtype))


def _group_norm_act_setup(ctx, inputs, output):
    x, num_groups, weight, bias, eps, act, negative_slope = inputs
    _, mean, rstd = output
    ctx.args = (num_groups, eps, act, negative_slope)
    ctx.save_for_backward(x, weight, bias, mean, rstd)


def _group_norm_act_grad(ctx, dy, _dmean, _drstd):
    x, weight, bias, mean, rstd = ctx.saved_tensors
    num_groups, eps, act, negative_slope = ctx.args
    dx, dw, db = _group_norm_act_backward(dy, x, num_groups, weight, bias, mean, rstd, eps, act, negative_slope)
    return dx, None, dw if weight is not None else None, db if bias is not None else None, None, None, None


_group_norm_act_forward.register_autograd(_group_norm_act_grad, setup_context=_group_norm_act_setup)


def group_norm_act(
    input: Tensor, num_groups: int, weight: Optional[Tensor] = None, bias: Optional[Tensor] = None,
    eps: float = 1e-5, act: str = "silu", negative_slope: float = 0.01,
) -> Tensor:
    r"""group_norm_act(input, num_groups, weight=None, bias=None, eps=1e-5, act='silu', negative_slope=0.01) -> Tensor

    Group normalization (Wu & He, 2018) followed by an activation:

    .. math:: y = \mathrm{act}\left(\frac{x - \mathrm{E}_g[x]}{\sqrt{\mathrm{Var}_g[x] + \epsilon}} * \gamma_c + \beta_c\right)

    Group norm's statistics pass, then one normalize+activation pass; backward
    recomputes the activation's input. ``act`` as in :func:`batch_norm_act`.

    Args:
        input (Tensor): the input :math:`(N, C, *)`.
        num_groups (int): number of groups; must divide C.
        weight (Tensor, optional): per-channel scale :math:`\gamma`. Default: ``None``
        bias (Tensor, optional): per-channel shift :math:`\beta`. Default: ``None``
        eps (float): added to the variance for stability. Default: ``1e-5``
        act (str): 'silu', 'relu', 'leaky_relu', 'gelu' or 'identity'. Default: ``'silu'``
        negative_slope (float): the slope of 'leaky_relu' for negative inputs. Default: ``0.01``

    Shape:
        - Input: :math:`(N, C, *)`.
        - Output: same shape as the input.

    Example::

        >>> import torch, lamina
        >>> y = lamina.functional.group_norm_act(torch.randn(2, 4, 3, 3), 2, act='relu')
        >>> y.shape
        torch.Size([2, 4, 3, 3])
    """
    validate.floating(input)
    _fu_check_act(act, _FUSED_NORM_ACTS)
    if input.dim() < 2:
        raise RuntimeError(f"Expected at least 2 dimensions for input tensor but received {input.dim()}")
    c = input.shape[1]
    if not isinstance(num_groups, int) or num_groups <= 0 or c % num_groups:
        raise RuntimeError(
            "Expected number of channels in input to be divisible by num_groups, but got input of shape "
            f"{list(input.shape)} and num_groups={num_groups}")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and (p.dim() != 1 or p.numel() != c):
            raise RuntimeError(
                f"Expected {name} to be a vector of size equal to the number of channels in input, but got "
                f"{name} of shape {list(p.shape)} and input of shape {list(input.shape)}")
    validate.same_device(input, weight=weight, bias=bias)
    if torch_math(input):  # inside torch.compile on a GPU (under_compile.py)
        return under_compile.activation(TF.group_norm(input, num_groups, weight, bias, eps), act, negative_slope)
    y, _, _ = _group_norm_act_forward(input, num_groups, weight, bias, float(eps), act, float(negative_slope))
    if act == "relu":
        _mark_relu_output(y)
    return y


def group_norm_silu(
    input: Tensor, num_groups: int, weight: Optional[Tensor] = None, bias: Optional[Tensor] = None, eps: float = 1e-5,
) -> Tensor:
    r"""group_norm_silu(input, num_groups, weight=None, bias=None, eps=1e-5) -> Tensor

    :func:`group_norm_act` with ``act='silu'`` (the GroupNorm + SiLU of
    diffusion U-Nets; the name the benchmark harness looks up):

    .. math:: y = \mathrm{SiLU}\left(\frac{x - \mathrm{E}_g[x]}{\sqrt{\mathrm{Var}_g[x] + \epsilon}} * \gamma_c + \beta_c\right)

    Args:
        input (Tensor): the input :math:`(N, C, *)`.
        num_groups (int): number of groups; must divide C.
        weight (Tensor, optional): per-channel scale :math:`\gamma`. Default: ``None``
        bias (Tensor, optional): per-channel shift :math:`\beta`. Default: ``None``
        eps (float): added to the variance for stability. Default: ``1e-5``

    Shape:
        - Input: :math:`(N, C, *)`.
        - Output: same shape as the input.

    Example::

        >>> import torch, lamina
        >>> y = lamina.functional.group_norm_silu(torch.randn(1, 8, 4, 4), 4)
        >>> y.shape
        torch.Size([1, 8, 4, 4])
    """
    return group_norm_act(input, num_groups, weight, bias, eps, act="silu")


__all__ += ["group_norm_silu"]


# --- add_layer_norm / add_rms_norm -----------------------------------------------------

@custom_op("lamina::add_norm_forward", mutates_args=())
def _add_norm_forward(
    x: Tensor, residual: Tensor, normalized_shape: _List[int], weight: Optional[Tensor], bias: Optional[Tensor],
    eps: float, p: float, seed: Tensor, rms: bool, keep_sum: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(y, s, mean, rstd): s = dropout(x) + residual (p = 0: no dropout),
    y = layer_norm(s) (rms: rms_norm(s)); x and residual contiguous; mean
    empty for RMS. ``keep_sum`` (prenorm: s is returned): s is written and
    saved for backward; otherwise s is an empty tensor, never written, and
    backward rebuilds it from x and residual (see _add_norm_setup)."""
    if use_kernels(x):
        y, s, mean, rstd = kernels("fused").add_norm_forward(
            x, residual, normalized_shape, weight, bias, eps, p, seed, 0, rms, keep_sum)
        stat = _rn_stat_dtype(x)
        return y, s, mean.to(stat), rstd.to(stat)
    xn, rn, w = to_numpy(x), to_numpy(residual), to_numpy(weight)
    seed_int = int(seed.item()) if p > 0 else 0
    if rms:
        y, s, (_, (_, rstd, _, _)) = ref_fused.add_rms_norm_forward(xn, rn, normalized_shape, w, eps, p, seed_int)
        mean = x.new_empty(0, dtype=_rn_stat_dtype(x))
    else:
        y, s, (_, (_, mean, rstd, _, _, _)) = ref_fused.add_layer_norm_forward(
            xn, rn, normalized_shape, w, to_numpy(bias), eps, p, seed_int)
        mean = _rn_stats_to_torch(mean, x)
    return to_torch(y, x), to_torch(s, x) if keep_sum else x.new_empty(0), mean, _rn_stats_to_torch(rstd, x)


@_add_norm_forward.register_fake
def _(x, residual, normalized_shape, weight, bias, eps, p, seed, rms, keep_sum):
    m, stat = _rn_lead_numel(x, normalized_shape), _rn_stat_dtype(x)
    return (torch.empty_like(x), torch.empty_like(x) if keep_sum else x.new_empty(0),
            x.new_empty(0 if rms else m, dtype=stat), x.new_empty(m, dtype=stat))


@custom_op("lamina::add_norm_backward", mutates_args=())
def _add_norm_backward(
    dy: Tensor, ds_out: Optional[Tensor], s: Optional[Tensor], x: Optional[Tensor], residual: Optional[Tensor],
    normalized_shape: _List[int], weight: Optional[Tensor], mean: Tensor, rstd: Tensor, has_bias: bool, p: float,
    seed: Tensor, rms: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(ds, dx, dweight, dbias): ds = dresidual; dx = the masked ds (empty
    when p = 0: dx is ds then); empty tensors for a missing weight / bias.
    Either the saved ``s``, or (s None) the forward's ``x`` and ``residual``
    to rebuild it from, bit for bit as the forward made it."""
    like = s if s is not None else x  # (dy may have any strides; the gradients are contiguous like s and x)
    pdtype = weight.dtype if weight is not None else like.dtype
    empty = like.new_empty(0, dtype=pdtype)
    if use_kernels(like):
        ds, dx, dw, db = kernels("fused").add_norm_backward(
            dy, ds_out, s, normalized_shape, weight, _f32(mean), _f32(rstd), has_bias, p, seed, 0, rms, x, residual)
        return (ds, dx if dx is not None else like.new_empty(0), _as(dw, pdtype) if dw is not None else empty,
                _as(db, pdtype) if db is not None else empty.clone())
    ndim = len(normalized_shape)
    seed_int = int(seed.item()) if p > 0 else 0
    if s is None:  # the forward's s: its dropout_add of the same x, residual and seed, rounded to s's dtype
        s_full, _ = ref_fused.dropout_add_forward(to_numpy(x), to_numpy(residual), p, seed_int)
        sn = to_numpy(to_torch(s_full, x))
    else:
        sn = to_numpy(s)
    w = to_numpy(weight)
    drop_cache = (p, seed_int, 0)
    rstd_n = _row_norm_cache_stats(like, normalized_shape, rstd)
    dsn = to_numpy(ds_out) if ds_out is not None else None
    if rms:
        dx, dres, dw = ref_fused.add_rms_norm_backward(to_numpy(dy), (drop_cache, (sn, rstd_n, w, ndim)), dsn)
        db = None
    else:
        ln_cache = (sn, _row_norm_cache_stats(like, normalized_shape, mean), rstd_n, w, has_bias, ndim)
        dx, dres, dw, db = ref_fused.add_layer_norm_backward(to_numpy(dy), (drop_cache, ln_cache), dsn)
    return (to_torch(dres, like), to_torch(dx, like) if p > 0 else like.new_empty(0),
            _rn_param_grad_to_torch(dw, weight, like), to_torch(db, like, pdtype) if has_bias else empty.clone())


@_add_norm_backward.register_fake
def _(dy, ds_out, s, x, residual, normalized_shape, weight, mean, rstd, has_bias, p, seed, rms):
    like = s if s is not None else x
    pdtype = weight.dtype if weight is not None else like.dtype
    return (torch.empty_like(like), torch.empty_like(like) if p > 0 else like.new_empty(0),
            like.new_empty(normalized_shape if weight is not None else 0, dtype=pdtype),
            like.new_empty(normalized_shape if has_bias else 0, dtype=pdtype))


def _add_norm_setup(ctx, inputs, output):
    x, residual, normalized_shape, weight, bias, _, p, seed, rms, keep_sum = inputs
    _, s, mean, rstd = output
    ctx.args = (normalized_shape, bias is not None, p, rms)
    # Without prenorm s is recomputed, not saved: the forward then moves 3n
    # values instead of 4n (s is not written) and backward 4n instead of 3n
    # (x and residual read where s was), the same total; and x and residual
    # are the caller's tensors (the contiguous ones this op received), alive
    # in the network anyway, where a saved s is n of memory kept for backward
    # alone. With prenorm s is an output, written anyway: backward reads it.
    # No mask either way: backward regenerates it from the seed.
    if keep_sum:
        ctx.save_for_backward(s, None, None, weight, mean, rstd, seed)
    else:
        ctx.save_for_backward(None, x, residual, weight, mean, rstd, seed)


def _add_norm_grad(ctx, dy, ds_out, _dmean, _drstd):
    s, x, residual, weight, mean, rstd, seed = ctx.saved_tensors
    normalized_shape, has_bias, p, rms = ctx.args
    if s is None:  # s was not returned (the op's s is an empty stand-in): no gradient reaches it, whatever
        ds_out = None  # autograd passes for it (under torch.compile an empty tensor of zeros)
    if dy is None:
        dy = torch.zeros_like(s if s is not None else x)
    ds, dx, dw, db = _add_norm_backward(dy, ds_out, s, x, residual, normalized_shape, weight, mean, rstd, has_bias, p,
                                        seed, rms)
    return (dx if p > 0 else ds, ds, None, dw if weight is not None else None, db if has_bias else None,
            None, None, None, None, None)


_add_norm_forward.register_autograd(_add_norm_grad, setup_context=_add_norm_setup)


def _add_norm(x, residual, normalized_shape, weight, bias, eps, dropout_p, training, prenorm, seed, rms):
    validate.tensor(residual, "residual")
    shape = _check_normalized_shape(x, normalized_shape, weight, bias)
    if residual.shape != x.shape:
        raise RuntimeError(f"residual must have the shape of x {list(x.shape)}, got {list(residual.shape)}")
    if residual.dtype != x.dtype:
        raise RuntimeError(f"residual must have the dtype of x ({x.dtype}), got {residual.dtype}")
    validate.same_device(x, residual=residual)
    _dropout_check_p(dropout_p)
    p = float(dropout_p) if training else 0.0
    if (seed is None or p == 0.0) and torch_math(x):  # inside torch.compile on a GPU (under_compile.py)
        norm = ((lambda t: TF.rms_norm(t, shape, weight, eps)) if rms
                else (lambda t: TF.layer_norm(t, shape, weight, bias, eps)))
        return under_compile.add_norm(norm, x, residual, p, prenorm)
    seed_t = _seed_for(seed, None, x) if p > 0 else _fu_no_seed(x)
    # the dropout stream runs in x's row-major order (contiguous x)
    y, s, _, _ = _add_norm_forward(x.contiguous(), residual.contiguous(), shape, weight, bias, float(eps), p, seed_t, rms,
                                   bool(prenorm))
    return (y, s) if prenorm else y


def add_layer_norm(
    x: Tensor, residual: Tensor, normalized_shape: _List[int], weight: Optional[Tensor] = None,
    bias: Optional[Tensor] = None, eps: float = 1e-5, dropout_p: float = 0.0, training: bool = True,
    prenorm: bool = False, *, seed: Optional[int] = None,
):
    r"""add_layer_norm(x, residual, normalized_shape, weight=None, bias=None, eps=1e-5, dropout_p=0.0, training=True, prenorm=False, *, seed=None)

    Residual add (with dropout on the branch) and layer normalization (Ba et
    al., 2016) in one pass over rows:

    .. math:: s = \mathrm{dropout}(x) + \mathrm{residual}, \quad
              y = \frac{s - \mathrm{E}[s]}{\sqrt{\mathrm{Var}[s] + \epsilon}} * \gamma + \beta

    Returns y, or (y, s) with ``prenorm=True`` (s is the next block's
    residual). The dropout mask is :func:`dropout`'s for the same ``seed`` on
    a contiguous x (``lamina.rng.keep_mask(seed, 0, x.shape, dropout_p)``);
    ``seed=None`` draws one from torch's default generator. Backward keeps
    the row statistics, the seed (no mask) and x and residual themselves
    (contiguous ones are not copied), from which it rebuilds s, which the
    forward does not write; with ``prenorm`` it keeps s instead.

    Args:
        x (Tensor): the branch output, :math:`(*, \text{normalized\_shape})`.
        residual (Tensor): the residual stream, same shape as ``x``.
        normalized_shape (list of int): the trailing shape to normalize over.
        weight (Tensor, optional): elementwise scale :math:`\gamma`. Default: ``None``
        bias (Tensor, optional): elementwise shift :math:`\beta`. Default: ``None``
        eps (float): added to the variance for stability. Default: ``1e-5``
        dropout_p (float): dropout probability on ``x``. Default: ``0.0``
        training (bool): apply the dropout. Default: ``True``
        prenorm (bool): also return the sum s. Default: ``False``
        seed (int, optional): explicit Philox seed for the dropout mask. Default: ``None``

    Shape:
        - x, residual: :math:`(*, \text{normalized\_shape})`.
        - Output: y of the same shape (and s, same shape, with ``prenorm``).

    Example::

        >>> import torch, lamina
        >>> x, r = torch.randn(2, 4, 8), torch.randn(2, 4, 8)
        >>> y, s = lamina.functional.add_layer_norm(x, r, [8], prenorm=True)
        >>> y.shape, s.shape
        (torch.Size([2, 4, 8]), torch.Size([2, 4, 8]))
    """
    return _add_norm(x, residual, normalized_shape, weight, bias, eps, dropout_p, training, prenorm, seed, rms=False)


def add_rms_norm(
    x: Tensor, residual: Tensor, normalized_shape: _List[int], weight: Optional[Tensor] = None,
    eps: Optional[float] = None, dropout_p: float = 0.0, training: bool = True, prenorm: bool = False, *,
    seed: Optional[int] = None,
):
    r"""add_rms_norm(x, residual, normalized_shape, weight=None, eps=None, dropout_p=0.0, training=True, prenorm=False, *, seed=None)

    Residual add (with dropout on the branch) and RMS normalization (Zhang &
    Sennrich, 2019) in one pass over rows:

    .. math:: s = \mathrm{dropout}(x) + \mathrm{residual}, \quad
              y = \frac{s}{\sqrt{\mathrm{E}[s^2] + \epsilon}} * \gamma

    As :func:`add_layer_norm` (``eps=None``: the machine epsilon of the
    computation dtype, as :func:`rms_norm`).

    Args:
        x (Tensor): the branch output, :math:`(*, \text{normalized\_shape})`.
        residual (Tensor): the residual stream, same shape as ``x``.
        normalized_shape (list of int): the trailing shape to normalize over.
        weight (Tensor, optional): elementwise scale :math:`\gamma`. Default: ``None``
        eps (float, optional): added to the mean square. Default: ``None``
        dropout_p (float): dropout probability on ``x``. Default: ``0.0``
        training (bool): apply the dropout. Default: ``True``
        prenorm (bool): also return the sum s. Default: ``False``
        seed (int, optional): explicit Philox seed for the dropout mask. Default: ``None``

    Shape:
        - x, residual: :math:`(*, \text{normalized\_shape})`.
        - Output: y of the same shape (and s, same shape, with ``prenorm``).

    Example::

        >>> import torch, lamina
        >>> x, r = torch.randn(3, 8), torch.randn(3, 8)
        >>> y = lamina.functional.add_rms_norm(x, r, [8], torch.ones(8), dropout_p=0.1, seed=0)
        >>> y.shape
        torch.Size([3, 8])
    """
    if eps is None:
        eps = torch.finfo(torch.float64 if x.dtype == torch.float64 else torch.float32).eps
    return _add_norm(x, residual, normalized_shape, weight, None, eps, dropout_p, training, prenorm, seed, rms=True)


# --- bias_act ----------------------------------------------------------------------

@custom_op("lamina::bias_act_forward", mutates_args=())
def _bias_act_forward(x: Tensor, bias: Tensor, act: str, approximate: str) -> Tensor:
    if use_kernels(x):
        return kernels("fused").bias_act_forward(x, bias, act, approximate)
    y, _ = ref_fused.bias_act_forward(to_numpy(x), to_numpy(bias), act, approximate)
    return to_torch(y, x)


@_bias_act_forward.register_fake
def _(x, bias, act, approximate):
    return torch.empty_like(x)


@custom_op("lamina::bias_act_backward", mutates_args=())
def _bias_act_backward(dy: Tensor, x: Tensor, bias: Tensor, act: str, approximate: str) -> tuple[Tensor, Tensor]:
    """(dx, dbias); act'(x + bias) recomputed from the saved x."""
    if use_kernels(x):
        dx, db = kernels("fused").bias_act_backward(dy, x, bias, act, approximate)
        return dx, _as(db, bias.dtype)
    xn, bn = to_numpy(x), to_numpy(bias)
    _, cache = ref_fused.bias_act_forward(xn, bn, act, approximate)
    dx, db = ref_fused.bias_act_backward(to_numpy(dy), cache)
    return to_torch(dx, x), to_torch(db, bias)


@_bias_act_backward.register_fake
def _(dy, x, bias, act, approximate):
    return torch.empty_like(x), torch.empty_like(bias)


def _bias_act_setup(ctx, inputs, output):
    x, bias, ctx.act, ctx.approximate = inputs
    ctx.save_for_backward(x, bias)


def _bias_act_grad(ctx, dy):
    x, bias = ctx.saved_tensors
    dx, db = _bias_act_backward(dy.contiguous(), x, bias, ctx.act, ctx.approximate)
    return dx, db, None, None


_bias_act_forward.register_autograd(_bias_act_grad, setup_context=_bias_act_setup)


def bias_act(x: Tensor, bias: Tensor, act: str = "gelu", approximate: str = "none") -> Tensor:
    r"""bias_act(x, bias, act='gelu', approximate='none') -> Tensor

    Bias add and activation in one pass, as after a Linear without its bias:

    .. math:: y = \mathrm{act}(x + b)

    ``bias`` (N,) is added along the last dim of x (..., N). One pass
    forward; backward gives dx and dbias (float32 per-program partial sums,
    then one deterministic sum).

    Args:
        x (Tensor): the input :math:`(*, N)`.
        bias (Tensor): the bias :math:`(N)`.
        act (str): 'relu', 'gelu', 'silu' or 'identity'. Default: ``'gelu'``
        approximate (str): for 'gelu', ``'none'`` or ``'tanh'``. Default: ``'none'``

    Shape:
        - x: :math:`(*, N)`; bias: :math:`(N)`.
        - Output: :math:`(*, N)`, same shape as x.

    Example::

        >>> import torch, lamina
        >>> y = lamina.functional.bias_act(torch.randn(2, 5), torch.zeros(5), act='relu')
        >>> y.shape
        torch.Size([2, 5])
    """
    validate.floating(x, "x")
    validate.floating(bias, "bias")
    _fu_check_act(act, _FUSED_BIAS_ACTS)
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    if x.dim() < 1 or bias.dim() != 1 or bias.shape[0] != x.shape[-1]:
        raise RuntimeError(f"bias must have shape ({x.shape[-1] if x.dim() else '?'},) to match the last dim of x "
                           f"{list(x.shape)}, got {list(bias.shape)}")
    if bias.dtype != x.dtype:
        raise RuntimeError(f"bias must have the dtype of x ({x.dtype}), got {bias.dtype}")
    validate.same_device(x, bias=bias)
    if torch_math(x):  # inside torch.compile on a GPU (under_compile.py)
        return under_compile.activation(x + bias, act, approximate=approximate)
    return _bias_act_forward(x.contiguous(), bias.contiguous(), act, approximate)


# --- dropout_add -------------------------------------------------------------------

@custom_op("lamina::dropout_add_forward", mutates_args=())
def _dropout_add_forward(x: Tensor, residual: Tensor, p: float, seed: Tensor, offset: int) -> Tensor:
    """dropout(x) + residual, the mask along x's memory order (as dropout's)."""
    if use_kernels(x):
        return kernels("fused").dropout_add_forward(x, residual, p, seed, offset)
    y, _ = ref_fused.dropout_add_forward(to_numpy(x), to_numpy(residual), p, int(seed.item()), offset)
    return _dropout_like(x).copy_(to_torch(y, x))


@_dropout_add_forward.register_fake
def _(x, residual, p, seed, offset):
    return _dropout_like(x)


def _dropout_add_setup(ctx, inputs, output):
    _, _, ctx.p, seed, ctx.offset = inputs
    ctx.save_for_backward(seed)  # the mask is regenerated
    ctx.stride = output.stride()


def _dropout_add_grad(ctx, dy):
    (seed,) = ctx.saved_tensors
    dx = _dropout_backward(_with_strides(dy, ctx.stride), ctx.p, seed, ctx.offset)
    return dx, dy, None, None, None


_dropout_add_forward.register_autograd(_dropout_add_grad, setup_context=_dropout_add_setup)


def dropout_add(
    x: Tensor, residual: Tensor, p: float = 0.5, training: bool = True, *,
    generator: Optional[torch.Generator] = None, seed: Optional[int] = None,
) -> Tensor:
    r"""dropout_add(x, residual, p=0.5, training=True, *, generator=None, seed=None) -> Tensor

    Dropout (Srivastava et al., 2014) on a branch plus the residual, in one pass:

    .. math:: y = \frac{m \odot x}{1 - p} + \mathrm{residual}

    the mask :math:`m` exactly :func:`dropout`'s for the same seed; backward
    regenerates it (the seed is all that is saved). Not training or ``p = 0``:
    x + residual.

    Args:
        x (Tensor): the branch output.
        residual (Tensor): the residual stream, same shape as ``x``.
        p (float): probability of zeroing an element of ``x``. Default: ``0.5``
        training (bool): apply dropout. Default: ``True``
        generator (torch.Generator, optional): source of the seed. Default: ``None``
        seed (int, optional): explicit Philox seed (overrides ``generator``). Default: ``None``

    Shape:
        - x, residual: :math:`(*)`, same shape.
        - Output: :math:`(*)`, same shape.

    Example::

        >>> import torch, lamina
        >>> y = lamina.functional.dropout_add(torch.randn(4, 8), torch.randn(4, 8), p=0.1, seed=0)
        >>> y.shape
        torch.Size([4, 8])
    """
    validate.tensor(x, "x")
    validate.tensor(residual, "residual")
    _dropout_check_p(p)
    if residual.shape != x.shape:
        raise RuntimeError(f"residual must have the shape of x {list(x.shape)}, got {list(residual.shape)}")
    validate.same_device(x, residual=residual)
    if not training or p == 0 or x.numel() == 0:
        return x + residual
    if not x.is_floating_point() or residual.dtype != x.dtype:
        raise RuntimeError(f"dropout_add: expected floating-point x and residual of one dtype, got {x.dtype} and {residual.dtype}")
    if seed is None and generator is None and torch_math(x):  # inside torch.compile on a GPU (under_compile.py)
        return TF.dropout(x, p, training) + residual
    return _dropout_add_forward(x, residual, float(p), _seed_for(seed, generator, x), 0)


# TorchScript: scripting code that calls these functionals compiles PyTorch's
# ops in their place (lamina/torchscript.py)
def _attach_torchscript_twins():
    import sys

    from . import torchscript

    torchscript.attach(sys.modules[__name__])


_attach_torchscript_twins()
