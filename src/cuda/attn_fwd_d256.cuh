/*
 * attn_fwd_d256.cuh — the wide forward kernel for head dim 256 (issue 4), PLAIN problems only.
 * Production since the H200 measurement (2026-11-30, bench/next_fwd256.sh, commit d3c1cfc; docs/PERF.md, GPU,
 * D = 256): PIPE 2 (gen/attn_fwd_d256w_*.cu) runs on sm_90 for no window at any length and causal at
 * seqlen_k >= 4096 (use_d256_wide in attn_fwd.cu); everything else keeps FwdTile<256, true> (64x64 w4 p0).
 * dev/cuda/attn_fwd_check.cu times both pipelines (variants d256c-128x64w8p0 / p2) beside 64x64 w4 p0.
 * ptxas (CUDA 13.0): spill-free on sm_80 and sm_90.
 *
 * Why: the table D = 256 kernel (FwdTile<256, true>: 64x64, 4 warps of 16 rows) feeds every K and V fragment
 * into only 2 MMAs: 144 ldmatrix.x4 per 256 MMAs per warp, and ncu shows the shared pipe as the busy unit
 * (PERF.md).
 *
 * Arrangement: one block = 128 query rows x 64-key tiles, 8 warps in a 4 x 2 grid.
 *   warp = wc * 4 + wr: wr = row group (rows 32 wr .. 32 wr + 31, two m16 tiles), wc = half.
 *   S = Q K^T : warp (wr, wc) computes its 32 rows x keys [32 wc, 32 wc + 32) of the tile, over all 256 dims.
 *   softmax   : the pair (wr, 0), (wr, 1) shares each row; the partial row maxima go through shared memory
 *               (sMax) and a 64-thread named barrier, so both warps use the same running max and the same
 *               rescale factor. Each warp keeps the partial row sum of its own keys; the two are added once,
 *               in the epilogue (sL).
 *   O += P V  : warp (wr, wc) owns output dims [128 wc, 128 wc + 128) of its 32 rows, over all 64 keys. P of its
 *               own keys stays in registers (A operand); the partner's half is read back from sP with ldmatrix.
 *               The block barrier that already waits for V(n) also orders the sP stores before those loads.
 *
 * Counting, per warp and 64-key tile (256 MMAs m16n8k16 either way):
 *   64x64 w4 (FwdTile)  : S: 16 k-steps x (1 Q + 4 K) = 80; PV: 4 k-steps x 16 V = 64     -> 144 ldmatrix.x4
 *   this kernel         : S: 16 k-steps x (2 Q + 2 K) = 64; PV: 4 k-steps x 8 V = 32, + 4 P -> 100 ldmatrix.x4
 *                         + 16 st.shared.b32 (own P half) + 4 st/ld of row maxima per 4 lanes: ~-28% wavefronts
 *   registers           : O 2 x 16 x 4 = 128 fp32; S 2 x 4 x 4 = 32; own P 16; max/sum 8; fragments 8-16
 *   shared (PIPE 0)     : Q 128 x 264 x 2 = 67,584; K and V 64 x 264 x 2 = 33,792 each; P 128 x 72 x 2 = 18,432;
 *                         maxima and sums 2 x 2 x 128 x 4 = 2,048 -> 155,648 B (A100 opt-in max 166,912: fits)
 *                         PIPE 2 (second K buffer) 189,440 B: H100/H200 only (launch fails on sm_80; the
 *                         library selects it only on sm_90 with enough opt-in shared memory).
 *   barriers per tile   : 2 block barriers (K(n) landed; V(n) landed, which also publishes P) + 1 pair barrier
 *                         (64 threads: row maxima). 64x64 w4: 2 block barriers, with 2 blocks per SM.
 *   occupancy           : 1 block (8 warps) per SM by registers and shared memory — the same 8 warps per SM
 *                         as 64x64 w4's 2 x 4, but a block barrier now stalls all of them.
 *
 * Semantics: the PLAIN kernel's (no softcap, no ALiBi, scale > 0, head_dim == 256, 16-byte aligned q/k/v/o);
 * causal and windows through key_range (bottom-right aligned), varlen, GQA, LSE.
 */
#ifndef FK_CUDA_ATTN_FWD_D256_CUH
#define FK_CUDA_ATTN_FWD_D256_CUH

