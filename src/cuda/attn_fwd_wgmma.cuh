/*
 * attn_fwd_wgmma.cuh — the attention forward for Hopper (sm_90a) on wgmma.mma_async: the library's kernel for
 * PLAIN fp16/bf16 problems of head dim 64, 128 and 256 on 9.0 devices (attn_fwd.cu, use_wgmma; instances in
 * gen/attn_fwd_wgmma_*.cu). On the H200 (2026-11-30, third session; docs/PERF.md "Hopper wgmma"): the whole test
 * suite and 102 dev cases pass, memcheck and racecheck are clean, and it runs 1.3-1.4x (D = 64), 1.15-1.37x
 * (D = 128) and 1.33-1.70x (D = 256) FlashAttention-2 at S >= 2048, in the same process.
 *
 * fwd_wgmma_kernel<D, BN, NWG, BF16>: PLAIN problems only (no softcap / ALiBi, scale > 0, head_dim == D, 16-byte
 * aligned q/k/v/o), any batch / heads / seqlen_q / seqlen_k (tails masked), causal and local windows through the
 * library's key_range (bottom-right aligned), GQA, varlen (cu_seqlens). Params: fk_cuda::FwdParams.
 *   One block = NWG consumer warpgroups x 64 query rows of one (batch, head); every thread also loads (no
 *   producer warp, no TMA yet). The block walks its visible key tiles of BN keys from the last to the first
 *   (the one tile that can cross the diagonal / the key tail comes first, as in the production kernel):
 *     wait K, V(n) -> barrier -> cp.async K, V(n-1) into the other buffer (overlaps this tile's work)
 *     -> S = Q K^T (wgmma, A = Q smem, B = K smem, both K-major, 128-B swizzle, fp32 accumulators)
 *     -> mask (only tiles that cross a row's range) -> online softmax in registers (exp2, scale folded in, lazy
 *        rescale as in attn_fwd_impl.cuh) -> P packed in registers as the A fragments (acc_to_a)
 *     -> O += P V (wgmma, A from registers, B = V smem MN-major, imm-trans-b = 1).
 *   Epilogue: O / l through this warpgroup's own Q rows in shared memory, 16-byte stores; LSE (natural log,
 *   -inf for a row that sees no key).
 *   Shared memory: Q (BM x D) + 2 x (K + V) (BN x D each), all in the 128-B swizzled layout of wgmma_common.cuh.
 *
 * Tile choices (smem budget 227 KB; registers 255 / thread at 256 threads and one block per SM, except D = 64: two;
 * WgTile below has the measurement):
 *   D = 64:  BM 128 (2 warpgroups), BN 128:  80 KB; S 64 + O 32 accumulator floats per thread (2 blocks an SM)
 *   D = 128: BM 128, BN 128: 160 KB; S 64 + O 64 floats
 *   D = 256: BM 128, BN 64:  192 KB; S 32 + O 128 floats
 *
 * Missing versus FA3 (the next steps): a producer warp with TMA + mbarriers and setmaxnreg,
 * intra-warpgroup overlap of softmax(n) with Q K^T(n+1) (two S accumulators), ping-pong scheduling of the two
 * warpgroups, separate K and V waits, skipping per warpgroup the key tiles that are fully masked for its rows.
 */
#ifndef FK_CUDA_ATTN_FWD_WGMMA_CUH
#define FK_CUDA_ATTN_FWD_WGMMA_CUH

#include "attn_fwd_impl.cuh" // FwdParams, seq_info, key_range, tile_range, quad_max, fast_exp2
#include "wgmma_common.cuh"

#include <cuda_runtime.h>

