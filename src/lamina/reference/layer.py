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


# Elements per block in :func:`blockwise`: 32K float32 is 128 KiB per array,
# so a formula's few temporaries stay in the CPU's L2 cache.
BLOCK = 1 << 15


def blockwise(formula, *arrays: np.ndarray) -> np.ndarray:
    """``formula(*arrays)`` for an elementwise formula, evaluated block by block.

    A formula of k NumPy operations on whole 25 MB arrays reads and writes
    main memory k times and page-faults in every fresh temporary; on 32K
    elements at a time its temporaries stay in cache. The loop is over
    blocks, not elements: each block is still one vectorized call per
    operation. Arrays that are not all C-contiguous with the same shape
    (a channels_last view, a broadcast) take the formula whole.
    """
    shape = arrays[0].shape
    if arrays[0].ndim == 0:  # NumPy gives scalars, not arrays, for 0-d results
        return formula(*(np.reshape(a, 1) for a in arrays)).reshape(shape)
    if not all(a.flags.c_contiguous and a.shape == shape for a in arrays) or arrays[0].size <= BLOCK:
        return formula(*arrays)
    flat = [a.reshape(-1) for a in arrays]
    first = formula(*(f[:BLOCK] for f in flat))
    out = np.empty(flat[0].size, dtype=first.dtype)
    out[:BLOCK] = first
    for start in range(BLOCK, out.size, BLOCK):
        out[start:start + BLOCK] = formula(*(f[start:start + BLOCK] for f in flat))
    return out.reshape(shape)
