/*
 * ops_next.cuh — CANDIDATE kernels for the fused ops (issue 6: >= 1.0x torch.compile and >= 90% of copy).
 * Not used by the library: only dev/cuda/ops_tune.cu includes this file, checks every candidate against a
 * float64 host computation and times it beside the production kernel (`bench/next_ops.sh`). A candidate is
 * promoted into rmsnorm.cu / swiglu.cu / rope.cu only after a GPU run shows it pays (docs/PERF.md, "GPU:
 * fused ops", "Candidates, not yet run on a GPU"). Kept out of src/cuda/*.cu so the library's compile time
 * does not grow with the instances a sweep needs.
 *
 * What each candidate changes against production, and why (the reasons are PERF.md's "Falls short" list):
 *   RMSNorm forward  rms_fwd_rows_kernel: a group of W warps per row (W = 1: a warp), several groups a block,
 *                    a persistent grid; the weight (offset added, fp32) staged once per block in shared memory;
 *                    the row's sum of squares reduced with shuffles (+ one named barrier of the group when
 *                    W > 1), never a block-wide barrier per row. Production: a block per row, the barrier pair
 *                    of block_sum and the weight's L1/L2 load latency on every row's critical path.
 *   RMSNorm backward rms_bwd_rows_kernel: the same groups; each thread keeps the dweight partial of its
 *                    columns in registers (VPL x N fp32), so a row costs no shared-memory read-modify-write
 *                    (production: 2 x 32 B of shared traffic per 16-byte vector, 2-way bank conflicts) and one
 *                    group barrier instead of two block barriers. dresidual_out is loaded with h and dy (not
 *                    after the reduction). At the end the block adds its groups' partials in group order in
 *                    shared memory and writes one [hidden] fp32 row of the existing [G, ld] workspace; the
 *                    production reduction kernel adds the G rows in its fixed order: still deterministic.
 *   SwiGLU           swiglu_flat_kernel: contiguous operands as one flat array; every thread one whole
 *                    16-byte vector with no partial-vector branch (one thread past the end does the < N
 *                    element tail), 32-bit offsets, no grid-stride loop; load/store cache hints (LD, ST below).
 *   RoPE             rope_tok_kernel: per-token base pointers formed once (production: 64-bit multiply-adds per
 *                    head), 32-bit head offsets and token division, fp32 tables read as float4, a thread's
 *                    heads g apart with g = 1 allowed (one thread per unit then reads its table row once per
 *                    token and applies it to every head), several tokens per block (ty) in a grid-stride loop.
 *
 * Weight layout in shared memory ("split"): vector idx's N fp32 values as N/4 float4 chunks, chunk c at
 * float4 index c * nvec + idx, so a warp's float4 reads of one chunk are 512 consecutive bytes (no bank
 * conflict); N < 4 (scalar path) is plain [nvec][N].
 */
#ifndef FK_CUDA_OPS_NEXT_CUH
#define FK_CUDA_OPS_NEXT_CUH

#include "ops_common.cuh"

#include <math.h>
#include <string.h>

