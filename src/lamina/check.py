"""``lamina check``: every op of :data:`lamina.optable.OPS`, forward and
backward, on this device against a float64 oracle.

The oracle is the case's PyTorch callable run in float64 on the CPU on the
same input values, the same parameters and the same upstream gradient. The
tolerances are the op tests' (:data:`lamina.optable.TOLERANCES`), so a pass
here means what a pass in ``tests/test_ops.py`` means, on whatever machine
this runs: the NumPy reference on a CPU, the Triton kernels on CUDA, or the
kernels under Triton's interpreter with ``--backend triton`` on a CPU.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import torch

DTYPES = {
    "float64": torch.float64,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def dtype_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in DTYPES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown dtype {', '.join(unknown) or repr(text)}; choose from {', '.join(DTYPES)}")
    return names


def op_list(text: str) -> list[str]:
    from .optable import OPS

    known = sorted({case.name for case in OPS})
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown op {', '.join(unknown) or repr(text)}; known ops: {', '.join(known)}")
    return names


def add_arguments(parser) -> None:
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None,
                        help="where lamina runs (default: cuda if available, else cpu)")
    parser.add_argument("--backend", choices=["auto", "reference", "triton"], default=None,
                        help="lamina's backend (default: $LAMINA_BACKEND or auto); "
                        "triton on a CPU runs the kernels under Triton's interpreter")
    parser.add_argument("--dtype", type=dtype_list, default=None, metavar="DTYPES",
                        help="comma-separated dtypes (default: float64,float32 for the reference, "
                        "float32,float16,bfloat16 for the kernels)")
    parser.add_argument("--ops", type=op_list, default=None, metavar="OPS",
                        help="comma-separated op names from the op table (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default: 0)")
    parser.set_defaults(run=run)


# --- one comparison ------------------------------------------------------------

class Result:
    """The worst error seen over a row's shapes, layouts and outputs."""

    def __init__(self):
        self.abs_err = 0.0
        self.rel_err = 0.0
        self.checked = 0
        self.failures: list[str] = []

    @property
    def passed(self) -> bool:
        return not self.failures


def compare(result: Result, actual, expected, dtype, reduce_len: int, what: str) -> None:
    """Record ``actual`` against ``expected`` with test_ops' rule:
    abs(actual - expected) <= atol + rtol * abs(expected), NaN equal to NaN,
    atol scaled by sqrt(reduce_len) for reduced gradients."""
    from .optable import TOLERANCES

    result.checked += 1
    if actual is None:
        result.failures.append(f"{what}: missing")
        return
    if tuple(actual.shape) != tuple(expected.shape):
        result.failures.append(f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}")
        return
    if expected.numel() == 0:
        return
    rtol, atol = TOLERANCES[dtype]
    atol = atol * math.sqrt(max(reduce_len, 1))
    a = actual.detach().to(device="cpu", dtype=torch.float64)
    e = expected.detach().to(device="cpu", dtype=torch.float64)
    diff = (a - e).abs()
    diff = torch.where(a == e, torch.zeros_like(diff), diff)  # equal infinities
    diff = torch.where(torch.isnan(a) & torch.isnan(e), torch.zeros_like(diff), diff)
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, math.inf), diff)  # NaN on one side only
    bad = diff > atol + rtol * e.abs()
    abs_err = diff.max().item()
    finite = e[torch.isfinite(e)]
    scale = finite.abs().max().item() if finite.numel() else 0.0
    rel_err = abs_err / scale if scale > 0 else (0.0 if abs_err == 0 else math.inf)
    result.abs_err = max(result.abs_err, abs_err)
    result.rel_err = max(result.rel_err, rel_err)
    if bool(bad.any()):
        count = int(bad.sum())
        result.failures.append(
            f"{what}: {count} of {bad.numel()} elements out of tolerance (rtol {rtol:g}, atol {atol:.3g}), "
            f"max abs err {abs_err:.3g}"
        )


def forward_backward(fn, x, params, kwargs, dy=None, seed=0):
    """Forward and backward of ``fn``: (y, dy used, [dx, dparams...]).

    ``dy`` defaults to standard normal values drawn in float64 from ``seed``
    and rounded to y's dtype; the oracle is then given the same values."""
    x = x.detach().clone(memory_format=torch.preserve_format).requires_grad_(True)
    params = [p.detach().clone().requires_grad_(True) for p in params]
    out = fn(x, *params, **kwargs)
    y = out[0] if isinstance(out, (tuple, list)) else out
    if dy is None:
        g = torch.Generator().manual_seed(seed + 1)
        dy = torch.randn(tuple(y.shape), generator=g, dtype=torch.float64).to(y.dtype)
    dy = dy.to(device=y.device, dtype=y.dtype)
    leaves = [x] + params
    if y.requires_grad:
        grads = torch.autograd.grad(y, leaves, dy, allow_unused=True)
    else:
        grads = [None] * len(leaves)
    return y.detach(), dy, [None if g is None else g.detach() for g in grads]


