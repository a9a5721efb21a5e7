/*
 * rmsnorm.c — public RMSNorm entry points: defaults, every argument check, the resolved problem, and
 * dispatch by ctx->device.kind. Semantics: include/flashkit.h and src/core/ops_internal.h.
 */
#include "ops_internal.h"

#include <math.h>
#include <string.h>

void fk_rmsnorm_args_init(fk_rmsnorm_args *args) {
    if (!args) return;
    fk_tensor none = fk_tensor_none();
    args->x = args->residual = args->residual_out = args->weight = args->y = args->rstd = none;
    args->dy = args->dresidual_out = args->dx = args->dweight = none;
    args->eps           = 1e-6f;
    args->weight_offset = 0.0f;
    args->deterministic = 0;
}

// A [rows, hidden] operand sharing x's dtype.
static fk_status check_rows_tensor(const char *op, const char *name, const fk_tensor *t, const fk_tensor *x,
                                   const struct fk_context *ctx) {
    FK_TRY(fk_check_tensor(op, name, t, ctx, 2));
    FK_TRY(fk_check_extent(op, name, t, 0, x->shape[0]));
    FK_TRY(fk_check_extent(op, name, t, 1, x->shape[1]));
    return fk_check_same_dtype(op, "x", x, name, t);
}

// rstd is [rows] fp32 (f64 when x is f64).
static fk_status check_rstd(const char *op, const fk_tensor *rstd, const fk_tensor *x,
                            const struct fk_context *ctx) {
    FK_TRY(fk_check_tensor(op, "rstd", rstd, ctx, 1));
    FK_TRY(fk_check_extent(op, "rstd", rstd, 0, x->shape[0]));
    fk_dtype want = x->dtype == FK_DTYPE_F64 ? FK_DTYPE_F64 : FK_DTYPE_F32;
    if (rstd->dtype != want)
        return fk_error(FK_STATUS_BAD_PARAM_DTYPE_MISMATCH, "%s: rstd.dtype must be %s (x is %s), got %s", op,
                        fk_dtype_name(want), fk_dtype_name(x->dtype), fk_dtype_name(rstd->dtype));
    return FK_STATUS_SUCCESS;
}

// Checks shared by both passes: context, x, weight, scalars.
static fk_status resolve_common(const char *op, const struct fk_context *ctx, const fk_rmsnorm_args *a,
                                fk_rmsnorm_problem *p) {
    FK_TRY(fk_check_context(op, ctx));
    if (!a) return fk_error(FK_STATUS_BAD_PARAM_NULL_POINTER, "%s: args is NULL", op);
    FK_TRY(fk_check_tensor(op, "x", &a->x, ctx, 2));
    FK_TRY(fk_check_float_dtype(op, "x", &a->x));
    FK_TRY(fk_check_tensor(op, "weight", &a->weight, ctx, 1));
    FK_TRY(fk_check_extent(op, "weight", &a->weight, 0, a->x.shape[1]));
    FK_TRY(fk_check_float_dtype(op, "weight", &a->weight));
    if (!(a->eps >= 0.0f) || !isfinite(a->eps))
        return fk_error(FK_STATUS_BAD_PARAM_VALUE, "%s: eps must be finite and >= 0, got %g", op, (double)a->eps);
    if (a->weight_offset != 0.0f && a->weight_offset != 1.0f)
        return fk_error(FK_STATUS_BAD_PARAM_VALUE, "%s: weight_offset must be 0 or 1, got %g", op,
                        (double)a->weight_offset);
    memset(p, 0, sizeof *p);
    p->rows          = a->x.shape[0];
    p->hidden        = a->x.shape[1];
    p->dtype         = a->x.dtype;
    p->weight_dtype  = a->weight.dtype;
    p->dweight_dtype = a->weight.dtype;
    p->rstd_dtype    = a->x.dtype == FK_DTYPE_F64 ? FK_DTYPE_F64 : FK_DTYPE_F32;
    p->x             = a->x.data;
    p->x_rs          = a->x.stride[0];
    p->weight        = a->weight.data;
    p->eps           = a->eps;
    p->weight_offset = a->weight_offset;
    p->deterministic = a->deterministic != 0;
    return FK_STATUS_SUCCESS;
}

static fk_status resolve_fwd(const char *op, const struct fk_context *ctx, const fk_rmsnorm_args *a,
                             fk_rmsnorm_problem *p) {
    FK_TRY(resolve_common(op, ctx, a, p));
    FK_TRY(check_rows_tensor(op, "y", &a->y, &a->x, ctx));
    FK_TRY(fk_check_optional_tensor(op, "residual", &a->residual, ctx, 2));
    FK_TRY(fk_check_optional_tensor(op, "residual_out", &a->residual_out, ctx, 2));
    if (a->residual.data) {
        FK_TRY(check_rows_tensor(op, "residual", &a->residual, &a->x, ctx));
        if (!a->residual_out.data)
            return fk_error(FK_STATUS_BAD_PARAM_NULL_POINTER,
                            "%s: residual_out.data is NULL but residual is given (the sum must be written)", op);
        FK_TRY(check_rows_tensor(op, "residual_out", &a->residual_out, &a->x, ctx));
    } else if (a->residual_out.data) {
        return fk_error(FK_STATUS_BAD_PARAM, "%s: residual_out is given but residual is absent", op);
    }
    if (a->rstd.data) FK_TRY(check_rstd(op, &a->rstd, &a->x, ctx));
    p->y               = a->y.data;
    p->y_rs            = a->y.stride[0];
    p->residual        = a->residual.data;
    p->residual_rs     = a->residual.data ? a->residual.stride[0] : 0;
    p->residual_out    = a->residual_out.data;
    p->residual_out_rs = a->residual_out.data ? a->residual_out.stride[0] : 0;
    p->rstd            = a->rstd.data;
    return FK_STATUS_SUCCESS;
}

