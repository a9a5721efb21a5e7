/*
 * test_rope.c — RoPE forward and backward (the inverse rotation) against the float64 reference, on every
 * backend present: half-split and interleaved, full and partial rotary dims, head dims 32..256 (odd ones with
 * partial rotary), positions from a tensor (int32 / int64, broadcast over the batch) or from pos_offset,
 * cos/sin given (fp32 or q's dtype) or computed from base, q alone or q and k (GQA), separate outputs, in
 * place, and q/k as views of one packed qkv tensor. The reference's backward is checked by central finite
 * differences; every bad-input rule has a negative test.
 * Run: build/test_rope [-v] [-p SUBSTRING] [-b cpu|cuda]
 */
#include "common/fk_test.h"
#include "ref/ref_ops.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct backend {
    fk_device_kind kind;
    const char    *name;
    fk_context_t   ctx;
} backend;

static fk_tensor view4(void *data, fk_dtype dt, fk_device dev, int64_t b, int64_t s, int64_t h, int64_t d,
                       int64_t bs, int64_t ss, int64_t hs) {
    fk_tensor t = fk_tensor_make(data, dt, dev, 4, (int64_t[]){b, s, h, d});
    t.stride[0] = bs, t.stride[1] = ss, t.stride[2] = hs;
    return t;
}
static fk_tensor with_data(fk_tensor t, void *data) {
    t.data = data;
    return t;
}

static bool call_ok(fk_status st, const char *sig) {
    if (st == FK_STATUS_SUCCESS) return true;
    char msg[600];
    snprintf(msg, sizeof msg, "%s: %s", fk_status_string(st), fk_last_error_message());
    if (FK_STATUS_CATEGORY(st) == FK_STATUS_NOT_SUPPORTED) fk_test_skip(sig, msg);
    else fk_test_fail(sig, msg);
    return false;
}

static double *dalloc(int64_t n) { return (double *)malloc((size_t)(n > 0 ? n : 1) * sizeof(double)); }

enum { POS_OFFSET, POS_I32, POS_I64_BCAST, POS_COUNT };
static const char *pos_names[] = {"offset", "pos-i32", "pos-i64-bcast"};

typedef struct rope_case {
    fk_dtype dt;
    int64_t  batch, seqlen, nheads_q, nheads_k, head_dim;
    int64_t  rotary_dim;  // as passed (0 = head_dim)
    int      interleaved;
    int      pos_mode;
    int64_t  pos_offset;  // POS_OFFSET
    int64_t  pos_max;     // positions drawn from [0, pos_max)
    int      tables;      // 0 computed from base, 1 f32 tables, 2 tables in q's dtype
    int      with_k;
    int      inplace;
    int      packed;      // q and k are head ranges of one [B, S, Hq + 2 Hk, D] tensor
    float    base;
} rope_case;

// Are the bytes of buf equal to keep everywhere except in views v1 and v2 (either may be NULL; their data
// pointers point into buf)? What lies inside the views is judged by the reference comparison.
static bool same_outside(const void *buf, const void *keep, size_t bytes, const fk_tensor *v1, const fk_tensor *v2) {
    size_t         es   = 0;
    unsigned char *mask = (unsigned char *)calloc(bytes, 1);
    if (!mask) return false;
    const fk_tensor *vs[2] = {v1, v2};
    for (int w = 0; w < 2; w++) {
        const fk_tensor *v = vs[w];
        if (!v) continue;
        es             = fk_dtype_size(v->dtype);
        int64_t   n    = ref_view_count(v);
        ptrdiff_t base = (const char *)v->data - (const char *)buf;
        for (int64_t i = 0; i < n; i++) {
            int64_t off = 0, r = i;
            for (int d = 3; d >= 0; d--) off += (r % v->shape[d]) * v->stride[d], r /= v->shape[d];
            memset(mask + base + off * (int64_t)es, 1, es);
        }
    }
    bool ok = true;
    for (size_t i = 0; i < bytes && ok; i++)
        if (!mask[i] && ((const unsigned char *)buf)[i] != ((const unsigned char *)keep)[i]) ok = false;
    free(mask);
    return ok;
}

