/*
 * attn_fwd.cu — CUDA attention forward: the selection function (supported? workspace?) and the launch.
 * Kernels live in attn_fwd_impl.cuh (and the wide D = 256 one in attn_fwd_d256.cuh); the fp16/bf16 instances in
 * gen/ (one file per head-dim bucket and dtype, plus one per wide kernel and dtype, written by gen/generate.py
 * from one list, attn_fwd_list.h, which also feeds the dispatch below).
 */
#include "../core/attn_internal.h"
#include "attn_fwd_d256.cuh"
#include "attn_fwd_impl.cuh"
#include "attn_fwd_wgmma.cuh"
#include "gen/attn_fwd_list.h"

#include <cuda_runtime.h>

namespace fk_cuda {
// attn_fwd_<kind>_d<bucket>_<dtype>: kind tc = the bucket's general and FwdTile PLAIN kernels, wide = its wide
// PLAIN kernel (gen/generate.py).
#define FK_DECLARE(kind, d, name) \
    cudaError_t attn_fwd_##kind##_d##d##_##name(const FwdParams &p, int batch, int nheads, cudaStream_t stream);
#define FK_DECLARE_TC(d, name, is_bf16) FK_DECLARE(tc, d, name)
#define FK_DECLARE_WIDE(d, name, is_bf16) FK_DECLARE(wide, d, name)
#define FK_DECLARE_WGMMA(d, name, is_bf16) FK_DECLARE(wgmma, d, name)
FK_ATTN_FWD_TC_VARIANTS(FK_DECLARE_TC)
FK_ATTN_FWD_WIDE_VARIANTS(FK_DECLARE_WIDE)
FK_ATTN_FWD_WGMMA_VARIANTS(FK_DECLARE_WGMMA)
#undef FK_DECLARE_WGMMA
#undef FK_DECLARE_WIDE
#undef FK_DECLARE_TC
#undef FK_DECLARE
} // namespace fk_cuda

using namespace fk_cuda;

