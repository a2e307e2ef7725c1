"""lamina inside real training: three models, four ways each, on one GPU.

    python scripts/gpu_models.py --out $OUT            # on the card, < 8 minutes
    python scripts/gpu_models.py --cpu-smoke --out /tmp/smoke   # structure check on a CPU

Models (random init, synthetic data from a fixed seed, bfloat16 autocast):
  resnet50   torchvision ResNet-50, channels_last, batch 128 at 224x224 (--batch)
  gpt2       Hugging Face GPT-2 small from GPT2Config (no weights), batch 8 x 1024
  gn_silu    a diffusers-style stack of conv + GroupNorm(32) + SiLU residual blocks
(--cpu-smoke: tiny stand-ins of the same shape of network, on the CPU.)

For each model and each way of running it -- torch eager, torch.compile,
lamina.patch, lamina.patch + torch.compile (and lamina.patch(fuse=True), alone
and compiled, when lamina.nn has fused layers and the model has
norm+activation pairs; the compiled patches also with lamina's kernels
traced into the graph, "+kernels", compile mode 'kernels') -- a
training step's throughput (samples/s from the median step time after
warm-up) and peak memory (torch.cuda.max_memory_allocated). The loss over
--steps steps of lamina.patch is compared with eager on the same seed and the
same data, dropout off (every Dropout p=0; GPT-2's config dropouts 0), next
to eager run a second time, eager with every weight nudged one float32 ulp
(how far a perturbation far below bf16 rounding moves a 100-step curve) and,
for GPT-2, eager with torch's tanh-GELU in place of transformers' bf16 one
(which rounds after each op; lamina's rounds once). Also:
the patch report (every supported layer replaced?), the patched model loading
the unpatched state_dict, and one training step (forward, backward,
optimizer step) of a small lamina model captured in a CUDA graph and
replayed against eager.

Writes under --out: models.json (everything), loss_curves.png, and log.txt.
The compile variants run last and are skipped (reported as such) when the
time budget (--budget-s) would not allow them.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import os
import platform
import statistics
import struct
import sys
import time
import traceback
import zlib

import torch
from torch import nn
import torch.nn.functional as TF

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
import lamina  # noqa: E402
import lamina.nn as L  # noqa: E402
from lamina import under_compile  # noqa: E402

START = time.time()
LOG = []


def log(*parts):
    line = " ".join(str(p) for p in parts)
    print(f"[{time.time() - START:6.1f}s] {line}", flush=True)
    LOG.append(line)


# =============================================================================
# the models: each a spec with a builder, synthetic batches and a loss
# =============================================================================

class ResidualBlock(nn.Module):
    """A diffusers-style ResnetBlock2D without the time embedding:
    GroupNorm -> SiLU -> conv -> GroupNorm -> SiLU -> dropout -> conv, plus the input."""

    def __init__(self, channels, groups=32, dropout=0.0):
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(groups, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(groups, channels), nn.SiLU(), nn.Dropout(dropout), nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x):
        return x + self.body(x)


def gn_silu_net(channels=128, blocks=4, groups=32):
    """conv_in, residual blocks, GroupNorm + SiLU + conv_out: predicts the noise of a noisy image."""
    return nn.Sequential(
        nn.Conv2d(3, channels, 3, padding=1),
        *[ResidualBlock(channels, groups) for _ in range(blocks)],
        nn.Sequential(nn.GroupNorm(groups, channels), nn.SiLU(), nn.Conv2d(channels, 3, 3, padding=1)),
    )


class TinyBottleneck(nn.Module):
    def __init__(self, c, mid):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, mid, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv2, self.bn2 = nn.Conv2d(mid, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid)
        self.conv3, self.bn3 = nn.Conv2d(mid, c, 1, bias=False), nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + x)


def tiny_resnet(num_classes=10):
    """The CPU stand-in for ResNet-50: same layer types, torchvision's wiring."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1), TinyBottleneck(16, 8), TinyBottleneck(16, 8),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes),
    )


