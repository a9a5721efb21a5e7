/*
 * attn_bwd_wgmma_check.cu — dev only: correctness, determinism and timing of the Hopper wgmma backward main
 * kernel (src/cuda/attn_bwd_wgmma.cuh) between production's prep and convert kernels.
 *
 * Verdicts (H200, 2026-11-30, third session, docs/PERF.md): v0 and v1 pass all 256 checks, memcheck and
 * racecheck clean; v1 is production at D = 64/128. The D = 64 candidates (mb2, mb2s, n64, n64m3) and schedule
 * variant 3 ("v3", software-pipelined steps, D = 64 and 128) have not run yet (docs/GPU_QUEUE.md). Run by
 * dev/cuda/wgmma_bwd_run.sh.
 *
 *   attn_bwd_wgmma_check check [filter]  D 64/128 x bf16/fp16 x causal or not x (Sq, Sk) in {(1,1), (17,17),
 *                                        (128,128), (1000,1000), (300,1000), (1000,300), (2048,2048)} x GQA 1:1
 *                                        and 4:1 (batch 2, 1 at 2048), plus local windows and deterministic
 *                                        cases (deterministic: a second run must be bit-identical); dQ, dK, dV
 *                                        against a float64 GPU reference; one PASS/FAIL line per case and path
 *   attn_bwd_wgmma_check small           the v1 / v3 instances on 2 small cases each (D x dtype), and one small
 *                                        D = 64 case per candidate (for compute-sanitizer)
 *   attn_bwd_wgmma_check time [skip] [v0] bf16, D 64/128, S 2048/4096/8192, H 16, B*S = 32768, causal and not:
 *                                        per path ms and TFLOP/s (2.5 x 4 B H S^2 D, halved when causal; median
 *                                        of 20, CUDA events around prep + main + convert), speedups over this
 *                                        kernel's production instance ("x v1") and over production's bwd_tc_kernel
 *                                        (launch_bwd_tc with BwdTile<D>, "x tc"), and the largest difference from
 *                                        bwd_tc (a sanity check at sizes `check` does not reach); then a table
 *                                        per head dim of each path's geometric-mean "x v1" (v0 only with "v0")
 * Paths (one PASS/FAIL line each): "v0" / "v1" / "v3" = the schedule variants of the production tile (v1 is what
 * attn_bwd.cu launches; v3 the software-pipelined candidate); at D = 64 also the tile / occupancy candidates of
 * g_cands below ("mb2", "mb2s", "n64", "n64m3"; attn_bwd_wgmma.cuh, BwdWgShape, says what each is). All of them
 * support every case here, the deterministic ones included; one that did not would print "SKIP ... not supported".
 *
 * The float64 reference (ref_run, compare, lp_tol) is attn_bwd_ref.cuh, shared with dev/cuda/attn_bwd_check.cu; o
 * and lse come from the reference forward. Tolerance (docs/HELPERS_COMMON.md): max_abs <= 2 * max_abs of the naive
 * same-dtype backward (P, dP, dS and the gradients rounded to the dtype) + half an ulp of max|ref| + 1e-4.
 * Gradients and the workspace are poisoned (0xff bytes: NaN) first; NaN/Inf fails.
 */
#include "../../src/core/attn_internal.h"
#include "../../src/cuda/attn_bwd_wgmma.cuh"
#include "attn_bwd_ref.cuh" // float64 reference, compare, tolerance; CK, time_ms

#include <algorithm>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <string>
#include <functional>
#include <vector>

// ---- the path under test: production prep -> bwd_wgmma_kernel (or production's bwd_tc_kernel) -> convert ----

using fk_cuda::BwdParams;

static int g_sms = 132;

static size_t a256(size_t x) { return (x + 255) & ~(size_t)255; }

// attn_bwd.cu's workspace layout (dq_acc, dsum, lsef, sem), the counters sized for query blocks of bm rows.
struct Ws {
    size_t dq_acc, dsum, lsef, sem, total;
    int    n_mblocks;
};
static Ws ws_layout(const fk_attn_problem &p, int bm) {
    Ws           l;
    const size_t rows = (size_t)p.total_q * (size_t)p.nheads_q;
    l.n_mblocks       = (int)((p.seqlen_q + bm - 1) / bm);
    l.dq_acc          = 0;
    l.dsum            = a256(rows * p.head_dim * sizeof(float));
    l.lsef            = l.dsum + a256(rows * sizeof(float));
    l.sem             = l.lsef + a256(rows * sizeof(float));
    l.total = l.sem + (p.deterministic ? a256((size_t)p.batch * p.nheads_q * l.n_mblocks * sizeof(int)) : 0);
    return l;
}

static bool aligned16(const void *ptr, int64_t s0, int64_t s1, int64_t s2) {
    return ((uintptr_t)ptr % 16 == 0) && s0 % 8 == 0 && s1 % 8 == 0 && s2 % 8 == 0;
}
static int clamp_window(int64_t w) { return w < 0 ? -1 : (int)std::min<int64_t>(w, (int64_t)1 << 29); }

