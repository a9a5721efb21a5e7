/*
 * attn.c — public attention entry points: defaults, every argument check (one rule, one status, one
 * sentence naming the argument), the resolved fk_attn_problem, and fk_attn_select, the one selection function
 * that size queries, run calls and the memory estimator share. Semantics: include/flashkit.h.
 */
#include "attn_internal.h"

#include <math.h>
#include <string.h>

fk_status fk_attn_check_scalars(const char *op, float softmax_scale, float softcap, int causal, int64_t window_left,
                                int64_t window_right) {
    if (!(softmax_scale >= 0.0f) || isinf(softmax_scale))
        return fk_error(FK_STATUS_BAD_PARAM_VALUE, "%s: softmax_scale must be finite and >= 0 (0 = 1/sqrt(head_dim)), got %g",
                        op, (double)softmax_scale);
    if (!(softcap >= 0.0f) || isinf(softcap))
        return fk_error(FK_STATUS_BAD_PARAM_VALUE, "%s: softcap must be finite and >= 0 (0 = off), got %g", op,
                        (double)softcap);
    if (causal != 0 && causal != 1)
        return fk_error(FK_STATUS_BAD_PARAM_VALUE, "%s: causal must be 0 or 1, got %d", op, causal);
    if (window_left < -1)
        return fk_error(FK_STATUS_BAD_PARAM_VALUE, "%s: window_left must be >= -1 (-1 = unbounded), got %lld", op,
                        (long long)window_left);
    if (window_right < -1)
        return fk_error(FK_STATUS_BAD_PARAM_VALUE, "%s: window_right must be >= -1 (-1 = unbounded), got %lld", op,
                        (long long)window_right);
    return FK_STATUS_SUCCESS;
}

void fk_attn_args_init(fk_attn_args *args) {
    if (!args) return;
    memset(args, 0, sizeof *args);
    fk_tensor none = fk_tensor_none();
    args->q = args->k = args->v = args->o = args->lse = none;
    args->do_ = args->dq = args->dk = args->dv = none;
    args->cu_seqlens_q = args->cu_seqlens_k = args->alibi_slopes = none;
    args->max_seqlen_q = args->max_seqlen_k = 0;
    args->softmax_scale = 0.0f;
    args->softcap       = 0.0f;
    args->causal        = 0;
    args->window_left   = -1;
    args->window_right  = -1;
    args->deterministic = 0;
}

// --- checks ----------------------------------------------------------------------------------------------

fk_status fk_attn_check_bshd(const char *op, const char *name, const fk_tensor *t, const struct fk_context *ctx,
                             int varlen, int64_t b, int64_t s, int64_t h, int64_t d) {
    FK_TRY(fk_check_tensor(op, name, t, ctx, varlen ? 3 : 4));
    const int64_t want[4] = {b, s, h, d};
    for (int i = varlen ? 1 : 0, dim = 0; i < 4; i++, dim++)
        if (want[i] >= 0) FK_TRY(fk_check_extent(op, name, t, dim, want[i]));
    return FK_STATUS_SUCCESS;
}

fk_status fk_attn_check_alibi(const char *op, const fk_tensor *t, const struct fk_context *ctx, int64_t batch,
                              int64_t hq, int64_t *batch_stride) {
    *batch_stride = 0;
    if (!t->data) return FK_STATUS_SUCCESS;
    const int an = t->ndim == 2 ? 2 : 1;
    FK_TRY(fk_check_tensor(op, "alibi_slopes", t, ctx, an));
    if (t->dtype != FK_DTYPE_F32)
        return fk_error(FK_STATUS_NOT_SUPPORTED_DTYPE, "%s: alibi_slopes.dtype must be f32, got %s", op,
                        fk_dtype_name(t->dtype));
    if (an == 2) {
        FK_TRY(fk_check_extent(op, "alibi_slopes", t, 0, batch));
        *batch_stride = t->stride[0];
    }
    return fk_check_extent(op, "alibi_slopes", t, an - 1, hq);
}

// Strides [batch, row, head] of a checked operand (varlen: batch stride 0).
static void strides_of(const fk_tensor *t, int varlen, int64_t *bs, int64_t *rs, int64_t *hs) {
    if (varlen) {
        *bs = 0;
        *rs = t->stride[0];
        *hs = t->stride[1];
    } else {
        *bs = t->stride[0];
        *rs = t->stride[1];
        *hs = t->stride[2];
    }
}

