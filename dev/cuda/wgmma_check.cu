/*
 * wgmma_check.cu — dev only: unit checks of the Hopper wgmma building blocks in wgmma_common.cuh, one warpgroup
 * per check, random bf16 / fp16 inputs (never zero) against a float64 host reference.
 *
 * Verdict: every check passes on an H200 (2026-11-30: 64 of 64, then 75 of 75 with the backward's operand forms);
 * the `layout` self-test below runs on the host alone.
 *
 *   wgmma_check            every check (needs an sm_90 GPU); one PASS/FAIL line each; exit 1 on any FAIL
 *   wgmma_check layout     host only: the descriptors decoded by the PTX ISA's canonical-layout formulas point at
 *                          the same bytes as the loaders' tile_off, for every element of every shape used
 *
 * Checks:
 *   ss    C[64 x N] = A[64 x K] B[K x N], A and B from shared memory, both K-major (B stored as B^T [N][K]),
 *         swizzle 128 / 64 / 32 B, N in {64, 128, 256}, K in {64, 128, 256} (K / 16 k-steps accumulating,
 *         descriptor start advanced 32 B per k-step inside a swizzle row), bf16 and fp16; loads by 16-byte stores
 *         or by cp.async (both followed by fence.proxy.async + barrier).
 *   ssT   the same with B MN-major (stored [K][N], N contiguous, like V), imm-trans-b = 1, LBO = MN-block stride.
 *   scale0  scale-d = 0 on the first k-step discards a non-zero old accumulator (what the forward relies on).
 *   wait1   two products in two commit groups; wait_group 1 then read the first, wait_group 0 then the second.
 *   bwd   the backward's forms (attn_bwd_wgmma.cuh): m64n32; A MN-major (imm-trans-a = 1, the ss wrappers' TA);
 *         B MN-major from a later column block (col0); K-major A from row 64 of a 128-row tile (64-B swizzle too).
 *   rs    S = Q K^T (ss, fp32) then O = P V with P = S packed to 16-bit pairs in registers as the A operand
 *         (wgmma with A from registers) and V MN-major: checks S, and O against P (the device's S rounded the
 *         same way on the host) times V.
 * Error bound per element: 1e-4 * sum_k |a b| + 1e-6 (fp32 accumulation; a layout error is O(sum |a b|)).
 */
#include "../../src/cuda/wgmma_common.cuh"
#include "dev_common.h" // CK

#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

using namespace fk_wg;

// ---- device side -----------------------------------------------------------------------------------------

// Round the dynamic shared-memory window up to 1024 bytes (swizzle atoms must be aligned; see the header).
__device__ __forceinline__ uint8_t *smem_1k(uint8_t *raw) {
    const uint32_t a = smem_u32(raw);
    return raw + (((a + 1023u) & ~1023u) - a);
}

// ROWS x COLS tile from global (row pitch ld elements, 16-byte aligned rows) into the swizzled shared layout,
// one 16-byte chunk per step; CPA: cp.async, else 16-byte ordinary stores. Each thread then fences its writes
// into the async proxy; the caller's barrier follows.
template <int SW, bool CPA>
__device__ void load_tile(uint8_t *s, const uint16_t *g, int rows, int cols, int ld) {
    const int ch = cols / 8;
    for (int idx = threadIdx.x; idx < rows * ch; idx += blockDim.x) {
        const int r = idx / ch, c = (idx % ch) * 8;
        if (CPA) cp_async_16(smem_u32(s + tile_off<SW>(r, c, rows)), g + (size_t)r * ld + c, 16);
        else *reinterpret_cast<uint4 *>(s + tile_off<SW>(r, c, rows)) = *reinterpret_cast<const uint4 *>(g + (size_t)r * ld + c);
    }
    if (CPA) {
        cp_async_commit();
        cp_async_wait<0>();
    }
    fence_proxy_async();
}

// Accumulator fragment -> row-major C [64][N] (ld = N).
template <int N> __device__ void store_acc(float *c, const float *d) {
    const int w = threadIdx.x / 32 % 4, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
    for (int j = 0; j < N / 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) c[(16 * w + g + 8 * (e / 2)) * N + 8 * j + 2 * t + (e & 1)] = d[4 * j + e];
}

