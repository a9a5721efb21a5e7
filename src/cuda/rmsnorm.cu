/*
 * rmsnorm.cu — CUDA RMSNorm. Placeholder until the kernels land: every entry point answers "not supported",
 * so dispatch, tests and bindings are wired end to end without a wrong result. The kernels implement
 * fk_rmsnorm_problem exactly as documented in src/core/ops_internal.h.
 */
#include "../core/ops_internal.h"

extern "C" fk_status fk_cuda_rmsnorm_fwd(const struct fk_context *ctx, const fk_rmsnorm_problem *p, void *stream) {
    return fk_error(FK_STATUS_NOT_SUPPORTED_FEATURE, "rmsnorm_fwd: the CUDA kernel is not built yet");
}

extern "C" fk_status fk_cuda_rmsnorm_bwd_select(const struct fk_context *ctx, const fk_rmsnorm_problem *p,
                                                size_t *ws_bytes) {
    *ws_bytes = 0;
    return fk_error(FK_STATUS_NOT_SUPPORTED_FEATURE, "rmsnorm_bwd: the CUDA kernel is not built yet");
}

extern "C" fk_status fk_cuda_rmsnorm_bwd(const struct fk_context *ctx, const fk_rmsnorm_problem *p, void *ws,
                                         size_t ws_bytes, void *stream) {
    size_t need;
    return fk_cuda_rmsnorm_bwd_select(ctx, p, &need);
}
