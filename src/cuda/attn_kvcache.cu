/*
 * attn_kvcache.cu — CUDA decode with a KV cache (fk_attn_fwd_kvcache): the selection function (supported?
 * workspace?) and three kernels, launched in this order on the caller's stream (semantics: include/flashkit.h;
 * the CPU twin: src/cpu/attn.c, "KV cache").
 *
 *   append_kernel  new k, v (B, Snew, Hkv, D) -> cache rows cache_seqlens[b] + i (contiguous or through
 *                  block_table), a plain copy in the storage dtype; 16-byte units when every row is aligned.
 *   split_kernel   grid (splits, kv head x row block, batch). A block takes up to kRows query rows that share
 *                  one kv head (row r = g * seqlen_q + i: head hk * G + g, position i; the GQA group packed, as
 *                  the CPU packs it), and one chunk of whole kKeys-key tiles of the span those rows see (the
 *                  tile boundaries of the unsplit walk, chunk c of ns: tiles [c n / ns, (c + 1) n / ns)). Each
 *                  tile: key/value rows -> shared memory as fp32; scores with one key per lane and kRows / 4 rows
 *                  per warp; online softmax (fp32, expf) per row; O += P V with each thread owning head_dim /
 *                  128 columns of all rows. ns == 1 writes o and lse directly; ns > 1 writes a normalized fp32
 *                  partial O and its LSE per (split, row) into the workspace.
 *   combine_kernel ns > 1: one warp per (batch, head, position) row merges the ns partials by LSE (weights
 *                  exp(lse_s - max), the formula of fk_attn_merge) into o and lse.
 * A row that sees no key gives o = 0 and lse = -inf, as on the CPU.
 *
 * Device-resident indices: cache_seqlens, cache_batch_idx and block_table stay on the GPU; the host never reads
 * them (no sync). As for cu_seqlens in the attention forward (attn_fwd_impl.cuh, seq_info), bad values never
 * cause an out-of-bounds access: a sequence whose cache_seqlens[b] is negative or leaves no room for the new
 * rows, or whose cache_batch_idx[b] is outside [0, k_cache.shape[0]), is treated as having no keys (o = 0,
 * lse = -inf, nothing appended); a key whose block_table entry is outside [0, num_blocks) is skipped (not read,
 * not written). Only block_table entries of keys < seqlen_k(b) are read.
 *
 * Tile sizes are not tuned (nothing was measured yet): kKeys = 32 is one key per lane of the score phase;
 * kRows = 16 covers a GQA group of 8 with two query positions, or MHA with 16 positions, in one block.
 */
#include "../core/attn_kvcache_internal.h"
#include "common.cuh"
#include "ops_common.cuh"

#include <math.h>

using namespace fk_ops;

