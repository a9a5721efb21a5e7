/*
 * test_attn.c — attention forward and backward against the float64 reference, on every backend present:
 * dtypes (f32, f16, bf16; f64 on the CPU), head dims, sequence lengths (equal and unequal), GQA/MQA, causal,
 * windows, softcap, ALiBi, varlen (with empty sequences), rows that see no key, packed qkv views, LSE; the
 * CPU's SIMD paths (FK_CPU_SIMD_MAX); thread-count determinism; the reference backward against finite
 * differences; every bad-input rule.
 * Run: build/test_attn [-v] [-p SUBSTRING] [-b cpu|cuda]
 */
#define _POSIX_C_SOURCE 200112L
#include "common/fk_test.h"
#include "ref/ref_attn.h"
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

typedef struct attn_case {
    int64_t batch, sq, sk, hq, hkv, d;
    int     causal;
    int     win;    // 0: both windows unbounded (wl, wr ignored)
    int64_t wl, wr;
    float   softcap;
    int     alibi;  // 0 none, 1 per head [hq], 2 per batch-head [batch, hq]
    float   scale;  // 0 = default
    int     nvar;   // > 0: varlen with lq/lk (batch = nvar)
    int64_t lq[6], lk[6];
    int     packed; // q, k, v (and dq, dk, dv) as views of one [B, S, 3, H, D] buffer
    int     bwd;
    int     simd;   // also run under the narrower SIMD paths
    int     cuda_only; // a CUDA kernel-choice case: the CPU has no such choice, and the size would only cost time
} attn_case;

static const char *simd_label = "native";

static double *dalloc(int64_t n) { return (double *)calloc((size_t)(n > 0 ? n : 1), sizeof(double)); }

static bool status_ok(fk_status st, const char *sig) {
    if (st == FK_STATUS_SUCCESS) return true;
    char msg[700];
    snprintf(msg, sizeof msg, "%s: %s", fk_status_string(st), fk_last_error_message());
    if (FK_STATUS_CATEGORY(st) == FK_STATUS_NOT_SUPPORTED) fk_test_skip(sig, msg);
    else fk_test_fail(sig, msg);
    return false;
}

// View of a [B, S, H, D] (fixed) or [total, H, D] (varlen) operand, contiguous, or at `slot` of a packed
// [B, S, 3, H, D] buffer.
static fk_tensor bshd_view(void *data, fk_dtype dt, fk_device dev, const attn_case *c, int64_t total, int64_t s,
                           int64_t h, int packed_slot) {
    if (c->nvar) return fk_tensor_make(data, dt, dev, 3, (int64_t[]){total, h, c->d});
    fk_tensor t = fk_tensor_make(data, dt, dev, 4, (int64_t[]){c->batch, s, h, c->d});
    if (packed_slot >= 0) {
        t.data      = (char *)data + (size_t)(packed_slot * h * c->d) * fk_dtype_size(dt);
        t.stride[2] = c->d;
        t.stride[1] = 3 * h * c->d;
        t.stride[0] = s * 3 * h * c->d;
    }
    return t;
}

// CUDA deterministic mode: ten backward runs give the same gradients bit for bit, and the first is within
// the same bound as the default (atomic) mode. b1 is dqkv when packed (b2, b3 NULL), else dq, dk, dv.
static void check_deterministic(const backend *be, const fk_attn_args *a0, const attn_case *c, const char *args,
                                ref_buf *b1, ref_buf *b2, ref_buf *b3, fk_tensor vdq, fk_tensor vdk, fk_tensor vdv,
                                const double *rdq, const double *rdk, const double *rdv, const double *ndq,
                                const double *ndk, const double *ndv) {
    char sig[480];
    snprintf(sig, sizeof sig, "ATTN_BWD_DET(%s)", args);
    if (!fk_test_selected(sig, be->kind)) return;
    fk_attn_args a = *a0;
    a.deterministic = 1;
    ref_buf      *bufs[3] = {b1, b2, b3};
    const int     nbuf = b2 ? 3 : 1;
    const fk_dtype dt = a.dq.dtype;
    size_t        total = 0, wsb = 0;
    for (int i = 0; i < nbuf; i++) total += bufs[i]->bytes;
    unsigned char *first = malloc(total ? total : 1);
    void          *ws = NULL;
    bool           same = true;
    if (!first || !status_ok(fk_attn_bwd_workspace_size(be->ctx, &a, &wsb), sig)) goto out;
    ws = fk_test_dev_alloc(wsb);
    for (int r = 0; r < 10; r++) {
        for (int i = 0; i < nbuf; i++) {
            fk_poison(bufs[i]->host, dt, (int64_t)(bufs[i]->bytes / fk_dtype_size(dt)));
            if (!ref_buf_upload(bufs[i])) {
                fk_test_fail(sig, "upload failed");
                goto out;
            }
        }
        if (!status_ok(fk_attn_bwd(be->ctx, &a, ws, wsb, NULL), sig)) goto out;
        fk_test_dev_sync();
        size_t off = 0;
        for (int i = 0; i < nbuf; i++) {
            ref_buf_download(bufs[i]);
            if (r == 0) memcpy(first + off, bufs[i]->host, bufs[i]->bytes);
            else same = same && !memcmp(first + off, bufs[i]->host, bufs[i]->bytes);
            off += bufs[i]->bytes;
        }
        if (r == 0) {
            char      d1[300], d2[300], d3[300], detail[1000];
            fk_tensor hdq = vdq, hdk = vdk, hdv = vdv;
            // The views' offsets into their buffers are the same on the host.
            hdq.data = (char *)b1->host + ((char *)vdq.data - (char *)ref_buf_ptr(b1));
            hdk.data = (char *)(b2 ? b2 : b1)->host + ((char *)vdk.data - (char *)ref_buf_ptr(b2 ? b2 : b1));
            hdv.data = (char *)(b3 ? b3 : b1)->host + ((char *)vdv.data - (char *)ref_buf_ptr(b3 ? b3 : b1));
            bool g1 = ref_verdict(&hdq, hdq.data, rdq, ndq, d1, sizeof d1);
            bool g2 = ref_verdict(&hdk, hdk.data, rdk, ndk, d2, sizeof d2);
            bool g3 = ref_verdict(&hdv, hdv.data, rdv, ndv, d3, sizeof d3);
            if (!(g1 && g2 && g3)) {
                snprintf(detail, sizeof detail, "deterministic run: dq: %s | dk: %s | dv: %s", d1, d2, d3);
                fk_test_fail(sig, detail);
                goto out;
            }
        }
    }
    fk_test_check(same, sig, same ? "within bound, bit-identical over 10 runs" : "runs differ");
out:
    fk_test_dev_free(ws);
    free(first);
    (void)c;
}