// attn_bwd.cu's make_params (fp16/bf16 only; acc_d = head_dim: this harness runs D = 64 / 128 exactly).
static BwdParams make_params(const fk_attn_problem *p, const Ws &l, void *ws) {
    BwdParams f;
    memset(&f, 0, sizeof f);
    f.q = p->q, f.k = p->k, f.v = p->v, f.o = p->o, f.do_ = p->do_;
    f.dq = p->dq, f.dk = p->dk, f.dv = p->dv;
    f.lse  = (const float *)p->lse;
    f.q_bs = p->q_bs, f.q_rs = p->q_rs, f.q_hs = p->q_hs;
    f.k_bs = p->k_bs, f.k_rs = p->k_rs, f.k_hs = p->k_hs;
    f.v_bs = p->v_bs, f.v_rs = p->v_rs, f.v_hs = p->v_hs;
    f.o_bs = p->o_bs, f.o_rs = p->o_rs, f.o_hs = p->o_hs;
    f.do_bs = p->do_bs, f.do_rs = p->do_rs, f.do_hs = p->do_hs;
    f.dq_bs = p->dq_bs, f.dq_rs = p->dq_rs, f.dq_hs = p->dq_hs;
    f.dk_bs = p->dk_bs, f.dk_rs = p->dk_rs, f.dk_hs = p->dk_hs;
    f.dv_bs = p->dv_bs, f.dv_rs = p->dv_rs, f.dv_hs = p->dv_hs;
    f.lse_bs = p->lse_bs, f.lse_hs = p->lse_hs, f.lse_rs = p->lse_rs;
    f.cu_q = p->cu_seqlens_q, f.cu_k = p->cu_seqlens_k;
    f.batch = (int)p->batch, f.seqlen_q = (int)p->seqlen_q, f.seqlen_k = (int)p->seqlen_k;
    f.head_dim = (int)p->head_dim, f.nheads_q = (int)p->nheads_q;
    f.group        = (int)(p->nheads_q / p->nheads_kv);
    f.window_left  = clamp_window(p->window_left);
    f.window_right = clamp_window(p->window_right);
    f.scale        = p->scale;
    f.scale_log2   = p->scale * FK_BWD_LOG2E;
    f.transform    = (p->softcap > 0.f || p->alibi != NULL || !(p->scale > 0.f)) ? 1 : 0;
    f.vec_in = aligned16(p->q, p->q_bs, p->q_rs, p->q_hs) && aligned16(p->k, p->k_bs, p->k_rs, p->k_hs) &&
               aligned16(p->v, p->v_bs, p->v_rs, p->v_hs) && aligned16(p->do_, p->do_bs, p->do_rs, p->do_hs);
    f.vec_out = aligned16(p->dq, p->dq_bs, p->dq_rs, p->dq_hs) && aligned16(p->dk, p->dk_bs, p->dk_rs, p->dk_hs) &&
                aligned16(p->dv, p->dv_bs, p->dv_rs, p->dv_hs);
    f.deterministic = p->deterministic ? 1 : 0;
    char *w         = (char *)ws;
    f.dq_acc        = (float *)(w + l.dq_acc);
    f.dsum          = (float *)(w + l.dsum);
    f.lsef          = (float *)(w + l.lsef);
    f.sem           = p->deterministic ? (int *)(w + l.sem) : NULL;
    f.total_q       = p->total_q;
    f.total_k       = p->total_k;
    f.acc_d         = (int)p->head_dim;
    f.n_mblocks     = l.n_mblocks;
    return f;
}

static unsigned grid_1d(int64_t work, int per_block) {
    int64_t g = (work + per_block - 1) / per_block;
    if (g > (int64_t)g_sms * 16) g = (int64_t)g_sms * 16;
    return (unsigned)(g < 1 ? 1 : g);
}

template <int D, bool BF16> static cudaError_t launch_prod(const BwdParams &f, int hkv, cudaStream_t st) {
    using T = fk_cuda::BwdTile<D>;
    return fk_cuda::launch_bwd_tc<D, T::BM, T::BN, T::NW, T::MINB, BF16>(f, hkv, st);
}

// The schedule variants of the production tile (attn_bwd_wgmma.cuh), run_bwd's variants 0 .. NSCHED - 1, both
// head dims: "v0", "v1" (production) and "v3" (software-pipelined steps, the candidate of this change).
static constexpr int NSCHED = 3;
static const char *const g_sched_names[NSCHED] = {"v0", "v1", "v3"};
template <int D, bool BF16> static cudaError_t launch_wg(int variant, const BwdParams &f, int hkv, cudaStream_t st) {
    switch (variant) {
    case 0: return fk_wg::launch_bwd_wgmma<D, BF16, 0>(f, hkv, st);
    case 1: return fk_wg::launch_bwd_wgmma<D, BF16, 1>(f, hkv, st);
    case 2: return fk_wg::launch_bwd_wgmma<D, BF16, 3>(f, hkv, st);
    }
    return cudaErrorNotSupported;
}