namespace {

constexpr int kThreads   = 128; // 4 warps
constexpr int kWarps     = kThreads / 32;
constexpr int kRows      = 16;  // query rows per block, kRows / kWarps per warp (rows w, w + 4, ...)
constexpr int kRowsWarp  = kRows / kWarps;
constexpr int kKeys      = 32;  // keys per tile: one per lane in the score phase
constexpr int kMaxSplits = 128; // as the CPU (KV_MAX_SPLITS)
constexpr int kMaxDim    = 256;

__device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
__device__ __forceinline__ int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

struct KvParams {
    const void *q, *k_new, *v_new;
    void       *o, *k, *v; // k, v: the caches (read, and written by the append)
    float      *lse;
    int64_t     q_bs, q_rs, q_hs, o_bs, o_rs, o_hs, lse_bs, lse_hs, lse_rs;
    int64_t     k_bs, k_rs, k_hs, v_bs, v_rs, v_hs; // cache: [entry or block, row, head]
    int64_t     kn_bs, kn_rs, kn_hs, vn_bs, vn_rs, vn_hs;
    const int32_t *cache_seqlens, *batch_idx, *block_table;
    int64_t        bt_bs, page, capacity, entries, snew;
    const float   *alibi;
    int64_t        alibi_bs;
    float          scale, softcap, softcap_inv;
    int64_t        window_left, window_right;
    int            batch, sq, hq, hkv, G, D, R; // R = G * sq query rows per kv head
    int            nrb, ns;                     // row blocks per kv head, splits
    int64_t        rows;                        // batch * hq * sq
    float         *part_o, *part_lse;           // ns > 1: [ns, rows, D] and [ns, rows]
    bool           vec;                         // cache rows 16-byte aligned (pointers, strides, D)
    int            es;                          // bytes per element
    int64_t        units;                       // append: copy units (of the kernel's U) per row
};

// --- indices on the device -------------------------------------------------------------------------------

// Keys of sequence b (cache_seqlens[b] + seqlen_new), and its cache entry (contiguous cache); 0 keys when the
// values would address rows outside the cache.
__device__ __forceinline__ int64_t seq_keys(const KvParams &p, int b, int64_t &entry) {
    const int64_t cs = p.cache_seqlens[b];
    bool          ok = cs >= 0 && cs + p.snew <= p.capacity;
    entry            = b;
    if (p.batch_idx) {
        entry = p.batch_idx[b];
        ok    = ok && entry >= 0 && entry < p.entries;
    }
    return ok ? cs + p.snew : 0;
}

// Element offset of row j (< seqlen_k(b) <= capacity) of sequence b, head 0, in a cache with entry/block
// stride bs and row stride rs (fk_attn_kv_row); -1 for a block id outside [0, num_blocks).
__device__ __forceinline__ int64_t key_row(const KvParams &p, int b, int64_t entry, int64_t j, int64_t bs,
                                           int64_t rs) {
    if (p.block_table) {
        const int64_t blk = p.block_table[b * p.bt_bs + j / p.page];
        if (blk < 0 || blk >= p.entries) return -1;
        return blk * bs + (j % p.page) * rs;
    }
    return entry * bs + j * rs;
}

// --- append ----------------------------------------------------------------------------------------------

// U: one copy unit (uint4 = 16 bytes when every row is aligned, else one element's bits), p.units per row.
template <typename U> __global__ void __launch_bounds__(256) append_kernel(KvParams p) {
    const int64_t units = p.units, es = p.es;
    const int64_t total = (int64_t)p.batch * p.snew * p.hkv * units;
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += stride) {
        const int64_t c = t % units, row = t / units, h = row % p.hkv, bi = row / p.hkv;
        const int64_t i = bi % p.snew;
        const int     b = (int)(bi / p.snew);
        int64_t       entry;
        const int64_t sk = seq_keys(p, b, entry);
        if (sk == 0) continue; // a bad cache_seqlens / cache_batch_idx: nothing is written
        const int64_t j = sk - p.snew + i, ko = key_row(p, b, entry, j, p.k_bs, p.k_rs);
        if (ko < 0) continue;
        const int64_t vo = key_row(p, b, entry, j, p.v_bs, p.v_rs);
        U            *kd = (U *)((char *)p.k + (ko + h * p.k_hs) * es) + c;
        U            *vd = (U *)((char *)p.v + (vo + h * p.v_hs) * es) + c;
        *kd = ((const U *)((const char *)p.k_new + (b * p.kn_bs + i * p.kn_rs + h * p.kn_hs) * es))[c];
        *vd = ((const U *)((const char *)p.v_new + (b * p.vn_bs + i * p.vn_rs + h * p.vn_hs) * es))[c];
    }
}

// --- split-KV attention ----------------------------------------------------------------------------------

// Row stride of the key tile in shared memory: odd, so the 32 lanes (one key each) hit 32 banks.
__host__ __device__ __forceinline__ int key_ld(int D) { return D | 1; }

// Dynamic shared memory of split_kernel, in the order the kernel carves it.
__host__ __device__ __forceinline__ size_t split_smem_bytes(int D) {
    return sizeof(int64_t) * (2 * kKeys + 3 * kRows) +
           sizeof(float) * (4 * kRows + kRows * D + kKeys * key_ld(D) + kKeys * D + kRows * kKeys);
}