#include "attn_fwd_impl.cuh"

namespace fk_cuda {

template <int PIPE> struct D256Shape {
    static constexpr int D = 256, BR = 128, BC = 64, NW = 8, NT = NW * 32;
    static constexpr int WR = 4, WC = 2;   // warp grid: row groups x halves
    static constexpr int RW = BR / WR;     // 32 rows per warp
    static constexpr int MT = RW / 16;     // 2 m-tiles per warp
    static constexpr int KH = BC / WC;     // 32 keys per warp in S = Q K^T
    static constexpr int DH = D / WC;      // 128 output dims per warp in O += P V
    static constexpr int LD = D + 8;       // Q/K/V row pitch (elements): 33 x 16 B, odd -> conflict-free ldmatrix
    static constexpr int PLD = BC + 8;     // P row pitch: 9 x 16 B, odd -> conflict-free ldmatrix and stores
    static constexpr int KBUFS = PIPE == 2 ? 2 : 1;
    static constexpr int SMEM = (BR + (1 + KBUFS) * BC) * LD * 2 + BR * PLD * 2 + 2 * WC * BR * 4;
    static_assert(PIPE == 0 || PIPE == 2, "pipelines 0 and 2");
    static_assert(NW == WR * WC && RW % 16 == 0 && KH % 16 == 0 && DH % 16 == 0, "warp grid");
};

// ldmatrix.x4 lane -> element offset (pitch in elements) of the row this lane addresses, for the two operand
// shapes (also called by dev/cuda/d256_sim.cu's host simulation, which checks the fragment ownership).
// A operand (16 x 16, row-major rows) and the .trans B operand of P V: matrices (rows 0-7, k 0-7),
// (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15).
__host__ __device__ __forceinline__ int d256_lane_a(int lane, int pitch) {
    return ((lane & 7) + ((lane >> 3) & 1) * 8) * pitch + (lane >> 4) * 8;
}
// B operand of Q K^T (K rows are the n index): matrices (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7),
// (n 8-15, k 8-15) -> registers b0, b1 of n-tile 0 and b0, b1 of n-tile 1.
__host__ __device__ __forceinline__ int d256_lane_b(int lane, int pitch) {
    return ((lane & 7) + (lane >> 4) * 8) * pitch + ((lane >> 3) & 1) * 8;
}
// Element offset in sP of register r (0..3) of this lane's own P A-fragment (m-tile mt, own k-step kk):
// r = 0: (row g, keys 2t, 2t+1), 1: (row g + 8, ..), 2: (row g, keys 8 + 2t, ..), 3: (row g + 8, keys 8 + 2t, ..).
__host__ __device__ __forceinline__ int d256_p_store(int wr, int wc, int lane, int mt, int kk, int r) {
    constexpr int RW = 32, KH = 32, PLD = 64 + 8;
    const int     g = lane >> 2, t = lane & 3;
    return (wr * RW + mt * 16 + g + 8 * (r & 1)) * PLD + wc * KH + kk * 16 + 8 * (r >> 1) + 2 * t;
}

// Synchronises the 64 threads of one warp pair (barrier id 1 + wr; 0 is __syncthreads').
__device__ __forceinline__ void bar_pair(int id) {
    asm volatile("bar.sync %0, 64;\n" ::"r"(id) : "memory");
}

template <bool BF16, int PIPE>
__global__ void __launch_bounds__(256, 1) fwd_d256_kernel(const FwdParams p) {
    using S                = D256Shape<PIPE>;
    constexpr int D        = S::D, BR = S::BR, BC = S::BC, NT = S::NT, MT = S::MT, LD = S::LD, PLD = S::PLD;
    constexpr int KH       = S::KH, DH = S::DH, RW = S::RW;
    constexpr int NTS      = KH / 8;  // 4 score n-tiles per warp
    constexpr int NTO      = DH / 8;  // 16 output n-tiles per warp
    constexpr int KS_OWN   = KH / 16; // 2 k-steps of P V from this warp's own P registers
    constexpr int CH       = D / 8;   // 16-byte chunks per row
    extern __shared__ __align__(16) uint16_t smem[];
    uint16_t *sQ = smem, *sV = sQ + BR * LD, *sK = sV + BC * LD, *sP = sK + S::KBUFS * BC * LD;
    float    *sMax = reinterpret_cast<float *>(sP + BR * PLD), *sL = sMax + 2 * BR; // [WC][BR] each

    const int     m_block = gridDim.x - 1 - blockIdx.x; // heaviest (causal) blocks first
    const int     h = blockIdx.y, b = blockIdx.z;
    const SeqInfo s = seq_info(p, b);
    const int     m0 = m_block * BR;
    if (m0 >= s.sq) return;
    const int rows = min(BR, s.sq - m0);
    const int hk   = h / p.group;

    const uint16_t *gQ = (const uint16_t *)p.q + b * p.q_bs + (int64_t)(s.q0 + m0) * p.q_rs + h * p.q_hs;
    const uint16_t *gK = (const uint16_t *)p.k + b * p.k_bs + (int64_t)s.k0 * p.k_rs + hk * p.k_hs;
    const uint16_t *gV = (const uint16_t *)p.v + b * p.v_bs + (int64_t)s.k0 * p.v_rs + hk * p.v_hs;

    int n_min, n_max, max_lo, min_hi;
    tile_range<BC>(p, m0, rows, s, n_min, n_max, max_lo, min_hi);

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
    const int wr = warp & 3, wc = warp >> 2, wo = 1 - wc; // row group, own half, the partner's half
    const int wrow = wr * RW;                             // first row of this warp in the block

    float acc[MT][NTO][4];
    float row_m[MT][2], row_l[MT][2]; // running max (log2 units, shared by the pair) and own-half partial sum
    fwd_init_rows(acc, row_m, row_l);

    if (n_max > n_min) {
        // This thread's copy chunk: row lr, column chunk lc of every tile, then every NT / CH = 8 rows.
        const int       lr = threadIdx.x / CH, lc = threadIdx.x % CH;
        const uint16_t *gK_thr = gK + lr * p.k_rs + lc * 8, *gV_thr = gV + lr * p.v_rs + lc * 8;
        const uint32_t  sK_thr = smem_addr(sK + lr * LD + lc * 8), sV_thr = smem_addr(sV + lr * LD + lc * 8);
        constexpr uint32_t KBUF = 2u * BC * LD; // bytes between the two K buffers (PIPE 2)
        auto load_k = [&](int n, int buf) {
            load_tile_plain<BC, D, NT>(sK_thr + buf * KBUF, gK_thr + (int64_t)n * BC * p.k_rs, gK, p.k_rs,
                                       s.sk - n * BC - lr);
        };
        auto load_v = [&](int n) {
            load_tile_plain<BC, D, NT>(sV_thr, gV_thr + (int64_t)n * BC * p.v_rs, gV, p.v_rs, s.sk - n * BC - lr);
        };
        load_tile_plain<BR, D, NT>(smem_addr(sQ + lr * LD + lc * 8), gQ + lr * p.q_rs + lc * 8, gQ, p.q_rs,
                                   rows - lr);
        load_k(n_max - 1, PIPE == 2 ? (n_max - 1) & 1 : 0);
        cp_async_commit();

        // Shared addresses of this lane's ldmatrix rows (tile steps are added as constants).
        const uint32_t q_frag  = smem_addr(sQ + wrow * LD + d256_lane_a(lane, LD));
        const uint32_t k_frag0 = smem_addr(sK + wc * KH * LD + d256_lane_b(lane, LD));
        const uint32_t v_own   = smem_addr(sV + wc * KH * LD + wc * DH + d256_lane_a(lane, LD)); // own keys
        const uint32_t v_oth   = smem_addr(sV + wo * KH * LD + wc * DH + d256_lane_a(lane, LD)); // partner's keys
        const uint32_t p_oth   = smem_addr(sP + wrow * PLD + wo * KH + d256_lane_a(lane, PLD));
        float         *max_st  = sMax + wc * BR + wrow + g; // + mt * 16 + 8 hh
        const float   *max_ld  = sMax + wo * BR + wrow + g;
        const float    kscale  = p.scale_log2; // score -> log2 units (in exp2)

        for (int n = n_max - 1; n >= n_min; --n) {
            const int n0 = n * BC;
            cp_async_wait_all();
            __syncthreads(); // K(n) (and Q) landed; every warp is done with V(n+1), P(n+1) (and K(n+1): PIPE 2)
            load_v(n);
            cp_async_commit();
            if (PIPE == 2 && n > n_min) {
                load_k(n - 1, (n - 1) & 1);
                cp_async_commit();
            }
            const uint32_t k_frag = PIPE == 2 ? k_frag0 + (n & 1) * KBUF : k_frag0;

            // S = Q K^T: this warp's 32 rows x its 32 keys, fp32. Per k-step: 2 Q + 2 K ldmatrix, 8 MMAs.
            float sc[MT][NTS][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int j = 0; j < NTS; ++j) sc[mt][j][0] = sc[mt][j][1] = sc[mt][j][2] = sc[mt][j][3] = 0.f;
#pragma unroll
            for (int ks = 0; ks < D / 16; ++ks) {
                uint32_t a[MT][4];
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) ldmatrix_x4(a[mt], q_frag + 2u * (mt * 16 * LD + ks * 16));
#pragma unroll
                for (int np = 0; np < KH / 16; ++np) {
                    uint32_t bk[4];
                    ldmatrix_x4(bk, k_frag + 2u * (np * 16 * LD + ks * 16));
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt) {
                        mma_16816<BF16>(sc[mt][2 * np], a[mt], bk[0], bk[1]);
                        mma_16816<BF16>(sc[mt][2 * np + 1], a[mt], bk[2], bk[3]);
                    }
                }
            }

            // Mask only tiles that cross some row's range edge (or the key tail).
            if (!(n0 >= max_lo && n0 + BC <= min_hi)) {
                mask_tile(p, s, m0 + wrow, n0 + wc * KH, g, t, sc); // this warp's key half
            }

            // Row maxima of this half -> sMax; the pair's barrier; the row max over both halves. Both warps
            // compute fmaxf of the same two numbers, so their running maxima and rescale factors agree exactly.
            float mx_own[MT][2];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int hh = 0; hh < 2; ++hh) {
                    float mx = -INFINITY;
#pragma unroll
                    for (int j = 0; j < NTS; ++j) mx = fmaxf(mx, fmaxf(sc[mt][j][2 * hh], sc[mt][j][2 * hh + 1]));
                    mx_own[mt][hh] = quad_max(mx);
                    if (t == 0) max_st[mt * 16 + 8 * hh] = mx_own[mt][hh];
                }
            bar_pair(1 + wr);

