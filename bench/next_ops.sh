#!/usr/bin/env bash
# next_ops.sh — one short device call for the fused ops' production selection vs its alternatives (issue 6;
# until d3c1cfc: the candidates of src/cuda/ops_next.cuh, now production), ~2-3 minutes on one
# H100/H200: builds the library's static archive (needed for fk_error & co.) and dev/cuda/ops_tune, then runs
# `ops_tune next`: every production kernel and candidate is checked against a float64 host computation on the
# same bf16 inputs (PASS/FAIL per kernel; a FAILing kernel is not timed) and timed with CUDA events at 16384
# tokens x hidden 2048/4096/5120/8192 (RMSNorm fwd, fwd+residual, bwd, bwd+dresidual), SwiGLU 16384x11008 and
# RoPE 16384 tokens x 32+32 heads x 128; the copy bandwidth is measured in the same process. The short table is
# printed last. No torch.compile here (docs/PERF.md has those numbers; adoption runs bench/bench_ops.py).
# Usage: bench/next_ops.sh [rmsnorm] [swiglu] [rope]     (all three when none is named)
# Env: ARCH (default 90), JOBS (default 16), OUT (logs; default ./next_ops_out). Exit status: non-zero on any
# build failure or FAIL.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/next_ops_out}
mkdir -p "$OUT"
ARCH=${ARCH:-90a}
JOBS=${JOBS:-16}
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem --format=csv,noheader 2>&1 | tee "$OUT/next_gpu.txt"
git log -1 --format='commit %h %s' 2>/dev/null | tee -a "$OUT/next_gpu.txt"
t0=$(date +%s)
gen=""; command -v ninja >/dev/null && gen="-G Ninja"
if ! { cmake -S . -B build-gpu $gen -DFK_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -DCMAKE_BUILD_TYPE=Release &&
       cmake --build build-gpu -j"$JOBS" --target flashkit_static; } > "$OUT/next_build.log" 2>&1; then
  tail -30 "$OUT/next_build.log"; echo "next_ops: library build FAILED"; exit 1
fi
if ! nvcc -O3 -std=c++17 -arch=sm_$ARCH --expt-relaxed-constexpr -DFK_WITH_CUDA -Iinclude -Isrc -Xptxas -v \
     dev/cuda/ops_tune.cu build-gpu/libflashkit.a -o build-gpu/ops_tune > "$OUT/next_ptxas.log" 2>&1; then
  grep -E "error" "$OUT/next_ptxas.log" | head -20; echo "next_ops: ops_tune build FAILED"; exit 1
fi
grep -B1 -E "[1-9][0-9]* bytes spill" "$OUT/next_ptxas.log" | grep -o "_rows_kernel[^']*\|flat_kernel[^']*\|tok_kernel[^']*" | sort -u | sed 's/^/spills: /' | head
echo "build: $(( $(date +%s) - t0 )) s"
build-gpu/ops_tune next "$@" 2>&1 | tee "$OUT/next_ops.log"
rc=${PIPESTATUS[0]}
echo "next_ops: exit $rc, $(( $(date +%s) - t0 )) s in all, log $OUT/next_ops.log"
exit $rc
