/*
 * attn_bwd_wgmma.cuh — the attention backward's main kernel for Hopper (sm_90a) on wgmma.mma_async: the library's
 * kernel for PLAIN fp16/bf16 problems at head dims 64 and 128 on 9.0 devices (attn_bwd.cu, use_wgmma; instances in
 * gen/attn_bwd_wgmma_*.cu), in place of bwd_tc_kernel (attn_bwd_impl.cuh).
 *
 * Measured (H200, 2026-11-30, dev/cuda/wgmma_bwd_run.sh): every check of dev/cuda/attn_bwd_wgmma_check passes and
 * memcheck / racecheck are clean; the software-pipelined schedule below runs 1.240x the schedule it replaced at
 * D = 64 (geometric mean over 6 shapes, min 1.205) and 1.115x at D = 128 (min 1.088). The replaced schedule (the
 * same products, each step's dQ waited for and added before the next step's S^T, two block barriers a step) ran
 * 1.02-1.07x FlashAttention-2 at D = 128 and 0.83-0.92x at D = 64 (docs/PERF.md).
 *
 * Same three launches as bwd_tc_kernel: bwd_prep_kernel (D = rowsum(dO O), LSE copy, dQ accumulator zeroed) ->
 * bwd_wgmma_kernel (this file) -> bwd_convert_kernel (dQ = scale * accumulator); same BwdParams, same workspace
 * (dq_acc [total_q, Hq, acc_d] fp32), same deterministic protocol (per (batch, head, query block) counters, indexed
 * with this kernel's BM = 64; attn_bwd.cu sizes them with it). Supported: head_dim == D (64 or 128), 16-byte
 * aligned q/k/v/do (vec_in), no softcap / ALiBi / scale <= 0 (p.transform == 0); causal and local windows, GQA,
 * Sq != Sk, varlen, deterministic. Anything else: cudaErrorNotSupported.
 *
 * Schedule (FlashAttention-2's backward, FA3-style operands; no producer warp or TMA yet):
 *   One block = BN = 128 keys of one KV head, 2 warpgroups; warpgroup w owns keys [64 w, 64 w + 64). K and V are
 *   loaded once (cp.async, 128-B swizzled smem; K at D = 64 in the 64-B swizzle, see below). The block walks the
 *   query heads of its GQA group and the query tiles of BM = 64 rows that see its keys (bwd_mblock_range); Q, dO
 *   and the tile's LSE / D rows are in a ring of 3 buffers, loaded (cp.async) two steps ahead. Per step and
 *   warpgroup:
 *     S^T  = K Q^T   wgmma m64n64, A = K rows (smem, K-major over D), B = Q (smem, K-major)    fp32 regs
 *     dP^T = V dO^T  the same with V, dO
 *     P^T, dS^T in registers (bwd_wg_p / bwd_wg_ds, bwd_p_ds's plain branch: the wgmma accumulator layout of a
 *          warp is the mma.sync one that bwd_tc_kernel uses with MT = 1: key rows 16 warp + g (+8), query columns
 *          8 i + 2 t (+1); softcap / ALiBi would be bwd_p_ds's other branch, left out for registers)
 *     dV += P^T dO   wgmma m64nD, A = P^T from registers (acc_to_a), B = dO (smem, MN-major: K = queries are rows)
 *     dK += dS^T Q   the same with dS^T and Q; dV and dK stay in registers for the whole walk
 *     dS^T -> smem ([128 keys][64 queries], 4-byte stores, 128-B swizzle; a ring of 2 buffers)
 *     dQ (64 x D/2: warpgroup w owns the head-dim columns [w D/2, (w+1) D/2)) = dS K over all 128 keys:
 *          wgmma m64n(D/2), A = dS (smem, MN-major: imm-trans-a = 1), B = K (smem, MN-major: columns col0..)
 *     dQ added into the fp32 accumulator: float2 atomics, or the counter-ordered read-add-write when deterministic.
 *   Software-pipelined: one loop trip issues the previous step's dQ, then this step's S^T and dP^T, and adds the
 *   previous step's dQ while S^T / dP^T run; then P while dP^T runs, dV issued, dS while dV runs, dK issued; dS^T
 *   stored; ONE block barrier a step (bwd_wgmma_kernel's loop has the phases and the ordering argument).
 *   K at D = 64 uses the 64-B swizzle: a warpgroup's dQ columns start at 32, and an MN-major operand whose first
 *   column is not a whole swizzle row (64 elements at 128 B) is untested territory, while 32-column blocks of the
 *   64-B swizzle are ordinary (wgmma_check covers both K-major and MN-major 64-B swizzle, and col0 = 32 now).
 *
 * Registers (255 per thread: 256 threads, one block per SM): dV + dK 2 x D / 2 floats (D = 128: 128), S^T + dP^T
 * 64 (both live through the previous step's dQ add), then P^T / dS^T packed (32) + the dQ part D / 4. ptxas
 * (nvcc 13.0, sm_90a): 198 (D = 64) / 255 (D = 128) registers, no spills, no C75xx notes (wgmma_bwd_run.sh
 * reports them on every build).
 * Shared memory: K, V (BN x D each) + 3 x (Q, dO) (BM x D) + 2 x dS^T (BN x BM) + 3 x LSE / D rows:
 *   D = 64: 115 KB, D = 128: 195 KB (one block per SM either way: the registers decide).
 *
 * Missing versus FA3: TMA + mbarrier producer warp with setmaxnreg, dQ through an smem tile + TMA reduce-add
 * instead of atomics, per-warpgroup skipping of fully masked causal steps.
 */