// C = A B: A [64][K] row-major; B given as Bt [N][K] (TB = 0, K-major) or B [K][N] (TB = 1, MN-major).
// init: the accumulator's start value; scale0: scale-d of the first k-step (0: D = A B, the old D is ignored).
template <int N, int K, bool BF16, int SW, int TB, bool CPA>
__global__ void __launch_bounds__(128) ss_kernel(const uint16_t *A, const uint16_t *B, float *C, float init, int scale0) {
    extern __shared__ uint8_t raw[];
    uint8_t *sA = smem_1k(raw), *sB = sA + 64 * K * 2;
    load_tile<SW, CPA>(sA, A, 64, K, K);
    if (TB) load_tile<SW, CPA>(sB, B, K, N, N);
    else load_tile<SW, CPA>(sB, B, N, K, K);
    __syncthreads();

    float acc[N / 2];
#pragma unroll
    for (int i = 0; i < N / 2; ++i) acc[i] = init;
    const uint32_t a0 = smem_u32(sA), b0 = smem_u32(sB);
    fence_operands(acc); // the initial values are in registers before the fence (not moved past it)
    wgmma_fence();       // acc was written by ordinary instructions
#pragma unroll
    for (int s = 0; s < K / 16; ++s) {
        const uint64_t da = desc_kmajor<SW>(a0, 0, s, 64);
        const uint64_t db = TB ? desc_mnmajor<SW>(b0, s, K) : desc_kmajor<SW>(b0, 0, s, N);
        wgmma_ss<N, BF16, TB>(acc, da, db, s == 0 ? scale0 : 1);
    }
    wgmma_commit();
    wgmma_wait<0>();
    fence_operands(acc);
    store_acc<N>(C, acc);
}

// Two products in two commit groups: C1 = A B1, C2 = A B2 (N = K = 64, 128-B swizzle, K-major).
template <bool BF16>
__global__ void __launch_bounds__(128) wait1_kernel(const uint16_t *A, const uint16_t *B1, const uint16_t *B2, float *C1,
                                                   float *C2) {
    extern __shared__ uint8_t raw[];
    uint8_t *sA = smem_1k(raw), *sB1 = sA + 64 * 64 * 2, *sB2 = sB1 + 64 * 64 * 2;
    load_tile<128, false>(sA, A, 64, 64, 64);
    load_tile<128, false>(sB1, B1, 64, 64, 64);
    load_tile<128, false>(sB2, B2, 64, 64, 64);
    __syncthreads();
    float acc1[32], acc2[32];
#pragma unroll
    for (int i = 0; i < 32; ++i) acc1[i] = acc2[i] = 0.f; // discarded (scale-d = 0), but never read uninitialized
    const uint32_t a0 = smem_u32(sA), b1 = smem_u32(sB1), b2 = smem_u32(sB2);
    fence_operands(acc1);
    fence_operands(acc2);
    wgmma_fence();
#pragma unroll
    for (int s = 0; s < 4; ++s) wgmma_ss<64, BF16, 0>(acc1, desc_kmajor<128>(a0, 0, s, 64), desc_kmajor<128>(b1, 0, s, 64), s);
    wgmma_commit();
#pragma unroll
    for (int s = 0; s < 4; ++s) wgmma_ss<64, BF16, 0>(acc2, desc_kmajor<128>(a0, 0, s, 64), desc_kmajor<128>(b2, 0, s, 64), s);
    wgmma_commit();
    wgmma_wait<1>(); // the first group is complete; the second may still run
    fence_operands(acc1);
    store_acc<64>(C1, acc1);
    wgmma_wait<0>();
    fence_operands(acc2);
    store_acc<64>(C2, acc2);
}

