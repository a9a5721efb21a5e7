/*
 * rmsnorm.cu — CUDA RMSNorm forward (with the fused residual add and the weight offset) and backward
 * (semantics and precision: src/core/ops_internal.h, fk_rmsnorm_problem).
 *
 * Two kernel families; fk_rms_rows_pick (src/core/ops_select.h) chooses, make_plan() below applies it.
 *
 * Row groups (vectorized rows of up to 1024 16-byte vectors: bf16 hidden <= 8192): rms_{fwd,bwd}_rows_kernel.
 * A group of W warps takes a row, threads / (32 W) groups a block, a persistent grid (SMs x resident blocks);
 * thread gt of a group holds vectors gt, gt + 32 W, ... (VPL of them) in registers, so each row is read once
 * and written once. The weight (offset added, fp32) is staged once per block in shared memory; the row's sum
 * (forward: sum of squares; backward: sum_j g_j h_j) is reduced with shuffles and, for W > 1, one named
 * barrier of the group: no block-wide barrier per row. The backward keeps the dweight partial of the thread's
 * columns in VPL x N fp32 registers across all of its group's rows; at the end each group writes them as one
 * [hidden] fp32 row of the workspace ([G, ld], G = grid x groups; no shared-memory reduction, so no thread waits
 * for another), and rms_dweight_reduce_kernel adds the G rows per column in a fixed order: dweight is
 * bit-identical from run to run, and the inputs are never read a second time. Exact-fit rows (hidden =
 * VPL x 32 W x N) run an instance without tail code; a partial last vector is held apart by its one thread
 * (forward) or loaded element-wise (backward). Measured against the block-per-row kernels on an H200:
 * +8% to +97% (docs/PERF.md, "GPU: fused ops"). The backward's rule at 640 vectors (5120 bf16) takes the ring
 * form, rms_bwd_ring_kernel: the next row of h and dy in a cp.async ring in shared memory instead of registers,
 * which fits 2 blocks an SM there (+14-26%, docs/PERF.md, third session; it lost at the other widths, and the
 * forward through the same ring lost everywhere).
 *
 * Block per row (wider rows, and rows that are not 16-byte aligned: N = 1): rms_fwd_kernel keeps the row in
 * registers (VPT vectors a thread, one block a row); rms_bwd_kernel uses the same persistent grid and
 * workspace as above with the weight and the block's partial dweight row in shared memory. Rows beyond what
 * registers hold (more than 512 threads x 8 (forward) / x 4 (backward) vectors) take the "loop" kernels: the
 * same math with the row re-read from global memory (forward: h from residual_out or x; backward: h and dy
 * twice, the partial dweight row kept in the workspace instead of registers).
 */
#include "../core/ops_select.h"
#include "ops_common.cuh"

#include <atomic>
#include <chrono>
#include <type_traits>

using namespace fk_ops;

namespace {

struct RmsArgs {
    const void *x, *residual, *weight, *dy, *dres;
    void       *residual_out, *y, *dx, *dweight;
    float      *rstd;
    float      *partial; // backward workspace [G, ld]
    int64_t     x_rs, residual_rs, residual_out_rs, y_rs, dy_rs, dres_rs, dx_rs;
    int64_t     rows, hidden, nvec, ld;
    fk_dtype    wdt, dwdt;
    float       eps, off;
    bool        wvec; // weight 16-byte aligned
    int         stages; // ring kernels: rows in the shared-memory ring (2..8)
    // Backward, rms_bwd_vec1_kernel's DYN instances: the group's first dyn_k + 4 rows static, the rest handed out
    // at run time from the counter of the workspace's header (DynHeader; dyn_tag: this launch's, for a claim).
    int                 dyn_k;
    unsigned long long  dyn_tag;
    struct DynHeader   *dyn;
};

// The backward workspace's first 256 bytes (the partial dweight rows follow): the DYN kernels' run-time row
// counter and its state. The dweight sum leaves {count 0, state kDynReady} for the next launch (stream order,
// also in a CUDA graph), whose group leaders then only read the state at their start. Any other state (a new
// workspace: any bytes) is claimed by the first leader to reach its dynamic rows: state = tag | 1 while it
// zeroes the count, then tag (this launch's: even, unique in the process); the others wait for the tag. No
// ticket is taken before the state is known, so none comes from a count about to be zeroed.
struct DynHeader {
    unsigned long long state;
    unsigned int       count;
};
constexpr unsigned long long kDynReady = 0x5eed5eed5eed5eedull; // odd: no tag

// Valid elements of vector idx (N elements each) of a row of `hidden`: N, fewer for the tail, <= 0 past it.
template <int N> __device__ __forceinline__ int valid(int64_t idx, int64_t hidden) {
    const int64_t left = hidden - idx * N;
    return left >= N ? N : (int)left;
}

// One row's operands (forward), as typed pointers to its first element.
template <typename T> struct FwdRow {
    const T *x, *res;
    T       *rout, *y;
    __device__ __forceinline__ FwdRow(const RmsArgs &a, int64_t r)
        : x(static_cast<const T *>(a.x) + r * a.x_rs),
          res(a.residual ? static_cast<const T *>(a.residual) + r * a.residual_rs : nullptr),
          rout(a.residual ? static_cast<T *>(a.residual_out) + r * a.residual_out_rs : nullptr),
          y(static_cast<T *>(a.y) + r * a.y_rs) {}
};

// h = x + r, rounded to T as the unfused add stores it.
template <typename T, int N> __device__ __forceinline__ Pack<T, N> add_round(const Pack<T, N> &x, const Pack<T, N> &r) {
    float xf[N], rf[N];
    unpack<T, N>(x, xf);
    unpack<T, N>(r, rf);
#pragma unroll
    for (int k = 0; k < N; k++) xf[k] += rf[k];
    return pack<T, N>(xf);
}

// h = x (+ residual, rounded to T and stored to residual_out) for the n elements at column j, as a pack of T.
template <typename T, int N>
__device__ __forceinline__ Pack<T, N> load_h(const FwdRow<T> &row, int64_t j, int n) {
    Pack<T, N> h = load_pack_any<T, N>(row.x + j, n);
    if (row.res) {
        h = add_round<T, N>(h, load_pack_any<T, N>(row.res + j, n));
        store_pack_any<T, N>(row.rout + j, h, n);
    }
    return h;
}

template <typename T, int N> __device__ __forceinline__ float sumsq(const Pack<T, N> &h) {
    float f[N], s = 0.f;
    unpack<T, N>(h, f);
#pragma unroll
    for (int k = 0; k < N; k++) s += f[k] * f[k];
    return s;
}

// y = h * rstd * (offset + w) for the n elements at column j.
template <typename T, int N>
__device__ __forceinline__ void store_y(const RmsArgs &a, const FwdRow<T> &row, int64_t j, int n,
                                        const Pack<T, N> &h, float rstd) {
    float hf[N], w[N], y[N];
    unpack<T, N>(h, hf);
    load_any_dtype<N>(a.weight, a.wdt, j, n, a.wvec, w);
#pragma unroll
    for (int k = 0; k < N; k++) y[k] = hf[k] * rstd * (a.off + w[k]);
    store_pack_any<T, N>(row.y + j, pack<T, N>(y), n);
}

// --- forward ---------------------------------------------------------------------------------------------

template <typename T, int N, int VPT> __global__ void __launch_bounds__(512) rms_fwd_kernel(const RmsArgs a) {
    __shared__ float red[32];
    const int hidden = (int)a.hidden; // register-resident rows are at most 512 x 8 x 8 elements
    for (int64_t r = blockIdx.x; r < a.rows; r += gridDim.x) {
        const FwdRow<T> row(a, r);
        Pack<T, N>      h[VPT];
        float           ss = 0.f;
#pragma unroll
        for (int v = 0; v < VPT; v++) {
            const int j = (threadIdx.x + v * blockDim.x) * N, n = min(hidden - j, N);
            if (n > 0) {
                h[v] = load_h<T, N>(row, j, n);
                ss += sumsq<T, N>(h[v]);
            }
        }
        ss               = block_sum(ss, red);
        const float rstd = 1.0f / sqrtf(ss / (float)hidden + a.eps);
        if (a.rstd && threadIdx.x == 0) a.rstd[r] = rstd;
#pragma unroll
        for (int v = 0; v < VPT; v++) {
            const int j = (threadIdx.x + v * blockDim.x) * N, n = min(hidden - j, N);
            if (n > 0) store_y<T, N>(a, row, j, n, h[v], rstd);
            asm volatile("" ::: "memory"); // the weight loads of one vector at a time (L1 hits)
        }
    }
}

// Any hidden size: the row is re-read from global memory (h from residual_out when the add is fused: the same
// thread wrote it, so program order makes it visible).
template <typename T, int N> __global__ void __launch_bounds__(512) rms_fwd_loop_kernel(const RmsArgs a) {
    __shared__ float red[32];
    for (int64_t r = blockIdx.x; r < a.rows; r += gridDim.x) {
        const FwdRow<T> row(a, r);
        float           ss = 0.f;
        for (int64_t idx = threadIdx.x; idx < a.nvec; idx += blockDim.x)
            ss += sumsq<T, N>(load_h<T, N>(row, idx * N, valid<N>(idx, a.hidden)));
        ss               = block_sum(ss, red);
        const float rstd = 1.0f / sqrtf(ss / (float)a.hidden + a.eps);
        if (a.rstd && threadIdx.x == 0) a.rstd[r] = rstd;
        const T *hrow = row.res ? row.rout : row.x;
        for (int64_t idx = threadIdx.x; idx < a.nvec; idx += blockDim.x) {
            const int n = valid<N>(idx, a.hidden);
            store_y<T, N>(a, row, idx * N, n, load_pack_any<T, N>(hrow + idx * N, n), rstd);
        }
    }
}

// --- backward --------------------------------------------------------------------------------------------

// Shared memory of the register-resident backward: the weight (offset added) and the block's partial dweight
// row, fp32, as two [nvec][N] arrays (vector idx's N columns at idx * N), read and written as 16-byte
// accesses. Each column belongs to one thread. Kept in registers instead they would cost 2 x VPT x N registers
// (bf16, VPT 4: spills at the 128-register cap); staging the weight also takes the run-time weight-dtype
// switch out of the row loop. Dense rows (N = 8: a quarter warp's float4 accesses fall 2-way on the banks)
// rather than padded ones: padding to 12 took 48 KB at hidden 4096 and would cap blocks per SM by shared
// memory, while shared bandwidth is far from the limit here.
template <int N> constexpr int smem_stride() { return N; }

template <int N> __device__ __forceinline__ void lds(const float *p, float (&f)[N]) {
    if constexpr (N % 4 == 0) {
#pragma unroll
        for (int k = 0; k < N; k += 4) {
            const float4 q = *reinterpret_cast<const float4 *>(p + k);
            f[k] = q.x, f[k + 1] = q.y, f[k + 2] = q.z, f[k + 3] = q.w;
        }
    } else {
#pragma unroll
        for (int k = 0; k < N; k++) f[k] = p[k];
    }
}
template <int N> __device__ __forceinline__ void sts(float *p, const float (&f)[N]) {
    if constexpr (N % 4 == 0) {
#pragma unroll
        for (int k = 0; k < N; k += 4) *reinterpret_cast<float4 *>(p + k) = make_float4(f[k], f[k + 1], f[k + 2], f[k + 3]);
    } else {
#pragma unroll
        for (int k = 0; k < N; k++) p[k] = f[k];
    }
}

template <typename T, int N, int VPT> __global__ void __launch_bounds__(512) rms_bwd_kernel(const RmsArgs a) {
    constexpr int S = smem_stride<N>();
    __shared__ float red[32];
    extern __shared__ float4 sm4[];
    const int hidden = (int)a.hidden, nvec = (int)a.nvec;
    float    *ws = reinterpret_cast<float *>(sm4), *dws = ws + S * nvec;
#pragma unroll
    for (int v = 0; v < VPT; v++) {
        const int idx = threadIdx.x + v * blockDim.x, n = min(hidden - idx * N, N);
        if (idx < nvec) {
            float w[N], z[N];
            load_any_dtype<N>(a.weight, a.wdt, (int64_t)idx * N, n, a.wvec, w);
#pragma unroll
            for (int k = 0; k < N; k++) w[k] += a.off, z[k] = 0.f;
            sts<N>(ws + idx * S, w);
            sts<N>(dws + idx * S, z);
        }
    }
    const float inv_h = 1.0f / (float)hidden;
    // VPT 1: a software pipeline over the block's rows: row r + G's h, dy and rstd are loaded before row r's
    // reduction, so they are in flight through the barriers and this row's dx stores. It costs no registers at
    // VPT 1 (64 either way); at VPT 2 it took 89 -> 114 registers, one block per SM fewer, so wider rows
    // load each row at the top of its iteration instead.
    constexpr bool PF = VPT == 1;
    auto load_row = [&](int64_t rr, Pack<T, N>(&h_)[VPT], Pack<T, N>(&d_)[VPT], float &rs_) {
        const T *hrow = static_cast<const T *>(a.x) + rr * a.x_rs, *dyrow = static_cast<const T *>(a.dy) + rr * a.dy_rs;
        rs_           = a.rstd[rr];
#pragma unroll
        for (int v = 0; v < VPT; v++) {
            const int j = (threadIdx.x + v * blockDim.x) * N, n = min(hidden - j, N);
            if (n > 0) h_[v] = load_pack_any<T, N>(hrow + j, n), d_[v] = load_pack_any<T, N>(dyrow + j, n);
        }
    };
    Pack<T, N> hp[VPT], dyp[VPT];
    float      rstd = 0.f;
    if (PF && (int64_t)blockIdx.x < a.rows) load_row(blockIdx.x, hp, dyp, rstd);
    for (int64_t r = blockIdx.x; r < a.rows; r += gridDim.x) {
        if (!PF) load_row(r, hp, dyp, rstd);
        float dot = 0.f;
#pragma unroll
        for (int v = 0; v < VPT; v++) {
            const int idx = threadIdx.x + v * blockDim.x;
            if (idx < nvec) {
                float h[N], d[N], w[N], dw[N];
                unpack<T, N>(hp[v], h);
                unpack<T, N>(dyp[v], d);
                lds<N>(ws + idx * S, w);
                lds<N>(dws + idx * S, dw);
#pragma unroll
                for (int k = 0; k < N; k++) {
                    dw[k] += d[k] * h[k] * rstd;
                    dot += d[k] * w[k] * h[k];
                }
                sts<N>(dws + idx * S, dw);
            }
            // One vector's shared-memory traffic at a time: hoisting all of them costs 2 x VPT x N registers.
            asm volatile("" ::: "memory");
        }
        Pack<T, N>    hn[VPT], dn[VPT];
        float         rsn = 0.f;
        const int64_t rn  = r + gridDim.x;
        if (PF && rn < a.rows) load_row(rn, hn, dn, rsn);
        dot              = block_sum(dot, red);
        const float coef = rstd * rstd * dot * inv_h;
        const T    *drow  = a.dres ? static_cast<const T *>(a.dres) + r * a.dres_rs : nullptr;
        T          *dxrow = static_cast<T *>(a.dx) + r * a.dx_rs;
        Pack<T, N>  drp[VPT];
        if (drow) {
#pragma unroll
            for (int v = 0; v < VPT; v++) { // all of dresidual_out's loads in flight together
                const int j = (threadIdx.x + v * blockDim.x) * N, n = min(hidden - j, N);
                if (n > 0) drp[v] = load_pack_any<T, N>(drow + j, n);
            }
        }
#pragma unroll
        for (int v = 0; v < VPT; v++) {
            const int idx = threadIdx.x + v * blockDim.x, j = idx * N, n = min(hidden - j, N);
            if (n > 0) {
                float h[N], d[N], dr[N], w[N];
                opaque(hp[v]);
                opaque(dyp[v]);
                unpack<T, N>(hp[v], h);
                unpack<T, N>(dyp[v], d);
                if (drow) unpack<T, N>(drp[v], dr);
                lds<N>(ws + idx * S, w);
#pragma unroll
                for (int k = 0; k < N; k++) {
                    d[k] = rstd * (d[k] * w[k] - h[k] * coef);
                    if (drow) d[k] += dr[k];
                }
                store_pack_any<T, N>(dxrow + j, pack<T, N>(d), n);
            }
            asm volatile("" ::: "memory");
        }
        if (PF) {
#pragma unroll
            for (int v = 0; v < VPT; v++) hp[v] = hn[v], dyp[v] = dn[v];
            rstd = rsn;
        }
    }
    __syncthreads(); // the copy below reads columns other threads own
    float *part = a.partial + (int64_t)blockIdx.x * a.ld;
    for (int j = threadIdx.x; j < hidden; j += blockDim.x) part[j] = dws[(j / N) * S + j % N];
}

// Any hidden size: h and dy read twice, the block's partial dweight row accumulated in the workspace (each
// column owned by one thread of the block, so no two threads touch one element).
template <typename T, int N> __global__ void __launch_bounds__(512) rms_bwd_loop_kernel(const RmsArgs a) {
    __shared__ float red[32];
    float           *part  = a.partial + (int64_t)blockIdx.x * a.ld;
    const float      inv_h = 1.0f / (float)a.hidden;
    for (int64_t r = blockIdx.x; r < a.rows; r += gridDim.x) {
        const float rstd  = a.rstd[r];
        const bool  first = r == blockIdx.x;
        const T    *hrow = static_cast<const T *>(a.x) + r * a.x_rs, *dyrow = static_cast<const T *>(a.dy) + r * a.dy_rs;
        float       dot = 0.f;
        for (int64_t idx = threadIdx.x; idx < a.nvec; idx += blockDim.x) {
            const int n = valid<N>(idx, a.hidden);
            float     h[N], d[N], w[N];
            unpack<T, N>(load_pack_any<T, N>(hrow + idx * N, n), h);
            unpack<T, N>(load_pack_any<T, N>(dyrow + idx * N, n), d);
            load_any_dtype<N>(a.weight, a.wdt, idx * N, n, a.wvec, w);
#pragma unroll
            for (int k = 0; k < N; k++) {
                if (k < n) part[idx * N + k] = (first ? 0.f : part[idx * N + k]) + d[k] * h[k] * rstd;
                dot += d[k] * (a.off + w[k]) * h[k];
            }
        }
        dot              = block_sum(dot, red);
        const float coef = rstd * rstd * dot * inv_h;
        for (int64_t idx = threadIdx.x; idx < a.nvec; idx += blockDim.x) {
            const int n = valid<N>(idx, a.hidden);
            float     h[N], d[N], w[N], dr[N];
            unpack<T, N>(load_pack_any<T, N>(hrow + idx * N, n), h);
            unpack<T, N>(load_pack_any<T, N>(dyrow + idx * N, n), d);
            load_any_dtype<N>(a.weight, a.wdt, idx * N, n, a.wvec, w);
            if (a.dres)
                unpack<T, N>(load_pack_any<T, N>(static_cast<const T *>(a.dres) + r * a.dres_rs + idx * N, n), dr);
#pragma unroll
            for (int k = 0; k < N; k++) {
                d[k] = rstd * (d[k] * (a.off + w[k]) - h[k] * coef);
                if (a.dres) d[k] += dr[k];
            }
            store_pack_any<T, N>(static_cast<T *>(a.dx) + r * a.dx_rs + idx * N, pack<T, N>(d), n);
        }
    }
}

// dweight[j] = sum over the G partial rows, in a fixed order: thread (tx, ty) of a 32 x 32 block adds rows
// ty, ty + 32, ... of column blockIdx.x * 32 + tx in order (8 independent chains, combined in order; up to 9 x 32
// rows, all of the thread's rows are loaded in one batch first: one L2 round trip instead of two at G = 264,
// +0.3..+0.6% of the backward at bf16 16384 x 4096, docs/PERF.md, ninth session), then thread ty = 0 adds the 32
// sums in order. Independent of timing, so bit-identical from run to run. 32 registers (two blocks an SM): one
// block fits an SM as soon as one block of the main kernel has left it. 32 row slices and 8 chains (was 8 and
// 4): the G rows are few (grid x groups), so the time is latency, not bytes; on the H200 this pass cost 10% of
// the backward at hidden 2048 (3098 GB/s with it, 3430 without; docs/PERF.md).
constexpr int kRedRows = 32;
// On 9.0+ devices fk_cuda_rmsnorm_bwd launches it behind the main kernel with a programmatic dependency (its launch
// and block start overlap the main kernel's last rows: +0.5..+2.7% of the backward at hidden 2048-8192 on the
// H200, docs/PERF.md); griddepcontrol.wait then holds it until the main grid is done and its partials are visible
// (without that launch attribute the wait returns at once: the stream already ordered the two).
// dyn (the workspace's DynHeader, or null): left ready for the next launch of a DYN kernel (count 0, kDynReady).
__global__ void __launch_bounds__(32 * kRedRows, 2) rms_dweight_reduce_kernel(const float *partial, int64_t G,
                                                                            int64_t ld, int64_t hidden,
                                                                            void *dweight, fk_dtype dwdt,
                                                                            DynHeader *dyn) {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
    if (dyn && blockIdx.x == 0 && threadIdx.x == 0 && threadIdx.y == 0) dyn->count = 0, dyn->state = kDynReady;
    __shared__ float s[kRedRows][33];
    const int64_t    j = (int64_t)blockIdx.x * 32 + threadIdx.x;
    float            acc[9] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    if (G <= 9 * kRedRows) { // every row of the thread in one batch (predicated): one L2 round trip
#pragma unroll
        for (int u = 0; u < 9; u++) {
            const int64_t b = threadIdx.y + (int64_t)u * kRedRows;
            if (j < hidden && b < G) acc[u] = partial[b * ld + j];
        }
    } else if (j < hidden) {
        int64_t b = threadIdx.y;
        for (; b + 7 * kRedRows < G; b += 8 * kRedRows) {
#pragma unroll
            for (int u = 0; u < 8; u++) acc[u] += partial[(b + u * kRedRows) * ld + j];
        }
        for (; b < G; b += kRedRows) acc[0] += partial[b * ld + j];
    }
    s[threadIdx.y][threadIdx.x] = (((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))) + acc[8];
    __syncthreads();
    if (threadIdx.y == 0 && j < hidden) {
        float t = s[0][threadIdx.x];
#pragma unroll
        for (int y = 1; y < kRedRows; y++) t += s[y][threadIdx.x];
        store_any_dtype(dweight, dwdt, j, t);
    }
}

// --- row groups (forward and backward) -------------------------------------------------------------------

// Barrier of the `count` threads (a multiple of 32) of one row group; id 1..15 (0 is __syncthreads').
__device__ __forceinline__ void group_sync(int id, int count) {
    asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(count) : "memory");
}

