/*
 * attn_fwd_wgmma_check.cu — dev only: correctness and timing of the wgmma forward prototype (attn_fwd_wgmma.cuh).
 *
 * Verdicts (H200, 2026-11-30, third session, docs/PERF.md): 102 of 102 cases, memcheck and racecheck clean;
 * the kernel is production; at D = 64 2 blocks an SM won (1.30-1.34x); D = 128 at BN 64 not yet timed.
 *
 *   attn_fwd_wgmma_check check [filter]  every case (D 64/128/256, bf16/fp16, causal or not, seqlen_q and
 *                                        seqlen_k in {1, 17, 128, 1000, 2048} incl. sq != sk both ways, GQA 4:1
 *                                        on half) against a float64 reference computed on the GPU; PASS/FAIL each,
 *                                        for production's tile ("prod") and each schedule ("pp0" .. "pp4",
 *                                        fwd_wgmma_main in attn_fwd_wgmma.cuh, built from attn_fwd_wgmma_pp.cu;
 *                                        production's own is one of pp0 / pp1), which also says whether its O is
 *                                        bitwise production's (expected: same arithmetic in the same order)
 *   attn_fwd_wgmma_check time [D]        bf16 TFLOP/s (4 B H Sq Sk D, halved when causal; median of 30, CUDA
 *                                        events), B*S = 32768, H = 16, S = 2048/4096/8192, causal and not; with
 *                                        the library linked (built with -DFK_WGMMA_PROD), the production forward
 *                                        (fk_cuda_attn_fwd) on the same inputs and the ratio prototype / production;
 *                                        then the tile alternatives (D 64, 128) and the schedules pp0 .. pp4 (every
 *                                        D), each with its ratio to the bucket's tile
 *   attn_fwd_wgmma_check small           one small case per kernel instance, every kernel of `check`, plus one
 *                                        multi-tile case per D (for compute-sanitizer)
 *
 * Tolerance (docs/HELPERS_COMMON.md): max_abs(O) <= 2 * max_abs of the naive same-dtype computation (P and O
 * rounded to the dtype) + 1e-4; LSE |err| <= 1e-4, -inf exactly where a row sees no key. Outputs are poisoned
 * with NaN first; NaN/Inf fails.
 */
#include "../../src/cuda/attn_fwd_wgmma.cuh"
#include "dev_common.h" // CK

#ifdef FK_WGMMA_PROD
#include "attn_check_common.cuh" // make_ctx (and the library's internal headers)
#endif

#include <algorithm>
#include <functional>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <string>
#include <vector>

using fk_wg::FwdParams;

// ---- device helpers: random fill, reference ----------------------------------------------------------------

__device__ __host__ inline uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}
__device__ inline double ld16(const uint16_t *p, bool bf16, int64_t i) {
    return bf16 ? (double)__bfloat162float(__ushort_as_bfloat16(p[i])) : (double)__half2float(__ushort_as_half(p[i]));
}
__device__ inline double rnd16(bool bf16, double x) {
    return bf16 ? (double)__bfloat162float(__float2bfloat16_rn((float)x)) : (double)__half2float(__float2half_rn((float)x));
}
// normal(0, 1) rounded to the dtype, never zero (a zero draw becomes 0.5).
__global__ void fill_normal(uint16_t *p, bool bf16, int64_t n, uint64_t seed) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const uint64_t h  = mix64(seed * 0x9e3779b97f4a7c15ull + (uint64_t)i);
        const double   u1 = ((h >> 11) + 1) * (1.0 / 9007199254740993.0), u2 = (mix64(h) >> 11) * (1.0 / 9007199254740992.0);
        float          x  = (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
        uint16_t       v  = bf16 ? __bfloat16_as_ushort(__float2bfloat16_rn(x)) : __half_as_ushort(__float2half_rn(x));
        if ((v & 0x7fff) == 0) v = bf16 ? 0x3f00 : 0x3800; // 0.5
        p[i] = v;
    }
}

struct Case {
    bool bf16;
    int  B, Sq, Sk, Hq, Hkv, D, causal;
};

