/*
 * runtime.c — what the CPU backend learns about its machine: SIMD width and thread count.
 */
#include "../core/fk_internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif

int fk_cpu_detect_simd(void) {
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return 512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 256;
#endif
    return 0;
}

int fk_cpu_default_threads(void) {
#ifdef _OPENMP
    int n = omp_get_max_threads();
    return n > 0 ? n : 1;
#else
    return 1;
#endif
}
