"""Attention through the flash_attn-compatible functions: forward and backward against the float64
reference over the odd-shape list, on NumPy, torch CPU and (when present) torch CUDA; the packed and varlen
variants; gradcheck in float64; torch.compile."""
import numpy as np
import pytest

import flashkit
from conftest import HAS_CUDA, randn, rng, torch
from reference import attn_ref, attn_varlen_ref, rel_l2

pytestmark = pytest.mark.skipif("fk_attn_fwd" in flashkit._lib.MISSING,
                                reason="this libflashkit build has no attention yet")

# (batch, seqlen_q, seqlen_k, nheads_q, nheads_kv, head_dim): odd extents, Sq != Sk both ways, GQA and MQA,
# a single token, head dims off every tile size.
SHAPES = [
    (1, 1, 1, 1, 1, 8),
    (2, 7, 13, 4, 2, 24),
    (1, 33, 17, 3, 1, 40),
    (2, 65, 65, 2, 2, 64),
    (1, 5, 129, 6, 3, 96),
    (1, 17, 3, 2, 1, 128),
    (1, 19, 23, 2, 2, 200),
]
FEATURES = {
    "plain": {},
    "causal": {"causal": True},
    "window": {"window": (5, 2)},
    "softcap": {"softcap": 4.0},
    "alibi": {"alibi": True},
    "all": {"causal": True, "window": (6, -1), "softcap": 3.0, "alibi": True, "scale": 0.25},
}
TOL = {np.float32: 2e-5, np.float64: 1e-10}


def _inputs(shape, feat, seed, dtype):
    B, Sq, Sk, Hq, Hk, D = shape
    r = rng(seed)
    q, k, v = randn(r, B, Sq, Hq, D, dtype=dtype), randn(r, B, Sk, Hk, D, dtype=dtype), randn(r, B, Sk, Hk, D, dtype=dtype)
    dout = randn(r, B, Sq, Hq, D, dtype=dtype)
    alibi = (r.uniform(0.05, 0.5, size=(B, Hq)).astype(np.float32) if B > 1 else
             r.uniform(0.05, 0.5, size=(Hq,)).astype(np.float32)) if feat.get("alibi") else None
    return q, k, v, dout, alibi


def _kwargs(fw, feat, alibi):
    return dict(causal=feat.get("causal", False), window_size=feat.get("window", (-1, -1)),
                softcap=feat.get("softcap", 0.0), softmax_scale=feat.get("scale"),
                alibi_slopes=None if alibi is None else fw.arr(alibi))


def _ref(q, k, v, dout, alibi, feat):
    return attn_ref(q, k, v, causal=feat.get("causal", False), window=feat.get("window", (-1, -1)),
                    softcap=feat.get("softcap", 0.0), alibi=alibi, scale=feat.get("scale"), dout=dout)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("feat", list(FEATURES), ids=list(FEATURES))
@pytest.mark.parametrize("shape", SHAPES, ids=["x".join(map(str, s)) for s in SHAPES])
def test_fwd_bwd(fw, shape, feat, dtype):
    if fw.device == "cuda" and dtype == np.float64:
        pytest.skip("fp64 is CPU-only")
    if dtype == np.float64 and shape not in SHAPES[:3]:
        pytest.skip("fp64 runs on the first shapes only (time)")
    f = FEATURES[feat]
    q, k, v, dout, alibi = _inputs(shape, f, hash((shape, feat)) % 2**31, dtype)
    out_r, lse_r, dq_r, dk_r, dv_r = _ref(q, k, v, dout, alibi, f)
    tq, tk, tv = fw.arr(q, True), fw.arr(k, True), fw.arr(v, True)
    out, lse, probs = flashkit.flash_attn_func(tq, tk, tv, return_attn_probs=True, **_kwargs(fw, f, alibi))
    fw.check_kind(out)
    fw.check_kind(lse)
    assert probs is None
    assert tuple(out.shape) == q.shape and tuple(lse.shape) == (shape[0], shape[3], shape[1])
    tol = TOL[dtype]
    assert rel_l2(fw.np(out), out_r) < tol
    assert rel_l2(fw.np(lse), lse_r) < tol
    if fw.torch:
        try:
            out.backward(fw.arr(dout))
        except NotImplementedError as e:
            pytest.skip(f"backward: {e}")
        grads = tq.grad, tk.grad, tv.grad
    else:
        grads = flashkit.flash_attn_backward(fw.arr(dout), tq, tk, tv, out, lse, **_kwargs(fw, f, alibi))
    for g, g_r in zip(grads, (dq_r, dk_r, dv_r)):
        fw.check_kind(g)
        assert rel_l2(fw.np(g), g_r) < tol


