/*
 * attn_bwd_d256.cuh — the CUDA attention backward's main kernel for the D = 256 bucket on sm_90 (H100/H200):
 * warp groups of SPLIT warps share KP keys and split the head dimension for dK/dV (FA2's AtomLayoutNdKV), with P^T
 * and dS^T staged through shared memory. Prep, dQ convert, workspace layout and the deterministic protocol are
 * attn_bwd_impl.cuh's (bwd_prep_kernel, bwd_convert_kernel, per-(batch, head, query block) counters); only the
 * counters' count differs, n_mblocks = ceil(seqlen_q / BM) with this kernel's BM (attn_bwd.cu's layout).
 * Selected by attn_bwd.cu when cc >= 9.0 and its shared memory fits max_smem_optin; elsewhere the D = 256 bucket
 * runs bwd_tc_kernel (BwdTile<256>, 16x128w8). Its body is compiled for sm_90 and newer only (below, empty).
 *
 * History: dev/cuda/attn_bwd_v2.cuh (issue 5, "v2 64x64w8s4b1"), promoted after run 2 of the backward candidates
 * (H200, commit d3c1cfc): main kernel 1.16-1.31x production's 16x128w8 at D = 256, S 2048/8192, causal 0/1
 * (docs/PERF.md, "GPU: attention backward"). ptxas sm_90: 255 registers, 0 B spills (16x128w8: 588 B).
 *
 * Per block: BN keys of one KV head, NW warps = NW / SPLIT groups x SPLIT parts, walking the group's query heads x
 * the query blocks that see the keys (Q/dO/LSE/D double-buffered with cp.async). Warp (grp, part), per BM-row step:
 *   1. S^T = K Q^T and dP^T = V dO^T over [KP keys of grp] x [BM / SPLIT queries of part] (K/V as the A operand).
 *   2. P = exp2(S log2e - LSE log2e), dS = P (dP - D) in registers (mask, softcap, ALiBi as bwd_tc_kernel),
 *      written as 16-bit to sP / sDS ([BN keys][BM queries], pitch BM + 8: conflict-free 32-bit stores).
 *   3. barrier (two per step, as bwd_tc_kernel).
 *   4. dV += P^T dO and dK += dS^T Q over [KP keys] x [D / SPLIT dims of part] (A from shared, B ldmatrix.trans).
 *   5. dQ = dS K over all warps (rows x head dim), float2 atomics or the deterministic ordered add.
 * D = 256, SPLIT = 4, BN = 64, BM = 64: 32 keys x 64 dims per warp = 128 accumulator registers; shared 221 KB.
 * Host replays: dev/cuda/frag_sim.c (operand layouts), dev/cuda/bwd2_replay.cc (one step, numerically).
 */
#ifndef FK_CUDA_ATTN_BWD_D256_CUH
#define FK_CUDA_ATTN_BWD_D256_CUH

#include "attn_bwd_impl.cuh"

namespace fk_cuda {

// c[MT][2 NP] += A B^T over K16 k-steps: A = MT 16-row tiles at a_addr (row pitch LD, A lane addresses),
// B = NP 16-row tiles at b_addr ([n][k] rows, non-trans B lane addresses); ldmatrix.x4 for both.
template <int MT, int NP, int K16, int LD, bool BF16>
__device__ __forceinline__ void bwd_split_gemm_abt(float (&c)[MT][2 * NP][4], uint32_t a_addr, uint32_t b_addr) {
#pragma unroll
    for (int ks = 0; ks < K16; ++ks) {
        uint32_t a[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) ldmatrix_x4(a[mt], a_addr + 2u * (mt * 16 * LD + ks * 16));
#pragma unroll
        for (int np = 0; np < NP; ++np) {
            uint32_t bb[4];
            ldmatrix_x4(bb, b_addr + 2u * (np * 16 * LD + ks * 16));
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                mma_16816<BF16>(c[mt][2 * np], a[mt], bb[0], bb[1]);
                mma_16816<BF16>(c[mt][2 * np + 1], a[mt], bb[2], bb[3]);
            }
        }
    }
}

