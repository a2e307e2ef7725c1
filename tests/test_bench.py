"""The GPU benchmark harness's pure parts, on the CPU: the standard matrix,
the byte formulas, the anchors' torch calls, selection and --part splitting,
the report (JSON, table, PNG) from made-up results, and the whole harness run
end to end with a fake timer (nothing is timed, no CUDA needed)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from lamina.bench import anchors, correctness, gpu, report, shapes, traffic
from lamina.bench.shapes import Cell
from lamina.optable import OpCase

SRC = os.path.join(os.path.dirname(__file__), "..", "src")


# --- the standard matrix ---------------------------------------------------------------

def _find(cells, label, shape, dtype="bfloat16", layout="contiguous", mode="fwdbwd", small=False):
    return [c for c in cells if (c.label, c.shape, c.dtype, c.layout, c.mode, c.small) == (label, shape, dtype, layout, mode, small)]


def test_matrix_has_every_cell_of_the_design():
    cells = shapes.standard_matrix()
    assert len({c.id for c in cells}) == len(cells) == 124  # ids are unique
    assert len(shapes.groups(cells)) == 62
    for label in ("relu", "leaky_relu", "sigmoid", "tanh", "gelu(none)", "gelu(tanh)", "silu", "swish(1.5)", "dropout(0.1)"):
        assert _find(cells, label, (2**26,)), label
    assert _find(cells, "prelu", (64, 64, 128, 128)) and math.prod((64, 64, 128, 128)) == 2**26
    for label in ("layer_norm", "rms_norm"):
        assert _find(cells, label, (32768, 4096)) and _find(cells, label, (131072, 1024))
    for label in ("batch_norm2d", "batch_norm2d+relu", "max_pool2d(3,s2,p1)", "max_pool2d(2,s2)", "avg_pool2d(2,s2)"):
        for layout in ("contiguous", "channels_last"):
            assert _find(cells, label, (64, 64, 112, 112), layout=layout), (label, layout)
    for label in ("group_norm", "group_norm+silu", "instance_norm"):
        assert _find(cells, label, (16, 512, 64, 64))
    assert _find(cells, "global_avg_pool", (256, 2048, 7, 7))
    assert _find(cells, "layer_norm", (4096, 768), small=True)
    assert _find(cells, "batch_norm2d", (32, 64, 56, 56), small=True)
    # every cell in float32 and bfloat16, forward and forward+backward
    for c in cells:
        for dtype in shapes.DTYPES:
            for mode in shapes.MODES:
                assert _find(cells, c.label, c.shape, dtype, c.layout, mode, c.small)
    assert {c.kw.get("num_groups") for c in cells if c.op.startswith("group_norm")} == {32}
    assert all(c.kw == {"p": 0.1} for c in cells if c.op == "dropout")


def test_fused_cells_are_apart_from_the_design_matrix():
    fused = shapes.fused_matrix()
    assert shapes.bench_matrix() == shapes.standard_matrix() + fused
    assert len({c.id for c in shapes.bench_matrix()}) == len(shapes.bench_matrix()) == 124 + 16
    assert {c.family for c in fused} == {"fused"} and not {c.op for c in fused} & {c.op for c in shapes.standard_matrix()}
    for op, shape, kw in (
        ("add_layer_norm", (32768, 4096), {"dropout_p": 0.0, "prenorm": False}),
        ("add_rms_norm", (32768, 4096), {"dropout_p": 0.0, "prenorm": False}),
        ("bias_act", (32768, 4096), {"act": "gelu", "approximate": "none"}),
        ("dropout_add", (2**26,), {"p": 0.1}),
    ):
        cells = [c for c in fused if c.op == op]
        assert {(c.dtype, c.mode) for c in cells} == {(d, m) for d in shapes.DTYPES for m in shapes.MODES}, op
        assert all(c.shape == shape and c.kw == kw and c.layout == "contiguous" for c in cells), op
    assert {c.op for c in shapes.select(shapes.bench_matrix(), ops=["fused"])} == {"add_layer_norm", "add_rms_norm", "bias_act", "dropout_add"}
    assert {c.op for c in shapes.select(shapes.bench_matrix(), ops=["layer_norm"])} == {"layer_norm"}


def test_working_sets_are_above_l2():
    # the input alone is bigger than an H100's L2 (50 MB; do_bench also flushes
    # L2 before every repetition); the small shapes are there for launch overhead
    for c in shapes.bench_matrix():
        if not c.small:
            assert c.numel * traffic.ITEMSIZE[c.dtype] > 50e6, c.id


def test_every_cell_op_has_an_anchor_and_a_byte_formula():
    for c in shapes.bench_matrix():
        assert c.op in anchors.OPS
        assert traffic.cell_bytes(c.op, c.shape, c.kw, c.dtype, c.mode) > 0


# --- bytes -------------------------------------------------------------------------------

def test_byte_formulas():
    n = 2**26
    assert traffic.cell_bytes("relu", (n,), {}, "float32", "fwd") == 2 * n * 4
    assert traffic.cell_bytes("gelu", (n,), {"approximate": "tanh"}, "bfloat16", "fwdbwd") == 5 * n * 2
    assert traffic.cell_bytes("dropout", (n,), {"p": 0.1}, "float32", "fwdbwd") == 4 * n * 4
    assert traffic.elements_moved("prelu", (2, 3, 4, 5), {}) == (2 * 120 + 3, 3 * 120 + 6)
    r, d = 32768, 4096
    assert traffic.elements_moved("layer_norm", (r, d), {}) == (2 * r * d + 2 * d, 3 * r * d + 3 * d)
    assert traffic.elements_moved("rms_norm", (r, d), {}) == (2 * r * d + d, 3 * r * d + 2 * d)
    img = (64, 64, 112, 112)
    m = math.prod(img)
    assert traffic.elements_moved("batch_norm", img, {}) == (2 * m + 6 * 64, 3 * m + 3 * 64)
    assert traffic.elements_moved("batch_norm_relu", img, {}) == traffic.elements_moved("batch_norm", img, {})
    assert traffic.elements_moved("instance_norm", (16, 512, 64, 64), {}) == (2 * 16 * 512 * 4096, 3 * 16 * 512 * 4096)
    out = 64 * 64 * 56 * 56
    for kw in ({"kernel_size": 3, "stride": 2, "padding": 1}, {"kernel_size": 2, "stride": 2}):
        assert traffic.elements_moved("max_pool2d", img, kw) == (m + out, out + m)
    assert traffic.elements_moved("adaptive_avg_pool2d", (256, 2048, 7, 7), {"output_size": 1}) == (
        256 * 2048 * 49 + 256 * 2048, 256 * 2048 + 256 * 2048 * 49)
    assert traffic.gbps(2 * 10**9, 1000.0) == pytest.approx(2.0)
    # fused cells: x and residual read, y written; backward dy and s read, s
    # saved or rebuilt, one gradient for both inputs (two with branch dropout)
    rd = r * d
    no_drop = {"dropout_p": 0.0, "prenorm": False}
    assert traffic.elements_moved("add_layer_norm", (r, d), no_drop) == (3 * rd + 2 * d, 4 * rd + 3 * d)
    assert traffic.elements_moved("add_rms_norm", (r, d), no_drop) == (3 * rd + d, 4 * rd + 2 * d)
    assert traffic.elements_moved("add_rms_norm", (r, d), {"dropout_p": 0.1}) == (3 * rd + d, 5 * rd + 2 * d)
    assert traffic.elements_moved("bias_act", (r, d), {"act": "gelu"}) == (2 * rd + d, 3 * rd + 2 * d)
    assert traffic.cell_bytes("dropout_add", (n,), {"p": 0.1}, "bfloat16", "fwdbwd") == 5 * n * 2
    with pytest.raises(KeyError):
        traffic.elements_moved("no_such_op", (1,), {})


@pytest.mark.parametrize("kw", [
    {"kernel_size": 3, "stride": 2, "padding": 1}, {"kernel_size": 2, "stride": 2}, {"kernel_size": 2},
    {"kernel_size": (3, 2), "stride": (1, 2), "padding": (1, 0)},
])
@pytest.mark.parametrize("hw", [(112, 112), (7, 9), (5, 5)])
def test_pool_output_size_is_torchs(kw, hw):
    y = torch.nn.functional.max_pool2d(torch.zeros(1, 1, *hw), **kw)
    assert traffic.pool_output_hw(*hw, kw["kernel_size"], kw.get("stride"), kw.get("padding", 0)) == tuple(y.shape[-2:])


# --- the anchors' torch calls (tiny shapes, CPU) -----------------------------------------

@pytest.mark.parametrize("group", shapes.groups([c for c in shapes.bench_matrix() if c.dtype == "float32" and c.mode == "fwdbwd"]), ids=lambda g: g[0].group)
def test_torch_anchor_runs_forward_and_backward(group):
    c = group[0]
    shape = shapes.smoke_shape(c.shape)
    x = torch.randn(shape)
    if c.layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    p = anchors.make_params(c.op, shape, torch.float32, "cpu")
    for k in anchors.OPS[c.op].learnable:
        p[k].requires_grad_(True)
    y = anchors.torch_fn(c.op, c.kw)(x, p)
    y.backward(torch.ones_like(y))
    assert x.grad is not None and x.grad.shape == x.shape
    assert all(p[k].grad is not None for k in anchors.OPS[c.op].learnable)


def test_fused_anchors_are_the_torch_composition():
    torch.manual_seed(0)
    x = torch.randn(3, 8)
    p = anchors.make_params("add_layer_norm", (3, 8), torch.float32, "cpu")
    assert set(p) == {"weight", "bias", "residual"} and p["residual"].shape == x.shape
    assert "residual" in anchors.OPS["add_layer_norm"].learnable and anchors.OPS["add_layer_norm"].shared_grad
    kw = {"dropout_p": 0.0, "prenorm": False}
    y = anchors.torch_fn("add_layer_norm", kw)(x, p)
    torch.testing.assert_close(y, torch.nn.functional.layer_norm(x + p["residual"], (8,), p["weight"], p["bias"], anchors.EPS_NORM))
    p = anchors.make_params("bias_act", (3, 8), torch.float32, "cpu")
    y = anchors.torch_fn("bias_act", {"act": "gelu", "approximate": "none"})(x, p)
    torch.testing.assert_close(y, torch.nn.functional.gelu(x + p["bias"]))
    p = anchors.make_params("dropout_add", (3, 8), torch.float32, "cpu")
    y = anchors.torch_fn("dropout_add", {"p": 0.0})(x, p)  # p = 0: the plain sum
    torch.testing.assert_close(y, x + p["residual"])
    for op in ("add_layer_norm", "add_rms_norm", "bias_act"):  # the lamina call equals the anchor
        p = anchors.make_params(op, (3, 8), torch.float32, "cpu")
        kw = shapes.fused_matrix()[[c.op for c in shapes.fused_matrix()].index(op)].kw
        torch.testing.assert_close(anchors.lamina_fn(op, kw)(x, p), anchors.torch_fn(op, kw)(x, p), atol=1e-5, rtol=1e-5)


def _dropout_add_case(dtype):
    cell = next(c for c in shapes.fused_matrix() if c.op == "dropout_add" and c.dtype == dtype and c.mode == "fwdbwd")
    torch.manual_seed(0)
    tdtype = correctness.TORCH_DTYPES[dtype]
    x0 = torch.randn(20000, dtype=tdtype)
    p0 = anchors.make_params("dropout_add", x0.shape, tdtype, "cpu")
    x = x0.clone().requires_grad_(True)
    r = p0["residual"].clone().requires_grad_(True)
    y = anchors.lamina_fn("dropout_add", cell.kw)(x, {"residual": r})
    dy = torch.randn_like(y)
    y.backward(dy)
    return cell, x0, p0, y.detach(), [x.grad, r.grad], dy


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_dropout_add_is_compared_by_statistics(dtype):
    """The mask is read off y - residual: lamina's own output passes; a wrong
    scale, a wrong drop rate, a wrong dx or dresidual fail."""
    cell, x0, p0, y, g, dy = _dropout_add_case(dtype)
    ok = gpu.compare(cell, x0, (None, None), (y, g), dy, p0)
    assert ok["fwd"]["ok"] and ok["fwdbwd"]["ok"], ok
    assert "dropped 0.09" in ok["fwd"]["where"] or "dropped 0.10" in ok["fwd"]["where"]
    r = p0["residual"]
    wrong_scale = ((y.float() - r.float()) * 1.1 + r.float()).to(y.dtype)
    assert not gpu.compare(cell, x0, (None, None), (wrong_scale, g), dy, p0)["fwd"]["ok"]
    no_dropout = (x0.float() / 0.9 + r.float()).to(y.dtype)  # nothing dropped: the rate is wrong
    assert not gpu.compare(cell, x0, (None, None), (no_dropout, g), dy, p0)["fwd"]["ok"]
    assert not gpu.compare(cell, x0, (None, None), (y, [g[0] * 0.5, g[1]]), dy, p0)["fwdbwd"]["ok"]
    assert not gpu.compare(cell, x0, (None, None), (y, [g[0], g[1] * 0]), dy, p0)["fwdbwd"]["ok"]


def test_shared_gradients_are_timed_without_a_copy_into_grad(monkeypatch):
    """fwd+bwd of x + residual cells runs torch.autograd.grad (no AccumulateGrad
    copy of the gradient both inputs share); other cells backward()."""
    from lamina.bench import timing

    calls = []
    monkeypatch.setattr(timing, "_timer", [timing.fake_timer])
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: calls.append("grad"))
    monkeypatch.setattr(torch.autograd, "backward", lambda *a, **k: calls.append("backward"))
    worker = gpu.Worker.__new__(gpu.Worker)
    worker.args, worker.torch = gpu.parse_args(["--smoke"]), torch
    x = torch.randn(8, requires_grad=True)
    p = {"residual": torch.randn(8, requires_grad=True)}
    fn = anchors.torch_fn("dropout_add", {"p": 0.1})
    worker.time_mode(fn, x, p, torch.ones(8), [x, p["residual"]], "fwdbwd", shared_grad=True)
    worker.time_mode(fn, x, p, torch.ones(8), [x, p["residual"]], "fwdbwd")
    worker.time_mode(fn, x, p, torch.ones(8), [x, p["residual"]], "fwd", shared_grad=True)
    assert calls == ["grad", "backward"]
    assert [op for op, b in anchors.OPS.items() if b.shared_grad] == ["add_layer_norm", "add_rms_norm", "dropout_add"]


def test_swish_anchor_is_x_sigmoid_beta_x():
    x = torch.linspace(-4, 4, 9)
    y = anchors.torch_fn("swish", {"beta": 1.5})(x, {})
    torch.testing.assert_close(y, x / (1 + torch.exp(-1.5 * x)))


def test_fused_cells_compose_lamina_ops_until_a_fused_function_exists():
    import lamina.functional as F

    for op, name in (("batch_norm_relu", "batch_norm_act"), ("group_norm_silu", "group_norm_silu")):
        expected = f"fused:{name}" if hasattr(F, name) else "composed"
        assert anchors.lamina_impl(op) == expected
    assert anchors.lamina_impl("relu") == ""


def test_liger_is_absent_for_ops_it_does_not_have():
    assert anchors.liger_fn("relu", {}) is None
    assert anchors.liger_fn("batch_norm", {}) is None


# --- selection ------------------------------------------------------------------------------

def test_filters():
    cells = shapes.standard_matrix()
    sel = shapes.select(cells, ops=["batch_norm"], dtypes=["bfloat16"], modes=["fwd"])
    assert {c.op for c in sel} == {"batch_norm", "batch_norm_relu"}
    assert {(c.dtype, c.mode) for c in sel} == {("bfloat16", "fwd")}
    assert {c.op for c in shapes.select(cells, ops=["pooling"])} == {"max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"}
    assert {c.label for c in shapes.select(cells, ops=["gelu(tanh)"])} == {"gelu(tanh)"}
    assert shapes.parse_dtypes("bf16, fp32") == ["bfloat16", "float32"]
    assert shapes.parse_dtypes(None) is None
    with pytest.raises(ValueError, match="--dtype"):
        shapes.parse_dtypes("int8")


def test_check_filters_take_the_bench_families():
    """--check-only --ops pooling selected no item (the op table's cases had
    no family): the check and the benchmark take the same --ops words."""
    from lamina.optable import OPS

    def names(ops):
        return {OPS[ci].name for _, ci, _, _ in correctness.check_items(ops)}

    assert names(["pooling"]) == {c.name for c in OPS if "pool" in c.name}
    assert names(["fused"]) == {"batch_norm_act", "batch_norm_act_inplace", "group_norm_act", "add_layer_norm",
                                "add_rms_norm", "bias_act", "dropout_add"}
    assert names(["dropout"]) == {"dropout", "drop_connect", "drop_block2d", "dropout_add"}  # family or prefix
    assert "relu" in names(["activation"]) and "batch_norm_train" in names(["normalization"])
    assert names(["activation"]).isdisjoint(names(["normalization"]) | names(["pooling"]) | names(["fused"]))


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_parts_are_disjoint_and_cover_everything(n):
    groups = shapes.groups(shapes.standard_matrix())
    parts = [shapes.take_part(groups, (i, n)) for i in range(1, n + 1)]
    ids = [g[0].group for part in parts for g in part]
    assert sorted(ids) == sorted(g[0].group for g in groups)
    assert len(ids) == len(set(ids))
    assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1
    assert parts == [shapes.take_part(groups, (i, n)) for i in range(1, n + 1)]  # deterministic


@pytest.mark.parametrize("text", ["0/3", "4/3", "a/b", "2"])
def test_bad_part(text):
    with pytest.raises(ValueError, match="--part"):
        shapes.parse_part(text)


def test_plan():
    args = gpu.parse_args(["--check", "--part", "1/2", "--out", "x"])
    plan = gpu.build_plan(args)
    kinds = [i.kind for i in plan.items]
    assert kinds == sorted(kinds, key=["check", "bench", "compile"].index)  # check, then bench, then compile
    assert len(plan.cells) == 70 and len({i.id for i in plan.items}) == len(plan.items)  # (124 + 16 fused) / 2
    compile_dtypes = [i.cells[0].dtype for i in plan.items if i.kind == "compile"]
    assert compile_dtypes == sorted(compile_dtypes, key=lambda d: d != "bfloat16")  # bf16 first
    assert all(len(ids) == 2 for ids in plan.item_of().values())  # a bench and a compile item per cell
    assert os.path.basename(gpu.file_names(args)["bench_json"]) == "bench-part1of2.json"
    only = gpu.build_plan(gpu.parse_args(["--check-only", "--no-compile"]))
    assert only.cells == [] and all(i.kind == "check" for i in only.items)
    assert all(i.kind != "compile" for i in gpu.build_plan(gpu.parse_args(["--no-compile"])).items)


@pytest.mark.parametrize("argv", [["--mode", "bwd"], ["--dtype", "int8"], ["--part", "3/2"]])
def test_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        gpu.parse_args(argv)
    assert exc.value.code == 2


def test_output_file_names_are_plain():
    for part in (None, "2/3"):
        args = gpu.parse_args(["--out", "o"] + (["--part", part] if part else []))
        names = [os.path.basename(p) for p in gpu.file_names(args).values()]
        assert len(names) + 1 <= 8  # + session.log
        assert all(all(ch.isalnum() or ch in "._-" for ch in n) for n in names)


# --- correctness helpers ------------------------------------------------------------------

def test_tolerances_are_the_op_tests():
    from test_ops import TOLERANCES

    assert correctness.tolerances() is TOLERANCES


def test_scaled_shapes():
    assert correctness.candidate_shapes((2, 3, 5, 7)) == [(64, 64, 56, 56), (64, 3, 56, 56), (2, 3, 5, 7)]
    assert correctness.candidate_shapes((13, 17)) == [(4096, 1024), (4096, 17), (13, 17)]
    assert correctness.candidate_shapes((4096, 1024)) == [(4096, 1024)]
    shapes_ = [(), (1,), (7,), (13, 17), (3, 5, 4099), (0, 3), (2, 3, 5, 7)]

    class Case:
        shapes = shapes_

    assert correctness.table_shapes(Case) == [(1,), (13, 17), (3, 5, 4099), (2, 3, 5, 7)]
    assert correctness.layouts((2, 3, 4, 5)) == ["contiguous", "channels_last", "strided"]
    assert correctness.layouts((5,)) == ["contiguous"]


def test_error_ratio():
    e = torch.tensor([1.0, 2.0, float("nan"), float("inf")], dtype=torch.float64)
    assert correctness.error_ratio(e.clone(), e, 1e-5, 1e-5) == 0.0
    a = e.clone()
    a[0] = 1.0 + 2e-5  # 2e-5 off with a tolerance of 1e-5 + 1e-5 * 1
    assert correctness.error_ratio(a, e, 1e-5, 1e-5) == pytest.approx(1.0, rel=1e-3)
    a[2] = 0.0  # NaN expected, a number given
    assert correctness.error_ratio(a, e, 1e-5, 1e-5) == math.inf
    assert correctness.error_ratio(torch.zeros(2), torch.zeros(3), 1, 1) == math.inf
    assert correctness.bit_equal(torch.tensor([float("nan")]), torch.tensor([float("nan")]))
    assert not correctness.bit_equal(torch.tensor([0.0]), torch.tensor([-0.0]))


def _kink_case(flip: bool):
    """A group norm + relu row whose element (0, 0, 0) sits at its group's
    mean, so its pre-activation is 0 to rounding: the oracle's relu branch
    there is whichever its float64 rounding gives. Both sides compute in
    float64 (so 'torch in the input's dtype' agrees with the oracle), and with
    ``flip`` the 'lamina' side takes the other branch at that element, as a
    float32 pre-activation rounded across 0 would: everything else equal."""
    import torch.nn.functional as TF

    def make_input(shape, dtype):
        x = torch.randn(shape, dtype=torch.float64)
        x[0, 0, 0] = x[0, :2].flatten()[1:].mean()  # group 0 of sample 0: channels 0 and 1
        return x.to(dtype)

    def pre_activation(x, w, b):
        return TF.group_norm(x.double(), 2, w.double(), b.double())

    def oracle(x, w, b, act="relu"):
        return TF.relu(pre_activation(x, w, b)).to(x.dtype)

    def lamina_side(x, w, b, act="relu"):
        z = pre_activation(x, w, b)
        positive = z > 0
        if flip:
            positive = positive.clone()
            positive[0, 0, 0] = not bool(positive[0, 0, 0])
            shift = torch.zeros_like(z)
            shift[0, 0, 0] = 1e-12 - float(z[0, 0, 0])  # z there becomes +1e-12, its gradient unchanged
            z = z + shift
        return torch.where(positive, z, 0.0).to(x.dtype)

    return OpCase("kink", lamina_side, oracle, [(2, 4, 10)], [(2, 4, 10)], kwargs=[{"act": "relu"}],
                  params=lambda shape, dtype: [torch.ones(shape[1], dtype=dtype), torch.zeros(shape[1], dtype=dtype)],
                  reduce_len=lambda shape, kw: shape[0] * shape[2], make_input=make_input)


@pytest.mark.parametrize("flip", [False, True])
def test_check_takes_lamina_branch_at_a_kink(flip):
    # a flipped relu branch after a group norm moves the gradient of the whole
    # group (its mean gradient changes): too many elements for the kink rule;
    # the oracle then takes lamina's branch and the row passes on everything else
    rtol, atol = correctness.tolerances()[torch.float32]
    row = correctness._compare(_kink_case(flip), (2, 4, 10), {"act": "relu"}, torch.float32, "contiguous", rtol, atol, "cpu")
    assert row["ok"], row
    if flip:
        assert row["grad_elements_missed"] > 1 and row["worst_with_lamina_kink"] <= 1.0
    # and the oracle alone, told the opposite branch, sees the difference
    case = _kink_case(True)
    x = correctness.make_input(case, (2, 4, 10), torch.float64, "contiguous", "cpu")
    params = correctness.make_params(case, (2, 4, 10), torch.float64, "cpu")
    y, grads, dy = correctness.run(case, case.lamina, x, params, {})
    _, plain, _ = correctness.run(case, case.torch, x, params, {}, dy)
    with correctness.KinkFromOutput(y > 0):
        _, kinked, _ = correctness.run(case, case.torch, x, params, {}, dy)
    assert not torch.allclose(plain[0], grads[0]) and torch.allclose(kinked[0], grads[0], rtol=1e-9, atol=1e-12)


def test_in_place_bn_act_oracle_at_the_input_its_output_stands_for():
    # In-Place ABN in bfloat16, evaluation: dweight from the rounded output
    # misses the oracle at x (a sum over 4096 rows of the rounding / weight);
    # against the oracle at the input y stands for, it is within tolerance
    from lamina import optable

    case = next(c for c in optable.OPS if c.name == "batch_norm_act_inplace")
    kwargs = {"act": "identity", "training": False}
    rtol, atol = correctness.tolerances()[torch.bfloat16]
    row = correctness._compare(case, (4096, 1024), kwargs, torch.bfloat16, "contiguous", rtol, atol, "cpu")
    assert row["worst"] > 1.0 and row["where"] == "grad 1"
    assert row["ok"] and row["worst_from_output"] <= 1.0, row
    # the input it finds is mapped by the float64 oracle onto y exactly
    for kw in (kwargs, {"act": "leaky_relu", "negative_slope": 0.1, "training": False}):
        x = torch.randn(6, 5, 3, dtype=torch.float64)
        w, b = optable._fused_channel_params(x.shape, torch.float64)
        y = case.torch(x, w, b, **kw)
        torch.testing.assert_close(case.input_from_output(y, x, w, b, **kw), x, rtol=1e-12, atol=1e-12)
    assert case.input_from_output(y, x, w, b, act="identity", training=True) is None


# --- the report from made-up results -------------------------------------------------------

def _fake_records(cells):
    recs = [{"type": "meta", "card": "Fake H100", "copy_gbps": 3000.0, "torch": "2.11", "triton": "3.6", "lamina": "0.1.0",
             "liger": "0.8.5", "date": "2026-01-01T00:00:00+00:00"}]
    a, b = cells
    recs += [
        {"type": "cell", "item": "bench:g", "cell": a.id, "lamina_impl": "",
         "impls": {"eager": {"ms": 2.0}, "lamina": {"ms": 1.0}, "liger": {"ms": 1.5}}, "match": {"ok": True, "worst": 0.1}},
        {"type": "cell", "item": "bench:g", "cell": b.id, "lamina_impl": "",
         "impls": {"eager": {"ms": 2.0}, "lamina": {"error": "AttributeError: nope"}}, "match": None},
        {"type": "done", "item": "bench:g", "error": None},
        {"type": "compile", "item": "compile:g", "cell": a.id, "ms": 4.0, "compile_s": 3.0},
        {"type": "done", "item": "compile:g", "error": "timed out after 180 s"},
        {"type": "check", "item": "check:relu:0:float32", "case": "relu", "kwargs": "{}", "shape": [4096, 1024],
         "dtype": "float32", "layout": "contiguous", "ok": True, "worst": 0.0, "deterministic": True, "error": None},
        {"type": "check", "item": "check:relu:0:float16", "case": "relu", "kwargs": "{}", "shape": [4096, 1024],
         "dtype": "float16", "layout": "strided", "ok": False, "worst": float("inf"), "where": "grad 0", "deterministic": False, "error": None},
    ]
    return recs


def test_report(tmp_path):
    a = Cell("layer_norm", "layer_norm", "normalization", (32768, 4096), "bfloat16", "contiguous", "fwdbwd")
    b = Cell("layer_norm", "layer_norm", "normalization", (32768, 4096), "bfloat16", "contiguous", "fwd")
    records = _fake_records([a, b])
    item_of = {a.id: ["bench:g", "compile:g"], b.id: ["bench:g", "compile:g"]}
    rows = report.assemble([a, b], records, 3000.0, item_of)
    ra, rb = rows
    nbytes = traffic.cell_bytes("layer_norm", (32768, 4096), {}, "bfloat16", "fwdbwd")
    assert ra["bytes"] == nbytes
    assert ra["lamina"]["gbps"] == pytest.approx(nbytes / 1e-3 / 1e9)
    assert ra["lamina"]["frac"] == pytest.approx(ra["lamina"]["gbps"] / 3000.0)
    assert ra["speedup"] == {"eager": 2.0, "compile": 4.0, "liger": 1.5}
    assert ra["compile"]["compile_s"] == 3.0
    assert rb["lamina"] == {"error": "AttributeError: nope"} and rb["speedup"]["eager"] is None
    assert rb["compile"] == {"error": "timed out after 180 s"}  # the compile item died before b's record

    table = report.format_table(rows, {"card": "Fake H100", "copy_gbps": 3000.0})
    assert "Fake H100" in table and "copy 3000 GB/s" in table
    line_a = next(line for line in table.splitlines() if line.startswith("layer_norm") and "fwdbwd" in line)
    assert "2.00x" in line_a and "4.00x" in line_a and "1.50x" in line_a and " yes " in line_a
    line_b = next(line for line in table.splitlines() if line.startswith("layer_norm") and " fwd " in line)
    assert "ERR" in line_b
    assert "AttributeError: nope" in table

    checks = report.check_rows(records)
    text = report.format_check_table(checks)
    assert "correctness: 1/2 passed" in text and "FAIL relu" in text and "ok 1/1" in text

    path = tmp_path / "bench.json"
    report.write_json(str(path), {"cells": rows, "checks": checks})
    loaded = json.loads(path.read_text())  # strict JSON: no NaN or Infinity
    assert loaded["checks"][1]["worst"] == "inf"
    png = tmp_path / "bench.png"
    report.draw_chart(str(png), rows, {"card": "Fake H100", "copy_gbps": 3000.0})
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_read_records_skips_a_cut_line(tmp_path):
    path = str(tmp_path / "r.jsonl")
    gpu.append_record(path, {"type": "done", "item": "a"})
    with open(path, "a") as f:
        f.write('{"type": "done", "item": "b"')  # a kill in the middle of a write
    gpu.append_record(path, {"type": "done", "item": "c"})
    assert gpu.done_items(gpu.read_records(path)) == {"a", "c"}


# --- the whole harness with a fake timer --------------------------------------------------

def test_harness_end_to_end_in_process(tmp_path):
    out = tmp_path / "out"
    code = gpu.main(["--smoke", "--in-process", "--no-compile", "--check", "--ops", "relu", "--out", str(out)])
    assert code == 0
    bench = json.loads((out / "bench.json").read_text())
    assert len(bench["cells"]) == 4 and all(c["lamina"]["ms"] == 1.0 for c in bench["cells"])
    assert all(c["match"]["ok"] for c in bench["cells"])
    check = json.loads((out / "check.json").read_text())
    assert check["rows"] and all(r["ok"] for r in check["rows"])
    assert sorted(os.listdir(out)) == ["bench.json", "bench.png", "bench.txt", "check.json", "results.jsonl"]


def test_a_dead_worker_is_replaced(tmp_path):
    """The worker dies on one item (as after an illegal memory access); the
    supervisor marks that item failed and a fresh worker does the rest."""
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=SRC, LAMINA_BENCH_DIE_AT="bench:relu-4096-fp32-contig")
    proc = subprocess.run(
        [sys.executable, "-m", "lamina.bench.gpu", "--smoke", "--no-compile", "--ops", "relu", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    cells = {c["id"]: c for c in json.loads((out / "bench.json").read_text())["cells"]}
    assert "worker exited with code 7" in cells["relu-4096-fp32-contig-fwd"]["error"]
    assert cells["relu-4096-bf16-contig-fwdbwd"]["lamina"]["ms"] == 1.0  # done by the second worker


def test_a_broken_cuda_context_ends_the_worker(tmp_path, monkeypatch):
    """When an error leaves CUDA unusable, the worker records the item and exits
    with the code that asks the supervisor for a fresh worker."""
    monkeypatch.setattr(correctness, "cuda_healthy", lambda device: False)
    monkeypatch.setattr(anchors, "lamina_fn", lambda op, kw: (_ for _ in ()).throw(RuntimeError("illegal memory access")))
    args = gpu.parse_args(["--smoke", "--no-compile", "--ops", "relu", "--dtype", "fp32", "--out", str(tmp_path)])
    path = gpu.file_names(args)["results"]
    code = gpu.Worker(args, gpu.build_plan(args), path).run()
    assert code == gpu.EXIT_CUDA_BROKEN
    done = [r for r in gpu.read_records(path) if r["type"] == "done"]
    assert len(done) == 1 and "CUDA context broken" in done[0]["error"] and "illegal memory access" in done[0]["error"]


def test_every_cell_runs_with_torch_standing_in_for_missing_lamina_ops(tmp_path, monkeypatch):
    """lamina's ops are called with torch.nn.functional's signatures; where an
    op is not written yet, torch's stands in, so every cell's code path (inputs,
    parameters, forward, backward, comparison with eager) runs here."""
    import torch.nn.functional as TF

    import lamina.functional as F

    stand_ins = {name: getattr(TF, name) for name in (
        "leaky_relu", "prelu", "sigmoid", "tanh", "gelu", "silu", "dropout", "layer_norm", "rms_norm", "batch_norm",
        "group_norm", "instance_norm", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d")}
    stand_ins["swish"] = lambda x, beta=1.0: x * torch.sigmoid(beta * x)
    for name, fn in stand_ins.items():
        if not hasattr(F, name):
            monkeypatch.setattr(F, name, fn, raising=False)
    out = tmp_path / "out"
    gpu.main(["--smoke", "--in-process", "--no-compile", "--out", str(out)])
    cells = json.loads((out / "bench.json").read_text())["cells"]
    assert len(cells) == 124 + 16  # the standard matrix and the fused cells
    for c in cells:
        assert c["error"] is None and c["lamina"]["ms"] == 1.0 and c["eager"]["ms"] == 1.0, c["id"]
        if c["op"] != "dropout":  # random: its check is statistical (dropout_add's reads the mask off y - residual)
            assert c["match"]["ok"], (c["id"], c["match"])
    assert {c["lamina_impl"] for c in cells if c["op"] in ("batch_norm_relu", "group_norm_silu")} <= {"composed", "fused:batch_norm_act", "fused:group_norm_silu"}


def test_compare_tolerates_a_few_kink_flips_only():
    """batch_norm2d+relu against eager: a gradient element or two in a
    million may take the other side of relu's kink (the op table's rule);
    more misses, or a wrong forward, still fail."""
    cell = next(c for c in shapes.standard_matrix() if c.op == "batch_norm_relu" and c.dtype == "float32"
                and c.mode == "fwdbwd")
    torch.manual_seed(0)
    n = 2 * 10**6
    x0, y, dx, dy = torch.randn(n), torch.randn(n).relu(), torch.randn(n), torch.randn(n)
    ok = gpu.compare(cell, x0, (y, [dx]), (y, [dx]), dy)
    assert ok["fwdbwd"]["ok"] and "grad_elements_missed" not in ok["fwdbwd"]
    two_flips = dx.clone()
    two_flips[[5, 77]] += 1.0
    ok = gpu.compare(cell, x0, (y, [dx]), (y, [two_flips]), dy)
    assert ok["fwdbwd"]["ok"] and ok["fwdbwd"]["grad_elements_missed"] == 2
    many = dx.clone()
    many[:10] += 1.0
    assert not gpu.compare(cell, x0, (y, [dx]), (y, [many]), dy)["fwdbwd"]["ok"]
    assert not gpu.compare(cell, x0, (y, [dx]), (y * 1.1, [two_flips]), dy)["fwdbwd"]["ok"]