// Key rows at element offsets offs[0..kKeys) (-1: absent, zeros) of a cache -> dst [kKeys][ld], as fp32.
template <typename T>
__device__ __forceinline__ void load_tile(const void *base, const int64_t *offs, float *dst, int ld, int D, bool vec) {
    const T *src = static_cast<const T *>(base);
    if (vec) {
        constexpr int N   = kVec<T>;
        const int     per = D / N;
        for (int x = threadIdx.x; x < kKeys * per; x += kThreads) {
            const int     j = x / per, c = (x % per) * N;
            const int64_t off = offs[j];
            float         f[N];
            if (off >= 0) unpack<T, N>(load_pack<T, N>(src + off + c), f);
            else {
#pragma unroll
                for (int e = 0; e < N; e++) f[e] = 0.f;
            }
#pragma unroll
            for (int e = 0; e < N; e++) dst[j * ld + c + e] = f[e];
        }
    } else {
        for (int x = threadIdx.x; x < kKeys * D; x += kThreads) {
            const int     j = x / D, d = x % D;
            const int64_t off = offs[j];
            dst[j * ld + d] = off >= 0 ? Dt<T>::to_f(src[off + d]) : 0.f;
        }
    }
}

// KD: head_dim columns per thread / kThreads (D <= 128 KD = 1, else 2). Launch bounds (128, 4): 128 registers,
// no spill for any instance on sm_80 and sm_90 (ptxas -v); without the minimum ptxas chose 96 and spilled.
template <typename T, int KD> __global__ void __launch_bounds__(kThreads, 4) split_kernel(KvParams p) {
    extern __shared__ __align__(16) unsigned char smem[];
    const int D = p.D, LD = key_ld(D);
    int64_t  *s_koff = reinterpret_cast<int64_t *>(smem), *s_voff = s_koff + kKeys; // tile's key rows (-1: none)
    int64_t  *s_lo = s_voff + kKeys, *s_hi = s_lo + kRows, *s_diag = s_hi + kRows;  // per row: visible [lo, hi)
    float    *s_slope = reinterpret_cast<float *>(s_diag + kRows), *s_alpha = s_slope + kRows;
    float    *s_m = s_alpha + kRows, *s_l = s_m + kRows;
    float    *s_q = s_l + kRows;        // [kRows][D], times the softmax scale
    float    *s_k = s_q + kRows * D;    // [kKeys][LD]
    float    *s_v = s_k + kKeys * LD;   // [kKeys][D]
    float    *s_p = s_v + kKeys * D;    // [kRows][kKeys] probabilities of the tile

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int split = blockIdx.x, b = blockIdx.z, hk = blockIdx.y / p.nrb, r0 = (blockIdx.y % p.nrb) * kRows;
    const int nrows = p.R - r0 < kRows ? p.R - r0 : kRows;
    int64_t   entry;
    const int64_t sk = seq_keys(p, b, entry);

    // Rows: visible keys [lo, hi) bottom-right aligned (fk_attn_key_range); rows past nrows see nothing.
    if (tid < kRows) {
        int64_t lo = 0, hi = 0, diag = 0;
        float   slope = 0.f;
        if (tid < nrows) {
            const int r = r0 + tid, g = r / p.sq, i = r % p.sq;
            diag = i + sk - p.sq;
            hi   = sk;
            if (p.window_left >= 0 && diag - p.window_left > lo) lo = diag - p.window_left;
            if (p.window_right >= 0 && diag + p.window_right + 1 < hi) hi = diag + p.window_right + 1;
            if (p.alibi) slope = p.alibi[b * p.alibi_bs + hk * p.G + g];
        }
        s_lo[tid] = lo, s_hi[tid] = hi, s_diag[tid] = diag, s_slope[tid] = slope;
    }
    // q is (B, Sq, Hq, D): this block's rows, one head after the other, pre-multiplied by the scale.
    for (int x = tid; x < kRows * D; x += kThreads) {
        const int rr = x / D, d = x % D;
        float     val = 0.f;
        if (rr < nrows) {
            const int r = r0 + rr, g = r / p.sq, i = r % p.sq;
            val = Dt<T>::to_f(static_cast<const T *>(p.q)[b * p.q_bs + i * p.q_rs + (hk * p.G + g) * p.q_hs + d]) *
                  p.scale;
        }
        s_q[x] = val;
    }
    __syncthreads();

    // The keys some row sees, then this split's chunk of it in whole tiles.
    int64_t lo = 0, hi = 0;
    bool    any = false;
    for (int rr = 0; rr < nrows; rr++)
        if (s_lo[rr] < s_hi[rr]) {
            lo  = any ? min64(lo, s_lo[rr]) : s_lo[rr];
            hi  = any ? max64(hi, s_hi[rr]) : s_hi[rr];
            any = true;
        }
    const int64_t ntiles = (hi - lo + kKeys - 1) / kKeys;
    const int64_t c_lo = lo + split * ntiles / p.ns * kKeys, c_hi = min64(lo + (split + 1) * ntiles / p.ns * kKeys, hi);

    float m[kRowsWarp], l[kRowsWarp], acc[kRows][KD];
#pragma unroll
    for (int k = 0; k < kRowsWarp; k++) m[k] = -INFINITY, l[k] = 0.f;
#pragma unroll
    for (int rr = 0; rr < kRows; rr++)
#pragma unroll
        for (int kd = 0; kd < KD; kd++) acc[rr][kd] = 0.f;

    for (int64_t j0 = c_lo; j0 < c_hi; j0 += kKeys) {
        const int nk = (int)min64(kKeys, c_hi - j0);
        // Where the tile's keys live (the previous tile's readers of s_koff passed the barrier after the load).
        if (tid < kKeys) {
            int64_t ko = -1, vo = -1;
            if (tid < nk && (ko = key_row(p, b, entry, j0 + tid, p.k_bs, p.k_rs)) >= 0) {
                vo = key_row(p, b, entry, j0 + tid, p.v_bs, p.v_rs) + hk * p.v_hs;
                ko += hk * p.k_hs;
            }
            s_koff[tid] = ko, s_voff[tid] = vo;
        }
        __syncthreads(); // also: every thread is done with the previous tile's s_k, s_v, s_p
        load_tile<T>(p.k, s_koff, s_k, LD, D, p.vec);
        load_tile<T>(p.v, s_voff, s_v, D, D, p.vec);
        __syncthreads();

        // S = (scale Q) K^T: lane = key, warp w = rows w, w + 4, ... (a warp whose first row is past nrows has
        // only empty rows and skips the products).
        float s[kRowsWarp];
#pragma unroll
        for (int k = 0; k < kRowsWarp; k++) s[k] = 0.f;
        if (warp < nrows) {
            const float *kr = s_k + lane * LD, *qr = s_q + warp * D;
            for (int d = 0; d < D; d++) {
                const float kv = kr[d];
#pragma unroll
                for (int k = 0; k < kRowsWarp; k++) s[k] = fmaf(qr[k * kWarps * D + d], kv, s[k]);
            }
        }
        const int64_t j      = j0 + lane;
        const bool    key_ok = lane < nk && s_koff[lane] >= 0;
#pragma unroll
        for (int k = 0; k < kRowsWarp; k++) {
            const int rr  = warp + kWarps * k;
            const bool vis = key_ok && j >= s_lo[rr] && j < s_hi[rr];
            float      x   = s[k];
            // As the CPU's score_row: softcap, then ALiBi, then the mask.
            if (p.softcap > 0.f) x = p.softcap * tanhf(x * p.softcap_inv);
            const int64_t dist = s_diag[rr] - j;
            x -= s_slope[rr] * (float)(dist < 0 ? -dist : dist);
            x = vis ? x : -INFINITY;
            // Online softmax: new running max, rescale what was accumulated under the old one.
            const float mnew = fmaxf(m[k], fk_cuda::warp_max(x));
            float       pr = 0.f, alpha = 1.f;
            if (mnew != -INFINITY) { // warp-uniform; -inf: no visible key yet, P is zero
                pr    = vis ? expf(x - mnew) : 0.f;
                alpha = expf(m[k] - mnew); // 0 when m was -inf (the accumulator is still 0)
                l[k]  = l[k] * alpha + fk_cuda::warp_sum(pr);
                m[k]  = mnew;
            }
            s_p[rr * kKeys + lane] = pr;
            if (lane == 0) s_alpha[rr] = alpha;
        }
        __syncthreads();

        // O = alpha O + P V: thread tid owns columns tid, tid + 128 of every row.
#pragma unroll
        for (int rr = 0; rr < kRows; rr++)
            if (rr < nrows) {
                const float a = s_alpha[rr];
#pragma unroll
                for (int kd = 0; kd < KD; kd++) acc[rr][kd] *= a;
            }
        for (int jj = 0; jj < nk; jj++) {
            float vv[KD];
#pragma unroll
            for (int kd = 0; kd < KD; kd++) {
                const int d = tid + kd * kThreads;
                vv[kd]      = d < D ? s_v[jj * D + d] : 0.f;
            }
#pragma unroll
            for (int rr = 0; rr < kRows; rr++)
                if (rr < nrows) {
                    const float pj = s_p[rr * kKeys + jj];
#pragma unroll
                    for (int kd = 0; kd < KD; kd++) acc[rr][kd] = fmaf(pj, vv[kd], acc[rr][kd]);
                }
        }
    }

    // Epilogue: O = acc / l, lse = m + log l; o = 0, lse = -inf for a row that saw no key (of this chunk).
    if (lane == 0)
#pragma unroll
        for (int k = 0; k < kRowsWarp; k++) s_m[warp + kWarps * k] = m[k], s_l[warp + kWarps * k] = l[k];
    __syncthreads();
#pragma unroll
    for (int rr = 0; rr < kRows; rr++) {
        if (rr >= nrows) break;
        const int     r = r0 + rr, g = r / p.sq, i = r % p.sq, h = hk * p.G + g;
        const float   L = s_l[rr];
        const bool    seen = L > 0.f;
        const float   inv  = seen ? 1.f / L : 0.f;
        const float   lse  = seen ? s_m[rr] + logf(L) : -INFINITY;
        if (p.ns == 1) {
            T *orow = static_cast<T *>(p.o) + b * p.o_bs + i * p.o_rs + h * p.o_hs;
#pragma unroll
            for (int kd = 0; kd < KD; kd++) {
                const int d = tid + kd * kThreads;
                if (d < D) orow[d] = Dt<T>::from_f(acc[rr][kd] * inv);
            }
            if (p.lse && tid == 0) p.lse[b * p.lse_bs + h * p.lse_hs + i * p.lse_rs] = lse;
        } else {
            const int64_t row = ((int64_t)b * p.hq + h) * p.sq + i, slot = (int64_t)split * p.rows + row;
            if (seen) // a -inf partial is never read by the combine
#pragma unroll
                for (int kd = 0; kd < KD; kd++) {
                    const int d = tid + kd * kThreads;
                    if (d < D) p.part_o[slot * D + d] = acc[rr][kd] * inv;
                }
            if (tid == 0) p.part_lse[slot] = lse;
        }
    }
}

