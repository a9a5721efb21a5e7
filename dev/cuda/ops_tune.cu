// ops_tune.cu — launch-shape sweep for the fused element-wise ops (bf16, 16,384 rows): times every candidate
// shape of src/cuda/{swiglu,rmsnorm,rope}.cu's kernels with CUDA events (median of 20 after 3 warm-ups) on
// random data larger than L2, and prints GB/s (each input read once + each output written once). The library's
// selection rules were set from its output (docs/PERF.md, "GPU: fused ops").
// `ops_tune next [rmsnorm|swiglu|rope]`: the production selection beside its alternatives, each checked against
// float64 and timed (ops_tune_next.inc; one device call: bench/next_ops.sh).
// Build (needs build-gpu/libflashkit.a for fk_error & co.):
//   nvcc -O3 -std=c++17 -arch=sm_90 --expt-relaxed-constexpr -DFK_WITH_CUDA -Iinclude -Isrc \
//        dev/cuda/ops_tune.cu build-gpu/libflashkit.a -o build-gpu/ops_tune
#include "../../src/core/ops_select.h" // before the namespaces below: one global copy
#include "../../src/cuda/ops_common.cuh"

#include <sstream>
#include <algorithm>
#include <atomic> // before the namespaces below (rmsnorm.cu includes them)
#include <chrono>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <vector>

namespace sw {
#include "../../src/cuda/swiglu.cu"
}
namespace rn {
#include "../../src/cuda/rmsnorm.cu"
}
namespace rp {
#include "../../src/cuda/rope.cu"
}

#define CK(x)                                                                                                  \
    do {                                                                                                       \
        cudaError_t e_ = (x);                                                                                  \
        if (e_ != cudaSuccess) {                                                                               \
            printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__);                   \
            exit(1);                                                                                           \
        }                                                                                                      \
    } while (0)

// When set (`ops_tune next`), every timed run starts with 256 MB of zeros written over this buffer, as
// triton.testing.do_bench (bench/bench_ops.py) does: the L2 then holds dirty lines of another buffer, not the
// op's inputs, and the numbers compare with bench_ops.py's.
static void *g_flush = nullptr;
static const size_t kFlushBytes = (size_t)256 << 20;

template <typename F> static float time_ms(F &&f) {
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    for (int i = 0; i < 3; i++) f();
    std::vector<float> t;
    for (int i = 0; i < 20; i++) {
        if (g_flush) CK(cudaMemsetAsync(g_flush, 0, kFlushBytes));
        CK(cudaEventRecord(a));
        f();
        CK(cudaEventRecord(b));
        CK(cudaEventSynchronize(b));
        float ms;
        CK(cudaEventElapsedTime(&ms, a, b));
        t.push_back(ms);
    }
    CK(cudaGetLastError());
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

__global__ void fill(__nv_bfloat16 *p, int64_t n, uint32_t seed) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 2654435761u ^ seed;
        h ^= h >> 13, h *= 0x5bd1e995u, h ^= h >> 15;
        p[i] = __float2bfloat16(((float)(h & 0xffff) / 65536.f - 0.5f) * 4.f);
    }
}
static __nv_bfloat16 *rnd(int64_t n, uint32_t seed) {
    __nv_bfloat16 *p;
    CK(cudaMalloc(&p, n * 2));
    fill<<<1024, 256>>>(p, n, seed);
    CK(cudaGetLastError());
    return p;
}

static double copy_gbs(fk_context &) {
    const int64_t n = (int64_t)1 << 30;
    void *s, *d;
    CK(cudaMalloc(&s, n));
    CK(cudaMalloc(&d, n));
    CK(cudaMemset(s, 1, n));
    float ms = time_ms([&] { CK(cudaMemcpyAsync(d, s, n, cudaMemcpyDeviceToDevice)); });
    cudaFree(s), cudaFree(d);
    return 2.0 * n / ms * 1e-6;
}

