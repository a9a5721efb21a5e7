/*
 * attn_bwd_impl.cuh — the CUDA attention backward kernels (included by attn_bwd.cu, gen/attn_bwd_*.cu and
 * dev/cuda/attn_bwd_check.cu).
 *
 * FlashAttention-2's backward schedule, three launches:
 *   1. bwd_prep_kernel: D_i = rowsum(dO_i * O_i) (fp32) and the LSE copied into the workspace ([Hq, total_q],
 *      -inf mapped to +inf so that exp(s - lse) is 0 for a row that saw no key); zeroes the fp32 dQ accumulator.
 *   2. bwd_tc_kernel (fp16/bf16): one block owns BN keys of one KV head and walks every query head of its
 *      group and every query tile of BM rows that can see those keys, recomputing the probabilities from Q, K
 *      and the LSE. Warps split the keys (16 * MT each), so S^T = K Q^T and dP^T = V dO^T land in registers in
 *      exactly the layout that the A operand of dV += P^T dO and dK += dS^T Q needs: P and dS never touch shared
 *      memory for those two products (this is where the key-major split differs from FA2, which stages P).
 *      dS^T goes to shared memory once, for dQ = dS K, which all warps then compute over (rows x head dim) and
 *      add into the fp32 accumulator: with float2 atomics by default, or, when deterministic, with plain
 *      read-add-writes ordered by a per-(batch, head, query tile) counter, so that key block j adds after
 *      key blocks 0..j-1 in every run (bit-identical results; blocks are dispatched in index order, so a
 *      block only ever waits on blocks already resident or finished).
 *      dK and dV stay in registers for the whole walk (summed over the group's query heads: no atomics, no
 *      fp32 dK/dV workspace) and are written once.
 *   3. bwd_convert_kernel: dQ = scale * accumulator, rounded to the dtype.
 * fp32 runs two SIMT kernels instead (bwd_f32_dkdv_kernel, bwd_f32_dq_kernel; FMA only, no tf32, 1e-5 of
 * float64), which need no accumulator and are deterministic by construction.
 *
 * Compile-time: head-dim bucket, tile, dtype. Run-time: causal/window, softcap, ALiBi, GQA, varlen, Sq != Sk,
 * head-dim tail, strides (16-byte cp.async when aligned, element loads otherwise), deterministic.
 */
#ifndef FK_CUDA_ATTN_BWD_IMPL_CUH
#define FK_CUDA_ATTN_BWD_IMPL_CUH

#include "common.cuh"

#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

namespace fk_cuda {

#define FK_BWD_LOG2E 1.4426950408889634f

struct BwdParams {
    const void *q, *k, *v, *o, *do_; // q/o/do (B, Sq, Hq, d), k/v (B, Sk, Hkv, d); varlen: (total, H, d)
    void       *dq, *dk, *dv;
    const float *lse;                // (B, Hq, Sq) or (Hq, total_q)
    int64_t q_bs, q_rs, q_hs, k_bs, k_rs, k_hs, v_bs, v_rs, v_hs, o_bs, o_rs, o_hs, do_bs, do_rs, do_hs;
    int64_t dq_bs, dq_rs, dq_hs, dk_bs, dk_rs, dk_hs, dv_bs, dv_rs, dv_hs;
    int64_t lse_bs, lse_hs, lse_rs;
    const int32_t *cu_q, *cu_k;
    const float   *alibi;
    int64_t        alibi_bs;
    int            batch, seqlen_q, seqlen_k; // varlen: maxima
    int            head_dim, nheads_q, group;
    int            window_left, window_right; // -1 = unbounded (clamped to 2^29)
    float          scale, scale_log2, softcap, softcap_inv, softcap_log2;
    int            transform; // softcap or ALiBi: the general score path
    int            vec_in, vec_out;
    int            deterministic;
    // workspace
    float  *dq_acc;   // [total_q, Hq, acc_d] fp32 (tensor-core path only)
    float  *dsum;     // [Hq, total_q]
    float  *lsef;     // [Hq, total_q], natural log, +inf for rows with no key
    int    *sem;      // [B, Hq, n_mblocks] (deterministic only)
    int64_t total_q, total_k; // rows of q and k/v (device-side bounds of cu_q / cu_k)
    int     acc_d;    // head-dim bucket (row pitch of dq_acc)
    int     n_mblocks;
};


struct BwdSeq {
    int q0, k0, sq, sk; // token offsets (varlen) and lengths
};
// cu_seqlens are bounded on the device as in the forward's seq_info: offsets outside [0, total] make the
// sequence empty, lengths are cut to max_seqlen (the grid and the deterministic counters are sized by it).
__device__ __forceinline__ BwdSeq bwd_seq(const BwdParams &p, int b) {
    BwdSeq s;
    if (p.cu_q) {
        const int  q0 = p.cu_q[b], q1 = p.cu_q[b + 1], k0 = p.cu_k[b], k1 = p.cu_k[b + 1];
        const bool ok = 0 <= q0 && q0 <= q1 && q1 <= p.total_q && 0 <= k0 && k0 <= k1 && k1 <= p.total_k;
        s.q0 = ok ? q0 : 0, s.k0 = ok ? k0 : 0;
        s.sq = ok ? min(q1 - q0, p.seqlen_q) : 0, s.sk = ok ? min(k1 - k0, p.seqlen_k) : 0;
    } else {
        s.q0 = s.k0 = 0, s.sq = p.seqlen_q, s.sk = p.seqlen_k;
    }
    return s;
}

// The first row of sequence b in the [Hq, total_q] / [total_q, Hq, .] workspace rows.
__device__ __forceinline__ int bwd_tok0_q(const BwdParams &p, int b, const BwdSeq &s) {
    return p.cu_q ? s.q0 : b * p.seqlen_q;
}

// Visible keys [lo, hi) of row i (fk_attn_key_range in 32-bit).
__device__ __forceinline__ void bwd_key_range(const BwdParams &p, int i, int sq, int sk, int &lo, int &hi) {
    const int diag = i + sk - sq;
    lo = 0, hi = sk;
    if (p.window_left >= 0) lo = max(lo, diag - p.window_left);
    if (p.window_right >= 0) hi = min(hi, diag + p.window_right + 1);
}

// Key blocks [n_lo, n_hi) that query block mb "contributes to": the union of its rows' key ranges, as BN
// blocks. Both ends are non-decreasing in mb, so the query blocks of key block j form one interval, found
// by bisection below. The deterministic order counts exactly these pairs on both sides.
template <int BM, int BN>
__device__ __forceinline__ void bwd_mblock_keys(const BwdParams &p, int mb, int sq, int sk, int &n_lo, int &n_hi) {
    const int first = mb * BM, last = min(first + BM, sq) - 1;
    int lo0, hi0, lo1, hi1;
    bwd_key_range(p, first, sq, sk, lo0, hi0);
    bwd_key_range(p, last, sq, sk, lo1, hi1);
    n_lo = max(lo0, 0) / BN;
    n_hi = (max(hi1, 0) + BN - 1) / BN;
}
template <int BM, int BN>
__device__ __forceinline__ void bwd_mblock_range(const BwdParams &p, int j, int sq, int sk, int &m_begin, int &m_end) {
    const int nmb = (sq + BM - 1) / BM;
    int       a = 0, b = nmb; // first mb with n_hi > j
    while (a < b) {
        const int mid = (a + b) / 2;
        int       lo, hi;
        bwd_mblock_keys<BM, BN>(p, mid, sq, sk, lo, hi);
        if (hi > j) b = mid;
        else a = mid + 1;
    }
    m_begin = a;
    b       = nmb; // first mb with n_lo > j
    while (a < b) {
        const int mid = (a + b) / 2;
        int       lo, hi;
        bwd_mblock_keys<BM, BN>(p, mid, sq, sk, lo, hi);
        if (lo > j) b = mid;
        else a = mid + 1;
    }
    m_end = a;
}

// Deterministic dQ (p.deterministic): the key blocks that add into query block mb's rows take turns in key order.
// bwd_det_acquire waits (thread 0 polls, the block follows) until key blocks n_lo(mb)..j-1 have added their
// parts and returns the turn counter; the caller adds its part with plain read-add-writes; bwd_det_release
// publishes them and passes the turn to key block j + 1. Every backward main kernel uses this one protocol with
// its own BM and BN (p.sem and p.n_mblocks sized for that BM by attn_bwd.cu's layout).
template <int BM, int BN>
__device__ __forceinline__ int *bwd_det_acquire(const BwdParams &p, const BwdSeq &s, int b, int h, int mb, int j) {
    int n_lo, n_hi;
    bwd_mblock_keys<BM, BN>(p, mb, s.sq, s.sk, n_lo, n_hi);
    int *sem = p.sem + ((int64_t)b * p.nheads_q + h) * p.n_mblocks + mb;
    if (threadIdx.x == 0) {
        while (atomicAdd(sem, 0) != j - n_lo) __nanosleep(64);
        __threadfence();
    }
    __syncthreads();
    return sem;
}
__device__ __forceinline__ void bwd_det_release(int *sem) {
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) atomicAdd(sem, 1);
}