// --- combine ---------------------------------------------------------------------------------------------

// One warp per (b, h, i) row: weights w_s = exp(lse_s - max) of the ns partials (0 for -inf: never read), then
// o = sum w_s o_s / sum w_s and lse = max + log(sum w_s). Every partial -inf: o = 0, lse = -inf.
constexpr size_t kCombineSmem = sizeof(float) * kWarps * kMaxSplits;

template <typename T> __global__ void __launch_bounds__(kThreads) combine_kernel(KvParams p) {
    extern __shared__ __align__(16) unsigned char smem[]; // kCombineSmem: the weights, [kWarps][kMaxSplits]
    float (*s_w)[kMaxSplits] = reinterpret_cast<float (*)[kMaxSplits]>(smem);
    const int     lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t step = (int64_t)gridDim.x * kWarps;
    for (int64_t row = (int64_t)blockIdx.x * kWarps + warp; row < p.rows; row += step) {
        const float *pl = p.part_lse + row;
        float        mx = -INFINITY;
        for (int s = lane; s < p.ns; s += 32) mx = fmaxf(mx, pl[(int64_t)s * p.rows]);
        mx        = fk_cuda::warp_max(mx);
        float sum = 0.f;
        for (int s = lane; s < p.ns; s += 32) {
            const float ls = pl[(int64_t)s * p.rows];
            const float w  = (mx == -INFINITY || ls == -INFINITY) ? 0.f : expf(ls - mx);
            s_w[warp][s]   = w;
            sum += w;
        }
        sum = fk_cuda::warp_sum(sum);
        __syncwarp();
        const float   inv = sum > 0.f ? 1.f / sum : 0.f;
        const int64_t i = row % p.sq, h = (row / p.sq) % p.hq, b = row / ((int64_t)p.sq * p.hq);
        T            *orow = static_cast<T *>(p.o) + b * p.o_bs + i * p.o_rs + h * p.o_hs;
        for (int d = lane; d < p.D; d += 32) {
            float x = 0.f;
            for (int s = 0; s < p.ns; s++) {
                const float w = s_w[warp][s];
                if (w > 0.f) x = fmaf(w, p.part_o[((int64_t)s * p.rows + row) * p.D + d], x);
            }
            orow[d] = Dt<T>::from_f(x * inv);
        }
        if (p.lse && lane == 0) p.lse[b * p.lse_bs + h * p.lse_hs + i * p.lse_rs] = sum > 0.f ? mx + logf(sum) : -INFINITY;
        __syncwarp(); // s_w is rewritten for the warp's next row
    }
}