class TinyGPT(nn.Module):
    """The CPU stand-in for GPT-2: pre-norm blocks, LayerNorm, tanh-GELU, dropout."""

    def __init__(self, vocab=64, dim=32, heads=2, layers=2, seq=16, dropout=0.0):
        super().__init__()
        self.wte, self.wpe, self.drop = nn.Embedding(vocab, dim), nn.Embedding(seq, dim), nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            nn.ModuleDict(dict(
                ln_1=nn.LayerNorm(dim), attn=nn.Linear(dim, 3 * dim), proj=nn.Linear(dim, dim),
                ln_2=nn.LayerNorm(dim), fc=nn.Linear(dim, 4 * dim), act=nn.GELU(approximate="tanh"),
                fc_out=nn.Linear(4 * dim, dim), resid_drop=nn.Dropout(dropout),
            )) for _ in range(layers)
        )
        self.ln_f, self.head, self.heads = nn.LayerNorm(dim), nn.Linear(dim, vocab, bias=False), heads

    def forward(self, ids):
        b, t = ids.shape
        h = self.drop(self.wte(ids) + self.wpe(torch.arange(t, device=ids.device)))
        for blk in self.blocks:
            q, k, v = blk["attn"](blk["ln_1"](h)).view(b, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
            a = TF.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, -1)
            h = h + blk["resid_drop"](blk["proj"](a))
            h = h + blk["resid_drop"](blk["fc_out"](blk["act"](blk["fc"](blk["ln_2"](h)))))
        return self.head(self.ln_f(h))


def _images(gen, n, c, hw, device):
    return torch.randn(n, c, hw, hw, generator=gen, device=device)


def model_specs(args, device):
    """name -> dict(build, batches(gen) -> list, loss(model, batch), batch_size, channels_last, optimizer)."""
    smoke = args.cpu_smoke
    specs = {}

    # --- ResNet-50 (torchvision) / its stand-in: classification of fixed random images
    rb = args.batch if args.batch else (4 if smoke else 128)
    res_hw, classes = (32, 10) if smoke else (224, 1000)

    def build_resnet():
        if smoke:
            return tiny_resnet(classes)
        import torchvision  # on the card only
        return torchvision.models.resnet50(weights=None, num_classes=classes)

    specs["resnet50"] = dict(
        build=build_resnet, batch_size=rb, channels_last=True, optimizer="sgd",
        batches=lambda gen: [(_images(gen, rb, 3, res_hw, device).contiguous(memory_format=torch.channels_last),
                              torch.randint(0, classes, (rb,), generator=gen, device=device)) for _ in range(4)],
        loss=lambda model, b: TF.cross_entropy(model(b[0]), b[1]),
    )

    # --- GPT-2 small (transformers) / its stand-in: a language model on repeated token segments
    gb, seq = (2, 16) if smoke else (args.gpt_batch, args.seq)
    vocab = 64 if smoke else 50257

    def build_gpt():
        if smoke:
            return TinyGPT(vocab=vocab, seq=seq)
        from transformers import GPT2Config, GPT2LMHeadModel  # on the card only
        config = GPT2Config(n_positions=seq, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        return GPT2LMHeadModel(config)

    def gpt_batches(gen):
        out = []
        for _ in range(4):  # a random 32-token segment repeated: learnable by copying
            seg = torch.randint(0, vocab, (gb, min(32, seq)), generator=gen, device=device)
            out.append(seg.repeat(1, math.ceil(seq / seg.shape[1]))[:, :seq].contiguous())
        return out

    def gpt_loss(model, ids):
        if smoke:
            logits = model(ids)
            return TF.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1))
        return model(input_ids=ids, labels=ids).loss

    specs["gpt2"] = dict(build=build_gpt, batch_size=gb, channels_last=False, optimizer="adamw",
                         batches=gpt_batches, loss=gpt_loss)

    # --- GroupNorm + SiLU network: denoising (predict the noise added to fixed images)
    nb, ch, hw, groups = (2, 8, 8, 4) if smoke else (args.gn_batch, 128, 64, 32)

    def gn_batches(gen):
        out = []
        for _ in range(4):
            clean = TF.avg_pool2d(_images(gen, nb, 3, hw, device), 5, stride=1, padding=2)
            noise = _images(gen, nb, 3, hw, device)
            out.append((clean + noise, noise))
        return out

    specs["gn_silu"] = dict(
        build=lambda: gn_silu_net(ch, 2 if smoke else 4, groups), batch_size=nb, channels_last=False,
        optimizer="adamw", batches=gn_batches, loss=lambda model, b: TF.mse_loss(model(b[0]).float(), b[1]),
    )
    unknown = set(args.models) - set(specs)
    if unknown:
        raise SystemExit(f"--models: unknown {sorted(unknown)}; choose from {sorted(specs)}")
    return {k: specs[k] for k in args.models}


