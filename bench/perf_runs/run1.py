"""Run 1: where the normalization time goes (per-kernel), config sweeps, host overhead."""
import os, sys, time, json, cProfile, pstats, io
import torch, triton
from triton.testing import do_bench
import lamina, lamina.functional as F
from lamina import backend
kn = backend.kernels("normalization")
dev = "cuda"
SM = torch.cuda.get_device_properties(0).multi_processor_count
print(torch.cuda.get_device_name(), "SMs", SM, flush=True)

def bench(fn, grad_to_none=None):
    return do_bench(fn, warmup=5, rep=20, grad_to_none=grad_to_none, return_mode="median")

src = torch.empty(2**28, dtype=torch.uint8, device=dev); dst = torch.empty_like(src)
roof = 2 * src.numel() / bench(lambda: dst.copy_(src)) / 1e6
print(f"copy roof {roof:.0f} GB/s", flush=True)
del src, dst
def frac(nbytes, ms): return nbytes / ms / 1e6 / roof
res = {}
def rec(key, ms, nbytes):
    res[key] = (ms, frac(nbytes, ms)); print(f"{key:70s} {ms:8.4f} ms  {frac(nbytes, ms):5.2f}", flush=True)

section = sys.argv[1:] or ["host", "gn", "ln", "bn"]
dts = {"fp32": torch.float32, "bf16": torch.bfloat16}

if "gn" in section:
    for dn, dt in dts.items():
        x = torch.randn(16, 512, 64, 64, device=dev, dtype=dt, requires_grad=True)
        w = torch.randn(512, device=dev, dtype=dt, requires_grad=True); b = torch.randn_like(w, requires_grad=True)
        dy = torch.randn_like(x); n = x.numel() * x.element_size()
        for pps, warps, blk in [(0, 8, 0), (1, 8, 4096), (1, 4, 4096), (1, 16, 4096), (2, 8, 4096), (4, 8, 4096), (1, 8, 2048), (0.5, 8, 4096)]:
            kn._GN_PERSISTENT_PROGRAMS_PER_SM = pps; kn._GN_PERSISTENT_WARPS = warps
            if blk: kn._gn_persistent_block = (lambda s, blk=blk: min(triton.next_power_of_2(s), blk))
            with torch.no_grad():
                rec(f"gn {dn} fwd pps={pps} w={warps} blk={blk}", bench(lambda: F.group_norm(x, 32, w, b)), 2 * n)
            rec(f"gn {dn} fwdbwd pps={pps} w={warps} blk={blk}", bench(lambda: F.group_norm(x, 32, w, b).backward(dy), [x, w, b]), 5 * n)
        kn._GN_PERSISTENT_PROGRAMS_PER_SM = 1; kn._GN_PERSISTENT_WARPS = 8
        with torch.no_grad():
            rec(f"gn {dn} fwd torch", bench(lambda: torch.nn.functional.group_norm(x, 32, w, b)), 2 * n)
        rec(f"gn {dn} fwdbwd torch", bench(lambda: torch.nn.functional.group_norm(x, 32, w, b).backward(dy), [x, w, b]), 5 * n)
        # instance norm shape
        with torch.no_grad():
            rec(f"in {dn} fwd lamina", bench(lambda: F.instance_norm(x, weight=w, bias=b)), 2 * n)
        del x, dy

if "ln" in section:
    orig = (kn._row_tile, kn.warps_for, kn._rn_programs_per_device)
    try:
        from liger_kernel.ops.layer_norm import LigerLayerNormFunction
        from liger_kernel.ops.rms_norm import LigerRMSNormFunction
    except Exception as e:
        print("no liger", e); LigerLayerNormFunction = None
    for (M, N) in [(131072, 1024), (32768, 4096)]:
        for dn, dt in dts.items():
            x = torch.randn(M, N, device=dev, dtype=dt, requires_grad=True)
            w = torch.randn(N, device=dev, dtype=dt, requires_grad=True); b = torch.randn_like(w, requires_grad=True)
            dy = torch.randn_like(x); n = x.numel() * x.element_size()
            y, mean, rstd = kn.row_norm_forward(x.detach(), [N], w.detach(), b.detach(), 1e-5, rms=False)
            rec(f"ln {M}x{N} {dn} fwd kernel", bench(lambda: kn.row_norm_forward(x, [N], w, b, 1e-5, rms=False)), 2 * n)
            rec(f"ln {M}x{N} {dn} bwd current", bench(lambda: kn.row_norm_backward(dy, x, [N], w, mean, rstd, True, rms=False)), 3 * n)
            _, _, rr = kn.row_norm_forward(x.detach(), [N], w.detach(), None, 1e-5, rms=True)
            rec(f"rms {M}x{N} {dn} bwd current", bench(lambda: kn.row_norm_backward(dy, x, [N], w, None, rr, False, rms=True)), 3 * n)
            cfgs = [(1, 4), (1, 8), (2, 8), (4, 8), (4, 16), (8, 16), (2, 4), (8, 8), (16, 16)] if N == 1024 else [(1, 8), (1, 16), (2, 16), (1, 4), (2, 8)]
            for rows, warps in cfgs:
                for k in (1, 2, 4):
                    kn._row_tile = lambda n_, wide, rows=rows: (rows, triton.next_power_of_2(n_), False)
                    kn.warps_for = lambda blk, warps=warps: warps
                    kn._rn_programs_per_device = lambda t, k=k: k * SM
                    try:
                        rec(f"ln {M}x{N} {dn} bwd rows={rows} w={warps} k={k}", bench(lambda: kn.row_norm_backward(dy, x, [N], w, mean, rstd, True, rms=False)), 3 * n)
                    except Exception as e:
                        print("fail", rows, warps, k, type(e).__name__, str(e)[:100])
            kn._row_tile, kn.warps_for, kn._rn_programs_per_device = orig
            rec(f"ln {M}x{N} {dn} fwdbwd lamina", bench(lambda: F.layer_norm(x, [N], w, b).backward(dy), [x, w, b]), 5 * n)
            rec(f"ln {M}x{N} {dn} fwdbwd torch", bench(lambda: torch.nn.functional.layer_norm(x, [N], w, b).backward(dy), [x, w, b]), 5 * n)
            if LigerLayerNormFunction:
                rec(f"ln {M}x{N} {dn} fwdbwd liger", bench(lambda: LigerLayerNormFunction.apply(x, w, b, 1e-5).backward(dy), [x, w, b]), 5 * n)
                rec(f"rms {M}x{N} {dn} fwdbwd liger", bench(lambda: LigerRMSNormFunction.apply(x, w, 1e-6).backward(dy), [x, w]), 5 * n)
            del x, dy, y

