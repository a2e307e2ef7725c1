"""torch.compile(fullgraph=True) over a model holding every lamina layer: no
graph break, and forward, gradients and running statistics equal to eager.

The CPU uses backend="aot_eager" (Dynamo + AOT autograd, the parts that see
lamina's custom ops and their fake implementations, without Inductor's C++
compile time); one small case goes through the default Inductor backend.
Each case runs on the NumPy reference and on the Triton kernels under the
interpreter (small shapes)."""

import copy
import os

import pytest
import torch
from torch import nn

import lamina
import lamina.nn as L
from test_ops import assert_close, make_input
from test_ops import cases as op_cases
from test_ops import run as run_op


class EveryLayer(nn.Module):
    """Every lamina.nn layer once (two GELUs and two max pools for their
    variants). Returns several outputs so that no layer's effect is hidden by
    a later normalization."""

    def __init__(self, p=0.0, c=4, hidden=6):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, c, 3, padding=1), L.BatchNorm2d(c), L.ReLU(), L.LeakyReLU(0.1), L.PReLU(c),
            L.GroupNorm(2, c), L.SiLU(), L.InstanceNorm2d(c, affine=True), L.GELU(),
            L.GELU(approximate="tanh"), L.Swish(1.5), L.DropBlock2d(p, 3),
        )
        self.max_pool = L.MaxPool2d(2)
        self.max_pool_indices = L.MaxPool2d(3, stride=2, padding=1, return_indices=True)
        self.avg_pool = L.AvgPool2d(2, padding=1, count_include_pad=False)
        self.adaptive_max = L.AdaptiveMaxPool2d((2, 2))
        self.adaptive_avg = L.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(
            nn.Flatten(), L.Dropout(p), L.DropConnect(nn.Linear(c, hidden), p=p), L.BatchNorm1d(hidden),
            L.Sigmoid(), L.LayerNorm(hidden), L.Tanh(), L.RMSNorm(hidden),
        )
        self.instance_norm_1d = L.InstanceNorm1d(c, affine=True)

    def forward(self, x):
        f = self.features(x)
        pooled, indices = self.max_pool_indices(f)
        a = self.avg_pool(self.max_pool(f))
        head = self.head(self.adaptive_avg(a))
        corners = self.adaptive_max(a)
        seq = self.instance_norm_1d(pooled.flatten(2))
        return head, corners, seq, indices


def _run(model, x):
    """Outputs, then (after backward of a weighted sum) the input gradient,
    the parameter gradients and the buffers (names without the compiled
    wrapper's ``_orig_mod.`` prefix)."""
    x = x.clone().requires_grad_(True)
    outs = model(x)
    model = getattr(model, "_orig_mod", model)
    loss = sum((o * torch.linspace(0.5, 1.5, o.numel(), dtype=o.dtype, device=o.device).view_as(o)).sum()
               for o in outs if o.is_floating_point())
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    return outs, x.grad, grads, buffers


def _assert_same(eager, compiled, tol):
    (outs_e, dx_e, grads_e, bufs_e), (outs_c, dx_c, grads_c, bufs_c) = eager, compiled
    for o_e, o_c in zip(outs_e, outs_c):
        torch.testing.assert_close(o_c, o_e, **tol)
    torch.testing.assert_close(dx_c, dx_e, **tol)
    assert grads_c.keys() == grads_e.keys()
    for name in grads_e:
        assert grads_e[name] is not None, name
        torch.testing.assert_close(grads_c[name], grads_e[name], **tol, msg=name)
    for name in bufs_e:
        torch.testing.assert_close(bufs_c[name], bufs_e[name], **tol, msg=name)


def _setting(backend):
    """(dtype, input shape, tolerance): float64 on the reference; small
    float32 shapes on the interpreter, whose fp32 sums may be ordered
    differently from one run to another only through Inductor, not here."""
    if backend == "reference":
        return torch.float64, (3, 3, 8, 8), dict(rtol=1e-10, atol=1e-12)
    return torch.float32, (2, 3, 6, 6), dict(rtol=1e-5, atol=1e-6)


