/*
 * attn_bwd.cu — CUDA attention backward: the selection function (supported? workspace?) and the launches.
 * Kernels live in attn_bwd_impl.cuh (and attn_bwd_d256.cuh: the head-dim-split main kernel of the D = 256 bucket,
 * chosen on sm_90 when its shared memory fits, see choose()); the fp16/bf16 instances in gen/ (one file per head-dim
 * bucket and dtype, written by gen/generate_bwd.py from one list, attn_bwd_list.h, which also feeds the dispatch).
 *
 * Workspace (caller-owned, sized by fk_cuda_attn_bwd_select, every piece 256-byte aligned):
 *   dq_acc  fp32 [total_q, Hq, bucket]   fp16/bf16 only: dQ accumulated over key blocks
 *   dsum    fp32 [Hq, total_q]           rowsum(dO * O)
 *   lsef    fp32 [Hq, total_q]           the LSE, -inf mapped to +inf
 *   sem     int32 [B, Hq, query blocks]  fp16/bf16 with deterministic = 1: the order of dQ additions (query
 *                                        blocks of the BM of the main kernel that choose() picks)
 * No other memory is allocated.
 */
#include "../core/attn_internal.h"
#include "attn_bwd_d256.cuh"
#include "attn_bwd_impl.cuh"
#include "attn_bwd_wgmma.cuh"
#include "gen/attn_bwd_list.h"

#include <cuda_runtime.h>
#include <string.h>

namespace fk_cuda {
#define FK_DECLARE_BWD(d, name, is_bf16) \
    cudaError_t attn_bwd_tc_d##d##_##name(const BwdParams &p, int nheads_kv, cudaStream_t stream);
FK_ATTN_BWD_TC_VARIANTS(FK_DECLARE_BWD)
#undef FK_DECLARE_BWD
#define FK_DECLARE_BWD_SPLIT(d, name, is_bf16) \
    cudaError_t attn_bwd_split_d##d##_##name(const BwdParams &p, int nheads_kv, cudaStream_t stream);
FK_ATTN_BWD_SPLIT_VARIANTS(FK_DECLARE_BWD_SPLIT)
#undef FK_DECLARE_BWD_SPLIT
#define FK_DECLARE_BWD_WGMMA(d, name, is_bf16) \
    cudaError_t attn_bwd_wgmma_d##d##_##name(const BwdParams &p, int nheads_kv, cudaStream_t stream);
FK_ATTN_BWD_WGMMA_VARIANTS(FK_DECLARE_BWD_WGMMA)
#undef FK_DECLARE_BWD_WGMMA
} // namespace fk_cuda

using namespace fk_cuda;