// Sum over a group of W warps, the same value in every thread, fixed order (butterfly in each warp, then the W
// warp sums in warp order). red: this group's 2 x W floats; `parity` alternates per call, so a call's writes
// never meet the previous call's reads: a warp writes half p again only after passing the barrier of the
// call in between, which every warp of the group reaches only after its reads of half p.
template <int W>
__device__ __forceinline__ float group_sum(float x, float *red, int warp_in_group, int lane, int bar_id, int parity) {
    x = warp_sum(x);
    if (W == 1) return x;
    float *buf = red + parity * W;
    if (lane == 0) buf[warp_in_group] = x;
    group_sync(bar_id, W * 32);
    float s = buf[0];
#pragma unroll
    for (int w = 1; w < W; w++) s += buf[w];
    return s;
}

// The staged weight's shared-memory layout ("split"): vector idx's N fp32 values as N/4 float4 chunks, chunk c
// at float4 index c * nvec + idx, so a warp's float4 reads of one chunk are 512 consecutive bytes (no bank
// conflict). N < 4 would be plain [nvec][N] (the row kernels run only vectorized rows: N = 4 or 8).
template <int N> __device__ __forceinline__ int split_at(int nvec, int idx, int k) {
    if constexpr (N % 4 == 0) return ((k >> 2) * nvec + idx) * 4 + (k & 3);
    else return idx * N + k;
}
template <int N> __device__ __forceinline__ void lds_split(const float *s, int nvec, int idx, float (&f)[N]) {
    if constexpr (N % 4 == 0) {
#pragma unroll
        for (int c = 0; c < N / 4; c++) {
            const float4 q = reinterpret_cast<const float4 *>(s)[c * nvec + idx];
            f[4 * c] = q.x, f[4 * c + 1] = q.y, f[4 * c + 2] = q.z, f[4 * c + 3] = q.w;
        }
    } else {
#pragma unroll
        for (int k = 0; k < N; k++) f[k] = s[idx * N + k];
    }
}

// Shared memory of both row kernels: the staged weight (nvec x N fp32) and 2 x W floats per group.
__host__ __device__ inline size_t rows_smem(int64_t nvec, int n, int threads) {
    return (size_t)nvec * n * sizeof(float) + (size_t)(threads / 32) * 2 * sizeof(float) + 16;
}

// offset + weight as fp32 in the split layout, zero past hidden. Once per block.
template <int N> __device__ __forceinline__ void stage_weight(const RmsArgs &a, int nvec, float *ws) {
    // One vector (N elements) a thread per pass, 16-byte loads where the weight is aligned: the block's start
    // waits on one or two loads a thread, not on N x nvec / threads dependent scalar ones (8 at hidden 4096 with
    // 512 threads: each scalar load's store into shared memory waited for it before the next load issued).
    for (int idx = threadIdx.x; idx < nvec; idx += blockDim.x) {
        const int64_t j = (int64_t)idx * N;
        const int     n = a.hidden - j >= N ? N : (int)(a.hidden - j);
        float         w[N];
        load_any_dtype<N>(a.weight, a.wdt, j, n, a.wvec, w);
#pragma unroll
        for (int k = 0; k < N; k++) ws[split_at<N>(nvec, idx, k)] = k < n ? a.off + w[k] : 0.f;
    }
}

