"""``python -m lamina``: the ``lamina`` command (lamina.cli) where the console
script is not installed, as in a source checkout (``PYTHONPATH=src``)."""

import sys

from .cli import main

sys.exit(main())
