#!/usr/bin/env bash
# Builds and runs the Hopper wgmma dev checks (dev only; not part of CMake). Run from anywhere on an sm_90 machine:
#   dev/cuda/wgmma_run.sh            build, wgmma_check, attn_fwd_wgmma_check check, memcheck + racecheck on
#                                    `small`, then `time` (with the production forward beside it)
# Env: OUT (log folder; default build-wgmma/logs), J (parallel compiles; default nproc), FK_WGMMA_PROD=0 (skip
# building the production forward objects: `time` then prints the prototype only), SKIP_SAN=1, SKIP_TIME=1,
# BUILD_ONLY=1 (stop after the build and the register report).
# Ran on an H200 (2026-11-30): every check passed; docs/PERF.md has the times.
set -uo pipefail
cd "$(dirname "$0")/../.."
B=build-wgmma
LOG=${OUT:-$B/logs}
J=${J:-$(nproc)}
PROD=${FK_WGMMA_PROD:-1}
mkdir -p $B/obj "$LOG"
FLAGS="-std=c++17 -O3 -lineinfo --expt-relaxed-constexpr -Iinclude -Isrc"
ARCH_A="-gencode=arch=compute_90a,code=sm_90a"
BUDGET=0 # no run budget: each step has its own timeout
. dev/cuda/run_common.sh # note, summary, ptxas_regs, ptxas_notes, step; PATH gets /usr/local/cuda/bin

# ---- build ------------------------------------------------------------------------------------------------
python3 src/cuda/gen/generate_wgmma_ops.py || note "generate_wgmma_ops.py failed (using the checked-in wgmma_ops.cuh)"
build_ok=1
nvcc $FLAGS $ARCH_A -Xptxas -v dev/cuda/wgmma_check.cu -o $B/wgmma_check 2> $LOG/build_wgmma_check.log &
p1=$!
PROD_DEF=""
PROD_OBJ=""
if [ "$PROD" = 1 ]; then
  # The library's forward exactly as dev/cuda/build.sh builds it (sm_90), for the `time` comparison.
  srcs=(src/cuda/attn_fwd.cu src/cuda/gen/attn_fwd_*.cu src/cuda/runtime.cu)
  printf '%s\n' "${srcs[@]}" | xargs -P "$J" -I{} sh -c 'nvcc '"$FLAGS"' -DFK_WITH_CUDA -gencode arch=compute_90,code=sm_90 -Xcompiler -fPIC -c {} -o '"$B"'/obj/$(echo {} | tr / _).o' > $LOG/build_prod.log 2>&1 || { note "production objects failed to build (see build_prod.log)"; PROD=0; }
  for c in src/core/status.c src/core/tensor.c; do
    gcc -std=c11 -O2 -fPIC -Iinclude -Isrc -DFK_WITH_CUDA -c $c -o $B/obj/$(echo $c | tr / _).o >> $LOG/build_prod.log 2>&1 || PROD=0
  done
  if [ "$PROD" = 1 ]; then PROD_DEF="-DFK_WGMMA_PROD -DFK_WITH_CUDA"; PROD_OBJ=$(ls $B/obj/*.o); fi
fi
# The forward's schedule candidates (attn_fwd_wgmma_pp.cu: fwd_wgmma_pp_kernel) in their own object, in parallel.
nvcc $FLAGS $ARCH_A -Xptxas -v -c dev/cuda/attn_fwd_wgmma_pp.cu -o $B/attn_fwd_wgmma_pp.o 2> $LOG/build_attn_pp.log &
p2=$!
nvcc $FLAGS $ARCH_A $PROD_DEF -Xptxas -v -c dev/cuda/attn_fwd_wgmma_check.cu -o $B/attn_fwd_wgmma_check.o 2> $LOG/build_attn.log || { build_ok=0; cat $LOG/build_attn.log | grep -v "ptxas info" | head -40; }
wait $p2 || { build_ok=0; grep -v "ptxas info" $LOG/build_attn_pp.log | head -40; }
[ $build_ok = 1 ] && { nvcc $ARCH_A $B/attn_fwd_wgmma_check.o $B/attn_fwd_wgmma_pp.o $PROD_OBJ -o $B/attn_fwd_wgmma_check >> $LOG/build_attn.log 2>&1 || { build_ok=0; tail -20 $LOG/build_attn.log; }; }
wait $p1 || { build_ok=0; grep -v "ptxas info" $LOG/build_wgmma_check.log | head -40; }
# Registers / spills of the new kernels (ptxas -v), and any wgmma serialization note (C7515-type) or injected arrive.
ptxas_regs 'ss_kernel\|rs_kernel\|wait1_kernel\|fwd_wgmma_kernel' $LOG/build_wgmma_check.log $LOG/build_attn.log $LOG/build_attn_pp.log
cat $LOG/build_attn.log.regs $LOG/build_attn_pp.log.regs
ptxas_notes $LOG/build_wgmma_check.log $LOG/build_attn.log $LOG/build_attn_pp.log
spills=$(cat $LOG/*.regs | grep -vc "[^0-9]0 bytes spill stores, 0 bytes spill loads")
note "build: ok=$build_ok prod=$PROD, $(cat $LOG/*.regs | wc -l) kernels, $spills with spills, $(( $(date +%s) - t0 )) s"
if command -v cuobjdump > /dev/null; then
  note "SASS HGMMA count: wgmma_check $(cuobjdump -sass $B/wgmma_check | grep -c HGMMA), attn_fwd_wgmma_check $(cuobjdump -sass $B/attn_fwd_wgmma_check | grep -c HGMMA)"
fi
[ $build_ok = 1 ] || { summary; exit 1; }
[ "${BUILD_ONLY:-0}" = 1 ] && { summary; exit 0; }

# ---- run (step: run_common.sh) ----------------------------------------------------------------------------
step wgmma_check 60 $B/wgmma_check
cat $LOG/wgmma_check.log
step attn_check 150 $B/attn_fwd_wgmma_check check
grep "FAIL\|check:" $LOG/attn_check.log | head -30
if [ "${SKIP_SAN:-0}" != 1 ]; then
  step memcheck 150 compute-sanitizer --tool memcheck --error-exitcode 9 $B/attn_fwd_wgmma_check small
  tail -3 $LOG/memcheck.log
  step racecheck 240 compute-sanitizer --tool racecheck --error-exitcode 9 $B/attn_fwd_wgmma_check small
  tail -3 $LOG/racecheck.log
fi
if [ "${SKIP_TIME:-0}" != 1 ]; then
  step time 120 $B/attn_fwd_wgmma_check time
  cat $LOG/time.log
fi
echo "---- summary ($(( $(date +%s) - t0 )) s) ----"
summary
cat $LOG/build_attn.log.regs $LOG/build_attn_pp.log.regs
