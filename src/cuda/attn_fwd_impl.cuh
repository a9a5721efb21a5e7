/*
 * attn_fwd_impl.cuh — the CUDA attention forward kernels (included by attn_fwd.cu, gen/*.cu and dev/cuda/).
 *
 * fwd_tc_kernel<D, BR, BC, NW, BF16>: fp16/bf16, FlashAttention-2's forward schedule on mma.sync.
 *   One block = BR query rows of one (batch, head); NW warps, each owns BR / NW rows (MT = rows / 16 m-tiles).
 *   The block walks its visible key tiles of BC keys from the last to the first:
 *     wait K(n) -> start V(n) load -> S = Q K^T (tensor cores, fp32) -> mask/softcap/ALiBi -> online softmax in
 *     registers -> wait V(n) -> start K(n-1) load -> O += P V with P re-used from registers as the A operand.
 *   So every global->shared copy (cp.async, 16 B, zero-filled past the tails) overlaps a matrix product.
 *   Shared rows are padded by 16 bytes (D + 8 elements): the row pitch is an odd number of 16-byte units, so
 *   the 8 row addresses of each ldmatrix phase fall in 8 different bank groups (no conflicts, no swizzle).
 *   Key tiles outside the block's visible band are never loaded (causal costs about half); tiles wholly
 *   inside every row's range skip the per-element mask.
 * fwd_f32_kernel: fp32, plain FMA (no tf32, to stay within 1e-5 of float64), one warp per 4 query rows.
 *
 * Compile-time: head-dim bucket, tile shape, dtype, pipeline, PLAIN (the common case: no softcap/ALiBi,
 * head_dim == bucket, aligned; fewer live registers, so larger key tiles fit). Run-time: causal/window,
 * softcap, ALiBi, GQA, varlen, head-dim tail (predicated), LSE, strides (16-byte path when aligned, element
 * path otherwise).
 */
#ifndef FK_CUDA_ATTN_FWD_IMPL_CUH
#define FK_CUDA_ATTN_FWD_IMPL_CUH

#include "common.cuh"

#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

