"""Attention through the flash_attn-compatible functions: forward and backward against the float64
reference over the odd-shape list, on NumPy, torch CPU and (when present) torch CUDA; the packed and varlen
variants; gradcheck in float64; torch.compile."""
import zlib

import numpy as np
import pytest

import flashkit
from conftest import GRADCHECK_TOL, HAS_CUDA, randn, rng, torch
from reference import attn_ref, attn_varlen_ref, grad_floor, lse_err, rel_l2

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
# The project's bar: fp32 within 1e-5 relative (L2) of float64; fp64 (CPU, computed in fp64) to 1e-12 as in
# tests/test_attn.c. F32 is the tolerance for every fp32 check below.
F32 = 1e-5
TOL = {np.float32: F32, np.float64: 1e-12}


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


def _ref(q, k, v, dout, alibi, feat, mags=None):
    return attn_ref(q, k, v, causal=feat.get("causal", False), window=feat.get("window", (-1, -1)),
                    softcap=feat.get("softcap", 0.0), alibi=alibi, scale=feat.get("scale"), dout=dout, mags=mags)


def _check_grads(fw, grads, refs, mags, tol):
    for g, g_r, floor in zip(grads, refs, (grad_floor(mags["dq"]), grad_floor(mags["dk"]), 0.0)):
        fw.check_kind(g)
        assert tuple(g.shape) == g_r.shape
        assert rel_l2(fw.np(g), g_r, floor) < tol


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("feat", list(FEATURES), ids=list(FEATURES))
@pytest.mark.parametrize("shape", SHAPES, ids=["x".join(map(str, s)) for s in SHAPES])
def test_fwd_bwd(fw, shape, feat, dtype):
    if fw.device == "cuda" and dtype == np.float64:
        pytest.skip("fp64 is CPU-only")
    f = FEATURES[feat]
    # zlib.crc32, not hash(): str hashes change from process to process (PYTHONHASHSEED), and so did the inputs
    q, k, v, dout, alibi = _inputs(shape, f, zlib.crc32(repr((shape, feat)).encode()), dtype)
    mags = {}
    out_r, lse_r, dq_r, dk_r, dv_r = _ref(q, k, v, dout, alibi, f, mags)
    tq, tk, tv = fw.arr(q, True), fw.arr(k, True), fw.arr(v, True)
    out, lse, probs = flashkit.flash_attn_func(tq, tk, tv, return_attn_probs=True, **_kwargs(fw, f, alibi))
    fw.check_kind(out)
    fw.check_kind(lse)
    assert probs is None
    assert tuple(out.shape) == q.shape and tuple(lse.shape) == (shape[0], shape[3], shape[1])
    tol = TOL[dtype]
    assert rel_l2(fw.np(out), out_r) < tol
    assert lse_err(fw.np(lse), lse_r) < tol
    if fw.torch:
        out.backward(fw.arr(dout))  # a NotImplementedError on CUDA is reported as a skip by conftest.py
        grads = tq.grad, tk.grad, tv.grad
    else:
        grads = flashkit.flash_attn_backward(fw.arr(dout), tq, tk, tv, out, lse, **_kwargs(fw, f, alibi))
    _check_grads(fw, grads, (dq_r, dk_r, dv_r), mags, tol)


def test_default_out_only(fw):
    q, k, v, _, _ = _inputs((1, 9, 9, 2, 2, 16), {}, 1, np.float32)
    out = flashkit.flash_attn_func(fw.arr(q), fw.arr(k), fw.arr(v))
    fw.check_kind(out)
    assert rel_l2(fw.np(out), attn_ref(q, k, v)[0]) < F32


