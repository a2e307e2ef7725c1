"""Where host time goes. Part 1: host microseconds per call on tiny CUDA
tensors (GPU time negligible), lamina against torch, forward and
forward+backward. Part 2: cProfile of lamina's small LayerNorm fwd+bwd.
Part 3: torch.profiler of ReLU fwd+bwd at 2**26 elements (GPU kernels and
their durations)."""
import cProfile
import pstats

import torch
import torch.nn.functional as TF

import lamina.functional as F
from host_timing import per_call_us  # scripts/ is on sys.path when run as a script




def leaf(*shape):
    return torch.randn(*shape, device="cuda", requires_grad=True)


x1 = leaf(4096)
x2 = leaf(64, 768)
x4 = leaf(4, 8, 6, 6)
w768, b768 = leaf(768), leaf(768)
w8, b8 = leaf(8), leaf(8)
rm, rv = torch.zeros(8, device="cuda"), torch.ones(8, device="cuda")
ops = {
    "relu": (lambda m: m.relu(x1), x1),
    "gelu": (lambda m: m.gelu(x1), x1),
    "dropout": (lambda m: m.dropout(x1, 0.1), x1),
    "layer_norm": (lambda m: m.layer_norm(x2, (768,), w768, b768), x2),
    "rms_norm": (lambda m: m.rms_norm(x2, (768,), w768), x2),
    "batch_norm": (lambda m: m.batch_norm(x4, rm, rv, w8, b8, True), x4),
    "group_norm": (lambda m: m.group_norm(x4, 2, w8, b8), x4),
}
if hasattr(F, "max_pool2d"):
    ops["max_pool2d"] = (lambda m: m.max_pool2d(x4, 2), x4)
    ops["avg_pool2d"] = (lambda m: m.avg_pool2d(x4, 2), x4)
print(f"{'op':12s} {'lamina fwd':>10s} {'torch fwd':>10s} {'lamina f+b':>10s} {'torch f+b':>10s}  (host us per call)")
for name, (call, inp) in ops.items():
    row = []
    for mode in ("fwd", "fwdbwd"):
        for mod in (F, TF):
            if mode == "fwd":
                def fn(mod=mod):
                    with torch.no_grad():
                        call(mod)
            else:
                y = call(mod)
                dy = torch.randn_like(y)

                def fn(mod=mod, dy=dy):
                    torch.autograd.backward(call(mod), dy)
            row.append(per_call_us(fn))
    print(f"{name:12s} " + " ".join(f"{v:10.1f}" for v in row))

dy2 = torch.randn_like(x2)
prof = cProfile.Profile()
prof.enable()
for _ in range(200):
    torch.autograd.backward(F.layer_norm(x2, (768,), w768, b768), dy2)
torch.cuda.synchronize()
prof.disable()
pstats.Stats(prof).sort_stats("tottime").print_stats(22)

x = torch.randn(2**26, device="cuda", requires_grad=True)
dy = torch.randn_like(x)
for _ in range(3):
    torch.autograd.backward(F.relu(x), dy)
torch.cuda.synchronize()
with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]) as p:
    for _ in range(5):
        torch.autograd.backward(F.relu(x), dy)
        x.grad = None
    torch.cuda.synchronize()
print(p.key_averages().table(sort_by="cuda_time_total", row_limit=12))