static void run_case(const backend *be, fk_dtype dt, const attn_case *c0, uint64_t seed) {
    attn_case cc = *c0;
    if (!cc.win) cc.wl = cc.wr = -1;
    const attn_case *c = &cc;
    char args[400], sigf[460], sigb[460];
    int64_t sig_sq = c->sq, sig_sk = c->sk; // varlen: the longest sequences
    for (int i = 0; i < c->nvar; i++) {
        sig_sq = c->lq[i] > sig_sq ? c->lq[i] : sig_sq;
        sig_sk = c->lk[i] > sig_sk ? c->lk[i] : sig_sk;
    }
    snprintf(args, sizeof args,
             "backend=%s,dtype=%s,d=%lld,sq=%lld,sk=%lld,hq=%lld,hkv=%lld,b=%lld,causal=%d,wl=%lld,wr=%lld,softcap=%g,"
             "alibi=%d,varlen=%d,packed=%d,simd=%s",
             be->name, fk_dtype_name(dt), (long long)c->d, (long long)sig_sq, (long long)sig_sk, (long long)c->hq,
             (long long)c->hkv, (long long)(c->nvar ? c->nvar : c->batch), c->causal, (long long)c->wl,
             (long long)c->wr, (double)c->softcap, c->alibi, c->nvar > 0, c->packed, simd_label);
    snprintf(sigf, sizeof sigf, "ATTN_FWD(%s)", args);
    snprintf(sigb, sizeof sigb, "ATTN_BWD(%s)", args);
    const bool want_f = fk_test_selected(sigf, be->kind), want_b = c->bwd && fk_test_selected(sigb, be->kind);
    if ((!want_f && !want_b) || (c->cuda_only && be->kind != FK_DEVICE_CUDA)) return;
    if (!be->ctx) {
        fk_test_skip(want_f ? sigf : sigb, "no context for this backend");
        return;
    }

    const bool     gpu = be->kind == FK_DEVICE_CUDA;
    const fk_dtype sdt = dt == FK_DTYPE_F64 ? FK_DTYPE_F64 : FK_DTYPE_F32;
    const size_t   es = fk_dtype_size(dt), ses = fk_dtype_size(sdt);
    const int64_t  B = c->nvar ? c->nvar : c->batch, hq = c->hq, hkv = c->hkv, d = c->d;
    int64_t        lq[64], lk[64];
    for (int64_t b = 0; b < B; b++) {
        lq[b] = c->nvar ? c->lq[b] : c->sq;
        lk[b] = c->nvar ? c->lk[b] : c->sk;
    }
    const int64_t tq = ref_attn_total(lq, B), tk = ref_attn_total(lk, B);
    int64_t       maxq = 1, maxk = 1;
    for (int64_t b = 0; b < B; b++) {
        maxq = lq[b] > maxq ? lq[b] : maxq;
        maxk = lk[b] > maxk ? lk[b] : maxk;
    }
    const int64_t nq = tq * hq * d, nk = tk * hkv * d, nl = tq * hq;
    fk_device     dev = {be->kind, 0};
    fk_rng        rng;
    fk_rng_seed(&rng, seed);

    // Buffers: packed -> one qkv and one dqkv buffer.
    ref_buf qkv, q, k, v, o, lse, dO, dqkv, dq, dk, dv, cuq, cuk, al;
    memset(&qkv, 0, sizeof qkv);
    memset(&dqkv, 0, sizeof dqkv);
    bool ok = true;
    if (c->packed) {
        ok = ref_buf_alloc(&qkv, (size_t)(3 * nq) * es, gpu) && ref_buf_alloc(&dqkv, (size_t)(3 * nq) * es, gpu);
    } else {
        ok = ref_buf_alloc(&q, (size_t)nq * es, gpu) && ref_buf_alloc(&k, (size_t)nk * es, gpu) &&
             ref_buf_alloc(&v, (size_t)nk * es, gpu) && ref_buf_alloc(&dq, (size_t)nq * es, gpu) &&
             ref_buf_alloc(&dk, (size_t)nk * es, gpu) && ref_buf_alloc(&dv, (size_t)nk * es, gpu);
    }
    ok = ok && ref_buf_alloc(&o, (size_t)nq * es, gpu) && ref_buf_alloc(&lse, (size_t)nl * ses, gpu) &&
         ref_buf_alloc(&dO, (size_t)nq * es, gpu) && ref_buf_alloc(&cuq, (size_t)(B + 1) * 4, gpu) &&
         ref_buf_alloc(&cuk, (size_t)(B + 1) * 4, gpu) && ref_buf_alloc(&al, (size_t)(B * hq) * 4, gpu);
    if (!ok) {
        fk_test_fail(sigf, "allocation failed");
        return;
    }
    void     *qbase = c->packed ? qkv.host : q.host;
    fk_tensor tq_v  = bshd_view(c->packed ? ref_buf_ptr(&qkv) : ref_buf_ptr(&q), dt, dev, c, tq, c->sq, hq, c->packed ? 0 : -1);
    fk_tensor tk_v  = bshd_view(c->packed ? ref_buf_ptr(&qkv) : ref_buf_ptr(&k), dt, dev, c, tk, c->sk, hkv, c->packed ? 1 : -1);
    fk_tensor tv_v  = bshd_view(c->packed ? ref_buf_ptr(&qkv) : ref_buf_ptr(&v), dt, dev, c, tk, c->sk, hkv, c->packed ? 2 : -1);
    fk_tensor tdq_v = bshd_view(c->packed ? ref_buf_ptr(&dqkv) : ref_buf_ptr(&dq), dt, dev, c, tq, c->sq, hq, c->packed ? 0 : -1);
    fk_tensor tdk_v = bshd_view(c->packed ? ref_buf_ptr(&dqkv) : ref_buf_ptr(&dk), dt, dev, c, tk, c->sk, hkv, c->packed ? 1 : -1);
    fk_tensor tdv_v = bshd_view(c->packed ? ref_buf_ptr(&dqkv) : ref_buf_ptr(&dv), dt, dev, c, tk, c->sk, hkv, c->packed ? 2 : -1);
    fk_tensor to_v  = bshd_view(ref_buf_ptr(&o), dt, dev, c, tq, c->sq, hq, -1);
    fk_tensor tdo_v = bshd_view(ref_buf_ptr(&dO), dt, dev, c, tq, c->sq, hq, -1);
    fk_tensor tl_v  = c->nvar ? fk_tensor_make(ref_buf_ptr(&lse), sdt, dev, 2, (int64_t[]){hq, tq})
                              : fk_tensor_make(ref_buf_ptr(&lse), sdt, dev, 3, (int64_t[]){B, hq, c->sq});
    // Host twins of the views (same strides, host data) for reading back.
#define HOST_OF(view, bufp) ((void *)((char *)(bufp)->host + ((char *)(view).data - (char *)ref_buf_ptr(bufp))))

    // Inputs: random, never zeros; the reference sees the rounded values.
    if (c->packed) fk_fill_normal(qkv.host, dt, 3 * nq, 1.0, &rng, NULL);
    else {
        fk_fill_normal(q.host, dt, nq, 1.0, &rng, NULL);
        fk_fill_normal(k.host, dt, nk, 1.0, &rng, NULL);
        fk_fill_normal(v.host, dt, nk, 1.0, &rng, NULL);
    }
    fk_fill_normal(dO.host, dt, nq, 1.0, &rng, NULL);
    (void)qbase;
    double *rq = dalloc(nq), *rk = dalloc(nk), *rv = dalloc(nk), *rdo = dalloc(nq);
    {
        fk_tensor hq_v = tq_v, hk_v = tk_v, hv_v = tv_v, hdo_v = tdo_v;
        ref_view_read(&hq_v, HOST_OF(tq_v, c->packed ? &qkv : &q), rq);
        ref_view_read(&hk_v, HOST_OF(tk_v, c->packed ? &qkv : &k), rk);
        ref_view_read(&hv_v, HOST_OF(tv_v, c->packed ? &qkv : &v), rv);
        ref_view_read(&hdo_v, dO.host, rdo);
    }
    int32_t *cq = (int32_t *)cuq.host, *ck = (int32_t *)cuk.host;
    cq[0] = ck[0] = 0;
    for (int64_t b = 0; b < B; b++) {
        cq[b + 1] = cq[b] + (int32_t)lq[b];
        ck[b + 1] = ck[b] + (int32_t)lk[b];
    }
    float  *slopes = (float *)al.host;
    double  rslopes[256];
    int64_t nslopes = c->alibi == 2 ? B * hq : hq;
    for (int64_t x = 0; x < nslopes; x++) {
        slopes[x]  = (float)(pow(2.0, -8.0 * (double)(x % hq + 1) / (double)hq) * (1.0 + 0.5 * fk_rng_uniform(&rng)));
        rslopes[x] = slopes[x];
    }

    ref_attn_cfg cfg = {B, hq, hkv, d, lq, lk, 0, c->softcap, c->causal, c->wl, c->wr,
                        c->alibi ? rslopes : NULL, c->alibi == 2 ? hq : 0};
    cfg.scale        = c->scale != 0.0f ? (double)c->scale : (double)(float)(1.0 / sqrt((double)d));
    const bool lowp  = dt == FK_DTYPE_F16 || dt == FK_DTYPE_BF16;
    double    *ro = dalloc(nq), *rl = dalloc(nl), *no = lowp ? dalloc(nq) : NULL, *nlse = lowp ? dalloc(nl) : NULL;
    ref_attn_fwd(FK_DTYPE_F64, &cfg, rq, rk, rv, ro, rl);
    if (lowp) ref_attn_fwd(dt, &cfg, rq, rk, rv, no, nlse);
    // The reference LSE is [hq, total_q]; the fixed-length operand is [B, hq, S].
    double *rl_k = dalloc(nl);
    for (int64_t b = 0, q0 = 0; b < B; q0 += lq[b], b++)
        for (int64_t h = 0; h < hq; h++)
            for (int64_t i = 0; i < lq[b]; i++)
                rl_k[c->nvar ? h * tq + q0 + i : (b * hq + h) * c->sq + i] = rl[h * tq + q0 + i];

    fk_attn_args a;
    fk_attn_args_init(&a);
    a.q = tq_v, a.k = tk_v, a.v = tv_v, a.o = to_v, a.lse = tl_v;
    a.do_ = tdo_v, a.dq = tdq_v, a.dk = tdk_v, a.dv = tdv_v;
    if (c->nvar) {
        a.cu_seqlens_q = fk_tensor_make(ref_buf_ptr(&cuq), FK_DTYPE_INT32, dev, 1, (int64_t[]){B + 1});
        a.cu_seqlens_k = fk_tensor_make(ref_buf_ptr(&cuk), FK_DTYPE_INT32, dev, 1, (int64_t[]){B + 1});
        a.max_seqlen_q = maxq;
        a.max_seqlen_k = maxk;
    }
    if (c->alibi == 1) a.alibi_slopes = fk_tensor_make(ref_buf_ptr(&al), FK_DTYPE_F32, dev, 1, (int64_t[]){hq});
    if (c->alibi == 2) a.alibi_slopes = fk_tensor_make(ref_buf_ptr(&al), FK_DTYPE_F32, dev, 2, (int64_t[]){B, hq});
    a.softmax_scale = c->scale;
    a.softcap       = c->softcap;
    a.causal        = c->causal;
    a.window_left   = c->wl;
    a.window_right  = c->wr;

    size_t wsb = 0;
    void  *ws  = NULL;
    fk_poison(o.host, dt, nq);
    fk_poison(lse.host, sdt, nl);
    ok = (!c->packed || ref_buf_upload(&qkv)) && (c->packed || (ref_buf_upload(&q) && ref_buf_upload(&k) && ref_buf_upload(&v))) &&
         ref_buf_upload(&o) && ref_buf_upload(&lse) && ref_buf_upload(&dO) && ref_buf_upload(&cuq) &&
         ref_buf_upload(&cuk) && ref_buf_upload(&al);
    if (!ok) {
        fk_test_fail(sigf, "upload failed");
        goto done;
    }

    // --- forward ---
    if (!status_ok(fk_attn_fwd_workspace_size(be->ctx, &a, &wsb), want_f ? sigf : sigb)) goto done;
    ws = gpu ? fk_test_dev_alloc(wsb) : malloc(wsb ? wsb : 1);
    if (!status_ok(fk_attn_fwd(be->ctx, &a, ws, wsb, NULL), want_f ? sigf : sigb)) goto done;
    if (gpu) fk_test_dev_sync();
    ref_buf_download(&o);
    ref_buf_download(&lse);
    if (want_f) {
        char        d1[300], d2[300], detail[700];
        fk_tensor   ho = to_v, hl = tl_v;
        ho.data = o.host;
        hl.data = lse.host;
        bool okf = ref_verdict(&ho, o.host, ro, no, d1, sizeof d1);
        bool okl = ref_verdict(&hl, lse.host, rl_k, NULL, d2, sizeof d2);
        snprintf(detail, sizeof detail, "o: %s | lse: %s", d1, d2);
        fk_test_check(okf && okl, sigf, detail);
    }

    // --- backward, from the kernel's own o and lse ---
    if (want_b) {
        double *rdq = dalloc(nq), *rdk = dalloc(nk), *rdv = dalloc(nk);
        double *ndq = lowp ? dalloc(nq) : NULL, *ndk = lowp ? dalloc(nk) : NULL, *ndv = lowp ? dalloc(nk) : NULL;
        ref_attn_bwd(FK_DTYPE_F64, &cfg, rq, rk, rv, rdo, rdq, rdk, rdv);
        if (lowp) ref_attn_bwd(dt, &cfg, rq, rk, rv, rdo, ndq, ndk, ndv);
        if (c->packed) {
            fk_poison(dqkv.host, dt, 3 * nq);
            ok = ref_buf_upload(&dqkv);
        } else {
            fk_poison(dq.host, dt, nq);
            fk_poison(dk.host, dt, nk);
            fk_poison(dv.host, dt, nk);
            ok = ref_buf_upload(&dq) && ref_buf_upload(&dk) && ref_buf_upload(&dv);
        }
        size_t wsb2 = 0;
        void  *ws2  = NULL;
        if (ok && status_ok(fk_attn_bwd_workspace_size(be->ctx, &a, &wsb2), sigb)) {
            ws2 = gpu ? fk_test_dev_alloc(wsb2) : malloc(wsb2 ? wsb2 : 1);
            if (status_ok(fk_attn_bwd(be->ctx, &a, ws2, wsb2, NULL), sigb)) {
                if (gpu) fk_test_dev_sync();
                if (c->packed) ref_buf_download(&dqkv);
                else {
                    ref_buf_download(&dq);
                    ref_buf_download(&dk);
                    ref_buf_download(&dv);
                }
                char      d1[300], d2[300], d3[300], detail[1000];
                fk_tensor hdq = tdq_v, hdk = tdk_v, hdv = tdv_v;
                hdq.data = HOST_OF(tdq_v, c->packed ? &dqkv : &dq);
                hdk.data = HOST_OF(tdk_v, c->packed ? &dqkv : &dk);
                hdv.data = HOST_OF(tdv_v, c->packed ? &dqkv : &dv);
                bool g1 = ref_verdict(&hdq, hdq.data, rdq, ndq, d1, sizeof d1);
                bool g2 = ref_verdict(&hdk, hdk.data, rdk, ndk, d2, sizeof d2);
                bool g3 = ref_verdict(&hdv, hdv.data, rdv, ndv, d3, sizeof d3);
                snprintf(detail, sizeof detail, "dq: %s | dk: %s | dv: %s", d1, d2, d3);
                fk_test_check(g1 && g2 && g3, sigb, detail);
                if (gpu) check_deterministic(be, &a, c, args, c->packed ? &dqkv : &dq, c->packed ? NULL : &dk,
                                             c->packed ? NULL : &dv, tdq_v, tdk_v, tdv_v, rdq, rdk, rdv, ndq, ndk, ndv);
            }
        } else if (!ok) fk_test_fail(sigb, "upload failed");
        if (gpu) fk_test_dev_free(ws2);
        else free(ws2);
        free(rdq), free(rdk), free(rdv), free(ndq), free(ndk), free(ndv);
    }

done:
    if (gpu) fk_test_dev_free(ws);
    else free(ws);
    free(rq), free(rk), free(rv), free(rdo), free(ro), free(rl), free(no), free(nlse), free(rl_k);
    if (c->packed) {
        ref_buf_free(&qkv);
        ref_buf_free(&dqkv);
    } else {
        ref_buf_free(&q), ref_buf_free(&k), ref_buf_free(&v), ref_buf_free(&dq), ref_buf_free(&dk), ref_buf_free(&dv);
    }
    ref_buf_free(&o), ref_buf_free(&lse), ref_buf_free(&dO), ref_buf_free(&cuq), ref_buf_free(&cuk), ref_buf_free(&al);
#undef HOST_OF
}