// The D = 64 tile / occupancy candidates (attn_bwd_wgmma.cuh, BwdWgShape<64, C>), each a (C, V) pair; variant
// NSCHED + k of run_bwd below is g_cands[k]. Production at D = 64 is (C 0, V 1) = variant 1 ("v1").
struct Cand {
    const char *name;
    int         C, V;
    const char *what;
};
static constexpr Cand g_cands[] = {
    {"mb2", 1, 1, "production tile + schedule, __launch_bounds__(256, 2): 128 regs, spills"},
    {"mb2s", 2, 2, "__launch_bounds__(256, 2), dP^T issued after P (V 2), dS from packed P: 128 regs, small spill"},
    {"n64", 3, 1, "BN 64 keys, 1 warpgroup (128 threads), 2 blocks/SM, no spill"},
    {"n64m3", 4, 1, "BN 64, 1 warpgroup, __launch_bounds__(128, 3), dS from packed P: 168 regs"},
};
static constexpr int NCAND = (int)(sizeof g_cands / sizeof g_cands[0]);
static_assert(NCAND == 4, "launch_cand and cmd_time list every candidate by index");
static const char *variant_name(int variant) {
    return variant < 0 ? "bwd_tc" : variant < NSCHED ? g_sched_names[variant] : g_cands[variant - NSCHED].name;
}
template <bool BF16> static cudaError_t launch_cand(int k, const BwdParams &f, int hkv, cudaStream_t st) {
    switch (k) { // template arguments: one case per g_cands entry
    case 0: return fk_wg::launch_bwd_wgmma<64, BF16, g_cands[0].V, g_cands[0].C>(f, hkv, st);
    case 1: return fk_wg::launch_bwd_wgmma<64, BF16, g_cands[1].V, g_cands[1].C>(f, hkv, st);
    case 2: return fk_wg::launch_bwd_wgmma<64, BF16, g_cands[2].V, g_cands[2].C>(f, hkv, st);
    case 3: return fk_wg::launch_bwd_wgmma<64, BF16, g_cands[3].V, g_cands[3].C>(f, hkv, st);
    }
    return cudaErrorNotSupported;
}

// prep -> main (variant 0 .. NSCHED - 1: this kernel's schedule variants; NSCHED + k: candidate g_cands[k], D = 64 only; -1:
// production's bwd_tc_kernel, bf16 only) -> convert; attn_bwd.cu's launch().
static cudaError_t run_bwd(const fk_attn_problem &p, const BwdParams &f, const Ws &l, int variant, cudaStream_t st) {
    const bool bf16 = p.dtype == FK_DTYPE_BF16;
    cudaError_t e;
    if (p.total_q > 0) {
        const unsigned g = grid_1d(p.total_q * p.nheads_q, 8);
        if (bf16) fk_cuda::bwd_prep_kernel<2><<<g, 256, 0, st>>>(f);
        else fk_cuda::bwd_prep_kernel<1><<<g, 256, 0, st>>>(f);
        if ((e = cudaGetLastError()) != cudaSuccess) return e;
    }
    if (f.sem && (e = cudaMemsetAsync(f.sem, 0, l.total - l.sem, st)) != cudaSuccess) return e;
    const int hkv = (int)p.nheads_kv;
    if (variant >= NSCHED) {
        e = p.head_dim != 64 ? cudaErrorNotSupported
            : bf16 ? launch_cand<true>(variant - NSCHED, f, hkv, st) : launch_cand<false>(variant - NSCHED, f, hkv, st);
    } else if (variant >= 0) {
        if (p.head_dim == 64) e = bf16 ? launch_wg<64, true>(variant, f, hkv, st) : launch_wg<64, false>(variant, f, hkv, st);
        else if (p.head_dim == 128) e = bf16 ? launch_wg<128, true>(variant, f, hkv, st) : launch_wg<128, false>(variant, f, hkv, st);
        else e = cudaErrorNotSupported;
    } else {
        e = !bf16 ? cudaErrorNotSupported
            : p.head_dim == 64 ? launch_prod<64, true>(f, hkv, st)
            : p.head_dim == 128 ? launch_prod<128, true>(f, hkv, st) : cudaErrorNotSupported;
    }
    if (e != cudaSuccess) return e;
    if (p.total_q > 0) {
        const unsigned g = grid_1d(p.total_q * p.nheads_q * ((f.head_dim + 7) / 8), 256);
        if (bf16) fk_cuda::bwd_convert_kernel<2><<<g, 256, 0, st>>>(f);
        else fk_cuda::bwd_convert_kernel<1><<<g, 256, 0, st>>>(f);
        if ((e = cudaGetLastError()) != cudaSuccess) return e;
    }
    return cudaSuccess;
}

