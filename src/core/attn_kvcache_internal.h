/*
 * attn_kvcache_internal.h — the resolved decode (KV-cache) problem that src/core/attn_kvcache.c hands to a
 * backend after every argument check has passed. Backends trust it and check nothing.
 *
 * The attention part is an ordinary fixed-length fk_attn_problem (q, o, lse, masks, scale) whose k and v are
 * the cache bases with [entry, row, head] strides (entry = batch entry, or block when paged); seqlen_k is the
 * capacity. What differs per sequence b is where its keys live and how many it has:
 *   seqlen_k(b) = cache_seqlens[b] + seqlen_new
 *   row j: paged      block_table[b * bt_bs + j / page_size] * k_bs + (j % page_size) * k_rs
 *          contiguous (cache_batch_idx ? cache_batch_idx[b] : b) * k_bs + j * k_rs
 */
#ifndef FK_ATTN_KVCACHE_INTERNAL_H
#define FK_ATTN_KVCACHE_INTERNAL_H

#include "attn_internal.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fk_attn_kv {
    const int32_t *cache_seqlens;   // [batch]
    const int32_t *cache_batch_idx; // [batch] or NULL
    const int32_t *block_table;     // [batch, max_blocks] or NULL (contiguous)
    int64_t        bt_bs;           // block_table row stride
    int64_t        page_size;       // rows per block; 0 when contiguous
    int64_t        capacity;        // rows a sequence can hold
    int64_t        entries;         // k_cache.shape[0]: batch entries, or blocks when paged
    int64_t        seqlen_new;      // new rows per sequence (0 = none)
    void          *k_cache, *v_cache; // the same memory as attn.k / attn.v, writable
    const void    *k_new, *v_new;   // [batch, seqlen_new, nheads_kv, head_dim] or NULL
    int64_t        kn_bs, kn_rs, kn_hs, vn_bs, vn_rs, vn_hs;
    int            num_splits;      // hint; 0 = backend's choice
} fk_attn_kv;

typedef struct fk_attn_kv_problem {
    fk_attn_problem attn;
    fk_attn_kv      kv;
} fk_attn_kv_problem;

// Element offset of row j of sequence b in a cache with entry/block stride bs and row stride rs (head 0).
static inline int64_t fk_attn_kv_row(const fk_attn_kv *kv, int64_t b, int64_t j, int64_t bs, int64_t rs) {
    if (kv->block_table) {
        int64_t blk = kv->block_table[b * kv->bt_bs + j / kv->page_size];
        return blk * bs + (j % kv->page_size) * rs;
    }
    int64_t e = kv->cache_batch_idx ? kv->cache_batch_idx[b] : b;
    return e * bs + j * rs;
}

// --- CPU backend (src/cpu/attn.c) ------------------------------------------------------------------------
size_t    fk_cpu_attn_kvcache_workspace(const struct fk_context *ctx, const fk_attn_kv_problem *p);
fk_status fk_cpu_attn_fwd_kvcache(const struct fk_context *ctx, const fk_attn_kv_problem *p, void *ws,
                                  size_t ws_bytes);

// --- CUDA backend (src/cuda/attn_kvcache.cu) -------------------------------------------------------------
// The one selection function: "supported?" (status) and "how much workspace?" for exactly what the run launches.
// It reads shapes only (never the device-resident cache_seqlens, block_table or cache_batch_idx).
#ifdef FK_WITH_CUDA
fk_status fk_cuda_attn_kvcache_select(const struct fk_context *ctx, const fk_attn_kv_problem *p, size_t *ws_bytes);
fk_status fk_cuda_attn_fwd_kvcache(const struct fk_context *ctx, const fk_attn_kv_problem *p, void *ws,
                                   size_t ws_bytes, void *stream);
#endif

#ifdef __cplusplus
}
#endif

#endif // FK_ATTN_KVCACHE_INTERNAL_H