# =============================================================================
# running a model: one training loop that records the loss and times steps
# =============================================================================

def dropout_off(model):
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        if isinstance(m, L.DropBlock2d) or isinstance(m, L.DropConnect):
            m.p = 0.0
    return model


def make_optimizer(kind, model):
    if kind == "sgd":
        return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return torch.optim.AdamW(model.parameters(), lr=3e-4)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def train(spec, model, batches, steps, warmup, device, amp=True):
    """``steps`` optimizer steps cycling over ``batches``; returns the losses,
    the median time of the steps after ``warmup``, the first step's time (a
    compile happens there) and the peak memory."""
    opt = make_optimizer(spec["optimizer"], model)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    losses, times = [], []
    for step in range(steps):
        batch = batches[step % len(batches)]
        sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            loss = spec["loss"](model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))  # syncs
        sync(device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    step_times = times[warmup:] or times[-1:]  # every step after the warm-up
    median = statistics.median(step_times)
    return dict(
        losses=losses, step_ms_median=1e3 * median, samples_per_s=spec["batch_size"] / median,
        first_step_s=times[0], peak_mem_gib=peak, timed_steps=len(step_times),
    )


def unpatched_layers(model):
    """Modules that lamina.patch supports but left as torch's (should be none)."""
    left = []
    supported = [getattr(nn, n) for n in lamina.patch_module.SUPPORTED if hasattr(nn, n)]
    for name, m in model.named_modules():
        module = type(m).__module__
        if module.startswith("lamina."):
            continue
        if any(type(m) is cls for cls in supported) or type(m).__name__ in lamina.patch_module.FOREIGN:
            left.append(f"{name}: {type(m).__name__}")
    return left


def has_fused_layers():
    return hasattr(L, "BatchNormAct2d") and hasattr(L, "GroupNormAct")


# Reference variants of eager, for reading lamina's loss curve: eager with
# its weights nudged by one float32 ulp (how far a 100-step bf16 curve moves
# from a perturbation far below bf16's rounding), and for GPT-2 eager with
# torch's own tanh-GELU, which like lamina's rounds once, in place of the
# transformers one, which rounds after each of its bf16 ops.
NUDGED = "eager, weights +1 ulp"
TORCH_GELU = "eager, torch GELU"
RERUN_COMPILE = "rerun: torch.compile"


def prepare(spec, base, variant, device, compile_backend):
    """A copy of the (CPU) ``base`` model in ``variant``'s form: same initial weights."""
    model = copy.deepcopy(base).to(device)
    if spec["channels_last"]:
        model.to(memory_format=torch.channels_last)
    report = None
    if variant == NUDGED:
        with torch.no_grad():  # every weight one float32 ulp up: a perturbation below any bf16 rounding
            for p in model.parameters():
                p.copy_(torch.nextafter(p, torch.full_like(p, math.inf)))
    if variant == TORCH_GELU:  # the transformers tanh-GELU (bf16 ops, rounded at each) -> torch's fused one
        for parent in list(model.modules()):
            for child_name, child in parent.named_children():
                if type(child).__name__ in ("NewGELUActivation", "GELUTanh", "PytorchGELUTanh"):
                    setattr(parent, child_name, nn.GELU(approximate="tanh"))
    if variant.startswith("lamina.patch"):
        report = lamina.patch(model, fuse="fuse" in variant)
    if variant.endswith("compile"):
        # lamina's layers inside the compiled graph: PyTorch's ops (the default
        # compile mode) or lamina's kernels ("+kernels" variants); read when
        # the model is first traced, in train() below
        under_compile.set_compile_mode("kernels" if "+kernels" in variant else "torch")
        model = torch.compile(model, backend=compile_backend)
    return model, report


def max_rel_diff(a, b):
    return max((abs(x - y) / max(abs(y), 1e-12) for x, y in zip(a, b)), default=None)


def run_model(name, spec, args, device, results, compile_queue):
    log(f"== {name}")
    torch.manual_seed(0)
    base = dropout_off(spec["build"]())
    entry = results.setdefault(name, {"batch_size": spec["batch_size"], "variants": {}})
    entry["parameters"] = sum(p.numel() for p in base.parameters())

    # the patch report, the state_dict both ways
    patched = copy.deepcopy(base)
    report = lamina.patch(patched)
    left = unpatched_layers(patched)
    entry["patch_report"] = str(report)
    entry["patch_replaced"] = dict(report.replaced)
    entry["patch_left_unpatched"] = left
    entry["patch_replaced_every_supported_layer"] = not left
    entry["state_dict_keys_equal"] = list(patched.state_dict()) == list(base.state_dict())
    try:  # a torch checkpoint (values moved off the current ones) loads strictly, value for value
        checkpoint = {k: v + 1 if v.is_floating_point() else v.clone() for k, v in base.state_dict().items()}
        patched.load_state_dict(checkpoint)
        same = all(torch.equal(patched.state_dict()[k], v) for k, v in checkpoint.items())
        copy.deepcopy(base).load_state_dict(patched.state_dict())  # and back
        entry["patched_loads_unpatched_state_dict"] = same
    except Exception as e:  # noqa: BLE001 - reported, not raised
        entry["patched_loads_unpatched_state_dict"] = f"{type(e).__name__}: {e}"
    if has_fused_layers():
        fused_model = copy.deepcopy(base)
        entry["fuse_report"] = lamina.patch(fused_model, fuse=True).fused
    log(str(report).replace("\n", " |"), "| left unpatched:", left or "none",
        "| loads the torch state_dict:", entry["patched_loads_unpatched_state_dict"])
    del patched

    gen = torch.Generator(device=device)
    gen.manual_seed(1234)
    batches = spec["batches"](gen)
    steps = max(args.steps, args.warmup + args.timed)
    # eager twice (cuDNN's bf16 kernels need not repeat bit for bit), and the
    # reference variants above: what lamina's curve is read against
    variants = ["eager", "eager rerun", NUDGED, "lamina.patch"]
    if any(type(m).__name__ == "NewGELUActivation" for m in base.modules()):
        variants.insert(3, TORCH_GELU)
    if entry.get("fuse_report"):
        variants.append("lamina.patch+fuse")
    variants = [v for v in variants if wanted(args, v)]
    for variant in variants:
        _run_variant(entry, name, spec, base, variant, batches, steps, args, device)
    curves = entry["loss_curves"] = {v: entry["variants"][v].pop("losses") for v in variants
                                     if "losses" in entry["variants"][v]}
    if "eager" in curves:
        entry["loss_max_rel_diff_vs_eager"] = {v: max_rel_diff(c, curves["eager"]) for v, c in curves.items() if v != "eager"}
    if "eager" in curves and "lamina.patch" in curves:
        entry["loss_max_rel_diff_patch_vs_eager"] = max_rel_diff(curves["lamina.patch"], curves["eager"])
        entry["loss_rel_diff_first_step"] = max_rel_diff(curves["lamina.patch"][:1], curves["eager"][:1])
        log(f"{name}: loss max rel diff lamina.patch vs eager over {steps} steps:",
            f"{entry['loss_max_rel_diff_patch_vs_eager']:.3e} (first step {entry['loss_rel_diff_first_step']:.3e})")
    if "eager" in curves and "eager rerun" in curves:
        entry["loss_max_rel_diff_eager_rerun"] = max_rel_diff(curves["eager rerun"], curves["eager"])
        log(f"{name}: loss max rel diff of eager's own rerun: {entry['loss_max_rel_diff_eager_rerun']:.3e}",
            "(the noise floor: same seed, same data)")
    for variant in (NUDGED, TORCH_GELU):
        if "eager" in curves and variant in curves:
            log(f"{name}: loss max rel diff of '{variant}' vs eager: {entry['loss_max_rel_diff_vs_eager'][variant]:.3e}")
            if "lamina.patch" in curves:
                d = max_rel_diff(curves["lamina.patch"], curves[variant])
                entry.setdefault("loss_max_rel_diff_patch_vs", {})[variant] = d
                log(f"{name}: loss max rel diff lamina.patch vs '{variant}': {d:.3e}")
    if not args.skip_compile:
        compiled = ["torch.compile", "lamina.patch+compile"]
        if entry.get("fuse_report"):  # the fused model compiled too: last, the first to go when time runs short
            compiled.append("lamina.patch+fuse+compile")
        # lamina's kernels traced into the compiled graph (compile mode 'kernels')
        compiled += [v.replace("+compile", "+kernels+compile") for v in compiled[1:]]
        # torch.compile once more, last: the first compiled variant of a
        # process can time slower (compile workers still busy), so the A/B
        # against lamina.patch+compile reads both sides of it
        compiled.append(RERUN_COMPILE)
        for variant in compiled:
            if wanted(args, variant):
                compile_queue.append((name, spec, base, variant, batches))


def wanted(args, variant):
    """``--variants`` names ``variant`` (or is not given: every variant runs)."""
    return args.variants is None or variant in args.variants.split(",")


def _run_variant(entry, name, spec, base, variant, batches, steps, args, device):
    try:
        model, _ = prepare(spec, base, variant, device, args.compile_backend)
        r = train(spec, model, batches, steps, args.warmup, device)
        del model
        if variant.endswith("compile"):
            torch._dynamo.reset()  # drop the compiled graphs (and what they hold) before the next variant
        entry["variants"][variant] = r
        mem = f"{r['peak_mem_gib']:.2f} GiB" if r["peak_mem_gib"] is not None else "n/a"
        log(f"{name} {variant}: {r['samples_per_s']:.1f} samples/s (median step {r['step_ms_median']:.1f} ms),"
            f" peak {mem}, first step {r['first_step_s']:.1f}s, loss {r['losses'][0]:.4f} -> {r['losses'][-1]:.4f}")
    except Exception as e:  # noqa: BLE001 - one failure must not lose the others' results
        entry["variants"][variant] = {"error": f"{type(e).__name__}: {e}"}
        log(f"{name} {variant}: FAILED {type(e).__name__}: {e}")
        LOG.append(traceback.format_exc())


# =============================================================================
# CUDA graph: one whole training step captured and replayed
# =============================================================================

def cuda_graph_check(device):
    """A small lamina model's training step (forward, backward, SGD step)
    captured once in a torch.cuda.CUDAGraph and replayed on new data, against
    an eager twin starting from the same weights. (No dropout: lamina draws
    its Philox seed on the device only while capturing: dropout_graph_check.)"""
    if device.type != "cuda":
        return {"skipped": "no CUDA device"}
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), L.BatchNorm2d(32), L.ReLU(), nn.Conv2d(32, 32, 3, padding=1),
        L.GroupNorm(8, 32), L.SiLU(), L.MaxPool2d(2), L.AvgPool2d(2), L.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(32, 64), L.LayerNorm(64), L.GELU(), nn.Linear(64, 64), L.RMSNorm(64), L.Tanh(), nn.Linear(64, 10),
    ).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = torch.Generator(device=device)
    gen.manual_seed(7)
    data = [(torch.randn(16, 3, 32, 32, generator=gen, device=device),
             torch.randint(0, 10, (16,), generator=gen, device=device)) for _ in range(6)]
    static_x, static_y = data[0][0].clone(), data[0][1].clone()

    def step(m, o, x, y):
        loss = TF.cross_entropy(m(x), y)
        loss.backward()
        o.step()
        return loss

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as torch's docs ask
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            step(model, opt, static_x, static_y)
    torch.cuda.current_stream().wait_stream(side)
    twin = copy.deepcopy(model)
    twin_opt = torch.optim.SGD(twin.parameters(), lr=0.1)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)  # backward then allocates .grad from the graph's own pool
    with torch.cuda.graph(graph):
        static_loss = step(model, opt, static_x, static_y)
    loss_diff, replays = [], 0
    for x, y in data[1:]:
        static_x.copy_(x)
        static_y.copy_(y)
        graph.replay()
        twin_opt.zero_grad(set_to_none=True)
        eager_loss = step(twin, twin_opt, x, y)
        loss_diff.append(abs(float(static_loss) - float(eager_loss)))
        replays += 1
    param_diff = max(float((p - q).abs().max()) for p, q in zip(model.parameters(), twin.parameters()))
    buffer_diff = max(float((b.float() - c.float()).abs().max()) for b, c in zip(model.buffers(), twin.buffers()))
    ok = max(loss_diff) <= 1e-4 and param_diff <= 1e-4 and buffer_diff <= 1e-4
    return dict(replays=replays, max_loss_abs_diff=max(loss_diff), max_param_abs_diff=param_diff,
                max_buffer_abs_diff=buffer_diff, matches_eager=ok)


