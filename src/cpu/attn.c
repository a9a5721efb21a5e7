/*
 * attn.c — CPU FlashAttention forward and backward (semantics: include/flashkit.h, src/core/attn_internal.h).
 *
 * The same algorithm as the GPU kernels: each work item owns a tile of BR query rows of one head and walks
 * the key tiles of BC keys its rows can see (fully masked tiles are never visited, so causal costs about half),
 * keeping a running max m, sum l and fp32 accumulator per row (online softmax). K/V tiles are converted from
 * the storage dtype to fp32 once per tile. Scratch is O(tile) per thread, carved from the caller's workspace.
 * Work items (batch x heads x tiles) are spread over OpenMP threads with a dynamic schedule (causal and
 * varlen tiles differ in cost); every output element is written by exactly one item, so results do not
 * depend on the thread count or schedule.
 *
 * Backward (FlashAttention-2 without atomics): Di = rowsum(dO * O) first; then items over (batch, kv head,
 * key tile) accumulate dK and dV for the whole GQA group in scratch, and items over (batch, query head,
 * query tile) accumulate dQ. Both recompute P from q, k and lse; the score tile is recomputed twice, the
 * price of having no atomics and bit-identical results.
 *
 * The tile algorithm is written once in attn_body.h and instantiated for float (f32/f16/bf16 storage, SIMD
 * primitives from attn_avx512.c / attn_avx2.c chosen by ctx->cpu_simd) and double (f64 storage, portable).
 * The environment variable FK_CPU_SIMD_MAX (0, 256 or 512) caps the SIMD level, so tests reach every path.
 */
#include "attn_cpu.h"
#include "../core/attn_kvcache_internal.h"
#include "ops_cpu.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

// Tile sizes: BRF query rows per forward item, BR per backward item, BC keys per tile. Every thread's tiles
// stay within L2 up to head_dim 256 (~0.6 MiB for the backward at d = 256) and the score tile in L1.
// Measured on a 2.6 GHz AVX-512 Xeon, one thread, B=1 H=4 S=1024 f32 (GFLOP/s, best of 4):
//   forward  d=64: BRF=64 108, BRF=128 119;  d=128: 118 vs 135 (more query rows per K/V tile conversion)
//   backward d=64: BR=64 77, BR=128 63;       d=128: 90 vs 76 (P^T, dS^T tiles grow, fall out of L1)
#define BRF 128
#define BR 64
#define BC 64
#define BRC (BRF > BR ? (BRF > BC ? BRF : BC) : (BR > BC ? BR : BC))
_Static_assert(BR % FK_ATTN_MR == 0 && BRF % FK_ATTN_MR == 0 && BC % FK_ATTN_NV == 0, "tiles must be padded to the micro-kernel shape");

static inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
static inline void   *align64(void *p) { return (void *)(((uintptr_t)p + 63) & ~(uintptr_t)63); }
static inline int     thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

// One sequence of the batch: its lengths and the token index of its first row (0 for a fixed-length batch,
// whose sequences are reached through the batch strides instead).
typedef struct seq_t {
    int64_t sq, sk, q0, k0;
} seq_t;

static inline seq_t seq_of(const fk_attn_problem *p, int64_t b) {
    seq_t s;
    if (p->cu_seqlens_q) {
        s.q0 = p->cu_seqlens_q[b];
        s.k0 = p->cu_seqlens_k[b];
        s.sq = p->cu_seqlens_q[b + 1] - s.q0;
        s.sk = p->cu_seqlens_k[b + 1] - s.k0;
    } else {
        s.q0 = s.k0 = 0;
        s.sq        = p->seqlen_q;
        s.sk        = p->seqlen_k;
    }
    return s;
}

// Index of row 0 of sequence b among all query tokens (the Di layout).
static inline int64_t global_row_q(const fk_attn_problem *p, int64_t b, const seq_t *s) {
    return p->cu_seqlens_q ? s->q0 : b * p->seqlen_q;
}

// Keys [lo, hi) that some row of [i0, i0 + nq) sees (the visible ranges grow with the row, and consecutive
// ranges overlap, so their union is one interval).
static void key_span(const fk_attn_problem *p, int64_t i0, int64_t nq, int64_t sq, int64_t sk, int64_t *lo,
                     int64_t *hi) {
    int64_t l0, h0, l1, h1;
    fk_attn_key_range(p, i0, sq, sk, &l0, &h0);
    fk_attn_key_range(p, i0 + nq - 1, sq, sk, &l1, &h1);
    *lo = l0;
    *hi = h1;
}

