"""Batch, sync-batch and instance norm: the state and edges the op table does
not see. Running statistics over several steps (momentum 0.1 and None,
num_batches_tracked), eval mode, track_running_stats=False, affine=False,
state_dict both ways, PyTorch's errors, a large mean, channels_last, and
SyncBatchNorm over two gloo processes against one-process BatchNorm.

Every check runs on the NumPy reference ("auto" on CPU tensors) and on the
Triton kernels under the interpreter ("triton"), with small shapes.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch

import lamina
import lamina.functional as F

BACKENDS = ["auto", "triton"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    previous = lamina.get_backend()
    lamina.set_backend(request.param)
    yield request.param
    lamina.set_backend(previous)


def close(a, b, rtol=1e-5, atol=1e-5):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol, equal_nan=True)


def assert_same_state(ours, theirs):
    s_ours, s_theirs = ours.state_dict(), theirs.state_dict()
    assert list(s_ours) == list(s_theirs)
    for key in s_theirs:
        close(s_ours[key], s_theirs[key])


def train_steps(ours, theirs, shape, steps=3, channels_last=False):
    """A few training steps (forward + backward) on both; returns the last inputs' grads."""
    g = torch.Generator().manual_seed(0)
    for step in range(steps):
        x = torch.randn(shape, generator=g) * (1 + step) + step
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        dy = torch.randn(shape, generator=g)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = ours(xa), theirs(xb)
        close(ya, yb)
        ya.backward(dy)
        yb.backward(dy)
        close(xa.grad, xb.grad)
    return ours, theirs


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize(
    "cls,shape",
    [("BatchNorm2d", (4, 3, 5, 6)), ("BatchNorm1d", (6, 3)), ("BatchNorm1d", (4, 3, 7))],
)
def test_running_stats_match_torch(backend, cls, shape, momentum):
    torch.manual_seed(0)
    theirs = getattr(torch.nn, cls)(3, momentum=momentum)
    ours = getattr(lamina.nn, cls)(3, momentum=momentum)
    ours.load_state_dict(theirs.state_dict())
    train_steps(ours, theirs, shape, steps=3)
    assert int(ours.num_batches_tracked) == 3
    assert_same_state(ours, theirs)
    close(ours.weight.grad, theirs.weight.grad, atol=1e-4)
    close(ours.bias.grad, theirs.bias.grad, atol=1e-4)
    # eval: the running statistics normalize
    ours.eval(), theirs.eval()
    x = torch.randn(shape)
    close(ours(x), theirs(x))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_model_running_stats_match_torch(backend, dtype):
    """A model cast to a 16-bit dtype (buffers too): the running statistics
    are updated in their own dtype. lamina's kernels round the update once,
    as PyTorch's CUDA batch norm does; torch's CPU batch norm may round more
    often, hence one 16-bit ulp of tolerance."""
    torch.manual_seed(0)
    theirs = torch.nn.BatchNorm2d(3).to(dtype)
    ours = lamina.nn.BatchNorm2d(3).to(dtype)
    x = (torch.randn(4, 3, 5, 6) * 2 + 1).to(dtype)
    for _ in range(3):
        ya, yb = ours(x.clone().requires_grad_()), theirs(x.clone().requires_grad_())
        close(ya.float(), yb.float(), rtol=2e-2, atol=2e-2)
    for name in ("running_mean", "running_var"):
        ours_t, theirs_t = getattr(ours, name), getattr(theirs, name)
        assert ours_t.dtype == dtype
        close(ours_t.float(), theirs_t.float(), rtol=1e-2, atol=1e-2)


def test_channels_last_keeps_format_and_values(backend):
    theirs, ours = torch.nn.BatchNorm2d(3), lamina.nn.BatchNorm2d(3)
    train_steps(ours, theirs, (2, 3, 4, 5), steps=2, channels_last=True)
    assert_same_state(ours, theirs)
    x = torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)
    assert ours(x).is_contiguous(memory_format=torch.channels_last)
    ours.eval()
    assert ours(x).is_contiguous(memory_format=torch.channels_last)


