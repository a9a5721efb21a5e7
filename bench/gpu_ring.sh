#!/usr/bin/env bash
# gpu_ring.sh — ring attention on a machine with 2+ GPUs, in one call (about 3-5 minutes):
#   1. find NCCL (libnccl.so.2 for run time, nccl.h for the build) and say which was used
#   2. build flashkit_static, test_ring and bench_ring in BUILD (argument; default build-gpu, configured here
#      with CUDA for sm_$ARCH when it is not configured yet; re-configured with nccl.h's folder when needed)
#   3. test_ring: the 2-GPU cases must RUN (a skip fails this script), then the NCCL-not-loadable check
#   4. compute-sanitizer memcheck on one small ring case (NCCL's own kernels included; --no-sanitize skips)
#   5. bench_ring (2 GPUs vs 1 at total seqlen 16k-128k, bf16, 16 heads, head dim 128), short table last
# Usage: bash bench/gpu_ring.sh [BUILD] [--quick] [--no-sanitize] [--no-bench]
# Logs go to $OUT (or ./gpu_ring_out). Exit status: non-zero if any step failed.
# NVLink multicast stays off: NCCL_NVLS_ENABLE=0, TORCH_SYMM_MEM_DISABLE_MULTICAST=1, NVSHMEM_DISABLE_NVLS=1.
set -uo pipefail
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
OUT=${OUT:-$PWD/gpu_ring_out}
mkdir -p "$OUT"
ARCH=${ARCH:-90a}
JOBS=${JOBS:-16}
BUILD=build-gpu quick=0 do_san=1 do_bench=1
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --no-sanitize) do_san=0 ;;
    --no-bench) do_bench=0 ;;
    -*) echo "unknown option $1"; exit 2 ;;
    *) BUILD=$1 ;;
  esac
  shift
done

declare -a summary
status=0
step() { # name, command...
  local name=$1; shift
  local t0=$(date +%s)
  echo "=== $name"
  if "$@"; then summary+=("ok    $name ($(( $(date +%s) - t0 )) s)")
  else summary+=("FAIL  $name ($(( $(date +%s) - t0 )) s)"); status=1; fi
}

nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "$OUT/gpu.txt"
nvidia-smi topo -m >> "$OUT/gpu.txt" 2>&1
git log -1 --format='commit %h %s' 2>/dev/null | tee -a "$OUT/gpu.txt"

# --- 1. NCCL ------------------------------------------------------------------------------------------------
find_nccl() {
  local cands=() d py
  [ -n "${FK_NCCL_LIBRARY:-}" ] && cands+=("$FK_NCCL_LIBRARY")
  for py in python3 /opt/torch/.venv/bin/python; do
    command -v "$py" >/dev/null 2>&1 || [ -x "$py" ] || continue
    d=$("$py" -c 'import nvidia.nccl, os; print(os.path.dirname(nvidia.nccl.__file__))' 2>/dev/null) || continue
    [ -n "$d" ] && cands+=("$d/lib/libnccl.so.2")
  done
  for d in /opt/torch/.venv /usr/local/lib/python3*/dist-packages /usr/lib/python3/dist-packages; do
    [ -d "$d" ] || continue
    while IFS= read -r f; do cands+=("$f"); done < <(find $d -name 'libnccl.so.2' 2>/dev/null | head -3)
  done
  for d in ${CUDA_HOME:-/usr/local/cuda}/lib64 ${CUDA_HOME:-/usr/local/cuda}/lib /usr/local/cuda*/lib* \
           /usr/lib/x86_64-linux-gnu /usr/lib64; do
    cands+=("$d/libnccl.so.2")
  done
  local f
  for f in "${cands[@]}"; do
    if [ -f "$f" ]; then NCCL_LIB=$(readlink -f "$f"); break; fi
  done
  [ -z "${NCCL_LIB:-}" ] && f=$(ldconfig -p 2>/dev/null | awk '/libnccl\.so\.2/ {print $NF; exit}') && [ -n "$f" ] && NCCL_LIB=$f
  if [ -z "${NCCL_LIB:-}" ]; then echo "libnccl.so.2 not found (set FK_NCCL_LIBRARY)"; return 1; fi
  export FK_NCCL_LIBRARY=$NCCL_LIB
  export LD_LIBRARY_PATH=$(dirname "$NCCL_LIB")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  echo "NCCL library: $FK_NCCL_LIBRARY"
  # nccl.h: next to the library (pip wheel: .../nccl/include), the CUDA toolkit, the system.
  local inc
  for inc in "$(dirname "$(dirname "$NCCL_LIB")")/include" ${CUDA_HOME:-/usr/local/cuda}/include \
             /usr/local/cuda*/include /usr/include; do
    if [ -f "$inc/nccl.h" ]; then NCCL_INC=$inc; break; fi
  done
  if [ -z "${NCCL_INC:-}" ]; then echo "nccl.h not found"; return 1; fi
  echo "nccl.h: $NCCL_INC/nccl.h ($(grep -m1 -E '#define NCCL_VERSION_CODE|#define NCCL_MAJOR' "$NCCL_INC/nccl.h"))"
}
step nccl find_nccl
[ $status -ne 0 ] && { printf '%s\n' "${summary[@]}"; exit 1; }