template <int D, int BM, int BN, int NW, int SPLIT> struct BwdSplitShape {
    static constexpr int NT = NW * 32, G = NW / SPLIT, KP = BN / G, MT = KP / 16;
    static constexpr int QW = BM / SPLIT, NS = QW / 8;  // queries per warp in S^T, its n-tiles
    static constexpr int DW = D / SPLIT, ND = DW / 8;   // dims per warp in dK/dV, its n-tiles
    static constexpr int LD = D + 8, LDS = BM + 8;
    static constexpr int WM = (BM / 16 < NW) ? BM / 16 : NW, WN = NW / WM; // dQ warp grid
    static constexpr int MQ = BM / WM / 16, NQ = D / WN / 8;
    // S^T and dP^T in one k-loop (K/V and Q/dO fragments live together) only where the accumulators leave
    // room: dK/dV (MT ND 8) + S^T/dP^T (MT NS 8) registers below 160 (ptxas: 4-8 B spills at 160-192 fused).
    static constexpr bool FUSE_SDP = MT * ND * 8 + MT * NS * 8 < 160;
    // K, V; Q, dO double-buffered; P^T, dS^T; LSE and D double-buffered
    static constexpr int SMEM = (2 * BN * LD + 4 * BM * LD + 2 * BN * LDS) * 2 + 4 * BM * 4;
    static_assert(NW % SPLIT == 0 && BN % G == 0 && KP % 16 == 0 && QW % 16 == 0 && DW % 16 == 0, "tile");
    static_assert(NW % WM == 0 && NQ % 2 == 0 && BM % (16 * WM) == 0 && D % (8 * WN) == 0, "dQ tile");
};