// The production launch-shape sweep (no argument).
static int sweep(fk_context &ctx) {
    const int64_t T = 16384;

    // --- SwiGLU: U vectors per thread x block size --------------------------------------------------------
    {
        const int64_t W = 11008, n = T * W;
        __nv_bfloat16 *g = rnd(n, 1), *u = rnd(n, 2), *d = rnd(n, 3), *o = rnd(n, 4), *o2 = rnd(n, 5);
        sw::SwigluArgs a;
        memset(&a, 0, sizeof a);
        a.gate = g, a.up = u, a.dout = d, a.out = o, a.dgate = o, a.dup = o2;
        a.gate_rs = a.up_rs = a.dout_rs = a.out_rs = a.dgate_rs = a.dup_rs = n;
        a.width = n;
        for (int bwd = 0; bwd < 2; bwd++)
            for (int thr : {128, 256})
                for (int U : {1, 2, 4}) {
                    auto f = [&] {
                        if (U == 1) bwd ? sw::launch_t<__nv_bfloat16, true, 1>(&ctx, a, 1, true, 0, thr)
                                        : sw::launch_t<__nv_bfloat16, false, 1>(&ctx, a, 1, true, 0, thr);
                        if (U == 2) bwd ? sw::launch_t<__nv_bfloat16, true, 2>(&ctx, a, 1, true, 0, thr)
                                        : sw::launch_t<__nv_bfloat16, false, 2>(&ctx, a, 1, true, 0, thr);
                        if (U == 4) bwd ? sw::launch_t<__nv_bfloat16, true, 4>(&ctx, a, 1, true, 0, thr)
                                        : sw::launch_t<__nv_bfloat16, false, 4>(&ctx, a, 1, true, 0, thr);
                    };
                    const double bytes = (bwd ? 5.0 : 3.0) * n * 2;
                    printf("swiglu %s 16384x11008 threads=%d U=%d: %.0f GB/s\n", bwd ? "bwd" : "fwd", thr, U,
                           bytes / time_ms(f) * 1e-6);
                }
        cudaFree(g), cudaFree(u), cudaFree(d), cudaFree(o), cudaFree(o2);
    }

    // --- RMSNorm: VPT x block size (forward plain and fused, backward) ------------------------------------
    for (int64_t H : {2048, 4096, 5120, 8192}) {
        const int64_t n = T * H;
        __nv_bfloat16 *x = rnd(n, 6), *r = rnd(n, 7), *ro = rnd(n, 8), *y = rnd(n, 9), *w = rnd(H, 10);
        __nv_bfloat16 *dw = rnd(H, 11);
        float        *rstd, *ws;
        CK(cudaMalloc(&rstd, T * 4));
        CK(cudaMalloc(&ws, (size_t)ctx.sm_count * 32 * H * 4 + 256));
        fk_rmsnorm_problem p;
        memset(&p, 0, sizeof p);
        p.rows = T, p.hidden = H, p.dtype = p.weight_dtype = p.dweight_dtype = FK_DTYPE_BF16;
        p.rstd_dtype = FK_DTYPE_F32;
        p.x = x, p.x_rs = H, p.weight = w, p.y = y, p.y_rs = H, p.rstd = rstd, p.eps = 1e-6f;
        p.dy = r, p.dy_rs = H, p.dx = ro, p.dx_rs = H, p.dweight = dw;
        fk_rmsnorm_problem pr = p;
        pr.residual = r, pr.residual_rs = H, pr.residual_out = ro, pr.residual_out_rs = H;
        rn::Plan base;
        for (int mode = 0; mode < 3; mode++) { // 0 fwd, 1 fwd + residual, 2 bwd
            const fk_rmsnorm_problem &pp = mode == 1 ? pr : p;
            if (rn::make_plan("tune", &ctx, &pp, mode == 2, &base, false) != FK_STATUS_SUCCESS) {
                printf("plan failed: %s\n", fk_last_error_message());
                continue;
            }
            const double bytes = mode == 0 ? 2.0 * n * 2 : mode == 1 ? 4.0 * n * 2 : 3.0 * n * 2;
            for (int vpt : {1, 2, 3, 4, 5, 6, 8}) {
                if (mode == 2 && vpt > 4) continue;
                const int64_t thr = rn::ceil_div(rn::ceil_div(base.nvec, vpt), 32) * 32;
                if (thr > 512) continue;
                rn::Plan pl = base;
                pl.vpt = vpt, pl.threads = (int)thr;
                pl.w = 0; // the block-per-row kernels (the row groups: ops_tune next)
                const void *k = rn::pick_kernel(FK_DTYPE_BF16, pl, mode == 2);
                if (!k) continue; // a VPT the library no longer compiles (2, 3, 5, 6 forward)
                if (mode == 2) {
                    pl.smem = 2 * (size_t)pl.n * pl.nvec * 4;
                    if (pl.smem + 128 > 48 * 1024)
                        CK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)pl.smem));
                    int per_sm = 0;
                    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k, pl.threads, pl.smem));
                    pl.grid = (int64_t)ctx.sm_count * per_sm;
                }
                rn::RmsArgs ra = rn::make_args(&pp, pl);
                ra.partial     = ws;
                auto f         = [&] {
                    CK(rn::launch(k, pl, ra, 0));
                    if (mode == 2)
                        rn::rms_dweight_reduce_kernel<<<(unsigned)rn::ceil_div(H, 32), dim3(32, rn::kRedRows)>>>(
                            ws, pl.prows, pl.ld, H, dw, FK_DTYPE_BF16, (rn::DynHeader *)nullptr);
                };
                printf("rmsnorm %s H=%lld vpt=%d threads=%lld grid=%lld%s: %.0f GB/s\n",
                       mode == 0 ? "fwd" : mode == 1 ? "fwd+res" : "bwd", (long long)H, vpt, (long long)thr,
                       (long long)pl.grid, (vpt == base.vpt && thr == base.threads) ? " (chosen)" : "",
                       bytes / time_ms(f) * 1e-6);
            }
        }
        cudaFree(x), cudaFree(r), cudaFree(ro), cudaFree(y), cudaFree(w), cudaFree(dw), cudaFree(rstd), cudaFree(ws);
    }

    // RoPE: `ops_tune next rope` (production rope_tok_kernel vs rope_kernel; their launch shapes are fixed).
    return 0;
}

#include "ops_tune_next.inc"

int main(int argc, char **argv) {
    fk_context ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.device.kind = FK_DEVICE_CUDA;
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    ctx.sm_count = prop.multiProcessorCount, ctx.max_smem_optin = (int)prop.sharedMemPerBlockOptin;
    ctx.cc_major = prop.major, ctx.cc_minor = prop.minor;
    if (argc > 1 && strcmp(argv[1], "next") == 0) CK(cudaMalloc(&g_flush, kFlushBytes)); // the copy too
    const double copy = copy_gbs(ctx);
    printf("tune: %s, copy %.0f GB/s\n", prop.name, copy);
    if (argc > 1 && strcmp(argv[1], "next") == 0) return next_main(ctx, copy, argc - 2, argv + 2);
    return sweep(ctx);
}