// The staged weight in two steps (WF, the weight first): a thread's 16 bytes of it are loaded before the
// thread's first row, and converted into shared memory after that row's loads went out, so the weight's reads
// do not queue behind every block's first rows. One vector a thread (nvec <= blockDim), whole vectors only (no
// read past the weight's end), the weight in the rows' dtype and 16-byte aligned (weight_first_ok); else
// stage_weight.
template <typename T, int N> __device__ __forceinline__ bool weight_first_ok(const RmsArgs &a, int nvec) {
    constexpr fk_dtype dt = std::is_same<T, float>::value ? FK_DTYPE_F32 : std::is_same<T, __half>::value ? FK_DTYPE_F16 : FK_DTYPE_BF16;
    return a.wvec && a.wdt == dt && a.hidden % N == 0 && nvec <= (int)blockDim.x;
}
template <typename T, int N> __device__ __forceinline__ void weight_first_store(const RmsArgs &a, int nvec, float *ws,
                                                                               const Pack<T, N> &raw) {
    if ((int)threadIdx.x >= nvec) return;
    float w[N];
    unpack<T, N>(raw, w);
#pragma unroll
    for (int k = 0; k < N; k++) ws[split_at<N>(nvec, threadIdx.x, k)] = a.off + w[k];
}

// Row accesses: EX (the row fills the group's VPL x 32 W vectors exactly) drops every tail check, so a
// thread's addresses are one base plus constants and no partial-vector code is generated.
template <typename T, int N, bool EX> __device__ __forceinline__ Pack<T, N> ld_row(const T *p, int n) {
    if constexpr (EX) return load_pack<T, N>(p);
    else return load_pack_any<T, N>(p, n);
}
template <typename T, int N, bool EX> __device__ __forceinline__ void st_row(T *p, const Pack<T, N> &x, int n) {
    if constexpr (EX) store_pack<T, N>(p, x);
    else store_pack_any<T, N>(p, x, n);
}

// Group geometry: G = 32 W threads a row; group `grp` of the block takes rows blockIdx.x * groups + grp,
// then every gridDim.x * groups rows.
template <int W> struct Group {
    int gt, grp, groups, lane, wig;
    __device__ __forceinline__ Group() {
        gt = threadIdx.x % (32 * W), grp = threadIdx.x / (32 * W), groups = blockDim.x / (32 * W);
        lane = threadIdx.x & 31, wig = gt >> 5;
    }
};

// y = h * rstd * (offset + w) for vector idx, the weight from the staged row.
template <typename T, int N>
__device__ __forceinline__ Pack<T, N> scale_row(const Pack<T, N> &h, const float *ws, int nvec, int idx, float rstd) {
    float hf[N], w[N], o[N];
    unpack<T, N>(h, hf);
    lds_split<N>(ws, nvec, idx, w);
#pragma unroll
    for (int k = 0; k < N; k++) o[k] = hf[k] * rstd * w[k];
    return pack<T, N>(o);
}

// The thread's whole vectors of a row (gt, gt + 32 W, ...) and, when it owns it, the partial last one.
template <typename T, int N, int W, int VPL, bool EX>
__device__ __forceinline__ void load_group_row(const T *p, int gt, int nfull, bool own_tail, int tailn,
                                               Pack<T, N> (&h)[VPL], Pack<T, N> &ht) {
#pragma unroll
    for (int v = 0; v < VPL; v++) {
        const int idx = gt + v * 32 * W;
        if (EX || idx < nfull) h[v] = load_pack<T, N>(p + idx * N);
    }
    if (own_tail) ht = load_pack_n<T, N>(p + nfull * N, tailn);
}

// One row's operands in registers (forward): x's whole vectors and partial last vector, and the residual's.
template <typename T, int N, int VPL> struct FwdRegs {
    Pack<T, N> h[VPL], ht, r[VPL], rt;
};
template <typename T, int N, int W, int VPL, bool EX>
__device__ __forceinline__ void load_fwd_regs(const FwdRow<T> &row, int gt, int nfull, bool own_tail, int tailn,
                                              FwdRegs<T, N, VPL> &g) {
    load_group_row<T, N, W, VPL, EX>(row.x, gt, nfull, own_tail, tailn, g.h, g.ht);
    if (row.res) load_group_row<T, N, W, VPL, EX>(row.res, gt, nfull, own_tail, tailn, g.r, g.rt);
}

// Software pipeline of the row kernels (PF): a group issues the loads of its next row (r + gridDim.x x groups)
// before the reduction of row r, so they are in flight through the barrier and row r's stores instead of the
// memory pipe idling at every row; the next row's packs cost 2 x VPL x 16 bytes of registers (forward: x and
// residual; backward: h and dy, while dresidual_out is loaded a row later than without PF, see there). Rows
// are distinct (an output may alias an input only exactly, src/core/ops_internal.h), so loading row r + step
// before storing row r reads nothing that this or another group writes in the meantime. Not yet measured; it
// costs occupancy where the plain loop was small (bf16 forward, exact rows: 40 -> 60 registers on sm_90, 3 -> 2
// blocks of 512 threads per SM; the backward was at 1 block already). Off for the one instance that spills with
// it (ptxas -v, 128-register cap): the bf16 forward with tail code at VPL 5 (sm_90: 24 bytes of spill stores,
// 72 of loads; 110 registers without PF).
template <typename T, int VPL, bool EX, bool BWD> constexpr bool rows_prefetch() {
    return !(std::is_same<T, __nv_bfloat16>::value && !BWD && !EX && VPL >= 5);
}

// Forward. The row stays in registers as VPL packs (vectors gt, gt + 32W, ...): hidden <= VPL x 32 W x N.
template <typename T, int N, int W, int VPL, bool EX>
__global__ void __launch_bounds__(512) rms_fwd_rows_kernel(const RmsArgs a) {
    extern __shared__ float4 rows_sm4[];
    constexpr bool PF     = rows_prefetch<T, VPL, EX, false>();
    const int      hidden = (int)a.hidden, nvec = (int)a.nvec; // at most 1024 x 8 (fk_rms_rows_pick)
    float         *ws  = reinterpret_cast<float *>(rows_sm4);
    float         *red = ws + nvec * N;
    const Group<W> G;
    float         *gred = red + G.grp * 2 * W;
    // Whole vectors [0, nfull) sit in the VPL packs; a partial last vector (hidden % N elements, !EX only) is
    // held apart by the one thread it falls to, so the unrolled loops carry no element-wise code (with it,
    // VPL 8 spilled at 128 registers).
    const int     nfull = EX ? VPL * 32 * W : hidden / N, tailn = EX ? 0 : hidden - nfull * N;
    const bool    own_tail = !EX && tailn > 0 && G.gt == nfull % (32 * W);
    const int64_t step     = (int64_t)gridDim.x * G.groups;
    int           parity   = 0;
    int64_t       r        = (int64_t)blockIdx.x * G.groups + G.grp;
    FwdRegs<T, N, VPL> cur;
    // The first row's loads go out before the weight is staged: they do not need it, and the block's start
    // then waits on one latency instead of two.
    if (PF && r < a.rows) load_fwd_regs<T, N, W, VPL, EX>(FwdRow<T>(a, r), G.gt, nfull, own_tail, tailn, cur);
    stage_weight<N>(a, nvec, ws);
    __syncthreads(); // the only block-wide barrier
    for (; r < a.rows; r += step) {
        const FwdRow<T> row(a, r);
        if (!PF) load_fwd_regs<T, N, W, VPL, EX>(row, G.gt, nfull, own_tail, tailn, cur);
        Pack<T, N>(&h)[VPL] = cur.h;
        Pack<T, N> &ht      = cur.ht;
        if (row.res) {
#pragma unroll
            for (int v = 0; v < VPL; v++) {
                const int idx = G.gt + v * 32 * W;
                if (EX || idx < nfull) {
                    h[v] = add_round<T, N>(h[v], cur.r[v]);
                    store_pack<T, N>(row.rout + idx * N, h[v]);
                }
            }
            if (own_tail) {
                ht = add_round<T, N>(ht, cur.rt);
                store_pack_n<T, N>(row.rout + nfull * N, ht, tailn);
            }
        }
        float ss = own_tail ? sumsq<T, N>(ht) : 0.f; // zeros past tailn
#pragma unroll
        for (int v = 0; v < VPL; v++)
            if (EX || G.gt + v * 32 * W < nfull) ss += sumsq<T, N>(h[v]);
        FwdRegs<T, N, VPL> nxt;
        if (PF && r + step < a.rows)
            load_fwd_regs<T, N, W, VPL, EX>(FwdRow<T>(a, r + step), G.gt, nfull, own_tail, tailn, nxt);
        ss               = group_sum<W>(ss, gred, G.wig, G.lane, G.grp + 1, parity);
        parity          ^= 1;
        const float rstd = 1.0f / sqrtf(ss / (float)hidden + a.eps);
        if (a.rstd && G.gt == 0) a.rstd[r] = rstd;
#pragma unroll
        for (int v = 0; v < VPL; v++) {
            const int idx = G.gt + v * 32 * W;
            if (EX || idx < nfull) {
                opaque(h[v]); // keep the packed form live across the reduction, not VPL x N floats
                store_pack<T, N>(row.y + idx * N, scale_row<T, N>(h[v], ws, nvec, idx, rstd));
            }
        }
        if (own_tail) store_pack_n<T, N>(row.y + nfull * N, scale_row<T, N>(ht, ws, nvec, nfull, rstd), tailn);
        if (PF) cur = nxt;
    }
}

// Forward, one row a block (fk_rms_row1_pick, src/core/ops_select.h): no loop and nothing kept from row to row,
// two vectors a thread (vectors tid and tid + blockDim), x, the residual and the weight (of x's dtype, 16-byte
// aligned) all loaded before the one-barrier reduction. The registers stay under the launch bound's cap (MINB
// blocks of 512 threads: 32 or 40), so 3-12 blocks share an SM and more bytes are in flight per SM than with the
// persistent row groups, which keep the next row's packs live (60 registers, 2 blocks an SM). ncu of the
// forward at hidden 8192 (docs/PERF.md, 2026-11-30 fourth session): torch.compile's kernel, one block a row at
// 4 blocks an SM, 85% of DRAM peak; the row groups 76%. Whole vectors only (hidden a multiple of N: a partial
// last vector's element-wise code spilled at these caps); EX: the row is exactly 2 x blockDim vectors. ptxas
// (sm_90a): no spills, except the bf16 rows with idle vectors (!EX) at 40 registers: 6 bytes (the same rows at 32
// spilled 26 / 112 bytes, so they run at 40).
template <typename T, int N, bool RES, bool EX, int MINB>
__global__ void __launch_bounds__(512, MINB) rms_fwd_row_kernel(const RmsArgs a) {
    constexpr int VPT = 2;
    __shared__ float red[16]; // one per warp
    const int       nvec = (int)a.nvec;
    const FwdRow<T> row(a, blockIdx.x);
    const T        *wt = static_cast<const T *>(a.weight);
    Pack<T, N>      h[VPT], w[VPT];
    float           ss = 0.f;
#pragma unroll
    for (int v = 0; v < VPT; v++) {
        const int idx = threadIdx.x + v * blockDim.x;
        if (EX || idx < nvec) {
            h[v] = load_pack<T, N>(row.x + idx * N);
            if (RES) {
                h[v] = add_round<T, N>(h[v], load_pack<T, N>(row.res + idx * N));
                store_pack<T, N>(row.rout + idx * N, h[v]);
            }
            w[v] = load_pack<T, N>(wt + idx * N);
        }
    }
#pragma unroll
    for (int v = 0; v < VPT; v++)
        if (EX || threadIdx.x + v * blockDim.x < nvec) ss += sumsq<T, N>(h[v]);
    ss = warp_sum(ss);
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = ss;
    __syncthreads();
    ss = 0.f;
    for (int k = 0; k < (int)(blockDim.x >> 5); k++) ss += red[k]; // warp order: reproducible
    const float rstd = 1.0f / sqrtf(ss / (float)a.hidden + a.eps);
    if (a.rstd && threadIdx.x == 0) a.rstd[blockIdx.x] = rstd;
#pragma unroll
    for (int v = 0; v < VPT; v++) {
        const int idx = threadIdx.x + v * blockDim.x;
        if (!EX && idx >= nvec) continue;
        float hf[N], wf[N], o[N];
        unpack<T, N>(h[v], hf);
        unpack<T, N>(w[v], wf);
#pragma unroll
        for (int k = 0; k < N; k++) o[k] = hf[k] * rstd * (a.off + wf[k]);
        store_pack<T, N>(row.y + idx * N, pack<T, N>(o));
    }
}

