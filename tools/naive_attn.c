/*
 * naive_attn.c — the materializing baseline (see naive_attn.h): every step is a whole-tensor pass, as an eager
 * framework runs it, but each pass is a blocked SIMD loop threaded over (batch, head, row block).
 *
 * Matrix products go through one routine: C[M x N] = alpha * A[M x K] B[K x N] with free strides on A and B,
 * so Q K^T, P V, P^T dO, dO V^T, dS K and dS^T Q need no transposed copies. B is packed panel by panel
 * (K x NR, contiguous), A is broadcast element by element; an MR x NR block of C stays in registers.
 * Micro-kernel shapes per ISA (chosen at run time): AVX-512 8 x 32 (16 zmm accumulators), AVX2 6 x 16
 * (12 ymm), portable 4 x 8.
 */
#include "naive_attn.h"

// -std=c11 turns off floating-point contraction; the micro-kernels need a*b+c as one FMA, as any BLAS has.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=fast")
#endif

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define ROW_BLOCK 128 // rows of C per task: A's block stays in L2 while B panels stream by
#define MAX_NR 32

typedef float v16f __attribute__((vector_size(64)));
typedef float v8f __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));

// One micro-kernel family: rows [0, M) of C against one packed panel Bp [K][NR] (ncols <= NR valid columns).
// a_rows: row i of A starts at A + i * a_rs; element k of a row is at k * a_cs.
#define DEFINE_PANEL(NAME, ATTR, VT, LANES, MR, NVEC)                                                        \
    ATTR static void NAME(int64_t M, int64_t K, const float *A, int64_t a_rs, int64_t a_cs, const float *Bp,  \
                          float *C, int64_t ldc, int64_t ncols, float alpha) {                               \
        enum { NR = LANES * NVEC };                                                                         \
        for (int64_t i0 = 0; i0 < M; i0 += MR) {                                                            \
            const float *ar[MR];                                                                            \
            for (int r = 0; r < MR; r++) ar[r] = A + (i0 + r < M ? i0 + r : M - 1) * a_rs;                  \
            VT acc[MR][NVEC];                                                                               \
            for (int r = 0; r < MR; r++)                                                                    \
                for (int v = 0; v < NVEC; v++) acc[r][v] = (VT){0};                                         \
            for (int64_t k = 0; k < K; k++) {                                                               \
                VT b[NVEC];                                                                                 \
                for (int v = 0; v < NVEC; v++) memcpy(&b[v], Bp + k * NR + v * LANES, sizeof(VT));          \
                for (int r = 0; r < MR; r++) {                                                              \
                    const float a = ar[r][k * a_cs];                                                        \
                    for (int v = 0; v < NVEC; v++) acc[r][v] += a * b[v];                                   \
                }                                                                                           \
            }                                                                                               \
            const int64_t mr = M - i0 < MR ? M - i0 : MR;                                                   \
            for (int64_t r = 0; r < mr; r++) {                                                              \
                float *c = C + (i0 + r) * ldc;                                                              \
                if (ncols == NR) {                                                                          \
                    for (int v = 0; v < NVEC; v++) {                                                        \
                        VT x = acc[r][v] * alpha;                                                           \
                        memcpy(c + v * LANES, &x, sizeof x);                                                \
                    }                                                                                       \
                } else {                                                                                    \
                    float tmp[NR];                                                                          \
                    memcpy(tmp, acc[r], sizeof tmp);                                                        \
                    for (int64_t j = 0; j < ncols; j++) c[j] = alpha * tmp[j];                              \
                }                                                                                           \
            }                                                                                               \
        }                                                                                                   \
    }

#if defined(__x86_64__) && defined(__GNUC__)
DEFINE_PANEL(panel_avx512, __attribute__((target("avx512f,avx512dq,avx2,fma"))), v16f, 16, 8, 2)
DEFINE_PANEL(panel_avx2, __attribute__((target("avx2,fma"))), v8f, 8, 6, 2)
#endif
DEFINE_PANEL(panel_portable, , v4f, 4, 4, 2)

typedef void (*panel_fn)(int64_t, int64_t, const float *, int64_t, int64_t, const float *, float *, int64_t,
                         int64_t, float);

typedef struct kernel {
    panel_fn    fn;
    int         nr;
    const char *name;
} kernel;