namespace fk_wg {

using fk_cuda::FwdParams;

// Tile per head dim (see the header comment for the budget).
// MINB: blocks an SM asked of the register allocator. D = 64 at 2 (128 registers, ptxas spills 88 bytes): on the
// H200 (2026-11-30 third session, dev/cuda/wgmma_run.sh `time`, commit 6cb117c; bf16, H 16, B x S = 32768) it ran
// 1.30-1.34x the 1-block tile (171 registers) at S = 2048..8192, causal and not (e.g. 416 vs 311 TF/s at 2048,
// 443 vs 339 at 8192), with bit-identical outputs; BN 64 (119-121 registers, 2 blocks either way) 1.22-1.27x.
template <int D> struct WgTile;
template <> struct WgTile<64> { static constexpr int BN = 128, NWG = 2, MINB = 2; };
template <> struct WgTile<128> { static constexpr int BN = 128, NWG = 2, MINB = 1; };
template <> struct WgTile<256> { static constexpr int BN = 64, NWG = 2, MINB = 1; };

template <int D, int BN, int NWG> struct WgShape {
    static constexpr int NT = 128 * NWG, BM = 64 * NWG;
    static constexpr int Q_BYTES = BM * D * 2, KV_BYTES = BN * D * 2;
    static constexpr int SMEM = Q_BYTES + 4 * KV_BYTES + 1024; // + slack to align the window to 1024 bytes
    static_assert(D % 64 == 0 && BN % 16 == 0 && Q_BYTES % 1024 == 0 && KV_BYTES % 1024 == 0, "tile shape");
};

// A descriptor moved by a constant number of bytes (start address field; no carry out of its 14 bits since every
// shared address is < 256 KB).
__device__ __forceinline__ uint64_t desc_add(uint64_t d, uint32_t bytes) { return d + (bytes >> 4); }

// ROWS x D tile (row pitch rs elements) into the 128-B swizzled layout at shared address s: 16-byte cp.async
// per chunk, rows >= rows_valid zero-filled (nothing read; the address given is g, a valid row).
template <int ROWS, int D, int NT>
__device__ __forceinline__ void load_tile_sw(uint32_t s, const uint16_t *g, int64_t rs, int rows_valid) {
    constexpr int CH = D / 8, TOTAL = ROWS * CH;
#pragma unroll
    for (int it = 0; it < (TOTAL + NT - 1) / NT; ++it) {
        const int idx = it * NT + (int)threadIdx.x;
        if (TOTAL % NT == 0 || idx < TOTAL) {
            const int  r = idx / CH, c = idx % CH;
            const bool ok = r < rows_valid;
            cp_async_16(s + tile_off<128>(r, c * 8, ROWS), ok ? g + r * rs + c * 8 : g, ok ? 16 : 0);
        }
    }
}

template <int D, int BN, int NWG, bool BF16, int MINB = 1>
__global__ void __launch_bounds__(NWG * 128, MINB) fwd_wgmma_kernel(const FwdParams p) {
    // wgmma exists only in the sm_90a image; the other images of a multi-architecture build get an empty body,
    // and the host side launches this kernel only on a 9.0 device of a build that has sm_90a (FK_HAVE_SM90A).
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    using S           = WgShape<D, BN, NWG>;
    constexpr int BM  = S::BM, NT = S::NT;
    constexpr int KVB = S::KV_BYTES;
    extern __shared__ uint8_t smem_raw[];
    // Tiles start on 1024-byte boundaries (swizzle atoms): round the window up.
    const uint32_t raw = smem_u32(smem_raw), sbase = (raw + 1023u) & ~1023u;
    uint8_t       *smem = smem_raw + (sbase - raw);
    const uint32_t sQ = sbase, sKV = sbase + S::Q_BYTES; // buffer b: K at sKV + 2 b KVB, V at + KVB

    const int                m_block = gridDim.x - 1 - blockIdx.x; // heaviest (causal) blocks first
    const int                h = blockIdx.y, b = blockIdx.z;
    const fk_cuda::SeqInfo   s = fk_cuda::seq_info(p, b);
    const int                m0 = m_block * BM;
    if (m0 >= s.sq) return;
    const int rows = min(BM, s.sq - m0);
    const int hk   = h / p.group;

    const uint16_t *gQ = (const uint16_t *)p.q + b * p.q_bs + (int64_t)(s.q0 + m0) * p.q_rs + h * p.q_hs;
    const uint16_t *gK = (const uint16_t *)p.k + b * p.k_bs + (int64_t)s.k0 * p.k_rs + hk * p.k_hs;
    const uint16_t *gV = (const uint16_t *)p.v + b * p.v_bs + (int64_t)s.k0 * p.v_rs + hk * p.v_hs;

    int n_min, n_max, max_lo, min_hi;
    fk_cuda::tile_range<BN>(p, m0, rows, s, n_min, n_max, max_lo, min_hi);

    const int tid = threadIdx.x, wg = tid / 128, wq = tid / 32 % 4, lane = tid % 32, g = lane / 4, t = lane % 4;
    const int r0 = wg * 64 + wq * 16 + g; // this thread's rows in the block: r0 and r0 + 8

    float oacc[D / 2];
    float row_m[2] = {-INFINITY, -INFINITY}, row_l[2] = {0.f, 0.f}; // max in log2 units; this lane's partial sum
#pragma unroll
    for (int i = 0; i < D / 2; ++i) oacc[i] = 0.f;

    if (n_max > n_min) {
        load_tile_sw<BM, D, NT>(sQ, gQ, p.q_rs, rows);
        {
            const int n = n_max - 1;
            load_tile_sw<BN, D, NT>(sKV, gK + (int64_t)n * BN * p.k_rs, p.k_rs, s.sk - n * BN);
            load_tile_sw<BN, D, NT>(sKV + KVB, gV + (int64_t)n * BN * p.v_rs, p.v_rs, s.sk - n * BN);
        }
        cp_async_commit();

        // Descriptors of k-step 0; k-step ks adds a compile-time byte offset (desc_add).
        const uint64_t dq0 = desc_kmajor<128>(sQ, wg * 64, 0, BM);
        const uint64_t dk0 = desc_kmajor<128>(sKV, 0, 0, BN);
        const uint64_t dv0 = desc_mnmajor<128>(sKV + KVB, 0, BN);
        const float    kscale = p.scale_log2; // score -> log2 units, folded into exp2

        int buf = 0;
        for (int n = n_max - 1; n >= n_min; --n, buf ^= 1) {
            const int n0 = n * BN;
            cp_async_wait<0>();
            fence_proxy_async(); // this thread's cp.async writes -> visible to wgmma (async proxy)
            __syncthreads();     // every thread's K, V(n) landed; every warpgroup is done with buffer buf ^ 1
            if (n > n_min) {
                const uint32_t nb = sKV + (uint32_t)((buf ^ 1) * 2 * KVB);
                load_tile_sw<BN, D, NT>(nb, gK + (int64_t)(n - 1) * BN * p.k_rs, p.k_rs, s.sk - (n - 1) * BN);
                load_tile_sw<BN, D, NT>(nb + KVB, gV + (int64_t)(n - 1) * BN * p.v_rs, p.v_rs, s.sk - (n - 1) * BN);
                cp_async_commit();
            }
            const uint32_t boff = (uint32_t)(buf * 2 * KVB);

            // S = Q K^T: [64 x BN] per warpgroup, fp32; k-step 0 overwrites (scale-d = 0).
            float sacc[BN / 2];
            wgmma_fence();
#pragma unroll
            for (int ks = 0; ks < D / 16; ++ks)
                wgmma_ss<BN, BF16, 0>(sacc, desc_add(dq0, (ks / 4) * BM * 128 + (ks % 4) * 32),
                                      desc_add(dk0, boff + (ks / 4) * BN * 128 + (ks % 4) * 32), ks > 0 ? 1 : 0);
            wgmma_commit();
            wgmma_wait<0>();
            fence_operands(sacc);

            // Mask only tiles that cross some row's range edge (or the key tail).
            if (!(n0 >= max_lo && n0 + BN <= min_hi)) {
#pragma unroll
                for (int hh = 0; hh < 2; ++hh) {
                    int lo, hi; // this row's visible keys, as columns of this tile relative to 2t
                    fk_cuda::key_range(p, m0 + r0 + 8 * hh, s.sq, s.sk, lo, hi);
                    lo -= n0 + 2 * t;
                    hi -= n0 + 2 * t;
#pragma unroll
                    for (int j = 0; j < BN / 8; ++j)
#pragma unroll
                        for (int e = 0; e < 2; ++e) {
                            const int col = 8 * j + e;
                            if (col < lo || col >= hi) sacc[4 * j + 2 * hh + e] = -INFINITY;
                        }
                }
            }

            // Online softmax per row (two rows per thread; a row's 4 lanes are a quad). Lazy rescaling as in
            // attn_fwd_impl.cuh: keep the old max unless the tile's exceeds it by more than 8 (log2 units).
            float alpha[2];
            bool  moved = false;
#pragma unroll
            for (int hh = 0; hh < 2; ++hh) {
                float mx = -INFINITY;
#pragma unroll
                for (int j = 0; j < BN / 8; ++j) mx = fmaxf(mx, fmaxf(sacc[4 * j + 2 * hh], sacc[4 * j + 2 * hh + 1]));
                mx                = fk_cuda::quad_max(mx) * kscale; // kscale > 0: max commutes with it
                const float m_old = row_m[hh];
                const bool  grow  = mx > m_old + 8.f; // true for the first visible key (m_old = -inf)
                alpha[hh]         = grow ? fk_cuda::fast_exp2(m_old - mx) : 1.f;
                moved |= grow;
                const float m_cur = grow ? mx : m_old;
                row_m[hh]         = m_cur;
                const float m_use = m_cur == -INFINITY ? 0.f : m_cur; // nothing visible yet: p = 0
                float       sum   = 0.f;
#pragma unroll
                for (int j = 0; j < BN / 8; ++j)
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        const float pe = fk_cuda::fast_exp2(fmaf(sacc[4 * j + 2 * hh + e], kscale, -m_use));
                        sacc[4 * j + 2 * hh + e] = pe;
                        sum += pe;
                    }
                row_l[hh] = row_l[hh] * alpha[hh] + sum;
            }
            if (__any_sync(0xffffffffu, moved)) {
#pragma unroll
                for (int j = 0; j < D / 8; ++j) {
                    oacc[4 * j + 0] *= alpha[0];
                    oacc[4 * j + 1] *= alpha[0];
                    oacc[4 * j + 2] *= alpha[1];
                    oacc[4 * j + 3] *= alpha[1];
                }
            }

            // P (this warpgroup's 64 x BN, in the S accumulator layout) -> A fragments of O += P V.
            uint32_t pa[BN / 16][4];
#pragma unroll
            for (int ks = 0; ks < BN / 16; ++ks) acc_to_a<BF16>(pa[ks], sacc + 8 * ks);
            fence_operands(oacc);
            wgmma_fence(); // oacc (rescale) and pa were written by ordinary instructions
#pragma unroll
            for (int ks = 0; ks < BN / 16; ++ks)
                wgmma_rs<D, BF16, 1>(oacc, pa[ks], desc_add(dv0, boff + ks * 16 * 128), 1);
            wgmma_commit();
            wgmma_wait<0>();
            fence_operands(oacc);
        }
    }

