"""lamina.reference is NumPy only: it imports, and computes, with torch
unavailable (sys.modules['torch'] = None makes any torch import fail)."""

import os
import subprocess
import sys

SRC = os.path.join(os.path.dirname(__file__), "..", "src")

PROGRAM = """
import sys
sys.modules['torch'] = None
import numpy as np
import lamina.reference as ref
from lamina.reference import activation, normalization, pooling, dropout
x = np.linspace(-2, 2, 24).reshape(2, 3, 2, 2)
y, cache = activation.relu_forward(x)
assert (y >= 0).all() and activation.relu_backward(np.ones_like(y), cache).shape == x.shape
print('ok', sorted(m for m in sys.modules if m.startswith('lamina')))
"""


def test_reference_imports_and_runs_without_torch():
    env = dict(os.environ, PYTHONPATH=os.path.abspath(SRC))
    done = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok")
    assert "lamina.functional" not in done.stdout  # the torch-facing package was never imported