def _compiled_twin(model, **kw):
    twin = copy.deepcopy(model)
    return twin, torch.compile(twin, fullgraph=True, **kw)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train_p0"])
def test_every_layer_fullgraph_matches_eager(each_backend, train):
    """eval: running statistics, dropouts the identity. train with every
    dropout p=0: batch statistics and running-stat updates inside the graph."""
    torch._dynamo.reset()
    dtype, shape, tol = _setting(each_backend)
    torch.manual_seed(0)
    model = EveryLayer(p=0.0).to(dtype).train(train)
    for m in model.modules():  # non-trivial running statistics and affine parameters
        if isinstance(m, nn.modules.batchnorm._NormBase):
            if m.running_mean is not None:
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
            if m.weight is not None:
                nn.init.uniform_(m.weight, 0.5, 1.5)
                nn.init.uniform_(m.bias, -0.5, 0.5)
    twin, compiled = _compiled_twin(model, backend="aot_eager")
    x = torch.randn(shape, dtype=dtype)
    eager = _run(model, x)
    _assert_same(eager, _run(compiled, x), tol)
    if train:  # a second step: num_batches_tracked and running stats moved twice
        model.zero_grad(set_to_none=True)
        twin.zero_grad(set_to_none=True)
        _assert_same(_run(model, x), _run(compiled, x), tol)
        assert int(twin.features[1].num_batches_tracked) == 2


def test_dropout_train_fullgraph_seeded(each_backend):
    """Train mode with p > 0: the whole model still compiles to one graph; on
    aot_eager the Philox seed is drawn from torch's generator in the same
    order, so the same torch.manual_seed gives the same masks as eager."""
    torch._dynamo.reset()
    dtype, shape, tol = _setting(each_backend)
    torch.manual_seed(0)
    model = EveryLayer(p=0.3).to(dtype).train()
    twin, compiled = _compiled_twin(model, backend="aot_eager")
    x = torch.randn(shape, dtype=dtype)
    torch.manual_seed(123)
    eager = _run(model, x)
    torch.manual_seed(123)
    _assert_same(eager, _run(compiled, x), tol)
    # a different seed gives a different dropout mask
    torch.manual_seed(124)
    other = compiled(x)[0]
    assert not torch.equal(other, eager[0][0])


def test_no_graph_break_reported_by_dynamo_explain():
    torch._dynamo.reset()
    model = EveryLayer(p=0.2).train()
    explanation = torch._dynamo.explain(model)(torch.randn(2, 3, 6, 6))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    ops = {str(n.target) for g in explanation.graphs for n in g.graph.nodes if n.op == "call_function"}
    # every layer's op appears as itself in the one graph (dropouts with p > 0 included)
    expected = {f"lamina.{name}_forward.default" for name in (
        "relu", "leaky_relu", "prelu", "sigmoid", "tanh", "gelu", "silu", "swish",
        "batch_norm", "instance_norm", "layer_norm", "rms_norm", "group_norm",
        "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d", "dropout", "drop_block2d",
    )}
    assert expected <= ops, sorted(expected - ops)


def test_inductor_small_model_matches_eager():
    """The default backend (Inductor, C++ on the CPU) around lamina ops."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), L.BatchNorm2d(4), L.SiLU(), L.MaxPool2d(2),
                          L.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3), L.LayerNorm(3)).train()
    twin, compiled = _compiled_twin(model)
    x = torch.randn(2, 3, 6, 6)
    _assert_same(_run(model, x), _run(compiled, x), dict(rtol=1e-5, atol=1e-6))


def _torch_cnn():
    """torch.nn layers wired as torchvision's ResNet stem and a diffusers
    block are (in-place ReLU included), for lamina.patch to swap."""
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1),
        nn.Conv2d(4, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.SiLU(), nn.Dropout(0.0),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 6), nn.LayerNorm(6), nn.GELU(approximate="tanh"),
    )


def test_patched_torch_model_fullgraph_matches_eager():
    """lamina.patch swaps classes in place; the patched model still compiles
    to one graph (in-place ReLU included) and matches the torch model."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = _torch_cnn().double().train()
    patched = copy.deepcopy(model)
    assert lamina.patch(patched).total == 9
    compiled = torch.compile(patched, backend="aot_eager", fullgraph=True)
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    _assert_same(_run(model, x), _run(compiled, x), dict(rtol=1e-10, atol=1e-12))