namespace {

// Sequence lengths and window extents are handled in 32-bit inside the kernels.
constexpr int64_t kMaxSeqlen = (int64_t)1 << 28;
constexpr int64_t kMaxWindow = (int64_t)1 << 29;

int head_dim_bucket(int64_t d) {
    static const int buckets[] = {32, 64, 96, 128, 192, 256};
    for (int b : buckets)
        if (d <= b) return b;
    return 0;
}

// Shared memory of the kernel that will run for this problem.
size_t smem_bytes(const fk_attn_problem *p, int bucket) {
    if (p->dtype == FK_DTYPE_F32) return f32_smem_bytes((int)p->head_dim);
    switch (bucket) {
#define FK_SMEM_CASE(d)                                                                                        \
    case d: return (size_t)fwd_smem<d>();
        FK_SMEM_CASE(32)
        FK_SMEM_CASE(64)
        FK_SMEM_CASE(96)
        FK_SMEM_CASE(128)
        FK_SMEM_CASE(192)
        FK_SMEM_CASE(256)
#undef FK_SMEM_CASE
    }
    return 0;
}

bool built(int bucket) {
    switch (bucket) {
    case 32: return FK_ATTN_FWD_BUILT(32);
    case 64: return FK_ATTN_FWD_BUILT(64);
    case 96: return FK_ATTN_FWD_BUILT(96);
    case 128: return FK_ATTN_FWD_BUILT(128);
    case 192: return FK_ATTN_FWD_BUILT(192);
    case 256: return FK_ATTN_FWD_BUILT(256);
    }
    return false;
}

bool aligned16(const void *ptr, int64_t s0, int64_t s1, int64_t s2) {
    return ((uintptr_t)ptr % 16 == 0) && s0 % 8 == 0 && s1 % 8 == 0 && s2 % 8 == 0;
}

int64_t clamp_window(int64_t w) { return w < 0 ? -1 : (w > kMaxWindow ? kMaxWindow : w); }

FwdParams make_params(const fk_attn_problem *p) {
    FwdParams f;
    f.q = p->q, f.k = p->k, f.v = p->v, f.o = p->o;
    f.lse  = (float *)p->lse;
    f.q_bs = p->q_bs, f.q_rs = p->q_rs, f.q_hs = p->q_hs;
    f.k_bs = p->k_bs, f.k_rs = p->k_rs, f.k_hs = p->k_hs;
    f.v_bs = p->v_bs, f.v_rs = p->v_rs, f.v_hs = p->v_hs;
    f.o_bs = p->o_bs, f.o_rs = p->o_rs, f.o_hs = p->o_hs;
    f.lse_bs = p->lse_bs, f.lse_hs = p->lse_hs, f.lse_rs = p->lse_rs;
    f.cu_q = p->cu_seqlens_q, f.cu_k = p->cu_seqlens_k;
    f.total_q = p->total_q, f.total_k = p->total_k;
    f.alibi = p->alibi, f.alibi_bs = p->alibi_bs;
    f.seqlen_q = (int)p->seqlen_q, f.seqlen_k = (int)p->seqlen_k;
    f.head_dim     = (int)p->head_dim;
    f.group        = (int)(p->nheads_q / p->nheads_kv);
    f.window_left  = (int)clamp_window(p->window_left);
    f.window_right = (int)clamp_window(p->window_right);
    f.scale        = p->scale;
    f.scale_log2   = p->scale * FK_LOG2E;
    f.softcap      = p->softcap > 0.f ? p->softcap : 0.f;
    f.softcap_inv  = f.softcap > 0.f ? p->scale / f.softcap : 0.f;
    f.softcap_log2 = f.softcap * FK_LOG2E;
    f.transform    = (f.softcap > 0.f || p->alibi != NULL || !(p->scale > 0.f)) ? 1 : 0;
    f.vec_in = aligned16(p->q, p->q_bs, p->q_rs, p->q_hs) && aligned16(p->k, p->k_bs, p->k_rs, p->k_hs) &&
               aligned16(p->v, p->v_bs, p->v_rs, p->v_hs);
    f.vec_out = aligned16(p->o, p->o_bs, p->o_rs, p->o_hs);
    f.plain   = !f.transform && f.vec_in && f.vec_out && p->head_dim == head_dim_bucket(p->head_dim);
    return f;
}

// Which PLAIN kernel runs a D = 256 problem: the wide one (attn_fwd_d256.cuh, fwd_d256_kernel<BF16, 2>: 128x64
// tile, 8 warps 4 x 2, P halves and row maxima through shared memory, two K buffers) or FwdTile<256, true>
// (64x64 w4 p0). Measured on the H200, 2026-11-30, bench/next_fwd256.sh, commit d3c1cfc (bf16, B*S = 16384,
// H = 8, CUDA events; docs/PERF.md, "D = 256 still falls short"), wide over 64x64 w4 p0:
//   non-causal 1.03-1.08x at every S from 512 to 16384;
//   causal     0.93-0.98x at S = 512..2048, 1.01-1.08x at S = 4096..16384.
// So: no window at any length; causal (or any band unbounded on the left) when seqlen_k >= 4096, where each
// query row sees many keys; a left window (sliding) was not measured and keeps 64x64. sm_90 only: the kernel
// needs 189,440 B of shared memory (H100/H200), checked against the device, and was not measured on sm_80.
// Varlen: seqlen_k is the longest sequence, so a batch of short causal sequences with one long one goes wide.
constexpr int64_t kD256WideBandMinSeqlenK = 4096;

bool use_d256_wide(const struct fk_context *ctx, const fk_attn_problem *p, const FwdParams &f) {
    if (p->dtype == FK_DTYPE_F32 || head_dim_bucket(p->head_dim) != 256 || !f.plain) return false;
    if (ctx->cc_major != 9 || ctx->max_smem_optin < D256Shape<2>::SMEM) return false;
    if (p->window_left < 0 && p->window_right < 0) return true;
    return p->window_left < 0 && p->seqlen_k >= kD256WideBandMinSeqlenK;
}

// The Hopper kernel (attn_fwd_wgmma.cuh: wgmma, 2 warpgroups x 64 query rows, K/V double-buffered through 128-B
// swizzled shared memory) runs every PLAIN fp16/bf16 problem of head dim 64, 128 or 256 (exactly: PLAIN means
// head_dim == bucket) on a 9.0 device, when the library carries an sm_90a image (FK_HAVE_SM90A: CMake defines it
// when CMAKE_CUDA_ARCHITECTURES names 90a, the default). Measured on the H200, 2026-11-30 (third session,
// dev/cuda/wgmma_run.sh, commit c57271d; bf16, H 16, B x S = 32768, CUDA events), over the kernels it replaces:
// D = 64 1.01-1.09x, D = 128 1.09-1.24x, D = 256 1.58-1.65x, causal and not, S = 2048..8192.
bool use_wgmma(const struct fk_context *ctx, const fk_attn_problem *p, const FwdParams &f) {
#ifdef FK_HAVE_SM90A
    if (p->dtype == FK_DTYPE_F32 || !f.plain || ctx->cc_major != 9 || ctx->cc_minor != 0) return false;
    const int d = (int)p->head_dim;
    if (d != 64 && d != 128 && d != 256) return false;
    const int smem = d == 64 ? fk_wg::WgShape<64, fk_wg::WgTile<64>::BN, fk_wg::WgTile<64>::NWG>::SMEM
                     : d == 128 ? fk_wg::WgShape<128, fk_wg::WgTile<128>::BN, fk_wg::WgTile<128>::NWG>::SMEM
                                : fk_wg::WgShape<256, fk_wg::WgTile<256>::BN, fk_wg::WgTile<256>::NWG>::SMEM;
    return smem <= ctx->max_smem_optin;
#else
    (void)ctx, (void)p, (void)f;
    return false;
#endif
}

enum Kernel { K_TC, K_WIDE, K_WGMMA };

cudaError_t launch(const fk_attn_problem *p, const FwdParams &f, Kernel kind, cudaStream_t st) {
    const int batch = (int)p->batch, nh = (int)p->nheads_q;
    if (p->dtype == FK_DTYPE_F32) return launch_fwd_f32(f, batch, nh, st);
    const bool bf16   = p->dtype == FK_DTYPE_BF16;
    const int  bucket = head_dim_bucket(p->head_dim);
#define FK_DISPATCH(kind, d, name, is_bf16)                                                                    \
    if (bucket == d && bf16 == (is_bf16 != 0)) return attn_fwd_##kind##_d##d##_##name(f, batch, nh, st);
#define FK_DISPATCH_TC(d, name, is_bf16) FK_DISPATCH(tc, d, name, is_bf16)
#define FK_DISPATCH_WIDE(d, name, is_bf16) FK_DISPATCH(wide, d, name, is_bf16)
#define FK_DISPATCH_WGMMA(d, name, is_bf16) FK_DISPATCH(wgmma, d, name, is_bf16)
    if (kind == K_WGMMA) {
        FK_ATTN_FWD_WGMMA_VARIANTS(FK_DISPATCH_WGMMA)
    }
    if (kind == K_WIDE) {
        FK_ATTN_FWD_WIDE_VARIANTS(FK_DISPATCH_WIDE)
    }
    FK_ATTN_FWD_TC_VARIANTS(FK_DISPATCH_TC)
#undef FK_DISPATCH_WGMMA
#undef FK_DISPATCH_WIDE
#undef FK_DISPATCH_TC
#undef FK_DISPATCH
    return cudaErrorNotSupported;
}

} // namespace