namespace {

constexpr int64_t kMaxSeqlen = (int64_t)1 << 28;
constexpr int64_t kMaxWindow = (int64_t)1 << 29;

int bucket_of(int64_t d) {
    static const int buckets[] = FK_ATTN_BWD_BUCKETS;
    for (int b : buckets)
        if (d <= b) return b;
    return 0;
}

bool built(int bucket) {
    switch (bucket) {
    case 64: return FK_ATTN_BWD_BUILT(64);
    case 128: return FK_ATTN_BWD_BUILT(128);
    case 256: return FK_ATTN_BWD_BUILT(256);
    }
    return false;
}

// The main kernel of one call. The size query, the parameters and the launch all take it from choose(), so the
// workspace (the deterministic counters are sized by the kernel's BM) always matches the kernel that runs.
struct Choice {
    int  bucket;
    bool split; // attn_bwd_d256.cuh's head-dim-split kernel (BwdSplitTile) instead of bwd_tc_kernel (BwdTile)
    bool wgmma; // attn_bwd_wgmma.cuh's Hopper kernel (BwdWgShape) instead of bwd_tc_kernel
};

int block_m(const Choice &c) {
    if (c.wgmma) return fk_wg::BwdWgShape<64>::BM; // 64 at both head dims
    if (c.split) return BwdSplitTile<256>::BM;
    switch (c.bucket) {
    case 64: return BwdTile<64>::BM;
    case 128: return BwdTile<128>::BM;
    case 256: return BwdTile<256>::BM;
    }
    return 1;
}

size_t smem_bytes(const struct fk_context *ctx, const fk_attn_problem *p, const Choice &c) {
    if (p->dtype == FK_DTYPE_F32) return bf32_smem_bytes((int)p->head_dim);
    if (c.wgmma) return (size_t)(c.bucket == 64 ? fk_wg::BwdWgShape<64>::SMEM : fk_wg::BwdWgShape<128>::SMEM);
    if (c.split) {
        using T = BwdSplitTile<256>;
        return (size_t)BwdSplitShape<256, T::BM, T::BN, T::NW, T::SPLIT>::SMEM;
    }
    const bool sm90 = ctx->cc_major >= 9; // bwd_tc_kernel's stage count (BwdShape::stages), as launch_bwd_tc
    switch (c.bucket) {
#define FK_BWD_SMEM(d) \
    case d: return (size_t)BwdShape<d, BwdTile<d>::BM, BwdTile<d>::BN, BwdTile<d>::NW>::smem(sm90, BwdTile<d>::MINB);
        FK_BWD_SMEM(64)
        FK_BWD_SMEM(128)
        FK_BWD_SMEM(256)
#undef FK_BWD_SMEM
    }
    return 0;
}

// D = 256, fp16/bf16: the head-dim-split kernel on sm_90 and newer when its 221 KB of shared memory fit (H100/H200:
// 1.16-1.31x the 16x128w8 kernel, docs/PERF.md); its body is compiled for sm_90+ only. Elsewhere BwdTile<256>.
// head dims 64 and 128 exactly, fp16/bf16, no softcap / ALiBi, scale > 0, 16-byte aligned q, k, v, do (what
// launch_bwd_wgmma takes: the same conditions as make_params' transform and vec_in), on a 9.0 device of a build
// with an sm_90a image (FK_HAVE_SM90A): the Hopper wgmma kernel (attn_bwd_wgmma.cuh).
bool aligned16(const void *ptr, int64_t s0, int64_t s1, int64_t s2) {
    return ((uintptr_t)ptr % 16 == 0) && s0 % 8 == 0 && s1 % 8 == 0 && s2 % 8 == 0;
}
bool use_wgmma(const struct fk_context *ctx, const fk_attn_problem *p) {
#ifdef FK_HAVE_SM90A
    if (p->dtype == FK_DTYPE_F32 || ctx->cc_major != 9 || ctx->cc_minor != 0) return false;
    if (p->head_dim != 64 && p->head_dim != 128) return false;
    if (p->softcap > 0.f || p->alibi != NULL || !(p->scale > 0.f)) return false;
    if (!aligned16(p->q, p->q_bs, p->q_rs, p->q_hs) || !aligned16(p->k, p->k_bs, p->k_rs, p->k_hs) ||
        !aligned16(p->v, p->v_bs, p->v_rs, p->v_hs) || !aligned16(p->do_, p->do_bs, p->do_rs, p->do_hs))
        return false;
    const size_t smem = p->head_dim == 64 ? fk_wg::BwdWgShape<64>::SMEM : fk_wg::BwdWgShape<128>::SMEM;
    return smem <= (size_t)ctx->max_smem_optin;
#else
    (void)ctx, (void)p;
    return false;
#endif
}

Choice choose(const struct fk_context *ctx, const fk_attn_problem *p) {
    Choice c;
    c.bucket = bucket_of(p->head_dim);
    c.split  = false;
    c.wgmma  = use_wgmma(ctx, p);
    if (p->dtype != FK_DTYPE_F32 && c.bucket == 256 && ctx->cc_major >= 9) {
        using T = BwdSplitTile<256>;
        c.split = (size_t)BwdSplitShape<256, T::BM, T::BN, T::NW, T::SPLIT>::SMEM <= (size_t)ctx->max_smem_optin;
    }
    return c;
}

size_t align256(size_t x) { return (x + 255) & ~(size_t)255; }

struct Layout {
    size_t dq_acc, dsum, lsef, sem, total;
    int    n_mblocks;
};

Layout layout(const fk_attn_problem *p, const Choice &c) {
    Layout       l;
    const bool   tc     = p->dtype != FK_DTYPE_F32;
    const int    bucket = c.bucket;
    const size_t rows   = (size_t)p->total_q * (size_t)p->nheads_q;
    l.n_mblocks         = tc ? (int)((p->seqlen_q + block_m(c) - 1) / block_m(c)) : 0;
    l.dq_acc            = 0;
    l.dsum              = l.dq_acc + (tc ? align256(rows * bucket * sizeof(float)) : 0);
    l.lsef              = l.dsum + align256(rows * sizeof(float));
    l.sem               = l.lsef + align256(rows * sizeof(float));
    l.total = l.sem + (tc && p->deterministic ? align256((size_t)p->batch * p->nheads_q * l.n_mblocks * sizeof(int)) : 0);
    return l;
}

int64_t clamp_window(int64_t w) { return w < 0 ? -1 : (w > kMaxWindow ? kMaxWindow : w); }

BwdParams make_params(const fk_attn_problem *p, const Choice &c, void *ws) {
    BwdParams f;
    memset(&f, 0, sizeof f);
    f.q = p->q, f.k = p->k, f.v = p->v, f.o = p->o, f.do_ = p->do_;
    f.dq = p->dq, f.dk = p->dk, f.dv = p->dv;
    f.lse  = (const float *)p->lse;
    f.q_bs = p->q_bs, f.q_rs = p->q_rs, f.q_hs = p->q_hs;
    f.k_bs = p->k_bs, f.k_rs = p->k_rs, f.k_hs = p->k_hs;
    f.v_bs = p->v_bs, f.v_rs = p->v_rs, f.v_hs = p->v_hs;
    f.o_bs = p->o_bs, f.o_rs = p->o_rs, f.o_hs = p->o_hs;
    f.do_bs = p->do_bs, f.do_rs = p->do_rs, f.do_hs = p->do_hs;
    f.dq_bs = p->dq_bs, f.dq_rs = p->dq_rs, f.dq_hs = p->dq_hs;
    f.dk_bs = p->dk_bs, f.dk_rs = p->dk_rs, f.dk_hs = p->dk_hs;
    f.dv_bs = p->dv_bs, f.dv_rs = p->dv_rs, f.dv_hs = p->dv_hs;
    f.lse_bs = p->lse_bs, f.lse_hs = p->lse_hs, f.lse_rs = p->lse_rs;
    f.cu_q = p->cu_seqlens_q, f.cu_k = p->cu_seqlens_k;
    f.alibi = p->alibi, f.alibi_bs = p->alibi_bs;
    f.batch = (int)p->batch, f.seqlen_q = (int)p->seqlen_q, f.seqlen_k = (int)p->seqlen_k;
    f.head_dim = (int)p->head_dim, f.nheads_q = (int)p->nheads_q;
    f.group        = (int)(p->nheads_q / p->nheads_kv);
    f.window_left  = (int)clamp_window(p->window_left);
    f.window_right = (int)clamp_window(p->window_right);
    f.scale        = p->scale;
    f.scale_log2   = p->scale * FK_BWD_LOG2E;
    f.softcap      = p->softcap > 0.f ? p->softcap : 0.f;
    f.softcap_inv  = f.softcap > 0.f ? p->scale / f.softcap : 0.f;
    f.softcap_log2 = f.softcap * FK_BWD_LOG2E;
    // The plain path masks with -inf before scaling: it needs scale > 0.
    f.transform = (f.softcap > 0.f || p->alibi != NULL || !(p->scale > 0.f)) ? 1 : 0;
    f.vec_in    = aligned16(p->q, p->q_bs, p->q_rs, p->q_hs) && aligned16(p->k, p->k_bs, p->k_rs, p->k_hs) &&
               aligned16(p->v, p->v_bs, p->v_rs, p->v_hs) && aligned16(p->do_, p->do_bs, p->do_rs, p->do_hs);
    f.vec_out = aligned16(p->dq, p->dq_bs, p->dq_rs, p->dq_hs) && aligned16(p->dk, p->dk_bs, p->dk_rs, p->dk_hs) &&
                aligned16(p->dv, p->dv_bs, p->dv_rs, p->dv_hs);
    f.deterministic = p->deterministic ? 1 : 0;
    const Layout l  = layout(p, c);
    char        *w  = (char *)ws;
    f.dq_acc        = p->dtype != FK_DTYPE_F32 ? (float *)(w + l.dq_acc) : NULL;
    f.dsum          = (float *)(w + l.dsum);
    f.lsef          = (float *)(w + l.lsef);
    f.sem           = p->dtype != FK_DTYPE_F32 && p->deterministic ? (int *)(w + l.sem) : NULL;
    f.total_q       = p->total_q;
    f.total_k       = p->total_k;
    f.acc_d         = c.bucket;
    f.n_mblocks     = l.n_mblocks;
    return f;
}

unsigned grid_1d(int64_t work, int per_block, int sms) {
    int64_t g = (work + per_block - 1) / per_block;
    if (g > (int64_t)sms * 16) g = (int64_t)sms * 16;
    return (unsigned)(g < 1 ? 1 : g);
}

cudaError_t launch(const struct fk_context *ctx, const fk_attn_problem *p, const Choice &c, const BwdParams &f,
                   const Layout &l, cudaStream_t st) {
    if (p->total_q == 0 && p->total_k == 0) return cudaSuccess;
    const int   dt  = p->dtype == FK_DTYPE_F32 ? 0 : p->dtype == FK_DTYPE_F16 ? 1 : 2;
    const int   sms = ctx->sm_count > 0 ? ctx->sm_count : 132;
    cudaError_t e;
    if (p->total_q > 0) {
        const unsigned g = grid_1d(p->total_q * p->nheads_q, 8, sms);
        if (dt == 0) bwd_prep_kernel<0><<<g, 256, 0, st>>>(f);
        else if (dt == 1) bwd_prep_kernel<1><<<g, 256, 0, st>>>(f);
        else bwd_prep_kernel<2><<<g, 256, 0, st>>>(f);
        if ((e = cudaGetLastError()) != cudaSuccess) return e;
    }
    if (f.sem && (e = cudaMemsetAsync(f.sem, 0, l.total - l.sem, st)) != cudaSuccess) return e;
    if (dt == 0) {
        const size_t smem = bf32_smem_bytes(f.head_dim);
        if ((e = cudaFuncSetAttribute(bwd_f32_dkdv_kernel<BF32_NW>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem)) !=
            cudaSuccess)
            return e;
        if ((e = cudaFuncSetAttribute(bwd_f32_dq_kernel<BF32_NW>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem)) !=
            cudaSuccess)
            return e;
        const int nk = (f.seqlen_k + BF32_T - 1) / BF32_T, nq = (f.seqlen_q + BF32_T - 1) / BF32_T;
        if (nk > 0) {
            bwd_f32_dkdv_kernel<BF32_NW><<<dim3(nk, (unsigned)p->nheads_kv, f.batch), BF32_NW * 32, smem, st>>>(f);
            if ((e = cudaGetLastError()) != cudaSuccess) return e;
        }
        if (nq > 0) {
            bwd_f32_dq_kernel<BF32_NW><<<dim3(nq, f.nheads_q, f.batch), BF32_NW * 32, smem, st>>>(f);
            if ((e = cudaGetLastError()) != cudaSuccess) return e;
        }
        return cudaSuccess;
    }
    const bool bf16   = dt == 2;
    const int  bucket = c.bucket;
    e                 = cudaErrorNotSupported;
    if (f.seqlen_k > 0) {
#define FK_DISPATCH_BWD_WGMMA(d, name, is_bf16) \
    if (c.wgmma && bucket == d && bf16 == (is_bf16 != 0)) e = attn_bwd_wgmma_d##d##_##name(f, (int)p->nheads_kv, st);
        FK_ATTN_BWD_WGMMA_VARIANTS(FK_DISPATCH_BWD_WGMMA)
#undef FK_DISPATCH_BWD_WGMMA
#define FK_DISPATCH_BWD(d, name, is_bf16) \
    if (!c.split && !c.wgmma && bucket == d && bf16 == (is_bf16 != 0)) e = attn_bwd_tc_d##d##_##name(f, (int)p->nheads_kv, st);
        FK_ATTN_BWD_TC_VARIANTS(FK_DISPATCH_BWD)
#undef FK_DISPATCH_BWD
#define FK_DISPATCH_BWD_SPLIT(d, name, is_bf16) \
    if (c.split && bucket == d && bf16 == (is_bf16 != 0)) e = attn_bwd_split_d##d##_##name(f, (int)p->nheads_kv, st);
        FK_ATTN_BWD_SPLIT_VARIANTS(FK_DISPATCH_BWD_SPLIT)
#undef FK_DISPATCH_BWD_SPLIT
        if (e != cudaSuccess) return e;
    }
    if (p->total_q > 0) {
        const int chunks = (f.head_dim + 7) / 8;
        const unsigned g = grid_1d(p->total_q * p->nheads_q * chunks, 256, sms);
        if (dt == 1) bwd_convert_kernel<1><<<g, 256, 0, st>>>(f);
        else bwd_convert_kernel<2><<<g, 256, 0, st>>>(f);
        if ((e = cudaGetLastError()) != cudaSuccess) return e;
    }
    return cudaSuccess;
}

} // namespace

