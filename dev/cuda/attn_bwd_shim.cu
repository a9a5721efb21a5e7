/*
 * attn_bwd_shim.cu — dev only: fkdev_attn_bwd_ws / fkdev_attn_bwd resolve a fixed-length fk_attn_args (q, k, v,
 * o, do_, dq, dk, dv as [batch, seqlen, heads, head_dim], lse [batch, heads, seqlen]) and call the CUDA backward
 * directly. bench/bench_attn_bwd.py falls back to it while libflashkit.so has no working fk_attn_bwd.
 */
#include "../../src/core/attn_internal.h"

#include <cuda_runtime.h>
#include <math.h>
#include <string.h>

static struct fk_context *shim_ctx(void) {
    static struct fk_context ctx;
    static int               init = 0;
    if (!init) {
        memset(&ctx, 0, sizeof ctx);
        ctx.device.kind = FK_DEVICE_CUDA;
        cudaGetDevice(&ctx.device.index);
        cudaDeviceProp pr;
        if (cudaGetDeviceProperties(&pr, ctx.device.index) != cudaSuccess) return NULL;
        ctx.cc_major = pr.major, ctx.cc_minor = pr.minor, ctx.sm_count = pr.multiProcessorCount;
        ctx.max_smem_optin = (int)pr.sharedMemPerBlockOptin;
        init               = 1;
    }
    return &ctx;
}

static void resolve(const fk_attn_args *a, fk_attn_problem *p) {
    memset(p, 0, sizeof *p);
    p->dtype = a->q.dtype;
    p->batch = a->q.shape[0], p->seqlen_q = a->q.shape[1], p->seqlen_k = a->k.shape[1];
    p->nheads_q = a->q.shape[2], p->nheads_kv = a->k.shape[2], p->head_dim = a->q.shape[3];
    p->total_q = p->batch * p->seqlen_q, p->total_k = p->batch * p->seqlen_k;
    p->q = a->q.data, p->k = a->k.data, p->v = a->v.data, p->o = a->o.data, p->lse = a->lse.data;
    p->do_ = a->do_.data, p->dq = a->dq.data, p->dk = a->dk.data, p->dv = a->dv.data;
#define FK_STRIDES(t, name) p->name##_bs = a->t.stride[0], p->name##_rs = a->t.stride[1], p->name##_hs = a->t.stride[2]
    FK_STRIDES(q, q);
    FK_STRIDES(k, k);
    FK_STRIDES(v, v);
    FK_STRIDES(o, o);
    FK_STRIDES(do_, do);
    FK_STRIDES(dq, dq);
    FK_STRIDES(dk, dk);
    FK_STRIDES(dv, dv);
#undef FK_STRIDES
    p->lse_bs = a->lse.stride[0], p->lse_hs = a->lse.stride[1], p->lse_rs = a->lse.stride[2];
    p->scale         = a->softmax_scale != 0.f ? a->softmax_scale : 1.f / sqrtf((float)p->head_dim);
    p->softcap       = a->softcap;
    p->causal        = a->causal;
    p->window_left   = a->window_left;
    p->window_right  = a->causal ? 0 : a->window_right;
    p->deterministic = a->deterministic;
}

extern "C" __attribute__((visibility("default"))) int fkdev_attn_bwd_ws(const fk_attn_args *a, size_t *bytes) {
    fk_attn_problem p;
    resolve(a, &p);
    struct fk_context *ctx = shim_ctx();
    return ctx ? (int)fk_cuda_attn_bwd_select(ctx, &p, bytes) : -1;
}

extern "C" __attribute__((visibility("default"))) int fkdev_attn_bwd(const fk_attn_args *a, void *ws, size_t ws_bytes,
                                                                     void *stream) {
    fk_attn_problem p;
    resolve(a, &p);
    struct fk_context *ctx = shim_ctx();
    return ctx ? (int)fk_cuda_attn_bwd(ctx, &p, ws, ws_bytes, stream) : -1;
}
