"""The one table of ops: it drives the op tests (tests/test_ops.py) and
``lamina check``.

Each OpCase names an op, lamina's call, PyTorch's call with the same
arguments, the shapes to try and the keyword arguments. ``params`` makes the
extra tensors the op takes (weight, bias, ...), which get gradients too.
The test runs every case x shape x kwargs x dtype, forward and backward,
against PyTorch autograd (CPU reference) and, under the Triton interpreter,
the kernels against the reference. Add a layer here and it is tested
everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as TF

from . import functional as F

# Shapes: 1 element, primes, non-powers of two, wider than a kernel block,
# empty batch, 4-D (also run channels_last and as a non-contiguous view).
ELEMENTWISE_SHAPES = [(), (1,), (7,), (13, 17), (3, 5, 4099), (0, 3), (2, 3, 5, 7)]
# Small odd shapes for the Triton interpreter, which is slow.
ELEMENTWISE_SHAPES_SMALL = [(1,), (13, 17), (2, 3, 5, 7)]
# Pooling: odd planes (windows that do not tile), 3-D (C, H, W), empty batch.
POOL_SHAPES = [(2, 3, 7, 9), (1, 2, 13, 11), (3, 8, 8), (0, 3, 8, 8)]
POOL_SHAPES_SMALL = [(2, 3, 7, 9), (3, 8, 8)]
# adaptive: sizes that do not divide the input, global, None entries, upsampling
ADAPTIVE_KWARGS = [dict(output_size=(3, 4)), dict(output_size=(1, 1)), dict(output_size=(None, 4)),
                   dict(output_size=5), dict(output_size=(9, 11))]


def no_params(shape, dtype):
    return []


@dataclass
class OpCase:
    name: str
    lamina: Callable  # lamina(x, *params, **kwargs) -> Tensor (or the first output is compared)
    torch: Callable  # torch(x, *params, **kwargs), the oracle
    shapes: list
    small_shapes: list  # for the interpreter
    kwargs: list = field(default_factory=lambda: [{}])
    params: Callable = no_params  # (input shape, dtype) -> list of tensors
    # shapes x the reduction: the number of input elements summed into each
    # parameter gradient element, for the tolerance (None: no reduction)
    reduce_len: Callable | None = None
    # some ops (dropout) are random: these compare only under a fixed seed,
    # and the test sets lamina's seed before both calls
    gradcheck: bool = True
    make_input: Callable | None = None  # (shape, dtype) -> tensor, else randn
    # ops whose backward reads only their (rounded) output, like In-Place
    # ABN: (y, x, *params, **kwargs) -> the float64 input whose exact output
    # is y (None where that input is not known), for the card check's oracle
    input_from_output: Callable | None = None


# ---- activation helpers ---------------------------------------------------


def _prelu_channels(shape, per_channel):
    return shape[1] if per_channel and len(shape) >= 2 else 1


def _prelu_weight(per_channel):
    """PReLU's weight: one slope, or one per channel (dim 1), in (0.05, 0.55)."""
    def make(shape, dtype):
        return [(0.05 + 0.5 * torch.rand(_prelu_channels(shape, per_channel), dtype=torch.float64)).to(dtype)]
    return make


def _prelu_reduce_len(per_channel):
    """Input elements summed into each slope's gradient."""
    def length(shape, kwargs):
        return torch.Size(shape).numel() // _prelu_channels(shape, per_channel)
    return length


def _in_place(fn):
    """fn(x, inplace=True) on a copy of x made inside autograd's graph."""
    def call(x, **kwargs):
        return fn(x * 1, inplace=True, **kwargs)
    return call


def _unsaturated_input(shape, dtype):
    """randn / 2: backward from a saved 16-bit output of tanh, as in PyTorch,
    loses 1 - y^2 where |y| nears 1 (a bfloat16 y keeps 8 bits), which the
    float64 oracle of the table would flag; saturated inputs are compared
    with PyTorch's own 16-bit results in tests/test_activation.py instead."""
    return (0.5 * torch.randn(shape, dtype=torch.float64)).to(dtype)


