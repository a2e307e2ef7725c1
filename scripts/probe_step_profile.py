"""Where a patched ResNet-50 training step spends its time, on a card.

Four questions, one script (writes step_profile.json under --out):
  1. Host us per forward+backward of tiny layers with autograd's backward on
     its device thread (PyTorch's default) and on the calling thread
     (torch.autograd.set_multithreading_enabled(False)), lamina and torch.
  2. A cProfile of lamina's BatchNorm2d forward+backward on the calling
     thread (so that the backward is profiled too): the top functions.
  3. ResNet-50 (bf16 autocast, channels_last, batch --batch): median step
     time eager vs lamina.patch, threads on and off, and the GPU kernel time
     per step from torch.profiler (kernel totals by name): a step whose wall
     time is far above its kernel time is bound by the host.
  4. (--parts resnet_cprofile) a cProfile of whole ResNet-50 steps, eager,
     lamina.patch and lamina.patch(fuse=True), on the calling thread: where
     the host time of a step goes, by function.
  5. (--parts chain) host us of a forward+backward through a chain of 1, 16
     and 64 ReLUs (lamina's, torch's, and a Python autograd.Function of torch
     ops), autograd's device thread on and off: is the device thread's extra
     cost paid once a backward or once a Python node?

With --pin, every thread of the process (and so autograd's device threads,
made later, which inherit it) runs on one CPU: if the device thread's cost
is cache lines moving between cores (the forward's objects touched by the
backward on another core), pinning removes it.

    PYTHONPATH=src python scripts/probe_step_profile.py --out $OUT/step
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import time

import torch
import torch.nn.functional as TF

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
import lamina  # noqa: E402
import lamina.functional as F  # noqa: E402
from host_timing import TorchOpsRelu, per_call_us  # noqa: E402  (scripts/ is on the path when run as a script)

DEVICE = torch.device("cuda")


def tiny_cases():
    leaf = lambda *s: torch.randn(*s, device=DEVICE, requires_grad=True)  # noqa: E731
    x1, x2, x4 = leaf(4096), leaf(64, 768), leaf(4, 8, 6, 6)
    w, b, w8, b8 = leaf(768), leaf(768), leaf(8), leaf(8)
    bn, tbn = lamina.nn.BatchNorm2d(8).to(DEVICE), torch.nn.BatchNorm2d(8).to(DEVICE)
    return {
        "relu": (lambda: F.relu(x1), lambda: TF.relu(x1), [x1]),
        "layer_norm": (lambda: F.layer_norm(x2, (768,), w, b), lambda: TF.layer_norm(x2, (768,), w, b), [x2, w, b]),
        "batch_norm": (lambda: bn(x4), lambda: tbn(x4), [x4]),
        "group_norm": (lambda: F.group_norm(x4, 2, w8, b8), lambda: TF.group_norm(x4, 2, w8, b8), [x4, w8, b8]),
    }, bn, x4


def step_of(call, leaves):
    def step():
        y = call()
        torch.autograd.grad(y, leaves, torch.ones_like(y))
    return step


def part_threads(results):
    cases, _, _ = tiny_cases()
    rows = {}
    for name, (mine, theirs, leaves) in cases.items():
        row = {}
        for rnd in range(2):  # two rounds, alternating: host timings drift
            for threads in (True, False):
                with torch.autograd.set_multithreading_enabled(threads):
                    for who, call in (("lamina", mine), ("torch", theirs)):
                        key = f"{who} threads={'on' if threads else 'off'}"
                        row.setdefault(key, []).append(round(per_call_us(step_of(call, leaves)), 1))
        rows[name] = row
        print(name, row, flush=True)
    results["host_us_threads"] = rows


def profiled(fn, reps):
    """A cProfile of ``reps`` calls of fn, the GPU work they queued included."""
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    pr.disable()
    return pr


def top_functions(pr, key, n):
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats(key).print_stats(n)
    return s.getvalue()


def part_cprofile(results):
    cases, bn, x4 = tiny_cases()
    step = step_of(cases["batch_norm"][0], cases["batch_norm"][2])
    with torch.autograd.set_multithreading_enabled(False):
        for _ in range(20):
            step()
        pr = profiled(step, 300)
    text = top_functions(pr, "tottime", 35)
    print(text[:7000], flush=True)
    results["cprofile_batch_norm_tottime"] = text


def part_chain(results):
    x = torch.randn(4096, device=DEVICE, requires_grad=True)
    layers = {"lamina": F.relu, "torch": TF.relu, "python Function": TorchOpsRelu.apply}
    rows = {}
    for rnd in range(2):
        for depth in (1, 16, 64):
            for threads in (True, False):
                with torch.autograd.set_multithreading_enabled(threads):
                    for who, layer in layers.items():
                        def call(layer=layer, depth=depth):
                            y = x
                            for _ in range(depth):
                                y = layer(y)
                            return y
                        key = f"{who} depth={depth} threads={'on' if threads else 'off'}"
                        rows.setdefault(key, []).append(round(per_call_us(step_of(call, [x]), reps=100), 1))
    for key, v in rows.items():
        print(key, v, flush=True)
    results["chain_host_us"] = rows


def resnet_step(model, batch, opt):
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = TF.cross_entropy(model(batch[0]), batch[1])
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def kernel_time(fn, steps=2):
    """GPU kernel microseconds per step, total and the top kernels by name."""
    from torch.profiler import ProfilerActivity, profile
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            fn()
        torch.cuda.synchronize()
    totals = {}
    for e in prof.key_averages():
        t = getattr(e, "self_device_time_total", None)
        if t is None:
            t = getattr(e, "self_cuda_time_total", 0)
        if t and getattr(e, "device_type", None) is not None and "CUDA" in str(e.device_type):
            totals[e.key] = t / steps
    top = sorted(totals.items(), key=lambda kv: -kv[1])[:15]
    return sum(totals.values()), [(k[:90], round(v, 1)) for k, v in top]


def resnet_variants(batch, variants):
    """(variant, one training step) for each variant, on one random ResNet-50."""
    import torchvision
    torch.manual_seed(0)
    base = torchvision.models.resnet50(weights=None)
    x = torch.randn(batch, 3, 224, 224, device=DEVICE).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=DEVICE)
    for variant in variants:
        model = copy.deepcopy(base).to(DEVICE).to(memory_format=torch.channels_last)
        if variant != "eager":
            lamina.patch(model, fuse=variant.endswith("fuse"))
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        yield variant, lambda: resnet_step(model, (x, y), opt)  # noqa: B023
        del model, opt
        torch.cuda.empty_cache()


def part_resnet_cprofile(results, batch):
    out = {}
    for variant, fn in resnet_variants(batch, ("eager", "lamina.patch", "lamina.patch+fuse")):
        with torch.autograd.set_multithreading_enabled(False):
            for _ in range(3):
                fn()
            torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(5):
                fn()
            host_ms = (time.perf_counter() - t) * 1e3 / 5  # host-bound: the host's time a step
            torch.cuda.synchronize()
            wall_ms = (time.perf_counter() - t) * 1e3 / 5
            pr = profiled(fn, 5)
        entry = {"host_ms_per_step": round(host_ms, 2), "wall_ms_per_step": round(wall_ms, 2)}
        for key in ("tottime", "cumulative"):
            entry[key] = top_functions(pr, key, 40)
        out[variant] = entry
        print(variant, entry["host_ms_per_step"], entry["wall_ms_per_step"], flush=True)
        print(entry["tottime"][:6000], flush=True)
    results["resnet50_cprofile"] = out


def part_resnet(results, batch):
    out = {}
    for variant, fn in resnet_variants(batch, ("eager", "lamina.patch", "lamina.patch+fuse")):
        entry = {}
        for threads in (True, False, True):
            with torch.autograd.set_multithreading_enabled(threads):
                for _ in range(3):
                    fn()
                times = []
                for _ in range(10):
                    torch.cuda.synchronize()
                    t = time.perf_counter()
                    fn()
                    torch.cuda.synchronize()
                    times.append((time.perf_counter() - t) * 1e3)
            entry.setdefault(f"step_ms threads={'on' if threads else 'off'}", []).append(round(statistics.median(times), 2))
        total, top = kernel_time(fn)
        entry["kernel_ms_per_step"] = round(total / 1e3, 2)
        entry["top_kernels_us"] = top
        out[variant] = entry
        print(variant, json.dumps(entry, indent=1), flush=True)
    results["resnet50"] = out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="bench/results/step")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--parts", default="threads,cprofile,resnet")
    p.add_argument("--pin", action="store_true", help="run every thread of the process on one CPU")
    args = p.parse_args()
    if args.pin:
        cpu = min(os.sched_getaffinity(0))
        for tid in os.listdir("/proc/self/task"):
            os.sched_setaffinity(int(tid), {cpu})
    os.makedirs(args.out, exist_ok=True)
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "pinned": args.pin}
    parts = args.parts.split(",")
    try:
        if "chain" in parts:
            part_chain(results)
        if "threads" in parts:
            part_threads(results)
        if "cprofile" in parts:
            part_cprofile(results)
        if "resnet" in parts:
            part_resnet(results, args.batch)
        if "resnet_cprofile" in parts:
            part_resnet_cprofile(results, args.batch)
    finally:
        with open(os.path.join(args.out, "step_profile.json"), "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
