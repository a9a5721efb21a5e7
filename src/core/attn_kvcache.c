/*
 * attn_kvcache.c — public entry points of decode with a KV cache (fk_attn_fwd_kvcache): defaults, every
 * argument check (one rule, one status, one sentence naming the argument), the resolved fk_attn_kv_problem,
 * and the selection shared by the size query and the call. Semantics: include/flashkit.h.
 */
#include "attn_kvcache_internal.h"

#include <math.h>
#include <string.h>

void fk_attn_kvcache_args_init(fk_attn_kvcache_args *args) {
    if (!args) return;
    memset(args, 0, sizeof *args);
    fk_tensor none = fk_tensor_none();
    args->q = args->k_cache = args->v_cache = args->k = args->v = args->o = args->lse = none;
    args->cache_seqlens = args->cache_batch_idx = args->block_table = args->alibi_slopes = none;
    args->softmax_scale = 0.0f;
    args->softcap       = 0.0f;
    args->causal        = 0;
    args->window_left   = -1;
    args->window_right  = -1;
    args->num_splits    = 0;
}

// --- checks ----------------------------------------------------------------------------------------------

static fk_status check_index(const char *op, const char *name, const fk_tensor *t, const struct fk_context *ctx,
                             int ndim, int64_t batch) {
    FK_TRY(fk_check_tensor(op, name, t, ctx, ndim));
    if (t->dtype != FK_DTYPE_INT32)
        return fk_error(FK_STATUS_NOT_SUPPORTED_DTYPE, "%s: %s.dtype must be i32, got %s", op, name,
                        fk_dtype_name(t->dtype));
    return fk_check_extent(op, name, t, 0, batch);
}

static fk_status checked_product(const char *op, const char *what, int64_t a, int64_t b, int64_t c, int64_t d) {
    int64_t x;
    if (!fk_mul_i64(a, b, &x) || !fk_mul_i64(x, c, &x) || !fk_mul_i64(x, d, &x))
        return fk_error(FK_STATUS_BAD_PARAM_OVERFLOW, "%s: the size of %s overflows 64 bits", op, what);
    return FK_STATUS_SUCCESS;
}

// Host-side contents of cache_seqlens, cache_batch_idx and block_table (CPU contexts: readable here).
static fk_status check_values(const char *op, const fk_attn_kvcache_args *a, int64_t batch, int64_t snew,
                              int64_t capacity, int64_t entries, int64_t page) {
    const int32_t *cs = (const int32_t *)a->cache_seqlens.data;
    const int64_t  cs_s = a->cache_seqlens.stride[0];
    for (int64_t b = 0; b < batch; b++) {
        int64_t n = cs[b * cs_s];
        if (n < 0)
            return fk_error(FK_STATUS_BAD_PARAM_VALUE, "%s: cache_seqlens[%lld] is %lld; it must be >= 0", op,
                            (long long)b, (long long)n);
        if (n + snew > capacity)
            return fk_error(FK_STATUS_BAD_PARAM_VALUE,
                            "%s: cache_seqlens[%lld] + seqlen_new = %lld + %lld exceeds the cache capacity %lld "
                            "(%s)", op, (long long)b, (long long)n, (long long)snew, (long long)capacity,
                            a->block_table.data ? "max_blocks * page_size" : "k_cache.shape[1]");
        if (a->block_table.data) {
            const int32_t *bt = (const int32_t *)a->block_table.data;
            for (int64_t j = 0; j * page < n + snew; j++) {
                int64_t blk = bt[b * a->block_table.stride[0] + j * a->block_table.stride[1]];
                if (blk < 0 || blk >= entries)
                    return fk_error(FK_STATUS_BAD_PARAM_VALUE,
                                    "%s: block_table[%lld][%lld] is %lld, outside [0, num_blocks = %lld)", op,
                                    (long long)b, (long long)j, (long long)blk, (long long)entries);
            }
        }
        if (a->cache_batch_idx.data) {
            const int32_t *ix = (const int32_t *)a->cache_batch_idx.data;
            const int64_t  s  = a->cache_batch_idx.stride[0];
            int64_t        e  = ix[b * s];
            if (e < 0 || e >= entries)
                return fk_error(FK_STATUS_BAD_PARAM_VALUE,
                                "%s: cache_batch_idx[%lld] is %lld, outside [0, k_cache.shape[0] = %lld)", op,
                                (long long)b, (long long)e, (long long)entries);
            if (snew > 0)
                for (int64_t c = 0; c < b; c++)
                    if (ix[c * s] == e)
                        return fk_error(FK_STATUS_BAD_PARAM_VALUE,
                                        "%s: cache_batch_idx[%lld] and cache_batch_idx[%lld] are both %lld; with new "
                                        "k, v appended each sequence needs its own cache entry", op, (long long)c,
                                        (long long)b, (long long)e);
        }
    }
    return FK_STATUS_SUCCESS;
}

