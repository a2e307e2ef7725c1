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
