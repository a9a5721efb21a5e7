/*
 * attn_ring.c — public entry points of the attention merge and of ring attention: defaults, every argument
 * check (one rule, one status, one sentence naming the argument), and the resolved problems handed to the
 * backends (src/cpu/attn_merge.c, src/cuda/attn_ring.cu). Semantics: include/flashkit.h; design: docs/DESIGN.md.
 */
#include "ring_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

// --- merge -----------------------------------------------------------------------------------------------

void fk_attn_merge_args_init(fk_attn_merge_args *args) {
    if (!args) return;
    fk_tensor none = fk_tensor_none();
    args->out = args->lse = args->part_out = args->part_lse = none;
}

// f32, f16 or bf16 (fp64 is not merged).
static fk_status check_merge_dtype(const char *op, const char *name, const fk_tensor *t) {
    FK_TRY(fk_check_float_dtype(op, name, t));
    if (t->dtype == FK_DTYPE_F64)
        return fk_error(FK_STATUS_NOT_SUPPORTED_DTYPE, "%s: %s.dtype f64 is not supported (f32, f16, bf16 are)", op,
                        name);
    return FK_STATUS_SUCCESS;
}

static fk_status check_merge_lse(const char *op, const char *name, const fk_tensor *t, const struct fk_context *ctx,
                                 int packed, int64_t b, int64_t h, int64_t s) {
    FK_TRY(fk_check_tensor(op, name, t, ctx, packed ? 2 : 3));
    int d = 0;
    if (!packed) FK_TRY(fk_check_extent(op, name, t, d++, b));
    FK_TRY(fk_check_extent(op, name, t, d++, h));
    FK_TRY(fk_check_extent(op, name, t, d, s));
    if (t->dtype != FK_DTYPE_F32)
        return fk_error(FK_STATUS_BAD_PARAM_DTYPE_MISMATCH, "%s: %s.dtype must be f32, got %s", op, name,
                        fk_dtype_name(t->dtype));
    return FK_STATUS_SUCCESS;
}

static fk_status resolve_merge(const char *op, const struct fk_context *ctx, const fk_attn_merge_args *a,
                               fk_merge_problem *p) {
    FK_TRY(fk_check_context(op, ctx));
    if (!a) return fk_error(FK_STATUS_BAD_PARAM_NULL_POINTER, "%s: args is NULL", op);
    // out fixes the layout (4-D fixed-length or 3-D packed) and the extents.
    const int packed = a->out.data && a->out.ndim == 3;
    const int nd     = packed ? 3 : 4;
    FK_TRY(fk_check_tensor(op, "out", &a->out, ctx, nd));
    FK_TRY(check_merge_dtype(op, "out", &a->out));
    const int64_t b = packed ? 1 : a->out.shape[0], s = a->out.shape[nd - 3], h = a->out.shape[nd - 2],
                  d = a->out.shape[nd - 1];
    FK_TRY(fk_check_tensor(op, "part_out", &a->part_out, ctx, nd));
    for (int i = 0; i < nd; i++) FK_TRY(fk_check_extent(op, "part_out", &a->part_out, i, a->out.shape[i]));
    FK_TRY(check_merge_dtype(op, "part_out", &a->part_out));
    FK_TRY(check_merge_lse(op, "lse", &a->lse, ctx, packed, b, h, s));
    FK_TRY(check_merge_lse(op, "part_lse", &a->part_lse, ctx, packed, b, h, s));

    memset(p, 0, sizeof *p);
    p->batch = b, p->seqlen = s, p->nheads = h, p->head_dim = d;
    p->out_dtype  = a->out.dtype;
    p->part_dtype = a->part_out.dtype;
    p->out        = a->out.data;
    p->lse        = (float *)a->lse.data;
    p->part_out   = a->part_out.data;
    p->part_lse   = (const float *)a->part_lse.data;
    const int o = packed ? 0 : 1; // index of the row extent
    p->out_bs   = packed ? 0 : a->out.stride[0];
    p->out_rs   = a->out.stride[o];
    p->out_hs   = a->out.stride[o + 1];
    p->part_bs  = packed ? 0 : a->part_out.stride[0];
    p->part_rs  = a->part_out.stride[o];
    p->part_hs  = a->part_out.stride[o + 1];
    p->lse_bs   = packed ? 0 : a->lse.stride[0];
    p->lse_hs   = a->lse.stride[o];
    p->lse_rs   = a->lse.stride[o + 1];
    p->plse_bs  = packed ? 0 : a->part_lse.stride[0];
    p->plse_hs  = a->part_lse.stride[o];
    p->plse_rs  = a->part_lse.stride[o + 1];
    return FK_STATUS_SUCCESS;
}

