"""lamina's Triton kernels, one module per family, kernel and launcher side by
side. Launchers take and return torch tensors; nothing here is torch.nn.

Import these modules through :func:`lamina.backend.kernels`, which switches on
Triton's interpreter first on a machine without CUDA.
"""
