"""Sweep the row-norm launch shapes on the card: LayerNorm and RMSNorm
forward and backward launchers (kernels/normalization.py) timed alone,
do_bench median, at the benchmark matrix's (32768, 4096) and (131072, 1024),
fp32 and bf16, next to torch.compile of the same function and a copy.
The forward cells of the 05:19 matrix (h200-20261128-session6) sat at
0.86-0.92 of copy in fp32 while torch.compile reached ~0.98, with the
kernels' time well above the host's: a launch shape question. One line per
case: the default config first, then every config, GB/s of the textbook
bytes (forward 2n, backward 3n); the best becomes the default. The backward
is timed with its software pipeline (the config's prefetch) off and on.

    PYTHONPATH=src python scripts/tune_row_norm.py [--quick]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as TF

from lamina.kernels import normalization as N
from sweep import bench, copy_gbs, gbs, print_header, row_backward_sweep, row_inputs

SHAPES = [(32768, 4096), (131072, 1024)]
FORWARD = [(rows, warps) for rows in (1, 2, 4, 8, 16) for warps in (4, 8, 16)]
BACKWARD = [(rows, warps, per_sm) for rows in (1, 2, 4, 8) for warps in (4, 8, 16) for per_sm in (1, 2, 4)]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="fewer configs")
    p.add_argument("--no-compile", action="store_true")
    args = p.parse_args()
    default_fwd, default_bwd = N._row_forward_config, N._row_backward_config
    print_header()
    for dtype in (torch.float32, torch.bfloat16):
        for m, n in SHAPES:
            x, dy, w, b, size = row_inputs(m, n, dtype)
            copy = copy_gbs(x)
            for rms in (False, True):
                name = f"{'rms' if rms else 'ln'} {m}x{n} {str(dtype)[6:]}"
                bias = None if rms else b
                line = [f"{name}: copy {copy}"]
                if not args.no_compile:
                    fn = (lambda t: TF.rms_norm(t, (n,), w)) if rms else (lambda t: TF.layer_norm(t, (n,), w, b))
                    compiled = torch.compile(fn)
                    compiled(x)
                    line.append(f"compile fwd {gbs(2 * size, bench(lambda: compiled(x)))}")
                N._row_forward_config = default_fwd
                y, mean, rstd = N.row_norm_forward(x, (n,), w, bias, 1e-5, rms)
                line.append(f"lamina fwd {gbs(2 * size, bench(lambda: N.row_norm_forward(x, (n,), w, bias, 1e-5, rms)))} "
                            f"{default_fwd(n, x.element_size())}")
                back = (lambda: N.row_norm_backward(dy, x, (n,), w, mean, rstd, not rms, rms))
                line.append(f"bwd {gbs(3 * size, bench(back))} {default_bwd(n, x.element_size())}")
                flipped = default_bwd(n, x.element_size())[:5] + (not default_bwd(n, x.element_size())[5],)
                N._row_backward_config = (lambda n_, e_, c=flipped: c)
                line.append(f"bwd prefetch={flipped[5]} {gbs(3 * size, bench(back))}")
                N._row_backward_config = default_bwd
                print(" | ".join(line), flush=True)
                block = N.row_block(n)
                fwd_row = []
                for rows, warps in FORWARD[::2] if args.quick else FORWARD:
                    if rows * block > 16384 or rows * block < 32 * warps:
                        continue
                    N._row_forward_config = (lambda n_, e_, r=rows, wp=warps: (r, block, False, wp))
                    ms = bench(lambda: N.row_norm_forward(x, (n,), w, bias, 1e-5, rms))
                    fwd_row.append(f"{rows}/{warps}:{gbs(2 * size, ms)}")
                N._row_forward_config = default_fwd
                print("   fwd rows/warps:GB/s  " + " ".join(fwd_row), flush=True)
                configs = [(rows, warps, per_sm) for rows, warps, per_sm in (BACKWARD[::3] if args.quick else BACKWARD)
                           if 32 * warps <= rows * block <= 8192]
                print("   bwd rows/warps/per_sm:GB/s plain/prefetch  "
                      + row_backward_sweep(configs, block, back, 3 * size), flush=True)
            del x, dy


if __name__ == "__main__":
    main()