// The backward group's dweight partial: one [hidden] fp32 row of the workspace per (block, group), written straight
// from the registers (also by a group without rows: zeros), so no thread waits on another after its row loop.
template <int N, int W, int VPL, bool EX>
__device__ __forceinline__ void write_dw_partial(const RmsArgs &a, const Group<W> &G, const float (&dw)[VPL][N], int nvec,
                                                 int hidden) {
    float *part = a.partial + ((int64_t)blockIdx.x * G.groups + G.grp) * a.ld;
#pragma unroll
    for (int v = 0; v < VPL; v++) {
        const int idx = G.gt + v * 32 * W, j = idx * N;
        if (idx < nvec) {
            if (EX || j + N <= hidden) {
#pragma unroll
                for (int k = 0; k < N; k += 4)
                    *reinterpret_cast<float4 *>(part + j + k) = make_float4(dw[v][k], dw[v][k + 1], dw[v][k + 2], dw[v][k + 3]);
            } else {
                for (int k = 0; k < N && j + k < hidden; k++) part[j + k] = dw[v][k];
            }
        }
    }
}

// The two-group blocks' partial: group 1 leaves its partial in shared memory (comb: nvec x N floats, 16-byte aligned,
// after the group sums' buffer: pair_smem), group 0 adds it to its own and writes the block's one row of the
// workspace. Two groups a block, whole vectors, one a thread (exact rows: the DYN instances, the static ones at W 8).
template <int N, int W>
__device__ __forceinline__ void dw_pair_partial(const RmsArgs &a, const Group<W> &G, const float (&dw)[N], float *comb) {
    float4 *c = reinterpret_cast<float4 *>(comb + G.gt * N);
    if (G.grp == 1) {
#pragma unroll
        for (int k = 0; k < N; k += 4) c[k / 4] = make_float4(dw[k], dw[k + 1], dw[k + 2], dw[k + 3]);
    }
    __syncthreads();
    if (G.grp == 0) {
        float4 *part = reinterpret_cast<float4 *>(a.partial + (int64_t)blockIdx.x * a.ld + G.gt * N);
#pragma unroll
        for (int k = 0; k < N; k += 4) {
            const float4 o = c[k / 4];
            part[k / 4]    = make_float4(dw[k] + o.x, dw[k + 1] + o.y, dw[k + 2] + o.z, dw[k + 3] + o.w);
        }
    }
}

// One row's operands in registers (backward): h, dy and the row's rstd; dresidual_out, needed only after the
// reduction, apart (load_bwd_dres).
template <typename T, int N, int VPL> struct BwdRegs {
    Pack<T, N> h[VPL], d[VPL];
    float      rstd;
};
template <typename T, int N, int W, int VPL, bool EX>
__device__ __forceinline__ void load_bwd_regs(const RmsArgs &a, int64_t r, int gt, int hidden, BwdRegs<T, N, VPL> &g) {
    const T *hrow  = static_cast<const T *>(a.x) + r * a.x_rs;
    const T *dyrow = static_cast<const T *>(a.dy) + r * a.dy_rs;
    g.rstd         = a.rstd[r];
#pragma unroll
    for (int v = 0; v < VPL; v++) {
        const int j = (gt + v * 32 * W) * N, n = EX ? N : min(hidden - j, N);
        if (EX || n > 0) g.h[v] = ld_row<T, N, EX>(hrow + j, n), g.d[v] = ld_row<T, N, EX>(dyrow + j, n);
    }
}
template <typename T, int N, int W, int VPL, bool EX>
__device__ __forceinline__ void load_bwd_dres(const T *drow, int gt, int hidden, Pack<T, N> (&rp)[VPL]) {
#pragma unroll
    for (int v = 0; v < VPL; v++) {
        const int j = (gt + v * 32 * W) * N, n = EX ? N : min(hidden - j, N);
        if (EX || n > 0) rp[v] = ld_row<T, N, EX>(drow + j, n);
    }
}

// Backward. h, dy (and dresidual_out) of the row in registers; the dweight partial of the thread's columns
// in VPL x N fp32 registers across all of the group's rows.
template <typename T, int N, int W, int VPL, bool EX>
__global__ void __launch_bounds__(512) rms_bwd_rows_kernel(const RmsArgs a) {
    static_assert(N % 4 == 0, "row kernels: 16-byte vectors of 4 or 8 elements (float4 partial stores)");
    extern __shared__ float4 rows_sm4[];
    constexpr bool PF     = rows_prefetch<T, VPL, EX, true>();
    const int      hidden = (int)a.hidden, nvec = (int)a.nvec;
    float         *ws  = reinterpret_cast<float *>(rows_sm4);
    float         *red = ws + nvec * N;
    const Group<W> G;
    float         *gred  = red + G.grp * 2 * W;
    const float    inv_h = 1.0f / (float)hidden;
    float          dw[VPL][N];
#pragma unroll
    for (int v = 0; v < VPL; v++)
#pragma unroll
        for (int k = 0; k < N; k++) dw[v][k] = 0.f;
    const int64_t      step   = (int64_t)gridDim.x * G.groups;
    int                parity = 0;
    int64_t            r      = (int64_t)blockIdx.x * G.groups + G.grp;
    BwdRegs<T, N, VPL> cur;
    if (PF && r < a.rows) load_bwd_regs<T, N, W, VPL, EX>(a, r, G.gt, hidden, cur); // before the weight, as above
    stage_weight<N>(a, nvec, ws);
    __syncthreads();
    for (; r < a.rows; r += step) {
        const T    *drow  = a.dres ? static_cast<const T *>(a.dres) + r * a.dres_rs : nullptr;
        Pack<T, N>  rp[VPL];
        if (!PF) { // dresidual_out loaded with h and dy, not after the reduction
            load_bwd_regs<T, N, W, VPL, EX>(a, r, G.gt, hidden, cur);
            if (drow) load_bwd_dres<T, N, W, VPL, EX>(drow, G.gt, hidden, rp);
        }
        T          *dxrow = static_cast<T *>(a.dx) + r * a.dx_rs;
        const float rstd  = cur.rstd;
        float       dot   = 0.f;
#pragma unroll
        for (int v = 0; v < VPL; v++) {
            const int idx = G.gt + v * 32 * W;
            if (EX || hidden - idx * N > 0) {
                float h[N], d[N], w[N];
                unpack<T, N>(cur.h[v], h);
                unpack<T, N>(cur.d[v], d);
                lds_split<N>(ws, nvec, idx, w);
#pragma unroll
                for (int k = 0; k < N; k++) {
                    dw[v][k] += d[k] * h[k] * rstd;
                    dot += d[k] * w[k] * h[k];
                }
            }
        }
        BwdRegs<T, N, VPL> nxt;
        if (PF && r + step < a.rows) load_bwd_regs<T, N, W, VPL, EX>(a, r + step, G.gt, hidden, nxt);
        // With the next row in flight, this row's dresidual_out is loaded here: prefetched a row ahead, it
        // would take VPL more packs through the reduction (tried: the bf16 tail instances spilled 32 to 46 bytes
        // on sm_90, the others sat at 122-128 registers).
        if (PF && drow) load_bwd_dres<T, N, W, VPL, EX>(drow, G.gt, hidden, rp);
        dot              = group_sum<W>(dot, gred, G.wig, G.lane, G.grp + 1, parity);
        parity          ^= 1;
        const float coef = rstd * rstd * dot * inv_h;
#pragma unroll
        for (int v = 0; v < VPL; v++) {
            const int idx = G.gt + v * 32 * W, j = idx * N, n = EX ? N : min(hidden - j, N);
            if (EX || n > 0) {
                float h[N], d[N], w[N], dr[N];
                opaque(cur.h[v]);
                opaque(cur.d[v]);
                unpack<T, N>(cur.h[v], h);
                unpack<T, N>(cur.d[v], d);
                lds_split<N>(ws, nvec, idx, w);
                if (drow) unpack<T, N>(rp[v], dr);
#pragma unroll
                for (int k = 0; k < N; k++) {
                    d[k] = rstd * (d[k] * w[k] - h[k] * coef);
                    if (drow) d[k] += dr[k];
                }
                st_row<T, N, EX>(dxrow + j, pack<T, N>(d), n);
            }
        }
        if (PF) cur = nxt;
    }
    write_dw_partial<N, W, VPL, EX>(a, G, dw, nvec, hidden);
}

