/*
 * rope.c — public RoPE entry points: defaults, every argument check, the resolved problem, and dispatch by
 * ctx->device.kind. Semantics: include/flashkit.h and src/core/ops_internal.h.
 */
#include "ops_internal.h"

#include <math.h>
#include <string.h>

void fk_rope_args_init(fk_rope_args *args) {
    if (!args) return;
    fk_tensor none = fk_tensor_none();
    args->q = args->k = args->q_out = args->k_out = none;
    args->positions = args->cos = args->sin = none;
    args->rotary_dim  = 0;
    args->interleaved = 0;
    args->pos_offset  = 0;
    args->base        = 10000.0f;
}

// t has the extents of `like` in every dimension, and its dtype.
static fk_status check_like(const char *op, const char *name, const fk_tensor *t, const char *like_name,
                            const fk_tensor *like, const struct fk_context *ctx) {
    FK_TRY(fk_check_tensor(op, name, t, ctx, 4));
    for (int d = 0; d < 4; d++) FK_TRY(fk_check_extent(op, name, t, d, like->shape[d]));
    return fk_check_same_dtype(op, like_name, like, name, t);
}

static fk_status check_table(const char *op, const char *name, const fk_tensor *t, const fk_tensor *q,
                             int64_t half, const struct fk_context *ctx) {
    FK_TRY(fk_check_tensor(op, name, t, ctx, 2));
    FK_TRY(fk_check_extent(op, name, t, 1, half));
    if (t->dtype != FK_DTYPE_F32 && t->dtype != q->dtype)
        return fk_error(FK_STATUS_BAD_PARAM_DTYPE_MISMATCH, "%s: %s.dtype must be f32 or q's dtype (%s), got %s", op,
                        name, fk_dtype_name(q->dtype), fk_dtype_name(t->dtype));
    return FK_STATUS_SUCCESS;
}

