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

__device__ __forceinline__ float sigmoid(float g) { return 1.0f / (1.0f + expf(-g)); }

template <typename T, int N, bool BWD>
__global__ void __launch_bounds__(256) swiglu_kernel(const SwigluArgs a) {
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < a.total; i += stride) {
        const int64_t r = i / a.vpr, j = (i - r * a.vpr) * N;
        const int     n = a.width - j < N ? (int)(a.width - j) : N;
        float g[N], u[N];
        unpack<T, N>(load_pack_any<T, N>(static_cast<const T *>(a.gate) + r * a.gate_rs + j, n), g);
        unpack<T, N>(load_pack_any<T, N>(static_cast<const T *>(a.up) + r * a.up_rs + j, n), u);
        if (!BWD) {
            float o[N];
#pragma unroll
            for (int k = 0; k < N; k++) o[k] = g[k] / (1.0f + expf(-g[k])) * u[k]; // the CPU's expression
            store_pack_any<T, N>(static_cast<T *>(a.out) + r * a.out_rs + j, pack<T, N>(o), n);
        } else {
            float d[N], dg[N], du[N];
            unpack<T, N>(load_pack_any<T, N>(static_cast<const T *>(a.dout) + r * a.dout_rs + j, n), d);
#pragma unroll
            for (int k = 0; k < N; k++) {
                const float s = sigmoid(g[k]);
                dg[k]         = d[k] * u[k] * s * (1.0f + g[k] * (1.0f - s));
                du[k]         = d[k] * g[k] * s;
            }
            store_pack_any<T, N>(static_cast<T *>(a.dgate) + r * a.dgate_rs + j, pack<T, N>(dg), n);
            store_pack_any<T, N>(static_cast<T *>(a.dup) + r * a.dup_rs + j, pack<T, N>(du), n);
        }
    }
}

constexpr int kThreads = 256;

template <typename T, bool BWD>
void launch_t(const struct fk_context *ctx, SwigluArgs a, int64_t rows, bool vec, cudaStream_t st) {
    const int N = vec ? kVec<T> : 1;
    a.vpr       = ceil_div(a.width, N);
    a.total     = rows * a.vpr;
    // One vector per thread while the grid is small; beyond 64 waves of full occupancy a grid-stride loop
    // (fewer, longer-lived blocks: no measurable difference, and the grid stays inside 2^31 blocks).
    int64_t blocks = ceil_div(a.total, kThreads);
    const int64_t cap = (int64_t)ctx->sm_count * 8 * 64;
    if (blocks > cap) blocks = cap;
    if (vec) swiglu_kernel<T, kVec<T>, BWD><<<(unsigned)blocks, kThreads, 0, st>>>(a);
    else swiglu_kernel<T, 1, BWD><<<(unsigned)blocks, kThreads, 0, st>>>(a);
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
    case FK_DTYPE_F32: (bwd ? launch_t<float, true> : launch_t<float, false>)(ctx, a, rows, vec, st); break;
    case FK_DTYPE_F16: (bwd ? launch_t<__half, true> : launch_t<__half, false>)(ctx, a, rows, vec, st); break;
    default: (bwd ? launch_t<__nv_bfloat16, true> : launch_t<__nv_bfloat16, false>)(ctx, a, rows, vec, st); break;
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