extern "C" fk_status fk_cuda_attn_bwd_select(const struct fk_context *ctx, const fk_attn_problem *p,
                                             size_t *ws_bytes) {
    *ws_bytes = 0;
    if (ctx->cc_major < 8)
        return fk_error(FK_STATUS_NOT_SUPPORTED_ARCH, "attn_bwd: the CUDA kernels need sm_80 or newer; cuda:%d is sm_%d%d",
                        ctx->device.index, ctx->cc_major, ctx->cc_minor);
    if (p->dtype != FK_DTYPE_F32 && p->dtype != FK_DTYPE_F16 && p->dtype != FK_DTYPE_BF16)
        return fk_error(FK_STATUS_NOT_SUPPORTED_DTYPE, "attn_bwd: dtype %s is not supported on CUDA (f32, f16, bf16 are)",
                        fk_dtype_name(p->dtype));
    if (p->head_dim < 1 || p->head_dim > 256)
        return fk_error(FK_STATUS_NOT_SUPPORTED_HEAD_DIM, "attn_bwd: head_dim %lld is not supported on CUDA (1..256)",
                        (long long)p->head_dim);
    const int bucket = bucket_of(p->head_dim);
    if (p->dtype != FK_DTYPE_F32 && !built(bucket))
        return fk_error(FK_STATUS_NOT_SUPPORTED_HEAD_DIM,
                        "attn_bwd: head-dim bucket %d was not built into this library (FK_ATTN_BWD_ONLY_D)", bucket);
    if (p->seqlen_q > kMaxSeqlen || p->seqlen_k > kMaxSeqlen || p->total_q > kMaxSeqlen * 64 ||
        p->total_k > kMaxSeqlen * 64)
        return fk_error(FK_STATUS_NOT_SUPPORTED_FEATURE, "attn_bwd: sequence lengths above 2^28 are not supported on CUDA");
    if (p->batch > 65535 || p->nheads_q > 65535)
        return fk_error(FK_STATUS_NOT_SUPPORTED_FEATURE,
                        "attn_bwd: batch %lld or nheads_q %lld above 65535 is not supported on CUDA (grid limit)",
                        (long long)p->batch, (long long)p->nheads_q);
    if (p->lse == NULL)
        return fk_error(FK_STATUS_BAD_PARAM_NULL_POINTER, "attn_bwd: lse is required by the backward");
    const Choice c    = choose(ctx, p);
    const size_t smem = smem_bytes(ctx, p, c); // the size launch_bwd_tc asks for on this device
    if (smem > (size_t)ctx->max_smem_optin)
        return fk_error(FK_STATUS_NOT_SUPPORTED_HEAD_DIM,
                        "attn_bwd: head_dim %lld needs %zu bytes of shared memory per block; cuda:%d allows %d",
                        (long long)p->head_dim, smem, ctx->device.index, ctx->max_smem_optin);
    *ws_bytes = layout(p, c).total;
    return FK_STATUS_SUCCESS;
}

