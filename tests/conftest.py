import os
import sys

import pytest

# Tests import lamina from src/ whether or not it is installed.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

import lamina  # noqa: E402
import torch  # noqa: E402

# LAMINA_TEST_DEVICE=cuda runs a test file on the card: every tensor a test
# makes without naming a device lands there (the bad-input, edge and extreme
# tests are run this way on the GPU machine; CI leaves it unset: the CPU).
if os.environ.get("LAMINA_TEST_DEVICE"):
    torch.set_default_device(os.environ["LAMINA_TEST_DEVICE"])


@pytest.fixture
def backend():
    """``lamina.set_backend``, with the backend in force restored afterwards."""
    previous = lamina.get_backend()
    yield lamina.set_backend
    lamina.set_backend(previous)


@pytest.fixture(params=["reference", "triton"])
def each_backend(request):
    """Runs the test once on the NumPy reference and once on the Triton
    kernels (the interpreter on CPU tensors); yields the backend's name."""
    previous = lamina.get_backend()
    lamina.set_backend(request.param)
    yield request.param
    lamina.set_backend(previous)