            // Online softmax with lazy rescaling (as in fwd_tc_kernel): the max moves only when it grows by > 8.
            float alpha[MT][2];
            bool  moved = false;
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int hh = 0; hh < 2; ++hh) {
                    const float mx    = fmaxf(mx_own[mt][hh], max_ld[mt * 16 + 8 * hh]) * kscale; // kscale > 0
                    softmax_row_step(sc, mt, hh, mx, kscale, row_m, row_l, alpha, moved);
                }
            if (__any_sync(0xffffffffu, moved)) rescale_acc(acc, alpha);

            // P of this half as A operands (k-step kk = score n-tiles 2kk, 2kk+1), and a copy in sP for the partner.
            uint32_t pa[MT][KS_OWN][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int kk = 0; kk < KS_OWN; ++kk) {
                    pa[mt][kk][0] = pack2<BF16>(sc[mt][2 * kk][0], sc[mt][2 * kk][1]);
                    pa[mt][kk][1] = pack2<BF16>(sc[mt][2 * kk][2], sc[mt][2 * kk][3]);
                    pa[mt][kk][2] = pack2<BF16>(sc[mt][2 * kk + 1][0], sc[mt][2 * kk + 1][1]);
                    pa[mt][kk][3] = pack2<BF16>(sc[mt][2 * kk + 1][2], sc[mt][2 * kk + 1][3]);
#pragma unroll
                    for (int r = 0; r < 4; ++r)
                        *reinterpret_cast<uint32_t *>(sP + d256_p_store(wr, wc, lane, mt, kk, r)) = pa[mt][kk][r];
                }

            if (PIPE == 0) {
                cp_async_wait_all();
                __syncthreads(); // V(n) landed; P of both halves stored; every warp is done with K(n)
                if (n > n_min) {
                    load_k(n - 1, 0);
                    cp_async_commit();
                }
            } else {
                if (n > n_min) cp_async_wait_1(); // V(n) landed; K(n-1) may still be in flight
                else cp_async_wait_all();
                __syncthreads(); // and P of both halves stored
            }

            // O += P V over this warp's 128 dims: own keys first (P from registers), then the partner's (from sP).
