#!/usr/bin/env bash
# next_bwd.sh — the attention-backward candidates (issue 5; dev/cuda/attn_bwd_v2.cuh) in one short device call:
#   build   dev/cuda/build_bwd.sh (skipped when build-bwd/dev/attn_bwd_check exists: build it here and carry it)
#   check2  every candidate against the float64 reference on the check cases it supports (CASE / CAND filters)
#   time2   candidates beside production on the BENCHMARKS grid (D 64/128/256, S 2048/8192, causal 0/1, bf16)
#   fa2     bench/bench_attn_bwd.py --quick: PyTorch SDPA FA2 and cuDNN beside the library (FA2=0 skips it)
# The candidate table (TFLOP/s and ratio to production, whole call and main kernel alone) is printed last.
# Usage: bench/next_bwd.sh [steps...]   (default: build check2 time2 fa2). Logs in $OUT (or ./next_bwd_out).
# Exit status non-zero if a step failed (a check2 failure still lets time2 run: the table says which is fast,
# the check says which is right).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/next_bwd_out}
mkdir -p "$OUT"
steps=${*:-build check2 time2 fa2}
B=build-bwd/dev/attn_bwd_check
declare -a summary
status=0
step() {
  local name=$1; shift
  local t0=$(date +%s)
  echo "=== $name"
  if "$@"; then summary+=("ok    $name ($(( $(date +%s) - t0 )) s)")
  else summary+=("FAIL  $name ($(( $(date +%s) - t0 )) s)"); status=1; fi
}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,compute_cap --format=csv,noheader 2>&1 | tee "$OUT/gpu.txt"
git log -1 --format='commit %h %s' 2>/dev/null | tee -a "$OUT/gpu.txt"
build() {
  if [ -x "$B" ] && [ "${REBUILD:-0}" != 1 ]; then echo "using the carried $B"; return 0; fi
  local cc; cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '.')
  ARCH=${ARCH:-${cc:-90}} J=${J:-16} dev/cuda/build_bwd.sh > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; return 1; }
  grep -E "bwd2|spill" "$OUT/build.log" | grep -v " 0 bytes spill stores" | head -20
}
check2() {
  timeout "${CHECK_S:-240}" $B check2 "${CASE:-}" ${CAND:+"$CAND"} > "$OUT/check2.log" 2>&1; local rc=$?
  grep -E "FAIL|SKIP|check2:" "$OUT/check2.log" | tail -40; return $rc
}
time2() { timeout "${TIME_S:-300}" $B time2 0 ${CAND:+"$CAND"} > "$OUT/time2.log" 2>&1; local rc=$?; [ $rc -ne 0 ] && tail -20 "$OUT/time2.log"; return $rc; }
fa2() {
  [ "${FA2:-1}" = 0 ] && return 0
  PYTHONUNBUFFERED=1 timeout "${FA2_S:-240}" python3 bench/bench_attn_bwd.py --quick --csv "$OUT/bench_bwd.csv" \
    > "$OUT/bench_bwd.log" 2>&1
  local rc=$?; [ $rc -ne 0 ] && tail -20 "$OUT/bench_bwd.log"; return $rc
}
for s in $steps; do
  case $s in
    build) step build build ;; check2) step check2 check2 ;; time2) step time2 time2 ;; fa2) step fa2 fa2 ;;
    *) echo "unknown step $s"; exit 2 ;;
  esac
done
[ -f "$OUT/bench_bwd.log" ] && sed -n '/^## attention backward/,$p' "$OUT/bench_bwd.log"
[ -f "$OUT/time2.log" ] && sed -n '/^## candidates/,$p' "$OUT/time2.log" | sed 's/^T2 //'
echo "== next_bwd summary ($(head -1 "$OUT/gpu.txt"))"
printf '%s\n' "${summary[@]}"
exit $status
