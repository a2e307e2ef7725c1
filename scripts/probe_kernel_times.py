"""GPU time per kernel of lamina's batch norm (and torch's, for the same
call), from torch.profiler: which pass of which layout and dtype is slow.

    PYTHONPATH=src python scripts/probe_kernel_times.py [--shape 64,64,112,112]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as TF

import lamina.functional as F
from probe_cells import kernel_us  # scripts/ is on the path when run as a script


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shape", default="64,64,112,112")
    args = p.parse_args()
    shape = tuple(int(s) for s in args.shape.split(","))
    c = shape[1]
    for dtype in (torch.float32, torch.bfloat16):
        for cl in (False, True):
            x = torch.randn(shape, device="cuda", dtype=dtype)
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)
            x.requires_grad_(True)
            w = torch.ones(c, device="cuda", requires_grad=True)
            b = torch.zeros(c, device="cuda", requires_grad=True)
            dy = torch.randn_like(x)
            for who, mod in (("lamina", F), ("torch", TF)):
                rm, rv = torch.zeros(c, device="cuda"), torch.ones(c, device="cuda")
                fwd = lambda: mod.batch_norm(x, rm, rv, w, b, training=True)  # noqa: E731

                def fwd_bwd():
                    torch.autograd.backward(fwd(), dy)
                for mode, fn in (("fwd", fwd), ("fwd+bwd", fwd_bwd)):
                    k = kernel_us(fn)
                    total = sum(k.values())
                    parts = ", ".join(f"{name} {us:.0f}" for name, us in sorted(k.items(), key=lambda kv: -kv[1]))
                    print(f"{str(dtype)[6:]:8s} {'cl' if cl else 'nchw':4s} {who:6s} {mode:7s} {total:7.0f} us: {parts}",
                          flush=True)


if __name__ == "__main__":
    main()
