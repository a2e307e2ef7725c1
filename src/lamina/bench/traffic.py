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

The fused cells beyond the standard matrix (shapes.FUSED_MATRIX), by the same
rule (see elements_moved for the reasoning):

    residual add + norm      forward 3n (x, residual, y), backward 4n (dy, the
                             sum s read, and written or rebuilt, one gradient
                             for both x and residual) or 5n with branch dropout
                             (dx is then a second tensor); plus the norm's
                             parameters
    bias + activation        forward 2n + d, backward 3n + 2d (bias read,
                             dbias written)
    dropout + add            forward 3n, backward 2n (dy, dx; dresidual is dy)

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
    # --- fused cells ---
    if op in ("add_layer_norm", "add_rms_norm"):
        # Forward: read x and residual, write y (3n). Backward: read dy and
        # the sum s = x + residual, write the gradient (3n); and s must exist:
        # either the forward saves it (a write of n) or the backward rebuilds
        # it (reading x and residual, a read of n more). That n is charged to
        # the backward, so a forward alone counts its minimum, 3n, and the pair
        # 7n whichever way an implementation goes.
        # The gradient: d/dx and d/dresidual of x + residual are one tensor
        # (autograd hands the same one to both, as torch's add does), written
        # once; with branch dropout (dropout_p > 0) dx = mask * ds / (1 - p)
        # is a second tensor (the mask regenerated from the seed): one more n.
        d = shape[-1]
        n_params = 2 if op == "add_layer_norm" else 1
        grads = 2 if kwargs.get("dropout_p", 0.0) > 0 else 1
        return 3 * n + n_params * d, (3 + grads) * n + d + n_params * d
    if op == "bias_act":
        # as prelu: forward reads the bias; backward reads it again (act'(x + b)
        # is recomputed from the saved x) and writes dbias
        d = shape[-1]
        return 2 * n + d, 3 * n + 2 * d
    if op == "dropout_add":
        # forward reads x and residual, writes y; backward reads dy and writes
        # dx (the mask regenerated from the seed): dresidual is dy itself
        return 3 * n, 2 * n
    raise KeyError(f"no byte formula for op {op!r}")


def cell_bytes(op: str, shape: tuple, kwargs: dict, dtype: str, mode: str) -> int:
    """Bytes a cell moves at least; parameters are in the input's dtype."""
    fwd, bwd = elements_moved(op, shape, kwargs)
    elements = fwd if mode == "fwd" else fwd + bwd
    return elements * ITEMSIZE[dtype]


def gbps(nbytes: int, ms: float) -> float:
    """Bytes over milliseconds, in GB/s (10**9 bytes a second)."""
    return nbytes / (ms * 1e-3) / 1e9
