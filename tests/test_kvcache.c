/*
 * test_kvcache.c — decode with a KV cache (fk_attn_fwd_kvcache) against the float64 reference: each
 * sequence's keys are rebuilt densely from the cache (rows before cache_seqlens[b]) and the new k, v, then
 * ref_attn_fwd runs on them. Cases: seqlen_q 1 and > 1, with and without new k/v (the cache must be written
 * at exactly the right rows and nowhere else), contiguous and paged caches (page sizes 16 and 256, scrambled
 * block tables), cache_batch_idx, GQA/MQA, causal, windows, softcap, ALiBi, head dims 64, 128 and odd ones,
 * empty caches and full ones; the CPU's narrower SIMD paths; every bad-input rule. With a GPU the same cases
 * run on CUDA (device buffers, outputs poisoned there) with the backend's split choice and explicit splits,
 * plus the rules that differ there: mixed host/device memory, f64, the split workspace, and bad device-resident
 * cache_seqlens / cache_batch_idx / block ids (no out-of-bounds access). Without a GPU those say "skipped".
 * Run: build/test_kvcache [-v] [-p SUBSTRING] [-b cpu|cuda]
 */
#define _POSIX_C_SOURCE 200112L
#include "common/fk_test.h"
#include "ref/ref_attn.h"
#include "ref/ref_ops.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct kv_case {
    int64_t batch, sq, snew, hq, hkv, d;
    int64_t cap;       // contiguous: seqlen_cache; paged: max_blocks * page
    int64_t page;      // 0 = contiguous cache
    int     batch_idx; // contiguous only: a permuted cache_batch_idx into a larger cache
    int     fill;      // 0 random cache_seqlens, 1 all 0 (only new keys), 2 full (capacity - snew)
    int     causal;
    int64_t wl, wr;    // -1 = unbounded
    float   softcap;
    int     alibi;     // 0 none, 1 [hq], 2 [batch, hq]
    int     simd;      // also under the narrower SIMD paths
    int64_t len;       // > 0: every cache_seqlens[b] = len - snew (overrides fill)
} kv_case;

static const char *simd_label = "native";
static int          g_splits = 0;     // num_splits of every call (0 = the backend's choice)
static fk_context_t g_twin   = NULL;  // when set: run again on this context, expect bit-identical o and lse
static const fk_device cpu_dev = {FK_DEVICE_CPU, 0};

static void *xalloc(size_t bytes) { return calloc(bytes ? bytes : 1, 1); }

