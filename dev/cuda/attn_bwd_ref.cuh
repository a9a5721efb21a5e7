// attn_bwd_ref.cuh — dev only: the float64 attention-backward reference and its comparison, shared by
// attn_bwd_check.cu (the library's dispatch) and attn_bwd_wgmma_check.cu (the Hopper wgmma main kernel).
//
// ref_run computes, on the GPU, one thread per (token, head): the forward (o and lse in float64, also written into
// p.o and p.lse in their dtypes for the kernel under test), then dQ and dK/dV in float64, and the same gradients of a
// naive backward done in the dtype (P, dP, dS and the gradients rounded to it). compare() measures a gradient copied
// back against both; lp_tol() is the fp16/bf16 bound of docs/HELPERS_COMMON.md built from them.
#ifndef FK_DEV_ATTN_BWD_REF_CUH
#define FK_DEV_ATTN_BWD_REF_CUH

#include "attn_check_common.cuh"

#include <algorithm>
#include <math.h>
#include <vector>

// ---- float64 reference (device) --------------------------------------------------------------------------

// Stores x at element i in dtype dt (round to nearest).
__device__ void st_dt(void *p, int dt, int64_t i, double x) {
    if (dt == FK_DTYPE_F16) ((__half *)p)[i] = __float2half_rn((float)x);
    else if (dt == FK_DTYPE_BF16) ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn((float)x);
    else ((float *)p)[i] = (float)x;
}
// n normal(0, scale) draws (Box-Muller over a counter hash of (seed, i)) stored in dtype dt.
__global__ void fill_normal(void *p, int dt, int64_t n, uint64_t seed, float scale) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        uint64_t h  = mix(seed * 0x9e3779b97f4a7c15ull + (uint64_t)i);
        double   u1 = ((h >> 11) + 1) * (1.0 / 9007199254740993.0), u2 = (mix(h) >> 11) * (1.0 / 9007199254740992.0);
        st_dt(p, dt, i, sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2) * scale);
    }
}

// Sequence of token `tok` on the query side (keys = false; s.i = its row within the sequence) or the key side
// (keys = true; s.i = its key index within the sequence); offsets and lengths of both sides.
struct SeqPos {
    int64_t b, i, q0, k0, sq, sk;
};
__device__ SeqPos seq_of(const fk_attn_problem &p, int64_t tok, bool keys) {
    const int32_t *cu = keys ? p.cu_seqlens_k : p.cu_seqlens_q;
    const int64_t  S  = keys ? p.seqlen_k : p.seqlen_q;
    SeqPos         s;
    if (cu) {
        s.b = 0;
        while (cu[s.b + 1] <= tok) ++s.b;
        s.q0 = p.cu_seqlens_q[s.b], s.k0 = p.cu_seqlens_k[s.b];
        s.sq = p.cu_seqlens_q[s.b + 1] - s.q0, s.sk = p.cu_seqlens_k[s.b + 1] - s.k0;
        s.i  = tok - (keys ? s.k0 : s.q0);
    } else {
        s.b = tok / S, s.q0 = s.k0 = 0, s.sq = p.seqlen_q, s.sk = p.seqlen_k, s.i = tok % S;
    }
    return s;
}
// The header's formula, written independently of the kernels.
__device__ bool visible(const fk_attn_problem &p, int64_t i, int64_t j, int64_t sq, int64_t sk) {
    const int64_t c = i + sk - sq;
    if (p.causal && j > c) return false;
    if (p.window_left >= 0 && j < c - p.window_left) return false;
    if (p.window_right >= 0 && j > c + p.window_right) return false;
    return true;
}
// Score and d(score)/d(q.k) of (row i, key j) in sequence s, head h.
__device__ double score(const fk_attn_problem &p, const SeqPos &s, int64_t i, int64_t j, int64_t h, double *dfac) {
    const int64_t hk = h / (p.nheads_q / p.nheads_kv);
    const int     dt = p.dtype, D = (int)p.head_dim;
    const int64_t qo = s.b * p.q_bs + (s.q0 + i) * p.q_rs + h * p.q_hs;
    const int64_t ko = s.b * p.k_bs + (s.k0 + j) * p.k_rs + hk * p.k_hs;
    double        x  = 0;
    for (int d = 0; d < D; ++d) x += ld(p.q, dt, qo + d) * ld(p.k, dt, ko + d);
    x *= (double)p.scale;
    double fac = (double)p.scale;
    if (p.softcap > 0) {
        const double th = tanh(x / p.softcap);
        x               = p.softcap * th;
        fac *= 1 - th * th;
    }
    if (p.alibi) x -= (double)p.alibi[s.b * p.alibi_bs + h] * fabs((double)(i + s.sk - s.sq - j));
    if (dfac) *dfac = fac;
    return x;
}