# --- 2. build -------------------------------------------------------------------------------------------------
build() {
  local gen=""; command -v ninja >/dev/null && gen="-G Ninja"
  if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    cmake -S . -B "$BUILD" $gen -DFK_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -DCMAKE_BUILD_TYPE=Release \
      -DFK_NCCL_INCLUDE_DIR="$NCCL_INC" > "$OUT/ring_build.log" 2>&1 || { tail -30 "$OUT/ring_build.log"; return 1; }
  elif ! grep -q "^FK_NCCL_INCLUDE_DIR:PATH=/" "$BUILD/CMakeCache.txt"; then
    cmake -S . -B "$BUILD" -DFK_NCCL_INCLUDE_DIR="$NCCL_INC" > "$OUT/ring_build.log" 2>&1 || { tail -30 "$OUT/ring_build.log"; return 1; }
  else
    cmake -S . -B "$BUILD" > "$OUT/ring_build.log" 2>&1 || { tail -30 "$OUT/ring_build.log"; return 1; }
  fi
  grep "ring attention" "$OUT/ring_build.log"
  cmake --build "$BUILD" -j"$JOBS" --target flashkit_static test_ring bench_ring >> "$OUT/ring_build.log" 2>&1 \
    || { grep -iE "error" "$OUT/ring_build.log" | head -20; tail -30 "$OUT/ring_build.log"; return 1; }
}
step build build
[ $status -ne 0 ] && { printf '%s\n' "${summary[@]}"; exit 1; }

# --- 3. tests -------------------------------------------------------------------------------------------------
test_ring() {
  timeout 600 "$BUILD/test_ring" -v > "$OUT/test_ring.log" 2>&1; local rc=$?
  grep -E "RING_ATTN\(|RING_ATTN_BAD\(backend=cuda|ATTN_MERGE\(backend=cuda|FAIL|skipped|passed" "$OUT/test_ring.log" | cut -c1-400 | tail -40
  if grep -q "skipped RING_ATTN(backend=cuda" "$OUT/test_ring.log"; then
    echo "the 2-GPU ring cases were skipped: this run needs them to run"; rc=1
  fi
  grep -q "ok      RING_ATTN(backend=cuda,ranks=2" "$OUT/test_ring.log" || { echo "no 2-GPU ring case passed"; rc=1; }
  return $rc
}
test_no_nccl() {
  FK_TEST_EXPECT_NO_NCCL=1 FK_NCCL_LIBRARY=/nonexistent/libnccl.so.2 timeout 120 "$BUILD/test_ring" -v \
    > "$OUT/test_ring_no_nccl.log" 2>&1; local rc=$?
  tail -3 "$OUT/test_ring_no_nccl.log"
  return $rc
}
step test_ring test_ring
step test_ring_no_nccl test_no_nccl

# --- 4. sanitizer ---------------------------------------------------------------------------------------------
sanitize() {
  command -v compute-sanitizer >/dev/null || { echo "compute-sanitizer not found"; return 1; }
  # One small zigzag causal case, fwd and bwd, both ranks in this process. NCCL's kernels run under the tool too.
  # Optional by design: NCCL under the tool can be slow; a time-out is reported, not counted as a failure.
  timeout 150 compute-sanitizer --tool memcheck --report-api-errors no --error-exitcode 9 \
    "$BUILD/test_ring" -v -p "RING_ATTN(backend=cuda,ranks=2,dtype=bf16,layout=zigzag,causal=1,b=1,t=148" \
    > "$OUT/sanitize_ring_memcheck.log" 2>&1; local rc=$?
  grep -E "ERROR SUMMARY|passed|FAIL" "$OUT/sanitize_ring_memcheck.log" | tail -4
  if [ $rc -eq 124 ]; then echo "memcheck timed out after 150 s (NCCL under compute-sanitizer): not counted"; return 0; fi
  return $rc
}
[ $do_san = 1 ] && step sanitize_memcheck sanitize

# --- 5. benchmark ---------------------------------------------------------------------------------------------
bench() {
  local args=""; [ $quick = 1 ] && args="--quick"
  timeout 300 "$BUILD/bench_ring" $args > "$OUT/bench_ring.txt" 2> "$OUT/bench_ring.err"; local rc=$?
  [ $rc -ne 0 ] && tail -20 "$OUT/bench_ring.err"
  return $rc
}
[ $do_bench = 1 ] && step bench_ring bench

echo "=== summary (logs in $OUT)"
printf '%s\n' "${summary[@]}" | tee "$OUT/summary.txt"
[ -f "$OUT/bench_ring.txt" ] && cat "$OUT/bench_ring.txt"
exit $status