// ---------------------------------------------------------------------------------------------------------
// 1. prep: D = rowsum(dO * O), LSE copy, dQ accumulator zeroed. One warp per (token, head).
// ---------------------------------------------------------------------------------------------------------

template <int DT> __device__ __forceinline__ float bwd_ld(const void *p, int64_t i) {
    if constexpr (DT == 0) return ((const float *)p)[i];
    else if constexpr (DT == 1) return __half2float(((const __half *)p)[i]);
    else return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
}
template <int DT> __device__ __forceinline__ void bwd_st(void *p, int64_t i, float x) {
    if constexpr (DT == 0) ((float *)p)[i] = x;
    else if constexpr (DT == 1) ((__half *)p)[i] = __float2half_rn(x);
    else ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(x);
}

template <int DT> __global__ void __launch_bounds__(256) bwd_prep_kernel(const BwdParams p) {
    const int64_t nw   = (int64_t)gridDim.x * 8;
    const int     lane = threadIdx.x % 32;
    for (int64_t w = blockIdx.x * 8 + threadIdx.x / 32; w < p.total_q * p.nheads_q; w += nw) {
        const int64_t tok = w / p.nheads_q;
        const int     h   = (int)(w % p.nheads_q);
        int64_t       b = 0, i = tok;
        if (!p.cu_q) b = tok / p.seqlen_q, i = tok % p.seqlen_q;
        const int64_t oo = b * p.o_bs + i * p.o_rs + h * p.o_hs, od = b * p.do_bs + i * p.do_rs + h * p.do_hs;
        float         acc = 0.f;
        for (int d = lane; d < p.head_dim; d += 32) acc = fmaf(bwd_ld<DT>(p.o, oo + d), bwd_ld<DT>(p.do_, od + d), acc);
        acc = warp_sum(acc);
        if (lane == 0) {
            const float l = p.lse[b * p.lse_bs + h * p.lse_hs + i * p.lse_rs];
            p.dsum[h * p.total_q + tok] = acc;
            p.lsef[h * p.total_q + tok] = l == -INFINITY ? INFINITY : l;
        }
        if (p.dq_acc) {
            float4 *row = reinterpret_cast<float4 *>(p.dq_acc + (tok * p.nheads_q + h) * p.acc_d);
            for (int c = lane; c < p.acc_d / 4; c += 32) row[c] = make_float4(0.f, 0.f, 0.f, 0.f);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// 3. convert: dq = scale * accumulator. One thread per 8 elements of a (token, head) row.
// ---------------------------------------------------------------------------------------------------------

template <int DT> __global__ void __launch_bounds__(256) bwd_convert_kernel(const BwdParams p) {
    const int     chunks = (p.head_dim + 7) / 8;
    const int64_t n      = p.total_q * p.nheads_q * chunks;
    for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < n; idx += (int64_t)gridDim.x * blockDim.x) {
        const int64_t row = idx / chunks, tok = row / p.nheads_q;
        const int     h = (int)(row % p.nheads_q), d0 = (int)(idx % chunks) * 8;
        int64_t       b = 0, i = tok;
        if (!p.cu_q) b = tok / p.seqlen_q, i = tok % p.seqlen_q;
        const float4 *src = reinterpret_cast<const float4 *>(p.dq_acc + row * p.acc_d + d0);
        const float4  x0 = src[0], x1 = src[1];
        const float   v[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
        const int64_t o    = b * p.dq_bs + i * p.dq_rs + h * p.dq_hs + d0;
        if constexpr (DT != 0) {
            if (p.vec_out && d0 + 8 <= p.head_dim) {
                uint4 w;
                w.x = pack2<DT == 2>(v[0] * p.scale, v[1] * p.scale);
                w.y = pack2<DT == 2>(v[2] * p.scale, v[3] * p.scale);
                w.z = pack2<DT == 2>(v[4] * p.scale, v[5] * p.scale);
                w.w = pack2<DT == 2>(v[6] * p.scale, v[7] * p.scale);
                *reinterpret_cast<uint4 *>((uint16_t *)p.dq + o) = w;
                continue;
            }
        }
        for (int e = 0; e < 8 && d0 + e < p.head_dim; ++e) bwd_st<DT>(p.dq, o + e, v[e] * p.scale);
    }
}

// ---------------------------------------------------------------------------------------------------------
// 2. fp16 / bf16 tensor-core kernel
// ---------------------------------------------------------------------------------------------------------

// ROWS x D tile of 16-bit elements, global (row pitch rs) -> shared (pitch LD = D + 8); rows >= rows_valid and
// columns >= d_valid become zeros. Asynchronous (cp.async) on the 16-byte path; the caller commits.
template <int ROWS, int D, int NT>
__device__ __forceinline__ void bwd_load_tile(uint16_t *s, const uint16_t *g, int64_t rs, int rows_valid, int d_valid,
                                              bool vec) {
    constexpr int CH = D / 8, LD = D + 8, TOTAL = ROWS * CH;
    if (vec) {
#pragma unroll
        for (int it = 0; it < (TOTAL + NT - 1) / NT; ++it) {
            const int idx = it * NT + (int)threadIdx.x;
            if (TOTAL % NT == 0 || idx < TOTAL) {
                const int r = idx / CH, c = idx % CH;
                int       n = r < rows_valid ? min(8, d_valid - c * 8) : 0;
                n           = max(n, 0);
                cp_async_16(s + r * LD + c * 8, n > 0 ? g + r * rs + c * 8 : g, 2 * n);
            }
        }
    } else {
        for (int idx = threadIdx.x; idx < ROWS * D; idx += NT) {
            const int r = idx / D, c = idx % D;
            s[r * LD + c] = (r < rows_valid && c < d_valid) ? g[r * rs + c] : (uint16_t)0;
        }
    }
}

// BM rows of the LSE (natural log) and D workspace rows, global -> shared, committed with the step's Q/dO tiles
// (4-byte cp.async, so the first BM threads do not wait on L2 at every step). Rows >= rows_valid are padding,
// LSE = +inf (P = 0) and D = 0, written with plain stores: nothing is in flight for them.
template <int BM, int NT>
__device__ __forceinline__ void bwd_load_rows(float *sl, float *sd, const float *gl, const float *gd, int rows_valid) {
    for (int r = threadIdx.x; r < BM; r += NT) {
        const bool ok = r < rows_valid;
        cp_async_4_if(sl + r, ok ? gl + r : gl, ok);
        cp_async_4_if(sd + r, ok ? gd + r : gd, ok);
        if (!ok) sl[r] = INFINITY, sd[r] = 0.f;
    }
}

// The K and V tiles (BN keys from n0, kv_rows of them valid) of KV head hk -> sK, sV (pitch D + 8): the first
// loads of bwd_tc_kernel and bwd_split_tc_kernel, one helper so that the two prologues cannot drift apart.
template <int BN, int D, int NT>
__device__ __forceinline__ void bwd_load_kv(const BwdParams &p, const BwdSeq &s, int b, int hk, int n0, int kv_rows,
                                            uint16_t *sK, uint16_t *sV, bool vec) {
    const uint16_t *gK = (const uint16_t *)p.k + b * p.k_bs + (int64_t)(s.k0 + n0) * p.k_rs + hk * p.k_hs;
    const uint16_t *gV = (const uint16_t *)p.v + b * p.v_bs + (int64_t)(s.k0 + n0) * p.v_rs + hk * p.v_hs;
    bwd_load_tile<BN, D, NT>(sK, gK, p.k_rs, kv_rows, p.head_dim, vec);
    bwd_load_tile<BN, D, NT>(sV, gV, p.v_rs, kv_rows, p.head_dim, vec);
}

// Issue the loads of walk step `it` of KV head hk (query head hk * group + it / nm, query block m_begin + it % nm)
// into buffer `buf`: its Q and dO tiles (BM rows, pitch D + 8) and its LSE and D rows. Shared by bwd_tc_kernel and
// bwd_split_tc_kernel (which differ only in how many buffers they rotate through).
template <int BM, int D, int NT>
__device__ __forceinline__ void bwd_load_step(const BwdParams &p, const BwdSeq &s, int b, int hk, int nm, int m_begin,
                                              int tokq, int it, int buf, uint16_t *sQ, uint16_t *sdO, float *sL,
                                              float *sD, bool vec) {
    constexpr int LD = D + 8;
    const int     h = hk * p.group + it / nm, mb = m_begin + it % nm, m0 = mb * BM;
    const int     rows = min(BM, s.sq - m0);
    const uint16_t *gQ  = (const uint16_t *)p.q + b * p.q_bs + (int64_t)(s.q0 + m0) * p.q_rs + h * p.q_hs;
    const uint16_t *gdO = (const uint16_t *)p.do_ + b * p.do_bs + (int64_t)(s.q0 + m0) * p.do_rs + h * p.do_hs;
    bwd_load_tile<BM, D, NT>(sQ + buf * BM * LD, gQ, p.q_rs, rows, p.head_dim, vec);
    bwd_load_tile<BM, D, NT>(sdO + buf * BM * LD, gdO, p.do_rs, rows, p.head_dim, vec);
    const int64_t t0 = (int64_t)h * p.total_q + tokq + m0;
    bwd_load_rows<BM, NT>(sL + buf * BM, sD + buf * BM, p.lsef + t0, p.dsum + t0, rows);
}

#ifndef FK_BWD_STAGE3_MAX_D
#define FK_BWD_STAGE3_MAX_D 64
#endif
template <int D, int BM, int BN, int NW> struct BwdShape {
    static constexpr int NT = NW * 32, KPW = BN / NW, MT = KPW / 16, LD = D + 8, LDS = BM + 8;
    static constexpr int WM = (BM / 16 < NW) ? BM / 16 : NW, WN = NW / WM; // dQ warp grid
    static constexpr int MQ = BM / WM / 16, NQ = D / WN / 8;                // dQ tiles per warp
    // K, V; Q, dO in nst buffers; dS^T; LSE and D in nst buffers
    static constexpr int smem_bytes(int nst) {
        return (2 * BN * LD + 2 * nst * BM * LD + BN * LDS) * 2 + 2 * nst * BM * 4;
    }
    static constexpr int SMEM2 = smem_bytes(2), SMEM3 = smem_bytes(3);
    // Q/dO/LSE/D buffers (pipeline stages). ncu (H200, D = 128) put 10.75% of the stall samples on the wait for a
    // step issued only one step earlier; a third buffer issues it two steps earlier. 3 on sm_90 and newer for
    // D = 64 (32x128, 2 blocks of 74 KB per SM: occupancy unchanged; ptxas spills 28/20 B instead of 24/12), if minb
    // blocks of SMEM3 fit in the SM's 228 KB (1 KB reserved per block); 2 elsewhere. D = 128 stays at 2: with 3
    // (190 KB, fits) ptxas sm_90 spilled 24/48 B instead of 4/4 (at 255 registers, the rotating buffer index is one
    // register too many). D = 256 stays at 2: BwdTile<256> runs where the split kernel does not fit, not on sm_90
    // in practice. Compile-time per architecture: the kernel takes it from __CUDA_ARCH__, the launch from the
    // device's compute capability (every build that runs on cc >= 9 carries sm_90+ code: "80;90" by default).
    // FK_BWD_STAGE3_MAX_D (dev knob; 64: measured in run 10, D = 128 was as fast with 2 stages and spills less): the largest head-dim bucket with 3 stages.
    static constexpr int stages(bool sm90, int minb) {
        return sm90 && D <= FK_BWD_STAGE3_MAX_D && minb * (SMEM3 + 1024) <= 228 * 1024 ? 3 : 2;
    }
    static constexpr int smem(bool sm90, int minb) { return stages(sm90, minb) == 3 ? SMEM3 : SMEM2; }
    static_assert(KPW % 16 == 0 && BM % 16 == 0 && D % 16 == 0 && NQ % 2 == 0 && BM % (16 * WM) == 0, "tile");
};

// The tile columns [ilo, ihi) of the queries that see key `key` (query i sees it when key - off - wr <= i <=
// key - off + wl; off = sk - sq; none past the key tail), relative to query c0 (column 0 of the thread).
__device__ __forceinline__ void bwd_key_band(const BwdParams &p, int key, int off, int sk, int c0, int &ilo, int &ihi) {
    ilo = p.window_right >= 0 ? key - off - p.window_right : -(1 << 30);
    ihi = p.window_left >= 0 ? key - off + p.window_left + 1 : (1 << 30);
    if (key >= sk) ilo = ihi;
    ilo -= c0;
    ihi -= c0;
}

// P = exp2(s * log2e - lse * log2e) and dS = P (dP - D) [* (1 - tanh^2) under softcap], in place, for a warp's
// S^T / dP^T accumulators: element (mt, i, e) is key n0 + wkey + 16 mt + g + 8 (e >> 1) and query column
// q0 + 8 i + 2 t + (e & 1) (q0: the warp's first query row; m0: the block's, of BM rows; BN keys from n0).
// l2 / dd: the LSE (natural log) and D of the warp's column 0 in shared memory. Masks: causal / window / key tail
// (skipped for tiles inside every row's band), softcap, ALiBi. Shared by bwd_tc_kernel and bwd_split_tc_kernel.
template <int BM, int BN, int MT, int NS>
__device__ __forceinline__ void bwd_p_ds(const BwdParams &p, const BwdSeq &s, int b, int h, int m0, int q0, int n0,
                                         int wkey, int off, int g, int t, const float *l2, const float *dd,
                                         float (&st)[MT][NS][4], float (&dp)[MT][NS][4]) {
    int lo_first, hi_first, lo_last, hi_last;
    bwd_key_range(p, m0, s.sq, s.sk, lo_first, hi_first);
    bwd_key_range(p, min(m0 + BM, s.sq) - 1, s.sq, s.sk, lo_last, hi_last);
    const bool interior = n0 >= lo_last && n0 + BN <= hi_first;
    if (!p.transform) {
        if (!interior) {
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int hh = 0; hh < 2; ++hh) {
                    int ilo, ihi;
                    bwd_key_band(p, n0 + wkey + mt * 16 + g + 8 * hh, off, s.sk, q0 + 2 * t, ilo, ihi);
#pragma unroll
                    for (int i = 0; i < NS; ++i)
#pragma unroll
                        for (int e = 0; e < 2; ++e) {
                            const int col = 8 * i + e;
                            if (col < ilo || col >= ihi) st[mt][i][2 * hh + e] = -INFINITY;
                        }
                }
        }
#pragma unroll
        for (int i = 0; i < NS; ++i) {
            const float2 lv = *reinterpret_cast<const float2 *>(l2 + 8 * i + 2 * t);
            const float2 dv2 = *reinterpret_cast<const float2 *>(dd + 8 * i + 2 * t);
            const float  l2x = lv.x * FK_BWD_LOG2E, l2y = lv.y * FK_BWD_LOG2E; // sL: natural log
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const float pr = fast_exp2(fmaf(st[mt][i][e], p.scale_log2, -((e & 1) ? l2y : l2x)));
                    st[mt][i][e]   = pr;
                    dp[mt][i][e]   = pr * (dp[mt][i][e] - ((e & 1) ? dv2.y : dv2.x));
                }
        }
    } else {
        const float slope2 = p.alibi ? p.alibi[b * p.alibi_bs + h] * FK_BWD_LOG2E : 0.f;
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int hh = 0; hh < 2; ++hh) {
                const int key = n0 + wkey + mt * 16 + g + 8 * hh;
                int       ilo, ihi;
                bwd_key_band(p, key, off, s.sk, q0 + 2 * t, ilo, ihi);
                const int dist0 = q0 + 2 * t + off - key; // i + sk - sq - key at column 0
#pragma unroll
                for (int i = 0; i < NS; ++i) {
                    const float2 lv  = *reinterpret_cast<const float2 *>(l2 + 8 * i + 2 * t);
                    const float2 dv2 = *reinterpret_cast<const float2 *>(dd + 8 * i + 2 * t);
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        const int col = 8 * i + e;
                        const float x = st[mt][i][2 * hh + e];
                        float s2, fac = 1.f;
                        if (p.softcap > 0.f) {
                            const float th = fast_tanh(x * p.softcap_inv);
                            s2             = p.softcap_log2 * th;
                            fac            = 1.f - th * th;
                        } else {
                            s2 = x * p.scale_log2;
                        }
                        s2 -= slope2 * fabsf((float)(dist0 + col));
                        const float lse = e ? lv.y : lv.x; // natural log: exp2(s2 - lse log2e)
                        const float pr  = (col < ilo || col >= ihi) ? 0.f : fast_exp2(fmaf(-lse, FK_BWD_LOG2E, s2));
                        st[mt][i][2 * hh + e] = pr;
                        dp[mt][i][2 * hh + e] = pr * (dp[mt][i][2 * hh + e] - (e ? dv2.y : dv2.x)) * fac;
                    }
                }
            }
    }
}

