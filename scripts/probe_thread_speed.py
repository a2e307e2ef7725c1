"""Is Python slower on autograd's device thread, and if so which kind of work?

Runs three workloads inside a custom autograd Function's backward (on the
CUDA device thread, and with autograd's multithreading off: on the calling
thread) and directly on the main thread, timing only the workload:
  python  a pure-Python loop (no C call that releases the GIL)
  empty   torch.empty on the GPU (a dispatcher call that releases the GIL)
  launch  a small in-place CUDA op (dispatcher call + kernel launch)
  triton  a trivial Triton kernel through Triton's own launch path
  fast    the same kernel through lamina's fast launcher (kernels/fast_launch.py)
If `python` is as fast everywhere but `empty`/`launch` are slower on the
device thread, the cost is in giving up and taking back the GIL there.

    python scripts/probe_thread_speed.py
"""

from __future__ import annotations

import statistics
import time
import types

import torch
import triton
import triton.language as tl


def python_work(n=2000):
    s = 0
    for i in range(n):
        s += i
    return s


def empty_work(n=50):
    for _ in range(n):
        torch.empty(16, device="cuda")


_small = None


def launch_work(n=50):
    for _ in range(n):
        _small.add_(1.0)


@triton.jit
def _add_one_kernel(x_ptr, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    ok = offs < n
    tl.store(x_ptr + offs, tl.load(x_ptr + offs, mask=ok) + 1.0, mask=ok)


@triton.jit
def _add_one_fast_kernel(x_ptr, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    ok = offs < n
    tl.store(x_ptr + offs, tl.load(x_ptr + offs, mask=ok) + 1.0, mask=ok)


def triton_work(n=50):
    for _ in range(n):
        _add_one_kernel[(1,)](_small, 16, BLOCK=16)


def fast_work(n=50):
    for _ in range(n):
        _add_one_fast_kernel[(1,)](_small, 16, BLOCK=16)


WORK = {"python": python_work, "empty": empty_work, "launch": launch_work, "triton": triton_work, "fast": fast_work}
_spent = []


class Probe(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, name):
        ctx.name = name
        return x.clone()

    @staticmethod
    def backward(ctx, dy):
        t = time.perf_counter()
        WORK[ctx.name]()
        _spent.append(time.perf_counter() - t)
        return dy, None


def in_backward(name, threads: bool, reps=200):
    x = torch.randn(16, device="cuda", requires_grad=True)
    _spent.clear()
    with torch.autograd.set_multithreading_enabled(threads):
        for _ in range(reps):
            Probe.apply(x, name).sum().backward()
    torch.cuda.synchronize()
    return statistics.median(_spent[10:]) * 1e6


def on_main(name, reps=200):
    spent = []
    for _ in range(reps):
        t = time.perf_counter()
        WORK[name]()
        spent.append(time.perf_counter() - t)
    torch.cuda.synchronize()
    return statistics.median(spent[10:]) * 1e6


def main():
    global _small
    _small = torch.zeros(16, device="cuda")
    from lamina.kernels import fast_launch

    fast_launch.install(types.SimpleNamespace(kernel=_add_one_fast_kernel))
    for name in WORK:
        WORK[name]()
    for name in WORK:
        dev = in_backward(name, True)
        calling = in_backward(name, False)
        main_thread = on_main(name)
        print(f"{name:7s} device thread {dev:8.1f} us | backward on calling thread {calling:8.1f} us | "
              f"main thread, no autograd {main_thread:8.1f} us", flush=True)


if __name__ == "__main__":
    main()
