/*
 * test_ring.c — the attention merge (CPU, and CUDA when a GPU is present) against the float64 reference
 * (running accumulators over several partials, rows whose LSE is -inf, mixed dtypes, strided views, packed
 * layout, split-KV attention end to end), every bad-input rule of fk_attn_merge and fk_ring_attn_*, and, on
 * 2 GPUs with NCCL, ring attention forward and backward against the float64 reference with the single-GPU
 * fk_attn_fwd/fk_attn_bwd error as the bound (causal and not, zigzag and contiguous, GQA/MQA, head dims 64 and
 * 128, fp16, bf16, fp32).
 * Run: build/test_ring [-v] [-p SUBSTRING] [-b cpu|cuda]
 * Environment: FK_NCCL_LIBRARY as for the library. FK_TEST_EXPECT_NO_NCCL=1 (with FK_NCCL_LIBRARY pointing at
 * a missing file) runs only the check that ring attention then returns FK_STATUS_COMM_ERROR.
 */
#define _POSIX_C_SOURCE 200809L
#include "common/fk_test.h"
#include "ref/ref_attn.h"
#include "ref/ref_merge.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(FK_TEST_CUDA) && defined(FK_TEST_HAVE_NCCL_H)
#define RING_GPU 1
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>
#else
#define RING_GPU 0
#endif

static double *dalloc(int64_t n) { return (double *)calloc((size_t)(n > 0 ? n : 1), sizeof(double)); }

static bool status_ok(fk_status st, const char *sig) {
    if (st == FK_STATUS_SUCCESS) return true;
    char msg[700];
    snprintf(msg, sizeof msg, "%s: %s", fk_status_string(st), fk_last_error_message());
    if (FK_STATUS_CATEGORY(st) == FK_STATUS_NOT_SUPPORTED) fk_test_skip(sig, msg);
    else fk_test_fail(sig, msg);
    return false;
}

// Device buffers through the harness (NULL device pointer on the CPU).
typedef struct buf {
    void  *host, *dev;
    size_t bytes;
} buf;
static bool buf_alloc(buf *b, size_t bytes, bool gpu) {
    b->bytes = bytes ? bytes : 1;
    b->host  = malloc(b->bytes);
    b->dev   = gpu ? fk_test_dev_alloc(b->bytes) : NULL;
    return b->host && (!gpu || b->dev);
}
static void  buf_free(buf *b) { free(b->host), fk_test_dev_free(b->dev), b->host = b->dev = NULL; }
static void *buf_ptr(const buf *b) { return b->dev ? b->dev : b->host; }
static bool  buf_up(const buf *b) { return !b->dev || fk_test_h2d(b->dev, b->host, b->bytes); }
static bool  buf_down(const buf *b) { return !b->dev || (fk_test_dev_sync() && fk_test_d2h(b->host, b->dev, b->bytes)); }

// LSE check: -inf exactly where the reference has -inf, else |got - ref| <= 1e-5 * max(1, |ref|).
static bool check_lse(const float *got, const double *ref, int64_t n, char *detail, size_t cap) {
    double  worst = 0;
    int64_t bad_inf = 0, nonfinite = 0;
    for (int64_t i = 0; i < n; i++) {
        if (ref[i] == -INFINITY) {
            bad_inf += got[i] != -INFINITY;
            continue;
        }
        if (!isfinite(got[i])) {
            nonfinite++;
            continue;
        }
        double e = fabs(got[i] - ref[i]) / fmax(1.0, fabs(ref[i]));
        worst    = e > worst ? e : worst;
    }
    snprintf(detail, cap, "lse: max rel %.3g (tol 1e-5), -inf mismatches %lld, nonfinite %lld", worst,
             (long long)bad_inf, (long long)nonfinite);
    return worst <= 1e-5 && !bad_inf && !nonfinite;
}

// Output check: fp32 relative L2 <= 1e-5; fp16/bf16 max_abs <= 2 x (the same running merge kept in that dtype)
// + 1e-6; rows the reference leaves empty must be exactly 0; no NaN/Inf.
static bool check_out(const void *got, fk_dtype dt, const double *ref, const double *naive, int64_t n,
                      char *detail, size_t cap) {
    fk_err e = fk_compare(got, dt, ref, n);
    bool   ok;
    if (dt == FK_DTYPE_F32) {
        ok = e.rel <= 1e-5;
        snprintf(detail, cap, "out: rel %.3g (tol 1e-5), max_abs %.3g, nonfinite %lld", e.rel, e.max_abs,
                 (long long)e.nonfinite);
    } else {
        fk_err en  = fk_compare_d(naive, ref, n);
        double tol = 2 * en.max_abs + 1e-6;
        ok         = e.max_abs <= tol;
        snprintf(detail, cap, "out: max_abs %.3g (tol %.3g = 2 x naive %s + 1e-6), nonfinite %lld", e.max_abs, tol,
                 fk_dtype_name(dt), (long long)e.nonfinite);
    }
    int64_t nonzero_empty = 0;
    for (int64_t i = 0; i < n; i++)
        if (ref[i] == 0.0 && fk_get(got, dt, i) != 0.0) nonzero_empty++;
    return ok && e.nonfinite == 0 && nonzero_empty == 0;
}

// --- merge cases -----------------------------------------------------------------------------------------

typedef struct merge_case {
    int64_t  b, s, h, d;
    int      packed;  // out [tokens, h, d], lse [h, tokens]
    int      strided; // padded row stride of out and padded head stride of lse
    int      nparts;  // partials folded into an accumulator that starts at lse = -inf (out poisoned)
    fk_dtype out_dt, part_dt;
    double   lse_offset; // added to every LSE (stability at large magnitudes)
} merge_case;

