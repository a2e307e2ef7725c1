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
    # Shapes: one channel with several values, primes, (N, C), (N, C, L), 4-D
    # (also run channels_last and as a strided view), wider than a kernel
    # tile, empty batch. `stats` makes the (running_mean, running_var)
    # arguments inside each call, so lamina and torch start from equal fresh
    # buffers. The shared pieces are bound once by the first `for` clauses.
    *[
        OpCase(
            name,
            lambda x, *p, _s=stats, _t=train, **kw: F.batch_norm(x, *_s(x), *p, training=_t, **kw),
            lambda x, *p, _s=stats, _t=train, **kw: TF.batch_norm(x, *_s(x), *p, training=_t, **kw),
            [(5, 1), (7, 1, 3), (13, 17), (3, 5, 11), (2, 3, 5, 7), (3, 2, 2053), (0, 3, 4)],
            [(5, 1), (13, 17), (3, 5, 11), (2, 3, 5, 7)],
            params=params,
            reduce_len=lambda shape, kw: torch.Size(shape).numel() // shape[1],  # the values of a channel
        )
        for affine in [lambda shape, dtype: [torch.randn(shape[1], dtype=torch.float64).to(dtype) for _ in "wb"]]
        for fresh in [lambda x: (torch.zeros(x.shape[1], dtype=x.dtype), torch.ones(x.shape[1], dtype=x.dtype))]
        for eval_stats in [lambda x: (torch.linspace(-1, 1, x.shape[1], dtype=torch.float64).to(x.dtype),
                                      torch.linspace(0.5, 2, x.shape[1], dtype=torch.float64).to(x.dtype))]
        for name, stats, train, params in [
            ("batch_norm_train", fresh, True, affine),
            ("batch_norm_train_no_affine", fresh, True, no_params),
            ("batch_norm_train_no_running", lambda x: (None, None), True, affine),
            ("batch_norm_eval", eval_stats, False, affine),
        ]
    ],
    *[
        OpCase(
            name,
            lambda x, *p, _s=stats, **kw: F.instance_norm(x, *_s(x), *p, **kw),
            lambda x, *p, _s=stats, **kw: TF.instance_norm(x, *_s(x), *p, **kw),
            [(1, 1, 5), (3, 5, 11), (2, 3, 5, 7), (2, 2, 3, 700)],
            [(3, 5, 11), (2, 3, 5, 7)],
            params=params,
            reduce_len=lambda shape, kw: torch.Size(shape).numel() // shape[1],
        )
        for affine in [lambda shape, dtype: [torch.randn(shape[1], dtype=torch.float64).to(dtype) for _ in "wb"]]
        for fresh in [lambda x: (torch.zeros(x.shape[1], dtype=x.dtype), torch.ones(x.shape[1], dtype=x.dtype))]
        for name, stats, params in [
            ("instance_norm", lambda x: (None, None), affine),
            ("instance_norm_no_affine_running", fresh, no_params),
        ]
    ],
    # ---- normalization: layer, RMS, group ------------------------------------
    # ---- pooling -------------------------------------------------------------
    # ---- dropout -------------------------------------------------------------
]
