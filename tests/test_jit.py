"""torch.jit over lamina's layers: torch.jit.trace (and so the legacy
torch.onnx.export built on it) and torch.jit.script.

The tracer records the ops a call makes. A lamina layer that runs a kernel
or the NumPy reference makes no op the tracer can see, so it would store the
result as a constant: a traced model that ignores its input. While tracing,
the layers torch has are written in PyTorch's ops (under_compile.torch_math),
and the others (lamina's own random masks, DropBlock2d) go through their
registered torch.library ops, which the traced graph calls again.

torch.jit.script compiles a module's forward from its source; under it a
lamina module is what torch.nn's module of the same name computes, in
PyTorch's ops (nn.py's TorchScript note): the scripted module must equal the
eager one, forward and gradients, and save and load. Code that calls
lamina's functionals scripts too (lamina/torchscript.py): PyTorch's op in
each one's place.
"""

from __future__ import annotations

import io
import warnings

import pytest
import torch

import lamina.functional as F
import lamina.nn as L


def _x4():
    return torch.randn(2, 3, 6, 6)


def _x2():
    return torch.randn(4, 3)


# name, module factory, input factory
MODULES = [
    ("ReLU", lambda: L.ReLU(), _x4),
    ("LeakyReLU", lambda: L.LeakyReLU(0.1), _x4),
    ("PReLU", lambda: L.PReLU(3), _x4),
    ("Sigmoid", lambda: L.Sigmoid(), _x4),
    ("Tanh", lambda: L.Tanh(), _x4),
    ("GELU", lambda: L.GELU(), _x4),
    ("GELU-tanh", lambda: L.GELU("tanh"), _x4),
    ("SiLU", lambda: L.SiLU(), _x4),
    ("Swish", lambda: L.Swish(1.5), _x4),
    ("BatchNorm2d", lambda: L.BatchNorm2d(3), _x4),
    ("BatchNorm2d-eval", lambda: L.BatchNorm2d(3).eval(), _x4),
    ("BatchNorm1d", lambda: L.BatchNorm1d(3), _x2),
    ("InstanceNorm2d", lambda: L.InstanceNorm2d(3, affine=True), _x4),
    ("LayerNorm", lambda: L.LayerNorm(6), _x4),
    ("RMSNorm", lambda: L.RMSNorm(6), _x4),
    ("GroupNorm", lambda: L.GroupNorm(1, 3), _x4),
    ("MaxPool2d", lambda: L.MaxPool2d(3, 2, 1), _x4),
    ("AvgPool2d", lambda: L.AvgPool2d(2), _x4),
    ("AdaptiveAvgPool2d", lambda: L.AdaptiveAvgPool2d(2), _x4),
    ("AdaptiveMaxPool2d", lambda: L.AdaptiveMaxPool2d(2), _x4),
    ("Dropout-eval", lambda: L.Dropout(0.5).eval(), _x4),
    ("BatchNormAct2d", lambda: L.BatchNormAct2d(3), _x4),
    ("BatchNormAct2d-eval", lambda: L.BatchNormAct2d(3, act="silu").eval(), _x4),
    ("GroupNormAct", lambda: L.GroupNormAct(1, 3), _x4),
    ("DropBlock2d-eval", lambda: L.DropBlock2d(0.2, 3).eval(), _x4),
]


def _trace(fn, example, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return torch.jit.trace(fn, example, **kwargs)


@pytest.mark.parametrize("name,make,make_input", MODULES, ids=[m[0] for m in MODULES])
def test_traced_module_computes_from_its_input(name, make, make_input, each_backend):
    torch.manual_seed(0)
    module = make()
    traced = _trace(module, make_input())
    # a fresh input: a graph holding the traced call's result as a constant fails here
    # (each backward before the next call: a batch norm's next training
    # call updates the running statistics its saved graph holds)
    x = make_input().requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    y = traced(x)
    y.sum().backward()
    y_ref = module(x_ref)
    y_ref.sum().backward()
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-5)


def test_traced_model_saves_and_loads(backend):
    backend("auto")
    torch.manual_seed(0)
    model = torch.nn.Sequential(L.BatchNorm2d(3), L.ReLU(), L.MaxPool2d(2), L.LayerNorm(3)).eval()
    traced = _trace(model, _x4())
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    x = _x4()
    torch.testing.assert_close(loaded(x), model(x))


def test_traced_fused_add_norm(backend):
    backend("auto")
    torch.manual_seed(0)
    for module in (L.AddLayerNorm(6), L.AddRMSNorm(6, prenorm=True)):
        traced = _trace(module, (_x4(), _x4()), check_trace=False)
        x, r = _x4(), _x4()
        torch.testing.assert_close(traced(x, r), module(x, r), rtol=1e-5, atol=1e-6)


def test_traced_lamina_masks_stay_lamina_and_random(each_backend):
    """DropBlock2d and a seeded dropout keep lamina's masks in the traced
    graph: a generator-drawn seed is drawn again at every call, an explicit
    seed gives the same mask as eager."""
    x = torch.ones(2, 3, 12, 12)
    traced = _trace(L.DropBlock2d(0.3, 3), x, check_trace=False)
    first, second = traced(x), traced(x)
    assert not torch.equal(first, second)
    assert torch.equal(traced(torch.zeros_like(x)), torch.zeros_like(x))  # computed from the input

    def seeded(t):
        return F.dropout(t, 0.5, seed=3)

    traced = _trace(seeded, x, check_trace=False)
    x2 = torch.randn_like(x)
    assert torch.equal(traced(x2), seeded(x2))


