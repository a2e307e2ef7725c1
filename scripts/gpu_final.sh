#!/usr/bin/env bash
# The final run on one H100/H200, in one device call (< 10 minutes):
#   1. scripts/gpu_session.sh: every op of the op table on the card against
#      PyTorch in float64 with a determinism check, then the standard
#      benchmark matrix against torch eager, torch.compile and Liger-Kernel
#      (TOTAL_S seconds, default 450);
#   2. scripts/gpu_extremes.py: tensors past 2**31 elements through an
#      activation, a norm and a pool, and bitwise run-to-run equality of
#      every op (EXTREMES_S seconds, default 90).
# Everything lands in $OUT: the session's six files plus gpu_extremes.json.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results}
TOTAL_S=${TOTAL_S:-450} bash scripts/gpu_session.sh "$@"
PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 \
    python3 scripts/gpu_extremes.py --out "$OUT" --budget "${EXTREMES_S:-90}" 2>&1 | tail -40
