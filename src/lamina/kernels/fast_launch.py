"""A shortcut past Triton's launch path, for host time.

On by default with Triton 3.6 on a GPU; ``LAMINA_FAST_LAUNCH=0`` (read when
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


def _fast_run(self, *args, grid, warmup, **kwargs):
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


def install(module) -> int:
    """Gives every Triton kernel of ``module`` the fast ``run``; returns how many."""
    global _current_device, _raw_stream
    # the C functions behind torch.cuda.current_device (after its lazy-init
    # check, done by now) and the current stream's handle: ~1 us less a launch
    _current_device = torch._C._cuda_getDevice
    _raw_stream = torch._C._cuda_getCurrentRawStream
    count = 0
    for value in vars(module).values():
        if isinstance(value, JITFunction) and not hasattr(value, "_lamina_launchers"):
            value._lamina_launchers = {}
            value.run = _fast_run.__get__(value)
            count += 1
    return count
