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
kernel's launcher directly on the current raw stream. Anything unusual -- a
launch hook installed (a profiler), a warm-up call, a device without a cache
yet -- takes Triton's own path. (Until 2026-11-28 the hook test read
Triton 3.6's always-present HookChain as "a hook is installed", so every
launch took Triton's path and the launcher did nothing; measured then with
cProfile on an H200 host, scripts/probe_step_profile.py.) It leans on Triton 3.6 internals
(``device_caches``, the binder, ``CompiledKernel.run``'s argument list),
hence the version check; scripts/probe_fast_launch.py compares values
(bitwise) and host time with it off and on, on a card.
"""

from __future__ import annotations

import os

import torch
import triton
from triton.runtime.jit import JITFunction
from triton import knobs


def enabled() -> bool:
    return (os.environ.get("LAMINA_FAST_LAUNCH", "1") != "0" and os.environ.get("TRITON_INTERPRET") != "1"
            and triton.__version__.startswith("3.6.") and torch.cuda.is_available())


def _hooked(hook) -> bool:
    """A launch hook is installed. Triton 3.6's knobs hold a HookChain that is
    never None (an empty chain means no hook); older ones, a function or None."""
    return hook is not None and bool(getattr(hook, "calls", True))


def _fast_run(self, *args, grid, warmup, **kwargs):
    if warmup or _hooked(knobs.runtime.launch_enter_hook) or _hooked(knobs.runtime.launch_exit_hook):
        return JITFunction.run(self, *args, grid=grid, warmup=warmup, **kwargs)
    device = torch.cuda.current_device()
    caches = self.device_caches.get(device) if hasattr(self.device_caches, "get") else None
    if caches is None:
        return JITFunction.run(self, *args, grid=grid, warmup=warmup, **kwargs)
    binder = caches[4]
    bound_args, specialization, options = binder(*args, **kwargs)
    key = (device, tuple(specialization), tuple(options.items()))
    kernel = self._lamina_launchers.get(key)
    if kernel is None:
        # first launch of this specialization: Triton's own path compiles,
        # checks and launches; the compiled kernel is kept for the next ones
        kernel = JITFunction.run(self, *args, grid=grid, warmup=warmup, **kwargs)
        if kernel is not None and not hasattr(kernel, "result"):
            self._lamina_launchers[key] = kernel
        return kernel
    if callable(grid):
        grid = grid(bound_args)
    g1 = grid[1] if len(grid) > 1 else 1
    g2 = grid[2] if len(grid) > 2 else 1
    stream = torch._C._cuda_getCurrentRawStream(device)
    kernel.run(grid[0], g1, g2, stream, kernel.function, kernel.packed_metadata, None, None, None,
               *bound_args.values())
    return kernel


def install(module) -> int:
    """Gives every Triton kernel of ``module`` the fast ``run``; returns how many."""
    count = 0
    for value in vars(module).values():
        if isinstance(value, JITFunction) and not hasattr(value, "_lamina_launchers"):
            value._lamina_launchers = {}
            value.run = _fast_run.__get__(value)
            count += 1
    return count
