"""Fused layers: each fused op equals the composition of lamina's own unfused
ops (forward and every gradient) on the CPU reference and under the Triton
interpreter; module state (running statistics, state_dict both ways); what
in-place BatchNormAct2d saves; dropout masks identical between the
reference and the kernels; the saved-memory report (lamina.bench.memory)."""

from __future__ import annotations

import pytest
import torch

import lamina
import lamina.functional as F
import lamina.nn as lnn
from lamina.bench.memory import compare_standard_cases, saved_for_backward

BACKENDS = ["auto", "triton"]  # CPU tensors: the NumPy reference, the kernels under the interpreter


@pytest.fixture
def backend():
    previous = lamina.get_backend()
    yield lamina.set_backend
    lamina.set_backend(previous)


def _dtype(be):
    # the reference is exact in float64; the interpreter runs float32 kernels
    return torch.float64 if be == "auto" else torch.float32


def _tol(dtype):
    return dict(rtol=1e-9, atol=1e-10) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-5)


def _grads(fn, tensors, seed=1):
    """(outputs, gradients of every tensor) of fn(*tensors) under one random dy."""
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    out = fn(*leaves)
    outs = out if isinstance(out, tuple) else (out,)
    g = torch.Generator().manual_seed(seed)
    dys = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype) for o in outs]
    grads = torch.autograd.grad(outs, leaves, dys, allow_unused=True)
    return [o.detach() for o in outs], grads


def assert_same(fused, composed, tensors, dtype, reduce_len=1):
    """Outputs and gradients equal; gradients of the parameters (every tensor
    but the first) are sums over ``reduce_len`` values, so their atol grows
    with its square root (float32 rounding of a long sum)."""
    outs, grads = _grads(fused, tensors)
    outs_ref, grads_ref = _grads(composed, tensors)
    for a, b in zip(outs, outs_ref):
        torch.testing.assert_close(a, b, **_tol(dtype))
    for i, (a, b) in enumerate(zip(grads, grads_ref)):
        assert (a is None) == (b is None), f"gradient {i}"
        if a is not None:
            tol = _tol(dtype)
            if i > 0:
                tol["atol"] *= reduce_len ** 0.5
            torch.testing.assert_close(a, b, **tol, msg=lambda m: f"gradient {i}: {m}")


def _randn(*shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)


# --- fused == composition of lamina's unfused ops ----------------------------------

def _act(z, act, negative_slope=0.01):
    return {"relu": F.relu, "silu": F.silu, "gelu": F.gelu, "identity": lambda t: t,
            "leaky_relu": lambda t: F.leaky_relu(t, negative_slope)}[act](z)


