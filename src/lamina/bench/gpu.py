"""The GPU benchmark harness: ``python -m lamina.bench.gpu`` (or ``lamina bench``
on a CUDA machine).

It runs, in this order, within a time budget:

1. ``--check``: every op of ``lamina.optable.OPS`` on the card, float32/16 and
   bfloat16, forward and gradients, against PyTorch in float64, and the
   bit-for-bit determinism of two identical calls (:mod:`.correctness`);
2. the standard matrix and the fused cells (:mod:`.shapes`): for every cell
   lamina, torch eager and Liger-Kernel (where it has the op), timed with
   ``triton.testing.do_bench`` (median), each as a fraction of a
   device-to-device copy measured in the same run, with lamina's values
   compared against eager's;
3. torch.compile of the same torch function (mode default, dynamic=False), one
   compile per op, shape, dtype and layout, last because compiling is slow: what
   the budget leaves out is reported as not run.

"fwd" times the forward as in training (input and parameters require grad),
so fwd and fwd+bwd cells share one compiled graph; "fwdbwd" times one forward
and a backward from a fixed upstream gradient, with ``grad_to_none`` so that
gradient accumulation is never timed.

Robustness: the work runs in a worker process that appends every result to
``results.jsonl`` as soon as it has it. An exception in a cell is recorded in
that cell. A worker that dies (a kernel's illegal memory access poisons the
CUDA context for good) or hangs is replaced by a fresh one that resumes after
the item it was on, which is marked failed. The supervisor stops everything at
the budget and then writes, into ``--out``: ``bench.json`` (card, versions,
date, copy bandwidth, every cell with every number), ``bench.txt`` (the
table), ``bench.png`` (the chart), ``check.json`` and ``results.jsonl``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from . import shapes as S

# Seconds an item may take before its worker is taken for hung and replaced:
# several times what a sound item takes with its Triton JIT (a check or bench
# item: seconds; a compile item with cold caches: up to ~30 s).
ITEM_TIMEOUT_S = {"check": 60, "bench": 60, "compile": 120}
# Do not start an item with less than this left of the budget.
ITEM_RESERVE_S = {"check": 5, "bench": 5, "compile": 20}
MAX_RESTARTS = 6
EXIT_CUDA_BROKEN = 3  # a worker's exit code: replace me, the item is recorded
DEFAULT_BUDGET_S = 480


# --- arguments ----------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lamina bench",
        description="Time lamina's Triton kernels against torch eager, torch.compile and Liger-Kernel on the "
        "standard matrix (DESIGN.md), optionally after a correctness check of every op on the card.",
    )
    p.add_argument("--out", default=os.path.join("bench", "results"), help="directory for the results (default: bench/results)")
    p.add_argument("--check", action="store_true", help="first check every op of the op table on the card against PyTorch in float64")
    p.add_argument("--check-only", action="store_true", help="run the correctness check and no benchmark")
    p.add_argument("--ops", help="comma-separated op names or prefixes (relu,layer_norm,max_pool2d) or families (activation, normalization, pooling, dropout)")
    p.add_argument("--dtype", help="comma-separated: float32, bfloat16 (float16 for the check)")
    p.add_argument("--mode", help="fwd, fwdbwd, or both comma-separated (default: both)")
    p.add_argument("--quick", action="store_true", help="fewer repetitions (do_bench warmup 5 ms, rep 25 ms)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile anchor")
    p.add_argument("--no-liger", action="store_true", help="skip the Liger-Kernel anchor")
    p.add_argument("--part", help="i/n: run the i-th of n deterministic parts of the cell list (and of the check)")
    p.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, help=f"stop starting work after this many seconds (default {DEFAULT_BUDGET_S})")
    p.add_argument("--list", action="store_true", help="print the cells and items that would run, and exit")
    p.add_argument("--resume", action="store_true", help="keep results.jsonl from an earlier run and skip what it already holds")
    p.add_argument("--in-process", action="store_true", help="run in this process, without a worker to restart (debugging)")
    p.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # CPU, tiny shapes, fake timer: exercises the harness
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    return p


def parse_args(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.ops_list = S.parse_list(args.ops)
        args.dtypes = S.parse_dtypes(args.dtype)
        args.modes = S.parse_list(args.mode)
        if args.modes and any(m not in S.MODES for m in args.modes):
            raise ValueError(f"--mode must be fwd, fwdbwd or both, got {args.mode!r}")
        args.part_tuple = S.parse_part(args.part)
    except ValueError as exc:
        parser.error(str(exc))
    if args.check_only:
        args.check = True
    return args


# --- the plan: every item, in the order they run ---------------------------------------

@dataclass(frozen=True)
class Item:
    id: str
    kind: str  # 'check' | 'bench' | 'compile'
    cells: tuple = ()  # bench and compile: the group's cells
    check: tuple = ()  # check: (case index, kwargs index, dtype)


@dataclass
class Plan:
    cells: list
    items: list

    def item_of(self) -> dict:
        """cell id -> ids of the items that time it."""
        out: dict = {}
        for item in self.items:
            for cell in item.cells:
                out.setdefault(cell.id, []).append(item.id)
        return out


def build_plan(args) -> Plan:
    items = []
    if args.check:
        from .correctness import check_items

        for item_id, ci, ki, dtype in S.take_part(check_items(args.ops_list, args.dtypes), args.part_tuple):
            items.append(Item(item_id, "check", check=(ci, ki, dtype)))
    cells = []
    if not args.check_only:
        selected = S.select(S.bench_matrix(), args.ops_list, args.dtypes, args.modes)
        if args.smoke:
            selected = [dataclasses.replace(c, shape=S.smoke_shape(c.shape)) for c in selected]
        groups = S.take_part(S.groups(selected), args.part_tuple)
        cells = [c for g in groups for c in g]
        items += [Item(f"bench:{g[0].group}", "bench", cells=tuple(g)) for g in groups]
        if not args.no_compile:
            # compiling is the slow part: bfloat16 first, so a short budget still
            # gets the dtype that matters most
            ordered = sorted(groups, key=lambda g: g[0].dtype != "bfloat16")
            items += [Item(f"compile:{g[0].group}", "compile", cells=tuple(g)) for g in ordered]
    return Plan(cells, items)


def file_names(args) -> dict:
    suffix = "" if args.part_tuple is None else f"-part{args.part_tuple[0]}of{args.part_tuple[1]}"
    names = {k: f"{k}{suffix}" for k in ("results", "bench", "check")}
    return {
        "results": os.path.join(args.out, names["results"] + ".jsonl"),
        "bench_json": os.path.join(args.out, names["bench"] + ".json"),
        "bench_txt": os.path.join(args.out, names["bench"] + ".txt"),
        "bench_png": os.path.join(args.out, names["bench"] + ".png"),
        "check_json": os.path.join(args.out, names["check"] + ".json"),
    }


# --- the raw record stream -------------------------------------------------------------

def read_records(path: str) -> list[dict]:
    """Every complete JSON line of results.jsonl (a line cut short by a kill is skipped)."""
    if not os.path.exists(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def append_record(path: str, record: dict) -> None:
    """Append one line, starting a new line if a killed writer left half of one."""
    prefix = ""
    if os.path.exists(path) and os.path.getsize(path):
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            prefix = "" if f.read(1) == b"\n" else "\n"
    with open(path, "a") as f:
        f.write(prefix + json.dumps(record) + "\n")


def done_items(records) -> set:
    return {r["item"] for r in records if r.get("type") == "done"}


# --- the worker: runs items, appends records ---------------------------------------------

class Broken(Exception):
    """The CUDA context is unusable: the worker must be replaced."""


class Worker:
    def __init__(self, args, plan: Plan, results_path: str):
        import torch

        from . import timing

        self.args, self.plan, self.results_path = args, plan, results_path
        self.torch = torch
        self.device = "cpu" if args.smoke else "cuda"
        if args.smoke:
            timing.use_timer(timing.fake_timer)
        self.file = open(results_path, "a", buffering=1)

    @staticmethod
    def _configure_compile():
        import torch._dynamo

        # each compile item resets dynamo; a high limit is a second safety
        # net against silently falling back to eager
        for name in ("recompile_limit", "cache_size_limit"):
            if hasattr(torch._dynamo.config, name):
                setattr(torch._dynamo.config, name, 64)

    def emit(self, record: dict) -> None:
        from .report import _clean

        self.file.write(json.dumps(_clean(record)) + "\n")
        self.file.flush()

    progress = ""  # "[done/total] ", the progress through the plan's items

    def say(self, text: str) -> None:
        print(self.progress + text, flush=True)

    # -- meta --
    def meta(self) -> dict:
        import platform
        from datetime import datetime, timezone

        import lamina

        from . import anchors, timing

        torch = self.torch
        try:
            import triton

            triton_version = triton.__version__
        except Exception:
            triton_version = None
        liger = None if (self.args.no_liger or self.args.smoke) else anchors.liger_version()
        meta = {
            "type": "meta",
            "card": torch.cuda.get_device_name() if self.device == "cuda" else "cpu (smoke run, fake timer)",
            "torch": torch.__version__, "cuda": torch.version.cuda, "triton": triton_version,
            "lamina": lamina.__version__, "liger": liger, "liger_error": anchors._liger_state.get("error"),
            "python": platform.python_version(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "quick": bool(self.args.quick), "pid": os.getpid(),
        }
        try:
            gbps, ms = timing.copy_gbps(self.device, nbytes=timing.COPY_BYTES if self.device == "cuda" else 1 << 20, quick=self.args.quick)
            meta.update(copy_gbps=gbps, copy_ms=ms, copy_bytes=2 * (timing.COPY_BYTES if self.device == "cuda" else 1 << 20))
        except Exception as exc:
            meta.update(copy_gbps=None, copy_error=f"{type(exc).__name__}: {exc}")
        return meta

    # -- the loop --
    def run(self) -> int:
        meta = self.meta()
        self.emit(meta)
        self.say(f"[worker {os.getpid()}] {meta['card']} | copy {meta.get('copy_gbps') or 0:.0f} GB/s | torch {meta['torch']} | "
                 f"triton {meta['triton']} | liger {meta['liger'] or 'absent'}")
        done = done_items(read_records(self.results_path))
        total = len(self.plan.items)
        for number, item in enumerate(self.plan.items, 1):
            if item.id in done:
                continue
            self.progress = f"[{number}/{total}] "
            if self.args.deadline is not None and time.time() > self.args.deadline - ITEM_RESERVE_S[item.kind]:
                self.say(f"[worker] time budget reached before {item.id}: stopping")
                return 0
            self.emit({"type": "start", "item": item.id, "t": time.time()})
            if os.environ.get("LAMINA_BENCH_DIE_AT") == item.id:  # tests the supervisor's recovery
                os._exit(7)
            t0 = time.perf_counter()
            error = None
            try:
                if item.kind == "check":
                    self.run_check(item)
                elif item.kind == "bench":
                    self.run_bench(item)
                else:
                    self.run_compile(item)
            except Broken as exc:
                self.emit({"type": "done", "item": item.id, "error": f"CUDA context broken: {exc}", "s": time.perf_counter() - t0})
                self.say(f"[worker] {item.id}: CUDA context broken ({exc}); exiting for a fresh worker")
                return EXIT_CUDA_BROKEN
            except Exception as exc:  # a whole item failed; its cells say so
                error = f"{type(exc).__name__}: {exc}"[:500]
                self.say(f"[worker] {item.id}: {error}")
                if not self.healthy():
                    self.emit({"type": "done", "item": item.id, "error": f"CUDA context broken: {error}", "s": time.perf_counter() - t0})
                    return EXIT_CUDA_BROKEN
            self.emit({"type": "done", "item": item.id, "error": error, "s": time.perf_counter() - t0})
        return 0

    def healthy(self) -> bool:
        from .correctness import cuda_healthy

        return cuda_healthy(self.device)

    def guard(self, what: str, exc: Exception) -> str:
        """The error text for a record; raises Broken when CUDA is gone."""
        text = f"{type(exc).__name__}: {exc}"[:500]
        if not self.healthy():
            raise Broken(f"{what}: {text}")
        return text

    # -- check items --
    def run_check(self, item: Item) -> None:
        from .correctness import run_item

        ci, ki, dtype = item.check
        try:
            rows = run_item(ci, ki, dtype, self.device, scale=not self.args.smoke,
                            on_row=lambda row: self.emit({"type": "check", "item": item.id, **row}))
        except Exception as exc:
            self.guard(item.id, exc)  # raises Broken when CUDA is gone
            raise
        bad = [r for r in rows if not r.get("ok")]
        self.say(f"check {item.id[6:]}: {len(rows) - len(bad)}/{len(rows)} ok" + "".join(
            f"\n    FAIL {r['shape']} {r['layout']}: {r.get('error') or (r.get('where'), r.get('worst'))}" for r in bad))

    # -- bench items --
    def inputs(self, cell):
        """The group's input and parameters, the same every time (seeded)."""
        from . import anchors
        from .correctness import TORCH_DTYPES

        torch = self.torch
        dtype = TORCH_DTYPES[cell.dtype]
        torch.manual_seed(0)
        x = torch.randn(cell.shape, device=self.device, dtype=dtype)
        if cell.layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        return x, anchors.make_params(cell.op, cell.shape, dtype, self.device)

    def first_call(self, fn, x0, p0, op, backward: bool):
        """One forward (and backward) outside the clock: compiles what needs
        compiling, gives the values to compare, and fixes the upstream gradient
        (the same values for every implementation, in its output's layout)."""
        from . import anchors

        torch = self.torch
        learnable = anchors.OPS[op].learnable
        x = x0.detach().clone(memory_format=torch.preserve_format).requires_grad_(True)
        p = {k: v.detach().clone().requires_grad_(k in learnable) for k, v in p0.items()}
        y = fn(x, p)
        dy, grads = None, []
        if backward:
            g = torch.Generator(device=self.device).manual_seed(1)
            dy = torch.empty_like(y).copy_(torch.randn(y.shape, generator=g, device=self.device, dtype=y.dtype))
            torch.autograd.backward(y, dy)
            grads = [x.grad] + [p[k].grad for k in learnable]
        leaves = [x] + [p[k] for k in learnable]
        for t in leaves:
            t.grad = None
        if self.device == "cuda":
            torch.cuda.synchronize()  # a kernel's fault surfaces here, in the right cell
        return y.detach(), grads, x, p, dy, leaves

    def time_mode(self, fn, x, p, dy, leaves, mode: str, shared_grad: bool = False) -> float:
        from . import timing

        torch = self.torch
        if mode == "fwd":
            def step():
                fn(x, p)
        elif shared_grad:
            # the same gradient for two inputs (anchors.OpBench.shared_grad):
            # returned, not accumulated into .grad, so it is not copied
            def step():
                torch.autograd.grad(fn(x, p), leaves, dy)
        else:
            def step():
                torch.autograd.backward(fn(x, p), dy)
        return timing.time_ms(step, grad_to_none=leaves, quick=self.args.quick)

    def run_bench(self, item: Item) -> None:
        from . import anchors

        cells = item.cells
        c0 = cells[0]
        kw = c0.kw
        backward = any(c.mode == "fwdbwd" for c in cells)
        x0, p0 = self.inputs(c0)
        impls = [("eager", lambda: anchors.torch_fn(c0.op, kw)), ("lamina", lambda: anchors.lamina_fn(c0.op, kw))]
        if not (self.args.no_liger or self.args.smoke):
            impls.append(("liger", lambda: anchors.liger_fn(c0.op, kw)))
        results = {c.id: {} for c in cells}
        match = {}
        ref = None
        for name, make in impls:
            try:
                fn = make()
                if fn is None:
                    continue  # Liger has no such layer
                y, grads, x, p, dy, leaves = self.first_call(fn, x0, p0, c0.op, backward)
            except Exception as exc:
                text = self.guard(f"{name} {c0.group}", exc)
                for c in cells:
                    results[c.id][name] = {"error": text}
                continue
            if name == "eager":
                ref = (y, grads)
            elif name == "lamina" and ref is not None:
                try:
                    match = compare(c0, x0, ref, (y, grads), dy, p0)
                except Exception as exc:
                    match = {"fwd": {"ok": None, "error": self.guard("compare", exc)}}
                ref = None  # eager's values are not needed any more
            for c in cells:
                try:
                    results[c.id][name] = {"ms": self.time_mode(fn, x, p, dy, leaves, c.mode, anchors.OPS[c0.op].shared_grad)}
                except Exception as exc:
                    results[c.id][name] = {"error": self.guard(f"{name} {c.id}", exc)}
            del y, grads, x, p, dy, leaves, fn
        del ref
        impl = anchors.lamina_impl(c0.op) if "error" not in results[cells[0].id].get("lamina", {}) else ""
        for c in cells:
            m = match.get(c.mode) if match else None
            self.emit({"type": "cell", "item": item.id, "cell": c.id, "impls": results[c.id], "match": m, "lamina_impl": impl})
            self.say(_progress_line(c, results[c.id], m))
        self.free()

    def run_compile(self, item: Item) -> None:
        import torch._dynamo

        from . import anchors

        cells = item.cells
        c0 = cells[0]
        backward = any(c.mode == "fwdbwd" for c in cells)
        self._configure_compile()
        torch._dynamo.reset()
        x0, p0 = self.inputs(c0)
        try:
            fn = anchors.compiled_fn(c0.op, c0.kw)
            t0 = time.perf_counter()
            y, grads, x, p, dy, leaves = self.first_call(fn, x0, p0, c0.op, backward)
            compile_s = time.perf_counter() - t0
        except Exception as exc:
            text = self.guard(f"compile {c0.group}", exc)
            for c in cells:
                self.emit({"type": "compile", "item": item.id, "cell": c.id, "error": text})
            self.say(f"compile {c0.group}: ERROR {text}")
            return
        for c in cells:
            try:
                rec = {"ms": self.time_mode(fn, x, p, dy, leaves, c.mode, anchors.OPS[c0.op].shared_grad), "compile_s": compile_s}
            except Exception as exc:
                rec = {"error": self.guard(f"compile {c.id}", exc)}
            self.emit({"type": "compile", "item": item.id, "cell": c.id, **rec})
            self.say(f"compile {c.id}: " + (f"{rec['ms']:.3f} ms (compiled in {compile_s:.1f} s)" if "ms" in rec else f"ERROR {rec['error']}"))
        del y, grads, x, p, dy, leaves, fn
        torch._dynamo.reset()
        self.free(collect=True)

    def free(self, collect: bool = False) -> None:
        """Give the group's memory back. Reference counting frees the tensors;
        a full garbage collection (slow once dynamo is loaded) only after
        compiling, and only when much memory is still held."""
        torch = self.torch
        if self.device == "cuda":
            if collect and torch.cuda.memory_allocated() > 8e9:
                import gc

                gc.collect()
            torch.cuda.empty_cache()


