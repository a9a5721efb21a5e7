/*
 * ops_common.cuh — what the memory-bound CUDA ops (rmsnorm.cu, rope.cu, swiglu.cu) share: storage-dtype
 * traits with 16-byte vector loads/stores converted to fp32, partial (tail) vectors, a block sum with a fixed
 * reduction order, and the host-side device scope and launch check.
 *
 * Why 16 bytes: an H100 reaches its copy bandwidth only with 128-bit accesses coalesced across the warp (one
 * LDG.128 per thread moves a full 512-byte warp request); 32- or 64-bit accesses need 2-4x the load
 * instructions for the same bytes. A "vector" here is 16 bytes of the storage dtype: N = 4 fp32 or 8 fp16/bf16.
 * Kernels take the vector path only when every row start they touch is 16-byte aligned (pointer and row
 * strides); a row whose length is not a multiple of N ends in one partial vector, read and written element by
 * element. Anything else runs the same kernel with N = 1 (the scalar fallback).
 */
#ifndef FK_CUDA_OPS_COMMON_CUH
#define FK_CUDA_OPS_COMMON_CUH

#include "../core/ops_internal.h"
#include "common.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

namespace fk_ops {

using fk_cuda::smem_addr; // a generic pointer into shared memory as the 32-bit address PTX takes

// --- storage dtypes --------------------------------------------------------------------------------------

template <typename T> struct Dt;
template <> struct Dt<float> {
    static constexpr fk_dtype id = FK_DTYPE_F32;
    __device__ __forceinline__ static float to_f(float x) { return x; }
    __device__ __forceinline__ static float from_f(float x) { return x; }
};
template <> struct Dt<__half> {
    static constexpr fk_dtype id = FK_DTYPE_F16;
    __device__ __forceinline__ static float  to_f(__half x) { return __half2float(x); }
    __device__ __forceinline__ static __half from_f(float x) { return __float2half_rn(x); }
};
template <> struct Dt<__nv_bfloat16> {
    static constexpr fk_dtype id = FK_DTYPE_BF16;
    __device__ __forceinline__ static float         to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
    __device__ __forceinline__ static __nv_bfloat16 from_f(float x) { return __float2bfloat16_rn(x); }
};

// Elements of T in one 16-byte vector.
template <typename T> constexpr int kVec = 16 / (int)sizeof(T);

// N elements of T held packed in registers (N * sizeof(T) <= 16 bytes when N == kVec<T>; N == 1 is scalar).
template <typename T, int N> struct alignas(N * sizeof(T) >= 16 ? 16 : sizeof(T)) Pack {
    T v[N];
};

// Full pack from an aligned address (one 16-byte access when N == kVec<T>).
template <typename T, int N> __device__ __forceinline__ Pack<T, N> load_pack(const T *p) {
    return *reinterpret_cast<const Pack<T, N> *>(p);
}
template <typename T, int N> __device__ __forceinline__ void store_pack(T *p, const Pack<T, N> &x) {
    *reinterpret_cast<Pack<T, N> *>(p) = x;
}
// Partial pack: the first n (< N) elements, element by element; the rest are zero.
template <typename T, int N> __device__ __forceinline__ Pack<T, N> load_pack_n(const T *p, int n) {
    Pack<T, N> x;
#pragma unroll
    for (int k = 0; k < N; k++) x.v[k] = k < n ? p[k] : Dt<T>::from_f(0.f);
    return x;
}
template <typename T, int N> __device__ __forceinline__ void store_pack_n(T *p, const Pack<T, N> &x, int n) {
#pragma unroll
    for (int k = 0; k < N; k++)
        if (k < n) p[k] = x.v[k];
}
// Either of the two, by the number of valid elements n (n >= N: full).
template <typename T, int N> __device__ __forceinline__ Pack<T, N> load_pack_any(const T *p, int n) {
    return n >= N ? load_pack<T, N>(p) : load_pack_n<T, N>(p, n);
}
template <typename T, int N> __device__ __forceinline__ void store_pack_any(T *p, const Pack<T, N> &x, int n) {
    if (n >= N) store_pack<T, N>(p, x);
    else store_pack_n<T, N>(p, x, n);
}

// Makes the compiler treat the pack as unknown data from here on. Kernels that keep a row in registers across
// a reduction call this before the second use, so the fp32 values unpacked for the first use die there and
// only the packed 16-bit form stays live (half the registers); re-unpacking costs one instruction a pair.
template <typename T, int N> __device__ __forceinline__ void opaque(Pack<T, N> &x) {
    static_assert(sizeof(Pack<T, N>) % 4 == 0 || N == 1, "pack of whole words");
    if constexpr (sizeof(Pack<T, N>) % 4 == 0) {
        uint32_t *w = reinterpret_cast<uint32_t *>(&x);
#pragma unroll
        for (int i = 0; i < (int)(sizeof(Pack<T, N>) / 4); i++) asm volatile("" : "+r"(w[i]));
    } else {
        uint16_t *w = reinterpret_cast<uint16_t *>(&x);
        asm volatile("" : "+h"(w[0]));
    }
}

template <typename T, int N> __device__ __forceinline__ void unpack(const Pack<T, N> &x, float (&f)[N]) {
#pragma unroll
    for (int k = 0; k < N; k++) f[k] = Dt<T>::to_f(x.v[k]);
}
template <typename T, int N> __device__ __forceinline__ Pack<T, N> pack(const float (&f)[N]) {
    Pack<T, N> x;
#pragma unroll
    for (int k = 0; k < N; k++) x.v[k] = Dt<T>::from_f(f[k]);
    return x;
}

// N elements of a float buffer of run-time dtype dt (weights: any float dtype), as fp32. `vec`: the address is
// 16-byte aligned, so whole 16-byte accesses are used for full runs. n < N loads element by element (rest 0).
template <int N>
__device__ __forceinline__ void load_any_dtype(const void *base, fk_dtype dt, int64_t j, int n, bool vec,
                                               float (&f)[N]) {
    if (dt == FK_DTYPE_F32) {
        const float *p = static_cast<const float *>(base) + j;
        if (vec && n >= N && N % 4 == 0) {
#pragma unroll
            for (int k = 0; k < N; k += 4) {
                float4 q = *reinterpret_cast<const float4 *>(p + k);
                f[k] = q.x, f[k + 1] = q.y, f[k + 2] = q.z, f[k + 3] = q.w;
            }
        } else {
#pragma unroll
            for (int k = 0; k < N; k++) f[k] = k < n ? p[k] : 0.f;
        }
    } else if (dt == FK_DTYPE_BF16) {
        const __nv_bfloat16 *p = static_cast<const __nv_bfloat16 *>(base) + j;
        if (vec && n >= N && N % 8 == 0) {
#pragma unroll
            for (int k = 0; k < N; k += 8) {
                float g[8];
                unpack<__nv_bfloat16, 8>(load_pack<__nv_bfloat16, 8>(p + k), g);
#pragma unroll
                for (int i = 0; i < 8; i++) f[k + i] = g[i];
            }
        } else {
#pragma unroll
            for (int k = 0; k < N; k++) f[k] = k < n ? __bfloat162float(p[k]) : 0.f;
        }
    } else {
        const __half *p = static_cast<const __half *>(base) + j;
        if (vec && n >= N && N % 8 == 0) {
#pragma unroll
            for (int k = 0; k < N; k += 8) {
                float g[8];
                unpack<__half, 8>(load_pack<__half, 8>(p + k), g);
#pragma unroll
                for (int i = 0; i < 8; i++) f[k + i] = g[i];
            }
        } else {
#pragma unroll
            for (int k = 0; k < N; k++) f[k] = k < n ? __half2float(p[k]) : 0.f;
        }
    }
}

// Stores n (<= N) fp32 values into a buffer of run-time dtype dt, element by element (rounding to nearest even).
__device__ __forceinline__ void store_any_dtype(void *base, fk_dtype dt, int64_t j, float x) {
    if (dt == FK_DTYPE_F32) static_cast<float *>(base)[j] = x;
    else if (dt == FK_DTYPE_BF16) static_cast<__nv_bfloat16 *>(base)[j] = __float2bfloat16_rn(x);
    else static_cast<__half *>(base)[j] = __float2half_rn(x);
}

// --- asynchronous copies (cp.async, sm_80+) ----------------------------------------------------------------
// A thread copies global memory into its own shared-memory slots and later reads only those slots, so the
// group wait below is all the ordering it needs (no barrier). Ring buffers of the row kernels use them to keep
// several rows in flight without holding them in registers.

// 16 bytes from a 16-byte aligned global address; the first `bytes` (1..16) are read, the rest zero-filled.
__device__ __forceinline__ void cp16(void *smem, const void *g, int bytes) {
    const uint32_t s = smem_addr(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(s), "l"(g), "r"(bytes) : "memory");
}
// 4 bytes (one float).
__device__ __forceinline__ void cp4(void *smem, const void *g) {
    const uint32_t s = smem_addr(smem);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(s), "l"(g) : "memory");
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
// Wait until at most `pending` of this thread's groups are in flight; `pending` at run time (0..7), a uniform
// branch to the immediate the instruction needs.
__device__ __forceinline__ void cp_wait(int pending) {
    switch (pending) {
    case 0: asm volatile("cp.async.wait_group 0;" ::: "memory"); break;
    case 1: asm volatile("cp.async.wait_group 1;" ::: "memory"); break;
    case 2: asm volatile("cp.async.wait_group 2;" ::: "memory"); break;
    case 3: asm volatile("cp.async.wait_group 3;" ::: "memory"); break;
    case 4: asm volatile("cp.async.wait_group 4;" ::: "memory"); break;
    case 5: asm volatile("cp.async.wait_group 5;" ::: "memory"); break;
    case 6: asm volatile("cp.async.wait_group 6;" ::: "memory"); break;
    default: asm volatile("cp.async.wait_group 7;" ::: "memory"); break;
    }
}

// --- bulk copies into shared memory with an mbarrier (sm_90+) -----------------------------------------------
// One thread copies a whole contiguous range (16-byte aligned, a multiple of 16 bytes) into shared memory with
// cp.async.bulk; the copy engine counts its bytes on an mbarrier, and the readers wait on that barrier's phase.
// Compiled for sm_90 and later only; the callers launch them on 9.0+ devices (elsewhere the bodies trap).
__device__ __forceinline__ void mbar_init(uint64_t *bar, unsigned count) {
#if __CUDA_ARCH__ >= 900
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(count) : "memory");
#endif
}
// After the barriers' init, before any other thread or the copy engine uses them (then a block barrier).
__device__ __forceinline__ void mbar_init_fence() {
#if __CUDA_ARCH__ >= 900
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
#endif
}
// The issuing thread's arrival, announcing `bytes` still to come from bulk copies.
__device__ __forceinline__ void mbar_expect_tx(uint64_t *bar, unsigned bytes) {
#if __CUDA_ARCH__ >= 900
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)), "r"(bytes) : "memory");
#endif
}
__device__ __forceinline__ void bulk_g2s(void *dst, const void *src, unsigned bytes, uint64_t *bar) {
#if __CUDA_ARCH__ >= 900
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(smem_addr(dst)),
                 "l"(src), "r"(bytes), "r"(smem_addr(bar))
                 : "memory");
