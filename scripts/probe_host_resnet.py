"""Host time of a patched ResNet-50 training step, on a CPU, without a GPU.

On a card a patched ResNet-50 step is bound by host time (bench/NOTES-perf.md).
This measures that host time where there is no card: lamina's Triton
kernels are replaced by stubs that count launches and do nothing, so a
lamina layer costs only its Python (plans, checks, allocations, autograd);
the model is torchvision's ResNet-50 layout (Bottlenecks [3, 4, 6, 3], one
shared in-place ReLU a block) at a small width and a 32x32 input, so that
the convolutions are cheap. Prints the step time (forward + backward) of
torch eager, lamina.patch and lamina.patch(fuse=True): lamina's part is the
patched step minus eager's (eager's own batch norm and ReLU compute on the
CPU is small at this size). The values are garbage (no kernel runs); only
the time means something.

    PYTHONPATH=src python scripts/probe_host_resnet.py [--profile fuse]
"""

from __future__ import annotations

import argparse
import collections
import copy
import cProfile
import os
import pstats
import sys
import time

os.environ["TRITON_INTERPRET"] = "1"  # the kernels load as interpretable functions, then are stubbed
os.environ["LAMINA_BACKEND"] = "triton"

import torch  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
import lamina  # noqa: E402
from lamina.backend import kernels  # noqa: E402

LAUNCHES = collections.Counter()


class _Stub:
    """Stands for a kernel: ``kernel[grid](...)`` counts and returns."""

    def __init__(self, name):
        self.name = name

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            LAUNCHES[self.name] += 1
        return launch


def stub_kernels():
    for family in ("activation", "normalization", "pooling", "dropout", "fused"):
        module = kernels(family)
        for name, value in list(vars(module).items()):
            if type(value).__name__ in ("InterpretedFunction", "JITFunction"):
                setattr(module, name, _Stub(name))


class Bottleneck(nn.Module):
    def __init__(self, c_in, c, stride, downsample):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c_in, c, 1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, stride, 1, bias=False), nn.BatchNorm2d(c)
        self.conv3, self.bn3 = nn.Conv2d(c, 4 * c, 1, bias=False), nn.BatchNorm2d(4 * c)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (nn.Sequential(nn.Conv2d(c_in, 4 * c, 1, stride, bias=False), nn.BatchNorm2d(4 * c))
                           if downsample else None)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet50(nn.Module):
    def __init__(self, width=8, classes=10):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width)
        self.relu, self.maxpool = nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        stages, c_in = [], width
        for i, (blocks, stride) in enumerate(zip([3, 4, 6, 3], [1, 2, 2, 2])):
            c = width * 2 ** i
            stage = []
            for j in range(blocks):
                stage.append(Bottleneck(c_in, c, stride if j == 0 else 1, j == 0))
                c_in = 4 * c
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(c_in, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=7, help="timed steps a variant (the minimum is printed)")
    ap.add_argument("--profile", choices=("patch", "fuse"), help="also print a cProfile of that variant's step")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    stub_kernels()
    torch.manual_seed(0)
    eager = ResNet50().to(memory_format=torch.channels_last)
    patched, fused = copy.deepcopy(eager), copy.deepcopy(eager)
    lamina.patch(patched)
    lamina.patch(fused, fuse=True)
    x = torch.randn(2, 3, 32, 32).to(memory_format=torch.channels_last)
    target = torch.randint(0, 10, (2,))

    def step(model):
        nn.functional.cross_entropy(model(x), target).backward()

    models = {"eager": eager, "patch": patched, "fuse": fused}
    for name, model in models.items():
        for _ in range(3):
            step(model)
        LAUNCHES.clear()
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            step(model)
            times.append(time.perf_counter() - start)
        print(f"{name:6s} step {min(times) * 1e3:7.2f} ms   launches a step {sum(LAUNCHES.values()) // args.repeats}")
    if args.profile:
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(10):
            step(models[args.profile])
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(40)


if __name__ == "__main__":
    main()
