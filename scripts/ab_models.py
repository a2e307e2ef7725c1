"""Interleaved A/B of training-step time, for a card whose host is noisy.

gpu_models.py times its variants one after another, and on the H200 hosts
lent to lamina the same variant moves by 10 % or more between two runs
minutes apart (torch.compile 4126 then 4480 samples/s in one process).
Here every variant of a model is built (and compiled) first, then timed in
rounds: each round times --steps steps of every variant, in an order that
rotates from round to round, so slow and fast spells of the host fall on
all variants alike. Reported per variant: the median step of each round,
the median over rounds, and the ratio to the first variant round by round.

    PYTHONPATH=src python scripts/ab_models.py --models resnet50 \\
        --variants 'torch.compile,lamina.patch+compile,eager,lamina.patch+fuse' --out $OUT/ab

Variant names are gpu_models.py's; a variant ending in " calling-thread"
runs its backward on the calling thread
(torch.autograd.set_multithreading_enabled(False)) instead of autograd's
device thread, to time what that thread costs each model. Writes ab.json
under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_models as G  # noqa: E402


CALLING_THREAD = " calling-thread"


def timed_steps(spec, model, opt, batches, steps, device, threads=True):
    """Median seconds of ``steps`` training steps (bf16 autocast, as gpu_models);
    ``threads=False``: the backward on the calling thread."""
    with torch.autograd.set_multithreading_enabled(threads):
        return _timed_steps(spec, model, opt, batches, steps, device)


def _timed_steps(spec, model, opt, batches, steps, device):
    times = []
    for i in range(steps):
        batch = batches[i % len(batches)]
        G.sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            loss = spec["loss"](model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        G.sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def ab_model(name, spec, variants, args, device):
    torch.manual_seed(0)
    base = G.dropout_off(spec["build"]())
    gen = torch.Generator(device=device)
    gen.manual_seed(1234)
    batches = spec["batches"](gen)
    built = {}
    for v in variants:
        t0 = time.perf_counter()
        # the compile mode is read when a model is first traced: trace it now
        model, _ = G.prepare(spec, base, v.removesuffix(CALLING_THREAD), device,
                             "inductor" if device.type == "cuda" else "aot_eager")
        opt = G.make_optimizer(spec["optimizer"], model)
        threads = not v.endswith(CALLING_THREAD)
        timed_steps(spec, model, opt, batches, 3, device, threads)
        built[v] = (model, opt, threads)
        G.log(f"{name} {v}: built and warmed up in {time.perf_counter() - t0:.1f}s")
    rounds = {v: [] for v in variants}
    for r in range(args.rounds):
        shift = r % len(variants)
        for v in variants[shift:] + variants[:shift]:
            model, opt, threads = built[v]
            rounds[v].append(1e3 * timed_steps(spec, model, opt, batches, args.steps, device, threads))
    first = variants[0]
    out = {}
    for v in variants:
        med = statistics.median(rounds[v])
        ratios = [a / b for a, b in zip(rounds[first], rounds[v])]  # > 1: v faster than the first variant
        out[v] = {"round_step_ms": [round(t, 2) for t in rounds[v]], "step_ms_median": round(med, 2),
                  "samples_per_s": round(spec["batch_size"] / med * 1e3, 1),
                  f"speed_vs_{first}_by_round": [round(x, 3) for x in ratios],
                  f"speed_vs_{first}_median": round(statistics.median(ratios), 3)}
        G.log(f"{name} {v}: median step {med:.2f} ms ({out[v]['samples_per_s']} samples/s), "
              f"speed vs {first} {out[v][f'speed_vs_{first}_median']} (rounds {out[v][f'speed_vs_{first}_by_round']})")
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="resnet50")
    p.add_argument("--variants", default="torch.compile,lamina.patch+compile,eager,lamina.patch")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--steps", type=int, default=10, help="timed steps of a variant in a round")
    p.add_argument("--budget-s", type=float, default=400, help="start no model past this")
    p.add_argument("--out", default="bench/results/ab")
    args = p.parse_args()
    args.models = args.models.split(",")
    # model_specs reads these gpu_models options; without a card, its tiny
    # CPU stand-ins (a structure check, compiled with the default backend)
    args.cpu_smoke = not torch.cuda.is_available()
    args.batch, args.gpt_batch, args.seq, args.gn_batch = None, 8, 1024, 32
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    os.makedirs(args.out, exist_ok=True)
    start = time.time()
    results = {"card": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__, "models": {}}
    for name, spec in G.model_specs(args, device).items():
        if time.time() - start > args.budget_s:
            results["models"][name] = {"skipped": "time budget"}
            continue
        variants = [v for v in args.variants.split(",") if not (v.startswith("lamina.patch+fuse") and name == "gpt2")]
        compiled_modes = {"+kernels" in v for v in variants if v.endswith("compile") and v.startswith("lamina")}
        if len(compiled_modes) > 1:  # the mode is a global dynamo guards on: one would recompile the other
            raise SystemExit("--variants: '+kernels' compiled variants and default-mode ones cannot be interleaved")
        results["models"][name] = ab_model(name, spec, variants, args, device)
        torch._dynamo.reset()
        with open(os.path.join(args.out, "ab.json"), "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