#ifndef FK_CUDA_ATTN_BWD_WGMMA_CUH
#define FK_CUDA_ATTN_BWD_WGMMA_CUH

#include "attn_bwd_impl.cuh" // BwdParams, BwdSeq, bwd_seq, bwd_mblock_range / _keys, bwd_key_band, bwd_load_rows
#include "wgmma_common.cuh"

#include <cuda_runtime.h>

namespace fk_wg {

using fk_cuda::BwdParams;

// Tile shape and shared-memory map (byte offsets from a 1024-aligned base; every tile on a 1024-byte boundary).
// Q / dO / LSE / D rows in a ring of 3 (a step's loads are issued two steps ahead and must land one step ahead),
// dS^T in a ring of 2 (one block barrier a step): D = 64: 115 KB, D = 128: 195 KB of shared memory.
// BM = 128 query rows a step (fewer steps, barriers and atomics) does not fit: S^T and dP^T alone would be 128
// fp32 registers a thread beside dV + dK's 64 (a 255-register kernel before any address or operand).
template <int D> struct BwdWgShape {
    static_assert(D == 64 || D == 128, "head dims of this kernel");
    static constexpr int NQB = 3, NDS = 2; // Q / dO / rows buffers, dS^T buffers
    static constexpr int BM = 64, BN = 128, NT = 256;
    // K's swizzle: 64 B at D = 64 (the header: the dQ column split starts a warpgroup's K columns at 32).
    static constexpr int KSW = D == 64 ? 64 : 128;
    static constexpr int DQN = D / 2; // dQ columns per warpgroup
    static constexpr int KV_BYTES = BN * D * 2, QT_BYTES = BM * D * 2, DS_BYTES = BN * BM * 2;
    static constexpr int OFF_K = 0, OFF_V = KV_BYTES, OFF_Q = 2 * KV_BYTES, OFF_DO = OFF_Q + NQB * QT_BYTES;
    static constexpr int OFF_DS = OFF_DO + NQB * QT_BYTES, OFF_L = OFF_DS + NDS * DS_BYTES;
    static constexpr int OFF_DD = OFF_L + NQB * BM * 4;
    static constexpr int SMEM = OFF_DD + NQB * BM * 4 + 1024; // + slack to align the window to 1024 bytes
    static_assert(KV_BYTES % 1024 == 0 && QT_BYTES % 1024 == 0 && DS_BYTES % 1024 == 0, "tile alignment");
    static_assert(SMEM <= 227 * 1024, "one block fits in an SM's shared memory");
};

// Byte offset of k-step s (16 elements of K) inside a K-major tile of `rows` rows, SW-byte swizzle
// (wgmma_common.cuh: the column block s / (SW / 32), then 32 bytes per k-step inside the swizzle row).
template <int SW> __host__ __device__ constexpr uint32_t kmajor_step(int s, int rows) {
    return (uint32_t)((s / (SW / 32)) * rows * SW + (s % (SW / 32)) * 32);
}
// ... of an MN-major tile (k-step s = rows 16 s .. 16 s + 15).
template <int SW> __host__ __device__ constexpr uint32_t mnmajor_step(int s) { return (uint32_t)(s * 16 * SW); }

// A descriptor moved by a constant number of bytes (start address field; no carry: shared addresses < 256 KB).
__device__ __forceinline__ uint64_t bwd_desc_add(uint64_t d, uint32_t bytes) { return d + (bytes >> 4); }

// ROWS x D tile (row pitch rs elements, 16-byte aligned) into the SW-byte swizzled layout at shared address s,
// 16-byte cp.async per chunk; rows >= rows_valid zero-filled (nothing read; the address given is g, a valid row).
// Thread x copies chunk x % CH of rows x / CH + k NT / CH: NT / CH is a multiple of 8 rows, so the swizzle phase of
// a thread's chunks never changes and its shared offset is one tile_off plus a constant per round (one register,
// not one per round: ptxas hoisted the per-round offsets out of the walk and spilled them).
template <int ROWS, int D, int SW, int NT>
__device__ __forceinline__ void bwd_load_tile_sw(uint32_t s, const uint16_t *g, int64_t rs, int rows_valid) {
    constexpr int CH = D / 8, RPR = NT / CH; // 16-byte chunks per row, rows per round
    static_assert(NT % CH == 0 && RPR % 8 == 0 && ROWS % RPR == 0, "whole rounds, swizzle phase fixed");
    const int       r0 = (int)threadIdx.x / CH, c = (int)threadIdx.x % CH;
    const uint32_t  s0 = s + tile_off<SW>(r0, c * 8, ROWS);
    const uint16_t *g0 = g + r0 * rs + c * 8;
#pragma unroll
    for (int it = 0; it < ROWS / RPR; ++it) {
        const bool ok = r0 + it * RPR < rows_valid;
        cp_async_16(s0 + (uint32_t)(it * RPR * SW), ok ? g0 + it * RPR * rs : g, ok ? 16 : 0);
    }
}

template <int N> __device__ __forceinline__ void fence_regs(uint32_t (&x)[N][4]) {
#pragma unroll
    for (int i = 0; i < N; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e) fence_operand(x[i][e]);
}

// P^T in place, PLAIN problems (the launcher rejects p.transform): bwd_p_ds's first branch, element (i, e) of a
// warp's accumulators = key n0 + wkey + g + 8 (e >> 1), query column m0 + 8 i + 2 t + (e & 1). Masks (causal /
// window / key tail) only on tiles that cross some row's band edge. l2: the tile's LSE rows (natural log) in
// shared memory. Copies rather than a call of bwd_p_ds: without its softcap / ALiBi branch ptxas keeps the
// D = 128 kernel within 255 registers (with it: 255 and 8 bytes of spills); and split in two (P, then dS) so that
// P can be computed while dP^T is still on the tensor cores (bwd_wgmma_kernel).
template <int BM, int BN, int NS>
__device__ __forceinline__ void bwd_wg_p(const BwdParams &p, const fk_cuda::BwdSeq &s, int m0, int n0, int wkey,
                                         int off, int g, int t, const float *l2, float (&st)[1][NS][4]) {
    int lo_first, hi_first, lo_last, hi_last;
    fk_cuda::bwd_key_range(p, m0, s.sq, s.sk, lo_first, hi_first);
    fk_cuda::bwd_key_range(p, min(m0 + BM, s.sq) - 1, s.sq, s.sk, lo_last, hi_last);
    if (!(n0 >= lo_last && n0 + BN <= hi_first)) {
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
            int ilo, ihi;
            fk_cuda::bwd_key_band(p, n0 + wkey + g + 8 * hh, off, s.sk, m0 + 2 * t, ilo, ihi);
#pragma unroll
            for (int i = 0; i < NS; ++i)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const int col = 8 * i + e;
                    if (col < ilo || col >= ihi) st[0][i][2 * hh + e] = -INFINITY;
                }
        }
    }