static fk_status check_lse(const char *op, const fk_tensor *lse, const fk_tensor *q, const struct fk_context *ctx,
                           int varlen, int64_t b, int64_t hq, int64_t sq) {
    FK_TRY(fk_check_tensor(op, "lse", lse, ctx, varlen ? 2 : 3));
    if (varlen) {
        FK_TRY(fk_check_extent(op, "lse", lse, 0, hq));
        FK_TRY(fk_check_extent(op, "lse", lse, 1, sq));
    } else {
        FK_TRY(fk_check_extent(op, "lse", lse, 0, b));
        FK_TRY(fk_check_extent(op, "lse", lse, 1, hq));
        FK_TRY(fk_check_extent(op, "lse", lse, 2, sq));
    }
    fk_dtype want = q->dtype == FK_DTYPE_F64 ? FK_DTYPE_F64 : FK_DTYPE_F32;
    if (lse->dtype != want)
        return fk_error(FK_STATUS_BAD_PARAM_DTYPE_MISMATCH, "%s: lse.dtype must be %s (q is %s), got %s", op,
                        fk_dtype_name(want), fk_dtype_name(q->dtype), fk_dtype_name(lse->dtype));
    return FK_STATUS_SUCCESS;
}

static fk_status check_cu_seqlens(const char *op, const char *name, const fk_tensor *t,
                                  const struct fk_context *ctx, int64_t want_len) {
    FK_TRY(fk_check_tensor(op, name, t, ctx, 1));
    if (t->dtype != FK_DTYPE_INT32)
        return fk_error(FK_STATUS_NOT_SUPPORTED_DTYPE, "%s: %s.dtype must be i32, got %s", op, name,
                        fk_dtype_name(t->dtype));
    if (want_len >= 0) return fk_check_extent(op, name, t, 0, want_len);
    if (t->shape[0] < 2)
        return fk_error(FK_STATUS_BAD_PARAM_SHAPE, "%s: %s.shape[0] must be batch + 1 >= 2, got %lld", op, name,
                        (long long)t->shape[0]);
    return FK_STATUS_SUCCESS;
}

// Host-side contents of a cumulative-length array (CPU contexts only: the data is readable here).
static fk_status check_cu_contents(const char *op, const char *name, const fk_tensor *t, int64_t total,
                                   int64_t max_len, const char *max_name) {
    const int32_t *cu = (const int32_t *)t->data;
    if (cu[0] != 0) return fk_error(FK_STATUS_BAD_PARAM_VALUE, "%s: %s[0] must be 0, got %d", op, name, (int)cu[0]);
    for (int64_t b = 0; b + 1 < t->shape[0]; b++) {
        int64_t len = (int64_t)cu[b + 1] - cu[b];
        if (len < 0)
            return fk_error(FK_STATUS_BAD_PARAM_VALUE, "%s: %s must be non-decreasing, but %s[%lld] = %d > %s[%lld] = %d",
                            op, name, name, (long long)b, (int)cu[b], name, (long long)(b + 1), (int)cu[b + 1]);
        if (len > max_len)
            return fk_error(FK_STATUS_BAD_PARAM_VALUE, "%s: sequence %lld has length %lld in %s, more than %s = %lld",
                            op, (long long)b, (long long)len, name, max_name, (long long)max_len);
    }
    int64_t last = cu[t->shape[0] - 1];
    if (last > total)
        return fk_error(FK_STATUS_BAD_PARAM_VALUE, "%s: %s ends at %lld, beyond the %lld tokens of the packed tensor",
                        op, name, (long long)last, (long long)total);
    return FK_STATUS_SUCCESS;
}

// a * b * c * d without overflow, else FK_STATUS_BAD_PARAM_OVERFLOW naming `what`.
static fk_status checked_product(const char *op, const char *what, int64_t a, int64_t b, int64_t c, int64_t d,
                                 int64_t *out) {
    int64_t x;
    if (!fk_mul_i64(a, b, &x) || !fk_mul_i64(x, c, &x) || !fk_mul_i64(x, d, &x))
        return fk_error(FK_STATUS_BAD_PARAM_OVERFLOW, "%s: the size of %s overflows 64 bits", op, what);
    if (out) *out = x;
    return FK_STATUS_SUCCESS;
}