namespace fk_next {

using namespace fk_ops;

// --- shared helpers --------------------------------------------------------------------------------------

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

// Index of element k of vector idx in the split layout (see the file comment).
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

__device__ __forceinline__ float load_elem(const void *base, fk_dtype dt, int j) {
    if (dt == FK_DTYPE_F32) return static_cast<const float *>(base)[j];
    if (dt == FK_DTYPE_BF16) return __bfloat162float(static_cast<const __nv_bfloat16 *>(base)[j]);
    return __half2float(static_cast<const __half *>(base)[j]);
}

// --- RMSNorm ---------------------------------------------------------------------------------------------

struct NormArgs {
    const void *x, *residual, *weight, *dy, *dres;
    void       *residual_out, *y, *dx;
    float      *rstd, *partial; // partial: backward workspace [gridDim.x, ld] fp32
    int64_t     x_rs, residual_rs, residual_out_rs, y_rs, dy_rs, dres_rs, dx_rs;
    int64_t     rows, ld;
    int         hidden, nvec; // nvec = ceil(hidden / N)
    fk_dtype    wdt;
    float       eps, off;
};

// Shared memory of both kernels: the staged weight (nvec x N fp32) and 2 x W floats per group.
inline size_t rows_smem(int nvec, int n, int threads, int w) {
    return (size_t)nvec * n * sizeof(float) + (size_t)(threads / 32) * 2 * sizeof(float) + 16;
}

// offset + weight as fp32 in the split layout, zero past hidden. Once per block: scalar loads are fine.
template <int N> __device__ __forceinline__ void stage_weight(const NormArgs &a, float *ws) {
    for (int e = threadIdx.x; e < a.nvec * N; e += blockDim.x) {
        const int idx = e / N, k = e - idx * N;
        ws[split_at<N>(a.nvec, idx, k)] = e < a.hidden ? a.off + load_elem(a.weight, a.wdt, e) : 0.f;
    }
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

template <typename T, int N> __device__ __forceinline__ Pack<T, N> add_round(const Pack<T, N> &x, const Pack<T, N> &r) {
    float xf[N], rf[N];
    unpack<T, N>(x, xf);
    unpack<T, N>(r, rf);
#pragma unroll
    for (int k = 0; k < N; k++) xf[k] += rf[k];
    return pack<T, N>(xf);
}
template <typename T, int N> __device__ __forceinline__ float sum_sq(const Pack<T, N> &h) {
    float f[N], s = 0.f;
    unpack<T, N>(h, f);
#pragma unroll
    for (int k = 0; k < N; k++) s += f[k] * f[k];
    return s;
}
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

// Forward. The row stays in registers as VPL packs (vectors gt, gt + 32W, ...): hidden <= VPL x 32 W x N.
template <typename T, int N, int W, int VPL, bool EX>
__global__ void __launch_bounds__(512) rms_fwd_rows_kernel(const NormArgs a) {
    extern __shared__ float4 next_sm4[];
    float *ws  = reinterpret_cast<float *>(next_sm4);
    float *red = ws + a.nvec * N;
    stage_weight<N>(a, ws);
    __syncthreads(); // the only block-wide barrier
    const Group<W> G;
    float         *gred   = red + G.grp * 2 * W;
    const int      hidden = a.hidden;
    // Whole vectors [0, nfull) sit in the VPL packs; a partial last vector (hidden % N elements, !EX only) is
    // held apart by the one thread it falls to, so the unrolled loops carry no element-wise code (with it,
    // VPL 8 spilled at 128 registers).
    const int  nfull = EX ? VPL * 32 * W : hidden / N, tailn = EX ? 0 : hidden - nfull * N;
    const bool own_tail = !EX && tailn > 0 && G.gt == nfull % (32 * W);
    int        parity   = 0;
    for (int64_t r = (int64_t)blockIdx.x * G.groups + G.grp; r < a.rows; r += (int64_t)gridDim.x * G.groups) {
        const T   *x    = static_cast<const T *>(a.x) + r * a.x_rs;
        const T   *res  = a.residual ? static_cast<const T *>(a.residual) + r * a.residual_rs : nullptr;
        T         *rout = a.residual ? static_cast<T *>(a.residual_out) + r * a.residual_out_rs : nullptr;
        T         *y    = static_cast<T *>(a.y) + r * a.y_rs;
        Pack<T, N> h[VPL], ht;
#pragma unroll
        for (int v = 0; v < VPL; v++) {
            const int idx = G.gt + v * 32 * W;
            if (EX || idx < nfull) h[v] = load_pack<T, N>(x + idx * N);
        }
        if (own_tail) ht = load_pack_n<T, N>(x + nfull * N, tailn);
        if (res) {
            Pack<T, N> rp[VPL], rt;
#pragma unroll
            for (int v = 0; v < VPL; v++) {
                const int idx = G.gt + v * 32 * W;
                if (EX || idx < nfull) rp[v] = load_pack<T, N>(res + idx * N);
            }
            if (own_tail) rt = load_pack_n<T, N>(res + nfull * N, tailn);
#pragma unroll
            for (int v = 0; v < VPL; v++) {
                const int idx = G.gt + v * 32 * W;
                if (EX || idx < nfull) {
                    h[v] = add_round<T, N>(h[v], rp[v]); // h rounded to T, as the unfused add stores it
                    store_pack<T, N>(rout + idx * N, h[v]);
                }
            }
            if (own_tail) {
                ht = add_round<T, N>(ht, rt);
                store_pack_n<T, N>(rout + nfull * N, ht, tailn);
            }
        }
        float ss = own_tail ? sum_sq<T, N>(ht) : 0.f; // zeros past tailn
#pragma unroll
        for (int v = 0; v < VPL; v++)
            if (EX || G.gt + v * 32 * W < nfull) ss += sum_sq<T, N>(h[v]);
        ss               = group_sum<W>(ss, gred, G.wig, G.lane, G.grp + 1, parity);
        parity          ^= 1;
        const float rstd = 1.0f / sqrtf(ss / (float)hidden + a.eps);
        if (a.rstd && G.gt == 0) a.rstd[r] = rstd;
#pragma unroll
        for (int v = 0; v < VPL; v++) {
            const int idx = G.gt + v * 32 * W;
            if (EX || idx < nfull) {
                opaque(h[v]); // keep the packed form live across the reduction, not VPL x N floats
                store_pack<T, N>(y + idx * N, scale_row<T, N>(h[v], ws, a.nvec, idx, rstd));
            }
        }
        if (own_tail) store_pack_n<T, N>(y + nfull * N, scale_row<T, N>(ht, ws, a.nvec, nfull, rstd), tailn);
    }
}

// Backward. h, dy (and dresidual_out) of the row in registers; the dweight partial of the thread's columns
// in VPL x N fp32 registers across all of the group's rows.
template <typename T, int N, int W, int VPL, bool EX>
__global__ void __launch_bounds__(512) rms_bwd_rows_kernel(const NormArgs a) {
    extern __shared__ float4 next_sm4[];
    float *ws  = reinterpret_cast<float *>(next_sm4);
    float *red = ws + a.nvec * N;
    stage_weight<N>(a, ws);
    __syncthreads();
    const Group<W> G;
    float         *gred   = red + G.grp * 2 * W;
    const int      hidden = a.hidden;
    const float    inv_h  = 1.0f / (float)hidden;
    float          dw[VPL][N];
#pragma unroll
    for (int v = 0; v < VPL; v++)
#pragma unroll
        for (int k = 0; k < N; k++) dw[v][k] = 0.f;
    int parity = 0;
    for (int64_t r = (int64_t)blockIdx.x * G.groups + G.grp; r < a.rows; r += (int64_t)gridDim.x * G.groups) {
        const T    *hrow  = static_cast<const T *>(a.x) + r * a.x_rs;
        const T    *dyrow = static_cast<const T *>(a.dy) + r * a.dy_rs;
        const T    *drow  = a.dres ? static_cast<const T *>(a.dres) + r * a.dres_rs : nullptr;
        T          *dxrow = static_cast<T *>(a.dx) + r * a.dx_rs;
        const float rstd  = a.rstd[r];
        Pack<T, N>  hp[VPL], dp[VPL], rp[VPL];
#pragma unroll
        for (int v = 0; v < VPL; v++) {
            const int j = (G.gt + v * 32 * W) * N, n = EX ? N : min(hidden - j, N);
            if (EX || n > 0) {
                hp[v] = ld_row<T, N, EX>(hrow + j, n);
                dp[v] = ld_row<T, N, EX>(dyrow + j, n);
                if (drow) rp[v] = ld_row<T, N, EX>(drow + j, n);
            }
        }
        float dot = 0.f;
#pragma unroll
        for (int v = 0; v < VPL; v++) {
            const int idx = G.gt + v * 32 * W;
            if (EX || hidden - idx * N > 0) {
                float h[N], d[N], w[N];
                unpack<T, N>(hp[v], h);
                unpack<T, N>(dp[v], d);
                lds_split<N>(ws, a.nvec, idx, w);
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
#pragma unroll
        for (int v = 0; v < VPL; v++) {
            const int idx = G.gt + v * 32 * W, j = idx * N, n = EX ? N : min(hidden - j, N);
            if (EX || n > 0) {
                float h[N], d[N], w[N], dr[N];
                opaque(hp[v]);
                opaque(dp[v]);
                unpack<T, N>(hp[v], h);
                unpack<T, N>(dp[v], d);
                lds_split<N>(ws, a.nvec, idx, w);
                if (drow) unpack<T, N>(rp[v], dr);
#pragma unroll
                for (int k = 0; k < N; k++) {
                    d[k] = rstd * (d[k] * w[k] - h[k] * coef);
                    if (drow) d[k] += dr[k];
                }
                st_row<T, N, EX>(dxrow + j, pack<T, N>(d), n);
            }
        }
    }
    // The block's partial: its groups' registers added in group order in shared memory (the weight is dead once
    // every group has left its row loop), then one row of the workspace.
    __syncthreads();
    for (int g = 0; g < G.groups; g++) {
        if (G.grp == g) {
#pragma unroll
            for (int v = 0; v < VPL; v++) {
                const int idx = G.gt + v * 32 * W;
                if (idx < a.nvec) {
#pragma unroll
                    for (int k = 0; k < N; k++) {
                        const int at = split_at<N>(a.nvec, idx, k);
                        ws[at]       = (g == 0 ? 0.f : ws[at]) + dw[v][k];
                    }
                }
            }
        }
        __syncthreads();
    }
    float *part = a.partial + (int64_t)blockIdx.x * a.ld;
    for (int e = threadIdx.x; e < hidden; e += blockDim.x) {
        const int idx = e / N;
        part[e]       = ws[split_at<N>(a.nvec, idx, e - idx * N)];
    }
}

// Host: a persistent grid of SMs x resident blocks (at most one group per row). Returns the kernel's launch
// error, or cudaErrorInvalidValue when the shape cannot hold the row (the caller then skips the candidate).
struct RowsLaunch {
    const void *kernel;
    int         threads;
    int64_t     grid;
    size_t      smem;
};
template <typename T, int N, int W, int VPL, bool BWD>
cudaError_t rows_plan(const NormArgs &a, int threads, int sm_count, RowsLaunch *L) {
    const int groups = threads / (32 * W);
    if (threads % (32 * W) != 0 || groups < 1 || threads > 512 || (W > 1 && groups > 15) ||
        (int64_t)a.hidden > (int64_t)VPL * 32 * W * N || a.nvec != (a.hidden + N - 1) / N)
        return cudaErrorInvalidValue;
    const bool ex = a.hidden == VPL * 32 * W * N;
    // The forward's general (tail) instance at VPL >= 8 spilled (ptxas, 128-register cap): exact rows only there;
    // a hidden size with a tail takes a candidate with fewer vectors a thread.
    if (!BWD && N > 1 && VPL >= 8 && !ex) return cudaErrorInvalidValue;
    if constexpr (BWD)
        L->kernel = ex ? (const void *)rms_bwd_rows_kernel<T, N, W, VPL, true> : (const void *)rms_bwd_rows_kernel<T, N, W, VPL, false>;
    else if constexpr (N > 1 && VPL >= 8) L->kernel = (const void *)rms_fwd_rows_kernel<T, N, W, VPL, true>;
    else L->kernel = ex ? (const void *)rms_fwd_rows_kernel<T, N, W, VPL, true> : (const void *)rms_fwd_rows_kernel<T, N, W, VPL, false>;
    L->threads = threads;
    L->smem    = rows_smem(a.nvec, N, threads, W);
    cudaError_t e = cudaSuccess;
    if (L->smem > 48 * 1024) e = cudaFuncSetAttribute(L->kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)L->smem);
    int per_sm = 0;
    if (e == cudaSuccess) e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, L->kernel, threads, L->smem);
    if (e != cudaSuccess) return e;
    if (per_sm < 1) return cudaErrorInvalidConfiguration;
    const int64_t full = (int64_t)sm_count * per_sm, need = ceil_div(a.rows, groups);
    L->grid            = need < full ? need : full;
    return cudaSuccess;
}
inline cudaError_t rows_launch(const RowsLaunch &L, NormArgs &a, cudaStream_t st) {
    void *params[] = {&a};
    return cudaLaunchKernel(L.kernel, dim3((unsigned)L.grid), dim3((unsigned)L.threads), params, L.smem, st);
}

// --- SwiGLU ----------------------------------------------------------------------------------------------

// 16-byte global accesses with cache hints. LD: 0 plain; 1 ld.global.nc.L1::no_allocate (read-only path, no
// L1 line kept: nothing is re-read); 2 as 1 plus .L2::256B (DRAM fetched in 256-byte sectors); 3 ld.global.cs
// (streaming: evict first). ST: 0 plain; 1 st.global.cs (streaming). LD 1-2 need inputs that no output aliases
// (.nc assumes the data is read-only for the kernel's lifetime): the launcher checks.
template <int LD> __device__ __forceinline__ uint4 ld16(const void *p) {
    uint4 v;
    if constexpr (LD == 1)
        asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                     : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                     : "l"(p));
    else if constexpr (LD == 2)
        asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
                     : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                     : "l"(p));
    else if constexpr (LD == 3)
        asm volatile("ld.global.cs.v4.u32 {%0, %1, %2, %3}, [%4];"
                     : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                     : "l"(p));
    else v = *reinterpret_cast<const uint4 *>(p);
    return v;
}
template <int ST> __device__ __forceinline__ void st16(void *p, uint4 v) {
    if constexpr (ST == 1)
        asm volatile("st.global.cs.v4.u32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w)
                     : "memory");
    else *reinterpret_cast<uint4 *>(p) = v;
}

