"""Activations: forward and backward in NumPy, the formula beside the code.

Every function works elementwise on an array of any shape and dtype float32 or
float64, and never modifies its input.
"""

from __future__ import annotations

import numpy as np

from .layer import Layer


# --- ReLU --------------------------------------------------------------------

def relu_forward(x: np.ndarray):
    """y = max(x, 0).  NaN propagates (as in PyTorch)."""
    y = np.where(x > 0, x, np.zeros_like(x))
    y = np.where(np.isnan(x), x, y)
    return y, (y,)


def relu_backward(dy: np.ndarray, cache):
    """dx = dy * [y > 0].  Backward needs only the output (or one bit of it)."""
    (y,) = cache
    return np.where(y > 0, dy, np.zeros_like(dy))


class ReLU(Layer):
    def forward(self, x):
        y, self._cache = relu_forward(x)
        return y

    def backward(self, dy):
        return relu_backward(dy, self._need_cache())
