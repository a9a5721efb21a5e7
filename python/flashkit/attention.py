"""flash_attn-compatible attention: the names, argument names, defaults, shapes and return values of
flash_attn.flash_attn_interface (FlashAttention 2), on torch tensors (CPU or CUDA, differentiable),
NumPy arrays, CuPy and JAX arrays.

Differences from flash_attn, all of them loud:
  - dropout_p > 0 raises NotImplementedError (flashkit has no dropout yet).
  - return_attn_probs=True returns (out, softmax_lse, None): the LSE, and None where flash_attn returns the
    dropout-encoded probabilities (which it only fills when dropout_p > 0).
  - flash_attn_with_kvcache runs on the CPU and on CUDA (the cache stays where it is and is written in place).
    On CUDA, cache_seqlens / cache_batch_idx / block_table are not checked on the host (they stay on the GPU):
    a value that would address rows outside the cache gives zeros for that sequence instead of an error (see
    include/flashkit.h). cache_leftpad is not supported.
  - block_table in flash_attn_varlen_func raises NotImplementedError (paged KV: use flash_attn_with_kvcache).
"""
from . import _arrays, _impl, _lib

__all__ = [
    "flash_attn_func", "flash_attn_qkvpacked_func", "flash_attn_kvpacked_func", "flash_attn_varlen_func",
    "flash_attn_varlen_qkvpacked_func", "flash_attn_varlen_kvpacked_func", "flash_attn_with_kvcache",
    "flash_attn_backward",
]


def _not_supported(msg):
    return NotImplementedError(f"flashkit: {msg}")


def _resolve(dropout_p, softmax_scale, window_size, softcap):
    if dropout_p is not None and float(dropout_p) != 0.0:
        raise _not_supported(f"dropout_p={dropout_p}: attention dropout is not implemented yet; pass 0.0 "
                             "(flash_attn's own advice for evaluation)")
    if softmax_scale is None:
        scale = 0.0  # the library's default: 1 / sqrt(head_dim), as flash_attn's
    else:
        scale = float(softmax_scale)
        if scale == 0.0:
            raise _not_supported("softmax_scale=0.0 (uniform attention) is not supported: the C API reads 0 as "
                                 "'1/sqrt(head_dim)'")
    if window_size is None:
        window_size = (-1, -1)
    if len(window_size) != 2:
        raise ValueError(f"flashkit: window_size must be (left, right), got {window_size!r}")
    softcap = float(softcap) if softcap is not None else 0.0
    return scale, int(window_size[0]), int(window_size[1]), max(softcap, 0.0)  # flash_attn: <= 0 means off


def _attn(q, k, v, cu_q, cu_k, max_q, max_k, alibi, scale, softcap, causal, wl, wr, deterministic):
    tops = _arrays.torch_ops(q)
    if tops is not None:
        return tops.attn_fwd(q, k, v, cu_q, cu_k, int(max_q), int(max_k), alibi, scale, softcap, bool(causal),
                             wl, wr, bool(deterministic))
    be, q, wrap = _arrays.unwrap(q, "q")
    k, v = _arrays.same_kind(be, k, "k"), _arrays.same_kind(be, v, "v")
    cu_q, cu_k = _arrays.same_kind(be, cu_q, "cu_seqlens_q"), _arrays.same_kind(be, cu_k, "cu_seqlens_k")
    alibi = _arrays.same_kind(be, alibi, "alibi_slopes")
    out, lse = _impl.attn_fwd(be, q, k, v, cu_q, cu_k, max_q, max_k, alibi, scale, softcap, causal, wl, wr)
    return wrap(out), wrap(lse)


def _ret(out, lse, return_attn_probs):
    return (out, lse, None) if return_attn_probs else out


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                    alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """q: (batch, seqlen_q, nheads, headdim); k, v: (batch, seqlen_k, nheads_k, headdim), nheads % nheads_k
    == 0 (GQA/MQA). Returns out (batch, seqlen_q, nheads, headdim), or (out, softmax_lse, None) with
    return_attn_probs=True, softmax_lse (batch, nheads, seqlen_q) fp32 (fp64 for fp64 inputs).
    Causal mask and window aligned to the bottom-right corner; alibi_slopes (nheads,) or (batch, nheads)."""
    scale, wl, wr, softcap = _resolve(dropout_p, softmax_scale, window_size, softcap)
    out, lse = _attn(q, k, v, None, None, 0, 0, alibi_slopes, scale, softcap, causal, wl, wr, deterministic)
    return _ret(out, lse, return_attn_probs)