def test_default_out_only(fw):
    q, k, v, _, _ = _inputs((1, 9, 9, 2, 2, 16), {}, 1, np.float32)
    out = flashkit.flash_attn_func(fw.arr(q), fw.arr(k), fw.arr(v))
    fw.check_kind(out)
    assert rel_l2(fw.np(out), attn_ref(q, k, v)[0]) < 2e-5


def test_packed(fw):
    r = rng(3)
    qkv = randn(r, 2, 11, 3, 4, 32)
    out = flashkit.flash_attn_qkvpacked_func(fw.arr(qkv), causal=True)
    ref = attn_ref(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], causal=True)[0]
    assert rel_l2(fw.np(out), ref) < 2e-5
    q, kv = randn(r, 2, 11, 4, 32), randn(r, 2, 14, 2, 2, 32)
    out = flashkit.flash_attn_kvpacked_func(fw.arr(q), fw.arr(kv), window_size=(3, 3))
    ref = attn_ref(q, kv[:, :, 0], kv[:, :, 1], window=(3, 3))[0]
    assert rel_l2(fw.np(out), ref) < 2e-5


VARLEN = [([0, 5, 5, 17, 18], [0, 9, 12, 12 + 20, 33]), ([0, 31], [0, 7])]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seqs", VARLEN, ids=["4seq", "1seq"])
def test_varlen(fw, seqs, causal):
    cu_q, cu_k = (np.array(c, dtype=np.int32) for c in seqs)
    r = rng(7)
    Hq, Hk, D = 4, 2, 48
    q, k, v = randn(r, cu_q[-1], Hq, D), randn(r, cu_k[-1], Hk, D), randn(r, cu_k[-1], Hk, D)
    dout = randn(r, cu_q[-1], Hq, D)
    alibi = r.uniform(0.05, 0.5, size=(Hq,)).astype(np.float32)
    out_r, lse_r, dq_r, dk_r, dv_r = attn_varlen_ref(q, k, v, cu_q, cu_k, dout=dout, causal=causal, alibi=alibi)
    max_q, max_k = int(np.diff(cu_q).max()), int(np.diff(cu_k).max())
    tq, tk, tv = fw.arr(q, True), fw.arr(k, True), fw.arr(v, True)
    kw = dict(causal=causal, alibi_slopes=fw.arr(alibi))
    out, lse, _ = flashkit.flash_attn_varlen_func(tq, tk, tv, fw.arr(cu_q), fw.arr(cu_k), max_q, max_k,
                                                  return_attn_probs=True, **kw)
    assert tuple(lse.shape) == (Hq, cu_q[-1])
    assert rel_l2(fw.np(out), out_r) < 2e-5
    assert rel_l2(fw.np(lse), lse_r) < 2e-5
    if fw.torch:
        try:
            out.backward(fw.arr(dout))
        except NotImplementedError as e:
            pytest.skip(f"backward: {e}")
        grads = tq.grad, tk.grad, tv.grad
    else:
        grads = flashkit.flash_attn_backward(fw.arr(dout), tq, tk, tv, out, lse, cu_seqlens_q=fw.arr(cu_q),
                                             cu_seqlens_k=fw.arr(cu_k), max_seqlen_q=max_q, max_seqlen_k=max_k, **kw)
    for g, g_r in zip(grads, (dq_r, dk_r, dv_r)):
        assert rel_l2(fw.np(g), g_r) < 2e-5


# --- torch only ----------------------------------------------------------------------------------------

needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed")


@needs_torch
@pytest.mark.parametrize("feat", ["causal_gqa", "window", "softcap", "alibi", "all"])
def test_gradcheck(feat):
    f = {"causal_gqa": {"causal": True}, "window": {"window": (2, 1)}, "softcap": {"softcap": 2.0},
         "alibi": {"alibi": True}, "all": FEATURES["all"]}[feat]
    q, k, v, _, alibi = _inputs((2, 5, 7, 4, 2, 6), f, 11, np.float64)
    tq, tk, tv = (torch.from_numpy(a).requires_grad_(True) for a in (q, k, v))
    kw = dict(causal=f.get("causal", False), window_size=f.get("window", (-1, -1)), softcap=f.get("softcap", 0.0),
              softmax_scale=f.get("scale"), alibi_slopes=None if alibi is None else torch.from_numpy(alibi))
    assert torch.autograd.gradcheck(lambda a, b, c: flashkit.flash_attn_func(a, b, c, **kw), (tq, tk, tv))


@needs_torch
def test_gradcheck_varlen():
    r = rng(12)
    cu = torch.tensor([0, 3, 8], dtype=torch.int32)
    q, k, v = (torch.from_numpy(randn(r, 8, h, 4, dtype=np.float64)).requires_grad_(True) for h in (2, 1, 1))
    fn = lambda a, b, c: flashkit.flash_attn_varlen_func(a, b, c, cu, cu, 5, 5, causal=True)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, k, v))


@needs_torch
def test_torch_compile_fullgraph():
    r = rng(13)
    q, k, v = (torch.from_numpy(randn(r, 1, 9, 2, 16)).requires_grad_(True) for _ in range(3))

    def f(q, k, v):
        return flashkit.flash_attn_func(q, k, v, causal=True).sum()

    compiled = torch.compile(f, fullgraph=True)
    loss = compiled(q, k, v)
    loss.backward()
    ref = attn_ref(q.detach().numpy(), k.detach().numpy(), v.detach().numpy(), causal=True,
                   dout=np.ones((1, 9, 2, 16)))
    assert abs(loss.item() - ref[0].sum()) < 1e-3
    assert rel_l2(q.grad.numpy(), ref[2]) < 2e-5


@needs_torch
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="no GPU"))])
@pytest.mark.parametrize("dt", ["float16", "bfloat16"])
def test_low_precision(device, dt):
    """fp16/bf16 storage: error within 2x that of the same naive math done in that dtype, plus a small atol."""
    dtype = getattr(torch, dt)
    r = rng(14)
    q, k, v = (torch.from_numpy(randn(r, 2, 33, 4, 64)).to(device, dtype) for _ in range(3))
    out = flashkit.flash_attn_func(q, k, v, causal=True)
    assert out.dtype == dtype and out.device.type == device
    ref = torch.from_numpy(attn_ref(q.double().cpu().numpy(), k.double().cpu().numpy(), v.double().cpu().numpy(),
                                    causal=True)[0])
    qq, kk, vv = (t.transpose(1, 2) for t in (q, k, v))
    mask = torch.ones(33, 33, dtype=torch.bool, device=device).tril()
    sc = (qq @ kk.transpose(-1, -2)) * (64 ** -0.5)
    naive = (sc.masked_fill(~mask, float("-inf")).softmax(-1) @ vv).transpose(1, 2)
    naive_err = (naive.double().cpu() - ref).abs().max().item()
    err = (out.double().cpu() - ref).abs().max().item()
    assert err <= 2 * naive_err + 1e-3


@needs_torch
def test_deterministic_flag():
    r = rng(15)
    q, k, v = (torch.from_numpy(randn(r, 1, 20, 2, 32)).requires_grad_(True) for _ in range(3))
    grads = []
    for _ in range(2):
        for t in (q, k, v):
            t.grad = None
        flashkit.flash_attn_func(q, k, v, deterministic=True).sum().backward()
        grads.append([t.grad.clone() for t in (q, k, v)])
    for a, b in zip(*grads):
        assert torch.equal(a, b)