fk_status fk_attn_merge(fk_context_t ctx, const fk_attn_merge_args *args, void *stream) {
    fk_clear_error();
    const char      *op = "attn_merge";
    fk_merge_problem p;
    FK_TRY(resolve_merge(op, ctx, args, &p));
    if (ctx->device.kind == FK_DEVICE_CPU) return fk_cpu_attn_merge(ctx, &p);
#ifdef FK_WITH_CUDA
    return fk_cuda_attn_merge(ctx, &p, stream);
#else
    (void)stream;
    return fk_error(FK_STATUS_NOT_SUPPORTED_BACKEND, "%s: a CUDA context, but flashkit was built without CUDA", op);
#endif
}

// --- ring attention --------------------------------------------------------------------------------------

void fk_ring_attn_args_init(fk_ring_attn_args *args) {
    if (!args) return;
    memset(args, 0, sizeof *args);
    fk_attn_args_init(&args->attn);
    args->nccl_comm   = NULL;
    args->layout      = FK_RING_LAYOUT_ZIGZAG;
    args->comm_stream = NULL;
}

// The checked local slice as an fk_attn_problem (fixed-length batch only; every tensor already checked).
static void local_problem(const fk_attn_args *a, int backward, fk_attn_problem *p) {
    memset(p, 0, sizeof *p);
    p->dtype     = a->q.dtype;
    p->batch     = a->q.shape[0];
    p->seqlen_q  = a->q.shape[1];
    p->seqlen_k  = a->k.shape[1];
    p->nheads_q  = a->q.shape[2];
    p->nheads_kv = a->k.shape[2];
    p->head_dim  = a->q.shape[3];
    p->total_q   = p->batch * p->seqlen_q;
    p->total_k   = p->batch * p->seqlen_k;
    p->q = a->q.data, p->k = a->k.data, p->v = a->v.data, p->o = a->o.data, p->lse = a->lse.data;
    p->q_bs = a->q.stride[0], p->q_rs = a->q.stride[1], p->q_hs = a->q.stride[2];
    p->k_bs = a->k.stride[0], p->k_rs = a->k.stride[1], p->k_hs = a->k.stride[2];
    p->v_bs = a->v.stride[0], p->v_rs = a->v.stride[1], p->v_hs = a->v.stride[2];
    p->o_bs = a->o.stride[0], p->o_rs = a->o.stride[1], p->o_hs = a->o.stride[2];
    if (backward) {
        p->do_ = a->do_.data, p->dq = a->dq.data, p->dk = a->dk.data, p->dv = a->dv.data;
        p->do_bs = a->do_.stride[0], p->do_rs = a->do_.stride[1], p->do_hs = a->do_.stride[2];
        p->dq_bs = a->dq.stride[0], p->dq_rs = a->dq.stride[1], p->dq_hs = a->dq.stride[2];
        p->dk_bs = a->dk.stride[0], p->dk_rs = a->dk.stride[1], p->dk_hs = a->dk.stride[2];
        p->dv_bs = a->dv.stride[0], p->dv_rs = a->dv.stride[1], p->dv_hs = a->dv.stride[2];
    }
    if (a->lse.data) p->lse_bs = a->lse.stride[0], p->lse_hs = a->lse.stride[1], p->lse_rs = a->lse.stride[2];
    p->scale         = a->softmax_scale != 0.0f ? a->softmax_scale : (float)(1.0 / sqrt((double)p->head_dim));
    p->softcap       = a->softcap;
    p->window_left   = -1;
    p->window_right  = a->causal ? 0 : -1;
    p->causal        = a->causal;
    p->deterministic = a->deterministic;
}