def check_one(case, shape, kwargs, dtype, layout, device, seed, result: Result) -> None:
    """One shape and layout of one row: lamina on ``device`` against the
    float64 oracle on the CPU. The seed is set once before the inputs are
    made, as in tests/test_ops.py, which random ops (dropout) rely on."""
    torch.manual_seed(seed)
    x = case.make_input(shape, dtype) if case.make_input else torch.randn(shape, dtype=torch.float64).to(dtype)
    params = case.params(shape, dtype)
    x_dev = x.to(device)
    if layout == "channels_last":
        x_dev = x_dev.contiguous(memory_format=torch.channels_last)
    y, dy, grads = forward_backward(case.lamina, x_dev, [p.to(device) for p in params], kwargs, seed=seed)
    # the oracle sees the same memory format: random ops (dropout) lay their
    # mask along memory order, so a channels_last input has its own mask
    x_ref = x_dev.cpu().double()  # .double() keeps the memory format
    y_ref, _, grads_ref = forward_backward(case.torch, x_ref, [p.double() for p in params], kwargs,
                                           dy=dy.cpu().double())
    where = f"{'x'.join(map(str, shape)) or 'scalar'} {layout}"
    compare(result, y, y_ref, dtype, 1, f"{where} forward")
    for i, (g, g_ref) in enumerate(zip(grads, grads_ref)):
        if g_ref is None:
            continue
        reduce_len = case.reduce_len(shape, kwargs) if (i > 0 and case.reduce_len) else 1
        compare(result, g, g_ref, dtype, reduce_len, f"{where} grad {'input' if i == 0 else f'param {i}'}")


# --- the table -----------------------------------------------------------------

def format_kwargs(kwargs: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "-"


def run(args) -> int:
    import lamina
    from .backend import use_kernels
    from .optable import OPS

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        print("lamina check: error: --device cuda: no CUDA device is available", file=sys.stderr)
        return 2
    previous_backend = lamina.get_backend()
    backend = args.backend or previous_backend
    lamina.set_backend(backend)
    try:
        probe = torch.empty(0, device=device)
        kernels = use_kernels(probe)
        if kernels:
            try:
                import triton  # noqa: F401
            except ImportError:
                print("lamina check: error: the triton backend needs the triton package (pip install triton)",
                      file=sys.stderr)
                return 1
        interpreted = kernels and device == "cpu"
        dtypes = args.dtype or (["float32", "float16", "bfloat16"] if kernels else ["float64", "float32"])
        what = ("Triton kernels under the interpreter" if interpreted
                else "Triton kernels" if kernels else "NumPy reference")
        print(f"lamina check: device {device}, backend {backend} ({what}); oracle: PyTorch float64 on the CPU")
        if interpreted:
            os.environ.setdefault("TRITON_INTERPRET", "1")

        cases = [c for c in OPS if args.ops is None or c.name in args.ops]
        rows = [(c, kw, d) for c in cases for kw in c.kwargs for d in dtypes]
        op_w = max([len("op")] + [len(c.name) for c, _, _ in rows])
        kw_w = max([len("kwargs")] + [len(format_kwargs(kw)) for _, kw, _ in rows])
        header = (f"{'op':<{op_w}}  {'kwargs':<{kw_w}}  {'dtype':<8}  {'checks':>6}  "
                  f"{'max abs err':>11}  {'max rel err':>11}  result")
        print(header)
        print("-" * len(header))
        failed = []
        start = time.perf_counter()
        for case, kwargs, dtype_name in rows:
            dtype = DTYPES[dtype_name]
            result = Result()
            # the interpreter is slow: it gets the table's small shapes
            shapes = case.small_shapes if interpreted else case.shapes
            for shape in shapes:
                layouts = ["contiguous", "channels_last"] if len(shape) == 4 else ["contiguous"]
                for layout in layouts:
                    try:
                        check_one(case, shape, kwargs, dtype, layout, device, args.seed, result)
                    except Exception as error:  # one broken op must not hide the others
                        where = f"{'x'.join(map(str, shape)) or 'scalar'} {layout}"
                        result.failures.append(f"{where}: {type(error).__name__}: {error}".splitlines()[0])
            status = "pass" if result.passed else "FAIL"
            print(f"{case.name:<{op_w}}  {format_kwargs(kwargs):<{kw_w}}  {dtype_name:<8}  {result.checked:>6}  "
                  f"{result.abs_err:>11.3g}  {result.rel_err:>11.3g}  {status}", flush=True)
            if not result.passed:
                failed.append((case.name, kwargs, dtype_name, result))
        seconds = time.perf_counter() - start
    finally:
        lamina.set_backend(previous_backend)

    if failed:
        print()
        for name, kwargs, dtype_name, result in failed:
            print(f"FAIL {name} ({format_kwargs(kwargs)}, {dtype_name}):")
            for message in result.failures[:5]:
                print(f"    {message}")
            if len(result.failures) > 5:
                print(f"    ... and {len(result.failures) - 5} more")
    print(f"({seconds:.1f} s; max rel err = max |lamina - oracle| / max |oracle|)")
    print(f"check: {len(rows) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0