template <int D, int BM, int BN, int NW, int SPLIT, int MINB, bool BF16>
__global__ void __launch_bounds__(NW * 32, MINB) bwd_split_tc_kernel(const BwdParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
    (void)p; // never selected below sm_90 (attn_bwd.cu: use_split); not compiled there (4 B of spills on sm_80)
#else
    using S          = BwdSplitShape<D, BM, BN, NW, SPLIT>;
    constexpr int NT = S::NT, MT = S::MT, NS = S::NS, ND = S::ND, LD = S::LD, LDS = S::LDS;
    extern __shared__ __align__(16) uint16_t smem[];
    uint16_t *sK = smem, *sV = sK + BN * LD, *sQ = sV + BN * LD, *sdO = sQ + 2 * BM * LD, *sP = sdO + 2 * BM * LD;
    uint16_t *sDS = sP + BN * LDS;
    float    *sL = reinterpret_cast<float *>(sDS + BN * LDS), *sD = sL + 2 * BM;

    const int    j = blockIdx.x, hk = blockIdx.y, b = blockIdx.z;
    const BwdSeq s = bwd_seq(p, b);
    const int    n0 = j * BN;
    if (n0 >= s.sk) return;
    const int  kv_rows = min(BN, s.sk - n0);
    const int  warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
    const int  grp = warp / SPLIT, part = warp % SPLIT;
    const int  wkey = grp * S::KP, wq = part * S::QW, wd = part * S::DW; // this warp's keys, queries, dims
    const bool vec = p.vec_in;

    bwd_load_kv<BN, D, NT>(p, s, b, hk, n0, kv_rows, sK, sV, vec);

    int m_begin, m_end;
    bwd_mblock_range<BM, BN>(p, j, s.sq, s.sk, m_begin, m_end);
    const int nm = max(m_end - m_begin, 0), total = nm * p.group;
    const int tokq = bwd_tok0_q(p, b, s);

    auto load_step = [&](int it, int buf) {
        bwd_load_step<BM, D, NT>(p, s, b, hk, nm, m_begin, tokq, it, buf, sQ, sdO, sL, sD, vec);
    };
    if (total > 0) load_step(0, 0);
    cp_async_commit();

    float dv[MT][ND][4], dk[MT][ND][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int i = 0; i < ND; ++i)
#pragma unroll
            for (int e = 0; e < 4; ++e) dv[mt][i][e] = dk[mt][i][e] = 0.f;

    // ldmatrix lane addresses (common.cuh: matrix l / 8 takes lane l's row address).
    //  A, non-trans, 16x16 at (row r0, col c0): lanes 0-7 rows 0-7 col 0 (a0), 8-15 rows 8-15 col 0 (a1),
    //  16-23 rows 0-7 col 8 (a2), 24-31 rows 8-15 col 8 (a3).
    // Tiles of one kind differ by compile-time byte offsets (V = K + 2 BN LD, dS^T = P^T + 2 BN LDS,
    // dO = Q + 4 BM LD), which fold into the ldmatrix immediates: 4 address registers, not 10.
    constexpr uint32_t oV = 2u * BN * LD, oDS = 2u * BN * LDS, oDO = 4u * BM * LD;
    const int      arow = (lane & 7) + ((lane >> 3) & 1) * 8, acol = (lane >> 4) * 8;
    const uint32_t kA   = smem_addr(sK + (wkey + arow) * LD + acol); // V: + oV
    const uint32_t pA   = smem_addr(sP + (wkey + arow) * LDS + acol); // dS^T: + oDS
    //  B from a [n][k] row-major tile (non-trans): two n-tiles of 8: lanes 0-7 n 0-7 k 0 (b0 of tile 0),
    //  8-15 n 0-7 k 8 (b1 of tile 0), 16-23 n 8-15 k 0, 24-31 n 8-15 k 8.
    const uint32_t qB = smem_addr(sQ + (wq + (lane & 7) + (lane >> 4) * 8) * LD + ((lane >> 3) & 1) * 8); // dO: + oDO
    //  B from a [k][n] row-major tile (trans): lanes 0-7 k 0-7 n 0 (b0 of n-tile 0), 8-15 k 8-15 n 0 (b1),
    //  16-23 k 0-7 n 8 (b0 of n-tile 1), 24-31 k 8-15 n 8 (b1 of n-tile 1).
    const uint32_t qBt = smem_addr(sQ + arow * LD + wd + acol); // dO: + oDO
    //  dQ: A = dS (queries x keys) read transposed from sDS [keys][queries]; B = K [keys][dims] (trans).
    const uint32_t dsAt = smem_addr(sDS + ((lane & 7) + (lane >> 4) * 8) * LDS + ((lane >> 3) & 1) * 8);
    const uint32_t kBt  = smem_addr(sK + arow * LD + acol);
    const int      wm = warp % S::WM, wn = warp / S::WM;
    const int      off = s.sk - s.sq;

    for (int it = 0; it < total; ++it) {
        const int buf = it & 1;
        const int h = hk * p.group + it / nm, mb = m_begin + it % nm, m0 = mb * BM;
        cp_async_wait_all();
        __syncthreads(); // step `it` landed (and K, V); every warp is done with step it-1 (buffer buf^1, sP, sDS)
        if (it + 1 < total) load_step(it + 1, buf ^ 1);
        cp_async_commit();

        // 1. S^T = K Q^T, dP^T = V dO^T: [KP keys x QW queries] per warp, fp32.
        float st[MT][NS][4], dp[MT][NS][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int i = 0; i < NS; ++i)
#pragma unroll
                for (int e = 0; e < 4; ++e) st[mt][i][e] = dp[mt][i][e] = 0.f;
        const uint32_t bo = 2u * buf * BM * LD;
        if constexpr (S::FUSE_SDP) {
#pragma unroll
            for (int ks = 0; ks < D / 16; ++ks) {
                uint32_t a[MT][4], av[MT][4];
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    ldmatrix_x4(a[mt], kA + 2u * (mt * 16 * LD + ks * 16));
                    ldmatrix_x4(av[mt], kA + oV + 2u * (mt * 16 * LD + ks * 16));
                }
#pragma unroll
                for (int np = 0; np < S::QW / 16; ++np) {
                    uint32_t bq[4], bd[4];
                    ldmatrix_x4(bq, qB + bo + 2u * (np * 16 * LD + ks * 16));
                    ldmatrix_x4(bd, qB + oDO + bo + 2u * (np * 16 * LD + ks * 16));
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt) {
                        mma_16816<BF16>(st[mt][2 * np], a[mt], bq[0], bq[1]);
                        mma_16816<BF16>(st[mt][2 * np + 1], a[mt], bq[2], bq[3]);
                        mma_16816<BF16>(dp[mt][2 * np], av[mt], bd[0], bd[1]);
                        mma_16816<BF16>(dp[mt][2 * np + 1], av[mt], bd[2], bd[3]);
                    }
                }
            }
        } else {
            // two passes (S^T, then dP^T): half the operand registers live at once; same mma and ldmatrix counts
            bwd_split_gemm_abt<MT, S::QW / 16, D / 16, LD, BF16>(st, kA, qB + bo);
            bwd_split_gemm_abt<MT, S::QW / 16, D / 16, LD, BF16>(dp, kA + oV, qB + oDO + bo);
        }

        // 2. P and dS in place; element (mt, i, e): key wkey + 16 mt + g + 8 (e >> 1), query column
        //    wq + 8 i + 2 t + (e & 1) of the block's BM rows (first row m0).
        bwd_p_ds<BM, BN, MT, NS>(p, s, b, h, m0, m0 + wq, n0, wkey, off, g, t, sL + buf * BM + wq, sD + buf * BM + wq, st,
                                 dp);
        // P^T, dS^T -> shared as 16-bit pairs: (key row, query columns 2t, 2t+1) in one 32-bit word.
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int i = 0; i < NS; ++i) {
                const int r0 = (wkey + mt * 16 + g) * LDS + wq + 8 * i + 2 * t, r1 = r0 + 8 * LDS;
                *reinterpret_cast<uint32_t *>(sP + r0)  = pack2<BF16>(st[mt][i][0], st[mt][i][1]);
                *reinterpret_cast<uint32_t *>(sP + r1)  = pack2<BF16>(st[mt][i][2], st[mt][i][3]);
                *reinterpret_cast<uint32_t *>(sDS + r0) = pack2<BF16>(dp[mt][i][0], dp[mt][i][1]);
                *reinterpret_cast<uint32_t *>(sDS + r1) = pack2<BF16>(dp[mt][i][2], dp[mt][i][3]);
            }
        __syncthreads(); // P^T and dS^T complete (dV/dK read the group's rows, dQ all of dS^T)

        // 4. dV += P^T dO, dK += dS^T Q: [KP keys x DW dims] per warp; k = the BM queries.
