"""torch.fx's symbolic trace keeps lamina's modules as leaves, as it does
torch.nn's: a traced model with lamina layers has one call_module node per
layer and computes what the model computes."""

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
