"""Bytes each benchmark cell must move at least: the textbook minimum, each
input read once and each output written once (DESIGN.md, "Measuring speed").

    elementwise activation   forward 2n, backward 3n (dy, x or y, dx)
    dropout                  forward 2n, backward 2n (the mask is regenerated)
    norms                    forward 2n, backward 3n (dy, x, dx), plus parameters:
                             forward reads weight/bias (and batch norm reads and
                             writes its running statistics), backward reads the
                             weight and writes dweight/dbias. Per-row or
                             per-channel statistics are not counted.
    pooling                  forward reads the input and writes the output;
                             backward reads dy (output size), writes dx (input size)
    fused op + activation    the same as the norm alone: the activation is free

A forward+backward cell moves the sum. GB/s = bytes / time.
"""

from __future__ import annotations

import math

ITEMSIZE = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}


def pool_output_hw(h: int, w: int, kernel_size, stride=None, padding=0) -> tuple[int, int]:
    """Output height and width of max/avg pooling (dilation 1, ceil_mode False)."""
    k = _pair(kernel_size)
    s = _pair(stride if stride is not None else kernel_size)
    p = _pair(padding)
    return (h + 2 * p[0] - k[0]) // s[0] + 1, (w + 2 * p[1] - k[1]) // s[1] + 1


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def elements_moved(op: str, shape: tuple, kwargs: dict) -> tuple[int, int]:
    """(forward, backward) element counts for one op at one input shape."""
    n = math.prod(shape)
    if op in ("relu", "leaky_relu", "sigmoid", "tanh", "gelu", "silu", "swish"):
        return 2 * n, 3 * n
    if op == "prelu":
        c = shape[1] if len(shape) > 1 else 1
        return 2 * n + c, 3 * n + 2 * c  # weight read; weight read, dweight written
    if op == "dropout":
        return 2 * n, 2 * n
    if op in ("layer_norm", "rms_norm"):
        d = shape[-1]
        n_params = 2 if op == "layer_norm" else 1  # (weight, bias) or weight
        return 2 * n + n_params * d, 3 * n + d + n_params * d
    if op in ("batch_norm", "batch_norm_relu"):
        c = shape[1]
        return 2 * n + 2 * c + 4 * c, 3 * n + c + 2 * c  # + weight, bias, running stats read and written
    if op in ("group_norm", "group_norm_silu"):
        c = shape[1]
        return 2 * n + 2 * c, 3 * n + c + 2 * c
    if op == "instance_norm":  # InstanceNorm2d's defaults: no affine, no running stats
        return 2 * n, 3 * n
    if op in ("max_pool2d", "avg_pool2d"):
        batch, channels, h, w = shape
        ho, wo = pool_output_hw(h, w, kwargs["kernel_size"], kwargs.get("stride"), kwargs.get("padding", 0))
        out = batch * channels * ho * wo
        return n + out, out + n
    if op == "adaptive_avg_pool2d":
        batch, channels = shape[:2]
        ho, wo = _pair(kwargs.get("output_size", 1))
        out = batch * channels * ho * wo
        return n + out, out + n
    raise KeyError(f"no byte formula for op {op!r}")


def cell_bytes(op: str, shape: tuple, kwargs: dict, dtype: str, mode: str) -> int:
    """Bytes a cell moves at least; parameters are in the input's dtype."""
    fwd, bwd = elements_moved(op, shape, kwargs)
    elements = fwd if mode == "fwd" else fwd + bwd
    return elements * ITEMSIZE[dtype]


def gbps(nbytes: int, ms: float) -> float:
    """Bytes over milliseconds, in GB/s (10**9 bytes a second)."""
    return nbytes / (ms * 1e-3) / 1e9
