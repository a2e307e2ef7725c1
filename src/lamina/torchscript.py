"""TorchScript forms of lamina's functionals: torch.jit.script of code that
calls them compiles PyTorch's op in their place.

TorchScript compiles a called Python function from its source, and lamina's
functionals are not TorchScript (custom ops, NumPy, Triton). Each functional
below gets, as ``__wrapped__``, a twin of the same signature written in
PyTorch's ops; TorchScript reads a function's source and signature through
``inspect``, which follows ``__wrapped__``, so it compiles the twin under the
functional's name, and the scripted code saves and loads like any other.
Eager calls never see the twin. (lamina's modules script through their own
``_torch_forward``, nn.py.)

Left out: max_pool2d and adaptive_max_pool2d (their return type depends on
return_indices, which PyTorch scripts through two overloads), dropout
(keyword-only generator and seed), and the fused layers, which PyTorch does
not have.

The annotations are objects, not strings (this module does not postpone
them), and the bodies name only ``torch``: TorchScript resolves names in the
functional's own module, lamina.functional.
"""

import inspect
from typing import List, Optional

import torch
from torch import Tensor
from torch._jit_internal import BroadcastingList2


def relu(input: Tensor, inplace: bool = False) -> Tensor:
    return torch.nn.functional.relu(input, inplace)


def relu_(input: Tensor) -> Tensor:
    return torch.relu_(input)


def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    return torch.nn.functional.leaky_relu(input, negative_slope, inplace)


def leaky_relu_(input: Tensor, negative_slope: float = 0.01) -> Tensor:
    return torch.nn.functional.leaky_relu_(input, negative_slope)


def prelu(input: Tensor, weight: Tensor) -> Tensor:
    return torch.nn.functional.prelu(input, weight)


def sigmoid(input: Tensor) -> Tensor:
    return torch.sigmoid(input)


def tanh(input: Tensor) -> Tensor:
    return torch.tanh(input)


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    return torch.nn.functional.gelu(input, approximate=approximate)


def silu(input: Tensor, inplace: bool = False) -> Tensor:
    return torch.nn.functional.silu(input, inplace)


def swish(input: Tensor, beta: float = 1.0) -> Tensor:
    return input * torch.sigmoid(beta * input)


def batch_norm(input: Tensor, running_mean: Optional[Tensor], running_var: Optional[Tensor],
               weight: Optional[Tensor] = None, bias: Optional[Tensor] = None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    return torch.nn.functional.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)


def instance_norm(input: Tensor, running_mean: Optional[Tensor] = None, running_var: Optional[Tensor] = None,
                  weight: Optional[Tensor] = None, bias: Optional[Tensor] = None, use_input_stats: bool = True,
                  momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    return torch.nn.functional.instance_norm(input, running_mean, running_var, weight, bias, use_input_stats,
                                             momentum, eps)


def layer_norm(input: Tensor, normalized_shape: List[int], weight: Optional[Tensor] = None,
               bias: Optional[Tensor] = None, eps: float = 1e-5) -> Tensor:
    return torch.nn.functional.layer_norm(input, normalized_shape, weight, bias, eps)


def rms_norm(input: Tensor, normalized_shape: List[int], weight: Optional[Tensor] = None,
             eps: Optional[float] = None) -> Tensor:
    return torch.nn.functional.rms_norm(input, normalized_shape, weight, eps)


def group_norm(input: Tensor, num_groups: int, weight: Optional[Tensor] = None, bias: Optional[Tensor] = None,
               eps: float = 1e-5) -> Tensor:
    return torch.nn.functional.group_norm(input, num_groups, weight, bias, eps)


def avg_pool2d(input: Tensor, kernel_size: BroadcastingList2[int], stride: Optional[BroadcastingList2[int]] = None,
               padding: BroadcastingList2[int] = 0, ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: Optional[int] = None) -> Tensor:
    # (PyTorch's op takes no None stride: the window's size is its default)
    return torch.nn.functional.avg_pool2d(input, kernel_size, kernel_size if stride is None else stride, padding,
                                          ceil_mode, count_include_pad, divisor_override)


def adaptive_avg_pool2d(input: Tensor, output_size: BroadcastingList2[int]) -> Tensor:
    return torch.nn.functional.adaptive_avg_pool2d(input, output_size)


TWINS = (relu, relu_, leaky_relu, leaky_relu_, prelu, sigmoid, tanh, gelu, silu, swish, batch_norm, instance_norm,
         layer_norm, rms_norm, group_norm, avg_pool2d, adaptive_avg_pool2d)


def attach(functional) -> None:
    """Gives each functional of ``functional`` (the module) its twin, after
    checking that their parameters agree (names, kinds and defaults)."""
    for twin in TWINS:
        fn = getattr(functional, twin.__name__)
        ours = [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]
        theirs = [(p.name, p.kind, p.default) for p in inspect.signature(twin).parameters.values()]
        if ours != theirs:
            raise AssertionError(f"lamina.torchscript: {twin.__name__}'s twin has parameters {theirs}, not {ours}")
        fn.__wrapped__ = twin
