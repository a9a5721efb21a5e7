/*
 * ops_cpu.h — small helpers shared by the CPU element-wise ops (rmsnorm.c, rope.c, swiglu.c): chunked
 * conversion between storage dtypes and fp32, and the OpenMP loop macro.
 *
 * The ops work on rows in chunks of FK_CPU_CHUNK elements converted to fp32 on the stack: each dtype gets a
 * plain loop the compiler can vectorize (fp32 is a copy, bf16 a shift), and the math loops then see only
 * float arrays. fp64 storage has its own, plain double loops in each op.
 */
#ifndef FK_OPS_CPU_H
#define FK_OPS_CPU_H

#include "../core/ops_internal.h"

#include <string.h>

// 512 floats = 2 KiB per operand chunk: a few live chunks stay in L1 (32 KiB+) on every x86 core we target.
#define FK_CPU_CHUNK 512

// Parallel loop over independent rows/tokens. Needs a local `int nt` (threads) and `int par` (0: run on the
// calling thread, for work too small to pay the fork/join). Without OpenMP it is a plain loop. Use it as
// a statement of its own right before the `for`, inside braces.
#ifdef _OPENMP
#define FK_OMP_PARALLEL_FOR _Pragma("omp parallel for num_threads(nt) if(par) schedule(static)")
#else
#define FK_OMP_PARALLEL_FOR (void)nt, (void)par;
#endif

// Below this many elements of work a parallel region costs more than it saves (fork/join is ~2-5 us).
#define FK_CPU_PAR_MIN_WORK 16384

static inline float fk_cpu_bf16_to_f32(uint16_t h) {
    uint32_t b = (uint32_t)h << 16;
    float    f;
    memcpy(&f, &b, 4);
    return f;
}

static inline uint16_t fk_cpu_f32_to_bf16(float f) { // round to nearest even, NaN stays NaN
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t r = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
    return (x & 0x7fffffffu) > 0x7f800000u ? (uint16_t)((x >> 16) | 0x40u) : (uint16_t)r;
}

// Exact fp16 -> fp32 with selects instead of branches, so the load loop vectorizes (the library routine
// fk_half_to_float is out of line and branchy: 4x slower here). Normals rebias the exponent by adding
// 112 << 23; subnormals are m * 2^-24 (exact, and immune to a caller's FTZ/DAZ mode); inf/NaN keep payload.
static inline float fk_cpu_f16_to_f32(uint16_t h) {
    uint32_t exp = h & 0x7c00u, em = (uint32_t)(h & 0x7fffu) << 13;
    float    sub = (float)(h & 0x3ffu) * 0x1p-24f;
    uint32_t subbits, bits;
    memcpy(&subbits, &sub, 4);
    bits = exp == 0x7c00u ? (0x7f800000u | em) : exp == 0 ? subbits : em + 0x38000000u;
    bits |= (uint32_t)(h & 0x8000u) << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

// fp32 -> fp16, round to nearest even, with selects only (same results as fk_float_to_half for every
// input, checked exhaustively). Normals: rebias and round with the usual "add 0xfff + odd bit"; results
// below 2^-14 come from one float add that aligns the value to the fp16 subnormal grid (hardware rounding).
static inline uint16_t fk_cpu_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, a = x & 0x7fffffffu;
    float    af;
    memcpy(&af, &a, 4);
    float    dn = af + 0.5f; // 0.5 = 2^-1: its ulp is 2^-24, the fp16 subnormal step
    uint32_t dnb;
    memcpy(&dnb, &dn, 4);
    uint32_t sub  = dnb - 0x3f000000u;
    uint32_t norm = (a + 0xc8000fffu + ((a >> 13) & 1u)) >> 13; // 0xc8000000 = (15 - 127) << 23
    uint32_t big  = a > 0x7f800000u ? 0x7e00u : 0x7c00u;
    uint32_t h    = a >= 0x47800000u ? big : a < 0x38800000u ? sub : norm;
    return (uint16_t)(h | sign);
}

// dst[0..n) = src[i] as fp32, for src a float-dtype buffer starting at element 0.
static inline void fk_cpu_load(float *restrict dst, const void *restrict src, fk_dtype dt, int64_t n) {
    switch (dt) {
    case FK_DTYPE_F32: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    case FK_DTYPE_BF16: {
        const uint16_t *s = (const uint16_t *)src;
        for (int64_t i = 0; i < n; i++) dst[i] = fk_cpu_bf16_to_f32(s[i]);
        break;
    }
    case FK_DTYPE_F16: {
        const uint16_t *s = (const uint16_t *)src;
        for (int64_t i = 0; i < n; i++) dst[i] = fk_cpu_f16_to_f32(s[i]);
        break;
    }
    case FK_DTYPE_F64: {
        const double *s = (const double *)src;
        for (int64_t i = 0; i < n; i++) dst[i] = (float)s[i];
        break;
    }
    default: break;
    }
}

// dst[0..n) = src rounded to dt (nearest even).
static inline void fk_cpu_store(void *restrict dst, fk_dtype dt, const float *restrict src, int64_t n) {
    switch (dt) {
    case FK_DTYPE_F32: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    case FK_DTYPE_BF16: {
        uint16_t *d = (uint16_t *)dst;
        for (int64_t i = 0; i < n; i++) d[i] = fk_cpu_f32_to_bf16(src[i]);
        break;
    }
    case FK_DTYPE_F16: {
        uint16_t *d = (uint16_t *)dst;
        for (int64_t i = 0; i < n; i++) d[i] = fk_cpu_f32_to_f16(src[i]);
        break;
    }
    case FK_DTYPE_F64: {
        double *d = (double *)dst;
        for (int64_t i = 0; i < n; i++) d[i] = src[i];
        break;
    }
    default: break;
    }
}

// Element i of a float-dtype buffer, in double (the f64 paths; other dtypes widen exactly).
static inline double fk_cpu_load_d(const void *p, fk_dtype dt, int64_t i) {
    return dt == FK_DTYPE_F64 ? ((const double *)p)[i] : (double)fk_load_f(p, dt, i);
}
static inline void fk_cpu_store_d(void *p, fk_dtype dt, int64_t i, double x) {
    if (dt == FK_DTYPE_F64) ((double *)p)[i] = x;
    else fk_store_f(p, dt, i, (float)x);
}

// Byte address of element `off` of a buffer of dtype dt.
static inline const void *fk_cpu_at(const void *base, fk_dtype dt, int64_t off) {
    return (const char *)base + off * (int64_t)fk_dtype_size(dt);
}
static inline void *fk_cpu_at_mut(void *base, fk_dtype dt, int64_t off) {
    return (char *)base + off * (int64_t)fk_dtype_size(dt);
}

#endif // FK_OPS_CPU_H
