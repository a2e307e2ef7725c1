import os
import sys

import pytest

# Tests import lamina from src/ whether or not it is installed.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

import lamina  # noqa: E402


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