// One pass (fwd or bwd) of one case: fresh inputs, poisoned outputs, compare with the reference.
static void run_pass(const backend *be, const rope_case *c, int backward, const char *sig, uint64_t seed) {
    const bool     gpu = be->kind == FK_DEVICE_CUDA;
    const fk_dtype dt  = c->dt;
    const size_t   es  = fk_dtype_size(dt);
    fk_device      dev = {be->kind, 0};
    const int64_t  B = c->batch, S = c->seqlen, Hq = c->nheads_q, Hk = c->with_k ? c->nheads_k : 0, D = c->head_dim;
    const int64_t  rd   = c->rotary_dim ? c->rotary_dim : D;
    const int64_t  half = rd / 2;
    fk_rng         rng;
    fk_rng_seed(&rng, seed);

    // Inputs: packed [B, S, Hq + 2 Hk, D] or separate q [B, S, Hq, D] and k [B, S, Hk, D] buffers.
    const int64_t Ht  = c->packed ? Hq + 2 * Hk : Hq;
    const int64_t nin = B * S * Ht * D, nk = c->packed ? 0 : B * S * Hk * D;
    // Separate outputs have padded heads (head stride D + 2), so writes beyond a head are caught.
    const int64_t Do = D + 2, nqo = B * S * Hq * Do, nko = B * S * Hk * Do;
    ref_buf qin, kin, qo, ko, pos, ct, st;
    const int64_t maxp  = c->tables ? c->pos_max + 3 : 0;
    const fk_dtype cdt  = c->tables == 2 ? dt : FK_DTYPE_F32;
    const fk_dtype pdt  = c->pos_mode == POS_I32 ? FK_DTYPE_INT32 : FK_DTYPE_INT64;
    bool ok = ref_buf_alloc(&qin, (size_t)nin * es, gpu) && ref_buf_alloc(&kin, (size_t)(nk ? nk : 1) * es, gpu) &&
              ref_buf_alloc(&qo, (size_t)nqo * es, gpu) && ref_buf_alloc(&ko, (size_t)(nko ? nko : 1) * es, gpu) &&
              ref_buf_alloc(&pos, (size_t)(B * S) * 8, gpu) &&
              ref_buf_alloc(&ct, (size_t)(maxp * half + 1) * fk_dtype_size(cdt), gpu) &&
              ref_buf_alloc(&st, (size_t)(maxp * half + 1) * fk_dtype_size(cdt), gpu);
    if (!ok) {
        fk_test_fail(sig, "allocation failed");
        return;
    }
    fk_fill_normal(qin.host, dt, nin, 1.0, &rng, NULL);
    if (nk) fk_fill_normal(kin.host, dt, nk, 1.0, &rng, NULL);
    fk_poison(qo.host, dt, nqo);
    if (nko) fk_poison(ko.host, dt, nko);

    fk_tensor q, k = fk_tensor_none(), qout, kout = fk_tensor_none();
    if (c->packed) {
        q = view4(qin.host, dt, dev, B, S, Hq, D, S * Ht * D, Ht * D, D);
        if (Hk) k = view4((char *)qin.host + Hq * D * (int64_t)es, dt, dev, B, S, Hk, D, S * Ht * D, Ht * D, D);
    } else {
        q = view4(qin.host, dt, dev, B, S, Hq, D, S * Hq * D, Hq * D, D);
        if (Hk) k = view4(kin.host, dt, dev, B, S, Hk, D, S * Hk * D, Hk * D, D);
    }
    if (c->inplace) {
        qout = q, kout = k;
    } else {
        qout = view4(qo.host, dt, dev, B, S, Hq, D, S * Hq * Do, Hq * Do, Do);
        if (Hk) kout = view4(ko.host, dt, dev, B, S, Hk, D, S * Hk * Do, Hk * Do, Do);
    }

    // Positions (int64 copy for the reference).
    int64_t *p64 = (int64_t *)malloc((size_t)(B * S) * sizeof(int64_t));
    fk_tensor tpos = fk_tensor_none();
    if (c->pos_mode == POS_OFFSET) {
        for (int64_t b = 0; b < B; b++)
            for (int64_t s = 0; s < S; s++) p64[b * S + s] = c->pos_offset + s;
    } else {
        int64_t rows = c->pos_mode == POS_I64_BCAST ? 1 : B;
        for (int64_t i = 0; i < rows * S; i++) {
            int64_t v = (int64_t)(fk_rng_uniform(&rng) * (double)c->pos_max);
            if (i == 0) v = c->pos_max - 1; // the top of the range is always exercised
            fk_set(pos.host, pdt, i, (double)v);
        }
        for (int64_t b = 0; b < B; b++)
            for (int64_t s = 0; s < S; s++) p64[b * S + s] = (int64_t)fk_get(pos.host, pdt, (rows == 1 ? 0 : b) * S + s);
        tpos = fk_tensor_make(pos.host, pdt, dev, 2, (int64_t[]){B, S});
        if (rows == 1) tpos.stride[0] = 0; // one row of positions broadcast over the batch
    }
    // cos/sin tables: true cos/sin of another base (500), rounded to the table dtype.
    double   *c64 = NULL, *s64 = NULL;
    fk_tensor tcos = fk_tensor_none(), tsin = fk_tensor_none();
    if (c->tables) {
        c64 = dalloc(maxp * half), s64 = dalloc(maxp * half);
        for (int64_t pp = 0; pp < maxp; pp++)
            for (int64_t i = 0; i < half; i++) {
                double th = (double)pp * pow(500.0, -2.0 * (double)i / (double)rd);
                fk_set(ct.host, cdt, pp * half + i, cos(th));
                fk_set(st.host, cdt, pp * half + i, sin(th));
                c64[pp * half + i] = fk_get(ct.host, cdt, pp * half + i);
                s64[pp * half + i] = fk_get(st.host, cdt, pp * half + i);
            }
        tcos = fk_tensor_make(ct.host, cdt, dev, 2, (int64_t[]){maxp, half});
        tsin = fk_tensor_make(st.host, cdt, dev, 2, (int64_t[]){maxp, half});
    }

    // Reference inputs, before an in-place call overwrites them.
    const int64_t nq = B * S * Hq * D, nkk = B * S * Hk * D;
    double *xq = dalloc(nq), *xk = dalloc(nkk), *rq = dalloc(nq), *rk = dalloc(nkk), *vq = dalloc(nq), *vk = dalloc(nkk);
    ref_view_read(&q, q.data, xq);
    if (Hk) ref_view_read(&k, k.data, xk);
    ref_rope(FK_DTYPE_F64, B, S, Hq, D, rd, c->interleaved, p64, c64, s64, c->base, backward, xq, rq);
    ref_rope(dt, B, S, Hq, D, rd, c->interleaved, p64, c64, s64, c->base, backward, xq, vq);
    if (Hk) {
        ref_rope(FK_DTYPE_F64, B, S, Hk, D, rd, c->interleaved, p64, c64, s64, c->base, backward, xk, rk);
        ref_rope(dt, B, S, Hk, D, rd, c->interleaved, p64, c64, s64, c->base, backward, xk, vk);
    }

    void *qkeep = malloc((size_t)nin * es), *kkeep = malloc((size_t)(nk ? nk : 1) * es);
    memcpy(qkeep, qin.host, (size_t)nin * es);
    if (nk) memcpy(kkeep, kin.host, (size_t)nk * es);

    // The call: the same views with device pointers.
    ref_buf *qb = &qin, *kb = c->packed ? &qin : &kin;
    fk_rope_args a;
    fk_rope_args_init(&a);
    a.q     = with_data(q, (char *)ref_buf_ptr(&qin) + ((char *)q.data - (char *)qin.host));
    a.q_out = c->inplace ? a.q : with_data(qout, ref_buf_ptr(&qo));
    if (Hk) {
        a.k     = with_data(k, (char *)ref_buf_ptr(kb) + ((char *)k.data - (char *)kb->host));
        a.k_out = c->inplace ? a.k : with_data(kout, ref_buf_ptr(&ko));
    }
    if (c->pos_mode != POS_OFFSET) a.positions = with_data(tpos, ref_buf_ptr(&pos));
    if (c->tables) a.cos = with_data(tcos, ref_buf_ptr(&ct)), a.sin = with_data(tsin, ref_buf_ptr(&st));
    a.rotary_dim  = c->rotary_dim;
    a.interleaved = c->interleaved;
    a.pos_offset  = c->pos_offset;
    a.base        = c->base;
    ok = ref_buf_upload(&qin) && ref_buf_upload(&kin) && ref_buf_upload(&qo) && ref_buf_upload(&ko) &&
         ref_buf_upload(&pos) && ref_buf_upload(&ct) && ref_buf_upload(&st);
    fk_status s = ok ? (backward ? fk_rope_bwd(be->ctx, &a, NULL) : fk_rope_fwd(be->ctx, &a, NULL)) : FK_STATUS_INTERNAL;
    if (!ok) {
        fk_test_fail(sig, "device copy failed");
    } else if (call_ok(s, sig)) {
        if (!ref_buf_download(qb) || !ref_buf_download(kb) || !ref_buf_download(&qo) || !ref_buf_download(&ko)) {
            fk_test_fail(sig, "device copy failed");
        } else {
            char d1[400], d2[400] = "", detail[900];
            bool okq = ref_verdict(&qout, qout.data, rq, vq, d1, sizeof d1);
            bool okk = !Hk || ref_verdict(&kout, kout.data, rk, vk, d2, sizeof d2);
            bool untouched = c->inplace || (ref_outside_view_untouched(&qout, qo.host, nqo) &&
                                            (!Hk || ref_outside_view_untouched(&kout, ko.host, nko)));
            // Inputs must be left alone, except the q/k views themselves when in place (packed: the v heads
            // and the tails of q/k stay as they were).
            bool kept = same_outside(qin.host, qkeep, (size_t)nin * es, c->inplace ? &q : NULL,
                                     c->inplace && c->packed && Hk ? &k : NULL) &&
                        (!nk || same_outside(kin.host, kkeep, (size_t)nk * es, c->inplace ? &k : NULL, NULL));
            snprintf(detail, sizeof detail, "q: %s%s%s%s%s", d1, Hk ? " | k: " : "", d2,
                     untouched ? "" : " | wrote outside a view", kept ? "" : " | changed an input outside q/k");
            fk_test_check(okq && okk && untouched && kept, sig, detail);
        }
    }
    free(qkeep), free(kkeep);
    free(p64), free(c64), free(s64), free(xq), free(xk), free(rq), free(rk), free(vq), free(vk);
    ref_buf_free(&qin), ref_buf_free(&kin), ref_buf_free(&qo), ref_buf_free(&ko), ref_buf_free(&pos);
    ref_buf_free(&ct), ref_buf_free(&st);
}