// Every check for one pass; fills *p. backward = 1 adds do_, dq, dk, dv and requires lse.
static fk_status resolve(const char *op, const struct fk_context *ctx, const fk_attn_args *a, int backward,
                         fk_attn_problem *p) {
    FK_TRY(fk_check_context(op, ctx));
    if (!a) return fk_error(FK_STATUS_BAD_PARAM_NULL_POINTER, "%s: args is NULL", op);
    const int varlen = a->cu_seqlens_q.data != NULL;
    if (!varlen && a->cu_seqlens_k.data)
        return fk_error(FK_STATUS_BAD_PARAM_VALUE, "%s: cu_seqlens_k is given but cu_seqlens_q is absent", op);
    if (varlen && !a->cu_seqlens_k.data)
        return fk_error(FK_STATUS_BAD_PARAM_NULL_POINTER,
                        "%s: cu_seqlens_k.data is NULL but cu_seqlens_q is given (both are required for varlen)", op);
    const int nd = varlen ? 3 : 4;

    // q fixes the query-side extents and the dtype; k fixes the key side.
    FK_TRY(fk_check_tensor(op, "q", &a->q, ctx, nd));
    FK_TRY(fk_check_float_dtype(op, "q", &a->q));
    FK_TRY(fk_check_tensor(op, "k", &a->k, ctx, nd));
    const int64_t batch_fixed = varlen ? 1 : a->q.shape[0];
    const int64_t tq = a->q.shape[nd - 3], hq = a->q.shape[nd - 2], d = a->q.shape[nd - 1];
    const int64_t tk = a->k.shape[nd - 3], hkv = a->k.shape[nd - 2];
    FK_TRY(fk_attn_check_bshd(op, "k", &a->k, ctx, varlen, batch_fixed, tk, hkv, d));
    FK_TRY(fk_attn_check_bshd(op, "v", &a->v, ctx, varlen, batch_fixed, tk, hkv, d));
    FK_TRY(fk_attn_check_bshd(op, "o", &a->o, ctx, varlen, batch_fixed, tq, hq, d));
    FK_TRY(fk_check_same_dtype(op, "q", &a->q, "k", &a->k));
    FK_TRY(fk_check_same_dtype(op, "q", &a->q, "v", &a->v));
    FK_TRY(fk_check_same_dtype(op, "q", &a->q, "o", &a->o));
    if (backward) {
        if (!a->lse.data)
            return fk_error(FK_STATUS_BAD_PARAM_NULL_POINTER, "%s: lse.data is NULL (backward needs forward's lse)",
                            op);
        FK_TRY(fk_attn_check_bshd(op, "do_", &a->do_, ctx, varlen, batch_fixed, tq, hq, d));
        FK_TRY(fk_attn_check_bshd(op, "dq", &a->dq, ctx, varlen, batch_fixed, tq, hq, d));
        FK_TRY(fk_attn_check_bshd(op, "dk", &a->dk, ctx, varlen, batch_fixed, tk, hkv, d));
        FK_TRY(fk_attn_check_bshd(op, "dv", &a->dv, ctx, varlen, batch_fixed, tk, hkv, d));
        FK_TRY(fk_check_same_dtype(op, "q", &a->q, "do_", &a->do_));
        FK_TRY(fk_check_same_dtype(op, "q", &a->q, "dq", &a->dq));
        FK_TRY(fk_check_same_dtype(op, "q", &a->q, "dk", &a->dk));
        FK_TRY(fk_check_same_dtype(op, "q", &a->q, "dv", &a->dv));
    }
    if (a->lse.data) FK_TRY(check_lse(op, &a->lse, &a->q, ctx, varlen, batch_fixed, hq, tq));

    if (hq % hkv != 0)
        return fk_error(FK_STATUS_BAD_PARAM_HEADS, "%s: nheads_q (%lld, q.shape[%d]) must be a multiple of nheads_kv "
                        "(%lld, k.shape[%d])", op, (long long)hq, nd - 2, (long long)hkv, nd - 2);
    if (d > 256)
        return fk_error(FK_STATUS_NOT_SUPPORTED_HEAD_DIM, "%s: head_dim (q.shape[%d]) is %lld; at most 256 is supported",
                        op, nd - 1, (long long)d);

    // Scalars.
    FK_TRY(fk_attn_check_scalars(op, a->softmax_scale, a->softcap, a->causal, a->window_left, a->window_right));

    // Variable length: cu_seqlens and max_seqlen.
    int64_t batch = batch_fixed, sq = tq, sk = tk;
    if (varlen) {
        FK_TRY(check_cu_seqlens(op, "cu_seqlens_q", &a->cu_seqlens_q, ctx, -1));
        FK_TRY(check_cu_seqlens(op, "cu_seqlens_k", &a->cu_seqlens_k, ctx, a->cu_seqlens_q.shape[0]));
        batch = a->cu_seqlens_q.shape[0] - 1;
        if (a->max_seqlen_q < 1)
            return fk_error(FK_STATUS_BAD_PARAM_VALUE, "%s: max_seqlen_q must be >= 1 for varlen, got %lld", op,
                            (long long)a->max_seqlen_q);
        if (a->max_seqlen_k < 1)
            return fk_error(FK_STATUS_BAD_PARAM_VALUE, "%s: max_seqlen_k must be >= 1 for varlen, got %lld", op,
                            (long long)a->max_seqlen_k);
        sq = a->max_seqlen_q;
        sk = a->max_seqlen_k;
        if (ctx->device.kind == FK_DEVICE_CPU) {
            FK_TRY(check_cu_contents(op, "cu_seqlens_q", &a->cu_seqlens_q, tq, sq, "max_seqlen_q"));
            FK_TRY(check_cu_contents(op, "cu_seqlens_k", &a->cu_seqlens_k, tk, sk, "max_seqlen_k"));
        }
    }

    // ALiBi slopes: fp32 [Hq] or [B, Hq].
    int64_t alibi_bs;
    FK_TRY(fk_attn_check_alibi(op, &a->alibi_slopes, ctx, batch, hq, &alibi_bs));

    // Size products the kernels form (element counts and the backward's per-row workspace in fp64).
    FK_TRY(checked_product(op, "q (batch x seqlen_q x nheads_q x head_dim)", batch, sq, hq, d, NULL));
    FK_TRY(checked_product(op, "k (batch x seqlen_k x nheads_kv x head_dim)", batch, sk, hkv, d, NULL));
    FK_TRY(checked_product(op, "the row statistics (tokens_q x nheads_q x 8 bytes)", tq, batch_fixed, hq, 8, NULL));

    memset(p, 0, sizeof *p);
    p->dtype     = a->q.dtype;
    p->batch     = batch;
    p->seqlen_q  = sq;
    p->seqlen_k  = sk;
    p->nheads_q  = hq;
    p->nheads_kv = hkv;
    p->head_dim  = d;
    p->total_q   = varlen ? tq : batch * tq;
    p->total_k   = varlen ? tk : batch * tk;
    p->q         = a->q.data;
    p->k         = a->k.data;
    p->v         = a->v.data;
    p->o         = a->o.data;
    p->lse       = a->lse.data;
    strides_of(&a->q, varlen, &p->q_bs, &p->q_rs, &p->q_hs);
    strides_of(&a->k, varlen, &p->k_bs, &p->k_rs, &p->k_hs);
    strides_of(&a->v, varlen, &p->v_bs, &p->v_rs, &p->v_hs);
    strides_of(&a->o, varlen, &p->o_bs, &p->o_rs, &p->o_hs);
    if (a->lse.data) {
        if (varlen) {
            p->lse_bs = 0;
            p->lse_hs = a->lse.stride[0];
            p->lse_rs = a->lse.stride[1];
        } else {
            p->lse_bs = a->lse.stride[0];
            p->lse_hs = a->lse.stride[1];
            p->lse_rs = a->lse.stride[2];
        }
    }
    if (backward) {
        p->do_ = a->do_.data;
        p->dq  = a->dq.data;
        p->dk  = a->dk.data;
        p->dv  = a->dv.data;
        strides_of(&a->do_, varlen, &p->do_bs, &p->do_rs, &p->do_hs);
        strides_of(&a->dq, varlen, &p->dq_bs, &p->dq_rs, &p->dq_hs);
        strides_of(&a->dk, varlen, &p->dk_bs, &p->dk_rs, &p->dk_hs);
        strides_of(&a->dv, varlen, &p->dv_bs, &p->dv_rs, &p->dv_hs);
    }
    if (varlen) {
        p->cu_seqlens_q = (const int32_t *)a->cu_seqlens_q.data;
        p->cu_seqlens_k = (const int32_t *)a->cu_seqlens_k.data;
    }
    p->alibi         = (const float *)a->alibi_slopes.data;
    p->alibi_bs      = alibi_bs;
    p->scale         = a->softmax_scale != 0.0f ? a->softmax_scale : (float)(1.0 / sqrt((double)d));
    p->softcap       = a->softcap;
    p->window_left   = a->window_left;
    p->window_right  = a->window_right;
    if (a->causal) p->window_right = 0; // min(window_right, 0), with -1 meaning unbounded
    p->causal        = a->causal;
    p->deterministic = a->deterministic;
    return FK_STATUS_SUCCESS;
}

