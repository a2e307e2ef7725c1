"""GPU extremes: lamina's kernels past 2**31 elements, and bit-identical
results run to run for every op of the op table.

Part 1, tensors of more than 2**31 elements (int64 offsets), in bfloat16:
  * relu forward + backward on 2**31 + 2**20 elements (4.3 GB);
  * layer_norm over rows of 1024 of the same number of elements, forward +
    backward (dx, dweight, dbias);
  * max_pool2d 2x2 on (8, 64, 2048, 2050) (2**31 + 2**21 elements), forward
    + backward.
  Each is checked against PyTorch chunk by chunk (a chunk of rows / samples at
  a time, so the reference never holds a second copy of the whole tensor).

Part 2, determinism: every op of lamina.optable.OPS, every keyword set, at a
realistic size, forward and backward twice on the same inputs: outputs and
gradients must be bitwise identical.

Usage (on the GPU machine; under 4 minutes on an H100/H200):
    python scripts/gpu_extremes.py --out bench/results/extremes
    python scripts/gpu_extremes.py --tiny --out /tmp/x   # CPU, Triton interpreter, small sizes

A failure is recorded and the rest goes on; the summary table is printed and
written, with the machine and versions, to <out>/gpu_extremes.json. The exit
status is 1 when anything failed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import torch  # noqa: E402
import torch.nn.functional as TF  # noqa: E402


# ---- bookkeeping ----------------------------------------------------------------

class Recorder:
    """One row per check: name, status (pass / FAIL / ERROR / skip), detail, seconds."""

    def __init__(self):
        self.rows = []

    def run(self, name, fn):
        t0 = time.time()
        try:
            detail = fn()
            status = "pass"
        except CheckFailed as e:
            status, detail = "FAIL", str(e)
        except Skip as e:
            status, detail = "skip", str(e)
        except Exception as e:  # recorded, and the rest goes on
            status = "ERROR"
            detail = f"{type(e).__name__}: {e}"[:500] + " | " + traceback.format_exc(limit=3).replace("\n", " ")[-700:]
        finally:
            sync()
        row = dict(name=name, status=status, detail=str(detail or ""), seconds=round(time.time() - t0, 2))
        self.rows.append(row)
        print(f"{status:5s} {name:48s} {row['seconds']:7.2f}s  {row['detail'][:150]}", flush=True)
        return row

    def failed(self):
        return [r for r in self.rows if r["status"] in ("FAIL", "ERROR")]


class CheckFailed(AssertionError):
    pass


class Skip(Exception):
    pass


DEVICE = "cuda"


def sync():
    if DEVICE == "cuda" and torch.cuda.is_available():
        torch.cuda.synchronize()


def free_memory():
    import gc

    gc.collect()
    if DEVICE == "cuda":
        torch.cuda.empty_cache()


def need_bytes(nbytes):
    if DEVICE != "cuda":
        return
    free, _ = torch.cuda.mem_get_info()
    if free < nbytes:
        raise Skip(f"needs {nbytes / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free")


def bits(t):
    """t's bit pattern, for bitwise comparison (NaN equal to itself)."""
    t = t.detach().contiguous().reshape(-1)
    return t.view(torch.uint8) if t.numel() else t


