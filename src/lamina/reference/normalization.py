"""Normalization layers: forward and backward in NumPy, the formula beside the code.

Statistics are computed in float32 at least (float64 for float64 input), the
variance by two passes (mean first, then the mean of squared deviations), so a
large mean does not cancel the spread.
"""

from __future__ import annotations

import numpy as np

from .layer import Layer


# =============================================================================
# batch and instance norm
# =============================================================================


# =============================================================================
# layer, RMS and group norm
# =============================================================================