// One case on ctx's backend. CUDA: every operand (cache_seqlens, cache_batch_idx, block_table and the slopes
// included) is uploaded to the device, o and lse are poisoned there, and o, lse and both caches come back.
static void run_case(fk_context_t ctx, fk_dtype dt, const kv_case *c, uint64_t seed) {
    const fk_device dev = fk_context_device(ctx);
    const bool      gpu = dev.kind == FK_DEVICE_CUDA;
    char            sig[512];
    snprintf(sig, sizeof sig,
             "KVCACHE(backend=%s,dtype=%s,d=%lld,b=%lld,sq=%lld,snew=%lld,hq=%lld,hkv=%lld,cap=%lld,page=%lld,"
             "batch_idx=%d,fill=%d,len=%lld,causal=%d,wl=%lld,wr=%lld,softcap=%g,alibi=%d,simd=%s,threads=%d,splits=%d%s)",
             gpu ? "cuda" : "cpu", fk_dtype_name(dt), (long long)c->d, (long long)c->batch, (long long)c->sq,
             (long long)c->snew, (long long)c->hq, (long long)c->hkv, (long long)c->cap, (long long)c->page,
             c->batch_idx, c->fill, (long long)c->len, c->causal, (long long)c->wl, (long long)c->wr,
             (double)c->softcap, c->alibi, gpu ? "-" : simd_label, gpu ? 0 : fk_context_num_threads(ctx), g_splits,
             g_twin ? ",threads 2 vs 1 bit-identical" : "");
    if (!fk_test_selected(sig, dev.kind)) return;
    const int64_t B = c->batch, sq = c->sq, sn = c->snew, hq = c->hq, hkv = c->hkv, d = c->d;
    const int64_t page = c->page, maxb = page ? c->cap / page : 0;
    const int64_t entries = page ? B * maxb + 3 : (c->batch_idx ? B + 2 : B); // spare blocks / entries
    const int64_t rows = page ? page : c->cap, row_el = hkv * d;
    const int64_t ncache = entries * rows * row_el, nq = B * sq * hq * d, nnew = B * sn * row_el;
    const size_t  es = fk_dtype_size(dt);
    const fk_dtype ldt = dt == FK_DTYPE_F64 ? FK_DTYPE_F64 : FK_DTYPE_F32;
    fk_rng rng;
    fk_rng_seed(&rng, seed);

    ref_buf bkc = {0}, bvc = {0}, bq = {0}, bo = {0}, blse = {0}, bkn = {0}, bvn = {0}, bcs = {0}, bbidx = {0},
            bbt = {0}, bsl = {0};
    ref_buf     *bufs[] = {&bkc, &bvc, &bq, &bo, &blse, &bkn, &bvn, &bcs, &bbidx, &bbt, &bsl};
    const size_t nbufs  = sizeof bufs / sizeof bufs[0];
    const size_t nbt = (size_t)(B * (maxb ? maxb : 1));
    bool         ok = ref_buf_alloc(&bkc, (size_t)ncache * es, gpu) && ref_buf_alloc(&bvc, (size_t)ncache * es, gpu) &&
              ref_buf_alloc(&bq, (size_t)nq * es, gpu) && ref_buf_alloc(&bo, (size_t)nq * es, gpu) &&
              ref_buf_alloc(&blse, (size_t)(B * hq * sq) * 8, gpu) &&
              ref_buf_alloc(&bkn, (size_t)(nnew ? nnew : 1) * es, gpu) && ref_buf_alloc(&bvn, (size_t)(nnew ? nnew : 1) * es, gpu) &&
              ref_buf_alloc(&bcs, (size_t)B * 4, gpu) && ref_buf_alloc(&bbidx, (size_t)B * 4, gpu) &&
              ref_buf_alloc(&bbt, nbt * 4, gpu) && ref_buf_alloc(&bsl, (size_t)(B * hq) * 4, gpu);
    if (!ok) {
        fk_test_fail(sig, "allocation failed");
        for (size_t i = 0; i < nbufs; i++) ref_buf_free(bufs[i]);
        return;
    }
    void    *kc = bkc.host, *vc = bvc.host, *q = bq.host, *o = bo.host, *lse = blse.host, *kn = bkn.host, *vn = bvn.host;
    int32_t *cs = bcs.host, *bidx = bbidx.host, *bt = bbt.host;
    float   *slopes = bsl.host;
    memset(bt, 0, nbt * 4);
    void *kc0 = xalloc((size_t)ncache * es), *vc0 = xalloc((size_t)ncache * es);
    fk_fill_normal(kc, dt, ncache, 1.0, &rng, NULL);
    fk_fill_normal(vc, dt, ncache, 1.0, &rng, NULL);
    fk_fill_normal(q, dt, nq, 1.0, &rng, NULL);
    if (nnew) {
        fk_fill_normal(kn, dt, nnew, 1.0, &rng, NULL);
        fk_fill_normal(vn, dt, nnew, 1.0, &rng, NULL);
    }
    memcpy(kc0, kc, (size_t)ncache * es);
    memcpy(vc0, vc, (size_t)ncache * es);
    fk_poison(o, dt, nq);
    fk_poison(lse, ldt, B * hq * sq);
    int64_t lq[64], lk[64];
    for (int64_t b = 0; b < B; b++) {
        int64_t room = (page ? maxb * page : c->cap) - sn; // a paged capacity is whole pages
        cs[b] = (int32_t)(c->len > 0 ? c->len - sn : c->fill == 1 ? 0 : c->fill == 2 ? room
                                                                 : (int64_t)(fk_rng_uniform(&rng) * (double)(room + 1)));
        lq[b] = sq;
        lk[b] = cs[b] + sn;
    }
    // cache_batch_idx: distinct entries in reverse order, two unused. Block table: a shuffle of all blocks.
    for (int64_t b = 0; b < B; b++) bidx[b] = (int32_t)(entries - 1 - b);
    if (page) {
        int32_t *perm = xalloc((size_t)entries * 4);
        for (int64_t i = 0; i < entries; i++) perm[i] = (int32_t)i;
        for (int64_t i = entries - 1; i > 0; i--) {
            int64_t  j = (int64_t)(fk_rng_uniform(&rng) * (double)(i + 1));
            int32_t t = perm[i];
            perm[i] = perm[j], perm[j] = t;
        }
        for (int64_t i = 0; i < B * maxb; i++) bt[i] = perm[i];
        free(perm);
    }
    for (int64_t x = 0; x < B * hq; x++)
        slopes[x] = (float)(pow(2.0, -8.0 * (double)(x % hq + 1) / (double)hq) * (1.0 + 0.5 * fk_rng_uniform(&rng)));

    // Where row j of sequence b lives (element offset of head 0), as the header defines it.
    const int64_t tk = ref_attn_total(lk, B);
    double *rq = calloc((size_t)nq + 1, 8), *rk = calloc((size_t)(tk * row_el) + 1, 8), *rv = calloc((size_t)(tk * row_el) + 1, 8);
    double *ro = calloc((size_t)nq + 1, 8), *rl = calloc((size_t)(B * hq * sq) + 1, 8);
    double *no = calloc((size_t)nq + 1, 8), *nl = calloc((size_t)(B * hq * sq) + 1, 8), *rl_k = calloc((size_t)(B * hq * sq) + 1, 8);
    unsigned char *kexp = xalloc((size_t)ncache * es), *vexp = xalloc((size_t)ncache * es);
    memcpy(kexp, kc0, (size_t)ncache * es);
    memcpy(vexp, vc0, (size_t)ncache * es);
    for (int64_t x = 0; x < nq; x++) rq[x] = fk_get(q, dt, x);
    for (int64_t b = 0, k0 = 0; b < B; k0 += lk[b], b++)
        for (int64_t j = 0; j < lk[b]; j++) {
            int64_t off = page ? (int64_t)bt[b * maxb + j / page] * rows * row_el + (j % page) * row_el
                               : (int64_t)(c->batch_idx ? bidx[b] : b) * rows * row_el + j * row_el;
            for (int64_t e = 0; e < row_el; e++) {
                if (j < cs[b]) {
                    rk[(k0 + j) * row_el + e] = fk_get(kc0, dt, off + e);
                    rv[(k0 + j) * row_el + e] = fk_get(vc0, dt, off + e);
                } else {
                    int64_t src = (b * sn + j - cs[b]) * row_el + e;
                    rk[(k0 + j) * row_el + e] = fk_get(kn, dt, src);
                    rv[(k0 + j) * row_el + e] = fk_get(vn, dt, src);
                }
            }
            if (j >= cs[b]) {
                int64_t src = (b * sn + j - cs[b]) * row_el;
                memcpy(kexp + off * (int64_t)es, (char *)kn + src * (int64_t)es, (size_t)row_el * es);
                memcpy(vexp + off * (int64_t)es, (char *)vn + src * (int64_t)es, (size_t)row_el * es);
            }
        }
    double rslopes[512];
    for (int64_t x = 0; x < B * hq; x++) rslopes[x] = slopes[x];
    ref_attn_cfg cfg = {B, hq, hkv, d, lq, lk, 1.0 / sqrt((double)d), c->softcap, c->causal, c->wl, c->wr,
                        c->alibi ? rslopes : NULL, c->alibi == 2 ? hq : 0};
    cfg.scale = (double)(float)(1.0 / sqrt((double)d));
    const bool lowp = dt == FK_DTYPE_F16 || dt == FK_DTYPE_BF16;
    ref_attn_fwd(FK_DTYPE_F64, &cfg, rq, rk, rv, ro, rl);
    if (lowp) ref_attn_fwd(dt, &cfg, rq, rk, rv, no, nl);
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < hq; h++)
            for (int64_t i = 0; i < sq; i++) rl_k[(b * hq + h) * sq + i] = rl[h * (B * sq) + b * sq + i];

    fk_attn_kvcache_args a;
    fk_attn_kvcache_args_init(&a);
    a.q       = fk_tensor_make(ref_buf_ptr(&bq), dt, dev, 4, (int64_t[]){B, sq, hq, d});
    a.o       = fk_tensor_make(ref_buf_ptr(&bo), dt, dev, 4, (int64_t[]){B, sq, hq, d});
    a.lse     = fk_tensor_make(ref_buf_ptr(&blse), ldt, dev, 3, (int64_t[]){B, hq, sq});
    a.k_cache = fk_tensor_make(ref_buf_ptr(&bkc), dt, dev, 4, (int64_t[]){entries, rows, hkv, d});
    a.v_cache = fk_tensor_make(ref_buf_ptr(&bvc), dt, dev, 4, (int64_t[]){entries, rows, hkv, d});
    if (sn) {
        a.k = fk_tensor_make(ref_buf_ptr(&bkn), dt, dev, 4, (int64_t[]){B, sn, hkv, d});
        a.v = fk_tensor_make(ref_buf_ptr(&bvn), dt, dev, 4, (int64_t[]){B, sn, hkv, d});
    }
    a.cache_seqlens = fk_tensor_make(ref_buf_ptr(&bcs), FK_DTYPE_INT32, dev, 1, (int64_t[]){B});
    if (c->batch_idx) a.cache_batch_idx = fk_tensor_make(ref_buf_ptr(&bbidx), FK_DTYPE_INT32, dev, 1, (int64_t[]){B});
    if (page) a.block_table = fk_tensor_make(ref_buf_ptr(&bbt), FK_DTYPE_INT32, dev, 2, (int64_t[]){B, maxb});
    if (c->alibi == 1) a.alibi_slopes = fk_tensor_make(ref_buf_ptr(&bsl), FK_DTYPE_F32, dev, 1, (int64_t[]){hq});
    if (c->alibi == 2) a.alibi_slopes = fk_tensor_make(ref_buf_ptr(&bsl), FK_DTYPE_F32, dev, 2, (int64_t[]){B, hq});
    a.softcap      = c->softcap;
    a.causal       = c->causal;
    a.window_left  = c->wl;
    a.window_right = c->wr;
    a.num_splits   = g_splits;

    ok = ref_buf_upload(&bkc) && ref_buf_upload(&bvc) && ref_buf_upload(&bq) && ref_buf_upload(&bo) &&
         ref_buf_upload(&blse) && ref_buf_upload(&bkn) && ref_buf_upload(&bvn) && ref_buf_upload(&bcs) &&
         ref_buf_upload(&bbidx) && ref_buf_upload(&bbt) && ref_buf_upload(&bsl);
    size_t    wsb = 0;
    void     *ws  = NULL;
    fk_status st  = ok ? fk_attn_kvcache_workspace_size(ctx, &a, &wsb) : FK_STATUS_INTERNAL;
    if (st == FK_STATUS_SUCCESS) {
        ws = gpu ? fk_test_dev_alloc(wsb) : malloc(wsb ? wsb : 1);
        st = fk_attn_fwd_kvcache(ctx, &a, ws, wsb, NULL);
    }
    if (st == FK_STATUS_SUCCESS && gpu &&
        !(fk_test_dev_sync() && ref_buf_download(&bo) && ref_buf_download(&blse) && ref_buf_download(&bkc) &&
          ref_buf_download(&bvc))) {
        fk_test_fail(sig, "the device reported an error after the call, or a copy back failed");
    } else if (st != FK_STATUS_SUCCESS) {
        char msg[700];
        snprintf(msg, sizeof msg, "%s: %s", ok ? fk_status_string(st) : "upload failed", fk_last_error_message());
        fk_test_fail(sig, msg);
    } else {
        char      d1[300], d2[300], detail[800];
        fk_tensor ho = a.o, hl = a.lse;
        ho.data = o, hl.data = lse;
        bool okf  = ref_verdict(&ho, o, ro, lowp ? no : NULL, d1, sizeof d1);
        bool okl  = ref_verdict(&hl, lse, rl_k, NULL, d2, sizeof d2);
        bool okc  = memcmp(kc, kexp, (size_t)ncache * es) == 0 && memcmp(vc, vexp, (size_t)ncache * es) == 0;
        bool okt = true;
        if (g_twin) { // the same call on the twin context (the append rewrites the same rows with the same values)
            void  *o2 = xalloc((size_t)nq * es), *l2 = xalloc((size_t)(B * hq * sq) * 8), *ws2 = NULL;
            size_t wsb2 = 0;
            fk_poison(o2, dt, nq);
            fk_poison(l2, ldt, B * hq * sq);
            fk_attn_kvcache_args a2 = a;
            a2.o   = fk_tensor_make(o2, dt, cpu_dev, 4, (int64_t[]){B, sq, hq, d});
            a2.lse = fk_tensor_make(l2, ldt, cpu_dev, 3, (int64_t[]){B, hq, sq});
            okt    = fk_attn_kvcache_workspace_size(g_twin, &a2, &wsb2) == FK_STATUS_SUCCESS;
            if (okt) ws2 = malloc(wsb2 ? wsb2 : 1);
            okt = okt && fk_attn_fwd_kvcache(g_twin, &a2, ws2, wsb2, NULL) == FK_STATUS_SUCCESS &&
                  memcmp(o, o2, (size_t)nq * es) == 0 && memcmp(lse, l2, (size_t)(B * hq * sq) * fk_dtype_size(ldt)) == 0;
            free(ws2), free(o2), free(l2);
        }
        snprintf(detail, sizeof detail, "o: %s | lse: %s | cache %s%s", d1, d2,
                 okc ? "written at the right rows only" : "DIFFERS from the expected append",
                 g_twin ? (okt ? " | twin context bit-identical" : " | twin context DIFFERS") : "");
        fk_test_check(okf && okl && okc && okt, sig, detail);
    }
    if (gpu) fk_test_dev_free(ws);
    else free(ws);
    for (size_t i = 0; i < nbufs; i++) ref_buf_free(bufs[i]);
    free(kc0), free(vc0), free(rq), free(rk), free(rv), free(ro), free(rl), free(no);
    free(nl), free(rl_k), free(kexp), free(vexp);
}

