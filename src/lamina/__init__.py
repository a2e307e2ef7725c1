"""lamina: the basic neural-network layers, each with forward and backward,
as a readable NumPy reference and as Triton GPU kernels, behind PyTorch's API.

    import lamina
    y = lamina.functional.relu(x)        # torch.nn.functional's signature
    layer = lamina.nn.BatchNorm2d(64)    # torch.nn's signature and state_dict
"""

from . import functional, nn  # noqa: F401
from .backend import get_backend, set_backend  # noqa: F401

__version__ = "0.1.0"
