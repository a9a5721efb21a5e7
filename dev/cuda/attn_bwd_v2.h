/*
 * attn_bwd_v2.h — the candidate list of dev/cuda/attn_bwd_v2.cu for dev/cuda/attn_bwd_check.cu (check2, time2).
 * A candidate is a whole backward call (prep, main, convert) on its own workspace layout (the library's layout
 * with the deterministic counters sized for the candidate's BM); it runs fp16/bf16 problems whose head-dim bucket
 * is D and whose shared memory fits the device; everything else (softcap, ALiBi, windows, GQA, varlen, Sq != Sk,
 * deterministic) is supported as in the production kernel.
 */
#ifndef FK_DEV_ATTN_BWD_V2_H
#define FK_DEV_ATTN_BWD_V2_H

#include "../../src/core/attn_internal.h"

#include <cuda_runtime.h>
#include <stddef.h>

struct BwdCand {
    const char *name; // "io2" = production main kernel with the v2 prep/convert; "v2 BMxBNwNWsSPLITbMINB"
    int         D;    // head-dim bucket
    int         BM;   // query rows per step (sizes the deterministic counters)
    int         smem; // main kernel's dynamic shared memory, bytes
    int         prod; // 1: the main kernel is production's (BwdTile<D>), for the main-alone ratio
};

extern const BwdCand kBwdCands[]; // terminated by name == NULL

// 1 if candidate c can run problem p on a device with max_smem_optin bytes of shared memory per block.
int bwd_cand_supports(const BwdCand *c, const fk_attn_problem *p, int max_smem_optin);
size_t bwd_cand_ws_bytes(const BwdCand *c, const fk_attn_problem *p);
// The whole call (main_only: the main kernel alone, the workspace already prepared by a whole call).
cudaError_t bwd_cand_run(const BwdCand *c, const fk_attn_problem *p, void *ws, int sms, int main_only,
                         cudaStream_t st);

#endif // FK_DEV_ATTN_BWD_V2_H
