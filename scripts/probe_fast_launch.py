"""Does the fast launcher (lamina/kernels/fast_launch.py, on by default)
give the same results with less host time? Runs the same child twice, with
LAMINA_FAST_LAUNCH=0 (off) and =1 (on), on one GPU, and compares:

  values     outputs and gradients of a dozen ops, bitwise between the runs
  host us    per forward+backward on tiny tensors (GPU time negligible)
  cells      do_bench median ms of a few fwd+bwd cells where host time shows
             (bf16 elementwise, bf16 layer norm, batch norm, the small shapes),
             torch eager timed in the same process

    python scripts/probe_fast_launch.py --out DIR     # writes DIR/fast_launch.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def child(out_path: str) -> None:
    sys.path.insert(0, os.path.join(ROOT, "src"))
    import torch
    import torch.nn.functional as TF
    from triton.testing import do_bench

    import lamina.functional as F
    from host_timing import per_call_us

    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(0)

    def leaf(*shape, dtype=torch.float32, cl=False):
        t = torch.randn(*shape, generator=g, device=dev, dtype=dtype)
        if cl:
            t = t.contiguous(memory_format=torch.channels_last)
        return t.requires_grad_(True)

    def bn(m, x, w, b):
        c = x.shape[1]
        return m.batch_norm(x, torch.zeros(c, device=dev), torch.ones(c, device=dev), w, b, training=True)

    x4, x2 = leaf(8, 32, 24, 24), leaf(512, 768)
    w32, b32, w768, b768 = leaf(32), leaf(32), leaf(768), leaf(768)
    cases = {
        "relu": (lambda m: m.relu(x4), [x4]),
        "gelu": (lambda m: m.gelu(x2), [x2]),
        "silu": (lambda m: m.silu(x2), [x2]),
        "layer_norm": (lambda m: m.layer_norm(x2, [768], w768, b768), [x2, w768, b768]),
        "rms_norm": (lambda m: m.rms_norm(x2, [768], w768), [x2, w768]),
        "batch_norm": (lambda m: bn(m, x4, w32, b32), [x4, w32, b32]),
        "group_norm": (lambda m: m.group_norm(x4, 8, w32, b32), [x4, w32, b32]),
        "instance_norm": (lambda m: m.instance_norm(x4), [x4]),
        "max_pool2d": (lambda m: m.max_pool2d(x4, 3, 2, 1), [x4]),
        "avg_pool2d": (lambda m: m.avg_pool2d(x4, 2), [x4]),
        "dropout": (lambda m: F.dropout(x2, 0.3, seed=5), [x2]),
        "group_norm_act": (lambda m: F.group_norm_act(x4, 8, w32, b32, act="relu"), [x4, w32, b32]),
        "add_layer_norm": (lambda m: F.add_layer_norm(x2, x2 * 0.5, [768], w768, b768), [x2, w768, b768]),
    }
    values = {}
    for name, (call, leaves) in cases.items():
        y = call(F)
        y = y[0] if isinstance(y, tuple) else y
        dy = torch.randn(y.shape, generator=g, device=dev, dtype=y.dtype)
        grads = torch.autograd.grad(y, leaves, dy)
        values[name] = [y.detach().cpu()] + [t.cpu() for t in grads]
    torch.save(values, out_path + ".pt")


    def fwd_bwd(call, leaves):
        def step():
            y = call()
            y = y[0] if isinstance(y, tuple) else y
            y.backward(torch.ones_like(y))
            for t in leaves:
                t.grad = None
        return step

    t1, t2 = leaf(4096), leaf(64, 768)
    w, b = leaf(768), leaf(768)
    t4, c8w, c8b = leaf(4, 8, 6, 6), leaf(8), leaf(8)
    host = {}
    for name, lam, tor, leaves in [
        ("relu", lambda: F.relu(t1), lambda: TF.relu(t1), [t1]),
        ("layer_norm", lambda: F.layer_norm(t2, [768], w, b), lambda: TF.layer_norm(t2, [768], w, b), [t2, w, b]),
        ("batch_norm", lambda: bn(F, t4, c8w, c8b), lambda: bn(TF, t4, c8w, c8b), [t4, c8w, c8b]),
        ("group_norm", lambda: F.group_norm(t4, 2, c8w, c8b), lambda: TF.group_norm(t4, 2, c8w, c8b), [t4, c8w, c8b]),
    ]:
        host[name] = {"lamina": per_call_us(fwd_bwd(lam, leaves)), "torch": per_call_us(fwd_bwd(tor, leaves))}

    cells = {}
    for name, make, lam, tor in [
        ("relu 2^26 bf16", lambda: [leaf(2**26, dtype=torch.bfloat16)], lambda a: F.relu(a[0]), lambda a: TF.relu(a[0])),
        ("layer_norm 32768x4096 bf16", lambda: [leaf(32768, 4096, dtype=torch.bfloat16), leaf(4096, dtype=torch.bfloat16), leaf(4096, dtype=torch.bfloat16)],
         lambda a: F.layer_norm(a[0], [4096], a[1], a[2]), lambda a: TF.layer_norm(a[0], [4096], a[1], a[2])),
        ("layer_norm 4096x768 fp32 (small)", lambda: [leaf(4096, 768), leaf(768), leaf(768)],
         lambda a: F.layer_norm(a[0], [768], a[1], a[2]), lambda a: TF.layer_norm(a[0], [768], a[1], a[2])),
        ("batch_norm2d 32x64x56x56 fp32 (small)", lambda: [leaf(32, 64, 56, 56), leaf(64), leaf(64)],
         lambda a: bn(F, *a), lambda a: bn(TF, *a)),
        ("batch_norm2d 64x64x112x112 fp32 NCHW", lambda: [leaf(64, 64, 112, 112), leaf(64), leaf(64)],
         lambda a: bn(F, *a), lambda a: bn(TF, *a)),
        ("batch_norm2d 64x64x112x112 fp32 channels_last", lambda: [leaf(64, 64, 112, 112, cl=True), leaf(64), leaf(64)],
         lambda a: bn(F, *a), lambda a: bn(TF, *a)),
        ("group_norm 16x512x64x64 bf16", lambda: [leaf(16, 512, 64, 64, dtype=torch.bfloat16), leaf(512, dtype=torch.bfloat16), leaf(512, dtype=torch.bfloat16)],
         lambda a: F.group_norm(a[0], 32, a[1], a[2]), lambda a: TF.group_norm(a[0], 32, a[1], a[2])),
    ]:
        args = make()
        row = {}
        for who, fn in (("lamina", lam), ("torch", tor)):
            y = fn(args)
            dy = torch.randn_like(y)

            def step(fn=fn, dy=dy):
                torch.autograd.backward(fn(args), dy)
            row[who] = float(do_bench(step, warmup=25, rep=100, grad_to_none=args, return_mode="median"))
        cells[name] = row
        del args
        torch.cuda.empty_cache()
    # proof that the fast path ran: the specializations it keeps (0 when off,
    # and 0 when every launch fell back to Triton's own path)
    from triton.runtime.jit import JITFunction
    from lamina.backend import kernels
    cached = sum(len(v._lamina_launchers) for fam in ("activation", "normalization", "pooling", "dropout", "fused")
                 for v in vars(kernels(fam)).values() if isinstance(v, JITFunction) and hasattr(v, "_lamina_launchers"))
    json.dump({"host_us": host, "cells_ms": cells, "fast_specializations_cached": cached}, open(out_path, "w"))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(a.child)
        return 0
    os.makedirs(a.out, exist_ok=True)
    runs = {}
    for mode in ("0", "1"):
        path = os.path.join(a.out, f"fast_launch_{mode}.json")
        env = dict(os.environ, LAMINA_FAST_LAUNCH=mode)
        rc = subprocess.run([sys.executable, __file__, "--out", a.out, "--child", path], env=env).returncode
        if rc != 0:
            print(f"child with LAMINA_FAST_LAUNCH={mode} failed: exit {rc}")
            return 1
        runs[mode] = json.load(open(path))
    import torch

    off, on = torch.load(os.path.join(a.out, "fast_launch_0.json.pt")), torch.load(os.path.join(a.out, "fast_launch_1.json.pt"))
    same = {k: all(torch.equal(u, v) for u, v in zip(off[k], on[k])) for k in off}
    import triton

    result = {"card": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "bitwise_equal": same,
              "off": runs["0"], "on": runs["1"]}
    json.dump(result, open(os.path.join(a.out, "fast_launch.json"), "w"), indent=1)
    print("bitwise equal, launcher off vs on:", same)
    print("specializations the fast path kept, off / on:", runs["0"]["fast_specializations_cached"],
          runs["1"]["fast_specializations_cached"])
    print(f"{'host us per fwd+bwd':40s} {'off':>8s} {'on':>8s} {'torch':>8s}")
    for k in runs["0"]["host_us"]:
        print(f"{k:40s} {runs['0']['host_us'][k]['lamina']:8.1f} {runs['1']['host_us'][k]['lamina']:8.1f} {runs['0']['host_us'][k]['torch']:8.1f}")
    print(f"{'fwd+bwd ms (do_bench median)':40s} {'off':>8s} {'on':>8s} {'torch':>8s}")
    for k in runs["0"]["cells_ms"]:
        print(f"{k:40s} {runs['0']['cells_ms'][k]['lamina']:8.3f} {runs['1']['cells_ms'][k]['lamina']:8.3f} {runs['0']['cells_ms'][k]['torch']:8.3f}")
    return 0 if all(same.values()) and runs["1"]["fast_specializations_cached"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