struct FlatArgs {
    const void *gate, *up, *dout;
    void       *out, *dgate, *dup;
    uint32_t    nvec; // whole vectors: n / N
    uint32_t    n;    // elements (< 2^32)
};

__device__ __forceinline__ float sigmoid_fast(float g) { return __frcp_rn(1.0f + __expf(-g)); }

template <typename T, bool BWD, int N>
__device__ __forceinline__ void swiglu_math(const float (&g)[N], const float (&u)[N], const float (&d)[N], float (&o1)[N],
                                            float (&o2)[N]) {
#pragma unroll
    for (int e = 0; e < N; e++) {
        const float sg = sigmoid_fast(g[e]);
        if (!BWD) o1[e] = g[e] * sg * u[e];
        else {
            o1[e] = d[e] * u[e] * sg * (1.0f + g[e] * (1.0f - sg));
            o2[e] = d[e] * g[e] * sg;
        }
    }
}

// Thread i < nvec: vector i of every operand, whole, no branch; thread nvec: the n % N elements of the tail.
// Grid: ceil((nvec + 1) / blockDim) blocks (< 2^31 since n < 2^32).
template <typename T, bool BWD, int LD, int ST>
__global__ void __launch_bounds__(256) swiglu_flat_kernel(const FlatArgs a) {
    constexpr int  N = kVec<T>;
    using P          = Pack<T, N>;
    const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < a.nvec) {
        const uint32_t o = i * N; // element offset: < 2^32
        union {
            uint4 u;
            P     p;
        } gv, uv, dv, r1, r2;
        gv.u = ld16<LD>(static_cast<const T *>(a.gate) + o);
        uv.u = ld16<LD>(static_cast<const T *>(a.up) + o);
        if (BWD) dv.u = ld16<LD>(static_cast<const T *>(a.dout) + o);
        float g[N], u[N], d[N], o1[N], o2[N];
        unpack<T, N>(gv.p, g);
        unpack<T, N>(uv.p, u);
        if (BWD) unpack<T, N>(dv.p, d);
        swiglu_math<T, BWD, N>(g, u, d, o1, o2);
        r1.p = pack<T, N>(o1);
        if (!BWD) st16<ST>(static_cast<T *>(a.out) + o, r1.u);
        else {
            r2.p = pack<T, N>(o2);
            st16<ST>(static_cast<T *>(a.dgate) + o, r1.u);
            st16<ST>(static_cast<T *>(a.dup) + o, r2.u);
        }
    } else if (i == a.nvec) {
        for (uint32_t e = a.nvec * N; e < a.n; e++) {
            float g[1] = {Dt<T>::to_f(static_cast<const T *>(a.gate)[e])};
            float u[1] = {Dt<T>::to_f(static_cast<const T *>(a.up)[e])};
            float d[1] = {BWD ? Dt<T>::to_f(static_cast<const T *>(a.dout)[e]) : 0.f};
            float o1[1], o2[1];
            swiglu_math<T, BWD, 1>(g, u, d, o1, o2);
            if (!BWD) static_cast<T *>(a.out)[e] = Dt<T>::from_f(o1[0]);
            else {
                static_cast<T *>(a.dgate)[e] = Dt<T>::from_f(o1[0]);
                static_cast<T *>(a.dup)[e]   = Dt<T>::from_f(o2[0]);
            }
        }
    }
}