struct Ref {
    fk_attn_problem p;
    int64_t         tq, tk;
    double *o, *lse, *dsum, *dsum_lp;          // o (tok, h, d); lse/dsum (h, tok)
    double *dq, *dk, *dv, *dq_lp, *dk_lp, *dv_lp; // compact (tok, head, d)
};

__global__ void ref_fwd(Ref r) {
    const fk_attn_problem &p = r.p;
    const int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (idx >= r.tq * p.nheads_q) return;
    const int64_t tok = idx / p.nheads_q, h = idx % p.nheads_q, hk = h / (p.nheads_q / p.nheads_kv);
    const SeqPos  s = seq_of(p, tok, false);
    const int     D = (int)p.head_dim, dt = p.dtype;
    double        m = -INFINITY, l = 0, acc[256];
    for (int d = 0; d < D; ++d) acc[d] = 0;
    for (int64_t j = 0; j < s.sk; ++j)
        if (visible(p, s.i, j, s.sq, s.sk)) m = fmax(m, score(p, s, s.i, j, h, nullptr));
    if (m > -INFINITY)
        for (int64_t j = 0; j < s.sk; ++j) {
            if (!visible(p, s.i, j, s.sq, s.sk)) continue;
            const double  e  = exp(score(p, s, s.i, j, h, nullptr) - m);
            const int64_t vo = s.b * p.v_bs + (s.k0 + j) * p.v_rs + hk * p.v_hs;
            l += e;
            for (int d = 0; d < D; ++d) acc[d] += e * ld(p.v, dt, vo + d);
        }
    const int64_t oo = s.b * p.o_bs + (s.q0 + s.i) * p.o_rs + h * p.o_hs;
    const int64_t od = s.b * p.do_bs + (s.q0 + s.i) * p.do_rs + h * p.do_hs;
    double        ds = 0, ds_lp = 0;
    for (int d = 0; d < D; ++d) {
        const double o = l > 0 ? acc[d] / l : 0.0;
        r.o[(tok * p.nheads_q + h) * D + d] = o;
        st_dt(p.o, dt, oo + d, o); // the kernel reads o in its dtype
        ds += o * ld(p.do_, dt, od + d);
        ds_lp += rnd_dt(dt, o) * ld(p.do_, dt, od + d);
    }
    const double lse = l > 0 ? m + log(l) : -INFINITY;
    r.lse[h * r.tq + tok]     = lse;
    r.dsum[h * r.tq + tok]    = ds;
    r.dsum_lp[h * r.tq + tok] = ds_lp;
    ((float *)p.lse)[s.b * p.lse_bs + h * p.lse_hs + (s.q0 + s.i) * p.lse_rs] = (float)lse;
}

// P, dP, dS of (row i, key j, head h) in float64, and the same rounded to the dtype as a naive backward would.
__device__ void pds(const Ref &r, const SeqPos &s, int64_t tokq, int64_t i, int64_t j, int64_t h, double &pr,
                    double &ds, double &pr_lp, double &ds_lp) {
    const fk_attn_problem &p = r.p;
    const int64_t hk = h / (p.nheads_q / p.nheads_kv);
    const int     dt = p.dtype, D = (int)p.head_dim;
    double        fac;
    const double  x   = score(p, s, i, j, h, &fac);
    const double  lse = r.lse[h * r.tq + tokq];
    pr                = exp(x - lse);
    const int64_t od = s.b * p.do_bs + (s.q0 + i) * p.do_rs + h * p.do_hs;
    const int64_t vo = s.b * p.v_bs + (s.k0 + j) * p.v_rs + hk * p.v_hs;
    double        dp = 0;
    for (int d = 0; d < D; ++d) dp += ld(p.do_, dt, od + d) * ld(p.v, dt, vo + d);
    ds    = pr * (dp - r.dsum[h * r.tq + tokq]) * fac;
    pr_lp = rnd_dt(dt, pr);
    ds_lp = rnd_dt(dt, pr_lp * (rnd_dt(dt, dp) - r.dsum_lp[h * r.tq + tokq])) * fac;
}

