"""What the card sweeps (scripts/tune_*.py) share: one timer, one unit, one
header line."""

from __future__ import annotations

import torch
from triton.testing import do_bench


def bench(fn) -> float:
    """Median milliseconds of ``fn`` on the card (do_bench flushes L2 between repetitions)."""
    return do_bench(fn, warmup=5, rep=20, return_mode="median")


def gbs(nbytes: float, ms: float) -> int:
    """GB/s of ``nbytes`` moved in ``ms`` milliseconds."""
    return round(nbytes / ms / 1e6)


def copy_gbs(x: torch.Tensor) -> int:
    """GB/s of a device copy of ``x`` (read + write): the roof a sweep is read against."""
    out = torch.empty_like(x)
    return gbs(2 * x.numel() * x.element_size(), bench(lambda: out.copy_(x)))


def row_inputs(m: int, n: int, dtype: torch.dtype):
    """(x, dy, weight, bias, bytes of x) of a row norm over (m, n) rows on the card."""
    x = torch.randn(m, n, device="cuda", dtype=dtype)
    dy = torch.randn_like(x)
    w = torch.randn(n, device="cuda", dtype=dtype)
    b = torch.randn(n, device="cuda", dtype=dtype)
    return x, dy, w, b, x.numel() * x.element_size()


def print_header() -> None:
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
