"""Run 2: correctness of the new kernels on the GPU, sweeps of the new LN
backward / GN persistent kernels, host-time micro-benchmarks."""
import os, sys, time, json
import torch, triton, triton.language as tl
from triton.testing import do_bench
import builtins
_log = open(os.path.join(os.environ.get("OUT", "/tmp"), "log3.txt"), "w")
def print(*a, **k):
    k.pop("flush", None); builtins.print(*a, **k, flush=True); builtins.print(*a, **k, file=_log); _log.flush()
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
print(f"copy roof {roof:.0f} GB/s", flush=True); del src, dst
res = {}
def rec(key, ms, nbytes):
    f = nbytes / ms / 1e6 / roof
    res[key] = (ms, f); print(f"{key:66s} {ms:8.4f} ms  {f:5.2f}", flush=True)
section = sys.argv[1:] or ["check", "host", "perf"]
dts = {"fp32": torch.float32, "bf16": torch.bfloat16}

def maxerr(a, b): return ((a.double() - b).abs().max() / (b.abs().max() + 1e-12)).item()

if "check" in section:
    torch.manual_seed(0)
    def check(name, lam, ref, shape, dt, nparams, mk=lambda s, d: torch.randn(s, device=dev, dtype=d) * 2 + 3, **kw):
        x = mk(shape, dt).requires_grad_()
        ps = [torch.randn(shape[kw.get("pdim", -1)], device=dev, dtype=dt, requires_grad=True) for _ in range(nparams)]
        y = lam(x, *ps); dy = torch.randn_like(y)
        g = torch.autograd.grad(y, [x] + ps, dy)
        xd = x.detach().double().requires_grad_(); pd = [p.detach().double().requires_grad_() for p in ps]
        yr = ref(xd, *pd); gr = torch.autograd.grad(yr, [xd] + pd, dy.double())
        errs = [maxerr(y, yr)] + [maxerr(a, b) for a, b in zip(g, gr)]
        tol = 2e-2 if dt == torch.bfloat16 else 1e-4
        print(f"check {name} {tuple(shape)} {dt} {'ok' if max(errs) < tol else 'FAIL'} " + " ".join(f"{e:.1e}" for e in errs), flush=True)
    TF = torch.nn.functional
    for dt in dts.values():
        for shape in [(3001, 1024), (517, 4096), (333, 1000), (64, 768)]:
            check("layer_norm", lambda x, w, b: F.layer_norm(x, [shape[-1]], w, b), lambda x, w, b: TF.layer_norm(x, [shape[-1]], w, b), shape, dt, 2)
            check("rms_norm", lambda x, w: F.rms_norm(x, [shape[-1]], w), lambda x, w: TF.rms_norm(x, [shape[-1]], w, eps=torch.finfo(torch.float32).eps), shape, dt, 1)
        for shape, G in [((4, 64, 32, 32), 8), ((3, 48, 40, 40), 6), ((16, 512, 64, 64), 32)]:
            check("group_norm", lambda x, w, b: F.group_norm(x, G, w, b), lambda x, w, b: TF.group_norm(x, G, w, b), shape, dt, 2, pdim=1)
        for cl in (False, True):
            mk = (lambda s, d: (torch.randn(s, device=dev, dtype=d) * 2 + 3).contiguous(memory_format=torch.channels_last)) if cl else (lambda s, d: torch.randn(s, device=dev, dtype=d) * 2 + 3)
            check(f"batch_norm cl={cl}", lambda x, w, b: F.batch_norm(x, None, None, w, b, True), lambda x, w, b: TF.batch_norm(x, None, None, w, b, True), (8, 16, 13, 11), dt, 2, mk=mk, pdim=1)
    x = torch.randn(8, 16, 13, 11, device=dev)
    rm, rv = torch.randn(16, device=dev), torch.rand(16, device=dev) + 0.5
    rm2, rv2 = rm.clone(), rv.clone()
    F.batch_norm(x, rm, rv, None, None, True, 0.3); torch.nn.functional.batch_norm(x, rm2, rv2, None, None, True, 0.3)
    print("check running stats", (rm - rm2).abs().max().item(), (rv - rv2).abs().max().item(), flush=True)