// --- host side -------------------------------------------------------------------------------------------

// What the size query and the run share: splits, grid, shared memory, workspace. Shapes only.
struct Plan {
    int     ns, nrb;
    size_t  smem;
    size_t  ws, part_lse_off; // workspace bytes (256 bytes of alignment slack included); offset of part_lse
    int64_t rows;
};

int64_t round_up(int64_t x, int64_t a) { return (x + a - 1) / a * a; }

fk_status make_plan(const struct fk_context *ctx, const fk_attn_kv_problem *kp, Plan *pl) {
    const char            *op = "attn_fwd_kvcache";
    const fk_attn_problem *p  = &kp->attn;
    const int64_t G = p->nheads_q / p->nheads_kv, R = G * p->seqlen_q, nrb = ceil_div(R, kRows);
    if (p->batch > 65535 || p->nheads_kv * nrb > 65535)
        return fk_error(FK_STATUS_NOT_SUPPORTED_FEATURE,
                        "%s: batch %lld or nheads_kv x ceil(nheads_q / nheads_kv x seqlen_q / %d) = %lld above 65535 "
                        "is not supported on CUDA (grid limit)", op, (long long)p->batch, kRows,
                        (long long)(p->nheads_kv * nrb));
    // Splits: an explicit num_splits is honoured up to kMaxSplits and the capacity's key tiles. The backend's
    // choice (not measured yet): enough blocks for two per SM, at least 256 keys of capacity per split.
    const int64_t tiles = ceil_div(kp->kv.capacity, kKeys), base = p->batch * p->nheads_kv * nrb;
    int64_t       ns    = kp->kv.num_splits;
    if (ns == 0) {
        ns                 = ceil_div(2 * (int64_t)(ctx->sm_count > 0 ? ctx->sm_count : 1), base);
        const int64_t most = ceil_div(kp->kv.capacity, 256);
        if (ns > most) ns = most;
    }
    if (ns > tiles) ns = tiles;
    if (ns > kMaxSplits) ns = kMaxSplits;
    if (ns < 1) ns = 1;
    pl->ns   = (int)ns;
    pl->nrb  = (int)nrb;
    pl->smem = split_smem_bytes((int)p->head_dim);
    pl->rows = p->batch * p->nheads_q * p->seqlen_q;
    pl->ws = pl->part_lse_off = 0;
    if (ns > 1) {
        int64_t po, pls;
        if (!fk_mul_i64(ns * pl->rows, p->head_dim * 4, &po) || !fk_mul_i64(ns * pl->rows, 4, &pls) ||
            po > INT64_MAX / 2 || pls > INT64_MAX / 4)
            return fk_error(FK_STATUS_BAD_PARAM_OVERFLOW, "%s: the split-KV workspace size overflows 64 bits", op);
        pl->part_lse_off = (size_t)round_up(po, 256);
        pl->ws           = 256 + pl->part_lse_off + (size_t)pls;
    }
    return FK_STATUS_SUCCESS;
}