def test_no_running_stats_and_no_affine(backend):
    theirs = torch.nn.BatchNorm2d(3, affine=False, track_running_stats=False)
    ours = lamina.nn.BatchNorm2d(3, affine=False, track_running_stats=False)
    assert ours.running_mean is None and ours.weight is None
    train_steps(ours, theirs, (2, 3, 4, 4), steps=2)
    ours.eval(), theirs.eval()  # still batch statistics
    x = torch.randn(2, 3, 4, 4) + 3
    close(ours(x), theirs(x))


@pytest.mark.parametrize("affine", [False, True])
def test_eval_uses_running_stats_and_frozen_params(backend, affine):
    theirs = torch.nn.BatchNorm1d(4, affine=affine)
    ours = lamina.nn.BatchNorm1d(4, affine=affine)
    train_steps(ours, theirs, (8, 4), steps=2)
    ours.eval(), theirs.eval()
    if affine:  # frozen: the backward needs no parameter sums
        for m in (ours, theirs):
            m.requires_grad_(False)
    x = torch.randn(8, 4, requires_grad=True)
    xb = x.detach().clone().requires_grad_()
    y, yb = ours(x), theirs(xb)
    close(y, yb)
    y.sum().backward(), yb.sum().backward()
    close(x.grad, xb.grad)
    assert int(ours.num_batches_tracked) == 2  # eval does not count


def test_state_dict_loads_both_ways():
    theirs = torch.nn.BatchNorm2d(5, momentum=None)
    train_steps(torch.nn.BatchNorm2d(5), theirs, (3, 5, 2, 2), steps=2)
    ours = lamina.nn.BatchNorm2d(5, momentum=None)
    ours.load_state_dict(theirs.state_dict())
    assert_same_state(ours, theirs)
    back = torch.nn.BatchNorm2d(5)
    back.load_state_dict(ours.state_dict())
    assert_same_state(back, ours)
    assert repr(ours).endswith(repr(theirs)[len("BatchNorm2d"):])


def test_one_value_per_channel_raises_like_torch(backend):
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        lamina.nn.BatchNorm1d(3)(torch.randn(1, 3))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        lamina.nn.BatchNorm2d(3)(torch.randn(1, 3, 1, 1))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        F.batch_norm(torch.randn(1, 3), None, None, training=True)
    # eval with one value is fine, as in torch
    m = lamina.nn.BatchNorm1d(3).eval()
    close(m(torch.ones(1, 3)), torch.nn.BatchNorm1d(3).eval()(torch.ones(1, 3)))
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        F.instance_norm(torch.randn(2, 3, 1))


def test_bad_arguments_raise_like_torch():
    x = torch.randn(4, 3)
    with pytest.raises(RuntimeError, match="running_mean should contain 3 elements not 4"):
        F.batch_norm(x, torch.zeros(4), torch.ones(4))
    with pytest.raises(RuntimeError, match="weight should contain 3 elements not 2"):
        F.batch_norm(x, None, None, torch.ones(2), training=True)
    with pytest.raises(ValueError, match="eps must be positive"):
        F.batch_norm(x, None, None, training=True, eps=0.0)
    with pytest.raises(RuntimeError, match="running_mean and running_var"):
        F.instance_norm(torch.randn(2, 3, 4), use_input_stats=False)
    with pytest.raises(ValueError, match="expected 2D or 3D input"):
        lamina.nn.BatchNorm1d(3)(torch.randn(2, 3, 4, 5))
    with pytest.raises(TypeError, match="floating-point"):
        F.batch_norm(torch.ones(4, 3, dtype=torch.int64), None, None, training=True)


