"""Sweep the persistent GroupNorm kernels' launch shape on the card: forward
and backward launchers (kernels/normalization.py) timed alone, do_bench
median, at the benchmark's 16x512x64x64 with 32 groups, fp32 and bf16,
plain and with SiLU (GroupNormAct). probe_cells on an H200 (this session)
put the fp32 forward at 94 us plain and 137 us with SiLU: one program an SM
leaves the activation's arithmetic unhidden. One line per case: the
default (programs per SM, tile, warps) first, then every config, GB/s of
the textbook bytes (forward 2n, backward 3n).

    PYTHONPATH=src python scripts/tune_group_norm.py
"""

from __future__ import annotations

import torch

from lamina.kernels import normalization as N
from lamina.kernels.activation import IDENTITY, SWISH
from sweep import bench, gbs, print_header

CONFIGS = [(per_sm, tile, warps) for per_sm in (1, 2, 4) for tile in (4096, 8192, 16384) for warps in (4, 8, 16)]


def main() -> None:
    default_fwd, default_bwd = N._GN_PERSISTENT_FORWARD, N._GN_PERSISTENT_BACKWARD
    print_header()
    groups = 32
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(16, 512, 64, 64, device="cuda", dtype=dtype)
        dy = torch.randn_like(x)
        w = torch.randn(512, device="cuda", dtype=dtype)
        b = torch.randn(512, device="cuda", dtype=dtype)
        size = x.numel() * x.element_size()
        for act, name in ((IDENTITY.value, "plain"), (SWISH.value, "silu")):
            N._GN_PERSISTENT_FORWARD, N._GN_PERSISTENT_BACKWARD = default_fwd, default_bwd
            fwd = (lambda: N.group_norm_forward(x, groups, w, b, 1e-5, act=act, act_param=1.0))
            y, mean, rstd = fwd()
            bwd = (lambda: N.group_norm_backward(dy, x, groups, w, mean, rstd, True, bias=b, act=act, act_param=1.0))
            key = (x.element_size() >= 4, act != IDENTITY.value)
            print(f"{name} {str(dtype)[6:]}: default fwd {gbs(2 * size, bench(fwd))} {default_fwd[key]} | "
                  f"bwd {gbs(3 * size, bench(bwd))} {default_bwd[key]}", flush=True)
            fwd_row, bwd_row = [], []
            for cfg in CONFIGS:
                N._GN_PERSISTENT_FORWARD = N._GN_PERSISTENT_BACKWARD = cfg
                fwd_row.append(f"{cfg[0]}/{cfg[1]}/{cfg[2]}:{gbs(2 * size, bench(fwd))}")
                bwd_row.append(f"{cfg[0]}/{cfg[1]}/{cfg[2]}:{gbs(3 * size, bench(bwd))}")
            N._GN_PERSISTENT_FORWARD, N._GN_PERSISTENT_BACKWARD = default_fwd, default_bwd
            print("   fwd per_sm/tile/warps:GB/s  " + " ".join(fwd_row), flush=True)
            print("   bwd per_sm/tile/warps:GB/s  " + " ".join(bwd_row), flush=True)
        del x, dy


if __name__ == "__main__":
    main()
