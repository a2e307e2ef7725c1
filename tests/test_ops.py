"""Every op in tests/op_table.py, forward and every gradient:

(the table is ``lamina.optable``)
* against PyTorch autograd on the CPU (the NumPy reference runs), float64 to
  ~1e-10 and float32 to float32 tolerance, contiguous, channels_last and
  non-contiguous inputs;
* ``torch.autograd.gradcheck`` in float64;
* the Triton kernels under the interpreter against the float64 reference,
  on small odd shapes, in every dtype the interpreter runs.
"""

from __future__ import annotations

import math

import pytest
import torch

import lamina
from lamina.bench.correctness import layouts  # the card's check walks the same layouts
from lamina.optable import OPS, TOLERANCES  # (rtol, atol) per dtype, shared with `lamina check`
INTERPRETER_DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def assert_close(actual, expected, dtype, reduce_len=1, what=""):
    rtol, atol = TOLERANCES[dtype]
    atol = atol * math.sqrt(max(reduce_len, 1))
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    torch.testing.assert_close(actual.double(), expected.double(), rtol=rtol, atol=atol, equal_nan=True, msg=lambda m: f"{what}: {m}")


def make_input(case, shape, dtype, layout="contiguous"):
    x = case.make_input(shape, dtype) if case.make_input else torch.randn(shape, dtype=torch.float64).to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        # a non-contiguous view with the same values: transpose a copy back
        x = x.transpose(-1, -2).contiguous().transpose(-1, -2)
    return x


def run(fn, x, params, kwargs, dy_seed=1):
    """Forward and backward of fn; returns (y, [dx, dparams...])."""
    x = x.detach().clone(memory_format=torch.preserve_format).requires_grad_(True)
    params = [p.detach().clone().requires_grad_(True) for p in params]
    out = fn(x, *params, **kwargs)
    y = out[0] if isinstance(out, (tuple, list)) else out
    g = torch.Generator().manual_seed(dy_seed)
    dy = torch.randn(y.shape, generator=g, dtype=torch.float64).to(y.dtype)
    leaves = [x] + params
    grads = torch.autograd.grad(y, leaves, dy, allow_unused=True) if y.requires_grad else [None] * len(leaves)
    return y.detach(), [None if g is None else g.detach() for g in grads]


def cases(small=False):
    for case in OPS:
        for shape in case.small_shapes if small else case.shapes:
            for kw in case.kwargs:
                yield pytest.param(case, shape, kw, id=f"{case.name}-{'x'.join(map(str, shape)) or 'scalar'}-{kw}")


def check_against(case, shape, kwargs, dtype, layout, expected_fn):
    torch.manual_seed(0)
    x = make_input(case, shape, dtype, layout)
    params = case.params(shape, dtype)
    y, grads = run(case.lamina, x, params, kwargs)
    x64 = x.double() if layout != "channels_last" else x.double().contiguous(memory_format=torch.channels_last)
    y_ref, grads_ref = expected_fn(x64, [p.double() for p in params])
    assert_close(y, y_ref, dtype, what=f"{case.name} forward")
    for i, (g, g_ref) in enumerate(zip(grads, grads_ref)):
        if g_ref is None:
            continue
        assert g is not None, f"{case.name}: gradient {i} missing"
        reduce_len = case.reduce_len(shape, kwargs) if (i > 0 and case.reduce_len) else 1
        assert_close(g, g_ref, dtype, reduce_len, what=f"{case.name} grad {i}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case,shape,kwargs", list(cases()))
def test_reference_against_torch(case, shape, kwargs, dtype, backend):
    backend("auto")  # CPU tensors: the NumPy reference
    for layout in layouts(shape):
        check_against(case, shape, kwargs, dtype, layout, lambda x, p: run(case.torch, x, p, kwargs))


@pytest.mark.parametrize("case,shape,kwargs", list(cases(small=True)))
def test_gradcheck(case, shape, kwargs, backend):
    if not case.gradcheck:
        pytest.skip("random op: checked against a seeded oracle instead")
    backend("auto")
    torch.manual_seed(0)
    x = make_input(case, shape, torch.float64).requires_grad_(True)
    params = [p.double().requires_grad_(True) for p in case.params(shape, torch.float64)]

    def fn(x, *params):
        out = case.lamina(x, *params, **kwargs)
        return out[0] if isinstance(out, (tuple, list)) else out

    assert torch.autograd.gradcheck(fn, (x, *params), eps=1e-6, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("dtype", INTERPRETER_DTYPES)
@pytest.mark.parametrize("case,shape,kwargs", list(cases(small=True)))
def test_kernels_against_reference(case, shape, kwargs, dtype, backend):
    """The Triton kernels (interpreter on CPU) against the float64 reference."""

    def reference(x, p):
        backend("reference")
        try:
            return run(case.lamina, x, p, kwargs)
        finally:
            backend("triton")

    backend("triton")
    for layout in layouts(shape):
        check_against(case, shape, kwargs, dtype, layout, reference)
