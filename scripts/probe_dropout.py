"""Dropout on the card: does backward regenerate forward's mask, at every size?
Prints, per size and dtype, how many gradient elements disagree with
dy * mask / (1 - p) (mask read off the forward output), and where."""
import torch

import lamina.functional as F

p = 0.1
for dtype in (torch.float32, torch.bfloat16):
    for n in (1000, 4099, 2**20 + 7, 2**22, 2**24, 2**26):
        torch.manual_seed(0)
        x = torch.randn(n, device="cuda").to(dtype).requires_grad_(True)
        y = F.dropout(x, p)
        dy = torch.randn_like(y)
        y.backward(dy)
        kept = (y != 0) | (x.detach() == 0)
        expected = (dy.float() / (1 - p) * kept).to(dtype)
        bad = (x.grad != expected).nonzero().flatten()
        rate = 1 - kept.float().mean().item()
        print(f"{str(dtype):15s} n={n:9d} drop rate {rate:.4f} grad mismatches {bad.numel()}"
              + (f" first at {bad[:5].tolist()}" if bad.numel() else ""))
