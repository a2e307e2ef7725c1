"""Which small patched models Inductor compiles on a card, with lamina's
kernels traced into (custom_op.py): one line a case, OK or the error, and
the compiled training step's loss against eager's.

    PYTHONPATH=src python scripts/probe_compile_models.py
"""

from __future__ import annotations

import copy
import os
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import lamina  # noqa: E402
from test_patch import Bottleneck  # noqa: E402


def stem(inplace):
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=inplace),
                         nn.MaxPool2d(3, 2, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


def bottlenecks():
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
                         Bottleneck(16), Bottleneck(16), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


def _explain_scheduler_key_errors():
    """On Inductor's KeyError in compute_ancestors, print the node whose
    dependency is not yet scheduled: its IR and its dependencies' ops."""
    from torch._inductor import scheduler

    original = scheduler.Scheduler.compute_ancestors

    def compute_ancestors(self):
        try:
            return original(self)
        except KeyError as e:
            order = {n.get_name(): i for i, n in enumerate(self.nodes)}
            for i, node in enumerate(self.nodes):
                for dep in node.unmet_dependencies:
                    op = self.name_to_buf[dep.name].defining_op_name()
                    if order.get(op, 1 << 30) >= i:
                        print(f"  node {i} {node.get_name()} depends on {dep.name} of {op} (at {order.get(op)}):",
                              str(getattr(node, "node", node))[:1500], flush=True)
            raise e

    scheduler.Scheduler.compute_ancestors = compute_ancestors


def case(name, build, fuse, bf16, cl=None, include=None):
    cl = bf16 if cl is None else cl
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = build().cuda()
    patched = copy.deepcopy(model)
    lamina.patch(patched, fuse=fuse, include=include)
    x = torch.randn(8, 3, 16, 16, device="cuda")
    if cl:
        x = x.to(memory_format=torch.channels_last)
        model, patched = model.to(memory_format=torch.channels_last), patched.to(memory_format=torch.channels_last)
    t = torch.randint(0, 10, (8,), device="cuda")
    start = time.time()
    try:
        compiled = torch.compile(patched)
        losses = []
        for m in (model, compiled):
            with torch.autocast("cuda", torch.bfloat16, enabled=bf16):
                loss = nn.functional.cross_entropy(m(x), t)
            loss.backward()
            losses.append(float(loss))
        print(f"{name:34s} OK   {time.time() - start:5.1f}s  loss eager {losses[0]:.6f} compiled {losses[1]:.6f}", flush=True)
    except Exception as e:  # a probe: report and go on to the next case
        print(f"{name:34s} FAIL {time.time() - start:5.1f}s  {type(e).__name__}: {str(e)[:300]}", flush=True)


if __name__ == "__main__":
    _explain_scheduler_key_errors()
    case("bottlenecks patch fp32 cl", bottlenecks, False, False, cl=True)
    case("bottlenecks patch bf16 nchw", bottlenecks, False, True, cl=False)
    case("bottlenecks BN only bf16 cl", bottlenecks, False, True, include=["BatchNorm2d"])
    case("bottlenecks ReLU only bf16 cl", bottlenecks, False, True, include=["ReLU"])
    case("bottlenecks pools only bf16 cl", bottlenecks, False, True, include=["AdaptiveAvgPool2d"])
    case("stem relu(inplace) bf16 cl", lambda: stem(True), False, True)
    case("bottlenecks patch bf16 cl", bottlenecks, False, True)
    case("bottlenecks patch+fuse bf16 cl", bottlenecks, True, True)