// --- the case list ---------------------------------------------------------------------------------------

#define FIXED(B, SQ, SK, HQ, HKV, D) .batch = (B), .sq = (SQ), .sk = (SK), .hq = (HQ), .hkv = (HKV), .d = (D)

static int build_cases(attn_case *cs) {
    int n = 0;
    // Head dims (every bucket and odd sizes), causal on every other one.
    static const int64_t dims[] = {32, 40, 59, 64, 80, 96, 111, 128, 160, 192, 256};
    for (int i = 0; i < 11; i++)
        cs[n++] = (attn_case){FIXED(1, 113, 113, 2, 1, dims[i]), .causal = i & 1, .bwd = 1, .simd = dims[i] == 40 || dims[i] == 111};
    // Sequence lengths, equal and unequal both ways.
    // With a single key per sequence (sk = 1) dQ and dK are exactly zero, and what a kernel returns is the
    // rounding of P (dP - Di) with Di = rowsum(dO * O): a relative error to zero means nothing, so those run
    // forward only, and sk = 2 covers the backward of a tiny key side.
    static const int64_t lens[][2] = {{1, 1}, {17, 17}, {203, 203}, {17, 203}, {203, 17}, {1, 1000}, {1000, 1}, {1000, 2}};
    for (int i = 0; i < 8; i++) {
        int bwd = lens[i][1] > 1;
        cs[n++] = (attn_case){FIXED(2, lens[i][0], lens[i][1], 2, 1, 64), .bwd = bwd};
        cs[n++] = (attn_case){FIXED(1, lens[i][0], lens[i][1], 2, 2, 48), .causal = 1, .bwd = bwd};
    }
    cs[n++] = (attn_case){FIXED(1, 1000, 1000, 1, 1, 64), .causal = 1, .bwd = 1};
    // D = 256 kernel choice on sm_90 (attn_fwd.cu use_d256_wide; fp16/bf16, aligned, no softcap/ALiBi): the wide
    // 128x64 kernel without a window and for causal at seqlen_k >= 4096, 64x64 for causal below. Forward only
    // (the backward has no such choice); several query blocks, row and key tails. The long one on CUDA only (on
    // the CPU it would add ~12 s, mostly the fp16/bf16 reference).
    cs[n++] = (attn_case){FIXED(1, 130, 4100, 2, 1, 256), .causal = 1, .cuda_only = 1};
    cs[n++] = (attn_case){FIXED(1, 300, 333, 2, 1, 256)};
    cs[n++] = (attn_case){FIXED(1, 300, 333, 2, 1, 256), .causal = 1};
    // D = 128 over several query blocks and key tiles, both tails (the Hopper forward's warpgroup ping-pong hands
    // its turns from tile to tile: attn_fwd_wgmma.cuh, PP 1), and a few query rows over many key tiles with GQA.
    cs[n++] = (attn_case){FIXED(1, 300, 333, 2, 1, 128)};
    cs[n++] = (attn_case){FIXED(1, 300, 333, 2, 1, 128), .causal = 1};
    cs[n++] = (attn_case){FIXED(2, 17, 1000, 4, 1, 128)};
    // GQA ratios 1, 2, 4 and MQA.
    cs[n++] = (attn_case){FIXED(1, 113, 203, 4, 4, 64), .causal = 1, .bwd = 1};
    cs[n++] = (attn_case){FIXED(1, 113, 203, 4, 2, 64), .causal = 1, .bwd = 1};
    cs[n++] = (attn_case){FIXED(2, 113, 203, 8, 2, 64), .bwd = 1};
    cs[n++] = (attn_case){FIXED(1, 203, 113, 4, 1, 80), .causal = 1, .bwd = 1, .simd = 1};
    // Windows: left only, right only, both; sliding window with causal; rows that see no key (sq > sk causal,
    // and a window that leaves the first rows empty).
    cs[n++] = (attn_case){FIXED(1, 203, 203, 2, 1, 64), .win = 1, .wl = 32, .wr = -1, .bwd = 1};
    cs[n++] = (attn_case){FIXED(1, 203, 150, 2, 1, 64), .win = 1, .wl = -1, .wr = 16, .bwd = 1};
    cs[n++] = (attn_case){FIXED(1, 113, 203, 2, 2, 40), .win = 1, .wl = 20, .wr = 7, .bwd = 1, .simd = 1};
    cs[n++] = (attn_case){FIXED(1, 203, 203, 2, 1, 64), .causal = 1, .win = 1, .wl = 50, .wr = 3, .bwd = 1};
    cs[n++] = (attn_case){FIXED(1, 203, 17, 2, 1, 64), .causal = 1, .bwd = 1, .simd = 1};
    cs[n++] = (attn_case){FIXED(1, 113, 17, 2, 1, 32), .win = 1, .wl = 3, .wr = 0, .bwd = 1};
    // Softcap (scale 0.5 so the cap bites), ALiBi per head and per batch-head.
    cs[n++] = (attn_case){FIXED(1, 113, 203, 4, 2, 64), .softcap = 2.0f, .scale = 0.5f, .causal = 1, .bwd = 1, .simd = 1};
    cs[n++] = (attn_case){FIXED(1, 113, 113, 4, 2, 59), .alibi = 1, .causal = 1, .bwd = 1};
    cs[n++] = (attn_case){FIXED(2, 113, 203, 4, 1, 64), .alibi = 2, .bwd = 1, .simd = 1};
    // Varlen: uneven, with an empty query sequence, an empty key sequence, and a single token.
    cs[n++] = (attn_case){FIXED(0, 0, 0, 4, 2, 64), .nvar = 5, .lq = {17, 0, 130, 1, 64}, .lk = {40, 9, 130, 1, 0}, .bwd = 1, .simd = 1};
    cs[n++] = (attn_case){FIXED(0, 0, 0, 4, 1, 111), .nvar = 4, .lq = {100, 3, 70, 1}, .lk = {50, 30, 140, 1},
                          .causal = 1, .bwd = 1};
    // Packed qkv views.
    cs[n++] = (attn_case){FIXED(2, 113, 113, 4, 4, 64), .packed = 1, .causal = 1, .bwd = 1};
    // Everything at once.
    cs[n++] = (attn_case){FIXED(0, 0, 0, 4, 2, 96), .nvar = 3, .lq = {90, 150, 7}, .lk = {120, 150, 30}, .causal = 1,
                          .win = 1, .wl = 64, .wr = -1, .softcap = 3.0f, .alibi = 2, .scale = 0.3f, .bwd = 1, .simd = 1};
    // The D = 256 bucket (on sm_90 its own head-dim-split kernel, 64-row query blocks): head dims below the bucket
    // (200, 192), causal and not, seqlen_q != seqlen_k both ways, GQA; the CUDA backward also runs deterministic.
    cs[n++] = (attn_case){FIXED(1, 77, 203, 4, 2, 200), .causal = 1, .bwd = 1};
    cs[n++] = (attn_case){FIXED(1, 203, 77, 2, 2, 192), .causal = 1, .bwd = 1};
    cs[n++] = (attn_case){FIXED(2, 130, 90, 4, 1, 256), .causal = 1, .bwd = 1};
    cs[n++] = (attn_case){FIXED(1, 90, 150, 2, 1, 200), .bwd = 1};
    return n;
}