static int build_cases(kv_case *cs) {
    int n = 0;
#define K(...) (cs[n++] = (kv_case){__VA_ARGS__, 0})
    //  B  sq snew hq hkv  d   cap page bidx fill causal wl  wr softcap alibi simd
    K(3, 1, 1, 8, 2, 64, 100, 0, 0, 0, 1, -1, -1, 0.0f, 0, 1);     // decode, GQA 4, append one token
    K(3, 1, 0, 8, 2, 64, 100, 0, 0, 0, 1, -1, -1, 0.0f, 0, 0);     // no new keys
    K(2, 1, 1, 4, 4, 128, 300, 0, 0, 0, 0, -1, -1, 0.0f, 0, 1);    // MHA, d 128, not causal
    K(2, 4, 4, 8, 1, 64, 200, 0, 0, 0, 1, -1, -1, 0.0f, 0, 1);     // speculative decode, MQA
    K(2, 5, 3, 6, 2, 40, 90, 0, 0, 0, 1, -1, -1, 0.0f, 0, 0);      // sq > snew, odd-ish d 40
    K(3, 1, 1, 8, 2, 64, 160, 16, 0, 0, 1, -1, -1, 0.0f, 0, 1);    // paged, page 16
    K(2, 3, 2, 4, 2, 128, 768, 256, 0, 0, 1, -1, -1, 0.0f, 0, 0);  // paged, page 256
    K(2, 1, 0, 8, 2, 64, 64, 16, 0, 0, 0, -1, -1, 0.0f, 0, 0);     // paged, no new keys
    K(3, 1, 1, 8, 2, 64, 100, 0, 1, 0, 1, -1, -1, 0.0f, 0, 0);     // cache_batch_idx
    K(3, 2, 2, 4, 2, 64, 120, 0, 1, 0, 0, -1, -1, 0.0f, 0, 0);     // cache_batch_idx, sq 2
    K(2, 1, 1, 4, 2, 64, 150, 0, 0, 0, 1, 31, 0, 0.0f, 0, 0);      // sliding window (causal)
    K(2, 3, 3, 4, 2, 64, 150, 16, 0, 0, 0, 20, 5, 0.0f, 0, 0);     // window both sides, paged
    K(2, 1, 1, 4, 2, 64, 100, 0, 0, 0, 1, -1, -1, 30.0f, 0, 0);    // softcap
    K(2, 2, 1, 4, 2, 64, 100, 0, 0, 0, 1, -1, -1, 0.0f, 1, 0);     // ALiBi per head
    K(2, 1, 1, 4, 1, 64, 100, 16, 0, 0, 1, -1, -1, 0.0f, 2, 0);    // ALiBi per batch-head, paged MQA
    K(2, 1, 1, 4, 2, 37, 70, 0, 0, 0, 1, -1, -1, 0.0f, 0, 1);      // odd head dim 37
    K(2, 2, 2, 4, 2, 64, 40, 0, 0, 1, 1, -1, -1, 0.0f, 0, 0);      // cache_seqlens 0: only new keys
    K(2, 1, 0, 4, 2, 64, 50, 0, 0, 1, 0, -1, -1, 0.0f, 0, 0);      // empty cache, no new keys: o = 0, lse = -inf
    K(2, 1, 1, 4, 2, 64, 96, 0, 0, 2, 1, -1, -1, 0.0f, 0, 0);      // full capacity
    K(2, 2, 2, 8, 2, 128, 64, 16, 0, 2, 1, -1, -1, 0.0f, 0, 0);    // paged, full capacity
    K(1, 40, 40, 4, 2, 64, 100, 0, 0, 0, 1, -1, -1, 0.0f, 0, 0);   // G * sq > tile half: heads not packed
    K(4, 1, 1, 16, 2, 128, 1000, 0, 0, 0, 1, -1, -1, 0.0f, 0, 0);  // G 8, longer cache
    K(2, 2, 1, 8, 2, 256, 90, 0, 0, 0, 1, -1, -1, 0.0f, 0, 0);     // d 256
    K(2, 1, 1, 4, 2, 200, 64, 16, 0, 0, 1, -1, -1, 10.0f, 1, 0);   // d 200 (not a multiple of 16 bytes / 8), paged
    K(3, 3, 1, 2, 1, 1, 30, 0, 1, 0, 0, 4, 2, 0.0f, 0, 0);         // d 1, window both sides, cache_batch_idx
#undef K
    return n;
}

