/*
 * swiglu.c — public SwiGLU entry points: defaults, every argument check, the resolved problem, and dispatch
 * by ctx->device.kind. Semantics: include/flashkit.h and src/core/ops_internal.h.
 */
#include "ops_internal.h"

#include <string.h>

void fk_swiglu_args_init(fk_swiglu_args *args) {
    if (!args) return;
    fk_tensor none = fk_tensor_none();
    args->gate = args->up = args->out = none;
    args->dout = args->dgate = args->dup = none;
}

// A [rows, width] operand with gate's extents and dtype.
static fk_status check_like_gate(const char *op, const char *name, const fk_tensor *t, const fk_tensor *gate,
                                 const struct fk_context *ctx) {
    FK_TRY(fk_check_tensor(op, name, t, ctx, 2));
    FK_TRY(fk_check_extent(op, name, t, 0, gate->shape[0]));
    FK_TRY(fk_check_extent(op, name, t, 1, gate->shape[1]));
    return fk_check_same_dtype(op, "gate", gate, name, t);
}

static fk_status resolve(const char *op, const struct fk_context *ctx, const fk_swiglu_args *a, int backward,
                         fk_swiglu_problem *p) {
    FK_TRY(fk_check_context(op, ctx));
    if (!a) return fk_error(FK_STATUS_BAD_PARAM_NULL_POINTER, "%s: args is NULL", op);
    FK_TRY(fk_check_tensor(op, "gate", &a->gate, ctx, 2));
    FK_TRY(fk_check_float_dtype(op, "gate", &a->gate));
    FK_TRY(check_like_gate(op, "up", &a->up, &a->gate, ctx));
    if (backward) {
        FK_TRY(check_like_gate(op, "dout", &a->dout, &a->gate, ctx));
        FK_TRY(check_like_gate(op, "dgate", &a->dgate, &a->gate, ctx));
        FK_TRY(check_like_gate(op, "dup", &a->dup, &a->gate, ctx));
    } else {
        FK_TRY(check_like_gate(op, "out", &a->out, &a->gate, ctx));
    }
    memset(p, 0, sizeof *p);
    p->dtype   = a->gate.dtype;
    p->rows    = a->gate.shape[0];
    p->width   = a->gate.shape[1];
    p->gate    = a->gate.data;
    p->gate_rs = a->gate.stride[0];
    p->up      = a->up.data;
    p->up_rs   = a->up.stride[0];
    if (backward) {
        p->dout     = a->dout.data;
        p->dout_rs  = a->dout.stride[0];
        p->dgate    = a->dgate.data;
        p->dgate_rs = a->dgate.stride[0];
        p->dup      = a->dup.data;
        p->dup_rs   = a->dup.stride[0];
    } else {
        p->out    = a->out.data;
        p->out_rs = a->out.stride[0];
    }
    return FK_STATUS_SUCCESS;
}

static fk_status run(const char *op, fk_context_t ctx, const fk_swiglu_args *args, void *stream, int backward) {
    fk_clear_error();
    fk_swiglu_problem p;
    FK_TRY(resolve(op, ctx, args, backward, &p));
    if (ctx->device.kind == FK_DEVICE_CPU) return backward ? fk_cpu_swiglu_bwd(ctx, &p) : fk_cpu_swiglu_fwd(ctx, &p);
#ifdef FK_WITH_CUDA
    if (p.dtype == FK_DTYPE_F64)
        return fk_error(FK_STATUS_NOT_SUPPORTED_DTYPE, "%s: f64 tensors are supported on the CPU backend only", op);
    return backward ? fk_cuda_swiglu_bwd(ctx, &p, stream) : fk_cuda_swiglu_fwd(ctx, &p, stream);
#else
    (void)stream;
    return fk_error(FK_STATUS_NOT_SUPPORTED_BACKEND, "%s: a CUDA context, but flashkit was built without CUDA", op);
#endif
}

fk_status fk_swiglu_fwd(fk_context_t ctx, const fk_swiglu_args *args, void *stream) {
    return run("swiglu_fwd", ctx, args, stream, 0);
}

fk_status fk_swiglu_bwd(fk_context_t ctx, const fk_swiglu_args *args, void *stream) {
    return run("swiglu_bwd", ctx, args, stream, 1);
}