def flash_attn_qkvpacked_func(qkv, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                              softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """qkv: (batch, seqlen, 3, nheads, headdim). q, k and v are read as strided views (no copy)."""
    return flash_attn_func(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], dropout_p, softmax_scale, causal,
                           window_size, softcap, alibi_slopes, deterministic, return_attn_probs)


def flash_attn_kvpacked_func(q, kv, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                             softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """q: (batch, seqlen_q, nheads, headdim); kv: (batch, seqlen_k, 2, nheads_k, headdim)."""
    return flash_attn_func(q, kv[:, :, 0], kv[:, :, 1], dropout_p, softmax_scale, causal, window_size, softcap,
                           alibi_slopes, deterministic, return_attn_probs)


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                           softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                           deterministic=False, return_attn_probs=False, block_table=None):
    """q: (total_q, nheads, headdim); k, v: (total_k, nheads_k, headdim); cu_seqlens_*: (batch + 1,) int32.
    Returns out (total_q, nheads, headdim), or (out, softmax_lse, None), softmax_lse (nheads, total_q)."""
    if block_table is not None:
        raise _not_supported("block_table (paged KV cache) is not implemented in flash_attn_varlen_func yet; "
                             "flash_attn_with_kvcache takes a paged cache")
    scale, wl, wr, softcap = _resolve(dropout_p, softmax_scale, window_size, softcap)
    if cu_seqlens_q is None or cu_seqlens_k is None:
        raise ValueError("flashkit: flash_attn_varlen_func needs cu_seqlens_q and cu_seqlens_k")
    out, lse = _attn(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, alibi_slopes, scale, softcap,
                     causal, wl, wr, deterministic)
    return _ret(out, lse, return_attn_probs)


def flash_attn_varlen_qkvpacked_func(qkv, cu_seqlens, max_seqlen, dropout_p=0.0, softmax_scale=None, causal=False,
                                     window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False,
                                     return_attn_probs=False):
    """qkv: (total, 3, nheads, headdim)."""
    return flash_attn_varlen_func(qkv[:, 0], qkv[:, 1], qkv[:, 2], cu_seqlens, cu_seqlens, max_seqlen, max_seqlen,
                                  dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
                                  deterministic, return_attn_probs)