@pytest.mark.parametrize("be", BACKENDS)
@pytest.mark.parametrize("act", ["relu", "leaky_relu", "silu", "gelu", "identity"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_batch_norm_act_is_the_composition(be, act, training, layout, backend):
    backend(be)
    dt = _dtype(be)
    x = _randn(2, 3, 5, 7, dtype=dt)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    w, b = 0.5 + _randn(3, dtype=dt, seed=1).abs(), _randn(3, dtype=dt, seed=2)

    def stats():
        return torch.linspace(-1, 1, 3, dtype=dt), torch.linspace(0.5, 2, 3, dtype=dt)

    assert_same(lambda x, w, b: F.batch_norm_act(x, *stats(), w, b, training, act=act, negative_slope=0.2),
                lambda x, w, b: _act(F.batch_norm(x, *stats(), w, b, training), act, 0.2), [x, w, b], dt)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("inplace", [False, True])
def test_batch_norm_act_kernels_multi_tile(layout, inplace, backend):
    """Planes wider than one tile: the reduction pass loops over several
    tiles a program and sums partials of several programs."""
    backend("triton")
    x = _randn(2, 3, 70, 70, dtype=torch.float32)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    w, b = 0.5 + _randn(3, dtype=torch.float32, seed=1).abs(), _randn(3, dtype=torch.float32, seed=2)
    assert_same(lambda x, w, b: F.batch_norm_act(x * 1, None, None, w, b, True, act="leaky_relu", inplace=inplace),
                lambda x, w, b: F.leaky_relu(F.batch_norm(x, None, None, w, b, True)), [x, w, b], torch.float32,
                reduce_len=2 * 70 * 70)


@pytest.mark.parametrize("be", BACKENDS)
@pytest.mark.parametrize("act,slope", [("leaky_relu", 0.1), ("identity", 0.01)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_act_inplace_is_the_composition(be, act, slope, training, backend):
    backend(be)
    dt = _dtype(be)
    x = _randn(3, 4, 5, 3, dtype=dt)
    w, b = 0.5 + _randn(4, dtype=dt, seed=1).abs(), _randn(4, dtype=dt, seed=2)

    def stats():
        return torch.linspace(-1, 1, 4, dtype=dt), torch.linspace(0.5, 2, 4, dtype=dt)

    assert_same(lambda x, w, b: F.batch_norm_act(x * 1, *stats(), w, b, training, act=act, negative_slope=slope,
                                                 inplace=True),
                lambda x, w, b: _act(F.batch_norm(x, *stats(), w, b, training), act, slope), [x, w, b], dt)


@pytest.mark.parametrize("be", BACKENDS)
@pytest.mark.parametrize("act", ["silu", "relu", "gelu"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_group_norm_act_is_the_composition(be, act, layout, backend):
    backend(be)
    dt = _dtype(be)
    x = _randn(2, 6, 4, 5, dtype=dt)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    w, b = _randn(6, dtype=dt, seed=1), _randn(6, dtype=dt, seed=2)
    assert_same(lambda x, w, b: F.group_norm_act(x, 3, w, b, act=act),
                lambda x, w, b: _act(F.group_norm(x, 3, w, b), act), [x, w, b], dt)


@pytest.mark.parametrize("be", BACKENDS)
@pytest.mark.parametrize("p,prenorm", [(0.0, False), (0.3, True), (0.5, False)])
@pytest.mark.parametrize("rms", [False, True])
def test_add_norm_is_the_composition(be, p, prenorm, rms, backend):
    backend(be)
    dt = _dtype(be)
    x, r = _randn(3, 4, 50, dtype=dt), _randn(3, 4, 50, dtype=dt, seed=1)
    w, b = _randn(50, dtype=dt, seed=2), _randn(50, dtype=dt, seed=3)
    if rms:
        def fused(x, r, w, b):
            return F.add_rms_norm(x, r, [50], w, 1e-6, dropout_p=p, prenorm=prenorm, seed=11)

        def norm(s, w, b):
            return F.rms_norm(s, [50], w, 1e-6)
    else:
        def fused(x, r, w, b):
            return F.add_layer_norm(x, r, [50], w, b, dropout_p=p, prenorm=prenorm, seed=11)

        def norm(s, w, b):
            return F.layer_norm(s, [50], w, b)

    def composed(x, r, w, b):
        s = F.dropout(x, p, seed=11) + r
        return (norm(s, w, b), s) if prenorm else norm(s, w, b)

    assert_same(fused, composed, [x, r, w, b], dt)


@pytest.mark.parametrize("be", BACKENDS)
def test_add_layer_norm_eval_has_no_dropout(be, backend):
    backend(be)
    dt = _dtype(be)
    x, r = _randn(4, 33, dtype=dt), _randn(4, 33, dtype=dt, seed=1)
    assert_same(lambda x, r: F.add_layer_norm(x, r, [33], dropout_p=0.9, training=False),
                lambda x, r: F.layer_norm(x + r, [33]), [x, r], dt)


@pytest.mark.parametrize("be", BACKENDS)
@pytest.mark.parametrize("act,approximate", [("gelu", "none"), ("gelu", "tanh"), ("relu", "none"), ("silu", "none"),
                                             ("identity", "none")])
def test_bias_act_is_the_composition(be, act, approximate, backend):
    backend(be)
    dt = _dtype(be)
    x, b = _randn(5, 7, 37, dtype=dt), _randn(37, dtype=dt, seed=1)
    unfused = {"gelu": lambda z: F.gelu(z, approximate), "relu": F.relu, "silu": F.silu, "identity": lambda z: z}[act]
    assert_same(lambda x, b: F.bias_act(x, b, act, approximate), lambda x, b: unfused(x + b), [x, b], dt)


@pytest.mark.parametrize("be", BACKENDS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_dropout_add_is_the_composition(be, layout, backend):
    backend(be)
    dt = _dtype(be)
    x, r = _randn(2, 3, 5, 7, dtype=dt), _randn(2, 3, 5, 7, dtype=dt, seed=1)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        x = x.transpose(-1, -2).contiguous().transpose(-1, -2)

    def fused(x, r):
        return F.dropout_add(x, r, 0.4, seed=5)

    def composed(x, r):
        return F.dropout(x, 0.4, seed=5) + r

    # the leaves keep x's layout (clone preserves it), so the masks follow the same memory order
    assert_same(fused, composed, [x, r], dt)


def test_dropout_add_identity_cases():
    x, r = torch.randn(4, 5), torch.randn(4, 5)
    torch.testing.assert_close(F.dropout_add(x, r, 0.5, training=False), x + r)
    torch.testing.assert_close(F.dropout_add(x, r, 0.0), x + r)


# --- bit-identical masks: reference vs kernels --------------------------------------

def _both_backends(fn, backend):
    out = {}
    for be in ("reference", "triton"):
        backend(be)
        out[be] = fn()
    return out["reference"], out["triton"]


def test_dropout_add_mask_bit_identical(backend):
    # 9000 elements: more than one 4 x GROUP block of the stream, a partial last one
    x = torch.randn(3, 3000) + 3.0  # never 0, so y == residual exactly where dropped
    r = torch.randn(3, 3000)
    ref, ker = _both_backends(lambda: F.dropout_add(x, r, 0.3, seed=2**40 + 17), backend)
    assert torch.equal(ref == r, ker == r)  # the same elements dropped
    assert torch.equal(ref, ker)  # float32: x * (1 / (1 - p)) + r rounds the same on both


@pytest.mark.parametrize("rms", [False, True])
@pytest.mark.parametrize("prenorm", [True, False])  # without: backward rebuilds s, mask included
def test_add_norm_mask_bit_identical(rms, prenorm, backend):
    x = torch.randn(6, 1500) + 3.0
    r = torch.randn(6, 1500)
    leaf_x = x.clone().requires_grad_()

    def run():
        xx = leaf_x.detach().clone().requires_grad_()
        fn = F.add_rms_norm if rms else F.add_layer_norm
        out = fn(xx, r, [1500], dropout_p=0.25, prenorm=prenorm, seed=123)
        y, s = out if prenorm else (out, None)
        dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
        (dx,) = torch.autograd.grad(y, xx, dy)
        return s, dx

    (s_ref, dx_ref), (s_ker, dx_ker) = _both_backends(run, backend)
    assert torch.equal(dx_ref == 0, dx_ker == 0)  # backward regenerated the same mask
    backend("reference")
    assert torch.equal(dx_ref == 0, F.dropout(x, 0.25, seed=123) == 0)  # dropout's own
    if prenorm:
        assert torch.equal(s_ref == r, s_ker == r)
        assert torch.equal(s_ref.detach(), s_ker.detach())
        assert torch.equal(s_ref.detach(), F.dropout(x, 0.25, seed=123) + r)


# --- modules: running statistics, state_dict both ways, repr --------------------------

@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("inplace", [False, True])
def test_batch_norm_act2d_running_stats_match_batch_norm2d(momentum, inplace):
    torch.manual_seed(0)
    ours = lnn.BatchNormAct2d(4, momentum=momentum, act="leaky_relu", inplace=inplace)
    theirs = torch.nn.BatchNorm2d(4, momentum=momentum)
    for step in range(3):
        x = torch.randn(3, 4, 5, 6) * (step + 1) + step
        ours(x.clone())
        theirs(x.clone())
    torch.testing.assert_close(ours.running_mean, theirs.running_mean)
    torch.testing.assert_close(ours.running_var, theirs.running_var)
    assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked) == 3
    # eval uses the running statistics, as BatchNorm2d
    ours.eval()
    theirs.eval()
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(ours(x.clone()), torch.nn.functional.leaky_relu(theirs(x)))


@pytest.mark.parametrize("ours,theirs", [
    (lambda: lnn.BatchNormAct2d(5, act="silu"), lambda: torch.nn.BatchNorm2d(5)),
    (lambda: lnn.GroupNormAct(2, 6), lambda: torch.nn.GroupNorm(2, 6)),
    (lambda: lnn.AddLayerNorm(8, dropout_p=0.1), lambda: torch.nn.LayerNorm(8)),
    (lambda: lnn.AddRMSNorm(8, prenorm=True), lambda: torch.nn.RMSNorm(8)),
])
def test_state_dict_loads_both_ways(ours, theirs):
    torch.manual_seed(0)
    a, b = ours(), theirs()
    for t in list(b.parameters()) + [buf for buf in b.buffers() if buf.is_floating_point()]:
        t.data.copy_(torch.randn_like(t))
    assert set(a.state_dict()) == set(b.state_dict())
    a.load_state_dict(b.state_dict())
    for k, v in b.state_dict().items():
        assert torch.equal(a.state_dict()[k], v), k
    b2 = theirs()
    b2.load_state_dict(a.state_dict())
    for k, v in a.state_dict().items():
        assert torch.equal(b2.state_dict()[k], v), k


def test_modules_compute_the_composition():
    torch.manual_seed(0)
    x, r = torch.randn(2, 6, 4, 4), torch.randn(2, 6, 4, 4)
    gn = lnn.GroupNormAct(3, 6)
    torch.testing.assert_close(gn(x), torch.nn.functional.silu(torch.nn.functional.group_norm(x, 3, gn.weight, gn.bias)))
    ln = lnn.AddLayerNorm(4, prenorm=True).eval()
    y, s = ln(x, r)
    torch.testing.assert_close(s, x + r)
    torch.testing.assert_close(y, torch.nn.functional.layer_norm(x + r, [4], ln.weight, ln.bias))
    rms = lnn.AddRMSNorm(4).eval()
    torch.testing.assert_close(rms(x, r), torch.nn.functional.rms_norm(x + r, [4], rms.weight))
    assert "act='silu'" in repr(gn) and "prenorm=True" in repr(ln)
    assert "inplace=True" in repr(lnn.BatchNormAct2d(3, act="identity", inplace=True))


def test_bad_arguments():
    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match="act"):
        F.batch_norm_act(x, None, None, training=True, act="tanh")
    with pytest.raises(ValueError, match="act"):
        lnn.BatchNormAct2d(3, act="swish")
    with pytest.raises(RuntimeError, match="residual"):
        F.add_layer_norm(torch.randn(2, 4), torch.randn(3, 4), [4])
    with pytest.raises(RuntimeError, match="bias"):
        F.bias_act(torch.randn(2, 4), torch.randn(5))
    with pytest.raises(ValueError, match="probability"):
        F.dropout_add(x, x, 1.5)


# --- what backward keeps --------------------------------------------------------------

def _saved(fn, *args):
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = fn(*args)
    return out, saved


@pytest.mark.parametrize("be", BACKENDS)
def test_inplace_batch_norm_act_saves_only_output_stats_params(be, backend):
    backend(be)
    leaf = torch.randn(2, 3, 4, 5, requires_grad=True)
    x = leaf * 1  # a non-leaf, as inside a network
    x_ptr = x.data_ptr()
    m = lnn.BatchNormAct2d(3, act="leaky_relu", inplace=True)
    y, saved = _saved(m, x)
    assert y is x and y.data_ptr() == x_ptr  # written over the input
    full = [t for t in saved if t.numel() == x.numel()]
    assert len(full) == 1 and full[0].data_ptr() == x_ptr  # y only: no separate input, no pre-activation
    small = [t for t in saved if t.numel() != x.numel()]
    assert all(t.numel() == 3 for t in small) and len(small) <= 4  # weight, bias, mean, rstd
    y.backward(torch.ones_like(y))  # and backward works from y alone
    assert leaf.grad is not None and m.weight.grad is not None


def test_out_of_place_batch_norm_act_saves_no_pre_activation():
    x = torch.randn(2, 3, 4, 5, requires_grad=True)
    w, b = torch.ones(3, requires_grad=True), torch.zeros(3, requires_grad=True)
    y, saved = _saved(lambda x: F.batch_norm_act(x, None, None, w, b, True, act="silu"), x)
    full = [t for t in saved if t.numel() == x.numel()]
    assert len(full) == 1 and full[0].data_ptr() == x.data_ptr()  # x, not z = bn(x)


@pytest.mark.parametrize("be", BACKENDS)
@pytest.mark.parametrize("prenorm", [True, False])
def test_add_norm_saves_s_or_inputs_and_no_mask(be, prenorm, backend):
    """With prenorm s is an output and backward keeps it; without, s is never
    written and backward keeps x and residual, the caller's own tensors, to
    rebuild it. Never a mask or another full-size tensor."""
    backend(be)
    x, r = torch.randn(4, 16, requires_grad=True), torch.randn(4, 16, requires_grad=True)
    w = torch.randn(16, requires_grad=True)

    def fn(x, r):
        return F.add_layer_norm(x, r, [16], w, dropout_p=0.5, prenorm=prenorm, seed=1)

    out, saved = _saved(fn, x, r)
    full = sorted(t.data_ptr() for t in saved if t.numel() == x.numel())
    assert full == sorted([out[1].data_ptr()] if prenorm else [x.data_ptr(), r.data_ptr()])
    assert all(t.numel() <= 16 for t in saved if t.numel() != x.numel())  # weight, 4 row statistics, seed
    report = saved_for_backward(fn, x, r, params=[w])
    assert report.bytes("new") <= 2 * 4 * 4 + 8  # mean, rstd, seed: nothing full-size kept for backward alone


# --- the memory report -------------------------------------------------------------------

def test_memory_report_classifies_storages():
    x = torch.randn(4, 8, requires_grad=True)
    report = saved_for_backward(lambda x: F.relu(x), x)
    assert report.bytes("output") == x.numel() * 4 and report.bytes("new") == 0 and not report.saves_input
    report = saved_for_backward(lambda x: torch.sin(x), x)
    assert report.saves_input and report.bytes("input") == x.numel() * 4


def test_memory_standard_cases():
    rows = {r["layer"]: r for r in compare_standard_cases(shape=(2, 4, 8, 8))}
    n = 2 * 4 * 8 * 8
    assert rows["dropout"]["lamina"]["new"] <= 8  # the seed, no mask
    assert rows["dropout"]["torch"]["new"] >= n  # torch keeps a mask
    pooled = 2 * 4 * 4 * 4  # 3x3/s2/p1 on 8x8 -> 4x4
    assert rows["max_pool2d_3x3s2"]["lamina"]["new"] <= pooled  # <= 1 byte an output
    assert rows["max_pool2d_3x3s2"]["torch"]["new"] >= 8 * pooled  # int64 indices
    assert rows["relu"]["lamina"]["new"] == 0
    for name in ("batch_norm_relu", "batch_norm_silu"):
        assert rows[name]["lamina"]["new"] <= 2 * 4 * 4  # statistics only: no pre-activation
    assert rows["batch_norm_silu"]["torch"]["new"] >= 4 * n  # torch keeps silu's input
    inplace = rows["batch_norm_act_inplace"]["lamina"]
    assert inplace["input_holds_output"] and inplace["new"] <= 2 * 4 * 4 and inplace["output"] == 0
    assert rows["batch_norm_act_inplace"]["lamina"]["total"] < rows["batch_norm_act_inplace"]["torch"]["total"]


# --- torch.compile sees plain ops ------------------------------------------------------

@pytest.mark.parametrize("name", ["batch_norm_act", "add_layer_norm", "add_layer_norm_prenorm"])
def test_compiles_fullgraph(name, backend):
    backend("auto")
    if name == "batch_norm_act":
        args = [torch.randn(2, 3, 4, 4), torch.rand(3) + 0.5, torch.randn(3)]

        def fn(x, w, b):
            return F.batch_norm_act(x, None, None, w, b, True, act="silu")
    elif name == "add_layer_norm":  # s not returned: backward rebuilds it from x and residual
        args = [torch.randn(3, 8), torch.randn(3, 8), torch.randn(8)]

        def fn(x, r, w):
            return F.add_layer_norm(x, r, [8], w, dropout_p=0.3, seed=4)
    else:
        args = [torch.randn(3, 8), torch.randn(3, 8), torch.randn(8)]

        def fn(x, r, w):
            y, s = F.add_layer_norm(x, r, [8], w, dropout_p=0.3, prenorm=True, seed=4)
            return y + s

    eager, compiled = _grads(fn, args), _grads(torch.compile(fn, backend="aot_eager", fullgraph=True), args)
    for a, b in zip(eager[0] + list(eager[1]), compiled[0] + list(compiled[1])):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("path", ["row_kernel", "row_kernel_4096", "two_pass", "wide_row"])
@pytest.mark.parametrize("prenorm", [True, False])  # s saved and read back / never written, rebuilt in backward
def test_add_norm_kernel_paths(path, prenorm, backend, monkeypatch):
    """The fused row kernel, the stream-aligned two-pass path
    (DROPOUT_IN_ROW_KERNEL off) and rows too wide for one program all equal
    the composition, masks included."""
    backend("triton")
    kernels = lamina.backend.kernels("fused")
    if path == "two_pass":
        monkeypatch.setattr(kernels, "DROPOUT_IN_ROW_KERNEL", False)
    # (4096: float32 rows whose rebuilding backward takes its own launch shape, kernels/fused.py)
    n = {"wide_row": 9000, "row_kernel_4096": 4096}.get(path, 300)
    x, r = _randn(2, n, dtype=torch.float32), _randn(2, n, dtype=torch.float32, seed=1)
    w, b = _randn(n, dtype=torch.float32, seed=2), _randn(n, dtype=torch.float32, seed=3)

    def composed(x, r, w, b):
        s = F.dropout(x, 0.3, seed=9) + r
        y = F.layer_norm(s, [n], w, b)
        return (y, s) if prenorm else y

    assert_same(lambda x, r, w, b: F.add_layer_norm(x, r, [n], w, b, dropout_p=0.3, prenorm=prenorm, seed=9),
                composed, [x, r, w, b], torch.float32, reduce_len=2)


def test_group_norm_silu_is_group_norm_act_silu():
    x, w, b = torch.randn(2, 4, 3, 3), torch.randn(4), torch.randn(4)
    torch.testing.assert_close(F.group_norm_silu(x, 2, w, b), F.group_norm_act(x, 2, w, b, act="silu"))
