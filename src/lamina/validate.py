"""Input checks shared by functional and nn: PyTorch's error types, messages
that name the argument and what was expected."""

from __future__ import annotations

import operator

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# Exceptions that are two types at once. PyTorch's type for a bad call is
# sometimes an accident of its implementation (NotImplementedError from a
# kernel dispatcher that has no integer kernel, IndexError from reading
# input.size(1), ZeroDivisionError from `C // num_groups`); lamina raises an
# exception that is both PyTorch's type and the type the error means, so code
# written against either catches it.

class UnsupportedDtypeError(NotImplementedError, TypeError):
    """A tensor of a dtype lamina has no kernel for (integer, bool, complex)."""


class DimensionError(IndexError, ValueError):
    """An input with too few dimensions for the op's channel dimension."""


class InputDimensionError(IndexError, RuntimeError):
    """An input with too few dimensions (PyTorch: IndexError from a dim lookup)."""


class ZeroGroupsError(ZeroDivisionError, RuntimeError):
    """num_groups == 0 (PyTorch: ZeroDivisionError from C // num_groups)."""


def as_int(value):
    """``value`` as a Python int when it is an integer (numpy integers and 0-d
    integer tensors too, as PyTorch's argument parser takes them; not bool),
    else None."""
    # no operator.index on what has no __index__ (a tuple, a float): torch
    # 2.11's dynamo cannot trace the TypeError it raises
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def tensor(x, name: str = "input") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")


def floating(x: torch.Tensor, name: str = "input") -> None:
    """x is a tensor of float16, bfloat16, float32 or float64."""
    tensor(x, name)
    if x.dtype not in FLOAT_DTYPES:
        raise UnsupportedDtypeError(
            f"{name} must be a floating-point tensor (float16, bfloat16, float32 or float64), got {x.dtype}")


def same_device(x: torch.Tensor, **others) -> None:
    """Every tensor in ``others`` (name=tensor, None allowed) is on x's device."""
    for name, t in others.items():
        if t is not None and t.device != x.device:
            raise RuntimeError(f"{name} is on {t.device} but input is on {x.device}: expected all tensors on one device")


def number(value, name: str, op: str) -> None:
    """A Python int or float (a bool is an int, as PyTorch's argument parser
    takes it; not a string)."""
    if not isinstance(value, (int, float)):
        raise TypeError(f"{op}(): argument '{name}' must be a number, not {type(value).__name__}")


def param_dtype(x: torch.Tensor, op: str, **params) -> None:
    """Each given parameter (weight, bias, running stats) has x's dtype, or is
    float32 for a float16/bfloat16 x (mixed precision), as PyTorch's CPU
    kernels require (RuntimeError otherwise)."""
    for name, t in params.items():
        if t is None:
            continue
        tensor(t, name)
        ok = t.dtype == x.dtype or (t.dtype == torch.float32 and x.dtype in (torch.float16, torch.bfloat16))
        if not ok:
            raise RuntimeError(
                f"{op}: mixed dtype: expected {name} to have dtype {x.dtype}"
                f"{' or torch.float32' if x.dtype in (torch.float16, torch.bfloat16) else ''} like the input, "
                f"got {t.dtype}")


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
# ======================================================================


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


# =============================================================================
# pooling
# =============================================================================

def pool_pair(value, name: str, op: str, allow_none: bool = False):
    """An int or a pair of ints as a pair (PyTorch's RuntimeError otherwise)."""
    # the common spellings first, without the general checks (host time)
    if type(value) is int:
        return (value, value)
    if type(value) is tuple and len(value) == 2 and type(value[0]) is int and type(value[1]) is int:
        return value
    if allow_none and (value is None or (isinstance(value, (list, tuple)) and len(value) == 0)):
        return None  # PyTorch reads an empty stride as "omitted"
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if as_int(value) is not None:
        return (as_int(value), as_int(value))
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(as_int(v) is not None for v in value):
        return (as_int(value[0]), as_int(value[1]))
    omitted = "be omitted, " if allow_none else ""
    if not (isinstance(value, (list, tuple)) and all(as_int(v) is not None for v in value)):
        # PyTorch's argument parser: a float, a string, a tuple holding a float
        raise TypeError(f"{op}(): argument '{name}' must be an int or a tuple of ints, got {value!r}")
    raise RuntimeError(f"{op}: {name} must either {omitted}a single int, or a tuple of two ints, got {value!r}")


def pool_input(x: torch.Tensor, op: str, nonempty: int = 3) -> None:
    """A float tensor of 3 (C, H, W) or 4 (N, C, H, W) dimensions whose last
    ``nonempty`` dimensions are non-empty (PyTorch: C, H, W for max and average
    pooling, H and W for adaptive average pooling, C of a 3-D input may be empty
    for adaptive max pooling). ``nonempty=0``: the dimension count only
    (max and average pooling check the padding's sign in between, as PyTorch
    does, see pool_geometry)."""
    floating(x)
    if x.dim() not in (3, 4):
        raise RuntimeError(f"{op}: non-empty 3D or 4D (batch mode) tensor expected for input, got shape {tuple(x.shape)}")
    if nonempty:
        _pool_nonempty(x, op, nonempty)


def _pool_nonempty(x: torch.Tensor, op: str, nonempty: int) -> None:
    """The last ``nonempty`` dimensions are non-empty (adaptive pools; in
    PyTorch's words)."""
    for d in range(x.dim() - nonempty, x.dim()):
        if x.shape[d] == 0:
            raise RuntimeError(f"{op}(): Expected input to have non-zero size for non-batch dimensions, but input has "
                               f"sizes {list(x.shape)} with dimension {d} being empty")


