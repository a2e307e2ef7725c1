"""The normalization kernels' fast paths that the op table's small shapes do
not reach: GroupNorm's persistent kernels (groups too big for one tile),
GroupNormAct on each of GroupNorm's paths,
BatchNorm's folded combine (NCHW training) and its fallback, instance norm
through GroupNorm's single-tile kernels. Thresholds are lowered so that tiny
shapes take each path under the interpreter; values are checked against
PyTorch in float64. Also: the ops' outputs must not alias each other when
they go through the dispatcher (torch.compile's way in)."""

import pytest
import torch

import lamina
import lamina.functional as F
from lamina import backend


@pytest.fixture
def kn(monkeypatch):
    lamina.set_backend("triton")
    module = backend.kernels("normalization")
    yield module
    lamina.set_backend("auto")


def _grads(fn, ref, x, params):
    """(output, grads) of lamina's fn and of torch's ref in float64."""
    leaves = [x] + [p for p in params if p is not None]
    y = fn(x, *params)
    dy = torch.randn_like(y)
    got = torch.autograd.grad(y, leaves, dy)
    leaves64 = [t.detach().double().requires_grad_() for t in leaves]
    it = iter(leaves64[1:])
    params64 = [None if p is None else next(it) for p in params]
    y64 = ref(leaves64[0], *params64)
    want = torch.autograd.grad(y64, leaves64, dy.double())
    return [y] + list(got), [y64] + list(want)


def _leaf(*shape, scale=1.0, shift=0.0):
    return (torch.randn(*shape, dtype=torch.float64) * scale + shift).float().requires_grad_()


@pytest.mark.parametrize("affine", [True, False])
def test_group_norm_persistent(kn, monkeypatch, affine):
    # groups of 2 channels x 35 positions, tiles of 16 values: several tiles a
    # group, so the persistent kernels walk channel blocks and position blocks
    monkeypatch.setattr(kn, "_GN_PERSISTENT_MIN_S", 4)
    monkeypatch.setattr(kn, "_RN_TILE", 16)
    monkeypatch.setattr(kn, "_RN_WHOLE_GROUP_FORWARD", 16)
    monkeypatch.setattr(kn, "_RN_WHOLE_GROUP_BACKWARD", 16)
    monkeypatch.setattr(kn, "_GN_PERSISTENT_FORWARD", (1, 128, 4))  # 2 channels x 64 a tile
    monkeypatch.setattr(kn, "_GN_PERSISTENT_BACKWARD", (1, 8, 4))
    torch.manual_seed(0)
    x = _leaf(2, 6, 5, 7, scale=3.0, shift=1e3)  # a large mean: the shifted sums must hold
    w = _leaf(6) if affine else None
    b = _leaf(6) if affine else None
    got, want = _grads(lambda x, w, b: F.group_norm(x, 3, w, b), lambda x, w, b: torch.nn.functional.group_norm(x, 3, w, b), x, [w, b])
    # float32 x - mean near 1e3 is good to ~6e-5, so a 70-term dweight sum to
    # ~2e-4; sums that cancelled would be off by O(1)
    for g, r in zip(got, want):
        torch.testing.assert_close(g.double(), r, rtol=1e-4, atol=1e-3)


_TORCH_ACTS = {"silu": torch.nn.functional.silu, "relu": torch.relu, "gelu": torch.nn.functional.gelu,
               "leaky_relu": lambda z: torch.nn.functional.leaky_relu(z, 0.2)}


# group norm's paths, and the kernels each must not reach
_GN_PATHS = {
    "whole": ("_gn_persistent_forward_kernel", "_gn_persistent_backward_kernel", "_group_stats_partial_kernel",
              "_group_norm_backward_split"),
    "persistent": ("_group_norm_forward_whole_kernel", "_group_norm_backward_whole_kernel",
                   "_group_stats_partial_kernel", "_group_norm_backward_split"),
    "split": ("_group_norm_forward_whole_kernel", "_group_norm_backward_whole_kernel",
              "_gn_persistent_forward_kernel", "_gn_persistent_backward_kernel"),
}