def _script(module):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(module)


SCRIPTED = MODULES + [
    ("BatchNorm2d-cumulative", lambda: L.BatchNorm2d(3, momentum=None), _x4),
    ("InstanceNorm2d-unbatched", lambda: L.InstanceNorm2d(3), lambda: torch.randn(3, 6, 6)),
    ("MaxPool2d-indices", lambda: L.MaxPool2d(2, return_indices=True), _x4),
    ("AdaptiveMaxPool2d-indices", lambda: L.AdaptiveMaxPool2d(2, return_indices=True), _x4),
    ("BatchNormAct2d-leaky", lambda: L.BatchNormAct2d(3, act="leaky_relu", negative_slope=0.2), _x4),
]


def _as_tuple(y):
    return y if isinstance(y, tuple) else (y,)


@pytest.mark.parametrize("name,make,make_input", SCRIPTED, ids=[m[0] for m in SCRIPTED])
def test_scripted_module_equals_eager(name, make, make_input, each_backend):
    torch.manual_seed(0)
    module = make()
    twin = make()
    twin.load_state_dict(module.state_dict())
    scripted = _script(twin)
    x = make_input().requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    y = _as_tuple(scripted(x))
    y_ref = _as_tuple(module(x_ref))
    for a, b in zip(y, y_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    y[0].sum().backward()
    y_ref[0].sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-5)
    # running statistics, counters: the same state after the step
    for (key, a), b in zip(scripted.state_dict().items(), module.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.parametrize("prenorm", [False, True])
def test_scripted_add_norm(prenorm, backend):
    backend("auto")
    torch.manual_seed(0)
    for module in (L.AddLayerNorm(6, prenorm=prenorm), L.AddRMSNorm(6, prenorm=prenorm)):
        scripted = _script(module)
        x, r = _x4(), _x4()
        for a, b in zip(_as_tuple(scripted(x, r)), _as_tuple(module(x, r))):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_scripted_model_saves_and_loads(backend):
    backend("auto")
    torch.manual_seed(0)
    model = torch.nn.Sequential(L.BatchNorm2d(3), L.ReLU(), L.MaxPool2d(2), L.GroupNormAct(1, 3), L.Dropout(0.1)).eval()
    buffer = io.BytesIO()
    torch.jit.save(_script(model), buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    x = _x4()
    torch.testing.assert_close(loaded(x), model(x))


def test_scripted_drop_block_drops_blocks_and_rescales(backend):
    """Scripted DropBlock2d draws PyTorch's random numbers (not lamina's
    masks): in training it zeroes whole blocks and scales what it keeps by
    numel / kept; in eval it is the identity."""
    backend("auto")
    torch.manual_seed(0)
    module = L.DropBlock2d(0.3, 3)
    scripted = _script(module)
    x = torch.ones(4, 8, 16, 16)
    y = scripted(x)
    kept = y != 0
    assert 0 < int(kept.sum()) < x.numel()
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], x.numel() / (1e-6 + float(kept.sum()))))
    # a dropped position's 3x3 neighbourhood holds a whole dropped block
    dropped = (~kept).float()
    assert (torch.nn.functional.max_pool2d(-torch.nn.functional.max_pool2d(-dropped, 3, 1, 1), 3, 1, 1) == dropped).all()
    assert torch.equal(_script(module.eval())(x), x)


# --- scripted code calling lamina's functionals (lamina/torchscript.py) -----------
# (module-level defs: torch.jit.script compiles from source)

def _activations(x):
    y = F.relu(x) + F.relu_(x.clone()) + F.leaky_relu(x, 0.2) + F.leaky_relu_(x.clone(), 0.3)
    y = y + F.prelu(x, torch.full([3], 0.25)) + F.sigmoid(x) + F.tanh(x)
    return y + F.gelu(x) + F.gelu(x, approximate="tanh") + F.silu(x) + F.swish(x, 1.5)


def _norms(x):
    y = F.batch_norm(x, torch.zeros(3), torch.ones(3)) + F.batch_norm(x, None, None, training=True)
    y = y + F.instance_norm(x) + F.layer_norm(x, [6, 6]) + F.rms_norm(x, [6], torch.ones(6), 1e-6)
    return y + F.group_norm(x, 3, torch.ones(3), torch.zeros(3))


def _pools(x):
    y = F.avg_pool2d(x, 2).sum() + F.avg_pool2d(x, [3, 3], 2, 1, ceil_mode=True, count_include_pad=False).sum()
    return y + F.adaptive_avg_pool2d(x, 1).sum() + F.adaptive_avg_pool2d(x, [2, 3]).sum()


@pytest.mark.parametrize("fn", [_activations, _norms, _pools], ids=lambda f: f.__name__.strip("_"))
def test_scripted_functionals(fn, each_backend):
    torch.manual_seed(0)
    x = _x4()
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(fn), buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    torch.testing.assert_close(loaded(x.clone()), fn(x.clone()), rtol=1e-5, atol=1e-5)