// ---- check ----------------------------------------------------------------------------------------------

struct Case {
    bool bf16;
    int  B, Sq, Sk, Hq, Hkv, D, causal, wl, wr, det;
};

static void sig(const Case &c, char *s, size_t n) {
    snprintf(s, n, "%s D%d B%d Sq%d Sk%d H%d/%d c%d w%d,%d det%d", c.bf16 ? "bf16" : "f16", c.D, c.B, c.Sq, c.Sk, c.Hq,
             c.Hkv, c.causal, c.wl, c.wr, c.det);
}

// Every variant selected by `mask` (bit v: run_bwd's variant v; candidates only at D = 64) against one reference.
static const unsigned ALL_VARIANTS = ~0u;
static int run_case(const Case &c, uint64_t seed, bool verbose, unsigned mask = ALL_VARIANTS) {
    char s[200];
    sig(c, s, sizeof s);
    const fk_dtype dt = c.bf16 ? FK_DTYPE_BF16 : FK_DTYPE_F16;
    const size_t   es = 2;
    const int64_t  tq = (int64_t)c.B * c.Sq, tk = (int64_t)c.B * c.Sk;
    const int64_t  q_rs = (int64_t)c.Hq * c.D, k_rs = (int64_t)c.Hkv * c.D;
    const int64_t  nq = tq * q_rs, nk = tk * k_rs, nl = (int64_t)c.Hq * tq;
    void *q, *k, *v, *o, *dO, *dq, *dk, *dv;
    float *lse;
    CK(cudaMalloc(&q, nq * es));
    CK(cudaMalloc(&o, nq * es));
    CK(cudaMalloc(&dO, nq * es));
    CK(cudaMalloc(&dq, nq * es));
    CK(cudaMalloc(&k, nk * es));
    CK(cudaMalloc(&v, nk * es));
    CK(cudaMalloc(&dk, nk * es));
    CK(cudaMalloc(&dv, nk * es));
    CK(cudaMalloc(&lse, nl * 4));
    fill_normal<<<256, 256>>>(q, dt, nq, seed * 5 + 1, 1.f);
    fill_normal<<<256, 256>>>(k, dt, nk, seed * 5 + 2, 1.f);
    fill_normal<<<256, 256>>>(v, dt, nk, seed * 5 + 3, 1.f);
    fill_normal<<<256, 256>>>(dO, dt, nq, seed * 5 + 4, 1.f);
    fill_bytes<<<256, 256>>>((uint8_t *)o, nq * es, 0xff);

    fk_attn_problem p;
    memset(&p, 0, sizeof p);
    p.dtype = dt, p.batch = c.B, p.seqlen_q = c.Sq, p.seqlen_k = c.Sk;
    p.nheads_q = c.Hq, p.nheads_kv = c.Hkv, p.head_dim = c.D, p.total_q = tq, p.total_k = tk;
    p.q = q, p.k = k, p.v = v, p.o = o, p.lse = lse, p.do_ = dO, p.dq = dq, p.dk = dk, p.dv = dv;
    p.q_rs = p.o_rs = p.do_rs = p.dq_rs = q_rs;
    p.k_rs = p.v_rs = p.dk_rs = p.dv_rs = k_rs;
    p.q_hs = p.o_hs = p.do_hs = p.dq_hs = p.k_hs = p.v_hs = p.dk_hs = p.dv_hs = c.D;
    p.q_bs = p.o_bs = p.do_bs = p.dq_bs = (int64_t)c.Sq * q_rs;
    p.k_bs = p.v_bs = p.dk_bs = p.dv_bs = (int64_t)c.Sk * k_rs;
    p.lse_bs = (int64_t)c.Hq * c.Sq, p.lse_hs = c.Sq, p.lse_rs = 1;
    p.scale         = 1.f / sqrtf((float)c.D);
    p.causal        = c.causal;
    p.window_left   = c.wl;
    p.window_right  = c.causal ? 0 : c.wr;
    p.deterministic = c.det;

    Ref r;
    const int64_t nrq = std::max<int64_t>(tq, 1) * c.Hq * c.D, nrk = std::max<int64_t>(tk, 1) * c.Hkv * c.D;
    ref_run(r, p, tq, tk);

    const Ws l = ws_layout(p, fk_wg::BwdWgShape<64>::BM);
    void    *w;
    CK(cudaMalloc(&w, l.total));
    const BwdParams f = make_params(&p, l, w);
    void *outs[3] = {dq, dk, dv};
    const int64_t counts[3] = {nq, nk, nk};
    int bad = 0;
    const int nvar = c.D == 64 ? NSCHED + NCAND : NSCHED;
    for (int variant = 0; variant < nvar; ++variant) { // schedule variants and candidates, one reference
        if (!(mask >> variant & 1)) continue;
        std::vector<uint8_t> got[3];
        int         runs = c.det ? 2 : 1, differ = 0;
        cudaError_t e = cudaSuccess;
        for (int run = 0; run < runs && e == cudaSuccess; ++run) {
            for (int t = 0; t < 3; ++t) fill_bytes<<<256, 256>>>((uint8_t *)outs[t], counts[t] * es, 0xff);
            fill_bytes<<<256, 256>>>((uint8_t *)w, (int64_t)l.total, 0xff); // the kernels must not trust the workspace
            e = run_bwd(p, f, l, variant, 0);
            if (e == cudaSuccess) e = cudaDeviceSynchronize();
            if (e != cudaSuccess) break;
            for (int t = 0; t < 3; ++t) {
                std::vector<uint8_t> cur(counts[t] * es);
                CK(cudaMemcpy(cur.data(), outs[t], cur.size(), cudaMemcpyDeviceToHost));
                if (run == 0) got[t].swap(cur);
                else differ += memcmp(cur.data(), got[t].data(), cur.size()) != 0;
            }
        }
        if (e == cudaErrorNotSupported) {
            printf("SKIP %s %s: not supported by this kernel / candidate (cudaErrorNotSupported)\n", s, variant_name(variant));
            cudaGetLastError();
            continue;
        }
        if (e != cudaSuccess) {
            printf("FAIL %s %s: CUDA error %s\n", s, variant_name(variant), cudaGetErrorString(e));
            fflush(stdout);
            exit(3); // a sticky error (illegal address, ...): nothing after it can be trusted
        }
        std::vector<double> h(std::max(nrq, nrk)), hl(std::max(nrq, nrk));
        const char *names[3] = {"dq", "dk", "dv"};
        double     *refs[3] = {r.dq, r.dk, r.dv}, *lps[3] = {r.dq_lp, r.dk_lp, r.dv_lp};
        std::string line;
        bool        ok_all = differ == 0;
        for (int t = 0; t < 3; ++t) {
            const bool    isq = t == 0;
            const int64_t ntok = isq ? tq : tk, n = isq ? nrq : nrk;
            CK(cudaMemcpy(h.data(), refs[t], n * 8, cudaMemcpyDeviceToHost));
            CK(cudaMemcpy(hl.data(), lps[t], n * 8, cudaMemcpyDeviceToHost));
            const Stat   st = compare(got[t], h, hl, dt, ntok, isq ? c.Hq : c.Hkv, c.D, isq ? q_rs : k_rs, 0);
            const double tol = lp_tol(st, c.bf16);
            const bool   ok = st.max_err <= tol && st.nonfinite == 0;
            ok_all &= ok;
            char buf[200];
            snprintf(buf, sizeof buf, " %s%s max_abs %.3g (naive %.3g, tol %.3g) ref %.3g nf %lld;", ok ? "" : "!",
                     names[t], st.max_err, st.max_lp, tol, st.max_ref, (long long)st.nonfinite);
            line += buf;
        }
        if (c.det) line += differ ? " !second run differs bitwise" : " second run bit-identical";
        if (!ok_all || verbose) printf("%s %s %s:%s\n", ok_all ? "PASS" : "FAIL", s, variant_name(variant), line.c_str());
        else printf("PASS %s %s\n", s, variant_name(variant));
        bad += !ok_all;
    }
    ref_free(r);
    for (void *x : {q, k, v, o, dO, dq, dk, dv, (void *)lse, w}) cudaFree(x);
    return bad;
}

