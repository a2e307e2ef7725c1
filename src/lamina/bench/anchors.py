"""What each benchmark cell calls: lamina, and the anchors it is measured
against (torch eager, torch.compile of the same torch function, Liger-Kernel
where Liger has the op).

Every implementation is a function ``fn(x, p) -> y`` where ``p`` is a dict of
the op's extra tensors (``weight``, ``bias``, ``running_mean``, ...), made by
:func:`make_params`. Keyword arguments (eps, kernel size, ...) are bound when
the function is built, so the timed call is just ``fn(x, p)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as TF

EPS_NORM = 1e-5
EPS_RMS = 1e-6


@dataclass(frozen=True)
class OpBench:
    torch: Callable  # (x, p, kw) -> y: PyTorch's op, the eager and torch.compile anchor
    lamina: Callable  # (F, x, p, kw) -> y, F = lamina.functional
    params: Callable | None = None  # (shape, dtype, device) -> dict of tensors
    learnable: tuple = ()  # which params get gradients
    random: bool = False  # outputs differ run to run (dropout): no value comparison
    lamina_impl: Callable | None = None  # (F) -> 'fused:<name>' or 'composed', for fused cells
    # A gradient reaches two inputs unchanged (x + residual: the residual's
    # gradient is dy, or the same tensor as x's). backward() would then copy
    # it into a leaf's .grad (AccumulateGrad cannot take a tensor someone else
    # holds), a copy no network makes, since there the residual is no leaf:
    # such cells time their backward with torch.autograd.grad, which hands
    # the gradients back as they are.
    shared_grad: bool = False


# --- parameters ---------------------------------------------------------------

def _affine(c: int, dtype, device) -> dict:
    g = torch.Generator(device="cpu").manual_seed(1234)
    weight = 1.0 + 0.1 * torch.randn(c, generator=g)
    bias = 0.1 * torch.randn(c, generator=g)
    return {"weight": weight.to(device, dtype), "bias": bias.to(device, dtype)}


def _row_params(shape, dtype, device):
    return _affine(shape[-1], dtype, device)


def _rms_params(shape, dtype, device):
    return {"weight": _affine(shape[-1], dtype, device)["weight"]}


def _channel_params(shape, dtype, device):
    return _affine(shape[1], dtype, device)


def _batch_norm_params(shape, dtype, device):
    p = _affine(shape[1], dtype, device)
    p["running_mean"] = torch.zeros(shape[1], device=device, dtype=dtype)
    p["running_var"] = torch.ones(shape[1], device=device, dtype=dtype)
    return p


def _prelu_params(shape, dtype, device):
    return {"weight": torch.full((shape[1],), 0.25, device=device, dtype=dtype)}


# --- fused cells ---------------------------------------------------------------
# Until lamina.functional has a fused kernel, a fused cell times lamina's own ops
# one after the other. When the fused function lands, only these two helpers
# (the name looked up and the call) need to change.

def _batch_norm(F, x, p):
    return F.batch_norm(x, p["running_mean"], p["running_var"], p["weight"], p["bias"], training=True, momentum=0.1, eps=EPS_NORM)


def _lamina_batch_norm_relu(F, x, p, kw):
    fused = getattr(F, "batch_norm_act", None)
    if fused is not None:
        return fused(x, p["running_mean"], p["running_var"], p["weight"], p["bias"], training=True, momentum=0.1, eps=EPS_NORM, act="relu")
    return F.relu(_batch_norm(F, x, p))


def _lamina_group_norm_silu(F, x, p, kw):
    fused = getattr(F, "group_norm_silu", None)
    if fused is not None:
        return fused(x, kw["num_groups"], p["weight"], p["bias"], eps=EPS_NORM)
    return F.silu(F.group_norm(x, kw["num_groups"], p["weight"], p["bias"], eps=EPS_NORM))


# --- residual add + norm, bias + activation, dropout + add (shapes.FUSED_MATRIX) --------
# The residual is a second input that needs a gradient: it travels as a
# learnable "param", so the harness makes it, gives it requires_grad and
# compares and times its gradient like a weight's.

def _residual(shape, dtype, device):
    g = torch.Generator(device=device).manual_seed(4321)
    return torch.randn(shape, generator=g, device=device, dtype=dtype)


def _add_norm_params(shape, dtype, device):
    return _row_params(shape, dtype, device) | {"residual": _residual(shape, dtype, device)}


def _add_rms_params(shape, dtype, device):
    return _rms_params(shape, dtype, device) | {"residual": _residual(shape, dtype, device)}


def _bias_params(shape, dtype, device):
    return {"bias": _affine(shape[-1], dtype, device)["bias"]}


def _dropout_add_params(shape, dtype, device):
    return {"residual": _residual(shape, dtype, device)}


def _torch_add(x, p, kw):
    """x + residual, with the branch dropout the cell asks for (none at 0)."""
    branch = TF.dropout(x, kw["dropout_p"], training=True) if kw["dropout_p"] > 0 else x
    return branch + p["residual"]


_TORCH_ACTS = {
    "gelu": lambda t, kw: TF.gelu(t, approximate=kw.get("approximate", "none")),
    "relu": lambda t, kw: TF.relu(t),
    "silu": lambda t, kw: TF.silu(t),
    "identity": lambda t, kw: t,
}


def _impl_of(name: str):
    return lambda F: f"fused:{name}" if getattr(F, name, None) is not None else "composed"


def _swish_torch(x, beta):
    return x * torch.sigmoid(beta * x)


OPS: dict[str, OpBench] = {
    "relu": OpBench(lambda x, p, kw: TF.relu(x), lambda F, x, p, kw: F.relu(x)),
    "leaky_relu": OpBench(
        lambda x, p, kw: TF.leaky_relu(x, kw["negative_slope"]),
        lambda F, x, p, kw: F.leaky_relu(x, kw["negative_slope"]),
    ),
    "prelu": OpBench(
        lambda x, p, kw: TF.prelu(x, p["weight"]),
        lambda F, x, p, kw: F.prelu(x, p["weight"]),
        _prelu_params, ("weight",),
    ),
    "sigmoid": OpBench(lambda x, p, kw: torch.sigmoid(x), lambda F, x, p, kw: F.sigmoid(x)),
    "tanh": OpBench(lambda x, p, kw: torch.tanh(x), lambda F, x, p, kw: F.tanh(x)),
    "gelu": OpBench(
        lambda x, p, kw: TF.gelu(x, approximate=kw["approximate"]),
        lambda F, x, p, kw: F.gelu(x, approximate=kw["approximate"]),
    ),
    "silu": OpBench(lambda x, p, kw: TF.silu(x), lambda F, x, p, kw: F.silu(x)),
    # PyTorch has no swish with a beta: the anchor is what a user writes
    "swish": OpBench(lambda x, p, kw: _swish_torch(x, kw["beta"]), lambda F, x, p, kw: F.swish(x, beta=kw["beta"])),
    "dropout": OpBench(
        lambda x, p, kw: TF.dropout(x, kw["p"], training=True),
        lambda F, x, p, kw: F.dropout(x, kw["p"], training=True),
        random=True,
    ),
    "layer_norm": OpBench(
        lambda x, p, kw: TF.layer_norm(x, x.shape[-1:], p["weight"], p["bias"], EPS_NORM),
        lambda F, x, p, kw: F.layer_norm(x, x.shape[-1:], p["weight"], p["bias"], EPS_NORM),
        _row_params, ("weight", "bias"),
    ),
    "rms_norm": OpBench(
        lambda x, p, kw: TF.rms_norm(x, x.shape[-1:], p["weight"], EPS_RMS),
        lambda F, x, p, kw: F.rms_norm(x, x.shape[-1:], p["weight"], EPS_RMS),
        _rms_params, ("weight",),
    ),
    "batch_norm": OpBench(
        lambda x, p, kw: TF.batch_norm(x, p["running_mean"], p["running_var"], p["weight"], p["bias"], True, 0.1, EPS_NORM),
        lambda F, x, p, kw: _batch_norm(F, x, p),
        _batch_norm_params, ("weight", "bias"),
    ),
    "batch_norm_relu": OpBench(
        lambda x, p, kw: TF.relu(TF.batch_norm(x, p["running_mean"], p["running_var"], p["weight"], p["bias"], True, 0.1, EPS_NORM)),
        _lamina_batch_norm_relu,
        _batch_norm_params, ("weight", "bias"),
        lamina_impl=_impl_of("batch_norm_act"),
    ),
    "group_norm": OpBench(
        lambda x, p, kw: TF.group_norm(x, kw["num_groups"], p["weight"], p["bias"], EPS_NORM),
        lambda F, x, p, kw: F.group_norm(x, kw["num_groups"], p["weight"], p["bias"], eps=EPS_NORM),
        _channel_params, ("weight", "bias"),
    ),
    "group_norm_silu": OpBench(
        lambda x, p, kw: TF.silu(TF.group_norm(x, kw["num_groups"], p["weight"], p["bias"], EPS_NORM)),
        _lamina_group_norm_silu,
        _channel_params, ("weight", "bias"),
        lamina_impl=_impl_of("group_norm_silu"),
    ),
    "instance_norm": OpBench(
        lambda x, p, kw: TF.instance_norm(x, eps=EPS_NORM),
        lambda F, x, p, kw: F.instance_norm(x, eps=EPS_NORM),
    ),
    "max_pool2d": OpBench(
        lambda x, p, kw: TF.max_pool2d(x, **kw),
        lambda F, x, p, kw: F.max_pool2d(x, **kw),
    ),
    "avg_pool2d": OpBench(
        lambda x, p, kw: TF.avg_pool2d(x, **kw),
        lambda F, x, p, kw: F.avg_pool2d(x, **kw),
    ),
    "adaptive_avg_pool2d": OpBench(
        lambda x, p, kw: TF.adaptive_avg_pool2d(x, kw["output_size"]),
        lambda F, x, p, kw: F.adaptive_avg_pool2d(x, kw["output_size"]),
    ),
    # fused cells beyond the DESIGN.md matrix: the anchor is the same composition in torch ops
    "add_layer_norm": OpBench(
        lambda x, p, kw: TF.layer_norm(_torch_add(x, p, kw), x.shape[-1:], p["weight"], p["bias"], EPS_NORM),
        lambda F, x, p, kw: F.add_layer_norm(x, p["residual"], x.shape[-1:], p["weight"], p["bias"], EPS_NORM,
                                             dropout_p=kw["dropout_p"], prenorm=kw["prenorm"]),
        _add_norm_params, ("residual", "weight", "bias"),
        shared_grad=True,
    ),
    "add_rms_norm": OpBench(
        lambda x, p, kw: TF.rms_norm(_torch_add(x, p, kw), x.shape[-1:], p["weight"], EPS_RMS),
        lambda F, x, p, kw: F.add_rms_norm(x, p["residual"], x.shape[-1:], p["weight"], EPS_RMS,
                                           dropout_p=kw["dropout_p"], prenorm=kw["prenorm"]),
        _add_rms_params, ("residual", "weight"),
        shared_grad=True,
    ),
    "bias_act": OpBench(
        lambda x, p, kw: _TORCH_ACTS[kw["act"]](x + p["bias"], kw),
        lambda F, x, p, kw: F.bias_act(x, p["bias"], act=kw["act"], approximate=kw.get("approximate", "none")),
        _bias_params, ("bias",),
    ),
    "dropout_add": OpBench(
        lambda x, p, kw: TF.dropout(x, kw["p"], training=True) + p["residual"],
        lambda F, x, p, kw: F.dropout_add(x, p["residual"], kw["p"], training=True),
        _dropout_add_params, ("residual",),
        random=True, shared_grad=True,
    ),
}


def make_params(op: str, shape, dtype, device) -> dict:
    bench = OPS[op]
    return bench.params(shape, dtype, device) if bench.params else {}


def lamina_impl(op: str) -> str:
    """'composed' or 'fused:<name>' for fused cells, '' for plain ops."""
    bench = OPS[op]
    if bench.lamina_impl is None:
        return ""
    import lamina.functional as F

    return bench.lamina_impl(F)


# --- the implementations, as fn(x, p) ------------------------------------------

def torch_fn(op: str, kw: dict) -> Callable:
    f = OPS[op].torch

    def eager(x, p):
        return f(x, p, kw)

    return eager


def lamina_fn(op: str, kw: dict) -> Callable:
    import lamina.functional as F

    f = OPS[op].lamina

    def run(x, p):
        return f(F, x, p, kw)

    return run


def compiled_fn(op: str, kw: dict) -> Callable:
    """torch.compile of the torch function (mode default, dynamic=False).
    The caller resets dynamo first, so each compile starts clean and never
    hits the recompile limit."""
    return torch.compile(torch_fn(op, kw), dynamic=False)


# --- Liger-Kernel: imported lazily; absent is fine ---------------------------------

_liger_state: dict = {}


def liger_version() -> str | None:
    """Liger-Kernel's version, or None when it cannot be imported."""
    if "version" not in _liger_state:
        try:
            import liger_kernel.ops  # noqa: F401  (fails without triton/CUDA support)

            from importlib.metadata import version

            try:
                _liger_state["version"] = version("liger-kernel")
            except Exception:
                _liger_state["version"] = "unknown"
        except Exception as exc:  # not installed or broken: no Liger anchor
            _liger_state["version"] = None
            _liger_state["error"] = f"{type(exc).__name__}: {exc}"
    return _liger_state["version"]


def liger_fn(op: str, kw: dict) -> Callable | None:
    """Liger's implementation of ``op`` as fn(x, p), or None where Liger has
    no such layer (it has LayerNorm, RMSNorm and GroupNorm among ours) or is
    not importable."""
    if op not in ("layer_norm", "rms_norm", "group_norm") or liger_version() is None:
        return None
    if op == "layer_norm":
        from liger_kernel.ops.layer_norm import LigerLayerNormFunction

        return lambda x, p: LigerLayerNormFunction.apply(x, p["weight"], p["bias"], EPS_NORM)
    if op == "rms_norm":
        from liger_kernel.ops.rms_norm import LigerRMSNormFunction

        # offset 0, casting 'llama' (Liger's default); in_place=False so the
        # fixed upstream gradient is not overwritten (it moves the same bytes)
        return lambda x, p: LigerRMSNormFunction.apply(x, p["weight"], EPS_RMS, 0.0, "llama", False)
    from liger_kernel.ops.group_norm import LigerGroupNormFunction

    groups = kw["num_groups"]
    return lambda x, p: LigerGroupNormFunction.apply(x, p["weight"], p["bias"], x.shape[1], groups, EPS_NORM)