static void run_case(const backend *be, const rope_case *c, uint64_t seed) {
    char base[260], sig[280];
    snprintf(base, sizeof base, "rope %s %s b=%lld s=%lld hq=%lld hk=%lld d=%lld rd=%lld %s %s%s %s%s%s%s",
             be->name, fk_dtype_name(c->dt), (long long)c->batch, (long long)c->seqlen, (long long)c->nheads_q,
             (long long)(c->with_k ? c->nheads_k : 0), (long long)c->head_dim,
             (long long)(c->rotary_dim ? c->rotary_dim : c->head_dim), c->interleaved ? "interleaved" : "half-split",
             pos_names[c->pos_mode], c->pos_mode == POS_OFFSET && c->pos_offset ? "+off" : "",
             c->tables == 0 ? "computed" : c->tables == 1 ? "cos-f32" : "cos-qdtype", c->inplace ? " inplace" : "",
             c->packed ? " packed" : "", c->pos_max > 1000 ? " bigpos" : "");
    snprintf(sig, sizeof sig, "%s fwd", base);
    if (fk_test_selected(sig, be->kind)) run_pass(be, c, 0, sig, seed);
    snprintf(sig, sizeof sig, "%s bwd", base);
    if (fk_test_selected(sig, be->kind)) run_pass(be, c, 1, sig, seed + 1000003);
}