namespace fk_cuda {

#define FK_LOG2E 1.4426950408889634f
#define FK_LN2 0.6931471805599453f

// Everything a kernel needs, resolved on the host from fk_attn_problem.
struct FwdParams {
    const void *q, *k, *v; // q (B, Sq, Hq, d), k/v (B, Sk, Hkv, d); varlen: (total, H, d)
    void       *o;         // like q
    float      *lse;       // (B, Hq, Sq) or (Hq, total_q); NULL = not wanted
    int64_t     q_bs, q_rs, q_hs, k_bs, k_rs, k_hs, v_bs, v_rs, v_hs, o_bs, o_rs, o_hs;
    int64_t     lse_bs, lse_hs, lse_rs;
    const int32_t *cu_q, *cu_k; // NULL for a fixed-length batch
    int64_t        total_q, total_k; // varlen: rows of q and k/v (device-side bounds of cu_q / cu_k)
    const float   *alibi;       // NULL = none; slope(b, h) = alibi[b * alibi_bs + h]
    int64_t        alibi_bs;
    int            seqlen_q, seqlen_k; // fixed length; varlen: the maxima (grid size only)
    int            head_dim;           // actual d (<= bucket)
    int            group;              // nheads_q / nheads_kv
    int            window_left, window_right; // -1 = unbounded; clamped to 2^29
    float          scale, scale_log2;         // scale * log2(e)
    float          softcap, softcap_inv;      // softcap (0 = off) and scale / softcap
    float          softcap_log2;              // softcap * log2(e)
    int            transform; // 1: softcap, ALiBi or scale <= 0 -> scores go through the general path
    int            vec_in, vec_out; // 16-byte loads (q, k, v) / stores (o) are aligned
    int            plain; // !transform, vec_in, vec_out, head_dim == bucket: the PLAIN kernel may run
};

// Visible keys [lo, hi) of row i (0-based in its sequence): fk_attn_key_range, in 32-bit (seqlens <= 2^28).
__device__ __forceinline__ void key_range(const FwdParams &p, int i, int sq, int sk, int &lo, int &hi) {
    const int diag = i + sk - sq;
    lo = 0;
    hi = sk;
    if (p.window_left >= 0) lo = max(lo, diag - p.window_left);
    if (p.window_right >= 0) hi = min(hi, diag + p.window_right + 1);
}

// The sequence a block works on: offsets in tokens and lengths. cu_seqlens stay on the device (the host never
// reads them), so they are bounded here: a sequence whose offsets fall outside [0, total] is empty, and a
// length beyond max_seqlen is cut to it. Bad offsets give unspecified output, never an out-of-bounds access.
struct SeqInfo {
    int q0, k0, sq, sk;
};
__device__ __forceinline__ SeqInfo seq_info(const FwdParams &p, int b) {
    SeqInfo s;
    if (p.cu_q) {
        const int  q0 = p.cu_q[b], q1 = p.cu_q[b + 1], k0 = p.cu_k[b], k1 = p.cu_k[b + 1];
        const bool ok = 0 <= q0 && q0 <= q1 && q1 <= p.total_q && 0 <= k0 && k0 <= k1 && k1 <= p.total_k;
        s.q0 = ok ? q0 : 0;
        s.k0 = ok ? k0 : 0;
        s.sq = ok ? min(q1 - q0, p.seqlen_q) : 0;
        s.sk = ok ? min(k1 - k0, p.seqlen_k) : 0;
    } else {
        s.q0 = s.k0 = 0;
        s.sq        = p.seqlen_q;
        s.sk        = p.seqlen_k;
    }
    return s;
}

// Key tiles [n_min, n_max) that some row of [m0, m0 + rows) can see; max_lo / min_hi: inside
// [max_lo, min_hi) every row sees every key (a tile there needs no per-element mask).
template <int BC>
__device__ __forceinline__ void tile_range(const FwdParams &p, int m0, int rows, const SeqInfo &s, int &n_min,
                                           int &n_max, int &max_lo, int &min_hi) {
    int lo0, hi0, lo1, hi1;
    key_range(p, m0, s.sq, s.sk, lo0, hi0);
    key_range(p, m0 + rows - 1, s.sq, s.sk, lo1, hi1);
    lo0    = max(lo0, 0);
    hi1    = max(hi1, 0);
    n_min  = lo0 / BC;
    n_max  = (hi1 + BC - 1) / BC;
    max_lo = lo1;
    min_hi = hi0;
}

// ---------------------------------------------------------------------------------------------------------
// fp16 / bf16 tensor-core kernel
// ---------------------------------------------------------------------------------------------------------

// ROWS x D tile of 16-bit elements from global (row pitch rs elements) into shared (pitch D + 8); rows >= rows_valid
// and columns >= d_valid become zeros (NaN-free, so masked products stay 0).
template <int ROWS, int D, int NT>
__device__ __forceinline__ void load_tile(uint16_t *s, const uint16_t *g, int64_t rs, int rows_valid, int d_valid,
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

// PLAIN loads: every 16-byte chunk in range, 16-byte aligned, head_dim == D. Thread tid copies chunk
// (row tid / CH + it * RSTEP, column tid % CH) of the tile for it = 0.., so its shared and global offsets
// are fixed for the whole block and are computed once (s_thr, g_thr: this thread's first chunk).
// Rows >= rows_valid are zero-filled (src-size 0, reading nothing; the source address given is g_row0,
// any valid row: the sequence's first).
template <int ROWS, int D, int NT>
__device__ __forceinline__ void load_tile_plain(uint32_t s_thr, const uint16_t *g_thr, const uint16_t *g_row0,
                                                int64_t rs, int rows_valid_thr) {
    constexpr int CH = D / 8, LD = D + 8, RSTEP = NT / CH, IT = ROWS / RSTEP;
    static_assert(NT % CH == 0 && ROWS % RSTEP == 0, "plain tile load");
    if (rows_valid_thr >= ROWS) { // full tile (all but the last key tile)
#pragma unroll
        for (int it = 0; it < IT; ++it) cp_async_16(s_thr + 2u * (it * RSTEP * LD), g_thr + it * RSTEP * rs, 16);
    } else {
#pragma unroll
        for (int it = 0; it < IT; ++it) {
            const bool ok = it * RSTEP < rows_valid_thr;
            cp_async_16(s_thr + 2u * (it * RSTEP * LD), ok ? g_thr + it * RSTEP * rs : g_row0, ok ? 16 : 0);
        }
    }
}

// Pipelines (the PIPE template argument): when the next key tile's K load is issued.
//   0: after the softmax, once V(n) has landed (K(n-1) overlaps P V only)
//   1: after S = Q K^T (FlashAttention-2's order: wait V(n), then K(n-1) overlaps the softmax and P V)
//   2: two K buffers: K(n-1) is issued with V(n) at the top of the tile and overlaps the whole tile
//   + 4 (FRAG): the ldmatrix fragments of the next k-step are loaded before this step's products (two sets
//   of fragment registers) instead of leaving that to the compiler's scheduler.
template <int D, int BR, int BC, int NW, int PIPE = 0> struct TcShape {
    static constexpr int NT = NW * 32, MT = BR / (16 * NW), LD = D + 8;
    static constexpr int SMEM = (BR + ((PIPE & 3) == 2 ? 3 : 2) * BC) * LD * 2; // Q, K (one or two), V
    static_assert(BR % (16 * NW) == 0 && BC % 16 == 0 && D % 16 == 0, "tile shape");
};

// Per-warp tile steps shared by fwd_tc_kernel and fwd_d256_kernel (attn_fwd_d256.cuh). Accumulator layout
// (mma m16n8k16): x[mt][j][e] is row 16 mt + g + 8 (e >> 1), column 8 j + 2 t + (e & 1) of the warp's tile.

// O = 0; running max -inf (log2 units) and partial sum 0 for every row of the warp.
template <int MT, int NTO>
__device__ __forceinline__ void fwd_init_rows(float (&acc)[MT][NTO][4], float (&row_m)[MT][2], float (&row_l)[MT][2]) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int j = 0; j < NTO; ++j) acc[mt][j][0] = acc[mt][j][1] = acc[mt][j][2] = acc[mt][j][3] = 0.f;
        row_m[mt][0] = row_m[mt][1] = -INFINITY;
        row_l[mt][0] = row_l[mt][1] = 0.f;
    }
}

