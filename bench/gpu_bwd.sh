#!/usr/bin/env bash
# gpu_bwd.sh — the attention-backward checks in one call on a machine with a CUDA GPU:
#   check     dev/cuda attn_bwd_check check (every dtype, head dim and feature vs a float64 reference)
#   det       deterministic mode bit-identical over 10 runs
#   sanitize  compute-sanitizer memcheck + racecheck on attn_bwd_check small (every kernel instance)
#   time      tile variants and the whole call (attn_bwd_check time [D])
#   bench     bench/bench_attn_bwd.py (flashkit vs PyTorch FA2 / cuDNN), table last
#   build     dev/cuda/build_bwd.sh first (otherwise the carried build-bwd/dev binaries are used)
# Usage: bench/gpu_bwd.sh [steps...] (default: check det sanitize bench). BENCH_ARGS passes options to the bench.
# Logs go to $OUT (or ./gpu_bwd_out). Exit status non-zero if any step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_bwd_out}
mkdir -p "$OUT"
steps=${*:-check det sanitize bench}
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
nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv,noheader 2>&1 | tee "$OUT/gpu.txt"
git log -1 --format='commit %h %s' 2>/dev/null | tee -a "$OUT/gpu.txt"
build() { J=${J:-16} dev/cuda/build_bwd.sh > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; return 1; }; }
check() { $B check > "$OUT/check.log" 2>&1; local rc=$?; grep -E "FAIL|SKIP|check:" "$OUT/check.log" | tail -40; return $rc; }
det() { $B det > "$OUT/det.log" 2>&1; local rc=$?; cat "$OUT/det.log"; return $rc; }
sanitize() {
  local rc=0 tool
  for tool in memcheck racecheck; do
    compute-sanitizer --tool $tool --error-exitcode 9 $B small > "$OUT/sanitize_$tool.log" 2>&1 || rc=1
    grep -E "small:|ERROR SUMMARY|RACECHECK SUMMARY|FAIL" "$OUT/sanitize_$tool.log" | tail -5
  done
  return $rc
}
timing() { $B time ${TIME_D:-} 2>&1 | tee "$OUT/time.log"; }
bench() {
  PYTHONUNBUFFERED=1 python3 bench/bench_attn_bwd.py ${BENCH_ARGS:-} --csv "$OUT/bench_bwd.csv" > "$OUT/bench_bwd.log" 2>&1
  local rc=$?; [ $rc -ne 0 ] && tail -30 "$OUT/bench_bwd.log"; return $rc
}
for s in $steps; do
  case $s in
    build) step build build ;; check) step check check ;; det) step det det ;;
    sanitize) step sanitize sanitize ;; time) step time timing ;; bench) step bench bench ;;
    *) echo "unknown step $s"; exit 2 ;;
  esac
done
[ -f "$OUT/bench_bwd.log" ] && sed -n '/^## attention backward/,$p' "$OUT/bench_bwd.log"
echo "== gpu_bwd summary ($(head -1 "$OUT/gpu.txt"))"
printf '%s\n' "${summary[@]}"
exit $status