// The reference backward (the inverse rotation of the incoming gradient) against central differences of
// loss = sum(rope(x) * g), for both layouts and a partial rotary dim.
static void check_reference_gradients(void) {
    const char *sig = "rope reference bwd vs finite differences";
    if (!fk_test_selected(sig, FK_DEVICE_CPU)) return;
    enum { B = 1, S = 3, H = 2, D = 10, N = B * S * H * D };
    fk_rng rng;
    fk_rng_seed(&rng, 5);
    double  x[N], g[N], out[N], dx[N];
    int64_t pos[B * S] = {0, 5, 11};
    for (int i = 0; i < N; i++) x[i] = fk_rng_normal(&rng), g[i] = fk_rng_normal(&rng);
    double worst = 0;
    for (int il = 0; il < 2; il++)
        for (int rd = 6; rd <= D; rd += 4) {
            ref_rope(FK_DTYPE_F64, B, S, H, D, rd, il, pos, NULL, NULL, 100.0, 1, g, dx);
            for (int i = 0; i < N; i++) {
                double keep = x[i], step = 1e-5, l[2];
                for (int sg = 0; sg < 2; sg++) {
                    x[i] = keep + (sg ? -step : step);
                    ref_rope(FK_DTYPE_F64, B, S, H, D, rd, il, pos, NULL, NULL, 100.0, 0, x, out);
                    l[sg] = 0;
                    for (int j = 0; j < N; j++) l[sg] += out[j] * g[j];
                }
                x[i]     = keep;
                double e = fabs((l[0] - l[1]) / (2 * step) - dx[i]) / (1 + fabs(dx[i]));
                if (e > worst) worst = e;
            }
        }
    char detail[100];
    snprintf(detail, sizeof detail, "max error %.2e (tol 1e-7)", worst);
    fk_test_check(worst < 1e-7, sig, detail);
}

