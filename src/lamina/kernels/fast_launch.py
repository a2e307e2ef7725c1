"""How lamina's kernels launch: a shortcut past Triton's launch path, for
host time, and a way into torch.compile's graphs.

Tracing: under torch.compile a lamina op on CUDA tensors is traced into
(custom_op.py; which layers still call their op there: under_compile.py),
so its launches see FunctionalTensors, not data. Such a
launch goes to ``torch.library.wrap_triton``, which records the kernel in
the graph; Inductor then calls the kernel from its own generated code,
past lamina's Python. Every launched kernel's ``run`` does this check
(``install``), with the shortcut below on or off.

The shortcut is on by default with Triton 3.6 on a GPU; ``LAMINA_FAST_LAUNCH=0`` (read when
lamina's kernels are first imported) turns it off, and it is never used
under the interpreter or with another Triton version.

Why: a layer's forward+backward is often bound by host time, not by the GPU
(bench/NOTES-perf.md): ``JITFunction.run`` costs about 25 us a launch on an
H200 host, more on autograd's backward thread. Much of it is not the launch:
reading knobs from the environment, stringifying the options into the cache
key, checking globals, building launch metadata, a Stream object per call.

How: each launched kernel's ``run`` is replaced by one that asks Triton's own
binder for the specialization (so alignment and constant-1 specializations
are exactly Triton's), keeps the compiled kernel under (specialization,
options) after the first, ordinary launch, and then calls the compiled
kernel's C launch function directly on the current raw stream, past
Triton's Python wrapper of it (scripts/probe_launch_variants.py times each
piece on a card). Anything unusual -- a launch hook installed (a profiler),
a pre-run hook, a warm-up call, a device without a cache yet, a kernel that
needs scratch memory -- takes Triton's own path. (Until 2026-11-28 the hook
test read Triton 3.6's always-present HookChain as "a hook is installed",
so every launch took Triton's path and the launcher did nothing; measured
then with cProfile on an H200 host, scripts/probe_step_profile.py.) It
leans on Triton 3.6 internals (``device_caches``, the binder, the C launch
function's argument list),
hence the version check; scripts/probe_fast_launch.py compares values
(bitwise) and host time with it off and on, on a card.
"""

from __future__ import annotations

import os

import torch
import triton
from triton.runtime.jit import JITFunction
from triton import knobs
from torch.library import wrap_triton
from torch._subclasses.fake_tensor import FakeTensor
from torch._subclasses.functional_tensor import FunctionalTensor

_TRACER_TENSORS = (FakeTensor, FunctionalTensor)


_current_device = _raw_stream = None  # set by install()


def enabled() -> bool:
    return (os.environ.get("LAMINA_FAST_LAUNCH", "1") != "0" and os.environ.get("TRITON_INTERPRET") != "1"
            and triton.__version__.startswith("3.6.") and torch.cuda.is_available())


def _hooked(hook) -> bool:
    """A launch hook is installed. Triton 3.6's knobs hold a HookChain that is
    never None (an empty chain means no hook); older ones, a function or None."""
    return hook is not None and bool(getattr(hook, "calls", True))


class _Launch:
    """A compiled kernel ready for the driver: Triton's C launch function
    called directly, without ``CudaLauncher.__call__``'s Python (scratch
    allocation, which these kernels never need: checked when kept)."""

    __slots__ = ("kernel", "launch", "function", "metadata", "cooperative", "pdl")

    def __init__(self, kernel):
        runner = kernel.run
        self.kernel = kernel
        self.launch = runner.launch
        self.function = kernel.function
        self.metadata = kernel.packed_metadata
        self.cooperative = runner.launch_cooperative_grid
        self.pdl = runner.launch_pdl

    @staticmethod
    def suits(kernel) -> bool:
        runner = getattr(kernel, "run", None)
        return (not hasattr(kernel, "result") and hasattr(runner, "launch")
                and getattr(runner, "global_scratch_size", 1) == 0 and getattr(runner, "profile_scratch_size", 1) == 0)


def _traced(args) -> bool:
    """The launch's first tensor is a tracer's (FunctionalTensor, FakeTensor):
    torch.compile is tracing the op, there is no data to launch on."""
    for a in args:
        if isinstance(a, torch.Tensor):
            return isinstance(a, _TRACER_TENSORS)
    return False


def _launch_in_graph(kernel, grid, args, kwargs):
    """Records the launch in the graph being traced. ``wrap_triton`` wants
    every parameter by name (the kernel's defaults filled in) and, for
    Inductor's launcher (torch 2.11), a grid of three dimensions."""
    params = kernel.signature.parameters
    options = {name: kwargs.pop(name) for name in list(kwargs) if name not in params}
    bound = kernel.signature.bind(*args, **kwargs)
    bound.apply_defaults()
    if callable(grid):
        grid = (lambda meta, g=grid: _three_dims(g(meta)))
    else:
        grid = _three_dims(grid)
    return wrap_triton(kernel)[grid](**bound.arguments, **options)


def _three_dims(grid):
    return tuple(grid) + (1,) * (3 - len(grid))


def _traceable_run(self, *args, grid, warmup, **kwargs):
    if _traced(args):
        return _launch_in_graph(self, grid, args, kwargs)
    return JITFunction.run(self, *args, grid=grid, warmup=warmup, **kwargs)


def _fast_run(self, *args, grid, warmup, **kwargs):
    if _traced(args):
        return _launch_in_graph(self, grid, args, kwargs)
    if warmup or self.pre_run_hooks or _hooked(knobs.runtime.launch_enter_hook) or _hooked(knobs.runtime.launch_exit_hook):
        return JITFunction.run(self, *args, grid=grid, warmup=warmup, **kwargs)
    device = _current_device()
    caches = self.device_caches.get(device) if hasattr(self.device_caches, "get") else None
    if caches is None:
        return JITFunction.run(self, *args, grid=grid, warmup=warmup, **kwargs)
    bound_args, specialization, options = caches[4](*args, **kwargs)
    key = (device, tuple(specialization), tuple(options.items()) if options else ())
    ready = self._lamina_launchers.get(key)
    if ready is None:
        # first launch of this specialization: Triton's own path compiles,
        # checks and launches; the compiled kernel is kept for the next ones
        kernel = JITFunction.run(self, *args, grid=grid, warmup=warmup, **kwargs)
        if kernel is not None and _Launch.suits(kernel):
            self._lamina_launchers[key] = _Launch(kernel)
        return kernel
    if callable(grid):
        grid = grid(bound_args)
    n = len(grid)
    ready.launch(grid[0], grid[1] if n > 1 else 1, grid[2] if n > 2 else 1, _raw_stream(device), ready.function,
                 ready.cooperative, ready.pdl, None, None, ready.metadata, None, None, None, *bound_args.values())
    return ready.kernel


def install(module, fast: bool = True) -> int:
    """Gives every Triton kernel of ``module`` a ``run`` that hands traced
    launches to torch.compile, and takes the shortcut when ``fast``; returns
    how many kernels."""
    global _current_device, _raw_stream
    if fast:
        # the C functions behind torch.cuda.current_device (after its lazy-init
        # check, done by now) and the current stream's handle: ~1 us less a launch
        _current_device = torch._C._cuda_getDevice
        _raw_stream = torch._C._cuda_getCurrentRawStream
    count = 0
    for value in vars(module).values():
        if isinstance(value, JITFunction) and not hasattr(value, "_lamina_launchers"):
            value._lamina_launchers = {}
            value.run = (_fast_run if fast else _traceable_run).__get__(value)
            count += 1
    return count
