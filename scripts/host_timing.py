"""Host time of a call, for the probes: the GPU work is made negligible (tiny
tensors), so wall time per call is the Python, dispatcher and launch cost."""

import time

import torch


def per_call_us(fn, reps: int = 300) -> float:
    """Microseconds per call of ``fn``, after 20 warm-up calls, synchronized
    at both ends so queued GPU work is counted once."""
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps * 1e6


class TorchOpsRelu(torch.autograd.Function):
    """ReLU as a Python autograd.Function of torch ops: the host cost of a
    Python autograd node without lamina's launches, for the probes to set
    lamina's layers and torch's C++ ones against."""

    @staticmethod
    def forward(ctx, x):
        y = torch.relu(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        return dy * (y > 0)