static void expect(fk_status got, fk_status want, const char *sig) {
    char        detail[700];
    const char *msg = fk_last_error_message();
    snprintf(detail, sizeof detail, "got %d (%s), want %d; message: \"%s\"", (int)got, fk_status_string(got),
             (int)want, msg);
    fk_test_check(got == want && msg[0] != '\0', sig, detail);
}

static void negative_tests(fk_context_t ctx) {
    if (!fk_test_selected("rope bad", FK_DEVICE_CPU)) return;
    fk_device       cpu = {FK_DEVICE_CPU, 0}, gpu = {FK_DEVICE_CUDA, 0};
    enum { B = 2, S = 3, HQ = 2, HK = 1, D = 8, MAXP = 6 };
    static float    q[B * S * HQ * D], k[B * S * HK * D], cs[MAXP * D / 2], sn[MAXP * D / 2];
    static int32_t  pos[B * S] = {0, 1, 2, 3, 4, 5};
    for (int i = 0; i < B * S * HQ * D; i++) q[i] = 0.5f + (float)i / 100;
    for (int i = 0; i < B * S * HK * D; i++) k[i] = -0.5f - (float)i / 100;
    for (int i = 0; i < MAXP * D / 2; i++) cs[i] = 0.8f, sn[i] = 0.6f;
    fk_rope_args g;
    fk_rope_args_init(&g);
    g.q = g.q_out = fk_tensor_make(q, FK_DTYPE_F32, cpu, 4, (int64_t[]){B, S, HQ, D});
    g.k = g.k_out = fk_tensor_make(k, FK_DTYPE_F32, cpu, 4, (int64_t[]){B, S, HK, D});
    g.positions   = fk_tensor_make(pos, FK_DTYPE_INT32, cpu, 2, (int64_t[]){B, S});
    g.cos         = fk_tensor_make(cs, FK_DTYPE_F32, cpu, 2, (int64_t[]){MAXP, D / 2});
    g.sin         = fk_tensor_make(sn, FK_DTYPE_F32, cpu, 2, (int64_t[]){MAXP, D / 2});
    fk_status st  = fk_rope_fwd(ctx, &g, NULL);
    fk_test_check(st == FK_STATUS_SUCCESS && !fk_last_error_message()[0], "rope bad: control fwd", fk_last_error_message());
    st = fk_rope_bwd(ctx, &g, NULL);
    fk_test_check(st == FK_STATUS_SUCCESS && !fk_last_error_message()[0], "rope bad: control bwd", fk_last_error_message());

    fk_rope_args a;
#define FWD(sig, want, ...) (a = g, __VA_ARGS__, expect(fk_rope_fwd(ctx, &a, NULL), want, "rope bad: " sig))
#define BWD(sig, want, ...) (a = g, __VA_ARGS__, expect(fk_rope_bwd(ctx, &a, NULL), want, "rope bad: " sig))
    expect(fk_rope_fwd(NULL, &g, NULL), FK_STATUS_BAD_PARAM_NULL_POINTER, "rope bad: ctx NULL");
    expect(fk_rope_fwd(ctx, NULL, NULL), FK_STATUS_BAD_PARAM_NULL_POINTER, "rope bad: args NULL");
    expect(fk_rope_bwd(ctx, NULL, NULL), FK_STATUS_BAD_PARAM_NULL_POINTER, "rope bad: args NULL (bwd)");
    FWD("q.data NULL", FK_STATUS_BAD_PARAM_NULL_POINTER, a.q.data = NULL);
    FWD("q_out absent", FK_STATUS_BAD_PARAM_NULL_POINTER, a.q_out = fk_tensor_none());
    FWD("k without k_out", FK_STATUS_BAD_PARAM_NULL_POINTER, a.k_out = fk_tensor_none());
    FWD("k_out without k", FK_STATUS_BAD_PARAM, a.k = fk_tensor_none());
    FWD("cos without sin", FK_STATUS_BAD_PARAM_NULL_POINTER, a.sin = fk_tensor_none());
    FWD("sin without cos", FK_STATUS_BAD_PARAM_NULL_POINTER, a.cos = fk_tensor_none());
    FWD("q ndim 3", FK_STATUS_BAD_PARAM_NDIM, a.q.ndim = 3);
    FWD("positions ndim 1", FK_STATUS_BAD_PARAM_NDIM, a.positions.ndim = 1, a.positions.shape[0] = B * S,
        a.positions.stride[0] = 1);
    FWD("q_out heads differ", FK_STATUS_BAD_PARAM_SHAPE, a.q_out.shape[2] = 1);
    FWD("k batch differs", FK_STATUS_BAD_PARAM_SHAPE, a.k.shape[0] = 1, a.k_out.shape[0] = 1);
    FWD("k head_dim differs", FK_STATUS_BAD_PARAM_SHAPE, a.k.shape[3] = 4, a.k_out.shape[3] = 4);
    FWD("k_out seqlen differs", FK_STATUS_BAD_PARAM_SHAPE, a.k_out.shape[1] = 2);
    FWD("positions seqlen differs", FK_STATUS_BAD_PARAM_SHAPE, a.positions.shape[1] = 2);
    FWD("cos width is not rotary_dim/2", FK_STATUS_BAD_PARAM_SHAPE, a.cos.shape[1] = 2, a.sin.shape[1] = 2);
    FWD("sin rows differ from cos", FK_STATUS_BAD_PARAM_SHAPE, a.sin.shape[0] = MAXP - 1);
    FWD("q rows 0", FK_STATUS_BAD_PARAM_SHAPE, a.q.shape[1] = 0);
    FWD("q inner stride 2", FK_STATUS_BAD_PARAM_STRIDE, a.q.stride[3] = 2, a.q.shape[3] = 4, a.q_out.shape[3] = 4,
        a.k = a.k_out = fk_tensor_none(), a.cos.shape[1] = 2, a.sin.shape[1] = 2);
    FWD("q_out negative head stride", FK_STATUS_BAD_PARAM_STRIDE, a.q_out.stride[2] = -8);
    FWD("q_out dtype differs", FK_STATUS_BAD_PARAM_DTYPE_MISMATCH, a.q_out.dtype = FK_DTYPE_BF16);
    FWD("k dtype differs", FK_STATUS_BAD_PARAM_DTYPE_MISMATCH, a.k.dtype = FK_DTYPE_F16, a.k_out.dtype = FK_DTYPE_F16);
    FWD("cos dtype f16 with f32 q", FK_STATUS_BAD_PARAM_DTYPE_MISMATCH, a.cos.dtype = FK_DTYPE_F16);
    FWD("q int32", FK_STATUS_NOT_SUPPORTED_DTYPE, a.q.dtype = a.q_out.dtype = FK_DTYPE_INT32);
    FWD("positions f32", FK_STATUS_NOT_SUPPORTED_DTYPE, a.positions.dtype = FK_DTYPE_F32);
    FWD("k on cuda", FK_STATUS_BAD_PARAM_DEVICE_MISMATCH, a.k.device = gpu);
    FWD("rotary_dim odd", FK_STATUS_BAD_PARAM_VALUE, a.rotary_dim = 5);
    FWD("rotary_dim > head_dim", FK_STATUS_BAD_PARAM_VALUE, a.rotary_dim = 10);
    FWD("rotary_dim negative", FK_STATUS_BAD_PARAM_VALUE, a.rotary_dim = -2);
    FWD("odd head_dim, rotary_dim 0", FK_STATUS_BAD_PARAM_VALUE, a.q.shape[3] = a.q_out.shape[3] = 7,
        a.k = a.k_out = fk_tensor_none(), a.cos = a.sin = fk_tensor_none());
    FWD("interleaved 2", FK_STATUS_BAD_PARAM_VALUE, a.interleaved = 2);
    FWD("base 0", FK_STATUS_BAD_PARAM_VALUE, a.cos = a.sin = fk_tensor_none(), a.base = 0.0f);
    FWD("base negative", FK_STATUS_BAD_PARAM_VALUE, a.cos = a.sin = fk_tensor_none(), a.base = -10000.0f);
    FWD("base NaN", FK_STATUS_BAD_PARAM_VALUE, a.cos = a.sin = fk_tensor_none(), a.base = NAN);
    FWD("pos_offset + seqlen > max_position", FK_STATUS_BAD_PARAM_VALUE, a.positions = fk_tensor_none(),
        a.pos_offset = MAXP - S + 1);
    FWD("pos_offset negative with tables", FK_STATUS_BAD_PARAM_VALUE, a.positions = fk_tensor_none(), a.pos_offset = -1);
#undef FWD
#undef BWD
    // Positions out of range of cos/sin: refused before anything is written (here in place).
    float keep[B * S * HQ * D];
    memcpy(keep, q, sizeof keep);
    pos[4] = MAXP;
    expect(fk_rope_fwd(ctx, &g, NULL), FK_STATUS_BAD_PARAM_VALUE, "rope bad: position = max_position");
    fk_test_check(memcmp(keep, q, sizeof keep) == 0, "rope bad: position out of range leaves q untouched", "");
    pos[4] = -1;
    expect(fk_rope_bwd(ctx, &g, NULL), FK_STATUS_BAD_PARAM_VALUE, "rope bad: position -1 (bwd)");
    pos[4] = 4;
}