// --- selection -------------------------------------------------------------------------------------------

fk_status fk_attn_select(const struct fk_context *ctx, const fk_attn_problem *p, int backward, size_t *ws_bytes) {
    const char *op = backward ? "attn_bwd" : "attn_fwd";
    size_t      dummy;
    if (!ws_bytes) ws_bytes = &dummy;
    *ws_bytes = 0;
    if (!ctx || !p) return fk_error(FK_STATUS_BAD_PARAM_NULL_POINTER, "%s: selection needs a context and a problem", op);
    if (ctx->device.kind == FK_DEVICE_CPU) {
        if (p->head_dim < 1 || p->head_dim > 256)
            return fk_error(FK_STATUS_NOT_SUPPORTED_HEAD_DIM, "%s: head_dim %lld is outside 1..256 on the CPU", op,
                            (long long)p->head_dim);
        *ws_bytes = backward ? fk_cpu_attn_bwd_workspace(ctx, p) : fk_cpu_attn_fwd_workspace(ctx, p);
        return FK_STATUS_SUCCESS;
    }
#ifdef FK_WITH_CUDA
    if (p->dtype == FK_DTYPE_F64)
        return fk_error(FK_STATUS_NOT_SUPPORTED_DTYPE, "%s: f64 tensors are supported on the CPU backend only", op);
    return backward ? fk_cuda_attn_bwd_select(ctx, p, ws_bytes) : fk_cuda_attn_fwd_select(ctx, p, ws_bytes);
#else
    return fk_error(FK_STATUS_NOT_SUPPORTED_BACKEND, "%s: a CUDA context, but flashkit was built without CUDA", op);
#endif
}