// Split-KV cases: batch 1 with one or two kv heads (the items that leave threads idle), seqlen_q 1 and 4,
// cache lengths 1 and 17 (one key tile: every split past the first is empty), 1000 and 4096; contiguous and
// paged; causal, a causal sliding window (a span of 2-3 tiles: splits 3 and 7 leave whole chunks empty), a
// two-sided window without causal (sq 4: rows that see no key of a chunk). Then batches with several waves.
static int build_split_cases(kv_case *cs) {
    static const int64_t lens[] = {1, 17, 1000, 4096};
    int                  n      = 0;
    for (int64_t hkv = 1; hkv <= 2; hkv++)
        for (int64_t sq = 1; sq <= 4; sq += 3)
            for (int li = 0; li < 4; li++)
                for (int paged = 0; paged < 2; paged++)
                    for (int mask = 0; mask < 3; mask++) {
                        const int64_t len = lens[li], page = paged ? (len >= 1000 ? 256 : 16) : 0;
                        const int64_t cap = page ? (len + 2 * page - 1) / page * page : len + 5;
                        const int64_t wl = mask == 1 ? 100 : mask == 2 ? 200 : -1, wr = mask == 2 ? 30 : -1;
                        cs[n++] = (kv_case){1, sq, 1, 8, hkv, 64, cap, page, 0, 0, mask != 2, wl, wr, 0.0f, 0, 0, len};
                    }
    //                   B  sq snew hq hkv  d    cap page bidx fill causal wl wr softcap alibi simd len
    cs[n++] = (kv_case){3, 1, 1, 8, 2, 64, 300, 0, 0, 0, 1, -1, -1, 0.0f, 0, 0, 0};     // 6 items: waves
    cs[n++] = (kv_case){2, 2, 2, 6, 3, 128, 700, 16, 0, 0, 1, -1, -1, 0.0f, 0, 0, 0};   // paged, d 128, G 2
    cs[n++] = (kv_case){1, 1, 1, 4, 1, 40, 900, 0, 0, 0, 1, -1, -1, 20.0f, 1, 0, 0};    // softcap, ALiBi, d 40
    cs[n++] = (kv_case){1, 40, 40, 4, 2, 64, 500, 0, 0, 0, 1, -1, -1, 0.0f, 0, 0, 0};   // heads not packed, sq 40
    cs[n++] = (kv_case){1, 70, 70, 2, 1, 64, 400, 0, 0, 0, 1, -1, -1, 0.0f, 0, 0, 0};   // two query tiles
    return n;
}

// --- bad inputs ------------------------------------------------------------------------------------------

typedef struct neg_env {
    float   q[2 * 1 * 4 * 16], o[2 * 1 * 4 * 16], lse[2 * 4 * 1];
    float   kc[3 * 32 * 2 * 16], vc[3 * 32 * 2 * 16], kn[2 * 1 * 2 * 16], vn[2 * 1 * 2 * 16];
    int32_t cs[2], bidx[2], bt[2 * 2];
    int64_t cs64[2];
    float   slopes[4];
    unsigned char ws[1 << 20];
} neg_env;

// Valid: B 2, sq 1, hq 4, hkv 2, d 16, contiguous cache [3, 32, 2, 16], one new token.
static fk_attn_kvcache_args neg_base(neg_env *e) {
    for (int i = 0; i < (int)(sizeof e->kc / 4); i++) e->kc[i] = e->vc[i] = 0.01f * (float)(i % 17);
    for (int i = 0; i < 2 * 64; i++) e->q[i % 128] = 0.1f;
    for (int i = 0; i < 64; i++) e->kn[i] = e->vn[i] = 0.2f;
    e->cs[0] = 5, e->cs[1] = 31, e->bidx[0] = 2, e->bidx[1] = 0;
    e->bt[0] = 0, e->bt[1] = 1, e->bt[2] = 2, e->bt[3] = 1;
    e->cs64[0] = 5, e->cs64[1] = 6;
    fk_attn_kvcache_args a;
    fk_attn_kvcache_args_init(&a);
    a.q             = fk_tensor_make(e->q, FK_DTYPE_F32, cpu_dev, 4, (int64_t[]){2, 1, 4, 16});
    a.o             = fk_tensor_make(e->o, FK_DTYPE_F32, cpu_dev, 4, (int64_t[]){2, 1, 4, 16});
    a.lse           = fk_tensor_make(e->lse, FK_DTYPE_F32, cpu_dev, 3, (int64_t[]){2, 4, 1});
    a.k_cache       = fk_tensor_make(e->kc, FK_DTYPE_F32, cpu_dev, 4, (int64_t[]){3, 32, 2, 16});
    a.v_cache       = fk_tensor_make(e->vc, FK_DTYPE_F32, cpu_dev, 4, (int64_t[]){3, 32, 2, 16});
    a.k             = fk_tensor_make(e->kn, FK_DTYPE_F32, cpu_dev, 4, (int64_t[]){2, 1, 2, 16});
    a.v             = fk_tensor_make(e->vn, FK_DTYPE_F32, cpu_dev, 4, (int64_t[]){2, 1, 2, 16});
    a.cache_seqlens = fk_tensor_make(e->cs, FK_DTYPE_INT32, cpu_dev, 1, (int64_t[]){2});
    a.causal        = 1;
    return a;
}

// The paged form of the base: [3 blocks, 16 rows], block_table [2, 2] (capacity 32).
static fk_attn_kvcache_args neg_paged(neg_env *e) {
    fk_attn_kvcache_args a = neg_base(e);
    a.k_cache     = fk_tensor_make(e->kc, FK_DTYPE_F32, cpu_dev, 4, (int64_t[]){3, 16, 2, 16});
    a.v_cache     = fk_tensor_make(e->vc, FK_DTYPE_F32, cpu_dev, 4, (int64_t[]){3, 16, 2, 16});
    a.block_table = fk_tensor_make(e->bt, FK_DTYPE_INT32, cpu_dev, 2, (int64_t[]){2, 2});
    return a;
}

static void expect(fk_context_t ctx, const char *rule, const fk_attn_kvcache_args *a, fk_status want, neg_env *e) {
    char sig[300];
    snprintf(sig, sizeof sig, "KVCACHE_BAD(backend=cpu,%s)", rule);
    if (!fk_test_selected(sig, FK_DEVICE_CPU)) return;
    size_t    bytes = 0;
    fk_status s1    = fk_attn_kvcache_workspace_size(ctx, a, &bytes);
    bool      m1    = fk_last_error_message()[0] != 0;
    fk_status s2    = fk_attn_fwd_kvcache(ctx, a, e->ws, sizeof e->ws, NULL);
    bool      m2    = fk_last_error_message()[0] != 0;
    fk_test_expect_status(sig, want, s1, m1, s2, m2);
}