// CUDA: positions from a tensor outside cos/sin's range are refused before anything is written (the backend
// copies them to the host for the check), in place here, forward and backward.
static void cuda_positions_out_of_range(const backend *be) {
    const char *sig = "rope cuda bad position refused";
    if (!fk_test_selected(sig, be->kind)) return;
    enum { B = 2, S = 3, H = 2, D = 8, MAXP = 6 };
    fk_device dev = {FK_DEVICE_CUDA, 0};
    float     q[B * S * H * D], back[B * S * H * D], cs[MAXP * D / 2];
    int32_t   pos[B * S] = {0, 1, 2, 3, 4, 5};
    for (int i = 0; i < B * S * H * D; i++) q[i] = 0.5f + (float)i / 64;
    for (int i = 0; i < MAXP * D / 2; i++) cs[i] = 0.6f;
    void *dq = fk_test_dev_alloc(sizeof q), *dp = fk_test_dev_alloc(sizeof pos), *dc = fk_test_dev_alloc(sizeof cs);
    if (!dq || !dp || !dc || !fk_test_h2d(dq, q, sizeof q) || !fk_test_h2d(dc, cs, sizeof cs)) {
        fk_test_fail(sig, "device allocation or copy failed");
    } else {
        fk_rope_args a;
        fk_rope_args_init(&a);
        a.q = a.q_out = fk_tensor_make(dq, FK_DTYPE_F32, dev, 4, (int64_t[]){B, S, H, D});
        a.positions   = fk_tensor_make(dp, FK_DTYPE_INT32, dev, 2, (int64_t[]){B, S});
        a.cos = a.sin = fk_tensor_make(dc, FK_DTYPE_F32, dev, 2, (int64_t[]){MAXP, D / 2});
        for (int which = 0; which < 2; which++) {
            pos[4] = which ? -1 : MAXP;
            bool ok = fk_test_h2d(dp, pos, sizeof pos);
            expect(ok ? (which ? fk_rope_bwd(be->ctx, &a, NULL) : fk_rope_fwd(be->ctx, &a, NULL)) : FK_STATUS_INTERNAL,
                   FK_STATUS_BAD_PARAM_VALUE, which ? "rope cuda bad position refused: -1 (bwd)" : sig);
            ok = fk_test_dev_sync() && fk_test_d2h(back, dq, sizeof back);
            fk_test_check(ok && memcmp(back, q, sizeof q) == 0, "rope cuda bad position leaves q untouched", "");
        }
        pos[4] = 4;
        bool ok = fk_test_h2d(dp, pos, sizeof pos);
        fk_status st = ok ? fk_rope_fwd(be->ctx, &a, NULL) : FK_STATUS_INTERNAL;
        fk_test_check(st == FK_STATUS_SUCCESS, "rope cuda positions in range accepted", fk_last_error_message());
    }
    fk_test_dev_free(dq), fk_test_dev_free(dp), fk_test_dev_free(dc);
}

