/*
 * attn_fwd_check.cu — standalone correctness check and tile-shape timing for the CUDA attention forward.
 *
 * Verdicts (kept up to date; numbers in docs/PERF.md, GPU section):
 *   v1 FA2-style schedule, padded smem, reverse key walk: see PERF.md for the per-bucket tile measurements.
 *   v2 PLAIN kernels (common case) and pipelines 0/1/2 (when the next K load is issued): PLAIN +8-13% at the
 *      same tile, +6-7% more from 128x128 (D=64) / 128x64 (D=128); PIPE 2 +1-4% at D=128; D=256 best at 64x64w4.
 *      Fragment prefetch (PIPE+4): no gain at D=64/128, 7x slower at D=256 (rejected). Tables: PERF.md.
 *   v3 D=256 candidate d256c (attn_fwd_d256.cuh: 128x64, 8 warps 4 rows x 2 halves, P through shared memory,
 *      100 instead of 144 ldmatrix.x4 per 256 MMAs): H200, 2026-11-30 (bench/next_fwd256.sh, commit d3c1cfc):
 *      vcheck 48 + 48 cases ok, memcheck/racecheck clean; p2 over 64x64w4p0 1.03-1.08x non-causal (S 512..16384),
 *      0.93-0.98x causal at S <= 2048, 1.01-1.08x causal at S >= 4096; p0 below p2 in every row. PROMOTED: p2 is
 *      the library's D = 256 PLAIN kernel on sm_90 where it won (use_d256_wide in src/cuda/attn_fwd.cu); `time`
 *      still prints every D = 256 ratio against 64x64w4p0 (FwdTile<256, true>, the kernel everywhere else).
 *
 *   attn_fwd_check check [filter]   every case through fk_cuda_attn_fwd (the library's own dispatch) against a
 *                                   float64 reference computed on the GPU; prints one line per case.
 *   attn_fwd_check time [F [S,..]]  bf16 tile-shape variants on the BENCHMARKS.md grid (TFLOP/s, median of 30,
 *                                   ratio to the bucket's production PLAIN kernel); F: a head dim or a name part
 *   attn_fwd_check small            one small case per kernel (for compute-sanitizer)
 *   attn_fwd_check vcheck [F]       every timing variant (tile shape, pipeline, PLAIN) on a few bf16 cases; the
 *                                   D = 256 candidates (d256c, attn_fwd_d256.cuh) on 48 bf16 + fp16 cases
 *   attn_fwd_check vsmall [F]       the selected variants on 1-2 small cases (for compute-sanitizer)
 *
 * Tolerance (docs/HELPERS_COMMON.md): fp32 rel L2 <= 1e-5; fp16/bf16 max_abs <= 2 * max_abs of the naive
 * same-dtype computation (probabilities and output rounded to the dtype) + 1e-4. LSE: |err| <= 1e-4 (1e-5 fp32
 * relative), -inf exactly where no key is visible. Outputs are poisoned with NaN first; NaN/Inf fails.
 */
#include "../../src/core/attn_internal.h"
#include "../../src/cuda/attn_fwd_impl.cuh"
#include "../../src/cuda/attn_fwd_d256.cuh"
#include "attn_check_common.cuh" // CK, time_ms, ld, rnd_dt, mix, fill_bytes, host_ld, make_ctx

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>
#include <algorithm>
#include <string>

// ---- device helpers: random fill, reference -------------------------------------------------------------

__global__ void fill_normal(void *p, int dt, int64_t n, uint64_t seed, float scale) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        uint64_t h  = mix(seed * 0x9e3779b97f4a7c15ull + (uint64_t)i);
        double   u1 = ((h >> 11) + 1) * (1.0 / 9007199254740993.0), u2 = (mix(h) >> 11) * (1.0 / 9007199254740992.0);
        float    x  = (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2)) * scale;
        if (dt == FK_DTYPE_F16) ((__half *)p)[i] = __float2half_rn(x);
        else if (dt == FK_DTYPE_BF16) ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(x);
        else ((float *)p)[i] = x;
    }
}

struct RefArgs {
    fk_attn_problem p;
    double *o, *o_lp, *lse; // compact (token, head, d) / (head, token)
    int64_t total_q;
};

