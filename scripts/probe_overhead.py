"""Host-side cost of one lamina call, layer by layer, on a tiny CUDA tensor
(so the GPU time is negligible): raw Triton launch, the launcher, the custom
op, the public function with autograd (forward + backward), against torch."""
import time

import torch

import lamina.functional as F
from lamina.kernels import activation as K


def per_call_us(fn, reps=2000):
    for _ in range(50):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps * 1e6


x = torch.randn(4096, device="cuda")
y = torch.empty_like(x)
xg = x.clone().requires_grad_(True)
dy = torch.randn_like(x)
w = torch.randn(768, device="cuda", requires_grad=True)
b = torch.randn(768, device="cuda", requires_grad=True)
xl = torch.randn(4096, 768, device="cuda", requires_grad=True)
dyl = torch.randn_like(xl)
rows = [
    ("raw triton launch", lambda: K._activation_forward_kernel[(1,)](x, y, y, 4096, 0.0, ACT=0, WRITE_MASK=False, BLOCK=4096, num_warps=8)),
    ("launcher relu_forward", lambda: K.relu_forward(x)),
    ("torch.ops.lamina.relu_forward", lambda: torch.ops.lamina.relu_forward(x)),
    ("F.relu no grad", lambda: F.relu(x)),
    ("torch.relu no grad", lambda: torch.relu(x)),
    ("F.relu fwd+bwd", lambda: torch.autograd.backward(F.relu(xg), dy)),
    ("torch.relu fwd+bwd", lambda: torch.autograd.backward(torch.relu(xg), dy)),
]
if hasattr(F, "layer_norm"):
    rows += [
        ("F.layer_norm 4096x768 fwd+bwd", lambda: torch.autograd.backward(F.layer_norm(xl, (768,), w, b), dyl)),
        ("torch layer_norm 4096x768 fwd+bwd", lambda: torch.autograd.backward(torch.nn.functional.layer_norm(xl, (768,), w, b), dyl)),
    ]
for name, fn in rows:
    print(f"{name:38s} {per_call_us(fn):8.1f} us")
