#!/usr/bin/env bash
# Builds the dev check binary and the bench shim into build-cuda/dev (sm_90 by default; ARCH=80 for Ampere).
# Usage: dev/cuda/build.sh [-j N]
set -euo pipefail
cd "$(dirname "$0")/../.."
ARCH=${ARCH:-90a}
J=${J:-2}
OUT=build-cuda/dev
mkdir -p $OUT/obj
FLAGS="-std=c++17 -O3 -gencode arch=compute_$ARCH,code=sm_$ARCH -Iinclude -Isrc -DFK_WITH_CUDA -lineinfo --expt-relaxed-constexpr -Xcompiler -fPIC"  # spills: reported below from -v, not errors
srcs=(src/cuda/attn_fwd.cu src/cuda/gen/attn_fwd_*.cu src/cuda/runtime.cu dev/cuda/attn_shim.cu)
printf '%s\n' "${srcs[@]}" | xargs -P "$J" -I{} sh -c 'nvcc '"$FLAGS"' -Xptxas -v -c {} -o '"$OUT"'/obj/$(echo {} | tr / _).o 2> '"$OUT"'/obj/$(echo {} | tr / _).log || { cat '"$OUT"'/obj/$(echo {} | tr / _).log; exit 1; }'
for c in src/core/status.c src/core/tensor.c; do gcc -std=c11 -O2 -fPIC -Iinclude -Isrc -DFK_WITH_CUDA -c $c -o $OUT/obj/$(echo $c | tr / _).o; done
nvcc $FLAGS -c dev/cuda/attn_fwd_check.cu -o $OUT/obj/check.o -Xptxas -v 2> $OUT/obj/check.log || { cat $OUT/obj/check.log; exit 1; }
LIBOBJ=$(ls $OUT/obj/*.o | grep -v 'check.o\|attn_shim')
nvcc -gencode arch=compute_$ARCH,code=sm_$ARCH $OUT/obj/check.o $LIBOBJ -o $OUT/attn_fwd_check
nvcc -shared -gencode arch=compute_$ARCH,code=sm_$ARCH $OUT/obj/dev_cuda_attn_shim.cu.o $LIBOBJ -o $OUT/libfkdev.so
grep -h -A1 "Compiling entry" $OUT/obj/*.log | grep -B1 "spill" | grep -v "^--" | paste - - | \
  sed 's/ptxas info    : Compiling entry function//; s/for .sm_[0-9]*.//' | awk '{$1=$1};1' | grep -v " 0 bytes spill stores" || true
echo "built $OUT/attn_fwd_check $OUT/libfkdev.so"