@pytest.mark.skipif(not (hasattr(L, "BatchNormAct2d") and hasattr(L, "GroupNormAct")),
                    reason="lamina.nn has no BatchNormAct2d / GroupNormAct yet")
def test_fused_patched_model_fullgraph_matches_eager(each_backend):
    """lamina.patch(fuse=True)'s fused layers compile to one graph too."""
    torch._dynamo.reset()
    dtype, _, tol = _setting(each_backend)
    torch.manual_seed(0)
    model = _torch_cnn().to(dtype).train()
    patched = copy.deepcopy(model)
    assert len(lamina.patch(patched, fuse=True).fused) == 2
    compiled = torch.compile(patched, backend="aot_eager", fullgraph=True)
    x = torch.randn(2, 3, 6, 6, dtype=dtype)
    _assert_same(_run(model, x), _run(compiled, x), tol)


def _graph_targets(backend_graphs):
    return [str(n.target) for gm in backend_graphs for n in gm.graph.nodes if n.op == "call_function"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the compile modes apply on a GPU")
@pytest.mark.parametrize("mode", ["torch", "kernels"])
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train_p0"])
def test_gpu_compile_modes(train, mode):
    """On a GPU, AOT autograd sees no opaque lamina op: in the default
    compile mode ('torch') the graphs hold PyTorch's ops, for Inductor to
    fuse; in 'kernels' mode they hold lamina's Triton kernels, which Inductor
    launches itself. Inductor's compiled model matches lamina's eager model
    either way (float32: in 'kernels' mode the same kernels, the order of
    their sums too; in 'torch' mode PyTorch's math against lamina's)."""
    from torch._dynamo.backends.common import aot_autograd
    from functorch.compile import make_boxed_func

    from lamina import under_compile

    under_compile.set_compile_mode(mode)
    try:
        torch._dynamo.reset()
        torch.manual_seed(0)
        model = EveryLayer(p=0.0).cuda().train(train)
        graphs = []

        def keep(gm, _inputs):
            graphs.append(gm)
            return make_boxed_func(gm.forward)

        x = torch.randn(2, 3, 6, 6, device="cuda")
        _run(torch.compile(copy.deepcopy(model), backend=aot_autograd(fw_compiler=keep, bw_compiler=keep), fullgraph=True), x)
        targets = _graph_targets(graphs)
        assert len(graphs) == 2
        assert not [t for t in targets if t.startswith("lamina.")], targets
        launches = sum("triton_kernel_wrapper" in t for t in targets)
        assert launches >= 20 if mode == "kernels" else launches == 0, targets
        torch._dynamo.reset()
        twin, compiled = _compiled_twin(model)
        tol = dict(rtol=1e-4, atol=1e-5) if mode == "kernels" else dict(rtol=1e-4, atol=1e-4)
        _assert_same(_run(model, x), _run(compiled, x), tol)
    finally:
        under_compile.set_compile_mode("torch")


def test_cpu_compile_keeps_lamina_ops_opaque():
    """Off the GPU (the NumPy reference, the interpreter) each lamina op
    stays one node: there are no compiled kernels to trace into."""
    from torch._dynamo.backends.common import aot_autograd
    from functorch.compile import make_boxed_func

    torch._dynamo.reset()
    graphs = []

    def keep(gm, _inputs):
        graphs.append(gm)
        return make_boxed_func(gm.forward)

    model = nn.Sequential(L.BatchNorm2d(3), L.ReLU(), L.MaxPool2d(2)).cpu().train()
    compiled = torch.compile(model, backend=aot_autograd(fw_compiler=keep, bw_compiler=keep), fullgraph=True)
    compiled(torch.randn(2, 3, 4, 4, device="cpu", requires_grad=True)).sum().backward()
    targets = _graph_targets(graphs)
    assert "lamina.batch_norm_forward.default" in targets and "lamina.relu_backward.default" in targets, targets
    assert not [t for t in targets if "triton_kernel_wrapper" in t]


def test_gpu_path_traces_into_every_kernel_without_a_gpu():
    """What torch.compile sees of lamina on a card, checked here with meta
    tensors standing for CUDA ones (tests/gpu_trace_on_meta.py, a process of
    its own): forward and backward of every layer, a patched CNN and a fused
    channels_last Bottleneck trace into kernel launches; only the in-place
    ops stay opaque; no launch gets a tensor it writes under two names; a
    dynamic-shape trace keeps every op opaque; torch.compile in the default
    compile mode leaves PyTorch's ops, in 'kernels' mode lamina's kernels."""
    import json
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(__file__), "gpu_trace_on_meta.py")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, script], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    # dynamic shapes (SymInt sizes): the launch arithmetic needs ints, the ops stay opaque
    assert results.pop("dynamic_shapes") == {"launches": 0, "opaque": [
        "lamina.batch_norm_backward.default", "lamina.batch_norm_forward.default",
        "lamina.relu_backward.default", "lamina.relu_forward.default"]}
    # torch.compile in each compile mode (under_compile.py): 'torch' hands
    # Inductor PyTorch's ops, 'kernels' traces into lamina's kernels
    modes = results.pop("compile_modes")
    assert modes["torch"] == {"launches": 0, "lamina_ops": [], "aten_batch_norm": True}, modes
    assert modes["kernels"]["launches"] >= 10 and modes["kernels"]["lamina_ops"] == [], modes
    assert not modes["kernels"]["aten_batch_norm"], modes
    assert len(results) == 8
    for name, result in results.items():
        forward, backward = result["launches"]
        assert forward >= 5 and backward >= 5, (name, result)
        assert set(result["opaque"]) <= {"lamina.activation_inplace.default"}, (name, result)
        assert result["written_twice"] == [], (name, result)
    assert results["every_layer torch.float32 train=True"]["launches"][0] >= 25


