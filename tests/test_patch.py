"""lamina.patch on small CPU models: every supported layer replaced, state_dict
unchanged in both directions, outputs and gradients equal to the torch model."""

import copy

import torch
from torch import nn

import lamina


def small_cnn():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.SiLU(),
        nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.0),
        nn.Linear(8, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 4),
    )


class NotPatched(nn.ReLU):
    """A user's subclass: its forward may differ, so patch leaves it alone."""


def test_patch_replaces_every_supported_layer_and_matches_torch():
    torch.manual_seed(0)
    model = small_cnn().double()
    patched = copy.deepcopy(model)
    report = lamina.patch(patched)
    assert report.total == 10, str(report)
    for m in patched.modules():
        if type(m).__name__ in lamina.patch_module.SUPPORTED:
            assert type(m).__module__ == "lamina.nn", type(m)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    y_ref, y = model(x), patched(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-12)
    y_ref.sum().backward()
    y.sum().backward()
    for (name, p_ref), (_, p) in zip(model.named_parameters(), patched.named_parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-9, atol=1e-11, msg=name)
    for (name, b_ref), (_, b) in zip(model.named_buffers(), patched.named_buffers()):
        torch.testing.assert_close(b, b_ref, rtol=1e-10, atol=1e-12, msg=name)


def test_state_dict_loads_both_ways_and_patching_twice_is_harmless():
    torch.manual_seed(0)
    model = small_cnn()
    patched = copy.deepcopy(model)
    lamina.patch(patched)
    assert list(patched.state_dict()) == list(model.state_dict())
    fresh = small_cnn()
    fresh.load_state_dict(patched.state_dict())
    patched.load_state_dict(model.state_dict())
    again = lamina.patch(patched)
    assert again.total == 0 and sum(again.already.values()) == 10


def test_include_exclude_and_subclasses():
    model = nn.Sequential(nn.BatchNorm1d(4), nn.ReLU(), NotPatched(), nn.Dropout(0.1))
    report = lamina.patch(model, exclude=["Dropout"])
    assert type(model[0]) is lamina.nn.BatchNorm1d and type(model[1]) is lamina.nn.ReLU
    assert type(model[2]) is NotPatched and report.skipped["NotPatched"] == 1
    assert type(model[3]) is nn.Dropout
    try:
        lamina.patch(model, include=["Conv2d"])
    except ValueError as e:
        assert "Conv2d" in str(e)
    else:
        raise AssertionError("include of an unsupported type must raise")


# --- fuse=True: norm + activation pairs ------------------------------------------

import pytest  # noqa: E402

_ACTS = {
    "relu": lambda z, m: lamina.functional.relu(z),
    "leaky_relu": lambda z, m: lamina.functional.leaky_relu(z, m.negative_slope),
    "silu": lambda z, m: lamina.functional.silu(z),
    "gelu": lambda z, m: lamina.functional.gelu(z, approximate=m.approximate),
    "identity": lambda z, m: z,
}