if "bn" in section:
    for dn, dt in dts.items():
        for layout in ("nchw", "cl"):
            x = torch.randn(64, 64, 112, 112, device=dev, dtype=dt)
            if layout == "cl": x = x.contiguous(memory_format=torch.channels_last)
            dy = torch.randn_like(x); n = x.numel() * x.element_size()
            w = torch.randn(64, device=dev); b = torch.randn(64, device=dev)
            for tile, rw, split, etile, ew in [(2048, 4, 8, 4096, 8), (4096, 8, 8, 8192, 8), (2048, 4, 16, 4096, 4)]:
                kn._REDUCE_TILE, kn._REDUCE_WARPS, kn._ELEMENTWISE_TILE, kn._ELEMENTWISE_WARPS = tile, rw, etile, ew
                kn._sm_count = lambda i, split=split: SM * split // 8
                tag = f"bn {dn} {layout} rt={tile} rw={rw} sp={split} et={etile} ew={ew}"
                mean, var, rstd = kn.batch_norm_stats(x, 1e-5)
                rec(tag + " stats", bench(lambda: kn.batch_norm_stats(x, 1e-5)), n)
                rec(tag + " normalize", bench(lambda: kn.batch_norm_normalize(x, mean, rstd, w, b)), 2 * n)
                s1, s2 = kn.batch_norm_backward_reduce(dy, x, mean, rstd)
                rec(tag + " bwd_reduce", bench(lambda: kn.batch_norm_backward_reduce(dy, x, mean, rstd)), 2 * n)
                rec(tag + " bwd_input", bench(lambda: kn.batch_norm_backward_input(dy, x, mean, rstd, w, s1, s2, x.numel() // 64)), 3 * n)
            xg = x.detach().clone().requires_grad_(); wg = w.to(dt).requires_grad_(); bg = b.to(dt).requires_grad_()
            rm = torch.zeros(64, device=dev, dtype=dt); rv = torch.ones_like(rm)
            rec(f"bn {dn} {layout} fwdbwd torch", bench(lambda: torch.nn.functional.batch_norm(xg, rm, rv, wg, bg, True).backward(dy), [xg, wg, bg]), 5 * n)
            del x, dy, xg

if "host" in section:
    import torch.nn.functional as TF
    def per_call_us(fn, reps=300):
        for _ in range(20): fn()
        torch.cuda.synchronize(); t = time.perf_counter()
        for _ in range(reps): fn()
        torch.cuda.synchronize(); return (time.perf_counter() - t) / reps * 1e6
    def leaf(*s): return torch.randn(*s, device=dev, requires_grad=True)
    x1, x2, x4 = leaf(4096), leaf(64, 768), leaf(4, 8, 6, 6)
    w768, b768, w8, b8 = leaf(768), leaf(768), leaf(8), leaf(8)
    rm, rv = torch.zeros(8, device=dev), torch.ones(8, device=dev)
    ops = {"relu": lambda m: m.relu(x1), "dropout": lambda m: m.dropout(x1, 0.1),
           "layer_norm": lambda m: m.layer_norm(x2, (768,), w768, b768), "batch_norm": lambda m: m.batch_norm(x4, rm, rv, w8, b8, True),
           "group_norm": lambda m: m.group_norm(x4, 2, w8, b8)}
    for name, call in ops.items():
        row = []
        for mode in ("fwd", "fwdbwd"):
            for mod in (F, TF):
                if mode == "fwd":
                    def fn(mod=mod):
                        with torch.no_grad(): call(mod)
                else:
                    dyy = torch.randn_like(call(mod))
                    def fn(mod=mod, dyy=dyy): torch.autograd.backward(call(mod), dyy)
                row.append(per_call_us(fn))
        print(f"host {name:12s} " + " ".join(f"{v:8.1f}" for v in row), flush=True)
    for name in ("batch_norm", "layer_norm", "relu"):
        dyy = torch.randn_like(ops[name](F))
        prof = cProfile.Profile(); prof.enable()
        for _ in range(200): torch.autograd.backward(ops[name](F), dyy)
        torch.cuda.synchronize(); prof.disable()
        s = io.StringIO(); pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(18); print(name, s.getvalue()[-4500:], flush=True)
out = os.environ.get("OUT")
if out: json.dump(res, open(os.path.join(out, "run1_" + "_".join(section) + ".json"), "w"), indent=1)
