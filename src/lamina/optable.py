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
# Pooling: odd planes (windows that do not tile), 3-D (C, H, W), empty batch.
POOL_SHAPES = [(2, 3, 7, 9), (1, 2, 13, 11), (3, 8, 8), (0, 3, 8, 8)]
POOL_SHAPES_SMALL = [(2, 3, 7, 9), (3, 8, 8)]
# adaptive: sizes that do not divide the input, global, None entries, upsampling
ADAPTIVE_KWARGS = [dict(output_size=(3, 4)), dict(output_size=(1, 1)), dict(output_size=(None, 4)),
                   dict(output_size=5), dict(output_size=(9, 11))]


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
    *[
        OpCase(name, getattr(F, fn), getattr(TF, fn), shapes, small, kwargs)
        for name, fn, shapes, small, kwargs in [
            ("max_pool2d", "max_pool2d", POOL_SHAPES, POOL_SHAPES_SMALL, [
                dict(kernel_size=3, stride=2, padding=1),
                dict(kernel_size=2),
                dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 0), dilation=2),
                dict(kernel_size=2, stride=2, padding=1, ceil_mode=True),  # first window starts in the padding
                dict(kernel_size=3, stride=2, ceil_mode=True),  # last window hangs past the input
                dict(kernel_size=3, stride=2, padding=1, return_indices=True),
            ]),
            ("max_pool2d_k1", "max_pool2d", [(1, 1, 1, 1)], [(1, 1, 1, 1)], [dict(kernel_size=1)]),
            ("avg_pool2d", "avg_pool2d", POOL_SHAPES, POOL_SHAPES_SMALL, [
                dict(kernel_size=3, stride=2, padding=1),
                dict(kernel_size=2),
                dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
                dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 1), divisor_override=3),
                dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
                dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
            ]),
            ("avg_pool2d_k1", "avg_pool2d", [(1, 1, 1, 1)], [(1, 1, 1, 1)], [dict(kernel_size=1)]),
            ("adaptive_avg_pool2d", "adaptive_avg_pool2d", POOL_SHAPES, POOL_SHAPES_SMALL, ADAPTIVE_KWARGS),
            ("adaptive_avg_pool2d_1", "adaptive_avg_pool2d", [(1, 1, 1, 1)], [(1, 1, 1, 1)], [dict(output_size=1)]),
            ("adaptive_max_pool2d", "adaptive_max_pool2d", POOL_SHAPES, POOL_SHAPES_SMALL,
             ADAPTIVE_KWARGS + [dict(output_size=(3, 4), return_indices=True)]),
            ("adaptive_max_pool2d_1", "adaptive_max_pool2d", [(1, 1, 1, 1)], [(1, 1, 1, 1)], [dict(output_size=1)]),
        ]
    ],
    # ---- dropout -------------------------------------------------------------
]
