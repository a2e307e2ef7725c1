"""Diagnosis of the card check's group_norm_act(act='relu') float32 failure
at (64, 64, 3136) (bench/results/h200-20261127-card/README.md): the check's
exact inputs, then where the gradient misses and what z is there."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
import torch  # noqa: E402
import torch.nn.functional as TF  # noqa: E402

import lamina.functional as F  # noqa: E402
from lamina.bench import correctness as C  # noqa: E402
from lamina.optable import OPS  # noqa: E402

case = next(c for c in OPS if c.name == "group_norm_act")
DEV = os.environ.get("DIAG_DEVICE", "cuda")
shape = tuple(int(s) for s in os.environ.get("DIAG_SHAPE", "64,64,3136").split(","))
kw = {"act": "relu"}
for attempt in range(2):
    torch.manual_seed(0)
    x = C.make_input(case, shape, torch.float32, "contiguous", DEV)
    params = C.make_params(case, shape, torch.float32, DEV)
    y, grads, dy = C.run(case, case.lamina, x, params, kw)
    x64 = x.double().requires_grad_()
    w64, b64 = (p.double() for p in params)
    z64 = TF.group_norm(x64, 2, w64, b64)
    TF.relu(z64).backward(dy.double())
    err = (grads[0].double() - x64.grad).abs()
    bad = err > float(os.environ.get("DIAG_ATOL", "1e-5")) + 1.3e-6 * x64.grad.abs()
    yerr = (y.double() - TF.relu(z64)).abs()
    print(f"attempt {attempt}: dx elements off {int(bad.sum())}, max dx err {float(err.max()):.3g}, max y err {float(yerr.max()):.3g}")
    if bad.any():
        idx = bad.nonzero()
        zb = z64.detach()[bad].abs()
        print("  |z64| there: min %.3g median %.3g max %.3g" % (float(zb.min()), float(zb.median()), float(zb.max())))
        print("  by n:", torch.bincount(idx[:, 0], minlength=shape[0]).tolist())
        print("  by channel:", torch.bincount(idx[:, 1], minlength=shape[1]).tolist())
        print("  by position // 392:", torch.bincount(idx[:, 2] // 392, minlength=8).tolist())
        print("  lamina dx there:", grads[0][bad][:6].tolist(), "\n  float64 dx there:", x64.grad[bad][:6].tolist())
        # the same inputs through the unfused ops, and the fused op again
        xl = x.detach().clone().requires_grad_()
        TF.relu(F.group_norm(xl, 2, *params)).backward(dy)
        print("  unfused lamina relu(group_norm): dx elements off",
              int(((xl.grad.double() - x64.grad).abs() > 1e-5 + 1.3e-6 * x64.grad.abs()).sum()))
        xl = x.detach().clone().requires_grad_()
        F.group_norm_act(xl, 2, *params, act="relu").backward(dy)
        print("  fused again, plain call: dx elements off",
              int(((xl.grad.double() - x64.grad).abs() > 1e-5 + 1.3e-6 * x64.grad.abs()).sum()))
