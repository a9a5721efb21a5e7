#!/usr/bin/env bash
# gpu_check.sh — everything the GPU needs checked, in one call on a machine with a CUDA GPU:
#   1. configure and build with CUDA (build-gpu, sm_90 unless ARCH is set), ninja when present
#   2. the whole test suite (ctest; the drivers run their CUDA cases when a GPU is present)
#   3. the standalone attention-forward check (dev/cuda, float64 reference on the GPU)
#   4. compute-sanitizer memcheck + racecheck on small cases of each CUDA kernel
#   5. bench/bench_attn.py (flashkit vs PyTorch FA2 / cuDNN / naive), short table last
#   --python: the Python suite's GPU cases (torch-cuda, CuPy) on the library in build-gpu
#   --ring:   bench/gpu_ring.sh on build-gpu (needs 2 GPUs: ring attention tests and benchmark)
# Options: --no-build --no-tests --no-dev --no-sanitize --no-bench --only-bench --quick-bench --python --ring
#          --time (tile-variant timing of dev/cuda) --test-filter STR (sanitizer case filter for test_attn: a
#          substring of its case signatures; default: every CUDA case. A filter that selects no case fails)
# Logs go to $OUT (or ./gpu_check_out when OUT is unset). Exit status: non-zero if any step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
ARCH=${ARCH:-90a}
JOBS=${JOBS:-16}
do_build=1 do_tests=1 do_dev=1 do_san=1 do_bench=1 quick=0 do_time=0 filter="" do_py=0 do_ring=0
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) do_build=0 ;;
    --no-tests) do_tests=0 ;;
    --no-dev) do_dev=0 ;;
    --no-sanitize) do_san=0 ;;
    --no-bench) do_bench=0 ;;
    --only-bench) do_tests=0 do_dev=0 do_san=0 ;;
    --quick-bench) quick=1 ;;
    --time) do_time=1 ;;
    --python) do_py=1 ;;
    --ring) do_ring=1 ;;
    --test-filter) filter="$2"; shift ;;
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

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader 2>&1 | tee "$OUT/gpu.txt"
git log -1 --format='commit %h %s' 2>/dev/null | tee -a "$OUT/gpu.txt"

build() {
  local gen=""; command -v ninja >/dev/null && gen="-G Ninja"
  cmake -S . -B build-gpu $gen -DFK_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -DCMAKE_BUILD_TYPE=Release \
    > "$OUT/build.log" 2>&1 && cmake --build build-gpu -j"$JOBS" >> "$OUT/build.log" 2>&1
  local rc=$?
  grep -iE "spill|error" "$OUT/build.log" | grep -v "0 bytes spill" | head -20
  [ $rc -ne 0 ] && tail -40 "$OUT/build.log"
  return $rc
}
tests() {
  (cd build-gpu && ctest --output-on-failure -j1 > "$OUT/ctest.log" 2>&1); local rc=$?
  grep -E "tests passed|Test +#|FAIL|skipped" "$OUT/ctest.log" | tail -25
  return $rc
}
dev_build() { J=$JOBS ARCH=$ARCH dev/cuda/build.sh > "$OUT/dev_build.log" 2>&1 || { tail -30 "$OUT/dev_build.log"; return 1; }; }
dev_check() {
  build-cuda/dev/attn_fwd_check check > "$OUT/dev_check.log" 2>&1; local rc=$?
  build-cuda/dev/attn_fwd_check vcheck >> "$OUT/dev_check.log" 2>&1 || rc=1
  grep -E "FAIL|check:" "$OUT/dev_check.log" | tail -30
  return $rc
}
dev_time() { build-cuda/dev/attn_fwd_check time 2>&1 | tee "$OUT/dev_time.log"; }
sanitize() {
  local rc=0 tool
  for tool in memcheck racecheck; do
    compute-sanitizer --tool $tool --error-exitcode 9 build-cuda/dev/attn_fwd_check small \
      > "$OUT/sanitize_dev_$tool.log" 2>&1 || rc=1
    tail -3 "$OUT/sanitize_dev_$tool.log"
    if [ -x build-gpu/test_attn ]; then
      local pargs=(-b cuda); [ -n "$filter" ] && pargs+=(-p "$filter")
      # the filter must select real cases (signatures change with the driver): count them first, unsanitized
      if [ "$tool" = memcheck ] && ! build-gpu/test_attn "${pargs[@]}" | grep -qE ": [1-9][0-9]* passed"; then
        echo "test_attn ${pargs[*]}: no passing CUDA case selected (filter '$filter')"; rc=1; continue
      fi
      timeout 480 compute-sanitizer --tool $tool --error-exitcode 9 build-gpu/test_attn "${pargs[@]}" \
        > "$OUT/sanitize_test_attn_$tool.log" 2>&1 || rc=1
      tail -3 "$OUT/sanitize_test_attn_$tool.log"
    fi
  done
  return $rc
}
pytests() {
  (cd python && FLASHKIT_LIBRARY="$PWD/../build-gpu/libflashkit.so" PYTHONUNBUFFERED=1 timeout 420 \
     python3 -m pytest -q -rs -p no:cacheprovider tests -k "cuda or cupy") > "$OUT/pytest_gpu.log" 2>&1
  local rc=$?
  grep -E "passed|failed|error" "$OUT/pytest_gpu.log" | tail -5
  [ $rc -ne 0 ] && grep -E "^(FAILED|ERROR)" "$OUT/pytest_gpu.log" | head -20
  return $rc
}
ring() { bash bench/gpu_ring.sh build-gpu; }
run_bench() {
  local q=""; [ $quick = 1 ] && q="--quick"
  PYTHONUNBUFFERED=1 python3 bench/bench_attn.py $q --csv "$OUT/bench.csv" > "$OUT/bench.log" 2>&1; local rc=$?
  [ $rc -ne 0 ] && tail -30 "$OUT/bench.log"
  return $rc
}

[ $do_build = 1 ] && step build build
[ $do_tests = 1 ] && step ctest tests
if [ $do_dev = 1 ] || [ $do_san = 1 ] || [ $do_time = 1 ] || [ $do_bench = 1 ]; then
  { [ $do_build = 1 ] || [ ! -x build-cuda/dev/attn_fwd_check ]; } && step dev-build dev_build
fi
[ $do_py = 1 ] && step python pytests
[ $do_ring = 1 ] && step ring ring
[ $do_dev = 1 ] && step dev-check dev_check
[ $do_san = 1 ] && step sanitize sanitize
[ $do_time = 1 ] && step dev-time dev_time
[ $do_bench = 1 ] && step bench run_bench

echo
[ $do_bench = 1 ] && [ -f "$OUT/bench.log" ] && sed -n '/^## attention forward/,$p' "$OUT/bench.log"
echo
echo "== gpu_check summary ($(head -1 "$OUT/gpu.txt"))"
printf '%s\n' "${summary[@]}"
exit $status