#else
    __trap();
#endif
}
// Waits until the barrier's phase with this parity has completed.
__device__ __forceinline__ void mbar_wait(uint64_t *bar, unsigned parity) {
#if __CUDA_ARCH__ >= 900
    uint32_t done = 0;
    do {
        asm volatile("{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}"
                     : "=r"(done)
                     : "r"(smem_addr(bar)), "r"(parity)
                     : "memory");
    } while (!done);
#endif
}
// Generic-proxy accesses of shared memory ordered before later async-proxy (bulk copy) writes to it.
__device__ __forceinline__ void fence_proxy_async_smem() {
#if __CUDA_ARCH__ >= 900
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
#endif
}

// --- reductions ------------------------------------------------------------------------------------------

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024), the same value returned to every thread.
// The order is fixed (butterfly in each warp, then warp sums in warp order), so results are reproducible.
// `red` is 32 floats of shared memory; the call ends with a barrier, so `red` may be reused right after.
__device__ __forceinline__ float block_sum(float x, float *red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    x = warp_sum(x);
    if (nwarps == 1) return x;
    if (lane == 0) red[warp] = x;
    __syncthreads();
    float s = lane < nwarps ? red[lane] : 0.f;
    s       = warp_sum(s);
    __syncthreads();
    return s;
}

