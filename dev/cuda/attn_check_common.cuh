// attn_check_common.cuh — dev only: what the attention checks share (attn_fwd_check.cu, and through
// attn_bwd_ref.cuh attn_bwd_check.cu and attn_bwd_wgmma_check.cu): dtype loads and rounding for the float64
// references, the counter-hash mixer of the random fills, the byte fill that poisons outputs with NaN, the host
// load of a copied-back output, and a library context for device 0.
#ifndef FK_DEV_ATTN_CHECK_COMMON_CUH
#define FK_DEV_ATTN_CHECK_COMMON_CUH

#include "../../src/core/attn_internal.h"
#include "dev_common.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>
#include <string.h>
#include <vector>

// Element i of a tensor of dtype dt, as a double.
__device__ double ld(const void *p, int dt, int64_t i) {
    if (dt == FK_DTYPE_F16) return (double)__half2float(((const __half *)p)[i]);
    if (dt == FK_DTYPE_BF16) return (double)__bfloat162float(((const __nv_bfloat16 *)p)[i]);
    return (double)((const float *)p)[i];
}
// x rounded to dtype dt (what storing it in that dtype keeps).
__device__ double rnd_dt(int dt, double x) {
    if (dt == FK_DTYPE_F16) return (double)__half2float(__float2half_rn((float)x));
    if (dt == FK_DTYPE_BF16) return (double)__bfloat162float(__float2bfloat16_rn((float)x));
    return (double)(float)x;
}
// 64-bit finalizer (splitmix / murmur3 style): the counter hash of the random fills.
__device__ uint64_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}
// n bytes set to v (0xff: every fp16 / bf16 / fp32 element a NaN).
__global__ void fill_bytes(uint8_t *p, int64_t n, uint8_t v) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        p[i] = v;
}

// Element i of an output copied back to the host, as a double.
static inline double host_ld(const std::vector<uint8_t> &buf, fk_dtype dt, int64_t i) {
    if (dt == FK_DTYPE_F32) return ((const float *)buf.data())[i];
    uint16_t x = ((const uint16_t *)buf.data())[i];
    if (dt == FK_DTYPE_BF16) {
        uint32_t u = (uint32_t)x << 16;
        float    f;
        memcpy(&f, &u, 4);
        return f;
    }
    return (double)__half2float(*(const __half *)&x);
}

// A context for device 0 filled here, not by fk_context_create: kind, index, compute capability, SMs, opt-in smem.
static inline struct fk_context make_ctx() {
    struct fk_context ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.device.kind  = FK_DEVICE_CUDA;
    ctx.device.index = 0;
    cudaDeviceProp pr;
    CK(cudaGetDeviceProperties(&pr, 0));
    ctx.cc_major = pr.major, ctx.cc_minor = pr.minor, ctx.sm_count = pr.multiProcessorCount;
    ctx.max_smem_optin = (int)pr.sharedMemPerBlockOptin;
    ctx.num_threads    = 1;
    return ctx;
}

#endif // FK_DEV_ATTN_CHECK_COMMON_CUH