// --- determinism across thread counts ------------------------------------------------------------------

static void check_thread_determinism(fk_context_t c1, fk_context_t c2) {
    const char *sig = "ATTN_BWD(backend=cpu,dtype=f32,determinism threads 1 vs 2,d=64,sq=150,sk=150,hq=4,hkv=2,causal=1)";
    if (!fk_test_selected(sig, FK_DEVICE_CPU)) return;
    const int64_t B = 2, S = 150, HQ = 4, HK = 2, D = 64, nq = B * S * HQ * D, nk = B * S * HK * D;
    fk_device     dev = {FK_DEVICE_CPU, 0};
    fk_rng        rng;
    fk_rng_seed(&rng, 77);
    float *q = malloc((size_t)nq * 4), *k = malloc((size_t)nk * 4), *v = malloc((size_t)nk * 4), *o = malloc((size_t)nq * 4);
    float *dO = malloc((size_t)nq * 4), *lse = malloc((size_t)(B * HQ * S) * 4);
    float *g[2][3];
    fk_fill_normal(q, FK_DTYPE_F32, nq, 1.0, &rng, NULL);
    fk_fill_normal(k, FK_DTYPE_F32, nk, 1.0, &rng, NULL);
    fk_fill_normal(v, FK_DTYPE_F32, nk, 1.0, &rng, NULL);
    fk_fill_normal(dO, FK_DTYPE_F32, nq, 1.0, &rng, NULL);
    fk_attn_args a;
    fk_attn_args_init(&a);
    a.q      = fk_tensor_make(q, FK_DTYPE_F32, dev, 4, (int64_t[]){B, S, HQ, D});
    a.k      = fk_tensor_make(k, FK_DTYPE_F32, dev, 4, (int64_t[]){B, S, HK, D});
    a.v      = fk_tensor_make(v, FK_DTYPE_F32, dev, 4, (int64_t[]){B, S, HK, D});
    a.o      = fk_tensor_make(o, FK_DTYPE_F32, dev, 4, (int64_t[]){B, S, HQ, D});
    a.do_    = fk_tensor_make(dO, FK_DTYPE_F32, dev, 4, (int64_t[]){B, S, HQ, D});
    a.lse    = fk_tensor_make(lse, FK_DTYPE_F32, dev, 3, (int64_t[]){B, HQ, S});
    a.causal = 1;
    bool ok = true;
    for (int r = 0; r < 2; r++) {
        fk_context_t ctx = r ? c2 : c1;
        g[r][0] = malloc((size_t)nq * 4), g[r][1] = malloc((size_t)nk * 4), g[r][2] = malloc((size_t)nk * 4);
        a.dq = fk_tensor_make(g[r][0], FK_DTYPE_F32, dev, 4, (int64_t[]){B, S, HQ, D});
        a.dk = fk_tensor_make(g[r][1], FK_DTYPE_F32, dev, 4, (int64_t[]){B, S, HK, D});
        a.dv = fk_tensor_make(g[r][2], FK_DTYPE_F32, dev, 4, (int64_t[]){B, S, HK, D});
        size_t w1 = 0, w2 = 0;
        ok = ok && fk_attn_fwd_workspace_size(ctx, &a, &w1) == FK_STATUS_SUCCESS &&
             fk_attn_bwd_workspace_size(ctx, &a, &w2) == FK_STATUS_SUCCESS;
        void *ws = malloc((w1 > w2 ? w1 : w2) + 1);
        ok = ok && fk_attn_fwd(ctx, &a, ws, w1, NULL) == FK_STATUS_SUCCESS &&
             fk_attn_bwd(ctx, &a, ws, w2, NULL) == FK_STATUS_SUCCESS;
        free(ws);
    }
    ok = ok && !memcmp(g[0][0], g[1][0], (size_t)nq * 4) && !memcmp(g[0][1], g[1][1], (size_t)nk * 4) &&
         !memcmp(g[0][2], g[1][2], (size_t)nk * 4);
    fk_test_check(ok, sig, ok ? "bit-identical" : "results differ between 1 and 2 threads");
    for (int r = 0; r < 2; r++)
        for (int x = 0; x < 3; x++) free(g[r][x]);
    free(q), free(k), free(v), free(o), free(dO), free(lse);
}