// Epilogue of bwd_tc_kernel and bwd_split_tc_kernel: dK = scale * dk and dV of this warp's keys (wkey + 16 mt + g
// + 8 hh, kv_rows valid from key n0) x dims (wd + 8 i + 2 t; wd = 0 where a warp owns the whole head dim), straight
// from the accumulators to global memory, 32-bit pairs where vec_out and the pair is inside head_dim.
template <int MT, int ND, bool BF16>
__device__ __forceinline__ void bwd_store_dkdv(const BwdParams &p, const BwdSeq &s, int b, int hk, int n0, int kv_rows,
                                               int wkey, int wd, int g, int t, const float (&dk)[MT][ND][4],
                                               const float (&dv)[MT][ND][4]) {
    uint16_t *gdK = (uint16_t *)p.dk + b * p.dk_bs + (int64_t)(s.k0 + n0) * p.dk_rs + hk * p.dk_hs;
    uint16_t *gdV = (uint16_t *)p.dv + b * p.dv_bs + (int64_t)(s.k0 + n0) * p.dv_rs + hk * p.dv_hs;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
            const int r = wkey + mt * 16 + g + 8 * hh;
            if (r >= kv_rows) continue;
#pragma unroll
            for (int i = 0; i < ND; ++i) {
                const int d = wd + 8 * i + 2 * t;
                if (d >= p.head_dim) continue;
                const float k0v = dk[mt][i][2 * hh] * p.scale, k1v = dk[mt][i][2 * hh + 1] * p.scale;
                const float v0v = dv[mt][i][2 * hh], v1v = dv[mt][i][2 * hh + 1];
                uint16_t   *pk = gdK + r * p.dk_rs + d, *pv = gdV + r * p.dv_rs + d;
                if (p.vec_out && d + 1 < p.head_dim) {
                    *reinterpret_cast<uint32_t *>(pk) = pack2<BF16>(k0v, k1v);
                    *reinterpret_cast<uint32_t *>(pv) = pack2<BF16>(v0v, v1v);
                } else {
                    pk[0] = from_float<BF16>(k0v);
                    pv[0] = from_float<BF16>(v0v);
                    if (d + 1 < p.head_dim) {
                        pk[1] = from_float<BF16>(k1v);
                        pv[1] = from_float<BF16>(v1v);
                    }
                }
            }
        }
}

