"""Sweep the pooling kernels' tile (kernels/pooling.py TILE, WARPS) on the
card: forward and backward launchers timed alone (do_bench median), at the
benchmark's 64x64x112x112, NCHW and channels_last, fp32 and bf16, against
torch eager. One line per case and config; the best becomes the default.

    PYTHONPATH=src python scripts/tune_pooling.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as TF
from triton.testing import do_bench

from lamina.kernels import pooling as P

CASES = [  # name, kernel, stride, padding
    ("max 3x3/s2", True, 3, 2, 1),
    ("max 2x2/s2", True, 2, 2, 0),
    ("avg 2x2/s2", False, 2, 2, 0),
]
CONFIGS = [(1024, 4), (2048, 4), (2048, 8), (4096, 8)]


def out_size(n, k, s, p):
    return (n + 2 * p - k) // s + 1


for dtype in (torch.float32, torch.bfloat16):
    for cl in (False, True):
        x = torch.randn(64, 64, 112, 112, device="cuda", dtype=dtype)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        for name, is_max, k, s, p in CASES:
            o = out_size(112, k, s, p)
            ref = (lambda: TF.max_pool2d(x, k, s, p)) if is_max else (lambda: TF.avg_pool2d(x, k, s, p))
            torch_ms = do_bench(ref, warmup=10, rep=40, return_mode="median")
            row = []
            for tile, warps in CONFIGS:
                P.TILE, P.WARPS = tile, warps
                if is_max:
                    fwd = lambda: P.max_pool2d_forward(x, (k, k), (s, s), (p, p), (1, 1), (o, o), False)  # noqa: E731
                    y, pos, _ = fwd()
                    bwd = lambda: P.max_pool2d_backward(y, pos, x.shape, (k, k), (s, s), (p, p), (1, 1), cl)  # noqa: E731
                else:
                    fwd = lambda: P.avg_pool2d_forward(x, (k, k), (s, s), (p, p), (o, o), True, None)  # noqa: E731
                    y = fwd()
                    bwd = lambda: P.avg_pool2d_backward(y, x.shape, (k, k), (s, s), (p, p), True, None, cl)  # noqa: E731
                f = do_bench(fwd, warmup=10, rep=40, return_mode="median")
                b = do_bench(bwd, warmup=10, rep=40, return_mode="median")
                row.append(f"{tile}/{warps}: {f * 1e3:5.0f}+{b * 1e3:5.0f}")
            print(f"{str(dtype)[6:]:8s} {'cl' if cl else 'nchw':4s} {name:11s} torch fwd {torch_ms * 1e3:5.0f} us | "
                  + " | ".join(row), flush=True)
P.TILE, P.WARPS = 1024, 4
