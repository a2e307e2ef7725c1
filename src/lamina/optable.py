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


# ---- normalization: layer, RMS, group (helpers for the table rows below) ---

import math  # noqa: E402


def _rownorm_cases():
    """LayerNorm / RMSNorm over the last one and two dims, GroupNorm with one,
    some and every-channel groups; weight and bias random (not ones/zeros) so
    their gradients matter; kwargs switch them off."""

    def affine_params(trailing):
        def make(shape, dtype):
            g = torch.Generator().manual_seed(7)
            pshape = trailing(shape)
            return [(torch.randn(pshape, generator=g, dtype=torch.float64) * 0.5 + 1).to(dtype),
                    torch.randn(pshape, generator=g, dtype=torch.float64).to(dtype)]
        return make

    def rows(k):
        return lambda shape, kw: math.prod(shape[: len(shape) - k])

    def layer_norm_case(name, k, shapes, small):
        def call(fn):
            def run(x, w, b, affine=True, bias=True, eps=1e-5):
                return fn(x, list(x.shape[x.dim() - k:]), w if affine else None, b if affine and bias else None, eps)
            return run
        return OpCase(name, call(F.layer_norm), call(TF.layer_norm), shapes, small,
                      kwargs=[{}, {"affine": False}, {"bias": False}, {"eps": 1e-3}],
                      params=affine_params(lambda s: s[len(s) - k:]), reduce_len=rows(k))

    def rms_norm_case(name, k, shapes, small):
        def call(fn):
            def run(x, w, b, affine=True, eps=None):
                return fn(x, list(x.shape[x.dim() - k:]), w if affine else None, eps)
            return run
        return OpCase(name, call(F.rms_norm), call(TF.rms_norm), shapes, small,
                      kwargs=[{}, {"eps": 1e-6}, {"affine": False}],
                      params=affine_params(lambda s: s[len(s) - k:]), reduce_len=rows(k))

    def groups(c, which):
        if which == "one":
            return 1
        if which == "all":
            return c
        return next((g for g in range(c // 2, 0, -1) if c % g == 0 and g > 1), 1)  # "some"

    def group_norm_call(fn):
        def run(x, w, b, groups_of="some", affine=True, eps=1e-5):
            return fn(x, groups(x.shape[1], groups_of), w if affine else None, b if affine else None, eps)
        return run

    # rows of 1, primes, a row wider than the one-block limit, an empty batch, 4-D
    row_shapes = [(1,), (6, 1), (13, 17), (3, 5, 4099), (2, 17000), (0, 5), (2, 3, 5, 7)]
    # small enough for gradcheck and the interpreter; the wide-row and
    # many-tile kernel paths are tested in tests/test_rownorm.py
    row_small = [(6, 1), (5, 17), (2, 3, 2, 7)]
    row2_shapes = [(1, 1), (3, 7, 11), (2, 3, 5, 7), (0, 4, 3)]
    row2_small = [(3, 4, 5)]
    group_shapes = [(2, 6), (3, 6, 7), (2, 6, 5, 7), (1, 4, 70, 70), (0, 6, 3), (2, 12, 3, 2)]
    group_small = [(3, 6, 4), (2, 4, 3, 5)]  # whole group a program; split groups: tests/test_rownorm.py
    return [
        layer_norm_case("layer_norm", 1, row_shapes, row_small),
        layer_norm_case("layer_norm_last2", 2, row2_shapes, row2_small),
        rms_norm_case("rms_norm", 1, row_shapes, row_small),
        rms_norm_case("rms_norm_last2", 2, row2_shapes, row2_small),
        OpCase("group_norm", group_norm_call(F.group_norm), group_norm_call(TF.group_norm), group_shapes, group_small,
               kwargs=[{"groups_of": w, "affine": a} for w in ("one", "some", "all") for a in (True, False)],
               params=affine_params(lambda s: s[1:2]),
               reduce_len=lambda shape, kw: shape[0] * math.prod(shape[2:])),
    ]


OPS: list[OpCase] = [
    # ---- activation ----------------------------------------------------------
    OpCase("relu", F.relu, TF.relu, ELEMENTWISE_SHAPES, ELEMENTWISE_SHAPES_SMALL),
    # ---- normalization: batch, sync-batch, instance ------------------------
    # ---- normalization: layer, RMS, group ------------------------------------
    *_rownorm_cases(),
    # ---- pooling -------------------------------------------------------------
    # ---- dropout -------------------------------------------------------------
]