static void run_merge_case(fk_device_kind kind, fk_context_t ctx, const merge_case *c, uint64_t seed) {
    char sig[400];
    snprintf(sig, sizeof sig,
             "ATTN_MERGE(backend=%s,out=%s,part=%s,b=%lld,s=%lld,h=%lld,d=%lld,packed=%d,strided=%d,parts=%d,lse+%g)",
             kind == FK_DEVICE_CUDA ? "cuda" : "cpu", fk_dtype_name(c->out_dt), fk_dtype_name(c->part_dt),
             (long long)c->b, (long long)c->s, (long long)c->h, (long long)c->d, c->packed, c->strided, c->nparts,
             c->lse_offset);
    if (!fk_test_selected(sig, kind)) return;
    if (!ctx) {
        fk_test_skip(sig, "no context for this backend");
        return;
    }
    const bool     gpu = kind == FK_DEVICE_CUDA;
    const int64_t  B = c->packed ? 1 : c->b, S = c->s, H = c->h, D = c->d, rows = B * S * H;
    const int64_t  pad_r = c->strided ? 8 : 0, pad_h = c->strided ? 3 : 0;
    const int64_t  o_rs = H * D + pad_r, o_n = B * S * o_rs, l_hs = S + pad_h, l_n = B * H * l_hs;
    const size_t   oes = fk_dtype_size(c->out_dt), pes = fk_dtype_size(c->part_dt);
    const fk_device dev = {kind, 0};
    fk_rng          rng;
    fk_rng_seed(&rng, seed);

    // Partials in the reference's row order (b, s, h), then rounded to the partial dtype.
    double *rparts = dalloc(c->nparts * rows * D), *rlse = dalloc(c->nparts * rows);
    for (int k = 0; k < c->nparts; k++)
        for (int64_t r = 0; r < rows; r++) {
            double u = fk_rng_uniform(&rng);
            // ~10% of rows see no key in any part, ~25% of (row, part) pairs saw no key.
            bool   empty_row = (r * 7 + 3) % 10 == 0;
            rlse[k * rows + r] = (empty_row || u < 0.25) ? -INFINITY : c->lse_offset + 3.0 * fk_rng_normal(&rng);
            for (int64_t x = 0; x < D; x++)
                rparts[(k * rows + r) * D + x] = fk_round_to(c->part_dt, fk_rng_normal(&rng));
        }
    for (int64_t i = 0; i < c->nparts * rows; i++) rlse[i] = (double)(float)rlse[i]; // stored as fp32
    double *ro = dalloc(rows * D), *rl = dalloc(rows), *no = dalloc(rows * D), *nl = dalloc(rows);
    ref_attn_merge(FK_DTYPE_F64, rows, D, c->nparts, rparts, rlse, ro, rl);
    ref_attn_merge(c->out_dt, rows, D, c->nparts, rparts, rlse, no, nl);

    buf out = {0}, lse = {0}, part = {0}, plse = {0};
    if (!buf_alloc(&out, (size_t)o_n * oes, gpu) || !buf_alloc(&lse, (size_t)l_n * 4, gpu) ||
        !buf_alloc(&part, (size_t)o_n * pes, gpu) || !buf_alloc(&plse, (size_t)l_n * 4, gpu)) {
        fk_test_fail(sig, "allocation failed");
        goto done;
    }
    fk_attn_merge_args a;
    fk_attn_merge_args_init(&a);
    if (c->packed) {
        a.out      = fk_tensor_make(buf_ptr(&out), c->out_dt, dev, 3, (int64_t[]){S, H, D});
        a.part_out = fk_tensor_make(buf_ptr(&part), c->part_dt, dev, 3, (int64_t[]){S, H, D});
        a.lse      = fk_tensor_make(buf_ptr(&lse), FK_DTYPE_F32, dev, 2, (int64_t[]){H, S});
        a.part_lse = fk_tensor_make(buf_ptr(&plse), FK_DTYPE_F32, dev, 2, (int64_t[]){H, S});
        a.out.stride[0] = a.part_out.stride[0] = o_rs;
        a.lse.stride[0] = a.part_lse.stride[0] = l_hs;
    } else {
        a.out      = fk_tensor_make(buf_ptr(&out), c->out_dt, dev, 4, (int64_t[]){B, S, H, D});
        a.part_out = fk_tensor_make(buf_ptr(&part), c->part_dt, dev, 4, (int64_t[]){B, S, H, D});
        a.lse      = fk_tensor_make(buf_ptr(&lse), FK_DTYPE_F32, dev, 3, (int64_t[]){B, H, S});
        a.part_lse = fk_tensor_make(buf_ptr(&plse), FK_DTYPE_F32, dev, 3, (int64_t[]){B, H, S});
        a.out.stride[1] = a.part_out.stride[1] = o_rs;
        a.out.stride[0] = a.part_out.stride[0] = S * o_rs;
        a.lse.stride[1] = a.part_lse.stride[1] = l_hs;
        a.lse.stride[0] = a.part_lse.stride[0] = H * l_hs;
    }
    // The accumulator starts empty: lse -inf, out poisoned (it must not be read). Padding stays poisoned.
    fk_poison(out.host, c->out_dt, o_n);
    for (int64_t i = 0; i < l_n; i++) ((float *)lse.host)[i] = i % l_hs < S ? -INFINITY : NAN;
    bool ok = buf_up(&out) && buf_up(&lse);
    for (int k = 0; k < c->nparts && ok; k++) {
        fk_poison(part.host, c->part_dt, o_n);
        for (int64_t i = 0; i < l_n; i++) ((float *)plse.host)[i] = NAN;
        for (int64_t r = 0; r < rows; r++) {
            const int64_t b = r / (S * H), s = (r / H) % S, h = r % H;
            const double  l = rlse[k * rows + r];
            ((float *)plse.host)[(b * H + h) * l_hs + s] = (float)l;
            if (l == -INFINITY) continue; // a part that saw no key keeps its poisoned out
            for (int64_t x = 0; x < D; x++) fk_set(part.host, c->part_dt, (b * S + s) * o_rs + h * D + x, rparts[(k * rows + r) * D + x]);
        }
        ok = buf_up(&part) && buf_up(&plse) && status_ok(fk_attn_merge(ctx, &a, NULL), sig);
    }
    if (!ok) goto done;
    if (!buf_down(&out) || !buf_down(&lse)) {
        fk_test_fail(sig, "download failed");
        goto done;
    }
    {
        // Gather the views into reference order; padding must still be poison.
        void   *go = malloc((size_t)rows * D * oes);
        float  *gl = malloc((size_t)rows * 4);
        int64_t pad_written = 0;
        for (int64_t r = 0; r < rows; r++) {
            const int64_t b = r / (S * H), s = (r / H) % S, h = r % H;
            gl[r] = ((float *)lse.host)[(b * H + h) * l_hs + s];
            for (int64_t x = 0; x < D; x++)
                fk_set(go, c->out_dt, r * D + x, fk_get(out.host, c->out_dt, (b * S + s) * o_rs + h * D + x));
        }
        for (int64_t i = 0; i < o_n; i++)
            if (i % o_rs >= H * D && !isnan(fk_get(out.host, c->out_dt, i))) pad_written++;
        for (int64_t i = 0; i < l_n; i++)
            if (i % l_hs >= S && !isnan(((float *)lse.host)[i])) pad_written++;
        char d1[300], d2[300], detail[700];
        bool ok1 = check_out(go, c->out_dt, ro, no, rows * D, d1, sizeof d1);
        bool ok2 = check_lse(gl, rl, rows, d2, sizeof d2);
        snprintf(detail, sizeof detail, "%s | %s | padding written %lld", d1, d2, (long long)pad_written);
        fk_test_check(ok1 && ok2 && !pad_written, sig, detail);
        free(go), free(gl);
    }
done:
    buf_free(&out), buf_free(&lse), buf_free(&part), buf_free(&plse);
    free(rparts), free(rlse), free(ro), free(rl), free(no), free(nl);
}

// Split-KV attention: keys cut into chunks, fk_attn_fwd per chunk, fk_attn_merge of the partials, against
// the float64 attention over all keys (what split-KV decode does).
static void run_split_kv(fk_context_t ctx) {
    const char *sig = "ATTN_MERGE_SPLIT_KV(backend=cpu,dtype=f32,sq=37,sk=300 in chunks 1/120/179,hq=4,hkv=2,d=64,softcap=2)";
    if (!fk_test_selected(sig, FK_DEVICE_CPU)) return;
    const int64_t SQ = 37, SK = 300, HQ = 4, HK = 2, D = 64, nq = SQ * HQ * D, nk = SK * HK * D;
    const int64_t chunk0[3] = {0, 1, 121}, chunkn[3] = {1, 120, 179};
    fk_device     dev = {FK_DEVICE_CPU, 0};
    fk_rng        rng;
    fk_rng_seed(&rng, 4242);
    float  *q = malloc(nq * 4), *k = malloc(nk * 4), *v = malloc(nk * 4), *o = malloc(nq * 4), *po = malloc(nq * 4);
    float  *l = malloc(HQ * SQ * 4), *pl = malloc(HQ * SQ * 4);
    double *rq = dalloc(nq), *rk = dalloc(nk), *rv = dalloc(nk), *ro = dalloc(nq), *rl = dalloc(HQ * SQ);
    fk_fill_normal(q, FK_DTYPE_F32, nq, 1.0, &rng, rq);
    fk_fill_normal(k, FK_DTYPE_F32, nk, 1.0, &rng, rk);
    fk_fill_normal(v, FK_DTYPE_F32, nk, 1.0, &rng, rv);
    int64_t      lq = SQ, lk = SK;
    ref_attn_cfg cfg = {1, HQ, HK, D, &lq, &lk, 0.5, 2.0, 0, -1, -1, NULL, 0};
    ref_attn_fwd(FK_DTYPE_F64, &cfg, rq, rk, rv, ro, rl);
    fk_poison(o, FK_DTYPE_F32, nq);
    for (int64_t i = 0; i < HQ * SQ; i++) l[i] = -INFINITY;
    bool ok = true;
    for (int c = 0; c < 3 && ok; c++) {
        fk_attn_args a;
        fk_attn_args_init(&a);
        a.q   = fk_tensor_make(q, FK_DTYPE_F32, dev, 4, (int64_t[]){1, SQ, HQ, D});
        a.k   = fk_tensor_make(k + chunk0[c] * HK * D, FK_DTYPE_F32, dev, 4, (int64_t[]){1, chunkn[c], HK, D});
        a.v   = fk_tensor_make(v + chunk0[c] * HK * D, FK_DTYPE_F32, dev, 4, (int64_t[]){1, chunkn[c], HK, D});
        a.o   = fk_tensor_make(po, FK_DTYPE_F32, dev, 4, (int64_t[]){1, SQ, HQ, D});
        a.lse = fk_tensor_make(pl, FK_DTYPE_F32, dev, 3, (int64_t[]){1, HQ, SQ});
        a.softmax_scale = 0.5f, a.softcap = 2.0f;
        size_t wsb = 0;
        ok     = status_ok(fk_attn_fwd_workspace_size(ctx, &a, &wsb), sig);
        void *ws = malloc(wsb + 1);
        ok       = ok && status_ok(fk_attn_fwd(ctx, &a, ws, wsb, NULL), sig);
        free(ws);
        fk_attn_merge_args m;
        fk_attn_merge_args_init(&m);
        m.out = fk_tensor_make(o, FK_DTYPE_F32, dev, 4, (int64_t[]){1, SQ, HQ, D}), m.lse = a.lse;
        m.lse.data = l, m.part_out = a.o, m.part_lse = a.lse;
        ok = ok && status_ok(fk_attn_merge(ctx, &m, NULL), sig);
    }
    if (ok) {
        char d1[300], d2[300], detail[700];
        bool ok1 = check_out(o, FK_DTYPE_F32, ro, NULL, nq, d1, sizeof d1);
        bool ok2 = check_lse(l, rl, HQ * SQ, d2, sizeof d2);
        snprintf(detail, sizeof detail, "%s | %s", d1, d2);
        fk_test_check(ok1 && ok2, sig, detail);
    }
    free(q), free(k), free(v), free(o), free(po), free(l), free(pl);
    free(rq), free(rk), free(rv), free(ro), free(rl);
}

