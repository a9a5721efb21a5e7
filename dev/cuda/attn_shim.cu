/*
 * attn_shim.cu — dev only: fkdev_attn_fwd(args, stream) resolves a fixed-length fk_attn_args (q, k, v, o as
 * [batch, seqlen, heads, head_dim], optional lse [batch, heads, seqlen]) and calls the CUDA forward directly.
 * bench/bench_attn.py falls back to it when libflashkit.so has no fk_attn_fwd yet (src/core/attn.c not landed).
 */
#include "../../src/core/attn_internal.h"

#include <cuda_runtime.h>
#include <math.h>
#include <string.h>

extern "C" __attribute__((visibility("default"))) int fkdev_attn_fwd(const fk_attn_args *a, void *stream) {
    static struct fk_context ctx;
    static int               init = 0;
    if (!init) {
        memset(&ctx, 0, sizeof ctx);
        ctx.device.kind = FK_DEVICE_CUDA;
        cudaGetDevice(&ctx.device.index);
        fk_device_props props;
        if (fk_cuda_device_props(ctx.device.index, &props, &ctx.max_smem_optin) != FK_STATUS_SUCCESS) return -1;
        ctx.cc_major = props.cc_major, ctx.cc_minor = props.cc_minor, ctx.sm_count = props.multiprocessors;
        init = 1;
    }
    fk_attn_problem p;
    memset(&p, 0, sizeof p);
    p.dtype = a->q.dtype;
    p.batch = a->q.shape[0], p.seqlen_q = a->q.shape[1], p.seqlen_k = a->k.shape[1];
    p.nheads_q = a->q.shape[2], p.nheads_kv = a->k.shape[2], p.head_dim = a->q.shape[3];
    p.total_q = p.batch * p.seqlen_q, p.total_k = p.batch * p.seqlen_k;
    p.q = a->q.data, p.k = a->k.data, p.v = a->v.data, p.o = a->o.data, p.lse = a->lse.data;
    p.q_bs = a->q.stride[0], p.q_rs = a->q.stride[1], p.q_hs = a->q.stride[2];
    p.k_bs = a->k.stride[0], p.k_rs = a->k.stride[1], p.k_hs = a->k.stride[2];
    p.v_bs = a->v.stride[0], p.v_rs = a->v.stride[1], p.v_hs = a->v.stride[2];
    p.o_bs = a->o.stride[0], p.o_rs = a->o.stride[1], p.o_hs = a->o.stride[2];
    if (a->lse.data) p.lse_bs = a->lse.stride[0], p.lse_hs = a->lse.stride[1], p.lse_rs = a->lse.stride[2];
    p.scale        = a->softmax_scale != 0.f ? a->softmax_scale : 1.f / sqrtf((float)p.head_dim);
    p.softcap      = a->softcap;
    p.causal       = a->causal;
    p.window_left  = a->window_left;
    p.window_right = a->causal ? 0 : a->window_right;
    size_t ws = 0;
    fk_status st = fk_cuda_attn_fwd_select(&ctx, &p, &ws);
    if (st != FK_STATUS_SUCCESS) return (int)st;
    return (int)fk_cuda_attn_fwd(&ctx, &p, NULL, 0, stream);
}
