#!/usr/bin/env bash
# gpu_all.sh — the short everything-check for one device call when device time is scarce:
#   1. bench/gpu_ring.sh (when 2+ GPUs are visible): NCCL found, build-gpu configured and the ring targets built,
#      test_ring's 2-GPU cases, the ring benchmark
#   2. bench/gpu_check.sh --no-dev --no-sanitize --no-bench --python: the whole library built, ctest (every
#      driver runs its CUDA cases, test_ring included), the Python suite's GPU cases
#   3. with SAN=1: compute-sanitizer memcheck and racecheck on a small set of test_attn's CUDA cases (SAN_FILTER)
# Each step has its own time limit so the call ends inside its lease. Every log goes into $OUT/logs.tgz (the
# device tool returns at most 8 files), and a summary is printed last.
# Variables: OUT, JOBS, SAN, SAN_FILTER, RING_ARGS (extra arguments for gpu_ring.sh, e.g. --quick), RING_LIMIT,
# CHECK_LIMIT (seconds).
set -uo pipefail
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
FINAL=${OUT:-$PWD/gpu_all_out}
L=$(mktemp -d)
mkdir -p "$FINAL"
export JOBS=${JOBS:-$(nproc)}
SAN_FILTER=${SAN_FILTER:-d=64,sq=113,sk=203,hq=4,hkv=2}
declare -a summary
t0=$(date +%s)
note() { summary+=("$1 (at $(( $(date +%s) - t0 )) s)"); }

ngpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
echo "GPUs: $ngpu; commit $(git log -1 --format=%h 2>/dev/null)"
if [ "$ngpu" -ge 2 ]; then
  OUT=$L/ring timeout ${RING_LIMIT:-170} bash bench/gpu_ring.sh build-gpu ${RING_ARGS:-} > "$L/ring.txt" 2>&1
  note "ring: rc=$?"
  tail -45 "$L/ring.txt"
  lib=$(sed -n 's/^NCCL library: //p' "$L/ring.txt" | head -1)
  [ -n "$lib" ] && export FK_NCCL_LIBRARY=$lib LD_LIBRARY_PATH=$(dirname "$lib")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
else
  note "ring: skipped (one GPU)"
fi

OUT=$L/check timeout ${CHECK_LIMIT:-150} bash bench/gpu_check.sh --no-dev --no-sanitize --no-bench --python > "$L/check.txt" 2>&1
note "check: rc=$?"
tail -40 "$L/check.txt"
cp build-gpu/Testing/Temporary/LastTest.log "$L/" 2>/dev/null

for tool in $([ "${SAN:-0}" = 1 ] && echo memcheck racecheck); do
  timeout 40 compute-sanitizer --tool $tool --error-exitcode 9 build-gpu/test_attn -b cuda -p "$SAN_FILTER" \
    > "$L/san_$tool.txt" 2>&1
  note "$tool test_attn -b cuda -p $SAN_FILTER: rc=$? ($(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$L/san_$tool.txt" | tail -1); $(grep -E 'passed' "$L/san_$tool.txt" | tail -1))"
done

tar czf "$FINAL/logs.tgz" -C "$L" . 2>/dev/null
echo
echo "== gpu_all summary"
printf '%s\n' "${summary[@]}"
[ -f "$L/ring/bench_ring.txt" ] && cat "$L/ring/bench_ring.txt"