// Every check; fills *p.
static fk_status resolve(const char *op, const struct fk_context *ctx, const fk_attn_kvcache_args *a,
                         fk_attn_kv_problem *p) {
    FK_TRY(fk_check_context(op, ctx));
    if (!a) return fk_error(FK_STATUS_BAD_PARAM_NULL_POINTER, "%s: args is NULL", op);

    // q fixes batch, seqlen_q, nheads_q, head_dim and the dtype; k_cache fixes the cache geometry.
    FK_TRY(fk_check_tensor(op, "q", &a->q, ctx, 4));
    FK_TRY(fk_check_float_dtype(op, "q", &a->q));
    const int64_t B = a->q.shape[0], sq = a->q.shape[1], hq = a->q.shape[2], d = a->q.shape[3];
    FK_TRY(fk_attn_check_bshd(op, "k_cache", &a->k_cache, ctx, 0, -1, -1, -1, d));
    const int64_t entries = a->k_cache.shape[0], rows = a->k_cache.shape[1], hkv = a->k_cache.shape[2];
    FK_TRY(fk_attn_check_bshd(op, "v_cache", &a->v_cache, ctx, 0, entries, rows, hkv, d));
    FK_TRY(fk_attn_check_bshd(op, "o", &a->o, ctx, 0, B, sq, hq, d));
    FK_TRY(fk_check_same_dtype(op, "q", &a->q, "k_cache", &a->k_cache));
    FK_TRY(fk_check_same_dtype(op, "q", &a->q, "v_cache", &a->v_cache));
    FK_TRY(fk_check_same_dtype(op, "q", &a->q, "o", &a->o));

    // New keys and values: both or neither.
    int64_t snew = 0;
    if (a->k.data && !a->v.data)
        return fk_error(FK_STATUS_BAD_PARAM_NULL_POINTER, "%s: k (new keys) is given but v.data is NULL", op);
    if (a->v.data && !a->k.data)
        return fk_error(FK_STATUS_BAD_PARAM_NULL_POINTER, "%s: v (new values) is given but k.data is NULL", op);
    if (a->k.data) {
        FK_TRY(fk_attn_check_bshd(op, "k", &a->k, ctx, 0, B, -1, hkv, d));
        snew = a->k.shape[1];
        FK_TRY(fk_attn_check_bshd(op, "v", &a->v, ctx, 0, B, snew, hkv, d));
        FK_TRY(fk_check_same_dtype(op, "q", &a->q, "k", &a->k));
        FK_TRY(fk_check_same_dtype(op, "q", &a->q, "v", &a->v));
    }
    if (a->lse.data) {
        FK_TRY(fk_check_tensor(op, "lse", &a->lse, ctx, 3));
        FK_TRY(fk_check_extent(op, "lse", &a->lse, 0, B));
        FK_TRY(fk_check_extent(op, "lse", &a->lse, 1, hq));
        FK_TRY(fk_check_extent(op, "lse", &a->lse, 2, sq));
        fk_dtype want = a->q.dtype == FK_DTYPE_F64 ? FK_DTYPE_F64 : FK_DTYPE_F32;
        if (a->lse.dtype != want)
            return fk_error(FK_STATUS_BAD_PARAM_DTYPE_MISMATCH, "%s: lse.dtype must be %s (q is %s), got %s", op,
                            fk_dtype_name(want), fk_dtype_name(a->q.dtype), fk_dtype_name(a->lse.dtype));
    }

    if (hq % hkv != 0)
        return fk_error(FK_STATUS_BAD_PARAM_HEADS, "%s: nheads_q (%lld, q.shape[2]) must be a multiple of nheads_kv "
                        "(%lld, k_cache.shape[2])", op, (long long)hq, (long long)hkv);
    if (d > 256)
        return fk_error(FK_STATUS_NOT_SUPPORTED_HEAD_DIM, "%s: head_dim (q.shape[3]) is %lld; at most 256 is supported",
                        op, (long long)d);

    // Scalars.
    FK_TRY(fk_attn_check_scalars(op, a->softmax_scale, a->softcap, a->causal, a->window_left, a->window_right));
    if (a->num_splits < 0)
        return fk_error(FK_STATUS_BAD_PARAM_VALUE, "%s: num_splits must be >= 0 (0 = backend's choice), got %d", op,
                        a->num_splits);

    // Where the keys live: cache_seqlens, then a block table or a batch index.
    if (!a->cache_seqlens.data)
        return fk_error(FK_STATUS_BAD_PARAM_NULL_POINTER, "%s: cache_seqlens.data is NULL (required, int32 [batch])", op);
    FK_TRY(check_index(op, "cache_seqlens", &a->cache_seqlens, ctx, 1, B));
    int64_t capacity = rows, page = 0, bt_bs = 0;
    if (a->block_table.data) {
        if (a->cache_batch_idx.data)
            return fk_error(FK_STATUS_BAD_PARAM_VALUE,
                            "%s: cache_batch_idx is given with block_table; a paged cache has no batch entries", op);
        FK_TRY(check_index(op, "block_table", &a->block_table, ctx, 2, B));
        page  = rows;
        bt_bs = a->block_table.stride[0];
        if (a->block_table.stride[1] != 1)
            return fk_error(FK_STATUS_BAD_PARAM_STRIDE, "%s: block_table.stride[1] must be 1, got %lld", op,
                            (long long)a->block_table.stride[1]);
        if (!fk_mul_i64(a->block_table.shape[1], page, &capacity))
            return fk_error(FK_STATUS_BAD_PARAM_OVERFLOW,
                            "%s: the paged capacity block_table.shape[1] x page_size (k_cache.shape[1]) overflows 64 bits",
                            op);
    } else if (a->cache_batch_idx.data) {
        FK_TRY(check_index(op, "cache_batch_idx", &a->cache_batch_idx, ctx, 1, B));
    } else if (entries < B) {
        return fk_error(FK_STATUS_BAD_PARAM_SHAPE,
                        "%s: k_cache.shape[0] is %lld, fewer entries than the batch (%lld, q.shape[0]); pass "
                        "cache_batch_idx to pick entries", op, (long long)entries, (long long)B);
    }

    // ALiBi slopes: fp32 [Hq] or [B, Hq].
    int64_t alibi_bs;
    FK_TRY(fk_attn_check_alibi(op, &a->alibi_slopes, ctx, B, hq, &alibi_bs));

    // Size products the kernel forms.
    FK_TRY(checked_product(op, "q (batch x seqlen_q x nheads_q x head_dim)", B, sq, hq, d));
    FK_TRY(checked_product(op, "the keys read (batch x capacity x nheads_kv x head_dim)", B, capacity, hkv, d));
    FK_TRY(checked_product(op, "the row statistics (batch x seqlen_q x nheads_q x 8 bytes)", B, sq, hq, 8));

    if (ctx->device.kind == FK_DEVICE_CPU) FK_TRY(check_values(op, a, B, snew, capacity, entries, page));

    memset(p, 0, sizeof *p);
    fk_attn_problem *t = &p->attn;
    t->dtype     = a->q.dtype;
    t->batch     = B;
    t->seqlen_q  = sq;
    t->seqlen_k  = capacity;
    t->nheads_q  = hq;
    t->nheads_kv = hkv;
    t->head_dim  = d;
    t->total_q   = B * sq;
    t->total_k   = B * capacity;
    t->q         = a->q.data;
    t->k         = a->k_cache.data;
    t->v         = a->v_cache.data;
    t->o         = a->o.data;
    t->lse       = a->lse.data;
    t->q_bs = a->q.stride[0], t->q_rs = a->q.stride[1], t->q_hs = a->q.stride[2];
    t->k_bs = a->k_cache.stride[0], t->k_rs = a->k_cache.stride[1], t->k_hs = a->k_cache.stride[2];
    t->v_bs = a->v_cache.stride[0], t->v_rs = a->v_cache.stride[1], t->v_hs = a->v_cache.stride[2];
    t->o_bs = a->o.stride[0], t->o_rs = a->o.stride[1], t->o_hs = a->o.stride[2];
    if (a->lse.data) t->lse_bs = a->lse.stride[0], t->lse_hs = a->lse.stride[1], t->lse_rs = a->lse.stride[2];
    t->alibi        = (const float *)a->alibi_slopes.data;
    t->alibi_bs     = alibi_bs;
    t->scale        = a->softmax_scale != 0.0f ? a->softmax_scale : (float)(1.0 / sqrt((double)d));
    t->softcap      = a->softcap;
    t->window_left  = a->window_left;
    t->window_right = a->causal ? 0 : a->window_right; // causal is window_right = 0, as in fk_attn_fwd
    t->causal = a->causal;

    fk_attn_kv *kv      = &p->kv;
    kv->cache_seqlens   = (const int32_t *)a->cache_seqlens.data;
    kv->cache_batch_idx = (const int32_t *)a->cache_batch_idx.data;
    kv->block_table     = (const int32_t *)a->block_table.data;
    kv->bt_bs           = bt_bs;
    kv->page_size       = page;
    kv->capacity        = capacity;
    kv->entries         = entries;
    kv->seqlen_new      = snew;
    kv->k_cache         = a->k_cache.data;
    kv->v_cache         = a->v_cache.data;
    kv->k_new           = a->k.data;
    kv->v_new           = a->v.data;
    if (snew) {
        kv->kn_bs = a->k.stride[0], kv->kn_rs = a->k.stride[1], kv->kn_hs = a->k.stride[2];
        kv->vn_bs = a->v.stride[0], kv->vn_rs = a->v.stride[1], kv->vn_hs = a->v.stride[2];
    }
    kv->num_splits = a->num_splits;
    return FK_STATUS_SUCCESS;
}