#pragma unroll
            for (int kk = 0; kk < KS_OWN; ++kk)
#pragma unroll
                for (int dp = 0; dp < DH / 16; ++dp) {
                    uint32_t bv[4];
                    ldmatrix_x4_trans(bv, v_own + 2u * (kk * 16 * LD + dp * 16));
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt) {
                        mma_16816<BF16>(acc[mt][2 * dp], pa[mt][kk], bv[0], bv[1]);
                        mma_16816<BF16>(acc[mt][2 * dp + 1], pa[mt][kk], bv[2], bv[3]);
                    }
                }
#pragma unroll
            for (int kk = 0; kk < KS_OWN; ++kk) {
                uint32_t po[MT][4];
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) ldmatrix_x4(po[mt], p_oth + 2u * (mt * 16 * PLD + kk * 16));
#pragma unroll
                for (int dp = 0; dp < DH / 16; ++dp) {
                    uint32_t bv[4];
                    ldmatrix_x4_trans(bv, v_oth + 2u * (kk * 16 * LD + dp * 16));
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt) {
                        mma_16816<BF16>(acc[mt][2 * dp], po[mt], bv[0], bv[1]);
                        mma_16816<BF16>(acc[mt][2 * dp + 1], po[mt], bv[2], bv[3]);
                    }
                }
            }
        }
    }

    // Epilogue: the row sum is the pair's two partial sums (sL); O / l through shared memory (sQ: this warp's
    // rows, its 128 dims), then 16-byte stores; LSE per row from the wc = 0 warp.
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
            const float l = quad_sum(row_l[mt][hh]);
            if (t == 0) sL[wc * BR + wrow + mt * 16 + g + 8 * hh] = l;
        }
    __syncthreads(); // both partial sums stored; every warp is done with sQ
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
            const int   r   = wrow + mt * 16 + g + 8 * hh;
            const float l   = sL[r] + sL[BR + r];
            const float inv = l > 0.f ? 1.f / l : 0.f; // a row that sees no key: o = 0