KvParams make_params(const fk_attn_kv_problem *kp, const Plan &pl, void *ws) {
    const fk_attn_problem *p  = &kp->attn;
    const fk_attn_kv      *kv = &kp->kv;
    const size_t           es = fk_dtype_size(p->dtype);
    KvParams               f;
    f.q = p->q, f.o = p->o, f.lse = (float *)p->lse;
    f.k = kv->k_cache, f.v = kv->v_cache, f.k_new = kv->k_new, f.v_new = kv->v_new;
    f.q_bs = p->q_bs, f.q_rs = p->q_rs, f.q_hs = p->q_hs, f.o_bs = p->o_bs, f.o_rs = p->o_rs, f.o_hs = p->o_hs;
    f.lse_bs = p->lse_bs, f.lse_hs = p->lse_hs, f.lse_rs = p->lse_rs;
    f.k_bs = p->k_bs, f.k_rs = p->k_rs, f.k_hs = p->k_hs, f.v_bs = p->v_bs, f.v_rs = p->v_rs, f.v_hs = p->v_hs;
    f.kn_bs = kv->kn_bs, f.kn_rs = kv->kn_rs, f.kn_hs = kv->kn_hs;
    f.vn_bs = kv->vn_bs, f.vn_rs = kv->vn_rs, f.vn_hs = kv->vn_hs;
    f.cache_seqlens = kv->cache_seqlens, f.batch_idx = kv->cache_batch_idx, f.block_table = kv->block_table;
    f.bt_bs = kv->bt_bs, f.page = kv->page_size, f.capacity = kv->capacity, f.entries = kv->entries;
    f.snew  = kv->seqlen_new;
    f.alibi = p->alibi, f.alibi_bs = p->alibi_bs;
    f.scale       = p->scale;
    f.softcap     = p->softcap > 0.f ? p->softcap : 0.f;
    f.softcap_inv = f.softcap > 0.f ? 1.f / f.softcap : 0.f;
    // Windows beyond any key distance (cache_seqlens is int32) are cut to 2^40, so diag - window never overflows.
    const int64_t wmax = (int64_t)1 << 40;
    f.window_left  = p->window_left > wmax ? wmax : p->window_left;
    f.window_right = p->window_right > wmax ? wmax : p->window_right;
    f.batch = (int)p->batch, f.sq = (int)p->seqlen_q, f.hq = (int)p->nheads_q, f.hkv = (int)p->nheads_kv;
    f.G = (int)(p->nheads_q / p->nheads_kv), f.D = (int)p->head_dim, f.R = f.G * f.sq;
    f.nrb = pl.nrb, f.ns = pl.ns, f.rows = pl.rows;
    char *base = ws ? (char *)(((uintptr_t)ws + 255) / 256 * 256) : NULL;
    f.part_o   = pl.ns > 1 ? (float *)base : NULL;
    f.part_lse = pl.ns > 1 ? (float *)(base + pl.part_lse_off) : NULL;
    f.es    = (int)es;
    f.units = 0;
    f.vec = aligned16(p->k, es, p->k_bs, p->k_rs, p->k_hs) && aligned16(p->v, es, p->v_bs, p->v_rs, p->v_hs) &&
            p->head_dim % (int64_t)(16 / es) == 0;
    return f;
}

