/*
 * attn_merge.c — CPU merge of a partial attention result into an accumulator by LSE (semantics:
 * include/flashkit.h; the per-row weights come from fk_merge_weights in src/core/ring_internal.h, the same
 * formula the CUDA kernel writes out).
 *
 * One (batch, token, head) row per loop iteration, rows spread over threads; each row reads its two LSEs,
 * forms the two weights, and rewrites head_dim elements of the accumulator. A side whose LSE is -inf is never
 * read (its weight is 0 and its elements may be poison).
 */
#include "../core/ring_internal.h"

#include <stdint.h>

fk_status fk_cpu_attn_merge(const struct fk_context *ctx, const fk_merge_problem *p) {
    const int64_t rows = p->batch * p->seqlen * p->nheads, S = p->seqlen, H = p->nheads, D = p->head_dim;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(ctx->num_threads) if (rows * D > 65536)
#else
    (void)ctx;
#endif
    for (int64_t r = 0; r < rows; r++) {
        const int64_t b = r / (S * H), s = (r / H) % S, h = r % H;
        float        *lse = p->lse + b * p->lse_bs + h * p->lse_hs + s * p->lse_rs;
        const float   lp  = p->part_lse[b * p->plse_bs + h * p->plse_hs + s * p->plse_rs];
        float         wa, wp, l;
        fk_merge_weights(*lse, lp, &wa, &wp, &l);
        const int64_t oa = b * p->out_bs + s * p->out_rs + h * p->out_hs;
        const int64_t op = b * p->part_bs + s * p->part_rs + h * p->part_hs;
        const int     use_a = wa > 0.0f, use_p = wp > 0.0f;
        for (int64_t d = 0; d < D; d++) {
            float x = 0.0f;
            if (use_a) x += wa * fk_load_f(p->out, p->out_dtype, oa + d);
            if (use_p) x += wp * fk_load_f(p->part_out, p->part_dtype, op + d);
            fk_store_f(p->out, p->out_dtype, oa + d, x);
        }
        *lse = l;
    }
    return FK_STATUS_SUCCESS;
}