__global__ void ref_dq(Ref r) {
    const fk_attn_problem &p = r.p;
    const int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (idx >= r.tq * p.nheads_q) return;
    const int64_t tok = idx / p.nheads_q, h = idx % p.nheads_q, hk = h / (p.nheads_q / p.nheads_kv);
    const SeqPos  s = seq_of(p, tok, false);
    const int     D = (int)p.head_dim, dt = p.dtype;
    double        acc[256], acc_lp[256];
    for (int d = 0; d < D; ++d) acc[d] = acc_lp[d] = 0;
    if (r.lse[h * r.tq + tok] > -INFINITY)
        for (int64_t j = 0; j < s.sk; ++j) {
            if (!visible(p, s.i, j, s.sq, s.sk)) continue;
            double pr, ds, pr_lp, ds_lp;
            pds(r, s, tok, s.i, j, h, pr, ds, pr_lp, ds_lp);
            const int64_t ko = s.b * p.k_bs + (s.k0 + j) * p.k_rs + hk * p.k_hs;
            for (int d = 0; d < D; ++d) {
                const double kd = ld(p.k, dt, ko + d);
                acc[d] += ds * kd;
                acc_lp[d] += ds_lp * kd;
            }
        }
    for (int d = 0; d < D; ++d) {
        r.dq[(tok * p.nheads_q + h) * D + d]    = acc[d];
        r.dq_lp[(tok * p.nheads_q + h) * D + d] = rnd_dt(dt, acc_lp[d]);
    }
}

__global__ void ref_dkdv(Ref r) {
    const fk_attn_problem &p = r.p;
    const int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (idx >= r.tk * p.nheads_kv) return;
    const int64_t tok = idx / p.nheads_kv, hk = idx % p.nheads_kv, G = p.nheads_q / p.nheads_kv;
    const SeqPos  s = seq_of(p, tok, true);
    const int64_t j = s.i;
    const int     D = (int)p.head_dim, dt = p.dtype;
    double        dk[256], dv[256], dk_lp[256], dv_lp[256];
    for (int d = 0; d < D; ++d) dk[d] = dv[d] = dk_lp[d] = dv_lp[d] = 0;
    for (int64_t h = hk * G; h < (hk + 1) * G; ++h)
        for (int64_t i = 0; i < s.sq; ++i) {
            const int64_t tokq = (p.cu_seqlens_q ? s.q0 : s.b * p.seqlen_q) + i;
            if (!visible(p, i, j, s.sq, s.sk) || !(r.lse[h * r.tq + tokq] > -INFINITY)) continue;
            double pr, ds, pr_lp, ds_lp;
            pds(r, s, tokq, i, j, h, pr, ds, pr_lp, ds_lp);
            const int64_t qo = s.b * p.q_bs + (s.q0 + i) * p.q_rs + h * p.q_hs;
            const int64_t od = s.b * p.do_bs + (s.q0 + i) * p.do_rs + h * p.do_hs;
            for (int d = 0; d < D; ++d) {
                const double qd = ld(p.q, dt, qo + d), odd = ld(p.do_, dt, od + d);
                dk[d] += ds * qd;
                dv[d] += pr * odd;
                dk_lp[d] += ds_lp * qd;
                dv_lp[d] += pr_lp * odd;
            }
        }
    for (int d = 0; d < D; ++d) {
        const int64_t o = (tok * p.nheads_kv + hk) * D + d;
        r.dk[o] = dk[d], r.dv[o] = dv[d];
        r.dk_lp[o] = rnd_dt(dt, dk_lp[d]), r.dv_lp[o] = rnd_dt(dt, dv_lp[d]);
    }
}

// ---- host --------------------------------------------------------------------------------------------------