// Scores outside each row's visible keys -> -inf. row0: the warp's first query row (sequence-relative); key0: the
// key of the warp's score column 0.
template <int MT, int NTS>
__device__ __forceinline__ void mask_tile(const FwdParams &p, const SeqInfo &s, int row0, int key0, int g, int t,
                                          float (&sc)[MT][NTS][4]) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
            int lo, hi; // this row's visible keys, as columns of the warp's scores
            key_range(p, row0 + mt * 16 + g + 8 * hh, s.sq, s.sk, lo, hi);
            lo -= key0 + 2 * t;
            hi -= key0 + 2 * t;
#pragma unroll
            for (int j = 0; j < NTS; ++j)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const int col = j * 8 + e;
                    if (col < lo || col >= hi) sc[mt][j][2 * hh + e] = -INFINITY;
                }
        }
}

// Online softmax of row (mt, hh) of the warp given its tile max mx (log2 units, over the whole row): P =
// exp2(s * kscale - m) overwrites S, row_l takes the rescaled old sum plus this tile's, alpha[mt][hh] the factor O
// must be rescaled by. Lazy rescaling: a row keeps its old max unless the tile's max exceeds it by more than 8 (log2
// units), so P <= 2^8 (exact enough in fp32 sums and in bf16/fp16 operands); `moved` records that some max moved.
// mx by reference: taken by value, nvcc emitted the max test with its operands swapped (setp.gt a, b -> setp.lt
// b, a), the same code but not the same PTX as before the helper existed.
template <int MT, int NTS>
__device__ __forceinline__ void softmax_row_step(float (&sc)[MT][NTS][4], int mt, int hh, const float &mx,
                                                 float kscale, float (&row_m)[MT][2], float (&row_l)[MT][2],
                                                 float (&alpha)[MT][2], bool &moved) {
    const float m_old = row_m[mt][hh];
    const bool  grow  = mx > m_old + 8.f; // also true for the first visible key (m_old = -inf)
    alpha[mt][hh]     = grow ? fast_exp2(m_old - mx) : 1.f;
    moved |= grow;
    const float m_cur = grow ? mx : m_old;
    row_m[mt][hh]     = m_cur;
    const float m_use = m_cur == -INFINITY ? 0.f : m_cur; // a row with nothing visible yet
    float       sum   = 0.f;
#pragma unroll
    for (int j = 0; j < NTS; ++j) {
        const float p0 = fast_exp2(fmaf(sc[mt][j][2 * hh], kscale, -m_use));
        const float p1 = fast_exp2(fmaf(sc[mt][j][2 * hh + 1], kscale, -m_use));
        sc[mt][j][2 * hh]     = p0;
        sc[mt][j][2 * hh + 1] = p1;
        sum += p0 + p1;
    }
    row_l[mt][hh] = row_l[mt][hh] * alpha[mt][hh] + sum;
}

// O *= alpha per row (alpha[mt][hh]: the factor of row 16 mt + g + 8 hh).
template <int MT, int NTO>
__device__ __forceinline__ void rescale_acc(float (&acc)[MT][NTO][4], const float (&alpha)[MT][2]) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int j = 0; j < NTO; ++j) {
            acc[mt][j][0] *= alpha[mt][0];
            acc[mt][j][1] *= alpha[mt][0];
            acc[mt][j][2] *= alpha[mt][1];
            acc[mt][j][3] *= alpha[mt][1];
        }
}