// One thread per (token, head): the header's formula, written independently of the kernels' key_range.
__global__ void ref_kernel(RefArgs a) {
    const fk_attn_problem &p = a.p;
    int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (idx >= a.total_q * p.nheads_q) return;
    const int64_t tok = idx / p.nheads_q, h = idx % p.nheads_q;
    int64_t b, i, q0, k0, sq, sk;
    if (p.cu_seqlens_q) {
        b = 0;
        while (p.cu_seqlens_q[b + 1] <= tok) ++b;
        q0 = p.cu_seqlens_q[b], k0 = p.cu_seqlens_k[b];
        sq = p.cu_seqlens_q[b + 1] - q0, sk = p.cu_seqlens_k[b + 1] - k0;
    } else {
        b = tok / p.seqlen_q, q0 = 0, k0 = 0, sq = p.seqlen_q, sk = p.seqlen_k;
    }
    i                = tok - (p.cu_seqlens_q ? q0 : b * p.seqlen_q);
    const int64_t hk = h / (p.nheads_q / p.nheads_kv);
    const int     dt = p.dtype, D = (int)p.head_dim;
    const int64_t qo = b * p.q_bs + (q0 + i) * p.q_rs + h * p.q_hs;
    double        slope = p.alibi ? p.alibi[b * p.alibi_bs + h] : 0.0;
    auto          visible = [&](int64_t j) {
        int64_t c = i + sk - sq;
        if (p.causal && j > c) return false;
        if (p.window_left >= 0 && j < c - p.window_left) return false;
        if (p.window_right >= 0 && j > c + p.window_right) return false;
        return true;
    };
    auto score = [&](int64_t j) {
        const int64_t ko = b * p.k_bs + (k0 + j) * p.k_rs + hk * p.k_hs;
        double        s  = 0;
        for (int d = 0; d < D; ++d) s += ld(p.q, dt, qo + d) * ld(p.k, dt, ko + d);
        s *= (double)p.scale;
        if (p.softcap > 0) s = p.softcap * tanh(s / p.softcap);
        s -= slope * fabs((double)(i + sk - sq - j));
        return s;
    };
    double m = -INFINITY;
    for (int64_t j = 0; j < sk; ++j)
        if (visible(j)) m = fmax(m, score(j));
    double acc[256], acc_lp[256], l = 0;
    for (int d = 0; d < D; ++d) acc[d] = acc_lp[d] = 0;
    if (m > -INFINITY) {
        for (int64_t j = 0; j < sk; ++j)
            if (visible(j)) l += exp(score(j) - m);
        for (int64_t j = 0; j < sk; ++j) {
            if (!visible(j)) continue;
            const double  e  = exp(score(j) - m), plp = rnd_dt(dt, e / l);
            const int64_t vo = b * p.v_bs + (k0 + j) * p.v_rs + hk * p.v_hs;
            for (int d = 0; d < D; ++d) {
                const double vv = ld(p.v, dt, vo + d);
                acc[d] += e * vv;
                acc_lp[d] += plp * vv;
            }
        }
    }
    for (int d = 0; d < D; ++d) {
        a.o[(tok * p.nheads_q + h) * D + d]    = l > 0 ? acc[d] / l : 0.0;
        a.o_lp[(tok * p.nheads_q + h) * D + d] = rnd_dt(dt, acc_lp[d]);
    }
    a.lse[h * a.total_q + tok] = l > 0 ? m + log(l) : -INFINITY;
}

// ---- host -----------------------------------------------------------------------------------------------

struct Case {
    fk_dtype dt;
    int      B, Sq, Sk, Hq, Hkv, D;
    int      causal, wl, wr;
    float    softcap;
    int      alibi;  // 0 none, 1 per head, 2 per (batch, head)
    int      varlen; // 1: lengths drawn per sequence (some 0)
    int      lse;
    int      pad;    // extra elements per token row (8: aligned, 3: unaligned -> element path)
    float    scale;  // 0 = 1/sqrt(D)
};

static void sig(const Case &c, char *s, size_t n) {
    snprintf(s, n, "%s B%d Sq%d Sk%d H%d/%d D%d c%d w%d,%d cap%g alibi%d varlen%d lse%d pad%d sc%g",
             c.dt == FK_DTYPE_F32 ? "f32" : c.dt == FK_DTYPE_F16 ? "f16" : "bf16", c.B, c.Sq, c.Sk, c.Hq, c.Hkv, c.D,
             c.causal, c.wl, c.wr, c.softcap, c.alibi, c.varlen, c.lse, c.pad, c.scale);
}

typedef cudaError_t (*LaunchFn)(const fk_cuda::FwdParams &, int, int, cudaStream_t);
// vcheck: when set, run_case launches this tile variant directly (params resolved like attn_fwd.cu's make_params)
static LaunchFn g_variant = nullptr;

static fk_cuda::FwdParams variant_params(const fk_attn_problem *p) {
    fk_cuda::FwdParams f;
    memset(&f, 0, sizeof f);
    f.q = p->q, f.k = p->k, f.v = p->v, f.o = p->o, f.lse = (float *)p->lse;
    f.q_bs = p->q_bs, f.q_rs = p->q_rs, f.q_hs = p->q_hs, f.k_bs = p->k_bs, f.k_rs = p->k_rs, f.k_hs = p->k_hs;
    f.v_bs = p->v_bs, f.v_rs = p->v_rs, f.v_hs = p->v_hs, f.o_bs = p->o_bs, f.o_rs = p->o_rs, f.o_hs = p->o_hs;
    f.lse_bs = p->lse_bs, f.lse_hs = p->lse_hs, f.lse_rs = p->lse_rs;
    f.cu_q = p->cu_seqlens_q, f.cu_k = p->cu_seqlens_k, f.alibi = p->alibi, f.alibi_bs = p->alibi_bs;
    f.total_q = p->total_q, f.total_k = p->total_k;
    f.seqlen_q = (int)p->seqlen_q, f.seqlen_k = (int)p->seqlen_k, f.head_dim = (int)p->head_dim;
    f.group       = (int)(p->nheads_q / p->nheads_kv);
    f.window_left = (int)p->window_left, f.window_right = (int)p->window_right;
    f.scale = p->scale, f.scale_log2 = p->scale * 1.4426950408889634f;
    f.softcap = p->softcap > 0.f ? p->softcap : 0.f;
    f.softcap_inv = f.softcap > 0.f ? p->scale / f.softcap : 0.f, f.softcap_log2 = f.softcap * 1.4426950408889634f;
    f.transform = (f.softcap > 0.f || p->alibi || !(p->scale > 0.f)) ? 1 : 0;
    f.vec_in = f.vec_out = 1; // vcheck cases are aligned
    f.plain  = !f.transform;
    return f;
}

