"""Sweep the fused add + layer/RMS norm launch shapes on the card: the
forward and backward launchers (kernels/fused.py) timed alone, do_bench
median, at the benchmark matrix's 32768x4096, fp32 and bf16, next to
torch.compile of the same composition and a copy. The add+norm kernels take
the row norm's tiles (tune_row_norm.py), tuned for one input stream; the
fused forward reads two and writes two, and its float32 cells of the
session-10 matrix sat at 0.95 of torch.compile. One line per case: the
default config first, then every config, GB/s of the textbook bytes
(forward 4n, backward 3n: dy, s in, ds out); the best becomes the default.

    PYTHONPATH=src python scripts/tune_add_norm.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as TF

from lamina.kernels import fused as K
from lamina.kernels import normalization as N
from sweep import bench, copy_gbs, gbs, print_header, row_backward_sweep, row_inputs

M, N_COLS = 32768, 4096
FORWARD = [(rows, warps) for rows in (1, 2, 4) for warps in (4, 8, 16)]
BACKWARD = [(rows, warps, per_sm) for rows in (1, 2) for warps in (4, 8, 16) for per_sm in (1, 2, 4)]


def main() -> None:
    default_fwd, default_bwd = K._row_forward_config, N._row_backward_config
    print_header()
    for dtype in (torch.float32, torch.bfloat16):
        x, dy, w, b, size = row_inputs(M, N_COLS, dtype)
        r = torch.randn_like(x)
        copy = copy_gbs(x)
        for rms in (False, True):
            bias = None if rms else b
            line = [f"{'add+rms' if rms else 'add+ln'} {M}x{N_COLS} {str(dtype)[6:]}: copy {copy}"]

            def composition(a, res):
                s = a + res
                return (TF.rms_norm(s, (N_COLS,), w) if rms else TF.layer_norm(s, (N_COLS,), w, b)), s

            compiled = torch.compile(composition)
            compiled(x, r)
            line.append(f"compile fwd {gbs(4 * size, bench(lambda: compiled(x, r)))}")

            def forward():
                return K.add_norm_forward(x, r, (N_COLS,), w, bias, 1e-5, 0.0, None, 0, rms)

            y, s, mean, rstd = forward()

            def backward():
                return K.add_norm_backward(dy, None, s, (N_COLS,), w, mean, rstd, not rms, 0.0, None, 0, rms)

            line.append(f"lamina fwd {gbs(4 * size, bench(forward))} {default_fwd(N_COLS, x.element_size())}")
            line.append(f"bwd {gbs(3 * size, bench(backward))} {default_bwd(N_COLS, x.element_size())}")
            print(" | ".join(line), flush=True)
            block = N.row_block(N_COLS)
            row = []
            for rows, warps in FORWARD:
                K._row_forward_config = (lambda n_, e_, rr=rows, wp=warps: (rr, block, False, wp))
                row.append(f"{rows}/{warps}:{gbs(4 * size, bench(forward))}")
            K._row_forward_config = default_fwd
            print("   fwd rows/warps:GB/s  " + " ".join(row), flush=True)
            print("   bwd rows/warps/per_sm:GB/s plain/prefetch  "
                  + row_backward_sweep(BACKWARD, block, backward, 3 * size), flush=True)
        del x, r, dy


if __name__ == "__main__":
    main()