// Query rows [ia, ib) that see some key of [j0, j0 + nk): the rows with hi(i) > j0 and lo(i) < j0 + nk.
static void row_span(const fk_attn_problem *p, int64_t j0, int64_t nk, int64_t sq, int64_t sk, int64_t *ia,
                     int64_t *ib) {
    int64_t a = 0, b = sq;
    if (p->window_right >= 0 && j0 - sk + sq - p->window_right > a) a = j0 - sk + sq - p->window_right;
    if (p->window_left >= 0 && j0 + nk - sk + sq + p->window_left < b) b = j0 + nk - sk + sq + p->window_left;
    *ia = a;
    *ib = b;
}

// Varlen tokens after the last sequence belong to no sequence: give them o = 0, lse = -inf (forward) and
// zero gradients (backward), so every element of every output is defined.
static void clear_unused_rows_fwd(const fk_attn_problem *p) {
    if (!p->cu_seqlens_q) return;
    const size_t es = fk_dtype_size(p->dtype);
    for (int64_t t = p->cu_seqlens_q[p->batch]; t < p->total_q; t++)
        for (int64_t h = 0; h < p->nheads_q; h++) {
            memset(fk_cpu_at_mut(p->o, p->dtype, t * p->o_rs + h * p->o_hs), 0, (size_t)p->head_dim * es);
            int64_t li = h * p->lse_hs + t * p->lse_rs;
            if (!p->lse) continue;
            if (p->dtype == FK_DTYPE_F64) ((double *)p->lse)[li] = -INFINITY;
            else ((float *)p->lse)[li] = -INFINITY;
        }
}

static void clear_unused_rows_bwd(const fk_attn_problem *p) {
    if (!p->cu_seqlens_q) return;
    const size_t es = fk_dtype_size(p->dtype), row = (size_t)p->head_dim * es;
    for (int64_t t = p->cu_seqlens_q[p->batch]; t < p->total_q; t++)
        for (int64_t h = 0; h < p->nheads_q; h++) memset(fk_cpu_at_mut(p->dq, p->dtype, t * p->dq_rs + h * p->dq_hs), 0, row);
    for (int64_t t = p->cu_seqlens_k[p->batch]; t < p->total_k; t++)
        for (int64_t h = 0; h < p->nheads_kv; h++) {
            memset(fk_cpu_at_mut(p->dk, p->dtype, t * p->dk_rs + h * p->dk_hs), 0, row);
            memset(fk_cpu_at_mut(p->dv, p->dtype, t * p->dv_rs + h * p->dv_hs), 0, row);
        }
}

// --- portable primitives ---------------------------------------------------------------------------------
// Plain loops over contiguous rows of B and C: the compiler vectorizes the inner j loop for the baseline ISA.

static void gemm_portable(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                          float *C, int64_t ldc, int accumulate) {
    for (int64_t i = 0; i < M; i++) {
        float *restrict c = C + i * ldc;
        if (!accumulate) memset(c, 0, (size_t)N * sizeof(float));
        for (int64_t k = 0; k < K; k++) {
            const float a = A[i * lda + k];
            const float *restrict b = B + k * ldb;
            for (int64_t j = 0; j < N; j++) c[j] += a * b[j];
        }
    }
}
static float exp_sum_portable(float *x, int64_t n, float m) {
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += (x[i] = expf(x[i] - m));
    return s;
}
static float row_max_portable(const float *x, int64_t n) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    return mx;
}

