#!/bin/sh
# test_install.sh BUILD [SANITIZE] — install the built library into a scratch prefix, then build and run a small
# consumer three ways: CMake find_package(flashkit) with flashkit::flashkit (shared) and flashkit::flashkit_static,
# and pkg-config (shared). Each consumer runs a CPU attention forward and checks the status. SANITIZE: the
# library's -fsanitize list, which the pkg-config consumer then needs too (the CMake targets carry it).
set -eu
build=$1
san=${2:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
mkdir -p "$tmp/app"
cat > "$tmp/app/main.c" <<'C'
#include <flashkit.h>
#include <stdio.h>
#include <stdlib.h>
int main(void) {
    fk_context_t ctx;
    fk_device    cpu = {FK_DEVICE_CPU, 0};
    if (fk_context_init(cpu, NULL, &ctx) != FK_STATUS_SUCCESS) return 1;
    int64_t shape[4] = {1, 16, 2, 32};
    float  *q = malloc(sizeof(float) * 1024), *o = malloc(sizeof(float) * 1024);
    for (int i = 0; i < 1024; i++) q[i] = (float)((i * 37) % 11) / 11.0f;
    fk_attn_args a;
    fk_attn_args_init(&a);
    a.q = a.k = a.v = fk_tensor_make(q, FK_DTYPE_F32, cpu, 4, shape);
    a.o = fk_tensor_make(o, FK_DTYPE_F32, cpu, 4, shape);
    a.causal = 1;
    size_t bytes = 0;
    fk_status s = fk_attn_fwd_workspace_size(ctx, &a, &bytes);
    void *ws = malloc(bytes ? bytes : 1);
    if (s == FK_STATUS_SUCCESS) s = fk_attn_fwd(ctx, &a, ws, bytes, NULL);
    printf("flashkit %s: attention %s\n", fk_version_string(), fk_status_string(s));
    free(ws), free(q), free(o);
    fk_context_free(ctx);
    return s == FK_STATUS_SUCCESS ? 0 : 1;
}
C
cat > "$tmp/app/CMakeLists.txt" <<'C'
cmake_minimum_required(VERSION 3.22)
project(consumer C)
find_package(flashkit REQUIRED)
add_executable(app_shared main.c)
target_link_libraries(app_shared PRIVATE flashkit::flashkit)
add_executable(app_static main.c)
target_link_libraries(app_static PRIVATE flashkit::flashkit_static)
if(TARGET CUDA::cudart_static)
  set_target_properties(app_static PROPERTIES LINKER_LANGUAGE CXX)
endif()
C
# CXX for the static consumer when the archive carries CUDA objects (they need the C++ runtime).
grep -q "find_dependency(CUDAToolkit)" "$tmp/prefix"/lib*/cmake/flashkit/flashkitConfig.cmake 2>/dev/null &&
  sed -i 's/project(consumer C)/project(consumer C CXX)/' "$tmp/app/CMakeLists.txt"
cmake -S "$tmp/app" -B "$tmp/app/build" -DCMAKE_PREFIX_PATH="$tmp/prefix" >"$tmp/cmake.log" 2>&1 ||
  { cat "$tmp/cmake.log"; exit 1; }
cmake --build "$tmp/app/build" >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log"; exit 1; }
libdir=$(dirname "$(find "$tmp/prefix" -name 'libflashkit.so' | head -1)")
LD_LIBRARY_PATH=$libdir "$tmp/app/build/app_shared"
"$tmp/app/build/app_static"
if command -v pkg-config >/dev/null 2>&1; then
  pc=$(dirname "$(find "$tmp/prefix" -name flashkit.pc | head -1)")
  flags=$(PKG_CONFIG_PATH=$pc pkg-config --cflags --libs flashkit)
  cc ${san:+-fsanitize=$san} -o "$tmp/app/app_pc" "$tmp/app/main.c" $flags
  LD_LIBRARY_PATH=$libdir "$tmp/app/app_pc"
else
  echo "skipped: pkg-config consumer (pkg-config not installed)"
fi
echo "test_install: ok"