// Backward, one vector a thread (the row groups at W x 32 vectors: fk_rms_rows_bwd at 256 / 512 vectors), two
// blocks of 512 an SM (__launch_bounds__ cap: 64 registers; 32 warps an SM against the two-vector groups' 16).
// The next row's loads go out before this row's first pass into the register row processed last (two register
// rows, the loop unrolled twice so they alternate without copies: a copy of a row still loading waits for it,
// and rms_bwd_rows_kernel's form of this loop spilled 16-28 bytes at 64 registers and ran 20% slower here).
// H200, bf16, 16384 rows, dweight sum included (docs/PERF.md, seventh session): 3383-3395 GB/s at hidden 2048
// (W 8) and 3726-3742 at 4096 (W 16) against the two-vector groups' 3303-3327 / 3654-3694 in the same runs.
// dresidual_out (other devices than 9.0, where the bulk-copy ring takes it) is loaded after the row sum.
// DYN (rows handed out at run time): the row after next is dyn_k x groups + the group's next ticket, read after
// the row sum's barrier from a ring of four tickets in shared memory (`tick`); the leader (thread 0 of the group)
// refills the slot just read with one atomic a row and writes it after the next row's barrier (every thread of
// the group has read the slot by then; it is read again four rows later).
struct DynRows {
    int64_t   rn;       // the next row (its loads go out at the start of the current one)
    int      *tick;     // the group's ring of four tickets
    unsigned *count;    // the launch's ticket counter (DynHeader::count)
    int64_t   s;        // the first dynamic row: dyn_k x groups
    unsigned  pend;     // leader: the ticket requested at the previous row, for slot pslot
    int       dk, pslot;
    int       off;      // tickets count from 4 x groups (the group's first four dynamic rows are static)
};
template <typename T, int N, int W, bool EX, bool DYN = false, bool DRES = true>
__device__ __forceinline__ bool bwd_vec1_row(const RmsArgs &a, const Group<W> &G, const float *ws, float *gred,
                                             float (&dw)[N], int &parity, int64_t &r, int64_t step,
                                             BwdRegs<T, N, 1> &cur, BwdRegs<T, N, 1> &issue, DynRows *dr = nullptr) {
    const int nvec = (int)a.nvec, hidden = (int)a.hidden, idx = G.gt, j = idx * N;
    const int n    = EX ? N : min(hidden - j, N);
    if (r >= a.rows) return false; // the same in every thread of the group
    const int64_t rn = DYN ? dr->rn : r + step;
    if (rn < a.rows) load_bwd_regs<T, N, W, 1, EX>(a, rn, G.gt, hidden, issue);
    const float rstd = cur.rstd;
    float       dot  = 0.f;
    if (EX || n > 0) {
        float h[N], d[N], w[N];
        unpack<T, N>(cur.h[0], h);
        unpack<T, N>(cur.d[0], d);
        lds_split<N>(ws, nvec, idx, w);
#pragma unroll
        for (int k = 0; k < N; k++) {
            dw[k] += d[k] * h[k] * rstd;
            dot += d[k] * w[k] * h[k];
        }
    }
    dot              = group_sum<W>(dot, gred, G.wig, G.lane, G.grp + 1, parity);
    parity          ^= 1;
    int64_t after    = 0;
    if constexpr (DYN) {
        after = dr->s + dr->tick[dr->dk & 3];
        if (G.gt == 0) {
            if (dr->pslot >= 0) dr->tick[dr->pslot] = (int)dr->pend + dr->off;
            dr->pend = atomicAdd(dr->count, 1u), dr->pslot = dr->dk & 3;
        }
        dr->dk++;
    }
    const float coef = rstd * rstd * dot / (float)hidden;
    if (EX || n > 0) {
        float h[N], d[N], w[N];
        opaque(cur.h[0]);
        opaque(cur.d[0]);
        unpack<T, N>(cur.h[0], h);
        unpack<T, N>(cur.d[0], d);
        lds_split<N>(ws, nvec, idx, w);
#pragma unroll
        for (int k = 0; k < N; k++) d[k] = rstd * (d[k] * w[k] - h[k] * coef);
        if (DRES && a.dres) {
            float dr[N];
            unpack<T, N>(ld_row<T, N, EX>(static_cast<const T *>(a.dres) + r * a.dres_rs + j, n), dr);
#pragma unroll
            for (int k = 0; k < N; k++) d[k] += dr[k];
        }
        st_row<T, N, EX>(static_cast<T *>(a.dx) + r * a.dx_rs + j, pack<T, N>(d), n);
    }
    if constexpr (DYN) r = dr->rn, dr->rn = after;
    else r += step;
    return true;
}
// A leader's check of the workspace header before its first ticket: ready (read at its start: `ready`), or
// claimed for this launch (see DynHeader).
__device__ __forceinline__ void dyn_claim(DynHeader *h, unsigned long long tag) {
    for (;;) {
        unsigned long long t;
        asm volatile("ld.acquire.gpu.global.u64 %0, [%1];" : "=l"(t) : "l"(&h->state) : "memory");
        if (t == tag) return;
        if (t == (tag | 1)) continue; // another leader of this launch is zeroing the count
        if (atomicCAS(&h->state, t, tag | 1) == t) {
            atomicExch(&h->count, 0u);
            asm volatile("st.release.gpu.global.u64 [%0], %1;" ::"l"(&h->state), "l"(tag) : "memory");
            return;
        }
    }
}
// DYN: rows gi + i x groups for i < dyn_k + 4 (dyn_k even, >= 2, dyn_k x groups <= rows: set_grid) through the
// static rows' code (the last four through the dynamic rows' ring), then rows (dyn_k + 4) x groups + t for
// tickets t. H200, bf16, 16384 rows (docs/PERF.md, eighth session): the static grid's blocks end 93-104 us apart
// at hidden 4096 and its last ~8 us run at a fraction of the rate; with the last rows from tickets the backward
// ran +2.2..+2.7% in ops_tune (3728 -> 3798 GB/s in bench_ops), at 2048 3373-3412 against 3324-3388.
// The DYN instances run two groups a block (W 16: 1024 threads, one block an SM; W 8: 512) and add the two
// groups' dweight partials in shared memory at the end (dw_pair_partial): one partial row a block, half the rows
// the dweight sum reads. So do the static exact rows at W 8 (already two groups of 512: 3272-3292 -> 3417-3429
// GB/s at bf16 16384 x 2048 with deterministic; at W 16 the static rows in blocks of 1024 lost 0.4%: ninth
// session). DRES = false: an instance without dresidual_out's code (the plan picks it when absent).
template <typename T, int N, int W, bool EX, bool DYN = false, bool DRES = true>
__global__ void __launch_bounds__(DYN ? 64 * W : 512, DYN ? 1024 / (64 * W) : 2) rms_bwd_vec1_kernel(const RmsArgs a) {
    static_assert(N % 4 == 0, "row kernels: 16-byte vectors of 4 or 8 elements (float4 partial stores)");
    extern __shared__ float4 rows_sm4[];
    const int      nvec = (int)a.nvec;
    float         *ws   = reinterpret_cast<float *>(rows_sm4);
    float         *red  = ws + nvec * N;
    const Group<W> G;
    float         *gred = red + G.grp * 2 * W;
    float          dw[1][N];
#pragma unroll
    for (int k = 0; k < N; k++) dw[0][k] = 0.f;
    const int64_t    step = (int64_t)gridDim.x * G.groups;
    int64_t          r    = (int64_t)blockIdx.x * G.groups + G.grp;
    BwdRegs<T, N, 1> R0, R1;
    const bool wf = weight_first_ok<T, N>(a, nvec); // the weight's 16 bytes first (docs/PERF.md, eighth session: WF)
    Pack<T, N> wraw = {};
    if (wf && (int)threadIdx.x < nvec) wraw = load_pack<T, N>(static_cast<const T *>(a.weight) + (int64_t)threadIdx.x * N);
    if constexpr (!DYN) {
        if (r < a.rows) load_bwd_regs<T, N, W, 1, EX>(a, r, G.gt, (int)a.hidden, R0); // before the weight, as above
        if (wf) weight_first_store<T, N>(a, nvec, ws, wraw);
        else stage_weight<N>(a, nvec, ws);
        __syncthreads();
        int parity = 0;
        for (;;) {
            if (!bwd_vec1_row<T, N, W, EX>(a, G, ws, gred, dw[0], parity, r, step, R0, R1)) break;
            if (!bwd_vec1_row<T, N, W, EX>(a, G, ws, gred, dw[0], parity, r, step, R1, R0)) break;
        }
    } else {
        __shared__ int tick[2][4];
        __shared__ int ready[2];
        const int      ng = (int)step;
        load_bwd_regs<T, N, W, 1, EX>(a, r, G.gt, (int)a.hidden, R0);
        // The header's state, read after the row's loads went out and written to shared memory after the weight
        // is staged: its latency overlaps the weight's instead of holding the leader's first row back.
        unsigned long long st = 0;
        if (G.gt == 0) asm volatile("ld.relaxed.gpu.global.u64 %0, [%1];" : "=l"(st) : "l"(&a.dyn->state) : "memory");
        if (wf) weight_first_store<T, N>(a, nvec, ws, wraw);
        else stage_weight<N>(a, nvec, ws);
        if (G.gt == 0) { // the ring starts with the group's four next static rows
            for (int u = 0; u < 4; u++) tick[G.grp][u] = u * ng + (int)r;
            ready[G.grp] = st == kDynReady;
        }
        __syncthreads();
        int parity = 0;
        for (int i = 0; i < a.dyn_k - 2; i += 2) { // static rows 0 .. dyn_k - 3
            bwd_vec1_row<T, N, W, EX, false, DRES>(a, G, ws, gred, dw[0], parity, r, step, R0, R1);
            bwd_vec1_row<T, N, W, EX, false, DRES>(a, G, ws, gred, dw[0], parity, r, step, R1, R0);
        }
        bwd_vec1_row<T, N, W, EX, false, DRES>(a, G, ws, gred, dw[0], parity, r, step, R0, R1); // row dyn_k - 2: loads dyn_k - 1
        // Row dyn_k - 1 (in R1) loads the ring's first row; slot 0 is read here, so its refill is requested.
        DynRows dr;
        dr.s = (int64_t)a.dyn_k * step, dr.tick = tick[G.grp], dr.count = &a.dyn->count, dr.off = 4 * ng;
        dr.rn = dr.s + tick[G.grp][0], dr.dk = 1, dr.pslot = -1, dr.pend = 0;
        if (G.gt == 0) {
            if (!ready[G.grp]) dyn_claim(a.dyn, a.dyn_tag);
            dr.pend = atomicAdd(dr.count, 1u), dr.pslot = 0;
        }
        for (;;) {
            if (!bwd_vec1_row<T, N, W, EX, true, DRES>(a, G, ws, gred, dw[0], parity, r, step, R1, R0, &dr)) break;
            if (!bwd_vec1_row<T, N, W, EX, true, DRES>(a, G, ws, gred, dw[0], parity, r, step, R0, R1, &dr)) break;
        }
    }
    if constexpr (DYN || (EX && W == 8)) dw_pair_partial<N, W>(a, G, dw[0], red + G.groups * 2 * W + 4);
    else write_dw_partial<N, W, 1, EX>(a, G, dw, nvec, (int)a.hidden);
}

// --- row groups with a shared-memory ring (cp.async) -------------------------------------------------------
// The same row groups, but each thread copies its vectors of the next `stages - 1` rows of its group into its
// own slots of a shared-memory ring with cp.async while it works on the current row: stages - 1 rows of loads
// in flight a group, held in shared memory instead of registers (the register prefetch above holds one). Slot
// (stage, operand, vector) of thread t: uint4 index ((stage x nops + operand) x VPL + vector) x threads + t,
// so a warp's 16-byte accesses are 512 consecutive bytes. A thread reads only its own slots: cp_wait orders
// them, no barrier. A partial last vector is copied with its valid bytes and zero-filled. The ring follows
// the staged weight and the group sums: ring_offset() below.
__host__ __device__ inline size_t ring_offset(int64_t nvec, int n, int threads) {
    return (rows_smem(nvec, n, threads) + 15) / 16 * 16;
}
// The ring of rms_bwd_ring_kernel: stages x nops x VPL uint4 a thread, then the rows' rstd ([stages][threads]).
inline size_t ring_bytes(int stages, int nops, int vpl, int threads) {
    return (size_t)stages * nops * vpl * threads * 16 + (size_t)stages * threads * sizeof(float);
}

template <typename T, int N, int VPL>
__device__ __forceinline__ uint4 *ring_slot(uint4 *ring, int nops, int stage, int op, int v) {
    return ring + ((stage * nops + op) * VPL + v) * (int)blockDim.x + (int)threadIdx.x;
}

// Issues the thread's vectors of row r of `nops` operands (bases p[op] + r * rs[op]) into ring stage `stage`.
template <typename T, int N, int W, int VPL, bool EX>
__device__ __forceinline__ void ring_issue(uint4 *ring, int nops, int stage, const void *const (&p)[3],
                                           const int64_t (&rs)[3], int64_t r, int gt, int nvec, int hidden) {
#pragma unroll
    for (int v = 0; v < VPL; v++) {
        const int idx = gt + v * 32 * W;
        if (EX || idx < nvec) {
            const int bytes = EX ? 16 : min(16, (hidden - idx * N) * (int)sizeof(T));
#pragma unroll
            for (int op = 0; op < 3; op++)
                if (op < nops)
                    cp16(ring_slot<T, N, VPL>(ring, nops, stage, op, v), static_cast<const T *>(p[op]) + r * rs[op] + idx * N,
                         bytes);
        }
    }
}
template <typename T, int N> __device__ __forceinline__ Pack<T, N> lds_pack(const uint4 *slot) {
    union {
        uint4      u;
        Pack<T, N> p;
    } x;
    x.u = *slot;
    return x.p;
}

// Backward through the ring: h, dy (and dresidual_out) and the row's rstd from the ring; h and dy are read from
// it twice (before and after the reduction) instead of being held in registers across it.
template <typename T, int N, int W, int VPL, bool EX>
__global__ void __launch_bounds__(512) rms_bwd_ring_kernel(const RmsArgs a) {
    static_assert(N * sizeof(T) == 16 && N % 4 == 0, "ring: 16-byte vectors");
    extern __shared__ float4 rows_sm4[];
    const int hidden = (int)a.hidden, nvec = (int)a.nvec, S = a.stages;
    float    *ws   = reinterpret_cast<float *>(rows_sm4);
    float    *red  = ws + nvec * N;
    const bool dres = a.dres != nullptr;
    const int  nops = dres ? 3 : 2;
    uint4     *ring = reinterpret_cast<uint4 *>(reinterpret_cast<char *>(rows_sm4) + ring_offset(nvec, N, blockDim.x));
    float     *rring = reinterpret_cast<float *>(ring + S * nops * VPL * (int)blockDim.x); // [S][threads] rstd
    const Group<W> G;
    float         *gred  = red + G.grp * 2 * W;
    const float    inv_h = 1.0f / (float)hidden;
    float          dw[VPL][N];
#pragma unroll
    for (int v = 0; v < VPL; v++)
#pragma unroll
        for (int k = 0; k < N; k++) dw[v][k] = 0.f;
    const void *const p[3]  = {a.x, a.dy, a.dres};
    const int64_t     rs[3] = {a.x_rs, a.dy_rs, a.dres_rs};
    const int64_t     step  = (int64_t)gridDim.x * G.groups;
    int64_t           r     = (int64_t)blockIdx.x * G.groups + G.grp;
    auto issue = [&](int64_t row, int st) {
        ring_issue<T, N, W, VPL, EX>(ring, nops, st, p, rs, row, G.gt, nvec, hidden);
        cp4(rring + st * (int)blockDim.x + threadIdx.x, a.rstd + row);
    };
    for (int st = 0; st < S - 1; st++) {
        if (r + st * step < a.rows) issue(r + st * step, st);
        cp_commit();
    }
    stage_weight<N>(a, nvec, ws); // with the first rows in flight
    __syncthreads();
    int parity = 0, stage = 0;
    for (; r < a.rows; r += step) {
        const int64_t rn = r + (S - 1) * step;
        if (rn < a.rows) issue(rn, stage == 0 ? S - 1 : stage - 1);
        cp_commit();
        cp_wait(S - 1);
        const float rstd = rring[stage * (int)blockDim.x + threadIdx.x];
        float       dot  = 0.f;
#pragma unroll
        for (int v = 0; v < VPL; v++) {
            const int idx = G.gt + v * 32 * W;
            if (EX || idx < nvec) {
                float h[N], d[N], w[N];
                unpack<T, N>(lds_pack<T, N>(ring_slot<T, N, VPL>(ring, nops, stage, 0, v)), h);
                unpack<T, N>(lds_pack<T, N>(ring_slot<T, N, VPL>(ring, nops, stage, 1, v)), d);
                lds_split<N>(ws, nvec, idx, w);
#pragma unroll
                for (int k = 0; k < N; k++) {
                    dw[v][k] += d[k] * h[k] * rstd;
                    dot += d[k] * w[k] * h[k];
                }
            }
        }
        dot              = group_sum<W>(dot, gred, G.wig, G.lane, G.grp + 1, parity);
        parity          ^= 1;
        const float coef = rstd * rstd * dot * inv_h;
        T          *dxrow = static_cast<T *>(a.dx) + r * a.dx_rs;
#pragma unroll
        for (int v = 0; v < VPL; v++) {
            const int idx = G.gt + v * 32 * W, j = idx * N, n = EX ? N : min(hidden - j, N);
            if (EX || idx < nvec) {
                float h[N], d[N], w[N], dr[N];
                unpack<T, N>(lds_pack<T, N>(ring_slot<T, N, VPL>(ring, nops, stage, 0, v)), h);
                unpack<T, N>(lds_pack<T, N>(ring_slot<T, N, VPL>(ring, nops, stage, 1, v)), d);
                if (dres) unpack<T, N>(lds_pack<T, N>(ring_slot<T, N, VPL>(ring, nops, stage, 2, v)), dr);
                lds_split<N>(ws, nvec, idx, w);
#pragma unroll
                for (int k = 0; k < N; k++) {
                    d[k] = rstd * (d[k] * w[k] - h[k] * coef);
                    if (dres) d[k] += dr[k];
                }
                st_row<T, N, EX>(dxrow + j, pack<T, N>(d), n);
            }
        }
        stage = stage + 1 == S ? 0 : stage + 1;
    }
    cp_wait(0);
    write_dw_partial<N, W, VPL, EX>(a, G, dw, nvec, hidden);
}