// q, o (B, Sq, Hq, D), k, v (B, Sk, Hkv, D) contiguous; lse (B, Hq, Sq).
struct RefArgs {
    Case            c;
    const uint16_t *q, *k, *v;
    double         *o, *o_lp, *lse; // (B, Sq, Hq, D), same, (B, Hq, Sq)
    float           scale;
};

// One thread per (b, i, h): the bottom-right causal rule written out directly (not through key_range).
__global__ void ref_kernel(RefArgs a) {
    const Case   &c   = a.c;
    const int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (idx >= (int64_t)c.B * c.Sq * c.Hq) return;
    const int h = (int)(idx % c.Hq), i = (int)(idx / c.Hq % c.Sq), b = (int)(idx / ((int64_t)c.Hq * c.Sq));
    const int hk = h / (c.Hq / c.Hkv), D = c.D;
    const uint16_t *q  = a.q + (((int64_t)b * c.Sq + i) * c.Hq + h) * D;
    auto            kp = [&](int j) { return a.k + (((int64_t)b * c.Sk + j) * c.Hkv + hk) * D; };
    auto            vp = [&](int j) { return a.v + (((int64_t)b * c.Sk + j) * c.Hkv + hk) * D; };
    const int       jmax = c.causal ? min(c.Sk, i + c.Sk - c.Sq + 1) : c.Sk; // keys [0, jmax) visible
    auto            score = [&](int j) {
        double s = 0;
        for (int d = 0; d < D; ++d) s += ld16(q, c.bf16, d) * ld16(kp(j), c.bf16, d);
        return s * (double)a.scale;
    };
    double m = -INFINITY, l = 0;
    for (int j = 0; j < jmax; ++j) m = fmax(m, score(j));
    double acc[256], acc_lp[256];
    for (int d = 0; d < D; ++d) acc[d] = acc_lp[d] = 0;
    if (jmax > 0) {
        for (int j = 0; j < jmax; ++j) l += exp(score(j) - m);
        for (int j = 0; j < jmax; ++j) {
            const double e = exp(score(j) - m), plp = rnd16(c.bf16, e / l);
            for (int d = 0; d < D; ++d) {
                const double vv = ld16(vp(j), c.bf16, d);
                acc[d] += e * vv;
                acc_lp[d] += plp * vv;
            }
        }
    }
    double *o = a.o + idx * D, *olp = a.o_lp + idx * D; // idx = (b * Sq + i) * Hq + h: the row of (b, i, h)
    for (int d = 0; d < D; ++d) {
        o[d]   = jmax > 0 ? acc[d] / l : 0.0;
        olp[d] = rnd16(c.bf16, acc_lp[d]);
    }
    a.lse[((int64_t)b * c.Hq + h) * c.Sq + i] = jmax > 0 ? m + log(l) : -INFINITY;
}

// ---- host ----------------------------------------------------------------------------------------------------

static float h16(uint16_t x, bool bf16) {
    if (bf16) {
        uint32_t u = (uint32_t)x << 16;
        float    f;
        memcpy(&f, &u, 4);
        return f;
    }
    __half hh;
    memcpy(&hh, &x, 2);
    return __half2float(hh);
}

static FwdParams make_params(const Case &c, const void *q, const void *k, const void *v, void *o, float *lse) {
    FwdParams f;
    memset(&f, 0, sizeof f);
    f.q = q, f.k = k, f.v = v, f.o = o, f.lse = lse;
    f.q_rs = (int64_t)c.Hq * c.D, f.q_hs = c.D, f.q_bs = f.q_rs * c.Sq;
    f.o_rs = f.q_rs, f.o_hs = f.q_hs, f.o_bs = f.q_bs;
    f.k_rs = (int64_t)c.Hkv * c.D, f.k_hs = c.D, f.k_bs = f.k_rs * c.Sk;
    f.v_rs = f.k_rs, f.v_hs = f.k_hs, f.v_bs = f.k_bs;
    f.lse_rs = 1, f.lse_hs = c.Sq, f.lse_bs = (int64_t)c.Hq * c.Sq;
    f.total_q = (int64_t)c.B * c.Sq, f.total_k = (int64_t)c.B * c.Sk;
    f.seqlen_q = c.Sq, f.seqlen_k = c.Sk, f.head_dim = c.D, f.group = c.Hq / c.Hkv;
    f.window_left = -1, f.window_right = c.causal ? 0 : -1;
    f.scale = 1.f / sqrtf((float)c.D), f.scale_log2 = f.scale * 1.4426950408889634f;
    f.vec_in = f.vec_out = 1, f.plain = 1;
    return f;
}

