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
#include "../core/ring_internal.h"
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

// The forward item stays one out-of-line function: inlined into both the plain and the split-KV task loops
// it ran 11% slower (B 1, Hq 32, Hkv 8, D 128, 32768 keys, 1 thread: 25.9 vs 23.2 ms; noinline: 22.0).
#if defined(__GNUC__)
#define FK_NOINLINE __attribute__((noinline))
#else
#define FK_NOINLINE
#endif

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
    if (p->dtype == FK_DTYPE_F64) fwd_f64(ctx, p, NULL, &kern_double, ws, 1);
    else fwd_f32(ctx, p, NULL, pick_f32(ctx), ws, 1);
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
//
// Split-KV: with fewer items (batch x head group x query tile) than threads, or when num_splits > 1 is asked
// for, each item's key span is cut into ns chunks of whole key tiles (the tile boundaries of the unsplit walk).
// A (item, chunk) pair is one parallel task writing its partial O (fp32, normalized) and LSE into its own slot
// of the workspace; then each row folds its ns partials in chunk order 0, 1, ..., ns - 1 through their LSEs
// with fk_merge_weights, the formula of fk_attn_merge. Items are processed in waves of `wave` items, so the
// slots take wave x ns x slot floats, whatever the batch. The chunk boundaries and the fold order depend only
// on ns and the sequence lengths, never on the thread count or the schedule: for a fixed num_splits >= 1 the
// output is bit-identical across thread counts. With num_splits = 0 the thread count picks ns (and so the
// bits, though every choice is within the same tolerance). f64 problems never split (the merge weights are
// fp32); num_splits is clamped to the capacity's key tiles and to KV_MAX_SPLITS.

#define KV_MAX_SPLITS 128

typedef struct kv_plan {
    int64_t nh;    // query heads per tile: G (the GQA group packed) or 1
    int64_t rows;  // query positions per tile (BRF / nh)
    int64_t ntq;   // query tiles per (batch, head group)
    int64_t items; // batch x head groups x query tiles
    int64_t nq;    // tile rows of the largest item (nh x min(seqlen_q, rows))
    int64_t ns;    // key chunks per item; 1 = not split
    int64_t wave;  // items per wave of the split path
    int64_t slot;  // floats per (item, chunk): nq x head_dim partial O, then nq LSEs, 64-byte multiple
} kv_plan;

// The one place that chooses packing and splitting: the size query and the run both call it. It reads shapes
// only (capacity, not cache_seqlens), so a workspace sized once serves every step of a growing cache.
static kv_plan kv_plan_of(const struct fk_context *ctx, const fk_attn_kv_problem *kp) {
    const fk_attn_problem *p  = &kp->attn;
    const int64_t          nt = threads_of(ctx), G = p->nheads_q / p->nheads_kv, want = kp->kv.num_splits;
    const int              fits = G > 1 && G * p->seqlen_q <= BRF / 2; // the group fits half a tile
    kv_plan                pl;
    pl.ns = 1;
    if (p->dtype != FK_DTYPE_F64) {
        const int64_t rows = fits ? BRF / G : BRF, tiles = (p->seqlen_k + BC - 1) / BC; // seqlen_k = capacity
        const int64_t items = p->batch * (fits ? p->nheads_kv : p->nheads_q) * ((p->seqlen_q + rows - 1) / rows);
        int64_t       ns    = want > 0 ? want : items < nt ? (nt + items - 1) / items : 1;
        if (ns > tiles) ns = tiles;
        pl.ns = ns < KV_MAX_SPLITS ? ns : KV_MAX_SPLITS;
    }
    // Packing converts each K/V tile once per group; unpacked heads are more items for the threads, which only
    // matters when nothing is split. An explicit num_splits always packs, so its bits never follow the threads.
    pl.nh    = fits && (p->batch * p->nheads_kv >= nt || pl.ns > 1 || want > 0) ? G : 1;
    pl.rows  = BRF / pl.nh;
    pl.ntq   = (p->seqlen_q + pl.rows - 1) / pl.rows;
    pl.items = p->batch * (p->nheads_q / pl.nh) * pl.ntq;
    pl.nq    = pl.nh * (p->seqlen_q < pl.rows ? p->seqlen_q : pl.rows);
    // Waves of ~2 tasks per thread: enough for the dynamic schedule to even out, few barriers.
    pl.wave = (2 * nt + pl.ns - 1) / pl.ns;
    if (pl.wave > pl.items) pl.wave = pl.items;
    pl.slot = round_up(pl.nq * p->head_dim + pl.nq, 16);
    return pl;
}

