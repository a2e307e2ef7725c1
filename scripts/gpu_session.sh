#!/usr/bin/env bash
# The one command to run on the GPU machine (one H100/H200, no network):
#
#     bash scripts/gpu_session.sh [extra harness flags, e.g. --quick or --ops layer_norm]
#
# It installs a carried Liger-Kernel wheel (.whl/*.whl) if there is one, prints
# nvidia-smi, then runs lamina's correctness check on the card followed by the
# benchmark, in one harness process (python -m lamina.bench.gpu --check), and
# writes everything into $OUT (default bench/results): session.log (all of the
# output), results.jsonl (raw records, written as they come), check.json,
# bench.json, bench.txt (the table) and bench.png (the chart).
#
# Time plan, for a call limited to 10 minutes (aim: done by 9, TOTAL_S=540):
#   Liger wheel install, nvidia-smi               ~5 s
#   harness start (torch, triton, lamina imports)  ~10 s, copy roof ~1 s
#   correctness check, 3 dtypes                    ~60-90 s, mostly Triton JIT of lamina's kernels
#   benchmark: lamina, eager, Liger                ~100-150 s: 62 groups x 2 modes x ~3 implementations,
#                                                  each do_bench ~0.15-0.2 s (warmup 25 ms, rep 100 ms),
#                                                  plus input set-up and JIT
#   torch.compile anchor                           what is left, bfloat16 first: ~3-8 s a group with cold
#                                                  caches (62 groups: ~300 s; a short budget reports the
#                                                  rest as not run)
#   report (JSON, table, PNG)                      ~5-10 s
# The harness stops starting work when its budget (--budget-s, computed below
# from TOTAL_S and the time already spent) runs out, kills a worker stuck on
# one item (60 s; a compile item 120 s) or past the budget (+15 s), and always
# writes its report.
# --quick (do_bench warmup 5 ms, rep 25 ms) saves ~60 s; --no-compile saves the
# whole compile phase.

set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
TOTAL_S=${TOTAL_S:-540}
OUT=${OUT:-bench/results}
mkdir -p "$OUT"

session() {
    if compgen -G ".whl/*.whl" > /dev/null; then
        echo "== installing carried wheels: $(ls .whl/*.whl | xargs -n1 basename | tr '\n' ' ')"
        python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
            && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fi
    export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
    export PYTHONUNBUFFERED=1
    echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ) $(hostname)"
    nvidia-smi || echo "nvidia-smi failed"
    local spent=$(( $(date +%s) - START ))
    # leave ~35 s after the budget: the supervisor's grace before it kills a
    # worker (15 s) and the report
    local budget=$(( TOTAL_S - spent - 35 ))
    echo "== lamina bench: budget ${budget} s (spent ${spent} s so far)"
    # CHECK=0: the benchmark alone (the check run in a call of its own)
    local check=--check
    [ "${CHECK:-1}" = 0 ] && check=
    python3 -m lamina.bench.gpu $check --out "$OUT" --budget-s "$budget" "$@"
    local rc=$?
    echo "== done in $(( $(date +%s) - START )) s, harness exit code $rc (1: a check failed or a cell has an error)"
    ls -la "$OUT"
}

session "$@" 2>&1 | tee "$OUT/session.log"
exit "${PIPESTATUS[0]}"