def test_empty_batch_leaves_running_stats(backend):
    ours, theirs = lamina.nn.BatchNorm2d(3), torch.nn.BatchNorm2d(3)
    x = torch.randn(0, 3, 2, 2, requires_grad=True)
    y = ours(x)
    assert y.shape == x.shape
    theirs(x)
    assert_same_state(ours, theirs)


def test_nan_spreads_over_its_channel_only(backend):
    x = torch.randn(4, 3, 5)
    x[1, 2, 3] = float("nan")
    y = F.batch_norm(x, None, None, training=True)
    close(y, torch.nn.functional.batch_norm(x, None, None, training=True))
    assert y[:, 2].isnan().all() and not y[:, :2].isnan().any()


@pytest.mark.parametrize("shape,channels_last", [((4, 1, 3000), False), ((5000, 1), False), ((3, 2, 30, 40), True)])
def test_large_mean_no_worse_than_torch(backend, shape, channels_last):
    """x = 1e4 + N(0, 1) in float32: the variance must not cancel. The error
    against the float64 result is at most torch's (with a little slack). The
    shapes give the kernels several programs and tiles per channel."""
    g = torch.Generator().manual_seed(0)
    x64 = 1e4 + torch.randn(shape, generator=g, dtype=torch.float64)
    dy = torch.randn(shape, generator=g, dtype=torch.float64)
    x = x64.float()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    exact = torch.nn.functional.batch_norm(x.double(), None, None, training=True)

    def errors(fn):
        xi = x.clone().requires_grad_()
        rm, rv = torch.zeros(shape[1]), torch.ones(shape[1])
        y = fn(xi, rm, rv, training=True)
        y.backward(dy.float())
        xe = x.double().requires_grad_()
        ye = torch.nn.functional.batch_norm(xe, None, None, training=True)
        ye.backward(dy)
        var = x.double().transpose(0, 1).reshape(shape[1], -1).var(dim=1)
        return ((y.double() - exact).abs().max().item(), (xi.grad.double() - xe.grad).abs().max().item(),
                (rv.double() - (0.9 + 0.1 * var)).abs().max().item())

    ours, theirs = errors(F.batch_norm), errors(torch.nn.functional.batch_norm)
    for o, t in zip(ours, theirs):
        assert o <= 2 * t + 1e-5, (ours, theirs)
    assert ours[0] < 1e-2  # unit variance kept: the outputs are about N(0, 1)


def test_kernels_bit_identical_run_to_run():
    previous = lamina.get_backend()
    lamina.set_backend("triton")
    try:
        x = torch.randn(3, 5, 700)
        a = F.batch_norm(x, None, None, training=True)
        b = F.batch_norm(x, None, None, training=True)
        assert torch.equal(a, b)
    finally:
        lamina.set_backend(previous)


# --- instance norm ------------------------------------------------------------------

@pytest.mark.parametrize("cls,shape", [("InstanceNorm1d", (3, 4, 9)), ("InstanceNorm2d", (2, 4, 3, 5))])
@pytest.mark.parametrize("affine,track", [(False, False), (True, True)])
def test_instance_norm_modules_match_torch(backend, cls, shape, affine, track):
    theirs = getattr(torch.nn, cls)(4, affine=affine, track_running_stats=track)
    ours = getattr(lamina.nn, cls)(4, affine=affine, track_running_stats=track)
    ours.load_state_dict(theirs.state_dict())
    train_steps(ours, theirs, shape, steps=2)
    assert_same_state(ours, theirs)
    ours.eval(), theirs.eval()
    x = torch.randn(shape)
    close(ours(x), theirs(x))
    close(ours(x[0]), theirs(x[0]))  # unbatched input


