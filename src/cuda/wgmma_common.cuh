/*
 * wgmma_common.cuh — C-style helpers for Hopper (sm_90a) warpgroup matrix products, wgmma.mma_async, used by the
 * Hopper attention kernels (attn_fwd_wgmma.cuh, attn_bwd_wgmma.cuh). dev/cuda/wgmma_check.cu checks every
 * operand form on the GPU (H200, 2026-11-30: 75 of 75 checks pass, dev/cuda/wgmma_bwd_run.sh).
 *
 * Everything here follows the PTX ISA, "Asynchronous Warpgroup Level Matrix Operations" (wgmma), read for this
 * file; no code was taken from CUTLASS, ThunderKittens, DeepGEMM or FlashAttention.
 *
 * Shared-memory tiles of 16-bit elements (bf16 / fp16). A tile of ROWS x COLS elements with swizzle width SW bytes
 * (128, 64 or 32; E = SW / 2 elements per swizzle row) is stored as COLS / E column blocks, each ROWS rows of SW
 * bytes:   linear byte offset of (row, col) = (col / E) * ROWS * SW + row * SW + (col % E) * 2,
 * and the stored offset is that linear offset with the SW-byte swizzle applied (swz<SW> below). The same tile
 * serves both operand majors:
 *   K-major  (A = Q [64 x D], B = K [BN x D] for S = Q K^T): rows = M or N, cols = K.
 *   MN-major (B = V [BN x D] for O = P V, N = D contiguous): rows = K, cols = N.
 * Tiles start on a 1024-byte boundary, so the hardware's swizzle (a function of address bits) sees row r of a
 * tile at address bits 7.. = r (the descriptor's "matrix base offset" stays 0).
 *
 * Swizzle (PTX ISA "Shared Memory Matrix Layout", CuTe notation Swizzle<B, 4, 3>, B = 3 / 2 / 1 for 128 / 64 /
 * 32 B): address bits [7, 7 + B) are XORed into bits [4, 4 + B), i.e. the 16-byte chunk index inside each
 * SW-byte row is XORed with (address >> 7) & (SW / 16 - 1). For SW = 128 that is chunk ^ (row & 7).
 *
 * Matrix descriptor (64 bits, PTX ISA "Matrix Descriptor Format"):
 *   bits  0-13  start address >> 4 (shared state space)      bits 16-29  leading dimension byte offset >> 4
 *   bits 32-45  stride dimension byte offset >> 4             bits 49-51  matrix base offset (0 here)
 *   bits 62-63  swizzle: 0 none, 1 = 128 B, 2 = 64 B, 3 = 32 B
 * Canonical layouts (PTX ISA table, T = 8 elements = 16 B):
 *   K-major,  swizzled: ((8, m), (T, 2k)) : ((SW/16 T, SBO), (1, T)) — 8 rows SW bytes apart, then 8-row groups
 *             SBO apart (SBO = 8 * SW here); LBO unused ("assumed 1"). One wgmma's K = 16 elements = 32 bytes
 *             lies inside one SW-byte row; k-step s of a tile starts at block s / (E / 16), byte (s % (E/16)) * 32.
 *   MN-major, swizzled: ((T, SW/16, m), (8, k)) : ((1, T, LBO), (SW/16 T, SBO)) — E contiguous MN elements per
 *             row, MN blocks of E elements LBO apart (LBO = ROWS * SW here), k rows SW apart, 8-row groups SBO
 *             apart (SBO = 8 * SW); k-step s starts at row 16 s (byte 16 s SW, a whole number of 1024-B atoms).
 *
 * Register fragments (PTX ISA, "Register Fragments", m64nNk16), thread = 128 threads of the warpgroup,
 * w = warp % 4, lane = 4 g + t:
 *   D (fp32, N / 2 floats): d[4 j + e] = (row 16 w + g + 8 (e >= 2), col 8 j + 2 t + (e & 1)), j < N / 8.
 *   A (16-bit, 4 x b32):    a[0] = (row 16 w + g, k 2t..2t+1), a[1] = (row + 8, k 2t..), a[2] = (row, k 2t+8..),
 *                           a[3] = (row + 8, k 2t+8..) — the mma.m16n8k16 A layout, one 16-row slab per warp.
 *   So the accumulator of S = Q K^T over keys 16 s..16 s+15 (n8 blocks 2s, 2s+1) packed in pairs is exactly the A
 *   fragment of k-step s of O = P V (acc_to_a below): the FlashAttention-3 register reuse.
 *
 * Ordering rules (PTX ISA, wgmma.fence / commit_group / wait_group, and the async proxy):
 *   - wgmma_fence() before the first wgmma of a batch, and whenever the accumulator or A registers were written
 *     by ordinary instructions since the last wgmma that used them.
 *   - shared memory written by ordinary stores or cp.async (generic proxy) that wgmma (async proxy) reads next:
 *     fence_proxy_async() in each writing thread after its writes have completed, then a barrier.
 *   - wgmma_commit() closes a group; wgmma_wait<N>() waits until at most N groups are pending. Registers and shared
 *     memory of a pending wgmma must not be touched; fence_operand() pins accumulator registers in place so that
 *     the compiler cannot move their reads above the wait (an asm volatile with "+f": ordered among volatile asms).
 */
#ifndef FK_CUDA_WGMMA_COMMON_CUH
#define FK_CUDA_WGMMA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#ifdef __CUDACC__
#include "common.cuh"
#endif