@pytest.mark.parametrize("path", sorted(_GN_PATHS))
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("act", ["silu", "relu", "gelu", "leaky_relu"])
def test_group_norm_act_paths(kn, monkeypatch, path, affine, act):
    # GroupNormAct on each of group norm's paths, the activation applied as
    # y is written and its gradient taken from the recomputed input
    if path != "whole":  # several tiles a group
        monkeypatch.setattr(kn, "_RN_TILE", 16)
        monkeypatch.setattr(kn, "_RN_WHOLE_GROUP_FORWARD", 16)
        monkeypatch.setattr(kn, "_RN_WHOLE_GROUP_BACKWARD", 16)
    if path == "persistent":
        monkeypatch.setattr(kn, "_GN_PERSISTENT_MIN_S", 4)
        monkeypatch.setattr(kn, "_GN_PERSISTENT_FORWARD", (1, 32, 4))  # 2 channels x 16 a tile
        monkeypatch.setattr(kn, "_GN_PERSISTENT_BACKWARD", (1, 8, 4))
    for kernel in _GN_PATHS[path]:
        monkeypatch.setattr(kn, kernel, None)
    x = _leaf(2, 6, 5, 7, scale=3.0, shift=1.0)
    w = _leaf(6) if affine else None
    b = _leaf(6) if affine else None
    got, want = _grads(lambda x, w, b: F.group_norm_act(x, 3, w, b, act=act, negative_slope=0.2),
                       lambda x, w, b: _TORCH_ACTS[act](torch.nn.functional.group_norm(x, 3, w, b)), x, [w, b])
    for g, r in zip(got, want):
        torch.testing.assert_close(g.double(), r, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fold", [64, 0])
@pytest.mark.parametrize("shape", [(3, 5, 7, 9), (2, 4, 33)])
def test_batch_norm_nchw_training_paths(kn, monkeypatch, fold, shape):
    monkeypatch.setattr(kn, "_FOLD_MAX_PARTIALS", fold)  # 0: the combine-kernel fallback
    c = shape[1]
    x, w, b = _leaf(*shape, scale=2.0, shift=5.0), _leaf(c), _leaf(c)
    rm, rv = torch.randn(c), torch.rand(c) + 0.5
    rm64, rv64 = rm.double(), rv.double()
    got, want = _grads(
        lambda x, w, b: F.batch_norm(x, rm, rv, w, b, True, 0.2),
        lambda x, w, b: torch.nn.functional.batch_norm(x, rm64, rv64, w, b, True, 0.2),
        x, [w, b])
    for g, r in zip(got, want):
        torch.testing.assert_close(g.double(), r, rtol=1e-4, atol=1e-4)
    # the autograd run above updated the running stats once on each side
    torch.testing.assert_close(rm.double(), rm64, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rv.double(), rv64, rtol=1e-5, atol=1e-6)


def test_instance_norm_as_groups(kn):
    x, w, b = _leaf(2, 3, 5, 7, scale=2.0, shift=3.0), _leaf(3), _leaf(3)
    assert kn._instance_as_groups(x.detach())
    rm, rv = torch.zeros(3), torch.ones(3)
    rm64, rv64 = rm.double(), rv.double()
    got, want = _grads(
        lambda x, w, b: F.instance_norm(x, rm, rv, w, b, use_input_stats=True, momentum=0.1),
        lambda x, w, b: torch.nn.functional.instance_norm(x, rm64, rv64, w, b, use_input_stats=True, momentum=0.1),
        x, [w, b])
    for g, r in zip(got, want):
        torch.testing.assert_close(g.double(), r, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(rv.double(), rv64, rtol=1e-5, atol=1e-6)


def test_outputs_do_not_alias_through_the_dispatcher(kn):
    # torch.library checks that a custom op's outputs share no storage; the
    # eager fast path skips that check, so call the registered ops directly
    x = _leaf(2, 4, 5, 6)
    w, b = _leaf(4), _leaf(4)
    x2, w2, b2 = _leaf(3, 8), _leaf(8), _leaf(8)
    calls = [
        (F._batch_norm_forward, (x, w, b, None, None, True, 1e-5)),
        (F._instance_norm_forward, (x, w, b, 1e-5)),
        (F._group_norm_forward, (x, 2, w, b, 1e-5)),
        (F._layer_norm_forward, (x2, [8], w2, b2, 1e-5)),
        (F._rms_norm_forward, (x2, [8], w2, 1e-6)),
    ]
    for op, args in calls:
        y = op.op(*args)[0]
        y.backward(torch.randn_like(y))  # backward ops go through the dispatcher too