// --- backward through bulk copies (sm_90) ----------------------------------------------------------------
// rms_bwd_tma_kernel: one row at a time a block, a persistent grid. One thread (thread 0) keeps the block's next
// rows in flight with cp.async.bulk: each operand's row (h, dy, and dresidual_out when given) is one contiguous
// copy into a ring of `stages` row slots in shared memory, counted on that slot's mbarrier. Every thread reads
// VPT 16-byte vectors of the row from the slot (vectors tid, tid + blockDim, ...), so the bytes in flight are
// held by the ring, not by registers: 40-100 registers a thread, where the register row groups hold the next
// row at 121-126 (one block of 512 threads an SM). The row's one block barrier (the sum over the row) is also
// where every thread has finished reading the previous row's slot: thread 0 refills that slot right after it.
// The weight (offset added, fp32) and the dweight partial of the thread's columns live in registers; the
// partial is written as the block's one [hidden] row of the workspace at the end (G = grid) and summed by
// rms_dweight_reduce_kernel in a fixed order, as for the row groups. Needs hidden x sizeof(T) and every row
// stride x sizeof(T) multiples of 16 and 16-byte aligned bases (the bulk copy's rule; dx is written with
// 16-byte stores), and a 9.0 device (tma_fits). Where it runs: fk_rms_tma_pick (src/core/ops_select.h). The
// same ring for the forward (x and the residual through bulk copies, one row at a time a block) lost to the
// one-row-a-block kernel at every width (by 5-13%, H200; docs/PERF.md, 2026-11-30 fifth session).
// Shared memory: the ring ([stages][nops][row bytes rounded up to 128]), the stages' mbarriers, then the
// per-warp sums (two rows' worth, by parity).
__host__ __device__ inline size_t tma_slot_bytes(int64_t hidden, int es) { return (size_t)((hidden * es + 127) / 128 * 128); }
inline size_t tma_smem(int64_t hidden, int es, int stages, int nops) {
    return tma_slot_bytes(hidden, es) * nops * stages + 8 * (size_t)stages + 2 * 32 * sizeof(float);
}
template <typename T> struct RowRing {
    unsigned char *base;
    uint64_t      *bar;
    float         *red; // [2][32]
    size_t         slotb;
    unsigned       rowb;
    int            S, nops;
    const void    *src[3];
    int64_t        rs[3];
    int64_t        r0, grid, nk; // the block's rows: r0 + k grid, k < nk
    __device__ RowRing(unsigned char *sm, const RmsArgs &a, int n, const void *p0, int64_t s0, const void *p1,
                       int64_t s1, const void *p2, int64_t s2) {
        S = a.stages, nops = n, slotb = tma_slot_bytes(a.hidden, (int)sizeof(T)), rowb = (unsigned)a.hidden * (unsigned)sizeof(T);
        base = sm, bar = reinterpret_cast<uint64_t *>(sm + slotb * nops * S), red = reinterpret_cast<float *>(bar + S);
        src[0] = p0, src[1] = p1, src[2] = p2, rs[0] = s0, rs[1] = s1, rs[2] = s2;
        grid = gridDim.x, r0 = blockIdx.x, nk = r0 < a.rows ? (a.rows - 1 - r0) / grid + 1 : 0;
    }
    __device__ T   *slot(int s, int op) const { return reinterpret_cast<T *>(base + slotb * (s * nops + op)); }
    __device__ void issue(int64_t k, int s) const { // the block's row k into slot s (thread 0)
        const int64_t r = r0 + k * grid;
        mbar_expect_tx(&bar[s], rowb * nops);
        for (int op = 0; op < nops; op++) bulk_g2s(slot(s, op), static_cast<const T *>(src[op]) + r * rs[op], rowb, &bar[s]);
    }
    __device__ void start() const { // thread 0: the barriers and the first S rows (then a block barrier)
        for (int s = 0; s < S; s++) mbar_init(&bar[s], 1);
        mbar_init_fence();
        for (int k = 0; k < nk && k < S; k++) issue(k, k);
    }
    // The block's sum of each thread's x for row k: warp sums in shared memory (by parity), the block barrier,
    // thread 0's refill of the previous row's slot (prev) with the row S - 1 ahead, then the warp sums added in
    // warp order (reproducible).
    __device__ float block_sum(float x, int64_t k, int prev) const {
        x         = warp_sum(x);
        float *rk = red + (k & 1) * 32;
        if ((threadIdx.x & 31) == 0) rk[threadIdx.x >> 5] = x;
        __syncthreads();
        if (threadIdx.x == 0 && k >= 1 && k - 1 + S < nk) {
            fence_proxy_async_smem();
            issue(k - 1 + S, prev);
        }
        x = 0.f;
        for (int i = 0; i < (int)(blockDim.x >> 5); i++) x += rk[i];
        return x;
    }
};
// The thread's VPT x N weights, offset added, fp32 (idle vectors: the offset alone, never used).
template <int N, int VPT> __device__ __forceinline__ void load_w_regs(const RmsArgs &a, float (&w)[VPT][N]) {
#pragma unroll
    for (int v = 0; v < VPT; v++) {
        const int idx = threadIdx.x + v * blockDim.x;
#pragma unroll
        for (int k = 0; k < N; k++) w[v][k] = 0.f;
        if (idx < a.nvec) load_any_dtype<N>(a.weight, a.wdt, (int64_t)idx * N, N, a.wvec, w[v]);
#pragma unroll
        for (int k = 0; k < N; k++) w[v][k] += a.off;
    }
}
// The block's last row: a kernel launched behind this one with a programmatic dependency may start now (its
// griddepcontrol.wait still waits for this whole grid and its writes).
[[maybe_unused]] __device__ __forceinline__ void launch_dependents() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Backward: h, dy (and dresidual_out) through the ring; the dweight partial in registers.
template <typename T, int N, int VPT, bool DRES>
__global__ void __launch_bounds__(512) rms_bwd_tma_kernel(const RmsArgs a) {
#if __CUDA_ARCH__ >= 900
    extern __shared__ __align__(128) unsigned char tma_sm[];
    const RowRing<T> ring(tma_sm, a, DRES ? 3 : 2, a.x, a.x_rs, a.dy, a.dy_rs, a.dres, a.dres_rs);
    const int        tid = threadIdx.x, nthr = blockDim.x, nvec = (int)a.nvec;
    if (tid == 0) ring.start();
    float w[VPT][N], dw[VPT][N];
    load_w_regs<N, VPT>(a, w);
#pragma unroll
    for (int v = 0; v < VPT; v++)
#pragma unroll
        for (int e = 0; e < N; e++) dw[v][e] = 0.f;
    const float inv_h     = 1.0f / (float)a.hidden;
    float       rstd_next = ring.nk > 0 ? a.rstd[ring.r0] : 0.f;
    __syncthreads(); // the barriers' init
    int      s = 0, prev = ring.S - 1;
    unsigned phase = 0;
    for (int64_t k = 0; k < ring.nk; k++) {
        const int64_t r    = ring.r0 + k * ring.grid;
        const float   rstd = rstd_next;
        if (k + 1 < ring.nk) rstd_next = a.rstd[r + ring.grid];
        if (k + 1 == ring.nk) launch_dependents();
        mbar_wait(&ring.bar[s], phase);
        const T *hs = ring.slot(s, 0), *ds = ring.slot(s, 1);
        float    dot = 0.f;
#pragma unroll
        for (int v = 0; v < VPT; v++) {
            const int idx = tid + v * nthr;
            if (idx < nvec) {
                float h[N], d[N];
                unpack<T, N>(load_pack<T, N>(hs + idx * N), h);
                unpack<T, N>(load_pack<T, N>(ds + idx * N), d);
#pragma unroll
                for (int e = 0; e < N; e++) {
                    dw[v][e] += d[e] * h[e] * rstd;
                    dot += d[e] * w[v][e] * h[e];
                }
            }
        }
        dot              = ring.block_sum(dot, k, prev);
        const float coef = rstd * rstd * dot * inv_h;
        T          *dxrow = static_cast<T *>(a.dx) + r * a.dx_rs;
#pragma unroll
        for (int v = 0; v < VPT; v++) {
            const int idx = tid + v * nthr;
            if (idx < nvec) {
                float h[N], d[N], dr[N];
                unpack<T, N>(load_pack<T, N>(hs + idx * N), h);
                unpack<T, N>(load_pack<T, N>(ds + idx * N), d);
                if (DRES) unpack<T, N>(load_pack<T, N>(ring.slot(s, 2) + idx * N), dr);
#pragma unroll
                for (int e = 0; e < N; e++) {
                    d[e] = rstd * (d[e] * w[v][e] - h[e] * coef);
                    if (DRES) d[e] += dr[e];
                }
                store_pack<T, N>(dxrow + idx * N, pack<T, N>(d));
            }
        }
        prev = s;
        if (++s == ring.S) s = 0, phase ^= 1;
    }
    float *part = a.partial + (int64_t)blockIdx.x * a.ld;
#pragma unroll
    for (int v = 0; v < VPT; v++) {
        const int idx = tid + v * nthr;
        if (idx < nvec) {
#pragma unroll
            for (int e = 0; e < N; e += 4)
                *reinterpret_cast<float4 *>(part + (int64_t)idx * N + e) = make_float4(dw[v][e], dw[v][e + 1], dw[v][e + 2], dw[v][e + 3]);
        }
    }
#else
    __trap();
#endif
}

// --- selection -------------------------------------------------------------------------------------------

// The one plan both the workspace query and the launch use.
struct Plan {
    bool    vec;     // 16-byte vectors (else N = 1)
    int     n;       // elements per vector
    int     w;       // row groups: warps a row (fk_rms_rows_pick); 0 = block per row
    bool    ex;      // row groups: the row fills the shape exactly (instance without tail code)
    int     vpt;     // vectors per thread kept in registers; 0 = loop kernel
    int     threads; // block size
    int64_t nvec;    // vectors per row
    int64_t grid;    // blocks
    int64_t prows;   // backward: G, the partial dweight rows (one per block, or per group of the row kernels; DYN: a block)
    int64_t ld;      // workspace row stride (floats)
    size_t  ws;      // workspace bytes (backward)
    size_t  smem;    // dynamic shared memory (row groups: the staged weight; backward block per row: + dweight)
    int     stages;  // row groups: 0 = rows kernels (register prefetch), >= 2 = ring kernels with that many rows
    int     row1;    // forward one row a block (rms_fwd_row_kernel): its MINB (3 or 4), 0 = not that kernel
    bool    res;     // row1: with the residual add
    bool    tma;     // backward through bulk copies (rms_bwd_tma_kernel): vpt, threads, stages (the ring's rows), bps
    bool    dres;    // tma and the DYN instances (dyn_k > 0): with dresidual_out
    int     bps;     // tma: at most this many blocks an SM (0: as many as fit)
    int     dyn_k;   // backward one vector a thread: > 0 = the DYN instance, its static rows a group (set_grid)
};

constexpr int kMaxThreads = 512; // __launch_bounds__(512): up to 128 registers a thread, VPT 8 fits unspilled
constexpr int kWsAlign    = 256;
constexpr int kDynHeader  = 256; // the backward workspace's DynHeader, before the partial rows (aligned)
constexpr size_t kStaticSmem = 32 * sizeof(float); // block_sum's buffer

