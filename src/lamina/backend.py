"""Which implementation runs an op: the NumPy reference or the Triton kernels.

``auto`` (the default) runs the Triton kernels on CUDA tensors of float32,
float16 and bfloat16, and the NumPy reference on CPU tensors and on float64
CUDA tensors (the kernels compute in float32). ``reference`` runs the NumPy reference everywhere
(CUDA tensors make a round trip through host memory). ``triton`` runs the
kernels everywhere; on a CPU tensor they run under Triton's interpreter
(``TRITON_INTERPRET=1``), which is how CI, with no GPU, executes every kernel.

The choice is made by :func:`set_backend` or, before that, by the environment
variable ``LAMINA_BACKEND``.
"""

from __future__ import annotations

import importlib
import os

import numpy as np
import torch

BACKENDS = ("auto", "reference", "triton")

# Triton decides at decoration time whether a @triton.jit function is compiled
# or interpreted, and that includes its own library functions (tl.sum,
# tl.rand, ...), decorated when triton is first imported - which torch does
# on the first custom-op call (through torch._dynamo). So on a machine
# without CUDA the interpreter is switched on here, at lamina's import,
# before anything imports triton.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

_backend = os.environ.get("LAMINA_BACKEND", "auto").strip().lower() or "auto"
if _backend not in BACKENDS:
    raise ValueError(f"LAMINA_BACKEND must be one of {BACKENDS}, got {_backend!r}")


def set_backend(name: str) -> None:
    """Choose the implementation: ``'auto'``, ``'reference'`` or ``'triton'``."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    _backend = name


def get_backend() -> str:
    """The backend in force: ``'auto'``, ``'reference'`` or ``'triton'``."""
    return _backend


def use_kernels(x: torch.Tensor) -> bool:
    """True when the op on ``x`` should run the Triton kernels."""
    if _backend == "reference":
        return False
    if _backend == "triton":
        return True
    # auto: CUDA tensors run the kernels -- except float64 ones, which the
    # kernels would compute in float32; the reference keeps PyTorch's float64
    # precision (on the card, float64 was off by ~1e-7 relative)
    return x.is_cuda and x.dtype != torch.float64


def kernels(family: str):
    """The module ``lamina.kernels.<family>``, imported on first use.

    Triton decides at decoration time whether a kernel is compiled or
    interpreted, so on a machine without CUDA the interpreter is switched on
    before the kernels are imported.
    """
    module = _kernel_modules.get(family)
    if module is None:  # first use only: the lookup sits on every op's path
        if not torch.cuda.is_available():
            os.environ.setdefault("TRITON_INTERPRET", "1")
        module = importlib.import_module(f"lamina.kernels.{family}")
        if os.environ.get("TRITON_INTERPRET") != "1":
            # imported only here: it reads Triton 3.6 internals (kernels/fast_launch.py)
            from .kernels import fast_launch

            fast = fast_launch.enabled()

            def prepare(kernel_module):
                fast_launch.install(kernel_module, fast)
        else:
            from .kernels.launch import quiet_overflow as prepare
        for name in ("activation", "normalization", "pooling", "dropout", "fused"):
            prepare(importlib.import_module(f"lamina.kernels.{name}"))
        _kernel_modules[family] = module
    return module


_kernel_modules: dict = {}


# --- the NumPy reference behind torch tensors --------------------------------

def to_numpy(t: torch.Tensor | None) -> np.ndarray | None:
    """A NumPy view (or copy) of ``t``; float16/bfloat16 are computed in float32."""
    if t is None:
        return None
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    return t.numpy()


def to_torch(a: np.ndarray, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``a`` as a tensor on ``like``'s device, cast to ``dtype`` (default: like's dtype)."""
    t = torch.from_numpy(np.asarray(a))
    return t.to(device=like.device, dtype=like.dtype if dtype is None else dtype)
