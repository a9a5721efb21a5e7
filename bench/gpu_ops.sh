#!/usr/bin/env bash
# gpu_ops.sh — the fused element-wise ops (RMSNorm, RoPE, SwiGLU) on a machine with a CUDA GPU, in one call:
#   1. configure and build with CUDA into build-gpu (sm_90 unless ARCH is set; ninja when present)
#   2. ctest -R 'rmsnorm|rope|swiglu' (the drivers run their CUDA cases against the float64 references)
#   3. compute-sanitizer memcheck + racecheck on small CUDA cases of each driver
#   4. bench/bench_ops.py (flashkit vs PyTorch eager and torch.compile, GB/s and fraction of copy bandwidth)
# Options: --no-build --no-tests --no-sanitize --no-bench --quick-bench --dtype DT (bench dtype, default bf16)
# Logs go to $OUT (or ./gpu_ops_out when OUT is unset); the short table is printed last.
# Exit status: non-zero if any step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_ops_out}
mkdir -p "$OUT"
ARCH=${ARCH:-90a}
JOBS=${JOBS:-16}
do_build=1 do_tests=1 do_san=1 do_bench=1 quick="" dtype=bf16
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) do_build=0 ;;
    --no-tests) do_tests=0 ;;
    --no-sanitize) do_san=0 ;;
    --no-bench) do_bench=0 ;;
    --quick-bench) quick="--quick" ;;
    --dtype) dtype="$2"; shift ;;
    *) echo "unknown option $1"; exit 2 ;;
  esac
  shift
done

declare -a summary
status=0
step() { # name, command...
  local name=$1; shift
  local t0=$(date +%s)
  echo "=== $name: $*"
  if "$@"; then summary+=("ok    $name ($(( $(date +%s) - t0 )) s)")
  else summary+=("FAIL  $name ($(( $(date +%s) - t0 )) s)"); status=1; fi
}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader 2>&1 | tee "$OUT/ops_gpu.txt"
git log -1 --format='commit %h %s' 2>/dev/null | tee -a "$OUT/ops_gpu.txt"

build() {
  local gen=""; command -v ninja >/dev/null && gen="-G Ninja"
  cmake -S . -B build-gpu $gen -DFK_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -DCMAKE_BUILD_TYPE=Release \
    > "$OUT/ops_build.log" 2>&1 && cmake --build build-gpu -j"$JOBS" >> "$OUT/ops_build.log" 2>&1
  local rc=$?
  grep -iE "error" "$OUT/ops_build.log" | head -20
  [ $rc -ne 0 ] && tail -40 "$OUT/ops_build.log"
  return $rc
}
tests() {
  (cd build-gpu && ctest --output-on-failure -j3 -R 'rmsnorm|rope|swiglu' > "$OUT/ops_ctest.log" 2>&1); local rc=$?
  grep -E "tests passed|Test +#|FAIL|passed, " "$OUT/ops_ctest.log" | tail -20
  grep -E "^ +FAIL" "$OUT/ops_ctest.log" | head -20
  return $rc
}
sanitize() {
  local rc=0 tool t
  # small CUDA cases of each driver: every kernel variant (vector / scalar, register / loop, both layouts)
  local -A filt=([rmsnorm]="cuda bf16" [rope]="cuda bf16 b=1" [swiglu]="cuda bf16")
  for tool in memcheck racecheck; do
    for t in rmsnorm rope swiglu; do
      compute-sanitizer --tool $tool --error-exitcode 9 build-gpu/test_$t -b cuda -p "${filt[$t]}" \
        > "$OUT/ops_sanitize_${t}_$tool.log" 2>&1 || { rc=1; echo "sanitizer $tool test_$t: FAILED"; }
      tail -2 "$OUT/ops_sanitize_${t}_$tool.log"
    done
  done
  return $rc
}
run_bench() {
  PYTHONUNBUFFERED=1 python3 bench/bench_ops.py $quick --dtype "$dtype" --csv "$OUT/ops_bench.csv" \
    > "$OUT/ops_bench.log" 2>&1; local rc=$?
  [ $rc -ne 0 ] && tail -30 "$OUT/ops_bench.log"
  return $rc
}

[ $do_build = 1 ] && step build build
[ $do_tests = 1 ] && step ctest tests
[ $do_san = 1 ] && step sanitize sanitize
[ $do_bench = 1 ] && step bench run_bench

echo
[ $do_bench = 1 ] && [ -f "$OUT/ops_bench.log" ] && sed -n '/^## fused ops/,$p' "$OUT/ops_bench.log"
echo
echo "== gpu_ops summary ($(head -1 "$OUT/ops_gpu.txt"))"
printf '%s\n' "${summary[@]}"
exit $status