static void run_negative(fk_context_t ctx) {
    neg_env *e = calloc(1, sizeof *e);
    fk_attn_kvcache_args a;
    const fk_device cuda0 = {FK_DEVICE_CUDA, 0};
    a = neg_base(e);
    fk_test_check(fk_attn_fwd_kvcache(ctx, &a, e->ws, sizeof e->ws, NULL) == FK_STATUS_SUCCESS,
                  "KVCACHE_BAD(backend=cpu,base case is valid)", fk_last_error_message());
    a = neg_paged(e);
    fk_test_check(fk_attn_fwd_kvcache(ctx, &a, e->ws, sizeof e->ws, NULL) == FK_STATUS_SUCCESS,
                  "KVCACHE_BAD(backend=cpu,paged base case is valid)", fk_last_error_message());
    a = neg_base(e);
    expect(NULL, "ctx NULL", &a, FK_STATUS_BAD_PARAM_NULL_POINTER, e);
    expect(ctx, "args NULL", NULL, FK_STATUS_BAD_PARAM_NULL_POINTER, e);
    fk_test_check(fk_attn_kvcache_workspace_size(ctx, &a, NULL) == FK_STATUS_BAD_PARAM_NULL_POINTER &&
                      fk_last_error_message()[0],
                  "KVCACHE_BAD(backend=cpu,bytes NULL)", fk_last_error_message());
#define CASE(rule, mut, want) \
    do {                      \
        a = neg_base(e);      \
        mut;                  \
        expect(ctx, rule, &a, want, e); \
    } while (0)
#define PCASE(rule, mut, want) \
    do {                       \
        a = neg_paged(e);      \
        mut;                   \
        expect(ctx, rule, &a, want, e); \
    } while (0)
    // Required data.
    CASE("q.data NULL", a.q.data = NULL, FK_STATUS_BAD_PARAM_NULL_POINTER);
    CASE("k_cache.data NULL", a.k_cache.data = NULL, FK_STATUS_BAD_PARAM_NULL_POINTER);
    CASE("v_cache.data NULL", a.v_cache.data = NULL, FK_STATUS_BAD_PARAM_NULL_POINTER);
    CASE("o.data NULL", a.o.data = NULL, FK_STATUS_BAD_PARAM_NULL_POINTER);
    CASE("k without v", a.v = fk_tensor_none(), FK_STATUS_BAD_PARAM_NULL_POINTER);
    CASE("v without k", a.k = fk_tensor_none(), FK_STATUS_BAD_PARAM_NULL_POINTER);
    CASE("cache_seqlens absent", a.cache_seqlens = fk_tensor_none(), FK_STATUS_BAD_PARAM_NULL_POINTER);
    // Shapes, ranks, strides.
    CASE("q 3-D", a.q.ndim = 3, FK_STATUS_BAD_PARAM_NDIM);
    CASE("k_cache 3-D", a.k_cache.ndim = 3, FK_STATUS_BAD_PARAM_NDIM);
    CASE("k_cache head_dim", a.k_cache.shape[3] = 8, FK_STATUS_BAD_PARAM_SHAPE);
    CASE("v_cache rows differ", a.v_cache.shape[1] = 16, FK_STATUS_BAD_PARAM_SHAPE);
    CASE("o heads", a.o.shape[2] = 2, FK_STATUS_BAD_PARAM_SHAPE);
    CASE("k new heads", a.k.shape[2] = 1, FK_STATUS_BAD_PARAM_SHAPE);
    CASE("v new seqlen differs", (a.v.shape[1] = 2, a.v.shape[0] = 1), FK_STATUS_BAD_PARAM_SHAPE);
    CASE("k new batch", a.k.shape[0] = 1, FK_STATUS_BAD_PARAM_SHAPE);
    CASE("lse shape", a.lse.shape[2] = 2, FK_STATUS_BAD_PARAM_SHAPE);
    CASE("q inner stride", a.q.stride[3] = 2, FK_STATUS_BAD_PARAM_STRIDE);
    CASE("k_cache inner stride", a.k_cache.stride[3] = 2, FK_STATUS_BAD_PARAM_STRIDE);
    CASE("k_cache fewer entries than batch", (a.k_cache.shape[0] = 1, a.v_cache.shape[0] = 1), FK_STATUS_BAD_PARAM_SHAPE);
    CASE("cache_seqlens shape", a.cache_seqlens.shape[0] = 1, FK_STATUS_BAD_PARAM_SHAPE);
    CASE("nheads_q not a multiple", (a.k_cache.shape[2] = 3, a.v_cache.shape[2] = 3, a.k.shape[2] = 3, a.v.shape[2] = 3,
                                     a.k_cache.shape[1] = 20, a.v_cache.shape[1] = 20), FK_STATUS_BAD_PARAM_HEADS);
    // Dtypes.
    CASE("q int32", a.q.dtype = FK_DTYPE_INT32, FK_STATUS_NOT_SUPPORTED_DTYPE);
    CASE("k_cache dtype", a.k_cache.dtype = FK_DTYPE_F16, FK_STATUS_BAD_PARAM_DTYPE_MISMATCH);
    CASE("k new dtype", a.k.dtype = FK_DTYPE_BF16, FK_STATUS_BAD_PARAM_DTYPE_MISMATCH);
    CASE("lse dtype", a.lse.dtype = FK_DTYPE_F16, FK_STATUS_BAD_PARAM_DTYPE_MISMATCH);
    CASE("cache_seqlens int64", (a.cache_seqlens.data = e->cs64, a.cache_seqlens.dtype = FK_DTYPE_INT64),
         FK_STATUS_NOT_SUPPORTED_DTYPE);
    CASE("alibi dtype", a.alibi_slopes = fk_tensor_make(e->slopes, FK_DTYPE_F16, cpu_dev, 1, (int64_t[]){4}),
         FK_STATUS_NOT_SUPPORTED_DTYPE);
    CASE("alibi shape", a.alibi_slopes = fk_tensor_make(e->slopes, FK_DTYPE_F32, cpu_dev, 1, (int64_t[]){3}),
         FK_STATUS_BAD_PARAM_SHAPE);
    CASE("head_dim 300", (a.q.shape[3] = 300, a.q.stride[2] = 300, a.q.stride[1] = 1200, a.q.stride[0] = 1200,
                          a.q.data = e->ws, a.o.data = e->ws, a.o.shape[3] = 300, a.o.stride[2] = 300,
                          a.o.stride[1] = 1200, a.o.stride[0] = 1200, a.k_cache.shape[3] = 300, a.v_cache.shape[3] = 300,
                          a.k_cache.data = a.v_cache.data = e->ws, a.k = a.v = fk_tensor_none()),
         FK_STATUS_NOT_SUPPORTED_HEAD_DIM);
    // Devices.
    CASE("k_cache on another device", a.k_cache.device = cuda0, FK_STATUS_BAD_PARAM_DEVICE_MISMATCH);
    CASE("cache_seqlens on another device", a.cache_seqlens.device = cuda0, FK_STATUS_BAD_PARAM_DEVICE_MISMATCH);
    // Scalars.
    CASE("softmax_scale negative", a.softmax_scale = -1.0f, FK_STATUS_BAD_PARAM_VALUE);
    CASE("softcap NaN", a.softcap = NAN, FK_STATUS_BAD_PARAM_VALUE);
    CASE("causal 2", a.causal = 2, FK_STATUS_BAD_PARAM_VALUE);
    CASE("window_left -2", a.window_left = -2, FK_STATUS_BAD_PARAM_VALUE);
    CASE("window_right -2", a.window_right = -2, FK_STATUS_BAD_PARAM_VALUE);
    CASE("num_splits -1", a.num_splits = -1, FK_STATUS_BAD_PARAM_VALUE);
    // Values read on the CPU.
    CASE("cache_seqlens negative", e->cs[0] = -1, FK_STATUS_BAD_PARAM_VALUE);
    CASE("cache_seqlens + seqlen_new > capacity", e->cs[1] = 32, FK_STATUS_BAD_PARAM_VALUE);
    CASE("cache_batch_idx out of range", (a.cache_batch_idx = fk_tensor_make(e->bidx, FK_DTYPE_INT32, cpu_dev, 1,
                                          (int64_t[]){2}), e->bidx[1] = 3), FK_STATUS_BAD_PARAM_VALUE);
    CASE("cache_batch_idx negative", (a.cache_batch_idx = fk_tensor_make(e->bidx, FK_DTYPE_INT32, cpu_dev, 1,
                                      (int64_t[]){2}), e->bidx[0] = -1), FK_STATUS_BAD_PARAM_VALUE);
    CASE("cache_batch_idx repeated with new k", (a.cache_batch_idx = fk_tensor_make(e->bidx, FK_DTYPE_INT32, cpu_dev, 1,
                                                 (int64_t[]){2}), e->bidx[1] = 2), FK_STATUS_BAD_PARAM_VALUE);
    CASE("cache_batch_idx shape", a.cache_batch_idx = fk_tensor_make(e->bidx, FK_DTYPE_INT32, cpu_dev, 1, (int64_t[]){1}),
         FK_STATUS_BAD_PARAM_SHAPE);
    // Paged.
    PCASE("block_table 1-D", (a.block_table.ndim = 1, a.block_table.shape[0] = 2), FK_STATUS_BAD_PARAM_NDIM);
    PCASE("block_table batch", a.block_table.shape[0] = 1, FK_STATUS_BAD_PARAM_SHAPE);
    PCASE("block_table int64", a.block_table.dtype = FK_DTYPE_INT64, FK_STATUS_NOT_SUPPORTED_DTYPE);
    PCASE("block_table inner stride", a.block_table.stride[1] = 2, FK_STATUS_BAD_PARAM_STRIDE);
    PCASE("block_table with cache_batch_idx", a.cache_batch_idx = fk_tensor_make(e->bidx, FK_DTYPE_INT32, cpu_dev, 1,
                                              (int64_t[]){2}), FK_STATUS_BAD_PARAM_VALUE);
    PCASE("block id out of range", e->bt[3] = 3, FK_STATUS_BAD_PARAM_VALUE);
    PCASE("block id negative", e->bt[0] = -1, FK_STATUS_BAD_PARAM_VALUE);
    PCASE("paged capacity exceeded", e->cs[1] = 32, FK_STATUS_BAD_PARAM_VALUE);
    PCASE("paged capacity overflows", (a.block_table.shape[1] = INT64_MAX / 8, a.block_table.stride[0] = 0),
          FK_STATUS_BAD_PARAM_OVERFLOW);
    CASE("k_cache size overflows", (a.k_cache.shape[0] = INT64_MAX / 4, a.k_cache.stride[0] = 0,
                                    a.v_cache.shape[0] = INT64_MAX / 4, a.v_cache.stride[0] = 0,
                                    a.k_cache.shape[1] = INT64_MAX / 4, a.k_cache.stride[1] = 0,
                                    a.v_cache.shape[1] = INT64_MAX / 4, a.v_cache.stride[1] = 0),
         FK_STATUS_BAD_PARAM_OVERFLOW);
#undef CASE
#undef PCASE
    // Workspace.
    {
        const char *sig = "KVCACHE_BAD(backend=cpu,workspace too small)";
        a = neg_base(e);
        fk_status s = fk_attn_fwd_kvcache(ctx, &a, e->ws, 16, NULL);
        if (fk_test_selected(sig, FK_DEVICE_CPU))
            fk_test_check(s == FK_STATUS_WORKSPACE_TOO_SMALL && fk_last_error_message()[0], sig, fk_last_error_message());
        sig = "KVCACHE_BAD(backend=cpu,workspace NULL)";
        s   = fk_attn_fwd_kvcache(ctx, &a, NULL, sizeof e->ws, NULL);
        if (fk_test_selected(sig, FK_DEVICE_CPU))
            fk_test_check(s == FK_STATUS_BAD_PARAM_NULL_POINTER && fk_last_error_message()[0], sig, fk_last_error_message());
    }
    free(e);
}

