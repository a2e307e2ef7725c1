"""lamina: the basic neural-network layers, each with forward and backward,
as a readable NumPy reference and as Triton GPU kernels, behind PyTorch's API.

    import lamina
    y = lamina.functional.relu(x)        # torch.nn.functional's signature
    layer = lamina.nn.BatchNorm2d(64)    # torch.nn's signature and state_dict
    report = lamina.patch(model)         # swap a model's torch.nn layers in place
    lamina.set_compile_mode("kernels")   # inside torch.compile: lamina's kernels, not torch's ops

``lamina.reference`` (NumPy only) imports and runs without torch; the rest
needs torch.
"""

__version__ = "0.1.0"

try:
    import torch as _torch  # noqa: F401
except ImportError:  # only the NumPy reference is available
    _torch = None

if _torch is not None:
    from . import functional, nn  # noqa: F401,E402
    from . import patch as patch_module  # noqa: E402  (the module, since the name `patch` is the function)
    from .backend import get_backend, set_backend  # noqa: F401,E402
    from .patch import patch  # noqa: F401,E402
    from .under_compile import get_compile_mode, set_compile_mode  # noqa: F401,E402