// --- the reference backward against central differences of the reference forward ------------------------

static double ref_loss(const ref_attn_cfg *c, const double *q, const double *k, const double *v, const double *w,
                       int64_t nq, int64_t nl) {
    double *o = dalloc(nq), *l = dalloc(nl), s = 0;
    ref_attn_fwd(FK_DTYPE_F64, c, q, k, v, o, l);
    for (int64_t x = 0; x < nq; x++) s += o[x] * w[x];
    free(o), free(l);
    return s;
}

static void check_ref_gradients(int variant) {
    char sig[200];
    snprintf(sig, sizeof sig, "REF_ATTN_FD(variant=%d)", variant);
    if (!fk_test_selected(sig, FK_DEVICE_CPU)) return;
    int64_t      lq[2] = {3, 4}, lk[2] = {4, 3};
    double       slopes[4] = {0.3, 0.7, 0.2, 0.5};
    ref_attn_cfg c = {2, 2, variant ? 2 : 1, 5, lq, lk, 0.6, variant ? 0.0 : 1.5, variant, variant ? -1 : 2,
                      variant ? -1 : 1, slopes, variant ? 2 : 0};
    const int64_t tq = 7, tk = 7, nq = tq * c.hq * c.d, nk = tk * c.hkv * c.d, nl = tq * c.hq;
    fk_rng        rng;
    fk_rng_seed(&rng, 1234 + (uint64_t)variant);
    double *q = dalloc(nq), *k = dalloc(nk), *v = dalloc(nk), *w = dalloc(nq);
    double *dq = dalloc(nq), *dk = dalloc(nk), *dv = dalloc(nk);
    for (int64_t x = 0; x < nq; x++) q[x] = fk_rng_normal(&rng), w[x] = fk_rng_normal(&rng);
    for (int64_t x = 0; x < nk; x++) k[x] = fk_rng_normal(&rng), v[x] = fk_rng_normal(&rng);
    ref_attn_bwd(FK_DTYPE_F64, &c, q, k, v, w, dq, dk, dv);
    double  worst = 0, h = 1e-6;
    double *ops[3] = {q, k, v}, *grads[3] = {dq, dk, dv};
    int64_t ns[3] = {nq, nk, nk};
    for (int t = 0; t < 3; t++)
        for (int64_t x = 0; x < ns[t]; x++) {
            double save = ops[t][x];
            ops[t][x]   = save + h;
            double lp   = ref_loss(&c, q, k, v, w, nq, nl);
            ops[t][x]   = save - h;
            double lm   = ref_loss(&c, q, k, v, w, nq, nl);
            ops[t][x]   = save;
            double fd = (lp - lm) / (2 * h), err = fabs(fd - grads[t][x]) / (1.0 + fabs(fd));
            worst     = err > worst ? err : worst;
        }
    char detail[120];
    snprintf(detail, sizeof detail, "max relative error %.3g (tol 1e-6)", worst);
    fk_test_check(worst <= 1e-6, sig, detail);
    free(q), free(k), free(v), free(w), free(dq), free(dk), free(dv);
}

// --- bad inputs: one negative test per rule ------------------------------------------------------------

typedef struct neg_env {
    float  q[2 * 8 * 4 * 16], k[2 * 8 * 2 * 16], v[2 * 8 * 2 * 16], o[2 * 8 * 4 * 16], lse[2 * 4 * 8];
    float  dO[2 * 8 * 4 * 16], dq[2 * 8 * 4 * 16], dk[2 * 8 * 2 * 16], dv[2 * 8 * 2 * 16], alibi[2 * 4];
    int32_t cu[3], cu2[3];
    int64_t cu64[3];
    double  lse64[2 * 4 * 8];
    char    ws[1 << 20];
} neg_env;

static fk_attn_args neg_base(neg_env *e) {
    fk_device dev = {FK_DEVICE_CPU, 0};
    fk_attn_args a;
    fk_attn_args_init(&a);
    a.q   = fk_tensor_make(e->q, FK_DTYPE_F32, dev, 4, (int64_t[]){2, 8, 4, 16});
    a.k   = fk_tensor_make(e->k, FK_DTYPE_F32, dev, 4, (int64_t[]){2, 8, 2, 16});
    a.v   = fk_tensor_make(e->v, FK_DTYPE_F32, dev, 4, (int64_t[]){2, 8, 2, 16});
    a.o   = fk_tensor_make(e->o, FK_DTYPE_F32, dev, 4, (int64_t[]){2, 8, 4, 16});
    a.lse = fk_tensor_make(e->lse, FK_DTYPE_F32, dev, 3, (int64_t[]){2, 4, 8});
    a.do_ = fk_tensor_make(e->dO, FK_DTYPE_F32, dev, 4, (int64_t[]){2, 8, 4, 16});
    a.dq  = fk_tensor_make(e->dq, FK_DTYPE_F32, dev, 4, (int64_t[]){2, 8, 4, 16});
    a.dk  = fk_tensor_make(e->dk, FK_DTYPE_F32, dev, 4, (int64_t[]){2, 8, 2, 16});
    a.dv  = fk_tensor_make(e->dv, FK_DTYPE_F32, dev, 4, (int64_t[]){2, 8, 2, 16});
    return a;
}

// Varlen form of the base: q/o/do/dq [16, 4, 16], k/v/dk/dv [16, 2, 16], lse [4, 16], two sequences of 8.
static fk_attn_args neg_varlen(neg_env *e) {
    fk_device    dev = {FK_DEVICE_CPU, 0};
    fk_attn_args a   = neg_base(e);
    fk_tensor   *qs[] = {&a.q, &a.o, &a.do_, &a.dq}, *ks[] = {&a.k, &a.v, &a.dk, &a.dv};
    for (int i = 0; i < 4; i++) *qs[i] = fk_tensor_make(qs[i]->data, FK_DTYPE_F32, dev, 3, (int64_t[]){16, 4, 16});
    for (int i = 0; i < 4; i++) *ks[i] = fk_tensor_make(ks[i]->data, FK_DTYPE_F32, dev, 3, (int64_t[]){16, 2, 16});
    a.lse  = fk_tensor_make(e->lse, FK_DTYPE_F32, dev, 2, (int64_t[]){4, 16});
    e->cu[0] = e->cu2[0] = 0, e->cu[1] = e->cu2[1] = 8, e->cu[2] = e->cu2[2] = 16;
    a.cu_seqlens_q = fk_tensor_make(e->cu, FK_DTYPE_INT32, dev, 1, (int64_t[]){3});
    a.cu_seqlens_k = fk_tensor_make(e->cu2, FK_DTYPE_INT32, dev, 1, (int64_t[]){3});
    a.max_seqlen_q = a.max_seqlen_k = 8;
    return a;
}

// Runs fwd and/or bwd (and their size queries) on `a` and expects `want` with a non-empty message.
static void expect(fk_context_t ctx, const char *rule, const fk_attn_args *a, fk_status want, int fwd, int bwd,
                   neg_env *e) {
    for (int pass = 0; pass < 2; pass++) {
        if ((pass == 0 && !fwd) || (pass == 1 && !bwd)) continue;
        char sig[300];
        snprintf(sig, sizeof sig, "ATTN_%s_BAD(backend=cpu,%s)", pass ? "BWD" : "FWD", rule);
        if (!fk_test_selected(sig, FK_DEVICE_CPU)) continue;
        size_t    bytes = 0;
        fk_status s1    = pass ? fk_attn_bwd_workspace_size(ctx, a, &bytes) : fk_attn_fwd_workspace_size(ctx, a, &bytes);
        bool      m1    = fk_last_error_message()[0] != 0;
        fk_status s2    = pass ? fk_attn_bwd(ctx, a, e->ws, sizeof e->ws, NULL) : fk_attn_fwd(ctx, a, e->ws, sizeof e->ws, NULL);
        bool      m2    = fk_last_error_message()[0] != 0;
        fk_test_expect_status(sig, want, s1, m1, s2, m2);
    }
}