static std::vector<Case> all_cases() {
    std::vector<Case> v;
    const int seqs[][2] = {{1, 1}, {17, 17}, {128, 128}, {1000, 1000}, {300, 1000}, {1000, 300}, {2048, 2048}};
    for (int D : {64, 128})
        for (bool bf16 : {true, false})
            for (int causal : {0, 1})
                for (const auto &sk : seqs)
                    for (int gqa : {1, 4}) {
                        const int B = sk[0] >= 2048 ? 1 : 2;
                        // bf16, B, Sq, Sk, Hq, Hkv, D, causal, wl, wr, det
                        v.push_back({bf16, B, sk[0], sk[1], gqa == 1 ? 2 : 4, gqa == 1 ? 2 : 1, D, causal, -1, -1, 0});
                    }
    for (int D : {64, 128})
        for (bool bf16 : {true, false}) {
            v.push_back({bf16, 2, 1000, 1000, 4, 1, D, 1, -1, -1, 1});  // deterministic, causal, GQA 4:1
            v.push_back({bf16, 1, 300, 1000, 2, 2, D, 0, -1, -1, 1});   // deterministic, Sq < Sk
            v.push_back({bf16, 1, 1000, 1000, 4, 2, D, 0, 100, 20, 0}); // local window
            v.push_back({bf16, 2, 1000, 300, 2, 1, D, 1, 50, -1, 0});   // causal + left window, Sq > Sk
        }
    return v;
}

