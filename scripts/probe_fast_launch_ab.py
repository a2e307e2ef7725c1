"""A/B of the fast launcher on cells whose lamina time doubled in one bench
run (H100, 2026-11-28 02:07) while every anchor's held: each cell timed as the
bench times it (do_bench, --quick settings), in child processes alternating
LAMINA_FAST_LAUNCH=0 / 1, three times per child; plus, with the launcher on,
how many launches fell back to Triton's own path after the warm-up.

    PYTHONPATH=src python scripts/probe_fast_launch_ab.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def child():
    import torch
    from triton.runtime.jit import JITFunction
    from triton.testing import do_bench

    import lamina.functional as F

    fallbacks = [0]
    original = JITFunction.run

    def counted(self, *a, **k):
        fallbacks[0] += 1
        return original(self, *a, **k)
    JITFunction.run = counted

    def leaf(*shape, dtype=torch.float32):
        return torch.randn(*shape, device="cuda", dtype=dtype).requires_grad_(True)

    x_ln, w_ln, b_ln = leaf(32768, 4096), leaf(4096), leaf(4096)
    x_relu = leaf(2**26, dtype=torch.bfloat16)
    x_bn, w_bn, b_bn = leaf(64, 64, 112, 112), leaf(64), leaf(64)
    rm, rv = torch.zeros(64, device="cuda"), torch.ones(64, device="cuda")
    x_pool = leaf(64, 64, 112, 112)

    def fwd_bwd(f, x):
        dy = torch.randn_like(f())
        return lambda: torch.autograd.backward(f(), dy)
    cells = {
        "layer_norm 32768x4096 fp32 fwd": lambda: F.layer_norm(x_ln, (4096,), w_ln, b_ln),
        "relu 2^26 bf16 fwdbwd": fwd_bwd(lambda: F.relu(x_relu), x_relu),
        "batch_norm_act relu NCHW fp32 fwd": lambda: F.batch_norm_act(x_bn, rm, rv, w_bn, b_bn, training=True),
        "max_pool2d 3x3/s2 NCHW fp32 fwdbwd": fwd_bwd(lambda: F.max_pool2d(x_pool, 3, 2, 1), x_pool),
    }
    out = {}
    for name, fn in cells.items():
        fn()
        torch.cuda.synchronize()
        before = fallbacks[0]
        out[name] = [round(do_bench(fn, warmup=5, rep=25, return_mode="median"), 4) for _ in range(3)]
        out[name + " fallbacks"] = fallbacks[0] - before
    print(json.dumps(out))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child()
        return
    rows = {}
    for rnd in range(2):
        for mode in ("0", "1"):
            env = dict(os.environ, LAMINA_FAST_LAUNCH=mode)
            res = subprocess.run([sys.executable, __file__, "--child"], env=env, capture_output=True, text=True)
            line = (res.stdout.strip().splitlines() or ["{}"])[-1]
            if res.returncode:
                print(res.stderr[-2000:])
            for k, v in json.loads(line).items():
                rows.setdefault(k, {}).setdefault(f"fast={mode}", []).append(v)
    for k, v in rows.items():
        print(f"{k:42s} {v}")


if __name__ == "__main__":
    main()
