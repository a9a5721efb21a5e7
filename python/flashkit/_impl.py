"""The calls themselves, written once for every array framework: describe the operands into the C structs,
allocate outputs and the workspace in the caller's framework on the caller's device, call the library on the
caller's stream, raise the library's message on failure. No autograd here (see _torch_ops.py); every
function takes a backend from _arrays.py and arrays that backend reads directly.
"""
import ctypes

from . import _lib
from ._arrays import BYTES
from ._lib import F32, F64, INT32, check, fn

_byref = ctypes.byref


def _fill(t, be, x, what):
    ptr, code, dk, di, shape, strides = be.describe(x, what)
    if len(shape) > _lib.FK_MAX_DIMS or len(shape) == 0:
        raise _lib.FlashkitValueError(_lib.STATUS_BAD_PARAM + 10, "bad parameter: ndim",
                                      f"{what} has {len(shape)} dims; flashkit takes 1 to 4")
    _lib.set_tensor(t, ptr, code, dk, di, shape, strides)
    return code, dk, di


def _bad_ndim(what, want, got):
    return _lib.FlashkitValueError(_lib.STATUS_BAD_PARAM + 10, "bad parameter: ndim",
                                   f"{what} must have {want}, got shape {tuple(got)}")


def _workspace(be, size_fn, ctx, args, like):
    n = ctypes.c_size_t(0)
    check(size_fn(ctx, _byref(args), _byref(n)))
    if n.value == 0:
        return None, None, 0
    buf = be.empty((n.value,), BYTES, like)
    return buf, _raw_ptr(be, buf), n.value


def _raw_ptr(be, buf):
    if be.name == "torch":
        return buf.data_ptr()
    if be.name == "cupy":
        return buf.data.ptr
    return buf.__array_interface__["data"][0]


# --- attention -----------------------------------------------------------------------------------------

def _set_masking(a, be, alibi, scale, softcap, causal, wl, wr, keep):
    """The fields fk_attn_args and fk_attn_kvcache_args share: ALiBi slopes (kept alive in `keep`), scale,
    softcap, causal and the window."""
    if alibi is not None:
        alibi = be.dense(be.astype(alibi, F32))
        keep.append(alibi)
        _fill(a.alibi_slopes, be, alibi, "alibi_slopes")
    a.softmax_scale = scale
    a.softcap = softcap
    a.causal = 1 if causal else 0
    a.window_left = int(wl)
    a.window_right = int(wr)


def _attn_common(a, be, q, k, v, cu_q, cu_k, max_q, max_k, alibi, scale, softcap, causal, wl, wr, det):
    code, dk, di = _fill(a.q, be, q, "q")
    _fill(a.k, be, k, "k")
    _fill(a.v, be, v, "v")
    keep = []
    if cu_q is not None:
        cu_q = be.dense(be.astype(cu_q, INT32))
        cu_k = be.dense(be.astype(cu_k, INT32)) if cu_k is not None else None
        keep += [cu_q, cu_k]
        _fill(a.cu_seqlens_q, be, cu_q, "cu_seqlens_q")
        if cu_k is not None:
            _fill(a.cu_seqlens_k, be, cu_k, "cu_seqlens_k")
        a.max_seqlen_q = int(max_q)
        a.max_seqlen_k = int(max_k)
    _set_masking(a, be, alibi, scale, softcap, causal, wl, wr, keep)
    a.deterministic = 1 if det else 0
    return code, dk, di, keep


def _numel(shape):
    n = 1
    for x in shape:
        n *= int(x)
    return n


def _full(be, shape, code, like, value):
    x = be.empty(shape, code, like)
    if _numel(shape):
        x.fill_(value) if hasattr(x, "fill_") else x.fill(value)
    return x


