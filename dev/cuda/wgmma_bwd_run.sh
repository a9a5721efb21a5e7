#!/usr/bin/env bash
# Builds and runs the Hopper wgmma backward dev checks (dev only; not part of CMake). On an sm_90 machine:
#   dev/cuda/wgmma_bwd_run.sh    build (ptxas -v: registers / spills), wgmma_check (building blocks, with the
#                                backward's new operand forms), attn_bwd_wgmma_check check, time, then
#                                compute-sanitizer memcheck + racecheck on `small`; short summary last
# `time` runs before the sanitizers (the brief listed it last): it is the number this kernel exists for, and the
# sanitizers are the steps most likely to run long; every step has its own timeout and the whole run a budget
# (BUDGET seconds, default 230) that later steps' timeouts are cut to.
# Env: OUT (log folder; default build-wgbwd/logs), BUDGET, SKIP_SAN=1, SKIP_TIME=1, BUILD_ONLY=1.
# Everything here was UNTESTED ON HARDWARE when written (compiled with nvcc 13.0 on a machine without a GPU).
set -uo pipefail
cd "$(dirname "$0")/../.."
B=build-wgbwd
LOG=${OUT:-$B/logs}
BUDGET=${BUDGET:-230}
mkdir -p $B "$LOG"
FLAGS="-std=c++17 -O3 -lineinfo --expt-relaxed-constexpr -Iinclude -Isrc -gencode=arch=compute_90a,code=sm_90a"
. dev/cuda/run_common.sh # note, summary, ptxas_regs, ptxas_notes, step (timeouts cut to BUDGET); PATH gets /usr/local/cuda/bin

# ---- build (the two programs in parallel; each is one translation unit) ------------------------------------
build_ok=1
timeout 120 nvcc $FLAGS -Xptxas -v dev/cuda/wgmma_check.cu -o $B/wgmma_check 2> $LOG/build_wgmma_check.log &
p1=$!
timeout 120 nvcc $FLAGS -Xptxas -v dev/cuda/attn_bwd_wgmma_check.cu -o $B/attn_bwd_wgmma_check 2> $LOG/build_bwd.log || { build_ok=0; grep -v "ptxas info\|bytes stack frame" $LOG/build_bwd.log | head -40; }
wait $p1 || { build_ok=0; grep -v "ptxas info\|bytes stack frame" $LOG/build_wgmma_check.log | head -40; }
# Registers / spills: the new kernel (4 instances), production's bwd_tc_kernel (timed beside it), ssx_kernel.
ptxas_regs 'bwd_wgmma_kernel\|bwd_tc_kernel\|ssx_kernel' $LOG/build_wgmma_check.log $LOG/build_bwd.log
cat $LOG/build_bwd.log.regs
ptxas_notes $LOG/build_wgmma_check.log $LOG/build_bwd.log
spills=$(grep "bwd_wgmma_kernel" $LOG/build_bwd.log.regs | grep -vc "[^0-9]0 bytes spill stores, 0 bytes spill loads")
note "build: ok=$build_ok, bwd_wgmma_kernel instances with spills: $spills, $(( $(date +%s) - t0 )) s"
if command -v cuobjdump > /dev/null && [ -x $B/attn_bwd_wgmma_check ]; then
  note "SASS HGMMA count: attn_bwd_wgmma_check $(cuobjdump -sass $B/attn_bwd_wgmma_check | grep -c HGMMA) (expect > 0; tnspA in dQ: $(cuobjdump -sass $B/attn_bwd_wgmma_check | grep -c 'HGMMA.*tnspA'))"
fi
[ $build_ok = 1 ] || { summary; exit 1; }
[ "${BUILD_ONLY:-0}" = 1 ] && { summary; exit 0; }

# ---- run (step: run_common.sh) ----------------------------------------------------------------------------
step wgmma_check 40 $B/wgmma_check
grep "FAIL\|bwd m64\|CHECKS" $LOG/wgmma_check.log
step check 100 $B/attn_bwd_wgmma_check check
grep "SKIP\|check:\|error" $LOG/check.log | head -20
tail -2 $LOG/check.log
if [ "${SKIP_TIME:-0}" != 1 ]; then
  step time 70 $B/attn_bwd_wgmma_check time
  cat $LOG/time.log
fi
if [ "${SKIP_SAN:-0}" != 1 ]; then
  step memcheck 60 compute-sanitizer --tool memcheck --error-exitcode 9 $B/attn_bwd_wgmma_check small
  tail -3 $LOG/memcheck.log
  step racecheck 80 compute-sanitizer --tool racecheck --error-exitcode 9 $B/attn_bwd_wgmma_check small
  tail -3 $LOG/racecheck.log
fi
echo "---- summary ($(( $(date +%s) - t0 )) s) ----"
summary
cat $LOG/build_bwd.log.regs
