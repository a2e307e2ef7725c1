"""Input checks shared by functional and nn: PyTorch's error types, messages
that name the argument and what was expected."""

from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def tensor(x, name: str = "input") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")


def floating(x: torch.Tensor, name: str = "input") -> None:
    """x is a tensor of float16, bfloat16, float32 or float64."""
    tensor(x, name)
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating-point tensor (float16, bfloat16, float32 or float64), got {x.dtype}")


def same_device(x: torch.Tensor, **others) -> None:
    """Every tensor in ``others`` (name=tensor, None allowed) is on x's device."""
    for name, t in others.items():
        if t is not None and t.device != x.device:
            raise RuntimeError(f"{name} is on {t.device} but input is on {x.device}: expected all tensors on one device")


def probability(p, name: str = "p") -> None:
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be a probability between 0 and 1, but got {p}")


def ndim(x: torch.Tensor, allowed, layer: str) -> None:
    """x.dim() is one of ``allowed`` (an int or a tuple of ints)."""
    allowed = (allowed,) if isinstance(allowed, int) else tuple(allowed)
    if x.dim() not in allowed:
        want = " or ".join(f"{d}D" for d in allowed)
        raise ValueError(f"{layer}: expected {want} input, got {x.dim()}D input of shape {tuple(x.shape)}")