class StandInBatchNormAct2d(lamina.nn.BatchNorm2d):
    """The composition the fused layer computes, with lamina.nn.BatchNormAct2d's
    constructor (torch's BatchNorm2d arguments + act, inplace, negative_slope;
    'gelu' is the exact GELU): tests the fusion mechanics whether or not
    lamina.nn has its fused class yet."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 act="relu", inplace=False, device=None, dtype=None, negative_slope=0.01):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
        self.act, self.inplace, self.negative_slope, self.approximate = act, inplace, negative_slope, "none"

    def forward(self, x):
        return _ACTS[self.act](super().forward(x), self)


class StandInGroupNormAct(lamina.nn.GroupNorm):
    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, act="silu", device=None, dtype=None):
        super().__init__(num_groups, num_channels, eps, affine, device=device, dtype=dtype)
        self.act = act

    def forward(self, x):
        return _ACTS[self.act](super().forward(x), self)


class ExplicitForward(nn.Module):
    """BN then ReLU called from forward, not a Sequential: fused through the
    traced graph, and the ReLU, called only on the norm, becomes an Identity."""

    def __init__(self):
        super().__init__()
        self.bn, self.relu = nn.BatchNorm2d(4), nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn(x)) + x


def fusable_cnn():
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),                      # fused
        nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.LeakyReLU(0.2, inplace=True),  # fused
        nn.Sequential(nn.BatchNorm2d(4), nn.GELU()),                                      # fused (nested)
        nn.BatchNorm2d(4), nn.Identity(),                                                 # fused
        nn.BatchNorm2d(4), nn.Sigmoid(),                                                  # not fusable
        nn.GroupNorm(2, 4), nn.SiLU(),                                                    # fused
        nn.GroupNorm(2, 4), nn.ReLU(),                                                    # GroupNorm + ReLU: not fused
        nn.BatchNorm2d(4), nn.GELU(approximate="tanh"),                                   # no tanh GELU: not fused
        ExplicitForward(),                                                                # fused (traced)
        nn.BatchNorm2d(4),                                                                # last: nothing follows
    )


FUSED_PAIRS = [  # outer Sequential first, then the nested one
    "1+2 -> BatchNormAct2d(relu)", "4+5 -> BatchNormAct2d(leaky_relu)",
    "7+8 -> BatchNormAct2d(identity)", "11+12 -> GroupNormAct(silu)", "6.0+6.1 -> BatchNormAct2d(gelu)",
    "17.bn+17.relu -> BatchNormAct2d(relu)",  # then the pairs seen in traced forwards
]


def _check_fused_model(model, patched, report):
    assert report.fused == FUSED_PAIRS, str(report)
    assert "fused 6 pair(s)" in str(report)
    assert list(patched.state_dict()) == list(model.state_dict())
    for i in (2, 5, 8, 12):
        assert type(patched[i]) is nn.Identity
    assert type(patched[6][1]) is nn.Identity
    assert type(patched[10]) is lamina.nn.Sigmoid and type(patched[14]) is lamina.nn.ReLU
    assert type(patched[15]) is lamina.nn.BatchNorm2d and type(patched[16]) is lamina.nn.GELU
    assert type(patched[17].bn) is type(patched[1]) and type(patched[17].relu) is nn.Identity
    _assert_same_training(model, patched, (3, 3, 6, 6), steps=1)
    # checkpoints load both ways
    fresh = fusable_cnn().double()
    fresh.load_state_dict(patched.state_dict())
    patched.load_state_dict(model.state_dict())


def test_fuse_with_stand_in_fused_classes(monkeypatch):
    monkeypatch.setattr(lamina.nn, "BatchNormAct2d", StandInBatchNormAct2d, raising=False)
    monkeypatch.setattr(lamina.nn, "GroupNormAct", StandInGroupNormAct, raising=False)
    torch.manual_seed(0)
    model = fusable_cnn().double()
    patched = copy.deepcopy(model)
    weight = patched[1].weight
    report = lamina.patch(patched, fuse=True)
    # the fused layer holds the norm's very parameter objects (an optimizer keeps them)
    assert patched[1].weight is weight and isinstance(patched[1], StandInBatchNormAct2d)
    assert patched[4].negative_slope == 0.2 and patched[6][0].act == "gelu"
    _check_fused_model(model, patched, report)


def test_fuse_skipped_when_fused_classes_are_absent_or_unfit(monkeypatch):
    monkeypatch.delattr(lamina.nn, "BatchNormAct2d", raising=False)
    monkeypatch.delattr(lamina.nn, "GroupNormAct", raising=False)
    model = fusable_cnn()
    report = lamina.patch(model, fuse=True)
    assert report.fused == [] and type(model[2]) is lamina.nn.ReLU

    class NoActArgument(lamina.nn.BatchNorm2d):  # a constructor patch cannot drive
        pass

    monkeypatch.setattr(lamina.nn, "BatchNormAct2d", NoActArgument, raising=False)
    model = fusable_cnn()
    assert lamina.patch(model, fuse=True).fused == []
    assert type(model[1]) is lamina.nn.BatchNorm2d


@pytest.mark.skipif(not (hasattr(lamina.nn, "BatchNormAct2d") and hasattr(lamina.nn, "GroupNormAct")),
                    reason="lamina.nn has no BatchNormAct2d / GroupNormAct yet")
def test_fuse_with_lamina_fused_classes():
    torch.manual_seed(0)
    model = fusable_cnn().double()
    patched = copy.deepcopy(model)
    report = lamina.patch(patched, fuse=True)
    assert type(patched[1]) is lamina.nn.BatchNormAct2d and type(patched[11]) is lamina.nn.GroupNormAct
    _check_fused_model(model, patched, report)


# --- fuse=True through traced forwards: shared activation modules ------------------

class Bottleneck(nn.Module):
    """torchvision's ResNet block in small: one ReLU module (in place) after
    two norms and after the residual sum."""

    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv3, self.bn3 = nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + x)


class SharedSiLU(nn.Module):
    """A diffusion-style block: one SiLU module after two group norms, and
    (with ``on_input``) also on the block's input, which no norm feeds."""

    def __init__(self, c, on_input=False):
        super().__init__()
        self.norm1, self.norm2 = nn.GroupNorm(2, c), nn.GroupNorm(2, c)
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.act, self.on_input = nn.SiLU(), on_input

    def forward(self, x):
        h = self.act(self.norm2(self.conv(self.act(self.norm1(x)))))
        return h + (self.act(x) if self.on_input else x)


def _assert_same_training(model, patched, shape=(2, 4, 5, 5), steps=2):
    """Outputs, parameter gradients (accumulated over the steps) and buffers
    of ``patched`` equal ``model``'s in float64, training and evaluating."""
    for train in (True, False):
        model.train(train)
        patched.train(train)
        for _ in range(steps):
            x = torch.randn(shape, dtype=torch.float64)
            y_ref, y = model(x), patched(x)
            torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-12)
            y_ref.square().sum().backward()
            y.square().sum().backward()
        for (name, p_ref), (_, p) in zip(model.named_parameters(), patched.named_parameters()):
            torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-9, atol=1e-11, msg=name)
        for (name, b_ref), (_, b) in zip(model.named_buffers(), patched.named_buffers()):
            torch.testing.assert_close(b, b_ref, rtol=1e-10, atol=1e-12, msg=name)