// --- CUDA ------------------------------------------------------------------------------------------------

// The matrix on the GPU: every base case in f32, f16, bf16 with the backend's split choice, then f32 with one
// split (o and lse written by the attention kernel itself) and with 3 (through the combine); the split-KV
// cases with explicit 1, 3, 7 splits and the backend's choice (f32), and 3 splits in bf16.
static void run_cuda_cases(fk_context_t ctx, const kv_case *cases, int ncases, uint64_t *seed) {
    static const fk_dtype dts[] = {FK_DTYPE_F32, FK_DTYPE_F16, FK_DTYPE_BF16};
    g_twin = NULL;
    g_splits = 0;
    for (int di = 0; di < 3; di++)
        for (int ci = 0; ci < ncases; ci++) run_case(ctx, dts[di], &cases[ci], (*seed)++);
    for (g_splits = 1; g_splits <= 3; g_splits += 2)
        for (int ci = 0; ci < ncases; ci++) run_case(ctx, FK_DTYPE_F32, &cases[ci], (*seed)++);
    static kv_case   splits[128];
    const int        nsplit = build_split_cases(splits);
    static const int explicit_splits[] = {1, 3, 7, 0};
    for (int si = 0; si < 4; si++) {
        g_splits = explicit_splits[si];
        for (int ci = 0; ci < nsplit; ci++) run_case(ctx, FK_DTYPE_F32, &splits[ci], (*seed)++);
    }
    g_splits = 3;
    for (int ci = 0; ci < nsplit; ci++) run_case(ctx, FK_DTYPE_BF16, &splits[ci], (*seed)++);
    g_splits = 0;
}

// A small valid problem in device memory (f16 or f64 descriptors over the same bytes): B 2, sq 1, hq 4, hkv 2,
// d 64, contiguous cache [2, 64, 2, 64], one new token; cache_seqlens {3, 40} on the device.
typedef struct cuda_env {
    char   *buf; // 4 MiB of device memory
    int32_t host_cs[2];
    float   host_q[2 * 4 * 64];
} cuda_env;

static fk_attn_kvcache_args cuda_base(const cuda_env *e, fk_dtype dt) {
    const fk_device dev = {FK_DEVICE_CUDA, 0};
    fk_attn_kvcache_args a;
    fk_attn_kvcache_args_init(&a);
    a.cache_seqlens = fk_tensor_make(e->buf, FK_DTYPE_INT32, dev, 1, (int64_t[]){2});
    a.q             = fk_tensor_make(e->buf + (64 << 10), dt, dev, 4, (int64_t[]){2, 1, 4, 64});
    a.o             = fk_tensor_make(e->buf + (128 << 10), dt, dev, 4, (int64_t[]){2, 1, 4, 64});
    a.k             = fk_tensor_make(e->buf + (192 << 10), dt, dev, 4, (int64_t[]){2, 1, 2, 64});
    a.v             = fk_tensor_make(e->buf + (256 << 10), dt, dev, 4, (int64_t[]){2, 1, 2, 64});
    a.k_cache       = fk_tensor_make(e->buf + (1 << 20), dt, dev, 4, (int64_t[]){2, 64, 2, 64});
    a.v_cache       = fk_tensor_make(e->buf + (2 << 20), dt, dev, 4, (int64_t[]){2, 64, 2, 64});
    a.causal        = 1;
    return a;
}

static void cuda_expect(fk_context_t ctx, const char *rule, const fk_attn_kvcache_args *a, void *ws, size_t wsb,
                        fk_status want) {
    char sig[300];
    snprintf(sig, sizeof sig, "KVCACHE_BAD(backend=cuda,%s)", rule);
    if (!fk_test_selected(sig, FK_DEVICE_CUDA)) return;
    const fk_status s = fk_attn_fwd_kvcache(ctx, a, ws, wsb, NULL);
    char            detail[700];
    snprintf(detail, sizeof detail, "want %s, got %s: %s", fk_status_string(want), fk_status_string(s),
             fk_last_error_message());
    fk_test_check(s == want && (want == FK_STATUS_SUCCESS || fk_last_error_message()[0]), sig, detail);
}

// The rules that differ on a GPU: memory on the wrong side (a host pointer in a CUDA descriptor, a CPU
// descriptor on a CUDA context), f64, the workspace of a split call (size query, too small, NULL).
static void run_cuda_negative(fk_context_t ctx) {
    cuda_env e;
    memset(&e, 0, sizeof e);
    e.buf         = fk_test_dev_alloc(4 << 20);
    e.host_cs[0]  = 3, e.host_cs[1] = 40;
    void *ws      = fk_test_dev_alloc(1 << 20);
    bool  ok      = e.buf && ws && fk_test_h2d(e.buf, e.host_cs, sizeof e.host_cs);
    if (!ok) {
        fk_test_fail("KVCACHE_BAD(backend=cuda)", "device allocation or copy failed");
        fk_test_dev_free(e.buf), fk_test_dev_free(ws);
        return;
    }
    fk_attn_kvcache_args a = cuda_base(&e, FK_DTYPE_F16);
    cuda_expect(ctx, "base case is valid", &a, NULL, 0, FK_STATUS_SUCCESS);
    a.q.data = e.host_q;
    cuda_expect(ctx, "q.data is host memory in a CUDA descriptor", &a, NULL, 0, FK_STATUS_BAD_PARAM_DEVICE_MISMATCH);
    a = cuda_base(&e, FK_DTYPE_F16);
    a.cache_seqlens = fk_tensor_make(e.host_cs, FK_DTYPE_INT32, cpu_dev, 1, (int64_t[]){2});
    cuda_expect(ctx, "cache_seqlens on the CPU, context on CUDA", &a, NULL, 0, FK_STATUS_BAD_PARAM_DEVICE_MISMATCH);
    a = cuda_base(&e, FK_DTYPE_F16);
    a.block_table = fk_tensor_make(e.host_cs, FK_DTYPE_INT32, cpu_dev, 2, (int64_t[]){2, 1});
    cuda_expect(ctx, "block_table on the CPU, context on CUDA", &a, NULL, 0, FK_STATUS_BAD_PARAM_DEVICE_MISMATCH);
    a = cuda_base(&e, FK_DTYPE_F64);
    cuda_expect(ctx, "f64", &a, NULL, 0, FK_STATUS_NOT_SUPPORTED_DTYPE);
    // Split-KV: the size query gives the partials' bytes; one byte less is too small, NULL is a null pointer.
    a            = cuda_base(&e, FK_DTYPE_F16);
    a.num_splits = 2;
    size_t    need = 0;
    fk_status s    = fk_attn_kvcache_workspace_size(ctx, &a, &need);
    const char *sig = "KVCACHE_BAD(backend=cuda,split workspace size query)";
    if (fk_test_selected(sig, FK_DEVICE_CUDA))
        fk_test_check(s == FK_STATUS_SUCCESS && need > 0 && need <= (1 << 20), sig, fk_last_error_message());
    if (s == FK_STATUS_SUCCESS && need > 0 && need <= (1 << 20)) {
        cuda_expect(ctx, "split workspace one byte short", &a, ws, need - 1, FK_STATUS_WORKSPACE_TOO_SMALL);
        cuda_expect(ctx, "split workspace NULL", &a, NULL, need, FK_STATUS_BAD_PARAM_NULL_POINTER);
        cuda_expect(ctx, "split workspace exact", &a, ws, need, FK_STATUS_SUCCESS);
        cuda_expect(ctx, "split workspace at an odd address", &a, (char *)ws + 3, need, FK_STATUS_SUCCESS);
    }
    sig = "KVCACHE_BAD(backend=cuda,the device reports no error after the calls)";
    if (fk_test_selected(sig, FK_DEVICE_CUDA)) fk_test_check(fk_test_dev_sync(), sig, "cudaDeviceSynchronize");
    fk_test_dev_free(e.buf);
    fk_test_dev_free(ws);
}

