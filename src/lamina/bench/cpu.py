"""``lamina bench`` on a machine without CUDA: lamina's NumPy reference
against PyTorch's CPU ops, forward + backward, timed in the same run.

Each op runs on one (32, 64, 56, 56) input (float32 by default) with a fixed
upstream gradient; the time of a repeat is forward plus backward, and the
median of several repeats is reported, lamina and PyTorch alternating so
that a busy machine slows both alike. The reference is written to be read,
not to be fast; the targets say how far behind PyTorch's tuned C++ it may
fall: normalization and pooling within 3x, the rest within 10x.

This is a measurement, never a test: nothing here passes or fails a build.
The GPU harness is ``lamina.bench.gpu``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..cli import ArgumentParser, positive_int

DEFAULT_SHAPE = (32, 64, 56, 56)
DTYPES = {"float32": torch.float32, "float64": torch.float64}
TARGETS = {"activation": 10.0, "normalization": 3.0, "pooling": 3.0, "dropout": 10.0}


# The tensors an op takes besides its input, by keyword (torch.nn.functional's
# names); those with requires_grad get gradients, and their backward is timed.

def no_params(shape, dtype):
    return {}


def affine(n, dtype):
    return {"weight": torch.rand(n, dtype=dtype).add_(0.5).requires_grad_(True),
            "bias": torch.randn(n, dtype=dtype).requires_grad_(True)}


def batch_norm_params(shape, dtype):
    """running statistics (no gradient) and a per-channel affine."""
    c = shape[1]
    return {"running_mean": torch.zeros(c, dtype=dtype), "running_var": torch.ones(c, dtype=dtype), **affine(c, dtype)}


def channel_affine(shape, dtype):
    return affine(shape[1], dtype)


def last_dim_affine(shape, dtype):
    return affine(shape[-1], dtype)


def last_dim_weight(shape, dtype):
    return {"weight": torch.rand(shape[-1], dtype=dtype).add_(0.5).requires_grad_(True)}


def prelu_weight(shape, dtype):
    return {"weight": torch.full((shape[1],), 0.25, dtype=dtype).requires_grad_(True)}


@dataclass
class BenchOp:
    name: str  # the row's label
    family: str  # activation, normalization, pooling or dropout: sets the target
    function: str  # the name in lamina.functional and in torch.nn.functional
    params: Callable = no_params  # (shape, dtype) -> {keyword: tensor}
    kwargs: dict = field(default_factory=dict)
    # keyword arguments that depend on the shape (normalized_shape, ...)
    shape_kwargs: Callable = lambda shape: {}

    @property
    def target(self) -> float:
        return TARGETS[self.family]


BENCH_OPS = [
    BenchOp("relu", "activation", "relu"),
    BenchOp("leaky_relu", "activation", "leaky_relu", kwargs={"negative_slope": 0.01}),
    BenchOp("prelu", "activation", "prelu", prelu_weight),
    BenchOp("sigmoid", "activation", "sigmoid"),
    BenchOp("tanh", "activation", "tanh"),
    BenchOp("gelu", "activation", "gelu"),
    BenchOp("gelu_tanh", "activation", "gelu", kwargs={"approximate": "tanh"}),
    BenchOp("silu", "activation", "silu"),
    BenchOp("batch_norm", "normalization", "batch_norm", batch_norm_params, {"training": True}),
    BenchOp("instance_norm", "normalization", "instance_norm"),
    BenchOp("layer_norm", "normalization", "layer_norm", last_dim_affine,
            shape_kwargs=lambda shape: {"normalized_shape": (shape[-1],)}),
    BenchOp("rms_norm", "normalization", "rms_norm", last_dim_weight,
            shape_kwargs=lambda shape: {"normalized_shape": (shape[-1],)}),
    BenchOp("group_norm", "normalization", "group_norm", channel_affine, {"num_groups": 8}),
    BenchOp("max_pool2d_3x3s2", "pooling", "max_pool2d", kwargs={"kernel_size": 3, "stride": 2, "padding": 1}),
    BenchOp("max_pool2d_2x2s2", "pooling", "max_pool2d", kwargs={"kernel_size": 2, "stride": 2}),
    BenchOp("avg_pool2d_2x2s2", "pooling", "avg_pool2d", kwargs={"kernel_size": 2, "stride": 2}),
    BenchOp("adaptive_avg_pool2d_1", "pooling", "adaptive_avg_pool2d", kwargs={"output_size": 1}),
    BenchOp("adaptive_max_pool2d_7", "pooling", "adaptive_max_pool2d", kwargs={"output_size": 7}),
    BenchOp("dropout", "dropout", "dropout", kwargs={"p": 0.1, "training": True}),
]


# --- arguments ------------------------------------------------------------------

def op_list(text: str) -> list[str]:
    known = [op.name for op in BENCH_OPS]
    functions = sorted({op.function for op in BENCH_OPS})
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known and n not in functions]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown op {', '.join(unknown) or repr(text)}; known: {', '.join(known)}")
    return names


def dtype_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in DTYPES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown dtype {', '.join(unknown) or repr(text)}; the CPU bench runs {', '.join(DTYPES)}")
    return names


def shape_arg(text: str) -> tuple:
    try:
        shape = tuple(int(s) for s in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected N,C,H,W (four positive integers), got {text!r}")
    return shape


def build_parser():
    parser = ArgumentParser(
        prog="lamina bench",
        description="Time lamina against PyTorch, forward + backward. With CUDA this runs the GPU harness "
        "(lamina.bench.gpu, its own options); on a CPU it compares lamina's NumPy reference with PyTorch's "
        "CPU ops (the options below), prints a table and writes JSON and a PNG chart.",
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None,
                        help="cuda: the GPU harness; cpu: this comparison (default: cuda if available)")
    parser.add_argument("--ops", type=op_list, default=None, metavar="OPS",
                        help="comma-separated ops or function names (default: all)")
    parser.add_argument("--dtype", type=dtype_list, default=["float32"], metavar="DTYPES",
                        help="comma-separated: float32, float64 (default: float32)")
    parser.add_argument("--shape", type=shape_arg, default=DEFAULT_SHAPE, metavar="N,C,H,W",
                        help="input shape (default: 32,64,56,56)")
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed repeats per op; the median is reported (default: 5)")
    parser.add_argument("--out", default=None, metavar="PATH",
                        help="JSON file to write (default: bench/results/cpu-<UTC date and time>.json); "
                        "the PNG chart goes beside it")
    return parser


# --- timing ----------------------------------------------------------------------

def make_call(function, x, params, kwargs, dy):
    """A closure that runs forward + backward once on fresh gradient slots."""
    leaves = [x] + [p for p in params.values() if p.requires_grad]

    def call():
        for leaf in leaves:
            leaf.grad = None
        y = function(x, **params, **kwargs)
        y = y[0] if isinstance(y, (tuple, list)) else y
        y.backward(dy)

    return call


def time_once(call) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1e3


def bench_op(op: BenchOp, shape, dtype, repeats: int) -> dict:
    """Median forward+backward milliseconds of lamina and of torch for one op."""
    import torch.nn.functional as TF

    import lamina.functional as F

    row = {"op": op.name, "function": op.function, "family": op.family, "dtype": str(dtype).replace("torch.", ""),
           "shape": list(shape), "kwargs": {k: v for k, v in op.kwargs.items()}, "target": op.target}
    lamina_fn = getattr(F, op.function, None)
    if lamina_fn is None:
        row["error"] = f"lamina.functional.{op.function} does not exist"
        return row
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=dtype)
    params = op.params(shape, dtype)
    kwargs = {**op.kwargs, **op.shape_kwargs(shape)}

    def fresh(tensors):  # each side its own copies (running statistics change)
        return {k: t.detach().clone().requires_grad_(t.requires_grad) for k, t in tensors.items()}

    samples = {"lamina": [], "torch": []}
    try:
        with torch.no_grad():
            dy = torch.randn_like(getattr(TF, op.function)(x, **fresh(params), **kwargs))
        calls = {
            "lamina": make_call(lamina_fn, x.clone().requires_grad_(True), fresh(params), kwargs, dy),
            "torch": make_call(getattr(TF, op.function), x.clone().requires_grad_(True), fresh(params), kwargs, dy),
        }
        for name, call in calls.items():  # one untimed warm-up each
            call()
        for _ in range(repeats):  # alternate, so background load hits both alike
            for name, call in calls.items():
                samples[name].append(time_once(call))
    except Exception as error:  # report it in the table, go on with the next op
        row["error"] = f"{type(error).__name__}: {error}".splitlines()[0]
        return row
    row["lamina_ms"] = statistics.median(samples["lamina"])
    row["torch_ms"] = statistics.median(samples["torch"])
    row["ratio"] = row["lamina_ms"] / row["torch_ms"]
    row["within_target"] = row["ratio"] <= op.target
    row["lamina_samples_ms"] = samples["lamina"]
    row["torch_samples_ms"] = samples["torch"]
    return row


# --- report ----------------------------------------------------------------------

def machine_info() -> dict:
    """What the numbers depend on (no host name)."""
    import numpy

    import lamina

    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "system": platform.platform(terse=True),
        "python": platform.python_version(),
        "lamina": lamina.__version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
    }


def print_table(rows: list[dict]) -> None:
    op_w = max([len("op")] + [len(r["op"]) for r in rows])
    header = f"{'op':<{op_w}}  {'dtype':<8}  {'lamina ms':>10}  {'torch ms':>9}  {'ratio':>7}  {'target':>6}  "
    print(header + "result")
    print("-" * (len(header) + 6))
    for r in rows:
        start = f"{r['op']:<{op_w}}  {r['dtype']:<8}  "
        if "error" in r:
            print(start + f"{'-':>10}  {'-':>9}  {'-':>7}  {r['target']:>5g}x  {r['error']}")
            continue
        verdict = "within" if r["within_target"] else "OVER"
        print(start + f"{r['lamina_ms']:>10.2f}  {r['torch_ms']:>9.2f}  {r['ratio']:>6.2f}x  "
              f"{r['target']:>5g}x  {verdict}")


def save_chart(rows: list[dict], path: str, title: str) -> None:
    """Horizontal bars of lamina/torch time per op, log scale, with each
    family's target marked; red bars are over their target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = [r for r in rows if "ratio" in r]
    if not timed:
        return
    labels = [f"{r['op']} ({r['dtype']})" for r in timed]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(timed) + 1.5))
    positions = range(len(timed))
    colors = ["tab:green" if r["within_target"] else "tab:red" for r in timed]
    ax.barh(positions, [r["ratio"] for r in timed], color=colors)
    ax.scatter([r["target"] for r in timed], positions, marker="|", s=200, color="black", label="target", zorder=3)
    ax.axvline(1.0, color="gray", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_yticks(list(positions), labels)
    ax.invert_yaxis()
    ax.set_xlabel("lamina time / PyTorch time (forward + backward, lower is better)")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)


