/*
 * attn_cpu.h — private to the CPU attention backend: the fp32 tile primitives that have SIMD variants
 * (src/cpu/attn_avx2.c, src/cpu/attn_avx512.c, portable ones in src/cpu/attn.c), chosen once per call
 * from ctx->cpu_simd.
 *
 * Every primitive works on fp32 tiles in the per-thread scratch, whose shapes are padded so that no
 * primitive needs a tail case: row counts are multiples of FK_ATTN_MR (8), column counts multiples of
 * FK_ATTN_NV (16 floats = one AVX-512 vector, two AVX2 vectors).
 */
#ifndef FK_ATTN_CPU_H
#define FK_ATTN_CPU_H

#include "../core/attn_internal.h"

#define FK_ATTN_MR 8  // row padding of every tile operand (the AVX-512 micro-kernel is 8 rows tall)
#define FK_ATTN_NV 16 // column padding (floats per AVX-512 vector)

// C[M x N] (+)= A[M x K] B[K x N], all row-major with leading dimensions lda, ldb, ldc (elements).
// M % FK_ATTN_MR == 0, N % FK_ATTN_NV == 0, K >= 0. accumulate = 0 overwrites C.
typedef void (*fk_attn_gemm_f32)(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B,
                                 int64_t ldb, float *C, int64_t ldc, int accumulate);
// x[i] = exp(x[i] - m) for i < n (n % FK_ATTN_NV == 0; -inf gives 0); returns the sum of the new x.
typedef float (*fk_attn_exp_sum_f32)(float *x, int64_t n, float m);
// max of x[0..n) (n % FK_ATTN_NV == 0); -inf when every element is -inf.
typedef float (*fk_attn_row_max_f32)(const float *x, int64_t n);

typedef struct fk_attn_kern_f32 {
    fk_attn_gemm_f32    gemm;
    fk_attn_exp_sum_f32 exp_sum;
    fk_attn_row_max_f32 row_max;
} fk_attn_kern_f32;

#if defined(__x86_64__) || defined(__i386__)
#define FK_ATTN_X86 1
void  fk_attn_gemm_avx2(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                        float *C, int64_t ldc, int accumulate);
float fk_attn_exp_sum_avx2(float *x, int64_t n, float m);
float fk_attn_row_max_avx2(const float *x, int64_t n);
void  fk_attn_gemm_avx512(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B,
                          int64_t ldb, float *C, int64_t ldc, int accumulate);
float fk_attn_exp_sum_avx512(float *x, int64_t n, float m);
float fk_attn_row_max_avx512(const float *x, int64_t n);
#endif

#endif // FK_ATTN_CPU_H