// The schedules (fwd_wgmma_main's PP 0 .. 4 at the bucket's tile; dev/cuda/attn_fwd_wgmma_pp.cu, its own
// translation unit so that ptxas runs on it in parallel). Production's (WgTile::PP: 0 at D = 64, 1 at 128 and
// 256) is among them, so one of pp0 / pp1 repeats "prod" at each D and the other is the alternative.
cudaError_t fwd_wgmma_pp_launch(int pp, int d, bool bf16, const FwdParams &f, int batch, int nheads, cudaStream_t st);
static const int  N_PP               = 5;
static const char *const PP_NAME[]  = {"prod", "pp0", "pp1", "pp2", "pp3", "pp4"}; // kernel 0 = production's tile

// Kernel k of the check list: 0 = the bucket's production tile, 1 .. N_PP = schedule PP k - 1.
static cudaError_t launch_kernel(int k, const Case &c, const FwdParams &f, cudaStream_t st);

static cudaError_t launch_proto(const Case &c, const FwdParams &f, cudaStream_t st) {
    if (c.bf16) {
        if (c.D == 64) return fk_wg::launch_fwd_wgmma<64, true>(f, c.B, c.Hq, st);
        if (c.D == 128) return fk_wg::launch_fwd_wgmma<128, true>(f, c.B, c.Hq, st);
        if (c.D == 256) return fk_wg::launch_fwd_wgmma<256, true>(f, c.B, c.Hq, st);
    } else {
        if (c.D == 64) return fk_wg::launch_fwd_wgmma<64, false>(f, c.B, c.Hq, st);
        if (c.D == 128) return fk_wg::launch_fwd_wgmma<128, false>(f, c.B, c.Hq, st);
        if (c.D == 256) return fk_wg::launch_fwd_wgmma<256, false>(f, c.B, c.Hq, st);
    }
    return cudaErrorNotSupported;
}

static cudaError_t launch_kernel(int k, const Case &c, const FwdParams &f, cudaStream_t st) {
    return k == 0 ? launch_proto(c, f, st) : fwd_wgmma_pp_launch(k - 1, c.D, c.bf16, f, c.B, c.Hq, st);
}

// max |a - b| over n 16-bit values of the dtype (NaN anywhere: NaN), and how many differ bitwise: dv[0] holds the
// max as float bits (non-negative floats order as their bits), dv[1] the count.
__global__ void diff_kernel(const uint16_t *a, const uint16_t *b, int64_t n, bool bf16, unsigned long long *dv) {
    float              md  = 0.f;
    unsigned long long cnt = 0;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        if (a[i] == b[i]) continue;
        ++cnt;
        const float x = bf16 ? __bfloat162float(__ushort_as_bfloat16(a[i])) : __half2float(__ushort_as_half(a[i]));
        const float y = bf16 ? __bfloat162float(__ushort_as_bfloat16(b[i])) : __half2float(__ushort_as_half(b[i]));
        const float d = fabsf(x - y);
        md            = d != d ? INFINITY : fmaxf(md, d);
    }
    atomicMax(dv, (unsigned long long)__float_as_uint(md));
    atomicAdd(dv + 1, cnt);
}
struct Diff {
    double  max_abs;
    int64_t nbits;
};
static Diff diff16(const uint16_t *a, const uint16_t *b, int64_t n, bool bf16) {
    static unsigned long long *dv = nullptr;
    if (!dv) CK(cudaMalloc(&dv, 16));
    CK(cudaMemset(dv, 0, 16));
    diff_kernel<<<1024, 256>>>(a, b, n, bf16, dv);
    CK(cudaGetLastError());
    unsigned long long h[2];
    CK(cudaMemcpy(h, dv, 16, cudaMemcpyDeviceToHost));
    float m;
    const uint32_t mb = (uint32_t)h[0];
    memcpy(&m, &mb, 4);
    return Diff{(double)m, (int64_t)h[1]};
}

