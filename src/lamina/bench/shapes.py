"""The standard benchmark matrix (DESIGN.md, "Measuring speed"), as data.

Every cell is one op at one shape, dtype, memory layout and mode. The list is
fixed so results stay comparable over time; filters (--ops, --dtype, --mode)
and --part only select from it. This module needs neither torch nor a GPU.

After the standard matrix come the fused cells (FUSED_MATRIX: residual add +
norm, bias + activation, dropout + add), kept apart so the DESIGN.md matrix
stays as it was; the harness runs both (bench_matrix).

Cells that share op, shape, dtype and layout form a *group*: the harness makes
their inputs once and times the fwd and fwd+bwd cells together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

DTYPES = ("float32", "bfloat16")
MODES = ("fwd", "fwdbwd")
LAYOUTS = ("contiguous", "channels_last")

DTYPE_ALIASES = {
    "float32": "float32", "fp32": "float32", "f32": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "f16": "float16", "half": "float16",
}
SHORT_DTYPE = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "float64": "fp64"}
SHORT_LAYOUT = {"contiguous": "contig", "channels_last": "cl", "strided": "strided"}

N_ELEMENTWISE = 2**26
IMAGE = (64, 64, 112, 112)  # batch norm and pooling: 51.4M elements, 205 MB in float32


@dataclass(frozen=True)
class Cell:
    label: str  # what the table shows: 'gelu(tanh)', 'batch_norm2d+relu'
    op: str  # key of lamina.bench.anchors.OPS: 'gelu', 'batch_norm_relu'
    family: str  # 'activation', 'normalization', 'pooling', 'dropout'
    shape: tuple
    dtype: str  # 'float32' | 'bfloat16'
    layout: str  # 'contiguous' | 'channels_last'
    mode: str  # 'fwd' | 'fwdbwd'
    kwargs: tuple = ()  # the op's keyword arguments as sorted (name, value) pairs
    small: bool = False  # a small shape, there to show launch overhead

    @property
    def kw(self) -> dict:
        return dict(self.kwargs)

    @property
    def group(self) -> str:
        """Cells with the same group share their inputs (fwd and fwd+bwd)."""
        return "-".join([self.label, "x".join(map(str, self.shape)), SHORT_DTYPE[self.dtype], SHORT_LAYOUT[self.layout]])

    @property
    def id(self) -> str:
        return f"{self.group}-{self.mode}"

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Spec:
    """One line of the matrix: an op with its arguments, at some shapes and layouts."""

    label: str
    op: str
    family: str
    shapes: tuple
    layouts: tuple = ("contiguous",)
    kwargs: dict = field(default_factory=dict)
    small: bool = False


BOTH = ("contiguous", "channels_last")
FLAT = ((N_ELEMENTWISE,),)

MATRIX: tuple[Spec, ...] = (
    # activations and dropout on 2**26 elements
    Spec("relu", "relu", "activation", FLAT),
    Spec("leaky_relu", "leaky_relu", "activation", FLAT, kwargs={"negative_slope": 0.01}),
    # PReLU needs a channel dimension: (64, 64, 128, 128) is 2**26 elements
    Spec("prelu", "prelu", "activation", ((64, 64, 128, 128),)),
    Spec("sigmoid", "sigmoid", "activation", FLAT),
    Spec("tanh", "tanh", "activation", FLAT),
    Spec("gelu(none)", "gelu", "activation", FLAT, kwargs={"approximate": "none"}),
    Spec("gelu(tanh)", "gelu", "activation", FLAT, kwargs={"approximate": "tanh"}),
    Spec("silu", "silu", "activation", FLAT),
    Spec("swish(1.5)", "swish", "activation", FLAT, kwargs={"beta": 1.5}),
    Spec("dropout(0.1)", "dropout", "dropout", FLAT, kwargs={"p": 0.1}),
    # row norms
    Spec("layer_norm", "layer_norm", "normalization", ((32768, 4096), (131072, 1024))),
    Spec("rms_norm", "rms_norm", "normalization", ((32768, 4096), (131072, 1024))),
    # batch norm in training mode (batch statistics), alone and fused with ReLU
    Spec("batch_norm2d", "batch_norm", "normalization", (IMAGE,), BOTH),
    Spec("batch_norm2d+relu", "batch_norm_relu", "normalization", (IMAGE,), BOTH),
    Spec("group_norm", "group_norm", "normalization", ((16, 512, 64, 64),), kwargs={"num_groups": 32}),
    Spec("group_norm+silu", "group_norm_silu", "normalization", ((16, 512, 64, 64),), kwargs={"num_groups": 32}),
    Spec("instance_norm", "instance_norm", "normalization", ((16, 512, 64, 64),)),
    # pooling
    Spec("max_pool2d(3,s2,p1)", "max_pool2d", "pooling", (IMAGE,), BOTH, {"kernel_size": 3, "stride": 2, "padding": 1}),
    Spec("max_pool2d(2,s2)", "max_pool2d", "pooling", (IMAGE,), BOTH, {"kernel_size": 2, "stride": 2}),
    Spec("avg_pool2d(2,s2)", "avg_pool2d", "pooling", (IMAGE,), BOTH, {"kernel_size": 2, "stride": 2}),
    Spec("global_avg_pool", "adaptive_avg_pool2d", "pooling", ((256, 2048, 7, 7),), BOTH, {"output_size": 1}),
    # small shapes: launch overhead, not bandwidth
    Spec("layer_norm", "layer_norm", "normalization", ((4096, 768),), small=True),
    Spec("batch_norm2d", "batch_norm", "normalization", ((32, 64, 56, 56),), small=True),
)


# --- fused cells (issue #4), beyond the DESIGN.md matrix above ----------------------
# The fused layers of lamina.functional at the shapes of the ops they fuse:
# the row norms' (32768, 4096) and the elementwise ops' 2**26 elements. Each
# is timed against its composition in torch ops (eager, and torch.compile of
# that composition). Family 'fused', so `--ops fused` selects them all.
ROWS = ((32768, 4096),)

FUSED_MATRIX: tuple[Spec, ...] = (
    Spec("add+layer_norm", "add_layer_norm", "fused", ROWS, kwargs={"dropout_p": 0.0, "prenorm": False}),
    Spec("add+rms_norm", "add_rms_norm", "fused", ROWS, kwargs={"dropout_p": 0.0, "prenorm": False}),
    Spec("bias+gelu", "bias_act", "fused", ROWS, kwargs={"act": "gelu", "approximate": "none"}),
    Spec("dropout(0.1)+add", "dropout_add", "fused", FLAT, kwargs={"p": 0.1}),
)


def _cells(specs) -> list[Cell]:
    cells = []
    for spec in specs:
        kwargs = tuple(sorted(spec.kwargs.items()))
        for shape in spec.shapes:
            for dtype in DTYPES:
                for layout in spec.layouts:
                    for mode in MODES:
                        cells.append(Cell(spec.label, spec.op, spec.family, tuple(shape), dtype, layout, mode, kwargs, spec.small))
    return cells


def standard_matrix() -> list[Cell]:
    """Every cell of the DESIGN.md standard matrix, in a fixed order: spec,
    shape, dtype, layout, mode."""
    return _cells(MATRIX)


def fused_matrix() -> list[Cell]:
    """The fused cells (FUSED_MATRIX), in the same order."""
    return _cells(FUSED_MATRIX)


def bench_matrix() -> list[Cell]:
    """What the harness runs: the standard matrix, then the fused cells."""
    return standard_matrix() + fused_matrix()


# --- selection -------------------------------------------------------------------

def parse_list(text: str | None) -> list[str] | None:
    """'a, b,c' -> ['a', 'b', 'c']; None or '' -> None (no filter)."""
    if not text:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_dtypes(text: str | None) -> list[str] | None:
    names = parse_list(text)
    if names is None:
        return None
    out = []
    for name in names:
        if name.lower() not in DTYPE_ALIASES:
            raise ValueError(f"--dtype: unknown dtype {name!r}; expected one of float32, bfloat16, float16 (or fp32, bf16, fp16)")
        out.append(DTYPE_ALIASES[name.lower()])
    return out


def name_matches(tokens: list[str] | None, *names: str) -> bool:
    """True when no filter is given, or a token is one of ``names`` or a prefix
    of one ('batch_norm' selects batch_norm and batch_norm_relu)."""
    if tokens is None:
        return True
    return any(name.startswith(token) for token in tokens for name in names if name)


def parse_part(text: str | None) -> tuple[int, int] | None:
    """'2/3' -> (2, 3): the second of three parts."""
    if not text:
        return None
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--part must look like i/n (e.g. 2/3), got {text!r}") from None
    if not 1 <= i <= n:
        raise ValueError(f"--part {text}: expected 1 <= i <= n")
    return i, n


def take_part(items: list, part: tuple[int, int] | None) -> list:
    """The i-th of n parts, dealt round-robin so every part gets a mix of ops.
    The parts are disjoint and together hold every item, in their order."""
    if part is None:
        return list(items)
    i, n = part
    return [item for k, item in enumerate(items) if k % n == i - 1]


def select(cells: list[Cell], ops=None, dtypes=None, modes=None) -> list[Cell]:
    return [
        c
        for c in cells
        if name_matches(ops, c.op, c.label, c.family)
        and (dtypes is None or c.dtype in dtypes)
        and (modes is None or c.mode in modes)
    ]


def groups(cells: list[Cell]) -> list[list[Cell]]:
    """Cells grouped by shared inputs, in first-appearance order."""
    out: dict[str, list[Cell]] = {}
    for cell in cells:
        out.setdefault(cell.group, []).append(cell)
    return list(out.values())


def smoke_shape(shape: tuple) -> tuple:
    """A tiny version of a benchmark shape, for exercising the harness on the
    CPU: the channel dimension kept (it must divide into groups), the rest cut."""
    if len(shape) == 4:
        n, c, h, w = shape
        return (min(n, 2), c, min(h, 8), min(w, 8))
    if len(shape) == 2:
        return (min(shape[0], 8), shape[1])
    return tuple(min(s, 4096) for s in shape)