// --- host side -------------------------------------------------------------------------------------------

// Is p 16-byte aligned, and does every row stride keep it so (strides in elements of size es)?
inline bool aligned16(const void *p, size_t es, int64_t s0 = 0, int64_t s1 = 0, int64_t s2 = 0) {
    const int64_t n = (int64_t)(16 / es);
    return p != nullptr && ((uintptr_t)p % 16) == 0 && s0 % n == 0 && s1 % n == 0 && s2 % n == 0;
}

// Selects ctx's device for one call and restores the caller's on destruction (each entry point's contract).
struct DeviceScope {
    int         prev = -1;
    bool        switched = false;
    cudaError_t err = cudaSuccess;
    explicit DeviceScope(int index) {
        err = cudaGetDevice(&prev);
        if (err == cudaSuccess && prev != index) {
            err      = cudaSetDevice(index);
            switched = err == cudaSuccess;
        }
    }
    ~DeviceScope() {
        if (switched) cudaSetDevice(prev);
    }
    DeviceScope(const DeviceScope &)            = delete;
    DeviceScope &operator=(const DeviceScope &) = delete;
};

// FK_STATUS_CUDA_ERROR with CUDA's text when the scope could not be entered.
inline fk_status scope_status(const char *op, const DeviceScope &s, int index) {
    if (s.err == cudaSuccess) return FK_STATUS_SUCCESS;
    return fk_error(FK_STATUS_CUDA_ERROR, "%s: selecting cuda:%d failed: %s", op, index, cudaGetErrorString(s.err));
}

// The result of a launch (cudaLaunchKernel's return, or cudaGetLastError() right after a <<<>>> launch) as a
// status. A failed launch also leaves its error as the thread's "last error": it is cleared here, so the next
// flashkit call (which checks cudaGetLastError after its own <<<>>> launches) does not report it again.
inline fk_status launch_result(const char *op, const char *kernel, cudaError_t e) {
    if (e == cudaSuccess) return FK_STATUS_SUCCESS;
    (void)cudaGetLastError();
    return fk_error(FK_STATUS_CUDA_ERROR, "%s: launching %s failed: %s", op, kernel, cudaGetErrorString(e));
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

} // namespace fk_ops

#endif // FK_CUDA_OPS_COMMON_CUH