static int run_case(const Case &c, uint64_t seed, bool verbose) {
    char s[256];
    sig(c, s, sizeof s);
    const size_t es = fk_dtype_size(c.dt);
    // sequence lengths
    std::vector<int> lq(c.B, c.Sq), lk(c.B, c.Sk);
    if (c.varlen) {
        srand((unsigned)seed);
        for (int b = 0; b < c.B; ++b) {
            lq[b] = rand() % (c.Sq + 1);
            lk[b] = rand() % (c.Sk + 1);
        }
        lq[0] = c.Sq, lk[0] = c.Sk; // the maxima are reached
        if (c.B > 2) lk[2] = 0;     // a sequence with no keys
        if (c.B > 3) lq[3] = 0;     // and one with no queries
    }
    std::vector<int32_t> cq(c.B + 1, 0), ckk(c.B + 1, 0);
    for (int b = 0; b < c.B; ++b) cq[b + 1] = cq[b] + lq[b], ckk[b + 1] = ckk[b] + lk[b];
    const int64_t tq = c.varlen ? cq[c.B] : (int64_t)c.B * c.Sq, tk = c.varlen ? ckk[c.B] : (int64_t)c.B * c.Sk;
    const int64_t q_rs = (int64_t)c.Hq * c.D + c.pad, k_rs = (int64_t)c.Hkv * c.D + c.pad;
    const int64_t nq = tq * q_rs + 8, nk = tk * k_rs + 8;

    void *q, *k, *v, *o;
    float *lse = nullptr, *alibi = nullptr;
    int32_t *dcq = nullptr, *dck = nullptr;
    CK(cudaMalloc(&q, nq * es));
    CK(cudaMalloc(&k, nk * es));
    CK(cudaMalloc(&v, nk * es));
    CK(cudaMalloc(&o, nq * es));
    CK(cudaMalloc(&lse, (size_t)c.Hq * std::max<int64_t>(tq, 1) * 4));
    fill_normal<<<256, 256>>>(q, c.dt, nq, seed * 3 + 1, 1.f);
    fill_normal<<<256, 256>>>(k, c.dt, nk, seed * 3 + 2, 1.f);
    fill_normal<<<256, 256>>>(v, c.dt, nk, seed * 3 + 3, 1.f);
    fill_bytes<<<256, 256>>>((uint8_t *)o, nq * es, 0xff); // NaN in every dtype
    fill_bytes<<<256, 256>>>((uint8_t *)lse, (int64_t)c.Hq * std::max<int64_t>(tq, 1) * 4, 0xff);
    std::vector<float> slopes(c.B * c.Hq);
    for (int i = 0; i < c.B * c.Hq; ++i) slopes[i] = 0.05f + 0.9f * (float)((i * 37) % 17) / 17.f;
    if (c.alibi) {
        CK(cudaMalloc(&alibi, slopes.size() * 4));
        CK(cudaMemcpy(alibi, slopes.data(), slopes.size() * 4, cudaMemcpyHostToDevice));
    }
    if (c.varlen) {
        CK(cudaMalloc(&dcq, (c.B + 1) * 4));
        CK(cudaMalloc(&dck, (c.B + 1) * 4));
        CK(cudaMemcpy(dcq, cq.data(), (c.B + 1) * 4, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(dck, ckk.data(), (c.B + 1) * 4, cudaMemcpyHostToDevice));
    }

    fk_attn_problem p;
    memset(&p, 0, sizeof p);
    p.dtype = c.dt, p.batch = c.B, p.seqlen_q = c.Sq, p.seqlen_k = c.Sk;
    p.nheads_q = c.Hq, p.nheads_kv = c.Hkv, p.head_dim = c.D, p.total_q = tq, p.total_k = tk;
    p.q = q, p.k = k, p.v = v, p.o = o, p.lse = c.lse ? lse : nullptr;
    p.q_rs = p.o_rs = q_rs, p.q_hs = p.o_hs = c.D;
    p.k_rs = p.v_rs = k_rs, p.k_hs = p.v_hs = c.D;
    p.q_bs = p.o_bs = c.varlen ? 0 : (int64_t)c.Sq * q_rs;
    p.k_bs = p.v_bs = c.varlen ? 0 : (int64_t)c.Sk * k_rs;
    if (c.varlen) p.lse_bs = 0, p.lse_hs = tq, p.lse_rs = 1;
    else p.lse_bs = (int64_t)c.Hq * c.Sq, p.lse_hs = c.Sq, p.lse_rs = 1;
    p.cu_seqlens_q = dcq, p.cu_seqlens_k = dck;
    p.alibi = alibi, p.alibi_bs = c.alibi == 2 ? c.Hq : 0;
    p.scale   = c.scale != 0.f ? c.scale : 1.f / sqrtf((float)c.D);
    p.softcap = c.softcap;
    p.causal  = c.causal;
    p.window_left  = c.wl;
    p.window_right = c.causal ? (c.wr < 0 ? 0 : std::min(c.wr, 0)) : c.wr;

    struct fk_context ctx = make_ctx();
    size_t            ws  = 0;
    fk_status         st  = fk_cuda_attn_fwd_select(&ctx, &p, &ws);
    int               bad = 0;
    if (st != FK_STATUS_SUCCESS) {
        printf("SKIP %s: %s\n", s, fk_last_error_message());
    } else {
        if (g_variant) {
            const cudaError_t e = g_variant(variant_params(&p), c.B, c.Hq, 0);
            st = e == cudaSuccess ? FK_STATUS_SUCCESS : FK_STATUS_CUDA_ERROR;
            if (e != cudaSuccess) printf("launch: %s\n", cudaGetErrorString(e));
        } else {
            st = fk_cuda_attn_fwd(&ctx, &p, nullptr, 0, nullptr);
        }
        if (st != FK_STATUS_SUCCESS) {
            printf("FAIL %s: status %d %s\n", s, (int)st, fk_last_error_message());
            bad = 1;
        }
        CK(cudaDeviceSynchronize());
    }
    if (st == FK_STATUS_SUCCESS) {
        // reference (note: p.causal is honoured by the reference directly; windows as given)
        double *ro, *rlp, *rl;
        const int64_t nref = std::max<int64_t>(tq, 1) * c.Hq * c.D;
        CK(cudaMalloc(&ro, nref * 8));
        CK(cudaMalloc(&rlp, nref * 8));
        CK(cudaMalloc(&rl, (size_t)std::max<int64_t>(tq, 1) * c.Hq * 8));
        RefArgs ra;
        ra.p = p, ra.o = ro, ra.o_lp = rlp, ra.lse = rl, ra.total_q = tq;
        const int64_t nthreads = tq * c.Hq;
        if (nthreads > 0) ref_kernel<<<(unsigned)((nthreads + 127) / 128), 128>>>(ra);
        CK(cudaGetLastError());
        CK(cudaDeviceSynchronize());
        std::vector<double> h_ro(nref), h_rlp(nref), h_rl(std::max<int64_t>(tq, 1) * c.Hq);
        CK(cudaMemcpy(h_ro.data(), ro, nref * 8, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(h_rlp.data(), rlp, nref * 8, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(h_rl.data(), rl, h_rl.size() * 8, cudaMemcpyDeviceToHost));
        std::vector<uint8_t> h_o(nq * es);
        std::vector<float>   h_lse((size_t)c.Hq * std::max<int64_t>(tq, 1));
        CK(cudaMemcpy(h_o.data(), o, nq * es, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(h_lse.data(), lse, h_lse.size() * 4, cudaMemcpyDeviceToHost));
        double  max_err = 0, max_lp = 0, max_ref = 0, se = 0, sr = 0, lse_err = 0;
        int64_t nonfinite = 0, lse_bad = 0;
        for (int64_t tok = 0; tok < tq; ++tok)
            for (int h = 0; h < c.Hq; ++h) {
                for (int d = 0; d < c.D; ++d) {
                    const double got = host_ld(h_o, c.dt, tok * q_rs + (int64_t)h * c.D + d);
                    const double ref = h_ro[(tok * c.Hq + h) * c.D + d];
                    if (!std::isfinite(got)) { ++nonfinite; continue; }
                    max_err = std::max(max_err, fabs(got - ref));
                    max_lp  = std::max(max_lp, fabs(h_rlp[(tok * c.Hq + h) * c.D + d] - ref));
                    max_ref = std::max(max_ref, fabs(ref));
                    se += (got - ref) * (got - ref), sr += ref * ref;
                }
                if (c.lse) {
                    // kernel layout: varlen (H, total_q); fixed (B, H, Sq). Reference: (H, total_q).
                    const int64_t gi = c.varlen ? (int64_t)h * tq + tok
                                                : (tok / c.Sq) * c.Hq * c.Sq + (int64_t)h * c.Sq + tok % c.Sq;
                    const double got = h_lse[gi], ref = h_rl[(size_t)h * tq + tok];
                    if (std::isinf(ref) || std::isinf(got)) {
                        if (!(std::isinf(ref) && std::isinf(got) && ref < 0 && got < 0)) ++lse_bad;
                    } else if (std::isnan(got)) ++lse_bad;
                    else {
                        const double e = fabs(got - ref);
                        lse_err        = std::max(lse_err, e);
                        if (e > (c.dt == FK_DTYPE_F32 ? 1e-5 * std::max(1.0, fabs(ref)) : 1e-4 * std::max(1.0, fabs(ref))))
                            ++lse_bad;
                    }
                }
            }
        // the padding between rows must stay untouched (poison) — a store past head_dim would overwrite it
        int64_t pad_written = 0;
        if (c.pad)
            for (int64_t tok = 0; tok < tq; ++tok)
                for (int e = 0; e < c.pad; ++e)
                    if (std::isfinite(host_ld(h_o, c.dt, tok * q_rs + (int64_t)c.Hq * c.D + e))) ++pad_written;
        const double rel = sr > 0 ? sqrt(se / sr) : sqrt(se);
        bool         ok;
        double       tol;
        if (c.dt == FK_DTYPE_F32) {
            tol = 1e-5;
            ok  = rel <= tol;
        } else {
            tol = 2 * max_lp + 1e-4;
            ok  = max_err <= tol;
        }
        ok = ok && nonfinite == 0 && lse_bad == 0 && pad_written == 0;
        if (!ok || verbose)
            printf("%s %s: max_abs %.3g (naive %.3g, tol %.3g) rel %.3g max_ref %.3g nonfinite %lld lse_err %.3g "
                   "lse_bad %lld pad_written %lld\n",
                   ok ? "ok  " : "FAIL", s, max_err, max_lp, tol, rel, max_ref, (long long)nonfinite, lse_err,
                   (long long)lse_bad, (long long)pad_written);
        bad = !ok;
        cudaFree(ro), cudaFree(rlp), cudaFree(rl);
    }
    cudaFree(q), cudaFree(k), cudaFree(v), cudaFree(o), cudaFree(lse);
    if (alibi) cudaFree(alibi);
    if (dcq) cudaFree(dcq), cudaFree(dck);
    return bad;
}

static std::vector<Case> all_cases() {
    std::vector<Case> v;
    const fk_dtype dts[] = {FK_DTYPE_BF16, FK_DTYPE_F16, FK_DTYPE_F32};
    const int      dims[] = {1, 8, 32, 40, 64, 80, 96, 111, 128, 160, 192, 200, 256};
    for (fk_dtype dt : dts)
        for (int D : dims) {
            // dtype, B, Sq, Sk, Hq, Hkv, D, causal, wl, wr, softcap, alibi, varlen, lse, pad, scale
            v.push_back({dt, 2, 200, 200, 4, 2, D, 0, -1, -1, 0, 0, 0, 1, 0, 0});
            v.push_back({dt, 2, 200, 200, 4, 2, D, 1, -1, -1, 0, 0, 0, 1, 0, 0});
            v.push_back({dt, 1, 77, 300, 2, 1, D, 1, -1, -1, 0, 0, 0, 1, 8, 0});
            v.push_back({dt, 1, 300, 77, 2, 2, D, 1, -1, -1, 0, 0, 0, 1, 0, 0});
        }
    for (fk_dtype dt : dts)
        for (int D : {64, 111, 128, 256}) {
            v.push_back({dt, 2, 260, 190, 4, 4, D, 0, 50, 10, 0, 0, 0, 1, 0, 0});
            v.push_back({dt, 2, 190, 260, 4, 4, D, 0, 0, 0, 0, 0, 0, 1, 0, 0});
            v.push_back({dt, 1, 300, 300, 2, 1, D, 0, -1, 20, 0, 0, 0, 1, 0, 0});
            v.push_back({dt, 1, 300, 300, 2, 1, D, 0, 70, -1, 0, 0, 0, 0, 0, 0});
            v.push_back({dt, 2, 150, 170, 4, 2, D, 1, -1, -1, 30.f, 0, 0, 1, 0, 0.5f});
            v.push_back({dt, 2, 150, 170, 4, 2, D, 0, -1, -1, 0, 1, 0, 1, 0, 0});
            v.push_back({dt, 2, 150, 170, 4, 2, D, 1, -1, -1, 20.f, 2, 0, 1, 0, 0});
            v.push_back({dt, 5, 180, 220, 4, 2, D, 0, -1, -1, 0, 0, 1, 1, 0, 0});
            v.push_back({dt, 5, 220, 180, 4, 1, D, 1, -1, -1, 0, 0, 1, 1, 8, 0});
            v.push_back({dt, 5, 220, 180, 4, 4, D, 0, 30, 5, 0, 1, 1, 1, 3, 0});
            v.push_back({dt, 2, 130, 130, 2, 2, D, 0, -1, -1, 0, 0, 0, 1, 3, 0});
            v.push_back({dt, 1, 100, 100, 2, 2, D, 0, -1, -1, 0, 0, 0, 1, 0, -0.1f});
            v.push_back({dt, 1, 1024, 1024, 2, 2, D, 1, -1, -1, 0, 0, 0, 1, 0, 0});
            v.push_back({dt, 1, 1, 1000, 4, 1, D, 0, -1, -1, 0, 0, 0, 1, 0, 0});
        }
    // D = 256 causal at seqlen_k >= 4096: the wide PLAIN kernel on sm_90 (the non-causal aligned cases above too).
    for (fk_dtype dt : {FK_DTYPE_BF16, FK_DTYPE_F16})
        v.push_back({dt, 1, 300, 4100, 2, 1, 256, 1, -1, -1, 0, 0, 0, 1, 0, 0});
    return v;
}

static int cmd_check(const char *filter, bool verbose) {
    int n = 0, bad = 0;
    uint64_t seed = 1;
    for (const Case &c : all_cases()) {
        char s[256];
        sig(c, s, sizeof s);
        if (filter && !strstr(s, filter)) continue;
        bad += run_case(c, seed++, verbose);
        ++n;
    }
    printf("check: %d cases, %d failed\n", n, bad);
    return bad ? 1 : 0;
}

// ---- timing of tile variants ----------------------------------------------------------------------------

struct Variant {
    int         D;
    const char *name;
    LaunchFn    fn;     // bf16
    LaunchFn    fn_f16; // fp16, where vcheck also runs fp16 cases (the D = 256 candidates)
    bool        prod;   // the bucket's table PLAIN kernel (FwdTile<D, true>): `time` prints ratios to it (D = 256
                        // on sm_90: the wide d256c p2 replaces it where use_d256_wide says; ratios stay to 64x64)
};
// name: BRxBC w(warps) p(pipeline) and g (general kernel) or p (PLAIN kernel)
#define VAR(D_, BR_, BC_, NW_, PLAIN_, PIPE_)                                                                \
    {D_, #BR_ "x" #BC_ "w" #NW_ "p" #PIPE_ "-" #PLAIN_,                                                      \
     fk_cuda::launch_fwd_tc<D_, BR_, BC_, NW_, true, PLAIN_, PIPE_>, nullptr,                                \
     PLAIN_ && fk_cuda::FwdTile<D_, true>::BR == BR_ && fk_cuda::FwdTile<D_, true>::BC == BC_ &&             \
         fk_cuda::FwdTile<D_, true>::NW == NW_ && fk_cuda::FwdTile<D_, true>::PIPE == PIPE_}
// D = 256 candidate (src/cuda/attn_fwd_d256.cuh): 128x64, 8 warps as 4 row groups x 2 halves, PLAIN only
#define VAR_D256C(PIPE)                                                                                      \
    {256, "d256c-128x64w8p" #PIPE, fk_cuda::launch_fwd_d256<true, PIPE>, fk_cuda::launch_fwd_d256<false, PIPE>, \
     false}
static const Variant kVariants[] = {
    VAR(64, 128, 64, 4, false, 0),  VAR(64, 128, 128, 4, false, 0), VAR(64, 128, 128, 4, true, 0),
    VAR(64, 128, 128, 4, true, 2),  VAR(64, 128, 128, 4, true, 4),
    VAR(128, 128, 32, 4, false, 0), VAR(128, 128, 64, 4, true, 0),  VAR(128, 128, 64, 4, true, 2),
    VAR(128, 128, 64, 4, true, 6),
    VAR(256, 128, 64, 8, false, 0), VAR(256, 64, 64, 4, false, 0),  VAR(256, 64, 64, 4, true, 0),
    VAR(256, 64, 64, 4, true, 1),   VAR(256, 64, 64, 4, true, 4),   VAR(256, 64, 64, 4, true, 5),
    VAR_D256C(0),                   VAR_D256C(2),
};

// Variant filter of `time` and `vcheck`: none, a head dim ("256": that bucket's variants), or a substring of
// the variant name ("d256c": the candidates). The production variant of a selected bucket is always timed.
static bool variant_selected(const Variant &v, const char *filter, bool for_time) {
    if (!filter || !*filter) return true;
    const int d = atoi(filter);
    if (d > 0) return v.D == d;
    return strstr(v.name, filter) != nullptr || (for_time && v.prod);
}

// time [filter [S,S,...]]: default seqlens 512, 2048, 8192; "ratio" = TFLOP/s over the production variant's
// (same D, S, causal; it is listed, so timed, before the others of its bucket).
static int cmd_time(const char *filter, const char *slist) {
    std::vector<int> seqlens = {512, 2048, 8192};
    if (slist) {
        seqlens.clear();
        for (const char *c = slist; *c;) {
            seqlens.push_back(atoi(c));
            while (*c && *c != ',') ++c;
            if (*c == ',') ++c;
        }
    }
    printf("%-5s %-6s %-6s %-3s %-18s %8s %8s %6s\n", "D", "S", "BxH", "c", "variant", "ms", "TFLOP/s", "ratio");
    for (int D : {64, 128, 256})
        for (int S : seqlens)
            for (int causal : {0, 1}) {
                bool any = false;
                for (const Variant &var : kVariants) any |= var.D == D && variant_selected(var, filter, false);
                if (!any) continue;
                const int B = 16384 / S, H = 2048 / D;
                const int64_t n = (int64_t)B * S * H * D;
                void *q, *k, *v, *o;
                float *lse;
                CK(cudaMalloc(&q, n * 2));
                CK(cudaMalloc(&k, n * 2));
                CK(cudaMalloc(&v, n * 2));
                CK(cudaMalloc(&o, n * 2));
                CK(cudaMalloc(&lse, (int64_t)B * H * S * 4));
                fill_normal<<<1024, 256>>>(q, FK_DTYPE_BF16, n, 11, 1.f);
                fill_normal<<<1024, 256>>>(k, FK_DTYPE_BF16, n, 12, 1.f);
                fill_normal<<<1024, 256>>>(v, FK_DTYPE_BF16, n, 13, 1.f);
                fk_cuda::FwdParams f;
                memset(&f, 0, sizeof f);
                f.q = q, f.k = k, f.v = v, f.o = o, f.lse = lse;
                f.q_rs = f.k_rs = f.v_rs = f.o_rs = (int64_t)H * D;
                f.q_hs = f.k_hs = f.v_hs = f.o_hs = D;
                f.q_bs = f.k_bs = f.v_bs = f.o_bs = (int64_t)S * H * D;
                f.lse_bs = (int64_t)H * S, f.lse_hs = S, f.lse_rs = 1;
                f.seqlen_q = f.seqlen_k = S, f.head_dim = D, f.group = 1;
                f.window_left = -1, f.window_right = causal ? 0 : -1;
                f.scale = 1.f / sqrtf((float)D), f.scale_log2 = f.scale * 1.4426950408889634f;
                f.vec_in = f.vec_out = f.plain = 1;
                const double flops = 4.0 * B * H * (double)S * S * D / (causal ? 2 : 1);
                double       prod_tf = 0;
                for (const Variant &var : kVariants) {
                    if (var.D != D || !variant_selected(var, filter, true)) continue;
                    const cudaError_t le = var.fn(f, B, H, 0);
                    if (le != cudaSuccess) {
                        printf("%-5d %-6d %-6s %-3d %-18s launch failed: %s\n", D, S, "", causal, var.name,
                               cudaGetErrorString(le));
                        cudaGetLastError();
                        continue;
                    }
                    const float  ms = time_ms([&] { CK(var.fn(f, B, H, 0)); }, 30); // median of 30 after 3 warm-ups
                    const double tf = flops / ms * 1e-9;
                    if (var.prod) prod_tf = tf;
                    printf("%-5d %-6d %-6s %-3d %-18s %8.3f %8.1f %6.3f\n", D, S,
                           (std::to_string(B) + "x" + std::to_string(H)).c_str(), causal, var.name, ms, tf,
                           prod_tf > 0 ? tf / prod_tf : 0.0);
                }
                cudaFree(q), cudaFree(k), cudaFree(v), cudaFree(o), cudaFree(lse);
            }
    return 0;
}

// vcheck [filter]: every timing variant on aligned bf16 cases of its head dim (PLAIN-eligible: no softcap/ALiBi);
// variants with an fp16 instance (the D = 256 candidates) also on a longer list, bf16 and fp16: causal and not,
// Sq != Sk both ways, lengths 1, 17, 1000 and others that are not multiples of the tiles, windows, varlen, GQA.
static int cmd_vcheck(const char *filter) {
    int bad = 0, n = 0;
    uint64_t seed = 500;
    for (const Variant &var : kVariants) {
        if (!variant_selected(var, filter, false)) continue;
        g_variant = var.fn;
        const int D = var.D;
        const Case cs[] = {
            // dtype, B, Sq, Sk, Hq, Hkv, D, causal, wl, wr, softcap, alibi, varlen, lse, pad, scale
            {FK_DTYPE_BF16, 2, 200, 200, 4, 2, D, 0, -1, -1, 0, 0, 0, 1, 0, 0},
            {FK_DTYPE_BF16, 2, 200, 200, 4, 2, D, 1, -1, -1, 0, 0, 0, 1, 0, 0},
            {FK_DTYPE_BF16, 1, 77, 300, 2, 1, D, 1, -1, -1, 0, 0, 0, 1, 8, 0},
            {FK_DTYPE_BF16, 1, 300, 77, 2, 2, D, 1, -1, -1, 0, 0, 0, 1, 0, 0},
            {FK_DTYPE_BF16, 2, 260, 190, 4, 4, D, 0, 50, 10, 0, 0, 0, 1, 0, 0},
            {FK_DTYPE_BF16, 5, 220, 180, 4, 1, D, 1, -1, -1, 0, 0, 1, 1, 8, 0},
            {FK_DTYPE_BF16, 1, 1024, 1024, 2, 2, D, 1, -1, -1, 0, 0, 0, 1, 0, 0},
            {FK_DTYPE_BF16, 1, 1, 1000, 4, 1, D, 0, -1, -1, 0, 0, 0, 1, 0, 0},
        };
        int vb = 0, vn = 0;
        for (const Case &c : cs) vb += run_case(c, seed++, false), ++vn;
        if (var.fn_f16)
            for (fk_dtype dt : {FK_DTYPE_BF16, FK_DTYPE_F16}) {
                const Case more[] = {
                    {dt, 2, 200, 200, 4, 2, D, 0, -1, -1, 0, 0, 0, 1, 0, 0},
                    {dt, 2, 200, 200, 4, 2, D, 1, -1, -1, 0, 0, 0, 1, 0, 0},
                    {dt, 1, 77, 300, 2, 1, D, 0, -1, -1, 0, 0, 0, 1, 8, 0},
                    {dt, 1, 77, 300, 2, 1, D, 1, -1, -1, 0, 0, 0, 1, 8, 0},
                    {dt, 1, 300, 77, 2, 2, D, 0, -1, -1, 0, 0, 0, 1, 0, 0},
                    {dt, 1, 300, 77, 2, 2, D, 1, -1, -1, 0, 0, 0, 1, 0, 0},
                    {dt, 1, 1, 1, 2, 1, D, 0, -1, -1, 0, 0, 0, 1, 0, 0},
                    {dt, 1, 1, 1000, 4, 1, D, 0, -1, -1, 0, 0, 0, 1, 0, 0},
                    {dt, 1, 1, 1000, 4, 1, D, 1, -1, -1, 0, 0, 0, 1, 0, 0},
                    {dt, 1, 1000, 1, 2, 2, D, 0, -1, -1, 0, 0, 0, 1, 0, 0},
                    {dt, 1, 1000, 1, 2, 2, D, 1, -1, -1, 0, 0, 0, 1, 0, 0}, // rows with no visible key
                    {dt, 2, 17, 17, 2, 2, D, 1, -1, -1, 0, 0, 0, 1, 0, 0},
                    {dt, 1, 17, 1000, 2, 1, D, 1, -1, -1, 0, 0, 0, 1, 0, 0},
                    {dt, 1, 1000, 17, 2, 1, D, 1, -1, -1, 0, 0, 0, 1, 0, 0},
                    {dt, 1, 1000, 1000, 2, 2, D, 0, -1, -1, 0, 0, 0, 0, 0, 0},
                    {dt, 1, 1000, 1000, 2, 2, D, 1, -1, -1, 0, 0, 0, 1, 0, 0},
                    {dt, 1, 1024, 1024, 2, 2, D, 1, -1, -1, 0, 0, 0, 1, 0, 0},
                    {dt, 2, 260, 190, 4, 4, D, 0, 50, 10, 0, 0, 0, 1, 0, 0},
                    {dt, 5, 220, 180, 4, 1, D, 1, -1, -1, 0, 0, 1, 1, 8, 0},
                    {dt, 5, 180, 220, 4, 2, D, 0, -1, -1, 0, 0, 1, 1, 0, 0},
                };
                g_variant = dt == FK_DTYPE_F16 ? var.fn_f16 : var.fn;
                for (const Case &c : more) vb += run_case(c, seed++, false), ++vn;
            }
        n += vn;
        printf("vcheck D%d %-20s %3d cases %s\n", D, var.name, vn, vb ? "FAIL" : "ok");
        bad += vb;
    }
    g_variant = nullptr;
    printf("vcheck: %d cases, %d failed\n", n, bad);
    return bad ? 1 : 0;
}

// vsmall [filter]: the selected variants on two small cases each (bf16 causal, fp16 GQA + window), for
// compute-sanitizer (racecheck covers the candidates' shared-memory exchange).
static int cmd_vsmall(const char *filter) {
    int bad = 0;
    uint64_t seed = 900;
    for (const Variant &var : kVariants) {
        if (!variant_selected(var, filter, false)) continue;
        g_variant = var.fn;
        bad += run_case({FK_DTYPE_BF16, 2, 150, 170, 2, 1, var.D, 1, -1, -1, 0, 0, 0, 1, 0, 0}, seed++, true);
        if (var.fn_f16) {
            g_variant = var.fn_f16;
            bad += run_case({FK_DTYPE_F16, 1, 130, 200, 4, 2, var.D, 0, 40, 30, 0, 0, 0, 1, 0, 0}, seed++, true);
        }
    }
    g_variant = nullptr;
    printf("vsmall: %d failed\n", bad);
    return bad ? 1 : 0;
}

static int cmd_small() {
    // one small case per kernel instance family: bf16/f16 per bucket (and D = 256's wide kernel), and f32
    int bad = 0;
    uint64_t seed = 100;
    for (fk_dtype dt : {FK_DTYPE_BF16, FK_DTYPE_F16, FK_DTYPE_F32})
        for (int D : {32, 64, 80, 128, 192, 256}) {
            bad += run_case({dt, 2, 70, 90, 2, 1, D, 1, -1, -1, 0, 0, 0, 1, 0, 0}, seed++, true);
            bad += run_case({dt, 3, 70, 90, 2, 2, D, 0, 20, 3, 10.f, 1, 1, 1, 3, 0}, seed++, true);
            if (D == 256 && dt != FK_DTYPE_F32) // non-causal PLAIN: the wide kernel on sm_90 (use_d256_wide)
                bad += run_case({dt, 2, 150, 170, 2, 1, D, 0, -1, -1, 0, 0, 0, 1, 0, 0}, seed++, true);
        }
    printf("small: %d failed\n", bad);
    return bad ? 1 : 0;
}

// prof D S causal [dtype]: three launches through the library dispatch, for ncu.
static int cmd_prof(int D, int S, int causal, fk_dtype dt) {
    const int B = 16384 / S, H = 2048 / D;
    const int64_t n = (int64_t)B * S * H * D;
    const size_t es = fk_dtype_size(dt);
    void *q, *k, *v, *o;
    CK(cudaMalloc(&q, n * es));
    CK(cudaMalloc(&k, n * es));
    CK(cudaMalloc(&v, n * es));
    CK(cudaMalloc(&o, n * es));
    fill_normal<<<1024, 256>>>(q, dt, n, 1, 1.f);
    fill_normal<<<1024, 256>>>(k, dt, n, 2, 1.f);
    fill_normal<<<1024, 256>>>(v, dt, n, 3, 1.f);
    fk_attn_problem p;
    memset(&p, 0, sizeof p);
    p.dtype = dt, p.batch = B, p.seqlen_q = p.seqlen_k = S, p.nheads_q = p.nheads_kv = H, p.head_dim = D;
    p.total_q = p.total_k = (int64_t)B * S;
    p.q = q, p.k = k, p.v = v, p.o = o;
    p.q_rs = p.k_rs = p.v_rs = p.o_rs = (int64_t)H * D;
    p.q_hs = p.k_hs = p.v_hs = p.o_hs = D;
    p.q_bs = p.k_bs = p.v_bs = p.o_bs = (int64_t)S * H * D;
    p.scale = 1.f / sqrtf((float)D), p.causal = causal, p.window_left = -1, p.window_right = causal ? 0 : -1;
    struct fk_context ctx = make_ctx();
    for (int r = 0; r < 3; ++r)
        if (fk_cuda_attn_fwd(&ctx, &p, nullptr, 0, nullptr) != FK_STATUS_SUCCESS) {
            printf("prof: %s\n", fk_last_error_message());
            return 1;
        }
    CK(cudaDeviceSynchronize());
    printf("prof D%d S%d causal%d done\n", D, S, causal);
    return 0;
}

int main(int argc, char **argv) {
    const char *cmd = argc > 1 ? argv[1] : "check";
    if (!strcmp(cmd, "check")) return cmd_check(argc > 2 ? argv[2] : nullptr, false);
    if (!strcmp(cmd, "checkv")) return cmd_check(argc > 2 ? argv[2] : nullptr, true);
    if (!strcmp(cmd, "time")) return cmd_time(argc > 2 ? argv[2] : nullptr, argc > 3 ? argv[3] : nullptr);
    if (!strcmp(cmd, "small")) return cmd_small();
    if (!strcmp(cmd, "vcheck")) return cmd_vcheck(argc > 2 ? argv[2] : nullptr);
    if (!strcmp(cmd, "vsmall")) return cmd_vsmall(argc > 2 ? argv[2] : nullptr);
    if (!strcmp(cmd, "prof") && argc > 4)
        return cmd_prof(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]), argc > 5 && !strcmp(argv[5], "f16") ? FK_DTYPE_F16 : FK_DTYPE_BF16);
    fprintf(stderr, "usage: %s check [filter] | checkv [filter] | time [filter [S,S,..]] | vcheck [filter] | vsmall [filter] "
                    "| small | prof D S causal [f16]\n", argv[0]);
    return 2;
}
