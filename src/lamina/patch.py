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

With ``fuse=True``, a batch norm directly followed by its activation
(``BatchNorm2d`` then ``ReLU``/``LeakyReLU``/``SiLU``/``GELU``/``Identity``;
``GroupNorm`` then ``SiLU``) becomes one fused lamina layer
(``lamina.nn.BatchNormAct2d`` / ``lamina.nn.GroupNormAct``) in the norm's
place, holding the norm's very parameters and buffers (same state_dict
keys), and an ``nn.Identity`` in the activation's place (which had no state).
"Directly followed" is read from an ``nn.Sequential``'s order, or from a
torch.fx trace of the forward (the norm's output goes into the activation
module and nowhere else; modules whose forward does not trace are looked
into one level down). An activation module shared with other call sites
stays: for ReLU, whose second application changes nothing, the norms are
fused anyway and lamina's in-place ReLU skips their marked outputs
(torchvision's ResNet); for the others the pair is left unfused. Tracing
runs the forwards of the model's own (non-torch.nn) modules on fx proxies.
Fusion is skipped when lamina.nn lacks the fused class.
"""

from __future__ import annotations

import inspect
import warnings
from collections import Counter, defaultdict
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
    fused: list = field(default_factory=list)  # "features.1+features.2 -> BatchNormAct2d(relu)"

    @property
    def total(self) -> int:
        return sum(self.replaced.values())

    def __str__(self) -> str:
        lines = [f"lamina.patch: replaced {self.total} layer(s)"]
        if self.fused:
            lines.append(f"  fused {len(self.fused)} pair(s): " + ", ".join(self.fused))
        for title, counts in (("replaced", self.replaced), ("already lamina", self.already), ("left alone (subclasses)", self.skipped)):
            if counts:
                lines.append(f"  {title}: " + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())))
        return "\n".join(lines)


def _lamina_class(name: str):
    return getattr(lnn, name, None)


def patch(model: torch.nn.Module, include=None, exclude=(), fuse: bool = False) -> PatchReport:
    """Replace, in place, the torch.nn layers of ``model`` by lamina's.

    Args:
        model: any ``torch.nn.Module``; it is modified in place and keeps its
            parameters, buffers and state_dict keys.
        include: layer class names to replace (default: every supported one,
            :data:`SUPPORTED` and the foreign activations in :data:`FOREIGN`).
        exclude: layer class names to leave alone.
        fuse: also fuse norm + activation pairs (an ``nn.Sequential``'s, or
            seen in a traced forward) into one lamina layer (see the module
            doc); the pairs are listed in ``report.fused``.

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
    if fuse:
        _fuse_pairs(model, report)
        _fuse_traced(model, report)
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


# --- fusion: norm + activation pairs --------------------------------------------
#
# The fused modules are built from the norm's constructor arguments plus
# ``act`` (one of FUSED_ACTS) and its options, then given the norm's own
# parameter and buffer objects, so an optimizer built before patching still
# holds them and the state_dict keys do not change.

# activation class name -> (act name, its options read from the module). An
# option is passed only when it differs from the fused layer's default, so a
# fused class without that argument still takes the default case (exact GELU).
FUSED_ACTS = {
    "ReLU": lambda m: ("relu", {}),
    "LeakyReLU": lambda m: ("leaky_relu", {"negative_slope": m.negative_slope}),
    "SiLU": lambda m: ("silu", {}),
    "GELU": lambda m: ("gelu", {} if m.approximate == "none" else {"approximate": m.approximate}),
    "Identity": lambda m: ("identity", {}),
}

# norm class name -> (fused class name in lamina.nn, activations it may absorb)
FUSIONS = {
    "BatchNorm2d": ("BatchNormAct2d", ("ReLU", "LeakyReLU", "SiLU", "GELU", "Identity")),
    "GroupNorm": ("GroupNormAct", ("SiLU",)),
}


def _is_exactly(module, name: str) -> bool:
    """``module`` is torch.nn.<name> or lamina.nn.<name> itself, not a user's subclass."""
    return type(module) in (getattr(torch.nn, name, None), getattr(lnn, name, None))


def _norm_name(module):
    """The FUSIONS key ``module`` exactly is (torch.nn's or lamina.nn's class), or None."""
    return next((n for n in FUSIONS if _is_exactly(module, n)), None)


def _fuse_norm(norm, norm_name: str, act_kind: str, act_options: dict):
    """(the fused module holding ``norm``'s state, or None where lamina.nn
    lacks the fused class or it does not fit; the fused class's name)."""
    fused_name = FUSIONS[norm_name][0]
    fused_cls = getattr(lnn, fused_name, None)
    return (None if fused_cls is None else _build_fused(fused_cls, norm, act_kind, act_options)), fused_name


def _fuse_pairs(model: torch.nn.Module, report: PatchReport) -> None:
    for path, seq in list(model.named_modules()):
        # a Sequential subclass with its own forward may not run its children in order
        if not isinstance(seq, torch.nn.Sequential) or type(seq).forward is not torch.nn.Sequential.forward:
            continue
        names = list(seq._modules)
        for first, second in zip(names, names[1:]):
            norm, act = seq._modules[first], seq._modules[second]
            norm_name = _norm_name(norm)
            if norm_name is None:
                continue
            act_name = next((n for n in FUSIONS[norm_name][1] if _is_exactly(act, n)), None)
            if act_name is None:
                continue
            act_kind, act_options = FUSED_ACTS[act_name](act)
            fused, fused_name = _fuse_norm(norm, norm_name, act_kind, act_options)
            if fused is None:
                continue
            seq._modules[first] = fused
            seq._modules[second] = torch.nn.Identity()
            prefix = f"{path}." if path else ""
            report.fused.append(f"{prefix}{first}+{prefix}{second} -> {fused_name}({act_kind})")


def _build_fused(fused_cls, norm, act_kind: str, act_options: dict):
    """The fused module holding ``norm``'s parameters and buffers, or None when
    ``fused_cls``'s constructor or state does not fit (then nothing is fused)."""
    params = inspect.signature(fused_cls.__init__).parameters
    act_arg = next((a for a in ("act", "activation") if a in params), None)
    if act_arg is None:
        return None
    norm_args = {
        "num_features": getattr(norm, "num_features", None),
        "num_groups": getattr(norm, "num_groups", None),
        "num_channels": getattr(norm, "num_channels", None),
        "eps": norm.eps,
        "momentum": getattr(norm, "momentum", None),
        "affine": norm.affine,
        "track_running_stats": getattr(norm, "track_running_stats", None),
        "bias": getattr(norm, "bias", None) is not None,
    }
    kwargs = {k: v for k, v in norm_args.items() if k in params and (v is not None or k == "momentum")}
    kwargs[act_arg] = act_kind
    for k, v in act_options.items():
        if k not in params:
            return None  # the fused class cannot express this activation's option
        kwargs[k] = v
    with torch.device("meta"):  # parameters are replaced below: allocate nothing
        try:
            fused = fused_cls(**kwargs)
        except (TypeError, ValueError):
            return None
    if fused.state_dict().keys() != norm.state_dict().keys():
        return None
    for name in norm._parameters:
        fused._parameters[name] = norm._parameters[name]
    for name in norm._buffers:
        fused._buffers[name] = norm._buffers[name]
    if any(t.is_meta for t in list(fused.parameters()) + list(fused.buffers())):
        return None  # the fused class holds state the norm has not
    fused.train(norm.training)
    return fused


# --- fusion seen through forward: torch.fx ------------------------------------------
#
# Most models call their layers from forward, not through an nn.Sequential:
# torchvision's ResNet blocks run ``out = self.relu(self.bn1(out))`` with one
# ReLU module shared by several call sites. torch.fx's symbolic trace shows
# which norm's output goes, and only goes, into an activation module.


class _Tracer(torch.fx.Tracer):
    """torch.fx's tracer, with lamina's modules as leaves too (they subclass
    torch.nn's but live in lamina.nn)."""

    def is_leaf_module(self, m, module_qualified_name):
        return type(m).__module__.startswith("lamina.") or super().is_leaf_module(m, module_qualified_name)


def _traced_graphs(module: torch.nn.Module, prefix: str = ""):
    """(prefix, graph) for ``module``'s forward; where that does not trace
    (data-dependent control flow, ...), for each child's, recursively."""
    tracer = _Tracer()
    if tracer.is_leaf_module(module, prefix):
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = tracer.trace(module)
    except Exception:  # noqa: BLE001 - untraceable forward: look one level down
        for name, child in module.named_children():
            yield from _traced_graphs(child, f"{prefix}{name}.")
        return
    yield prefix, graph


def _norm_act_calls(root, graph):
    """{norm target: act target} for the norms every call of which feeds one
    activation module of a kind their fused layer absorbs, and nothing else;
    and {module target: its call nodes}."""
    calls = defaultdict(list)
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target].append(node)
    pairs = {}
    for target, nodes in calls.items():
        norm_name = _norm_name(root.get_submodule(target))
        if norm_name is None:
            continue
        acts = set()
        for node in nodes:
            users = list(node.users)
            user = users[0] if len(users) == 1 else None
            if user is None or user.op != "call_module" or user.args != (node,) or user.kwargs:
                break
            if not any(_is_exactly(root.get_submodule(user.target), a) for a in FUSIONS[norm_name][1]):
                break
            acts.add(user.target)
        else:
            if len(acts) == 1:
                pairs[target] = acts.pop()
    return pairs, calls