// PLAIN: compiled for the common case only (no softcap, no ALiBi, scale > 0, head_dim == D, 16-byte aligned
// q/k/v/o): no general score path, no element loads or stores, per-thread copy offsets computed once. This
// frees the registers that 64-key tiles at D = 128 and 128-key tiles at D = 64 need.
template <int D, int BR, int BC, int NW, bool BF16, bool PLAIN, int PIPE_BITS>
__global__ void __launch_bounds__(NW * 32, 1) fwd_tc_kernel(const FwdParams p) {
    using S             = TcShape<D, BR, BC, NW, PIPE_BITS>;
    constexpr int  PIPE = PIPE_BITS & 3;
    constexpr bool FRAG = (PIPE_BITS & 4) != 0;
    constexpr int NT   = S::NT, MT = S::MT, LD = S::LD;
    constexpr int NTS  = BC / 8; // score n-tiles per row block
    constexpr int NTO  = D / 8;  // output n-tiles
    constexpr int CH   = D / 8;  // 16-byte chunks per row
    extern __shared__ __align__(16) uint16_t smem[];
    uint16_t *sQ = smem, *sV = sQ + BR * LD, *sK = sV + BC * LD; // sK: one or two buffers (PIPE 2)

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
    const int wrow = warp * 16 * MT; // first row of this warp in the block

    float acc[MT][NTO][4];
    float row_m[MT][2], row_l[MT][2]; // running max (log2 units) and this lane's partial sum
    fwd_init_rows(acc, row_m, row_l);

    if (n_max > n_min) {
        // This thread's copy chunk (PLAIN): row lr, column chunk lc of every tile, then every RSTEP rows.
        const int       lr = threadIdx.x / CH, lc = threadIdx.x % CH;
        const uint16_t *gK_thr = gK + lr * p.k_rs + lc * 8, *gV_thr = gV + lr * p.v_rs + lc * 8;
        const uint32_t  sK_thr = smem_addr(sK + lr * LD + lc * 8), sV_thr = smem_addr(sV + lr * LD + lc * 8);
        constexpr uint32_t KBUF = 2u * BC * LD; // bytes between the two K buffers (PIPE 2)

        // K(tile n) into K buffer buf; V(tile n).
        auto load_k = [&](int n, int buf) {
            const int64_t off = (int64_t)n * BC * p.k_rs;
            if constexpr (PLAIN)
                load_tile_plain<BC, D, NT>(sK_thr + buf * KBUF, gK_thr + off, gK, p.k_rs, s.sk - n * BC - lr);
            else
                load_tile<BC, D, NT>(sK + buf * (BC * LD), gK + off, p.k_rs, s.sk - n * BC, p.head_dim, p.vec_in);
        };
        auto load_v = [&](int n) {
            const int64_t off = (int64_t)n * BC * p.v_rs;
            if constexpr (PLAIN)
                load_tile_plain<BC, D, NT>(sV_thr, gV_thr + off, gV, p.v_rs, s.sk - n * BC - lr);
            else
                load_tile<BC, D, NT>(sV, gV + off, p.v_rs, s.sk - n * BC, p.head_dim, p.vec_in);
        };

        if constexpr (PLAIN)
            load_tile_plain<BR, D, NT>(smem_addr(sQ + lr * LD + lc * 8), gQ + lr * p.q_rs + lc * 8, gQ, p.q_rs,
                                       rows - lr);
        else
            load_tile<BR, D, NT>(sQ, gQ, p.q_rs, rows, p.head_dim, p.vec_in);
        load_k(n_max - 1, PIPE == 2 ? (n_max - 1) & 1 : 0);
        cp_async_commit();

        // Shared addresses of this lane's ldmatrix rows (tile steps are added as constants).
        const uint32_t q_frag =
            smem_addr(sQ + (wrow + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + (lane >> 4) * 8);
        const uint32_t k_frag0 = smem_addr(sK + ((lane & 7) + (lane >> 4) * 8) * LD + ((lane >> 3) & 1) * 8);
        const uint32_t v_frag = smem_addr(sV + ((lane & 7) + ((lane >> 3) & 1) * 8) * LD + (lane >> 4) * 8);
        const float slope_log2 = (!PLAIN && p.alibi) ? p.alibi[b * p.alibi_bs + h] * FK_LOG2E : 0.f;
        const float kscale     = (!PLAIN && p.transform) ? 1.f : p.scale_log2; // score -> log2 units (in exp2)
        const int   diag_off   = s.sk - s.sq;

        for (int n = n_max - 1; n >= n_min; --n) {
            const int n0 = n * BC;
            cp_async_wait_all();
            __syncthreads(); // K(n) (and Q) landed; every warp is done with V(n+1) (and K(n+1): PIPE 2)
            load_v(n);
            cp_async_commit();
            if (PIPE == 2 && n > n_min) {
                load_k(n - 1, (n - 1) & 1);
                cp_async_commit();
            }
            const uint32_t k_frag = PIPE == 2 ? k_frag0 + (n & 1) * KBUF : k_frag0;

            // S = Q K^T for this warp's rows: [MT*16 x BC], fp32.
            float sc[MT][NTS][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int j = 0; j < NTS; ++j) sc[mt][j][0] = sc[mt][j][1] = sc[mt][j][2] = sc[mt][j][3] = 0.f;
            if constexpr (FRAG) {
                // Fragments of step i + 1 are loaded before the products of step i (i over (ks, np)).
                constexpr int NP = BC / 16, STEPS = D / 16 * NP;
                uint32_t      a[2][MT][4], bk[2][4];
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) ldmatrix_x4(a[0][mt], q_frag + 2u * (mt * 16 * LD));
                ldmatrix_x4(bk[0], k_frag);
#pragma unroll
                for (int i = 0; i < STEPS; ++i) {
                    const int ks = i / NP, np = i % NP;
                    if (i + 1 < STEPS) {
                        const int ks1 = (i + 1) / NP, np1 = (i + 1) % NP;
                        if (np1 == 0)
#pragma unroll
                            for (int mt = 0; mt < MT; ++mt)
                                ldmatrix_x4(a[ks1 & 1][mt], q_frag + 2u * (mt * 16 * LD + ks1 * 16));
                        ldmatrix_x4(bk[(i + 1) & 1], k_frag + 2u * (np1 * 16 * LD + ks1 * 16));
                    }
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt) {
                        mma_16816<BF16>(sc[mt][2 * np], a[ks & 1][mt], bk[i & 1][0], bk[i & 1][1]);
                        mma_16816<BF16>(sc[mt][2 * np + 1], a[ks & 1][mt], bk[i & 1][2], bk[i & 1][3]);
                    }
                }
            } else {
#pragma unroll
            for (int ks = 0; ks < D / 16; ++ks) {
                uint32_t a[MT][4];
#pragma unroll
                for (int mt = 0; mt < MT; ++mt)
                    ldmatrix_x4(a[mt], q_frag + 2u * (mt * 16 * LD + ks * 16));
#pragma unroll
                for (int np = 0; np < BC / 16; ++np) {
                    uint32_t bk[4];
                    ldmatrix_x4(bk, k_frag + 2u * (np * 16 * LD + ks * 16));
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt) {
                        mma_16816<BF16>(sc[mt][2 * np], a[mt], bk[0], bk[1]);
                        mma_16816<BF16>(sc[mt][2 * np + 1], a[mt], bk[2], bk[3]);
                    }
                }
            }
            }
            if (PIPE == 1) {
                cp_async_wait_all();
                __syncthreads(); // V(n) landed; every warp is done with K(n)
                if (n > n_min) {
                    load_k(n - 1, 0);
                    cp_async_commit();
                }
            }

            // General score path (softcap, ALiBi, non-positive scale): scores become log2 units here.
            // Each feature is its own flat loop: one unrolled loop with every branch inside spilled registers.
            if (!PLAIN && p.transform) {
                if (p.softcap > 0.f) {
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                        for (int j = 0; j < NTS; ++j)
#pragma unroll
                            for (int e = 0; e < 4; ++e)
                                sc[mt][j][e] = p.softcap_log2 * fast_tanh(sc[mt][j][e] * p.softcap_inv);
                } else {
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                        for (int j = 0; j < NTS; ++j)
#pragma unroll
                            for (int e = 0; e < 4; ++e) sc[mt][j][e] *= p.scale_log2;
                }
                if (p.alibi) {
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                        for (int hh = 0; hh < 2; ++hh) {
                            // distance |i + sk - sq - j| = |dist0 - (8 jt + e)| for column 8 jt + 2t + e of the tile
                            const int dist0 = m0 + wrow + mt * 16 + g + 8 * hh + diag_off - n0 - 2 * t;
#pragma unroll
                            for (int j = 0; j < NTS; ++j)
#pragma unroll
                                for (int e = 0; e < 2; ++e)
                                    sc[mt][j][2 * hh + e] -= slope_log2 * fabsf((float)(dist0 - 8 * j - e));
                        }
                }
            }
            // Mask only tiles that cross some row's range edge (or the key tail).
            if (!(n0 >= max_lo && n0 + BC <= min_hi)) {
                mask_tile(p, s, m0 + wrow, n0, g, t, sc);
            }

            // Online softmax per row; P = exp2(s * kscale - m) overwrites S. Lazy rescaling: a row keeps its
            // old max unless the tile's max exceeds it by more than 8 (log2 units), so P <= 2^8 (exact enough
            // in fp32 sums and in bf16/fp16 operands); O is rescaled only when some row of the warp moved its
            // max, which after the first tiles is rare (the rescale was 128 FMULs per tile and thread).
            float alpha[MT][2];
            bool  moved = false;
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int hh = 0; hh < 2; ++hh) {
                    float mx = -INFINITY;
#pragma unroll
                    for (int j = 0; j < NTS; ++j) mx = fmaxf(mx, fmaxf(sc[mt][j][2 * hh], sc[mt][j][2 * hh + 1]));
                    mx                = quad_max(mx) * kscale; // kscale > 0, so max commutes with it
                    softmax_row_step(sc, mt, hh, mx, kscale, row_m, row_l, alpha, moved);
                }
            if (__any_sync(0xffffffffu, moved)) rescale_acc(acc, alpha);
            // P as the A operand of P V: k-step ks covers score n-tiles 2ks and 2ks+1.
            uint32_t pa[MT][BC / 16][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int ks = 0; ks < BC / 16; ++ks) {
                    pa[mt][ks][0] = pack2<BF16>(sc[mt][2 * ks][0], sc[mt][2 * ks][1]);
                    pa[mt][ks][1] = pack2<BF16>(sc[mt][2 * ks][2], sc[mt][2 * ks][3]);
                    pa[mt][ks][2] = pack2<BF16>(sc[mt][2 * ks + 1][0], sc[mt][2 * ks + 1][1]);
                    pa[mt][ks][3] = pack2<BF16>(sc[mt][2 * ks + 1][2], sc[mt][2 * ks + 1][3]);
                }

            if (PIPE == 0) {
                cp_async_wait_all();
                __syncthreads(); // V(n) landed; every warp is done with K(n)
                if (n > n_min) {
                    load_k(n - 1, 0);
                    cp_async_commit();
                }
            } else if (PIPE == 2) {
                if (n > n_min) cp_async_wait_1(); // V(n) landed; K(n-1) may still be in flight
                else cp_async_wait_all();
                __syncthreads();
            }

            // O += P V.
            if constexpr (FRAG) {
                constexpr int DP = D / 16, STEPS = BC / 16 * DP;
                uint32_t      bv[2][4];
                ldmatrix_x4_trans(bv[0], v_frag);
#pragma unroll
                for (int i = 0; i < STEPS; ++i) {
                    const int ks = i / DP, dp = i % DP;
                    if (i + 1 < STEPS)
                        ldmatrix_x4_trans(bv[(i + 1) & 1],
                                          v_frag + 2u * ((i + 1) / DP * 16 * LD + (i + 1) % DP * 16));
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt) {
                        mma_16816<BF16>(acc[mt][2 * dp], pa[mt][ks], bv[i & 1][0], bv[i & 1][1]);
                        mma_16816<BF16>(acc[mt][2 * dp + 1], pa[mt][ks], bv[i & 1][2], bv[i & 1][3]);
                    }
                }
            } else {
#pragma unroll
            for (int ks = 0; ks < BC / 16; ++ks)
#pragma unroll
                for (int dp = 0; dp < D / 16; ++dp) {
                    uint32_t bv[4];
                    ldmatrix_x4_trans(bv, v_frag + 2u * (ks * 16 * LD + dp * 16));
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt) {
                        mma_16816<BF16>(acc[mt][2 * dp], pa[mt][ks], bv[0], bv[1]);
                        mma_16816<BF16>(acc[mt][2 * dp + 1], pa[mt][ks], bv[2], bv[3]);
                    }
                }
            }
        }
    }

    // Epilogue: O / l through shared memory (this warp's own Q rows), then 16-byte stores; LSE per row.
    __syncthreads();
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
            const float l   = quad_sum(row_l[mt][hh]);
            const float inv = l > 0.f ? 1.f / l : 0.f; // a row that sees no key: o = 0
            const int   r   = wrow + mt * 16 + g + 8 * hh;
