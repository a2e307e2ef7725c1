"""What a ReLU forward+backward's host time is made of, rung by rung, on a card.

Each rung adds one layer of what lamina.functional.relu does, on a tiny CUDA
tensor (GPU time negligible), timed with autograd's backward on its device
thread (PyTorch's default) and on the calling thread:

  torch            torch.relu (the anchor)
  Function+torch   a bare torch.autograd.Function whose forward/backward are torch ops
  Function+launch  the same Function launching lamina's two Triton kernels directly
  lamina kernels   the same Function calling lamina.kernels.activation's launchers
  lamina           lamina.functional.relu (LaminaOp, custom-op checks, the rest)

    PYTHONPATH=src python scripts/probe_host_ladder.py
"""

from __future__ import annotations

import statistics
import sys

import torch

sys.path.insert(0, "src")
import lamina.functional as F  # noqa: E402
from lamina.backend import kernels  # noqa: E402
from host_timing import TorchOpsRelu, per_call_us  # noqa: E402  (scripts/ is on the path when run as a script)

K = kernels("activation")
x = torch.randn(4096, device="cuda", requires_grad=True)
BLOCK, WARPS = K.elementwise_block(4), K.ELEMENTWISE_WARPS


class RawLaunch(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a):
        y = torch.empty_like(a)
        n = a.numel()
        K._activation_forward_kernel[((n + BLOCK - 1) // BLOCK,)](a, y, y, n, 0.0, ACT=0, WRITE_MASK=False,
                                                                  BLOCK=BLOCK, num_warps=WARPS)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        dx = torch.empty_like(y)
        n = y.numel()
        K._activation_backward_kernel[((n + BLOCK - 1) // BLOCK,)](dy, y, dx, n, 0.0, ACT=0, BLOCK=BLOCK,
                                                                   num_warps=WARPS)
        return dx


class Launchers(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a):
        y = K.relu_forward(a)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        return K.relu_backward(dy, y)


RUNGS = {
    "torch": torch.relu,
    "Function+torch": TorchOpsRelu.apply,
    "Function+launch": RawLaunch.apply,
    "lamina kernels": Launchers.apply,
    "lamina": F.relu,
}


def fwd_bwd_us(fn, reps=400):
    dy = torch.ones(4096, device="cuda")
    return per_call_us(lambda: fn(x).backward(dy), reps)


print(f"{'rung':18s} {'threads on':>12s} {'threads off':>12s}   (host us per fwd+bwd, median of 5 alternating rounds)")
results = {name: {True: [], False: []} for name in RUNGS}
for _ in range(5):
    for name, fn in RUNGS.items():
        for threads in (True, False):
            with torch.autograd.set_multithreading_enabled(threads):
                results[name][threads].append(fwd_bwd_us(fn))
for name in RUNGS:
    on, off = (statistics.median(results[name][t]) for t in (True, False))
    print(f"{name:18s} {on:12.1f} {off:12.1f}")
