"""Traces lamina's GPU path through AOT autograd on a machine with no GPU.

Run by tests/test_compile.py in a subprocess of its own: Triton must load
compiled (``TRITON_INTERPRET=0``) so that the kernels are JITFunctions, as on
a card, and that cannot be undone inside the test process. Fake tensors on
the "meta" device stand for CUDA tensors (autograd runs on meta, not on a
CUDA device that torch was not built with): lamina is told that meta
tensors run its kernels, and Triton is given an sm_90 target so that the
traced launches' read/write analysis can build each kernel's IR.

Prints one JSON object: for each model, the kernel launches in the forward
and backward graphs, the lamina ops left opaque, and the launches that get
a tensor they write under more than one parameter name (see launch.py);
for a dynamic-shape trace, its launches and opaque ops; and for
torch.compile in each compile mode, the launches and lamina ops left.
"""

from __future__ import annotations

import json
import os
import sys

os.environ["TRITON_INTERPRET"] = "0"

import torch  # noqa: E402
import triton  # noqa: E402
from functorch.compile import aot_module, make_boxed_func  # noqa: E402
from torch import nn  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lamina  # noqa: E402
import lamina.custom_op  # noqa: E402
import lamina.functional  # noqa: E402
from lamina.backend import kernels  # noqa: E402


class _Sm90:
    def get_current_target(self):
        return GPUTarget("cuda", 90, 32)


def _stand_in_for_a_gpu():
    triton.runtime.driver.set_active(_Sm90())
    on_meta = lambda t: t.device.type == "meta"  # noqa: E731
    lamina.functional.use_kernels = on_meta
    lamina.custom_op.runs_compiled_kernels = on_meta
    for family in ("activation", "normalization", "pooling", "dropout", "fused"):
        module = kernels(family)
        if hasattr(module, "_sm_count"):
            module._sm_count = lambda device_index: 132


def _trace(model, x):
    graphs = []

    def keep(gm, _inputs):
        graphs.append(gm)
        return make_boxed_func(gm.forward)

    outs = aot_module(model, fw_compiler=keep, bw_compiler=keep)(x)
    outs = tuple(outs) if isinstance(outs, (tuple, list)) else (outs,)
    sum(o.float().sum() for o in outs if o.is_floating_point()).backward()
    launches, opaque, written_twice = [], [], []
    for gm in graphs:
        nodes = [n for n in gm.graph.nodes if n.op == "call_function"]
        launches.append(sum("triton_kernel_wrapper" in str(n.target) for n in nodes))
        opaque += [str(n.target) for n in nodes if str(n.target).startswith("lamina.")]
        opaque += [str(n.args[0]) for n in nodes if "auto_functionalized" in str(n.target)]
        for n in nodes:
            if "triton_kernel_wrapper" not in str(n.target):
                continue
            written = set(n.kwargs.get("tensors_to_clone", []))
            names_of = {}
            for name, value in n.kwargs["kwargs"].items():
                if isinstance(value, torch.fx.Node):
                    names_of.setdefault(value, []).append(name)
            written_twice += [names for names in names_of.values() if len(names) > 1 and written & set(names)]
    return {"launches": launches, "opaque": sorted(set(opaque)), "written_twice": written_twice}


def _trace_dynamic():
    """A dynamic-shape trace (SymInt sizes): batch norm and ReLU stay opaque ops."""
    from functorch.compile import aot_function
    import lamina.functional as F

    graphs = []

    def keep(gm, _inputs):
        graphs.append(gm)
        return make_boxed_func(gm.forward)

    x = torch.randn(2, 8, 4, 4, device="meta", requires_grad=True)
    w, b = (torch.randn(8, device="meta", requires_grad=True) for _ in range(2))
    f = lambda x, w, b: F.relu(F.batch_norm(x, None, None, w, b, training=True))  # noqa: E731
    aot_function(f, keep, keep, dynamic=True)(x, w, b).sum().backward()
    targets = [str(n.target) for gm in graphs for n in gm.graph.nodes if n.op == "call_function"]
    return {"launches": sum("triton_kernel_wrapper" in t for t in targets),
            "opaque": sorted({t for t in targets if t.startswith("lamina.")})}


def _trace_compile_modes():
    """torch.compile (dynamo, then AOT autograd) of a patched, fused CNN in
    each compile mode (under_compile.py): 'torch' leaves no lamina op and no
    lamina kernel in the graphs (PyTorch's ops, for Inductor to fuse),
    'kernels' traces into lamina's kernels. The CNN has torchvision's
    Bottleneck, whose one in-place ReLU runs again on fused bn + relu outputs."""
    from test_patch import Bottleneck
    from torch._dynamo.backends.common import aot_autograd

    from lamina import under_compile

    results = {}
    for mode in under_compile.MODES:
        graphs = []

        def keep(gm, _inputs):
            graphs.append(gm)
            return make_boxed_func(gm.forward)

        under_compile.set_compile_mode(mode)
        torch._dynamo.reset()
        torch.manual_seed(0)
        cnn = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True), Bottleneck(8),
            nn.GroupNorm(2, 8), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 6), nn.LayerNorm(6))
        lamina.patch(cnn, fuse=True)
        compiled = torch.compile(cnn.to("meta"), backend=aot_autograd(fw_compiler=keep, bw_compiler=keep), fullgraph=True)
        compiled(torch.randn(2, 3, 6, 6, device="meta", requires_grad=True)).sum().backward()
        targets = [str(n.target) for gm in graphs for n in gm.graph.nodes if n.op == "call_function"]
        results[mode] = {"launches": sum("triton_kernel_wrapper" in t for t in targets),
                         "lamina_ops": sorted({t for t in targets if t.startswith("lamina.")}),
                         "aten_batch_norm": any("batch_norm" in t and t.startswith("aten.") for t in targets)}
    under_compile.set_compile_mode("torch")
    return results


def main():
    _stand_in_for_a_gpu()
    from test_compile import EveryLayer, _torch_cnn
    from test_patch import Bottleneck

    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        for train in (True, False):
            torch.manual_seed(0)
            model = EveryLayer(p=0.2).to(dtype).train(train).to("meta")
            x = torch.randn(2, 3, 6, 6, dtype=dtype, device="meta", requires_grad=True)
            results[f"every_layer {dtype} train={train}"] = _trace(model, x)
        cnn = _torch_cnn().to(dtype)
        lamina.patch(cnn, fuse=True)
        x = torch.randn(2, 3, 6, 6, dtype=dtype, device="meta", requires_grad=True)
        results[f"patched_cnn_fused {dtype}"] = _trace(cnn.to("meta"), x)
        net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                            Bottleneck(8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).to(dtype)
        lamina.patch(net, fuse=True)
        net = net.to("meta").to(memory_format=torch.channels_last)
        x = torch.randn(2, 3, 8, 8, dtype=dtype, device="meta").to(memory_format=torch.channels_last).requires_grad_()
        results[f"fused_bottleneck_channels_last {dtype}"] = _trace(net, x)
    results["dynamic_shapes"] = _trace_dynamic()
    results["compile_modes"] = _trace_compile_modes()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