def dropout_graph_check(device, p=0.5, replays=4):
    """lamina's dropout forward and backward captured in a CUDA graph: each
    replay draws a new mask (the seed comes from the CUDA generator, which the
    graph advances), drops about p of the values, and the backward
    regenerates exactly the forward's mask (dx = [y != 0] / (1 - p))."""
    if device.type != "cuda":
        return {"skipped": "no CUDA device"}
    x = torch.randn(1 << 16, device=device).abs().add_(0.5).requires_grad_()  # no zero can pass the mask
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            lamina.functional.dropout(x, p).sum().backward()
    torch.cuda.current_stream().wait_stream(side)
    x.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = lamina.functional.dropout(x, p)
        y.sum().backward()
    masks, dropped, grad_ok = [], [], True
    for _ in range(replays):
        graph.replay()
        mask = y.detach() != 0
        masks.append(mask.clone())
        dropped.append(1.0 - float(mask.float().mean()))
        grad_ok = grad_ok and torch.equal(x.grad, mask.float() / (1 - p))
    fresh = all(not torch.equal(a, b) for a, b in zip(masks, masks[1:]))
    ok = fresh and grad_ok and all(abs(d - p) < 0.02 for d in dropped)
    return dict(replays=replays, dropped_fraction=[round(d, 4) for d in dropped], new_mask_each_replay=fresh,
                backward_regenerates_mask=grad_ok, ok=ok)


