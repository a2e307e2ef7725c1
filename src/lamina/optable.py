"""The one table of ops: it drives the op tests (tests/test_ops.py) and
``lamina check``.

Each OpCase names an op, lamina's call, PyTorch's call with the same
arguments, the shapes to try and the keyword arguments. ``params`` makes the
extra tensors the op takes (weight, bias, ...), which get gradients too.
The test runs every case x shape x kwargs x dtype, forward and backward,
against PyTorch autograd (CPU reference) and, under the Triton interpreter,
the kernels against the reference. Add a layer here and it is tested
everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as TF

from . import functional as F

# Shapes: 1 element, primes, non-powers of two, wider than a kernel block,
# empty batch, 4-D (also run channels_last and as a non-contiguous view).
ELEMENTWISE_SHAPES = [(), (1,), (7,), (13, 17), (3, 5, 4099), (0, 3), (2, 3, 5, 7)]
# Small odd shapes for the Triton interpreter, which is slow.
ELEMENTWISE_SHAPES_SMALL = [(1,), (13, 17), (2, 3, 5, 7)]


def no_params(shape, dtype):
    return []


@dataclass
class OpCase:
    name: str
    lamina: Callable  # lamina(x, *params, **kwargs) -> Tensor (or the first output is compared)
    torch: Callable  # torch(x, *params, **kwargs), the oracle
    shapes: list
    small_shapes: list  # for the interpreter
    kwargs: list = field(default_factory=lambda: [{}])
    params: Callable = no_params  # (input shape, dtype) -> list of tensors
    # shapes x the reduction: the number of input elements summed into each
    # parameter gradient element, for the tolerance (None: no reduction)
    reduce_len: Callable | None = None
    # some ops (dropout) are random: these compare only under a fixed seed,
    # and the test sets lamina's seed before both calls
    gradcheck: bool = True
    make_input: Callable | None = None  # (shape, dtype) -> tensor, else randn


# ---- activation helpers ---------------------------------------------------


def _prelu_channels(shape, per_channel):
    return shape[1] if per_channel and len(shape) >= 2 else 1


def _prelu_weight(per_channel):
    """PReLU's weight: one slope, or one per channel (dim 1), in (0.05, 0.55)."""
    def make(shape, dtype):
        return [(0.05 + 0.5 * torch.rand(_prelu_channels(shape, per_channel), dtype=torch.float64)).to(dtype)]
    return make


def _prelu_reduce_len(per_channel):
    """Input elements summed into each slope's gradient."""
    def length(shape, kwargs):
        return torch.Size(shape).numel() // _prelu_channels(shape, per_channel)
    return length


def _unsaturated_input(shape, dtype):
    """randn / 2: backward from a saved 16-bit output of tanh, as in PyTorch,
    loses 1 - y^2 where |y| nears 1 (a bfloat16 y keeps 8 bits), which the
    float64 oracle of the table would flag; saturated inputs are compared
    with PyTorch's own 16-bit results in tests/test_activation.py instead."""
    return (0.5 * torch.randn(shape, dtype=torch.float64)).to(dtype)


def _torch_swish(x, beta=1.0):
    return x * torch.sigmoid(beta * x)


OPS: list[OpCase] = [
    # ---- activation ----------------------------------------------------------
    OpCase("relu", F.relu, TF.relu, ELEMENTWISE_SHAPES, ELEMENTWISE_SHAPES_SMALL),
    OpCase("leaky_relu", F.leaky_relu, TF.leaky_relu, ELEMENTWISE_SHAPES, ELEMENTWISE_SHAPES_SMALL,
           kwargs=[{}, {"negative_slope": 0.2}, {"negative_slope": -0.3}]),
    OpCase("prelu", F.prelu, TF.prelu, ELEMENTWISE_SHAPES, ELEMENTWISE_SHAPES_SMALL,
           params=_prelu_weight(per_channel=False), reduce_len=_prelu_reduce_len(per_channel=False)),
    OpCase("prelu_per_channel", F.prelu, TF.prelu, ELEMENTWISE_SHAPES, ELEMENTWISE_SHAPES_SMALL,
           params=_prelu_weight(per_channel=True), reduce_len=_prelu_reduce_len(per_channel=True)),
    OpCase("sigmoid", F.sigmoid, torch.sigmoid, ELEMENTWISE_SHAPES, ELEMENTWISE_SHAPES_SMALL),
    OpCase("tanh", F.tanh, torch.tanh, ELEMENTWISE_SHAPES, ELEMENTWISE_SHAPES_SMALL,
           make_input=_unsaturated_input),
    OpCase("gelu", F.gelu, TF.gelu, ELEMENTWISE_SHAPES, ELEMENTWISE_SHAPES_SMALL,
           kwargs=[{"approximate": "none"}, {"approximate": "tanh"}]),
    OpCase("silu", F.silu, TF.silu, ELEMENTWISE_SHAPES, ELEMENTWISE_SHAPES_SMALL),
    OpCase("swish", F.swish, _torch_swish, ELEMENTWISE_SHAPES, ELEMENTWISE_SHAPES_SMALL,
           kwargs=[{}, {"beta": 1.7}]),
    # ---- normalization: batch, sync-batch, instance ------------------------
    # ---- normalization: layer, RMS, group ------------------------------------
    # ---- pooling -------------------------------------------------------------
    # ---- dropout -------------------------------------------------------------
]