    // Epilogue: O / l into this warpgroup's own Q rows (its last wgmma has completed; the other warpgroup reads
    // only its own rows), same swizzled layout (conflict-free 4-byte writes), then 16-byte stores.
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
        const float l   = fk_cuda::quad_sum(row_l[hh]);
        const float inv = l > 0.f ? 1.f / l : 0.f; // a row that sees no key: o = 0
        const int   r   = r0 + 8 * hh;
#pragma unroll
        for (int j = 0; j < D / 8; ++j)
            *reinterpret_cast<uint32_t *>(smem + tile_off<128>(r, 8 * j + 2 * t, BM)) =
                pack2<BF16>(oacc[4 * j + 2 * hh] * inv, oacc[4 * j + 2 * hh + 1] * inv);
        if (p.lse && t == 0 && r < rows) {
            const float lse = l > 0.f ? (row_m[hh] + __log2f(l)) * FK_LN2 : -INFINITY;
            p.lse[b * p.lse_bs + h * p.lse_hs + (int64_t)(s.q0 + m0 + r) * p.lse_rs] = lse;
        }
    }
    named_bar_sync(1 + wg, 128);
    constexpr int CH = D / 8;
    uint16_t     *gO = (uint16_t *)p.o + b * p.o_bs + (int64_t)(s.q0 + m0) * p.o_rs + h * p.o_hs;
    for (int idx = tid % 128; idx < 64 * CH; idx += 128) {
        const int r = wg * 64 + idx / CH, c = idx % CH;
        if (r < rows)
            *reinterpret_cast<uint4 *>(gO + r * p.o_rs + c * 8) =
                *reinterpret_cast<const uint4 *>(smem + tile_off<128>(r, c * 8, BM));
    }
