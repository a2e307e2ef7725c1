"""DistributedDataParallel training of a small lamina model whose batch norms
are lamina.nn.SyncBatchNorm, checked against one process running plain
BatchNorm over the whole batch.

    python scripts/ddp_example.py           # 2 GPUs, NCCL
    python scripts/ddp_example.py --cpu     # 2 CPU processes, gloo (float64)

No torchrun: the ranks are started with torch.multiprocessing.spawn. Every
rank draws the same global batch from a fixed seed and trains on its slice;
it also runs the single-process reference (the unconverted model on the whole
global batch), so after each step it can compare, for its own slice:

  forward     its output slice against the reference's
  gradients   the input gradient (times 1/world: each rank's loss is the mean
              over its slice, and SyncBatchNorm's backward sums dy over all
              ranks) and every parameter's gradient after DDP's averaging
  state       running_mean / running_var / num_batches_tracked, and the
              parameters after the optimizer step

With --cpu the model is not wrapped in DDP (DDP refuses a SyncBatchNorm in a
CPU module); the gradients are averaged with all_reduce as DDP would.

The worst error over all ranks (an all_reduce MAX) is printed by rank 0; the
exit status is 1 when it is above the tolerance.
"""

from __future__ import annotations

import argparse
import copy
import os
import socket
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as TF
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
import lamina.nn as L  # noqa: E402


def small_model(num_classes=10):
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), L.BatchNorm2d(16), L.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), L.BatchNorm2d(16, momentum=None), L.SiLU(),  # cumulative average too
        L.MaxPool2d(2), L.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 32), L.BatchNorm1d(32), L.GELU(),
        nn.Linear(32, num_classes),
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _max_err(a, b) -> float:
    """Largest error relative to the reference's largest entry; lists of
    tensors are compared as one (a conv's bias before a batch norm has an
    exactly-zero gradient, so each on its own scale would be noise)."""
    if isinstance(a, torch.Tensor):
        a, b = [a], [b]
    a = torch.cat([t.detach().double().flatten() for t in a])
    b = torch.cat([t.detach().double().flatten() for t in b])
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-300))


def worker(rank, world, port, use_cpu, steps, batch, result_queue):
    backend = "gloo" if use_cpu else "nccl"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    device = torch.device("cpu") if use_cpu else torch.device("cuda", rank)
    if not use_cpu:
        torch.cuda.set_device(device)
    dtype = torch.float64 if use_cpu else torch.float32

    torch.manual_seed(0)
    reference = small_model().to(device, dtype)  # one process, BatchNorm over the whole batch
    model = L.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(reference))
    n_sync = sum(isinstance(m, L.SyncBatchNorm) for m in model.modules())
    if use_cpu:
        # DDP refuses any torch.nn.SyncBatchNorm (lamina's subclasses it) in a
        # CPU module, so on the CPU the gradients are averaged here, as DDP does
        ddp = model
        for p in model.parameters():
            dist.broadcast(p.data, src=0)
    else:
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=[rank])
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)

    gen = torch.Generator(device="cpu")
    lines, worst = [], {}
    for step in range(steps):
        gen.manual_seed(100 + step)  # the same global batch on every rank
        x = torch.randn(world * batch, 3, 12, 12, generator=gen, dtype=dtype).to(device)
        y = torch.randint(0, 10, (world * batch,), generator=gen).to(device)
        lo, hi = rank * batch, (rank + 1) * batch

        x_ref = x.clone().requires_grad_(True)
        out_ref = reference(x_ref)
        TF.cross_entropy(out_ref, y).backward()

        x_local = x[lo:hi].clone().requires_grad_(True)
        out = ddp(x_local)
        TF.cross_entropy(out, y[lo:hi]).backward()
        if use_cpu:  # DDP's gradient averaging
            for p in model.parameters():
                dist.all_reduce(p.grad)
                p.grad /= world

        errs = {
            "forward": _max_err(out, out_ref[lo:hi]),
            "input grad": _max_err(x_local.grad / world, x_ref.grad[lo:hi]),
            "param grads": _max_err([p.grad for p in model.parameters()], [q.grad for q in reference.parameters()]),
        }
        opt.step()
        ref_opt.step()
        opt.zero_grad(set_to_none=True)
        ref_opt.zero_grad(set_to_none=True)
        errs["params after step"] = max(_max_err(p, q) for p, q in zip(model.parameters(), reference.parameters()))
        errs["running stats"] = max(_max_err(b, c) for b, c in zip(model.buffers(), reference.buffers()))
        if not use_cpu:
            torch.cuda.synchronize()
        # the worst error over the ranks
        packed = torch.tensor(list(errs.values()), dtype=torch.float64, device=device)
        dist.all_reduce(packed, op=dist.ReduceOp.MAX)
        errs = dict(zip(errs, packed.tolist()))
        for k, v in errs.items():
            worst[k] = max(worst.get(k, 0.0), v)
        lines.append(f"step {step}: " + ", ".join(f"{k} {v:.2e}" for k, v in errs.items()))

    tolerance = 1e-9 if use_cpu else 2e-4
    if rank == 0:
        result_queue.put(dict(world=world, backend=backend, dtype=str(dtype), sync_batch_norms=n_sync,
                              lines=lines, worst=worst, tolerance=tolerance,
                              ok=all(v <= tolerance for v in worst.values())))
    dist.destroy_process_group()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu", action="store_true", help="gloo on CPU processes instead of NCCL on GPUs")
    p.add_argument("--world", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch", type=int, default=8, help="samples per rank")
    args = p.parse_args(argv)
    if not args.cpu and torch.cuda.device_count() < args.world:
        print(f"need {args.world} GPUs, found {torch.cuda.device_count()}; use --cpu for the gloo version")
        return None
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.spawn(worker, args=(args.world, _free_port(), args.cpu, args.steps, args.batch, queue),
             nprocs=args.world, join=True)
    result = queue.get()
    print(f"DDP over {result['world']} processes ({result['backend']}, {result['dtype']}),"
          f" {result['sync_batch_norms']} SyncBatchNorm layers, against one process on the whole batch:")
    for line in result["lines"]:
        print("  " + line)
    print("worst: " + ", ".join(f"{k} {v:.2e}" for k, v in result["worst"].items()),
          f"(tolerance {result['tolerance']:.0e}):", "OK" if result["ok"] else "MISMATCH")
    return result


if __name__ == "__main__":
    res = main()
    sys.exit(0 if res is None or res["ok"] else 1)