static void cuda_f64_refused(const backend *be) {
    const char *sig = "rope cuda f64 refused";
    if (!fk_test_selected(sig, be->kind)) return;
    fk_device dev = {FK_DEVICE_CUDA, 0};
    void     *p   = fk_test_dev_alloc(2 * 3 * 2 * 8 * sizeof(double));
    if (!p) {
        fk_test_fail(sig, "device allocation failed");
        return;
    }
    fk_rope_args a;
    fk_rope_args_init(&a);
    a.q = a.q_out = fk_tensor_make(p, FK_DTYPE_F64, dev, 4, (int64_t[]){2, 3, 2, 8});
    expect(fk_rope_fwd(be->ctx, &a, NULL), FK_STATUS_NOT_SUPPORTED_DTYPE, sig);
    fk_test_dev_free(p);
}

int main(int argc, char **argv) {
    fk_test_init(argc, argv, "test_rope");
    backend     bes[2];
    int         nbe = 0;
    const char *why = NULL;
    fk_device   cpu = {FK_DEVICE_CPU, 0};
    if (fk_context_init(cpu, NULL, &bes[nbe].ctx) == FK_STATUS_SUCCESS) {
        bes[nbe].kind = FK_DEVICE_CPU, bes[nbe].name = "cpu";
        nbe++;
    } else {
        fk_test_fail("rope cpu context", fk_last_error_message());
    }
    if (fk_test_have_cuda(&why)) {
        fk_device gpu = {FK_DEVICE_CUDA, 0};
        if (fk_context_init(gpu, NULL, &bes[nbe].ctx) == FK_STATUS_SUCCESS) {
            bes[nbe].kind = FK_DEVICE_CUDA, bes[nbe].name = "cuda";
            nbe++;
        } else {
            fk_test_fail("rope cuda context", fk_last_error_message());
        }
    } else {
        fk_test_skip("rope cuda", why);
    }

    static const fk_dtype dtypes[] = {FK_DTYPE_F32, FK_DTYPE_F16, FK_DTYPE_BF16, FK_DTYPE_F64};
    static const int64_t  dims[]   = {32, 40, 59, 64, 111, 128, 256};
    uint64_t              seed     = 1;
    for (int b = 0; b < nbe; b++) {
        int k = 0; // case counter: cycles the secondary options so every combination appears
        for (size_t di = 0; di < 4; di++) {
            if (bes[b].kind == FK_DEVICE_CUDA && dtypes[di] == FK_DTYPE_F64) continue;
            for (size_t hi = 0; hi < sizeof dims / sizeof dims[0]; hi++)
                for (int il = 0; il < 2; il++)
                    for (int v = 0; v < 3; v++, k++) {
                        rope_case c;
                        memset(&c, 0, sizeof c);
                        c.dt          = dtypes[di];
                        c.head_dim    = dims[hi];
                        c.interleaved = il;
                        c.batch       = 1 + (k % 2);
                        c.seqlen      = (k % 3 == 0) ? 17 : 5;
                        c.nheads_q    = 1 + (k % 3);
                        c.with_k      = (k % 4) != 3;
                        c.nheads_k    = 1 + (k % 2);
                        // Odd head dims need a partial rotary dim; even ones alternate full and partial.
                        if (c.head_dim % 2) c.rotary_dim = (v == 0) ? c.head_dim - 1 : (c.head_dim / 2) & ~1;
                        else c.rotary_dim = (v == 1) ? (c.head_dim / 2) & ~(int64_t)1 : (v == 2 ? c.head_dim : 0);
                        c.pos_mode   = k % POS_COUNT;
                        c.pos_offset = (k % 5 == 0) ? 0 : 7;
                        c.pos_max    = (k % 7 == 3) ? 8192 : 64; // large positions test the angle precision
                        if (c.pos_mode == POS_OFFSET && c.pos_max > 1000) c.pos_offset = 4000;
                        c.tables  = (k / 3) % 3;
                        c.inplace = (k % 5) == 1 || (k % 5) == 4;
                        c.packed  = (k % 4) == 2;
                        c.base    = (k % 2) ? 10000.0f : 500000.0f;
                        if (c.tables && c.pos_mode == POS_OFFSET) c.pos_max = c.pos_offset + c.seqlen;
                        run_case(&bes[b], &c, seed);
                        seed += 2;
                    }
        }
        if (bes[b].kind == FK_DEVICE_CUDA) cuda_f64_refused(&bes[b]), cuda_positions_out_of_range(&bes[b]);
    }
    check_reference_gradients();
    if (nbe > 0 && bes[0].kind == FK_DEVICE_CPU) negative_tests(bes[0].ctx);
    for (int b = 0; b < nbe; b++) fk_context_free(bes[b].ctx);
    return fk_test_finish();
}