#pragma unroll
            for (int j = 0; j < NTO; ++j)
                *reinterpret_cast<uint32_t *>(sQ + r * LD + j * 8 + 2 * t) =
                    pack2<BF16>(acc[mt][j][2 * hh] * inv, acc[mt][j][2 * hh + 1] * inv);
            if (p.lse && t == 0 && r < rows) {
                const float lse = l > 0.f ? (row_m[mt][hh] + __log2f(l)) * FK_LN2 : -INFINITY;
                p.lse[b * p.lse_bs + h * p.lse_hs + (int64_t)(s.q0 + m0 + r) * p.lse_rs] = lse;
            }
        }
    __syncthreads();
    uint16_t *gO = (uint16_t *)p.o + b * p.o_bs + (int64_t)(s.q0 + m0) * p.o_rs + h * p.o_hs;
    for (int idx = threadIdx.x; idx < BR * CH; idx += NT) {
        const int r = idx / CH, c = idx % CH, d0 = c * 8;
        if (r >= rows || (!PLAIN && d0 >= p.head_dim)) continue;
        const uint16_t *src = sQ + r * LD + d0;
        uint16_t       *dst = gO + r * p.o_rs + d0;
        if (PLAIN || (p.vec_out && d0 + 8 <= p.head_dim)) {
            *reinterpret_cast<uint4 *>(dst) = *reinterpret_cast<const uint4 *>(src);
        } else {
            for (int e = 0; e < 8 && d0 + e < p.head_dim; ++e) dst[e] = src[e];
        }
    }
}

