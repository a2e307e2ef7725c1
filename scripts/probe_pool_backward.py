"""Max and average pooling's NCHW stride-2 backward on the card: the gather
kernel against the parity kernel (kernels/pooling.py, PARITY_BACKWARD), at
the benchmark matrix's 64x64x112x112, float32 and bfloat16, with tile sizes
for the parity kernel. GB/s of the bytes a backward must move (dy and the
window positions read, dx written), do_bench median, next to a copy.

    PYTHONPATH=src python scripts/probe_pool_backward.py
"""

from __future__ import annotations

import torch

from lamina.kernels import pooling as P
from sweep import bench, copy_gbs, gbs, print_header

CASES = [("max 3x3/s2/p1", True, (3, 3), (1, 1)), ("max 2x2/s2", True, (2, 2), (0, 0)),
         ("avg 2x2/s2", False, (2, 2), (0, 0))]


def main() -> None:
    print_header()
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(64, 64, 112, 112, device="cuda", dtype=dtype)
        print(f"{dtype}: copy {copy_gbs(x)}", flush=True)
        for name, is_max, k, pad in CASES:
            oh, ow = [(112 + 2 * p - kk) // 2 + 1 for p, kk in zip(pad, k)]
            y, pos, _ = P._launch_forward(x, k, (2, 2), pad, (1, 1), (oh, ow), is_max)
            dy = torch.randn_like(y)
            nbytes = dy.numel() * dy.element_size() + x.numel() * x.element_size() + (pos.numel() if is_max else 0)

            def backward():
                return P._launch_backward(dy, pos, x.shape, k, (2, 2), pad, (1, 1), False, is_max)

            line = []
            for parity in (False, True):
                P.PARITY_BACKWARD = parity
                line.append(f"{'parity' if parity else 'gather'} {gbs(nbytes, bench(backward))}")
            P.PARITY_BACKWARD = True
            reference = backward()
            tiles = []
            for tile in (256, 512, 1024, 2048):
                for warps in (4, 8):
                    P.PAIRS_BACKWARD_TILE, P.WARPS = tile, warps
                    assert torch.equal(backward(), reference)
                    tiles.append(f"{tile}/{warps}:{gbs(nbytes, bench(backward))}")
            P.PAIRS_BACKWARD_TILE, P.WARPS = 512, 4
            P.PARITY_BACKWARD = False
            gathered = backward()
            P.PARITY_BACKWARD = True
            same = torch.allclose(gathered, reference)  # (windows that share a maximum add in another order)
            print(f"  {name}: {' | '.join(line)} | equal {same} | tile/warps:GB/s {' '.join(tiles)}", flush=True)


if __name__ == "__main__":
    main()