def _progress_line(cell, impls: dict, match) -> str:
    def ms(name):
        r = impls.get(name)
        if r is None:
            return "-"
        return f"{r['ms']:.3f}" if "ms" in r else "ERR"

    ok = "-" if not match or match.get("ok") is None else ("ok" if match["ok"] else "MISMATCH")
    errs = "; ".join(f"{k}: {v['error']}" for k, v in impls.items() if "error" in v)
    return f"bench {cell.id}: lamina {ms('lamina')} ms, eager {ms('eager')}, liger {ms('liger')} [{ok}]" + (f"  ({errs[:300]})" if errs else "")


# --- comparing lamina with eager at the benchmark shape -------------------------------------

def compare(cell, x0, ref, got, dy, p0=None) -> dict:
    """{'fwd': {...}, 'fwdbwd': {...}}: does lamina's output (and gradients)
    match torch eager's? Both round, so the tolerance is twice the dtype's
    (reduced gradients: scaled by the square root of the reduction).
    Dropout is random: its drop rate and its scale are checked instead
    (dropout + add: the same on y - residual, and dresidual = dy)."""
    import torch

    from . import anchors
    from .correctness import TORCH_DTYPES, error_ratio, few_gradient_misses, tolerances

    dtype = TORCH_DTYPES[cell.dtype]
    rtol, atol = (2 * v for v in tolerances()[dtype])
    (y_ref, g_ref), (y, g) = ref, got
    if anchors.OPS[cell.op].random:
        if cell.op == "dropout_add":
            return _compare_dropout_add(cell, x0, p0["residual"], y, g, dy, rtol, atol)
        return _compare_dropout(cell, x0, y, g, dy, rtol, atol)
    f32 = torch.float32
    fwd = error_ratio(y, y_ref, rtol, atol, f32)
    out = {"fwd": {"ok": fwd <= 1.0, "worst": fwd, "where": "forward"}}
    worst, where, worst_grad = fwd, "forward", None
    for i, (a, b) in enumerate(zip(g, g_ref)):
        if b is None:
            continue
        if a is None:
            worst, where = math.inf, f"grad {i} missing"
            break
        scale = math.sqrt(max(x0.numel() // max(b.numel(), 1), 1)) if i > 0 else 1.0
        r = error_ratio(a, b, rtol, atol * scale, f32)
        if r > worst:
            worst, where, worst_grad = r, f"grad {i}", (a, b, atol * scale)
    out["fwdbwd"] = {"ok": worst <= 1.0, "worst": worst, "where": where}
    if worst > 1.0 and worst_grad is not None and out["fwd"]["ok"]:
        # relu after a norm: where the two pre-activations straddle 0 the
        # derivative flips (the op table's kink rule, correctness.few_gradient_misses)
        a, b, grad_atol = worst_grad
        few, missed = few_gradient_misses(a, b, rtol, grad_atol)
        out["fwdbwd"].update(ok=few, grad_elements_missed=missed)
    return out


def _compare_dropout(cell, x0, y, g, dy, rtol, atol) -> dict:
    from .correctness import error_ratio

    p = cell.kw["p"]
    kept = y != 0
    dropped = 1.0 - kept.float().mean().item()
    scale = 1.0 / (1.0 - p)
    expected = (x0.float() * scale) * kept
    r = error_ratio(y.float(), expected, rtol, atol, expected.dtype)
    rate_ok = abs(dropped - p) < 0.01
    fwd = {"ok": bool(rate_ok and r <= 1.0), "worst": r, "where": f"forward (dropped {dropped:.4f}, p {p})"}
    out = {"fwd": fwd}
    if g and g[0] is not None and dy is not None:
        # the mask is read off y, which is also 0 where x is exactly 0 (randn
        # gives a few zeros in 2**26 draws): no verdict on those elements
        known = x0 != 0
        rg = error_ratio(g[0].float() * known, (dy.float() * scale) * kept * known, rtol, atol, expected.dtype)
        out["fwdbwd"] = {"ok": bool(fwd["ok"] and rg <= 1.0), "worst": max(r, rg), "where": fwd["where"] + ", grad 0"}
    return out


def _compare_dropout_add(cell, x0, residual, y, g, dy, rtol, atol) -> dict:
    """dropout(x) + residual: each element of y is either round(x * scale + r)
    (kept) or exactly r (dropped); the mask is read off y as the nearer of the
    two. Where the two are the same number (x * scale under half an ulp of
    r, or x = 0) the mask cannot be read: no verdict on those elements."""
    import torch

    from .correctness import error_ratio

    p = cell.kw["p"]
    scale = 1.0 / (1.0 - p)
    f32 = torch.float32
    r = residual.float()
    if_kept = (x0.float() * scale + r).to(residual.dtype).float()
    known = if_kept != r
    yf = y.float()
    kept = (yf - if_kept).abs() < (yf - r).abs()
    dropped = 1.0 - (kept & known).sum().item() / max(known.sum().item(), 1)
    expected = torch.where(kept, if_kept, r)
    err = error_ratio(yf * known, expected * known, rtol, atol, f32)
    rate_ok = abs(dropped - p) < 0.01
    fwd = {"ok": bool(rate_ok and err <= 1.0), "worst": err, "where": f"forward (dropped {dropped:.4f}, p {p})"}
    out = {"fwd": fwd}
    if len(g) == 2 and g[0] is not None and g[1] is not None and dy is not None:
        dx_expected = dy.float() * scale * kept
        rx = error_ratio(g[0].float() * known, dx_expected * known, rtol, atol, f32)
        rr = error_ratio(g[1], dy, rtol, atol, f32)  # dresidual = dy everywhere
        worst = max(err, rx, rr)
        out["fwdbwd"] = {"ok": bool(fwd["ok"] and rx <= 1.0 and rr <= 1.0), "worst": worst,
                         "where": fwd["where"] + ", grads 0 and 1"}
    return out


# --- the supervisor ------------------------------------------------------------------------

def _src_root() -> str:
    import lamina

    return os.path.dirname(os.path.dirname(os.path.abspath(lamina.__file__)))


def run_worker_process(argv, deadline: float, results_path: str) -> tuple[int | None, str | None, str | None]:
    """Runs one worker until it exits, hangs on an item, or the budget ends.
    Returns (exit code or None if killed, the item it was on, why it was killed)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = _src_root() + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    cmd = [sys.executable, "-m", "lamina.bench.gpu", *argv, "--worker", "--deadline", repr(deadline)]
    offset = os.path.getsize(results_path) if os.path.exists(results_path) else 0
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    inflight: tuple | None = None  # (item id, kind, start time)
    buffer = ""
    reason = None
    while True:
        rc = proc.poll()
        with open(results_path) as f:
            f.seek(offset)
            chunk = f.read()
            offset = f.tell()
        buffer += chunk
        *lines, buffer = buffer.split("\n")
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("type") == "start":
                inflight = (rec["item"], rec["item"].split(":", 1)[0], time.time())
            elif rec.get("type") == "done":
                inflight = None
        if rc is not None:
            return rc, inflight[0] if inflight else None, None
        now = time.time()
        if inflight and now - inflight[2] > ITEM_TIMEOUT_S.get(inflight[1], 60):
            reason = f"timed out after {ITEM_TIMEOUT_S.get(inflight[1], 60)} s"
        elif now > deadline + 15:
            reason = "stopped at the time budget"
        if reason:
            _kill(proc)
            return None, inflight[0] if inflight else None, reason
        time.sleep(0.25)


def _kill(proc) -> None:
    """Ends the worker we started, and its own children (compile workers)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()


def supervise(args, argv) -> int:
    os.makedirs(args.out, exist_ok=True)
    paths = file_names(args)
    if not args.resume and os.path.exists(paths["results"]):
        os.remove(paths["results"])
    open(paths["results"], "a").close()
    deadline = time.time() + args.budget_s
    plan = build_plan(args)
    print(f"[lamina bench] {len(plan.cells)} cells, {len(plan.items)} items, budget {args.budget_s:.0f} s, out {args.out}", flush=True)
    worker_argv = list(argv)
    restarts = 0
    while True:
        records = read_records(paths["results"])
        pending = [i for i in plan.items if i.id not in done_items(records)]
        if not pending or time.time() > deadline - 5:
            break
        rc, inflight, reason = run_worker_process(worker_argv, deadline, paths["results"])
        if rc == 0:
            break
        if rc == EXIT_CUDA_BROKEN:  # the worker recorded the item itself
            print("[lamina bench] the worker's CUDA context broke: starting a fresh worker", flush=True)
            restarts += 1
            if restarts > MAX_RESTARTS:
                break
            continue
        why = reason or f"worker exited with code {rc}"
        if inflight is None:
            append_record(paths["results"], {"type": "fatal", "error": f"{why} outside any item (see the log)"})
            print(f"[lamina bench] {why} outside any item: giving up", flush=True)
            break
        append_record(paths["results"], {"type": "done", "item": inflight, "error": why})
        print(f"[lamina bench] {inflight}: {why}; {'starting a fresh worker' if reason != 'stopped at the time budget' else 'stopping'}", flush=True)
        restarts += 1
        if restarts > MAX_RESTARTS or reason == "stopped at the time budget":
            break
    return render(args, plan, paths)


def render(args, plan: Plan, paths: dict) -> int:
    from . import report

    records = read_records(paths["results"])
    metas = [r for r in records if r.get("type") == "meta"]
    meta = next((m for m in metas if m.get("copy_gbps")), metas[0] if metas else {})
    meta = {k: v for k, v in meta.items() if k not in ("type", "pid")}
    meta["workers"] = len(metas)
    fatal = [r["error"] for r in records if r.get("type") == "fatal"]
    if fatal:
        meta["fatal"] = fatal
    done = done_items(records)
    not_run = [i.id for i in plan.items if i.id not in done]
    status = 0
    if args.check:
        rows = report.check_rows(records)
        check_failed = [r["item"] for r in records if r.get("type") == "done" and r.get("error") and r["item"].startswith("check:")]
        report.write_json(paths["check_json"], {"meta": meta, "rows": rows, "items_failed": check_failed,
                                                "not_run": [i for i in not_run if i.startswith("check:")]})
        print(report.format_check_table(rows), flush=True)
        if check_failed:
            print("check items that failed as a whole: " + ", ".join(check_failed), flush=True)
        if any(not r.get("ok") for r in rows) or check_failed:
            status = 1
    if plan.cells:
        rows = report.assemble(plan.cells, records, meta.get("copy_gbps"), plan.item_of())
        notes = {
            "bytes": "textbook minimum per cell (lamina.bench.traffic); GB/s = bytes / median time",
            "frac": "GB/s over the device-to-device copy bandwidth measured in the same run (read + write)",
            "speedup": "anchor ms / lamina ms",
            "fwd": "forward as in training: input and parameters require grad",
            "fwdbwd": "one forward and a backward from a fixed upstream gradient; grad_to_none, so no accumulation is timed",
            "timing": "triton.testing.do_bench, median, warmup/rep ms = " + ("5/25" if args.quick else "25/100"),
            "compile": "torch.compile(mode default, dynamic=False) of the torch function; compile_s is the first call",
        }
        report.write_json(paths["bench_json"], {"meta": meta, "notes": notes, "cells": rows,
                                                "not_run": [i for i in not_run if not i.startswith("check:")]})
        table = report.format_table(rows, meta)
        report.write_text(paths["bench_txt"], table)
        print(table, flush=True)
        try:
            report.draw_chart(paths["bench_png"], rows, meta)
        except Exception as exc:  # the numbers matter more than the picture
            print(f"[lamina bench] chart not drawn: {type(exc).__name__}: {exc}", flush=True)
        if any(r.get("error") or (r.get("lamina") or {}).get("error") for r in rows):
            status = 1
    if not_run:
        print(f"[lamina bench] not run (time budget): {len(not_run)} items: " + ", ".join(not_run[:20]) + (" ..." if len(not_run) > 20 else ""), flush=True)
    print("[lamina bench] wrote " + ", ".join(p for p in paths.values() if os.path.exists(p)), flush=True)
    return status


# --- entry point ------------------------------------------------------------------------------

def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.list:
        plan = build_plan(args)
        from . import traffic

        for item in plan.items:
            print(item.id)
            for c in item.cells if item.kind == "bench" else ():
                print(f"    {c.id}  {traffic.cell_bytes(c.op, c.shape, c.kw, c.dtype, c.mode) / 1e6:.1f} MB")
        print(f"{len(plan.cells)} cells, {len(plan.items)} items")
        return 0
    if args.worker:
        plan = build_plan(args)
        return Worker(args, plan, file_names(args)["results"]).run()
    if args.in_process:
        os.makedirs(args.out, exist_ok=True)
        paths = file_names(args)
        if not args.resume and os.path.exists(paths["results"]):
            os.remove(paths["results"])
        args.deadline = time.time() + args.budget_s
        plan = build_plan(args)
        Worker(args, plan, paths["results"]).run()
        return render(args, plan, paths)
    return supervise(args, argv)


if __name__ == "__main__":
    sys.exit(main())