static void run_negative(fk_context_t ctx) {
    neg_env *e = calloc(1, sizeof *e);
    fk_attn_args a;
    fk_device    cuda0 = {FK_DEVICE_CUDA, 0};
    // Sanity: the base itself is valid (both passes).
    {
        fk_attn_args b = neg_base(e);
        fk_test_check(fk_attn_fwd(ctx, &b, e->ws, sizeof e->ws, NULL) == FK_STATUS_SUCCESS &&
                          fk_attn_bwd(ctx, &b, e->ws, sizeof e->ws, NULL) == FK_STATUS_SUCCESS &&
                          fk_last_error_message()[0] == 0,
                      "ATTN_BAD(backend=cpu,base case is valid)", fk_last_error_message());
        b = neg_varlen(e);
        fk_test_check(fk_attn_fwd(ctx, &b, e->ws, sizeof e->ws, NULL) == FK_STATUS_SUCCESS &&
                          fk_attn_bwd(ctx, &b, e->ws, sizeof e->ws, NULL) == FK_STATUS_SUCCESS,
                      "ATTN_BAD(backend=cpu,varlen base case is valid)", fk_last_error_message());
    }
    {   // NULL context and args
        a = neg_base(e);
        expect(NULL, "ctx NULL", &a, FK_STATUS_BAD_PARAM_NULL_POINTER, 1, 1, e);
        expect(ctx, "args NULL", NULL, FK_STATUS_BAD_PARAM_NULL_POINTER, 1, 1, e);
        size_t *nullbytes = NULL;
        fk_test_check(fk_attn_fwd_workspace_size(ctx, &a, nullbytes) == FK_STATUS_BAD_PARAM_NULL_POINTER &&
                          fk_last_error_message()[0],
                      "ATTN_FWD_BAD(backend=cpu,bytes NULL)", fk_last_error_message());
    }
#define CASE(rule, mut, want, fwd, bwd) \
    do {                                \
        a = neg_base(e);                \
        mut;                            \
        expect(ctx, rule, &a, want, fwd, bwd, e); \
    } while (0)
#define VCASE(rule, mut, want, fwd, bwd) \
    do {                                 \
        a = neg_varlen(e);               \
        mut;                             \
        expect(ctx, rule, &a, want, fwd, bwd, e); \
    } while (0)
    // Required data.
    CASE("q.data NULL", a.q.data = NULL, FK_STATUS_BAD_PARAM_NULL_POINTER, 1, 1);
    CASE("k.data NULL", a.k.data = NULL, FK_STATUS_BAD_PARAM_NULL_POINTER, 1, 1);
    CASE("v.data NULL", a.v.data = NULL, FK_STATUS_BAD_PARAM_NULL_POINTER, 1, 1);
    CASE("o.data NULL", a.o.data = NULL, FK_STATUS_BAD_PARAM_NULL_POINTER, 1, 1);
    CASE("lse.data NULL in bwd", a.lse.data = NULL, FK_STATUS_BAD_PARAM_NULL_POINTER, 0, 1);
    CASE("do_.data NULL", a.do_.data = NULL, FK_STATUS_BAD_PARAM_NULL_POINTER, 0, 1);
    CASE("dq.data NULL", a.dq.data = NULL, FK_STATUS_BAD_PARAM_NULL_POINTER, 0, 1);
    CASE("dk.data NULL", a.dk.data = NULL, FK_STATUS_BAD_PARAM_NULL_POINTER, 0, 1);
    CASE("dv.data NULL", a.dv.data = NULL, FK_STATUS_BAD_PARAM_NULL_POINTER, 0, 1);
    // ndim.
    CASE("q.ndim 3 fixed", a.q.ndim = 3, FK_STATUS_BAD_PARAM_NDIM, 1, 1);
    CASE("v.ndim 2", a.v.ndim = 2, FK_STATUS_BAD_PARAM_NDIM, 1, 1);
    CASE("lse.ndim 2 fixed", a.lse.ndim = 2, FK_STATUS_BAD_PARAM_NDIM, 1, 1);
    VCASE("q.ndim 4 varlen", a.q.ndim = 4, FK_STATUS_BAD_PARAM_NDIM, 1, 1);
    VCASE("lse.ndim 3 varlen", a.lse.ndim = 3, FK_STATUS_BAD_PARAM_NDIM, 1, 1);
    // Extents.
    CASE("k head_dim differs", a.k.shape[3] = 8, FK_STATUS_BAD_PARAM_SHAPE, 1, 1);
    CASE("v seqlen differs from k", a.v.shape[1] = 4, FK_STATUS_BAD_PARAM_SHAPE, 1, 1);
    CASE("k batch differs", a.k.shape[0] = 1, FK_STATUS_BAD_PARAM_SHAPE, 1, 1);
    CASE("o heads differ", a.o.shape[2] = 2, FK_STATUS_BAD_PARAM_SHAPE, 1, 1);
    CASE("lse seqlen differs", a.lse.shape[2] = 4, FK_STATUS_BAD_PARAM_SHAPE, 1, 1);
    CASE("do_ seqlen differs", a.do_.shape[1] = 4, FK_STATUS_BAD_PARAM_SHAPE, 0, 1);
    CASE("dq head_dim differs", a.dq.shape[3] = 8, FK_STATUS_BAD_PARAM_SHAPE, 0, 1);
    CASE("dk heads differ", a.dk.shape[2] = 4, FK_STATUS_BAD_PARAM_SHAPE, 0, 1);
    CASE("dv seqlen differs", a.dv.shape[1] = 4, FK_STATUS_BAD_PARAM_SHAPE, 0, 1);
    CASE("q extent 0", a.q.shape[1] = 0, FK_STATUS_BAD_PARAM_SHAPE, 1, 1);
    // Strides.
    CASE("q inner stride 2", a.q.stride[3] = 2, FK_STATUS_BAD_PARAM_STRIDE, 1, 1);
    CASE("k negative stride", a.k.stride[1] = -32, FK_STATUS_BAD_PARAM_STRIDE, 1, 1);
    CASE("dv inner stride 0", a.dv.stride[3] = 0, FK_STATUS_BAD_PARAM_STRIDE, 0, 1);
    // Dtypes.
    CASE("k f16 vs q f32", a.k.dtype = FK_DTYPE_F16, FK_STATUS_BAD_PARAM_DTYPE_MISMATCH, 1, 1);
    CASE("o bf16 vs q f32", a.o.dtype = FK_DTYPE_BF16, FK_STATUS_BAD_PARAM_DTYPE_MISMATCH, 1, 1);
    CASE("dq f16 vs q f32", a.dq.dtype = FK_DTYPE_F16, FK_STATUS_BAD_PARAM_DTYPE_MISMATCH, 0, 1);
    CASE("do_ f16 vs q f32", a.do_.dtype = FK_DTYPE_F16, FK_STATUS_BAD_PARAM_DTYPE_MISMATCH, 0, 1);
    CASE("lse f16", a.lse.dtype = FK_DTYPE_F16, FK_STATUS_BAD_PARAM_DTYPE_MISMATCH, 1, 1);
    CASE("lse f32 with q f64",
         (a.q.dtype = a.k.dtype = a.v.dtype = a.o.dtype = a.do_.dtype = a.dq.dtype = a.dk.dtype = a.dv.dtype =
              FK_DTYPE_F64),
         FK_STATUS_BAD_PARAM_DTYPE_MISMATCH, 1, 1);
    CASE("lse f64 with q f32", (a.lse.data = e->lse64, a.lse.dtype = FK_DTYPE_F64), FK_STATUS_BAD_PARAM_DTYPE_MISMATCH, 1, 1);
    CASE("q i32", (a.q.dtype = a.k.dtype = a.v.dtype = a.o.dtype = FK_DTYPE_INT32), FK_STATUS_NOT_SUPPORTED_DTYPE, 1, 0);
    // Devices.
    CASE("q on cuda, ctx on cpu", a.q.device = cuda0, FK_STATUS_BAD_PARAM_DEVICE_MISMATCH, 1, 1);
    CASE("dk on cuda, ctx on cpu", a.dk.device = cuda0, FK_STATUS_BAD_PARAM_DEVICE_MISMATCH, 0, 1);
    // Heads and head dim.
    CASE("nheads_q 3 vs nheads_kv 2", (a.q.shape[2] = a.o.shape[2] = a.do_.shape[2] = a.dq.shape[2] = a.lse.shape[1] = 3),
         FK_STATUS_BAD_PARAM_HEADS, 1, 1);
    {
        static float big[2 * 300];
        CASE("head_dim 257",
             (a.q = fk_tensor_make(big, FK_DTYPE_F32, a.q.device, 4, (int64_t[]){1, 1, 1, 257}),
              a.k = a.v = a.o = a.do_ = a.dq = a.dk = a.dv = a.q,
              a.lse = fk_tensor_make(e->lse, FK_DTYPE_F32, a.q.device, 3, (int64_t[]){1, 1, 1})),
             FK_STATUS_NOT_SUPPORTED_HEAD_DIM, 1, 1);
    }
    // Scalars.
    CASE("softmax_scale -1", a.softmax_scale = -1.0f, FK_STATUS_BAD_PARAM_VALUE, 1, 1);
    CASE("softmax_scale NaN", a.softmax_scale = NAN, FK_STATUS_BAD_PARAM_VALUE, 1, 1);
    CASE("softcap -1", a.softcap = -1.0f, FK_STATUS_BAD_PARAM_VALUE, 1, 1);
    CASE("window_left -2", a.window_left = -2, FK_STATUS_BAD_PARAM_VALUE, 1, 1);
    CASE("window_right -5", a.window_right = -5, FK_STATUS_BAD_PARAM_VALUE, 1, 1);
    CASE("causal 2", a.causal = 2, FK_STATUS_BAD_PARAM_VALUE, 1, 1);
    // Varlen.
    VCASE("max_seqlen_q 0", a.max_seqlen_q = 0, FK_STATUS_BAD_PARAM_VALUE, 1, 1);
    VCASE("max_seqlen_k 0", a.max_seqlen_k = 0, FK_STATUS_BAD_PARAM_VALUE, 1, 1);
    VCASE("cu_seqlens_k missing", a.cu_seqlens_k = fk_tensor_none(), FK_STATUS_BAD_PARAM_NULL_POINTER, 1, 1);
    CASE("cu_seqlens_k without cu_seqlens_q",
         a.cu_seqlens_k = fk_tensor_make(e->cu2, FK_DTYPE_INT32, a.q.device, 1, (int64_t[]){3}),
         FK_STATUS_BAD_PARAM_VALUE, 1, 1);
    VCASE("cu_seqlens_q i64", (e->cu64[0] = 0, e->cu64[1] = 8, e->cu64[2] = 16, a.cu_seqlens_q.data = e->cu64,
                               a.cu_seqlens_q.dtype = FK_DTYPE_INT64),
          FK_STATUS_NOT_SUPPORTED_DTYPE, 1, 1);
    VCASE("cu_seqlens_q f32", a.cu_seqlens_q.dtype = FK_DTYPE_F32, FK_STATUS_NOT_SUPPORTED_DTYPE, 1, 1);
    VCASE("cu_seqlens_k shape differs", a.cu_seqlens_k.shape[0] = 2, FK_STATUS_BAD_PARAM_SHAPE, 1, 1);
    VCASE("cu_seqlens_q shape 1", (a.cu_seqlens_q.shape[0] = 1, a.cu_seqlens_k.shape[0] = 1), FK_STATUS_BAD_PARAM_SHAPE, 1, 1);
    VCASE("cu_seqlens_q ndim 2", a.cu_seqlens_q.ndim = 2, FK_STATUS_BAD_PARAM_NDIM, 1, 1);
    VCASE("cu_seqlens_q[0] 1", e->cu[0] = 1, FK_STATUS_BAD_PARAM_VALUE, 1, 1);
    VCASE("cu_seqlens_k decreasing", (e->cu2[1] = 12, e->cu2[2] = 10), FK_STATUS_BAD_PARAM_VALUE, 1, 1);
    VCASE("cu_seqlens_q beyond total", (e->cu[1] = 9, e->cu[2] = 17, a.max_seqlen_q = 9), FK_STATUS_BAD_PARAM_VALUE, 1, 1);
    VCASE("sequence longer than max_seqlen_k", a.max_seqlen_k = 7, FK_STATUS_BAD_PARAM_VALUE, 1, 1);
    // ALiBi.
    CASE("alibi f16", a.alibi_slopes = fk_tensor_make(e->alibi, FK_DTYPE_F16, a.q.device, 1, (int64_t[]){4}),
         FK_STATUS_NOT_SUPPORTED_DTYPE, 1, 1);
    CASE("alibi [Hq+1]", a.alibi_slopes = fk_tensor_make(e->alibi, FK_DTYPE_F32, a.q.device, 1, (int64_t[]){5}),
         FK_STATUS_BAD_PARAM_SHAPE, 1, 1);
    CASE("alibi [B+1, Hq]", a.alibi_slopes = fk_tensor_make(e->alibi, FK_DTYPE_F32, a.q.device, 2, (int64_t[]){1, 4}),
         FK_STATUS_BAD_PARAM_SHAPE, 1, 1);
    CASE("alibi ndim 3", a.alibi_slopes = fk_tensor_make(e->alibi, FK_DTYPE_F32, a.q.device, 3, (int64_t[]){2, 4, 1}),
         FK_STATUS_BAD_PARAM_NDIM, 1, 1);
    // Overflow: a span (fk_check_tensor) and a size product with broadcast (stride 0) extents.
    CASE("q span overflows", (a.q.shape[0] = (int64_t)1 << 40, a.q.stride[0] = (int64_t)1 << 40),
         FK_STATUS_BAD_PARAM_OVERFLOW, 1, 1);
    {   // Built field by field: fk_tensor_make would compute contiguous strides, which overflow here.
        const int64_t Bh = (int64_t)1 << 40, Sh = (int64_t)1 << 30;
        fk_tensor bq = a.q, bk = a.k;
        bq.shape[0] = Bh, bq.shape[1] = Sh, bq.shape[2] = 1, bq.shape[3] = 1;
        bq.stride[0] = bq.stride[1] = bq.stride[2] = 0, bq.stride[3] = 1;
        bk.shape[0] = Bh, bk.shape[1] = 1, bk.shape[2] = 1, bk.shape[3] = 1;
        bk.stride[0] = bk.stride[1] = bk.stride[2] = 0, bk.stride[3] = 1;
        CASE("batch x seqlen x heads x dim overflows",
             (bq.data = e->q, bk.data = e->k, a.q = a.o = a.do_ = a.dq = bq, a.k = a.v = a.dk = a.dv = bk,
              a.lse = fk_tensor_none()),
             FK_STATUS_BAD_PARAM_OVERFLOW, 1, 0);
    }
    // Workspace.
    {
        char sig1[] = "ATTN_FWD_BAD(backend=cpu,workspace NULL)", sig2[] = "ATTN_FWD_BAD(backend=cpu,workspace too small)";
        char sig3[] = "ATTN_BWD_BAD(backend=cpu,workspace NULL)", sig4[] = "ATTN_BWD_BAD(backend=cpu,workspace too small)";
        a = neg_base(e);
        size_t need = 0;
        fk_attn_fwd_workspace_size(ctx, &a, &need);
        fk_status s = fk_attn_fwd(ctx, &a, NULL, need, NULL);
        fk_test_check(need > 0 && s == FK_STATUS_BAD_PARAM_NULL_POINTER && fk_last_error_message()[0], sig1, fk_last_error_message());
        s = fk_attn_fwd(ctx, &a, e->ws, need - 1, NULL);
        fk_test_check(s == FK_STATUS_WORKSPACE_TOO_SMALL && fk_last_error_message()[0], sig2, fk_last_error_message());
        fk_attn_bwd_workspace_size(ctx, &a, &need);
        s = fk_attn_bwd(ctx, &a, NULL, need, NULL);
        fk_test_check(need > 0 && s == FK_STATUS_BAD_PARAM_NULL_POINTER && fk_last_error_message()[0], sig3, fk_last_error_message());
        s = fk_attn_bwd(ctx, &a, e->ws, need - 1, NULL);
        fk_test_check(s == FK_STATUS_WORKSPACE_TOO_SMALL && fk_last_error_message()[0], sig4, fk_last_error_message());
    }
#undef CASE
#undef VCASE
    free(e);
}

