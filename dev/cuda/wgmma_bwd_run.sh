#!/usr/bin/env bash
# Builds and runs the Hopper wgmma backward dev checks (dev only; not part of CMake). On an sm_90 machine:
#   dev/cuda/wgmma_bwd_run.sh    build (ptxas -v: registers / spills), wgmma_check (building blocks, with the
#                                backward's operand forms), attn_bwd_wgmma_check check, time, then
#                                compute-sanitizer memcheck + racecheck on `small`; summary last: the step lines,
#                                the registers / spills of the main kernel's instances and the whole `time` output
#                                (the wgmma kernel against bwd_tc), so that the summary alone carries the verdict
# Logs: build-wgbwd/logs/*.log, packed into one wgbwd_logs.tgz in OUT (default build-wgbwd): a device tool that
# brings back only a few files gets the summary on stdout and every log in one file.
# When `check` hit a CUDA error, `time` is left out (a sticky error ends the process; the kernel is broken).
# `time` runs before the sanitizers: it is the number this kernel exists for, and the sanitizers are the steps
# most likely to run long; every step has its own timeout and the whole run a budget (BUDGET seconds, default
# 220; bench/gpu_session.sh gives the step 240) that later steps' timeouts are cut to.
# Env: OUT (where the .tgz goes; default build-wgbwd), BUDGET (seconds, default 220), SKIP_SAN=1, SKIP_TIME=1,
# BUILD_ONLY=1.
# Last run on an H200 (2026-11-30): every check passed, sanitizers clean, on the schedule that is production now.
set -uo pipefail
cd "$(dirname "$0")/../.."
B=build-wgbwd
# With OUT set the logs are written under $B/logs and only the .tgz goes to OUT (few files come back).
LOG=$B/logs
PACK=${OUT:-$B}/wgbwd_logs.tgz
BUDGET=${BUDGET:-220}
rm -rf "$LOG"
mkdir -p $B "$LOG" "$(dirname "$PACK")"
FLAGS="-std=c++17 -O3 -lineinfo --expt-relaxed-constexpr -Iinclude -Isrc -gencode=arch=compute_90a,code=sm_90a"
. dev/cuda/run_common.sh # note, summary, ptxas_regs, ptxas_notes, step (timeouts cut to BUDGET); PATH gets /usr/local/cuda/bin

# ---- build (the two programs in parallel; each is one translation unit) ------------------------------------
build_ok=1
timeout 120 nvcc $FLAGS -Xptxas -v dev/cuda/wgmma_check.cu -o $B/wgmma_check 2> $LOG/build_wgmma_check.log &
p1=$!
timeout 120 nvcc $FLAGS -Xptxas -v dev/cuda/attn_bwd_wgmma_check.cu -o $B/attn_bwd_wgmma_check 2> $LOG/build_bwd.log || { build_ok=0; grep -v "ptxas info\|bytes stack frame" $LOG/build_bwd.log | head -40; }
wait $p1 || { build_ok=0; grep -v "ptxas info\|bytes stack frame" $LOG/build_wgmma_check.log | head -40; }
# Registers / spills: the main kernel (4 bwd_wgmma_kernel instances: D 64 / 128 x dtype; expected 198 / 255
# registers), production's bwd_tc_kernel (timed beside it), ssx_kernel.
ptxas_regs 'bwd_wgmma_kernel\|bwd_tc_kernel\|ssx_kernel' $LOG/build_wgmma_check.log $LOG/build_bwd.log
cat $LOG/build_bwd.log.regs
ptxas_notes $LOG/build_wgmma_check.log $LOG/build_bwd.log
spills=$(grep "bwd_wgmma_kernel" $LOG/build_bwd.log.regs | grep -vc "[^0-9]0 bytes spill stores, 0 bytes spill loads")
wgnotes=$(grep -c "C75[0-9][0-9].*bwd_wgmma_kernel" $LOG/build_bwd.log)
note "build: ok=$build_ok, bwd_wgmma_kernel instances with spills: $spills (expect 0), ptxas C75xx notes on bwd_wgmma_kernel: $wgnotes (expect 0), $(( $(date +%s) - t0 )) s"
if command -v cuobjdump > /dev/null && [ -x $B/attn_bwd_wgmma_check ]; then
  note "SASS HGMMA count: attn_bwd_wgmma_check $(cuobjdump -sass $B/attn_bwd_wgmma_check | grep -c HGMMA) (expect > 0; tnspA in dQ: $(cuobjdump -sass $B/attn_bwd_wgmma_check | grep -c 'HGMMA.*tnspA'))"
fi
pack() { tar -czf "$PACK" -C "$LOG" . 2> /dev/null; }
[ $build_ok = 1 ] || { summary; pack; exit 1; }
[ "${BUILD_ONLY:-0}" = 1 ] && { summary; pack; exit 0; }

# ---- run (step: run_common.sh) ----------------------------------------------------------------------------
step wgmma_check 30 $B/wgmma_check
grep "FAIL\|bwd m64\|CHECKS" $LOG/wgmma_check.log
step check 110 $B/attn_bwd_wgmma_check check
grep "SKIP\|check:\|error" $LOG/check.log | head -20
tail -2 $LOG/check.log
if [ "${SKIP_TIME:-0}" != 1 ]; then
  if grep -q "^FAIL .*: CUDA error" $LOG/check.log; then
    note "time: left out (CUDA error in check)"
  else
    step time 80 $B/attn_bwd_wgmma_check time
    cat $LOG/time.log
  fi
fi
if [ "${SKIP_SAN:-0}" != 1 ]; then
  step memcheck 50 compute-sanitizer --tool memcheck --error-exitcode 9 $B/attn_bwd_wgmma_check small
  tail -3 $LOG/memcheck.log
  step racecheck 70 compute-sanitizer --tool racecheck --error-exitcode 9 $B/attn_bwd_wgmma_check small
  tail -3 $LOG/racecheck.log
fi
echo "---- summary ($(( $(date +%s) - t0 )) s) ----"
summary
echo "-- registers / spills (ptxas, attn_bwd_wgmma_check's instances) --"
cat $LOG/build_bwd.log.regs
echo "-- ptxas C75xx notes (none expected on bwd_wgmma_kernel) --"
grep -ho "C75[0-9][0-9].*'_Z[^']*'" $LOG/build_bwd.log | sed "s/ Potential Performance Loss: wgmma.mma_async instructions are serialized due to insufficient register resources for the function/ serialized:/" | sort -u
echo "-- check: PASS / FAIL / SKIP lines --"
echo "wgmma: pass $(grep -c "^PASS " $LOG/check.log 2> /dev/null) fail $(grep -c "^FAIL " $LOG/check.log 2> /dev/null) skip $(grep -c "^SKIP " $LOG/check.log 2> /dev/null)"
if [ -f $LOG/time.log ]; then
  echo "-- time (full output) --"
  cat $LOG/time.log
fi
pack
echo "logs: $PACK"