def test_fuse_traced_bottleneck_keeps_the_shared_relu_and_skips_it(monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                          Bottleneck(4), Bottleneck(4)).double()
    patched = copy.deepcopy(model)
    report = lamina.patch(patched, fuse=True)
    assert report.fused == ["1+2 -> BatchNormAct2d(relu)", "3.bn1+3.relu -> BatchNormAct2d(relu)",
                            "3.bn2+3.relu -> BatchNormAct2d(relu)", "4.bn1+4.relu -> BatchNormAct2d(relu)",
                            "4.bn2+4.relu -> BatchNormAct2d(relu)"], str(report)
    for block in (patched[3], patched[4]):
        assert type(block.bn1) is lamina.nn.BatchNormAct2d and type(block.bn2) is lamina.nn.BatchNormAct2d
        assert type(block.bn3) is lamina.nn.BatchNorm2d and type(block.relu) is lamina.nn.ReLU
    assert list(patched.state_dict()) == list(model.state_dict())
    _assert_same_training(model, patched)
    # the ReLU after each fused norm returns its input: one in-place relu a
    # block runs (after the residual sum), not three
    calls = []
    original = lamina.functional._activation_in_place
    monkeypatch.setattr(lamina.functional, "_activation_in_place",
                        lambda x, name, param=0.0: calls.append(name) or original(x, name, param))
    patched(torch.randn(2, 4, 5, 5, dtype=torch.float64))
    assert calls == ["relu", "relu"]


def test_fused_bottleneck_trains_like_eager_over_sgd_steps():
    # the relu marks live across optimizer steps (new tensors every step,
    # parameters changed in place): ten SGD steps with momentum of eager,
    # lamina.patch and lamina.patch(fuse=True) give the same losses in float64
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                          Bottleneck(4), Bottleneck(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)).double()
    plain, fused = copy.deepcopy(model), copy.deepcopy(model)
    lamina.patch(plain)
    assert len(lamina.patch(fused, fuse=True).fused) == 5
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(6, 3, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 5, (6,), generator=g))
               for _ in range(3)]
    losses = {}
    for name, m in (("eager", model), ("plain", plain), ("fused", fused)):
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        losses[name] = []
        for step in range(10):
            x, t = batches[step % 3]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(m(x), t)
            loss.backward()
            opt.step()
            losses[name].append(loss.item())
    torch.testing.assert_close(losses["plain"], losses["eager"], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(losses["fused"], losses["eager"], rtol=1e-10, atol=1e-12)


def test_fused_relu_output_under_inference_mode():
    # inference tensors keep no version counter: their outputs go unmarked
    # and the in-place ReLU after them runs as usual
    norm, relu = lamina.nn.BatchNormAct2d(3).eval(), lamina.nn.ReLU(inplace=True)
    group = lamina.nn.GroupNormAct(1, 3, act="relu")
    x = torch.randn(2, 3, 4, 4)
    with torch.inference_mode():
        for layer in (norm, group):
            y = layer(x)
            expected = y.clone()
            torch.testing.assert_close(relu(y), expected)


def test_relu_mark_is_voided_by_an_inplace_change():
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    y = lamina.functional.batch_norm_act(x, None, None, training=True, act="relu")
    assert lamina.functional.relu(y, inplace=True) is y
    with torch.no_grad():  # a marked output turned into a leaf that requires grad: refused, as torch does
        leaf = lamina.functional.batch_norm_act(x, None, None, training=True, act="relu").requires_grad_()
    with pytest.raises(RuntimeError, match="leaf Variable"):
        lamina.functional.relu(leaf, inplace=True)
    expected = torch.relu(y - 0.5)
    y.sub_(0.5)  # y's version moves on: the mark no longer holds
    torch.testing.assert_close(lamina.functional.relu(y, inplace=True), expected)
    assert (y >= 0).all()


@pytest.mark.parametrize("on_input", [False, True])
def test_fuse_traced_shared_silu_all_or_nothing(on_input):
    torch.manual_seed(0)
    model = nn.Sequential(SharedSiLU(4, on_input), nn.Conv2d(4, 4, 1)).double()
    patched = copy.deepcopy(model)
    report = lamina.patch(patched, fuse=True)
    if on_input:  # SiLU is not idempotent: a module also used elsewhere keeps its norms unfused
        assert report.fused == [] and type(patched[0].act) is lamina.nn.SiLU
    else:
        assert report.fused == ["0.norm1+0.act -> GroupNormAct(silu)", "0.norm2+0.act -> GroupNormAct(silu)"]
        assert type(patched[0].act) is nn.Identity and type(patched[0].norm1) is lamina.nn.GroupNormAct
    _assert_same_training(model, patched)
