/*
 * attn_fwd_wgmma.cuh — the attention forward for Hopper (sm_90a) on wgmma.mma_async: the library's kernel for
 * PLAIN fp16/bf16 problems of head dim 64, 128 and 256 on 9.0 devices (attn_fwd.cu, use_wgmma; instances in
 * gen/attn_fwd_wgmma_*.cu). On the H200 (2026-11-30, third session; docs/PERF.md "Hopper wgmma"): the whole test
 * suite and 102 dev cases pass, memcheck and racecheck are clean, and it runs 1.3-1.4x (D = 64), 1.15-1.37x
 * (D = 128) and 1.33-1.70x (D = 256) FlashAttention-2 at S >= 2048, in the same process.
 *
 * fwd_wgmma_kernel<D, BN, NWG, BF16, MINB, PP>: PLAIN problems only (no softcap / ALiBi, scale > 0, head_dim == D, 16-byte
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
 * Missing versus FA3 (the next steps; cuDNN runs 1.05-1.6x this kernel on the H200, docs/PERF.md sixth session):
 * a producer warp with TMA + mbarriers and setmaxnreg, intra-warpgroup overlap of softmax(n) with Q K^T(n+1) (two S
 * accumulators), ping-pong without the per-tile block barrier (PP 2 tried it with the loads split by warpgroup and
 * lost: 0.69-0.87x), separate K and V waits, skipping per warpgroup the key tiles that are fully masked for its
 * rows. (The warpgroup ping-pong itself, PP 1, is production at D = 128 and 256: WgTile.)
 *
 * Schedules (fwd_wgmma_main's PP, its comment has the handshakes and their ordering argument; production's is
 * WgTile::PP: 1 at D = 128 and 256, 0 at 64; the others are dev candidates, checked and timed by
 * dev/cuda/attn_fwd_wgmma_check.cu through attn_fwd_wgmma_pp.cu). On an H200 (2026-11-30 fifth session, run 1,
 * docs/PERF.md) all four gave the plain schedule's outputs bit for bit on 102 cases; PP 1 ran 1.068x the plain
 * schedule at D = 128 and 1.033x at D = 256 (geomean of 6 shapes) and 0.983x at D = 64; PP 2-4 0.69-0.87x.
 *   PP 1: warpgroup ping-pong with named barriers (S0 < S1 < PV0 < PV1 issued in turn), block barrier kept;
 *   PP 2: ping-pong with no block barrier in the loop (K loaded by WG 0, V by WG 1, the turn barriers carry the
 *         data), so WG 1 may trail WG 0 by half a tile across tiles;
 *   PP 3: the plain schedule (PP 0) with rolled K / V load loops; PP 4: PP 1 with them.
 *   ptxas (nvcc 13.0, sm_90a; bf16 = fp16), registers / spill stores, production's tile per D:
 *             D = 64 (cap 128)   D = 128     D = 256
 *     PP 0    128 / 80 B         233 / 0     248 / 0
 *     PP 1    128 / 80 B         234 / 0     249 / 0
 *     PP 2    128 / 0            194 / 0     210 / 0
 *     PP 3    123 / 0            166 / 0     209 / 0
 *     PP 4    127 / 0            167 / 0     209 / 0
 *   no C75xx notes. The unrolled load loops hold their per-copy addresses in registers across the key loop; rolled,
 *   D = 64 stops spilling, which PP 3 alone measures.
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
// PP: the schedule (fwd_wgmma_main): the warpgroup ping-pong (PP 1) at D = 128 and 256, where it ran 1.068x and
// 1.033x the plain schedule (geomean of 6 shapes, outputs bit for bit the same; H200, 2026-11-30 fifth session,
// run 1 in docs/PERF.md); D = 64 keeps the plain one (PP 1 0.983x there: two blocks an SM already overlap one
// block's softmax with the other's GEMMs).
template <> struct WgTile<64> { static constexpr int BN = 128, NWG = 2, MINB = 2, PP = 0; };
template <> struct WgTile<128> { static constexpr int BN = 128, NWG = 2, MINB = 1, PP = 1; };
template <> struct WgTile<256> { static constexpr int BN = 64, NWG = 2, MINB = 1, PP = 1; };

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

// The same with the thread index given, as a rolled loop (PP 2: each warpgroup's 128 threads load one of K, V;
// PP 3: all threads, the plain schedule's). Rolled because ptxas keeps the unrolled loop's per-copy addresses
// live across the key loop: at D = 128 the PP 2 kernel took 255 registers and 128 B of spill unrolled, 194 and
// none rolled (nvcc 13.0).
template <int ROWS, int D, int NT>
__device__ __forceinline__ void load_tile_sw_by(uint32_t s, const uint16_t *g, int64_t rs, int rows_valid, int tid) {
    constexpr int CH = D / 8, TOTAL = ROWS * CH;
#pragma unroll 1
    for (int it = 0; it < (TOTAL + NT - 1) / NT; ++it) {
        const int idx = it * NT + tid;
        if (TOTAL % NT == 0 || idx < TOTAL) {
            const int  r = idx / CH, c = idx % CH;
            const bool ok = r < rows_valid;
            cp_async_16(s + tile_off<128>(r, c * 8, ROWS), ok ? g + r * rs + c * 8 : g, ok ? 16 : 0);
        }
    }
}

template <bool ROLLED, int ROWS, int D, int NT>
__device__ __forceinline__ void load_tile_kv(uint32_t s, const uint16_t *g, int64_t rs, int rows_valid) {
    if constexpr (ROLLED) load_tile_sw_by<ROWS, D, NT>(s, g, rs, rows_valid, (int)threadIdx.x);
    else load_tile_sw<ROWS, D, NT>(s, g, rs, rows_valid);
}

// Named barrier ids of the ping-pong schedules (PP > 0; 0 is __syncthreads, 1 and 2 the epilogue's per-warpgroup
// barriers). S1 .. S0 join both warpgroups (256 threads): one side bar.arrive, the other bar.sync; they order the
// GEMM issues (S0, S1, PV0, PV1 of a tile, then S0 of the next) and, in PP 2, carry the K / V data as well.
enum : int {
    PP_BAR_S1   = 3, // WG 1 may issue S(n): WG 0 issued its S(n) [PP 2: and K(n) is visible]
    PP_BAR_PV0  = 4, // WG 0 may issue PV(n): WG 1 issued its S(n) [PP 2: and V(n) is visible]
    PP_BAR_PV1  = 5, // WG 1 may issue PV(n): WG 0 issued its PV(n)
    PP_BAR_S0   = 6, // PP 2: WG 0 may issue S(n - 1): WG 1 issued its PV(n)
    PP_BAR_KLD  = 7, // PP 2: warpgroup 0 only (128 threads): its cp.async writes of K(n) landed and fenced
};

// Schedule PP (template; production's is WgTile::PP, the others are dev candidates, measured at the top of this
// file). The body of fwd_wgmma_kernel. Sw(n), PVw(n): warpgroup w's S = Q K^T and O += P V of tile n.
//   PP 1: ping-pong, block barrier kept; PP 2: ping-pong, no block barrier in the loop (K by WG 0, V by WG 1);
//   PP 3: the plain schedule (PP 0) with rolled load loops (load_tile_sw_by), the control for PP 2's registers;
//   PP 4: PP 1 with rolled load loops.
//
// PP = 1: warpgroup ping-pong, block barrier kept. Per tile n the tensor-core issue order is forced to
//   S0(n) < S1(n) < PV0(n) < PV1(n):
//     top:  wait own cp.async, fence, __syncthreads, cp.async of tile n - 1 (as production)
//     WG 0: issue S, arrive(S1)            | wait S, softmax | sync(PV0), issue PV, arrive(PV1) | wait PV
//     WG 1: sync(S1), issue S, arrive(PV0) | wait S, softmax | sync(PV1), issue PV              | wait PV
//   so WG 0's softmax runs while the tensor cores work on S1, and WG 1's while they work on PV0 (production: both
//   S run together, then both softmaxes with the tensor cores idle, then both PV). Every id is arrived once and
//   waited once per tile, by all 256 threads, and every use of a tile precedes the next tile's __syncthreads, so
//   no barrier generation can overlap the next. Both warpgroups walk the same tiles (a tile whose keys one
//   warpgroup's rows cannot see is masked in registers, never skipped), so the counts always match: the first
//   and last tiles need nothing special. (A later per-warpgroup skip of fully masked tiles must still do the
//   skipped tile's barrier operations.)
//
// PP = 2: ping-pong across tiles, no block barrier in the loop. The per-tile __syncthreads served two purposes:
//   (RAW) every thread's cp.async of K, V(n) landed before either warpgroup's S(n) / PV(n); (WAR) both
//   warpgroups' reads of buffer buf(n + 1) completed before any thread overwrites it with tile n - 1. Here
//   warpgroup 0 loads every K tile and warpgroup 1 every V tile (the same 16-byte copies a thread as production),
//   and the turn barriers carry both conditions, so warpgroup 1 may trail warpgroup 0 by half a tile: its
//   softmax(n) runs under PV0(n) and WG 0's softmax(n - 1) under PV1(n) and S1(n - 1) (PP 0 and PP 1
//   realign the warpgroups at every tile). Per tile n (K(n), V(n) in buffer buf(n); tile n - 1 goes to buf(n + 1)):
//     WG 0: cp.async wait 0, fence.proxy.async, sync(KLD, 128)     K(n) visible to WG 0's wgmma
//           if n < n_max - 1: sync(S0)                              WG 1 issued PV1(n + 1), so S1(n + 1) completed
//           if n > n_min: cp.async K(n - 1), commit                 WAR: S0(n + 1) and S1(n + 1) completed
//           issue S0(n); arrive(S1)                                 K(n) writes (fenced) released to WG 1
//           wait S0(n), softmax; sync(PV0); issue PV0(n); arrive(PV1); wait PV0(n)
//     WG 1: sync(S1)                                                K(n) visible; WG 0's PV0(n + 1) completed
//           if n > n_min: cp.async V(n - 1); commit (always)        WAR: PV0(n + 1), own PV1(n + 1) completed
//           issue S1(n); cp.async wait 1 (V(n), not V(n - 1)), fence.proxy.async; arrive(PV0)
//           wait S1(n), softmax; sync(PV1); issue PV1(n); if n > n_min: arrive(S0); wait PV1(n)
//   V(n) reaches WG 1's own PV1(n) through the chain arrive(PV0) -> WG 0's sync(PV0), arrive(PV1) -> sync(PV1):
//   every WG 1 thread's fenced writes precede its arrive(PV0), and barrier completion orders them before every
//   thread that passes the later barrier (the same release / acquire chain a __syncthreads gives).
//   Matching: S1, PV0, PV1 are arrived and waited once every tile; S0 is waited at tiles n_max - 2 .. n_min and
//   arrived at tiles n_max - 1 .. n_min + 1 (one tile earlier: the previous tile's PV1). The first tile's loads
//   go to the fresh buffer 1, the last loads nothing; a one-tile block uses no S0. KLD is warpgroup 0's own.
//   No generation overlap: a side arrives on an id again only after waiting on an id that the other side arrives
//   after its wait on the first (WG 0: arrive(S1) again after sync(S0), which WG 1 arrives after sync(S1);
//   arrive(PV1) again after sync(PV0) of the next tile, which WG 1 arrives after sync(S1) of it, after its
//   sync(PV1) of this one. WG 1: arrive(PV0) again after sync(S1), which WG 0 arrives after sync(S0), after
//   sync(PV0) of this tile; arrive(S0) again after sync(PV1), which WG 0 arrives after sync(S0) of the tile).
//   No deadlock: WG 0's waits: S0 <- WG 1's PV1(n + 1) issue <- sync(PV1) <- WG 0's arrive(PV1) in tile n + 1;
//   PV0 <- WG 1's S1(n) issue <- sync(S1) <- WG 0's arrive(S1) earlier in tile n. WG 1's: S1 <- WG 0 in tile n
//   after sync(S0) (above); PV1 <- WG 0's PV0(n) issue. No cycle.
//   Q is loaded by all 256 threads before the loop (one __syncthreads); the epilogue writes each warpgroup's own
//   Q rows, which the other warpgroup's wgmma never read, so WG 0 may finish while WG 1 still computes.
//   Tensor-core order by issue: S0(n) < S1(n) < PV0(n) < PV1(n) < S0(n - 1).
template <int D, int BN, int NWG, bool BF16, int PP>
__device__ __forceinline__ void fwd_wgmma_main(const FwdParams &p) {
    // wgmma exists only in the sm_90a image; the other images of a multi-architecture build get an empty body,
    // and the host side launches this kernel only on a 9.0 device of a build that has sm_90a (FK_HAVE_SM90A).
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    // PING: the turn barriers (PP 1, 2, 4); PP 2: no block barrier in the loop; ROLLED: rolled K / V load loops.
    constexpr bool PING = PP == 1 || PP == 2 || PP == 4, ROLLED = PP >= 2;
    static_assert(PP >= 0 && PP <= 4 && (!PING || NWG == 2), "schedule");
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
        if constexpr (PP != 2) {
            const int n = n_max - 1;
            load_tile_kv<ROLLED, BN, D, NT>(sKV, gK + (int64_t)n * BN * p.k_rs, p.k_rs, s.sk - n * BN);
            load_tile_kv<ROLLED, BN, D, NT>(sKV + KVB, gV + (int64_t)n * BN * p.v_rs, p.v_rs, s.sk - n * BN);
        } else {
            const int n = n_max - 1;
            if (wg == 0) load_tile_sw_by<BN, D, 128>(sKV, gK + (int64_t)n * BN * p.k_rs, p.k_rs, s.sk - n * BN, tid);
            else
                load_tile_sw_by<BN, D, 128>(sKV + KVB, gV + (int64_t)n * BN * p.v_rs, p.v_rs, s.sk - n * BN,
                                            tid - 128);
        }
        cp_async_commit();
        if constexpr (PP == 2) { // Q (all threads' writes) visible to both warpgroups: the loop has no block barrier
            cp_async_wait<0>();
            fence_proxy_async();
            __syncthreads();
        }

        // Descriptors of k-step 0; k-step ks adds a compile-time byte offset (desc_add).
        const uint64_t dq0 = desc_kmajor<128>(sQ, wg * 64, 0, BM);
        const uint64_t dk0 = desc_kmajor<128>(sKV, 0, 0, BN);
        const uint64_t dv0 = desc_mnmajor<128>(sKV + KVB, 0, BN);
        const float    kscale = p.scale_log2; // score -> log2 units, folded into exp2

        int buf = 0;
        for (int n = n_max - 1; n >= n_min; --n, buf ^= 1) {
            const int n0 = n * BN;
            if constexpr (PP != 2) {
                cp_async_wait<0>();
                fence_proxy_async(); // this thread's cp.async writes -> visible to wgmma (async proxy)
                __syncthreads();     // every thread's K, V(n) landed; every warpgroup is done with buffer buf ^ 1
                if (n > n_min) {
                    const uint32_t nb = sKV + (uint32_t)((buf ^ 1) * 2 * KVB);
                    load_tile_kv<ROLLED, BN, D, NT>(nb, gK + (int64_t)(n - 1) * BN * p.k_rs, p.k_rs,
                                                     s.sk - (n - 1) * BN);
                    load_tile_kv<ROLLED, BN, D, NT>(nb + KVB, gV + (int64_t)(n - 1) * BN * p.v_rs, p.v_rs,
                                                     s.sk - (n - 1) * BN);
                    cp_async_commit();
                }
                if (PING && wg == 1) named_bar_sync(PP_BAR_S1, 256);
            } else if (wg == 0) {
                cp_async_wait<0>();
                fence_proxy_async();
                named_bar_sync(PP_BAR_KLD, 128); // K(n): every WG 0 thread's writes landed and fenced
                if (n < n_max - 1) named_bar_sync(PP_BAR_S0, 256);
                if (n > n_min) {
                    load_tile_sw_by<BN, D, 128>(sKV + (uint32_t)((buf ^ 1) * 2 * KVB),
                                                gK + (int64_t)(n - 1) * BN * p.k_rs, p.k_rs, s.sk - (n - 1) * BN, tid);
                    cp_async_commit();
                }
            } else {
                named_bar_sync(PP_BAR_S1, 256);
                if (n > n_min)
                    load_tile_sw_by<BN, D, 128>(sKV + (uint32_t)((buf ^ 1) * 2 * KVB) + KVB,
                                                gV + (int64_t)(n - 1) * BN * p.v_rs, p.v_rs, s.sk - (n - 1) * BN,
                                                tid - 128);
                cp_async_commit(); // possibly empty: the wait below always leaves exactly this group pending
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
            if constexpr (PP == 2) {
                if (wg == 1) { // V(n) (this thread's copies) landed, fenced, then released to WG 0 by arrive(PV0)
                    cp_async_wait<1>();
                    fence_proxy_async();
                }
            }
            if constexpr (PING) named_bar_arrive(wg == 0 ? PP_BAR_S1 : PP_BAR_PV0, 256);
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
            if constexpr (PING) named_bar_sync(wg == 0 ? PP_BAR_PV0 : PP_BAR_PV1, 256);
            wgmma_fence(); // oacc (rescale) and pa were written by ordinary instructions
#pragma unroll
            for (int ks = 0; ks < BN / 16; ++ks)
                wgmma_rs<D, BF16, 1>(oacc, pa[ks], desc_add(dv0, boff + ks * 16 * 128), 1);
            wgmma_commit();
            if constexpr (PING) {
                if (wg == 0) named_bar_arrive(PP_BAR_PV1, 256);
                else if (PP == 2 && n > n_min) named_bar_arrive(PP_BAR_S0, 256);
            }
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

template <int D, int BN, int NWG, bool BF16, int MINB, int PP>
__global__ void __launch_bounds__(NWG * 128, MINB) fwd_wgmma_kernel(const FwdParams p) {
    fwd_wgmma_main<D, BN, NWG, BF16, PP>(p);
}

// Launch of one tile (BN keys a step, NWG warpgroups, MINB blocks an SM asked of the register allocator) for a
// PLAIN problem (see the header); anything else answers cudaErrorNotSupported. PP: schedule (fwd_wgmma_main;
// production's is WgTile's, the others are dev candidates).
template <int D, int BN, int NWG, int MINB, bool BF16, int PP>
cudaError_t launch_fwd_wgmma_tile(const FwdParams &p, int batch, int nheads, cudaStream_t st) {
    if (!p.plain || p.head_dim != D) return cudaErrorNotSupported;
    using S = WgShape<D, BN, NWG>;
    void (*kernel)(const FwdParams) = fwd_wgmma_kernel<D, BN, NWG, BF16, MINB, PP>;
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, S::SMEM);
    if (e != cudaSuccess) return e;
    dim3 grid((p.seqlen_q + S::BM - 1) / S::BM, nheads, batch);
    kernel<<<grid, S::NT, S::SMEM, st>>>(p);
    return cudaGetLastError();
}

// The bucket's tile (WgTile).
template <int D, bool BF16> cudaError_t launch_fwd_wgmma(const FwdParams &p, int batch, int nheads, cudaStream_t st) {
    using T = WgTile<D>;
    return launch_fwd_wgmma_tile<D, T::BN, T::NWG, T::MINB, BF16, T::PP>(p, batch, nheads, st);
}

} // namespace fk_wg

#endif // FK_CUDA_ATTN_FWD_WGMMA_CUH
