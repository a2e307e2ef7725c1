"""What lamina's layers are inside torch.compile, on a GPU.

Two modes, chosen by :func:`set_compile_mode` or, before that, by the
environment variable ``LAMINA_COMPILE_MODE``:

- ``'torch'`` (the default): inside ``torch.compile``, a lamina layer on
  tensors that would run lamina's Triton kernels is written as PyTorch's own
  ops (``torch.nn.functional``, the same math and semantics), and Inductor
  fuses it with the layers around it: a batch norm's normalize with the
  residual add and the ReLU after it, a LayerNorm with the residual add
  before it. lamina's kernels cannot take part in that fusion: in whole
  models (bench/results, one H200) the compiled step with lamina's kernels
  traced in was slower than torch.compile of the unpatched model (ResNet-50
  4518 against 5802 samples/s, GPT-2 small 278 against 302). Outside of
  compilation nothing changes: eager calls run lamina's kernels.
- ``'kernels'``: lamina's Triton kernels are traced into the compiled graph
  (custom_op.py, kernels/fast_launch.py) and Inductor launches them.

The same holds outside torch.compile while a forward-mode AD level
(``torch.autograd.forward_ad``) or a ``torch.func`` transform is active, on
any device: lamina's ops have reverse-mode formulas only; and while
``torch.jit.trace`` (or ``torch.onnx.export``'s tracer) records a model: it
records PyTorch ops, and would take a lamina result as a constant.

Layers given lamina's own randomness explicitly (a ``seed`` or a
``generator``: masks that must equal the NumPy reference's), the in-place
fused layers and DropBlock2d (no torch.nn twin) keep lamina's kernels in
both modes. Dropout and DropConnect in ``'torch'`` mode draw torch's random
numbers, as a compiled torch.nn.Dropout does. On the CPU (the
NumPy reference, the interpreter) lamina's ops stay opaque custom ops in
both modes.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as TF

from torch._C import _are_functorch_transforms_active as _functorch_active
from torch._C import _is_tracing as _jit_tracing
from torch.autograd import forward_ad as _forward_ad

from . import custom_op

MODES = ("torch", "kernels")

_mode = os.environ.get("LAMINA_COMPILE_MODE", "torch").strip().lower() or "torch"
if _mode not in MODES:
    raise ValueError(f"LAMINA_COMPILE_MODE must be one of {MODES}, got {_mode!r}")


def set_compile_mode(mode: str) -> None:
    """What lamina's layers are inside torch.compile on a GPU: ``'torch'``
    (PyTorch's ops, which Inductor fuses) or ``'kernels'`` (lamina's Triton
    kernels in the graph). Takes effect at the next compilation."""
    global _mode
    if mode not in MODES:
        raise ValueError(f"compile mode must be one of {MODES}, got {mode!r}")
    _mode = mode


def get_compile_mode() -> str:
    """The compile mode in force: ``'torch'`` or ``'kernels'``."""
    return _mode


def torch_math(t: torch.Tensor) -> bool:
    """The layer is to be written in PyTorch's ops: torch.compile is tracing,
    the mode is ``'torch'`` and ``t`` would run lamina's compiled kernels;
    or, anywhere, a forward-mode AD level or a torch.func transform (vmap,
    grad, jacrev, jvp, ...) is active, or torch.jit's tracer is recording.
    lamina's ops carry reverse-mode formulas only, so there its layers are
    PyTorch's, whose tangents and batching rules are exact; the tracer sees
    PyTorch's ops only (a kernel's or the NumPy reference's result would be
    recorded as a constant)."""
    if torch.compiler.is_compiling():
        return _mode == "torch" and custom_op.runs_compiled_kernels(t)
    return _forward_ad._current_level >= 0 or _functorch_active() or _jit_tracing()


# --- the fused layers, as compositions of torch.nn.functional -------------------

def activation(y: torch.Tensor, act: str, negative_slope: float = 0.01, approximate: str = "none") -> torch.Tensor:
    """The fused layers' activations by name ('identity', 'relu', 'leaky_relu',
    'silu', 'gelu'; 'gelu_tanh' is gelu with approximate='tanh')."""
    if act == "relu":
        # relu's math, but threshold's autograd saves its input, not its
        # output: a model may ReLU the output again in place (torchvision's
        # shared ReLU after a fused bn + relu), which would spoil a saved
        # output (NaN and the gradient at 0 are as relu's)
        return TF.threshold(y, 0.0, 0.0)
    if act == "leaky_relu":
        return TF.leaky_relu(y, negative_slope)
    if act == "silu":
        return TF.silu(y)
    if act in ("gelu", "gelu_tanh"):
        return TF.gelu(y, approximate="tanh" if act == "gelu_tanh" else approximate)
    if act == "identity":
        return y
    raise ValueError("unknown activation " + act)  # (no f-string: TorchScript compiles this function)


def add_norm(norm, x, residual, p: float, prenorm: bool):
    """dropout(x, p) + residual, then ``norm`` of the sum (returned with it
    when ``prenorm``): add_layer_norm / add_rms_norm (p = 0 when not training)."""
    total = (TF.dropout(x, p) if p > 0.0 else x) + residual
    y = norm(total)
    return (y, total) if prenorm else y
