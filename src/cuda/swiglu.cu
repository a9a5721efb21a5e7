/*
 * swiglu.cu — CUDA SwiGLU forward and backward (semantics: src/core/ops_internal.h, fk_swiglu_problem).
 *
 * A pure element-wise op: each thread takes one 16-byte vector of every operand (N = 4 fp32 or 8 fp16/bf16
 * elements), so the whole op is one pass over the data with 128-bit coalesced accesses (what copy bandwidth
 * needs; the arithmetic, one exp and one reciprocal per element, is far under the issue budget).
 * When every operand has the same contiguous layout (row stride == width) the rows are merged into one.
 * One row (merged or given) with 16-byte aligned pointers and fewer than 2^32 - 16 elements runs
 * swiglu_flat_kernel: every thread one whole vector with no partial-vector branch (the thread past the last
 * whole vector does the < N element tail), 32-bit offsets, no grid-stride loop, per-pass cache hints.
 * Measured against the row kernel on an H200 (bf16 16384 x 11008): fwd 4264 vs 3245 GB/s, bwd 4261 vs 3647
 * (copy 4214; docs/PERF.md, "GPU: fused ops"). Anything else (strided rows, e.g. gate and up as column views
 * of one [rows, 2 width] tensor; misaligned pointers) runs swiglu_kernel over the [rows, ceil(width / N)]
 * vectors in a grid-stride loop, with N = 1 when a row start is not 16-byte aligned.
 * Outputs may alias inputs exactly (out = gate, dgate = gate, dup = up): each element is read before it is
 * written, by the same thread (the flat kernel's hints are .cs, not the non-coherent .nc path, so aliasing
 * stays legal).
 */
#include "../core/ops_select.h"
#include "ops_common.cuh"

using namespace fk_ops;