// S = Q K^T (Q [64][DK], K [N1][DK], both K-major), then O = P V with P = S as 16-bit A fragments from registers
// and V [N1][DV] MN-major (imm-trans-b = 1). Writes S [64][N1] and O [64][DV] (fp32).
template <int N1, int DK, int DV, bool BF16>
__global__ void __launch_bounds__(128) rs_kernel(const uint16_t *Q, const uint16_t *Kt, const uint16_t *V, float *S,
                                                float *O) {
    constexpr int SW = 128;
    extern __shared__ uint8_t raw[];
    uint8_t *sQ = smem_1k(raw), *sK = sQ + 64 * DK * 2, *sV = sK + N1 * DK * 2;
    load_tile<SW, true>(sQ, Q, 64, DK, DK);
    load_tile<SW, true>(sK, Kt, N1, DK, DK);
    load_tile<SW, false>(sV, V, N1, DV, DV);
    __syncthreads();

    float sacc[N1 / 2];
#pragma unroll
    for (int i = 0; i < N1 / 2; ++i) sacc[i] = 0.f;
    const uint32_t q0 = smem_u32(sQ), k0 = smem_u32(sK), v0 = smem_u32(sV);
    fence_operands(sacc);
    wgmma_fence();
#pragma unroll
    for (int s = 0; s < DK / 16; ++s) wgmma_ss<N1, BF16, 0>(sacc, desc_kmajor<SW>(q0, 0, s, 64), desc_kmajor<SW>(k0, 0, s, N1), s);
    wgmma_commit();
    wgmma_wait<0>();
    fence_operands(sacc);
    store_acc<N1>(S, sacc);

    uint32_t pa[N1 / 16][4];
#pragma unroll
    for (int s = 0; s < N1 / 16; ++s) acc_to_a<BF16>(pa[s], sacc + 8 * s);
    float oacc[DV / 2];
#pragma unroll
    for (int i = 0; i < DV / 2; ++i) oacc[i] = 0.f;
    fence_operands(oacc);
#pragma unroll
    for (int s = 0; s < N1 / 16; ++s)
#pragma unroll
        for (int i = 0; i < 4; ++i) fence_operand(pa[s][i]);
    wgmma_fence(); // pa and oacc were written by ordinary instructions
#pragma unroll
    for (int s = 0; s < N1 / 16; ++s) wgmma_rs<DV, BF16, 1>(oacc, pa[s], desc_mnmajor<SW>(v0, s, N1), 1);
    wgmma_commit();
    wgmma_wait<0>();
    fence_operands(oacc);
    store_acc<DV>(O, oacc);
}

// The backward's operand forms (attn_bwd_wgmma.cuh): C[64 x N] = A B with
//   A K-major: a tile of AR rows x K ([AR][K]), rows arow0 .. arow0 + 63 used (S^T = K Q^T: a warpgroup's keys);
//   A MN-major (TA = 1, imm-trans-a): stored [K][64], M contiguous (dQ = dS K with dS^T stored [keys][queries]);
//   B K-major: stored [N][K]; B MN-major (TB = 1): stored [K][NT], columns col0 .. col0 + N - 1 used (dQ's K).
template <int N, int K, bool BF16, int SWA, int TA, int AR, int SWB, int TB, int NT>
__global__ void __launch_bounds__(128) ssx_kernel(const uint16_t *A, const uint16_t *B, float *C, int arow0, int col0) {
    extern __shared__ uint8_t raw[];
    uint8_t *sA = smem_1k(raw), *sB = sA + (TA ? 64 : AR) * K * 2;
    if (TA) load_tile<SWA, true>(sA, A, K, 64, 64);
    else load_tile<SWA, true>(sA, A, AR, K, K);
    if (TB) load_tile<SWB, false>(sB, B, K, NT, NT);
    else load_tile<SWB, false>(sB, B, N, K, K);
    __syncthreads();
    float acc[N / 2];
#pragma unroll
    for (int i = 0; i < N / 2; ++i) acc[i] = 1e4f; // discarded: scale-d = 0 on the first k-step
    const uint32_t a0 = smem_u32(sA), b0 = smem_u32(sB);
    fence_operands(acc);
    wgmma_fence();
#pragma unroll
    for (int s = 0; s < K / 16; ++s) {
        const uint64_t da = TA ? desc_mnmajor<SWA>(a0, s, K) : desc_kmajor<SWA>(a0, arow0, s, AR);
        const uint64_t db = TB ? desc_mnmajor<SWB>(b0, s, K, col0) : desc_kmajor<SWB>(b0, 0, s, N);
        wgmma_ss<N, BF16, TB, TA>(acc, da, db, s == 0 ? 0 : 1);
    }
    wgmma_commit();
    wgmma_wait<0>();
    fence_operands(acc);
    store_acc<N>(C, acc);
}