def _empty_attention(q, k, v, varlen):
    """flash_attn answers empty batches and sequences with empty (or fully masked) results; the C API takes
    extents >= 1, so those calls are answered here. True when q or k has no element and the shapes agree
    otherwise (a disagreement goes on to the library, which names it)."""
    want = 3 if varlen else 4
    if any(len(x.shape) != want for x in (q, k, v)) or tuple(k.shape) != tuple(v.shape):
        return False
    if q.shape[-1] != k.shape[-1] or (not varlen and q.shape[0] != k.shape[0]):
        return False
    if k.shape[-2] and q.shape[-2] % k.shape[-2]:
        return False
    return _numel(q.shape) == 0 or _numel(k.shape) == 0


def lse_shape(q_shape, varlen):
    if varlen:
        return (q_shape[1], q_shape[0])  # [nheads_q, total_q]
    return (q_shape[0], q_shape[2], q_shape[1])  # [batch, nheads_q, seqlen_q]


def attn_fwd(be, q, k, v, cu_q=None, cu_k=None, max_q=0, max_k=0, alibi=None, scale=0.0, softcap=0.0,
             causal=False, wl=-1, wr=-1):
    """(out, lse). q/k/v: [B, S, H, D], or [total, H, D] with cu_seqlens (varlen)."""
    varlen = cu_q is not None
    want = 3 if varlen else 4
    for name, x in (("q", q), ("k", k), ("v", v)):
        if len(x.shape) != want:
            raise _bad_ndim(f"attn: {name}", "3 dims [total, nheads, head_dim] (varlen)" if varlen else
                            "4 dims [batch, seqlen, nheads, head_dim]", x.shape)
    if _empty_attention(q, k, v, varlen):  # rows that see no key: output 0, LSE -inf
        code = be.describe(q, "q")[1]
        return (_full(be, tuple(q.shape), code, q, 0.0),
                _full(be, lse_shape(q.shape, varlen), F64 if code == F64 else F32, q, float("-inf")))
    q, k, v = be.dense(q), be.dense(k), be.dense(v)
    a = _lib.new_args(_lib.fk_attn_args, _lib.ATTN_DEFAULTS)
    code, dk, di, keep = _attn_common(a, be, q, k, v, cu_q, cu_k, max_q, max_k, alibi, scale, softcap, causal,
                                      wl, wr, False)
    out = be.empty(tuple(q.shape), code, q)
    lse = be.empty(lse_shape(q.shape, varlen), F64 if code == F64 else F32, q)
    _fill(a.o, be, out, "out")
    _fill(a.lse, be, lse, "lse")
    ctx = _lib.context(dk, di)
    _buf, ws, nws = _workspace(be, fn.attn_fwd_workspace_size, ctx, a, q)
    check(fn.attn_fwd(ctx, _byref(a), ws, nws, be.stream(q)))
    return out, lse


def attn_bwd(be, dout, q, k, v, out, lse, cu_q=None, cu_k=None, max_q=0, max_k=0, alibi=None, scale=0.0,
             softcap=0.0, causal=False, wl=-1, wr=-1, deterministic=False):
    """(dq, dk, dv), each shaped like q, k, v."""
    if _empty_attention(q, k, v, cu_q is not None):  # nothing attends to anything: every gradient is 0
        code = be.describe(q, "q")[1]
        return tuple(_full(be, tuple(x.shape), code, q, 0.0) for x in (q, k, v))
    q, k, v, out, lse, dout = (be.dense(x) for x in (q, k, v, out, lse, dout))
    a = _lib.new_args(_lib.fk_attn_args, _lib.ATTN_DEFAULTS)
    code, dk_, di, keep = _attn_common(a, be, q, k, v, cu_q, cu_k, max_q, max_k, alibi, scale, softcap, causal,
                                       wl, wr, deterministic)
    _fill(a.o, be, out, "out")
    _fill(a.lse, be, lse, "lse")
    _fill(a.do_, be, dout, "dout")
    dq = be.empty(tuple(q.shape), code, q)
    dk = be.empty(tuple(k.shape), code, q)
    dv = be.empty(tuple(v.shape), code, q)
    _fill(a.dq, be, dq, "dq")
    _fill(a.dk, be, dk, "dk")
    _fill(a.dv, be, dv, "dv")
    ctx = _lib.context(dk_, di)
    _buf, ws, nws = _workspace(be, fn.attn_bwd_workspace_size, ctx, a, q)
    check(fn.attn_bwd(ctx, _byref(a), ws, nws, be.stream(q)))
    return dq, dk, dv


