"""Layouts are PyTorch's.

lamina.layout, the layout of an elementwise result: the oracle is PyTorch's
TensorIterator itself (torch.neg lays out a result of one operand, torch.add
of two, first operand first) for dense, permuted, channels_last, sliced and
overlapping operands. (The activations' own layouts: test_activation.py.)

Layers whose layouts PyTorch sets by how it composes them: a 1x1 adaptive
average pool is a mean over (H, W), whose gradient is contiguous; instance
norm normalizes a contiguous view, so its output and gradient are
contiguous whatever the input's layout.
"""

from __future__ import annotations

import itertools

import pytest
import torch

import lamina.functional as F
from lamina.layout import empty_result, in_result_layout


def _layouts():
    torch.manual_seed(0)
    base = torch.randn(2, 3, 4, 5)
    big = torch.randn(4, 6, 8, 10)
    return {
        "contiguous": base,
        "channels_last": base.contiguous(memory_format=torch.channels_last),
        "reversed": base.permute(3, 2, 1, 0).contiguous().permute(3, 2, 1, 0),
        "permuted": base.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3),
        "sliced": big[::2, ::2, ::2, ::2],
        "sliced_permuted": big.permute(3, 1, 0, 2)[::2, ::2, ::2, ::2].permute(2, 1, 3, 0),
        "overlapping": torch.randn(60).as_strided((2, 3, 4, 5), (1, 1, 7, 2)),
        "size_one_dims": torch.randn(2, 1, 4, 1).expand(2, 1, 4, 1).as_strided((2, 1, 4, 1), (4, 99, 1, 7)),
    }


LAYOUTS = _layouts()


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_one_operand(name):
    x = LAYOUTS[name]
    assert empty_result((x,)).stride() == torch.neg(x).stride()


@pytest.mark.parametrize("first,second", list(itertools.product(
    [n for n in LAYOUTS if n != "size_one_dims"], repeat=2)))
def test_two_operands_first_decides(first, second):
    a, b = LAYOUTS[first], LAYOUTS[second]
    assert empty_result((a, b)).stride() == torch.add(a, b).stride()


def test_dtype_and_copy():
    x = LAYOUTS["permuted"]
    out = empty_result((x,), torch.uint8)
    assert out.dtype == torch.uint8 and out.stride() == x.stride()
    # a tensor already in the result's layout is returned as is, another is copied into it
    assert in_result_layout(x, (x,)) is x
    moved = in_result_layout(x.contiguous(), (x,))
    assert moved.stride() == x.stride() and torch.equal(moved, x)


def _instance_norm_running(f):
    return lambda x: f(x, torch.zeros(3), torch.ones(3), use_input_stats=False)


# name -> (lamina fn, torch fn) on a channels_last (2, 3, 5, 6) input
LAYERS = {
    "adaptive_avg_pool2d_1x1": (lambda x: F.adaptive_avg_pool2d(x, 1), lambda x: torch.nn.functional.adaptive_avg_pool2d(x, 1)),
    "adaptive_avg_pool2d_2x3": (lambda x: F.adaptive_avg_pool2d(x, (2, 3)),
                                lambda x: torch.nn.functional.adaptive_avg_pool2d(x, (2, 3))),
    "instance_norm": (F.instance_norm, torch.nn.functional.instance_norm),
    "instance_norm_running_stats": (_instance_norm_running(F.instance_norm),
                                    _instance_norm_running(torch.nn.functional.instance_norm)),
}


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("be", ["reference", "triton"])
def test_layer_gradient_layouts(name, be, backend):
    backend(be)
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 6).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    ours, theirs = LAYERS[name]
    y, y_t = ours(x), theirs(x)
    dy = torch.randn_like(y_t)
    (dx,), (dx_t,) = torch.autograd.grad(y, x, dy), torch.autograd.grad(y_t, x, dy)
    assert dx.stride() == dx_t.stride()
    assert y.is_contiguous() == y_t.is_contiguous()
    assert y.is_contiguous(memory_format=torch.channels_last) == y_t.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(dx, dx_t, rtol=1e-5, atol=1e-5)
