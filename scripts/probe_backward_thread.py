"""Why a Triton launch costs more on autograd's backward thread than on the
calling thread (bench/results/h200-20261128-host: ReLU forward+backward 209 us
with the device thread, 97 us without, where torch ops in the same Function
cost 146 / 104). The backward here is split into timed segments -- the
allocation, the device query, Triton's binder, the stream query, the compiled
launcher -- and each is accumulated separately with autograd's threads on and
off, next to the same backward made of one torch op.

    PYTHONPATH=src python scripts/probe_backward_thread.py
"""

from __future__ import annotations

import collections
import time

import torch

from lamina.backend import kernels

K = kernels("activation")
N = 4096
BLOCK, WARPS = K.elementwise_block(4), K.ELEMENTWISE_WARPS
GRID = ((N + BLOCK - 1) // BLOCK,)
KERNEL = K._activation_backward_kernel
segments: dict = collections.defaultdict(float)
clock = time.perf_counter_ns


def compiled_kernel(dy, y, dx):
    """The compiled backward kernel (one ordinary launch first)."""
    return KERNEL[GRID](dy, y, dx, N, 0.0, ACT=0, BLOCK=BLOCK, num_warps=WARPS)


class ReluForward(torch.autograd.Function):
    """torch's relu forward, saving y; the subclasses time their backward."""

    @staticmethod
    def forward(ctx, a):
        y = torch.relu(a)
        ctx.save_for_backward(y)
        return y


class Segmented(ReluForward):
    @staticmethod
    def backward(ctx, dy):
        t0 = clock()
        (y,) = ctx.saved_tensors
        t1 = clock()
        dx = torch.empty_like(y)
        t2 = clock()
        device = torch.cuda.current_device()
        t3 = clock()
        binder = KERNEL.device_caches[device][4]
        bound, _, _ = binder(dy, y, dx, N, 0.0, ACT=0, BLOCK=BLOCK, num_warps=WARPS)
        t4 = clock()
        stream = torch._C._cuda_getCurrentRawStream(device)
        t5 = clock()
        kernel = COMPILED[0]
        kernel.run(GRID[0], 1, 1, stream, kernel.function, kernel.packed_metadata, None, None, None, *bound.values())
        t6 = clock()
        for name, a, b in (("saved_tensors", t0, t1), ("empty_like", t1, t2), ("current_device", t2, t3),
                           ("binder", t3, t4), ("raw stream", t4, t5), ("kernel.run", t5, t6)):
            segments[name] += b - a
        segments["calls"] += 1
        return dx


class TorchOp(ReluForward):
    @staticmethod
    def backward(ctx, dy):
        t0 = clock()
        (y,) = ctx.saved_tensors
        dx = dy * (y > 0)
        segments["torch backward body"] += clock() - t0
        segments["calls"] += 1
        return dx


x = torch.randn(N, device="cuda", requires_grad=True)
g = torch.ones(N, device="cuda")
COMPILED = [compiled_kernel(g, x.detach(), torch.empty_like(g))]


def measure(fn, threads: bool, reps: int = 400):
    segments.clear()
    with torch.autograd.set_multithreading_enabled(threads):
        for _ in range(20):
            fn(x).backward(g)
        torch.cuda.synchronize()
        segments.clear()
        total = 0
        for _ in range(reps):
            t = clock()
            fn(x).backward(g)
            total += clock() - t
        torch.cuda.synchronize()
    calls = segments.pop("calls")
    return total / reps / 1e3, {k: v / calls / 1e3 for k, v in segments.items()}


for fn, name in ((Segmented.apply, "Triton launch, segmented"), (TorchOp.apply, "torch op")):
    for threads in (True, False, True, False):
        total, parts = measure(fn, threads)
        body = ", ".join(f"{k} {v:.1f}" for k, v in parts.items())
        print(f"{name:26s} threads {'on ' if threads else 'off'}: {total:6.1f} us a fwd+bwd | {body}", flush=True)


# --- where lamina's own forward+backward spends its host time -------------
# Python 3.12's cProfile sits on sys.monitoring, which sees every thread, so
# one profile around the calls also covers the backward formulas run on
# autograd's device thread.
import cProfile  # noqa: E402
import io  # noqa: E402
import pstats  # noqa: E402

import lamina.functional as F  # noqa: E402

w = torch.ones(64, device="cuda", requires_grad=True)
b = torch.zeros(64, device="cuda", requires_grad=True)
xi = torch.randn(2, 64, 8, 8, device="cuda", requires_grad=True)
rm, rv = torch.zeros(64, device="cuda"), torch.ones(64, device="cuda")
for name, call in (("relu", lambda: F.relu(x).backward(g)),
                   ("batch_norm", lambda: F.batch_norm(xi, rm, rv, w, b, training=True).backward(torch.ones_like(xi)))):
    for threads in (True, False):
        with torch.autograd.set_multithreading_enabled(threads):
            for _ in range(20):
                call()
            torch.cuda.synchronize()
            t = clock()
            for _ in range(300):
                call()
            torch.cuda.synchronize()
            plain = (clock() - t) / 300 / 1e3
            profile = cProfile.Profile()
            profile.enable()
            for _ in range(300):
                call()
            profile.disable()
            torch.cuda.synchronize()
        s = io.StringIO()
        pstats.Stats(profile, stream=s).sort_stats("tottime").print_stats(22)
        body = "\n".join(s.getvalue().splitlines()[2:34])
        print(f"=== lamina {name}, threads {'on' if threads else 'off'}: {plain:.1f} us a fwd+bwd (no profiler)\n{body}", flush=True)