def _fuse_traced(model: torch.nn.Module, report: PatchReport) -> None:
    """Norm + activation pairs seen in traced forwards (see above). An
    activation module called only on fused norms' outputs becomes an
    nn.Identity; one also called elsewhere stays, which is right only for an
    idempotent ReLU: the fused layer marks its output and lamina's in-place
    ReLU returns a marked tensor untouched (functional._mark_relu_output).
    Other shared activations leave their norms unfused."""
    for prefix, graph in list(_traced_graphs(model)):
        root = model.get_submodule(prefix[:-1]) if prefix else model
        pairs, calls = _norm_act_calls(root, graph)
        for act_target in sorted(set(pairs.values())):
            norms = [n for n, a in pairs.items() if a == act_target]
            fed_by_norms = all(isinstance(node.args[0], torch.fx.Node) and node.args[0].op == "call_module"
                               and node.args[0].target in norms for node in calls[act_target])
            act = root.get_submodule(act_target)
            act_kind, act_options = FUSED_ACTS[type(act).__name__](act)
            if not fed_by_norms and act_kind != "relu":
                continue
            fused = {}
            for norm_target in norms:
                norm = root.get_submodule(norm_target)
                module, fused_name = _fuse_norm(norm, _norm_name(norm), act_kind, act_options)
                if module is not None:
                    fused[norm_target] = (module, fused_name)
            # the activation module goes only when every norm feeding it is
            # fused; a non-idempotent one must not run twice: all or nothing
            everything = len(fused) == len(norms)
            if not everything and act_kind != "relu":
                continue
            for norm_target, (module, fused_name) in fused.items():
                _set_submodule(root, norm_target, module)
                report.fused.append(f"{prefix}{norm_target}+{prefix}{act_target} -> {fused_name}({act_kind})")
            if everything and fed_by_norms:
                _set_submodule(root, act_target, torch.nn.Identity())


def _set_submodule(root: torch.nn.Module, target: str, module: torch.nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)