// Every check, device-independent ones first (so they are testable on any machine), then the backend.
static fk_status resolve_ring(const char *op, const struct fk_context *ctx, const fk_ring_attn_args *a,
                              int backward, fk_ring_problem *rp) {
    FK_TRY(fk_check_context(op, ctx));
    if (!a) return fk_error(FK_STATUS_BAD_PARAM_NULL_POINTER, "%s: args is NULL", op);
    const fk_attn_args *at = &a->attn;
    // The local slice must be a valid attention call of the same pass; its message is kept, prefixed.
    size_t    ignored = 0;
    fk_status st      = backward ? fk_attn_bwd_workspace_size((fk_context_t)ctx, at, &ignored)
                                 : fk_attn_fwd_workspace_size((fk_context_t)ctx, at, &ignored);
    if (st != FK_STATUS_SUCCESS) {
        char msg[400];
        snprintf(msg, sizeof msg, "%s", fk_last_error_message());
        return fk_error(st, "%s: the local slice (args->attn) is not a valid attention call: %s", op, msg);
    }
    if (at->cu_seqlens_q.data)
        return fk_error(FK_STATUS_NOT_SUPPORTED_FEATURE, "%s: variable-length batches (cu_seqlens_q) are not "
                        "supported across the ring", op);
    if (at->window_left != -1 || at->window_right != -1)
        return fk_error(FK_STATUS_NOT_SUPPORTED_FEATURE, "%s: sliding windows (window_left %lld, window_right %lld) "
                        "are not supported across the ring; use causal", op, (long long)at->window_left,
                        (long long)at->window_right);
    if (at->alibi_slopes.data)
        return fk_error(FK_STATUS_NOT_SUPPORTED_FEATURE, "%s: ALiBi (alibi_slopes) is not supported across the ring",
                        op);
    if (at->q.dtype == FK_DTYPE_F64)
        return fk_error(FK_STATUS_NOT_SUPPORTED_DTYPE, "%s: q.dtype f64 is not supported (f32, f16, bf16 are)", op);
    if (at->q.shape[1] != at->k.shape[1])
        return fk_error(FK_STATUS_BAD_PARAM_SHAPE, "%s: the local seqlen of q (%lld, q.shape[1]) must equal that of "
                        "k (%lld, k.shape[1]): every rank holds the same tokens of q and of k/v", op,
                        (long long)at->q.shape[1], (long long)at->k.shape[1]);
    if (a->layout != FK_RING_LAYOUT_CONTIGUOUS && a->layout != FK_RING_LAYOUT_ZIGZAG)
        return fk_error(FK_STATUS_BAD_PARAM_VALUE, "%s: layout must be FK_RING_LAYOUT_CONTIGUOUS (0) or "
                        "FK_RING_LAYOUT_ZIGZAG (1), got %d", op, (int)a->layout);
    if (a->layout == FK_RING_LAYOUT_ZIGZAG && at->q.shape[1] % 2 != 0)
        return fk_error(FK_STATUS_BAD_PARAM_SHAPE, "%s: the zigzag layout needs an even local seqlen (two chunks "
                        "per rank), got q.shape[1] = %lld", op, (long long)at->q.shape[1]);
    if (!a->nccl_comm) return fk_error(FK_STATUS_BAD_PARAM_NULL_POINTER, "%s: nccl_comm is NULL", op);
#if !defined(FK_WITH_CUDA) || !defined(FK_HAVE_NCCL_H)
    return fk_error(FK_STATUS_NOT_SUPPORTED_BACKEND, "%s: flashkit was built without %s, which ring attention "
                    "needs", op,
#if defined(FK_WITH_CUDA)
                    "nccl.h (CMake did not find it)"
#else
                    "CUDA"
#endif
    );
#endif
    if (ctx->device.kind == FK_DEVICE_CPU)
        return fk_error(FK_STATUS_NOT_SUPPORTED_FEATURE, "%s: ring attention runs on CUDA contexts only (the "
                        "CPU backend has no communicator)", op);
    memset(rp, 0, sizeof *rp);
    local_problem(at, backward, &rp->local);
    rp->comm        = a->nccl_comm;
    rp->layout      = a->layout;
    rp->comm_stream = a->comm_stream;
    return FK_STATUS_SUCCESS;
}

