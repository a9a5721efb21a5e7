/*
 * ring_internal.h — the resolved merge problem and the resolved ring-attention problem that
 * src/core/attn_ring.c hands to a backend after every argument check has passed, and the backend entry points.
 * Semantics: include/flashkit.h ("attention merge and ring attention"); design: docs/DESIGN.md.
 */
#ifndef FK_RING_INTERNAL_H
#define FK_RING_INTERNAL_H

#include "attn_internal.h"

#include <math.h>

#ifdef __cplusplus
extern "C" {
#endif

// One merge: rows are (batch, token, head); a row is head_dim contiguous elements. Strides in elements.
typedef struct fk_merge_problem {
    int64_t  batch, seqlen, nheads, head_dim;
    fk_dtype out_dtype, part_dtype;     // f32 | f16 | bf16
    void    *out;                       // read and written
    float   *lse;                       // read and written
    const void  *part_out;
    const float *part_lse;
    int64_t out_bs, out_rs, out_hs;     // [batch, row, head]
    int64_t part_bs, part_rs, part_hs;
    int64_t lse_bs, lse_hs, lse_rs;     // [batch, head, row]
    int64_t plse_bs, plse_hs, plse_rs;
} fk_merge_problem;

// The merge of one row, shared by the CPU backend and the reference of the docs: weights of the accumulator
// and of the partial, and the merged LSE. A side with lse = -inf gets weight 0 and must not be read.
static inline void fk_merge_weights(float la, float lp, float *wa, float *wp, float *lse) {
    const float ninf = -INFINITY;
    if (la == ninf && lp == ninf) {
        *wa = *wp = 0.0f;
        *lse = ninf;
        return;
    }
    // Around the larger LSE: the larger side has weight 1 / (1 + e), the other e / (1 + e), e = exp(min - max).
    const int   a_big = la >= lp;
    const float big = a_big ? la : lp, small = a_big ? lp : la;
    const float e   = small == ninf ? 0.0f : expf(small - big);
    const float inv = 1.0f / (1.0f + e);
    *wa  = a_big ? inv : e * inv;
    *wp  = a_big ? e * inv : inv;
    *lse = big + log1pf(e);
}

// --- CPU backend (src/cpu/attn_merge.c) ------------------------------------------------------------------
fk_status fk_cpu_attn_merge(const struct fk_context *ctx, const fk_merge_problem *p);

// --- ring attention ----------------------------------------------------------------------------------------
// The local problem (this rank's slice, fixed-length batch, seqlen_q == seqlen_k == S) as fk_attn_problem,
// plus the ring's own fields.
typedef struct fk_ring_problem {
    fk_attn_problem local;   // causal in local.causal (window fields are -1 / 0 as resolve makes them)
    void           *comm;    // ncclComm_t
    fk_ring_layout  layout;
    void           *comm_stream;
} fk_ring_problem;

// Workspace layout, shared by the size query and the run (every piece 256-byte aligned).
typedef struct fk_ring_workspace {
    size_t kv[2];            // K then V, contiguous [B, S, Hkv, D] each, storage dtype (the travelling slice)
    size_t dkv[2];           // backward: dK then dV, fp32 [B, S, Hkv, D] each (travelling accumulators)
    size_t acc_o, acc_lse;   // forward: fp32 [B, S, Hq, D] and [B, Hq, S]
    size_t part_o, part_lse; // forward: storage dtype [B, S, Hq, D], fp32 [B, Hq, S]
    size_t acc_dq;           // backward: fp32 [B, S, Hq, D]
    size_t part_dq, part_dk, part_dv; // backward: storage dtype
    size_t attn;             // backward: the attention backward's own workspace
    size_t attn_bytes;
    size_t total;
} fk_ring_workspace;

#if defined(FK_WITH_CUDA)
fk_status fk_cuda_attn_merge(const struct fk_context *ctx, const fk_merge_problem *p, void *stream);
// Size of the workspace for a resolved ring problem (checks that the attention kernels support every step).
fk_status fk_cuda_ring_attn_workspace(const struct fk_context *ctx, const fk_ring_problem *p, int backward,
                                      fk_ring_workspace *ws);
fk_status fk_cuda_ring_attn_fwd(const struct fk_context *ctx, const fk_ring_problem *p, void *ws, size_t ws_bytes,
                                void *stream);
fk_status fk_cuda_ring_attn_bwd(const struct fk_context *ctx, const fk_ring_problem *p, void *ws, size_t ws_bytes,
                                void *stream);
#endif

#ifdef __cplusplus
}
#endif

#endif // FK_RING_INTERNAL_H