#ifdef FK_WGMMA_PROD
static struct fk_context g_ctx;
static void init_ctx() { g_ctx = make_ctx(); }
// The production forward through the library's CUDA entry (its own selection: PLAIN tile or the wide D = 256).
static bool launch_prod(const Case &c, const FwdParams &f) {
    fk_attn_problem p;
    memset(&p, 0, sizeof p);
    p.dtype = c.bf16 ? FK_DTYPE_BF16 : FK_DTYPE_F16;
    p.batch = c.B, p.seqlen_q = c.Sq, p.seqlen_k = c.Sk, p.nheads_q = c.Hq, p.nheads_kv = c.Hkv, p.head_dim = c.D;
    p.total_q = f.total_q, p.total_k = f.total_k;
    p.q = f.q, p.k = f.k, p.v = f.v, p.o = f.o, p.lse = f.lse;
    p.q_bs = f.q_bs, p.q_rs = f.q_rs, p.q_hs = f.q_hs, p.k_bs = f.k_bs, p.k_rs = f.k_rs, p.k_hs = f.k_hs;
    p.v_bs = f.v_bs, p.v_rs = f.v_rs, p.v_hs = f.v_hs, p.o_bs = f.o_bs, p.o_rs = f.o_rs, p.o_hs = f.o_hs;
    p.lse_bs = f.lse_bs, p.lse_hs = f.lse_hs, p.lse_rs = f.lse_rs;
    p.scale = f.scale, p.causal = c.causal, p.window_left = -1, p.window_right = c.causal ? 0 : -1;
    return fk_cuda_attn_fwd(&g_ctx, &p, NULL, 0, NULL) == FK_STATUS_SUCCESS;
}
#endif

struct Bufs {
    uint16_t *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr;
    float    *lse = nullptr;
    int64_t   nq = 0, nk = 0, nl = 0;
};
static Bufs alloc_inputs(const Case &c, uint64_t seed) {
    Bufs b;
    b.nq = (int64_t)c.B * c.Sq * c.Hq * c.D, b.nk = (int64_t)c.B * c.Sk * c.Hkv * c.D, b.nl = (int64_t)c.B * c.Hq * c.Sq;
    CK(cudaMalloc(&b.q, b.nq * 2));
    CK(cudaMalloc(&b.k, b.nk * 2));
    CK(cudaMalloc(&b.v, b.nk * 2));
    CK(cudaMalloc(&b.o, b.nq * 2));
    CK(cudaMalloc(&b.lse, b.nl * 4));
    fill_normal<<<1024, 256>>>(b.q, c.bf16, b.nq, seed);
    fill_normal<<<1024, 256>>>(b.k, c.bf16, b.nk, seed + 1);
    fill_normal<<<1024, 256>>>(b.v, c.bf16, b.nk, seed + 2);
    CK(cudaGetLastError());
    return b;
}
static void free_bufs(Bufs &b) {
    CK(cudaFree(b.q));
    CK(cudaFree(b.k));
    CK(cudaFree(b.v));
    CK(cudaFree(b.o));
    CK(cudaFree(b.lse));
}

static void sig(const Case &c, char *s, size_t n) {
    snprintf(s, n, "%s D%d B%d Sq%d Sk%d H%d/%d c%d", c.bf16 ? "bf16" : "f16", c.D, c.B, c.Sq, c.Sk, c.Hq, c.Hkv,
             c.causal);
}