size_t fk_cpu_attn_kvcache_workspace(const struct fk_context *ctx, const fk_attn_kv_problem *p) {
    const kv_plan pl = kv_plan_of(ctx, p);
    size_t        n  = fk_cpu_attn_fwd_workspace(ctx, &p->attn);
    if (pl.ns > 1) n += (size_t)(pl.wave * pl.ns * pl.slot) * sizeof(float);
    return n;
}

// Row r of item `it`: fold the ns partials at part (slots of pl->slot floats, chunk order) into o and lse.
static void kv_merge_row(const fk_attn_problem *p, const kv_plan *pl, const float *part, int64_t it, int64_t r) {
    const int64_t qt = it % pl->ntq, bh = it / pl->ntq, hg = p->nheads_q / pl->nh;
    const int64_t b = bh / hg, h = (bh % hg) * pl->nh, i0 = qt * pl->rows, D = p->head_dim;
    const int64_t nqi = p->seqlen_q - i0 < pl->rows ? p->seqlen_q - i0 : pl->rows;
    if (r >= pl->nh * nqi) return; // a padding row of a short last query tile
    const int64_t g = r / nqi, hr = h + g, ir = i0 + r - g * nqi;
    float         acc[256], L = -INFINITY;
    for (int64_t c = 0; c < pl->ns; c++) {
        const float *po = part + c * pl->slot, lp = po[pl->nq * D + r];
        float        wa, wp, ln;
        fk_merge_weights(L, lp, &wa, &wp, &ln);
        const int use_a = wa > 0.0f, use_p = wp > 0.0f; // a side with weight 0 is never read
        for (int64_t d = 0; d < D; d++) {
            float x = 0.0f;
            if (use_a) x += wa * acc[d];
            if (use_p) x += wp * po[r * D + d];
            acc[d] = x;
        }
        L = ln;
    }
    fk_cpu_store(fk_cpu_at_mut(p->o, p->dtype, b * p->o_bs + ir * p->o_rs + hr * p->o_hs), p->dtype, acc, D);
    if (p->lse) ((float *)p->lse)[b * p->lse_bs + hr * p->lse_hs + ir * p->lse_rs] = L;
}

static void kv_fwd_split(const struct fk_context *ctx, const fk_attn_kv_problem *kp, const kv_plan *pl, void *ws) {
    const fk_attn_problem *p    = &kp->attn;
    const int              nt   = (int)threads_of(ctx);
    const int64_t          per  = scratch_elems_f32(p->head_dim), hg = p->nheads_q / pl->nh, ns = pl->ns;
    float                 *base = (float *)align64(ws), *part = base + nt * per; // per is a 64-byte multiple
    const fk_attn_kern_f32 *kn  = pick_f32(ctx);
    (void)nt;
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
#endif
    {
        scratch_f32 w = carve_f32(base + (int64_t)thread_id() * per, p->head_dim);
        for (int64_t w0 = 0; w0 < pl->items; w0 += pl->wave) {
            const int64_t nw = pl->items - w0 < pl->wave ? pl->items - w0 : pl->wave;
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
            for (int64_t t = 0; t < nw * ns; t++) {
                const int64_t it = w0 + t / ns, qt = it % pl->ntq, bh = it / pl->ntq;
                float        *slot = part + t * pl->slot;
                fwd_item_f32(p, &kp->kv, kn, &w, bh / hg, (bh % hg) * pl->nh, pl->nh, qt * pl->rows, t % ns, ns,
                             slot, slot + pl->nq * p->head_dim);
            }
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
            for (int64_t t = 0; t < nw * pl->nq; t++)
                kv_merge_row(p, pl, part + (t / pl->nq) * ns * pl->slot, w0 + t / pl->nq, t % pl->nq);
        }
    }
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
    const kv_plan pl = kv_plan_of(ctx, kp);
    if (kp->kv.seqlen_new > 0) kv_append(ctx, kp);
    if (kp->attn.dtype == FK_DTYPE_F64) fwd_f64(ctx, &kp->attn, &kp->kv, &kern_double, ws, pl.nh);
    else if (pl.ns > 1) kv_fwd_split(ctx, kp, &pl, ws);
    else fwd_f32(ctx, &kp->attn, &kp->kv, pick_f32(ctx), ws, pl.nh);
    return FK_STATUS_SUCCESS;
}