// Block per row (rows the row groups do not take: wider than 1024 vectors, or not 16-byte aligned): block
// size and vectors per thread, from the sweep in dev/cuda/ops_tune.cu (bf16, 16K rows, H100; GB/s in
// docs/PERF.md). Forward: 4 vectors a thread (hidden 2048-8192: 4 beat 1-3, 5, 6 and 8 by 5-35%; the row's
// loads are all issued before the reduction), 1 for rows under 128 vectors; 8 when 4 would need more than 512
// threads. Backward: the fewest vectors a thread that fit 512 threads (hidden 4096: VPT 1 x 512 threads gave
// 2096 GB/s, VPT 4 x 128 1539; 5120: VPT 2 1730 vs 4 1529): its per-row work (shared-memory dweight update,
// two barriers) is on the critical path, so wider blocks finish a row sooner. Beyond 512 x 8 (forward) or
// 512 x 4 (backward: VPT > 4 spills) vectors, the loop kernel.
void choose_shape(int64_t nvec, bool bwd, Plan *pl) {
    auto threads_for = [&](int vpt) { return ceil_div(ceil_div(nvec, vpt), 32) * 32; };
    if (!bwd) {
        for (int vpt : {nvec < 128 ? 1 : 4, 8})
            if (threads_for(vpt) <= kMaxThreads) {
                pl->vpt = vpt, pl->threads = (int)threads_for(vpt);
                return;
            }
    } else {
        for (int vpt : {1, 2, 3, 4})
            if (threads_for(vpt) <= kMaxThreads) {
                pl->vpt = vpt, pl->threads = (int)threads_for(vpt);
                return;
            }
    }
    pl->vpt = 0, pl->threads = kMaxThreads;
}

// The row-group instances: the shapes of fk_rms_rows_fwd / _fwd_res / _bwd (src/core/ops_select.h), each with
// and without tail code. A shape not listed here answers nullptr (make_plan then reports it).
template <typename T, bool BWD, int W, int V> const void *rows_k(bool ex, bool ring, bool dyn = false, bool dres = true) {
    constexpr int N = kVec<T>;
    if (ring) { // backward only (fk_rms_rows_valid)
        if constexpr (BWD)
            return ex ? (const void *)rms_bwd_ring_kernel<T, N, W, V, true> : (const void *)rms_bwd_ring_kernel<T, N, W, V, false>;
        else return nullptr;
    }
    if constexpr (BWD) {
        if constexpr (V == 1) { // one vector a thread: rms_bwd_vec1_kernel; rows at run time (dyn): two groups a block
            if (dyn && ex) // (with tail code it spilled)
                return dres ? (const void *)rms_bwd_vec1_kernel<T, N, W, true, true> : (const void *)rms_bwd_vec1_kernel<T, N, W, true, true, false>;
            return ex ? (const void *)rms_bwd_vec1_kernel<T, N, W, true> : (const void *)rms_bwd_vec1_kernel<T, N, W, false>;
        }
        else return ex ? (const void *)rms_bwd_rows_kernel<T, N, W, V, true> : (const void *)rms_bwd_rows_kernel<T, N, W, V, false>;
    }
    else return ex ? (const void *)rms_fwd_rows_kernel<T, N, W, V, true> : (const void *)rms_fwd_rows_kernel<T, N, W, V, false>;
}
template <typename T, bool BWD> const void *rows_kernel_for(const Plan &pl) {
    const int key = pl.w * 100 + pl.vpt;
    switch (key) {
    case 801: return BWD && pl.stages == 0 ? rows_k<T, true, 8, 1>(pl.ex, false, pl.dyn_k > 0, pl.dres) : nullptr;
    case 1601: return BWD && pl.stages == 0 ? rows_k<T, true, 16, 1>(pl.ex, false, pl.dyn_k > 0, pl.dres) : nullptr;
    case 402: return rows_k<T, BWD, 4, 2>(pl.ex, pl.stages > 0);
    case 802: return rows_k<T, BWD, 8, 2>(pl.ex, pl.stages > 0);
    case 1002: return rows_k<T, BWD, 10, 2>(pl.ex, pl.stages > 0);
    case 1602: return rows_k<T, BWD, 16, 2>(pl.ex, pl.stages > 0);
    case 405: return BWD ? nullptr : rows_k<T, false, 4, 5>(pl.ex, pl.stages > 0);
    case 504: return BWD ? nullptr : rows_k<T, false, 5, 4>(pl.ex, pl.stages > 0);
    default: return nullptr;
    }
}

template <typename T> const void *row1_kernel_for(const Plan &pl) {
    constexpr int N = kVec<T>;
    if (pl.res) return pl.ex ? (const void *)rms_fwd_row_kernel<T, N, true, true, 3> : (const void *)rms_fwd_row_kernel<T, N, true, false, 3>;
    if (pl.row1 == 4) return pl.ex ? (const void *)rms_fwd_row_kernel<T, N, false, true, 4> : nullptr; // exact rows only
    return pl.ex ? (const void *)rms_fwd_row_kernel<T, N, false, true, 3> : (const void *)rms_fwd_row_kernel<T, N, false, false, 3>;
}

template <typename T> const void *tma_kernel_for(const Plan &pl) {
    constexpr int N = kVec<T>;
    switch (pl.vpt) {
    case 1: return pl.dres ? (const void *)rms_bwd_tma_kernel<T, N, 1, true> : (const void *)rms_bwd_tma_kernel<T, N, 1, false>;
    case 2: return pl.dres ? (const void *)rms_bwd_tma_kernel<T, N, 2, true> : (const void *)rms_bwd_tma_kernel<T, N, 2, false>;
    case 4: return pl.dres ? (const void *)rms_bwd_tma_kernel<T, N, 4, true> : (const void *)rms_bwd_tma_kernel<T, N, 4, false>;
    default: return nullptr;
    }
}

template <typename T, bool BWD> const void *kernel_for(const Plan &pl) {
    if (!BWD && pl.row1) return pl.vec ? row1_kernel_for<T>(pl) : nullptr;
    if (BWD && pl.tma) return pl.vec ? tma_kernel_for<T>(pl) : nullptr;
    if (pl.w > 0) return pl.vec ? rows_kernel_for<T, BWD>(pl) : nullptr;
#define FK_RMS_K(NN, V) (BWD ? (const void *)rms_bwd_kernel<T, NN, V> : (const void *)rms_fwd_kernel<T, NN, V>)
#define FK_RMS_PICK(NN)                                                                                        \
    switch (pl.vpt) {                                                                                          \
    case 1: return FK_RMS_K(NN, 1);                                                                            \
    case 2: return BWD ? (const void *)rms_bwd_kernel<T, NN, 2> : nullptr;                                     \
    case 3: return BWD ? (const void *)rms_bwd_kernel<T, NN, 3> : nullptr;                                     \
    case 4: return FK_RMS_K(NN, 4);                                                                            \
    case 8: return BWD ? nullptr : (const void *)rms_fwd_kernel<T, NN, 8>;                                     \
    default: return BWD ? (const void *)rms_bwd_loop_kernel<T, NN> : (const void *)rms_fwd_loop_kernel<T, NN>; \
    }
    if (pl.vec) {
        FK_RMS_PICK(kVec<T>)
    } else {
        FK_RMS_PICK(1)
    }
#undef FK_RMS_PICK
#undef FK_RMS_K
}

const void *pick_kernel(fk_dtype dt, const Plan &pl, bool bwd) {
    switch (dt) {
    case FK_DTYPE_F32: return bwd ? kernel_for<float, true>(pl) : kernel_for<float, false>(pl);
    case FK_DTYPE_F16: return bwd ? kernel_for<__half, true>(pl) : kernel_for<__half, false>(pl);
    default: return bwd ? kernel_for<__nv_bfloat16, true>(pl) : kernel_for<__nv_bfloat16, false>(pl);
    }
}

// Turns a backward row-group plan into its ring form with `stages` rows (rms_bwd_ring_kernel; the forward has no
// ring: it lost at every width). Operands a row: h, dy, and dresidual_out when given.
void set_ring(Plan *pl, int stages, bool dres) {
    pl->stages = stages;
    pl->smem   = ring_offset(pl->nvec, pl->n, pl->threads) + ring_bytes(stages, dres ? 3 : 2, pl->vpt, pl->threads);
}

// Whether rms_bwd_tma_kernel can take p (pl: its vector plan, plan_shape's `vec` and nvec): a 9.0+ device, 16-byte
// aligned bases and strides (pl.vec), whole 16-byte rows (hidden a multiple of the vector: the bulk copy's rule),
// and a row of at most 4 x 512 vectors.
bool tma_fits(const struct fk_context *ctx, const fk_rmsnorm_problem *p, const Plan &pl) {
    return ctx->cc_major >= 9 && pl.vec && p->hidden % pl.n == 0 && pl.nvec <= 4 * kMaxThreads;
}
// Turns a backward plan into rms_bwd_tma_kernel's: vpt vectors a thread, a ring of `stages` rows, at most bps
// blocks an SM (0: as many as fit).
void set_tma(Plan *pl, const fk_rmsnorm_problem *p, int vpt, int stages, int bps) {
    pl->tma = true, pl->dres = p->dresidual_out != nullptr, pl->w = 0, pl->ex = true, pl->row1 = 0;
    pl->vpt = vpt, pl->stages = stages, pl->bps = bps;
    pl->threads = (int)(ceil_div(ceil_div(pl->nvec, vpt), 32) * 32);
    pl->smem    = tma_smem(p->hidden, (int)fk_dtype_size(p->dtype), stages, pl->dres ? 3 : 2);
}

// A row stride that matters only when there is more than one row.
inline int64_t rs_eff(const fk_rmsnorm_problem *p, int64_t rs) { return p->rows > 1 ? rs : 0; }

// Kernel, block size and shared memory for p (grid, workspace: set_grid below). No device call.
// allow_rows = false forces the block-per-row kernels (dev/cuda/ops_tune.cu times the two).
fk_status plan_shape(const char *op, const struct fk_context *ctx, const fk_rmsnorm_problem *p, bool bwd, Plan *pl,
                     bool allow_rows = true) {
    if (p->dtype != FK_DTYPE_F32 && p->dtype != FK_DTYPE_F16 && p->dtype != FK_DTYPE_BF16)
        return fk_error(FK_STATUS_NOT_SUPPORTED_DTYPE, "%s: dtype %s is not supported on CUDA", op,
                        fk_dtype_name(p->dtype));
    const fk_dtype wd = p->weight_dtype, dwd = p->dweight_dtype;
    if ((wd != FK_DTYPE_F32 && wd != FK_DTYPE_F16 && wd != FK_DTYPE_BF16) ||
        (bwd && dwd != FK_DTYPE_F32 && dwd != FK_DTYPE_F16 && dwd != FK_DTYPE_BF16))
        return fk_error(FK_STATUS_NOT_SUPPORTED_DTYPE, "%s: weight/dweight dtype must be f32, f16 or bf16 on CUDA", op);
    const size_t es = fk_dtype_size(p->dtype);
    bool         vec;
    if (!bwd)
        vec = aligned16(p->x, es, rs_eff(p, p->x_rs)) && aligned16(p->y, es, rs_eff(p, p->y_rs)) &&
              (!p->residual || (aligned16(p->residual, es, rs_eff(p, p->residual_rs)) &&
                                aligned16(p->residual_out, es, rs_eff(p, p->residual_out_rs))));
    else
        vec = aligned16(p->x, es, rs_eff(p, p->x_rs)) && aligned16(p->dy, es, rs_eff(p, p->dy_rs)) &&
              aligned16(p->dx, es, rs_eff(p, p->dx_rs)) &&
              (!p->dresidual_out || aligned16(p->dresidual_out, es, rs_eff(p, p->dresidual_out_rs)));
    pl->vec  = vec;
    pl->n    = vec ? (int)(16 / es) : 1;
    pl->nvec = ceil_div(p->hidden, pl->n);
    pl->ld   = ceil_div(p->hidden, 4) * 4;
    pl->ws   = 0;
    pl->dyn_k = 0;
    pl->w = 0, pl->ex = false, pl->stages = 0, pl->row1 = 0, pl->res = false, pl->tma = false, pl->dres = false, pl->bps = 0;
    int r1_threads, r1_minb;
    if (allow_rows && !bwd && vec && p->hidden % pl->n == 0 && p->weight_dtype == p->dtype && (uintptr_t)p->weight % 16 == 0 &&
        p->rows <= 0x7fffffff && fk_rms_row1_pick(pl->nvec, p->residual != nullptr, &r1_threads, &r1_minb)) {
        pl->row1 = r1_minb, pl->res = p->residual != nullptr, pl->vpt = 2, pl->threads = r1_threads, pl->smem = 0;
        pl->ex = p->hidden == (int64_t)2 * r1_threads * pl->n;
        return FK_STATUS_SUCCESS;
    }
    fk_rms_tma_shape ts;
    if (allow_rows && bwd && tma_fits(ctx, p, *pl) && fk_rms_tma_pick(pl->nvec, p->dresidual_out != nullptr, &ts)) {
        set_tma(pl, p, ts.vpt, ts.stages, ts.bps);
        if (pl->smem <= (size_t)ctx->max_smem_optin) return FK_STATUS_SUCCESS;
        pl->tma = false, pl->dres = false, pl->bps = 0, pl->stages = 0; // (not at 1024 vectors x 3 rows x 3: 144 KB)
    }
    fk_rms_rows_shape rs;
    if (allow_rows && vec && fk_rms_rows_pick(pl->nvec, bwd, p->residual != nullptr, &rs)) {
        pl->w = rs.w, pl->vpt = rs.vpl, pl->threads = rs.threads;
        pl->ex   = p->hidden == fk_rms_rows_cap(rs) * pl->n;
        pl->smem = rows_smem(pl->nvec, pl->n, pl->threads);
        if (rs.stages > 0) {
            set_ring(pl, rs.stages, p->dresidual_out != nullptr); // rs.stages > 0: backward only (fk_rms_rows_valid)
            if (pl->smem > (size_t)ctx->max_smem_optin) pl->stages = 0, pl->smem = rows_smem(pl->nvec, pl->n, pl->threads);
        }
        if (pl->smem <= (size_t)ctx->max_smem_optin) return FK_STATUS_SUCCESS;
        pl->w = 0; // (cannot happen at 1024 x 16 bytes: 16 KB) the block-per-row kernels
    }
    choose_shape(pl->nvec, bwd, pl);
    pl->smem = bwd && pl->vpt > 0 ? 2 * (size_t)pl->n * (size_t)pl->nvec * sizeof(float) : 0;
    if (pl->smem + kStaticSmem > (size_t)ctx->max_smem_optin) pl->vpt = 0, pl->threads = kMaxThreads, pl->smem = 0;
    return FK_STATUS_SUCCESS;
}