def attn_fwd_kvcache(be, q, k_cache, v_cache, k, v, cache_seqlens, cache_batch_idx=None, block_table=None,
                     alibi=None, scale=0.0, softcap=0.0, causal=False, wl=-1, wr=-1, num_splits=0):
    """(out, lse). q: [B, Sq, Hq, D]; k_cache/v_cache: [B_cache, S_cache, Hkv, D] or paged [blocks, page, Hkv,
    D], read and written in place (never copied: their inner stride must be 1); k, v: [B, Snew, Hkv, D] or
    None; cache_seqlens: [B] int32 array."""
    for name, x in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache)):
        if len(x.shape) != 4:
            raise _bad_ndim(f"attn_fwd_kvcache: {name}", "4 dims", x.shape)
    q = be.dense(q)
    a = _lib.new_args(_lib.fk_attn_kvcache_args, _lib.KVCACHE_DEFAULTS)
    code, dk, di = _fill(a.q, be, q, "q")
    _fill(a.k_cache, be, k_cache, "k_cache")
    _fill(a.v_cache, be, v_cache, "v_cache")
    keep = []
    if k is not None and v is not None:
        k, v = be.dense(k), be.dense(v)
        keep += [k, v]
        _fill(a.k, be, k, "k")
        _fill(a.v, be, v, "v")
    for name, x, field in (("cache_seqlens", cache_seqlens, a.cache_seqlens),
                           ("cache_batch_idx", cache_batch_idx, a.cache_batch_idx),
                           ("block_table", block_table, a.block_table)):
        if x is not None:
            x = be.dense(be.astype(x, INT32))
            keep.append(x)
            _fill(field, be, x, name)
    _set_masking(a, be, alibi, scale, softcap, causal, wl, wr, keep)
    a.num_splits = int(num_splits)
    out = be.empty(tuple(q.shape), code, q)
    lse = be.empty(lse_shape(q.shape, False), F64 if code == F64 else F32, q)
    _fill(a.o, be, out, "out")
    _fill(a.lse, be, lse, "lse")
    ctx = _lib.context(dk, di)
    _buf, ws, nws = _workspace(be, fn.attn_kvcache_workspace_size, ctx, a, q)
    check(fn.attn_fwd_kvcache(ctx, _byref(a), ws, nws, be.stream(q)))
    return out, lse


# --- RMSNorm -------------------------------------------------------------------------------------------

def rmsnorm_fwd(be, x, weight, residual=None, eps=1e-6, weight_offset=0.0):
    """x, residual: [rows, hidden]. Returns (y, h, rstd); h = x + residual (None without residual)."""
    x, weight = be.dense(x), be.dense(weight)
    a = _lib.new_args(_lib.fk_rmsnorm_args, _lib.RMSNORM_DEFAULTS)
    code, dk, di = _fill(a.x, be, x, "x")
    _fill(a.weight, be, weight, "weight")
    h = None
    if residual is not None:
        residual = be.dense(residual)
        _fill(a.residual, be, residual, "residual")
        h = be.empty(tuple(x.shape), code, x)
        _fill(a.residual_out, be, h, "residual_out")
    y = be.empty(tuple(x.shape), code, x)
    rstd = be.empty((x.shape[0],), F64 if code == F64 else F32, x)
    _fill(a.y, be, y, "y")
    _fill(a.rstd, be, rstd, "rstd")
    a.eps = eps
    a.weight_offset = weight_offset
    check(fn.rmsnorm_fwd(_lib.context(dk, di), _byref(a), be.stream(x)))
    return y, h, rstd


