"""lamina's NumPy reference: every layer's forward and backward, exact in float64.

NumPy only: this package never imports torch. Each family lives in one module:
``activation``, ``normalization``, ``pooling``, ``dropout``, ``fused``.
Pure functions ``<op>_forward(x, ...) -> (y, cache)`` and
``<op>_backward(dy, cache) -> dx`` (or ``(dx, dparams...)``), with thin layer
classes on top.
"""

from . import activation  # noqa: F401
from . import dropout  # noqa: F401
from . import normalization  # noqa: F401
from . import pooling  # noqa: F401
from . import fused  # noqa: F401
