"""The base of the reference layer classes: parameters, gradients, train/eval.

A layer keeps the cache of its last forward and hands it to the matching
backward; parameters live in ``params`` and their gradients, after
``backward``, in ``grads`` (same keys). NumPy only.
"""

from __future__ import annotations

import numpy as np


class Layer:
    def __init__(self) -> None:
        self.training = True
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self._cache = None

    def train(self, mode: bool = True) -> "Layer":
        self.training = mode
        return self

    def eval(self) -> "Layer":
        return self.train(False)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def forward(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def backward(self, dy: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def _need_cache(self):
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return self._cache