// --- entry points ----------------------------------------------------------------------------------------

static fk_status workspace_size(const char *op, fk_context_t ctx, const fk_attn_args *args, int backward,
                                size_t *bytes) {
    if (!bytes) return fk_error(FK_STATUS_BAD_PARAM_NULL_POINTER, "%s: bytes (the output) is NULL", op);
    *bytes = 0;
    fk_attn_problem p;
    FK_TRY(resolve(op, ctx, args, backward, &p));
    return fk_attn_select(ctx, &p, backward, bytes);
}

static fk_status run(const char *op, fk_context_t ctx, const fk_attn_args *args, int backward, void *workspace,
                     size_t workspace_bytes, void *stream) {
    fk_attn_problem p;
    FK_TRY(resolve(op, ctx, args, backward, &p));
    size_t need = 0;
    FK_TRY(fk_attn_select(ctx, &p, backward, &need));
    FK_TRY(fk_check_workspace(op, workspace, workspace_bytes, need,
                              backward ? "fk_attn_bwd_workspace_size" : "fk_attn_fwd_workspace_size"));
    if (ctx->device.kind == FK_DEVICE_CPU)
        return backward ? fk_cpu_attn_bwd(ctx, &p, workspace, workspace_bytes)
                        : fk_cpu_attn_fwd(ctx, &p, workspace, workspace_bytes);
#ifdef FK_WITH_CUDA
    return backward ? fk_cuda_attn_bwd(ctx, &p, workspace, workspace_bytes, stream)
                    : fk_cuda_attn_fwd(ctx, &p, workspace, workspace_bytes, stream);
#else
    (void)stream;
    return fk_error(FK_STATUS_NOT_SUPPORTED_BACKEND, "%s: a CUDA context, but flashkit was built without CUDA", op);
#endif
}

fk_status fk_attn_fwd_workspace_size(fk_context_t ctx, const fk_attn_args *args, size_t *bytes) {
    fk_clear_error();
    return workspace_size("attn_fwd_workspace_size", ctx, args, 0, bytes);
}

fk_status fk_attn_fwd(fk_context_t ctx, const fk_attn_args *args, void *workspace, size_t workspace_bytes,
                      void *stream) {
    fk_clear_error();
    return run("attn_fwd", ctx, args, 0, workspace, workspace_bytes, stream);
}

fk_status fk_attn_bwd_workspace_size(fk_context_t ctx, const fk_attn_args *args, size_t *bytes) {
    fk_clear_error();
    return workspace_size("attn_bwd_workspace_size", ctx, args, 1, bytes);
}

fk_status fk_attn_bwd(fk_context_t ctx, const fk_attn_args *args, void *workspace, size_t workspace_bytes,
                      void *stream) {
    fk_clear_error();
    return run("attn_bwd", ctx, args, 1, workspace, workspace_bytes, stream);
}