def same_bits(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(bits(a), bits(b))


def close(actual, expected, rtol, atol, what):
    """Count elements outside atol + rtol * |expected| (float32 arithmetic)."""
    a, e = actual.float(), expected.float()
    bad = ((a - e).abs() > atol + rtol * e.abs()) | (a.isnan() != e.isnan())
    n_bad = int(bad.sum())
    if n_bad:
        err = float((a - e).abs().nan_to_num(float("inf")).max())
        raise CheckFailed(f"{what}: {n_bad} of {a.numel()} elements off (max abs error {err:.3g})")
    return float((a - e).abs().max()) if a.numel() else 0.0


def chunks(n, size):
    for start in range(0, n, size):
        yield start, min(n, start + size)


# ---- part 1: more than 2**31 elements ----------------------------------------------

def big_relu(F, n, chunk):
    need_bytes(4 * n * 2 + 2**30)
    g = torch.Generator(device=DEVICE).manual_seed(0)
    x = torch.randn(n, device=DEVICE, dtype=torch.bfloat16, generator=g).requires_grad_(True)
    y = F.relu(x)
    dy = torch.randn(n, device=DEVICE, dtype=torch.bfloat16, generator=g)
    (dx,) = torch.autograd.grad(y, x, dy)
    xd = x.detach()
    for a, b in chunks(n, chunk):
        xc = xd[a:b]
        if not same_bits(y[a:b].detach(), torch.relu(xc)):
            raise CheckFailed(f"forward differs from torch.relu in elements [{a}, {b})")
        if not same_bits(dx[a:b], torch.where(xc > 0, dy[a:b], torch.zeros_like(dy[a:b]))):
            raise CheckFailed(f"backward differs from torch's in elements [{a}, {b})")
    tail = float(y[-1].detach().float()), float(torch.relu(xd[-1]).float())
    return f"{n} elements ({n * 2 / 2**30:.2f} GiB bf16), bitwise equal; last element {tail[0]:.4g}"


def big_layer_norm(F, n, width, chunk_rows):
    rows = n // width
    need_bytes(4 * rows * width * 2 + 2**31)
    g = torch.Generator(device=DEVICE).manual_seed(1)
    x = torch.randn(rows, width, device=DEVICE, dtype=torch.bfloat16, generator=g).requires_grad_(True)
    w = (1 + 0.1 * torch.randn(width, device=DEVICE, generator=g)).to(torch.bfloat16).requires_grad_(True)
    b = (0.1 * torch.randn(width, device=DEVICE, generator=g)).to(torch.bfloat16).requires_grad_(True)
    y = F.layer_norm(x, [width], w, b)
    dy = torch.randn(rows, width, device=DEVICE, dtype=torch.bfloat16, generator=g)
    dx, dw, db = torch.autograd.grad(y, (x, w, b), dy)
    dw_ref = torch.zeros(width, device=DEVICE, dtype=torch.float64)
    db_ref = torch.zeros(width, device=DEVICE, dtype=torch.float64)
    worst_y = worst_dx = 0.0
    for a, c in chunks(rows, chunk_rows):
        # the reference: PyTorch in float32 on the same bfloat16 values
        xc = x.detach()[a:c].float().requires_grad_(True)
        wc, bc = w.detach().float().requires_grad_(True), b.detach().float().requires_grad_(True)
        yc = TF.layer_norm(xc, [width], wc, bc)
        gx, gw, gb = torch.autograd.grad(yc, (xc, wc, bc), dy[a:c].float())
        # one bfloat16 rounding of values up to ~5: 2 ulps
        worst_y = max(worst_y, close(y.detach()[a:c], yc.detach(), 1.6e-2, 1.6e-2, f"y rows [{a}, {c})"))
        worst_dx = max(worst_dx, close(dx[a:c], gx, 1.6e-2, 1.6e-2, f"dx rows [{a}, {c})"))
        dw_ref += gw.double()
        db_ref += gb.double()
        del xc, yc, gx
    # dweight/dbias: sums over all rows, returned in bfloat16 (one rounding, 2**-8)
    for name, got, ref in (("dweight", dw, dw_ref), ("dbias", db, db_ref)):
        scale = float(ref.abs().max())
        close(got.double(), ref, 1e-2, 1e-2 * scale, name)
    return f"({rows}, {width}) bf16: max |y err| {worst_y:.3g}, max |dx err| {worst_dx:.3g}, dweight/dbias within 1%"


def big_max_pool(F, shape):
    n = math.prod(shape)
    need_bytes(n * 2 * 2 + n // 2 + 2**31)
    g = torch.Generator(device=DEVICE).manual_seed(2)
    x = torch.randn(shape, device=DEVICE, dtype=torch.bfloat16, generator=g).requires_grad_(True)
    y = F.max_pool2d(x, 2)
    dy = torch.randn(y.shape, device=DEVICE, dtype=torch.bfloat16, generator=g)
    (dx,) = torch.autograd.grad(y, x, dy)
    for i in range(shape[0]):  # one sample at a time
        xc = x.detach()[i:i + 1].requires_grad_(True)
        yc = TF.max_pool2d(xc, 2)
        (gc,) = torch.autograd.grad(yc, xc, dy[i:i + 1])
        if not same_bits(y.detach()[i:i + 1], yc.detach()):
            raise CheckFailed(f"forward differs from torch in sample {i}")
        if not same_bits(dx[i:i + 1], gc):
            diff = int((bits(dx[i:i + 1]) != bits(gc)).sum())
            raise CheckFailed(f"backward differs from torch in sample {i} ({diff} bytes; ties broken differently?)")
    return f"{tuple(shape)} = {n} elements bf16, forward and backward bitwise equal to torch"


# ---- part 2: determinism of every op ---------------------------------------------

def realistic_shape(case, tiny):
    """A realistic size for the op (what the benchmark matrix uses, smaller), or
    the case's small shape in --tiny mode."""
    if tiny:
        return max(case.small_shapes, key=lambda s: math.prod(s))
    name = case.name
    four_d = (32, 64, 56, 56)
    table = [
        (("max_pool2d", "avg_pool2d", "adaptive"), (32, 64, 112, 112)),
        (("batch_norm", "instance_norm", "group_norm", "drop_block2d"), four_d),
        (("layer_norm_last2", "rms_norm_last2"), (4096, 32, 64)),
        (("layer_norm", "rms_norm"), (8192, 4096)),
    ]
    for prefixes, shape in table:
        if name.startswith(prefixes):
            return shape
    return (4096, 4096)  # activations, dropout, drop_connect


def run_twice(case, shape, kwargs, dtype):
    torch.manual_seed(0)
    if case.make_input:
        x = case.make_input(shape, dtype).to(DEVICE)
    else:  # drawn on the device: a CPU randn of 2**24 values per op would eat the time budget
        g = torch.Generator(device=DEVICE).manual_seed(0)
        x = torch.randn(shape, device=DEVICE, generator=g).to(dtype)
    params = [p.to(DEVICE) for p in case.params(shape, dtype)]
    outs = []
    for _ in range(2):
        xi = x.detach().clone().requires_grad_(True)
        pi = [p.detach().clone().requires_grad_(True) for p in params]
        with torch.device(DEVICE):  # tensors the case makes inside (running stats) on the device
            out = case.lamina(xi, *pi, **kwargs)
        y = out[0] if isinstance(out, (tuple, list)) else out
        g = torch.Generator(device=DEVICE).manual_seed(5)
        dy = torch.randn(y.shape, device=DEVICE, dtype=torch.float32, generator=g).to(y.dtype)
        leaves = [xi] + pi
        grads = torch.autograd.grad(y, leaves, dy, allow_unused=True) if y.requires_grad else []
        outs.append([y.detach()] + [gr for gr in grads if gr is not None])
    return outs


def determinism(case, kwargs, dtype, tiny):
    shape = realistic_shape(case, tiny)
    first, second = run_twice(case, shape, kwargs, dtype)
    if len(first) != len(second):
        raise CheckFailed("the two runs returned different numbers of tensors")
    for i, (a, b) in enumerate(zip(first, second)):
        if not same_bits(a, b):
            what = "output" if i == 0 else f"gradient {i - 1}"
            raise CheckFailed(f"{what} differs between two runs at shape {shape}")
    return f"shape {shape}: {len(first)} tensors bitwise identical"


# ---- main ------------------------------------------------------------------------

def main(argv=None):
    global DEVICE
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="directory for gpu_extremes.json")
    parser.add_argument("--tiny", action="store_true",
                        help="CPU tensors through the Triton interpreter, small sizes (a smoke test of this script)")
    parser.add_argument("--dtypes", default="bfloat16,float32", help="dtypes of the determinism part")
    parser.add_argument("--budget", type=float, default=180.0,
                        help="seconds after which the determinism part stops starting new ops (recorded as skipped)")
    parser.add_argument("--skip-big", action="store_true", help="only the determinism part")
    args = parser.parse_args(argv)

    if args.tiny:
        DEVICE = "cpu"
        os.environ.setdefault("TRITON_INTERPRET", "1")
    elif not torch.cuda.is_available():
        print("gpu_extremes: no CUDA device (use --tiny on a CPU)", file=sys.stderr)
        return 2

    import lamina
    import lamina.functional as F
    from lamina.optable import OPS

    lamina.set_backend("triton")  # kernels on CUDA and, with --tiny, under the interpreter
    dtypes = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}
    dtype_list = [dtypes[d.strip()] for d in args.dtypes.split(",") if d.strip()]
    start = time.time()
    rec = Recorder()
    device_name = torch.cuda.get_device_name() if DEVICE == "cuda" else f"cpu (Triton interpreter) {platform.processor()}"
    print(f"gpu_extremes on {device_name}; torch {torch.__version__}", flush=True)

    if not args.skip_big:
        if args.tiny:
            n, width, chunk, pool = 2**12 + 2**6, 64, 2**10, (2, 3, 16, 18)
        else:
            n, width, chunk, pool = 2**31 + 2**20, 1024, 2**28, (8, 64, 2048, 2050)
        rec.run("big relu fwd+bwd (> 2**31 elements)", lambda: big_relu(F, n, chunk))
        free_memory()
        rec.run("big layer_norm fwd+bwd (> 2**31 elements)", lambda: big_layer_norm(F, n, width, chunk // width))
        free_memory()
        rec.run("big max_pool2d 2x2 fwd+bwd (> 2**31 elements)", lambda: big_max_pool(F, pool))
        free_memory()

    for dtype in dtype_list:
        for case in OPS:
            for kwargs in case.kwargs:
                name = f"determinism {case.name} {dtype_name(dtype)} {fmt(kwargs)}"
                if time.time() - start > args.budget:
                    rec.rows.append(dict(name=name, status="skip", detail="time budget spent", seconds=0.0))
                    continue
                rec.run(name, lambda c=case, k=kwargs, d=dtype: determinism(c, k, d, args.tiny))
        free_memory()

    total = time.time() - start
    counts = {s: sum(r["status"] == s for r in rec.rows) for s in ("pass", "FAIL", "ERROR", "skip")}
    print("\n" + "=" * 100)
    print(f"{'status':6s} {'check':70s} {'s':>7s}")
    for r in rec.rows:
        if r["status"] != "pass" or not r["name"].startswith("determinism"):
            print(f"{r['status']:6s} {r['name'][:70]:70s} {r['seconds']:7.2f}  {r['detail'][:120]}")
    print(f"summary: {counts} in {total:.1f}s on {device_name}")

    os.makedirs(args.out, exist_ok=True)
    import triton

    result = dict(
        script="scripts/gpu_extremes.py", date=datetime.datetime.now(datetime.timezone.utc).isoformat(),
        device=device_name, tiny=args.tiny, torch=torch.__version__, triton=triton.__version__,
        python=platform.python_version(), lamina=getattr(lamina, "__version__", "?"),
        seconds=round(total, 1), counts=counts, rows=rec.rows,
    )
    path = os.path.join(args.out, "gpu_extremes.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {path}")
    return 1 if rec.failed() else 0


def dtype_name(dtype):
    return str(dtype).replace("torch.", "")


def fmt(kwargs):
    return ",".join(f"{k}={v}" for k, v in kwargs.items()) or "-"


if __name__ == "__main__":
    sys.exit(main())
