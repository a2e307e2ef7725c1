"""Swap the torch.nn layers of an existing model for lamina's, in place.

lamina's modules subclass PyTorch's and add no state of their own, so a
``torch.nn.BatchNorm2d`` becomes a ``lamina.nn.BatchNorm2d`` by changing its
class: parameters, buffers, hooks, ``state_dict`` keys and the module's
identity stay as they were, and checkpoints load either way. Only exact
instances of the torch classes are swapped; a user's subclass (which may
change ``forward``) is left alone and listed in the report. A few activation
modules of other libraries with the same math (Hugging Face's tanh-GELU, for
one) are replaced by the lamina module that computes it.

    report = lamina.patch(model)
    print(report)
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch

from . import nn as lnn

# torch.nn class names whose lamina twin has the same name in lamina.nn.
SUPPORTED = (
    "BatchNorm1d", "BatchNorm2d", "SyncBatchNorm", "LayerNorm", "RMSNorm", "GroupNorm",
    "InstanceNorm1d", "InstanceNorm2d",
    "ReLU", "LeakyReLU", "PReLU", "Sigmoid", "Tanh", "GELU", "SiLU",
    "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d",
    "Dropout",
)

# Activation modules of other libraries, by class name, and the lamina module
# with the same math. Matched by name so lamina imports none of them.
FOREIGN = {
    "NewGELUActivation": lambda m: lnn.GELU(approximate="tanh"),  # transformers (GPT-2)
    "GELUTanh": lambda m: lnn.GELU(approximate="tanh"),
    "PytorchGELUTanh": lambda m: lnn.GELU(approximate="tanh"),
    "GELUActivation": lambda m: lnn.GELU(),
    "SiLUActivation": lambda m: lnn.SiLU(),
}


@dataclass
class PatchReport:
    """What :func:`patch` did: counts by layer type."""

    replaced: Counter = field(default_factory=Counter)  # "BatchNorm2d" -> n
    already: Counter = field(default_factory=Counter)  # lamina layers found in place
    skipped: Counter = field(default_factory=Counter)  # subclasses of supported types, left alone

    @property
    def total(self) -> int:
        return sum(self.replaced.values())

    def __str__(self) -> str:
        lines = [f"lamina.patch: replaced {self.total} layer(s)"]
        for title, counts in (("replaced", self.replaced), ("already lamina", self.already), ("left alone (subclasses)", self.skipped)):
            if counts:
                lines.append(f"  {title}: " + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())))
        return "\n".join(lines)


def _lamina_class(name: str):
    return getattr(lnn, name, None)


def patch(model: torch.nn.Module, include=None, exclude=()) -> PatchReport:
    """Replace, in place, the torch.nn layers of ``model`` by lamina's.

    Args:
        model: any ``torch.nn.Module``; it is modified in place and keeps its
            parameters, buffers and state_dict keys.
        include: layer class names to replace (default: every supported one,
            :data:`SUPPORTED` and the foreign activations in :data:`FOREIGN`).
        exclude: layer class names to leave alone.

    Returns:
        a :class:`PatchReport`. Patching twice is harmless: the second call
        finds lamina layers already in place and replaces nothing.
    """
    wanted = set(include) if include is not None else set(SUPPORTED) | set(FOREIGN)
    unknown = wanted - set(SUPPORTED) - set(FOREIGN)
    if unknown:
        raise ValueError(f"include: unsupported layer types {sorted(unknown)}; supported: {list(SUPPORTED) + list(FOREIGN)}")
    wanted -= set(exclude)
    report = PatchReport()
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            _patch_one(parent, child_name, child, wanted, report)
    if not list(model.children()):  # the model is itself one layer
        name = type(model).__name__
        cls = _lamina_class(name)
        if name in wanted and cls is not None and type(model) is getattr(torch.nn, name, None):
            model.__class__ = cls
            report.replaced[name] += 1
    return report


def _patch_one(parent, child_name, child, wanted, report):
    cls_name = type(child).__name__
    if type(child).__module__.startswith("lamina."):
        report.already[cls_name] += 1
        return
    if cls_name in FOREIGN and cls_name in wanted and type(child).__module__.split(".")[0] != "torch":
        setattr(parent, child_name, FOREIGN[cls_name](child))
        report.replaced[cls_name] += 1
        return
    for name in SUPPORTED:
        torch_cls = getattr(torch.nn, name, None)
        if torch_cls is None or not isinstance(child, torch_cls):
            continue
        lamina_cls = _lamina_class(name)
        if type(child) is torch_cls and name in wanted and lamina_cls is not None:
            child.__class__ = lamina_cls
            report.replaced[name] += 1
        elif type(child) is not torch_cls:
            report.skipped[cls_name] += 1
        return
