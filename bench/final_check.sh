#!/usr/bin/env bash
# final_check.sh — the last device call of a session with little device time left: build, the CUDA test cases of
# the head dims that changed, the two attention benchmarks for them, then the dev checks of the Hopper backward
# (bench-independent: dev/cuda/wgmma_bwd_run.sh). Every step under its own timeout; one line per step.
# Env: DIMS (head dims, default "128 64"), OUT (logs).
set -uo pipefail
cd "$(dirname "$0")/.."
L=${OUT:-$PWD/final_out}
mkdir -p "$L"
DIMS=${DIMS:-"128 64"}
t0=$(date +%s)
el() { echo "$(( $(date +%s) - t0 )) s"; }
OUT=$L/build timeout 150 bash bench/gpu_check.sh --no-tests --no-dev --no-sanitize --no-bench > "$L/build.txt" 2>&1
echo "build rc=$? ($(el))"
for d in $DIMS; do
  timeout 80 build-gpu/test_attn -b cuda -p "d=$d," > "$L/test_attn_d$d.log" 2>&1
  echo "test_attn -b cuda d=$d rc=$? $(grep -E 'passed' "$L/test_attn_d$d.log" | tail -1) ($(el))"
  grep -m5 "FAIL" "$L/test_attn_d$d.log"
done
dims=$(echo $DIMS | tr ' ' ',')
timeout 60 python3 bench/bench_attn_bwd.py --dims "$dims" --quick > "$L/bwd.log" 2>&1
echo "bench_attn_bwd rc=$? ($(el))"; sed -n '/^## attention backward/,$p' "$L/bwd.log"
timeout 40 python3 bench/bench_attn.py --dims "$dims" --quick --no-mem > "$L/fwd.log" 2>&1
echo "bench_attn rc=$? ($(el))"; sed -n '/^## attention forward/,$p' "$L/fwd.log"
OUT=$L/wgbwd BUDGET=${WGBWD_BUDGET:-120} timeout 130 bash dev/cuda/wgmma_bwd_run.sh > "$L/wgbwd.txt" 2>&1
echo "wgmma_bwd_run rc=$? ($(el))"; tail -25 "$L/wgbwd.txt"