template <int D, int BM, int BN, int NW, int MINB, bool BF16>
__global__ void __launch_bounds__(NW * 32, MINB) bwd_tc_kernel(const BwdParams p) {
    using S          = BwdShape<D, BM, BN, NW>;
    constexpr int NT = S::NT, MT = S::MT, LD = S::LD, LDS = S::LDS;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    constexpr int NST = S::stages(true, MINB); // Q/dO/LSE/D buffers; launch_bwd_tc sizes shared memory the same way
#else
    constexpr int NST = S::stages(false, MINB);
#endif
    constexpr int NS = BM / 8; // S^T n-tiles (queries)
    constexpr int ND = D / 8;  // dK/dV n-tiles
    extern __shared__ __align__(16) uint16_t smem[];
    uint16_t *sK = smem, *sV = sK + BN * LD, *sQ = sV + BN * LD, *sdO = sQ + NST * BM * LD, *sDS = sdO + NST * BM * LD;
    float    *sL = reinterpret_cast<float *>(sDS + BN * LDS), *sD = sL + NST * BM;

    const int    j = blockIdx.x, hk = blockIdx.y, b = blockIdx.z;
    const BwdSeq s = bwd_seq(p, b);
    const int    n0 = j * BN;
    if (n0 >= s.sk) return;
    const int kv_rows = min(BN, s.sk - n0);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
    const int wkey = warp * S::KPW; // first key (in the block) of this warp
    const bool vec = p.vec_in;

    bwd_load_kv<BN, D, NT>(p, s, b, hk, n0, kv_rows, sK, sV, vec);

    int m_begin, m_end;
    bwd_mblock_range<BM, BN>(p, j, s.sq, s.sk, m_begin, m_end);
    const int nm = max(m_end - m_begin, 0), total = nm * p.group;
    const int tokq = bwd_tok0_q(p, b, s);

    // Issue the loads of step `it` (query head, query block) into buffer `buf`.
    auto load_step = [&](int it, int buf) {
        bwd_load_step<BM, D, NT>(p, s, b, hk, nm, m_begin, tokq, it, buf, sQ, sdO, sL, sD, vec);
    };
    // Steps 0..NST-2 in flight before the walk, one commit group each (K, V ride with step 0's); a step that does
    // not exist commits an empty group, so that "the group of step it" is always the it-th.
#pragma unroll
    for (int pre = 0; pre < NST - 1; ++pre) {
        if (pre < total) load_step(pre, pre);
        cp_async_commit();
    }

    float dv[MT][ND][4], dk[MT][ND][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int i = 0; i < ND; ++i)
#pragma unroll
            for (int e = 0; e < 4; ++e) dv[mt][i][e] = dk[mt][i][e] = 0.f;

    const uint32_t kA  = smem_addr(sK + (wkey + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + (lane >> 4) * 8);
    const uint32_t vA  = smem_addr(sV + (wkey + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + (lane >> 4) * 8);
    const uint32_t qB  = smem_addr(sQ + ((lane & 7) + (lane >> 4) * 8) * LD + ((lane >> 3) & 1) * 8);
    const uint32_t doB = smem_addr(sdO + ((lane & 7) + (lane >> 4) * 8) * LD + ((lane >> 3) & 1) * 8);
    const uint32_t qBt = smem_addr(sQ + ((lane & 7) + ((lane >> 3) & 1) * 8) * LD + (lane >> 4) * 8);
    const uint32_t doBt = smem_addr(sdO + ((lane & 7) + ((lane >> 3) & 1) * 8) * LD + (lane >> 4) * 8);
    const uint32_t dsAt = smem_addr(sDS + ((lane & 7) + (lane >> 4) * 8) * LDS + ((lane >> 3) & 1) * 8);
    const uint32_t kBt  = smem_addr(sK + ((lane & 7) + ((lane >> 3) & 1) * 8) * LD + (lane >> 4) * 8);
    const int      wm = warp % S::WM, wn = warp / S::WM;
    const int      off = s.sk - s.sq;

    // Step it reads buffer it % NST (buf) and issues step it + NST - 1 into buffer (it - 1) % NST, the one step it-1
    // read. it % NST is kept as a rotating small int (rot) rather than a modulo; with 2 stages it is it & 1, as
    // before (ptxas sm_90 spilled 44 B at D = 128 with the rotating int there, instead of 4).
    int rot = 0;
    for (int it = 0; it < total; ++it, rot = rot + 1 == NST ? 0 : rot + 1) {
        const int buf = NST == 2 ? it & 1 : rot;
        const int h = hk * p.group + it / nm, mb = m_begin + it % nm, m0 = mb * BM;
        cp_async_wait_group<NST - 2>(); // step it's group landed; the NST-2 newer ones may stay in flight
        __syncthreads(); // ... for every thread (and K, V); every warp is done with step it-1 (its buffer, dS^T)
        if (it + NST - 1 < total) load_step(it + NST - 1, buf == 0 ? NST - 1 : buf - 1);
        cp_async_commit();

        // S^T = K Q^T and dP^T = V dO^T: [16 MT keys x BM queries] per warp, fp32.
        float st[MT][NS][4], dp[MT][NS][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int i = 0; i < NS; ++i)
#pragma unroll
                for (int e = 0; e < 4; ++e) st[mt][i][e] = dp[mt][i][e] = 0.f;
        const uint32_t bo = 2u * buf * BM * LD;
#pragma unroll
        for (int ks = 0; ks < D / 16; ++ks) {
            uint32_t a[MT][4], av[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                ldmatrix_x4(a[mt], kA + 2u * (mt * 16 * LD + ks * 16));
                ldmatrix_x4(av[mt], vA + 2u * (mt * 16 * LD + ks * 16));
            }
#pragma unroll
            for (int np = 0; np < BM / 16; ++np) {
                uint32_t bq[4], bd[4];
                ldmatrix_x4(bq, qB + bo + 2u * (np * 16 * LD + ks * 16));
                ldmatrix_x4(bd, doB + bo + 2u * (np * 16 * LD + ks * 16));
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    mma_16816<BF16>(st[mt][2 * np], a[mt], bq[0], bq[1]);
                    mma_16816<BF16>(st[mt][2 * np + 1], a[mt], bq[2], bq[3]);
                    mma_16816<BF16>(dp[mt][2 * np], av[mt], bd[0], bd[1]);
                    mma_16816<BF16>(dp[mt][2 * np + 1], av[mt], bd[2], bd[3]);
                }
            }
        }

        // P = exp2(s * log2e - lse * log2e); dS = P (dP - D) [* (1 - tanh^2) under softcap]. In place.
        bwd_p_ds<BM, BN, MT, NS>(p, s, b, h, m0, m0, n0, wkey, off, g, t, sL + buf * BM, sD + buf * BM, st, dp);

        // dV += P^T dO ; dS^T -> shared ; dK += dS^T Q. A operands straight from the accumulators.
#pragma unroll
        for (int ks = 0; ks < BM / 16; ++ks) {
            uint32_t pa[MT][4], da[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                pa[mt][0] = pack2<BF16>(st[mt][2 * ks][0], st[mt][2 * ks][1]);
                pa[mt][1] = pack2<BF16>(st[mt][2 * ks][2], st[mt][2 * ks][3]);
                pa[mt][2] = pack2<BF16>(st[mt][2 * ks + 1][0], st[mt][2 * ks + 1][1]);
                pa[mt][3] = pack2<BF16>(st[mt][2 * ks + 1][2], st[mt][2 * ks + 1][3]);
                da[mt][0] = pack2<BF16>(dp[mt][2 * ks][0], dp[mt][2 * ks][1]);
                da[mt][1] = pack2<BF16>(dp[mt][2 * ks][2], dp[mt][2 * ks][3]);
                da[mt][2] = pack2<BF16>(dp[mt][2 * ks + 1][0], dp[mt][2 * ks + 1][1]);
                da[mt][3] = pack2<BF16>(dp[mt][2 * ks + 1][2], dp[mt][2 * ks + 1][3]);
                uint32_t *row0 = reinterpret_cast<uint32_t *>(sDS + (wkey + mt * 16 + g) * LDS + ks * 16 + 2 * t);
                uint32_t *row1 = reinterpret_cast<uint32_t *>(sDS + (wkey + mt * 16 + g + 8) * LDS + ks * 16 + 2 * t);
                row0[0] = da[mt][0];
                row1[0] = da[mt][1];
                row0[4] = da[mt][2];
                row1[4] = da[mt][3];
            }
#pragma unroll
            for (int dq2 = 0; dq2 < D / 16; ++dq2) {
                uint32_t bdo[4], bq[4];
                ldmatrix_x4_trans(bdo, doBt + bo + 2u * (ks * 16 * LD + dq2 * 16));
                ldmatrix_x4_trans(bq, qBt + bo + 2u * (ks * 16 * LD + dq2 * 16));
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    mma_16816<BF16>(dv[mt][2 * dq2], pa[mt], bdo[0], bdo[1]);
                    mma_16816<BF16>(dv[mt][2 * dq2 + 1], pa[mt], bdo[2], bdo[3]);
                    mma_16816<BF16>(dk[mt][2 * dq2], da[mt], bq[0], bq[1]);
                    mma_16816<BF16>(dk[mt][2 * dq2 + 1], da[mt], bq[2], bq[3]);
                }
            }
        }
        __syncthreads(); // dS^T complete

        // dQ (this step's part) = dS K: warp (wm, wn) owns rows wm*BM/WM.. and columns wn*D/WN..
        float acc[S::MQ][S::NQ][4];
#pragma unroll
        for (int a = 0; a < S::MQ; ++a)
#pragma unroll
            for (int i = 0; i < S::NQ; ++i)
#pragma unroll
                for (int e = 0; e < 4; ++e) acc[a][i][e] = 0.f;
#pragma unroll
        for (int ks = 0; ks < BN / 16; ++ks) {
            uint32_t a[S::MQ][4];
#pragma unroll
            for (int mq = 0; mq < S::MQ; ++mq)
                ldmatrix_x4_trans(a[mq], dsAt + 2u * (ks * 16 * LDS + wm * (BM / S::WM) + mq * 16));
#pragma unroll
            for (int np = 0; np < S::NQ / 2; ++np) {
                uint32_t bk[4];
                ldmatrix_x4_trans(bk, kBt + 2u * (ks * 16 * LD + wn * (D / S::WN) + np * 16));
#pragma unroll
                for (int mq = 0; mq < S::MQ; ++mq) {
                    mma_16816<BF16>(acc[mq][2 * np], a[mq], bk[0], bk[1]);
                    mma_16816<BF16>(acc[mq][2 * np + 1], a[mq], bk[2], bk[3]);
                }
            }
        }
        const int rows = min(BM, s.sq - m0);
        float    *gacc = p.dq_acc + ((int64_t)(tokq + m0) * p.nheads_q + h) * p.acc_d + wn * (D / S::WN) + 2 * t;
        const int64_t rstride = (int64_t)p.nheads_q * p.acc_d;
        // Each (row r < rows, n-tile i) pair of this warp's dQ part: the same walk for both adds below.
        auto each_dq = [&](auto &&add) {
#pragma unroll
            for (int mq = 0; mq < S::MQ; ++mq)
#pragma unroll
                for (int hh = 0; hh < 2; ++hh) {
                    const int r = wm * (BM / S::WM) + mq * 16 + g + 8 * hh;
                    if (r < rows) {
#pragma unroll
                        for (int i = 0; i < S::NQ; ++i)
                            add(gacc + r * rstride + 8 * i, acc[mq][i][2 * hh], acc[mq][i][2 * hh + 1]);
                    }
                }
        };
        if (!p.deterministic) {
            each_dq([](float *dst, float x, float y) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
                atomicAdd(reinterpret_cast<float2 *>(dst), make_float2(x, y));
#else
                atomicAdd(dst, x);
                atomicAdd(dst + 1, y);
#endif
            });
        } else {
            int *sem = bwd_det_acquire<BM, BN>(p, s, b, h, mb, j); // our turn: key blocks before j have added
            each_dq([](float *dst, float x, float y) {
                float2 *d2 = reinterpret_cast<float2 *>(dst);
                float2  v  = __ldcg(d2);
                v.x += x;
                v.y += y;
                __stcg(d2, v);
            });
            bwd_det_release(sem);
        }
    }

    // Epilogue: dK = scale * dk, dV; this warp's keys, straight from the accumulators.
    bwd_store_dkdv<MT, ND, BF16>(p, s, b, hk, n0, kv_rows, wkey, 0, g, t, dk, dv);
}