namespace {

struct SwigluArgs {
    const void *gate, *up, *dout;
    void       *out, *dgate, *dup;
    int64_t     gate_rs, up_rs, dout_rs, out_rs, dgate_rs, dup_rs;
    int64_t     width, vpr, total; // vectors per row, rows * vpr
};

// 1 / (1 + e^-g) from the special-function unit's exp2 (relative error ~2^-22 for |g| < 100) and a correctly
// rounded reciprocal: a few instructions where expf + an IEEE divide take ~30 with their slow-path branches,
// which at U = 2 vectors per thread cost registers (occupancy) and issue slots. fp32 results stay within a few
// ulp of the CPU's g / (1 + expf(-g)) (test tolerance 1e-5 relative); g < -87 gives e^-g = inf and sig = 0.
__device__ __forceinline__ float sigmoid(float g) { return __frcp_rn(1.0f + __expf(-g)); }

// out (forward), or dgate and dup (backward), of N elements, in fp32.
template <bool BWD, int N>
__device__ __forceinline__ void swiglu_math(const float (&g)[N], const float (&u)[N], const float (&d)[N], float (&o1)[N],
                                            float (&o2)[N]) {
#pragma unroll
    for (int e = 0; e < N; e++) {
        const float sg = sigmoid(g[e]);
        if (!BWD) o1[e] = g[e] * sg * u[e];
        else {
            o1[e] = d[e] * u[e] * sg * (1.0f + g[e] * (1.0f - sg));
            o2[e] = d[e] * g[e] * sg;
        }
    }
}

// Vector i of the [rows, vpr] grid of vectors: its row and first column. One long row (contiguous operands)
// needs no division; otherwise a 32-bit division when the vector count allows (a 64-bit one is a ~70
// instruction subroutine).
__device__ __forceinline__ void locate(const SwigluArgs &a, int64_t i, int64_t &r, int64_t &j, int n_per_vec) {
    if (a.vpr == a.total) r = 0;
    else if (a.total <= 0xffffffffll) r = (int64_t)((uint32_t)i / (uint32_t)a.vpr);
    else r = i / a.vpr;
    j = (i - r * a.vpr) * n_per_vec;
}

// U vectors per thread per step, all loaded before any is used: U x (2 or 3) x 16 bytes in flight per thread.
// Measured (dev/cuda/ops_tune.cu, bf16 16384 x 11008, H100): U = 1 with 128-thread blocks is fastest, fwd 2722
// and bwd 2862 GB/s; U = 2 2517 / 2390, U = 4 1918 / 1921; 256 threads 2-4% slower. So the library uses
// U = 1, 128 threads (FK_SWIGLU_U / FK_SWIGLU_THREADS override them for experiments).
template <typename T, int N, bool BWD, int U>
__global__ void __launch_bounds__(256) swiglu_kernel(const SwigluArgs a) {
    using P             = Pack<T, N>;
    const int64_t nthr  = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i0 = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i0 < a.total; i0 += nthr * U) {
        P       gp[U], up[U], dp[U];
        int64_t r[U], j[U];
        int     n[U];
#pragma unroll
        for (int k = 0; k < U; k++) {
            const int64_t i = i0 + k * nthr;
            n[k]            = 0;
            if (i < a.total) {
                locate(a, i, r[k], j[k], N);
                n[k]  = a.width - j[k] < N ? (int)(a.width - j[k]) : N;
                gp[k] = load_pack_any<T, N>(static_cast<const T *>(a.gate) + r[k] * a.gate_rs + j[k], n[k]);
                up[k] = load_pack_any<T, N>(static_cast<const T *>(a.up) + r[k] * a.up_rs + j[k], n[k]);
                if (BWD) dp[k] = load_pack_any<T, N>(static_cast<const T *>(a.dout) + r[k] * a.dout_rs + j[k], n[k]);
            }
        }
#pragma unroll
        for (int k = 0; k < U; k++) {
            if (n[k] == 0) continue;
            opaque(gp[k]), opaque(up[k]); // ordered after the previous vector's stores: no interleaved math
            if (BWD) opaque(dp[k]);
            float g[N], u[N], d[N] = {}, o1[N], o2[N];
            unpack<T, N>(gp[k], g);
            unpack<T, N>(up[k], u);
            if (BWD) unpack<T, N>(dp[k], d);
            swiglu_math<BWD, N>(g, u, d, o1, o2);
            if (!BWD) store_pack_any<T, N>(static_cast<T *>(a.out) + r[k] * a.out_rs + j[k], pack<T, N>(o1), n[k]);
            else {
                store_pack_any<T, N>(static_cast<T *>(a.dgate) + r[k] * a.dgate_rs + j[k], pack<T, N>(o1), n[k]);
                store_pack_any<T, N>(static_cast<T *>(a.dup) + r[k] * a.dup_rs + j[k], pack<T, N>(o2), n[k]);
            }
            asm volatile("" ::: "memory"); // one vector's math at a time: interleaving U of them costs registers
        }
    }
}

#ifndef FK_SWIGLU_U
#define FK_SWIGLU_U 1
#endif
#ifndef FK_SWIGLU_THREADS
#define FK_SWIGLU_THREADS 128
#endif
constexpr int kU       = FK_SWIGLU_U;
constexpr int kThreads = FK_SWIGLU_THREADS;

template <typename T, bool BWD, int U = kU>
void launch_t(const struct fk_context *ctx, SwigluArgs a, int64_t rows, bool vec, cudaStream_t st,
              int threads = kThreads) {
    const int N = vec ? kVec<T> : 1;
    a.vpr       = ceil_div(a.width, N);
    a.total     = rows * a.vpr;
    // One block per threads x U vectors: the grid-stride loop runs only past 2^31 - 1 blocks (a capped grid that
    // looped measured slower: a thread's second vector lies a grid away, more DRAM pages open at once).
    int64_t blocks = ceil_div(a.total, (int64_t)threads * U);
    if (blocks > 0x7fffffff) blocks = 0x7fffffff;
    if (vec) swiglu_kernel<T, kVec<T>, BWD, U><<<(unsigned)blocks, threads, 0, st>>>(a);
    else swiglu_kernel<T, 1, BWD, U><<<(unsigned)blocks, threads, 0, st>>>(a);
}