def _torch_swish(x, beta=1.0):
    return x * torch.sigmoid(beta * x)


# ---- normalization: layer, RMS, group (helpers for the table rows below) ---

import math  # noqa: E402


def _rownorm_cases():
    """LayerNorm / RMSNorm over the last one and two dims, GroupNorm with one,
    some and every-channel groups; weight and bias random (not ones/zeros) so
    their gradients matter; kwargs switch them off."""

    def affine_params(trailing):
        def make(shape, dtype):
            g = torch.Generator().manual_seed(7)
            pshape = trailing(shape)
            return [(torch.randn(pshape, generator=g, dtype=torch.float64) * 0.5 + 1).to(dtype),
                    torch.randn(pshape, generator=g, dtype=torch.float64).to(dtype)]
        return make

    def rows(k):
        return lambda shape, kw: math.prod(shape[: len(shape) - k])

    def layer_norm_case(name, k, shapes, small):
        def call(fn):
            def run(x, w, b, affine=True, bias=True, eps=1e-5):
                return fn(x, list(x.shape[x.dim() - k:]), w if affine else None, b if affine and bias else None, eps)
            return run
        return OpCase(name, call(F.layer_norm), call(TF.layer_norm), shapes, small,
                      kwargs=[{}, {"affine": False}, {"bias": False}, {"eps": 1e-3}],
                      params=affine_params(lambda s: s[len(s) - k:]), reduce_len=rows(k))

    def rms_norm_case(name, k, shapes, small):
        def call(fn):
            def run(x, w, b, affine=True, eps=None):
                return fn(x, list(x.shape[x.dim() - k:]), w if affine else None, eps)
            return run
        return OpCase(name, call(F.rms_norm), call(TF.rms_norm), shapes, small,
                      kwargs=[{}, {"eps": 1e-6}, {"affine": False}],
                      params=affine_params(lambda s: s[len(s) - k:]), reduce_len=rows(k))

    def groups(c, which):
        if which == "one":
            return 1
        if which == "all":
            return c
        return next((g for g in range(c // 2, 0, -1) if c % g == 0 and g > 1), 1)  # "some"

    def group_norm_call(fn):
        def run(x, w, b, groups_of="some", affine=True, eps=1e-5):
            return fn(x, groups(x.shape[1], groups_of), w if affine else None, b if affine else None, eps)
        return run

    # rows of 1, primes, a row wider than the one-block limit, an empty batch, 4-D
    row_shapes = [(1,), (6, 1), (13, 17), (3, 5, 4099), (2, 17000), (0, 5), (2, 3, 5, 7)]
    # small enough for gradcheck and the interpreter; the wide-row and
    # many-tile kernel paths are tested in tests/test_rownorm.py
    row_small = [(6, 1), (5, 17), (2, 3, 2, 7)]
    row2_shapes = [(1, 1), (3, 7, 11), (2, 3, 5, 7), (0, 4, 3)]
    row2_small = [(3, 4, 5)]
    group_shapes = [(2, 6), (3, 6, 7), (2, 6, 5, 7), (1, 4, 70, 70), (0, 6, 3), (2, 12, 3, 2)]
    group_small = [(3, 6, 4), (2, 4, 3, 5)]  # whole group a program; split groups: tests/test_rownorm.py
    return [
        layer_norm_case("layer_norm", 1, row_shapes, row_small),
        layer_norm_case("layer_norm_last2", 2, row2_shapes, row2_small),
        rms_norm_case("rms_norm", 1, row_shapes, row_small),
        rms_norm_case("rms_norm_last2", 2, row2_shapes, row2_small),
        OpCase("group_norm", group_norm_call(F.group_norm), group_norm_call(TF.group_norm), group_shapes, group_small,
               kwargs=[{"groups_of": w, "affine": a} for w in ("one", "some", "all") for a in (True, False)],
               params=affine_params(lambda s: s[1:2]),
               reduce_len=lambda shape, kw: shape[0] * math.prod(shape[2:])),
    ]


OPS: list[OpCase] = [
    # ---- activation ----------------------------------------------------------
    OpCase("relu", F.relu, TF.relu, ELEMENTWISE_SHAPES, ELEMENTWISE_SHAPES_SMALL),
    OpCase("leaky_relu", F.leaky_relu, TF.leaky_relu, ELEMENTWISE_SHAPES, ELEMENTWISE_SHAPES_SMALL,
           kwargs=[{}, {"negative_slope": 0.2}, {"negative_slope": -0.3}]),
    OpCase("prelu", F.prelu, TF.prelu, ELEMENTWISE_SHAPES, ELEMENTWISE_SHAPES_SMALL,
           params=_prelu_weight(per_channel=False), reduce_len=_prelu_reduce_len(per_channel=False)),
    OpCase("prelu_per_channel", F.prelu, TF.prelu, ELEMENTWISE_SHAPES, ELEMENTWISE_SHAPES_SMALL,
           params=_prelu_weight(per_channel=True), reduce_len=_prelu_reduce_len(per_channel=True)),
    OpCase("sigmoid", F.sigmoid, torch.sigmoid, ELEMENTWISE_SHAPES, ELEMENTWISE_SHAPES_SMALL),
    OpCase("tanh", F.tanh, torch.tanh, ELEMENTWISE_SHAPES, ELEMENTWISE_SHAPES_SMALL,
           make_input=_unsaturated_input),
    OpCase("gelu", F.gelu, TF.gelu, ELEMENTWISE_SHAPES, ELEMENTWISE_SHAPES_SMALL,
           kwargs=[{"approximate": "none"}, {"approximate": "tanh"}]),
    OpCase("silu", F.silu, TF.silu, ELEMENTWISE_SHAPES, ELEMENTWISE_SHAPES_SMALL),
    OpCase("swish", F.swish, _torch_swish, ELEMENTWISE_SHAPES, ELEMENTWISE_SHAPES_SMALL,
           kwargs=[{}, {"beta": 1.7}]),
    # the in-place forms, on an intermediate (x * 1: in place on a leaf is an error)
    OpCase("relu_inplace", _in_place(F.relu), TF.relu, ELEMENTWISE_SHAPES, ELEMENTWISE_SHAPES_SMALL),
    # (a negative slope in place has no backward, as in PyTorch: tests/test_activation.py)
    OpCase("leaky_relu_inplace", _in_place(F.leaky_relu), TF.leaky_relu, ELEMENTWISE_SHAPES, ELEMENTWISE_SHAPES_SMALL,
           kwargs=[{"negative_slope": 0.2}, {"negative_slope": 0.0}]),
    OpCase("silu_inplace", _in_place(F.silu), TF.silu, ELEMENTWISE_SHAPES, ELEMENTWISE_SHAPES_SMALL),
    # ---- normalization: batch, sync-batch, instance ------------------------
    # Shapes: one channel with several values, primes, (N, C), (N, C, L), 4-D
    # (also run channels_last and as a strided view), wider than a kernel
    # tile, empty batch. `stats` makes the (running_mean, running_var)
    # arguments inside each call, so lamina and torch start from equal fresh
    # buffers. The shared pieces are bound once by the first `for` clauses.
    *[
        OpCase(
            name,
            lambda x, *p, _s=stats, _t=train, **kw: F.batch_norm(x, *_s(x), *p, training=_t, **kw),
            lambda x, *p, _s=stats, _t=train, **kw: TF.batch_norm(x, *_s(x), *p, training=_t, **kw),
            [(5, 1), (7, 1, 3), (13, 17), (3, 5, 11), (2, 3, 5, 7), (3, 2, 2053), (0, 3, 4)],
            [(5, 1), (13, 17), (3, 5, 11), (2, 3, 5, 7)],
            params=params,
            reduce_len=lambda shape, kw: torch.Size(shape).numel() // shape[1],  # the values of a channel
        )
        for affine in [lambda shape, dtype: [torch.randn(shape[1], dtype=torch.float64).to(dtype) for _ in "wb"]]
        for fresh in [lambda x: (torch.zeros(x.shape[1], dtype=x.dtype, device=x.device), torch.ones(x.shape[1], dtype=x.dtype, device=x.device))]
        for eval_stats in [lambda x: (torch.linspace(-1, 1, x.shape[1], dtype=torch.float64).to(x.device, x.dtype),
                                      torch.linspace(0.5, 2, x.shape[1], dtype=torch.float64).to(x.device, x.dtype))]
        for name, stats, train, params in [
            ("batch_norm_train", fresh, True, affine),
            ("batch_norm_train_no_affine", fresh, True, no_params),
            ("batch_norm_train_no_running", lambda x: (None, None), True, affine),
            ("batch_norm_eval", eval_stats, False, affine),
        ]
    ],
    *[
        OpCase(
            name,
            lambda x, *p, _s=stats, **kw: F.instance_norm(x, *_s(x), *p, **kw),
            lambda x, *p, _s=stats, **kw: TF.instance_norm(x, *_s(x), *p, **kw),
            [(1, 1, 5), (3, 5, 11), (2, 3, 5, 7), (2, 2, 3, 700)],
            [(3, 5, 11), (2, 3, 5, 7)],
            params=params,
            reduce_len=lambda shape, kw: torch.Size(shape).numel() // shape[1],
        )
        for affine in [lambda shape, dtype: [torch.randn(shape[1], dtype=torch.float64).to(dtype) for _ in "wb"]]
        for fresh in [lambda x: (torch.zeros(x.shape[1], dtype=x.dtype, device=x.device), torch.ones(x.shape[1], dtype=x.dtype, device=x.device))]
        for name, stats, params in [
            ("instance_norm", lambda x: (None, None), affine),
            ("instance_norm_no_affine_running", fresh, no_params),
        ]
    ],
    # ---- normalization: layer, RMS, group ------------------------------------
    *_rownorm_cases(),
    # ---- pooling -------------------------------------------------------------
    *[
        OpCase(name, getattr(F, fn), getattr(TF, fn), shapes, small, kwargs)
        for name, fn, shapes, small, kwargs in [
            ("max_pool2d", "max_pool2d", POOL_SHAPES, POOL_SHAPES_SMALL, [
                dict(kernel_size=3, stride=2, padding=1),
                dict(kernel_size=2),
                dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 0), dilation=2),
                dict(kernel_size=2, stride=2, padding=1, ceil_mode=True),  # first window starts in the padding
                dict(kernel_size=3, stride=2, ceil_mode=True),  # last window hangs past the input
                dict(kernel_size=3, stride=2, padding=1, return_indices=True),
            ]),
            ("max_pool2d_k1", "max_pool2d", [(1, 1, 1, 1)], [(1, 1, 1, 1)], [dict(kernel_size=1)]),
            ("avg_pool2d", "avg_pool2d", POOL_SHAPES, POOL_SHAPES_SMALL, [
                dict(kernel_size=3, stride=2, padding=1),
                dict(kernel_size=2),
                dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
                dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 1), divisor_override=3),
                dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
                dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
            ]),
            ("avg_pool2d_k1", "avg_pool2d", [(1, 1, 1, 1)], [(1, 1, 1, 1)], [dict(kernel_size=1)]),
            ("adaptive_avg_pool2d", "adaptive_avg_pool2d", POOL_SHAPES, POOL_SHAPES_SMALL, ADAPTIVE_KWARGS),
            ("adaptive_avg_pool2d_1", "adaptive_avg_pool2d", [(1, 1, 1, 1)], [(1, 1, 1, 1)], [dict(output_size=1)]),
            ("adaptive_max_pool2d", "adaptive_max_pool2d", POOL_SHAPES, POOL_SHAPES_SMALL,
             ADAPTIVE_KWARGS + [dict(output_size=(3, 4), return_indices=True)]),
            ("adaptive_max_pool2d_1", "adaptive_max_pool2d", [(1, 1, 1, 1)], [(1, 1, 1, 1)], [dict(output_size=1)]),
        ]
    ],
    # ---- dropout -------------------------------------------------------------
    # Random ops, compared under an explicit seed with oracles that build the
    # mask from lamina.rng (defined at the end of this file, called lazily).
    OpCase("dropout", F.dropout, lambda x, **kw: _torch_dropout(x, **kw), ELEMENTWISE_SHAPES, ELEMENTWISE_SHAPES_SMALL,
           kwargs=[{"p": 0.3, "seed": 7}, {"p": 0.9, "seed": 2**40 + 3}, {"p": 1.0, "seed": 1},
                   {"p": 0.5, "training": False}]),
    OpCase("drop_connect", F.drop_connect, lambda w, **kw: _torch_dropout(w, **kw), [(13, 17), (4, 3, 3, 3)],
           [(13, 17)], kwargs=[{"p": 0.4, "seed": 2**33 + 5}]),
    OpCase("drop_block2d", F.drop_block2d, lambda x, **kw: _torch_drop_block2d(x, **kw),
           [(2, 3, 9, 11), (1, 1, 5, 5), (2, 3, 5, 7), (0, 2, 5, 5)], [(1, 1, 5, 5), (2, 3, 5, 7)],
           kwargs=[{"p": 0.3, "block_size": 3, "seed": 5}, {"p": 0.5, "block_size": 5, "seed": 2**33 + 7},
                   {"p": 0.2, "block_size": 1, "seed": 11}, {"p": 0.3, "block_size": 3, "training": False}]),
    # ---- fused -----------------------------------------------------------------
    # Each fused op against the UNFUSED torch composition (oracles at the end
    # of this file); dropout rows under an explicit seed, the mask from
    # lamina.rng. The residual is a param, so its gradient is checked too.
    *[
        OpCase(name, lambda x, *p, _i=inplace, **kw: _lamina_bn_act(x, *p, inplace=_i, **kw),
               lambda x, *p, **kw: _torch_bn_act(x, *p, **kw),
               [(13, 17), (3, 5, 11), (2, 3, 5, 7), (0, 3, 4)], [(13, 17), (2, 3, 5, 7)],
               kwargs=kwargs, params=lambda shape, dtype: _fused_channel_params(shape, dtype),
               reduce_len=lambda shape, kw: torch.Size(shape).numel() // shape[1],
               input_from_output=(lambda y, x, *p, **kw: _bn_act_input_from_output(y, x, *p, **kw))
               if inplace else None)
        for name, inplace, kwargs in [
            ("batch_norm_act", False, [{"act": "relu"}, {"act": "leaky_relu", "negative_slope": 0.2},
                                       {"act": "silu", "training": False}, {"act": "gelu"},
                                       {"act": "identity", "training": False}]),
            # In-Place ABN: backward from the output only
            ("batch_norm_act_inplace", True, [{"act": "leaky_relu", "negative_slope": 0.1},
                                              {"act": "identity", "training": False}]),
        ]
    ],
    OpCase("group_norm_act", lambda x, w, b, **kw: F.group_norm_act(x, 2, w, b, **kw),
           lambda x, w, b, act="silu": _torch_act(TF.group_norm(x, 2, w, b), act),
           [(2, 6), (3, 4, 7), (2, 6, 5, 7), (0, 4, 3)], [(3, 4, 6), (2, 4, 3, 5)],
           kwargs=[{}, {"act": "relu"}, {"act": "gelu"}], params=lambda shape, dtype: _fused_channel_params(shape, dtype),
           reduce_len=lambda shape, kw: shape[0] * math.prod(shape[2:])),
    OpCase("add_layer_norm",
           lambda x, r, w, b, **kw: F.add_layer_norm(x, r, [x.shape[-1]], w, b, **kw),
           lambda x, r, w, b, dropout_p=0.0, seed=None, prenorm=False:
               TF.layer_norm(_torch_row_dropout(x, dropout_p, seed) + r, [x.shape[-1]], w, b),
           [(6, 1), (13, 17), (3, 5, 37), (2, 9000), (0, 5)], [(6, 1), (5, 17), (2, 3, 40)],
           # prenorm off (s rebuilt in backward) with and without dropout, and on (s saved)
           kwargs=[{}, {"dropout_p": 0.3, "seed": 7}, {"dropout_p": 0.5, "seed": 2**40 + 1, "prenorm": True}],
           params=lambda shape, dtype: _fused_row_params(shape, dtype, bias=True), reduce_len=lambda shape, kw: math.prod(shape[:-1])),
    OpCase("add_rms_norm",
           lambda x, r, w, **kw: F.add_rms_norm(x, r, [x.shape[-1]], w, **kw),
           lambda x, r, w, dropout_p=0.0, seed=None, prenorm=False:
               TF.rms_norm(_torch_row_dropout(x, dropout_p, seed) + r, [x.shape[-1]], w,
                           torch.finfo(torch.float64 if x.dtype == torch.float64 else torch.float32).eps),
           # (no one-element rows: RMS of one value is sign(s), its gradient pure rounding noise)
           [(13, 17), (3, 5, 37), (2, 9000), (0, 5)], [(5, 17), (2, 3, 40)],
           # prenorm off (s rebuilt in backward) with and without dropout, and on (s saved)
           kwargs=[{}, {"dropout_p": 0.3, "seed": 7}, {"dropout_p": 0.3, "seed": 7, "prenorm": True}],
           params=lambda shape, dtype: _fused_row_params(shape, dtype, bias=False), reduce_len=lambda shape, kw: math.prod(shape[:-1])),
    OpCase("bias_act", F.bias_act, lambda x, b, act="gelu", approximate="none": _torch_act(x + b, act, approximate),
           [(1,), (13, 17), (3, 5, 37), (2, 3, 5, 7), (0, 3)], [(1,), (13, 17), (2, 3, 5, 7)],
           kwargs=[{}, {"approximate": "tanh"}, {"act": "relu"}, {"act": "silu"}, {"act": "identity"}],
           params=lambda shape, dtype: [torch.randn(shape[-1], dtype=torch.float64).to(dtype)],
           reduce_len=lambda shape, kw: math.prod(shape[:-1])),
    OpCase("dropout_add", F.dropout_add, lambda x, r, **kw: _torch_dropout(x, **kw) + r,
           ELEMENTWISE_SHAPES[1:], ELEMENTWISE_SHAPES_SMALL,
           kwargs=[{"p": 0.3, "seed": 7}, {"p": 1.0, "seed": 3}, {"p": 0.5, "training": False}],
           params=lambda shape, dtype: [torch.randn(shape, dtype=torch.float64).to(dtype)]),
]