def test_instance_norm_channels_last_input(backend):
    """channels_last instance norm: one statistic per (n, c), weight per c;
    more channels than one kernel block (130 > 128). The output is laid out
    as PyTorch's: contiguous."""
    x = (torch.randn(2, 130, 3, 4) * 2 + 5).contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(130), torch.randn(130)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    wa, wb = w.clone().requires_grad_(), w.clone().requires_grad_()
    ya = F.instance_norm(xa, weight=wa, bias=b)
    yb = torch.nn.functional.instance_norm(xb, weight=wb, bias=b)
    assert ya.stride() == yb.stride()
    close(ya, yb)
    dy = torch.randn(2, 130, 3, 4)
    ya.backward(dy), yb.backward(dy)
    close(xa.grad, xb.grad)
    close(wa.grad, wb.grad, atol=1e-4)


# --- SyncBatchNorm -------------------------------------------------------------------

def test_convert_sync_batchnorm_makes_lamina_modules():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4), torch.nn.Sequential(torch.nn.BatchNorm1d(4)))
    converted = lamina.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert type(converted[1]) is lamina.nn.SyncBatchNorm
    assert type(converted[2][0]) is lamina.nn.SyncBatchNorm
    assert converted[1].weight is model[1].weight
    single = lamina.nn.SyncBatchNorm.convert_sync_batchnorm(torch.nn.BatchNorm2d(2))
    assert type(single) is lamina.nn.SyncBatchNorm


def test_sync_batchnorm_without_process_group_is_batchnorm(backend):
    ours, theirs = lamina.nn.SyncBatchNorm(3, momentum=None), torch.nn.BatchNorm2d(3, momentum=None)
    train_steps(ours, theirs, (4, 3, 2, 3), steps=2)
    assert_same_state(ours, theirs)


SYNC_SHAPE = (8, 3, 4, 5)  # split 3 + 5 over two ranks: unequal counts


