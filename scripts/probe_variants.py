"""Kernel variants side by side on the card (do_bench median, GPU-bound
launches at the matrix's shapes), to pick a default from numbers:

- tanh forward, 16-bit: the float32 form (TANH) against TANH_16BIT;
- instance norm 16x512x64x64: the one-plane-a-program kernels at 2, 4, 8
  and 16 warps (forward, backward);
- max pool 3x3/s2 and 2x2/s2 forward on NCHW: the even/odd segment reads
  (PAIRS) against strided loads, at several tiles.

    PYTHONPATH=src python scripts/probe_variants.py
"""

from __future__ import annotations

import torch
from triton.testing import do_bench

from lamina.kernels import activation as A
from lamina.kernels import normalization as N
from lamina.kernels import pooling as P


def ms(fn):
    return do_bench(fn, warmup=10, rep=50, return_mode="median")


def gbps(nbytes, t_ms):
    return nbytes / t_ms / 1e6


def copy_roof():
    x = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    t = ms(lambda: y.copy_(x))
    print(f"copy {gbps(2 << 30, t):.0f} GB/s", flush=True)


def tanh_variants():
    for dtype in (torch.bfloat16, torch.float16):
        x = torch.randn(1 << 26, device="cuda", dtype=dtype)
        eager = ms(lambda: torch.tanh(x))
        row = [f"eager {eager * 1e3:.1f}"]
        for name, act in (("TANH", A.TANH), ("TANH_16BIT", A.TANH_16BIT), ("SIGMOID", A.SIGMOID)):
            t = ms(lambda: A.activation_forward(x, act))
            row.append(f"{name} {t * 1e3:.1f} us ({gbps(2 * x.numel() * x.element_size(), t):.0f} GB/s)")
        print(f"tanh fwd {dtype}: " + " | ".join(row), flush=True)


def instance_norm_variants():
    original = N._whole_group_warps
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(16, 512, 64, 64, device="cuda", dtype=dtype)
        w = torch.randn(512, device="cuda")
        b = torch.randn(512, device="cuda")
        dy = torch.randn_like(x)
        nbytes = 2 * x.numel() * x.element_size()
        row = []
        for warps in (2, 4, 8, 16):
            N._whole_group_warps = lambda block, warps=warps: warps
            try:
                f = ms(lambda: N.instance_norm_forward(x, w, b, 1e-5))
                _, mean, rstd, _ = N.instance_norm_forward(x, w, b, 1e-5)
                bw = ms(lambda: N.instance_norm_backward(dy, x, w, mean, rstd))
            finally:
                N._whole_group_warps = original
            row.append(f"{warps}w fwd {f * 1e3:.1f} ({gbps(nbytes, f):.0f}) bwd {bw * 1e3:.1f} ({gbps(1.5 * nbytes, bw):.0f})")
        e = ms(lambda: torch.nn.functional.instance_norm(x, weight=w.to(dtype), bias=b.to(dtype)))
        print(f"instance_norm {dtype}: eager fwd {e * 1e3:.1f} | " + " | ".join(row), flush=True)


def pool_forward(x, k, s, p, pairs, tile, warps):
    n, c, h, w = x.shape
    oh = ow = (h + 2 * p - k) // s + 1
    y = torch.empty(n, c, oh, ow, device=x.device, dtype=x.dtype)
    pos = torch.empty(n, c, oh, ow, device=x.device, dtype=torch.uint8)
    blocks_a, block_a, block_b, grid = P._tiling(n, c, oh, ow, False, tile)

    def run():
        P._pool2d_forward_kernel[grid](
            x, y, pos, x, c, h, w, oh, ow, blocks_a, *x.stride(), *y.stride(), 0.0,
            KH=k, KW=k, SH=s, SW=s, PH=p, PW=p, DH=1, DW=1, IS_MAX=True, COUNT_INCLUDE_PAD=True,
            HAS_DIVISOR=False, WRITE_INDICES=False, CHANNELS_LAST=False, INDEX64=False,
            BLOCK_A=block_a, BLOCK_B=block_b, num_warps=warps, PAIRS=pairs)

    run()
    ref = torch.nn.functional.max_pool2d(x, k, s, p)
    assert torch.equal(y, ref), "variant disagrees with torch"
    return ms(run)


def pool_variants():
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(64, 64, 112, 112, device="cuda", dtype=dtype)
        for k, s, p in ((3, 2, 1), (2, 2, 0)):
            compiled = torch.compile(lambda t: torch.nn.functional.max_pool2d(t, k, s, p))
            c_ms = ms(lambda: compiled(x))
            row = [f"compile {c_ms * 1e3:.0f}"]
            for pairs in (True, False):
                for tile, warps in ((1024, 4), (2048, 4), (2048, 8), (4096, 8), (512, 4)):
                    t = pool_forward(x, k, s, p, pairs, tile, warps)
                    row.append(f"{'pairs' if pairs else 'strided'} {tile}/{warps}w {t * 1e3:.0f}")
            print(f"max_pool {k}x{k}/s{s} NCHW fwd {dtype}: " + " | ".join(row), flush=True)


if __name__ == "__main__":
    torch.manual_seed(0)
    print(torch.cuda.get_device_name(), flush=True)
    copy_roof()
    tanh_variants()
    instance_norm_variants()
    pool_variants()
