/*
 * attn_ring.cu — CUDA attention merge (the LSE-weighted running accumulator) and ring attention over NCCL,
 * forward and backward. Design, schedule and merge math: docs/DESIGN.md ("Ring attention").
 *
 * NCCL is not linked: it is dlopen'ed on first use ("libnccl.so.2", or $FK_NCCL_LIBRARY) and the few
 * functions used are looked up once. nccl.h is needed at compile time only (FK_HAVE_NCCL_H); without it the
 * ring entry points are not compiled and src/core/attn_ring.c answers "not supported: backend".
 *
 * Streams: the caller's stream runs every kernel (copies, attention steps, merges, gradient adds); a second
 * stream runs the NCCL send/recv pairs. Events order the two per buffer:
 *   kv_arrived[s]  comm -> compute: slot s now holds the next K/V
 *   kv_free[s]     compute -> comm: the attention step reading slot s is done; slot s may be received into
 *   dkv_ready      compute -> comm: this step's dK/dV accumulator is final; it may leave
 *   dkv_arrived[s] comm -> compute: slot s holds the accumulator of the K/V now held
 * Slots alternate with the step parity (double buffering), so an event is re-recorded only after its last wait
 * was enqueued.
 */
#include "../core/ring_internal.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <type_traits>

#ifdef FK_HAVE_NCCL_H
#include <dlfcn.h>
#include <nccl.h>
#endif

namespace {

// --- dtype traits ----------------------------------------------------------------------------------------

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// Calls f.template operator()<T>() with T the storage type of dt (f32, f16, bf16); false for another dtype.
template <typename F> bool with_type(fk_dtype dt, F &&f) {
    switch (dt) {
    case FK_DTYPE_F32: f((float *)nullptr); return true;
    case FK_DTYPE_F16: f((__half *)nullptr); return true;
    case FK_DTYPE_BF16: f((__nv_bfloat16 *)nullptr); return true;
    default: return false;
    }
}

int grid_for(int64_t work, int threads) {
    int64_t g = (work + threads - 1) / threads;
    if (g < 1) g = 1;
    return g > 65535 * 16 ? 65535 * 16 : (int)g; // kernels are grid-stride loops
}

// --- merge -----------------------------------------------------------------------------------------------

struct MergeParams {
    int64_t rows, seqlen, nheads, head_dim;
    void   *out;
    float  *lse;
    const void  *part_out;
    const float *part_lse;
    int64_t out_bs, out_rs, out_hs, part_bs, part_rs, part_hs;
    int64_t lse_bs, lse_hs, lse_rs, plse_bs, plse_hs, plse_rs;
};

// One warp per (batch, token, head) row: lane 0's LSE pair gives both weights (the formula of
// fk_merge_weights, written out for the device), then the lanes sweep head_dim.
template <typename TA, typename TP> __global__ void merge_kernel(MergeParams p) {
    const int     lane   = threadIdx.x & 31;
    const int64_t warps  = (int64_t)gridDim.x * (blockDim.x >> 5);
    const float   ninf   = -INFINITY;
    for (int64_t r = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); r < p.rows; r += warps) {
        const int64_t b = r / (p.seqlen * p.nheads), s = (r / p.nheads) % p.seqlen, h = r % p.nheads;
        float        *lse = p.lse + b * p.lse_bs + h * p.lse_hs + s * p.lse_rs;
        const float   la = *lse, lp = p.part_lse[b * p.plse_bs + h * p.plse_hs + s * p.plse_rs];
        float         wa = 0.f, wp = 0.f, l = ninf;
        if (!(la == ninf && lp == ninf)) {
            const bool  a_big = la >= lp;
            const float big = a_big ? la : lp, small = a_big ? lp : la;
            const float e   = small == ninf ? 0.f : expf(small - big);
            const float inv = 1.f / (1.f + e);
            wa = a_big ? inv : e * inv;
            wp = a_big ? e * inv : inv;
            l  = big + log1pf(e);
        }
        TA       *o  = (TA *)p.out + b * p.out_bs + s * p.out_rs + h * p.out_hs;
        const TP *po = (const TP *)p.part_out + b * p.part_bs + s * p.part_rs + h * p.part_hs;
        for (int64_t d = lane; d < p.head_dim; d += 32) {
            float x = 0.f;
            if (wa > 0.f) x += wa * to_f(o[d]);
            if (wp > 0.f) x += wp * to_f(po[d]);
            o[d] = from_f<TA>(x);
        }
        __syncwarp();
        if (lane == 0) *lse = l;
    }
}