#pragma unroll
    for (int i = 0; i < NS; ++i) {
        const float2 lv = *reinterpret_cast<const float2 *>(l2 + 8 * i + 2 * t);
        const float  l2x = lv.x * FK_BWD_LOG2E, l2y = lv.y * FK_BWD_LOG2E;
#pragma unroll
        for (int e = 0; e < 4; ++e) st[0][i][e] = fk_cuda::fast_exp2(fmaf(st[0][i][e], p.scale_log2, -((e & 1) ? l2y : l2x)));
    }
}
// dS^T = P^T (dP^T - D) in place of dP^T; dd: the tile's D rows in shared memory.
template <int NS>
__device__ __forceinline__ void bwd_wg_ds(int t, const float *dd, const float (&st)[1][NS][4], float (&dp)[1][NS][4]) {
#pragma unroll
    for (int i = 0; i < NS; ++i) {
        const float2 dv = *reinterpret_cast<const float2 *>(dd + 8 * i + 2 * t);
#pragma unroll
        for (int e = 0; e < 4; ++e) dp[0][i][e] = st[0][i][e] * (dp[0][i][e] - ((e & 1) ? dv.y : dv.x));
    }
}

// The main kernel (the header describes it; the loop below has the order of a step and why it is safe).
template <int D, bool BF16> __global__ void __launch_bounds__(256, 1) bwd_wgmma_kernel(const BwdParams p) {
    // wgmma exists only in the sm_90a image (see attn_fwd_wgmma.cuh); other images get an empty body.
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    using S           = BwdWgShape<D>;
    constexpr int BM  = S::BM, BN = S::BN, NT = S::NT, KSW = S::KSW;
    constexpr int NS  = BM / 8;  // S^T n8 blocks (queries) per warp
    constexpr int DQN = S::DQN;  // dQ columns per warpgroup
    extern __shared__ uint8_t smem_raw[];
    const uint32_t raw = smem_u32(smem_raw), sbase = (raw + 1023u) & ~1023u;
    uint8_t       *smem = smem_raw + (sbase - raw);
    const uint32_t sK = sbase + S::OFF_K, sV = sbase + S::OFF_V, sQ = sbase + S::OFF_Q, sdO = sbase + S::OFF_DO;
    const uint32_t sDS = sbase + S::OFF_DS;
    uint8_t       *pDS = smem + S::OFF_DS;
    float         *sL = reinterpret_cast<float *>(smem + S::OFF_L), *sDd = reinterpret_cast<float *>(smem + S::OFF_DD);

    const int             j = blockIdx.x, hk = blockIdx.y, b = blockIdx.z;
    const fk_cuda::BwdSeq s = fk_cuda::bwd_seq(p, b);
    const int             n0 = j * BN;
    if (n0 >= s.sk) return;
    const int kv_rows = min(BN, s.sk - n0);
    const int tid = threadIdx.x, wg = tid / 128, warp = tid / 32 % 4, lane = tid % 32, g = lane / 4, t = lane % 4;
    const int wkey = wg * 64 + warp * 16; // this warp's first key in the block: its rows are wkey + g and + 8

    const uint16_t *gK = (const uint16_t *)p.k + b * p.k_bs + (int64_t)(s.k0 + n0) * p.k_rs + hk * p.k_hs;
    const uint16_t *gV = (const uint16_t *)p.v + b * p.v_bs + (int64_t)(s.k0 + n0) * p.v_rs + hk * p.v_hs;
    bwd_load_tile_sw<BN, D, KSW, NT>(sK, gK, p.k_rs, kv_rows);
    bwd_load_tile_sw<BN, D, 128, NT>(sV, gV, p.v_rs, kv_rows);

    int m_begin, m_end;
    fk_cuda::bwd_mblock_range<BM, BN>(p, j, s.sq, s.sk, m_begin, m_end);
    const int nm = max(m_end - m_begin, 0), total = nm * p.group;
    const int tokq = fk_cuda::bwd_tok0_q(p, b, s);
    const int off  = s.sk - s.sq;

    // Issue the loads of step `it` (query head, query block) into buffer `buf` (K, V ride with step 0's group).
    auto load_step = [&](int it, int buf) {
        const int h = hk * p.group + it / nm, m0 = (m_begin + it % nm) * BM;
        const int rows = min(BM, s.sq - m0);
        const uint16_t *gQ  = (const uint16_t *)p.q + b * p.q_bs + (int64_t)(s.q0 + m0) * p.q_rs + h * p.q_hs;
        const uint16_t *gdO = (const uint16_t *)p.do_ + b * p.do_bs + (int64_t)(s.q0 + m0) * p.do_rs + h * p.do_hs;
        bwd_load_tile_sw<BM, D, 128, NT>(sQ + buf * S::QT_BYTES, gQ, p.q_rs, rows);
        bwd_load_tile_sw<BM, D, 128, NT>(sdO + buf * S::QT_BYTES, gdO, p.do_rs, rows);
        const int64_t t0 = (int64_t)h * p.total_q + tokq + m0;
        fk_cuda::bwd_load_rows<BM, NT>(sL + buf * BM, sDd + buf * BM, p.lsef + t0, p.dsum + t0, rows);
    };
    if (total > 0) load_step(0, 0);
    cp_async_commit();

    float dv[D / 2], dk[D / 2]; // [64 keys x D] per warpgroup, accumulator layout (rows = keys)
#pragma unroll
    for (int i = 0; i < D / 2; ++i) dv[i] = dk[i] = 0.f;

    // Descriptors at k-step 0 of buffer 0; steps and buffers add compile-time / uniform byte offsets.
    const uint64_t kA  = desc_kmajor<KSW>(sK, wg * 64, 0, BN);  // S^T:  A = this warpgroup's 64 keys of K
    const uint64_t vA  = desc_kmajor<128>(sV, wg * 64, 0, BN);  // dP^T: A = its 64 keys of V
    const uint64_t qB  = desc_kmajor<128>(sQ, 0, 0, BM);        // S^T:  B = Q [BM][D], K-major
    const uint64_t doB = desc_kmajor<128>(sdO, 0, 0, BM);       // dP^T: B = dO, K-major
    const uint64_t qBt  = desc_mnmajor<128>(sQ, 0, BM);         // dK:   B = Q, MN-major (K = queries, N = D)
    const uint64_t doBt = desc_mnmajor<128>(sdO, 0, BM);        // dV:   B = dO, MN-major
    const uint64_t dsA  = desc_mnmajor<128>(sDS, 0, BN);        // dQ:   A = dS, MN-major (stored [keys][queries])
    const uint64_t kBt  = desc_mnmajor<KSW>(sK, 0, BN, wg * DQN); // dQ: B = K columns [wg D/2, +D/2), MN-major

    // Software-pipelined steps. One trip of the loop below, for step it:
    //   A  issue dQ(it-1) (dS^T of step it-1 from sDS[(it-1) % 2]; at it = 0 a dummy on the unused sDS[1])
    //   B  issue S^T(it) and dP^T(it)                 -- tensor cores: dQ(it-1), then S^T(it), dP^T(it)
    //   C  wait for dQ(it-1) only; add it into the accumulator (atomics; skipped at it = 0)
    //   D  the middle (p_dv_ds_dk): P while dP^T runs, issue dV, dS while dV runs, issue dK
    //   E  dS^T(it) -> sDS[it % 2]; wait for step it+1's loads and for dV(it) / dK(it); fence.proxy.async;
    //      barrier B(it); issue step it+3's loads
    // and after the loop dQ(total-1) and its add. The tensor cores get S^T(it) and dP^T(it) while the warps do
    // dQ(it-1)'s atomics and wait for it, and there is ONE block barrier a step. The price: dK(it) is waited for
    // before the barrier, and one dummy dQ a block.
    // Nothing is in flight across the loop's back edge: a form of this schedule that issued S^T(it+1) at the end
    // of trip it made ptxas (13.0) serialize every wgmma of the kernel (C7514: it does not follow wait_group
    // counts around a loop; FlashAttention-3's overlap also retires every group inside its loop body).
    // S^T's and dP^T's 64 accumulators both live through C. Issuing dP^T after C instead (only S^T's 32 live
    // through it) takes 192 (D = 64) / 246 (D = 128) registers instead of 198 / 255 (ptxas 13.0, sm_90a, no spills
    // either way): the fallback if 255 registers ever hurt at D = 128.
    //
    // Ordering. Buffers: Q / dO / LSE / D rows in a ring of 3 (slot it % 3, loaded two steps ahead: the loads of
    // step it+3 are issued after B(it) and must land by E(it+2)); dS^T in a ring of 2; K, V never rewritten.
    //   1. Step it+3's loads (cp.async into slot it % 3, after B(it)): that slot's readers are step it's wgmmas
    //      (S^T / dP^T retired in D, dV / dK by E's wait_group 0, both before each warpgroup's B(it)) and its LSE /
    //      D reads (ordinary loads in D): all done in every warpgroup before any thread passes B(it).
    //   2. Step it+1's S^T / dP^T (B of trip it+1, after B(it)), dV / dK and LSE / D reads read slot (it+1) % 3:
    //      every thread waited for that cp.async group in E(it) (cp_async_wait<1>: only step it+2's may still be
    //      pending), then fence.proxy.async, then B(it).
    //   3. dS^T(it) stores into sDS[it % 2] (E(it)): the last reader was dQ(it-2), issued in A(it-1) and retired in
    //      C(it-1) by each warpgroup, before its B(it-1); the storing thread is past B(it-1). dQ(it) (A(it+1))
    //      reads it after every thread's stores, fence.proxy.async and B(it). A single dS^T buffer would need a
    //      second barrier: the other warpgroup's dQ(it-1) may still be reading it when this one stores dS^T(it).
    //      The dummy dQ(-1) reads sDS[1], first written in E(1), after B(0); it retires in C(0), before B(0).
    //   4. Registers: S^T(it)'s and dP^T(it)'s accumulators are written by the tensor cores from B to D's
    //      waits; C reads only dq (its wait retires dQ(it-1), issued before them). pa / da (A of dV / dK)
    //      stay pinned until E's wait_group 0. wgmma_fence precedes A (dq, st, dp last touched by ordinary
    //      instructions in the trip before).
    //   5. wgmma groups pending at D's entry: S^T(it) then dP^T(it), so p_dv_ds_dk's first wait_group 1 retires
    //      S^T and its second dP^T (dV then pending); C's wait_group 2 leaves exactly those two.
    // The phases of a step, as lambdas.
    // S^T = K Q^T, dP^T = V dO^T: [64 keys x BM queries] per warpgroup from the Q / dO tiles at byte offset qo;
    // k-step 0 overwrites (scale-d 0). The caller fences and commits.
    auto issue_st = [&](float *stf, uint32_t qo) {
#pragma unroll
        for (int ks = 0; ks < D / 16; ++ks)
            wgmma_ss<BM, BF16, 0>(stf, bwd_desc_add(kA, kmajor_step<KSW>(ks, BN)),
                                  bwd_desc_add(qB, qo + kmajor_step<128>(ks, BM)), ks > 0 ? 1 : 0);
    };
    auto issue_dp = [&](float *dpf, uint32_t qo) {
#pragma unroll
        for (int ks = 0; ks < D / 16; ++ks)
            wgmma_ss<BM, BF16, 0>(dpf, bwd_desc_add(vA, kmajor_step<128>(ks, BN)),
                                  bwd_desc_add(doB, qo + kmajor_step<128>(ks, BM)), ks > 0 ? 1 : 0);
    };
    // The middle, entered with S^T's group and then dP^T's the two newest pending:
    // wait for S^T only, P while dP^T runs, issue dV, wait for dP^T, dS while dV runs, issue dK. Leaves dV's and
    // dK's groups pending (pa, da are their A registers: untouched until they complete) and dS^T packed in da.
    auto p_dv_ds_dk = [&](float (&st)[1][NS][4], float (&dp)[1][NS][4], uint32_t (&pa)[BM / 16][4],
                          uint32_t (&da)[BM / 16][4], int m0, int rbuf, uint32_t qo) {
        float *stf = &st[0][0][0], *dpf = &dp[0][0][0];
        wgmma_wait<1>(); // S^T landed; dP^T may still run
#pragma unroll
        for (int i = 0; i < BM / 2; ++i) fence_operand(stf[i]);
        bwd_wg_p<BM, BN, NS>(p, s, m0, n0, wkey, off, g, t, sL + rbuf * BM, st);
#pragma unroll
        for (int ks = 0; ks < BM / 16; ++ks) acc_to_a<BF16>(pa[ks], stf + 8 * ks);
        fence_operands(dv);
        wgmma_fence(); // pa written by ordinary instructions (dP^T's registers are not touched)
#pragma unroll
        for (int ks = 0; ks < BM / 16; ++ks) wgmma_rs<D, BF16, 1>(dv, pa[ks], bwd_desc_add(doBt, qo + mnmajor_step<128>(ks)), 1);
        wgmma_commit(); // group: dV
        wgmma_wait<1>(); // dP^T landed; dV may still run
#pragma unroll
        for (int i = 0; i < BM / 2; ++i) fence_operand(dpf[i]);
        bwd_wg_ds<NS>(t, sDd + rbuf * BM, st, dp);
#pragma unroll
        for (int ks = 0; ks < BM / 16; ++ks) acc_to_a<BF16>(da[ks], dpf + 8 * ks);
        fence_operands(dk);
        wgmma_fence(); // da written by ordinary instructions
#pragma unroll
        for (int ks = 0; ks < BM / 16; ++ks) wgmma_rs<D, BF16, 1>(dk, da[ks], bwd_desc_add(qBt, qo + mnmajor_step<128>(ks)), 1);
        wgmma_commit(); // group: dK
    };
    // dS^T -> shared memory at pds for dQ (conflict-free 4-byte stores: the 8 rows g of a warp hit 8 swizzled
    // chunks). The caller fences (proxy) and synchronizes.
    auto store_ds = [&](uint8_t *pds, const uint32_t (&da)[BM / 16][4]) {
#pragma unroll
        for (int ks = 0; ks < BM / 16; ++ks)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int key = wkey + g + 8 * (e & 1), q = 16 * ks + 8 * (e >> 1) + 2 * t;
                *reinterpret_cast<uint32_t *>(pds + tile_off<128>(key, q, BN)) = da[ks][e];
            }
    };
    // dQ (this step's part, this warpgroup's D/2 columns) = dS K over the block's 128 keys; dS^T at byte offset dso
    // of the dS^T region. The caller fences and commits.
    auto issue_dq = [&](float (&dq)[DQN / 2], uint32_t dso) {
#pragma unroll
        for (int ks = 0; ks < BN / 16; ++ks)
            wgmma_ss<DQN, BF16, 1, 1>(dq, bwd_desc_add(dsA, dso + mnmajor_step<128>(ks)), bwd_desc_add(kBt, mnmajor_step<KSW>(ks)),
                                      ks > 0 ? 1 : 0);
    };
    // dQ added into the fp32 accumulator; dq element (4 jj + e): query row 16 warp + g + 8 (e >= 2), column
    // wg D/2 + 8 jj + 2 t + (e & 1).
    auto add_dq = [&](const float (&dq)[DQN / 2], int h, int mb, int m0) {
        const int     rows    = min(BM, s.sq - m0);
        float        *gacc    = p.dq_acc + ((int64_t)(tokq + m0) * p.nheads_q + h) * p.acc_d + wg * DQN + 2 * t;
        const int64_t rstride = (int64_t)p.nheads_q * p.acc_d;
        if (!p.deterministic) {
#pragma unroll
            for (int hh = 0; hh < 2; ++hh) {
                const int r = warp * 16 + g + 8 * hh;
                if (r < rows) {
#pragma unroll
                    for (int jj = 0; jj < DQN / 8; ++jj)
                        atomicAdd(reinterpret_cast<float2 *>(gacc + r * rstride + 8 * jj),
                                  make_float2(dq[4 * jj + 2 * hh], dq[4 * jj + 2 * hh + 1]));
                }
            }
        } else {
            int *sem = fk_cuda::bwd_det_acquire<BM, BN>(p, s, b, h, mb, j); // bwd_tc_kernel's protocol
#pragma unroll
            for (int hh = 0; hh < 2; ++hh) {
                const int r = warp * 16 + g + 8 * hh;
                if (r < rows) {
#pragma unroll
                    for (int jj = 0; jj < DQN / 8; ++jj) {
                        float2 *dst = reinterpret_cast<float2 *>(gacc + r * rstride + 8 * jj);
                        float2  v   = __ldcg(dst);
                        v.x += dq[4 * jj + 2 * hh];
                        v.y += dq[4 * jj + 2 * hh + 1];
                        __stcg(dst, v);
                    }
                }
            }
            fk_cuda::bwd_det_release(sem);
        }
    };

    if (total > 1) load_step(1, 1);
    cp_async_commit(); // group: step 1's loads (empty when there is none)
    if (total > 2) load_step(2, 2);
    cp_async_commit(); // group: step 2's
    if (total > 0) {
        cp_async_wait<2>(); // K, V and step 0's loads
        fence_proxy_async();
        __syncthreads();
    }
    int buf = 0; // it % 3
    for (int it = 0; it < total; ++it) {
        const int      m0 = (m_begin + it % nm) * BM;
        const uint32_t qo = (uint32_t)(buf * S::QT_BYTES);
        // A, B
        float st[1][NS][4], dp[1][NS][4], dq[DQN / 2];
        float *stf = &st[0][0][0], *dpf = &dp[0][0][0];
        wgmma_fence();
        issue_dq(dq, (uint32_t)(((it & 1) ^ 1) * S::DS_BYTES));
        wgmma_commit(); // group: dQ(it-1)
        issue_st(stf, qo);
        wgmma_commit(); // group: S^T(it)
        issue_dp(dpf, qo);
        wgmma_commit();  // group: dP^T(it)
        wgmma_wait<2>(); // C: dQ(it-1) complete; S^T(it), dP^T(it) may run
        fence_operands(dq);
        if (it > 0) {
            const int ip = it - 1;
            const int hp = hk * p.group + ip / nm, mbp = m_begin + ip % nm;
            add_dq(dq, hp, mbp, mbp * BM);
        }
        // D
        uint32_t pa[BM / 16][4], da[BM / 16][4];
        p_dv_ds_dk(st, dp, pa, da, m0, buf, qo);
        // E
        store_ds(pDS + (it & 1) * S::DS_BYTES, da);
        cp_async_wait<1>(); // step it+1's loads (step it+2's may still be in flight)
        wgmma_wait<0>();    // dV(it), dK(it)
        fence_operands(dv);
        fence_operands(dk);
        fence_regs(pa); // the A registers of the dV / dK products stay untouched until here
        fence_regs(da);
        fence_proxy_async(); // this thread's dS^T stores and cp.async writes -> visible to wgmma
        __syncthreads();     // B(it): see the ordering argument above
        if (it + 3 < total) load_step(it + 3, buf);
        cp_async_commit();
        buf = buf == 2 ? 0 : buf + 1;
    }
    if (total > 0) { // dQ of the last step
        const int ip = total - 1;
        const int hp = hk * p.group + ip / nm, mbp = m_begin + ip % nm;
        float dq[DQN / 2];
        wgmma_fence();
        issue_dq(dq, (uint32_t)((ip & 1) * S::DS_BYTES));
        wgmma_commit();
        wgmma_wait<0>();
        fence_operands(dq);
        add_dq(dq, hp, mbp, mbp * BM);
    }
    cp_async_wait<0>(); // a block with no query tile still issued K, V

    // Epilogue: dK = scale * dk, dV; element (4 jj + e): key wkey + g + 8 (e >= 2), column 8 jj + 2 t + (e & 1).
    uint16_t *gdK = (uint16_t *)p.dk + b * p.dk_bs + (int64_t)(s.k0 + n0) * p.dk_rs + hk * p.dk_hs;
    uint16_t *gdV = (uint16_t *)p.dv + b * p.dv_bs + (int64_t)(s.k0 + n0) * p.dv_rs + hk * p.dv_hs;
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
        const int r = wkey + g + 8 * hh;
        if (r >= kv_rows) continue;