int grid_for(int64_t work, int threads) {
    const int64_t g = ceil_div(work, threads);
    return g < 1 ? 1 : g > 65535 * 16 ? 65535 * 16 : (int)g; // the kernels are grid-stride loops
}

// Every kernel takes the one KvParams; launched through cudaLaunchKernel (its return is the launch's status), so
// the host replay dev/cuda/kvcache_replay.cc can run this file's host code and kernels on the CPU.
cudaError_t launch(void (*kernel)(KvParams), dim3 grid, int threads, size_t smem, const KvParams &f, cudaStream_t st) {
    void *args[] = {(void *)&f};
    return cudaLaunchKernel((const void *)kernel, grid, dim3(threads), args, smem, st);
}

template <typename U> cudaError_t launch_append(KvParams f, cudaStream_t st) {
    f.units = (int64_t)f.D * f.es / (int64_t)sizeof(U);
    return launch(append_kernel<U>, dim3(grid_for((int64_t)f.batch * f.snew * f.hkv * f.units, 256)), 256, 0, f, st);
}

template <typename T, int KD> cudaError_t launch_split(const KvParams &f, const Plan &pl, cudaStream_t st) {
    if (pl.smem > 48 * 1024) {
        const cudaError_t e = cudaFuncSetAttribute((const void *)split_kernel<T, KD>,
                                                   cudaFuncAttributeMaxDynamicSharedMemorySize, (int)pl.smem);
        if (e != cudaSuccess) return e;
    }
    return launch(split_kernel<T, KD>, dim3(pl.ns, f.hkv * pl.nrb, f.batch), kThreads, pl.smem, f, st);
}