// Needs the context's device selected (the occupancy query is per device). Persistent grid (row groups, and
// the backward): SMs x resident blocks, at most one block per `groups` rows; the forward's block per row: a
// block a row.
// Shared memory of rms_bwd_vec1_kernel's two-group blocks: the rows kernels' (weight, group sums), then group 1's
// dweight partial (dw_pair_partial's comb).
inline size_t pair_smem(int64_t nvec, int n, int threads) {
    return rows_smem(nvec, n, threads) + (size_t)nvec * n * sizeof(float);
}

// Blocks of kernel k that fit an SM with `threads` and `smem` (plus static_smem of static buffers); past 48 KB in
// all a kernel must opt in to more first.
cudaError_t blocks_per_sm(const void *k, int threads, size_t smem, size_t static_smem, int *per_sm) {
    cudaError_t e = cudaSuccess;
    if (smem + static_smem > 48 * 1024) e = cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    return e == cudaSuccess ? cudaOccupancyMaxActiveBlocksPerMultiprocessor(per_sm, k, threads, smem) : e;
}

fk_status set_grid(const char *op, const struct fk_context *ctx, const fk_rmsnorm_problem *p, bool bwd, Plan *pl) {
    const int64_t rows = p->rows > 0 ? p->rows : 1;
    if (!bwd && pl->w == 0) {
        pl->grid = rows < 0x7fffffff ? rows : 0x7fffffff;
        return FK_STATUS_SUCCESS;
    }
    // rms_bwd_vec1_kernel's exact rows (one vector a thread). Its static rows at W 8 (two groups: 512 threads,
    // fk_rms_rows_bwd) add their partials in shared memory: one partial row a block.
    const bool vec1ex = bwd && !pl->tma && pl->w > 0 && pl->vpt == 1 && pl->stages == 0 && pl->ex;
    const bool pair8  = vec1ex && pl->w == 8;
    if (pair8) pl->smem = pair_smem(pl->nvec, pl->n, pl->threads);
    const void *k = pick_kernel(p->dtype, *pl, bwd);
    if (!k) return fk_error(FK_STATUS_INTERNAL, "%s: no RMSNorm instance for %d warps x %d vectors", op, pl->w, pl->vpt);
    int               per_sm = 0;
    const cudaError_t e      = blocks_per_sm(k, pl->threads, pl->smem, pl->w > 0 ? 0 : kStaticSmem, &per_sm);
    if (e != cudaSuccess)
        return fk_error(FK_STATUS_CUDA_ERROR, "%s: cudaOccupancyMaxActiveBlocksPerMultiprocessor: %s", op,
                        cudaGetErrorString(e));
    if (per_sm < 1) per_sm = 1;
    if (pl->tma && pl->bps > 0 && per_sm > pl->bps) per_sm = pl->bps;
    const int64_t groups = pl->w > 0 ? pl->threads / (32 * pl->w) : 1;
    const int64_t full = (int64_t)ctx->sm_count * per_sm, need = ceil_div(rows, groups);
    pl->grid           = need < full ? need : full;
    pl->prows          = pair8 ? pl->grid : pl->grid * groups;
    // One vector a thread, exact rows, not deterministic (rms_bwd_vec1_kernel's DYN instances: a group's rows,
    // and so the fp32 order of the dweight sum, depend on timing): the last 15% (W 16) / 20% (W 8) of rows
    // handed out at run time when every group keeps at least two static rows (an even count; docs/PERF.md,
    // eighth session). Two groups a block (W 16: 1024 threads), one partial dweight row a block (ninth session).
    // The workspace: a DynHeader, then the partial rows (every backward plan), sized for the static plan's rows
    // whether or not DYN takes it (so `deterministic` does not change the size asked for).
    const int64_t sprows = pl->prows;
    if (vec1ex && !p->deterministic && rows < 0x7fffffff) {
        Plan d    = *pl;
        d.threads = 64 * d.w, d.smem = pair_smem(d.nvec, d.n, d.threads);
        d.dyn_k = 1, d.dres = p->dresidual_out != nullptr; // (pick_kernel: the DYN instance)
        const void *kd = pick_kernel(p->dtype, d, true);
        int         pd = 0;
        if (kd && blocks_per_sm(kd, d.threads, d.smem, 0, &pd) == cudaSuccess && pd >= 1) {
            const int64_t dfull = (int64_t)ctx->sm_count * pd, dneed = ceil_div(rows, 2);
            d.grid = dneed < dfull ? dneed : dfull, d.prows = d.grid;
            const int64_t ng = 2 * d.grid, k = rows * (d.w >= 16 ? 85 : 80) / 100 / ng / 2 * 2;
            if (k >= 2 && k * ng <= rows) d.dyn_k = (int)k, *pl = d;
        }
    }
    if (bwd) pl->ws = (size_t)(pl->prows > sprows ? pl->prows : sprows) * (size_t)pl->ld * sizeof(float) + kWsAlign + kDynHeader;
    return FK_STATUS_SUCCESS;
}

fk_status make_plan(const char *op, const struct fk_context *ctx, const fk_rmsnorm_problem *p, bool bwd, Plan *pl,
                    bool allow_rows = true) {
    FK_TRY(plan_shape(op, ctx, p, bwd, pl, allow_rows));
    return set_grid(op, ctx, p, bwd, pl);
}

// The DYN launches' tags (DynHeader): even, nonzero, unique in the process, from a salt that differs from run to run.
unsigned long long dyn_next_tag() {
    static std::atomic<unsigned long long> count{0};
    static const unsigned long long        salt =
        ((unsigned long long)std::chrono::steady_clock::now().time_since_epoch().count() * 0x9e3779b97f4a7c15ull) ^
        (unsigned long long)(uintptr_t)&count;
    const unsigned long long t = (salt + (count.fetch_add(1, std::memory_order_relaxed) + 1) * 2) & ~1ull;
    return t ? t : 2; // even and not 0 (tag | 1 must not be 1, the reset value)
}

RmsArgs make_args(const fk_rmsnorm_problem *p, const Plan &pl) {
    RmsArgs a;
    a.x = p->x, a.residual = p->residual, a.weight = p->weight, a.dy = p->dy, a.dres = p->dresidual_out;
    a.residual_out = p->residual_out, a.y = p->y, a.dx = p->dx, a.dweight = p->dweight;
    a.rstd = (float *)p->rstd, a.partial = nullptr;
    a.x_rs = p->x_rs, a.residual_rs = p->residual_rs, a.residual_out_rs = p->residual_out_rs, a.y_rs = p->y_rs;
    a.dy_rs = p->dy_rs, a.dres_rs = p->dresidual_out_rs, a.dx_rs = p->dx_rs;
    a.rows = p->rows, a.hidden = p->hidden, a.nvec = pl.nvec, a.ld = pl.ld;
    a.wdt = p->weight_dtype, a.dwdt = p->dweight_dtype;
    a.eps = p->eps, a.off = p->weight_offset;
    a.wvec   = ((uintptr_t)p->weight % 16) == 0;
    a.stages = pl.stages;
    a.dyn_k = pl.dyn_k, a.dyn_tag = 0, a.dyn = nullptr;
    return a;
}

cudaError_t launch(const void *kernel, const Plan &pl, RmsArgs &a, cudaStream_t st) {
    void *params[] = {&a};
    return cudaLaunchKernel(kernel, dim3((unsigned)pl.grid), dim3((unsigned)pl.threads), params, pl.smem, st);
}
// The backward's dweight reduction after its main kernel: on 9.0+ devices with a programmatic dependency.
cudaError_t launch_reduce(const struct fk_context *ctx, const Plan &pl, const RmsArgs &a, int64_t hidden, cudaStream_t st) {
    cudaLaunchConfig_t  cfg = {};
    cudaLaunchAttribute at[1];
    at[0].id                                         = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.gridDim = dim3((unsigned)ceil_div(hidden, 32)), cfg.blockDim = dim3(32, kRedRows), cfg.stream = st;
    cfg.attrs = at, cfg.numAttrs = ctx->cc_major >= 9 ? 1 : 0;
    return cudaLaunchKernelEx(&cfg, rms_dweight_reduce_kernel, (const float *)a.partial, (int64_t)pl.prows, (int64_t)pl.ld,
                              hidden, a.dweight, a.dwdt, a.dyn);
}

} // namespace

extern "C" fk_status fk_cuda_rmsnorm_fwd(const struct fk_context *ctx, const fk_rmsnorm_problem *p, void *stream) {
    static const char *op = "rmsnorm_fwd";
    DeviceScope        scope(ctx->device.index);
    FK_TRY(scope_status(op, scope, ctx->device.index));
    Plan pl;
    FK_TRY(make_plan(op, ctx, p, false, &pl));
    RmsArgs a = make_args(p, pl);
    return launch_result(op, pl.row1 ? "rms_fwd_row_kernel" : pl.w ? "rms_fwd_rows_kernel" : "rms_fwd_kernel", launch(pick_kernel(p->dtype, pl, false), pl, a, (cudaStream_t)stream));
}

extern "C" fk_status fk_cuda_rmsnorm_bwd_select(const struct fk_context *ctx, const fk_rmsnorm_problem *p,
                                                size_t *ws_bytes) {
    static const char *op = "rmsnorm_bwd";
    *ws_bytes             = 0;
    DeviceScope scope(ctx->device.index);
    FK_TRY(scope_status(op, scope, ctx->device.index));
    Plan pl;
    FK_TRY(make_plan(op, ctx, p, true, &pl));
    *ws_bytes = pl.ws;
    return FK_STATUS_SUCCESS;
}

extern "C" fk_status fk_cuda_rmsnorm_bwd(const struct fk_context *ctx, const fk_rmsnorm_problem *p, void *ws,
                                         size_t ws_bytes, void *stream) {
    static const char *op = "rmsnorm_bwd";
    DeviceScope        scope(ctx->device.index);
    FK_TRY(scope_status(op, scope, ctx->device.index));
    Plan pl;
    FK_TRY(make_plan(op, ctx, p, true, &pl));
    if (ws_bytes < pl.ws || !ws)
        return fk_error(FK_STATUS_WORKSPACE_TOO_SMALL, "%s: workspace of %zu bytes, %zu needed", op, ws_bytes, pl.ws);
    RmsArgs a = make_args(p, pl);
    a.dyn     = (DynHeader *)(((uintptr_t)ws + kWsAlign - 1) & ~(uintptr_t)(kWsAlign - 1));
    a.partial = (float *)((char *)a.dyn + kDynHeader);
    a.dyn_tag = pl.dyn_k > 0 ? dyn_next_tag() : 0;
    cudaStream_t st = (cudaStream_t)stream;
    FK_TRY(launch_result(op, pl.tma ? "rms_bwd_tma_kernel" : pl.w ? "rms_bwd_rows_kernel" : "rms_bwd_kernel",
                         launch(pick_kernel(p->dtype, pl, true), pl, a, st)));
    return launch_result(op, "rms_dweight_reduce_kernel", launch_reduce(ctx, pl, a, p->hidden, st));
}
