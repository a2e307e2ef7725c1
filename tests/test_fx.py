"""torch.fx's symbolic trace keeps lamina's modules as leaves, as it does
torch.nn's: a traced model with lamina layers has one call_module node per
layer and computes what the model computes. Traced as the root, a lamina
module gives its PyTorch form."""

import torch
import torch.fx

import lamina


class _Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = lamina.nn.BatchNormAct2d(8)
        self.pool = lamina.nn.MaxPool2d(2)
        self.gap = lamina.nn.AdaptiveAvgPool2d(1)
        self.norm = lamina.nn.AddLayerNorm(8)
        self.drop = lamina.nn.Dropout(0.5)

    def forward(self, x):
        h = self.gap(self.pool(self.bn(self.conv(x)))).flatten(1)
        return self.drop(self.norm(h, torch.relu(h)))


def test_symbolic_trace_keeps_lamina_modules_as_leaves():
    model = _Block()
    gm = torch.fx.symbolic_trace(model)
    called = [n.target for n in gm.graph.nodes if n.op == "call_module"]
    assert called == ["conv", "bn", "pool", "gap", "norm", "drop"]
    x = torch.randn(2, 3, 8, 8)
    model.train()
    torch.manual_seed(0)
    want = model(x)
    torch.manual_seed(0)
    torch.testing.assert_close(gm(x), want)


def test_a_lamina_module_traced_as_the_root_is_its_pytorch_form():
    """A lamina module is no leaf of itself: traced as the root it gives
    the graph of torch.nn's module of the same name (PyTorch's ops), which
    computes what the module computes."""
    x = torch.randn(2, 3, 6, 6)
    for module in (lamina.nn.ReLU(), lamina.nn.GELU("tanh"), lamina.nn.Swish(1.5), lamina.nn.LayerNorm(6),
                   lamina.nn.RMSNorm(6), lamina.nn.GroupNormAct(1, 3), lamina.nn.MaxPool2d(2, return_indices=True),
                   lamina.nn.AdaptiveAvgPool2d(2), lamina.nn.Dropout(0.5).eval()):
        gm = torch.fx.symbolic_trace(module)
        assert not [n for n in gm.graph.nodes if n.op == "call_module"]
        got, want = gm(x), module(x)
        for a, b in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