extern "C" fk_status fk_cuda_attn_bwd(const struct fk_context *ctx, const fk_attn_problem *p, void *ws,
                                      size_t ws_bytes, void *stream) {
    size_t need = 0;
    FK_TRY(fk_cuda_attn_bwd_select(ctx, p, &need));
    if (ws_bytes < need || (need > 0 && ws == NULL))
        return fk_error(FK_STATUS_WORKSPACE_TOO_SMALL, "attn_bwd: workspace of %zu bytes given, %zu needed", ws_bytes,
                        need);
    int         prev = 0;
    cudaError_t e    = cudaGetDevice(&prev);
    if (e != cudaSuccess)
        return fk_error(FK_STATUS_CUDA_ERROR, "attn_bwd: cudaGetDevice: %s", cudaGetErrorString(e));
    if (prev != ctx->device.index && (e = cudaSetDevice(ctx->device.index)) != cudaSuccess)
        return fk_error(FK_STATUS_CUDA_ERROR, "attn_bwd: cudaSetDevice(%d): %s", ctx->device.index,
                        cudaGetErrorString(e));
    const Choice    c = choose(ctx, p);
    const BwdParams f = make_params(p, c, ws);
    e                 = launch(ctx, p, c, f, layout(p, c), (cudaStream_t)stream);
    if (prev != ctx->device.index) cudaSetDevice(prev);
    if (e == cudaErrorNotSupported)
        return fk_error(FK_STATUS_NOT_SUPPORTED_HEAD_DIM, "attn_bwd: no kernel built for head_dim %lld",
                        (long long)p->head_dim);
    if (e != cudaSuccess)
        return fk_error(FK_STATUS_CUDA_ERROR, "attn_bwd: kernel launch failed: %s", cudaGetErrorString(e));
    return FK_STATUS_SUCCESS;
}