// ---- host side -------------------------------------------------------------------------------------------

static uint16_t f2bf(float f) { // round to nearest even (no NaN inputs here)
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
static float bf2f(uint16_t x) {
    uint32_t u = (uint32_t)x << 16;
    float    f;
    memcpy(&f, &u, 4);
    return f;
}
static uint16_t to16(float f, bool bf16) {
    if (bf16) return f2bf(f);
    __half h = __float2half_rn(f);
    uint16_t r;
    memcpy(&r, &h, 2);
    return r;
}
static float from16(uint16_t x, bool bf16) {
    if (bf16) return bf2f(x);
    __half h;
    memcpy(&h, &x, 2);
    return __half2float(h);
}

static uint64_t g_rng = 0x243f6a8885a308d3ull;
static double urand() { // (0, 1)
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return ((g_rng >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}
// n random 16-bit values, normal(0, 1) rounded to the dtype, never zero.
static std::vector<uint16_t> rand16(size_t n, bool bf16) {
    std::vector<uint16_t> v(n);
    for (size_t i = 0; i < n; ++i) {
        float x;
        do x = (float)(sqrt(-2.0 * log(urand())) * cos(6.283185307179586 * urand()));
        while (from16(to16(x, bf16), bf16) == 0.f);
        v[i] = to16(x, bf16);
    }
    return v;
}

static uint16_t *dev16(const std::vector<uint16_t> &h) {
    uint16_t *d;
    CK(cudaMalloc(&d, h.size() * 2));
    CK(cudaMemcpy(d, h.data(), h.size() * 2, cudaMemcpyHostToDevice));
    return d;
}
static float *devf(size_t n) { // poisoned with NaN
    float *d;
    CK(cudaMalloc(&d, n * 4));
    CK(cudaMemset(d, 0xff, n * 4));
    return d;
}
static std::vector<float> tohost(const float *d, size_t n) {
    std::vector<float> h(n);
    CK(cudaMemcpy(h.data(), d, n * 4, cudaMemcpyDeviceToHost));
    return h;
}

static int g_fail = 0;

// got [M][N] vs A [M][K] (row pitch K) times B, B(k, n) = b[k * bk + n * bn]; float64 reference.
static void compare(const char *name, const std::vector<float> &got, const std::vector<float> &a,
                    const std::vector<float> &b, int M, int N, int K, int bk, int bn) {
    double max_err = 0, worst_ratio = 0;
    int    nan = 0;
    for (int i = 0; i < M; ++i)
        for (int j = 0; j < N; ++j) {
            double ref = 0, mag = 0;
            for (int k = 0; k < K; ++k) {
                const double p = (double)a[(size_t)i * K + k] * b[(size_t)k * bk + (size_t)j * bn];
                ref += p;
                mag += fabs(p);
            }
            const double g = got[(size_t)i * N + j];
            if (!isfinite(g)) {
                ++nan;
                continue;
            }
            const double err = fabs(g - ref), tol = 1e-4 * mag + 1e-6;
            max_err     = fmax(max_err, err);
            worst_ratio = fmax(worst_ratio, err / tol);
        }
    const bool ok = nan == 0 && worst_ratio <= 1.0;
    if (!ok) ++g_fail;
    printf("%s %-44s max_abs_err %.3e  err/tol %.3f%s\n", ok ? "PASS" : "FAIL", name, max_err, worst_ratio,
           nan ? "  (NaN/Inf in output)" : "");
}

static std::vector<float> widen(const std::vector<uint16_t> &v, bool bf16) {
    std::vector<float> f(v.size());
    for (size_t i = 0; i < v.size(); ++i) f[i] = from16(v[i], bf16);
    return f;
}

template <int N, int K, bool BF16, int SW, int TB, bool CPA> static void run_ss(bool scale0_check = false) {
    auto ha = rand16(64 * K, BF16), hb = rand16((size_t)K * N, BF16);
    uint16_t *da = dev16(ha), *db = dev16(hb);
    float    *dc   = devf(64 * N);
    const int smem = (64 * K + K * N) * 2 + 1024;
    auto      kern = ss_kernel<N, K, BF16, SW, TB, CPA>;
    CK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    // scale0_check: start from 1e4 and discard it with scale-d = 0; else start from 0 and accumulate from step 0.
    kern<<<1, 128, smem>>>(da, db, dc, scale0_check ? 1e4f : 0.f, scale0_check ? 0 : 1);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    char name[128];
    snprintf(name, sizeof name, "%s m64n%dk16 K=%d %s sw%d %s%s", scale0_check ? "scale0" : TB ? "ssT" : "ss", N, K,
             BF16 ? "bf16" : "f16", SW, TB ? "B MN-major" : "B K-major", CPA ? " cp.async" : "");
    // TB = 0: B stored [N][K] -> B(k, n) = b[n * K + k]; TB = 1: stored [K][N] -> b[k * N + n].
    compare(name, tohost(dc, 64 * N), widen(ha, BF16), widen(hb, BF16), 64, N, K, TB ? N : 1, TB ? 1 : K);
    CK(cudaFree(da));
    CK(cudaFree(db));
    CK(cudaFree(dc));
}

template <bool BF16> static void run_wait1() {
    auto ha = rand16(64 * 64, BF16), hb1 = rand16(64 * 64, BF16), hb2 = rand16(64 * 64, BF16);
    uint16_t *da = dev16(ha), *db1 = dev16(hb1), *db2 = dev16(hb2);
    float    *dc1 = devf(64 * 64), *dc2 = devf(64 * 64);
    const int smem = 3 * 64 * 64 * 2 + 1024;
    CK(cudaFuncSetAttribute(wait1_kernel<BF16>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    wait1_kernel<BF16><<<1, 128, smem>>>(da, db1, db2, dc1, dc2);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    compare(BF16 ? "wait1 group 1 (after wait_group 1) bf16" : "wait1 group 1 (after wait_group 1) f16", tohost(dc1, 4096),
            widen(ha, BF16), widen(hb1, BF16), 64, 64, 64, 1, 64);
    compare(BF16 ? "wait1 group 2 (after wait_group 0) bf16" : "wait1 group 2 (after wait_group 0) f16", tohost(dc2, 4096),
            widen(ha, BF16), widen(hb2, BF16), 64, 64, 64, 1, 64);
    CK(cudaFree(da));
    CK(cudaFree(db1));
    CK(cudaFree(db2));
    CK(cudaFree(dc1));
    CK(cudaFree(dc2));
}

template <int N1, int DK, int DV, bool BF16> static void run_rs() {
    auto hq = rand16(64 * DK, BF16), hk = rand16((size_t)N1 * DK, BF16), hv = rand16((size_t)N1 * DV, BF16);
    // Scale Q by 1/8 (exact in both dtypes) so that S and P stay in a comfortable fp16 range.
    for (auto &x : hq) x = to16(from16(x, BF16) * 0.125f, BF16);
    uint16_t *dq = dev16(hq), *dk = dev16(hk), *dv = dev16(hv);
    float    *ds = devf(64 * N1), *dout = devf(64 * DV);
    const int smem = (64 * DK + N1 * DK + N1 * DV) * 2 + 1024;
    auto      kern = rs_kernel<N1, DK, DV, BF16>;
    CK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    kern<<<1, 128, smem>>>(dq, dk, dv, ds, dout);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    char name[128];
    const char *dt = BF16 ? "bf16" : "f16";
    snprintf(name, sizeof name, "rs S=QK^T (n%d, K=%d) %s", N1, DK, dt);
    auto s = tohost(ds, 64 * N1);
    compare(name, s, widen(hq, BF16), widen(hk, BF16), 64, N1, DK, 1, DK);
    // P: the device's S rounded to the dtype the way acc_to_a does (round to nearest even), as A [64][N1].
    std::vector<float> p(s.size());
    for (size_t i = 0; i < s.size(); ++i) p[i] = isfinite(s[i]) ? from16(to16(s[i], BF16), BF16) : s[i];
    snprintf(name, sizeof name, "rs O=PV, P from S regs (n%d, K=%d) %s", DV, N1, dt);
    compare(name, tohost(dout, 64 * DV), p, widen(hv, BF16), 64, DV, N1, DV, 1);
    CK(cudaFree(dq));
    CK(cudaFree(dk));
    CK(cudaFree(dv));
    CK(cudaFree(ds));
    CK(cudaFree(dout));
}

template <int N, int K, bool BF16, int SWA, int TA, int AR, int SWB, int TB, int NT>
static void run_ssx(int arow0, int col0) {
    const int AN = (TA ? 64 : AR) * K, BN_ = TB ? K * NT : N * K;
    auto ha = rand16(AN, BF16), hb = rand16(BN_, BF16);
    uint16_t *da = dev16(ha), *db = dev16(hb);
    float    *dc   = devf(64 * N);
    const int smem = (AN + BN_) * 2 + 1024;
    auto      kern = ssx_kernel<N, K, BF16, SWA, TA, AR, SWB, TB, NT>;
    CK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    kern<<<1, 128, smem>>>(da, db, dc, arow0, col0);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    // The effective A [64][K] and B [K][N].
    std::vector<float> fa = widen(ha, BF16), fb = widen(hb, BF16), ea(64 * K), eb((size_t)K * N);
    for (int i = 0; i < 64; ++i)
        for (int k = 0; k < K; ++k) ea[(size_t)i * K + k] = TA ? fa[(size_t)k * 64 + i] : fa[(size_t)(arow0 + i) * K + k];
    for (int k = 0; k < K; ++k)
        for (int n = 0; n < N; ++n) eb[(size_t)k * N + n] = TB ? fb[(size_t)k * NT + col0 + n] : fb[(size_t)n * K + k];
    char name[160];
    snprintf(name, sizeof name, "bwd m64n%dk16 K=%d %s A %s sw%d%s B %s sw%d%s", N, K, BF16 ? "bf16" : "f16",
             TA ? "MN-major(tnspA)" : "K-major", SWA, TA ? "" : (arow0 ? " rows 64.." : ""), TB ? "MN-major" : "K-major",
             SWB, TB && col0 ? (col0 == 32 ? " cols 32.." : " cols 64..") : "");
    compare(name, tohost(dc, 64 * N), ea, eb, 64, N, K, N, 1);
    CK(cudaFree(da));
    CK(cudaFree(db));
    CK(cudaFree(dc));
}

// ---- host-only layout self-test ----------------------------------------------------------------------------

// Decode a descriptor by the PTX ISA field positions and return the byte address that the canonical layout
// (table "Canonical Layouts", swizzle applied to the address) gives to element (mn, k), k < 16, of one wgmma
// operand of 16-bit elements.
static uint32_t canon_addr(uint64_t desc, bool mn_major, int mn, int k) {
    const uint32_t start = (uint32_t)(desc & 0x3FFF) << 4, lbo = (uint32_t)((desc >> 16) & 0x3FFF) << 4;
    const uint32_t sbo = (uint32_t)((desc >> 32) & 0x3FFF) << 4, mode = (uint32_t)(desc >> 62);
    const uint32_t sw = mode == 1 ? 128 : mode == 2 ? 64 : 32, e = sw / 2;
    uint32_t       a;
    if (!mn_major) // ((8, m), (T, 2k)) : ((SW/16 T, SBO), (1, T)), in bytes
        a = start + (mn % 8) * sw + (mn / 8) * sbo + (k / 8) * 16 + (k % 8) * 2;
    else // ((T, SW/16, m), (8, k)) : ((1, T, LBO), (SW/16 T, SBO)), in bytes
        a = start + (mn % e) * 2 + (mn / e) * lbo + (k % 8) * sw + (k / 8) * sbo;
    const uint32_t mask = sw / 16 - 1;
    return a ^ (((a >> 7) & mask) << 4);
}

template <int SW> static int layout_one(int rows, int kext, bool mn_major) {
    // K-major: tile rows = rows (M or N), cols = kext. MN-major: tile rows = kext (K), cols = rows (N).
    const uint32_t base = 1u << 14; // any 1024-aligned shared address
    int            bad  = 0;
    for (int s = 0; s < kext / 16; ++s) {
        const uint64_t d = mn_major ? desc_mnmajor<SW>(base, s, kext) : desc_kmajor<SW>(base, 0, s, rows);
        if ((d >> 49 & 7) != 0 || (d >> 14 & 3) != 0 || (d >> 30 & 3) != 0) ++bad; // reserved / base offset
        for (int mn = 0; mn < rows; ++mn)
            for (int k = 0; k < 16; ++k) {
                const uint32_t want = base + (mn_major ? tile_off<SW>(16 * s + k, mn, kext) : tile_off<SW>(mn, 16 * s + k, rows));
                if (canon_addr(d, mn_major, mn, k) != want) ++bad;
            }
    }
    return bad;
}

static int layout_selftest() {
    int fails = 0;
    const int rows_list[] = {64, 128, 256}, k_list[] = {64, 128, 256};
    for (int mn = 0; mn < 2; ++mn)
        for (int r : rows_list)
            for (int k : k_list) {
                const int b128 = layout_one<128>(r, k, mn), b64 = layout_one<64>(r, k, mn), b32 = layout_one<32>(r, k, mn);
                const bool ok = b128 + b64 + b32 == 0;
                fails += !ok;
                printf("%s layout %s rows/N=%d K=%d: mismatches sw128 %d sw64 %d sw32 %d\n", ok ? "PASS" : "FAIL",
                       mn ? "MN-major" : "K-major ", r, k, b128, b64, b32);
            }
    // The backward's offsets: MN-major columns from col0 (a whole column block: 32 at sw64, 64 at sw128), K-major
    // rows from row0 = 64 (a warpgroup's keys), 128-row tiles.
    {
        const uint32_t base = 1u << 14;
        int            bad  = 0;
        for (int sw : {64, 128})
            for (int s = 0; s < 8; ++s) {
                const int col0 = sw == 64 ? 32 : 64, ncol = col0;
                const uint64_t dm = sw == 64 ? desc_mnmajor<64>(base, s, 128, col0) : desc_mnmajor<128>(base, s, 128, col0);
                for (int n = 0; n < ncol; ++n)
                    for (int k = 0; k < 16; ++k) {
                        const uint32_t want = base + (sw == 64 ? tile_off<64>(16 * s + k, col0 + n, 128) : tile_off<128>(16 * s + k, col0 + n, 128));
                        bad += canon_addr(dm, true, n, k) != want;
                    }
                if (s >= 4 && sw == 64) continue; // K = 64 at D = 64: 4 k-steps
                const uint64_t dk = sw == 64 ? desc_kmajor<64>(base, 64, s, 128) : desc_kmajor<128>(base, 64, s, 128);
                for (int m = 0; m < 64; ++m)
                    for (int k = 0; k < 16; ++k) {
                        const uint32_t want = base + (sw == 64 ? tile_off<64>(64 + m, 16 * s + k, 128) : tile_off<128>(64 + m, 16 * s + k, 128));
                        bad += canon_addr(dk, false, m, k) != want;
                    }
            }
        fails += bad != 0;
        printf("%s layout backward offsets (MN-major col0 = one column block, K-major row0 = 64): %d mismatches\n",
               bad ? "FAIL" : "PASS", bad);
    }
    // Also: the swizzle permutes the 16-byte chunks of every 8-row atom (no two elements share a byte).
    std::vector<int> seen(64 * 256 * 2, 0);
    int              dup = 0;
    for (int r = 0; r < 64; ++r)
        for (int c = 0; c < 256; ++c) dup += seen[tile_off<128>(r, c, 64) / 2]++ != 0;
    printf("%s layout tile_off<128> 64x256 is a bijection (%d collisions)\n", dup ? "FAIL" : "PASS", dup);
    return fails + (dup != 0);
}

int main(int argc, char **argv) {
    const int layout_fails = layout_selftest();
    g_fail += layout_fails;
    if (argc > 1 && !strcmp(argv[1], "layout")) {
        printf("%s\n", g_fail ? "SOME CHECKS FAILED" : "ALL CHECKS PASSED");
        return g_fail ? 1 : 0;
    }
    int dev = 0;
    cudaDeviceProp pr;
    CK(cudaGetDevice(&dev));
    CK(cudaGetDeviceProperties(&pr, dev));
    printf("device: %s (sm_%d%d)\n", pr.name, pr.major, pr.minor);
    if (pr.major != 9) {
        printf("FAIL wgmma needs sm_90a\n");
        return 1;
    }

    // 1. A and B K-major, 128-B swizzle, every N x K, bf16; fp16 on a few.
    run_ss<64, 64, true, 128, 0, false>();
    run_ss<64, 128, true, 128, 0, false>();
    run_ss<64, 256, true, 128, 0, false>();
    run_ss<128, 64, true, 128, 0, false>();
    run_ss<128, 128, true, 128, 0, false>();
    run_ss<128, 256, true, 128, 0, false>();
    run_ss<256, 64, true, 128, 0, false>();
    run_ss<256, 128, true, 128, 0, false>();
    run_ss<256, 256, true, 128, 0, false>();
    run_ss<64, 64, false, 128, 0, false>();
    run_ss<128, 128, false, 128, 0, false>();
    run_ss<256, 256, false, 128, 0, false>();
    run_ss<128, 128, true, 128, 0, true>(); // cp.async loads
    // 64-B and 32-B swizzle.
    run_ss<64, 64, true, 64, 0, false>();
    run_ss<128, 128, true, 64, 0, false>();
    run_ss<64, 64, true, 32, 0, false>();
    run_ss<128, 128, true, 32, 0, false>();
    // 2. B MN-major (imm-trans-b = 1).
    run_ss<64, 64, true, 128, 1, false>();
    run_ss<64, 128, true, 128, 1, false>();
    run_ss<128, 64, true, 128, 1, false>();
    run_ss<128, 128, true, 128, 1, false>();
    run_ss<128, 256, true, 128, 1, false>();
    run_ss<256, 64, true, 128, 1, false>();
    run_ss<256, 128, true, 128, 1, false>();
    run_ss<256, 256, true, 128, 1, false>();
    run_ss<128, 128, false, 128, 1, false>();
    run_ss<256, 64, false, 128, 1, true>();
    run_ss<128, 64, true, 64, 1, false>();
    run_ss<128, 64, true, 32, 1, false>();
    // scale-d = 0 discards the old accumulator.
    run_ss<64, 64, true, 128, 0, false>(true);
    run_ss<128, 128, true, 128, 1, false>(true);
    // 4. wait_group 1 with two groups in flight.
    run_wait1<true>();
    // 3. P from the S accumulator as the A register operand of P V.
    run_rs<64, 64, 64, true>();
    run_rs<128, 128, 128, true>();
    run_rs<128, 64, 256, true>();
    run_rs<64, 256, 256, true>();
    run_rs<128, 128, 128, false>();
    run_rs<64, 256, 256, false>();

    // 5. The backward's forms (attn_bwd_wgmma.cuh), new with it: n32; A MN-major (imm-trans-a); B MN-major from a
    //    column block other than the first; K-major A from row 64 of a 128-row tile at the 64-B swizzle.
    //    <N, K, BF16, SWA, TA, AR, SWB, TB, NT>(arow0, col0)
    run_ssx<32, 64, true, 128, 0, 64, 128, 0, 32>(0, 0);      // n32, plain
    run_ssx<64, 64, true, 128, 1, 64, 128, 0, 64>(0, 0);      // tnspA, B K-major
    run_ssx<64, 128, true, 128, 1, 64, 128, 1, 128>(0, 0);    // dQ at D = 128, warpgroup 0
    run_ssx<64, 128, true, 128, 1, 64, 128, 1, 128>(0, 64);   // dQ at D = 128, warpgroup 1
    run_ssx<64, 128, false, 128, 1, 64, 128, 1, 128>(0, 64);
    run_ssx<32, 128, true, 128, 1, 64, 64, 1, 64>(0, 0);      // dQ at D = 64 (K in the 64-B swizzle), warpgroup 0
    run_ssx<32, 128, true, 128, 1, 64, 64, 1, 64>(0, 32);     // dQ at D = 64, warpgroup 1
    run_ssx<32, 128, false, 128, 1, 64, 64, 1, 64>(0, 32);
    run_ssx<64, 64, true, 64, 0, 128, 128, 0, 64>(64, 0);     // S^T at D = 64: K rows 64.. of a sw64 tile
    run_ssx<64, 128, false, 128, 0, 128, 128, 0, 64>(64, 0);  // S^T at D = 128: rows 64.., sw128

    printf("%s\n", g_fail ? "SOME CHECKS FAILED" : "ALL CHECKS PASSED");
    return g_fail ? 1 : 0;
}
