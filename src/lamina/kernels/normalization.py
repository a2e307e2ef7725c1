"""Normalization kernels and their launchers. Statistics in float32;
cross-program reductions through float32 partial buffers and a second pass
(no atomics), so results are bit-identical run after run."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


# =============================================================================
# batch and instance norm
# =============================================================================


# =============================================================================
# layer, RMS and group norm
# =============================================================================