static kernel pick_kernel(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq"))
        return (kernel){panel_avx512, 32, "avx512"};
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return (kernel){panel_avx2, 16, "avx2"};
#endif
    return (kernel){panel_portable, 8, "portable"};
}

const char *naive_attn_isa(void) { return pick_kernel().name; }

// One operand of a batched product: element (b, h, row, col) at base + b*bs + h*hs + row*rs + col*cs.
typedef struct operand {
    const float *base;
    int64_t      bs, hs, rs, cs;
} operand;

// For every (b, h): C = alpha * A B, C row-major [M x N] with row stride ldc.
// panels: one panel buffer per thread, panel_stride floats apart (at least K * MAX_NR).
static void batched_gemm(int64_t B, int64_t H, int64_t M, int64_t N, int64_t K, operand a, operand b, float *c,
                         int64_t c_bs, int64_t c_hs, int64_t ldc, float alpha, int threads, float *panels,
                         int64_t panel_stride) {
    const kernel  kern   = pick_kernel();
    const int64_t blocks = (M + ROW_BLOCK - 1) / ROW_BLOCK;
    const int64_t tasks  = B * H * blocks;
#pragma omp parallel num_threads(threads)
    {
#ifdef _OPENMP
        float *bp = panels + (int64_t)omp_get_thread_num() * panel_stride;
#else
        float *bp = panels;
#endif
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < tasks; t++) {
            const int64_t bh = t / blocks, i0 = (t % blocks) * ROW_BLOCK;
            const int64_t bb = bh / H, hh = bh % H;
            const int64_t m  = M - i0 < ROW_BLOCK ? M - i0 : ROW_BLOCK;
            const float  *ab = a.base + bb * a.bs + hh * a.hs + i0 * a.rs;
            const float  *bb_ = b.base + bb * b.bs + hh * b.hs;
            float        *cb = c + bb * c_bs + hh * c_hs + i0 * ldc;
            for (int64_t j0 = 0; j0 < N; j0 += kern.nr) {
                const int64_t nc = N - j0 < kern.nr ? N - j0 : kern.nr;
                for (int64_t k = 0; k < K; k++) { // pack B[k][j0 .. j0+nr) contiguous, zero-padded
                    const float *src = bb_ + k * b.rs + j0 * b.cs;
                    float       *dst = bp + k * kern.nr;
                    int64_t      j   = 0;
                    if (b.cs == 1)
                        for (; j < nc; j++) dst[j] = src[j];
                    else
                        for (; j < nc; j++) dst[j] = src[j * b.cs];
                    for (; j < kern.nr; j++) dst[j] = 0.0f;
                }
                kern.fn(m, K, ab, a.rs, a.cs, bp, cb + j0, ldc, nc, alpha);
            }
        }
    }
}

// exp(x) for x <= 0 (softmax arguments after the max is subtracted), relative error ~2e-7; -inf -> 0.
// Written as a plain loop body so the compiler vectorizes it (no libm call).
static inline float exp_neg(float x) {
    const float xc = x < -87.0f ? -87.0f : x;
    const float n  = floorf(xc * 1.44269504088896341f + 0.5f);
    const float r  = (xc - n * 0.693359375f) - n * -2.12194440e-4f;
    float       p  = 1.0f / 720.0f;
    p              = p * r + 1.0f / 120.0f;
    p              = p * r + 1.0f / 24.0f;
    p              = p * r + 1.0f / 6.0f;
    p              = p * r + 0.5f;
    p              = p * r + 1.0f;
    p              = p * r + 1.0f;
    int32_t bits   = ((int32_t)n + 127) << 23;
    float   s;
    memcpy(&s, &bits, sizeof s);
    return x < -87.0f ? 0.0f : p * s;
}

// The row loops are compiled per ISA (GCC picks the clone at load time); the OpenMP loops that call them are not,
// because GCC outlines a parallel region before it clones a function.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SIMD_CLONES
#endif