// CUDA: cu_seqlens stay on the device, so the host cannot check them. Offsets past the tensors and lengths past
// max_seqlen must still never make a kernel read or write out of bounds (compute-sanitizer memcheck runs this
// case too); a far offset without the bound would fault, and the sync below would report it.
static void check_cuda_bad_cu_seqlens(fk_context_t ctx) {
    const char *sig = "ATTN_BAD(backend=cuda,cu_seqlens past the tensors or past max_seqlen: no out-of-bounds access)";
    if (!fk_test_selected(sig, FK_DEVICE_CUDA)) return;
    const int64_t T = 64, HQ = 2, HK = 1, D = 64, nq = T * HQ * D, nk = T * HK * D;
    const fk_device dev = {FK_DEVICE_CUDA, 0};
    uint16_t       *h = malloc((size_t)nq * 2);
    fk_rng          rng;
    fk_rng_seed(&rng, 99);
    fk_fill_normal(h, FK_DTYPE_F16, nq, 1.0, &rng, NULL);
    void *q = fk_test_dev_alloc((size_t)nq * 2), *k = fk_test_dev_alloc((size_t)nk * 2), *v = fk_test_dev_alloc((size_t)nk * 2);
    void *o = fk_test_dev_alloc((size_t)nq * 2), *dO = fk_test_dev_alloc((size_t)nq * 2), *lse = fk_test_dev_alloc((size_t)(HQ * T) * 4);
    void *dq = fk_test_dev_alloc((size_t)nq * 2), *dk = fk_test_dev_alloc((size_t)nk * 2), *dv = fk_test_dev_alloc((size_t)nk * 2);
    void *cq = fk_test_dev_alloc(12), *ck = fk_test_dev_alloc(12);
    bool  ok = q && k && v && o && dO && lse && dq && dk && dv && cq && ck && fk_test_h2d(q, h, (size_t)nq * 2) &&
              fk_test_h2d(k, h, (size_t)nk * 2) && fk_test_h2d(v, h + nk, (size_t)nk * 2) && fk_test_h2d(dO, h, (size_t)nq * 2);
    // {cu_q, cu_k, max_seqlen_q, max_seqlen_k}: an end far past total_k; a start past total_q; decreasing
    // offsets; lengths past max_seqlen (32 > 8).
    static const int32_t cus[4][2][3] = {{{0, 32, 64}, {0, 40, 1 << 30}}, {{0, 1 << 30, 64}, {0, 32, 64}},
                                         {{0, 48, 16}, {0, 32, 64}}, {{0, 32, 64}, {0, 32, 64}}};
    static const int64_t maxs[4] = {64, 64, 64, 8};
    char detail[300] = "every call succeeded and the device reports no error";
    for (int c = 0; c < 4 && ok; c++) {
        ok = fk_test_h2d(cq, cus[c][0], 12) && fk_test_h2d(ck, cus[c][1], 12);
        fk_attn_args a;
        fk_attn_args_init(&a);
        a.q   = fk_tensor_make(q, FK_DTYPE_F16, dev, 3, (int64_t[]){T, HQ, D});
        a.k   = fk_tensor_make(k, FK_DTYPE_F16, dev, 3, (int64_t[]){T, HK, D});
        a.v   = fk_tensor_make(v, FK_DTYPE_F16, dev, 3, (int64_t[]){T, HK, D});
        a.o   = fk_tensor_make(o, FK_DTYPE_F16, dev, 3, (int64_t[]){T, HQ, D});
        a.do_ = fk_tensor_make(dO, FK_DTYPE_F16, dev, 3, (int64_t[]){T, HQ, D});
        a.dq  = fk_tensor_make(dq, FK_DTYPE_F16, dev, 3, (int64_t[]){T, HQ, D});
        a.dk  = fk_tensor_make(dk, FK_DTYPE_F16, dev, 3, (int64_t[]){T, HK, D});
        a.dv  = fk_tensor_make(dv, FK_DTYPE_F16, dev, 3, (int64_t[]){T, HK, D});
        a.lse = fk_tensor_make(lse, FK_DTYPE_F32, dev, 2, (int64_t[]){HQ, T});
        a.cu_seqlens_q = fk_tensor_make(cq, FK_DTYPE_INT32, dev, 1, (int64_t[]){3});
        a.cu_seqlens_k = fk_tensor_make(ck, FK_DTYPE_INT32, dev, 1, (int64_t[]){3});
        a.max_seqlen_q = a.max_seqlen_k = maxs[c];
        a.causal       = c & 1;
        for (int det = 0; det < 2 && ok; det++) {
            a.deterministic = det;
            size_t w1 = 0, w2 = 0;
            ok = fk_attn_fwd_workspace_size(ctx, &a, &w1) == FK_STATUS_SUCCESS &&
                 fk_attn_bwd_workspace_size(ctx, &a, &w2) == FK_STATUS_SUCCESS;
            void *ws = ok ? fk_test_dev_alloc((w1 > w2 ? w1 : w2) + 1) : NULL;
            ok = ok && ws && fk_attn_fwd(ctx, &a, ws, w1, NULL) == FK_STATUS_SUCCESS &&
                 fk_attn_bwd(ctx, &a, ws, w2, NULL) == FK_STATUS_SUCCESS && fk_test_dev_sync();
            if (!ok) snprintf(detail, sizeof detail, "case %d, deterministic %d: %s", c, det, fk_last_error_message());
            fk_test_dev_free(ws);
        }
    }
    fk_test_check(ok, sig, detail);
    void *all[] = {q, k, v, o, dO, lse, dq, dk, dv, cq, ck};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) fk_test_dev_free(all[i]);
    free(h);
}

