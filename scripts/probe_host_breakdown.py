"""Where a lamina layer's host time goes, thread by thread, on a card.

A forward+backward on tiny CUDA tensors (GPU time negligible) is split into
  launch   time inside Triton's JITFunction.run (binder, cache key, launcher)
  alloc    time inside torch.empty / empty_like / zeros called from lamina
  op       time inside lamina's forward and backward op functions, less the two above
  other    the rest: autograd, the functional wrapper, torch's own ops
each on the main thread and on autograd's backward thread. Then three
calibrations, each on both threads: a fixed pure-Python workload, one Triton
launch of a 12-argument kernel, one torch.empty.

    PYTHONPATH=src python scripts/probe_host_breakdown.py
    (TRITON_INTERPRET=1 LAMINA_BACKEND=triton on a machine without a GPU: a smoke run)
"""

from __future__ import annotations

import collections
import threading
import time

import torch
import torch.nn.functional as TF
import triton
import triton.language as tl
from triton.runtime.jit import JITFunction

import lamina
import lamina.functional as F
from lamina import custom_op

MAIN = threading.main_thread().ident
spent = collections.defaultdict(float)  # (bucket, thread) -> seconds
depth = threading.local()


def _thread() -> str:
    return "main" if threading.get_ident() == MAIN else "bwd"


def _timed(bucket, fn):
    """fn, its time added to ``bucket`` (outermost calls only: an op's
    backward formula calls the backward op, both timed)."""
    def wrapper(*args, **kwargs):
        if getattr(depth, bucket, False):
            return fn(*args, **kwargs)
        setattr(depth, bucket, True)
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[bucket, _thread()] += time.perf_counter() - t
            setattr(depth, bucket, False)
    return wrapper


# launches and allocations, timed wherever lamina calls them
JITFunction.run = _timed("launch", JITFunction.run)
for name in (("empty", "empty_like", "zeros") if torch.cuda.is_available() else ()):  # the interpreter trips on wrapped allocators
    setattr(torch, name, _timed("alloc", getattr(torch, name)))
# lamina's op bodies (forward in the main thread, backward formula in the
# bwd thread): the eager autograd.Function reads op.fn / op.backward per call
for value in vars(F).values():
    if isinstance(value, custom_op.LaminaOp):
        value.fn = _timed("op", value.fn)
        if value.backward is not None:
            value.backward = _timed("op", value.backward)


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: a smoke run under the interpreter
sync = torch.cuda.synchronize if DEVICE == "cuda" else (lambda: None)


def leaf(*shape):
    return torch.randn(*shape, device=DEVICE, requires_grad=True)


def per_call(fn, reps=300):
    for _ in range(20):
        fn()
    sync()
    spent.clear()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    sync()
    total = (time.perf_counter() - t) / reps * 1e6
    return total, {k: v / reps * 1e6 for k, v in spent.items()}


x1, x2, x4 = leaf(4096), leaf(64, 768), leaf(4, 8, 6, 6)
w768, b768, w8, b8 = leaf(768), leaf(768), leaf(8), leaf(8)
bn = lamina.nn.BatchNorm2d(8).to(DEVICE)
tbn = torch.nn.BatchNorm2d(8).to(DEVICE)
cases = {  # name: (lamina call, torch call, leaves)
    "relu": (lambda: F.relu(x1), lambda: TF.relu(x1), [x1]),
    "layer_norm": (lambda: F.layer_norm(x2, (768,), w768, b768), lambda: TF.layer_norm(x2, (768,), w768, b768),
                   [x2, w768, b768]),
    "batch_norm": (lambda: bn(x4), lambda: tbn(x4), [x4, bn.weight, bn.bias]),  # torch's own leaves below
    "group_norm": (lambda: F.group_norm(x4, 2, w8, b8), lambda: TF.group_norm(x4, 2, w8, b8), [x4, w8, b8]),
    "max_pool2d": (lambda: F.max_pool2d(x4, 3, 2, 1), lambda: TF.max_pool2d(x4, 3, 2, 1), [x4]),
}
print(f"{'op':12s} {'total':>7s} | {'launch':>13s} {'alloc':>13s} {'op':>13s} | {'other':>6s} {'torch':>7s}  (host us per fwd+bwd; main/bwd)")
for name, (call, torch_call, leaves) in cases.items():
    dy = torch.randn_like(call())

    def step(call=call, dy=dy, leaves=leaves):
        torch.autograd.grad(call(), leaves, dy)

    torch_leaves = [x4, tbn.weight, tbn.bias] if name == "batch_norm" else leaves
    torch_total, _ = per_call(lambda: step(torch_call, leaves=torch_leaves))
    total, parts = per_call(step)
    launch = [parts.get(("launch", t), 0.0) for t in ("main", "bwd")]
    alloc = [parts.get(("alloc", t), 0.0) for t in ("main", "bwd")]
    op = [parts.get(("op", t), 0.0) - launch[i] - alloc[i] for i, t in enumerate(("main", "bwd"))]
    other = total - sum(launch) - sum(alloc) - sum(op)
    fmt = lambda v: f"{v[0]:6.1f}/{v[1]:6.1f}"
    print(f"{name:12s} {total:7.1f} | {fmt(launch)} {fmt(alloc)} {fmt(op)} | {other:6.1f} {torch_total:7.1f}")


# --- calibrations: the same work on the main thread and inside a backward ---

@triton.jit
def _twelve_args(a, b, c, d, e, f, n0, n1, n2, n3, n4, eps, BLOCK: tl.constexpr, FLAG: tl.constexpr):
    i = tl.arange(0, BLOCK)
    tl.store(b + i, tl.load(a + i, mask=i < n0) * eps, mask=i < n0)


buf = [torch.empty(1024, device=DEVICE) for _ in range(6)]


def launches(k=50):
    for _ in range(k):
        _twelve_args[(1,)](*buf, 64, 3, 5, 7, 9, 0.5, BLOCK=128, FLAG=True)


def allocs(k=50):
    for _ in range(k):
        torch.empty(1000, device=DEVICE)


def python_work(k=50):
    for _ in range(k):
        d = {}
        for i in range(100):
            d[i] = i * 2
        sum(d.values())


class InBackward(torch.autograd.Function):
    work = None

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        t = time.perf_counter()
        InBackward.work()
        InBackward.seconds += time.perf_counter() - t
        return g


launches(5)
z = torch.zeros(4, device=DEVICE, requires_grad=True)
print(f"{'calibration (us each, of 50)':30s} {'main':>8s} {'bwd':>8s}")
for name, work in (("python (100 dict sets)", python_work), ("triton launch, 12 args", launches), ("torch.empty cuda", allocs)):
    best_main, best_bwd = 1e9, 1e9
    for _ in range(20):
        t = time.perf_counter()
        work()
        best_main = min(best_main, time.perf_counter() - t)
        InBackward.work, InBackward.seconds = work, 0.0
        InBackward.apply(z).sum().backward()
        best_bwd = min(best_bwd, InBackward.seconds)
    print(f"{name:30s} {best_main / 50 * 1e6:8.2f} {best_bwd / 50 * 1e6:8.2f}")
sync()