// Tiles per head-dim bucket: BM query rows per step, BN keys per block, NW warps (16 * MT keys each), MINB
// blocks per SM asked of the register allocator. Measurements: docs/PERF.md, "GPU: attention backward".
template <int D> struct BwdTile;
template <> struct BwdTile<64> { static constexpr int BM = 32, BN = 128, NW = 8, MINB = 2; };
template <> struct BwdTile<128> { static constexpr int BM = 64, BN = 128, NW = 8, MINB = 1; };
template <> struct BwdTile<256> { static constexpr int BM = 16, BN = 128, NW = 8, MINB = 1; };

template <int D, int BM, int BN, int NW, int MINB, bool BF16>
cudaError_t launch_bwd_tc(const BwdParams &p, int nheads_kv, cudaStream_t stream) {
    using S     = BwdShape<D, BM, BN, NW>;
    auto kernel = bwd_tc_kernel<D, BM, BN, NW, MINB, BF16>;
    int  dev = 0, cc = 0;
    cudaError_t e = cudaGetDevice(&dev);
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(&cc, cudaDevAttrComputeCapabilityMajor, dev);
    if (e != cudaSuccess) return e;
    const int smem = S::smem(cc >= 9, MINB); // the kernel's stage count on this device (BwdShape::stages)
    if ((e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem)) != cudaSuccess) return e;
    dim3 grid((p.seqlen_k + BN - 1) / BN, nheads_kv, p.batch);
    kernel<<<grid, S::NT, smem, stream>>>(p);
    return cudaGetLastError();
}

