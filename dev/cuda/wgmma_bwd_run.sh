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
export PATH=$PATH:/usr/local/cuda/bin
B=build-wgbwd
LOG=${OUT:-$B/logs}
BUDGET=${BUDGET:-230}
mkdir -p $B "$LOG"
FLAGS="-std=c++17 -O3 -lineinfo --expt-relaxed-constexpr -Iinclude -Isrc -gencode=arch=compute_90a,code=sm_90a"
SUMMARY=()
note() { SUMMARY+=("$1"); echo "== $1"; }
t0=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - t0) )); }

# ---- build (the two programs in parallel; each is one translation unit) ------------------------------------
build_ok=1
timeout 120 nvcc $FLAGS -Xptxas -v dev/cuda/wgmma_check.cu -o $B/wgmma_check 2> $LOG/build_wgmma_check.log &
p1=$!
timeout 120 nvcc $FLAGS -Xptxas -v dev/cuda/attn_bwd_wgmma_check.cu -o $B/attn_bwd_wgmma_check 2> $LOG/build_bwd.log || { build_ok=0; grep -v "ptxas info\|bytes stack frame" $LOG/build_bwd.log | head -40; }
wait $p1 || { build_ok=0; grep -v "ptxas info\|bytes stack frame" $LOG/build_wgmma_check.log | head -40; }
# Registers / spills: the new kernel (4 instances), production's bwd_tc_kernel (timed beside it), ssx_kernel.
for f in $LOG/build_wgmma_check.log $LOG/build_bwd.log; do
  grep -A3 "Compiling entry function '_Z.*\(bwd_wgmma_kernel\|bwd_tc_kernel\|ssx_kernel\)" $f | \
    grep -o "Compiling entry function '[^']*'\|Used [0-9]* registers\|[0-9]* bytes spill stores, [0-9]* bytes spill loads" | \
    paste - - - | sed "s/Compiling entry function //" > $f.regs
done
cat $LOG/build_bwd.log.regs
grep -h "C75[0-9][0-9]\|warning" $LOG/build_wgmma_check.log $LOG/build_bwd.log | sort -u | head -20
spills=$(grep "bwd_wgmma_kernel" $LOG/build_bwd.log.regs | grep -vc "[^0-9]0 bytes spill stores, 0 bytes spill loads")
note "build: ok=$build_ok, bwd_wgmma_kernel instances with spills: $spills, $(( $(date +%s) - t0 )) s"
if command -v cuobjdump > /dev/null && [ -x $B/attn_bwd_wgmma_check ]; then
  note "SASS HGMMA count: attn_bwd_wgmma_check $(cuobjdump -sass $B/attn_bwd_wgmma_check | grep -c HGMMA) (expect > 0; tnspA in dQ: $(cuobjdump -sass $B/attn_bwd_wgmma_check | grep -c 'HGMMA.*tnspA'))"
fi
[ $build_ok = 1 ] || { printf '%s\n' "${SUMMARY[@]}"; exit 1; }
[ "${BUILD_ONLY:-0}" = 1 ] && { printf '%s\n' "${SUMMARY[@]}"; exit 0; }

# ---- run --------------------------------------------------------------------------------------------------
step() { # name, timeout seconds (cut to the budget left), command...
  local name=$1 to=$2; shift 2
  local l=$(left)
  if [ $l -lt 10 ]; then note "$name: skipped (budget of $BUDGET s spent)"; return; fi
  [ $to -gt $l ] && to=$l
  local s=$(date +%s)
  timeout $to "$@" > $LOG/$name.log 2>&1
  local rc=$?
  local fails=$(grep -c "^FAIL" $LOG/$name.log)
  local passes=$(grep -c "^PASS" $LOG/$name.log)
  note "$name: rc=$rc$([ $rc = 124 ] && echo ' (TIMEOUT)') pass=$passes fail=$fails ($(( $(date +%s) - s )) s)"
  grep "^FAIL" $LOG/$name.log | head -20
}
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
printf '%s\n' "${SUMMARY[@]}"
cat $LOG/build_bwd.log.regs