// --- one flat array --------------------------------------------------------------------------------------

// 16-byte global accesses with cache hints. LD: 0 plain; 3 ld.global.cs (streaming: evict first). ST: 0
// plain; 1 st.global.cs. (The H200 run also timed ld.global.nc.L1::no_allocate, with and without
// .L2::256B, and .nc + st.cs: 4001-4094 GB/s in the forward against plain's 4264; in the backward .nc + st.cs
// 4242 against ld.cs + st.cs 4261, the others 4023-4080. .nc also forbids outputs that alias inputs: not kept.)
template <int LD> __device__ __forceinline__ uint4 ld16(const void *p) {
    uint4 v;
    if constexpr (LD == 3)
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
    uint32_t    n;    // elements (< 2^32 - 16: fk_swiglu_flat_covers)
};

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
        float g[N], u[N], d[N] = {}, o1[N], o2[N];
        unpack<T, N>(gv.p, g);
        unpack<T, N>(uv.p, u);
        if (BWD) unpack<T, N>(dv.p, d);
        swiglu_math<BWD, N>(g, u, d, o1, o2);
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
            swiglu_math<BWD, 1>(g, u, d, o1, o2);
            if (!BWD) static_cast<T *>(a.out)[e] = Dt<T>::from_f(o1[0]);
            else {
                static_cast<T *>(a.dgate)[e] = Dt<T>::from_f(o1[0]);
                static_cast<T *>(a.dup)[e]   = Dt<T>::from_f(o2[0]);
            }
        }
    }
}

// Block size and hints per pass. Forward: H200, 2026-11-30 (bench/next_ops.sh, commit d3c1cfc; bf16 16384 x
// 11008, GB/s, copy 4214): plain 256 threads 4264 (128: 4260; ld.cs + st.cs 4057-4071). Backward: plain, 128
// threads. The first tuning (back-to-back launches) had ld.cs + st.cs at 4261 against plain's 4243; timed as
// bench/bench_ops.py times (the L2 flushed before each run, H200, 2026-11-30 third session, commit 5962e69),
// .cs costs 5-6%: plain 128 threads 4288 / 4014 / 4182 GB/s against .cs's 4050 / 3779 / 3914 at widths 11008 /
// 2048 / 4096 (plain 256 threads within 0.1%; 2 or 4 vectors a thread, or the approximate reciprocal, within
// -1..+0.1%).
template <bool BWD> struct FlatShape;
template <> struct FlatShape<false> {
    static constexpr int LD = 0, ST = 0, threads = 256;
};
template <> struct FlatShape<true> {
    static constexpr int LD = 0, ST = 0, threads = 128;
};

// Any hints and block size (dev/cuda/ops_tune.cu times several); flat_launch runs FlatShape's.
template <typename T, bool BWD, int LD, int ST> void flat_launch_cfg(const SwigluArgs &s, int64_t n, int threads, cudaStream_t st) {
    FlatArgs a;
    a.gate = s.gate, a.up = s.up, a.dout = s.dout, a.out = s.out, a.dgate = s.dgate, a.dup = s.dup;
    a.n = (uint32_t)n, a.nvec = (uint32_t)(n / kVec<T>);
    const int64_t blocks = ceil_div((int64_t)a.nvec + 1, threads);
    swiglu_flat_kernel<T, BWD, LD, ST><<<(unsigned)blocks, threads, 0, st>>>(a);
}
template <typename T, bool BWD> void flat_launch(const SwigluArgs &s, int64_t n, cudaStream_t st) {
    using S = FlatShape<BWD>;
    flat_launch_cfg<T, BWD, S::LD, S::ST>(s, n, S::threads, st);
}