// ---------------------------------------------------------------------------------------------------------
// fp32: SIMT kernels (FMA, expf/tanhf), 8 warps, 32-row and 32-key tiles; lane j handles row/key j when
// scoring, then dims j + 32c when accumulating.
// ---------------------------------------------------------------------------------------------------------

constexpr int BF32_T = 32, BF32_NW = 8, BF32_PW = 4, BF32_MAXC = 8; // tile, warps, keys (rows) per warp

__host__ __device__ inline int bf32_dpad(int d) { return (d + 31) / 32 * 32; }
inline size_t bf32_smem_bytes(int d) {
    const int dp = bf32_dpad(d);
    return (size_t)(2 * BF32_T * dp + 2 * BF32_T * (dp + 1)) * sizeof(float);
}

// P and dS of one (row i, key) pair, natural-log units; x = q.k.
__device__ __forceinline__ void bf32_pds(const BwdParams &p, float x, float dpv, float lse, float dsum, float slope,
                                         int i, int key, int sq, int sk, float &pr, float &ds) {
    int lo, hi;
    bwd_key_range(p, i, sq, sk, lo, hi);
    float sc = x * p.scale, fac = 1.f;
    if (p.softcap > 0.f) {
        const float th = tanhf(sc / p.softcap);
        sc             = p.softcap * th;
        fac            = 1.f - th * th;
    }
    if (p.alibi) sc -= slope * fabsf((float)(i + sk - sq - key));
    pr = (i < sq && key >= lo && key < hi) ? expf(sc - lse) : 0.f;
    ds = pr * (dpv - dsum) * fac;
}