// cache_seqlens, cache_batch_idx and block_table stay on the device, so the host cannot check them. The header's
// rule: a sequence whose values would address rows outside the cache has no keys (o = 0, lse = -inf, nothing
// appended); a key in a block outside [0, num_blocks) is skipped (not read, not written). No out-of-bounds
// access either way (compute-sanitizer memcheck runs this case too; a far index without the bound would fault,
// and the sync would report it).
static void run_cuda_bad_values(fk_context_t ctx) {
    const char *sig = "KVCACHE_BAD(backend=cuda,bad cache_seqlens / cache_batch_idx / block ids: no out-of-bounds access)";
    if (!fk_test_selected(sig, FK_DEVICE_CUDA)) return;
    const fk_device dev = {FK_DEVICE_CUDA, 0};
    enum { B = 4, SQ = 2, HQ = 4, HK = 2, D = 32, CAP = 100, E = 6, PAGE = 16, MAXB = 2, NBLK = 3 };
    const int64_t nq = B * SQ * HQ * D, nc = E * CAP * HK * D, nn = B * 1 * HK * D, npc = NBLK * PAGE * HK * D;
    float *hq = malloc(sizeof(float) * nq), *hc = malloc(sizeof(float) * nc), *hn = malloc(sizeof(float) * nn);
    float *ho = malloc(sizeof(float) * nq), *hl = malloc(sizeof(float) * B * HQ * SQ), *hk = malloc(sizeof(float) * nc);
    float *hv = malloc(sizeof(float) * nc);
    fk_rng rng;
    fk_rng_seed(&rng, 123);
    fk_fill_normal(hq, FK_DTYPE_F32, nq, 1.0, &rng, NULL);
    fk_fill_normal(hc, FK_DTYPE_F32, nc, 1.0, &rng, NULL);
    fk_fill_normal(hn, FK_DTYPE_F32, nn, 1.0, &rng, NULL);
    // Sequence 0 is valid; 1 leaves no room for the new row; 2 is negative; 3 has an entry past the cache.
    const int32_t cs[B] = {5, CAP, -4, 7}, bidx[B] = {4, 1, 2, 1 << 30};
    // Paged: the second block of each sequence is outside [0, NBLK), and both appends land in it.
    const int32_t pcs[2] = {20, 20}, bt[2 * MAXB] = {0, 1 << 30, 2, -7};
    void *dq = fk_test_dev_alloc(sizeof(float) * nq), *dout = fk_test_dev_alloc(sizeof(float) * nq);
    void *dl = fk_test_dev_alloc(sizeof(float) * B * HQ * SQ), *dk = fk_test_dev_alloc(sizeof(float) * nc);
    void *dv = fk_test_dev_alloc(sizeof(float) * nc), *dn = fk_test_dev_alloc(sizeof(float) * nn);
    void *dcs = fk_test_dev_alloc(sizeof cs), *dbi = fk_test_dev_alloc(sizeof bidx), *dbt = fk_test_dev_alloc(sizeof bt);
    void *ws = fk_test_dev_alloc(1 << 20);
    char  detail[400] = "";
    bool  ok = dq && dout && dl && dk && dv && dn && dcs && dbi && dbt && ws && fk_test_h2d(dq, hq, sizeof(float) * nq) &&
              fk_test_h2d(dk, hc, sizeof(float) * nc) && fk_test_h2d(dv, hc, sizeof(float) * nc) &&
              fk_test_h2d(dn, hn, sizeof(float) * nn) && fk_test_h2d(dcs, cs, sizeof cs) && fk_test_h2d(dbi, bidx, sizeof bidx);
    for (int splits = 1; splits <= 3 && ok; splits += 2) {
        fk_attn_kvcache_args a;
        fk_attn_kvcache_args_init(&a);
        a.q               = fk_tensor_make(dq, FK_DTYPE_F32, dev, 4, (int64_t[]){B, SQ, HQ, D});
        a.o               = fk_tensor_make(dout, FK_DTYPE_F32, dev, 4, (int64_t[]){B, SQ, HQ, D});
        a.lse             = fk_tensor_make(dl, FK_DTYPE_F32, dev, 3, (int64_t[]){B, HQ, SQ});
        a.k_cache         = fk_tensor_make(dk, FK_DTYPE_F32, dev, 4, (int64_t[]){E, CAP, HK, D});
        a.v_cache         = fk_tensor_make(dv, FK_DTYPE_F32, dev, 4, (int64_t[]){E, CAP, HK, D});
        a.k               = fk_tensor_make(dn, FK_DTYPE_F32, dev, 4, (int64_t[]){B, 1, HK, D});
        a.v               = fk_tensor_make(dn, FK_DTYPE_F32, dev, 4, (int64_t[]){B, 1, HK, D});
        a.cache_seqlens   = fk_tensor_make(dcs, FK_DTYPE_INT32, dev, 1, (int64_t[]){B});
        a.cache_batch_idx = fk_tensor_make(dbi, FK_DTYPE_INT32, dev, 1, (int64_t[]){B});
        a.num_splits      = splits;
        size_t need = 0;
        ok = fk_test_h2d(dk, hc, sizeof(float) * nc) && fk_test_h2d(dv, hc, sizeof(float) * nc) &&
             fk_attn_kvcache_workspace_size(ctx, &a, &need) == FK_STATUS_SUCCESS && need <= (1 << 20) &&
             fk_attn_fwd_kvcache(ctx, &a, ws, need, NULL) == FK_STATUS_SUCCESS && fk_test_dev_sync() &&
             fk_test_d2h(ho, dout, sizeof(float) * nq) && fk_test_d2h(hl, dl, sizeof(float) * B * HQ * SQ) &&
             fk_test_d2h(hk, dk, sizeof(float) * nc) && fk_test_d2h(hv, dv, sizeof(float) * nc);
        if (!ok) {
            snprintf(detail, sizeof detail, "contiguous, %d split(s): the call or the device failed: %s", splits,
                     fk_last_error_message());
            break;
        }
        // Sequence 0: finite; 1..3: o = 0, lse = -inf. Caches: only sequence 0's row 5 of entry 4 changed.
        for (int64_t b = 0; b < B && ok; b++)
            for (int64_t x = 0; x < SQ * HQ * D && ok; x++) {
                const float v = ho[b * SQ * HQ * D + x], l = hl[b * HQ * SQ + x / D % (HQ * SQ)];
                ok = b == 0 ? isfinite(v) && isfinite(l) : v == 0.0f && l == -INFINITY;
            }
        for (int64_t x = 0; x < nc && ok; x++) {
            const int64_t entry = x / (CAP * HK * D), row = x / (HK * D) % CAP;
            const float   want  = entry == 4 && row == 5 ? hn[x % (HK * D)] : hc[x];
            ok = hk[x] == want && hv[x] == want;
        }
        if (!ok) snprintf(detail, sizeof detail, "contiguous, %d split(s): outputs or caches differ from the rule", splits);
    }
    // Paged, with block ids outside [0, NBLK): the call succeeds, nothing is written to the caches (both appends
    // land in bad blocks), every row sees keys of a good block, so o and lse are finite.
    if (ok) {
        fk_attn_kvcache_args a;
        fk_attn_kvcache_args_init(&a);
        a.q             = fk_tensor_make(dq, FK_DTYPE_F32, dev, 4, (int64_t[]){2, SQ, HQ, D});
        a.o             = fk_tensor_make(dout, FK_DTYPE_F32, dev, 4, (int64_t[]){2, SQ, HQ, D});
        a.lse           = fk_tensor_make(dl, FK_DTYPE_F32, dev, 3, (int64_t[]){2, HQ, SQ});
        a.k_cache       = fk_tensor_make(dk, FK_DTYPE_F32, dev, 4, (int64_t[]){NBLK, PAGE, HK, D});
        a.v_cache       = fk_tensor_make(dv, FK_DTYPE_F32, dev, 4, (int64_t[]){NBLK, PAGE, HK, D});
        a.k             = fk_tensor_make(dn, FK_DTYPE_F32, dev, 4, (int64_t[]){2, 1, HK, D});
        a.v             = fk_tensor_make(dn, FK_DTYPE_F32, dev, 4, (int64_t[]){2, 1, HK, D});
        a.cache_seqlens = fk_tensor_make(dcs, FK_DTYPE_INT32, dev, 1, (int64_t[]){2});
        a.block_table   = fk_tensor_make(dbt, FK_DTYPE_INT32, dev, 2, (int64_t[]){2, MAXB});
        ok = fk_test_h2d(dcs, pcs, sizeof pcs) && fk_test_h2d(dbt, bt, sizeof bt) &&
             fk_test_h2d(dk, hc, sizeof(float) * npc) && fk_test_h2d(dv, hc, sizeof(float) * npc) &&
             fk_attn_fwd_kvcache(ctx, &a, NULL, 0, NULL) == FK_STATUS_SUCCESS && fk_test_dev_sync() &&
             fk_test_d2h(ho, dout, sizeof(float) * 2 * SQ * HQ * D) && fk_test_d2h(hl, dl, sizeof(float) * 2 * HQ * SQ) &&
             fk_test_d2h(hk, dk, sizeof(float) * npc) && fk_test_d2h(hv, dv, sizeof(float) * npc);
        if (!ok) snprintf(detail, sizeof detail, "paged: the call or the device failed: %s", fk_last_error_message());
        for (int64_t x = 0; x < 2 * SQ * HQ * D && ok; x++) ok = isfinite(ho[x]) && isfinite(hl[x / D % (2 * HQ * SQ)]);
        for (int64_t x = 0; x < npc && ok; x++) ok = hk[x] == hc[x] && hv[x] == hc[x];
        if (ok) snprintf(detail, sizeof detail, "the rule holds; the device reports no error");
        else if (!detail[0]) snprintf(detail, sizeof detail, "paged: outputs or caches differ from the rule");
    }
    fk_test_check(ok, sig, detail);
    void *all[] = {dq, dout, dl, dk, dv, dn, dcs, dbi, dbt, ws};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) fk_test_dev_free(all[i]);
    free(hq), free(hc), free(hn), free(ho), free(hl), free(hk), free(hv);
}

