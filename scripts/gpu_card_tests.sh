#!/usr/bin/env bash
# Correctness on one H100/H200, in one device call (< 10 minutes), into $OUT:
#   1. tests/test_bad_input.py, test_edges.py, test_extremes.py and
#      test_properties.py (hypothesis) with every tensor on the card
#      (LAMINA_TEST_DEVICE=cuda): pytest.log, junit.xml;
#   2. the op table at realistic shapes against PyTorch in float64, with a
#      determinism check (python -m lamina.bench.gpu --check-only): check.json;
#   3. scripts/gpu_extremes.py: > 2**31 elements and run-to-run bitwise
#      equality of every op: gpu_extremes.json.
# pytest and hypothesis come from carried wheels (.whl/*.whl) when the machine
# has none.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/card}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv
LAMINA_TEST_DEVICE=cuda timeout "${TESTS_S:-200}" python3 -m pytest -q -p no:cacheprovider \
    --junitxml="$OUT/junit.xml" tests/test_bad_input.py tests/test_edges.py tests/test_extremes.py \
    tests/test_properties.py > "$OUT/pytest.log" 2>&1
echo "== pytest on the card: exit $? ($(tail -1 "$OUT/pytest.log"))"
# CHECK_OPS: only these ops (the harness's --ops), e.g. the rest of a check
# that an earlier call ran out of time for
timeout "${CHECK_S:-200}" python3 -m lamina.bench.gpu --check-only ${CHECK_OPS:+--ops "$CHECK_OPS"} --out "$OUT" \
    --budget-s $(( ${CHECK_S:-200} - 20 )) > "$OUT/check.log" 2>&1
echo "== op table check: exit $? ($(grep -cE ' check .*: ([0-9]+)/\1 ok$' "$OUT/check.log") items all ok; rows failed: $(grep -c 'FAIL' "$OUT/check.log"))"
if [ "${EXTREMES_S:-120}" != 0 ]; then
    python3 scripts/gpu_extremes.py --out "$OUT" --budget "${EXTREMES_S:-120}" > "$OUT/extremes.log" 2>&1
    echo "== extremes: exit $? ($(grep summary "$OUT/extremes.log"))"
fi