// Every kernel of the check list on case c against one float64 reference: a PASS / FAIL line each (kernel name
// first); the candidates also say whether their O is bitwise production's (same arithmetic in the same order:
// "bits=prod" is expected, a difference points at a race). Returns the number of failed kernels; *ndiff counts
// candidates whose O differs bitwise.
static int run_check(const Case &c, uint64_t seed, int *ndiff = nullptr) {
    char name[128];
    sig(c, name, sizeof name);
    Bufs b = alloc_inputs(c, seed);
    const FwdParams f0 = make_params(c, b.q, b.k, b.v, b.o, b.lse);
    double *ro, *rlp, *rl;
    CK(cudaMalloc(&ro, b.nq * 8));
    CK(cudaMalloc(&rlp, b.nq * 8));
    CK(cudaMalloc(&rl, b.nl * 8));
    RefArgs a{c, b.q, b.k, b.v, ro, rlp, rl, f0.scale};
    const int64_t rows = (int64_t)c.B * c.Sq * c.Hq;
    ref_kernel<<<(unsigned)((rows + 127) / 128), 128>>>(a);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    std::vector<double> hro(b.nq), hrlp(b.nq), hrl(b.nl);
    CK(cudaMemcpy(hro.data(), ro, b.nq * 8, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(hrlp.data(), rlp, b.nq * 8, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(hrl.data(), rl, b.nl * 8, cudaMemcpyDeviceToHost));
    double naive = 0;
    for (int64_t i = 0; i < b.nq; ++i) naive = std::max(naive, fabs(hrlp[i] - hro[i]));
    const double tol = 2 * naive + 1e-4;

    uint16_t *o_prod;
    CK(cudaMalloc(&o_prod, b.nq * 2));
    int fails = 0;
    for (int k = 0; k <= N_PP; ++k) {
        CK(cudaMemset(b.o, 0xff, b.nq * 2)); // NaN in both dtypes
        CK(cudaMemset(b.lse, 0xff, b.nl * 4));
        cudaError_t e = launch_kernel(k, c, f0, 0);
        if (e == cudaSuccess) e = cudaDeviceSynchronize();
        if (e != cudaSuccess) {
            printf("FAIL %-4s %-40s launch: %s\n", PP_NAME[k], name, cudaGetErrorString(e));
            exit(3); // a sticky error would fail every later case anyway
        }
        std::vector<uint16_t> ho(b.nq);
        std::vector<float>    hl(b.nl);
        CK(cudaMemcpy(ho.data(), b.o, b.nq * 2, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(hl.data(), b.lse, b.nl * 4, cudaMemcpyDeviceToHost));
        double  err = 0, lse_err = 0;
        int64_t bad = 0, lse_bad = 0;
        for (int64_t i = 0; i < b.nq; ++i) {
            const double g = h16(ho[i], c.bf16);
            if (!std::isfinite(g)) {
                ++bad;
                continue;
            }
            err = std::max(err, fabs(g - hro[i]));
        }
        for (int64_t i = 0; i < b.nl; ++i) {
            if (std::isinf(hrl[i]) || std::isinf(hl[i])) {
                lse_bad += !(std::isinf(hrl[i]) && std::isinf(hl[i]) && hl[i] < 0);
                continue;
            }
            if (!std::isfinite(hl[i])) {
                ++lse_bad;
                continue;
            }
            lse_err = std::max(lse_err, fabs(hl[i] - hrl[i]));
        }
        char same[48] = "";
        if (k == 0) CK(cudaMemcpy(o_prod, b.o, b.nq * 2, cudaMemcpyDeviceToDevice));
        else {
            const Diff d = diff16(o_prod, b.o, b.nq, c.bf16);
            if (d.nbits == 0) snprintf(same, sizeof same, " bits=prod");
            else snprintf(same, sizeof same, " bits!=prod (%lld, max %.2e)", (long long)d.nbits, d.max_abs);
            if (d.nbits && ndiff) ++*ndiff;
        }
        const bool ok = bad == 0 && lse_bad == 0 && err <= tol && lse_err <= 1e-4;
        printf("%s %-4s %-40s max_abs %.3e tol %.3e (naive %.3e) lse_err %.2e%s%s%s\n", ok ? "PASS" : "FAIL",
               PP_NAME[k], name, err, tol, naive, lse_err, bad ? " NaN/Inf in O" : "",
               lse_bad ? " bad LSE (NaN, or -inf mismatch)" : "", same);
        fails += !ok;
    }
    CK(cudaFree(o_prod));
    CK(cudaFree(ro));
    CK(cudaFree(rlp));
    CK(cudaFree(rl));
    free_bufs(b);
    return fails;
}

static std::vector<Case> check_cases() {
    std::vector<Case> cs;
    const int pairs[][2] = {{1, 1}, {17, 17}, {128, 128}, {17, 1000}, {1000, 17}, {1000, 1000}, {128, 2048}, {2048, 1000}};
    for (int D : {64, 128, 256})
        for (int bf : {1, 0})
            for (int causal : {0, 1}) {
                int i = 0;
                for (auto &pq : pairs) {
                    const int  sq = pq[0], sk = pq[1];
                    const bool gqa = (i++ % 2) == 1;
                    const int  B   = (int64_t)sq * sk > 100000 ? 1 : 2;
                    cs.push_back(Case{bf != 0, B, sq, sk, 4, gqa ? 1 : 4, D, causal});
                }
                if (bf) cs.push_back(Case{true, 1, 2048, 2048, 2, 2, D, causal});
            }
    return cs;
}

static int cmd_check(const char *filter) {
    int fails = 0, n = 0, ndiff = 0;
    uint64_t seed = 1;
    for (const Case &c : check_cases()) {
        char s[128];
        sig(c, s, sizeof s);
        if (filter && !strstr(s, filter)) continue;
        fails += run_check(c, seed++, &ndiff);
        ++n;
    }
    printf("check: %d cases x %d kernels (%s", n, N_PP + 1, PP_NAME[0]);
    for (int k = 1; k <= N_PP; ++k) printf(" %s", PP_NAME[k]);
    printf("), %d failed; %d candidate outputs not bitwise production's\n", fails, ndiff);
    return fails ? 1 : 0;
}

// One small case per instance, every kernel of the check list (for compute-sanitizer); plus a two-tile case and a
// long causal one for the ping-pong handshakes (first / last tile, n_min > 0 rows).
static int cmd_small() {
    int fails = 0, ndiff = 0;
    for (int D : {64, 128, 256})
        for (int bf : {1, 0}) // tails, causal, GQA
            fails += run_check(Case{bf != 0, 1, 150, 200, 2, 1, D, 1}, 7, &ndiff);
    for (int D : {64, 128, 256}) fails += run_check(Case{true, 1, 300, 700, 2, 2, D, 0}, 8, &ndiff);
    printf("small: %d failed, %d candidate outputs not bitwise production's\n", fails, ndiff);
    return fails ? 1 : 0;
}

static double median_ms(std::vector<float> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

static int cmd_time(int only_d) {
#ifdef FK_WGMMA_PROD
    init_ctx();
#endif
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    printf("%-34s %10s %10s %8s\n", "case (bf16, H 16, B*S 32768)", "proto TF/s", "prod TF/s", "ratio");
    for (int D : {64, 128, 256}) {
        if (only_d && D != only_d) continue;
        for (int S : {2048, 4096, 8192})
            for (int causal : {0, 1}) {
                const Case c{true, 32768 / S, S, S, 16, 16, D, causal};
                Bufs       b = alloc_inputs(c, 11);
                const FwdParams f = make_params(c, b.q, b.k, b.v, b.o, b.lse);
                const double flops = 4.0 * c.B * c.Hq * (double)S * S * D * (causal ? 0.5 : 1.0);
                auto time_it = [&](auto &&fn) -> double {
                    for (int w = 0; w < 3; ++w)
                        if (!fn()) return -1;
                    std::vector<float> ms;
                    for (int r = 0; r < 30; ++r) {
                        CK(cudaEventRecord(e0));
                        fn();
                        CK(cudaEventRecord(e1));
                        CK(cudaEventSynchronize(e1));
                        float t;
                        CK(cudaEventElapsedTime(&t, e0, e1));
                        ms.push_back(t);
                    }
                    CK(cudaGetLastError());
                    return flops / (median_ms(ms) * 1e-3) / 1e12;
                };
                const double tp = time_it([&] { return launch_proto(c, f, 0) == cudaSuccess; });
                double       tr = -1;
#ifdef FK_WGMMA_PROD
                tr = time_it([&] { return launch_prod(c, f); });
#endif
                char s[64];
                snprintf(s, sizeof s, "D%d S%d B%d c%d", D, S, c.B, causal);
                if (tr > 0) printf("%-34s %10.1f %10.1f %8.3f\n", s, tp, tr, tp / tr);
                else printf("%-34s %10.1f %10s %8s\n", s, tp, "-", "-");
                // Alternatives beside the bucket's tile: D = 64: the 1-block tile of the first run, BN 64;
                // D = 128: BN 64 at 1 and 2 blocks an SM; every D: the schedule candidates pp1 .. pp4
                // (fwd_wgmma_main). Each: TF/s, the ratio to the tile, and max |O - O_tile| on this case (a
                // different key tiling only moves the rescale points; a schedule candidate computes the same
                // arithmetic: "bits=" says whether O is bitwise equal).
                {
                    const int64_t no = (int64_t)c.B * S * c.Hq * D;
                    uint16_t     *ref;
                    CK(cudaMalloc(&ref, no * 2));
                    launch_proto(c, f, 0);
                    CK(cudaDeviceSynchronize());
                    CK(cudaMemcpy(ref, b.o, no * 2, cudaMemcpyDeviceToDevice));
                    struct Alt {
                        std::string                  name;
                        std::function<cudaError_t()> fn;
                    };
                    std::vector<Alt> alts;
                    auto tile = [&](const char *nm, cudaError_t (*fn)(const FwdParams &, int, int, cudaStream_t)) {
                        alts.push_back(Alt{nm, [&, fn] { return fn(f, c.B, c.Hq, 0); }});
                    };
                    if (D == 64) {
                        tile("BN128 minb1", &fk_wg::launch_fwd_wgmma_tile<64, 128, 2, 1, true, fk_wg::WgTile<64>::PP>);
                        tile("BN64 minb2", &fk_wg::launch_fwd_wgmma_tile<64, 64, 2, 2, true, fk_wg::WgTile<64>::PP>);
                    } else if (D == 128) {
                        tile("BN64 minb2", &fk_wg::launch_fwd_wgmma_tile<128, 64, 2, 2, true, fk_wg::WgTile<128>::PP>);
                        tile("BN64 minb1", &fk_wg::launch_fwd_wgmma_tile<128, 64, 2, 1, true, fk_wg::WgTile<128>::PP>);
                    }
                    for (int k = 1; k <= N_PP; ++k)
                        alts.push_back(Alt{PP_NAME[k], [&, k] { return launch_kernel(k, c, f, 0); }});
                    for (const Alt &a : alts) {
                        CK(cudaMemset(b.o, 0xff, no * 2));
                        const double ta = time_it([&] { return a.fn() == cudaSuccess; });
                        const Diff   d  = diff16(ref, b.o, no, true);
                        printf("  alt %-12s %10.1f TF/s  %.3fx the tile  max|dO| %.2e bits=%s %s\n", a.name.c_str(), ta,
                               ta / tp, d.max_abs, d.nbits ? "differ" : "same", d.max_abs <= 2e-2 ? "ok" : "MISMATCH");
                    }
                    CK(cudaFree(ref));
                }
                fflush(stdout);
                free_bufs(b);
            }
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *cmd = argc > 1 ? argv[1] : "check";
    cudaDeviceProp pr;
    CK(cudaGetDeviceProperties(&pr, 0));
    printf("device: %s (sm_%d%d)\n", pr.name, pr.major, pr.minor);
    if (pr.major != 9) {
        printf("FAIL the wgmma prototype needs sm_90a\n");
        return 1;
    }
    if (!strcmp(cmd, "check")) return cmd_check(argc > 2 ? argv[2] : nullptr);
    if (!strcmp(cmd, "small")) return cmd_small();
    if (!strcmp(cmd, "time")) return cmd_time(argc > 2 ? atoi(argv[2]) : 0);
    fprintf(stderr, "usage: %s check [filter] | time [D] | small\n", argv[0]);
    return 2;
}