#endif // __CUDA_ARCH_FEAT_SM90_ALL
}

// Launch of one tile (BN keys a step, NWG warpgroups, MINB blocks an SM asked of the register allocator) for a
// PLAIN problem (see the header); anything else answers cudaErrorNotSupported.
template <int D, int BN, int NWG, int MINB, bool BF16>
cudaError_t launch_fwd_wgmma_tile(const FwdParams &p, int batch, int nheads, cudaStream_t st) {
    if (!p.plain || p.head_dim != D) return cudaErrorNotSupported;
    using S     = WgShape<D, BN, NWG>;
    auto kernel = fwd_wgmma_kernel<D, BN, NWG, BF16, MINB>;
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, S::SMEM);
    if (e != cudaSuccess) return e;
    dim3 grid((p.seqlen_q + S::BM - 1) / S::BM, nheads, batch);
    kernel<<<grid, S::NT, S::SMEM, st>>>(p);
    return cudaGetLastError();
}

// The bucket's tile (WgTile).
template <int D, bool BF16> cudaError_t launch_fwd_wgmma(const FwdParams &p, int batch, int nheads, cudaStream_t st) {
    return launch_fwd_wgmma_tile<D, WgTile<D>::BN, WgTile<D>::NWG, WgTile<D>::MINB, BF16>(p, batch, nheads, st);
}

} // namespace fk_wg

#endif // FK_CUDA_ATTN_FWD_WGMMA_CUH
