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


OPS: list[OpCase] = [
    # ---- activation ----------------------------------------------------------
    OpCase("relu", F.relu, TF.relu, ELEMENTWISE_SHAPES, ELEMENTWISE_SHAPES_SMALL),
    # ---- normalization: batch, sync-batch, instance ------------------------
    # ---- normalization: layer, RMS, group ------------------------------------
    # ---- pooling -------------------------------------------------------------
    # ---- dropout -------------------------------------------------------------
]


# (rtol, atol) per dtype, shared by tests/test_ops.py and ``lamina check``;
# a reduced gradient (dweight, dbias) scales atol by sqrt(reduction length).
TOLERANCES = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-5, 1e-5),
    torch.float16: (1e-2, 1e-3),
    torch.bfloat16: (2e-2, 1e-2),
}
