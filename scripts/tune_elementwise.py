"""Sweep the elementwise launch shape (block, warps) on the card, the shared
activation forward kernel (ReLU) at 2**26 elements, fp32 and bf16, against
torch and a copy. One line per config; the best becomes kernels/launch.py's
default."""
import torch
import triton

from lamina.kernels import activation as K

n = 2**26
for dtype in (torch.float32, torch.bfloat16):
    x = torch.randn(n, device="cuda", dtype=dtype)
    y = torch.empty_like(x)
    size = x.element_size()
    copy_ms = triton.testing.do_bench(lambda: y.copy_(x), return_mode="median")
    torch_ms = triton.testing.do_bench(lambda: torch.relu(x), return_mode="median")
    print(f"{dtype}: copy {2 * n * size / copy_ms / 1e6:.0f} GB/s; torch relu fwd {2 * n * size / torch_ms / 1e6:.0f} GB/s")
    for block in (1024, 2048, 4096, 8192, 16384):
        for warps in (4, 8, 16):
            if block // (32 * warps) < 4:
                continue
            grid = (triton.cdiv(n, block),)
            f = triton.testing.do_bench(
                lambda: K._activation_forward_kernel[grid](x, y, y, n, 0.0, ACT=0, WRITE_MASK=False, BLOCK=block, num_warps=warps),
                return_mode="median")
            print(f"  block {block:5d} warps {warps:2d}: fwd {2 * n * size / f / 1e6:.0f} GB/s")