def _window_pool_nonempty(x: torch.Tensor) -> None:
    """Max and average pooling: C, H and W non-empty, N may be 0 (PyTorch's words)."""
    if any(s == 0 for s in x.shape[-3:]):
        raise RuntimeError(f"Expected 3D or 4D (batch mode) tensor with optional 0 dim batch size for input, "
                           f"but got:{list(x.shape)}")


# Geometries that passed pool_geometry, keyed by the input's (C, H, W) and
# the pool's arguments: a model asks the same few every step, and the checks
# cost ~4 us of host time a call on the CPU host (more on a card's host)
_GEOMETRIES_SEEN: dict = {}
_GEOMETRIES_KEPT = 4096


def pool_geometry(x: torch.Tensor, op: str, kernel, stride, padding, dilation, ceil_mode: bool):
    """Checks kernel/stride/padding/dilation like PyTorch and returns the output (OH, OW)."""
    if torch.compiler.is_compiling():  # (symbolic sizes are no dictionary keys)
        return _check_pool_geometry(x, op, kernel, stride, padding, dilation, ceil_mode)
    key = (x.shape[-3:], kernel, stride, padding, dilation, ceil_mode)
    out = _GEOMETRIES_SEEN.get(key)
    if out is None:
        out = _check_pool_geometry(x, op, kernel, stride, padding, dilation, ceil_mode)
        if len(_GEOMETRIES_SEEN) >= _GEOMETRIES_KEPT:
            _GEOMETRIES_SEEN.clear()
        _GEOMETRIES_SEEN[key] = out
    return out


def _check_pool_geometry(x: torch.Tensor, op: str, kernel, stride, padding, dilation, ceil_mode: bool):
    from .reference.pooling import pool_output_size

    if min(kernel) <= 0:
        raise RuntimeError(f"{op}: kernel_size should be greater than zero, but got {kernel}")
    if min(stride) <= 0:
        raise RuntimeError(f"{op}: stride should be greater than zero, but got {stride}")
    if min(dilation) <= 0:
        raise RuntimeError(f"{op}: dilation should be greater than zero, but got {dilation}")
    if min(padding) < 0:
        raise RuntimeError(f"{op}: pad must be non-negative, but got pad: {min(padding)}")
    # PyTorch's checks in its order: its output-size arithmetic bounds the
    # padding by half the dilated kernel, then its shape check wants a
    # non-empty input and bounds the padding by half the undilated kernel
    # (stricter with a dilation, max pool's)
    for k, p, d in zip(kernel, padding, dilation):
        if p > ((k - 1) * d + 1) // 2:
            raise RuntimeError(f"{op}: pad should be at most half of effective kernel size, but got pad={p}, "
                               f"kernel_size={k} and dilation={d}")
    _window_pool_nonempty(x)
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise RuntimeError(f"{op}: pad should be smaller than or equal to half of kernel size, but got "
                           f"padW = {padding[1]}, padH = {padding[0]}, kW = {kernel[1]}, kH = {kernel[0]}")
    h, w = x.shape[-2:]
    oh = pool_output_size(h, kernel[0], stride[0], padding[0], dilation[0], ceil_mode)
    ow = pool_output_size(w, kernel[1], stride[1], padding[1], dilation[1], ceil_mode)
    if oh < 1 or ow < 1:
        c = x.shape[-3]
        raise RuntimeError(f"{op}: Given input size: ({c}x{h}x{w}). Calculated output size: ({c}x{oh}x{ow}). "
                           f"Output size is too small")
    return oh, ow


def adaptive_input_dims(x, output_size) -> None:
    """PyTorch's first check of an adaptive pool, in Python before its
    kernel's: an output size given per dimension needs an input of at least
    3 dimensions (ValueError; an int output size meets the kernel's check)."""
    if isinstance(x, torch.Tensor) and x.dim() < 3 and isinstance(output_size, (list, tuple)):
        raise ValueError(f"Input dimension should be at least {len(output_size) + 1}")


def adaptive_output_size(x: torch.Tensor, output_size, op: str):
    """output_size as a pair of non-negative ints, None entries taking the input's size."""
    if isinstance(output_size, int) and not isinstance(output_size, bool):
        output_size = (output_size, output_size)
    if not isinstance(output_size, (list, tuple)) or any(
            v is not None and (isinstance(v, bool) or not isinstance(v, int)) for v in output_size):
        raise TypeError(f"{op}(): argument 'output_size' must be an int or a tuple of ints (or None), got {output_size!r}")
    if len(output_size) != 2:
        raise RuntimeError(f"{op}: output_size must be 2 (an int or a pair of ints, or None), got {output_size!r}")
    out = tuple(int(x.shape[-2 + i]) if v is None else v for i, v in enumerate(output_size))
    if any(not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in out):
        if op == "adaptive_max_pool2d":  # PyTorch's words: its output allocation's
            raise RuntimeError(f"Trying to create tensor with negative dimension {min(out)}: "
                               f"[{', '.join(str(s) for s in (*x.shape[:-2], *out))}]")
        raise RuntimeError(f"{op}: elements of output_size must be greater than or equal to 0 but received "
                           f"{{{out[0]}, {out[1]}}}")
    return out