def test_packed(fw):
    r = rng(3)
    qkv = randn(r, 2, 11, 3, 4, 32)
    out = flashkit.flash_attn_qkvpacked_func(fw.arr(qkv), causal=True)
    ref = attn_ref(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], causal=True)[0]
    assert rel_l2(fw.np(out), ref) < F32
    q, kv = randn(r, 2, 11, 4, 32), randn(r, 2, 14, 2, 2, 32)
    out = flashkit.flash_attn_kvpacked_func(fw.arr(q), fw.arr(kv), window_size=(3, 3))
    ref = attn_ref(q, kv[:, :, 0], kv[:, :, 1], window=(3, 3))[0]
    assert rel_l2(fw.np(out), ref) < F32


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
    mags = {}
    out_r, lse_r, dq_r, dk_r, dv_r = attn_varlen_ref(q, k, v, cu_q, cu_k, dout=dout, mags=mags, causal=causal,
                                                     alibi=alibi)
    max_q, max_k = int(np.diff(cu_q).max()), int(np.diff(cu_k).max())
    tq, tk, tv = fw.arr(q, True), fw.arr(k, True), fw.arr(v, True)
    kw = dict(causal=causal, alibi_slopes=fw.arr(alibi))
    out, lse, _ = flashkit.flash_attn_varlen_func(tq, tk, tv, fw.arr(cu_q), fw.arr(cu_k), max_q, max_k,
                                                  return_attn_probs=True, **kw)
    assert tuple(lse.shape) == (Hq, cu_q[-1])
    assert rel_l2(fw.np(out), out_r) < F32
    assert lse_err(fw.np(lse), lse_r) < F32
    if fw.torch:
        out.backward(fw.arr(dout))
        grads = tq.grad, tk.grad, tv.grad
    else:
        grads = flashkit.flash_attn_backward(fw.arr(dout), tq, tk, tv, out, lse, cu_seqlens_q=fw.arr(cu_q),
                                             cu_seqlens_k=fw.arr(cu_k), max_seqlen_q=max_q, max_seqlen_k=max_k, **kw)
    _check_grads(fw, grads, (dq_r, dk_r, dv_r), mags, F32)


# --- torch only ----------------------------------------------------------------------------------------

needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed")


# Each feature alone (4 query and 4 KV heads), GQA and MQA alone, then everything at once on GQA. seqlen_q 5 <
# seqlen_k 7, so the bottom-right alignment of the causal mask and the window is inside the checked function.
GRADCHECK = {
    "causal": ({"causal": True}, 4),
    "window": ({"window": (2, 1)}, 4),
    "softcap": ({"softcap": 2.0, "scale": 1.5}, 4),  # scores up to ~5x the cap: tanh well into its bend
    "alibi": ({"alibi": True}, 4),
    "gqa": ({}, 2),
    "mqa": ({}, 1),
    "all_gqa": ({"causal": True, "window": (3, -1), "softcap": 2.0, "alibi": True, "scale": 0.7}, 2),
}


@needs_torch
@pytest.mark.parametrize("feat", list(GRADCHECK))
def test_gradcheck(feat):
    """torch.autograd.gradcheck in float64 on the CPU: the library computes fp64 end to end (FK_DTYPE_F64), so
    the analytic gradients (the C backward) must match central differences of the C forward to gradcheck's
    default tolerances."""
    f, hk = GRADCHECK[feat]
    q, k, v, _, alibi = _inputs((2, 5, 7, 4, hk, 6), f, 11, np.float64)
    tq, tk, tv = (torch.from_numpy(a).requires_grad_(True) for a in (q, k, v))
    assert flashkit.flash_attn_func(tq, tk, tv).dtype == torch.float64
    kw = dict(causal=f.get("causal", False), window_size=f.get("window", (-1, -1)), softcap=f.get("softcap", 0.0),
              softmax_scale=f.get("scale"), alibi_slopes=None if alibi is None else torch.from_numpy(alibi))
    fn = lambda a, b, c: flashkit.flash_attn_func(a, b, c, **kw)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (tq, tk, tv), **GRADCHECK_TOL)


@needs_torch
def test_gradcheck_varlen():
    r = rng(12)
    cu = torch.tensor([0, 3, 8], dtype=torch.int32)
    q, k, v = (torch.from_numpy(randn(r, 8, h, 4, dtype=np.float64)).requires_grad_(True) for h in (2, 1, 1))
    fn = lambda a, b, c: flashkit.flash_attn_varlen_func(a, b, c, cu, cu, 5, 5, causal=True)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, k, v), **GRADCHECK_TOL)


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
    assert rel_l2(q.grad.numpy(), ref[2]) < F32


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


