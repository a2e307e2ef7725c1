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


# =============================================================================
# activation
# =============================================================================

def prelu_weight(x: torch.Tensor, weight) -> None:
    """PReLU's weight: a tensor of 0 or 1 dims with 1 or x.shape[1] elements
    (PyTorch's rules and messages)."""
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"prelu(): argument 'weight' must be Tensor, not {type(weight).__name__}")
    floating(weight, "weight")
    same_device(x, weight=weight)
    if weight.dtype != x.dtype:
        raise RuntimeError(f"prelu: Type promoting not supported. Got input {x.dtype} and weight {weight.dtype}")
    if weight.dim() > 1:
        raise RuntimeError(f"prelu: Expected `weight` to be a scalar or 1D tensor, but got: ndim = {weight.dim()}")
    n = weight.numel()
    if n != 1:
        if x.dim() == 0:
            raise RuntimeError("prelu: Not allow zero-dim input tensor when weight has more than one element.")
        channels = x.shape[1] if x.dim() >= 2 else 1
        if n != channels:
            raise RuntimeError(
                "Mismatch of parameter numbers and input channel size. "
                f"Found parameter numbers = {n} and channel size = {channels}.")