MergeParams merge_params(const fk_merge_problem *m) {
    MergeParams p;
    p.rows = m->batch * m->seqlen * m->nheads, p.seqlen = m->seqlen, p.nheads = m->nheads, p.head_dim = m->head_dim;
    p.out = m->out, p.lse = m->lse, p.part_out = m->part_out, p.part_lse = m->part_lse;
    p.out_bs = m->out_bs, p.out_rs = m->out_rs, p.out_hs = m->out_hs;
    p.part_bs = m->part_bs, p.part_rs = m->part_rs, p.part_hs = m->part_hs;
    p.lse_bs = m->lse_bs, p.lse_hs = m->lse_hs, p.lse_rs = m->lse_rs;
    p.plse_bs = m->plse_bs, p.plse_hs = m->plse_hs, p.plse_rs = m->plse_rs;
    return p;
}

cudaError_t launch_merge(const fk_merge_problem *m, cudaStream_t stream) {
    const MergeParams p = merge_params(m);
    if (p.rows == 0) return cudaSuccess;
    const int   threads = 256; // 8 rows per block
    const int   grid    = grid_for(p.rows * 32, threads);
    bool        ok      = false;
    with_type(m->out_dtype, [&](auto *ta) {
        using TA = typename std::remove_pointer<decltype(ta)>::type;
        ok = with_type(m->part_dtype, [&](auto *tp) {
            using TP = typename std::remove_pointer<decltype(tp)>::type;
            merge_kernel<TA, TP><<<grid, threads, 0, stream>>>(p);
        });
    });
    if (!ok) return cudaErrorInvalidValue;
    return cudaGetLastError();
}

// Sets the current device to `index` for its lifetime and restores the caller's.
struct DeviceScope {
    int         prev = -1;
    cudaError_t err  = cudaSuccess;
    explicit DeviceScope(int index) {
        err = cudaGetDevice(&prev);
        if (err == cudaSuccess && prev != index) err = cudaSetDevice(index);
        if (err != cudaSuccess) prev = -1;
    }
    ~DeviceScope() {
        int now = -1;
        if (prev >= 0 && cudaGetDevice(&now) == cudaSuccess && now != prev) cudaSetDevice(prev);
    }
};

} // namespace

extern "C" fk_status fk_cuda_attn_merge(const struct fk_context *ctx, const fk_merge_problem *p, void *stream) {
    DeviceScope dev(ctx->device.index);
    if (dev.err != cudaSuccess)
        return fk_error(FK_STATUS_CUDA_ERROR, "attn_merge: cudaSetDevice(%d): %s", ctx->device.index,
                        cudaGetErrorString(dev.err));
    const cudaError_t e = launch_merge(p, (cudaStream_t)stream);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return fk_error(FK_STATUS_CUDA_ERROR, "attn_merge: kernel launch failed: %s", cudaGetErrorString(e));
    }
    return FK_STATUS_SUCCESS;
}

#ifdef FK_HAVE_NCCL_H

// --- NCCL, loaded at run time ----------------------------------------------------------------------------

namespace {

// --- copies, adds, fills ---------------------------------------------------------------------------------

// A 4-D strided view (element strides), for copies with dtype conversion.
struct View4 {
    int64_t shape[4];
    int64_t stride[4];
};

bool contiguous(const View4 &v) {
    return v.stride[3] == 1 && v.stride[2] == v.shape[3] && v.stride[1] == v.shape[2] * v.shape[3] &&
           (v.shape[0] == 1 || v.stride[0] == v.shape[1] * v.shape[2] * v.shape[3]);
}

template <typename TS, typename TD>
__global__ void copy_flat_kernel(const TS *__restrict__ src, TD *__restrict__ dst, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = from_f<TD>(to_f(src[i]));
}

// A block per (b, s, h) row at a time: the index arithmetic is per row, not per element.
template <typename TS, typename TD>
__global__ void copy_rows_kernel(const TS *__restrict__ src, View4 vs, TD *__restrict__ dst, View4 vd, int64_t rows) {
    const int64_t d = vs.shape[3];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const int64_t h = r % vs.shape[2], t = r / vs.shape[2], si = t % vs.shape[1], b = t / vs.shape[1];
        const TS     *ps = src + b * vs.stride[0] + si * vs.stride[1] + h * vs.stride[2];
        TD           *pd = dst + b * vd.stride[0] + si * vd.stride[1] + h * vd.stride[2];
        for (int64_t x = threadIdx.x; x < d; x += blockDim.x) pd[x * vd.stride[3]] = from_f<TD>(to_f(ps[x * vs.stride[3]]));
    }
}

