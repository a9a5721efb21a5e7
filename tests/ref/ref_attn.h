/*
 * ref_attn.h — float64 reference attention, forward and backward, naive and readable (tests only).
 *
 * Layout: sequences packed along the token axis, each contiguous (a fixed-length batch is the same memory
 * as [batch, seqlen, heads, dim]):
 *   q, o, dout, dq : [total_q, hq, d]    k, v, dk, dv : [total_k, hkv, d]    lse : [hq, total_q]
 * Masks follow include/flashkit.h, written out independently of the library (causal, then each window side).
 *
 * dt = FK_DTYPE_F64 gives the exact reference. Another float dtype gives the same naive math with the
 * intermediates a low-precision framework keeps rounded to that dtype (FlashAttention's upcast=False
 * reference: scores, capped scores, probabilities, outputs; in backward dP, dS and the gradients), which the
 * driver uses to set fp16/bf16 tolerances.
 */
#ifndef REF_ATTN_H
#define REF_ATTN_H

#include "flashkit.h"

#include <stdint.h>

typedef struct ref_attn_cfg {
    int64_t        batch, hq, hkv, d;
    const int64_t *len_q, *len_k;  // [batch] per-sequence lengths
    double         scale;          // resolved (never 0)
    double         softcap;        // 0 = off
    int            causal;
    int64_t        window_left, window_right; // -1 = unbounded
    const double  *alibi;          // NULL, or slopes [hq] (alibi_bs 0) / [batch, hq] (alibi_bs hq)
    int64_t        alibi_bs;
} ref_attn_cfg;

int64_t ref_attn_total(const int64_t *lens, int64_t batch);

void ref_attn_fwd(fk_dtype dt, const ref_attn_cfg *c, const double *q, const double *k, const double *v, double *o,
                  double *lse);
// Gradients of sum(o * dout); recomputes the probabilities.
void ref_attn_bwd(fk_dtype dt, const ref_attn_cfg *c, const double *q, const double *k, const double *v,
                  const double *dout, double *dq, double *dk, double *dv);

#endif // REF_ATTN_H