# =============================================================================
# the loss-curve picture (matplotlib when present, else a plain PNG writer)
# =============================================================================

def plot_losses(results, path):
    curves = {name: e["loss_curves"] for name, e in results.items() if e.get("loss_curves")}
    if not curves:
        return None
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _plot_png_plain(curves, path)
        return "plain"
    fig, axes = plt.subplots(2, len(curves), figsize=(5 * len(curves), 6.4), squeeze=False,
                             gridspec_kw=dict(height_ratios=[2, 1]))
    for col, (name, per_variant) in enumerate(curves.items()):
        ax, diff_ax = axes[0][col], axes[1][col]
        for i, (variant, losses) in enumerate(per_variant.items()):
            ax.plot(range(1, len(losses) + 1), losses, label=variant, lw=1.2, color=f"C{i}",
                    ls="--" if variant != "eager" else "-")
            if variant != "eager" and "eager" in per_variant:
                rel = [abs(a - b) / max(abs(b), 1e-12) for a, b in zip(losses, per_variant["eager"])]
                diff_ax.semilogy(range(1, len(rel) + 1), [max(r, 1e-9) for r in rel], lw=1, color=f"C{i}")
        ax.set_title(name)
        ax.set_ylabel("training loss")
        ax.legend()
        diff_ax.set_xlabel("step")
        diff_ax.set_ylabel("|loss - eager| / eager")
    fig.suptitle("lamina.patch vs torch eager: same seed, same data, bf16 autocast")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return "matplotlib"