// --- bad inputs --------------------------------------------------------------------------------------------

typedef struct neg_env {
    float out[2 * 6 * 3 * 16], part[2 * 6 * 3 * 16], lse[2 * 3 * 6], plse[2 * 3 * 6];
    float q[2 * 8 * 4 * 16], k[2 * 8 * 2 * 16], v[2 * 8 * 2 * 16], o[2 * 8 * 4 * 16], l[2 * 4 * 8];
    float dO[2 * 8 * 4 * 16], dq[2 * 8 * 4 * 16], dk[2 * 8 * 2 * 16], dv[2 * 8 * 2 * 16], alibi[4];
    double d64[2 * 8 * 4 * 16];
    int32_t cu[3];
    char    ws[4096];
} neg_env;

static fk_attn_merge_args merge_base(neg_env *e) {
    fk_device          dev = {FK_DEVICE_CPU, 0};
    fk_attn_merge_args a;
    fk_attn_merge_args_init(&a);
    a.out      = fk_tensor_make(e->out, FK_DTYPE_F32, dev, 4, (int64_t[]){2, 6, 3, 16});
    a.part_out = fk_tensor_make(e->part, FK_DTYPE_F32, dev, 4, (int64_t[]){2, 6, 3, 16});
    a.lse      = fk_tensor_make(e->lse, FK_DTYPE_F32, dev, 3, (int64_t[]){2, 3, 6});
    a.part_lse = fk_tensor_make(e->plse, FK_DTYPE_F32, dev, 3, (int64_t[]){2, 3, 6});
    return a;
}

static void expect_merge(fk_context_t ctx, const char *rule, const fk_attn_merge_args *a, fk_status want) {
    char sig[300];
    snprintf(sig, sizeof sig, "ATTN_MERGE_BAD(backend=cpu,%s)", rule);
    if (!fk_test_selected(sig, FK_DEVICE_CPU)) return;
    fk_status s = fk_attn_merge(ctx, a, NULL);
    char      detail[700];
    snprintf(detail, sizeof detail, "want %s, got %s: %s", fk_status_string(want), fk_status_string(s),
             fk_last_error_message());
    fk_test_check(s == want && fk_last_error_message()[0], sig, detail);
}

static fk_ring_attn_args ring_base(neg_env *e) {
    fk_device         dev = {FK_DEVICE_CPU, 0};
    fk_ring_attn_args r;
    fk_ring_attn_args_init(&r);
    fk_attn_args *a = &r.attn;
    a->q   = fk_tensor_make(e->q, FK_DTYPE_F32, dev, 4, (int64_t[]){2, 8, 4, 16});
    a->k   = fk_tensor_make(e->k, FK_DTYPE_F32, dev, 4, (int64_t[]){2, 8, 2, 16});
    a->v   = fk_tensor_make(e->v, FK_DTYPE_F32, dev, 4, (int64_t[]){2, 8, 2, 16});
    a->o   = fk_tensor_make(e->o, FK_DTYPE_F32, dev, 4, (int64_t[]){2, 8, 4, 16});
    a->lse = fk_tensor_make(e->l, FK_DTYPE_F32, dev, 3, (int64_t[]){2, 4, 8});
    a->do_ = fk_tensor_make(e->dO, FK_DTYPE_F32, dev, 4, (int64_t[]){2, 8, 4, 16});
    a->dq  = fk_tensor_make(e->dq, FK_DTYPE_F32, dev, 4, (int64_t[]){2, 8, 4, 16});
    a->dk  = fk_tensor_make(e->dk, FK_DTYPE_F32, dev, 4, (int64_t[]){2, 8, 2, 16});
    a->dv  = fk_tensor_make(e->dv, FK_DTYPE_F32, dev, 4, (int64_t[]){2, 8, 2, 16});
    a->causal   = 1;
    r.nccl_comm = (void *)e; // never dereferenced on the CPU: every rule below fails before NCCL
    return r;
}

// fwd and/or bwd, size query and call, each must return `want` with a message.
static void expect_ring(fk_context_t ctx, const char *rule, const fk_ring_attn_args *r, fk_status want, int fwd,
                        int bwd, neg_env *e) {
    for (int pass = 0; pass < 2; pass++) {
        if ((pass == 0 && !fwd) || (pass == 1 && !bwd)) continue;
        char sig[300];
        snprintf(sig, sizeof sig, "RING_ATTN_%s_BAD(backend=cpu,%s)", pass ? "BWD" : "FWD", rule);
        if (!fk_test_selected(sig, FK_DEVICE_CPU)) continue;
        size_t    bytes = 0;
        fk_status s1 = pass ? fk_ring_attn_bwd_workspace_size(ctx, r, &bytes) : fk_ring_attn_fwd_workspace_size(ctx, r, &bytes);
        bool      m1 = fk_last_error_message()[0] != 0;
        fk_status s2 = pass ? fk_ring_attn_bwd(ctx, r, e->ws, sizeof e->ws, NULL) : fk_ring_attn_fwd(ctx, r, e->ws, sizeof e->ws, NULL);
        bool      m2 = fk_last_error_message()[0] != 0;
        fk_test_expect_status(sig, want, s1, m1, s2, m2);
    }
}

