"""Benchmark harnesses: ``lamina.bench.gpu`` (Triton kernels against torch
eager, torch.compile and Liger-Kernel on a CUDA card) and ``lamina.bench.cpu``.

Nothing here is imported by ``lamina`` itself."""
