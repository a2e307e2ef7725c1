"""What the card sweeps (scripts/tune_*.py) share: one timer, one unit, one
header line, the row-norm backward sweep."""

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


def row_backward_sweep(configs, block: int, backward, nbytes: float) -> str:
    """Each row-norm backward config (ROWS, warps, programs an SM) timed with
    the software pipeline off and on (normalization._row_backward_config
    overridden, the tuned one restored): "rows/warps/per_sm:plain/prefetch"
    GB/s entries of ``backward`` moving ``nbytes``."""
    from lamina.kernels import normalization as N

    tuned = N._row_backward_config
    entries = []
    try:
        for rows, warps, per_sm in configs:
            timed = []
            for prefetch in (False, True):
                N._row_backward_config = (lambda n_, e_, c=(rows, block, False, warps, per_sm, prefetch): c)
                timed.append(gbs(nbytes, bench(backward)))
            entries.append(f"{rows}/{warps}/{per_sm}:{timed[0]}/{timed[1]}")
    finally:
        N._row_backward_config = tuned
    return " ".join(entries)