def _plot_png_plain(curves, path, w=360, h=240):
    """Panels of line plots rasterized by hand into an RGB PNG (no axes text):
    eager black, lamina.patch red, anything else blue."""
    import numpy as np

    colors = {"eager": (0, 0, 0), "lamina.patch": (220, 30, 30)}
    img = np.full((h, w * len(curves), 3), 255, dtype=np.uint8)
    for i, per_variant in enumerate(curves.values()):
        values = [v for losses in per_variant.values() for v in losses if math.isfinite(v)]
        lo, hi = min(values), max(values)
        hi = hi if hi > lo else lo + 1
        x0 = i * w
        img[h - 10, x0 + 10:x0 + w - 10] = 160
        img[10:h - 10, x0 + 10] = 160
        for variant, losses in per_variant.items():
            color = colors.get(variant, (30, 30, 220))
            n = max(len(losses) - 1, 1)
            pts = [(x0 + 10 + (w - 20) * k / n, h - 10 - (h - 20) * (v - lo) / (hi - lo))
                   for k, v in enumerate(losses) if math.isfinite(v)]
            for (ax_, ay), (bx, by) in zip(pts, pts[1:]):
                for t in np.linspace(0, 1, int(max(abs(bx - ax_), abs(by - ay))) + 2):
                    img[int(round(ay + (by - ay) * t)), int(round(ax_ + (bx - ax_) * t))] = color
    raw = b"".join(b"\x00" + row.tobytes() for row in img)

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", img.shape[1], h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


# =============================================================================

