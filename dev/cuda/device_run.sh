#!/usr/bin/env bash
# One device call for attention-forward tuning: dev build, correctness (library dispatch + every timing
# variant), tile-variant timing, ncu instruction counts (flashkit and FA2), quick benchmark vs FA2/cuDNN.
# Usage (on the GPU machine): dev/cuda/device_run.sh [steps...]   steps: build check vcheck time ncu bench small
# Logs under $OUT (or ./device_run_out). Short summaries go to stdout.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/device_run_out}
mkdir -p "$OUT"
steps=${*:-build check vcheck time ncu bench}
B=build-cuda/dev/attn_fwd_check
nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv,noheader
rc=0
for s in $steps; do
  t0=$(date +%s)
  case $s in
    build) J=16 dev/cuda/build.sh > "$OUT/build.log" 2>&1 || { tail -20 "$OUT/build.log"; exit 1; }; tail -4 "$OUT/build.log" ;;
    check) $B check > "$OUT/check.log" 2>&1 || rc=1; grep -E "FAIL|check:" "$OUT/check.log" | tail -20 ;;
    vcheck) $B vcheck > "$OUT/vcheck.log" 2>&1 || rc=1; grep -E "FAIL|vcheck:" "$OUT/vcheck.log" | tail -20 ;;
    time) $B time > "$OUT/time.log" 2>&1 || rc=1 ;;
    small)
      for tool in memcheck racecheck; do
        compute-sanitizer --tool $tool --error-exitcode 9 $B small > "$OUT/san_$tool.log" 2>&1 || rc=1
        tail -2 "$OUT/san_$tool.log"
      done ;;
    ncu)
      m=gpu__time_duration.sum,smsp__inst_executed.sum,smsp__average_warp_latency_per_inst_issued.ratio,launch__registers_per_thread,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum,sm__cycles_elapsed.sum
      for d in 64 128 256; do
        ncu --metrics $m -k regex:fwd_tc -c 1 $B prof $d 2048 0 2>&1 | grep -E "fwd_tc_kernel|duration|inst_executed|latency|registers|wavefronts|cycles_elapsed" | sed 's/  */ /g'
        ncu --metrics $m -k regex:flash_fwd -c 1 python3 dev/cuda/prof_fa2.py $d 2048 0 2>&1 | grep -E "flash_fwd|duration|inst_executed|latency|registers|wavefronts|cycles_elapsed" | sed 's/  */ /g' | cut -c1-160
      done > "$OUT/ncu.log" 2>&1
      cat "$OUT/ncu.log" ;;
    bench) PYTHONUNBUFFERED=1 python3 bench/bench_attn.py --quick --csv "$OUT/bench.csv" > "$OUT/bench.log" 2>&1 || rc=1 ;;
  esac
  echo "--- $s: $(( $(date +%s) - t0 )) s"
done
[ -f "$OUT/time.log" ] && cat "$OUT/time.log"
[ -f "$OUT/bench.log" ] && sed -n '/^## attention forward/,/^$/p' "$OUT/bench.log"
exit $rc
