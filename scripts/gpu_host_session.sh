#!/usr/bin/env bash
# One device call (< 10 minutes) after a host-time change, into $OUT:
#   1. scripts/probe_fast_launch.py: every op's values bitwise with the fast
#      launcher off and on, host us per fwd+bwd, a few host-bound cells;
#   2. scripts/probe_host_breakdown.py: where a layer's host time goes, by thread;
#   3. scripts/gpu_card_tests.sh: the card's pytest run and the op table for
#      CHECK_OPS (default: the normalization ops), no extremes.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/host}
mkdir -p "$OUT"
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
timeout 150 python3 scripts/probe_fast_launch.py --out "$OUT/fast_launch" > "$OUT/fast_launch.log" 2>&1
echo "== fast launch probe: exit $?"; tail -16 "$OUT/fast_launch.log"
timeout 90 python3 scripts/probe_host_breakdown.py > "$OUT/host_breakdown.log" 2>&1
echo "== host breakdown: exit $?"; cat "$OUT/host_breakdown.log"
OUT="$OUT/card" TESTS_S=${TESTS_S:-130} CHECK_S=${CHECK_S:-170} EXTREMES_S=0 \
    CHECK_OPS=${CHECK_OPS:-group_norm,batch_norm_train,batch_norm_eval,layer_norm,rms_norm} bash scripts/gpu_card_tests.sh
grep -E "FAIL|failed|error" "$OUT/card/check.log" | head -20
tail -3 "$OUT/card/pytest.log"