#pragma unroll
        for (int jj = 0; jj < D / 8; ++jj) {
            const int   d   = 8 * jj + 2 * t;
            const float k0v = dk[4 * jj + 2 * hh] * p.scale, k1v = dk[4 * jj + 2 * hh + 1] * p.scale;
            const float v0v = dv[4 * jj + 2 * hh], v1v = dv[4 * jj + 2 * hh + 1];
            uint16_t   *pk = gdK + r * p.dk_rs + d, *pv = gdV + r * p.dv_rs + d;
            if (p.vec_out) {
                *reinterpret_cast<uint32_t *>(pk) = pack2<BF16>(k0v, k1v);
                *reinterpret_cast<uint32_t *>(pv) = pack2<BF16>(v0v, v1v);
            } else {
                pk[0] = fk_cuda::from_float<BF16>(k0v);
                pk[1] = fk_cuda::from_float<BF16>(k1v);
                pv[0] = fk_cuda::from_float<BF16>(v0v);
                pv[1] = fk_cuda::from_float<BF16>(v1v);
            }
        }
    }
#endif // __CUDA_ARCH_FEAT_SM90_ALL
}

// Launch the main kernel (prep and convert are attn_bwd.cu's, around it). cudaErrorNotSupported for what the
// kernel does not cover (see the header), so that a caller can fall back to bwd_tc_kernel.
template <int D, bool BF16> cudaError_t launch_bwd_wgmma(const BwdParams &p, int nheads_kv, cudaStream_t st) {
    using S = BwdWgShape<D>;
    if (p.head_dim != D || !p.vec_in || p.transform || p.acc_d < D || !p.dq_acc) return cudaErrorNotSupported;
    if (p.deterministic && (!p.sem || p.n_mblocks < (p.seqlen_q + S::BM - 1) / S::BM)) return cudaErrorNotSupported;
    if (p.seqlen_k <= 0) return cudaSuccess;
    void (*kernel)(const BwdParams) = bwd_wgmma_kernel<D, BF16>;
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, S::SMEM);
    if (e != cudaSuccess) return e;
    dim3 grid((p.seqlen_k + S::BN - 1) / S::BN, nheads_kv, p.batch);
    kernel<<<grid, S::NT, S::SMEM, st>>>(p);
    return cudaGetLastError();
}

} // namespace fk_wg

#endif // FK_CUDA_ATTN_BWD_WGMMA_CUH