static void run_negative(fk_context_t ctx) {
    neg_env           *e = calloc(1, sizeof *e);
    fk_device          cuda0 = {FK_DEVICE_CUDA, 0};
    fk_attn_merge_args a;
    {
        a = merge_base(e);
        for (int i = 0; i < 36; i++) e->lse[i] = e->plse[i] = (float)(i % 5) - 2.0f;
        fk_test_check(fk_attn_merge(ctx, &a, NULL) == FK_STATUS_SUCCESS && !fk_last_error_message()[0],
                      "ATTN_MERGE_BAD(backend=cpu,base case is valid)", fk_last_error_message());
    }
#define MCASE(rule, mut, want)       \
    do {                             \
        a = merge_base(e);           \
        mut;                         \
        expect_merge(ctx, rule, &a, want); \
    } while (0)
    a = merge_base(e);
    expect_merge(NULL, "ctx NULL", &a, FK_STATUS_BAD_PARAM_NULL_POINTER);
    expect_merge(ctx, "args NULL", NULL, FK_STATUS_BAD_PARAM_NULL_POINTER);
    MCASE("out.data NULL", a.out.data = NULL, FK_STATUS_BAD_PARAM_NULL_POINTER);
    MCASE("part_out.data NULL", a.part_out.data = NULL, FK_STATUS_BAD_PARAM_NULL_POINTER);
    MCASE("lse.data NULL", a.lse.data = NULL, FK_STATUS_BAD_PARAM_NULL_POINTER);
    MCASE("part_lse.data NULL", a.part_lse.data = NULL, FK_STATUS_BAD_PARAM_NULL_POINTER);
    MCASE("out.ndim 2", a.out.ndim = 2, FK_STATUS_BAD_PARAM_NDIM);
    MCASE("part_out.ndim 3 vs out 4", a.part_out.ndim = 3, FK_STATUS_BAD_PARAM_NDIM);
    MCASE("lse.ndim 2 with out 4-D", a.lse.ndim = 2, FK_STATUS_BAD_PARAM_NDIM);
    MCASE("part_lse.ndim 4", a.part_lse.ndim = 4, FK_STATUS_BAD_PARAM_NDIM);
    MCASE("part_out head_dim differs", a.part_out.shape[3] = 8, FK_STATUS_BAD_PARAM_SHAPE);
    MCASE("part_out batch differs", a.part_out.shape[0] = 1, FK_STATUS_BAD_PARAM_SHAPE);
    MCASE("lse seqlen differs", a.lse.shape[2] = 5, FK_STATUS_BAD_PARAM_SHAPE);
    MCASE("part_lse heads differ", a.part_lse.shape[1] = 2, FK_STATUS_BAD_PARAM_SHAPE);
    MCASE("out extent 0", a.out.shape[1] = 0, FK_STATUS_BAD_PARAM_SHAPE);
    MCASE("out inner stride 2", a.out.stride[3] = 2, FK_STATUS_BAD_PARAM_STRIDE);
    MCASE("part_lse negative stride", a.part_lse.stride[1] = -6, FK_STATUS_BAD_PARAM_STRIDE);
    MCASE("lse f16", a.lse.dtype = FK_DTYPE_F16, FK_STATUS_BAD_PARAM_DTYPE_MISMATCH);
    MCASE("part_lse f64", (a.part_lse.data = e->d64, a.part_lse.dtype = FK_DTYPE_F64), FK_STATUS_BAD_PARAM_DTYPE_MISMATCH);
    MCASE("out f64", (a.out.data = e->d64, a.out.dtype = FK_DTYPE_F64), FK_STATUS_NOT_SUPPORTED_DTYPE);
    MCASE("part_out i32", a.part_out.dtype = FK_DTYPE_INT32, FK_STATUS_NOT_SUPPORTED_DTYPE);
    MCASE("out on cuda, ctx on cpu", a.out.device = cuda0, FK_STATUS_BAD_PARAM_DEVICE_MISMATCH);
    MCASE("part_lse on cuda, ctx on cpu", a.part_lse.device = cuda0, FK_STATUS_BAD_PARAM_DEVICE_MISMATCH);
    MCASE("out device kind 7", a.out.device.kind = (fk_device_kind)7, FK_STATUS_BAD_PARAM_UNKNOWN_DEVICE);
    MCASE("out span overflows", (a.out.shape[0] = (int64_t)1 << 40, a.out.stride[0] = (int64_t)1 << 40),
          FK_STATUS_BAD_PARAM_OVERFLOW);
#undef MCASE

    fk_ring_attn_args r;
#define RCASE(rule, mut, want, fwd, bwd) \
    do {                                 \
        r = ring_base(e);                \
        mut;                             \
        expect_ring(ctx, rule, &r, want, fwd, bwd, e); \
    } while (0)
    r = ring_base(e);
    expect_ring(NULL, "ctx NULL", &r, FK_STATUS_BAD_PARAM_NULL_POINTER, 1, 1, e);
    expect_ring(ctx, "args NULL", NULL, FK_STATUS_BAD_PARAM_NULL_POINTER, 1, 1, e);
    {
        size_t *nullbytes = NULL;
        fk_test_check(fk_ring_attn_fwd_workspace_size(ctx, &r, nullbytes) == FK_STATUS_BAD_PARAM_NULL_POINTER &&
                          fk_last_error_message()[0],
                      "RING_ATTN_FWD_BAD(backend=cpu,bytes NULL)", fk_last_error_message());
        fk_test_check(fk_ring_attn_bwd_workspace_size(ctx, &r, nullbytes) == FK_STATUS_BAD_PARAM_NULL_POINTER &&
                          fk_last_error_message()[0],
                      "RING_ATTN_BWD_BAD(backend=cpu,bytes NULL)", fk_last_error_message());
    }
    // The local slice's own rules (a sample: they are fk_attn_*'s, tested in test_attn).
    RCASE("q.data NULL", r.attn.q.data = NULL, FK_STATUS_BAD_PARAM_NULL_POINTER, 1, 1);
    RCASE("lse.data NULL in bwd", r.attn.lse.data = NULL, FK_STATUS_BAD_PARAM_NULL_POINTER, 0, 1);
    RCASE("dk.data NULL", r.attn.dk.data = NULL, FK_STATUS_BAD_PARAM_NULL_POINTER, 0, 1);
    RCASE("k head_dim differs", r.attn.k.shape[3] = 8, FK_STATUS_BAD_PARAM_SHAPE, 1, 1);
    RCASE("nheads_q 3 vs nheads_kv 2",
          (r.attn.q.shape[2] = r.attn.o.shape[2] = r.attn.do_.shape[2] = r.attn.dq.shape[2] = r.attn.lse.shape[1] = 3),
          FK_STATUS_BAD_PARAM_HEADS, 1, 1);
    RCASE("causal 2", r.attn.causal = 2, FK_STATUS_BAD_PARAM_VALUE, 1, 1);
    // Ring rules.
    RCASE("varlen", (e->cu[0] = 0, e->cu[1] = 8, e->cu[2] = 16,
                     r.attn.q = fk_tensor_make(e->q, FK_DTYPE_F32, r.attn.q.device, 3, (int64_t[]){16, 4, 16}),
                     r.attn.o = r.attn.do_ = r.attn.dq = r.attn.q, r.attn.o.data = e->o, r.attn.do_.data = e->dO,
                     r.attn.dq.data = e->dq,
                     r.attn.k = fk_tensor_make(e->k, FK_DTYPE_F32, r.attn.q.device, 3, (int64_t[]){16, 2, 16}),
                     r.attn.v = r.attn.dk = r.attn.dv = r.attn.k, r.attn.v.data = e->v, r.attn.dk.data = e->dk,
                     r.attn.dv.data = e->dv,
                     r.attn.lse = fk_tensor_make(e->l, FK_DTYPE_F32, r.attn.q.device, 2, (int64_t[]){4, 16}),
                     r.attn.cu_seqlens_q = fk_tensor_make(e->cu, FK_DTYPE_INT32, r.attn.q.device, 1, (int64_t[]){3}),
                     r.attn.cu_seqlens_k = r.attn.cu_seqlens_q, r.attn.max_seqlen_q = r.attn.max_seqlen_k = 8),
          FK_STATUS_NOT_SUPPORTED_FEATURE, 1, 1);
    RCASE("window_left 4", r.attn.window_left = 4, FK_STATUS_NOT_SUPPORTED_FEATURE, 1, 1);
    RCASE("window_right 2 without causal", (r.attn.causal = 0, r.attn.window_right = 2), FK_STATUS_NOT_SUPPORTED_FEATURE, 1, 1);
    RCASE("alibi", r.attn.alibi_slopes = fk_tensor_make(e->alibi, FK_DTYPE_F32, r.attn.q.device, 1, (int64_t[]){4}),
          FK_STATUS_NOT_SUPPORTED_FEATURE, 1, 1);
    RCASE("f64", (r.attn.q.data = r.attn.o.data = r.attn.do_.data = r.attn.dq.data = e->d64,
                  r.attn.q.dtype = r.attn.k.dtype = r.attn.v.dtype = r.attn.o.dtype = r.attn.do_.dtype =
                      r.attn.dq.dtype = r.attn.dk.dtype = r.attn.dv.dtype = FK_DTYPE_F64,
                  r.attn.k.data = r.attn.v.data = r.attn.dk.data = r.attn.dv.data = e->d64, r.attn.lse = fk_tensor_none()),
          FK_STATUS_NOT_SUPPORTED_DTYPE, 1, 0);
    RCASE("local seqlen of q 8 vs k 6",
          (r.attn.k.shape[1] = r.attn.v.shape[1] = r.attn.dk.shape[1] = r.attn.dv.shape[1] = 6),
          FK_STATUS_BAD_PARAM_SHAPE, 1, 1);
    RCASE("layout 7", r.layout = (fk_ring_layout)7, FK_STATUS_BAD_PARAM_VALUE, 1, 1);
    RCASE("zigzag with odd local seqlen 7",
          (r.attn.q.shape[1] = r.attn.k.shape[1] = r.attn.v.shape[1] = r.attn.o.shape[1] = r.attn.do_.shape[1] =
               r.attn.dq.shape[1] = r.attn.dk.shape[1] = r.attn.dv.shape[1] = r.attn.lse.shape[2] = 7),
          FK_STATUS_BAD_PARAM_SHAPE, 1, 1);
    RCASE("nccl_comm NULL", r.nccl_comm = NULL, FK_STATUS_BAD_PARAM_NULL_POINTER, 1, 1);
    // A valid call: the CPU backend has no ring (or the build has none at all).
    fk_build_info info;
    fk_get_build_info(&info);
#if defined(FK_TEST_HAVE_NCCL_H)
    const fk_status valid_on_cpu = FK_STATUS_NOT_SUPPORTED_FEATURE;
#else
    const fk_status valid_on_cpu = FK_STATUS_NOT_SUPPORTED_BACKEND;
#endif
    RCASE("valid call on a cpu context, contiguous layout",
          (r.layout = FK_RING_LAYOUT_CONTIGUOUS), valid_on_cpu, 1, 1);
    RCASE("valid call on a cpu context", (void)0, valid_on_cpu, 1, 1);
    (void)info;
#undef RCASE
    free(e);
}

#if RING_GPU
// --- 2 GPUs over NCCL ------------------------------------------------------------------------------------

