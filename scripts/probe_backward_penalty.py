"""What makes a forward+backward with a Python autograd node cost more host
time when autograd runs the backward on its CUDA device thread?

Per-call work is no slower on that thread (scripts/probe_thread_speed.py),
yet lamina's batch norm forward+backward takes ~2x the host time with the
device thread on. Host time per step (probe_cells.host_us, median of several
runs) for:
  - the benchmark cells given (lamina and eager), device thread on / off,
    Python's cyclic garbage collector on / off;
  - synthetic autograd Functions whose backward returns (a) dy itself,
    (b) three tensors made in Python, (c) dy after three Triton launches.

    python scripts/probe_backward_penalty.py --cells batch_norm2d-32x64x56x56-bf16-contig-fwdbwd
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import types

import torch
import triton
import triton.language as tl

sys.path.insert(0, os.path.dirname(__file__))
from probe_cells import cell_inputs, cells_by_id, implementations, host_us, make_step  # noqa: E402



@triton.jit
def _touch_kernel(x_ptr, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    ok = offs < n
    tl.store(x_ptr + offs, tl.load(x_ptr + offs, mask=ok) * 1.0, mask=ok)


class ReturnDy(torch.autograd.Function):
    """forward: a copy of x; backward: dy itself. The others change backward."""

    @staticmethod
    def forward(ctx, x, w, b):
        return x.clone()

    @staticmethod
    def backward(ctx, dy):
        return dy, None, None


class ThreeNew(ReturnDy):
    @staticmethod
    def backward(ctx, dy):
        return torch.empty_like(dy), torch.empty(16, device=dy.device), torch.empty(16, device=dy.device)


class ThreeLaunches(ReturnDy):
    @staticmethod
    def backward(ctx, dy):
        for _ in range(3):
            _touch_kernel[(1,)](dy, 16, BLOCK=16)
        return dy, None, None


def timed(step):
    """(device thread, calling thread) host us a step, median of 5 measurements."""
    out = []
    for threads in (True, False):
        with torch.autograd.set_multithreading_enabled(threads):
            out.append(statistics.median(host_us(step, reps=20) for _ in range(5)))
    return out


def report(label, step):
    on, off = timed(step)
    gc.disable()
    try:
        on_nogc, off_nogc = timed(step)
    finally:
        gc.enable()
    print(f"{label:58s} device thread {on:7.0f} calling {off:7.0f} | gc off: {on_nogc:7.0f} {off_nogc:7.0f}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", default="")
    args = ap.parse_args()
    from lamina.kernels import fast_launch

    fast_launch.install(types.SimpleNamespace(kernel=_touch_kernel))
    x = torch.randn(16, device="cuda", requires_grad=True)
    w = torch.randn(16, device="cuda", requires_grad=True)
    b = torch.randn(16, device="cuda", requires_grad=True)
    dy = torch.randn(16, device="cuda")
    for fn in (ReturnDy, ThreeNew, ThreeLaunches):
        def step(fn=fn):
            for t in (x, w, b):
                t.grad = None
            torch.autograd.backward(fn.apply(x, w, b), dy)
        report(fn.__name__, step)

    for cell in cells_by_id(args.cells):
        x0, p0 = cell_inputs(cell)
        for who, fn in implementations(cell):
            report(f"{cell.id} {who}", make_step(fn, x0, p0, cell))
        del x0, p0
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
