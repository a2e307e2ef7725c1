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