typedef void *nccl_comm_t; // ncclComm_t, opaque here; the test loads NCCL itself, as the library does
typedef struct nccl_fns {
    int (*init_all)(nccl_comm_t *, int, const int *);
    int (*destroy)(nccl_comm_t);
    const char *(*error_string)(int);
} nccl_fns;

static const char *load_nccl(nccl_fns *f) {
    static char why[400];
    const char *env = getenv("FK_NCCL_LIBRARY"), *path = env && env[0] ? env : "libnccl.so.2";
    void       *h   = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(why, sizeof why, "NCCL not loadable from %s: %s", path, dlerror());
        return why;
    }
    *(void **)&f->init_all     = dlsym(h, "ncclCommInitAll");
    *(void **)&f->destroy      = dlsym(h, "ncclCommDestroy");
    *(void **)&f->error_string = dlsym(h, "ncclGetErrorString");
    if (!f->init_all || !f->destroy || !f->error_string) return "NCCL lacks ncclCommInitAll/ncclCommDestroy";
    return NULL;
}

// Watchdog: a hung collective fails the test instead of hanging the run.
static void on_alarm(int sig) {
    (void)sig;
    static const char msg[] = "\ntest_ring: FAIL: watchdog: a 2-GPU case ran past its time limit (hang?)\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    _exit(3);
}

typedef struct ring_case {
    int64_t        b, t, hq, hkv, d; // t = total sequence length (2 ranks hold t / 2 each)
    int            causal;
    fk_ring_layout layout;
    fk_dtype       dt;
    float          softcap, scale;
} ring_case;

// Global token of local row l on rank r (N ranks, local length S).
static int64_t global_row(fk_ring_layout layout, int n, int r, int64_t S, int64_t l) {
    if (layout == FK_RING_LAYOUT_CONTIGUOUS) return r * S + l;
    const int64_t c = S / 2;
    return l < c ? r * c + l : (2 * n - 1 - r) * c + (l - c);
}

typedef struct rank_job {
    int               rank, n;
    fk_context_t      ctx;
    nccl_comm_t       comm;
    const ring_case  *c;
    // host, local slice, [B, S, H, D] (lse [B, Hq, S] fp32)
    void             *q, *k, *v, *dO, *o, *dq, *dk, *dv;
    float            *lse;
    fk_status         st;
    char              msg[600];
    double            ms_fwd, ms_bwd;
} rank_job;

