"""Where a host-bound cell's host time goes, function by function.

For each chosen benchmark cell (same inputs as probe_cells.py), lamina and
torch eager: the host time of a call with autograd's device thread on and
off, then one torch.profiler trace (CPU + CUDA, Python functions recorded)
of a few calls. From the trace, per thread: the self time of every Python
function and CPU op (time not spent in a child event), and the thread's
busy time; the biggest entries are printed. The trace itself is written
gzipped under --out for a closer look.

    PYTHONPATH=src python scripts/probe_host_trace.py --cells batch_norm2d-64x64x112x112-bf16-cl-fwdbwd --out /tmp/t
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(__file__))
from probe_cells import cell_inputs, cells_by_id, implementations, host_us, make_step  # noqa: E402



def self_times(events):
    """{(tid, name): self us} for complete events on each thread, nesting by
    time (an event's self time excludes events inside it on its thread)."""
    by_tid = collections.defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and "dur" in e:
            by_tid[e["tid"]].append(e)
    out = collections.Counter()
    busy = {}
    for tid, evs in by_tid.items():
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack = []  # [end, event, child time]
        top = 0.0
        for e in evs:
            while stack and e["ts"] >= stack[-1][0]:
                end, ev, child = stack.pop()
                out[(tid, ev["name"][:70])] += ev["dur"] - child
            if stack:
                stack[-1][2] += e["dur"]
            else:
                top += e["dur"]
            stack.append([e["ts"] + e["dur"], e, 0.0])
        while stack:
            end, ev, child = stack.pop()
            out[(tid, ev["name"][:70])] += ev["dur"] - child
        busy[tid] = top
    return out, busy


def trace_step(step, path, reps):
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], with_stack=True) as prof:
        for _ in range(reps):
            step()
        torch.cuda.synchronize()
    prof.export_chrome_trace(path)
    with open(path) as f:
        events = json.load(f)["traceEvents"]
    with open(path, "rb") as f, gzip.open(path + ".gz", "wb") as g:
        g.write(f.read())
    os.remove(path)
    cpu = [e for e in events if e.get("cat") in ("python_function", "cpu_op", "cuda_runtime", "cuda_driver", "user_annotation")]
    return self_times(cpu)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", required=True, help="comma-separated cell ids (see probe_cells.py's output)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for cell in cells_by_id(args.cells):
        x0, p0 = cell_inputs(cell)
        for who, fn in implementations(cell):
            step = make_step(fn, x0, p0, cell)
            on = host_us(step)
            with torch.autograd.set_multithreading_enabled(False):
                off = host_us(step)
            selfs, busy = trace_step(step, os.path.join(args.out, f"{cell.id}-{who}.json"), args.reps)
            print(f"== {cell.id} {who}: host {on:.0f} us a call (device thread), {off:.0f} (calling thread)")
            for tid, b in sorted(busy.items(), key=lambda kv: -kv[1]):
                print(f"   thread {tid}: busy {b / args.reps:.0f} us a call")
            for (tid, name), us in selfs.most_common(args.top):
                print(f"   {us / args.reps:8.1f} us  t{tid}  {name}")
        del x0, p0
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