#pragma unroll
            for (int j = 0; j < NTO; ++j)
                *reinterpret_cast<uint32_t *>(sQ + r * LD + wc * DH + j * 8 + 2 * t) =
                    pack2<BF16>(acc[mt][j][2 * hh] * inv, acc[mt][j][2 * hh + 1] * inv);
            if (p.lse && wc == 0 && t == 0 && r < rows) {
                const float lse = l > 0.f ? (row_m[mt][hh] + __log2f(l)) * FK_LN2 : -INFINITY;
                p.lse[b * p.lse_bs + h * p.lse_hs + (int64_t)(s.q0 + m0 + r) * p.lse_rs] = lse;
            }
        }
    __syncthreads();
    uint16_t *gO = (uint16_t *)p.o + b * p.o_bs + (int64_t)(s.q0 + m0) * p.o_rs + h * p.o_hs;
#pragma unroll
    for (int it = 0; it < BR * CH / NT; ++it) {
        const int idx = it * NT + (int)threadIdx.x, r = idx / CH, c = idx % CH;
        if (r < rows)
            *reinterpret_cast<uint4 *>(gO + r * p.o_rs + c * 8) = *reinterpret_cast<const uint4 *>(sQ + r * LD + c * 8);
    }
}

// Launch: PLAIN problems at head_dim 256 only (anything else answers cudaErrorNotSupported).
template <bool BF16, int PIPE>
cudaError_t launch_fwd_d256(const FwdParams &p, int batch, int nheads, cudaStream_t stream) {
    using S = D256Shape<PIPE>;
    if (!p.plain || p.head_dim != S::D) return cudaErrorNotSupported;
    auto        kernel = fwd_d256_kernel<BF16, PIPE>;
    cudaError_t e      = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, S::SMEM);
    if (e != cudaSuccess) return e;
    dim3 grid((p.seqlen_q + S::BR - 1) / S::BR, nheads, batch);
    kernel<<<grid, S::NT, S::SMEM, stream>>>(p);
    return cudaGetLastError();
}

} // namespace fk_cuda

#endif // FK_CUDA_ATTN_FWD_D256_CUH
