/*
 * ref_merge.h — float64 reference of the attention merge by LSE (tests only).
 *
 * Rows are independent: row r has `nparts` partial results (out_k [d], lse_k), partial k of row r at
 * out[(k * rows + r) * d] and lse[k * rows + r]. The merged row is
 *   lse = log(sum_k exp(lse_k)),  out = sum_k exp(lse_k - lse) * out_k
 * over the parts with lse_k > -inf (others are never read); no such part gives out = 0, lse = -inf.
 *
 * dt = FK_DTYPE_F64 gives the exact merge of all parts at once. Another dtype gives what a running
 * accumulator kept in that dtype produces: parts folded in order 0, 1, ..., with the accumulated out rounded
 * to dt after each fold (the LSE stays in double). The test driver uses it to set fp16/bf16 tolerances.
 */
#ifndef REF_MERGE_H
#define REF_MERGE_H

#include "flashkit.h"

#include <stdint.h>

void ref_attn_merge(fk_dtype dt, int64_t rows, int64_t d, int nparts, const double *out_parts,
                    const double *lse_parts, double *out, double *lse);

#endif // REF_MERGE_H
