/*
 * attn_avx2.c — AVX2+FMA tile primitives of the CPU attention backend (see attn_cpu.h). Compiled with
 * -mavx2 -mfma; called only when ctx->cpu_simd == 256.
 *
 * The GEMM micro-kernel keeps a 4 x 16 block of C in 8 ymm accumulators (2 B loads + 4 broadcasts per 8
 * FMAs); with B, the broadcast and the 16 registers of AVX2 it leaves room for the compiler. Tiles are
 * padded (attn_cpu.h) so M is a multiple of 8 and N a multiple of 16: no tails.
 */
#include "attn_cpu.h"

#if defined(FK_ATTN_X86)
#include <immintrin.h>

static void kernel_4x16(int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb, float *C, int64_t ldc,
                        int accumulate) {
    __m256 c[4][2];
#pragma GCC unroll 4
    for (int r = 0; r < 4; r++)
#pragma GCC unroll 2
        for (int v = 0; v < 2; v++) c[r][v] = accumulate ? _mm256_loadu_ps(C + r * ldc + 8 * v) : _mm256_setzero_ps();
    for (int64_t k = 0; k < K; k++) {
        __m256 b0 = _mm256_loadu_ps(B + k * ldb), b1 = _mm256_loadu_ps(B + k * ldb + 8);
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) {
            __m256 a = _mm256_broadcast_ss(A + r * lda + k);
            c[r][0]  = _mm256_fmadd_ps(a, b0, c[r][0]);
            c[r][1]  = _mm256_fmadd_ps(a, b1, c[r][1]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < 4; r++)
#pragma GCC unroll 2
        for (int v = 0; v < 2; v++) _mm256_storeu_ps(C + r * ldc + 8 * v, c[r][v]);
}

void fk_attn_gemm_avx2(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                       float *C, int64_t ldc, int accumulate) {
    for (int64_t j = 0; j < N; j += 16)
        for (int64_t i = 0; i < M; i += 4) kernel_4x16(K, A + i * lda, lda, B + j, ldb, C + i * ldc + j, ldc, accumulate);
}

// exp(x), the same method and constants as exp512 in attn_avx512.c.
static inline __m256 exp256(__m256 x) {
    const __m256 tiny = _mm256_cmp_ps(x, _mm256_set1_ps(-87.3f), _CMP_LT_OQ);
    x                 = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r        = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p        = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p        = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p        = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p        = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p        = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p        = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    __m256  y = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
    return _mm256_andnot_ps(tiny, y);
}

static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s        = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s        = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

float fk_attn_exp_sum_avx2(float *x, int64_t n, float m) {
    __m256 mv = _mm256_set1_ps(m), s = _mm256_setzero_ps();
    for (int64_t i = 0; i < n; i += 8) {
        __m256 y = exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv));
        _mm256_storeu_ps(x + i, y);
        s = _mm256_add_ps(s, y);
    }
    return hsum256(s);
}

float fk_attn_row_max_avx2(const float *x, int64_t n) {
    __m256 mx = _mm256_set1_ps(-__builtin_inff());
    for (int64_t i = 0; i < n; i += 8) mx = _mm256_max_ps(mx, _mm256_loadu_ps(x + i));
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
    s        = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s        = _mm_max_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

#endif // FK_ATTN_X86