def default_out(now: dt.datetime) -> str:
    return os.path.join("bench", "results", f"cpu-{now.strftime('%Y%m%d-%H%M%S')}.json")


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    import lamina

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    selected = [op for op in BENCH_OPS if args.ops is None or op.name in args.ops or op.function in args.ops]
    jobs = [(op, dtype_name) for dtype_name in args.dtype for op in selected]
    now = dt.datetime.now(dt.timezone.utc)
    out = args.out or default_out(now)

    print(f"lamina bench (CPU): lamina's NumPy reference vs PyTorch's CPU ops, forward + backward, "
          f"shape {tuple(args.shape)}, median of {args.repeats}; {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads")
    previous_backend = lamina.get_backend()
    lamina.set_backend("reference")  # the kernels under the interpreter are not what this measures
    rows = []
    try:
        for op, dtype_name in tqdm(jobs, desc="bench", unit="op", leave=False, dynamic_ncols=True):
            rows.append(bench_op(op, args.shape, DTYPES[dtype_name], args.repeats))
    finally:
        lamina.set_backend(previous_backend)
    print_table(rows)

    report = {
        "kind": "cpu",
        "date": now.isoformat(timespec="seconds"),
        "machine": machine_info(),
        "shape": list(args.shape),
        "repeats": args.repeats,
        "statistic": "median milliseconds of forward + backward",
        "results": rows,
    }
    directory = os.path.dirname(os.path.abspath(out))
    os.makedirs(directory, exist_ok=True)
    with open(out, "w") as f:
        json.dump(report, f, indent=2)
    chart = os.path.splitext(out)[0] + ".png"
    save_chart(rows, chart, f"lamina reference vs PyTorch, CPU, {tuple(args.shape)}")
    timed = [r for r in rows if "ratio" in r]
    within = sum(r["within_target"] for r in timed)
    print(f"{within} of {len(timed)} timed ops within target; {len(rows) - len(timed)} not run")
    print(f"results  {os.path.abspath(out)}")
    if timed:
        print(f"chart    {os.path.abspath(chart)}")
    return 0