def flash_attn_varlen_kvpacked_func(q, kv, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                                    softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                                    alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """q: (total_q, nheads, headdim); kv: (total_k, 2, nheads_k, headdim)."""
    return flash_attn_varlen_func(q, kv[:, 0], kv[:, 1], cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                  dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
                                  deterministic, return_attn_probs)


def flash_attn_with_kvcache(q, k_cache, v_cache, k=None, v=None, rotary_cos=None, rotary_sin=None,
                            cache_seqlens=None, cache_batch_idx=None, cache_leftpad=None, block_table=None,
                            softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                            rotary_interleaved=True, alibi_slopes=None, num_splits=0, return_softmax_lse=False):
    """Decode with a KV cache, forward only (no autograd, as in flash_attn).
    q: (batch, seqlen_q, nheads, headdim). k_cache, v_cache: (batch_cache, seqlen_cache, nheads_k, headdim), or
    (num_blocks, page_block_size, nheads_k, headdim) with block_table (batch, max_blocks_per_seq) int32.
    k, v: optional (batch, seqlen_new, nheads_k, headdim), written into the cache IN PLACE at rows
    cache_seqlens[b] .. + seqlen_new, then attended to. cache_seqlens: int or (batch,) int32, keys already in
    the cache (None: the whole cache). cache_batch_idx: (batch,) int32, cache entry of each sequence.
    rotary_cos/rotary_sin (seqlen_ro, rotary_dim / 2), with k and v: the new k is rotated at positions
    cache_seqlens + i, q too when causal or windowed (else every query at cache_seqlens); GPT-J pairs with
    rotary_interleaved=True (the default), GPT-NeoX halves with False.
    Returns out (batch, seqlen_q, nheads, headdim), or (out, softmax_lse (batch, nheads, seqlen_q)) with
    return_softmax_lse=True."""
    if cache_leftpad is not None:
        raise _not_supported("cache_leftpad is not implemented yet")
    if (k is None) != (v is None):
        raise ValueError("flashkit: flash_attn_with_kvcache: pass both k and v (new keys and values) or neither")
    if (rotary_cos is None) != (rotary_sin is None):
        raise ValueError("flashkit: flash_attn_with_kvcache: pass both rotary_cos and rotary_sin or neither")
    if rotary_cos is not None and k is None:
        raise ValueError("flashkit: flash_attn_with_kvcache: rotary_cos/rotary_sin need the new k and v (they "
                         "rotate the keys being appended)")
    scale, wl, wr, softcap = _resolve(0.0, softmax_scale, window_size, softcap)
    be, qb, wrap = _arrays.unwrap(q, "q")
    k_cache, v_cache = _arrays.same_kind(be, k_cache, "k_cache"), _arrays.same_kind(be, v_cache, "v_cache")
    k, v = _arrays.same_kind(be, k, "k"), _arrays.same_kind(be, v, "v")
    B = int(qb.shape[0])
    block_table = _arrays.same_kind(be, block_table, "block_table")
    if cache_seqlens is None:  # the whole cache is in use
        rows = int(k_cache.shape[1]) * (int(block_table.shape[1]) if block_table is not None else 1)
        cache_seqlens = rows - (int(k.shape[1]) if k is not None else 0)
    if isinstance(cache_seqlens, int):
        cache_seqlens = be.asarray([cache_seqlens] * B, _lib.INT32, qb)
    else:
        cache_seqlens = _arrays.same_kind(be, cache_seqlens, "cache_seqlens")
    if rotary_cos is not None:
        from .ops import apply_rotary_emb

        cos, sin = _arrays.same_kind(be, rotary_cos, "rotary_cos"), _arrays.same_kind(be, rotary_sin, "rotary_sin")
        k = apply_rotary_emb(k, cos, sin, interleaved=rotary_interleaved, seqlen_offsets=cache_seqlens)
        if causal or wl >= 0 or wr >= 0:  # query i at cache_seqlens + i
            qb = apply_rotary_emb(be.dense(qb), cos, sin, interleaved=rotary_interleaved,
                                  seqlen_offsets=cache_seqlens)
        else:  # every query at position cache_seqlens: rotate the Sq x H rows as one token of Sq * H heads
            Bq, Sq, Hq, D = (int(x) for x in qb.shape)
            q1 = be.dense(qb).reshape(Bq, 1, Sq * Hq, D)
            qb = apply_rotary_emb(q1, cos, sin, interleaved=rotary_interleaved,
                                  seqlen_offsets=cache_seqlens).reshape(Bq, Sq, Hq, D)
    out, lse = _impl.attn_fwd_kvcache(be, qb, k_cache, v_cache, k, v, cache_seqlens,
                                      _arrays.same_kind(be, cache_batch_idx, "cache_batch_idx"), block_table,
                                      _arrays.same_kind(be, alibi_slopes, "alibi_slopes"), scale, softcap, causal,
                                      wl, wr, num_splits)
    return (wrap(out), wrap(lse)) if return_softmax_lse else wrap(out)


def flash_attn_backward(dout, q, k, v, out, softmax_lse, softmax_scale=None, causal=False, window_size=(-1, -1),
                        softcap=0.0, alibi_slopes=None, deterministic=False, cu_seqlens_q=None, cu_seqlens_k=None,
                        max_seqlen_q=0, max_seqlen_k=0):
    """The attention backward as a plain function, for arrays without autograd (NumPy, CuPy, JAX): returns
    (dq, dk, dv). `out` and `softmax_lse` come from the forward (return_attn_probs=True). With torch tensors,
    prefer out.backward(): the functions above are differentiable."""
    scale, wl, wr, softcap = _resolve(0.0, softmax_scale, window_size, softcap)
    tops = _arrays.torch_ops(q)
    if tops is not None:
        return tops.attn_bwd(dout, q, k, v, out, softmax_lse, cu_seqlens_q, cu_seqlens_k, int(max_seqlen_q),
                             int(max_seqlen_k), alibi_slopes, scale, softcap, bool(causal), wl, wr,
                             bool(deterministic))
    be, q, wrap = _arrays.unwrap(q, "q")
    k, v, out = (_arrays.same_kind(be, x, n) for x, n in ((k, "k"), (v, "v"), (out, "out")))
    dout, lse = _arrays.same_kind(be, dout, "dout"), _arrays.same_kind(be, softmax_lse, "softmax_lse")
    cu_q = _arrays.same_kind(be, cu_seqlens_q, "cu_seqlens_q")
    cu_k = _arrays.same_kind(be, cu_seqlens_k, "cu_seqlens_k")
    alibi = _arrays.same_kind(be, alibi_slopes, "alibi_slopes")
    dq, dk, dv = _impl.attn_bwd(be, dout, q, k, v, out, lse, cu_q, cu_k, max_seqlen_q, max_seqlen_k, alibi, scale,
                                softcap, causal, wl, wr, deterministic)
    return wrap(dq), wrap(dk), wrap(dv)