// Launch configuration per head-dim bucket, general and PLAIN kernels (sm_80 and sm_90 share it; measured on
// the H100 only): BR query rows x BC keys per block, NW warps, PIPE. Measurements: docs/PERF.md (GPU section).
template <int D, bool PLAIN> struct FwdTile;
// General kernels (softcap, ALiBi, head-dim tails, unaligned strides): D = 64 and 256 spill a few registers
// and still measured fastest (run 3); D = 128 at 128x64 spilled and tied 128x32.
template <> struct FwdTile<32, false> { static constexpr int BR = 128, BC = 64, NW = 4, PIPE = 0; };
template <> struct FwdTile<64, false> { static constexpr int BR = 128, BC = 128, NW = 4, PIPE = 0; };
template <> struct FwdTile<96, false> { static constexpr int BR = 128, BC = 32, NW = 4, PIPE = 0; };
template <> struct FwdTile<128, false> { static constexpr int BR = 128, BC = 32, NW = 4, PIPE = 0; };
template <> struct FwdTile<192, false> { static constexpr int BR = 128, BC = 64, NW = 8, PIPE = 0; };
template <> struct FwdTile<256, false> { static constexpr int BR = 64, BC = 64, NW = 4, PIPE = 0; };
// PLAIN kernels (run 5): spill-free on sm_90 (D = 64: 4 bytes on sm_80).
template <> struct FwdTile<64, true> { static constexpr int BR = 128, BC = 128, NW = 4, PIPE = 0; };
template <> struct FwdTile<128, true> { static constexpr int BR = 128, BC = 64, NW = 4, PIPE = 2; };
template <> struct FwdTile<256, true> { static constexpr int BR = 64, BC = 64, NW = 4, PIPE = 0; };
// D = 256 PLAIN on sm_90: a wide kernel (attn_fwd_d256.cuh, 128x64, 8 warps 4 x 2, PIPE 2) replaces the 64x64 one
// for no window at any length and causal at seqlen_k >= 4096 (H200, 2026-11-30, bench/next_fwd256.sh, commit
// d3c1cfc); the rule is use_d256_wide in attn_fwd.cu, the instances gen/attn_fwd_d256w_*.cu.

