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
 * Compile-time: head-dim bucket, tile shape, dtype. Run-time: causal/window, softcap, ALiBi, GQA, varlen,
 * head-dim tail (predicated), LSE, strides (16-byte path when aligned, element path otherwise).
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
};

// Visible keys [lo, hi) of row i (0-based in its sequence): fk_attn_key_range, in 32-bit (seqlens <= 2^28).
__device__ __forceinline__ void key_range(const FwdParams &p, int i, int sq, int sk, int &lo, int &hi) {
    const int diag = i + sk - sq;
    lo = 0;
    hi = sk;
    if (p.window_left >= 0) lo = max(lo, diag - p.window_left);
    if (p.window_right >= 0) hi = min(hi, diag + p.window_right + 1);
}

// The sequence a block works on: offsets in tokens and lengths.
struct SeqInfo {
    int q0, k0, sq, sk;
};
__device__ __forceinline__ SeqInfo seq_info(const FwdParams &p, int b) {
    SeqInfo s;
    if (p.cu_q) {
        s.q0 = p.cu_q[b];
        s.k0 = p.cu_k[b];
        s.sq = p.cu_q[b + 1] - s.q0;
        s.sk = p.cu_k[b + 1] - s.k0;
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

template <int D, int BR, int BC, int NW> struct TcShape {
    static constexpr int NT = NW * 32, MT = BR / (16 * NW), LD = D + 8;
    static constexpr int SMEM = (BR + 2 * BC) * LD * 2; // Q, one K and one V tile
    static_assert(BR % (16 * NW) == 0 && BC % 16 == 0 && D % 16 == 0, "tile shape");
};

template <int D, int BR, int BC, int NW, bool BF16>
__global__ void __launch_bounds__(NW * 32, 1) fwd_tc_kernel(const FwdParams p) {
    using S            = TcShape<D, BR, BC, NW>;
    constexpr int NT   = S::NT, MT = S::MT, LD = S::LD;
    constexpr int NTS  = BC / 8; // score n-tiles per row block
    constexpr int NTO  = D / 8;  // output n-tiles
    extern __shared__ __align__(16) uint16_t smem[];
    uint16_t *sQ = smem, *sK = sQ + BR * LD, *sV = sK + BC * LD;

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
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int j = 0; j < NTO; ++j) acc[mt][j][0] = acc[mt][j][1] = acc[mt][j][2] = acc[mt][j][3] = 0.f;
        row_m[mt][0] = row_m[mt][1] = -INFINITY;
        row_l[mt][0] = row_l[mt][1] = 0.f;
    }

    if (n_max > n_min) {
        const bool vec = p.vec_in;
        load_tile<BR, D, NT>(sQ, gQ, p.q_rs, rows, p.head_dim, vec);
        load_tile<BC, D, NT>(sK, gK + (int64_t)(n_max - 1) * BC * p.k_rs, p.k_rs, s.sk - (n_max - 1) * BC,
                             p.head_dim, vec);
        cp_async_commit();

        // Shared addresses of this lane's ldmatrix rows (tile steps are added as constants).
        const uint32_t q_frag =
            smem_addr(sQ + (wrow + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + (lane >> 4) * 8);
        const uint32_t k_frag = smem_addr(sK + ((lane & 7) + (lane >> 4) * 8) * LD + ((lane >> 3) & 1) * 8);
        const uint32_t v_frag = smem_addr(sV + ((lane & 7) + ((lane >> 3) & 1) * 8) * LD + (lane >> 4) * 8);
        const float slope_log2 = p.alibi ? p.alibi[b * p.alibi_bs + h] * FK_LOG2E : 0.f;
        const float kscale     = p.transform ? 1.f : p.scale_log2; // score -> log2 units, folded into exp2
        const int   diag_off   = s.sk - s.sq;

        for (int n = n_max - 1; n >= n_min; --n) {
            const int n0 = n * BC;
            cp_async_wait_all();
            __syncthreads(); // K(n) (and Q) landed; every warp is done with V(n+1)
            load_tile<BC, D, NT>(sV, gV + (int64_t)n0 * p.v_rs, p.v_rs, s.sk - n0, p.head_dim, vec);
            cp_async_commit();

            // S = Q K^T for this warp's rows: [MT*16 x BC], fp32.
            float sc[MT][NTS][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int j = 0; j < NTS; ++j) sc[mt][j][0] = sc[mt][j][1] = sc[mt][j][2] = sc[mt][j][3] = 0.f;
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

            // General score path (softcap, ALiBi, non-positive scale): scores become log2 units here.
            // Each feature is its own flat loop: one unrolled loop with every branch inside spilled registers.
            if (p.transform) {
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
#pragma unroll
                for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                    for (int hh = 0; hh < 2; ++hh) {
                        int lo, hi; // this row's visible keys, as columns of this tile
                        key_range(p, m0 + wrow + mt * 16 + g + 8 * hh, s.sq, s.sk, lo, hi);
                        lo -= n0 + 2 * t;
                        hi -= n0 + 2 * t;
#pragma unroll
                        for (int j = 0; j < NTS; ++j)
#pragma unroll
                            for (int e = 0; e < 2; ++e) {
                                const int col = j * 8 + e;
                                if (col < lo || col >= hi) sc[mt][j][2 * hh + e] = -INFINITY;
                            }
                    }
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
                    const float m_old = row_m[mt][hh];
                    const bool  grow  = mx > m_old + 8.f;   // also true for the first visible key (m_old = -inf)
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
            if (__any_sync(0xffffffffu, moved)) {
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

            cp_async_wait_all();
            __syncthreads(); // V(n) landed; every warp is done with K(n)
            if (n > n_min) {
                load_tile<BC, D, NT>(sK, gK + (int64_t)(n0 - BC) * p.k_rs, p.k_rs, s.sk - (n0 - BC), p.head_dim,
                                     vec);
                cp_async_commit();
            }

            // O += P V.
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
    constexpr int CH = D / 8;
    for (int idx = threadIdx.x; idx < BR * CH; idx += NT) {
        const int r = idx / CH, c = idx % CH, d0 = c * 8;
        if (r >= rows || d0 >= p.head_dim) continue;
        const uint16_t *src = sQ + r * LD + d0;
        uint16_t       *dst = gO + r * p.o_rs + d0;
        if (p.vec_out && d0 + 8 <= p.head_dim) {
            *reinterpret_cast<uint4 *>(dst) = *reinterpret_cast<const uint4 *>(src);
        } else {
            for (int e = 0; e < 8 && d0 + e < p.head_dim; ++e) dst[e] = src[e];
        }
    }
}

// Launch configuration per head-dim bucket (sm_80 and sm_90 share it; measured on the H100 only):
// BR query rows x BC keys per block, NW warps. Measurements: docs/PERF.md (GPU section).
template <int D> struct FwdTile;
template <> struct FwdTile<32> { static constexpr int BR = 128, BC = 64, NW = 4; };
template <> struct FwdTile<64> { static constexpr int BR = 128, BC = 64, NW = 4; };
template <> struct FwdTile<96> { static constexpr int BR = 128, BC = 32, NW = 4; };
template <> struct FwdTile<128> { static constexpr int BR = 128, BC = 32, NW = 4; };
template <> struct FwdTile<192> { static constexpr int BR = 128, BC = 64, NW = 8; };
template <> struct FwdTile<256> { static constexpr int BR = 128, BC = 64, NW = 8; };

template <int D, int BR, int BC, int NW, bool BF16>
cudaError_t launch_fwd_tc(const FwdParams &p, int batch, int nheads, cudaStream_t stream) {
    using S     = TcShape<D, BR, BC, NW>;
    auto kernel = fwd_tc_kernel<D, BR, BC, NW, BF16>;
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, S::SMEM);
    if (e != cudaSuccess) return e;
    dim3 grid((p.seqlen_q + BR - 1) / BR, nheads, batch);
    kernel<<<grid, S::NT, S::SMEM, stream>>>(p);
    return cudaGetLastError();
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