namespace fk_wg {

// ---- shared-memory layout (host and device: the host self-test checks it against the descriptors) -------

// Swizzle of a linear byte offset inside a tile that starts on a 1024-byte boundary.
template <int SW> __host__ __device__ __forceinline__ uint32_t swz(uint32_t lin) {
    static_assert(SW == 128 || SW == 64 || SW == 32, "swizzle width");
    return lin ^ (((lin >> 7) & (uint32_t)(SW / 16 - 1)) << 4);
}

// Byte offset of 16-bit element (row, col) in a ROWS-row tile stored as SW-byte swizzled column blocks.
template <int SW> __host__ __device__ __forceinline__ uint32_t tile_off(int row, int col, int rows) {
    constexpr int E = SW / 2;
    return swz<SW>((uint32_t)((col / E) * rows * SW + row * SW + (col % E) * 2));
}

template <int SW> __host__ __device__ constexpr uint64_t swizzle_code() {
    return SW == 128 ? 1ull : SW == 64 ? 2ull : 3ull;
}

__host__ __device__ __forceinline__ uint64_t desc_encode(uint32_t addr, uint32_t lbo, uint32_t sbo, uint64_t mode) {
    return (uint64_t)((addr & 0x3FFFFu) >> 4) | ((uint64_t)((lbo & 0x3FFFFu) >> 4) << 16) |
           ((uint64_t)((sbo & 0x3FFFFu) >> 4) << 32) | (mode << 62);
}

// K-major operand (A, or B with imm-trans-b = 0): rows [row0, row0 + 64 or N) of a ROWS-row tile at shared
// address base, k-step s (elements 16 s .. 16 s + 15). row0: a multiple of 8.
template <int SW>
__host__ __device__ __forceinline__ uint64_t desc_kmajor(uint32_t base, int row0, int s, int rows) {
    constexpr int SPB = SW / 32; // k-steps per column block
    const uint32_t start = base + (uint32_t)((s / SPB) * rows * SW + row0 * SW + (s % SPB) * 32);
    return desc_encode(start, 16, 8 * SW, swizzle_code<SW>());
}

// MN-major operand (B with imm-trans-b = 1): a tile of ROWS = K rows (k-step s: rows 16 s .. 16 s + 15) whose
// columns are N; columns [col0, col0 + N) with col0 a multiple of SW / 2.
template <int SW>
__host__ __device__ __forceinline__ uint64_t desc_mnmajor(uint32_t base, int s, int rows, int col0 = 0) {
    constexpr int E = SW / 2;
    const uint32_t start = base + (uint32_t)((col0 / E) * rows * SW + s * 16 * SW);
    return desc_encode(start, (uint32_t)(rows * SW), 8 * SW, swizzle_code<SW>());
}

#ifdef __CUDACC__
// ---- PTX wrappers ----------------------------------------------------------------------------------------

__device__ __forceinline__ uint32_t smem_u32(const void *p) { return fk_cuda::smem_addr(p); }

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Generic-proxy writes to shared memory (st.shared, cp.async) made visible to the async proxy (wgmma, TMA).
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

__device__ __forceinline__ void fence_operand(float &x) { asm volatile("" : "+f"(x)::"memory"); }
__device__ __forceinline__ void fence_operand(uint32_t &x) { asm volatile("" : "+r"(x)::"memory"); }
template <int N> __device__ __forceinline__ void fence_operands(float (&x)[N]) {
#pragma unroll
    for (int i = 0; i < N; ++i) fence_operand(x[i]);
}

// Barrier of the NT threads of one group (warpgroup: NT = 128) on hardware barrier id (1..15; 0 = __syncthreads).
__device__ __forceinline__ void named_bar_sync(int id, int nt) {
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(nt) : "memory");
}
// Arrive on named barrier id without waiting (the producer side of a bar.arrive / bar.sync pair): the barrier
// completes when nt threads have arrived (bar.sync counts its threads too); the arriving thread's prior memory
// accesses are performed relative to the threads that wait on that completion.
__device__ __forceinline__ void named_bar_arrive(int id, int nt) {
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(nt) : "memory");
}

// cp.async and 16-bit packing: the Ampere path's (common.cuh), under the names this file's users call.
using fk_cuda::cp_async_16;
using fk_cuda::cp_async_commit;
using fk_cuda::pack2;
template <int N> __device__ __forceinline__ void cp_async_wait() { fk_cuda::cp_async_wait_group<N>(); }

// The FlashAttention-3 register reuse: accumulator floats of keys 16 s .. 16 s + 15 (d[8 s .. 8 s + 7], see the
// header comment) -> the A fragment of k-step s of the next product.
template <bool BF16> __device__ __forceinline__ void acc_to_a(uint32_t (&a)[4], const float *d8) {
    a[0] = pack2<BF16>(d8[0], d8[1]); // row g,     k 2t, 2t+1
    a[1] = pack2<BF16>(d8[2], d8[3]); // row g + 8, k 2t, 2t+1
    a[2] = pack2<BF16>(d8[4], d8[5]); // row g,     k 8 + 2t, 8 + 2t + 1
    a[3] = pack2<BF16>(d8[6], d8[7]); // row g + 8, k 8 + 2t, 8 + 2t + 1
}

#include "wgmma_ops.cuh"
#endif // __CUDACC__

} // namespace fk_wg

#endif // FK_CUDA_WGMMA_COMMON_CUH