// Block = 32 keys of one KV head; warp w owns keys 4w..4w+3 for the whole walk (group heads x row tiles).
// (Templates only so that every including file may see them.)
template <int NW> __global__ void __launch_bounds__(NW * 32) bwd_f32_dkdv_kernel(const BwdParams p) {
    extern __shared__ float fsm[];
    const int dv_ = p.head_dim, dp = bf32_dpad(dv_), lq = dp + 1;
    float    *sK = fsm, *sV = sK + BF32_T * dp, *sQ = sV + BF32_T * dp, *sdO = sQ + BF32_T * lq;
    const int j = blockIdx.x, hk = blockIdx.y, b = blockIdx.z;
    const BwdSeq s = bwd_seq(p, b);
    const int n0 = j * BF32_T;
    if (n0 >= s.sk) return;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const float *gK = (const float *)p.k + b * p.k_bs + (int64_t)(s.k0 + n0) * p.k_rs + hk * p.k_hs;
    const float *gV = (const float *)p.v + b * p.v_bs + (int64_t)(s.k0 + n0) * p.v_rs + hk * p.v_hs;
    for (int idx = threadIdx.x; idx < BF32_T * dp; idx += blockDim.x) {
        const int  r = idx / dp, c = idx % dp;
        const bool ok = n0 + r < s.sk && c < dv_;
        sK[idx]       = ok ? gK[(int64_t)r * p.k_rs + c] : 0.f;
        sV[idx]       = ok ? gV[(int64_t)r * p.v_rs + c] : 0.f;
    }
    float dk[BF32_PW][BF32_MAXC], dv[BF32_PW][BF32_MAXC];
#pragma unroll
    for (int kk = 0; kk < BF32_PW; ++kk)
#pragma unroll
        for (int c = 0; c < BF32_MAXC; ++c) dk[kk][c] = dv[kk][c] = 0.f;
    int m_begin, m_end;
    bwd_mblock_range<BF32_T, BF32_T>(p, j, s.sq, s.sk, m_begin, m_end);
    const int tokq = bwd_tok0_q(p, b, s);
    for (int gi = 0; gi < p.group; ++gi) {
        const int   h     = hk * p.group + gi;
        const float slope = p.alibi ? p.alibi[b * p.alibi_bs + h] : 0.f;
        const float *gQ   = (const float *)p.q + b * p.q_bs + (int64_t)s.q0 * p.q_rs + h * p.q_hs;
        const float *gdO  = (const float *)p.do_ + b * p.do_bs + (int64_t)s.q0 * p.do_rs + h * p.do_hs;
        for (int mb = m_begin; mb < m_end; ++mb) {
            const int m0 = mb * BF32_T;
            __syncthreads(); // previous tile consumed (K, V written on the first pass)
            for (int idx = threadIdx.x; idx < BF32_T * dp; idx += blockDim.x) {
                const int  r = idx / dp, c = idx % dp;
                const bool ok = m0 + r < s.sq && c < dv_;
                sQ[r * lq + c]  = ok ? gQ[(int64_t)(m0 + r) * p.q_rs + c] : 0.f;
                sdO[r * lq + c] = ok ? gdO[(int64_t)(m0 + r) * p.do_rs + c] : 0.f;
            }
            __syncthreads();
            const int   i    = m0 + lane;
            const float lse  = i < s.sq ? p.lsef[(int64_t)h * p.total_q + tokq + i] : INFINITY;
            const float dsum = i < s.sq ? p.dsum[(int64_t)h * p.total_q + tokq + i] : 0.f;
            float       x[BF32_PW], y[BF32_PW];
#pragma unroll
            for (int kk = 0; kk < BF32_PW; ++kk) x[kk] = y[kk] = 0.f;
            const float *kr = sK + warp * BF32_PW * dp, *vr = sV + warp * BF32_PW * dp;
            for (int d = 0; d < dp; ++d) {
                const float qd = sQ[lane * lq + d], od = sdO[lane * lq + d];
#pragma unroll
                for (int kk = 0; kk < BF32_PW; ++kk) {
                    x[kk] = fmaf(qd, kr[kk * dp + d], x[kk]);
                    y[kk] = fmaf(od, vr[kk * dp + d], y[kk]);
                }
            }
            float pr[BF32_PW], ds[BF32_PW];
#pragma unroll
            for (int kk = 0; kk < BF32_PW; ++kk)
                bf32_pds(p, x[kk], y[kk], lse, dsum, slope, i, n0 + warp * BF32_PW + kk, s.sq, s.sk, pr[kk], ds[kk]);
            for (int r = 0; r < BF32_T; ++r) {
                float pj[BF32_PW], dj[BF32_PW];
#pragma unroll
                for (int kk = 0; kk < BF32_PW; ++kk) {
                    pj[kk] = __shfl_sync(0xffffffffu, pr[kk], r);
                    dj[kk] = __shfl_sync(0xffffffffu, ds[kk], r);
                }
#pragma unroll
                for (int c = 0; c < BF32_MAXC; ++c)
                    if (c * 32 < dp) {
                        const float od = sdO[r * lq + c * 32 + lane], qd = sQ[r * lq + c * 32 + lane];
#pragma unroll
                        for (int kk = 0; kk < BF32_PW; ++kk) {
                            dv[kk][c] = fmaf(pj[kk], od, dv[kk][c]);
                            dk[kk][c] = fmaf(dj[kk], qd, dk[kk][c]);
                        }
                    }
            }
        }
    }
    float *gdK = (float *)p.dk + b * p.dk_bs + (int64_t)(s.k0 + n0) * p.dk_rs + hk * p.dk_hs;
    float *gdV = (float *)p.dv + b * p.dv_bs + (int64_t)(s.k0 + n0) * p.dv_rs + hk * p.dv_hs;
#pragma unroll
    for (int kk = 0; kk < BF32_PW; ++kk) {
        const int r = warp * BF32_PW + kk;
        if (n0 + r >= s.sk) continue;
#pragma unroll
        for (int c = 0; c < BF32_MAXC; ++c) {
            const int d = c * 32 + lane;
            if (d < dv_) {
                gdK[(int64_t)r * p.dk_rs + d] = dk[kk][c] * p.scale;
                gdV[(int64_t)r * p.dv_rs + d] = dv[kk][c];
            }
        }
    }
}