static void gemm_f64(int64_t M, int64_t N, int64_t K, const double *A, int64_t lda, const double *B, int64_t ldb,
                     double *C, int64_t ldc, int accumulate) {
    for (int64_t i = 0; i < M; i++) {
        double *restrict c = C + i * ldc;
        if (!accumulate) memset(c, 0, (size_t)N * sizeof(double));
        for (int64_t k = 0; k < K; k++) {
            const double a = A[i * lda + k];
            const double *restrict b = B + k * ldb;
            for (int64_t j = 0; j < N; j++) c[j] += a * b[j];
        }
    }
}
static double exp_sum_f64(double *x, int64_t n, double m) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (x[i] = exp(x[i] - m));
    return s;
}
static double row_max_f64(const double *x, int64_t n) {
    double mx = -INFINITY;
    for (int64_t i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    return mx;
}

typedef struct kern_f64 {
    void (*gemm)(int64_t, int64_t, int64_t, const double *, int64_t, const double *, int64_t, double *, int64_t, int);
    double (*exp_sum)(double *, int64_t, double);
    double (*row_max)(const double *, int64_t);
} kern_f64;

static const kern_f64         kern_double   = {gemm_f64, exp_sum_f64, row_max_f64};
static const fk_attn_kern_f32 kern_portable = {gemm_portable, exp_sum_portable, row_max_portable};
#ifdef FK_ATTN_X86
static const fk_attn_kern_f32 kern_avx2   = {fk_attn_gemm_avx2, fk_attn_exp_sum_avx2, fk_attn_row_max_avx2};
static const fk_attn_kern_f32 kern_avx512 = {fk_attn_gemm_avx512, fk_attn_exp_sum_avx512, fk_attn_row_max_avx512};
#endif

static const fk_attn_kern_f32 *pick_f32(const struct fk_context *ctx) {
    int         simd = ctx->cpu_simd;
    const char *cap  = getenv("FK_CPU_SIMD_MAX");
    if (cap && *cap) {
        int c = atoi(cap);
        if (c < simd) simd = c;
    }
#ifdef FK_ATTN_X86
    if (simd >= 512) return &kern_avx512;
    if (simd >= 256) return &kern_avx2;
#endif
    return &kern_portable;
}

// --- the two instantiations of the tile algorithm ----------------------------------------------------------

#define T float
#define FN(name) name##_f32
#define KERN fk_attn_kern_f32
#define LOAD_ROW(dst, src, dt, n) fk_cpu_load((dst), (src), (dt), (n))
#define STORE_ROW(dst, dt, src, n) fk_cpu_store((dst), (dt), (src), (n))
#define EXP expf
#define LOG logf
#define TANH tanhf
#include "attn_body.h"
#undef T
#undef FN
#undef KERN
#undef LOAD_ROW
#undef STORE_ROW
#undef EXP
#undef LOG
#undef TANH

static inline void load_row_f64(double *dst, const void *src, int64_t n) { memcpy(dst, src, (size_t)n * sizeof(double)); }
static inline void store_row_f64(void *dst, const double *src, int64_t n) { memcpy(dst, src, (size_t)n * sizeof(double)); }

#define T double
#define FN(name) name##_f64
#define KERN kern_f64
#define LOAD_ROW(dst, src, dt, n) ((void)(dt), load_row_f64((dst), (src), (n)))
#define STORE_ROW(dst, dt, src, n) ((void)(dt), store_row_f64((dst), (src), (n)))
#define EXP exp
#define LOG log
#define TANH tanh
#include "attn_body.h"
#undef T
#undef FN
#undef KERN
#undef LOAD_ROW
#undef STORE_ROW
#undef EXP
#undef LOG
#undef TANH

// --- entry points ----------------------------------------------------------------------------------------

static int64_t threads_of(const struct fk_context *ctx) { return ctx->num_threads > 0 ? ctx->num_threads : 1; }
static int64_t acc_bytes(const fk_attn_problem *p) { return p->dtype == FK_DTYPE_F64 ? 8 : 4; }
static int64_t scratch_bytes(const fk_attn_problem *p) {
    return (p->dtype == FK_DTYPE_F64 ? scratch_elems_f64(p->head_dim) : scratch_elems_f32(p->head_dim)) * acc_bytes(p);
}

size_t fk_cpu_attn_fwd_workspace(const struct fk_context *ctx, const fk_attn_problem *p) {
    return (size_t)(64 + threads_of(ctx) * scratch_bytes(p));
}

size_t fk_cpu_attn_bwd_workspace(const struct fk_context *ctx, const fk_attn_problem *p) {
    int64_t total_q = p->total_q > 0 ? p->total_q : p->batch * p->seqlen_q;
    int64_t di      = round_up(total_q * p->nheads_q, 64 / acc_bytes(p)) * acc_bytes(p); // Di, one per row
    return (size_t)(64 + di + threads_of(ctx) * scratch_bytes(p));
}

fk_status fk_cpu_attn_fwd(const struct fk_context *ctx, const fk_attn_problem *p, void *ws, size_t ws_bytes) {
    if (ws_bytes < fk_cpu_attn_fwd_workspace(ctx, p))
        return fk_error(FK_STATUS_INTERNAL, "attn_fwd: CPU backend got a workspace smaller than it asked for");
    if (p->dtype == FK_DTYPE_F64) fwd_f64(ctx, p, NULL, &kern_double, ws);
    else fwd_f32(ctx, p, NULL, pick_f32(ctx), ws);
    return FK_STATUS_SUCCESS;
}

fk_status fk_cpu_attn_bwd(const struct fk_context *ctx, const fk_attn_problem *p, void *ws, size_t ws_bytes) {
    if (ws_bytes < fk_cpu_attn_bwd_workspace(ctx, p))
        return fk_error(FK_STATUS_INTERNAL, "attn_bwd: CPU backend got a workspace smaller than it asked for");
    if (p->dtype == FK_DTYPE_F64) bwd_f64(ctx, p, &kern_double, ws);
    else bwd_f32(ctx, p, pick_f32(ctx), ws);
    return FK_STATUS_SUCCESS;
}

// --- decode with a KV cache ------------------------------------------------------------------------------
// The same forward items, with each sequence's keys read from the cache (attn_body.h, kv != NULL). New keys
// and values are first copied into their cache rows (storage dtype, no conversion), so the attention sees
// one set of keys per sequence, cache_seqlens[b] + seqlen_new long.

size_t fk_cpu_attn_kvcache_workspace(const struct fk_context *ctx, const fk_attn_kv_problem *p) {
    return fk_cpu_attn_fwd_workspace(ctx, &p->attn);
}

// k, v (B, Snew, Hkv, D) -> cache rows cache_seqlens[b] + i of every kv head.
static void kv_append(const struct fk_context *ctx, const fk_attn_kv_problem *kp) {
    const fk_attn_problem *p  = &kp->attn;
    const fk_attn_kv      *kv = &kp->kv;
    const size_t           es = fk_dtype_size(p->dtype), row = (size_t)p->head_dim * es;
    const int64_t          n  = p->batch * kv->seqlen_new;
    const int              nt = (int)threads_of(ctx);
    const int              par = n * p->nheads_kv * p->head_dim >= FK_CPU_PAR_MIN_WORK;
    FK_OMP_PARALLEL_FOR
    for (int64_t t = 0; t < n; t++) {
        const int64_t b = t / kv->seqlen_new, i = t % kv->seqlen_new, j = kv->cache_seqlens[b] + i;
        const int64_t ko = fk_attn_kv_row(kv, b, j, p->k_bs, p->k_rs), vo = fk_attn_kv_row(kv, b, j, p->v_bs, p->v_rs);
        for (int64_t h = 0; h < p->nheads_kv; h++) {
            memcpy(fk_cpu_at_mut(kv->k_cache, p->dtype, ko + h * p->k_hs),
                   fk_cpu_at(kv->k_new, p->dtype, b * kv->kn_bs + i * kv->kn_rs + h * kv->kn_hs), row);
            memcpy(fk_cpu_at_mut(kv->v_cache, p->dtype, vo + h * p->v_hs),
                   fk_cpu_at(kv->v_new, p->dtype, b * kv->vn_bs + i * kv->vn_rs + h * kv->vn_hs), row);
        }
    }
}

fk_status fk_cpu_attn_fwd_kvcache(const struct fk_context *ctx, const fk_attn_kv_problem *kp, void *ws,
                                  size_t ws_bytes) {
    if (ws_bytes < fk_cpu_attn_kvcache_workspace(ctx, kp))
        return fk_error(FK_STATUS_INTERNAL, "attn_fwd_kvcache: CPU backend got a workspace smaller than it asked for");
    if (kp->kv.seqlen_new > 0) kv_append(ctx, kp);
    if (kp->attn.dtype == FK_DTYPE_F64) fwd_f64(ctx, &kp->attn, &kp->kv, &kern_double, ws);
    else fwd_f32(ctx, &kp->attn, &kp->kv, pick_f32(ctx), ws);
    return FK_STATUS_SUCCESS;
}
