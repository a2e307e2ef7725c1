"""Host microseconds of one Triton launch, taken apart: what lamina's fast
launcher pays (Triton's binder, then the compiled launcher with tensors) and
cheaper ways to hand the same launch to the driver -- raw pointers instead of
tensors (the C launcher then skips a data_ptr call and cuPointerGetAttribute
per pointer), the C launch function without CudaLauncher's Python wrapper,
and no binder at all (the floor). Values are checked equal across variants.

    PYTHONPATH=src python scripts/probe_launch_variants.py
"""

from __future__ import annotations

import time

import torch

from lamina.backend import kernels

K = kernels("activation")
N = 4096
BLOCK, WARPS = K.elementwise_block(4), K.ELEMENTWISE_WARPS
GRID = ((N + BLOCK - 1) // BLOCK,)
KERNEL = K._activation_backward_kernel
dy = torch.randn(N, device="cuda")
y = torch.randn(N, device="cuda").relu()
dx = torch.empty_like(y)
compiled = KERNEL[GRID](dy, y, dx, N, 0.0, ACT=0, BLOCK=BLOCK, num_warps=WARPS)
launcher = compiled.run  # triton's CudaLauncher
device = torch.cuda.current_device()
binder = KERNEL.device_caches[device][4]
bound, _, _ = binder(dy, y, dx, N, 0.0, ACT=0, BLOCK=BLOCK, num_warps=WARPS)
fixed = list(bound.values())
assert launcher.global_scratch_size == 0 and launcher.profile_scratch_size == 0


def fast_path():
    KERNEL[GRID](dy, y, dx, N, 0.0, ACT=0, BLOCK=BLOCK, num_warps=WARPS)


def binder_then_run_tensors():
    b, _, _ = binder(dy, y, dx, N, 0.0, ACT=0, BLOCK=BLOCK, num_warps=WARPS)
    stream = torch._C._cuda_getCurrentRawStream(device)
    compiled.run(GRID[0], 1, 1, stream, compiled.function, compiled.packed_metadata, None, None, None, *b.values())


def binder_then_run_pointers():
    b, _, _ = binder(dy, y, dx, N, 0.0, ACT=0, BLOCK=BLOCK, num_warps=WARPS)
    stream = torch._C._cuda_getCurrentRawStream(device)
    args = [a.data_ptr() if isinstance(a, torch.Tensor) else a for a in b.values()]
    compiled.run(GRID[0], 1, 1, stream, compiled.function, compiled.packed_metadata, None, None, None, *args)


def binder_then_c_launch():
    b, _, _ = binder(dy, y, dx, N, 0.0, ACT=0, BLOCK=BLOCK, num_warps=WARPS)
    stream = torch._C._cuda_getCurrentRawStream(device)
    args = [a.data_ptr() if isinstance(a, torch.Tensor) else a for a in b.values()]
    launcher.launch(GRID[0], 1, 1, stream, compiled.function, launcher.launch_cooperative_grid, launcher.launch_pdl,
                    None, None, compiled.packed_metadata, None, None, None, *args)


def c_launch_only():
    stream = torch._C._cuda_getCurrentRawStream(device)
    launcher.launch(GRID[0], 1, 1, stream, compiled.function, launcher.launch_cooperative_grid, launcher.launch_pdl,
                    None, None, compiled.packed_metadata, None, None, None,
                    dy.data_ptr(), y.data_ptr(), dx.data_ptr(), *fixed[3:])


def binder_only():
    binder(dy, y, dx, N, 0.0, ACT=0, BLOCK=BLOCK, num_warps=WARPS)


def torch_op():
    torch.mul(dy, y, out=dx)


VARIANTS = [fast_path, binder_then_run_tensors, binder_then_run_pointers, binder_then_c_launch, c_launch_only,
            binder_only, torch_op]

expected = None
for fn in VARIANTS[:5]:
    dx.zero_()
    fn()
    torch.cuda.synchronize()
    if expected is None:
        expected = dx.clone()
    assert torch.equal(dx, expected), fn.__name__

for round_ in range(3):
    line = []
    for fn in VARIANTS:
        for _ in range(200):
            fn()
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(2000):
            fn()
        us = (time.perf_counter() - t) / 2000 * 1e6
        torch.cuda.synchronize()
        line.append(f"{fn.__name__} {us:.2f}")
    print("us a call: " + ", ".join(line), flush=True)