// Block = 32 query rows of one head; warp w owns rows 4w..4w+3; walks the visible 32-key tiles.
template <int NW> __global__ void __launch_bounds__(NW * 32) bwd_f32_dq_kernel(const BwdParams p) {
    extern __shared__ float fsm[];
    const int dv_ = p.head_dim, dp = bf32_dpad(dv_), lk = dp + 1;
    float    *sQ = fsm, *sdO = sQ + BF32_T * dp, *sK = sdO + BF32_T * dp, *sV = sK + BF32_T * lk;
    const int h = blockIdx.y, b = blockIdx.z, hk = h / p.group;
    const BwdSeq s = bwd_seq(p, b);
    const int m0 = blockIdx.x * BF32_T;
    if (m0 >= s.sq) return;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const float *gQ  = (const float *)p.q + b * p.q_bs + (int64_t)(s.q0 + m0) * p.q_rs + h * p.q_hs;
    const float *gdO = (const float *)p.do_ + b * p.do_bs + (int64_t)(s.q0 + m0) * p.do_rs + h * p.do_hs;
    const float *gK  = (const float *)p.k + b * p.k_bs + (int64_t)s.k0 * p.k_rs + hk * p.k_hs;
    const float *gV  = (const float *)p.v + b * p.v_bs + (int64_t)s.k0 * p.v_rs + hk * p.v_hs;
    for (int idx = threadIdx.x; idx < BF32_T * dp; idx += blockDim.x) {
        const int  r = idx / dp, c = idx % dp;
        const bool ok = m0 + r < s.sq && c < dv_;
        sQ[idx]       = ok ? gQ[(int64_t)r * p.q_rs + c] : 0.f;
        sdO[idx]      = ok ? gdO[(int64_t)r * p.do_rs + c] : 0.f;
    }
    const int   tokq  = bwd_tok0_q(p, b, s);
    const float slope = p.alibi ? p.alibi[b * p.alibi_bs + h] : 0.f;
    float       lse[BF32_PW], dsum[BF32_PW], acc[BF32_PW][BF32_MAXC];
#pragma unroll
    for (int rr = 0; rr < BF32_PW; ++rr) {
        const int i = m0 + warp * BF32_PW + rr;
        lse[rr]     = i < s.sq ? p.lsef[(int64_t)h * p.total_q + tokq + i] : INFINITY;
        dsum[rr]    = i < s.sq ? p.dsum[(int64_t)h * p.total_q + tokq + i] : 0.f;
#pragma unroll
        for (int c = 0; c < BF32_MAXC; ++c) acc[rr][c] = 0.f;
    }
    int n_lo, n_hi;
    bwd_mblock_keys<BF32_T, BF32_T>(p, blockIdx.x, s.sq, s.sk, n_lo, n_hi);
    for (int n = n_lo; n < n_hi; ++n) {
        const int n0 = n * BF32_T;
        __syncthreads();
        for (int idx = threadIdx.x; idx < BF32_T * dp; idx += blockDim.x) {
            const int  r = idx / dp, c = idx % dp;
            const bool ok = n0 + r < s.sk && c < dv_;
            sK[r * lk + c] = ok ? gK[(int64_t)(n0 + r) * p.k_rs + c] : 0.f;
            sV[r * lk + c] = ok ? gV[(int64_t)(n0 + r) * p.v_rs + c] : 0.f;
        }
        __syncthreads();
        float x[BF32_PW], y[BF32_PW];
#pragma unroll
        for (int rr = 0; rr < BF32_PW; ++rr) x[rr] = y[rr] = 0.f;
        const float *qr = sQ + warp * BF32_PW * dp, *orow = sdO + warp * BF32_PW * dp;
        for (int d = 0; d < dp; ++d) {
            const float kd = sK[lane * lk + d], vd = sV[lane * lk + d];
#pragma unroll
            for (int rr = 0; rr < BF32_PW; ++rr) {
                x[rr] = fmaf(qr[rr * dp + d], kd, x[rr]);
                y[rr] = fmaf(orow[rr * dp + d], vd, y[rr]);
            }
        }
        float ds[BF32_PW];
#pragma unroll
        for (int rr = 0; rr < BF32_PW; ++rr) {
            float pr;
            bf32_pds(p, x[rr], y[rr], lse[rr], dsum[rr], slope, m0 + warp * BF32_PW + rr, n0 + lane, s.sq, s.sk, pr,
                     ds[rr]);
        }
        for (int kj = 0; kj < BF32_T; ++kj) {
            float dj[BF32_PW];
#pragma unroll
            for (int rr = 0; rr < BF32_PW; ++rr) dj[rr] = __shfl_sync(0xffffffffu, ds[rr], kj);
#pragma unroll
            for (int c = 0; c < BF32_MAXC; ++c)
                if (c * 32 < dp) {
                    const float kd = sK[kj * lk + c * 32 + lane];
#pragma unroll
                    for (int rr = 0; rr < BF32_PW; ++rr) acc[rr][c] = fmaf(dj[rr], kd, acc[rr][c]);
                }
        }
    }
    float *gdQ = (float *)p.dq + b * p.dq_bs + (int64_t)(s.q0 + m0) * p.dq_rs + h * p.dq_hs;
#pragma unroll
    for (int rr = 0; rr < BF32_PW; ++rr) {
        const int r = warp * BF32_PW + rr;
        if (m0 + r >= s.sq) continue;
#pragma unroll
        for (int c = 0; c < BF32_MAXC; ++c) {
            const int d = c * 32 + lane;
            if (d < dv_) gdQ[(int64_t)r * p.dq_rs + d] = acc[rr][c] * p.scale;
        }
    }
}

} // namespace fk_cuda

#endif // FK_CUDA_ATTN_BWD_IMPL_CUH