static fk_status ring_workspace(const char *op, const struct fk_context *ctx, const fk_ring_attn_args *a,
                                int backward, fk_ring_problem *rp, size_t *bytes) {
    FK_TRY(resolve_ring(op, ctx, a, backward, rp));
#if defined(FK_WITH_CUDA) && defined(FK_HAVE_NCCL_H)
    fk_ring_workspace w;
    FK_TRY(fk_cuda_ring_attn_workspace(ctx, rp, backward, &w));
    *bytes = w.total;
    return FK_STATUS_SUCCESS;
#else
    (void)bytes;
    return fk_error(FK_STATUS_INTERNAL, "%s: unreachable without a ring backend", op);
#endif
}

static fk_status ring_size(const char *op, fk_context_t ctx, const fk_ring_attn_args *args, int backward,
                           size_t *bytes) {
    if (!bytes) return fk_error(FK_STATUS_BAD_PARAM_NULL_POINTER, "%s: bytes (the output) is NULL", op);
    *bytes = 0;
    fk_ring_problem rp;
    return ring_workspace(op, ctx, args, backward, &rp, bytes);
}

static fk_status ring_run(const char *op, fk_context_t ctx, const fk_ring_attn_args *args, int backward,
                          void *workspace, size_t workspace_bytes, void *stream) {
    fk_ring_problem rp;
    size_t          need = 0;
    FK_TRY(ring_workspace(op, ctx, args, backward, &rp, &need));
    FK_TRY(fk_check_workspace(op, workspace, workspace_bytes, need,
                              backward ? "fk_ring_attn_bwd_workspace_size" : "fk_ring_attn_fwd_workspace_size"));
#if defined(FK_WITH_CUDA) && defined(FK_HAVE_NCCL_H)
    return backward ? fk_cuda_ring_attn_bwd(ctx, &rp, workspace, workspace_bytes, stream)
                    : fk_cuda_ring_attn_fwd(ctx, &rp, workspace, workspace_bytes, stream);
#else
    (void)stream;
    return fk_error(FK_STATUS_INTERNAL, "%s: unreachable without a ring backend", op);
#endif
}

fk_status fk_ring_attn_fwd_workspace_size(fk_context_t ctx, const fk_ring_attn_args *args, size_t *bytes) {
    fk_clear_error();
    return ring_size("ring_attn_fwd_workspace_size", ctx, args, 0, bytes);
}

fk_status fk_ring_attn_fwd(fk_context_t ctx, const fk_ring_attn_args *args, void *workspace, size_t workspace_bytes,
                           void *stream) {
    fk_clear_error();
    return ring_run("ring_attn_fwd", ctx, args, 0, workspace, workspace_bytes, stream);
}

fk_status fk_ring_attn_bwd_workspace_size(fk_context_t ctx, const fk_ring_attn_args *args, size_t *bytes) {
    fk_clear_error();
    return ring_size("ring_attn_bwd_workspace_size", ctx, args, 1, bytes);
}

fk_status fk_ring_attn_bwd(fk_context_t ctx, const fk_ring_attn_args *args, void *workspace, size_t workspace_bytes,
                           void *stream) {
    fk_clear_error();
    return ring_run("ring_attn_bwd", ctx, args, 1, workspace, workspace_bytes, stream);
}