@pytest.mark.parametrize("case,shape,kwargs", list(op_cases()))
def test_torch_compile_mode_math_matches_lamina(case, shape, kwargs, monkeypatch):
    """What lamina's layers become inside torch.compile on a GPU in the
    default compile mode (under_compile.py: PyTorch's ops, argument for
    argument), forced here on the CPU: every op of the table, forward and
    every gradient, equals lamina's float64 reference."""
    import lamina.functional

    torch.manual_seed(0)
    x = make_input(case, shape, torch.float64)
    params = case.params(shape, torch.float64)
    y_ref, grads_ref = run_op(case.lamina, x, params, kwargs)
    monkeypatch.setattr(lamina.functional, "torch_math", lambda t: True)
    y, grads = run_op(case.lamina, x, params, kwargs)
    assert_close(y, y_ref, torch.float64, what=f"{case.name} forward")
    for i, (g, g_ref) in enumerate(zip(grads, grads_ref)):
        assert (g is None) == (g_ref is None), f"{case.name}: gradient {i}"
        if g is not None:
            assert_close(g, g_ref, torch.float64, what=f"{case.name} grad {i}")


def test_compile_mode_setting():
    """lamina.set_compile_mode takes 'torch' or 'kernels'; anything else is
    refused with a message naming the choices, and the mode is unchanged."""
    assert lamina.get_compile_mode() == "torch"  # the default
    lamina.set_compile_mode("kernels")
    try:
        assert lamina.get_compile_mode() == "kernels"
        with pytest.raises(ValueError, match=r"compile mode must be one of \('torch', 'kernels'\), got 'inductor'"):
            lamina.set_compile_mode("inductor")
        assert lamina.get_compile_mode() == "kernels"
    finally:
        lamina.set_compile_mode("torch")
