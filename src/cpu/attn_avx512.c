/*
 * attn_avx512.c — AVX-512F tile primitives of the CPU attention backend (see attn_cpu.h). Compiled with
 * -mavx512f; called only when ctx->cpu_simd == 512.
 *
 * The GEMM micro-kernel keeps an 8 x 32 block of C in 16 zmm accumulators: per k step it loads two
 * vectors of B and broadcasts 8 elements of A, i.e. 16 FMAs for 10 loads, so the two FMA ports, not the
 * load ports, bound it. The remaining 16 of the 32 zmm registers hold B, the broadcast and spare. The N
 * loop is outside the M loop so one K x 32 panel of B stays in L1 while every row block of A passes by.
 */
#include "attn_cpu.h"

#if defined(FK_ATTN_X86)
#include <immintrin.h>

// C[8 x 16*NV] (+)= A[8 x K] B[K x 16*NV], NV = 1 or 2.
#define FK_KERNEL_BODY(NV)                                                                                    \
    __m512 c[8][NV];                                                                                          \
    _Pragma("GCC unroll 8") for (int r = 0; r < 8; r++) _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++)  \
        c[r][v] = accumulate ? _mm512_loadu_ps(C + r * ldc + 16 * v) : _mm512_setzero_ps();                  \
    for (int64_t k = 0; k < K; k++) {                                                                         \
        __m512 b[NV];                                                                                         \
        _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++) b[v] = _mm512_loadu_ps(B + k * ldb + 16 * v);    \
        _Pragma("GCC unroll 8") for (int r = 0; r < 8; r++) {                                                 \
            __m512 a = _mm512_set1_ps(A[r * lda + k]);                                                        \
            _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++) c[r][v] = _mm512_fmadd_ps(a, b[v], c[r][v]); \
        }                                                                                                     \
    }                                                                                                         \
    _Pragma("GCC unroll 8") for (int r = 0; r < 8; r++) _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++)  \
        _mm512_storeu_ps(C + r * ldc + 16 * v, c[r][v]);

static void kernel_8x32(int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb, float *C, int64_t ldc,
                        int accumulate) {
    FK_KERNEL_BODY(2)
}
static void kernel_8x16(int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb, float *C, int64_t ldc,
                        int accumulate) {
    FK_KERNEL_BODY(1)
}

void fk_attn_gemm_avx512(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                         float *C, int64_t ldc, int accumulate) {
    int64_t j = 0;
    for (; j + 32 <= N; j += 32)
        for (int64_t i = 0; i < M; i += 8) kernel_8x32(K, A + i * lda, lda, B + j, ldb, C + i * ldc + j, ldc, accumulate);
    for (; j < N; j += 16)
        for (int64_t i = 0; i < M; i += 8) kernel_8x16(K, A + i * lda, lda, B + j, ldb, C + i * ldc + j, ldc, accumulate);
}

// exp(x) for x <= 88.3: x = n ln2 + r, |r| <= ln2/2, exp(r) by a degree-6 polynomial (the classic minimax
// coefficients for expf, about 1 ulp), 2^n through the exponent bits. Inputs below -87.3 (including -inf)
// give exactly 0, so masked scores contribute nothing.
static inline __m512 exp512(__m512 x) {
    const __mmask16 tiny = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3f), _CMP_LT_OQ);
    x                    = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.3f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r        = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p        = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p        = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p        = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p        = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p        = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p        = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    __m512  y = _mm512_mul_ps(p, _mm512_castsi512_ps(e));
    return _mm512_maskz_mov_ps((__mmask16)~tiny, y);
}

float fk_attn_exp_sum_avx512(float *x, int64_t n, float m) {
    __m512 mv = _mm512_set1_ps(m), s = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
        __m512 y = exp512(_mm512_sub_ps(_mm512_loadu_ps(x + i), mv));
        _mm512_storeu_ps(x + i, y);
        s = _mm512_add_ps(s, y);
    }
    return _mm512_reduce_add_ps(s);
}

float fk_attn_row_max_avx512(const float *x, int64_t n) {
    __m512 mx = _mm512_set1_ps(-__builtin_inff());
    for (int64_t i = 0; i < n; i += 16) mx = _mm512_max_ps(mx, _mm512_loadu_ps(x + i));
    return _mm512_reduce_max_ps(mx);
}

#endif // FK_ATTN_X86