# ---- dropout oracles ----------------------------------------------------------
# torch code with the masks drawn from lamina.rng for the same seed (the
# dropout stream runs along the tensor's memory order); DropBlock follows
# torchvision.ops.drop_block2d step by step (pad, max-pool, 1 - noise).

def _torch_dropout(x, p=0.5, training=True, seed=None):
    from . import rng

    if not training or p == 0:
        return x
    keep = torch.from_numpy(rng.keep_mask(seed, 0, x.shape, p, x.stride())).to(x.device)
    # torch's own formula: the mask divided by (1 - p), times x; p = 1 is x * 0
    noise = keep.to(x.dtype) * (0.0 if p == 1 else 1.0 / (1.0 - p))
    return x * noise


def _torch_drop_block2d(x, p, block_size, training=True, seed=None, eps=1e-6):
    from . import rng

    if not training or p == 0:
        return x
    N, C, H, W = x.shape
    b = min(block_size, H, W)
    gamma = (p * H * W) / (b**2 * ((H - b + 1) * (W - b + 1)))
    noise = torch.from_numpy(rng.bernoulli(seed, 0, (N, C, H - b + 1, W - b + 1), gamma)).to(device=x.device, dtype=x.dtype)
    noise = TF.pad(noise, [b // 2] * 4, value=0)
    noise = TF.max_pool2d(noise, stride=1, kernel_size=b, padding=b // 2)
    mask = 1 - noise
    return x * mask * (mask.numel() / (eps + mask.sum()))


# ---- fused oracles ----------------------------------------------------------------
# The unfused torch compositions the fused rows are checked against.

def _torch_act(z, act, approximate="none", negative_slope=0.01):
    if act == "relu":
        return TF.relu(z)
    if act == "leaky_relu":
        return TF.leaky_relu(z, negative_slope)
    if act == "silu":
        return TF.silu(z)
    if act == "gelu":
        return TF.gelu(z, approximate=approximate)
    return z


def _fused_channel_params(shape, dtype):
    """Per-channel weight (kept away from 0: in-place backward divides by it)
    and bias."""
    g = torch.Generator().manual_seed(3)
    c = shape[1]
    return [(0.5 + torch.rand(c, generator=g, dtype=torch.float64)).to(dtype),
            torch.randn(c, generator=g, dtype=torch.float64).to(dtype)]


def _fused_row_params(shape, dtype, bias):
    """The residual (x's shape), then weight (and bias) over the last dim."""
    g = torch.Generator().manual_seed(5)
    params = [torch.randn(shape, generator=g, dtype=torch.float64).to(dtype),
              (torch.randn(shape[-1], generator=g, dtype=torch.float64) * 0.5 + 1).to(dtype)]
    if bias:
        params.append(torch.randn(shape[-1], generator=g, dtype=torch.float64).to(dtype))
    return params


def _bn_act_stats(x, training):
    if training:
        return torch.zeros(x.shape[1], dtype=x.dtype, device=x.device), torch.ones(x.shape[1], dtype=x.dtype, device=x.device)
    return (torch.linspace(-1, 1, x.shape[1], dtype=torch.float64).to(x.device, x.dtype),
            torch.linspace(0.5, 2, x.shape[1], dtype=torch.float64).to(x.device, x.dtype))


def _bn_act_input_from_output(y, x, w, b, training=True, act="relu", negative_slope=0.01):
    """In evaluation: the input that batch_norm_act maps exactly onto y
    (the activation undone, then the affine normalization with the running
    statistics and batch_norm_act's default eps, as the table's rows use),
    in float64. In training the statistics depend on the input itself: None."""
    if training:
        return None
    z = torch.where(y > 0, y, y / negative_slope) if act == "leaky_relu" else y
    mean, var = (s.double() for s in _bn_act_stats(x, False))
    view = (1, -1) + (1,) * (y.dim() - 2)
    return ((z - b.view(view)) / w.view(view) * torch.sqrt(var.view(view) + 1e-5) + mean.view(view)).to(x.dtype)


def _lamina_bn_act(x, w, b, inplace=False, training=True, **kw):
    # in place on a copy: x itself is a leaf that requires grad
    return F.batch_norm_act(x * 1 if inplace else x, *_bn_act_stats(x, training), w, b, training=training,
                            inplace=inplace, **kw)


def _torch_bn_act(x, w, b, training=True, act="relu", negative_slope=0.01):
    return _torch_act(TF.batch_norm(x, *_bn_act_stats(x, training), w, b, training=training), act,
                      negative_slope=negative_slope)


def _torch_row_dropout(x, p, seed):
    """Dropout with the mask add_layer_norm / add_rms_norm use: lamina.rng's
    stream in x's row-major order (they make x contiguous)."""
    from . import rng

    if p == 0:
        return x
    keep = torch.from_numpy(rng.keep_mask(seed, 0, x.shape, p)).to(x.device)
    return x * (keep.to(x.dtype) * (0.0 if p == 1 else 1.0 / (1.0 - p)))


# (rtol, atol) per dtype, shared by tests/test_ops.py and ``lamina check``;
# a reduced gradient (dweight, dbias) scales atol by sqrt(reduction length).
TOLERANCES = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-5, 1e-5),
    torch.float16: (1e-2, 1e-3),
    torch.bfloat16: (2e-2, 1e-2),
}