# --- return_attn_probs: the LSE, as flash_attn returns it ------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_return_attn_probs_lse(fw, dtype):
    """flash_attn's return_attn_probs=True gives (out, softmax_lse, S_dmask): softmax_lse (batch, nheads,
    seqlen_q), fp32, the natural-log sum of exp of the scaled scores; S_dmask is filled only with dropout, so
    None here. out is the same as without the flag. A row that sees no key: out 0, lse -inf."""
    if fw.device == "cuda" and dtype == np.float64:
        pytest.skip("fp64 is CPU-only")
    B, Sq, Sk, H, D = 2, 6, 9, 3, 16
    r = rng(16)
    q, k, v = (randn(r, B, s, H, D, dtype=dtype) for s in (Sq, Sk, Sk))
    kw = dict(causal=True, window_size=(1, 0), softmax_scale=0.5)
    res = flashkit.flash_attn_func(fw.arr(q), fw.arr(k), fw.arr(v), return_attn_probs=True, **kw)
    assert isinstance(res, tuple) and len(res) == 3 and res[2] is None
    out, lse, _ = res
    fw.check_kind(lse)
    assert tuple(lse.shape) == (B, H, Sq)
    assert str(lse.dtype).endswith("float64" if dtype == np.float64 else "float32")
    s = np.einsum("bqhd,bkhd->bhqk", q.astype(np.float64), k.astype(np.float64)) * 0.5
    i, j = np.arange(Sq)[:, None] + Sk - Sq, np.arange(Sk)[None, :]
    s = np.where((j <= i) & (j >= i - 1), s, -np.inf)
    lse_r = np.log(np.exp(s).sum(-1))  # every row sees 1-2 keys here
    assert lse_err(fw.np(lse), lse_r) < TOL[dtype]
    plain = flashkit.flash_attn_func(fw.arr(q), fw.arr(k), fw.arr(v), **kw)
    assert np.array_equal(fw.np(plain), fw.np(out))
    # seqlen_k 3 < seqlen_q 6, causal (bottom-right aligned): query rows 0..2 see no key
    out0, lse0, _ = flashkit.flash_attn_func(fw.arr(q), fw.arr(k[:, :3]), fw.arr(v[:, :3]), causal=True,
                                             return_attn_probs=True)
    lse0, out0 = fw.np(lse0), fw.np(out0)
    assert np.all(np.isneginf(lse0[:, :, :Sq - 3])) and np.all(out0[:, :Sq - 3] == 0)
    assert np.all(np.isfinite(lse0[:, :, Sq - 3:]))


@pytest.mark.parametrize("dt", ["float16", "bfloat16"])
def test_return_attn_probs_lse_low_precision(dt):
    """fp16/bf16 inputs: the LSE is still fp32 (flash_attn's softmax_lse dtype)."""
    if torch is None:
        pytest.skip("torch not installed")
    q = torch.randn(1, 7, 2, 32).to(getattr(torch, dt))
    out, lse, probs = flashkit.flash_attn_func(q, q, q, return_attn_probs=True)
    assert out.dtype == q.dtype and lse.dtype == torch.float32 and probs is None and lse.shape == (1, 2, 7)
    ref = attn_ref(q.double().numpy(), q.double().numpy(), q.double().numpy())[1]
    assert np.abs(lse.numpy() - ref).max() < 1e-2


def test_varlen_lse_layout(fw):
    """Varlen: softmax_lse is (nheads, total_q), as current flash_attn 2 releases return it (older ones padded it
    to (batch, nheads, max_seqlen_q))."""
    r = rng(17)
    cu = np.array([0, 3, 8], np.int32)
    q = randn(r, 8, 2, 16)
    tq, tcu = fw.arr(q), fw.arr(cu)
    out, lse, probs = flashkit.flash_attn_varlen_func(tq, tq, tq, tcu, tcu, 5, 5, return_attn_probs=True)
    assert probs is None and tuple(lse.shape) == (2, 8)
    assert lse_err(fw.np(lse), attn_varlen_ref(q, q, q, cu, cu)[1]) < F32


@pytest.mark.parametrize("shapes", [((0, 8, 4, 16), (0, 8, 2, 16)), ((1, 0, 4, 16), (1, 9, 2, 16)),
                                    ((2, 5, 4, 16), (2, 0, 2, 16))],
                         ids=["batch0", "seqlen_q0", "seqlen_k0"])
def test_empty(fw, shapes):
    """Empty batches and sequences give what flash_attn gives: empty outputs, or for queries that see no key an
    output of 0 and an LSE of -inf; every gradient 0."""
    qs, ks = shapes
    r = rng(3)
    q = fw.arr(randn(r, *qs), True)
    k, v = fw.arr(randn(r, *ks), True), fw.arr(randn(r, *ks), True)
    out, lse, _ = flashkit.flash_attn_func(q, k, v, causal=True, return_attn_probs=True)
    fw.check_kind(out)
    assert tuple(out.shape) == qs and tuple(lse.shape) == (qs[0], qs[2], qs[1])
    o, l = fw.np(out), fw.np(lse)
    assert np.all(o == 0) and np.all(np.isneginf(l))
    if fw.torch:
        out.sum().backward()
        grads = (q.grad, k.grad, v.grad)
    else:
        grads = flashkit.flash_attn_backward(fw.arr(np.ones(qs, np.float32)), q, k, v, out, lse, causal=True)
    for g, x in zip(grads, (qs, ks, ks)):
        assert tuple(g.shape) == x and np.all(fw.np(g) == 0)