cudaError_t launch_copy(const void *src, fk_dtype sdt, View4 vs, void *dst, fk_dtype ddt, View4 vd,
                        cudaStream_t stream) {
    const int64_t rows = vs.shape[0] * vs.shape[1] * vs.shape[2], n = rows * vs.shape[3];
    if (n == 0) return cudaSuccess;
    const bool flat = contiguous(vs) && contiguous(vd);
    if (flat && sdt == ddt) return cudaMemcpyAsync(dst, src, (size_t)n * fk_dtype_size(sdt), cudaMemcpyDeviceToDevice, stream);
    bool ok = false;
    with_type(sdt, [&](auto *ts) {
        using TS = typename std::remove_pointer<decltype(ts)>::type;
        ok = with_type(ddt, [&](auto *td) {
            using TD = typename std::remove_pointer<decltype(td)>::type;
            if (flat) copy_flat_kernel<TS, TD><<<grid_for(n, 256), 256, 0, stream>>>((const TS *)src, (TD *)dst, n);
            else {
                const int threads = vs.shape[3] >= 256 ? 256 : vs.shape[3] >= 128 ? 128 : 64;
                const int grid    = (int)(rows < 65535 * 16 ? rows : 65535 * 16);
                copy_rows_kernel<TS, TD><<<grid, threads, 0, stream>>>((const TS *)src, vs, (TD *)dst, vd, rows);
            }
        });
    });
    if (!ok) return cudaErrorInvalidValue;
    return cudaGetLastError();
}

// acc[b][x] += part[b][x] for x < inner: blockIdx.y walks the batch, so there is no division per element.
template <typename TP>
__global__ void add_kernel(float *__restrict__ acc, int64_t acc_bs, const TP *__restrict__ part, int64_t part_bs,
                           int64_t inner, int64_t batch) {
    for (int64_t b = blockIdx.y; b < batch; b += gridDim.y) {
        float    *a = acc + b * acc_bs;
        const TP *q = part + b * part_bs;
        for (int64_t x = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; x < inner; x += (int64_t)gridDim.x * blockDim.x)
            a[x] += to_f(q[x]);
    }
}

cudaError_t launch_add(float *acc, int64_t acc_bs, const void *part, fk_dtype dt, int64_t part_bs, int64_t batch,
                       int64_t inner, cudaStream_t stream) {
    if (batch * inner == 0) return cudaSuccess;
    const dim3 grid((unsigned)grid_for(inner, 256), (unsigned)(batch < 65535 ? batch : 65535));
    const bool ok = with_type(dt, [&](auto *tp) {
        using TP = typename std::remove_pointer<decltype(tp)>::type;
        add_kernel<TP><<<grid, 256, 0, stream>>>(acc, acc_bs, (const TP *)part, part_bs, inner, batch);
    });
    if (!ok) return cudaErrorInvalidValue;
    return cudaGetLastError();
}

__global__ void fill_kernel(float *p, float x, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        p[i] = x;
}

struct NcclApi {
    decltype(&ncclGroupStart)        group_start;
    decltype(&ncclGroupEnd)          group_end;
    decltype(&ncclSend)              send;
    decltype(&ncclRecv)              recv;
    decltype(&ncclCommCount)         comm_count;
    decltype(&ncclCommUserRank)      comm_user_rank;
    decltype(&ncclCommCuDevice)      comm_cu_device;
    decltype(&ncclGetErrorString)    error_string;
    decltype(&ncclCommGetAsyncError) async_error;
    bool ok;
    char why[400];
};

NcclApi load_nccl() {
    NcclApi     a;
    memset(&a, 0, sizeof a);
    const char *env  = getenv("FK_NCCL_LIBRARY");
    const char *path = env && env[0] ? env : "libnccl.so.2";
    // A process that already loaded NCCL (PyTorch) gets that same library back: dlopen matches the soname.
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(a.why, sizeof a.why, "could not load NCCL from \"%s\"%s: %s", path,
                 env && env[0] ? " (FK_NCCL_LIBRARY)" : " (set FK_NCCL_LIBRARY to its path)", e ? e : "?");
        return a;
    }
#define FK_NCCL_SYM(field, name)                                                                              \
    do {                                                                                                      \
        a.field = (decltype(a.field))dlsym(h, name);                                                          \
        if (!a.field) {                                                                                       \
            snprintf(a.why, sizeof a.why, "NCCL from \"%s\" has no symbol %s", path, name);                   \
            return a;                                                                                         \
        }                                                                                                     \
    } while (0)
    FK_NCCL_SYM(group_start, "ncclGroupStart");
    FK_NCCL_SYM(group_end, "ncclGroupEnd");
    FK_NCCL_SYM(send, "ncclSend");
    FK_NCCL_SYM(recv, "ncclRecv");
    FK_NCCL_SYM(comm_count, "ncclCommCount");
    FK_NCCL_SYM(comm_user_rank, "ncclCommUserRank");
    FK_NCCL_SYM(comm_cu_device, "ncclCommCuDevice");
    FK_NCCL_SYM(error_string, "ncclGetErrorString");
    FK_NCCL_SYM(async_error, "ncclCommGetAsyncError");
#undef FK_NCCL_SYM
    a.ok = true; // the handle is kept for the life of the process
    return a;
}