if "host" in section:
    def per_call_us(fn, reps=300):
        for _ in range(20): fn()
        torch.cuda.synchronize(); t = time.perf_counter()
        for _ in range(reps): fn()
        torch.cuda.synchronize(); return (time.perf_counter() - t) / reps * 1e6
    @triton.jit
    def _noop(x_ptr, n, B: tl.constexpr):
        o = tl.arange(0, B); tl.store(x_ptr + o, tl.load(x_ptr + o, mask=o < n), mask=o < n)
    class Clone(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x): return x.clone()
        @staticmethod
        def backward(ctx, g): return g.clone()
    class TritonFn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            y = torch.empty_like(x); _noop[(1,)](y, 8, B=16); return y
        @staticmethod
        def backward(ctx, g):
            d = torch.empty_like(g); _noop[(1,)](d, 8, B=16); return d
    x1 = torch.randn(4096, device=dev, requires_grad=True); d1 = torch.randn_like(x1)
    xn = x1.detach()
    print(f"host raw triton launch {per_call_us(lambda: _noop[(1,)](xn, 8, B=16)):.1f} us", flush=True)
    print(f"host torch.empty_like {per_call_us(lambda: torch.empty_like(xn)):.1f} us", flush=True)
    print(f"host torch clone {per_call_us(lambda: xn.clone()):.1f} us", flush=True)
    print(f"host torch clone fwd+bwd (native) {per_call_us(lambda: torch.autograd.backward(x1.clone(), d1)):.1f} us", flush=True)
    print(f"host autograd.Function(clone) fwd+bwd {per_call_us(lambda: torch.autograd.backward(Clone.apply(x1), d1)):.1f} us", flush=True)
    print(f"host autograd.Function(triton noop) fwd+bwd {per_call_us(lambda: torch.autograd.backward(TritonFn.apply(x1), d1)):.1f} us", flush=True)
    x1.grad = None
    def gnone(fn):
        def f():
            fn(); x1.grad = None
        return f
    print(f"host ... same, grad=None each call {per_call_us(gnone(lambda: torch.autograd.backward(TritonFn.apply(x1), d1))):.1f} us", flush=True)
    print(f"host torch relu fwd+bwd grad=None {per_call_us(gnone(lambda: torch.autograd.backward(torch.relu(x1), d1))):.1f} us", flush=True)
    print(f"host lamina relu fwd+bwd grad=None {per_call_us(gnone(lambda: torch.autograd.backward(F.relu(x1), d1))):.1f} us", flush=True)
    x4 = torch.randn(4, 8, 6, 6, device=dev, requires_grad=True); d4 = torch.randn_like(x4)
    w8 = torch.randn(8, device=dev, requires_grad=True); b8 = torch.randn(8, device=dev, requires_grad=True)
    rm, rv = torch.zeros(8, device=dev), torch.ones(8, device=dev)
    x2 = torch.randn(64, 768, device=dev, requires_grad=True); d2 = torch.randn_like(x2)
    w768 = torch.randn(768, device=dev, requires_grad=True); b768 = torch.randn(768, device=dev, requires_grad=True)
    for name, call, inp, d in [("batch_norm", lambda m: m.batch_norm(x4, rm, rv, w8, b8, True), x4, d4),
                               ("group_norm", lambda m: m.group_norm(x4, 2, w8, b8), x4, d4),
                               ("layer_norm", lambda m: m.layer_norm(x2, (768,), w768, b768), x2, d2)]:
        row = []
        for mod in (F, torch.nn.functional):
            def fo(mod=mod):
                with torch.no_grad(): call(mod)
            def fb(mod=mod, d=d):
                torch.autograd.backward(call(mod), d)
                for t in (inp, w8, b8, w768, b768): t.grad = None
            row += [per_call_us(fo), per_call_us(fb)]
        print(f"host {name}: lamina fwd {row[0]:.1f} fwdbwd {row[1]:.1f} | torch fwd {row[2]:.1f} fwdbwd {row[3]:.1f} us", flush=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as p:
        for _ in range(50):
            torch.autograd.backward(F.batch_norm(x4, rm, rv, w8, b8, True), d4)
            for t in (x4, w8, b8): t.grad = None
        torch.cuda.synchronize()
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    # relu 2**26: which kernels run in fwd+bwd
    x = torch.randn(2**26, device=dev, requires_grad=True); dy = torch.randn_like(x)
    for _ in range(3): torch.autograd.backward(F.relu(x), dy); x.grad = None
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as p:
        for _ in range(5):
            torch.autograd.backward(F.relu(x), dy); x.grad = None
        torch.cuda.synchronize()
    print(p.key_averages().table(sort_by="cuda_time_total", row_limit=8), flush=True)
    del x, dy


if "perf" in section:
    try:
        from liger_kernel.ops.layer_norm import LigerLayerNormFunction
        from liger_kernel.ops.rms_norm import LigerRMSNormFunction
    except Exception as e:
        print("no liger", e); LigerLayerNormFunction = None
    for (M, N) in [(131072, 1024), (32768, 4096), (4096, 768)]:
        for dn, dt in dts.items():
            x = torch.randn(M, N, device=dev, dtype=dt, requires_grad=True)
            w = torch.randn(N, device=dev, dtype=dt, requires_grad=True); b = torch.randn_like(w, requires_grad=True)
            dy = torch.randn_like(x); n = x.numel() * x.element_size()
            with torch.no_grad():
                rec(f"ln {M}x{N} {dn} fwd lamina", bench(lambda: F.layer_norm(x, [N], w, b)), 2 * n)
                rec(f"rms {M}x{N} {dn} fwd lamina", bench(lambda: F.rms_norm(x, [N], w)), 2 * n)
            rec(f"ln {M}x{N} {dn} fwdbwd lamina", bench(lambda: F.layer_norm(x, [N], w, b).backward(dy), [x, w, b]), 5 * n)
            rec(f"rms {M}x{N} {dn} fwdbwd lamina", bench(lambda: F.rms_norm(x, [N], w).backward(dy), [x, w]), 5 * n)
            rec(f"ln {M}x{N} {dn} fwdbwd torch", bench(lambda: torch.nn.functional.layer_norm(x, [N], w, b).backward(dy), [x, w, b]), 5 * n)
            if LigerLayerNormFunction:
                rec(f"ln {M}x{N} {dn} fwdbwd liger", bench(lambda: LigerLayerNormFunction.apply(x, w, b, 1e-5).backward(dy), [x, w, b]), 5 * n)
                rec(f"rms {M}x{N} {dn} fwdbwd liger", bench(lambda: LigerRMSNormFunction.apply(x, w, 1e-6).backward(dy), [x, w]), 5 * n)
            del x, dy
    for dn, dt in dts.items():
        x = torch.randn(16, 512, 64, 64, device=dev, dtype=dt, requires_grad=True)
        w = torch.randn(512, device=dev, dtype=dt, requires_grad=True); b = torch.randn_like(w, requires_grad=True)
        dy = torch.randn_like(x); n = x.numel() * x.element_size()
        with torch.no_grad():
            rec(f"gn {dn} fwd lamina", bench(lambda: F.group_norm(x, 32, w, b)), 2 * n)
        mean, rstd = kn.group_norm_forward(x.detach(), 32, w.detach(), b.detach(), 1e-5)[1:]
        rec(f"gn {dn} bwd launcher", bench(lambda: kn.group_norm_backward(dy, x, 32, w, mean, rstd, True)), 3 * n)
        rec(f"gn {dn} fwdbwd lamina", bench(lambda: F.group_norm(x, 32, w, b).backward(dy), [x, w, b]), 5 * n)
        rec(f"gn {dn} fwdbwd torch", bench(lambda: torch.nn.functional.group_norm(x, 32, w, b).backward(dy), [x, w, b]), 5 * n)
        rec(f"in {dn} fwdbwd lamina", bench(lambda: F.instance_norm(x, weight=w, bias=b).backward(dy), [x, w, b]), 5 * n)
        del x, dy
    for shape in [(64, 64, 112, 112), (32, 64, 56, 56)]:
        for dn, dt in dts.items():
            for layout in ("nchw", "cl"):
                x = torch.randn(shape, device=dev, dtype=dt)
                if layout == "cl": x = x.contiguous(memory_format=torch.channels_last)
                x.requires_grad_()
                dy = torch.randn_like(x); n = x.numel() * x.element_size()
                w = torch.randn(64, device=dev, dtype=dt, requires_grad=True); b = torch.randn_like(w, requires_grad=True)
                rm = torch.zeros(64, device=dev); rv = torch.ones_like(rm)
                tag = f"bn {'x'.join(map(str, shape))} {dn} {layout}"
                with torch.no_grad():
                    rec(tag + " fwd lamina", bench(lambda: F.batch_norm(x, rm, rv, w, b, True)), 2 * n)
                    rec(tag + " fwd torch", bench(lambda: torch.nn.functional.batch_norm(x, rm, rv, w, b, True)), 2 * n)
                rec(tag + " fwdbwd lamina", bench(lambda: F.batch_norm(x, rm, rv, w, b, True).backward(dy), [x, w, b]), 5 * n)
                rec(tag + " fwdbwd torch", bench(lambda: torch.nn.functional.batch_norm(x, rm, rv, w, b, True).backward(dy), [x, w, b]), 5 * n)
                del x, dy
out = os.environ.get("OUT") or ""
if out: json.dump(res, open(os.path.join(out, "run3.json"), "w"), indent=1)