extern "C" fk_status fk_cuda_attn_fwd_select(const struct fk_context *ctx, const fk_attn_problem *p,
                                             size_t *ws_bytes) {
    *ws_bytes = 0; // the forward keeps everything on chip: no workspace
    if (ctx->cc_major < 8)
        return fk_error(FK_STATUS_NOT_SUPPORTED_ARCH, "attn_fwd: the CUDA kernels need sm_80 or newer; cuda:%d is sm_%d%d",
                        ctx->device.index, ctx->cc_major, ctx->cc_minor);
    if (p->dtype != FK_DTYPE_F32 && p->dtype != FK_DTYPE_F16 && p->dtype != FK_DTYPE_BF16)
        return fk_error(FK_STATUS_NOT_SUPPORTED_DTYPE, "attn_fwd: dtype %s is not supported on CUDA (f32, f16, bf16 are)",
                        fk_dtype_name(p->dtype));
    if (p->head_dim < 1 || p->head_dim > 256)
        return fk_error(FK_STATUS_NOT_SUPPORTED_HEAD_DIM, "attn_fwd: head_dim %lld is not supported on CUDA (1..256)",
                        (long long)p->head_dim);
    const int bucket = head_dim_bucket(p->head_dim);
    if (p->dtype != FK_DTYPE_F32 && !built(bucket))
        return fk_error(FK_STATUS_NOT_SUPPORTED_HEAD_DIM,
                        "attn_fwd: head-dim bucket %d was not built into this library (FK_ATTN_FWD_ONLY_D)", bucket);
    if (p->seqlen_q > kMaxSeqlen || p->seqlen_k > kMaxSeqlen || p->total_q > kMaxSeqlen * 64 ||
        p->total_k > kMaxSeqlen * 64)
        return fk_error(FK_STATUS_NOT_SUPPORTED_FEATURE, "attn_fwd: sequence lengths above 2^28 are not supported on CUDA");
    if (p->batch > 65535 || p->nheads_q > 65535)
        return fk_error(FK_STATUS_NOT_SUPPORTED_FEATURE,
                        "attn_fwd: batch %lld or nheads_q %lld above 65535 is not supported on CUDA (grid limit)",
                        (long long)p->batch, (long long)p->nheads_q);
    if (p->lse && p->dtype == FK_DTYPE_F64)
        return fk_error(FK_STATUS_NOT_SUPPORTED_DTYPE, "attn_fwd: f64 lse is not supported on CUDA");
    const size_t smem = smem_bytes(p, bucket);
    if (smem > (size_t)ctx->max_smem_optin)
        return fk_error(FK_STATUS_NOT_SUPPORTED_HEAD_DIM,
                        "attn_fwd: head_dim %lld needs %zu bytes of shared memory per block; cuda:%d allows %d",
                        (long long)p->head_dim, smem, ctx->device.index, ctx->max_smem_optin);
    return FK_STATUS_SUCCESS;
}