// Contiguous operands of n elements each, 16-byte aligned; false when the candidate does not apply (n >= 2^32,
// misaligned, or LD 1-2 with an output aliasing an input).
template <typename T, bool BWD, int LD, int ST>
bool swiglu_flat_launch(const void *gate, const void *up, const void *dout, void *out, void *dgate, void *dup,
                        int64_t n, int threads, cudaStream_t st) {
    const void *in[3]  = {gate, up, BWD ? dout : nullptr};
    const void *outp[2] = {BWD ? dgate : out, BWD ? dup : nullptr};
    if (n <= 0 || n >= ((int64_t)1 << 32) - 16) return false;
    for (const void *p : in)
        if (p && (uintptr_t)p % 16) return false;
    for (const void *p : outp)
        if (p && (uintptr_t)p % 16) return false;
    if (LD == 1 || LD == 2)
        for (const void *p : in)
            for (const void *q : outp)
                if (p && q && p == q) return false;
    FlatArgs a;
    a.gate = gate, a.up = up, a.dout = dout, a.out = out, a.dgate = dgate, a.dup = dup;
    a.n = (uint32_t)n, a.nvec = (uint32_t)(n / kVec<T>);
    const int64_t blocks = ceil_div((int64_t)a.nvec + 1, threads);
    swiglu_flat_kernel<T, BWD, LD, ST><<<(unsigned)blocks, threads, 0, st>>>(a);
    return true;
}