COMPILE_ESTIMATE_S = {"resnet50": 110, "gpt2": 80, "gn_silu": 40}  # compile + warm-up + timed steps, H100


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/models")
    p.add_argument("--models", default="gn_silu,gpt2,resnet50", help="comma-separated subset, in run order")
    p.add_argument("--batch", type=int, default=None, help="ResNet-50 batch (default 128; smoke 4)")
    p.add_argument("--gpt-batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--gn-batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=100, help="loss-curve steps")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--timed", type=int, default=10, help="timed steps of the compile variants (the others time all steps after warm-up)")
    p.add_argument("--skip-compile", action="store_true")
    p.add_argument("--variants", default=None,
                   help="comma-separated subset of the variants to run, e.g. 'eager,lamina.patch+compile' (default: all)")
    p.add_argument("--compile-backend", default=None, help="default: inductor (smoke: aot_eager)")
    p.add_argument("--budget-s", type=float, default=420, help="start no compile variant that would end past this")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny stand-in models on the CPU, few steps")
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.cpu_smoke:
        args.steps = min(args.steps, 4)
        args.warmup, args.timed = min(args.warmup, 1), min(args.timed, 2)
        args.compile_backend = args.compile_backend or "aot_eager"
    args.compile_backend = args.compile_backend or "inductor"
    device = torch.device("cpu" if args.cpu_smoke or not torch.cuda.is_available() else "cuda")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    os.makedirs(args.out, exist_ok=True)

    meta = dict(
        date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), device=str(device),
        card=torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        torch=torch.__version__, lamina=lamina.__version__, python=platform.python_version(),
        cpu_smoke=args.cpu_smoke, args={k: v for k, v in vars(args).items()},
        fused_layers_available=has_fused_layers(),
    )
    for mod in ("triton", "torchvision", "transformers"):
        try:
            meta[mod] = __import__(mod).__version__
        except ImportError:
            meta[mod] = None
    log("device", meta["card"], "torch", meta["torch"], "triton", meta["triton"])
    results, compile_queue = {}, []
    out = {"meta": meta, "models": results}

    for name, spec in model_specs(args, device).items():
        if time.time() - START > args.budget_s:
            results[name] = {"skipped": "time budget spent"}
            log(f"{name}: skipped, time budget spent")
            continue
        try:
            run_model(name, spec, args, device, results, compile_queue)
        except Exception as e:  # noqa: BLE001
            results.setdefault(name, {})["error"] = f"{type(e).__name__}: {e}"
            log(f"{name}: FAILED {type(e).__name__}: {e}")
            LOG.append(traceback.format_exc())
        _write(out, args.out)

    compile_steps = args.warmup + args.timed
    for name, spec, base, variant, batches in compile_queue:
        left = args.budget_s - (time.time() - START)
        need = 0 if args.cpu_smoke else COMPILE_ESTIMATE_S.get(name, 60)
        entry = results[name]
        if left < need:
            entry["variants"][variant] = {"skipped": f"time budget: {left:.0f}s left, ~{need}s needed"}
            log(f"{name} {variant}: skipped, {left:.0f}s of budget left")
            continue
        _run_variant(entry, name, spec, base, variant, batches, compile_steps, args, device)
        r = entry["variants"][variant]
        if "losses" in r:  # compare the compiled model's first losses with eager's
            losses = r.pop("losses")
            uncompiled = ("eager" if not variant.startswith("lamina") else
                          "lamina.patch+fuse" if "+fuse" in variant else "lamina.patch")
            ref = entry["loss_curves"].get(uncompiled, [])
            r["loss_max_rel_diff_vs_uncompiled"] = max_rel_diff(losses, ref[:len(losses)])
            r["compile_s_approx"] = r["first_step_s"]
        _write(out, args.out)

    # last: a capture that fails can leave the CUDA context unusable
    for key, check in (("cuda_graph", cuda_graph_check), ("cuda_graph_dropout", dropout_graph_check)):
        try:
            out[key] = check(device)
        except Exception as e:  # noqa: BLE001
            out[key] = {"error": f"{type(e).__name__}: {e}"}
            LOG.append(traceback.format_exc())
        log(f"{key}:", out[key])

    out["plot"] = plot_losses(results, os.path.join(args.out, "loss_curves.png"))
    out["total_s"] = time.time() - START
    _write(out, args.out)
    log(f"done in {out['total_s']:.0f}s; wrote {args.out}/models.json, loss_curves.png, log.txt")
    return out


def _write(out, directory):
    with open(os.path.join(directory, "models.json"), "w") as f:
        json.dump(out, f, indent=1, default=str)
    with open(os.path.join(directory, "log.txt"), "w") as f:
        f.write("\n".join(LOG) + "\n")


if __name__ == "__main__":
    main()
