#!/usr/bin/env bash
# Builds the attention-backward dev check into build-bwd/dev (sm_90 by default; ARCH=80 for Ampere).
# Tile variants for `attn_bwd_check time` are listed in attn_bwd_check.cu (kVariants): production's tiles and the
# D = 256 fallback (the issue-5 candidates that lost were deleted; docs/PERF.md keeps their numbers).
# Usage: dev/cuda/build_bwd.sh        (J=jobs, ARCH=90, BUILD_DIR=build-bwd/dev)
set -euo pipefail
cd "$(dirname "$0")/../.."
ARCH=${ARCH:-90a}
J=${J:-2}
OUT=${BUILD_DIR:-build-bwd/dev}
mkdir -p $OUT/obj
FLAGS="-std=c++17 -O3 -gencode arch=compute_$ARCH,code=sm_$ARCH -Iinclude -Isrc -DFK_WITH_CUDA -lineinfo --expt-relaxed-constexpr -Xcompiler -fPIC -Xptxas=--warn-on-spills"
srcs=(src/cuda/attn_bwd.cu src/cuda/gen/attn_bwd_*.cu src/cuda/runtime.cu)
printf '%s\n' "${srcs[@]}" | xargs -P "$J" -I{} sh -c 'nvcc '"$FLAGS"' -Xptxas -v -c {} -o '"$OUT"'/obj/$(echo {} | tr / _).o 2> '"$OUT"'/obj/$(echo {} | tr / _).log || { cat '"$OUT"'/obj/$(echo {} | tr / _).log; exit 1; }'
for c in src/core/status.c src/core/tensor.c; do gcc -std=c11 -O2 -fPIC -Iinclude -Isrc -DFK_WITH_CUDA -c $c -o $OUT/obj/$(echo $c | tr / _).o; done
nvcc $FLAGS -c dev/cuda/attn_bwd_check.cu -o $OUT/obj/check.o -Xptxas -v 2> $OUT/obj/check.log || { cat $OUT/obj/check.log; exit 1; }
nvcc $FLAGS -c dev/cuda/attn_bwd_shim.cu -o $OUT/obj/shim.o
LIBOBJ=$(ls $OUT/obj/*.o | grep -v 'check.o\|shim.o')
nvcc -gencode arch=compute_$ARCH,code=sm_$ARCH $OUT/obj/check.o $LIBOBJ -o $OUT/attn_bwd_check
nvcc -shared -gencode arch=compute_$ARCH,code=sm_$ARCH $OUT/obj/shim.o $LIBOBJ -o $OUT/libfkbwd.so
# registers and spills of every backward kernel
cat $OUT/obj/*.log | grep -A2 "Compiling entry.*bwd" | grep -v "^--" | paste - - - | \
  sed 's/ptxas info    : Compiling entry function//; s/for .sm_[0-9]*.//; s/ptxas info    ://g; s/Function properties for [^ ]*//' | \
  awk '{$1=$1};1' | sed 's/_ZN7fk_cuda//' | sort -u
echo "built $OUT/attn_bwd_check $OUT/libfkbwd.so"