static fk_status resolve_bwd(const char *op, const struct fk_context *ctx, const fk_rmsnorm_args *a,
                             fk_rmsnorm_problem *p) {
    FK_TRY(resolve_common(op, ctx, a, p));
    FK_TRY(check_rows_tensor(op, "dy", &a->dy, &a->x, ctx));
    if (!a->rstd.data)
        return fk_error(FK_STATUS_BAD_PARAM_NULL_POINTER, "%s: rstd.data is NULL (backward needs forward's rstd)",
                        op);
    FK_TRY(check_rstd(op, &a->rstd, &a->x, ctx));
    FK_TRY(fk_check_optional_tensor(op, "dresidual_out", &a->dresidual_out, ctx, 2));
    if (a->dresidual_out.data) FK_TRY(check_rows_tensor(op, "dresidual_out", &a->dresidual_out, &a->x, ctx));
    FK_TRY(check_rows_tensor(op, "dx", &a->dx, &a->x, ctx));
    FK_TRY(fk_check_tensor(op, "dweight", &a->dweight, ctx, 1));
    FK_TRY(fk_check_extent(op, "dweight", &a->dweight, 0, a->x.shape[1]));
    FK_TRY(fk_check_float_dtype(op, "dweight", &a->dweight));
    p->rstd             = a->rstd.data;
    p->dy               = a->dy.data;
    p->dy_rs            = a->dy.stride[0];
    p->dresidual_out    = a->dresidual_out.data;
    p->dresidual_out_rs = a->dresidual_out.data ? a->dresidual_out.stride[0] : 0;
    p->dx               = a->dx.data;
    p->dx_rs            = a->dx.stride[0];
    p->dweight          = a->dweight.data;
    p->dweight_dtype    = a->dweight.dtype;
    return FK_STATUS_SUCCESS;
}

#ifdef FK_WITH_CUDA
// The CUDA backend computes in fp32 only.
static fk_status reject_f64(const char *op, const fk_rmsnorm_problem *p, int backward) {
    if (p->dtype == FK_DTYPE_F64 || p->weight_dtype == FK_DTYPE_F64 || (backward && p->dweight_dtype == FK_DTYPE_F64))
        return fk_error(FK_STATUS_NOT_SUPPORTED_DTYPE, "%s: f64 tensors are supported on the CPU backend only", op);
    return FK_STATUS_SUCCESS;
}
#endif

// The one selection function for the backward: supported on ctx's backend, and how much workspace?
static fk_status select_bwd(const char *op, const struct fk_context *ctx, const fk_rmsnorm_problem *p,
                            size_t *bytes) {
    *bytes = 0;
    if (ctx->device.kind == FK_DEVICE_CPU) {
        *bytes = fk_cpu_rmsnorm_bwd_workspace(ctx, p);
        return FK_STATUS_SUCCESS;
    }
#ifdef FK_WITH_CUDA
    FK_TRY(reject_f64(op, p, 1));
    return fk_cuda_rmsnorm_bwd_select(ctx, p, bytes);
#else
    return fk_error(FK_STATUS_NOT_SUPPORTED_BACKEND, "%s: a CUDA context, but flashkit was built without CUDA", op);
#endif
}

fk_status fk_rmsnorm_fwd(fk_context_t ctx, const fk_rmsnorm_args *args, void *stream) {
    static const char *op = "rmsnorm_fwd";
    fk_clear_error();
    fk_rmsnorm_problem p;
    FK_TRY(resolve_fwd(op, ctx, args, &p));
    if (ctx->device.kind == FK_DEVICE_CPU) return fk_cpu_rmsnorm_fwd(ctx, &p);
#ifdef FK_WITH_CUDA
    FK_TRY(reject_f64(op, &p, 0));
    return fk_cuda_rmsnorm_fwd(ctx, &p, stream);
#else
    return fk_error(FK_STATUS_NOT_SUPPORTED_BACKEND, "%s: a CUDA context, but flashkit was built without CUDA", op);
#endif
}

fk_status fk_rmsnorm_bwd_workspace_size(fk_context_t ctx, const fk_rmsnorm_args *args, size_t *bytes) {
    static const char *op = "rmsnorm_bwd_workspace_size";
    fk_clear_error();
    if (!bytes) return fk_error(FK_STATUS_BAD_PARAM_NULL_POINTER, "%s: bytes (the output) is NULL", op);
    *bytes = 0;
    fk_rmsnorm_problem p;
    FK_TRY(resolve_bwd(op, ctx, args, &p));
    return select_bwd(op, ctx, &p, bytes);
}

fk_status fk_rmsnorm_bwd(fk_context_t ctx, const fk_rmsnorm_args *args, void *workspace, size_t workspace_bytes,
                         void *stream) {
    static const char *op = "rmsnorm_bwd";
    fk_clear_error();
    fk_rmsnorm_problem p;
    FK_TRY(resolve_bwd(op, ctx, args, &p));
    size_t need = 0;
    FK_TRY(select_bwd(op, ctx, &p, &need));
    FK_TRY(fk_check_workspace(op, workspace, workspace_bytes, need, "fk_rmsnorm_bwd_workspace_size"));
    if (ctx->device.kind == FK_DEVICE_CPU) return fk_cpu_rmsnorm_bwd(ctx, &p, workspace, workspace_bytes);
#ifdef FK_WITH_CUDA
    return fk_cuda_rmsnorm_bwd(ctx, &p, workspace, workspace_bytes, stream);
#else
    return fk_error(FK_STATUS_NOT_SUPPORTED_BACKEND, "%s: a CUDA context, but flashkit was built without CUDA", op);
#endif
}