int main(int argc, char **argv) {
    fk_test_init(argc, argv, "test_kvcache");
    fk_context_t cpu = NULL;
    if (fk_context_init(cpu_dev, NULL, &cpu) != FK_STATUS_SUCCESS) {
        fk_test_fail("KVCACHE(backend=cpu)", fk_last_error_message());
        return fk_test_finish();
    }
    static kv_case cases[64];
    const int      ncases = build_cases(cases);
    static const fk_dtype dts[] = {FK_DTYPE_F32, FK_DTYPE_F16, FK_DTYPE_BF16, FK_DTYPE_F64};
    uint64_t seed = 7;
    for (int di = 0; di < 4; di++)
        for (int ci = 0; ci < ncases; ci++) run_case(cpu, dts[di], &cases[ci], seed++);

    fk_build_info info;
    fk_get_build_info(&info);
    static const char *caps[] = {"256", "0"}, *labels[] = {"avx2", "portable"};
    for (int s = 0; s < 2; s++) {
        if (atoi(caps[s]) >= info.cpu_simd) continue;
        setenv("FK_CPU_SIMD_MAX", caps[s], 1);
        simd_label = labels[s];
        for (int ci = 0; ci < ncases; ci++)
            if (cases[ci].simd)
                for (int di = 0; di < 3; di += 2) run_case(cpu, dts[di], &cases[ci], seed++);
        unsetenv("FK_CPU_SIMD_MAX");
        simd_label = "native";
    }

    // A 2-thread context: the negative tests' fixed 1 MiB workspace holds its scratch; a few cases again.
    fk_context_t two = NULL, one = NULL;
    if (fk_context_init(cpu_dev, &(fk_context_options){2}, &two) == FK_STATUS_SUCCESS &&
        fk_context_init(cpu_dev, &(fk_context_options){1}, &one) == FK_STATUS_SUCCESS) {
        run_negative(two);
        for (int ci = 0; ci < 3; ci++) run_case(two, FK_DTYPE_F32, &cases[ci], seed++);
        // Split-KV: every explicit num_splits on 2 threads, checked bit for bit against 1 thread; then the
        // backend's choice (which follows the thread count) on 1, 2 and the default number of threads.
        static kv_case splits[128];
        const int      nsplit = build_split_cases(splits);
        static const int explicit_splits[] = {1, 2, 3, 7};
        static const fk_dtype sdts[] = {FK_DTYPE_F32, FK_DTYPE_BF16};
        for (int si = 0; si < 4; si++) {
            g_splits = explicit_splits[si];
            g_twin   = one;
            for (int di = 0; di < 2; di++)
                for (int ci = 0; ci < nsplit; ci++) run_case(two, sdts[di], &splits[ci], seed++);
        }
        g_splits = 0;
        g_twin   = NULL;
        for (int di = 0; di < 2; di++)
            for (int ci = 0; ci < nsplit; ci++) {
                run_case(two, sdts[di], &splits[ci], seed++);
                if (ci % 8 == 0) run_case(one, sdts[di], &splits[ci], seed++);
            }
        // f16, f64 (never split) and the narrower SIMD paths with an explicit split, a few cases each.
        g_splits = 3;
        for (int ci = 0; ci < nsplit; ci += 5) {
            run_case(two, FK_DTYPE_F16, &splits[ci], seed++);
            run_case(two, FK_DTYPE_F64, &splits[ci], seed++);
        }
        g_splits = 0;
    } else fk_test_fail("KVCACHE_BAD(backend=cpu,2-thread context)", fk_last_error_message());
    fk_context_free(two);
    fk_context_free(one);

    const char *why = NULL;
    if (fk_test_have_cuda(&why)) {
        fk_context_t cuda = NULL;
        if (fk_context_init((fk_device){FK_DEVICE_CUDA, 0}, NULL, &cuda) == FK_STATUS_SUCCESS) {
            run_cuda_cases(cuda, cases, ncases, &seed);
            run_cuda_negative(cuda);
            run_cuda_bad_values(cuda);
        } else fk_test_skip("KVCACHE(backend=cuda)", fk_last_error_message());
        fk_context_free(cuda);
    } else if (fk_test_selected("KVCACHE(backend=cuda)", FK_DEVICE_CUDA)) fk_test_skip("KVCACHE(backend=cuda)", why);

    fk_context_free(cpu);
    return fk_test_finish();
}