int main(int argc, char **argv) {
    fk_test_init(argc, argv, "test_attn");
    backend cpu = {FK_DEVICE_CPU, "cpu", NULL};
    if (fk_context_init((fk_device){FK_DEVICE_CPU, 0}, NULL, &cpu.ctx) != FK_STATUS_SUCCESS) {
        fk_test_fail("ATTN(backend=cpu)", fk_last_error_message());
        return fk_test_finish();
    }
    backend     cuda = {FK_DEVICE_CUDA, "cuda", NULL};
    const char *why  = NULL;
    bool        have_cuda = fk_test_have_cuda(&why);
    if (have_cuda && fk_context_init((fk_device){FK_DEVICE_CUDA, 0}, NULL, &cuda.ctx) != FK_STATUS_SUCCESS) {
        have_cuda = false;
        why       = fk_last_error_message();
    }
    if (!have_cuda && fk_test_selected("ATTN(backend=cuda)", FK_DEVICE_CUDA)) fk_test_skip("ATTN(backend=cuda)", why);

    check_ref_gradients(0);
    check_ref_gradients(1);

    static attn_case cases[128];
    const int        ncases = build_cases(cases);
    static const fk_dtype dts[] = {FK_DTYPE_F32, FK_DTYPE_F16, FK_DTYPE_BF16, FK_DTYPE_F64};
    uint64_t         seed = 1;
    for (int bi = 0; bi < 2; bi++) {
        const backend *be = bi ? &cuda : &cpu;
        if (bi && !have_cuda) continue;
        for (int di = 0; di < 4; di++) {
            if (be->kind == FK_DEVICE_CUDA && dts[di] == FK_DTYPE_F64) continue; // CPU only by contract
            for (int ci = 0; ci < ncases; ci++) run_case(be, dts[di], &cases[ci], seed++);
        }
    }

    // The CPU's narrower SIMD paths on a subset (the native one ran above).
    fk_build_info info;
    fk_get_build_info(&info);
    static const char *caps[]   = {"256", "0"};
    static const char *labels[] = {"avx2", "portable"};
    for (int s = 0; s < 2; s++) {
        if (atoi(caps[s]) >= info.cpu_simd) continue;
        setenv("FK_CPU_SIMD_MAX", caps[s], 1);
        simd_label = labels[s];
        for (int ci = 0; ci < ncases; ci++)
            if (cases[ci].simd)
                for (int di = 0; di < 3; di += 2) run_case(&cpu, dts[di], &cases[ci], seed++);
        unsetenv("FK_CPU_SIMD_MAX");
        simd_label = "native";
    }

    fk_context_t one = NULL;
    if (fk_context_init((fk_device){FK_DEVICE_CPU, 0}, &(fk_context_options){1}, &one) == FK_STATUS_SUCCESS) {
        fk_context_t two = NULL;
        if (fk_context_init((fk_device){FK_DEVICE_CPU, 0}, &(fk_context_options){2}, &two) == FK_STATUS_SUCCESS) {
            check_thread_determinism(one, two);
            fk_context_free(two);
        }
        fk_context_free(one);
    }
    if (have_cuda) check_cuda_bad_cu_seqlens(cuda.ctx);
    // The negative tests use a fixed 1 MiB workspace: a 2-thread context keeps the CPU's per-thread scratch inside
    // it on any machine (the default context has a thread per core).
    fk_context_t neg = NULL;
    if (fk_context_init((fk_device){FK_DEVICE_CPU, 0}, &(fk_context_options){2}, &neg) == FK_STATUS_SUCCESS) {
        run_negative(neg);
        fk_context_free(neg);
    } else fk_test_fail("ATTN_BAD(backend=cpu,2-thread context)", fk_last_error_message());

    fk_context_free(cpu.ctx);
    fk_context_free(cuda.ctx);
    return fk_test_finish();
}