const NcclApi &nccl() {
    static const NcclApi api = load_nccl(); // C++11: initialized once, thread-safe
    return api;
}

size_t align256(size_t x) { return (x + 255) & ~(size_t)255; }

// Where this rank's rows of q meet the K/V of rank j (zigzag or contiguous; docs/DESIGN.md derives it):
//   q0, nq : local query rows [q0, q0 + nq);  k0, nk : rows of the received slice [k0, k0 + nk);
//   causal : the block is the diagonal one (plain causal, seqlen_q == seqlen_k);  nq == 0: nothing to do.
struct Step {
    int64_t q0, nq, k0, nk;
    int     causal;
};

Step step_of(const fk_ring_problem *rp, int rank, int j) {
    const int64_t S = rp->local.seqlen_q, c = S / 2;
    if (!rp->local.causal) return Step{0, S, 0, S, 0};
    if (j == rank) return Step{0, S, 0, S, 1};
    if (rp->layout == FK_RING_LAYOUT_ZIGZAG) {
        // j < rank: both local chunks (rank, 2N-1-rank) come after chunk j and before chunk 2N-1-j.
        if (j < rank) return Step{0, S, 0, c, 0};
        // j > rank: chunk `rank` precedes both chunks of j; chunk 2N-1-rank follows both.
        return Step{c, S - c, 0, S, 0};
    }
    if (j < rank) return Step{0, S, 0, S, 0};
    return Step{0, 0, 0, 0, 0}; // contiguous, j > rank: every key is in this rank's future
}

// The attention problem of one step: the local problem narrowed to query rows [q0, q0+nq) and to the
// received slice's rows [k0, k0+nk); K/V (and their gradients) in the contiguous travelling layout.
fk_attn_problem step_problem(const fk_ring_problem *rp, const Step &st, const void *kbuf, const void *vbuf) {
    const fk_attn_problem &L  = rp->local;
    fk_attn_problem        p  = L;
    const size_t           es = fk_dtype_size(L.dtype);
    const int64_t          S = L.seqlen_q, Hk = L.nheads_kv, D = L.head_dim;
    p.seqlen_q = st.nq, p.seqlen_k = st.nk;
    p.total_q = L.batch * st.nq, p.total_k = L.batch * st.nk;
    p.causal = st.causal, p.window_left = -1, p.window_right = st.causal ? 0 : -1;
    p.q = (const char *)L.q + (size_t)(st.q0 * L.q_rs) * es;
    p.k = (const char *)kbuf + (size_t)(st.k0 * Hk * D) * es;
    p.v = (const char *)vbuf + (size_t)(st.k0 * Hk * D) * es;
    p.k_bs = p.v_bs = S * Hk * D, p.k_rs = p.v_rs = Hk * D, p.k_hs = p.v_hs = D;
    return p;
}

// Event and stream bookkeeping of one call; released in the destructor (pending work completes regardless).
struct RingSync {
    cudaStream_t comm = nullptr;
    bool         own  = false;
    cudaEvent_t  ev[8] = {};
    cudaEvent_t &kv_arrived(int s) { return ev[0 + s]; }
    cudaEvent_t &kv_free(int s) { return ev[2 + s]; }
    cudaEvent_t &dkv_arrived(int s) { return ev[4 + s]; }
    cudaEvent_t &dkv_ready() { return ev[6]; }
    cudaEvent_t &start() { return ev[7]; }
    ~RingSync() {
        for (cudaEvent_t &e : ev)
            if (e) cudaEventDestroy(e);
        if (own && comm) cudaStreamDestroy(comm);
    }
};

