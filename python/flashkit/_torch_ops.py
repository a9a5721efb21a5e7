"""torch custom ops over the C library (torch.library.custom_op), so that every function is differentiable
(register_autograd over the C backward) and torch.compile sees one opaque op with a fake (meta) kernel
instead of breaking the graph on a ctypes call. Imported only when torch is.

Ops, all in the `flashkit` namespace:
  attn_fwd, attn_bwd            fixed-length and varlen (cu_seqlens given) attention
  rmsnorm_fwd, rmsnorm_bwd      on [rows, hidden]
  rope                          forward rotation, or the inverse (its own gradient)
  swiglu_fwd, swiglu_bwd        on [rows, width]
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from . import _arrays, _impl

_be = _arrays._backend("torch")


def _lse_fake(q, varlen):
    dt = torch.float64 if q.dtype == torch.float64 else torch.float32
    return q.new_empty(_impl.lse_shape(q.shape, varlen), dtype=dt)


# --- attention -----------------------------------------------------------------------------------------

@torch.library.custom_op("flashkit::attn_fwd", mutates_args=())
def attn_fwd(q: Tensor, k: Tensor, v: Tensor, cu_seqlens_q: Optional[Tensor], cu_seqlens_k: Optional[Tensor],
             max_seqlen_q: int, max_seqlen_k: int, alibi_slopes: Optional[Tensor], softmax_scale: float,
             softcap: float, causal: bool, window_left: int, window_right: int,
             deterministic: bool) -> Tuple[Tensor, Tensor]:
    return _impl.attn_fwd(_be, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, alibi_slopes,
                          softmax_scale, softcap, causal, window_left, window_right)


@attn_fwd.register_fake
def _(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, alibi_slopes, softmax_scale, softcap,
      causal, window_left, window_right, deterministic):
    return q.new_empty(q.shape), _lse_fake(q, cu_seqlens_q is not None)


@torch.library.custom_op("flashkit::attn_bwd", mutates_args=())
def attn_bwd(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
             cu_seqlens_q: Optional[Tensor], cu_seqlens_k: Optional[Tensor], max_seqlen_q: int, max_seqlen_k: int,
             alibi_slopes: Optional[Tensor], softmax_scale: float, softcap: float, causal: bool, window_left: int,
             window_right: int, deterministic: bool) -> Tuple[Tensor, Tensor, Tensor]:
    return _impl.attn_bwd(_be, dout, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                          alibi_slopes, softmax_scale, softcap, causal, window_left, window_right, deterministic)


@attn_bwd.register_fake
def _(dout, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, alibi_slopes,
      softmax_scale, softcap, causal, window_left, window_right, deterministic):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _attn_setup(ctx, inputs, output):
    q, k, v, cu_q, cu_k, mq, mk, alibi, scale, softcap, causal, wl, wr, det = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, cu_q, cu_k, alibi)
    ctx.params = (mq, mk, scale, softcap, causal, wl, wr, det)


def _attn_backward(ctx, dout, dlse):
    q, k, v, out, lse, cu_q, cu_k, alibi = ctx.saved_tensors
    mq, mk, scale, softcap, causal, wl, wr, det = ctx.params
    if dout is None:  # only the LSE was used; like flash_attn, no gradient flows through the LSE
        dout = torch.zeros_like(out)
    dq, dk, dv = attn_bwd(dout, q, k, v, out, lse, cu_q, cu_k, mq, mk, alibi, scale, softcap, causal, wl, wr, det)
    return dq, dk, dv, None, None, None, None, None, None, None, None, None, None, None


attn_fwd.register_autograd(_attn_backward, setup_context=_attn_setup)


# --- RMSNorm -------------------------------------------------------------------------------------------

@torch.library.custom_op("flashkit::rmsnorm_fwd", mutates_args=())
def rmsnorm_fwd(x: Tensor, weight: Tensor, residual: Optional[Tensor], eps: float,
                weight_offset: float) -> Tuple[Tensor, Tensor, Tensor]:
    y, h, rstd = _impl.rmsnorm_fwd(_be, x, weight, residual, eps, weight_offset)
    if h is None:  # an op returns tensors only: an empty one stands for "no residual stream"
        h = x.new_empty((0,))
    return y, h, rstd


@rmsnorm_fwd.register_fake
def _(x, weight, residual, eps, weight_offset):
    dt = torch.float64 if x.dtype == torch.float64 else torch.float32
    h = x.new_empty(x.shape) if residual is not None else x.new_empty((0,))
    return x.new_empty(x.shape), h, x.new_empty((x.shape[0],), dtype=dt)


@torch.library.custom_op("flashkit::rmsnorm_bwd", mutates_args=())
def rmsnorm_bwd(dy: Tensor, h: Tensor, weight: Tensor, rstd: Tensor, dresidual_out: Optional[Tensor], eps: float,
                weight_offset: float, deterministic: bool) -> Tuple[Tensor, Tensor]:
    return _impl.rmsnorm_bwd(_be, dy, h, weight, rstd, dresidual_out, eps, weight_offset, deterministic)


@rmsnorm_bwd.register_fake
def _(dy, h, weight, rstd, dresidual_out, eps, weight_offset, deterministic):
    return h.new_empty(h.shape), weight.new_empty(weight.shape)


def _rms_setup(ctx, inputs, output):
    x, weight, residual, eps, wo = inputs
    y, h, rstd = output
    ctx.has_residual = residual is not None
    ctx.save_for_backward(h if ctx.has_residual else x, weight, rstd)
    ctx.params = (eps, wo)


def _rms_backward(ctx, dy, dh, drstd):
    h, weight, rstd = ctx.saved_tensors
    eps, wo = ctx.params
    if dy is None:
        dy = torch.zeros_like(h)
    dres = dh if (ctx.has_residual and dh is not None) else None
    # torch.use_deterministic_algorithms(True) asks for a dweight bit-identical from run to run
    dx, dw = rmsnorm_bwd(dy, h, weight, rstd, dres, eps, wo, torch.are_deterministic_algorithms_enabled())
    return dx, dw, (dx if ctx.has_residual else None), None, None


rmsnorm_fwd.register_autograd(_rms_backward, setup_context=_rms_setup)


# --- RoPE ----------------------------------------------------------------------------------------------

@torch.library.custom_op("flashkit::rope", mutates_args=())
def rope(x: Tensor, cos: Tensor, sin: Tensor, positions: Optional[Tensor], pos_offset: int, interleaved: bool,
         inverse: bool) -> Tensor:
    return _impl.rope(_be, x, cos, sin, positions, pos_offset, interleaved, inverse)


@rope.register_fake
def _(x, cos, sin, positions, pos_offset, interleaved, inverse):
    return x.new_empty(x.shape)


def _rope_setup(ctx, inputs, output):
    x, cos, sin, positions, pos_offset, interleaved, inverse = inputs
    ctx.save_for_backward(cos, sin, positions)
    ctx.params = (pos_offset, interleaved, inverse)


def _rope_backward(ctx, dout):
    cos, sin, positions = ctx.saved_tensors
    pos_offset, interleaved, inverse = ctx.params
    dx = rope(dout, cos, sin, positions, pos_offset, interleaved, not inverse)
    return dx, None, None, None, None, None, None


rope.register_autograd(_rope_backward, setup_context=_rope_setup)


# --- SwiGLU --------------------------------------------------------------------------------------------

@torch.library.custom_op("flashkit::swiglu_fwd", mutates_args=())
def swiglu_fwd(gate: Tensor, up: Tensor) -> Tensor:
    return _impl.swiglu_fwd(_be, gate, up)


@swiglu_fwd.register_fake
def _(gate, up):
    return gate.new_empty(gate.shape)


@torch.library.custom_op("flashkit::swiglu_bwd", mutates_args=())
def swiglu_bwd(dout: Tensor, gate: Tensor, up: Tensor) -> Tuple[Tensor, Tensor]:
    return _impl.swiglu_bwd(_be, dout, gate, up)


@swiglu_bwd.register_fake
def _(dout, gate, up):
    return gate.new_empty(gate.shape), up.new_empty(up.shape)


def _swiglu_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _swiglu_backward(ctx, dout):
    gate, up = ctx.saved_tensors
    return swiglu_bwd(dout, gate, up)


swiglu_fwd.register_autograd(_swiglu_backward, setup_context=_swiglu_setup)