static fk_status resolve(const char *op, const struct fk_context *ctx, const fk_rope_args *a, fk_rope_problem *p) {
    FK_TRY(fk_check_context(op, ctx));
    if (!a) return fk_error(FK_STATUS_BAD_PARAM_NULL_POINTER, "%s: args is NULL", op);
    const fk_tensor *q = &a->q;
    FK_TRY(fk_check_tensor(op, "q", q, ctx, 4));
    FK_TRY(fk_check_float_dtype(op, "q", q));
    FK_TRY(check_like(op, "q_out", &a->q_out, "q", q, ctx));
    FK_TRY(fk_check_optional_tensor(op, "k", &a->k, ctx, 4));
    if (a->k.data) {
        FK_TRY(fk_check_extent(op, "k", &a->k, 0, q->shape[0]));
        FK_TRY(fk_check_extent(op, "k", &a->k, 1, q->shape[1]));
        FK_TRY(fk_check_extent(op, "k", &a->k, 3, q->shape[3]));
        FK_TRY(fk_check_same_dtype(op, "q", q, "k", &a->k));
        if (!a->k_out.data)
            return fk_error(FK_STATUS_BAD_PARAM_NULL_POINTER, "%s: k_out.data is NULL but k is given", op);
        FK_TRY(check_like(op, "k_out", &a->k_out, "k", &a->k, ctx));
    } else if (a->k_out.data) {
        return fk_error(FK_STATUS_BAD_PARAM, "%s: k_out is given but k is absent", op);
    }

    const int64_t head_dim = q->shape[3];
    int64_t       rd       = a->rotary_dim == 0 ? head_dim : a->rotary_dim;
    if (a->rotary_dim < 0)
        return fk_error(FK_STATUS_BAD_PARAM_VALUE, "%s: rotary_dim must be >= 0, got %lld", op,
                        (long long)a->rotary_dim);
    if (rd > head_dim)
        return fk_error(FK_STATUS_BAD_PARAM_VALUE, "%s: rotary_dim (%lld) must be <= head_dim (%lld)", op,
                        (long long)rd, (long long)head_dim);
    if (rd % 2 != 0)
        return fk_error(FK_STATUS_BAD_PARAM_VALUE, "%s: rotary_dim must be even, got %lld%s", op, (long long)rd,
                        a->rotary_dim == 0 ? " (rotary_dim 0 means head_dim)" : "");
    if (a->interleaved != 0 && a->interleaved != 1)
        return fk_error(FK_STATUS_BAD_PARAM_VALUE, "%s: interleaved must be 0 or 1, got %d", op, a->interleaved);

    // Positions.
    FK_TRY(fk_check_optional_tensor(op, "positions", &a->positions, ctx, 2));
    if (a->positions.data) {
        if (a->positions.dtype != FK_DTYPE_INT32 && a->positions.dtype != FK_DTYPE_INT64)
            return fk_error(FK_STATUS_NOT_SUPPORTED_DTYPE, "%s: positions.dtype must be i32 or i64, got %s", op,
                            fk_dtype_name(a->positions.dtype));
        FK_TRY(fk_check_extent(op, "positions", &a->positions, 0, q->shape[0]));
        FK_TRY(fk_check_extent(op, "positions", &a->positions, 1, q->shape[1]));
    }

    // cos/sin tables, or base.
    if (a->cos.data || a->sin.data) {
        if (!a->cos.data)
            return fk_error(FK_STATUS_BAD_PARAM_NULL_POINTER, "%s: cos.data is NULL but sin is given", op);
        if (!a->sin.data)
            return fk_error(FK_STATUS_BAD_PARAM_NULL_POINTER, "%s: sin.data is NULL but cos is given", op);
        FK_TRY(check_table(op, "cos", &a->cos, q, rd / 2, ctx));
        FK_TRY(check_table(op, "sin", &a->sin, q, rd / 2, ctx));
        FK_TRY(fk_check_extent(op, "sin", &a->sin, 0, a->cos.shape[0]));
        FK_TRY(fk_check_same_dtype(op, "cos", &a->cos, "sin", &a->sin));
        if (!a->positions.data) {
            int64_t last;
            if (a->pos_offset < 0 || !fk_add_i64(a->pos_offset, q->shape[1], &last) || last > a->cos.shape[0])
                return fk_error(FK_STATUS_BAD_PARAM_VALUE,
                                "%s: pos_offset %lld + seqlen %lld exceeds cos/sin's max_position %lld (or is < 0)",
                                op, (long long)a->pos_offset, (long long)q->shape[1], (long long)a->cos.shape[0]);
        }
    } else {
        if (!(a->base > 0.0f) || !isfinite(a->base))
            return fk_error(FK_STATUS_BAD_PARAM_VALUE, "%s: base must be finite and > 0, got %g", op,
                            (double)a->base);
        int64_t last;
        if (!a->positions.data && !fk_add_i64(a->pos_offset, q->shape[1], &last))
            return fk_error(FK_STATUS_BAD_PARAM_OVERFLOW, "%s: pos_offset %lld + seqlen overflows 64 bits", op,
                            (long long)a->pos_offset);
    }

    memset(p, 0, sizeof *p);
    p->dtype       = q->dtype;
    p->batch       = q->shape[0];
    p->seqlen      = q->shape[1];
    p->nheads_q    = q->shape[2];
    p->head_dim    = head_dim;
    p->rotary_dim  = rd;
    p->interleaved = a->interleaved;
    p->q           = q->data;
    p->q_bs        = q->stride[0];
    p->q_ss        = q->stride[1];
    p->q_hs        = q->stride[2];
    p->q_out       = a->q_out.data;
    p->q_out_bs    = a->q_out.stride[0];
    p->q_out_ss    = a->q_out.stride[1];
    p->q_out_hs    = a->q_out.stride[2];
    if (a->k.data) {
        p->nheads_k = a->k.shape[2];
        p->k        = a->k.data;
        p->k_bs     = a->k.stride[0];
        p->k_ss     = a->k.stride[1];
        p->k_hs     = a->k.stride[2];
        p->k_out    = a->k_out.data;
        p->k_out_bs = a->k_out.stride[0];
        p->k_out_ss = a->k_out.stride[1];
        p->k_out_hs = a->k_out.stride[2];
    }
    p->pos_offset = a->pos_offset;
    if (a->positions.data) {
        p->positions = a->positions.data;
        p->pos_dtype = a->positions.dtype;
        p->pos_bs    = a->positions.stride[0];
        p->pos_ss    = a->positions.stride[1];
    } else {
        p->pos_dtype = FK_DTYPE_INT64;
    }
    if (a->cos.data) {
        p->cos_tab      = a->cos.data;
        p->sin_tab      = a->sin.data;
        p->cs_dtype     = a->cos.dtype;
        p->cos_rs       = a->cos.stride[0];
        p->sin_rs       = a->sin.stride[0];
        p->max_position = a->cos.shape[0];
    } else {
        p->cs_dtype = q->dtype == FK_DTYPE_F64 ? FK_DTYPE_F64 : FK_DTYPE_F32;
    }
    p->base = a->base;
    return FK_STATUS_SUCCESS;
}

static fk_status run(const char *op, fk_context_t ctx, const fk_rope_args *args, void *stream, int backward) {
    fk_clear_error();
    fk_rope_problem p;
    FK_TRY(resolve(op, ctx, args, &p));
    if (ctx->device.kind == FK_DEVICE_CPU) return backward ? fk_cpu_rope_bwd(ctx, &p) : fk_cpu_rope_fwd(ctx, &p);
#ifdef FK_WITH_CUDA
    if (p.dtype == FK_DTYPE_F64 || (p.cos_tab && p.cs_dtype == FK_DTYPE_F64))
        return fk_error(FK_STATUS_NOT_SUPPORTED_DTYPE, "%s: f64 tensors are supported on the CPU backend only", op);
    return backward ? fk_cuda_rope_bwd(ctx, &p, stream) : fk_cuda_rope_fwd(ctx, &p, stream);
#else
    (void)stream;
    return fk_error(FK_STATUS_NOT_SUPPORTED_BACKEND, "%s: a CUDA context, but flashkit was built without CUDA", op);
#endif
}

fk_status fk_rope_fwd(fk_context_t ctx, const fk_rope_args *args, void *stream) {
    return run("rope_fwd", ctx, args, stream, 0);
}

fk_status fk_rope_bwd(fk_context_t ctx, const fk_rope_args *args, void *stream) {
    return run("rope_bwd", ctx, args, stream, 1);
}
