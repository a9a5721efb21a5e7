/*
 * attn_internal.h — the resolved attention problem that src/core/attn.c hands to a backend after every
 * argument check has passed, and the backend entry points. Backends trust this struct and check nothing.
 */
#ifndef FK_ATTN_INTERNAL_H
#define FK_ATTN_INTERNAL_H

#include "fk_internal.h"

#ifdef __cplusplus
extern "C" {
#endif

// Strides are in elements. For a fixed-length batch, sequence b starts at b * batch_stride. For variable
// length (cu_seqlens_q != NULL) batch strides are 0 and sequence b starts at token cu_seqlens[b], i.e. at
// cu_seqlens[b] * row_stride; its lengths are cu_seqlens[b+1] - cu_seqlens[b].
typedef struct fk_attn_problem {
    fk_dtype dtype;                         // of q, k, v, o, do_, dq, dk, dv
    int64_t  batch, seqlen_q, seqlen_k;     // varlen: seqlen_* are max_seqlen_*
    int64_t  nheads_q, nheads_kv, head_dim;
    int64_t  total_q, total_k;              // varlen: tokens in the packing; fixed: batch * seqlen

    const void *q, *k, *v;
    void       *o;
    void       *lse;                        // float* (double* when dtype is f64); may be NULL in forward
    const void *do_;
    void       *dq, *dk, *dv;

    // [batch, row, head] strides per operand (inner stride is 1)
    int64_t q_bs, q_rs, q_hs;
    int64_t k_bs, k_rs, k_hs;
    int64_t v_bs, v_rs, v_hs;
    int64_t o_bs, o_rs, o_hs;
    int64_t do_bs, do_rs, do_hs;
    int64_t dq_bs, dq_rs, dq_hs;
    int64_t dk_bs, dk_rs, dk_hs;
    int64_t dv_bs, dv_rs, dv_hs;
    int64_t lse_bs, lse_hs, lse_rs;         // lse [batch, head, row] (varlen: batch stride 0)

    const int32_t *cu_seqlens_q, *cu_seqlens_k; // NULL for a fixed-length batch

    const float *alibi;                     // NULL = none; slope(b, h) = alibi[b * alibi_bs + h]
    int64_t      alibi_bs;                  // 0 when slopes are per head only

    float   scale;                          // resolved (never 0)
    float   softcap;                        // 0 = off
    int64_t window_left, window_right;      // -1 = unbounded; causal is folded in as window_right = 0
    int     causal;                         // kept for kernels that specialize on it
    int     deterministic;
} fk_attn_problem;

// Visible key range [*lo, *hi) of query row i for a sequence of lengths sq, sk (bottom-right aligned).
// Empty when *lo >= *hi. Shared by every backend so masking can never disagree.
static inline void fk_attn_key_range(const fk_attn_problem *p, int64_t i, int64_t sq, int64_t sk, int64_t *lo,
                                     int64_t *hi) {
    int64_t diag = i + sk - sq; // key index aligned with row i
    int64_t l = 0, h = sk;
    if (p->window_left >= 0 && diag - p->window_left > l) l = diag - p->window_left;
    if (p->window_right >= 0 && diag + p->window_right + 1 < h) h = diag + p->window_right + 1;
    *lo = l;
    *hi = h;
}

// The one selection function (src/core/attn.c): is this problem supported on ctx's backend, and how much
// workspace does the kernel that will run need? Size queries, run calls and the memory estimator all call it.
fk_status fk_attn_select(const struct fk_context *ctx, const fk_attn_problem *p, int backward, size_t *ws_bytes);
// The scalar rules every attention entry point shares (scale, softcap, causal, windows), one status each.
fk_status fk_attn_check_scalars(const char *op, float softmax_scale, float softcap, int causal, int64_t window_left,
                                int64_t window_right);
// A [(batch,) seq, heads, dim] operand: a tensor on ctx's device with those extents (batch omitted when varlen;
// an extent < 0 is not checked).
fk_status fk_attn_check_bshd(const char *op, const char *name, const fk_tensor *t, const struct fk_context *ctx,
                             int varlen, int64_t b, int64_t s, int64_t h, int64_t d);
// Optional ALiBi slopes: none, or fp32 [hq] or [batch, hq] on ctx's device; *batch_stride: 0 or the [batch] stride.
fk_status fk_attn_check_alibi(const char *op, const fk_tensor *t, const struct fk_context *ctx, int64_t batch,
                              int64_t hq, int64_t *batch_stride);

// --- CPU backend (src/cpu/attn.c) ------------------------------------------------------------------------
size_t    fk_cpu_attn_fwd_workspace(const struct fk_context *ctx, const fk_attn_problem *p);
fk_status fk_cpu_attn_fwd(const struct fk_context *ctx, const fk_attn_problem *p, void *ws, size_t ws_bytes);
size_t    fk_cpu_attn_bwd_workspace(const struct fk_context *ctx, const fk_attn_problem *p);
fk_status fk_cpu_attn_bwd(const struct fk_context *ctx, const fk_attn_problem *p, void *ws, size_t ws_bytes);

// --- CUDA backend (src/cuda/attn_fwd.cu, attn_bwd.cu) ----------------------------------------------------
// *_select is the one selection function: it answers "supported?" (status) and "how much workspace?" for
// exactly the kernel that the matching run function will launch.
#ifdef FK_WITH_CUDA
fk_status fk_cuda_attn_fwd_select(const struct fk_context *ctx, const fk_attn_problem *p, size_t *ws_bytes);
fk_status fk_cuda_attn_fwd(const struct fk_context *ctx, const fk_attn_problem *p, void *ws, size_t ws_bytes,
                           void *stream);
fk_status fk_cuda_attn_bwd_select(const struct fk_context *ctx, const fk_attn_problem *p, size_t *ws_bytes);
fk_status fk_cuda_attn_bwd(const struct fk_context *ctx, const fk_attn_problem *p, void *ws, size_t ws_bytes,
                           void *stream);
#endif // FK_WITH_CUDA

#ifdef __cplusplus
}
#endif

#endif // FK_ATTN_INTERNAL_H
