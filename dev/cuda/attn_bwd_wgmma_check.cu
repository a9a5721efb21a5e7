/*
 * attn_bwd_wgmma_check.cu — dev only: correctness, determinism and timing of the Hopper wgmma backward main
 * kernel (src/cuda/attn_bwd_wgmma.cuh, the instances attn_bwd.cu launches) between production's prep and convert
 * kernels, beside the Ampere-path kernel bwd_tc_kernel.
 *
 * Verdict on the kernel's current schedule (H200, 2026-11-30, dev/cuda/wgmma_bwd_run.sh): every check passes,
 * memcheck and racecheck clean. Run by dev/cuda/wgmma_bwd_run.sh.
 *
 *   attn_bwd_wgmma_check check [filter]  D 64/128 x bf16/fp16 x causal or not x (Sq, Sk) in {(1,1), (17,17),
 *                                        (128,128), (1000,1000), (300,1000), (1000,300), (2048,2048)} x GQA 1:1
 *                                        and 4:1 (batch 2, 1 at 2048), plus local windows and deterministic
 *                                        cases (deterministic: a second run must be bit-identical); dQ, dK, dV
 *                                        against a float64 GPU reference; one PASS/FAIL line per case
 *   attn_bwd_wgmma_check small           2 small cases per D x dtype (for compute-sanitizer)
 *   attn_bwd_wgmma_check time            bf16, D 64/128, S 2048/4096/8192, H 16, B*S = 32768, causal and not:
 *                                        ms and TFLOP/s of bwd_tc and of this kernel (2.5 x 4 B H S^2 D, halved
 *                                        when causal; median of 20, CUDA events around prep + main + convert),
 *                                        the speedup over bwd_tc (launch_bwd_tc with BwdTile<D>, "x tc"), and
 *                                        the largest difference from bwd_tc (a sanity check at sizes `check`
 *                                        does not reach); then a line per head dim: the geometric-mean "x tc"
 * Paths: "wgmma" (launch_bwd_wgmma, what attn_bwd.cu launches; the only one `check` and `small` run) and "bwd_tc"
 * (the reference of `time`, bf16 only). A case the kernel did not support would print "SKIP ... not supported".
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

static const char *path_name(bool tc) { return tc ? "bwd_tc" : "wgmma"; }

// prep -> main (launch_bwd_wgmma, or with tc production's bwd_tc_kernel, bf16 only) -> convert; attn_bwd.cu's launch().
static cudaError_t run_bwd(const fk_attn_problem &p, const BwdParams &f, const Ws &l, bool tc, cudaStream_t st) {
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
    if (!tc) {
        if (p.head_dim == 64) e = bf16 ? fk_wg::launch_bwd_wgmma<64, true>(f, hkv, st) : fk_wg::launch_bwd_wgmma<64, false>(f, hkv, st);
        else if (p.head_dim == 128) e = bf16 ? fk_wg::launch_bwd_wgmma<128, true>(f, hkv, st) : fk_wg::launch_bwd_wgmma<128, false>(f, hkv, st);
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

// The wgmma kernel on one case against the float64 reference (twice when deterministic: bit-identical).
static int run_case(const Case &c, uint64_t seed, bool verbose) {
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
    std::vector<uint8_t> got[3];
    int         runs = c.det ? 2 : 1, differ = 0;
    cudaError_t e = cudaSuccess;
    for (int run = 0; run < runs && e == cudaSuccess; ++run) {
        for (int t = 0; t < 3; ++t) fill_bytes<<<256, 256>>>((uint8_t *)outs[t], counts[t] * es, 0xff);
        fill_bytes<<<256, 256>>>((uint8_t *)w, (int64_t)l.total, 0xff); // the kernels must not trust the workspace
        e = run_bwd(p, f, l, false, 0);
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
        printf("SKIP %s %s: not supported by this kernel (cudaErrorNotSupported)\n", s, path_name(false));
        cudaGetLastError();
    } else if (e != cudaSuccess) {
        printf("FAIL %s %s: CUDA error %s\n", s, path_name(false), cudaGetErrorString(e));
        fflush(stdout);
        exit(3); // a sticky error (illegal address, ...): nothing after it can be trusted
    } else {
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
        if (!ok_all || verbose) printf("%s %s %s:%s\n", ok_all ? "PASS" : "FAIL", s, path_name(false), line.c_str());
        else printf("PASS %s %s\n", s, path_name(false));
        bad = !ok_all;
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
    // Walks of 4 and up to 6 steps: the ring of 3 Q / dO slots is reloaded (step it + 3) in both.
    for (int D : {64, 128})
        for (bool bf16 : {true, false}) {
            bad += run_case({bf16, 2, 70, 150, 4, 2, D, 1, -1, -1, 0}, seed++, true);
            bad += run_case({bf16, 1, 150, 140, 2, 1, D, 1, -1, -1, 1}, seed++, true);
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

// Random inputs (o random, lse = log S: finite, roughly normalised rows); bwd_tc (production's mma.sync kernel)
// and then this kernel on the same problem, and the largest |wgmma - bwd_tc| of each gradient relative to bwd_tc's
// largest |value| (a sanity check at sizes that `check` does not reach; the two differ by rounding only). One line
// per path: "x tc" = bwd_tc ms / path ms (above 1: the path is faster). A closing line per head dim gives the
// geometric mean, min and max of the wgmma kernel's "x tc" over its six shapes.
// Registers, local memory and blocks an SM of the bf16 instance as the device sees them (the driver picks the
// shared-memory carveout, so it is checked, not assumed).
template <int D> static void occupancy_line() {
    using S = fk_wg::BwdWgShape<D>;
    void (*k)(const BwdParams) = fk_wg::bwd_wgmma_kernel<D, true>;
    CK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, S::SMEM));
    int nb = 0;
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&nb, k, S::NT, S::SMEM));
    cudaFuncAttributes a;
    CK(cudaFuncGetAttributes(&a, k));
    printf("  D %3d: %3d threads, %3d registers, %4zu B local, %3d KB smem -> %d blocks/SM (%2d warps)%s\n", D, S::NT,
           a.numRegs, a.localSizeBytes, S::SMEM / 1024, nb, nb * S::NT / 32, nb < 1 ? "  DOES NOT FIT" : "");
}

static int cmd_time() {
    printf("bf16 instances (cudaFuncGetAttributes, cudaOccupancyMaxActiveBlocksPerMultiprocessor):\n");
    occupancy_line<64>();
    occupancy_line<128>();
    printf("%-4s %-5s %-5s %-2s %-6s | %8s %7s | %6s | %s\n", "D", "S", "BxH", "c", "path", "ms", "TFLOP/s", "x tc",
           "max|path - bwd_tc|/max|bwd_tc| dq dk dv");
    int                 bad = 0;
    std::vector<double> lg[2]; // [D = 64, 128]: log(x tc) of the wgmma kernel
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
                std::vector<uint16_t> tc[3], cur(n);
                float                 ms_tc = 0;
                for (bool path_tc : {true, false}) { // bwd_tc first: the wgmma kernel is compared with it
                    cudaError_t e  = cudaSuccess;
                    const float ms = time_ms([&] {
                        if (e == cudaSuccess) e = run_bwd(p, f, l, path_tc, 0);
                    }, 20);
                    const std::string shape = std::to_string(B) + "x" + std::to_string(H);
                    if (e != cudaSuccess) {
                        printf("%-4d %-5d %-5s %-2d %-6s | FAILED: %s\n", D, S, shape.c_str(), causal, path_name(path_tc),
                               cudaGetErrorString(e));
                        if (e != cudaErrorNotSupported) return 1; // a sticky error: nothing after it is trustworthy
                        cudaGetLastError();
                        ++bad;
                        continue;
                    }
                    CK(cudaDeviceSynchronize());
                    if (path_tc) ms_tc = ms;
                    void  *outs[3] = {dq, dk, dv};
                    double rel[3]  = {0, 0, 0};
                    bool   ok      = true;
                    for (int t = 0; t < 3; ++t) {
                        if (path_tc) {
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
                    if (!path_tc) snprintf(cmp, sizeof cmp, "%.1e %.1e %.1e%s", rel[0], rel[1], rel[2], ok ? "" : "  DIFFERS");
                    printf("%-4d %-5d %-5s %-2d %-6s | %8.3f %7.1f | %6.3f | %s\n", D, S, shape.c_str(), causal,
                           path_name(path_tc), ms, flops / ms * 1e-9, ms_tc / ms, cmp);
                    if (!path_tc && ms_tc > 0) lg[D == 128].push_back(log(ms_tc / ms));
                    fflush(stdout);
                }
                for (void *x : {q, k, v, o, dO, dq, dk, dv, (void *)lse, w}) cudaFree(x);
            }
    for (int di = 0; di < 2; ++di) {
        const std::vector<double> &l = lg[di];
        if (l.empty()) continue;
        double sum = 0, mn = INFINITY, mx = -INFINITY;
        for (double x : l) sum += x, mn = std::min(mn, x), mx = std::max(mx, x);
        printf("D = %d, wgmma x tc (bwd_tc ms / wgmma ms) over the %zu shapes: geomean %.3f, min %.3f, max %.3f\n",
               di ? 128 : 64, l.size(), exp(sum / l.size()), exp(mn), exp(mx));
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
    if (!strcmp(cmd, "time")) return cmd_time();
    fprintf(stderr, "usage: %s check [filter] | checkv [filter] | small | time\n", argv[0]);
    return 2;
}