def _sync_worker(rank, world, port, backend_name, out_dir):
    import torch.distributed as dist

    lamina.set_backend(backend_name)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        g = torch.Generator().manual_seed(0)
        x = 1e3 + torch.randn(SYNC_SHAPE, generator=g)
        dy = torch.randn(SYNC_SHAPE, generator=g)
        rows = slice(0, 3) if rank == 0 else slice(3, 8)
        m = lamina.nn.SyncBatchNorm(3, momentum=0.1)
        with torch.no_grad():
            m.weight.copy_(torch.tensor([0.5, 1.5, -2.0]))
            m.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
        results = {}
        for step in range(2):  # two steps: running stats accumulate
            xi = x[rows].clone().requires_grad_()
            m.weight.grad = m.bias.grad = None
            y = m(xi)
            y.backward(dy[rows])
            results[step] = (y.detach(), xi.grad)
        torch.save(
            {"y": results[1][0], "dx": results[1][1], "dw": m.weight.grad, "db": m.bias.grad,
             "state": m.state_dict()},
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("backend_name", ["auto", "triton"])
def test_sync_batchnorm_two_processes_equals_one(tmp_path, backend_name):
    import torch.multiprocessing as mp

    mp.spawn(_sync_worker, args=(2, _free_port(), backend_name, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))

    g = torch.Generator().manual_seed(0)
    x = 1e3 + torch.randn(SYNC_SHAPE, generator=g)
    dy = torch.randn(SYNC_SHAPE, generator=g)
    ref = torch.nn.BatchNorm2d(3, momentum=0.1)
    with torch.no_grad():
        ref.weight.copy_(torch.tensor([0.5, 1.5, -2.0]))
        ref.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    for _ in range(2):
        xi = x.clone().requires_grad_()
        ref.weight.grad = ref.bias.grad = None
        y = ref(xi)
        y.backward(dy)

    close(torch.cat([r0["y"], r1["y"]]), y.detach(), atol=1e-4)
    close(torch.cat([r0["dx"], r1["dx"]]), xi.grad, atol=1e-4)
    # each rank returns its local parameter gradients (data-parallel sums them)
    close(r0["dw"] + r1["dw"], ref.weight.grad, atol=1e-3)
    close(r0["db"] + r1["db"], ref.bias.grad, atol=1e-3)
    for r in (r0, r1):
        for key, value in ref.state_dict().items():
            close(r["state"][key], value, atol=1e-4)


# --- the ops' registration and the reference layer classes ---------------------------

def test_custom_ops_pass_opcheck():
    """Fake (meta) implementations, schemas and autograd registration agree
    with the real ops (what torch.compile relies on). Registration does not
    depend on the backend: the reference runs."""
    ops = torch.ops.lamina
    quick = ("test_schema", "test_autograd_registration", "test_faketensor")
    x = torch.randn(4, 3, 5, requires_grad=True)
    w, b = torch.randn(3, requires_grad=True), torch.randn(3, requires_grad=True)
    torch.library.opcheck(ops.batch_norm_forward, (x, w, b, None, None, True, 1e-5))
    torch.library.opcheck(ops.batch_norm_forward, (x, w, b, torch.zeros(3), torch.ones(3), False, 1e-5), test_utils=quick)
    torch.library.opcheck(ops.instance_norm_forward, (x, w, None, 1e-5), test_utils=quick)
    with torch.no_grad():  # the backward op is not differentiated again
        _, mean, rstd, _ = ops.batch_norm_forward(x, w, b, None, None, True, 1e-5)
    dy = torch.randn(4, 3, 5)
    torch.library.opcheck(ops.batch_norm_backward, (dy, x.detach(), w.detach(), mean, rstd, True), test_utils=quick)
    torch.library.opcheck(
        ops.instance_norm_backward, (dy, x.detach(), w.detach(), torch.zeros(12), torch.ones(12)), test_utils=quick
    )


@pytest.mark.parametrize("momentum", [0.1, None])
def test_reference_layer_classes_match_torch(momentum):
    import numpy as np

    from lamina.reference import normalization as ref

    ours = ref.BatchNorm(3, momentum=momentum)
    theirs = torch.nn.BatchNorm2d(3, momentum=momentum).double()
    g = torch.Generator().manual_seed(0)
    for step in range(3):
        x = torch.randn(4, 3, 2, 5, generator=g, dtype=torch.float64) + step
        dy = torch.randn(4, 3, 2, 5, generator=g, dtype=torch.float64)
        xt = x.clone().requires_grad_()
        theirs.zero_grad()
        y = theirs(xt)
        y.backward(dy)
        np.testing.assert_allclose(ours(x.numpy()), y.detach().numpy(), atol=1e-12)
        np.testing.assert_allclose(ours.backward(dy.numpy()), xt.grad.numpy(), atol=1e-12)
        np.testing.assert_allclose(ours.grads["weight"], theirs.weight.grad.numpy(), atol=1e-11)
    np.testing.assert_allclose(ours.running_mean, theirs.running_mean.numpy(), atol=1e-12)
    np.testing.assert_allclose(ours.running_var, theirs.running_var.numpy(), atol=1e-12)
    assert ours.num_batches_tracked == int(theirs.num_batches_tracked)
    ours.eval(), theirs.eval()
    np.testing.assert_allclose(ours(x.numpy()), theirs(x).detach().numpy(), atol=1e-12)

    inst, inst_t = ref.InstanceNorm(3, affine=True), torch.nn.InstanceNorm1d(3, affine=True).double()
    x = torch.randn(2, 3, 7, generator=g, dtype=torch.float64, requires_grad=True)
    y = inst_t(x)
    y.backward(torch.ones_like(y) * torch.arange(7.0, dtype=torch.float64))
    np.testing.assert_allclose(inst(x.detach().numpy()), y.detach().numpy(), atol=1e-12)
    dx = inst.backward((torch.ones_like(y) * torch.arange(7.0, dtype=torch.float64)).numpy())
    np.testing.assert_allclose(dx, x.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(inst.grads["weight"], inst_t.weight.grad.numpy(), atol=1e-11)