// Buckets with a PLAIN kernel (the others run the general one for every problem).
constexpr bool fwd_has_plain(int d) { return d == 64 || d == 128 || d == 256; }

template <int D, bool PLAIN> constexpr int fwd_tile_smem() {
    using T = FwdTile<D, PLAIN>;
    return TcShape<D, T::BR, T::BC, T::NW, T::PIPE>::SMEM;
}
// Shared memory of the larger of the bucket's kernels (the selection check uses it).
template <int D> constexpr int fwd_smem() {
    if constexpr (fwd_has_plain(D))
        return fwd_tile_smem<D, true>() > fwd_tile_smem<D, false>() ? fwd_tile_smem<D, true>()
                                                                    : fwd_tile_smem<D, false>();
    else
        return fwd_tile_smem<D, false>();
}

template <int D, int BR, int BC, int NW, bool BF16, bool PLAIN, int PIPE>
cudaError_t launch_fwd_tc(const FwdParams &p, int batch, int nheads, cudaStream_t stream) {
    using S     = TcShape<D, BR, BC, NW, PIPE>;
    auto kernel = fwd_tc_kernel<D, BR, BC, NW, BF16, PLAIN, PIPE>;
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, S::SMEM);
    if (e != cudaSuccess) return e;
    dim3 grid((p.seqlen_q + BR - 1) / BR, nheads, batch);
    kernel<<<grid, S::NT, S::SMEM, stream>>>(p);
    return cudaGetLastError();
}

// The bucket's kernel for this problem: PLAIN when the bucket has one and the problem allows it.
template <int D, bool BF16> cudaError_t launch_fwd_bucket(const FwdParams &p, int batch, int nheads, cudaStream_t st) {
    if constexpr (fwd_has_plain(D)) {
        if (p.plain) {
            using T = FwdTile<D, true>;
            return launch_fwd_tc<D, T::BR, T::BC, T::NW, BF16, true, T::PIPE>(p, batch, nheads, st);
        }
    }
    using T = FwdTile<D, false>;
    return launch_fwd_tc<D, T::BR, T::BC, T::NW, BF16, false, T::PIPE>(p, batch, nheads, st);
}

// ---------------------------------------------------------------------------------------------------------
// fp32 kernel: SIMT FMA, 4 warps x 4 rows, 32-key tiles; lane j scores key j, then owns dims lane + 32c.
// ---------------------------------------------------------------------------------------------------------

constexpr int F32_NW = 4, F32_RPW = 4, F32_BR = F32_NW * F32_RPW, F32_BC = 32, F32_MAXC = 8;

inline int f32_dpad(int d) { return (d + 31) / 32 * 32; }
inline size_t f32_smem_bytes(int d) {
    const int dp = f32_dpad(d);
    return (size_t)(F32_BR * dp + F32_BC * (dp + 1) + F32_BC * dp) * sizeof(float);
}