// pr[0..Sk) = softmax of sr over the visible keys [0, hi), zero beyond. sr and pr may be the same row.
SIMD_CLONES static void softmax_row(const float *sr, float *pr, int64_t hi, int64_t Sk) {
    enum { L = 16 }; // 16 partial maxima and sums: vector lanes, so the reductions vectorize without -ffast-math
    float   mv[L], sv[L];
    int64_t j = 0;
    for (int l = 0; l < L; l++) mv[l] = -INFINITY, sv[l] = 0.0f;
    for (; j + L <= hi; j += L)
        for (int l = 0; l < L; l++) mv[l] = sr[j + l] > mv[l] ? sr[j + l] : mv[l];
    float mx = -INFINITY;
    for (int l = 0; l < L; l++) mx = mv[l] > mx ? mv[l] : mx;
    for (; j < hi; j++) mx = sr[j] > mx ? sr[j] : mx;
    for (j = 0; j + L <= hi; j += L)
        for (int l = 0; l < L; l++) {
            const float e = exp_neg(sr[j + l] - mx);
            pr[j + l]     = e;
            sv[l] += e;
        }
    float sum = 0.0f;
    for (int l = 0; l < L; l++) sum += sv[l];
    for (; j < hi; j++) {
        const float e = exp_neg(sr[j] - mx);
        pr[j]         = e;
        sum += e;
    }
    const float inv = hi > 0 ? 1.0f / sum : 0.0f;
    for (j = 0; j < hi; j++) pr[j] *= inv;
    for (j = hi; j < Sk; j++) pr[j] = 0.0f;
}

// dsr = pr * (dpr - di)
SIMD_CLONES static void softmax_bwd_row(const float *pr, const float *dpr, float di, float *dsr, int64_t Sk) {
    for (int64_t j = 0; j < Sk; j++) dsr[j] = pr[j] * (dpr[j] - di);
}

// P[row] = softmax(S[row] masked) for every (b, h, row); S and P may be the same buffer.
static void softmax_rows(const naive_attn_shape *s, const float *S, float *P, int threads) {
    const int64_t Sq = s->seqlen_q, Sk = s->seqlen_k, rows = s->batch * s->nheads * Sq;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t row = 0; row < rows; row++) {
        const int64_t i  = row % Sq;
        int64_t       hi = Sk; // visible keys [0, hi), bottom-right aligned
        if (s->causal) {
            hi = i + Sk - Sq + 1;
            if (hi < 0) hi = 0;
            if (hi > Sk) hi = Sk;
        }
        softmax_row(S + row * Sk, P + row * Sk, hi, Sk);
    }
}

// dS = P * (dP - rowsum(dO * O)) for every row.
static void softmax_bwd_rows(const naive_attn_shape *s, const float *P, const float *dP, const float *o,
                             const float *do_, float *dS, int threads) {
    const int64_t Sq = s->seqlen_q, Sk = s->seqlen_k, H = s->nheads, D = s->head_dim;
    const int64_t rows = s->batch * H * Sq;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t row = 0; row < rows; row++) {
        const int64_t i = row % Sq, bh = row / Sq, b = bh / H, h = bh % H;
        const float  *orow  = o + ((b * Sq + i) * H + h) * D;
        const float  *dorow = do_ + ((b * Sq + i) * H + h) * D;
        float         di    = 0.0f;
        for (int64_t d = 0; d < D; d++) di += orow[d] * dorow[d];
        softmax_bwd_row(P + row * Sk, dP + row * Sk, di, dS + row * Sk, Sk);
    }
}

static float scale_of(const naive_attn_shape *s) {
    return s->scale != 0.0f ? s->scale : (float)(1.0 / sqrt((double)s->head_dim));
}

static int resolve_threads(int threads) {
#ifdef _OPENMP
    return threads > 0 ? threads : omp_get_max_threads();
#else
    (void)threads;
    return 1;
#endif
}

static size_t matrix_bytes(const naive_attn_shape *s) {
    return (size_t)s->batch * (size_t)s->nheads * (size_t)s->seqlen_q * (size_t)s->seqlen_k * sizeof(float);
}

// Floats between two threads' panels (a multiple of 16, so each panel starts 64-byte aligned).
static int64_t panel_stride(const naive_attn_shape *s) {
    int64_t kmax = s->seqlen_q > s->seqlen_k ? s->seqlen_q : s->seqlen_k;
    if (s->head_dim > kmax) kmax = s->head_dim;
    return (kmax * MAX_NR + 15) / 16 * 16;
}

size_t naive_attn_fwd_scratch_bytes(const naive_attn_shape *s, int threads) {
    return 2 * matrix_bytes(s) + (size_t)resolve_threads(threads) * (size_t)panel_stride(s) * sizeof(float);
}

size_t naive_attn_bwd_scratch_bytes(const naive_attn_shape *s, int threads) {
    return 3 * matrix_bytes(s) + (size_t)resolve_threads(threads) * (size_t)panel_stride(s) * sizeof(float);
}