#define FK_CU(call)                                                                                           \
    do {                                                                                                      \
        cudaError_t fk_e_ = (call);                                                                           \
        if (fk_e_ != cudaSuccess) {                                                                           \
            cudaGetLastError();                                                                               \
            return fk_error(FK_STATUS_CUDA_ERROR, "%s: %s: %s", op, #call, cudaGetErrorString(fk_e_));         \
        }                                                                                                     \
    } while (0)
#define FK_NC(call)                                                                                           \
    do {                                                                                                      \
        ncclResult_t fk_r_ = (call);                                                                          \
        if (fk_r_ != ncclSuccess)                                                                             \
            return fk_error(FK_STATUS_COMM_ERROR, "%s: %s: %s", op, #call, api.error_string(fk_r_));         \
    } while (0)

// NCCL loaded, communicator on this device, its size and our rank.
fk_status ring_setup(const char *op, const struct fk_context *ctx, const fk_ring_problem *rp, int *nranks,
                     int *rank, RingSync *sy) {
    const NcclApi &api = nccl();
    if (!api.ok) return fk_error(FK_STATUS_COMM_ERROR, "%s: %s", op, api.why);
    ncclComm_t comm = (ncclComm_t)rp->comm;
    int        dev  = -1;
    FK_NC(api.comm_cu_device(comm, &dev));
    if (dev != ctx->device.index)
        return fk_error(FK_STATUS_BAD_PARAM_DEVICE_MISMATCH, "%s: nccl_comm is on cuda:%d but the context is on cuda:%d",
                        op, dev, ctx->device.index);
    FK_NC(api.comm_count(comm, nranks));
    FK_NC(api.comm_user_rank(comm, rank));
    ncclResult_t async = ncclSuccess;
    FK_NC(api.async_error(comm, &async));
    if (async != ncclSuccess && async != ncclInProgress)
        return fk_error(FK_STATUS_COMM_ERROR, "%s: nccl_comm has a pending error: %s", op, api.error_string(async));
    for (cudaEvent_t &e : sy->ev) FK_CU(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    if (rp->comm_stream) sy->comm = (cudaStream_t)rp->comm_stream;
    else {
        FK_CU(cudaStreamCreateWithFlags(&sy->comm, cudaStreamNonBlocking));
        sy->own = true;
    }
    return FK_STATUS_SUCCESS;
}

// One exchange on the comm stream: send `bytes` at src to rank+1, receive as many into dst from rank-1.
fk_status exchange(const char *op, const fk_ring_problem *rp, int nranks, int rank, const void *src, void *dst,
                   size_t bytes, cudaStream_t s) {
    // FK_RING_SKIP_COMM=1 (benchmarks only): the transfers are left out, so a run times everything but the
    // communication; the results are wrong. bench_ring uses it to measure how much communication is hidden.
    const char *skip = getenv("FK_RING_SKIP_COMM");
    if (skip && skip[0] == '1') return FK_STATUS_SUCCESS;
    const NcclApi &api  = nccl();
    ncclComm_t     comm = (ncclComm_t)rp->comm;
    FK_NC(api.group_start());
    ncclResult_t r1 = api.send(src, bytes, ncclUint8, (rank + 1) % nranks, comm, s);
    ncclResult_t r2 = api.recv(dst, bytes, ncclUint8, (rank - 1 + nranks) % nranks, comm, s);
    ncclResult_t r3 = api.group_end();
    FK_NC(r1);
    FK_NC(r2);
    FK_NC(r3);
    return FK_STATUS_SUCCESS;
}

View4 contiguous_view(int64_t b, int64_t s, int64_t h, int64_t d) {
    return View4{{b, s, h, d}, {s * h * d, h * d, d, 1}};
}
View4 user_view(int64_t b, int64_t s, int64_t h, int64_t d, int64_t bs, int64_t rs, int64_t hs) {
    return View4{{b, s, h, d}, {bs, rs, hs, 1}};
}

} // namespace

extern "C" fk_status fk_cuda_ring_attn_workspace(const struct fk_context *ctx, const fk_ring_problem *rp,
                                                 int backward, fk_ring_workspace *w) {
    const fk_attn_problem &L  = rp->local;
    const size_t           es = fk_dtype_size(L.dtype);
    const size_t nq = (size_t)(L.batch * L.seqlen_q * L.nheads_q * L.head_dim), nkv = (size_t)(L.batch * L.seqlen_k * L.nheads_kv * L.head_dim);
    const size_t nl = (size_t)(L.batch * L.nheads_q * L.seqlen_q);
    memset(w, 0, sizeof *w);
    // Every step shape must be one the attention kernels take; the backward's workspace is the largest.
    size_t         attn = 0;
    const Step     shapes[3] = {{0, L.seqlen_q, 0, L.seqlen_k, L.causal}, {0, L.seqlen_q, 0, L.seqlen_k / 2, 0},
                                {L.seqlen_q / 2, L.seqlen_q - L.seqlen_q / 2, 0, L.seqlen_k, 0}};
    const int      nshapes   = L.causal && rp->layout == FK_RING_LAYOUT_ZIGZAG ? 3 : L.causal ? 2 : 1;
    Step           sh[3]     = {shapes[0], shapes[1], shapes[2]};
    if (L.causal && rp->layout == FK_RING_LAYOUT_CONTIGUOUS) sh[1] = Step{0, L.seqlen_q, 0, L.seqlen_k, 0};
    for (int i = 0; i < nshapes; i++) {
        fk_attn_problem p = step_problem(rp, sh[i], L.k, L.v);
        size_t          need = 0;
        if (backward) {
            p.o = L.o, p.lse = L.lse;
            FK_TRY(fk_cuda_attn_bwd_select(ctx, &p, &need));
        } else {
            p.lse = L.o; // any non-NULL: the steps always write an LSE
            FK_TRY(fk_cuda_attn_fwd_select(ctx, &p, &need));
        }
        attn = need > attn ? need : attn;
    }
    size_t off = 0;
    auto   put = [&](size_t &field, size_t bytes) {
        field = off;
        off += align256(bytes);
    };
    put(w->kv[0], 2 * nkv * es);
    put(w->kv[1], 2 * nkv * es);
    if (backward) {
        put(w->dkv[0], 2 * nkv * sizeof(float));
        put(w->dkv[1], 2 * nkv * sizeof(float));
        put(w->acc_dq, nq * sizeof(float));
        put(w->part_dq, nq * es);
        put(w->part_dk, nkv * es);
        put(w->part_dv, nkv * es);
        put(w->attn, attn);
        w->attn_bytes = attn;
    } else {
        put(w->acc_o, nq * sizeof(float));
        put(w->acc_lse, nl * sizeof(float));
        put(w->part_o, nq * es);
        put(w->part_lse, nl * sizeof(float));
    }
    w->total = off;
    return FK_STATUS_SUCCESS;
}

// The merge problem of query rows [q0, q0 + n) of the fp32 accumulator with the same rows of the partial.
static fk_merge_problem acc_merge(const fk_attn_problem &L, char *ws, const fk_ring_workspace &w, int64_t q0,
                                  int64_t n) {
    const int64_t    S = L.seqlen_q, H = L.nheads_q, D = L.head_dim;
    const size_t     es = fk_dtype_size(L.dtype);
    fk_merge_problem m;
    memset(&m, 0, sizeof m);
    m.batch = L.batch, m.seqlen = n, m.nheads = H, m.head_dim = D;
    m.out_dtype = FK_DTYPE_F32, m.part_dtype = L.dtype;
    m.out      = (float *)(ws + w.acc_o) + q0 * H * D;
    m.lse      = (float *)(ws + w.acc_lse) + q0;
    m.part_out = ws + w.part_o + (size_t)(q0 * H * D) * es;
    m.part_lse = (const float *)(ws + w.part_lse) + q0;
    m.out_bs = m.part_bs = S * H * D, m.out_rs = m.part_rs = H * D, m.out_hs = m.part_hs = D;
    m.lse_bs = m.plse_bs = H * S, m.lse_hs = m.plse_hs = S, m.lse_rs = m.plse_rs = 1;
    return m;
}

extern "C" fk_status fk_cuda_ring_attn_fwd(const struct fk_context *ctx, const fk_ring_problem *rp, void *ws_,
                                           size_t ws_bytes, void *stream_) {
    const char            *op = "ring_attn_fwd";
    const fk_attn_problem &L  = rp->local;
    char                  *ws = (char *)ws_;
    cudaStream_t           cs = (cudaStream_t)stream_;
    fk_ring_workspace      w;
    FK_TRY(fk_cuda_ring_attn_workspace(ctx, rp, 0, &w));
    if (ws_bytes < w.total) return fk_error(FK_STATUS_WORKSPACE_TOO_SMALL, "%s: workspace too small", op);
    DeviceScope dev(ctx->device.index);
    if (dev.err != cudaSuccess)
        return fk_error(FK_STATUS_CUDA_ERROR, "%s: cudaSetDevice(%d): %s", op, ctx->device.index,
                        cudaGetErrorString(dev.err));
    int      N = 1, r = 0;
    RingSync sy;
    FK_TRY(ring_setup(op, ctx, rp, &N, &r, &sy));
    const int64_t B = L.batch, S = L.seqlen_q, Hq = L.nheads_q, Hk = L.nheads_kv, D = L.head_dim;
    const size_t  es = fk_dtype_size(L.dtype), nkv = (size_t)(B * S * Hk * D);
    char         *kv[2] = {ws + w.kv[0], ws + w.kv[1]};

    // This rank's K/V into slot 0 (the travelling layout), the accumulator's LSE to -inf.
    FK_CU(launch_copy(L.k, L.dtype, user_view(B, S, Hk, D, L.k_bs, L.k_rs, L.k_hs), kv[0], L.dtype,
                      contiguous_view(B, S, Hk, D), cs));
    FK_CU(launch_copy(L.v, L.dtype, user_view(B, S, Hk, D, L.v_bs, L.v_rs, L.v_hs), kv[0] + nkv * es, L.dtype,
                      contiguous_view(B, S, Hk, D), cs));
    const int64_t nl = B * Hq * S;
    fill_kernel<<<grid_for(nl, 256), 256, 0, cs>>>((float *)(ws + w.acc_lse), -INFINITY, nl);
    FK_CU(cudaGetLastError());
    FK_CU(cudaEventRecord(sy.start(), cs));
    FK_CU(cudaStreamWaitEvent(sy.comm, sy.start(), 0));

    for (int i = 0; i < N; i++) {
        const int cur = i & 1, nxt = cur ^ 1;
        // Post the next slice's arrival before this step's compute, so the two overlap.
        if (i + 1 < N) {
            if (i >= 1) FK_CU(cudaStreamWaitEvent(sy.comm, sy.kv_free(nxt), 0));
            FK_TRY(exchange(op, rp, N, r, kv[cur], kv[nxt], 2 * nkv * es, sy.comm));
            FK_CU(cudaEventRecord(sy.kv_arrived(nxt), sy.comm));
        }
        if (i >= 1) FK_CU(cudaStreamWaitEvent(cs, sy.kv_arrived(cur), 0));
        const int  j  = (r - i + N) % N;
        const Step st = step_of(rp, r, j);
        if (st.nq > 0) {
            fk_attn_problem p = step_problem(rp, st, kv[cur], kv[cur] + nkv * es);
            p.o    = ws + w.part_o + (size_t)(st.q0 * Hq * D) * es;
            p.o_bs = S * Hq * D, p.o_rs = Hq * D, p.o_hs = D;
            p.lse  = (float *)(ws + w.part_lse) + st.q0;
            p.lse_bs = Hq * S, p.lse_hs = S, p.lse_rs = 1;
            FK_TRY(fk_cuda_attn_fwd(ctx, &p, nullptr, 0, cs));
        }
        if (i + 2 < N) FK_CU(cudaEventRecord(sy.kv_free(cur), cs));
        if (st.nq > 0) {
            const fk_merge_problem m = acc_merge(L, ws, w, st.q0, st.nq);
            FK_CU(launch_merge(&m, cs));
        }
    }
    // The accumulator into the caller's o (storage dtype) and lse.
    FK_CU(launch_copy(ws + w.acc_o, FK_DTYPE_F32, contiguous_view(B, S, Hq, D), L.o, L.dtype,
                      user_view(B, S, Hq, D, L.o_bs, L.o_rs, L.o_hs), cs));
    if (L.lse)
        FK_CU(launch_copy(ws + w.acc_lse, FK_DTYPE_F32, View4{{1, B, Hq, S}, {0, Hq * S, S, 1}}, L.lse, FK_DTYPE_F32,
                          View4{{1, B, Hq, S}, {0, L.lse_bs, L.lse_hs, L.lse_rs}}, cs));
    return FK_STATUS_SUCCESS;
}

extern "C" fk_status fk_cuda_ring_attn_bwd(const struct fk_context *ctx, const fk_ring_problem *rp, void *ws_,
                                           size_t ws_bytes, void *stream_) {
    const char            *op = "ring_attn_bwd";
    const fk_attn_problem &L  = rp->local;
    char                  *ws = (char *)ws_;
    cudaStream_t           cs = (cudaStream_t)stream_;
    fk_ring_workspace      w;
    FK_TRY(fk_cuda_ring_attn_workspace(ctx, rp, 1, &w));
    if (ws_bytes < w.total) return fk_error(FK_STATUS_WORKSPACE_TOO_SMALL, "%s: workspace too small", op);
    DeviceScope dev(ctx->device.index);
    if (dev.err != cudaSuccess)
        return fk_error(FK_STATUS_CUDA_ERROR, "%s: cudaSetDevice(%d): %s", op, ctx->device.index,
                        cudaGetErrorString(dev.err));
    int      N = 1, r = 0;
    RingSync sy;
    FK_TRY(ring_setup(op, ctx, rp, &N, &r, &sy));
    const int64_t B = L.batch, S = L.seqlen_q, Hq = L.nheads_q, Hk = L.nheads_kv, D = L.head_dim;
    const size_t  es = fk_dtype_size(L.dtype), nkv = (size_t)(B * S * Hk * D), nq = (size_t)(B * S * Hq * D);
    char         *kv[2]  = {ws + w.kv[0], ws + w.kv[1]};
    float        *dkv[2] = {(float *)(ws + w.dkv[0]), (float *)(ws + w.dkv[1])};
    float        *acc_dq = (float *)(ws + w.acc_dq);

    FK_CU(launch_copy(L.k, L.dtype, user_view(B, S, Hk, D, L.k_bs, L.k_rs, L.k_hs), kv[0], L.dtype,
                      contiguous_view(B, S, Hk, D), cs));
    FK_CU(launch_copy(L.v, L.dtype, user_view(B, S, Hk, D, L.v_bs, L.v_rs, L.v_hs), kv[0] + nkv * es, L.dtype,
                      contiguous_view(B, S, Hk, D), cs));
    FK_CU(cudaMemsetAsync(acc_dq, 0, nq * sizeof(float), cs));
    FK_CU(cudaMemsetAsync(dkv[0], 0, 2 * nkv * sizeof(float), cs));
    FK_CU(cudaEventRecord(sy.start(), cs));
    FK_CU(cudaStreamWaitEvent(sy.comm, sy.start(), 0));

    for (int i = 0; i < N; i++) {
        const int cur = i & 1, nxt = cur ^ 1;
        if (i + 1 < N) {
            if (i >= 1) FK_CU(cudaStreamWaitEvent(sy.comm, sy.kv_free(nxt), 0));
            FK_TRY(exchange(op, rp, N, r, kv[cur], kv[nxt], 2 * nkv * es, sy.comm));
            FK_CU(cudaEventRecord(sy.kv_arrived(nxt), sy.comm));
        }
        if (i >= 1) FK_CU(cudaStreamWaitEvent(cs, sy.kv_arrived(cur), 0));
        const int  j  = (r - i + N) % N;
        const Step st = step_of(rp, r, j);
        if (st.nq > 0) {
            // Query-side operands are the caller's rows [q0, q0+nq): q, o, do_ and lse are forward's global ones.
            fk_attn_problem p = step_problem(rp, st, kv[cur], kv[cur] + nkv * es);
            p.o   = (char *)L.o + (size_t)(st.q0 * L.o_rs) * es;
            p.do_ = (const char *)L.do_ + (size_t)(st.q0 * L.do_rs) * es;
            p.lse = (float *)L.lse + st.q0 * L.lse_rs;
            p.dq  = ws + w.part_dq + (size_t)(st.q0 * Hq * D) * es;
            p.dq_bs = S * Hq * D, p.dq_rs = Hq * D, p.dq_hs = D;
            p.dk = ws + w.part_dk + (size_t)(st.k0 * Hk * D) * es;
            p.dv = ws + w.part_dv + (size_t)(st.k0 * Hk * D) * es;
            p.dk_bs = p.dv_bs = S * Hk * D, p.dk_rs = p.dv_rs = Hk * D, p.dk_hs = p.dv_hs = D;
            FK_TRY(fk_cuda_attn_bwd(ctx, &p, ws + w.attn, w.attn_bytes, cs));
        }
        if (i + 2 < N) FK_CU(cudaEventRecord(sy.kv_free(cur), cs));
        if (st.nq > 0) {
            FK_CU(launch_add(acc_dq + st.q0 * Hq * D, S * Hq * D, ws + w.part_dq + (size_t)(st.q0 * Hq * D) * es,
                             L.dtype, S * Hq * D, B, st.nq * Hq * D, cs));
            // This K/V's travelling accumulator arrived with it (step 0: our own, zeroed above).
            if (i >= 1) FK_CU(cudaStreamWaitEvent(cs, sy.dkv_arrived(cur), 0));
            float *dk_acc = dkv[cur], *dv_acc = dkv[cur] + nkv;
            FK_CU(launch_add(dk_acc + st.k0 * Hk * D, S * Hk * D, ws + w.part_dk + (size_t)(st.k0 * Hk * D) * es,
                             L.dtype, S * Hk * D, B, st.nk * Hk * D, cs));
            FK_CU(launch_add(dv_acc + st.k0 * Hk * D, S * Hk * D, ws + w.part_dv + (size_t)(st.k0 * Hk * D) * es,
                             L.dtype, S * Hk * D, B, st.nk * Hk * D, cs));
        } else if (i >= 1) {
            FK_CU(cudaStreamWaitEvent(cs, sy.dkv_arrived(cur), 0)); // passes through untouched
        }
        // The accumulator moves on with its K/V; after the last step it goes home (rank r+1 owns it).
        if (N > 1) {
            FK_CU(cudaEventRecord(sy.dkv_ready(), cs));
            FK_CU(cudaStreamWaitEvent(sy.comm, sy.dkv_ready(), 0));
            FK_TRY(exchange(op, rp, N, r, dkv[cur], dkv[nxt], 2 * nkv * sizeof(float), sy.comm));
            FK_CU(cudaEventRecord(sy.dkv_arrived(nxt), sy.comm));
        }
    }
    // After N steps plus the final hop, slot N % 2 holds this rank's complete dK/dV.
    const int home = N > 1 ? N & 1 : 0;
    if (N > 1) FK_CU(cudaStreamWaitEvent(cs, sy.dkv_arrived(home), 0));
    FK_CU(launch_copy(acc_dq, FK_DTYPE_F32, contiguous_view(B, S, Hq, D), L.dq, L.dtype,
                      user_view(B, S, Hq, D, L.dq_bs, L.dq_rs, L.dq_hs), cs));
    FK_CU(launch_copy(dkv[home], FK_DTYPE_F32, contiguous_view(B, S, Hk, D), L.dk, L.dtype,
                      user_view(B, S, Hk, D, L.dk_bs, L.dk_rs, L.dk_hs), cs));
    FK_CU(launch_copy(dkv[home] + nkv, FK_DTYPE_F32, contiguous_view(B, S, Hk, D), L.dv, L.dtype,
                      user_view(B, S, Hk, D, L.dv_bs, L.dv_rs, L.dv_hs), cs));
    return FK_STATUS_SUCCESS;
}

#endif // FK_HAVE_NCCL_H
