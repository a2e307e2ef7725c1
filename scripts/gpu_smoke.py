"""A first look at the GPU machine: versions, copy bandwidth, and ReLU through
lamina's custom ops on CUDA against torch (forward, backward)."""
import time

import torch
import triton

import lamina
import lamina.functional as F

print("torch", torch.__version__, "triton", triton.__version__, torch.cuda.get_device_name())
x = torch.randn(2**26, device="cuda", requires_grad=True)
y = F.relu(x)
dy = torch.randn_like(y)
y.backward(dy)
ref = torch.relu(x.detach())
print("relu fwd equal:", torch.equal(y, ref), "bwd equal:", torch.equal(x.grad, dy * (ref > 0)))
buf = torch.empty(2**28, device="cuda")
out = torch.empty_like(buf)
ms = triton.testing.do_bench(lambda: out.copy_(buf), return_mode="median")
print(f"copy {2 * buf.numel() * 4 / ms / 1e6:.0f} GB/s")
xs = x.detach()
for name, fn in [("lamina relu", lambda: F.relu(xs)), ("torch relu", lambda: torch.relu(xs))]:
    ms = triton.testing.do_bench(fn, return_mode="median")
    print(f"{name}: {ms:.3f} ms, {2 * xs.numel() * 4 / ms / 1e6:.0f} GB/s")
t = time.time()
c = torch.compile(lambda a: F.relu(a) * 2, fullgraph=True)
print("compile ok", torch.allclose(c(xs), torch.relu(xs) * 2), f"{time.time() - t:.1f}s")