template <int RPW> // rows per warp (F32_RPW; a template so that every including file may see it)
__global__ void __launch_bounds__(F32_NW * 32) fwd_f32_kernel(const FwdParams p) {
    extern __shared__ float fsm[];
    const int dv = p.head_dim, dp = (dv + 31) / 32 * 32, ldk = dp + 1;
    float    *sQ = fsm, *sK = sQ + F32_BR * dp, *sV = sK + F32_BC * ldk;

    const int     h = blockIdx.y, b = blockIdx.z;
    const SeqInfo s  = seq_info(p, b);
    const int     m0 = (gridDim.x - 1 - blockIdx.x) * F32_BR;
    if (m0 >= s.sq) return;
    const int rows = min(F32_BR, s.sq - m0);
    const int hk   = h / p.group;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

    const float *gQ = (const float *)p.q + b * p.q_bs + (int64_t)(s.q0 + m0) * p.q_rs + h * p.q_hs;
    const float *gK = (const float *)p.k + b * p.k_bs + (int64_t)s.k0 * p.k_rs + hk * p.k_hs;
    const float *gV = (const float *)p.v + b * p.v_bs + (int64_t)s.k0 * p.v_rs + hk * p.v_hs;

    for (int idx = threadIdx.x; idx < F32_BR * dp; idx += blockDim.x) {
        const int r = idx / dp, c = idx % dp;
        sQ[idx]     = (r < rows && c < dv) ? gQ[r * p.q_rs + c] : 0.f;
    }

    int n_min, n_max, max_lo, min_hi;
    tile_range<F32_BC>(p, m0, rows, s, n_min, n_max, max_lo, min_hi);

    float o[F32_RPW][F32_MAXC], m[F32_RPW], l[F32_RPW];
    int   lo[F32_RPW], hi[F32_RPW];
#pragma unroll
    for (int rr = 0; rr < F32_RPW; ++rr) {
        m[rr] = -INFINITY;
        l[rr] = 0.f;
#pragma unroll
        for (int c = 0; c < F32_MAXC; ++c) o[rr][c] = 0.f;
        key_range(p, m0 + warp * F32_RPW + rr, s.sq, s.sk, lo[rr], hi[rr]);
    }
    const float slope    = p.alibi ? p.alibi[b * p.alibi_bs + h] : 0.f;
    const int   diag_off = s.sk - s.sq;

    for (int n = n_min; n < n_max; ++n) {
        const int n0 = n * F32_BC, kv_rows = min(F32_BC, s.sk - n0);
        __syncthreads(); // previous tile consumed (and sQ written, on the first pass)
        for (int idx = threadIdx.x; idx < F32_BC * dp; idx += blockDim.x) {
            const int  r = idx / dp, c = idx % dp;
            const bool ok = r < kv_rows && c < dv;
            sK[r * ldk + c] = ok ? gK[(int64_t)(n0 + r) * p.k_rs + c] : 0.f;
            sV[r * dp + c]  = ok ? gV[(int64_t)(n0 + r) * p.v_rs + c] : 0.f;
        }
        __syncthreads();

        float sc[F32_RPW];
#pragma unroll
        for (int rr = 0; rr < F32_RPW; ++rr) sc[rr] = 0.f;
        const float *qrow = sQ + warp * F32_RPW * dp;
        for (int d = 0; d < dp; ++d) {
            const float kd = sK[lane * ldk + d];
#pragma unroll
            for (int rr = 0; rr < F32_RPW; ++rr) sc[rr] = fmaf(qrow[rr * dp + d], kd, sc[rr]);
        }
        const int col = n0 + lane;
        float     pr[F32_RPW];
#pragma unroll
        for (int rr = 0; rr < F32_RPW; ++rr) {
            float x = sc[rr] * p.scale;
            if (p.softcap > 0.f) x = p.softcap * tanhf(x / p.softcap);
            if (p.alibi) x -= slope * (float)abs(m0 + warp * F32_RPW + rr + diag_off - col);
            if (col < lo[rr] || col >= hi[rr]) x = -INFINITY;
            const float m_new = fmaxf(m[rr], warp_max(x));
            const float m_use = m_new == -INFINITY ? 0.f : m_new;
            const float alpha = expf(m[rr] - m_use);
            m[rr]             = m_new;
            pr[rr]            = expf(x - m_use);
            l[rr]             = l[rr] * alpha + pr[rr];
#pragma unroll
            for (int c = 0; c < F32_MAXC; ++c) o[rr][c] *= alpha;
        }
        for (int j = 0; j < F32_BC; ++j) {
            float pj[F32_RPW];
#pragma unroll
            for (int rr = 0; rr < F32_RPW; ++rr) pj[rr] = __shfl_sync(0xffffffffu, pr[rr], j);
#pragma unroll
            for (int c = 0; c < F32_MAXC; ++c) {
                if (c * 32 < dp) {
                    const float vv = sV[j * dp + c * 32 + lane];
#pragma unroll
                    for (int rr = 0; rr < F32_RPW; ++rr) o[rr][c] = fmaf(pj[rr], vv, o[rr][c]);
                }
            }
        }
    }

    float *gO = (float *)p.o + b * p.o_bs + (int64_t)(s.q0 + m0) * p.o_rs + h * p.o_hs;
#pragma unroll
    for (int rr = 0; rr < F32_RPW; ++rr) {
        const int   r   = warp * F32_RPW + rr;
        const float lt  = warp_sum(l[rr]);
        const float inv = lt > 0.f ? 1.f / lt : 0.f;
        if (r >= rows) continue;
#pragma unroll
        for (int c = 0; c < F32_MAXC; ++c)
            if (c * 32 + lane < dv) gO[r * p.o_rs + c * 32 + lane] = o[rr][c] * inv;
        if (p.lse && lane == 0)
            p.lse[b * p.lse_bs + h * p.lse_hs + (int64_t)(s.q0 + m0 + r) * p.lse_rs] =
                lt > 0.f ? m[rr] + logf(lt) : -INFINITY;
    }
}

inline cudaError_t launch_fwd_f32(const FwdParams &p, int batch, int nheads, cudaStream_t stream) {
    const size_t smem = f32_smem_bytes(p.head_dim);
    cudaError_t  e    = cudaFuncSetAttribute(fwd_f32_kernel<F32_RPW>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
    dim3 grid((p.seqlen_q + F32_BR - 1) / F32_BR, nheads, batch);
    fwd_f32_kernel<F32_RPW><<<grid, F32_NW * 32, smem, stream>>>(p);
    return cudaGetLastError();
}

} // namespace fk_cuda

#endif // FK_CUDA_ATTN_FWD_IMPL_CUH