extern "C" fk_status fk_cuda_attn_fwd(const struct fk_context *ctx, const fk_attn_problem *p, void *ws,
                                      size_t ws_bytes, void *stream) {
    size_t need = 0;
    FK_TRY(fk_cuda_attn_fwd_select(ctx, p, &need));
    int         prev = 0;
    cudaError_t e    = cudaGetDevice(&prev);
    if (e != cudaSuccess)
        return fk_error(FK_STATUS_CUDA_ERROR, "attn_fwd: cudaGetDevice: %s", cudaGetErrorString(e));
    if (prev != ctx->device.index && (e = cudaSetDevice(ctx->device.index)) != cudaSuccess)
        return fk_error(FK_STATUS_CUDA_ERROR, "attn_fwd: cudaSetDevice(%d): %s", ctx->device.index,
                        cudaGetErrorString(e));
    const FwdParams f = make_params(p);
    const Kernel kind = use_wgmma(ctx, p, f) ? K_WGMMA : use_d256_wide(ctx, p, f) ? K_WIDE : K_TC;
    e                 = launch(p, f, kind, (cudaStream_t)stream);
    if (prev != ctx->device.index) cudaSetDevice(prev);
    if (e == cudaErrorNotSupported)
        return fk_error(FK_STATUS_NOT_SUPPORTED_HEAD_DIM, "attn_fwd: no kernel built for head_dim %lld",
                        (long long)p->head_dim);
    if (e != cudaSuccess)
        return fk_error(FK_STATUS_CUDA_ERROR, "attn_fwd: kernel launch failed: %s", cudaGetErrorString(e));
    return FK_STATUS_SUCCESS;
}
