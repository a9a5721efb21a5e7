/*
 * swiglu.cu — CUDA SwiGLU forward and backward (semantics: src/core/ops_internal.h, fk_swiglu_problem).
 *
 * A pure element-wise op: each thread takes one 16-byte vector of every operand (N = 4 fp32 or 8 fp16/bf16
 * elements) in a grid-stride loop over the [rows, ceil(width / N)] vectors, so the whole op is one pass over
 * the data with 128-bit coalesced accesses (what copy bandwidth needs; the arithmetic, one exp and one divide
 * per element, is far under the issue budget of ~400 instructions per vector at 3 TB/s).
 * When every operand has the same contiguous layout (row stride == width) the rows are merged into one, so
 * widths that are not a multiple of N still run vectorized except for one tail. Anything unaligned runs the
 * same kernel with N = 1.
 * Outputs may alias inputs exactly (out = gate, dgate = gate, dup = up): each element is read before it is
 * written, by the same thread.
 */
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
            float g[N], u[N];
            unpack<T, N>(gp[k], g);
            unpack<T, N>(up[k], u);
            if (!BWD) {
                float o[N];
#pragma unroll
                for (int e = 0; e < N; e++) o[e] = g[e] * sigmoid(g[e]) * u[e];
                store_pack_any<T, N>(static_cast<T *>(a.out) + r[k] * a.out_rs + j[k], pack<T, N>(o), n[k]);
            } else {
                float d[N], dg[N], du[N];
                unpack<T, N>(dp[k], d);
#pragma unroll
                for (int e = 0; e < N; e++) {
                    const float sg = sigmoid(g[e]);
                    dg[e]          = d[e] * u[e] * sg * (1.0f + g[e] * (1.0f - sg));
                    du[e]          = d[e] * g[e] * sg;
                }
                store_pack_any<T, N>(static_cast<T *>(a.dgate) + r[k] * a.dgate_rs + j[k], pack<T, N>(dg), n[k]);
                store_pack_any<T, N>(static_cast<T *>(a.dup) + r[k] * a.dup_rs + j[k], pack<T, N>(du), n[k]);
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

fk_status run(const struct fk_context *ctx, const fk_swiglu_problem *p, void *stream, bool bwd) {
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
