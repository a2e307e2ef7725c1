"""The memory layout of an elementwise result, as PyTorch lays it out.

PyTorch's elementwise ops (TensorIterator) allocate their result from their
operands' strides: contiguous when every operand is, channels_last when every
one is, the operands' own strides when they are all dense with the same
strides; otherwise the dimensions are ordered by stride, the first operand
deciding each comparison it can (a broadcast dimension leaves it to the next
operand, equal strides put the smaller dimension inner), and the result is
dense in that order. Which operand comes first is the op's: ReLU's and
LeakyReLU's backward put the saved tensor first, Sigmoid's, Tanh's, GELU's
and SiLU's the incoming gradient.

lamina's elementwise layers give the same layout on every backend, so a
model's strides, and the speed of whatever reads them next, stay as they
were under PyTorch. The kernels walk their operands in one memory order, so
an operand in another layout is copied into the result's first (the common
cases, equal layouts, copy nothing).
"""

from __future__ import annotations

import torch


def is_dense(t: torch.Tensor) -> bool:
    """True when ``t`` covers its storage span without gaps or overlaps in some
    dimension order (contiguous, channels_last, any permutation of them)."""
    # the two common layouts answered by torch's own flags: no sort (host time)
    if t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)):
        return True
    expected = 1
    for size, stride in sorted(zip(t.shape, t.stride()), key=lambda p: p[1]):
        if size == 1:
            continue
        if stride != expected:
            return False
        expected *= size
    return True


def _permuted_strides(operands) -> list[int]:
    """TensorIterator's dimension order (reorder_dimensions) and the dense
    strides of a result in that order."""
    shape = operands[0].shape
    ndim = len(shape)
    strides = [t.stride() for t in operands]

    def should_swap(d0: int, d1: int) -> int:
        for s in strides:
            s0, s1 = s[d0], s[d1]
            if s0 == 0 or s1 == 0:  # broadcast along one of them: the next operand decides
                continue
            if s0 != s1:
                return -1 if s0 < s1 else 1
            if shape[d0] > shape[d1]:  # equal strides: the smaller dimension inner
                return 1
        return 0

    perm = list(range(ndim - 1, -1, -1))  # perm[0] is the innermost dimension
    for i in range(1, ndim):
        d1 = i
        for d0 in range(i - 1, -1, -1):
            comparison = should_swap(perm[d0], perm[d1])
            if comparison > 0:
                perm[d0], perm[d1] = perm[d1], perm[d0]
                d1 = d0
            elif comparison < 0:
                break
    out = [0] * ndim
    step = 1
    for d in perm:
        out[d] = step
        step *= shape[d]
    return out


def empty_result(operands, dtype: torch.dtype | None = None) -> torch.Tensor:
    """An uninitialised tensor of the operands' (common) shape, laid out as
    PyTorch lays out an elementwise result of ``operands`` (in the op's
    order); ``dtype`` defaults to the first operand's."""
    first = operands[0]
    dtype = first.dtype if dtype is None else dtype
    if all(t.is_contiguous() for t in operands):
        return torch.empty(first.shape, dtype=dtype, device=first.device)
    if first.dim() == 4 and all(t.is_contiguous(memory_format=torch.channels_last) for t in operands):
        return torch.empty(first.shape, dtype=dtype, device=first.device, memory_format=torch.channels_last)
    if is_dense(first) and all(t.stride() == first.stride() for t in operands[1:]):
        return torch.empty_like(first, dtype=dtype)
    return torch.empty_strided(first.shape, _permuted_strides(operands), dtype=dtype, device=first.device)


def _same_strides(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal strides wherever they matter (a dimension of size 1 has any)."""
    return a.stride() == b.stride() or all(
        sa == sb for size, sa, sb in zip(a.shape, a.stride(), b.stride()) if size != 1)


def like(t: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``t`` itself when dense with ``target``'s strides, else a copy of ``t``
    laid out as ``target`` (dense), keeping ``t``'s dtype: two tensors then
    walk with one flat index."""
    if _same_strides(t, target) and is_dense(t):
        return t
    return torch.empty_like(target, dtype=t.dtype).copy_(t)


def in_result_layout(t: torch.Tensor, operands) -> torch.Tensor:
    """``t`` (of the operands' shape) in the layout PyTorch would give the
    elementwise result of ``operands``: itself when already so, else a copy."""
    if all(o.stride() == t.stride() for o in operands) and is_dense(t):  # one dense layout: nothing to work out
        return t
    result = empty_result(operands, t.dtype)
    return t if _same_strides(t, result) and is_dense(t) else result.copy_(t)  # (the copy fills the one allocation)