#define JOB_CU(call)                                                                                          \
    do {                                                                                                      \
        cudaError_t e_ = (call);                                                                              \
        if (e_ != cudaSuccess) {                                                                              \
            j->st = FK_STATUS_CUDA_ERROR;                                                                     \
            snprintf(j->msg, sizeof j->msg, "rank %d: %s: %s", j->rank, #call, cudaGetErrorString(e_));       \
            goto out;                                                                                         \
        }                                                                                                     \
    } while (0)
#define JOB_FK(call)                                                                                          \
    do {                                                                                                      \
        fk_status s_ = (call);                                                                                \
        if (s_ != FK_STATUS_SUCCESS) {                                                                        \
            j->st = s_;                                                                                       \
            snprintf(j->msg, sizeof j->msg, "rank %d: %s: %s", j->rank, fk_status_string(s_),               \
                     fk_last_error_message());                                                                \
            goto out;                                                                                         \
        }                                                                                                     \
    } while (0)

static void *rank_main(void *arg) {
    rank_job        *j = arg;
    const ring_case *c = j->c;
    const int64_t    S = c->t / j->n, B = c->b;
    const size_t     es = fk_dtype_size(c->dt);
    const size_t     nq = (size_t)(B * S * c->hq * c->d) * es, nk = (size_t)(B * S * c->hkv * c->d) * es;
    const size_t     nl = (size_t)(B * c->hq * S) * 4;
    void            *dq_ = NULL, *dk_ = NULL, *dv_ = NULL, *dq = NULL, *dk = NULL, *dv = NULL, *ddo = NULL,
         *dO = NULL, *dl = NULL, *ws = NULL;
    cudaStream_t stream = NULL;
    cudaEvent_t  e0 = NULL, e1 = NULL, e2 = NULL;
    j->st = FK_STATUS_SUCCESS;
    JOB_CU(cudaSetDevice(j->rank));
    JOB_CU(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    JOB_CU(cudaEventCreate(&e0));
    JOB_CU(cudaEventCreate(&e1));
    JOB_CU(cudaEventCreate(&e2));
    JOB_CU(cudaMalloc(&dq_, nq)); // q
    JOB_CU(cudaMalloc(&dk_, nk));
    JOB_CU(cudaMalloc(&dv_, nk));
    JOB_CU(cudaMalloc(&dO, nq)); // o
    JOB_CU(cudaMalloc(&ddo, nq));
    JOB_CU(cudaMalloc(&dq, nq));
    JOB_CU(cudaMalloc(&dk, nk));
    JOB_CU(cudaMalloc(&dv, nk));
    JOB_CU(cudaMalloc(&dl, nl));
    JOB_CU(cudaMemcpy(dq_, j->q, nq, cudaMemcpyHostToDevice));
    JOB_CU(cudaMemcpy(dk_, j->k, nk, cudaMemcpyHostToDevice));
    JOB_CU(cudaMemcpy(dv_, j->v, nk, cudaMemcpyHostToDevice));
    JOB_CU(cudaMemcpy(ddo, j->dO, nq, cudaMemcpyHostToDevice));
    JOB_CU(cudaMemcpy(dO, j->o, nq, cudaMemcpyHostToDevice));  // poison
    JOB_CU(cudaMemcpy(dl, j->lse, nl, cudaMemcpyHostToDevice)); // poison
    JOB_CU(cudaMemcpy(dq, j->dq, nq, cudaMemcpyHostToDevice)); // poison
    JOB_CU(cudaMemcpy(dk, j->dk, nk, cudaMemcpyHostToDevice));
    JOB_CU(cudaMemcpy(dv, j->dv, nk, cudaMemcpyHostToDevice));
    {
        fk_device         dev = {FK_DEVICE_CUDA, j->rank};
        fk_ring_attn_args r;
        fk_ring_attn_args_init(&r);
        fk_attn_args *a = &r.attn;
        a->q   = fk_tensor_make(dq_, c->dt, dev, 4, (int64_t[]){B, S, c->hq, c->d});
        a->k   = fk_tensor_make(dk_, c->dt, dev, 4, (int64_t[]){B, S, c->hkv, c->d});
        a->v   = fk_tensor_make(dv_, c->dt, dev, 4, (int64_t[]){B, S, c->hkv, c->d});
        a->o   = fk_tensor_make(dO, c->dt, dev, 4, (int64_t[]){B, S, c->hq, c->d});
        a->lse = fk_tensor_make(dl, FK_DTYPE_F32, dev, 3, (int64_t[]){B, c->hq, S});
        a->do_ = fk_tensor_make(ddo, c->dt, dev, 4, (int64_t[]){B, S, c->hq, c->d});
        a->dq  = fk_tensor_make(dq, c->dt, dev, 4, (int64_t[]){B, S, c->hq, c->d});
        a->dk  = fk_tensor_make(dk, c->dt, dev, 4, (int64_t[]){B, S, c->hkv, c->d});
        a->dv  = fk_tensor_make(dv, c->dt, dev, 4, (int64_t[]){B, S, c->hkv, c->d});
        a->causal        = c->causal;
        a->softcap       = c->softcap;
        a->softmax_scale = c->scale;
        r.nccl_comm      = j->comm;
        r.layout         = c->layout;
        size_t w1 = 0, w2 = 0;
        JOB_FK(fk_ring_attn_fwd_workspace_size(j->ctx, &r, &w1));
        JOB_FK(fk_ring_attn_bwd_workspace_size(j->ctx, &r, &w2));
        JOB_CU(cudaMalloc(&ws, w1 > w2 ? w1 : w2));
        JOB_CU(cudaEventRecord(e0, stream));
        JOB_FK(fk_ring_attn_fwd(j->ctx, &r, ws, w1, stream));
        JOB_CU(cudaEventRecord(e1, stream));
        JOB_FK(fk_ring_attn_bwd(j->ctx, &r, ws, w2, stream));
        JOB_CU(cudaEventRecord(e2, stream));
        JOB_CU(cudaStreamSynchronize(stream));
        JOB_CU(cudaGetLastError());
        float m1 = 0, m2 = 0;
        JOB_CU(cudaEventElapsedTime(&m1, e0, e1));
        JOB_CU(cudaEventElapsedTime(&m2, e1, e2));
        j->ms_fwd = m1, j->ms_bwd = m2;
    }
    JOB_CU(cudaMemcpy(j->o, dO, nq, cudaMemcpyDeviceToHost));
    JOB_CU(cudaMemcpy(j->lse, dl, nl, cudaMemcpyDeviceToHost));
    JOB_CU(cudaMemcpy(j->dq, dq, nq, cudaMemcpyDeviceToHost));
    JOB_CU(cudaMemcpy(j->dk, dk, nk, cudaMemcpyDeviceToHost));
    JOB_CU(cudaMemcpy(j->dv, dv, nk, cudaMemcpyDeviceToHost));
out:
    cudaFree(dq_), cudaFree(dk_), cudaFree(dv_), cudaFree(dO), cudaFree(ddo), cudaFree(dq), cudaFree(dk),
        cudaFree(dv), cudaFree(dl), cudaFree(ws);
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    if (e2) cudaEventDestroy(e2);
    if (stream) cudaStreamDestroy(stream);
    return NULL;
}

// Ring result vs float64, with the single-GPU result's error as the yardstick:
//   max_abs(ring) <= 2 * max_abs(single GPU) + max(eps(dtype), 1e-5) * max|ref|, and no NaN/Inf.
// (The ring rounds each step's partial to the storage dtype before the fp32 merge: up to one more rounding than
// the single-GPU kernel, which the eps term covers; 1e-5 is the fp32 and LSE relative tolerance.)
static bool verdict(const char *name, const void *ring, const void *single, fk_dtype dt, const double *ref,
                    int64_t n, char *out, size_t cap) {
    fk_err er = fk_compare(ring, dt, ref, n), es = fk_compare(single, dt, ref, n);
    double tol = 2 * es.max_abs + fmax(fk_dtype_eps(dt), 1e-5) * er.max_ref;
    bool   ok  = er.nonfinite == 0 && es.nonfinite == 0 && er.max_abs <= tol;
    snprintf(out, cap, "%s: ring %.3g, single %.3g, tol %.3g%s", name, er.max_abs, es.max_abs, tol,
             er.nonfinite ? " NONFINITE" : "");
    return ok;
}

static void run_ring_case(fk_context_t ctx[2], nccl_comm_t comm[2], const ring_case *c, uint64_t seed) {
    char sig[400];
    snprintf(sig, sizeof sig,
             "RING_ATTN(backend=cuda,ranks=2,dtype=%s,layout=%s,causal=%d,b=%lld,t=%lld,hq=%lld,hkv=%lld,d=%lld,"
             "softcap=%g,scale=%g)",
             fk_dtype_name(c->dt), c->layout == FK_RING_LAYOUT_ZIGZAG ? "zigzag" : "contiguous", c->causal,
             (long long)c->b, (long long)c->t, (long long)c->hq, (long long)c->hkv, (long long)c->d,
             (double)c->softcap, (double)c->scale);
    if (!fk_test_selected(sig, FK_DEVICE_CUDA)) return;
    const int      N = 2;
    const int64_t  B = c->b, T = c->t, S = T / N, HQ = c->hq, HK = c->hkv, D = c->d;
    const fk_dtype dt = c->dt;
    const size_t   es = fk_dtype_size(dt);
    const int64_t  nq = B * T * HQ * D, nk = B * T * HK * D, nl = B * HQ * T;
    fk_rng         rng;
    fk_rng_seed(&rng, seed);
    // Global tensors [B, T, H, D] in dt, the float64 copies, and the float64 reference.
    void   *q = malloc(nq * es), *k = malloc(nk * es), *v = malloc(nk * es), *dO = malloc(nq * es);
    double *rq = dalloc(nq), *rk = dalloc(nk), *rv = dalloc(nk), *rdo = dalloc(nq), *ro = dalloc(nq),
           *rl = dalloc(nl), *rdq = dalloc(nq), *rdk = dalloc(nk), *rdv = dalloc(nk), *rlk = dalloc(nl);
    fk_fill_normal(q, dt, nq, 1.0, &rng, rq);
    fk_fill_normal(k, dt, nk, 1.0, &rng, rk);
    fk_fill_normal(v, dt, nk, 1.0, &rng, rv);
    fk_fill_normal(dO, dt, nq, 1.0, &rng, rdo);
    int64_t lens[16];
    for (int64_t b = 0; b < B; b++) lens[b] = T;
    ref_attn_cfg cfg = {B, HQ, HK, D, lens, lens, 0, c->softcap, c->causal, -1, -1, NULL, 0};
    cfg.scale        = c->scale != 0.0f ? (double)c->scale : (double)(float)(1.0 / sqrt((double)D));
    ref_attn_fwd(FK_DTYPE_F64, &cfg, rq, rk, rv, ro, rl);
    ref_attn_bwd(FK_DTYPE_F64, &cfg, rq, rk, rv, rdo, rdq, rdk, rdv);
    for (int64_t b = 0; b < B; b++) // reference lse [hq, total] -> [B, hq, T]
        for (int64_t h = 0; h < HQ; h++)
            for (int64_t t = 0; t < T; t++) rlk[(b * HQ + h) * T + t] = rl[h * B * T + b * T + t];

    // Single GPU on cuda:0, whole sequence.
    void  *so = malloc(nq * es), *sdq = malloc(nq * es), *sdk = malloc(nk * es), *sdv = malloc(nk * es);
    float *sl = malloc(nl * 4);
    bool   ok = true;
    {
        buf       bq = {0}, bk = {0}, bv = {0}, bo = {0}, bl = {0}, bdo = {0}, bdq = {0}, bdk = {0}, bdv = {0};
        fk_device dev = {FK_DEVICE_CUDA, 0};
        cudaSetDevice(0);
        ok = buf_alloc(&bq, nq * es, 1) && buf_alloc(&bk, nk * es, 1) && buf_alloc(&bv, nk * es, 1) &&
             buf_alloc(&bo, nq * es, 1) && buf_alloc(&bl, nl * 4, 1) && buf_alloc(&bdo, nq * es, 1) &&
             buf_alloc(&bdq, nq * es, 1) && buf_alloc(&bdk, nk * es, 1) && buf_alloc(&bdv, nk * es, 1);
        if (ok) {
            memcpy(bq.host, q, nq * es), memcpy(bk.host, k, nk * es), memcpy(bv.host, v, nk * es);
            memcpy(bdo.host, dO, nq * es);
            ok = buf_up(&bq) && buf_up(&bk) && buf_up(&bv) && buf_up(&bdo);
        }
        fk_attn_args a;
        fk_attn_args_init(&a);
        a.q   = fk_tensor_make(bq.dev, dt, dev, 4, (int64_t[]){B, T, HQ, D});
        a.k   = fk_tensor_make(bk.dev, dt, dev, 4, (int64_t[]){B, T, HK, D});
        a.v   = fk_tensor_make(bv.dev, dt, dev, 4, (int64_t[]){B, T, HK, D});
        a.o   = fk_tensor_make(bo.dev, dt, dev, 4, (int64_t[]){B, T, HQ, D});
        a.lse = fk_tensor_make(bl.dev, FK_DTYPE_F32, dev, 3, (int64_t[]){B, HQ, T});
        a.do_ = fk_tensor_make(bdo.dev, dt, dev, 4, (int64_t[]){B, T, HQ, D});
        a.dq  = fk_tensor_make(bdq.dev, dt, dev, 4, (int64_t[]){B, T, HQ, D});
        a.dk  = fk_tensor_make(bdk.dev, dt, dev, 4, (int64_t[]){B, T, HK, D});
        a.dv  = fk_tensor_make(bdv.dev, dt, dev, 4, (int64_t[]){B, T, HK, D});
        a.causal = c->causal, a.softcap = c->softcap, a.softmax_scale = c->scale;
        size_t w1 = 0, w2 = 0;
        ok = ok && status_ok(fk_attn_fwd_workspace_size(ctx[0], &a, &w1), sig) &&
             status_ok(fk_attn_bwd_workspace_size(ctx[0], &a, &w2), sig);
        void *ws = ok ? fk_test_dev_alloc((w1 > w2 ? w1 : w2) + 1) : NULL;
        ok = ok && status_ok(fk_attn_fwd(ctx[0], &a, ws, w1, NULL), sig) &&
             status_ok(fk_attn_bwd(ctx[0], &a, ws, w2, NULL), sig) && buf_down(&bo) && buf_down(&bl) &&
             buf_down(&bdq) && buf_down(&bdk) && buf_down(&bdv);
        if (ok) {
            memcpy(so, bo.host, nq * es), memcpy(sl, bl.host, nl * 4), memcpy(sdq, bdq.host, nq * es);
            memcpy(sdk, bdk.host, nk * es), memcpy(sdv, bdv.host, nk * es);
        }
        fk_test_dev_free(ws);
        buf_free(&bq), buf_free(&bk), buf_free(&bv), buf_free(&bo), buf_free(&bl), buf_free(&bdo), buf_free(&bdq),
            buf_free(&bdk), buf_free(&bdv);
    }

    // Ring on 2 GPUs: local slices by layout, one thread per rank.
    rank_job jobs[2];
    memset(jobs, 0, sizeof jobs);
    const int64_t rq_ = HQ * D, rk_ = HK * D; // elements per token
    for (int r = 0; ok && r < N; r++) {
        rank_job *j = &jobs[r];
        j->rank = r, j->n = N, j->ctx = ctx[r], j->comm = comm[r], j->c = c;
        j->q = malloc(B * S * rq_ * es), j->k = malloc(B * S * rk_ * es), j->v = malloc(B * S * rk_ * es);
        j->dO = malloc(B * S * rq_ * es), j->o = malloc(B * S * rq_ * es), j->dq = malloc(B * S * rq_ * es);
        j->dk = malloc(B * S * rk_ * es), j->dv = malloc(B * S * rk_ * es), j->lse = malloc(B * HQ * S * 4);
        for (int64_t b = 0; b < B; b++)
            for (int64_t l = 0; l < S; l++) {
                const int64_t g = global_row(c->layout, N, r, S, l);
                memcpy((char *)j->q + ((b * S + l) * rq_) * es, (char *)q + ((b * T + g) * rq_) * es, rq_ * es);
                memcpy((char *)j->dO + ((b * S + l) * rq_) * es, (char *)dO + ((b * T + g) * rq_) * es, rq_ * es);
                memcpy((char *)j->k + ((b * S + l) * rk_) * es, (char *)k + ((b * T + g) * rk_) * es, rk_ * es);
                memcpy((char *)j->v + ((b * S + l) * rk_) * es, (char *)v + ((b * T + g) * rk_) * es, rk_ * es);
            }
        fk_poison(j->o, dt, B * S * rq_), fk_poison(j->dq, dt, B * S * rq_);
        fk_poison(j->dk, dt, B * S * rk_), fk_poison(j->dv, dt, B * S * rk_);
        fk_poison(j->lse, FK_DTYPE_F32, B * HQ * S);
    }
    if (ok) {
        pthread_t th[2];
        alarm(120);
        for (int r = 0; r < N; r++) pthread_create(&th[r], NULL, rank_main, &jobs[r]);
        for (int r = 0; r < N; r++) pthread_join(th[r], NULL);
        alarm(0);
        for (int r = 0; r < N && ok; r++)
            if (jobs[r].st != FK_STATUS_SUCCESS) {
                if (FK_STATUS_CATEGORY(jobs[r].st) == FK_STATUS_NOT_SUPPORTED) fk_test_skip(sig, jobs[r].msg);
                else fk_test_fail(sig, jobs[r].msg);
                ok = false;
            }
    }
    if (ok) {
        // Scatter back to global order and judge.
        void  *go = malloc(nq * es), *gdq = malloc(nq * es), *gdk = malloc(nk * es), *gdv = malloc(nk * es);
        float *gl = malloc(nl * 4);
        for (int r = 0; r < N; r++)
            for (int64_t b = 0; b < B; b++)
                for (int64_t l = 0; l < S; l++) {
                    const int64_t g = global_row(c->layout, N, r, S, l);
                    memcpy((char *)go + ((b * T + g) * rq_) * es, (char *)jobs[r].o + ((b * S + l) * rq_) * es, rq_ * es);
                    memcpy((char *)gdq + ((b * T + g) * rq_) * es, (char *)jobs[r].dq + ((b * S + l) * rq_) * es, rq_ * es);
                    memcpy((char *)gdk + ((b * T + g) * rk_) * es, (char *)jobs[r].dk + ((b * S + l) * rk_) * es, rk_ * es);
                    memcpy((char *)gdv + ((b * T + g) * rk_) * es, (char *)jobs[r].dv + ((b * S + l) * rk_) * es, rk_ * es);
                    for (int64_t h = 0; h < HQ; h++)
                        gl[(b * HQ + h) * T + g] = jobs[r].lse[(b * HQ + h) * S + l];
                }
        char d[5][200], detail[1200];
        bool g1 = verdict("o", go, so, dt, ro, nq, d[0], sizeof d[0]);
        bool g2 = verdict("lse", gl, sl, FK_DTYPE_F32, rlk, nl, d[1], sizeof d[1]);
        bool g3 = verdict("dq", gdq, sdq, dt, rdq, nq, d[2], sizeof d[2]);
        bool g4 = verdict("dk", gdk, sdk, dt, rdk, nk, d[3], sizeof d[3]);
        bool g5 = verdict("dv", gdv, sdv, dt, rdv, nk, d[4], sizeof d[4]);
        snprintf(detail, sizeof detail, "%s | %s | %s | %s | %s | ms fwd %.2f bwd %.2f", d[0], d[1], d[2], d[3], d[4],
                 jobs[0].ms_fwd, jobs[0].ms_bwd);
        fk_test_check(g1 && g2 && g3 && g4 && g5, sig, detail);
        free(go), free(gdq), free(gdk), free(gdv), free(gl);
    }
    for (int r = 0; r < N; r++) {
        rank_job *j = &jobs[r];
        free(j->q), free(j->k), free(j->v), free(j->dO), free(j->o), free(j->dq), free(j->dk), free(j->dv), free(j->lse);
    }
    free(q), free(k), free(v), free(dO), free(so), free(sdq), free(sdk), free(sdv), free(sl);
    free(rq), free(rk), free(rv), free(rdo), free(ro), free(rl), free(rdq), free(rdk), free(rdv), free(rlk);
}

// Statuses only a GPU build with a communicator can reach: workspace NULL / too small, comm on another device.
static void run_gpu_negative(fk_context_t ctx[2], nccl_comm_t comm[2]) {
    const char *sig = "RING_ATTN_BAD(backend=cuda,workspace NULL, too small, comm on another device)";
    if (!fk_test_selected(sig, FK_DEVICE_CUDA)) return;
    cudaSetDevice(0);
    const int64_t     B = 1, S = 64, H = 2, D = 64, n = B * S * H * D;
    fk_device         dev = {FK_DEVICE_CUDA, 0};
    void             *p   = fk_test_dev_alloc((size_t)n * 2 * 9 + (size_t)B * H * S * 4);
    fk_ring_attn_args r;
    fk_ring_attn_args_init(&r);
    fk_attn_args *a = &r.attn;
    fk_tensor     t = fk_tensor_make(p, FK_DTYPE_BF16, dev, 4, (int64_t[]){B, S, H, D});
    fk_tensor    *ts[] = {&a->q, &a->k, &a->v, &a->o, &a->do_, &a->dq, &a->dk, &a->dv};
    for (int i = 0; i < 8; i++) *ts[i] = t, ts[i]->data = (char *)p + (size_t)i * n * 2;
    a->lse      = fk_tensor_make((char *)p + (size_t)8 * n * 2, FK_DTYPE_F32, dev, 3, (int64_t[]){B, H, S});
    a->causal   = 1;
    r.nccl_comm = comm[0];
    size_t    need = 0;
    fk_status s0 = fk_ring_attn_fwd_workspace_size(ctx[0], &r, &need);
    fk_status s1 = fk_ring_attn_fwd(ctx[0], &r, NULL, need, NULL);
    bool      m1 = fk_last_error_message()[0];
    fk_status s2 = fk_ring_attn_fwd(ctx[0], &r, p, need - 1, NULL);
    bool      m2 = fk_last_error_message()[0];
    r.nccl_comm  = comm[1]; // on cuda:1, context on cuda:0: refused before any communication
    fk_status s3 = fk_ring_attn_fwd(ctx[0], &r, p, need, NULL);
    bool      m3 = fk_last_error_message()[0];
    char      detail[600];
    snprintf(detail, sizeof detail, "size %s (%zu B); NULL ws %s; too small %s; comm on cuda:1 %s: %s",
             fk_status_string(s0), need, fk_status_string(s1), fk_status_string(s2), fk_status_string(s3),
             fk_last_error_message());
    fk_test_check(s0 == FK_STATUS_SUCCESS && need > 0 && s1 == FK_STATUS_BAD_PARAM_NULL_POINTER && m1 &&
                      s2 == FK_STATUS_WORKSPACE_TOO_SMALL && m2 && s3 == FK_STATUS_BAD_PARAM_DEVICE_MISMATCH && m3,
                  sig, detail);
    fk_test_dev_free(p);
}

// With FK_NCCL_LIBRARY pointing at a missing file: the library's loader fails with FK_STATUS_COMM_ERROR.
static void run_no_nccl(fk_context_t ctx0) {
    const char *sig = "RING_ATTN_BAD(backend=cuda,NCCL not loadable -> comm error)";
    if (!fk_test_selected(sig, FK_DEVICE_CUDA)) return;
    const int64_t     B = 1, S = 64, H = 2, D = 64, n = B * S * H * D;
    fk_device         dev = {FK_DEVICE_CUDA, 0};
    void             *p   = fk_test_dev_alloc((size_t)n * 2 * 4 + (size_t)B * H * S * 4);
    fk_ring_attn_args r;
    fk_ring_attn_args_init(&r);
    fk_tensor t = fk_tensor_make(p, FK_DTYPE_BF16, dev, 4, (int64_t[]){B, S, H, D});
    r.attn.q = r.attn.k = r.attn.v = r.attn.o = t;
    r.attn.o.data = (char *)p + (size_t)3 * n * 2;
    r.nccl_comm   = (void *)&r; // never used: loading fails first
    size_t need = 0;
    fk_status s0 = fk_ring_attn_fwd_workspace_size(ctx0, &r, &need);
    void     *ws = fk_test_dev_alloc(need + 1);
    fk_status s1 = fk_ring_attn_fwd(ctx0, &r, ws, need, NULL);
    char      detail[600];
    snprintf(detail, sizeof detail, "size %s; call %s: %s", fk_status_string(s0), fk_status_string(s1),
             fk_last_error_message());
    fk_test_check(s0 == FK_STATUS_SUCCESS && s1 == FK_STATUS_COMM_ERROR && fk_last_error_message()[0], sig, detail);
    fk_test_dev_free(ws);
    fk_test_dev_free(p);
}

static void run_gpu(void) {
    const char *sig_all = "RING_ATTN(backend=cuda,ranks=2)";
    int         ndev    = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess) {
        cudaGetLastError();
        ndev = 0;
    }
    const char *no_nccl = getenv("FK_TEST_EXPECT_NO_NCCL");
    if (no_nccl && no_nccl[0] == '1') {
        fk_context_t c0 = NULL;
        if (ndev < 1 || fk_context_init((fk_device){FK_DEVICE_CUDA, 0}, NULL, &c0) != FK_STATUS_SUCCESS) {
            fk_test_skip("RING_ATTN_BAD(backend=cuda,NCCL not loadable -> comm error)", "no CUDA device");
            return;
        }
        run_no_nccl(c0);
        fk_context_free(c0);
        return;
    }
    if (ndev < 2) {
        char why[100];
        snprintf(why, sizeof why, "needs 2 GPUs, %d visible", ndev);
        fk_test_skip(sig_all, why);
        return;
    }
    nccl_fns    nf;
    const char *why = load_nccl(&nf);
    if (why) {
        fk_test_skip(sig_all, why);
        return;
    }
    setenv("NCCL_NVLS_ENABLE", "0", 1); // NVLink multicast stays off
    setenv("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1", 1);
    setenv("NVSHMEM_DISABLE_NVLS", "1", 1);
    signal(SIGALRM, on_alarm);
    fk_context_t ctx[2] = {NULL, NULL};
    nccl_comm_t  comm[2] = {NULL, NULL};
    const int    devs[2] = {0, 1};
    for (int r = 0; r < 2; r++)
        if (fk_context_init((fk_device){FK_DEVICE_CUDA, r}, NULL, &ctx[r]) != FK_STATUS_SUCCESS) {
            fk_test_fail(sig_all, fk_last_error_message());
            goto done;
        }
    alarm(120);
    int rc = nf.init_all(comm, 2, devs);
    alarm(0);
    if (rc != 0) {
        char msg[300];
        snprintf(msg, sizeof msg, "ncclCommInitAll: %s", nf.error_string(rc));
        fk_test_fail(sig_all, msg);
        goto done;
    }
    run_gpu_negative(ctx, comm);
    {
        // Total length t is split over 2 ranks; zigzag needs t divisible by 4.
        static const ring_case cases[] = {
            {1, 1024, 4, 2, 128, 1, FK_RING_LAYOUT_ZIGZAG, FK_DTYPE_BF16, 0, 0},
            {2, 1024, 4, 1, 64, 1, FK_RING_LAYOUT_ZIGZAG, FK_DTYPE_F16, 0, 0},
            {1, 512, 4, 4, 64, 0, FK_RING_LAYOUT_ZIGZAG, FK_DTYPE_BF16, 0, 0},
            {1, 512, 4, 2, 128, 0, FK_RING_LAYOUT_CONTIGUOUS, FK_DTYPE_F16, 0, 0},
            {1, 512, 2, 1, 64, 1, FK_RING_LAYOUT_CONTIGUOUS, FK_DTYPE_BF16, 0, 0},
            {1, 256, 2, 1, 64, 1, FK_RING_LAYOUT_ZIGZAG, FK_DTYPE_F32, 0, 0},
            {1, 148, 3, 1, 64, 1, FK_RING_LAYOUT_ZIGZAG, FK_DTYPE_BF16, 0, 0},   // chunks of 37: tile tails
            {1, 512, 4, 2, 128, 1, FK_RING_LAYOUT_ZIGZAG, FK_DTYPE_F16, 5.0f, 0.2f}, // softcap, scale
            {1, 2048, 2, 1, 128, 1, FK_RING_LAYOUT_ZIGZAG, FK_DTYPE_BF16, 0, 0},
            {1, 2048, 2, 2, 64, 0, FK_RING_LAYOUT_ZIGZAG, FK_DTYPE_F16, 0, 0},
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_ring_case(ctx, comm, &cases[i], 1000 + i);
    }
done:
    for (int r = 0; r < 2; r++) {
        if (comm[r]) nf.destroy(comm[r]);
        fk_context_free(ctx[r]);
    }
}
#endif // RING_GPU

int main(int argc, char **argv) {
    fk_test_init(argc, argv, "test_ring");
    fk_context_t cpu = NULL;
    if (fk_context_init((fk_device){FK_DEVICE_CPU, 0}, NULL, &cpu) != FK_STATUS_SUCCESS) {
        fk_test_fail("RING(backend=cpu)", fk_last_error_message());
        return fk_test_finish();
    }
    const char  *why  = NULL;
    fk_context_t cuda = NULL;
    bool         have_cuda = fk_test_have_cuda(&why);
    if (have_cuda && fk_context_init((fk_device){FK_DEVICE_CUDA, 0}, NULL, &cuda) != FK_STATUS_SUCCESS) {
        have_cuda = false;
        why       = fk_last_error_message();
    }
    const char *no_nccl = getenv("FK_TEST_EXPECT_NO_NCCL");
    if (!(no_nccl && no_nccl[0] == '1')) {
        if (!have_cuda && fk_test_selected("ATTN_MERGE(backend=cuda)", FK_DEVICE_CUDA))
            fk_test_skip("ATTN_MERGE(backend=cuda)", why);
        static const merge_case cases[] = {
            {2, 37, 3, 64, 0, 0, 1, FK_DTYPE_F32, FK_DTYPE_F32, 0},
            {2, 37, 3, 64, 0, 0, 4, FK_DTYPE_F32, FK_DTYPE_F32, 0},
            {1, 50, 4, 40, 1, 0, 3, FK_DTYPE_F32, FK_DTYPE_BF16, 0},
            {2, 19, 2, 128, 0, 1, 4, FK_DTYPE_F32, FK_DTYPE_F16, 60},
            {1, 33, 5, 96, 0, 1, 3, FK_DTYPE_BF16, FK_DTYPE_BF16, 0},
            {2, 21, 4, 64, 0, 0, 4, FK_DTYPE_F16, FK_DTYPE_F16, -40},
            {1, 64, 2, 256, 1, 1, 2, FK_DTYPE_BF16, FK_DTYPE_F32, 0},
            {3, 7, 1, 7, 0, 0, 5, FK_DTYPE_F32, FK_DTYPE_F32, 100}, // fp32 LSE near 100: ulp 8e-6
        };
        uint64_t seed = 1;
        for (int be = 0; be < 2; be++)
            for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
                if (!be || have_cuda) run_merge_case(be ? FK_DEVICE_CUDA : FK_DEVICE_CPU, be ? cuda : cpu, &cases[i], seed++);
        run_split_kv(cpu);
        run_negative(cpu);
    }
    fk_context_free(cuda);
#if RING_GPU
    run_gpu();
#else
    if (fk_test_selected("RING_ATTN(backend=cuda,ranks=2)", FK_DEVICE_CUDA))
        fk_test_skip("RING_ATTN(backend=cuda,ranks=2)", "built without CUDA or without nccl.h");
#endif
    fk_context_free(cpu);
    return fk_test_finish();
}