// allow_flat = false forces swiglu_kernel (dev/cuda/ops_tune.cu times the two).
fk_status run(const struct fk_context *ctx, const fk_swiglu_problem *p, void *stream, bool bwd, bool allow_flat = true) {
    const char *op = bwd ? "swiglu_bwd" : "swiglu_fwd";
    if (p->dtype != FK_DTYPE_F32 && p->dtype != FK_DTYPE_F16 && p->dtype != FK_DTYPE_BF16)
        return fk_error(FK_STATUS_NOT_SUPPORTED_DTYPE, "%s: dtype %s is not supported on CUDA", op,
                        fk_dtype_name(p->dtype));
    SwigluArgs a;
    a.gate = p->gate, a.up = p->up, a.dout = p->dout, a.out = p->out, a.dgate = p->dgate, a.dup = p->dup;
    a.gate_rs = p->gate_rs, a.up_rs = p->up_rs, a.dout_rs = p->dout_rs;
    a.out_rs = p->out_rs, a.dgate_rs = p->dgate_rs, a.dup_rs = p->dup_rs;
    int64_t rows = p->rows, width = p->width;
    // Strides of a single row are meaningless: make them all "contiguous".
    int64_t *rs[6] = {&a.gate_rs, &a.up_rs, &a.dout_rs, &a.out_rs, &a.dgate_rs, &a.dup_rs};
    const void *ptr[6] = {a.gate, a.up, bwd ? a.dout : nullptr, bwd ? nullptr : a.out, bwd ? a.dgate : nullptr,
                          bwd ? a.dup : nullptr};
    if (rows == 1)
        for (int k = 0; k < 6; k++) *rs[k] = width;
    // Merge rows when every operand is contiguous: one long row.
    bool contiguous = true;
    for (int k = 0; k < 6; k++)
        if (ptr[k] && *rs[k] != width) contiguous = false;
    if (contiguous && rows > 1) {
        width *= rows, rows = 1;
        for (int k = 0; k < 6; k++) *rs[k] = width;
    }
    const size_t es  = fk_dtype_size(p->dtype);
    bool         vec = true;
    for (int k = 0; k < 6; k++)
        if (ptr[k] && !aligned16(ptr[k], es, *rs[k])) vec = false;
    a.width = width;

    DeviceScope scope(ctx->device.index);
    FK_TRY(scope_status(op, scope, ctx->device.index));
    cudaStream_t st = (cudaStream_t)stream;
    if (allow_flat && rows == 1 && fk_swiglu_flat_covers(ptr, 6, width)) {
        switch (p->dtype) {
        case FK_DTYPE_F32: bwd ? flat_launch<float, true>(a, width, st) : flat_launch<float, false>(a, width, st); break;
        case FK_DTYPE_F16: bwd ? flat_launch<__half, true>(a, width, st) : flat_launch<__half, false>(a, width, st); break;
        default:
            bwd ? flat_launch<__nv_bfloat16, true>(a, width, st) : flat_launch<__nv_bfloat16, false>(a, width, st);
            break;
        }
        return launch_result(op, "swiglu_flat_kernel", cudaGetLastError());
    }
    switch (p->dtype) {
    case FK_DTYPE_F32:
        bwd ? launch_t<float, true>(ctx, a, rows, vec, st) : launch_t<float, false>(ctx, a, rows, vec, st);
        break;
    case FK_DTYPE_F16:
        bwd ? launch_t<__half, true>(ctx, a, rows, vec, st) : launch_t<__half, false>(ctx, a, rows, vec, st);
        break;
    default:
        bwd ? launch_t<__nv_bfloat16, true>(ctx, a, rows, vec, st)
            : launch_t<__nv_bfloat16, false>(ctx, a, rows, vec, st);
        break;
    }
    return launch_result(op, "swiglu_kernel", cudaGetLastError());
}

} // namespace

extern "C" fk_status fk_cuda_swiglu_fwd(const struct fk_context *ctx, const fk_swiglu_problem *p, void *stream) {
    return run(ctx, p, stream, false);
}

extern "C" fk_status fk_cuda_swiglu_bwd(const struct fk_context *ctx, const fk_swiglu_problem *p, void *stream) {
    return run(ctx, p, stream, true);
}