// Operand views: [B, S, H, D] tensors, and [B, H, rows, cols] matrices.
static operand bshd(const float *p, int64_t S, int64_t H, int64_t D, int transposed) {
    operand x = {p, S * H * D, D, H * D, 1};
    if (transposed) {
        x.rs = 1;
        x.cs = H * D;
    }
    return x;
}
static operand mat(const float *p, int64_t H, int64_t rows, int64_t cols, int transposed) {
    operand x = {p, H * rows * cols, rows * cols, cols, 1};
    if (transposed) {
        x.rs = 1;
        x.cs = cols;
    }
    return x;
}

// The matrices are used as they are given: nothing is zeroed first (every element is written before it is read).
void naive_attn_fwd(const naive_attn_shape *s, int threads, const float *q, const float *k, const float *v, float *o,
                    void *scratch) {
    const int     nt = resolve_threads(threads);
    const int64_t B = s->batch, Sq = s->seqlen_q, Sk = s->seqlen_k, H = s->nheads, D = s->head_dim;
    const int64_t mf = (int64_t)(matrix_bytes(s) / sizeof(float)), ps = panel_stride(s);
    float        *S = (float *)scratch, *P = S + mf, *panels = P + mf;
    // S = scale * Q K^T      [B, H, Sq, Sk]
    batched_gemm(B, H, Sq, Sk, D, bshd(q, Sq, H, D, 0), bshd(k, Sk, H, D, 1), S, H * Sq * Sk, Sq * Sk, Sk,
                 scale_of(s), nt, panels, ps);
    // P = softmax(S)
    softmax_rows(s, S, P, nt);
    // O = P V                [B, Sq, H, D]
    batched_gemm(B, H, Sq, D, Sk, mat(P, H, Sq, Sk, 0), bshd(v, Sk, H, D, 0), o, Sq * H * D, D, H * D, 1.0f, nt,
                 panels, ps);
}

void naive_attn_bwd(const naive_attn_shape *s, int threads, const float *q, const float *k, const float *v,
                    const float *o, const float *do_, float *dq, float *dk, float *dv, void *scratch) {
    const int     nt = resolve_threads(threads);
    const int64_t B = s->batch, Sq = s->seqlen_q, Sk = s->seqlen_k, H = s->nheads, D = s->head_dim;
    const float   scale = scale_of(s);
    const int64_t mf = (int64_t)(matrix_bytes(s) / sizeof(float)), ps = panel_stride(s);
    float        *P = (float *)scratch, *dP = P + mf, *dS = dP + mf, *panels = dS + mf;
    const int64_t m_bs = H * Sq * Sk, m_hs = Sq * Sk;
    // P = softmax(scale * Q K^T), recomputed in place
    batched_gemm(B, H, Sq, Sk, D, bshd(q, Sq, H, D, 0), bshd(k, Sk, H, D, 1), P, m_bs, m_hs, Sk, scale, nt, panels, ps);
    softmax_rows(s, P, P, nt);
    // dV = P^T dO            [B, Sk, H, D]
    batched_gemm(B, H, Sk, D, Sq, mat(P, H, Sq, Sk, 1), bshd(do_, Sq, H, D, 0), dv, Sk * H * D, D, H * D, 1.0f, nt,
                 panels, ps);
    // dP = dO V^T            [B, H, Sq, Sk]
    batched_gemm(B, H, Sq, Sk, D, bshd(do_, Sq, H, D, 0), bshd(v, Sk, H, D, 1), dP, m_bs, m_hs, Sk, 1.0f, nt, panels,
                 ps);
    // dS = P * (dP - rowsum(dO * O))
    softmax_bwd_rows(s, P, dP, o, do_, dS, nt);
    // dQ = scale * dS K      [B, Sq, H, D]
    batched_gemm(B, H, Sq, D, Sk, mat(dS, H, Sq, Sk, 0), bshd(k, Sk, H, D, 0), dq, Sq * H * D, D, H * D, scale, nt,
                 panels, ps);
    // dK = scale * dS^T Q    [B, Sk, H, D]
    batched_gemm(B, H, Sk, D, Sq, mat(dS, H, Sq, Sk, 1), bshd(q, Sq, H, D, 0), dk, Sk * H * D, D, H * D, scale, nt,
                 panels, ps);
}