static int cmd_check(const char *filter, bool verbose) {
    int      n = 0, bad = 0;
    uint64_t seed = 1;
    for (const Case &c : all_cases()) {
        char s[200];
        sig(c, s, sizeof s);
        ++seed;
        if (filter && !strstr(s, filter)) continue;
        bad += run_case(c, seed, verbose);
        ++n;
        fflush(stdout);
    }
    printf("check: %d cases, %d failed\n", n, bad);
    return bad ? 1 : 0;
}

static int cmd_small() {
    int      bad  = 0;
    uint64_t seed = 100;
    // v1 and v3 (v0, unchanged since its clean sanitizer runs in run 7, is left out for the sanitizers' time). The
    // walks are 4 and up to 6 steps long: v3's ring of 3 Q / dO slots is reloaded (step it + 3) in both.
    const unsigned v1v3 = 1u << 1 | 1u << 2;
    for (int D : {64, 128})
        for (bool bf16 : {true, false}) {
            bad += run_case({bf16, 2, 70, 150, 4, 2, D, 1, -1, -1, 0}, seed++, true, v1v3);
            bad += run_case({bf16, 1, 150, 140, 2, 1, D, 1, -1, -1, 1}, seed++, true, v1v3);
        }
    // One case per D = 64 candidate (sanitizers are slow): dtypes alternate, the even ones deterministic.
    for (int k = 0; k < NCAND; ++k) {
        const bool bf16 = k % 2 == 0;
        const Case c    = k % 2 == 0 ? Case{bf16, 1, 150, 140, 2, 1, 64, 1, -1, -1, 1} : Case{bf16, 2, 70, 150, 4, 2, 64, 1, -1, -1, 0};
        bad += run_case(c, seed++, true, 1u << (NSCHED + k));
    }
    printf("small: %d failed\n", bad);
    return bad ? 1 : 0;
}

// ---- timing ---------------------------------------------------------------------------------------------

__global__ void fill_f32(float *x, int64_t n, float v) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) x[i] = v;
}

static float bf2f(uint16_t x) {
    uint32_t u = (uint32_t)x << 16;
    float    f;
    memcpy(&f, &u, 4);
    return f;
}

// Random inputs (o random, lse = log S: finite, roughly normalised rows); every path on the same problem, then
// the largest |path - bwd_tc| of each gradient relative to bwd_tc's largest |value| (a sanity check at sizes
// that `check` does not reach; the paths differ by rounding only). Paths: bwd_tc (production's mma.sync kernel),
// v1 (this kernel's production instance), v3 (schedule 3), v0 only when asked (`time <skip> v0`: it lost to v1
// when v1 became production and is left out to keep wgmma_bwd_run.sh within its budget), and at D = 64 every
// candidate of g_cands. One line per path: "x v1" = v1 ms / path ms and "x tc" = bwd_tc ms / path ms (above 1:
// the path is faster). Closing tables give each path's geometric mean, min and max of "x v1" over the six shapes
// of each head dim.
// Registers, local memory and blocks an SM of one bf16 instance as the device sees them (the candidates exist for
// the blocks-an-SM number; the driver picks the shared-memory carveout, so it is checked, not assumed).
template <int D, int V, int C> static void occupancy_line(const char *name) {
    using S = fk_wg::BwdWgShape<D, C, V == 3>;
    void (*k)(const BwdParams);
    if constexpr (C == 0) k = fk_wg::bwd_wgmma_kernel<D, true, V>;
    else k = fk_wg::bwd_wgmma_cand_kernel<D, true, V, C>;
    CK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, S::SMEM));
    int nb = 0;
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&nb, k, S::NT, S::SMEM));
    cudaFuncAttributes a;
    CK(cudaFuncGetAttributes(&a, k));
    printf("  D %3d %-6s C %d V %d: %3d threads, %3d registers, %4zu B local, %3d KB smem -> %d blocks/SM (%2d warps)%s\n", D,
           name, C, V, S::NT, a.numRegs, a.localSizeBytes, S::SMEM / 1024, nb, nb * S::NT / 32,
           nb < S::MINB ? "  FEWER THAN __launch_bounds__ ASKED" : "");
}

