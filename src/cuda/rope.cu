/*
 * rope.cu — CUDA RoPE. Placeholder until the kernels land: every entry point answers "not supported", so
 * dispatch, tests and bindings are wired end to end without a wrong result. The kernels implement
 * fk_rope_problem exactly as documented in src/core/ops_internal.h (including the range check of
 * positions read from a tensor).
 */
#include "../core/ops_internal.h"

extern "C" fk_status fk_cuda_rope_fwd(const struct fk_context *ctx, const fk_rope_problem *p, void *stream) {
    return fk_error(FK_STATUS_NOT_SUPPORTED_FEATURE, "rope_fwd: the CUDA kernel is not built yet");
}

extern "C" fk_status fk_cuda_rope_bwd(const struct fk_context *ctx, const fk_rope_problem *p, void *stream) {
    return fk_error(FK_STATUS_NOT_SUPPORTED_FEATURE, "rope_bwd: the CUDA kernel is not built yet");
}