// Allocates r's buffers for p (tq query and tk key tokens in all; at least one a side) and computes the reference:
// the forward (writing p.o and p.lse, which must be allocated), then dQ and dK/dV. Free with ref_free.
static inline void ref_run(Ref &r, const fk_attn_problem &p, int64_t tq, int64_t tk) {
    const int64_t hq = p.nheads_q, hkv = p.nheads_kv, D = p.head_dim;
    const int64_t nrq = std::max<int64_t>(tq, 1) * hq * D, nrk = std::max<int64_t>(tk, 1) * hkv * D;
    const int64_t nl  = hq * std::max<int64_t>(tq, 1);
    r.p = p, r.tq = tq, r.tk = tk;
    CK(cudaMalloc(&r.o, nrq * 8));
    CK(cudaMalloc(&r.lse, nl * 8));
    CK(cudaMalloc(&r.dsum, nl * 8));
    CK(cudaMalloc(&r.dsum_lp, nl * 8));
    CK(cudaMalloc(&r.dq, nrq * 8));
    CK(cudaMalloc(&r.dq_lp, nrq * 8));
    CK(cudaMalloc(&r.dk, nrk * 8));
    CK(cudaMalloc(&r.dk_lp, nrk * 8));
    CK(cudaMalloc(&r.dv, nrk * 8));
    CK(cudaMalloc(&r.dv_lp, nrk * 8));
    if (tq * hq > 0) ref_fwd<<<(unsigned)((tq * hq + 127) / 128), 128>>>(r);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    if (tq * hq > 0) ref_dq<<<(unsigned)((tq * hq + 127) / 128), 128>>>(r);
    if (tk * hkv > 0) ref_dkdv<<<(unsigned)((tk * hkv + 127) / 128), 128>>>(r);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
}
static inline void ref_free(Ref &r) {
    for (double *x : {r.o, r.lse, r.dsum, r.dsum_lp, r.dq, r.dq_lp, r.dk, r.dk_lp, r.dv, r.dv_lp}) cudaFree(x);
}

// One gradient against the reference: largest |error|, the naive same-dtype backward's largest |error|, the
// largest |reference|, relative L2 error, non-finite outputs, padding elements written (must stay NaN).
struct Stat {
    double max_err, max_lp, max_ref, rel;
    int64_t nonfinite, pad_written;
};

// got: the gradient copied back ((token, head, d) at row stride rs, then `pad` padding elements a row); ref / lp:
// the float64 and naive same-dtype gradients, compact (token, head, d).
static inline Stat compare(const std::vector<uint8_t> &got, const std::vector<double> &ref,
                           const std::vector<double> &lp, fk_dtype dt, int64_t ntok, int H, int D, int64_t rs, int pad) {
    Stat   st = {0, 0, 0, 0, 0, 0};
    double se = 0, sr = 0;
    for (int64_t tok = 0; tok < ntok; ++tok) {
        for (int h = 0; h < H; ++h)
            for (int d = 0; d < D; ++d) {
                const double g = host_ld(got, dt, tok * rs + (int64_t)h * D + d), r = ref[(tok * H + h) * D + d];
                if (!std::isfinite(g)) {
                    ++st.nonfinite;
                    continue;
                }
                st.max_err = std::max(st.max_err, fabs(g - r));
                st.max_lp  = std::max(st.max_lp, fabs(lp[(tok * H + h) * D + d] - r));
                st.max_ref = std::max(st.max_ref, fabs(r));
                se += (g - r) * (g - r), sr += r * r;
            }
        for (int e = 0; e < pad; ++e)
            if (std::isfinite(host_ld(got, dt, tok * rs + (int64_t)H * D + e))) ++st.pad_written;
    }
    st.rel = sr > 0 ? sqrt(se / sr) : sqrt(se);
    return st;
}

// fp16/bf16 bound on a gradient's max_abs error: twice the naive same-dtype backward's, plus half an ulp of the
// largest gradient (the final rounding, which the naive reference can get lucky on when few elements are large),
// plus 1e-4.
static inline double lp_tol(const Stat &st, bool bf16) {
    const int    mant     = bf16 ? 8 : 11;
    const double half_ulp = st.max_ref > 0 ? ldexp(1.0, ilogb(st.max_ref) - mant) : 0.0;
    return 2 * st.max_lp + half_ulp + 1e-4;
}

#endif // FK_DEV_ATTN_BWD_REF_CUH
