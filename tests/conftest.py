import os
import sys

# Tests import lamina from src/ whether or not it is installed.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