// --- RoPE ------------------------------------------------------------------------------------------------

constexpr int kRopeInvFreqMax = 256;

struct RopeTokArgs {
    const void *q, *k;
    void       *qo, *ko;
    int64_t     q_bs, q_ss, qo_bs, qo_ss, k_bs, k_ss, ko_bs, ko_ss;
    int         q_hs, qo_hs, k_hs, ko_hs; // head strides: nheads x stride < 2^31 (launcher checks)
    uint32_t    tokens, seqlen;
    int         nheads_q, nheads_total;
    int         half, rd, units_rot, units_tail; // half-split: units_rot = half / NP; tail units of kVec
    int         ux, g, ty;                       // threads: ux units x g head groups (blockDim.x), ty tokens
    const void *pos;
    int         pos64;
    int64_t     pos_bs, pos_ss, pos_offset;
    const float *cos_tab, *sin_tab; // fp32 tables, or NULL: computed
    int64_t     cos_rs, sin_rs;
    int         tab_vec;            // tables 16-byte aligned with row strides a multiple of 4
    float       sign;
    double      inv_freq[kRopeInvFreqMax];
};

template <int NP>
__device__ __forceinline__ void tok_angles(const RopeTokArgs &a, int64_t p, int i0, float (&c)[NP], float (&s)[NP]) {
    if (a.cos_tab) {
        const float *cp = a.cos_tab + p * a.cos_rs + i0, *sp = a.sin_tab + p * a.sin_rs + i0;
        if (NP % 4 == 0 && a.tab_vec) {
#pragma unroll
            for (int k = 0; k < NP; k += 4) {
                const float4 cq = *reinterpret_cast<const float4 *>(cp + k), sq = *reinterpret_cast<const float4 *>(sp + k);
                c[k] = cq.x, c[k + 1] = cq.y, c[k + 2] = cq.z, c[k + 3] = cq.w;
                s[k] = sq.x, s[k + 1] = sq.y, s[k + 2] = sq.z, s[k + 3] = sq.w;
            }
        } else {
#pragma unroll
            for (int k = 0; k < NP; k++) c[k] = cp[k], s[k] = sp[k];
        }
    } else {
        // theta in double, reduced by 2 pi in two steps (hi + lo parts of 2 pi), then fp32 sincos.
        const double hi = 6.283185307179586232, lo = 2.4492935982947064e-16, inv = 0.15915494309189533577;
#pragma unroll
        for (int k = 0; k < NP; k++) {
            const int    i  = i0 + k;
            const double f  = i < kRopeInvFreqMax ? a.inv_freq[i] : 0.0; // launcher: half <= kRopeInvFreqMax
            const double th = (double)p * f;
            const double m  = rint(th * inv);
            sincosf((float)fma(-m, lo, fma(-m, hi, th)), &s[k], &c[k]);
        }
    }
#pragma unroll
    for (int k = 0; k < NP; k++) s[k] *= a.sign;
}