template <typename T> fk_status run_typed(const char *op, const KvParams &f, const Plan &pl, cudaStream_t st) {
    const cudaError_t e = f.D <= kThreads ? launch_split<T, 1>(f, pl, st) : launch_split<T, 2>(f, pl, st);
    FK_TRY(launch_result(op, "split_kernel", e));
    if (pl.ns > 1)
        FK_TRY(launch_result(op, "combine_kernel",
                             launch(combine_kernel<T>, dim3(grid_for(pl.rows, kWarps)), kThreads, kCombineSmem, f, st)));
    return FK_STATUS_SUCCESS;
}

} // namespace

extern "C" fk_status fk_cuda_attn_kvcache_select(const struct fk_context *ctx, const fk_attn_kv_problem *p,
                                                 size_t *ws_bytes) {
    const char *op = "attn_fwd_kvcache";
    *ws_bytes      = 0;
    if (ctx->cc_major < 8)
        return fk_error(FK_STATUS_NOT_SUPPORTED_ARCH, "%s: the CUDA kernels need sm_80 or newer; cuda:%d is sm_%d%d", op,
                        ctx->device.index, ctx->cc_major, ctx->cc_minor);
    const fk_dtype dt = p->attn.dtype;
    if (dt != FK_DTYPE_F32 && dt != FK_DTYPE_F16 && dt != FK_DTYPE_BF16)
        return fk_error(FK_STATUS_NOT_SUPPORTED_DTYPE, "%s: dtype %s is not supported on CUDA (f32, f16, bf16 are)", op,
                        fk_dtype_name(dt));
    if (p->attn.head_dim < 1 || p->attn.head_dim > kMaxDim)
        return fk_error(FK_STATUS_NOT_SUPPORTED_HEAD_DIM, "%s: head_dim %lld is not supported on CUDA (1..%d)", op,
                        (long long)p->attn.head_dim, kMaxDim);
    Plan pl;
    FK_TRY(make_plan(ctx, p, &pl));
    if (pl.smem > (size_t)ctx->max_smem_optin)
        return fk_error(FK_STATUS_NOT_SUPPORTED_HEAD_DIM,
                        "%s: head_dim %lld needs %zu bytes of shared memory per block; cuda:%d allows %d", op,
                        (long long)p->attn.head_dim, pl.smem, ctx->device.index, ctx->max_smem_optin);
    *ws_bytes = pl.ws;
    return FK_STATUS_SUCCESS;
}

extern "C" fk_status fk_cuda_attn_fwd_kvcache(const struct fk_context *ctx, const fk_attn_kv_problem *p, void *ws,
                                              size_t ws_bytes, void *stream) {
    const char *op   = "attn_fwd_kvcache";
    size_t      need = 0;
    FK_TRY(fk_cuda_attn_kvcache_select(ctx, p, &need));
    if (ws_bytes < need)
        return fk_error(FK_STATUS_INTERNAL, "%s: CUDA backend got a workspace smaller than it asked for", op);
    Plan pl;
    FK_TRY(make_plan(ctx, p, &pl));
    DeviceScope dev(ctx->device.index);
    FK_TRY(scope_status(op, dev, ctx->device.index));
    const KvParams     f  = make_params(p, pl, ws);
    const cudaStream_t st = (cudaStream_t)stream;
    const fk_dtype     dt = p->attn.dtype;
    const int          es = f.es;

    // The new rows first: the attention below reads them from the cache (same stream, so in order).
    if (f.snew > 0) {
        const fk_attn_kv *kv  = &p->kv;
        const bool        vec = f.vec && aligned16(kv->k_new, es, kv->kn_bs, kv->kn_rs, kv->kn_hs) &&
                         aligned16(kv->v_new, es, kv->vn_bs, kv->vn_rs, kv->vn_hs);
        const cudaError_t e = vec ? launch_append<uint4>(f, st)
                                  : es == 2 ? launch_append<uint16_t>(f, st) : launch_append<uint32_t>(f, st);
        FK_TRY(launch_result(op, "append_kernel", e));
    }
    if (dt == FK_DTYPE_F32) return run_typed<float>(op, f, pl, st);
    if (dt == FK_DTYPE_F16) return run_typed<__half>(op, f, pl, st);
    return run_typed<__nv_bfloat16>(op, f, pl, st);
}