// The one selection function: supported on ctx's backend, and how much workspace.
static fk_status select_kernel(const char *op, const struct fk_context *ctx, const fk_attn_kv_problem *p,
                               size_t *ws_bytes) {
    *ws_bytes = 0;
    if (ctx->device.kind == FK_DEVICE_CPU) {
        *ws_bytes = fk_cpu_attn_kvcache_workspace(ctx, p);
        return FK_STATUS_SUCCESS;
    }
#ifdef FK_WITH_CUDA
    if (p->attn.dtype == FK_DTYPE_F64)
        return fk_error(FK_STATUS_NOT_SUPPORTED_DTYPE, "%s: f64 tensors are supported on the CPU backend only", op);
    return fk_cuda_attn_kvcache_select(ctx, p, ws_bytes);
#else
    return fk_error(FK_STATUS_NOT_SUPPORTED_BACKEND, "%s: a CUDA context, but flashkit was built without CUDA", op);
#endif
}

fk_status fk_attn_kvcache_workspace_size(fk_context_t ctx, const fk_attn_kvcache_args *args, size_t *bytes) {
    fk_clear_error();
    const char *op = "attn_kvcache_workspace_size";
    if (!bytes) return fk_error(FK_STATUS_BAD_PARAM_NULL_POINTER, "%s: bytes (the output) is NULL", op);
    *bytes = 0;
    fk_attn_kv_problem p;
    FK_TRY(resolve(op, ctx, args, &p));
    return select_kernel(op, ctx, &p, bytes);
}

fk_status fk_attn_fwd_kvcache(fk_context_t ctx, const fk_attn_kvcache_args *args, void *workspace,
                              size_t workspace_bytes, void *stream) {
    fk_clear_error();
    const char *op = "attn_fwd_kvcache";
    fk_attn_kv_problem p;
    FK_TRY(resolve(op, ctx, args, &p));
    size_t need = 0;
    FK_TRY(select_kernel(op, ctx, &p, &need));
    FK_TRY(fk_check_workspace(op, workspace, workspace_bytes, need, "fk_attn_kvcache_workspace_size"));
    if (ctx->device.kind == FK_DEVICE_CPU) return fk_cpu_attn_fwd_kvcache(ctx, &p, workspace, workspace_bytes);
#ifdef FK_WITH_CUDA
    return fk_cuda_attn_fwd_kvcache(ctx, &p, workspace, workspace_bytes, stream);
#else
    (void)stream;
    return fk_error(FK_STATUS_NOT_SUPPORTED_BACKEND, "%s: a CUDA context, but flashkit was built without CUDA", op);
#endif
}
