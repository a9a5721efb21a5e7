/*
 * attn_fwd.cu — CUDA attention forward. Placeholder until the tensor-core kernel lands (issue 4): it
 * answers "not supported" so that dispatch, tests and bindings are wired end to end without a wrong result.
 */
#include "../core/attn_internal.h"

extern "C" fk_status fk_cuda_attn_fwd_select(const struct fk_context *ctx, const fk_attn_problem *p, size_t *ws_bytes) {
    *ws_bytes = 0;
    return fk_error(FK_STATUS_NOT_SUPPORTED_FEATURE, "attn_fwd: the CUDA forward kernel is not built yet");
}

extern "C" fk_status fk_cuda_attn_fwd(const struct fk_context *ctx, const fk_attn_problem *p, void *ws,
                                      size_t ws_bytes, void *stream) {
    size_t need;
    return fk_cuda_attn_fwd_select(ctx, p, &need);
}
