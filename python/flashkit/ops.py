"""RMSNorm, rotary embedding and SwiGLU, forward and backward, on torch tensors (differentiable), NumPy,
CuPy and JAX arrays.

  rms_norm(x, weight, residual=None, eps=1e-6, prenorm=False, zero_centered_weight=False)
  apply_rotary_emb(x, cos, sin, interleaved=False, inplace=False, seqlen_offsets=0, cu_seqlens=None,
                   max_seqlen=None)                                   (flash_attn.layers.rotary's signature)
  swiglu(gate, up=None)                                               (flash_attn.ops.activations.swiglu)
and, for arrays without autograd, rms_norm_backward, apply_rotary_emb_backward and swiglu_backward.
"""
from . import _arrays, _impl
from ._lib import INT64

__all__ = ["rms_norm", "rms_norm_backward", "apply_rotary_emb", "apply_rotary_emb_backward", "swiglu",
           "swiglu_backward"]


def _rows(x, name):
    if len(x.shape) < 1:
        raise ValueError(f"flashkit: {name} must have at least 1 dim, got a scalar")
    return x.reshape(-1, x.shape[-1])


# --- RMSNorm -------------------------------------------------------------------------------------------

def rms_norm(x, weight, residual=None, eps=1e-6, prenorm=False, zero_centered_weight=False):
    """y = (h / sqrt(mean(h^2) + eps)) * w over the last dim, h = x (+ residual when given); w = weight, or
    1 + weight with zero_centered_weight=True (Gemma). x: (..., hidden); weight: (hidden,).
    Returns y, or (y, h) with prenorm=True (h: the new residual stream, as flash_attn's rms_norm_fn)."""
    wo = 1.0 if zero_centered_weight else 0.0
    shape = tuple(x.shape)
    tops = _arrays.torch_ops(x)
    if tops is not None:
        x2 = _rows(x, "x")
        r2 = _rows(residual, "residual") if residual is not None else None
        y, h, _rstd = tops.rmsnorm_fwd(x2, weight, r2, float(eps), wo)
        y = y.view(shape)
        if not prenorm:
            return y
        return y, (h.view(shape) if residual is not None else x)
    be, x, wrap = _arrays.unwrap(x, "x")
    weight = _arrays.same_kind(be, weight, "weight")
    r2 = _rows(_arrays.same_kind(be, residual, "residual"), "residual") if residual is not None else None
    y, h, _rstd = _impl.rmsnorm_fwd(be, _rows(x, "x"), weight, r2, float(eps), wo)
    y = wrap(y.reshape(shape))
    if not prenorm:
        return y
    return y, (wrap(h.reshape(shape)) if h is not None else wrap(x))


def rms_norm_backward(dy, x, weight, residual=None, eps=1e-6, dresidual_out=None, zero_centered_weight=False,
                      deterministic=False):
    """Gradients of rms_norm: returns (dx, dweight). dx is also the gradient of `residual` when one was given;
    dresidual_out is the gradient arriving at the prenorm output h (added in). Recomputes 1/rms.
    deterministic: dweight bit-identical from run to run on a GPU (torch tensors: also when
    torch.use_deterministic_algorithms(True) is on)."""
    wo = 1.0 if zero_centered_weight else 0.0
    shape = tuple(x.shape)
    tops = _arrays.torch_ops(x)
    if tops is not None:
        impl_fwd = lambda *a: tops.rmsnorm_fwd(*a)  # noqa: E731
        det = deterministic or tops.torch.are_deterministic_algorithms_enabled()
        impl_bwd = lambda *a: tops.rmsnorm_bwd(*a, det)  # noqa: E731
        be, wrap = None, lambda t: t
    else:
        be, x, wrap = _arrays.unwrap(x, "x")
        weight = _arrays.same_kind(be, weight, "weight")
        dy = _arrays.same_kind(be, dy, "dy")
        residual = _arrays.same_kind(be, residual, "residual")
        dresidual_out = _arrays.same_kind(be, dresidual_out, "dresidual_out")
        impl_fwd = lambda *a: _impl.rmsnorm_fwd(be, *a)  # noqa: E731
        impl_bwd = lambda *a: _impl.rmsnorm_bwd(be, *a, deterministic)  # noqa: E731
    x2 = _rows(x, "x")
    r2 = _rows(residual, "residual") if residual is not None else None
    _y, h, rstd = impl_fwd(x2, weight, r2, float(eps), wo)
    h = h if residual is not None else x2
    dr = _rows(dresidual_out, "dresidual_out") if dresidual_out is not None else None
    dx, dw = impl_bwd(_rows(dy, "dy"), h, weight, rstd, dr, float(eps), wo)
    return wrap(dx.reshape(shape)), wrap(dw)


# --- RoPE ----------------------------------------------------------------------------------------------