// skip: comma-separated path names not to run (wgmma_bwd_run.sh passes the paths whose `check` hit a CUDA
// error: a sticky error would end this process and the rest of the table with it); bwd_tc and v1 always run.
// extra: "v0" adds schedule variant 0 to the paths.
static int cmd_time(const char *skip, const char *extra) {
    const bool with_v0 = extra && !strcmp(extra, "v0");
    auto skipped = [&](int path) {
        if (!skip || path == -1 || path == 1) return false;
        const std::string list = std::string(",") + skip + ",", name = std::string(",") + variant_name(path) + ",";
        return list.find(name) != std::string::npos;
    };
    printf("bf16 instances (cudaFuncGetAttributes, cudaOccupancyMaxActiveBlocksPerMultiprocessor):\n");
    occupancy_line<64, 0, 0>("v0");
    occupancy_line<64, 1, 0>("v1");
    occupancy_line<64, 3, 0>("v3");
    occupancy_line<64, g_cands[0].V, g_cands[0].C>(g_cands[0].name);
    occupancy_line<64, g_cands[1].V, g_cands[1].C>(g_cands[1].name);
    occupancy_line<64, g_cands[2].V, g_cands[2].C>(g_cands[2].name);
    occupancy_line<64, g_cands[3].V, g_cands[3].C>(g_cands[3].name);
    occupancy_line<128, 1, 0>("v1");
    occupancy_line<128, 3, 0>("v3");
    printf("%-4s %-5s %-5s %-2s %-6s | %8s %7s | %6s %6s | %s\n", "D", "S", "BxH", "c", "path", "ms", "TFLOP/s", "x v1",
           "x tc", "max|path - bwd_tc|/max|bwd_tc| dq dk dv");
    int                 bad = 0;
    std::vector<double> lg[2][NSCHED + NCAND]; // [D = 64, 128]: log(x v1) per variant
    for (int D : {64, 128})
        for (int S : {2048, 4096, 8192})
            for (int causal : {0, 1}) {
                const int     B = 32768 / S, H = 16;
                const int64_t n = (int64_t)B * S * H * D;
                void *q, *k, *v, *o, *dO, *dq, *dk, *dv;
                float *lse;
                for (void **x : {&q, &k, &v, &o, &dO, &dq, &dk, &dv}) CK(cudaMalloc(x, n * 2));
                CK(cudaMalloc(&lse, (int64_t)B * H * S * 4));
                fill_normal<<<1024, 256>>>(q, FK_DTYPE_BF16, n, 11, 1.f);
                fill_normal<<<1024, 256>>>(k, FK_DTYPE_BF16, n, 12, 1.f);
                fill_normal<<<1024, 256>>>(v, FK_DTYPE_BF16, n, 13, 1.f);
                fill_normal<<<1024, 256>>>(o, FK_DTYPE_BF16, n, 14, 0.1f);
                fill_normal<<<1024, 256>>>(dO, FK_DTYPE_BF16, n, 15, 1.f);
                fill_f32<<<1024, 256>>>(lse, (int64_t)B * H * S, logf((float)S));
                fk_attn_problem p;
                memset(&p, 0, sizeof p);
                p.dtype = FK_DTYPE_BF16, p.batch = B, p.seqlen_q = p.seqlen_k = S, p.nheads_q = p.nheads_kv = H;
                p.head_dim = D, p.total_q = p.total_k = (int64_t)B * S;
                p.q = q, p.k = k, p.v = v, p.o = o, p.do_ = dO, p.dq = dq, p.dk = dk, p.dv = dv, p.lse = lse;
                p.q_rs = p.o_rs = p.do_rs = p.dq_rs = p.k_rs = p.v_rs = p.dk_rs = p.dv_rs = (int64_t)H * D;
                p.q_hs = p.o_hs = p.do_hs = p.dq_hs = p.k_hs = p.v_hs = p.dk_hs = p.dv_hs = D;
                p.q_bs = p.o_bs = p.do_bs = p.dq_bs = p.k_bs = p.v_bs = p.dk_bs = p.dv_bs = (int64_t)S * H * D;
                p.lse_bs = (int64_t)H * S, p.lse_hs = S, p.lse_rs = 1;
                p.scale = 1.f / sqrtf((float)D), p.causal = causal, p.window_left = -1, p.window_right = causal ? 0 : -1;
                const Ws l = ws_layout(p, 64);
                void    *w;
                CK(cudaMalloc(&w, l.total));
                const BwdParams f = make_params(&p, l, w);
                const double flops = 2.5 * 4.0 * B * H * (double)S * S * D / (causal ? 2 : 1);
                std::vector<int> paths = {-1, 1, 2}; // bwd_tc first: every other path is compared with it; v1, v3
                if (with_v0) paths.push_back(0);
                if (D == 64)
                    for (int c = 0; c < NCAND; ++c) paths.push_back(NSCHED + c);
                std::vector<uint16_t> tc[3], cur(n);
                float                 ms_tc = 0, ms_v1 = 0;
                for (int path : paths) {
                    if (skipped(path)) continue;
                    cudaError_t e  = cudaSuccess;
                    const float ms = time_ms([&] {
                        if (e == cudaSuccess) e = run_bwd(p, f, l, path, 0);
                    }, 20);
                    const std::string shape = std::to_string(B) + "x" + std::to_string(H);
                    if (e != cudaSuccess) {
                        printf("%-4d %-5d %-5s %-2d %-6s | FAILED: %s\n", D, S, shape.c_str(), causal, variant_name(path),
                               cudaGetErrorString(e));
                        if (e != cudaErrorNotSupported) return 1; // a sticky error: nothing after it is trustworthy
                        cudaGetLastError();
                        ++bad;
                        continue;
                    }
                    CK(cudaDeviceSynchronize());
                    if (path == -1) ms_tc = ms;
                    if (path == 1) ms_v1 = ms;
                    void  *outs[3] = {dq, dk, dv};
                    double rel[3]  = {0, 0, 0};
                    bool   ok      = true;
                    for (int t = 0; t < 3; ++t) {
                        if (path == -1) {
                            tc[t].resize(n);
                            CK(cudaMemcpy(tc[t].data(), outs[t], n * 2, cudaMemcpyDeviceToHost));
                            continue;
                        }
                        CK(cudaMemcpy(cur.data(), outs[t], n * 2, cudaMemcpyDeviceToHost));
                        double md = 0, mp = 0;
                        for (int64_t i = 0; i < n; ++i) {
                            const double a = bf2f(cur[i]), b = bf2f(tc[t][i]);
                            md = std::isfinite(a) ? std::max(md, fabs(a - b)) : INFINITY;
                            mp = std::max(mp, fabs(b));
                        }
                        rel[t] = mp > 0 ? md / mp : md;
                        ok &= rel[t] < 2e-2; // bf16 rounding of P / dS and the outputs: ~1e-2 at most
                    }
                    bad += !ok;
                    char cmp[96] = "(reference)";
                    if (path != -1) snprintf(cmp, sizeof cmp, "%.1e %.1e %.1e%s", rel[0], rel[1], rel[2], ok ? "" : "  DIFFERS");
                    const double xv1 = ms_v1 > 0 ? ms_v1 / ms : 0.0;
                    char xs[16] = "     -"; // bwd_tc runs before v1
                    if (xv1 > 0) snprintf(xs, sizeof xs, "%6.3f", xv1);
                    printf("%-4d %-5d %-5s %-2d %-6s | %8.3f %7.1f | %s %6.3f | %s\n", D, S, shape.c_str(), causal,
                           variant_name(path), ms, flops / ms * 1e-9, xs, ms_tc / ms, cmp);
                    if (path >= 0 && xv1 > 0) lg[D == 128][path].push_back(log(xv1));
                    fflush(stdout);
                }
                for (void *x : {q, k, v, o, dO, dq, dk, dv, (void *)lse, w}) cudaFree(x);
            }
    for (int di = 0; di < 2; ++di) {
        printf("D = %d, x v1 (v1 ms / path ms; v1 = the production wgmma instance) over the 6 shapes:\n", di ? 128 : 64);
        printf("  %-6s %7s %7s %7s  %s\n", "path", "geomean", "min", "max", "what");
        for (int v = 0; v < NSCHED + NCAND; ++v) {
            const std::vector<double> &l = lg[di][v];
            if (l.empty()) continue;
            double sum = 0, mn = INFINITY, mx = -INFINITY;
            for (double x : l) sum += x, mn = std::min(mn, x), mx = std::max(mx, x);
            printf("  %-6s %7.3f %7.3f %7.3f  %s\n", variant_name(v), exp(sum / l.size()), exp(mn), exp(mx),
                   v == 0   ? "schedule variant 0"
                   : v == 1 ? "production"
                   : v == 2 ? "schedule 3: S^T, dP^T issued before dQ(it-1)'s wait and atomics, 1 barrier a step"
                            : g_cands[v - NSCHED].what);
        }
    }
    return bad ? 1 : 0;
}

int main(int argc, char **argv) {
    int            dev = 0;
    cudaDeviceProp pr;
    CK(cudaGetDevice(&dev));
    CK(cudaGetDeviceProperties(&pr, dev));
    g_sms = pr.multiProcessorCount;
    printf("device: %s (sm_%d%d, %d SMs)\n", pr.name, pr.major, pr.minor, g_sms);
    if (pr.major != 9) {
        printf("FAIL the wgmma kernel needs sm_90a\n");
        return 1;
    }
    const char *cmd = argc > 1 ? argv[1] : "check";
    if (!strcmp(cmd, "check")) return cmd_check(argc > 2 ? argv[2] : nullptr, false);
    if (!strcmp(cmd, "checkv")) return cmd_check(argc > 2 ? argv[2] : nullptr, true);
    if (!strcmp(cmd, "small")) return cmd_small();
    if (!strcmp(cmd, "time")) return cmd_time(argc > 2 ? argv[2] : nullptr, argc > 3 ? argv[3] : nullptr);
    fprintf(stderr, "usage: %s check [filter] | checkv [filter] | small | time [skip,paths|none] [v0]\n", argv[0]);
    return 2;
}