// Half-split rotation; NP pairs a unit (two packs: features [i0, i0 + NP) and [half + i0, ...)).
template <typename T, int NP, int HIF> __global__ void __launch_bounds__(256) rope_tok_kernel(const RopeTokArgs a) {
    using P          = Pack<T, NP>;
    const int u0     = threadIdx.x % a.ux, g0 = threadIdx.x / a.ux;
    const int units  = a.units_rot + a.units_tail;
    for (uint32_t t = blockIdx.x * a.ty + threadIdx.y; t < a.tokens; t += gridDim.x * a.ty) {
        const uint32_t b = t / a.seqlen, s = t - b * a.seqlen;
        const T       *qi = static_cast<const T *>(a.q) + b * a.q_bs + s * a.q_ss;
        T             *qo = static_cast<T *>(a.qo) + b * a.qo_bs + s * a.qo_ss;
        const T       *ki = a.k ? static_cast<const T *>(a.k) + b * a.k_bs + s * a.k_ss : nullptr;
        T             *ko = a.k ? static_cast<T *>(a.ko) + b * a.ko_bs + s * a.ko_ss : nullptr;
        int64_t        p  = 0;
        if (a.pos) {
            const int64_t off = (int64_t)b * a.pos_bs + (int64_t)s * a.pos_ss;
            p = a.pos64 ? static_cast<const int64_t *>(a.pos)[off] : (int64_t) static_cast<const int32_t *>(a.pos)[off];
        } else p = a.pos_offset + s;
        for (int u = u0; u < units; u += a.ux) {
            if (u < a.units_rot) {
                const int i0 = u * NP, o2 = a.half + i0;
                float     c[NP], sn[NP];
                tok_angles<NP>(a, p, i0, c, sn);
                for (int h0 = g0; h0 < a.nheads_total; h0 += HIF * a.g) {
                    P x1[HIF], x2[HIF];
#pragma unroll
                    for (int j = 0; j < HIF; j++) {
                        const int hh = h0 + j * a.g;
                        if (hh < a.nheads_total) {
                            const T *in = hh < a.nheads_q ? qi + hh * a.q_hs : ki + (hh - a.nheads_q) * a.k_hs;
                            x1[j]       = load_pack<T, NP>(in + i0);
                            x2[j]       = load_pack<T, NP>(in + o2);
                        }
                    }
#pragma unroll
                    for (int j = 0; j < HIF; j++) {
                        const int hh = h0 + j * a.g;
                        if (hh < a.nheads_total) {
                            T    *out = hh < a.nheads_q ? qo + hh * a.qo_hs : ko + (hh - a.nheads_q) * a.ko_hs;
                            float f1[NP], f2[NP];
                            unpack<T, NP>(x1[j], f1);
                            unpack<T, NP>(x2[j], f2);
#pragma unroll
                            for (int k = 0; k < NP; k++) {
                                const float e1 = f1[k], e2 = f2[k];
                                f1[k]          = e1 * c[k] - e2 * sn[k];
                                f2[k]          = e1 * sn[k] + e2 * c[k];
                            }
                            store_pack<T, NP>(out + i0, pack<T, NP>(f1));
                            store_pack<T, NP>(out + o2, pack<T, NP>(f2));
                        }
                    }
                }
            } else {
                constexpr int V = kVec<T>;
                const int     o = a.rd + (u - a.units_rot) * V;
                for (int hh = g0; hh < a.nheads_total; hh += a.g) {
                    const T *in  = hh < a.nheads_q ? qi + hh * a.q_hs : ki + (hh - a.nheads_q) * a.k_hs;
                    T       *out = hh < a.nheads_q ? qo + hh * a.qo_hs : ko + (hh - a.nheads_q) * a.ko_hs;
                    if (in != out) store_pack<T, V>(out + o, load_pack<T, V>(in + o));
                }
            }
        }
    }
}