def rmsnorm_bwd(be, dy, h, weight, rstd, dresidual_out=None, eps=1e-6, weight_offset=0.0, deterministic=False):
    """h: the normalized input (x, or x + residual when fused). Returns (dx, dweight). deterministic: dweight
    bit-identical from run to run (a GPU otherwise may hand the last rows out at run time)."""
    dy, h, weight, rstd = be.dense(dy), be.dense(h), be.dense(weight), be.dense(rstd)
    a = _lib.new_args(_lib.fk_rmsnorm_args, _lib.RMSNORM_DEFAULTS)
    code, dk, di = _fill(a.x, be, h, "x")
    _fill(a.weight, be, weight, "weight")
    _fill(a.rstd, be, rstd, "rstd")
    _fill(a.dy, be, dy, "dy")
    if dresidual_out is not None:
        dresidual_out = be.dense(dresidual_out)
        _fill(a.dresidual_out, be, dresidual_out, "dresidual_out")
    dx = be.empty(tuple(h.shape), code, h)
    wcode = be.describe(weight, "weight")[1]
    dw = be.empty(tuple(weight.shape), wcode, h)
    _fill(a.dx, be, dx, "dx")
    _fill(a.dweight, be, dw, "dweight")
    a.eps = eps
    a.weight_offset = weight_offset
    a.deterministic = 1 if deterministic else 0
    ctx = _lib.context(dk, di)
    _buf, ws, nws = _workspace(be, fn.rmsnorm_bwd_workspace_size, ctx, a, h)
    check(fn.rmsnorm_bwd(ctx, _byref(a), ws, nws, be.stream(h)))
    return dx, dw


# --- RoPE ----------------------------------------------------------------------------------------------

def rope(be, x, cos, sin, positions=None, pos_offset=0, interleaved=False, inverse=False, out=None):
    """x: [B, S, H, D]; cos/sin: [max_position, rotary_dim / 2]. inverse=True rotates backwards (the
    gradient). out=x works in place."""
    x, cos, sin = be.dense(x), be.dense(cos), be.dense(sin)
    a = _lib.new_args(_lib.fk_rope_args, _lib.ROPE_DEFAULTS)
    code, dk, di = _fill(a.q, be, x, "x")
    _fill(a.cos, be, cos, "cos")
    _fill(a.sin, be, sin, "sin")
    if positions is not None:
        positions = be.dense(positions)
        _fill(a.positions, be, positions, "positions")
    if out is None:
        out = be.empty(tuple(x.shape), code, x)
    _fill(a.q_out, be, out, "out")
    a.rotary_dim = 2 * int(cos.shape[-1])
    a.interleaved = 1 if interleaved else 0
    a.pos_offset = int(pos_offset)
    f = fn.rope_bwd if inverse else fn.rope_fwd
    check(f(_lib.context(dk, di), _byref(a), be.stream(x)))
    return out


# --- SwiGLU --------------------------------------------------------------------------------------------

def swiglu_fwd(be, gate, up):
    """gate, up: [rows, width] (row strides free). Returns out [rows, width]."""
    gate, up = be.dense(gate), be.dense(up)
    a = _lib.new_args(_lib.fk_swiglu_args, _lib.SWIGLU_DEFAULTS)
    code, dk, di = _fill(a.gate, be, gate, "gate")
    _fill(a.up, be, up, "up")
    out = be.empty(tuple(gate.shape), code, gate)
    _fill(a.out, be, out, "out")
    check(fn.swiglu_fwd(_lib.context(dk, di), _byref(a), be.stream(gate)))
    return out


def swiglu_bwd(be, dout, gate, up):
    """Returns (dgate, dup)."""
    dout, gate, up = be.dense(dout), be.dense(gate), be.dense(up)
    a = _lib.new_args(_lib.fk_swiglu_args, _lib.SWIGLU_DEFAULTS)
    code, dk, di = _fill(a.gate, be, gate, "gate")
    _fill(a.up, be, up, "up")
    _fill(a.dout, be, dout, "dout")
    dgate = be.empty(tuple(gate.shape), code, gate)
    dup = be.empty(tuple(up.shape), code, gate)
    _fill(a.dgate, be, dgate, "dgate")
    _fill(a.dup, be, dup, "dup")
    check(fn.swiglu_bwd(_lib.context(dk, di), _byref(a), be.stream(gate)))
    return dgate, dup
