"""Where a benchmark cell's time goes: GPU time per kernel (torch.profiler)
and host time per call, for lamina and torch eager, at the matrix's shapes.

A cell whose host time exceeds its GPU time is host-bound (the bench's
do_bench then times the host); one whose GPU time is far above the bytes it
must move has a slow kernel. Same cells and inputs as the benchmark
(lamina.bench.shapes / anchors).

    PYTHONPATH=src python scripts/probe_cells.py --ops bias_act,pooling --dtypes bf16 --modes fwdbwd
"""

from __future__ import annotations

import argparse
import collections
import time

import torch
from torch.profiler import ProfilerActivity, profile

from lamina.bench import anchors, shapes
from lamina.bench.correctness import TORCH_DTYPES


def kernel_us(step, reps=5):
    """{kernel name: GPU us per call} over ``reps`` calls after a warm-up."""
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            step()
        torch.cuda.synchronize()
    out = collections.defaultdict(float)
    for e in prof.key_averages():
        t = getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
        if t and "CUDA" in str(getattr(e, "device_type", "")):
            out[e.key[:48]] += t / reps
    return dict(out)


def host_us(step, reps=5):
    """Wall time of a call while the GPU is still busy with the previous
    ones: the host's cost (enqueueing never waits for the GPU here)."""
    step()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        step()
    us = (time.perf_counter() - t) / reps * 1e6
    torch.cuda.synchronize()
    return us


def cell_inputs(cell):
    """The benchmark's input (in the cell's layout) and parameters for
    ``cell`` on the GPU, from seed 0."""
    dtype = TORCH_DTYPES[cell.dtype]
    torch.manual_seed(0)
    x0 = torch.randn(cell.shape, device="cuda", dtype=dtype)
    if cell.layout == "channels_last":
        x0 = x0.contiguous(memory_format=torch.channels_last)
    return x0, anchors.make_params(cell.op, cell.shape, dtype, "cuda")


def cells_by_id(ids: str):
    """The matrix's cells whose ids are in the comma-separated ``ids``."""
    wanted = [i for i in ids.split(",") if i]
    return [c for c in shapes.bench_matrix() if c.id in wanted]


def implementations(cell):
    """(("lamina", fn), ("eager", fn)): the two sides a probe compares."""
    return (("lamina", anchors.lamina_fn(cell.op, cell.kw)), ("eager", anchors.torch_fn(cell.op, cell.kw)))


def make_step(fn, x0, p0, cell):
    op = anchors.OPS[cell.op]
    x = x0.detach().clone(memory_format=torch.preserve_format).requires_grad_(cell.mode == "fwdbwd")
    p = {k: v.detach().clone().requires_grad_(cell.mode == "fwdbwd" and k in op.learnable) for k, v in p0.items()}
    leaves = [x] + [p[k] for k in op.learnable] if cell.mode == "fwdbwd" else []
    if cell.mode == "fwd":
        return lambda: fn(x, p)
    dy = torch.randn_like(fn(x, p))

    def step():
        for t in leaves:
            t.grad = None
        if op.shared_grad:
            torch.autograd.grad(fn(x, p), leaves, dy)
        else:
            torch.autograd.backward(fn(x, p), dy)
    return step


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops")
    ap.add_argument("--dtypes")
    ap.add_argument("--modes")
    args = ap.parse_args()
    cells = shapes.select(shapes.bench_matrix(), shapes.parse_list(args.ops), shapes.parse_dtypes(args.dtypes),
                          shapes.parse_list(args.modes))
    for cell in cells:
        x0, p0 = cell_inputs(cell)
        line = [f"{cell.id:46s}"]
        for who, fn in implementations(cell):
            step = make_step(fn, x0, p0, cell)
            k = kernel_us(step)
            line.append(f"{who} gpu {sum(k.values()):7.0f} host {host_us(step):6.0f}")
            if who == "lamina":
                parts = "; ".join(f"{n} {us:.0f}" for n, us in sorted(k.items(), key=lambda kv: -kv[1]))
        print(" | ".join(line) + "\n      lamina kernels: " + parts, flush=True)
        del x0, p0
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
