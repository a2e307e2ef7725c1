"""What a layer keeps for backward, in bytes: lamina against torch.

No timing here. A layer call runs under ``torch.autograd.graph.saved_tensors_hooks``,
which sees every tensor autograd saves for backward (``ctx.save_for_backward``
of lamina's ops and torch's own saved variables alike). Saved tensors that
share a storage are counted once (by the storage's data_ptr), and each
storage is classed:

* ``input``  - the storage of one of the call's inputs (kept alive anyway
  by the caller in most networks; in place, it is also the output);
* ``param``  - a parameter's or buffer's storage;
* ``output`` - the storage of the call's output (alive anyway: the next
  layer's input);
* ``new``    - memory that exists only because backward needs it (masks,
  indices, pre-activations, statistics, seeds).

``new`` bytes are the cost a layer adds to activation memory; that is the
number fused and in-place layers reduce.

Usage::

    report = saved_for_backward(lambda x: lamina.functional.dropout(x, 0.1), x)
    report.bytes("new")            # 8: the Philox seed, no mask
    for row in compare_standard_cases("cuda"): print(row)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch


@dataclass
class SavedStorage:
    shape: tuple  # of the first saved tensor seen on this storage
    dtype: torch.dtype
    nbytes: int  # the whole storage
    kind: str  # 'input', 'param', 'output' or 'new'
    is_input: bool = False  # the storage of an input (also true for kind 'input')
    is_output: bool = False


@dataclass
class SavedReport:
    storages: list = field(default_factory=list)

    def bytes(self, *kinds: str) -> int:
        """Bytes of the saved storages of these kinds (all kinds when none given)."""
        return sum(s.nbytes for s in self.storages if not kinds or s.kind in kinds)

    @property
    def saves_input(self) -> bool:
        """True when an input's storage is among the saved tensors."""
        return any(s.is_input for s in self.storages)

    @property
    def input_holds_output(self) -> bool:
        """True when a saved input storage is also the output (in place)."""
        return any(s.is_input and s.is_output for s in self.storages)

    def summary(self) -> dict:
        return {kind: self.bytes(kind) for kind in ("input", "param", "output", "new")} | {"total": self.bytes()}


def _storage_ptr(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, torch.nn.Module):
        yield from obj.parameters()
        yield from obj.buffers()


def saved_for_backward(fn: Callable, *inputs: torch.Tensor, params: Sequence = ()) -> SavedReport:
    """Run ``fn(*inputs)`` and report the storages autograd saved for its
    backward. ``params``: parameter tensors or modules (their parameters and
    buffers are classed 'param'). Input storages are read before the call,
    so an in-place layer's output is recognised as the input's storage."""
    input_ptrs = {_storage_ptr(t) for t in _tensors(inputs)}
    param_ptrs = {_storage_ptr(t) for t in _tensors(list(params))}
    saved: list[torch.Tensor] = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(*inputs)
    output_ptrs = {_storage_ptr(t) for t in _tensors(out)}

    report = SavedReport()
    seen = set()
    for t in saved:
        if not isinstance(t, torch.Tensor):
            continue
        ptr = _storage_ptr(t)
        if ptr in seen:
            continue
        seen.add(ptr)
        is_input, is_output = ptr in input_ptrs, ptr in output_ptrs
        if is_input:
            kind = "input"
        elif ptr in param_ptrs:
            kind = "param"
        elif is_output:
            kind = "output"
        else:
            kind = "new"
        report.storages.append(
            SavedStorage(tuple(t.shape), t.dtype, t.untyped_storage().nbytes(), kind, is_input, is_output))
    return report


# --- the standard comparisons ----------------------------------------------------------

def standard_cases(device="cpu", dtype=torch.float32, shape=(8, 16, 32, 32)):
    """(name, lamina call, torch call, make inputs, params) for the layers whose
    saved memory differs by design: dropout (no mask), max-pool (one byte a
    window position), relu (the output), batch norm + relu / silu (no
    pre-activation), in-place BatchNormAct2d (nothing but y)."""
    import torch.nn.functional as TF

    from .. import functional as F
    from .. import nn as lnn

    c = shape[1]

    def x_leaf():
        return (torch.randn(shape, device=device, dtype=dtype).requires_grad_(),)

    def x_inner():
        # a non-leaf input (as inside a network), so in-place layers may write it
        leaf = torch.randn(shape, device=device, dtype=dtype).requires_grad_()
        return (leaf * 1,)

    def bn_modules():
        lam = lnn.BatchNormAct2d(c, act="leaky_relu", inplace=True, device=device, dtype=dtype)
        ref = torch.nn.Sequential(torch.nn.BatchNorm2d(c, device=device, dtype=dtype), torch.nn.LeakyReLU(0.01, inplace=True))
        return lam, ref

    bn_lam, bn_ref = bn_modules()
    w = torch.ones(c, device=device, dtype=dtype, requires_grad=True)
    b = torch.zeros(c, device=device, dtype=dtype, requires_grad=True)

    def running():
        return torch.zeros(c, device=device, dtype=dtype), torch.ones(c, device=device, dtype=dtype)

    return [
        ("dropout", lambda x: F.dropout(x, 0.1), lambda x: TF.dropout(x, 0.1), x_leaf, ()),
        ("max_pool2d_3x3s2", lambda x: F.max_pool2d(x, 3, 2, 1), lambda x: TF.max_pool2d(x, 3, 2, 1), x_leaf, ()),
        ("relu", F.relu, TF.relu, x_leaf, ()),
        ("batch_norm_relu", lambda x: F.batch_norm_act(x, *running(), w, b, True, act="relu"),
         lambda x: TF.relu(TF.batch_norm(x, *running(), w, b, True)), x_leaf, (w, b)),
        ("batch_norm_silu", lambda x: F.batch_norm_act(x, *running(), w, b, True, act="silu"),
         lambda x: TF.silu(TF.batch_norm(x, *running(), w, b, True)), x_leaf, (w, b)),
        ("batch_norm_act_inplace", bn_lam, bn_ref, x_inner, (bn_lam, bn_ref)),
    ]


def compare_standard_cases(device="cpu", dtype=torch.float32, shape=(8, 16, 32, 32)) -> list[dict]:
    """One row per standard case: the saved bytes by kind for lamina and torch,
    whether each saved its input, and the output size for scale."""
    rows = []
    for name, lam, ref, make_inputs, params in standard_cases(device, dtype, shape):
        row = {"layer": name}
        for who, fn in (("lamina", lam), ("torch", ref)):
            inputs = make_inputs()
            report = saved_for_backward(fn, *inputs, params=params)
            row[who] = report.summary() | {"saves_input": report.saves_input,
                                           "input_holds_output": report.input_holds_output}
        rows.append(row)
    return rows
