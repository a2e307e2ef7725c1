"""How a cell is timed, and the roof it is compared with.

``triton.testing.do_bench`` with the median: it flushes L2 before every
repetition and, given ``grad_to_none``, sets those tensors' ``.grad`` to None
before each one, so gradient accumulation is never timed. The roof is a
device-to-device copy of a 1 GiB buffer (read + write bytes) in the same run.

The timer can be replaced (:func:`use_timer`) so the harness can be run end
to end without a GPU.
"""

from __future__ import annotations

from typing import Callable

import torch

# do_bench's budgets in milliseconds: warmup, then repetitions. A cell's
# implementations each take about warmup + rep + 5 estimate runs.
FULL = (25, 100)
QUICK = (5, 25)

COPY_BYTES = 1 << 30


def do_bench_median(fn: Callable, grad_to_none=None, quick: bool = False) -> float:
    from triton.testing import do_bench

    warmup, rep = QUICK if quick else FULL
    return float(do_bench(fn, warmup=warmup, rep=rep, grad_to_none=grad_to_none, return_mode="median"))


def fake_timer(fn: Callable, grad_to_none=None, quick: bool = False) -> float:
    """Runs fn once and claims it took 1 ms: for exercising the harness only."""
    fn()
    if grad_to_none:
        for t in grad_to_none:
            t.grad = None
    return 1.0


_timer: list = [do_bench_median]


def use_timer(timer: Callable) -> None:
    _timer[0] = timer


def time_ms(fn: Callable, grad_to_none=None, quick: bool = False) -> float:
    """Median milliseconds of one call of fn."""
    return _timer[0](fn, grad_to_none=grad_to_none, quick=quick)


def copy_gbps(device: str = "cuda", nbytes: int = COPY_BYTES, quick: bool = False) -> tuple[float, float]:
    """(GB/s, ms) of a device-to-device copy of ``nbytes``: read + write bytes."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    src.fill_(1)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), quick=quick)
    del src, dst
    return 2 * nbytes / (ms * 1e-3) / 1e9, ms
