"""Benchmarks: the GPU harness (gpu.py) and the CPU comparison (cpu.py)."""
