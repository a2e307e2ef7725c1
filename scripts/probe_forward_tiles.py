"""The GPU-bound forwards still a few percent behind torch.compile or eager
in the session-12 matrix (bench/results/h200-20261128-session12/bench-call5):
pooling forwards (max 3x3/s2/p1, max 2x2/s2, avg 2x2/s2 at 64x64x112x112),
batch norm's channels_last training forward, global average pooling
(256x2048x7x7); and add + layer/RMS norm (32768x4096), whose sum s is
rebuilt in backward. Each is timed next to eager and torch.compile (input
requiring grad, as in the matrix) as GPU time from torch.profiler (the sum
of a call's kernels, median of 15 calls): do_bench's numbers for kernels of
20-100 us moved by up to 30 % between configurations in a first run (host
time showing through), so do_bench is printed only for the defaults.
lamina's launch constants are varied one set at a time: the pooling tile
and warps (poolsweep), batch norm's reduction tile, warps and programs an
SM, the global average pool's tiles, the rebuilding add + norm backward's
row-norm configurations (addnormsweep). `source` prints Inductor's
generated kernels for three of them. (A first version also tried
evict_last on the pooling loads: no gain.)

    PYTHONPATH=src:scripts python scripts/probe_forward_tiles.py [pool|poolsweep|bn|gap|addnorm|addnormsweep|source]...
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as TF

from torch.profiler import ProfilerActivity, profile

from lamina.kernels import normalization as N
from lamina.kernels import pooling as P
from sweep import bench, copy_gbs, gbs, print_header

SHAPE = (64, 64, 112, 112)
GAP_SHAPE = (256, 2048, 7, 7)
DEVICE = "cuda"
SWEEP = False  # pool: the tile / warps / load-hint sweep ("poolsweep" on the command line)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def make_input(shape, dtype, channels_last: bool) -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.randn(shape, device=DEVICE, dtype=dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


_FLUSH = torch.empty(256 << 20, dtype=torch.int8, device="cuda") if torch.cuda.is_available() else None


def gpu_ms(fn, calls: int = 15) -> float:
    """Median over ``calls`` of the GPU time of fn's kernels (torch.profiler),
    in ms: no host time in it."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            _FLUSH.zero_()  # L2 emptied before each call, as do_bench does (its fill kernel left out below)
            fn()
            torch.cuda.synchronize()
    kernels = sorted((e.time_range.start, e.time_range.elapsed_us()) for e in prof.events()
                     if e.device_type.name == "CUDA" and "FillFunctor" not in e.name and "emset" not in e.name)
    per = len(kernels) // calls  # the same kernels every call (each call ends in a synchronize)
    if per == 0 or len(kernels) % calls:
        return sum(t for _, t in kernels) / calls / 1e3
    per_call = sorted(sum(t for _, t in kernels[i * per:(i + 1) * per]) for i in range(calls))
    return per_call[calls // 2] / 1e3


def anchors(fn, x) -> tuple:
    """((do_bench ms, GPU ms) of eager, the same of torch.compile) of fn(x),
    x requiring grad (a training forward)."""
    xg = x.detach().clone(memory_format=torch.preserve_format).requires_grad_()
    compiled = torch.compile(fn)
    compiled(xg)
    return (bench(lambda: fn(xg)), gpu_ms(lambda: fn(xg))), (bench(lambda: compiled(xg)), gpu_ms(lambda: compiled(xg)))


def both(nbytes, pair) -> str:
    return f"{gbs(nbytes, pair[0])}/{gbs(nbytes, pair[1])}"


def with_constants(module, values: dict, fn):
    """fn() with module constants set to values, restored afterwards."""
    saved = {k: getattr(module, k) for k in values}
    try:
        for k, v in values.items():
            setattr(module, k, v)
        N._plans.clear()  # batch norm's launch shapes are cached per layout
        return fn()
    finally:
        for k, v in saved.items():
            setattr(module, k, v)
        N._plans.clear()


def pool() -> None:
    for name, is_max, k, s, p in (("max 3x3/s2/p1", True, 3, 2, 1), ("max 2x2/s2", True, 2, 2, 0),
                                  ("avg 2x2/s2", False, 2, 2, 0)):
        o = (SHAPE[2] + 2 * p - k) // s + 1
        for dname, dtype in DTYPES.items():
            for cl in (False, True):
                x = make_input(SHAPE, dtype, cl)
                nbytes = (x.numel() + SHAPE[0] * SHAPE[1] * o * o) * x.element_size()
                ref = (lambda t: TF.max_pool2d(t, k, s, p)) if is_max else (lambda t: TF.avg_pool2d(t, k, s, p))
                eager, compiled = anchors(ref, x)

                def launch():
                    return P._launch_forward(x, (k, k), (s, s), (p, p), (1, 1), (o, o), is_max)[0]

                torch.testing.assert_close(launch(), ref(x))
                line = [f"{name} {dname} {'cl' if cl else 'nchw'}: eager {both(nbytes, eager)} compile {both(nbytes, compiled)}"
                        f" lamina {both(nbytes, (bench(launch), gpu_ms(launch)))}"]
                names = ("TILE", "FORWARD_WARPS") if cl else ("PAIRS_MAX_TILE" if is_max else "PAIRS_TILE", "PAIRS_WARPS")
                for tile in ((1024, 2048, 4096) if SWEEP else ()):
                    for warps in (4, 8):
                        ms = with_constants(P, {names[0]: tile, names[1]: warps}, lambda: gpu_ms(launch))
                        line.append(f"{tile}/{warps} {gbs(nbytes, ms)}")
                print(" | ".join(line), flush=True)
                del x


def bn() -> None:
    for dname, layout in (("fp32", True), ("bf16", True), ("fp32", False)):
        x = make_input(SHAPE, DTYPES[dname], layout)
        c = SHAPE[1]
        w, b = torch.randn(c, device=DEVICE), torch.randn(c, device=DEVICE)
        rm, rv = torch.zeros(c, device=DEVICE), torch.ones(c, device=DEVICE)
        nbytes = 3 * x.numel() * x.element_size()  # read twice, write once
        eager, compiled = anchors(lambda t: TF.batch_norm(t, rm, rv, w, b, training=True), x)

        def forward():
            return N.batch_norm_forward(x, w, b, rm, rv, True, 1e-5)[0]

        def reduce():
            return N._reduce(N._plan(x), None, None, backward=False)

        torch.testing.assert_close(forward().float(), TF.batch_norm(x, None, None, w, b, training=True).float(),
                                   rtol=2e-2, atol=2e-2)
        line = [f"bn {dname} {'cl' if layout else 'nchw'}: eager {both(nbytes, eager)} compile {both(nbytes, compiled)}"
                f" lamina {both(nbytes, (bench(forward), gpu_ms(forward)))}"]
        for tile, warps, per_sm in ((2048, 4, 8), (2048, 8, 4)):
            values = {"_REDUCE_TILE": tile, "_REDUCE_WARPS": warps, "_REDUCE_PROGRAMS_PER_SM": per_sm}
            fwd = with_constants(N, values, lambda: gpu_ms(forward))
            red = with_constants(N, values, lambda: gpu_ms(reduce))
            line.append(f"{tile}/{warps}/{per_sm} {gbs(nbytes, fwd)} (reduce {red * 1e3:.0f} us)")
        print(" | ".join(line), flush=True)
        del x


def gap() -> None:
    shape = GAP_SHAPE
    for dname, dtype in DTYPES.items():
        for cl in (False, True):
            x = make_input(shape, dtype, cl)
            nbytes = (x.numel() + shape[0] * shape[1]) * x.element_size()
            eager, compiled = anchors(lambda t: TF.adaptive_avg_pool2d(t, 1), x)

            def launch():
                return P.adaptive_avg_pool2d_forward(x, (1, 1))

            torch.testing.assert_close(launch(), TF.adaptive_avg_pool2d(x, 1))
            line = [f"gap {dname} {'cl' if cl else 'nchw'}: eager {both(nbytes, eager)} compile {both(nbytes, compiled)}"
                    f" lamina {both(nbytes, (bench(launch), gpu_ms(launch)))}"]
            if cl:
                variants = [{"GLOBAL_CL_TILE": t, "GLOBAL_CL_ROW_BYTES": rb, "GLOBAL_CL_WARPS": wp}
                            for t, rb in ((8192, 1024), (8192, 2048), (8192, 4096), (16384, 2048)) for wp in (4, 8)]
            else:
                variants = [{"PLANE_BLOCK": t, "PLANE_WARPS": wp} for t in (2048, 4096, 8192) for wp in (2, 4, 8)]
            for values in variants:
                ms = with_constants(P, values, lambda: gpu_ms(launch))
                line.append("/".join(str(v) for v in values.values()) + f" {gbs(nbytes, ms)}")
            print(" | ".join(line), flush=True)
            del x


def addnorm() -> None:
    """add_layer_norm / add_rms_norm at 32768x4096: forward and forward +
    backward GPU time, s written and read back (prenorm) or rebuilt from x
    and residual (the default), next to torch.compile of the composition."""
    import lamina.functional as F

    m, n = 32768, 4096
    for dname, dtype in DTYPES.items():
        for rms in (False, True):
            torch.manual_seed(0)
            x, r, dy = (torch.randn(m, n, device=DEVICE, dtype=dtype, requires_grad=True) for _ in range(3))
            w = torch.randn(n, device=DEVICE, dtype=dtype, requires_grad=True)
            b = torch.randn(n, device=DEVICE, dtype=dtype, requires_grad=True)
            leaves = [x, r, w] if rms else [x, r, w, b]
            if rms:
                def lam(prenorm):
                    return F.add_rms_norm(x, r, [n], w, 1e-6, prenorm=prenorm)
                compiled = torch.compile(lambda x, r: TF.rms_norm(x + r, [n], w, 1e-6))
            else:
                def lam(prenorm):
                    return F.add_layer_norm(x, r, [n], w, b, prenorm=prenorm)
                compiled = torch.compile(lambda x, r: TF.layer_norm(x + r, [n], w, b))
            unit = m * n * x.element_size()
            line = [f"add+{'rms' if rms else 'layer'}_norm {dname}:"]
            for name, fwd in (("compile", lambda: compiled(x, r)), ("lamina", lambda: lam(False)),
                              ("lamina prenorm", lambda: lam(True)[0])):
                fwd()
                both_ms = gpu_ms(lambda: torch.autograd.grad(fwd(), leaves, dy))
                line.append(f"{name} fwd {gbs(3 * unit, gpu_ms(fwd))} fwd+bwd {gbs(7 * unit, both_ms)}")
            print(" | ".join(line), flush=True)
            del x, r, dy


def addnormsweep() -> None:
    """The add+norm backward that rebuilds s (x, residual, dy in; ds out) at
    32768x4096 under the row norm's backward configurations (sweep.py's
    row_backward_sweep: rows/warps/programs an SM, plain/prefetch GB/s of 4n)."""
    from lamina.kernels import fused as K
    from sweep import row_backward_sweep

    m, n = 32768, 4096
    configs = [(rows, warps, per_sm) for rows in (1, 2) for warps in (8, 16) for per_sm in (1, 2, 4)]
    for dname, dtype in DTYPES.items():
        torch.manual_seed(0)
        x, r, dy = (torch.randn(m, n, device=DEVICE, dtype=dtype) for _ in range(3))
        w, b = torch.randn(n, device=DEVICE, dtype=dtype), torch.randn(n, device=DEVICE, dtype=dtype)
        for rms in (False, True):
            bias = None if rms else b
            _, _, mean, rstd = K.add_norm_forward(x, r, (n,), w, bias, 1e-5, 0.0, None, 0, rms, keep_sum=False)

            def backward():
                return K.add_norm_backward(dy, None, None, (n,), w, mean, rstd, not rms, 0.0, None, 0, rms, x, r)

            nbytes = 4 * m * n * x.element_size()
            print(f"rebuild-s backward add+{'rms' if rms else 'layer'}_norm {dname}: default "
                  f"{gbs(nbytes, bench(backward))} | " + row_backward_sweep(configs, N.row_block(n), backward, nbytes),
                  flush=True)
        del x, r, dy


def source() -> None:
    from torch._inductor.utils import run_and_get_code

    cases = (("avg 2x2 fp32 nchw", lambda t: TF.avg_pool2d(t, 2, 2), SHAPE, torch.float32, False),
             ("max 3x3 fp32 cl", lambda t: TF.max_pool2d(t, 3, 2, 1), SHAPE, torch.float32, True),
             ("bn fp32 cl", None, SHAPE, torch.float32, True))
    for name, fn, shape, dtype, cl in cases:
        if fn is None:
            c = shape[1]
            w, b = torch.ones(c, device=DEVICE, requires_grad=True), torch.zeros(c, device=DEVICE, requires_grad=True)
            rm, rv = torch.zeros(c, device=DEVICE), torch.ones(c, device=DEVICE)
            fn = (lambda t: TF.batch_norm(t, rm, rv, w, b, training=True))
        x = make_input(shape, dtype, cl).requires_grad_()
        torch._dynamo.reset()
        _, sources = run_and_get_code(torch.compile(fn), x)
        print(f"===== Inductor: {name}", flush=True)
        for text in sources:
            start = text.find("@triton.jit")
            while start >= 0:
                end = text.find("'''", start)
                print(text[start:end if end > 0 else start + 3000][:3500], flush=True)
                start = text.find("@triton.jit", end if end > 0 else start + 1)
        del x


def main() -> None:
    print_header()
    x = torch.empty(1 << 28, device=DEVICE)
    print(f"copy {copy_gbs(x)} GB/s", flush=True)
    del x
    global SWEEP
    parts = sys.argv[1:] or ["pool", "bn", "gap", "source"]
    if "poolsweep" in parts:
        SWEEP = True
        parts = ["pool" if p == "poolsweep" else p for p in parts]
    for part in parts:
        {"pool": pool, "bn": bn, "gap": gap, "addnorm": addnorm, "addnormsweep": addnormsweep,
         "source": source}[part]()


if __name__ == "__main__":
    main()