def _rope_layout(be, x, seqlen_offsets, cu_seqlens):
    """(x as [B, S, H, D], positions [B, S] or None, pos_offset)."""
    if cu_seqlens is None:
        if len(x.shape) != 4:
            raise ValueError(f"flashkit: apply_rotary_emb: x must be (batch, seqlen, nheads, headdim), got "
                             f"{tuple(x.shape)}")
        if isinstance(seqlen_offsets, int):
            return x, None, seqlen_offsets
        offs = be.astype(_arrays.same_kind(be, seqlen_offsets, "seqlen_offsets"), INT64)
        pos = offs.reshape(-1, 1) + be.arange(x.shape[1], x).reshape(1, -1)
        return x, pos, 0
    if len(x.shape) != 3:
        raise ValueError(f"flashkit: apply_rotary_emb: with cu_seqlens, x must be (total_seqlen, nheads, headdim), "
                         f"got {tuple(x.shape)}")
    cu = be.astype(_arrays.same_kind(be, cu_seqlens, "cu_seqlens"), INT64)
    total = x.shape[0]
    t = be.arange(total, x)
    seq = be.searchsorted_right(cu, t) - 1  # token t is in sequence seq: cu[seq] <= t < cu[seq + 1]
    nb = cu.shape[0] - 1
    seq = seq.clip(0, max(nb - 1, 0))
    pos = t - cu[seq]
    if isinstance(seqlen_offsets, int):
        pos = pos + seqlen_offsets
    else:
        offs = be.astype(_arrays.same_kind(be, seqlen_offsets, "seqlen_offsets"), INT64)
        pos = pos + offs[seq]
    return x.reshape(1, total, x.shape[1], x.shape[2]), pos.reshape(1, total), 0


def _rope(x, cos, sin, interleaved, inplace, seqlen_offsets, cu_seqlens, inverse):
    shape = tuple(x.shape)
    tops = _arrays.torch_ops(x)
    if tops is not None:
        be = _arrays._backend("torch")
        x4, pos, off = _rope_layout(be, x, seqlen_offsets, cu_seqlens)
        out = tops.rope(x4, cos, sin, pos, int(off), bool(interleaved), bool(inverse)).view(shape)
        if inplace:
            return x.copy_(out)
        return out
    be, xb, wrap = _arrays.unwrap(x, "x")
    cos, sin = _arrays.same_kind(be, cos, "cos"), _arrays.same_kind(be, sin, "sin")
    x4, pos, off = _rope_layout(be, xb, seqlen_offsets, cu_seqlens)
    if inplace and x4 is xb and be.dense(xb) is xb:  # truly in place: the library allows out == x
        _impl.rope(be, xb, cos, sin, pos, off, interleaved, inverse, out=xb)
        return x
    out = _impl.rope(be, x4, cos, sin, pos, off, interleaved, inverse).reshape(shape)
    if inplace and wrap is _arrays._identity:  # a strided or varlen x: write the result back
        xb[...] = out
        return x
    return wrap(out)


def apply_rotary_emb(x, cos, sin, interleaved=False, inplace=False, seqlen_offsets=0, cu_seqlens=None,
                     max_seqlen=None):
    """x: (batch, seqlen, nheads, headdim), or (total_seqlen, nheads, headdim) with cu_seqlens (batch + 1,).
    cos, sin: (seqlen_rotary, rotary_dim / 2); rotates the first rotary_dim features of each head, GPT-NeoX
    half-split pairs, or GPT-J pairs with interleaved=True. seqlen_offsets: int or (batch,) shift of each
    sequence's positions. Returns the rotated array (x itself with inplace=True)."""
    return _rope(x, cos, sin, interleaved, inplace, seqlen_offsets, cu_seqlens, False)


def apply_rotary_emb_backward(dout, cos, sin, interleaved=False, seqlen_offsets=0, cu_seqlens=None,
                              max_seqlen=None):
    """Gradient of apply_rotary_emb with respect to x: the inverse rotation of dout."""
    return _rope(dout, cos, sin, interleaved, False, seqlen_offsets, cu_seqlens, True)


# --- SwiGLU --------------------------------------------------------------------------------------------

def _split(x, up):
    if up is not None:
        return x, up
    w = x.shape[-1]
    if w % 2:
        raise ValueError(f"flashkit: swiglu(x) splits the last dim in two halves (gate, up); got odd width {w}")
    return x[..., : w // 2], x[..., w // 2:]


def swiglu(gate, up=None):
    """silu(gate) * up, elementwise. With up=None, gate is (..., 2 * width): gate = first half, up = second."""
    tops = _arrays.torch_ops(gate)
    g, u = _split(gate, up)
    shape = tuple(g.shape)
    if tops is not None:
        return tops.swiglu_fwd(_rows(g, "gate"), _rows(u, "up")).view(shape)
    be, g, wrap = _arrays.unwrap(g, "gate")
    u = _arrays.same_kind(be, u, "up")
    return wrap(_impl.swiglu_fwd(be, _rows(g, "gate"), _rows(u, "up")).reshape(shape))


def swiglu_backward(dout, gate, up=None):
    """Gradients of swiglu: (dgate, dup); with up=None, one array d(gate) shaped like the packed input."""
    packed = up is None
    tops = _arrays.torch_ops(gate)
    g, u = _split(gate, up)
    shape = tuple(g.shape)
    if tops is not None:
        dg, du = tops.swiglu_bwd(_rows(dout, "dout"), _rows(g, "gate"), _rows(u, "up"))
        dg, du = dg.view(shape), du.view(shape)
        return tops.torch.cat([dg, du], dim=-1) if packed else (dg, du)
    be, g, wrap = _arrays.unwrap(g, "gate")
    u, dout = _arrays.same_kind(be, u, "up"), _arrays.same_kind(be, dout, "dout")
    dg, du = _impl.swiglu_bwd(be, _rows(dout, "dout"), _rows(g, "gate"), _rows(u, "up"))
    dg, du = dg.reshape(shape), du.reshape(shape)
    if packed:
        mod = be.np if be.name == "numpy" else be.cp
        return wrap(mod.concatenate([dg, du], axis=-1))
    return wrap(dg), wrap(du)