// Launch of the candidate for problem p (q and k [batch, seqlen, heads, head_dim]): half-split, 16-byte
// vectors (half and the tail a multiple of kVec, every view aligned), tables fp32 or computed, positions with
// tables NOT range-checked here (the tuner's positions are in range). ux x g threads per token (ux = the units,
// capped at `threads`), ty tokens a block; blocks = min(ceil(tokens / ty), max_blocks) (0 = no cap).
template <typename T, int HIF>
fk_status rope_tok_launch(const fk_rope_problem *p, bool bwd, int g, int threads, int64_t max_blocks, cudaStream_t st) {
    constexpr int V = kVec<T>;
    const int64_t htot = p->nheads_q + (p->k ? p->nheads_k : 0), half = p->rotary_dim / 2;
    auto          a16  = [](const void *q) { return q == nullptr || (uintptr_t)q % 16 == 0; };
    auto          m    = [](int64_t s) { return s % V == 0; };
    if (p->dtype != Dt<T>::id || p->interleaved || half % V != 0 || (p->head_dim - p->rotary_dim) % V != 0 ||
        half > kRopeInvFreqMax || (p->cos_tab && p->cs_dtype != FK_DTYPE_F32) || !a16(p->q) || !a16(p->q_out) ||
        !a16(p->k) || !a16(p->k_out) || !m(p->q_bs) || !m(p->q_ss) || !m(p->q_hs) || !m(p->q_out_bs) ||
        !m(p->q_out_ss) || !m(p->q_out_hs) || (p->k && (!m(p->k_bs) || !m(p->k_ss) || !m(p->k_hs) ||
                                                        !m(p->k_out_bs) || !m(p->k_out_ss) || !m(p->k_out_hs))) ||
        p->batch * p->seqlen >= ((int64_t)1 << 31) || htot * (p->head_dim + p->q_hs + p->q_out_hs) >= ((int64_t)1 << 31) ||
        (p->k && htot * (p->k_hs + p->k_out_hs) >= ((int64_t)1 << 31)))
        return FK_STATUS_NOT_SUPPORTED_FEATURE;
    RopeTokArgs r;
    memset(&r, 0, sizeof r);
    r.q = p->q, r.qo = p->q_out, r.k = p->k, r.ko = p->k_out;
    r.q_bs = p->q_bs, r.q_ss = p->q_ss, r.qo_bs = p->q_out_bs, r.qo_ss = p->q_out_ss;
    r.k_bs = p->k_bs, r.k_ss = p->k_ss, r.ko_bs = p->k_out_bs, r.ko_ss = p->k_out_ss;
    r.q_hs = (int)p->q_hs, r.qo_hs = (int)p->q_out_hs, r.k_hs = (int)p->k_hs, r.ko_hs = (int)p->k_out_hs;
    r.tokens = (uint32_t)(p->batch * p->seqlen), r.seqlen = (uint32_t)p->seqlen;
    r.nheads_q = (int)p->nheads_q, r.nheads_total = (int)htot;
    r.half = (int)half, r.rd = (int)p->rotary_dim, r.units_rot = (int)(half / V);
    const bool need_tail = p->rotary_dim < p->head_dim && (p->q_out != p->q || (p->k && p->k_out != p->k));
    r.units_tail         = need_tail ? (int)((p->head_dim - p->rotary_dim) / V) : 0;
    r.pos = p->positions, r.pos64 = p->pos_dtype == FK_DTYPE_INT64, r.pos_bs = p->pos_bs, r.pos_ss = p->pos_ss;
    r.pos_offset = p->pos_offset;
    r.cos_tab = static_cast<const float *>(p->cos_tab), r.sin_tab = static_cast<const float *>(p->sin_tab);
    r.cos_rs = p->cos_rs, r.sin_rs = p->sin_rs;
    r.tab_vec = p->cos_tab && a16(p->cos_tab) && a16(p->sin_tab) && p->cos_rs % 4 == 0 && p->sin_rs % 4 == 0;
    r.sign    = bwd ? -1.0f : 1.0f;
    if (!p->cos_tab)
        for (int i = 0; i < half; i++) r.inv_freq[i] = pow((double)p->base, -2.0 * (double)i / (double)p->rotary_dim);
    const int units = r.units_rot + r.units_tail;
    r.ux            = units < threads ? units : threads;
    r.g             = g < 1 ? 1 : (int64_t)g > htot ? (int)htot : g;
    if (r.g < 1) r.g = 1;
    const int tx = r.ux * r.g;
    if (tx > 256) return FK_STATUS_NOT_SUPPORTED_FEATURE;
    r.ty = threads / tx;
    if (r.ty < 1) r.ty = 1;
    if (tx * r.ty > 256) r.ty = 256 / tx;
    if ((int64_t)r.ty > (int64_t)r.tokens) r.ty = (int)r.tokens;
    int64_t blocks = ceil_div(r.tokens, r.ty);
    if (max_blocks > 0 && blocks > max_blocks) blocks = max_blocks;
    rope_tok_kernel<T, V, HIF><<<(unsigned)blocks, dim3((unsigned)tx, (unsigned)r.ty), 0, st>>>(r);
    return cudaGetLastError() == cudaSuccess ? FK_STATUS_SUCCESS : FK_STATUS_CUDA_ERROR;
}

} // namespace fk_next

#endif // FK_CUDA_OPS_NEXT_CUH
