/*
 * attn_bwd.cu — CUDA attention backward. Placeholder until the tensor-core kernel lands (issue 5): it
 * answers "not supported" so that dispatch, tests and bindings are wired end to end without a wrong result.
 */
#include "../core/attn_internal.h"

extern "C" fk_status fk_cuda_attn_bwd_select(const struct fk_context *ctx, const fk_attn_problem *p, size_t *ws_bytes) {
    *ws_bytes = 0;
    return fk_error(FK_STATUS_NOT_SUPPORTED_FEATURE, "attn_bwd: the CUDA backward kernel is not built yet");
}

extern "C" fk_status fk_cuda_attn_bwd(const struct fk_context *ctx, const fk_attn_problem *p, void *ws,
                                      size_t ws_bytes, void *stream) {
    size_t need;
    return fk_cuda_attn_bwd_select(ctx, p, &need);
}