#pragma unroll
        for (int ks = 0; ks < BM / 16; ++ks) {
            uint32_t pa[MT][4], da[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                ldmatrix_x4(pa[mt], pA + 2u * (mt * 16 * LDS + ks * 16));
                ldmatrix_x4(da[mt], pA + oDS + 2u * (mt * 16 * LDS + ks * 16));
            }
#pragma unroll
            for (int dq2 = 0; dq2 < S::DW / 16; ++dq2) {
                uint32_t bdo[4], bq[4];
                ldmatrix_x4_trans(bdo, qBt + oDO + bo + 2u * (ks * 16 * LD + dq2 * 16));
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

        // 5. dQ (this step's part) = dS K: warp (wm, wn) owns rows wm*BM/WM.. and columns wn*D/WN.. (as bwd_tc_kernel), in
        //    DQP column passes of NQP n-tiles (DQP = 2 where registers are tight: 8 more ldmatrix of dS, half
        //    the accumulator registers). Deterministic: wait before the first pass, pass the turn after the last.
        constexpr int DQP = S::FUSE_SDP ? 1 : 2, NQP = S::NQ / DQP;
        const int     rows = min(BM, s.sq - m0);
        float        *gacc = p.dq_acc + ((int64_t)(tokq + m0) * p.nheads_q + h) * p.acc_d + wn * (D / S::WN) + 2 * t;
        const int64_t rstride = (int64_t)p.nheads_q * p.acc_d;
        int          *sem     = nullptr;
        if (p.deterministic) {
            sem = bwd_det_acquire<BM, BN>(p, s, b, h, mb, j); // as bwd_tc_kernel
        }
#pragma unroll
        for (int pass = 0; pass < DQP; ++pass) {
            float acc[S::MQ][NQP][4];
#pragma unroll
            for (int a = 0; a < S::MQ; ++a)
#pragma unroll
                for (int i = 0; i < NQP; ++i)
#pragma unroll
                    for (int e = 0; e < 4; ++e) acc[a][i][e] = 0.f;
#pragma unroll
            for (int ks = 0; ks < BN / 16; ++ks) {
                uint32_t a[S::MQ][4];
#pragma unroll
                for (int mq = 0; mq < S::MQ; ++mq)
                    ldmatrix_x4_trans(a[mq], dsAt + 2u * (ks * 16 * LDS + wm * (BM / S::WM) + mq * 16));
#pragma unroll
                for (int np = 0; np < NQP / 2; ++np) {
                    uint32_t bk[4];
                    ldmatrix_x4_trans(bk, kBt + 2u * (ks * 16 * LD + wn * (D / S::WN) + pass * NQP * 8 + np * 16));
#pragma unroll
                    for (int mq = 0; mq < S::MQ; ++mq) {
                        mma_16816<BF16>(acc[mq][2 * np], a[mq], bk[0], bk[1]);
                        mma_16816<BF16>(acc[mq][2 * np + 1], a[mq], bk[2], bk[3]);
                    }
                }
            }
#pragma unroll
            for (int mq = 0; mq < S::MQ; ++mq)
#pragma unroll
                for (int hh = 0; hh < 2; ++hh) {
                    const int r = wm * (BM / S::WM) + mq * 16 + g + 8 * hh;
                    if (r < rows) {
#pragma unroll
                        for (int i = 0; i < NQP; ++i) {
                            float *dst = gacc + r * rstride + 8 * (pass * NQP + i);
                            if (!p.deterministic) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
                                atomicAdd(reinterpret_cast<float2 *>(dst),
                                          make_float2(acc[mq][i][2 * hh], acc[mq][i][2 * hh + 1]));
#else
                                atomicAdd(dst, acc[mq][i][2 * hh]);
                                atomicAdd(dst + 1, acc[mq][i][2 * hh + 1]);
#endif
                            } else {
                                float2 *d2 = reinterpret_cast<float2 *>(dst);
                                float2  v  = __ldcg(d2);
                                v.x += acc[mq][i][2 * hh];
                                v.y += acc[mq][i][2 * hh + 1];
                                __stcg(d2, v);
                            }
                        }
                    }
                }
        }
        if (p.deterministic) bwd_det_release(sem);
    }

    // Epilogue: dK = scale * dk, dV; this warp's keys x dims, straight from the accumulators.
    bwd_store_dkdv<MT, ND, BF16>(p, s, b, hk, n0, kv_rows, wkey, wd, g, t, dk, dv);
#endif
}

template <int D, int BM, int BN, int NW, int SPLIT, int MINB, bool BF16>
cudaError_t launch_bwd_split_tc(const BwdParams &p, int nheads_kv, cudaStream_t stream) {
    using S       = BwdSplitShape<D, BM, BN, NW, SPLIT>;
    auto kernel   = bwd_split_tc_kernel<D, BM, BN, NW, SPLIT, MINB, BF16>;
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, S::SMEM);
    if (e != cudaSuccess) return e;
    dim3 grid((p.seqlen_k + BN - 1) / BN, nheads_kv, p.batch);
    kernel<<<grid, S::NT, S::SMEM, stream>>>(p);
    return cudaGetLastError();
}


// The production tile (run 2 of the candidates, H200: 64x64w8s4b1 1.16-1.31x, 32x64w8s2b1 1.05-1.11x).
template <int D> struct BwdSplitTile;
template <> struct BwdSplitTile<256> { static constexpr int BM = 64, BN = 64, NW = 8, SPLIT = 4, MINB = 1; };

} // namespace fk_cuda

#endif // FK_CUDA_ATTN_BWD_D256_CUH
