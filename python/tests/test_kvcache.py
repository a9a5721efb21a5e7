"""flash_attn_with_kvcache (decode with a KV cache) against a NumPy float64 reference: each sequence's keys are
rebuilt densely from the cache and the new k, v (rotated first when rotary tables are given), then the plain
attention reference runs on them. Checks out, softmax_lse, and that the cache was written in place at exactly
the appended rows. NumPy and torch on the CPU; torch on CUDA when a GPU is present (skipped otherwise), plus
fp16/bf16 CUDA cases with the split-KV paths forced. Bad index values are only checked on the CPU (on CUDA
they stay on the device: see include/flashkit.h)."""
import numpy as np
import pytest

import flashkit
from conftest import HAS_CUDA, Framework, randn, rng, torch
from reference import attn_ref

CPU_FWS = [pytest.param(Framework("numpy"), id="numpy"),
           pytest.param(Framework("torch"), id="torch",
                        marks=pytest.mark.skipif(torch is None, reason="torch not installed"))]
FWS = CPU_FWS + [pytest.param(Framework("torch-cuda"), id="torch-cuda",
                              marks=pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU"))]
F32 = 1e-5


def rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    fin = np.isfinite(b)
    assert np.array_equal(np.isfinite(a), fin)
    n = np.linalg.norm(b[fin])
    return np.linalg.norm(a[fin] - b[fin]) / (n if n > 0 else 1.0)


def rope_ref(x, cos, sin, pos, interleaved):
    """x [S, H, D] float64 rotated at positions pos [S]; cos/sin [max_pos, rd / 2]."""
    x = np.array(x, np.float64)
    rd = 2 * cos.shape[1]
    c, s = cos[pos][:, None, :].astype(np.float64), sin[pos][:, None, :].astype(np.float64)
    if interleaved:
        x1, x2 = x[..., 0:rd:2].copy(), x[..., 1:rd:2].copy()
        x[..., 0:rd:2], x[..., 1:rd:2] = x1 * c - x2 * s, x1 * s + x2 * c
    else:
        x1, x2 = x[..., : rd // 2].copy(), x[..., rd // 2: rd].copy()
        x[..., : rd // 2], x[..., rd // 2: rd] = x1 * c - x2 * s, x1 * s + x2 * c
    return x


def make(B=3, Sq=1, Snew=1, Hq=8, Hk=2, D=64, cap=64, page=0, batch_idx=False, seed=0, seqlens=None):
    r = rng(seed)
    if page:
        maxb = cap // page
        nblocks = B * maxb + 2
        kc, vc = randn(r, nblocks, page, Hk, D), randn(r, nblocks, page, Hk, D)
        bt = r.permutation(nblocks)[: B * maxb].reshape(B, maxb).astype(np.int32)
    else:
        ne = B + 2 if batch_idx else B
        kc, vc = randn(r, ne, cap, Hk, D), randn(r, ne, cap, Hk, D)
        bt = None
    bidx = np.arange(B, dtype=np.int32)[::-1].copy() + 2 if batch_idx else None
    cs = seqlens if seqlens is not None else r.integers(0, cap - Snew + 1, size=B).astype(np.int32)
    q = randn(r, B, Sq, Hq, D)
    k = randn(r, B, Snew, Hk, D) if Snew else None
    v = randn(r, B, Snew, Hk, D) if Snew else None
    return dict(q=q, kc=kc, vc=vc, k=k, v=v, cs=np.asarray(cs, np.int32), bt=bt, bidx=bidx, page=page)


def row_of(c, b, j):
    """(entry, row) of key j of sequence b."""
    if c["bt"] is not None:
        return c["bt"][b, j // c["page"]], j % c["page"]
    e = c["bidx"][b] if c["bidx"] is not None else b
    return e, j


def reference(c, causal, window=(-1, -1), softcap=0.0, alibi=None, kn=None, qr=None):
    """(out, lse, expected k_cache, expected v_cache). kn/qr: already rotated new keys / queries."""
    q = qr if qr is not None else c["q"].astype(np.float64)
    kn = kn if kn is not None else (None if c["k"] is None else c["k"].astype(np.float64))
    B, Sq = q.shape[:2]
    Snew = 0 if kn is None else kn.shape[1]
    kc_exp, vc_exp = c["kc"].copy(), c["vc"].copy()
    outs, lses = [], []
    for b in range(B):
        L = int(c["cs"][b]) + Snew
        K, V = [], []
        for j in range(L):
            e, rr = row_of(c, b, j)
            if j < c["cs"][b]:
                K.append(c["kc"][e, rr].astype(np.float64))
                V.append(c["vc"][e, rr].astype(np.float64))
            else:
                K.append(kn[b, j - c["cs"][b]])
                V.append(c["v"][b, j - c["cs"][b]].astype(np.float64))
                kc_exp[e, rr] = kn[b, j - c["cs"][b]].astype(np.float32)
                vc_exp[e, rr] = c["v"][b, j - c["cs"][b]]
        Hk, D = c["kc"].shape[2:]
        K = np.array(K).reshape(1, L, Hk, D)
        V = np.array(V).reshape(1, L, Hk, D)
        al = None if alibi is None else (alibi if alibi.ndim == 1 else alibi[b])
        o, lse = attn_ref(q[b: b + 1], K, V, causal=causal, window=window, softcap=softcap, alibi=al)
        outs.append(o)
        lses.append(lse)
    return np.concatenate(outs), np.concatenate(lses), kc_exp, vc_exp


def run(fw, c, **kw):
    kc, vc = fw.arr(c["kc"]), fw.arr(c["vc"])
    args = dict(k=None if c["k"] is None else fw.arr(c["k"]), v=None if c["v"] is None else fw.arr(c["v"]),
                cache_seqlens=fw.arr(c["cs"]),
                block_table=None if c["bt"] is None else fw.arr(c["bt"]),
                cache_batch_idx=None if c["bidx"] is None else fw.arr(c["bidx"]))
    args.update(kw)
    out, lse = flashkit.flash_attn_with_kvcache(fw.arr(c["q"]), kc, vc, return_softmax_lse=True, **args)
    fw.check_kind(out)
    return fw.np(out), fw.np(lse), fw.np(kc), fw.np(vc)


@pytest.mark.parametrize("fw", FWS)
@pytest.mark.parametrize("layout", ["contiguous", "batch_idx", "page16", "page256"])
@pytest.mark.parametrize("Sq, Snew", [(1, 1), (1, 0), (4, 4), (3, 2)])
@pytest.mark.parametrize("causal", [True, False])
def test_decode(fw, layout, Sq, Snew, causal):
    page = {"page16": 16, "page256": 256}.get(layout, 0)
    cap = 512 if page == 256 else 96
    c = make(Sq=Sq, Snew=Snew, cap=cap, page=page, batch_idx=layout == "batch_idx", seed=Sq * 10 + Snew)
    out, lse, kc, vc = run(fw, c, causal=causal)
    o_r, l_r, kc_r, vc_r = reference(c, causal)
    assert rel_l2(out, o_r) < F32
    assert rel_l2(lse, l_r) < F32
    assert np.array_equal(kc, kc_r) and np.array_equal(vc, vc_r)  # in place, the appended rows only


@pytest.mark.parametrize("fw", FWS)
@pytest.mark.parametrize("interleaved", [True, False])
@pytest.mark.parametrize("causal", [True, False])
def test_rotary(fw, interleaved, causal):
    c = make(B=2, Sq=2, Snew=2, Hq=4, Hk=2, D=32, cap=40, seed=3)
    r = rng(5)
    rd = 16  # a partial rotation: the other 16 features pass through
    ang = r.uniform(0, 6, size=(64, rd // 2))
    cos, sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
    out, lse, kc, vc = run(fw, c, causal=causal, rotary_cos=fw.arr(cos), rotary_sin=fw.arr(sin),
                           rotary_interleaved=interleaved)
    B, Sq = c["q"].shape[:2]
    kn = np.stack([rope_ref(c["k"][b], cos, sin, c["cs"][b] + np.arange(2), interleaved) for b in range(B)])
    qpos = [c["cs"][b] + (np.arange(Sq) if causal else np.zeros(Sq, int)) for b in range(B)]
    qr = np.stack([rope_ref(c["q"][b], cos, sin, qpos[b], interleaved) for b in range(B)])
    o_r, l_r, kc_r, vc_r = reference(c, causal, kn=kn, qr=qr)
    assert rel_l2(out, o_r) < F32
    assert rel_l2(lse, l_r) < F32
    assert np.allclose(kc, kc_r, rtol=1e-6, atol=1e-6) and np.array_equal(vc, vc_r)


@pytest.mark.parametrize("fw", FWS)
def test_int_cache_seqlens_and_defaults(fw):
    c = make(B=2, Sq=1, Snew=1, cap=50, seqlens=[17, 17], seed=4)
    kc, vc = fw.arr(c["kc"]), fw.arr(c["vc"])
    out = flashkit.flash_attn_with_kvcache(fw.arr(c["q"]), kc, vc, fw.arr(c["k"]), fw.arr(c["v"]),
                                           cache_seqlens=17, causal=True)
    o_r, _, kc_r, _ = reference(c, True)
    assert rel_l2(fw.np(out), o_r) < F32
    assert np.array_equal(fw.np(kc), kc_r)
    # No cache_seqlens: the whole cache is in use.
    c2 = make(B=2, Sq=1, Snew=0, cap=30, seqlens=[30, 30], seed=6)
    out2 = flashkit.flash_attn_with_kvcache(fw.arr(c2["q"]), fw.arr(c2["kc"]), fw.arr(c2["vc"]))
    assert rel_l2(fw.np(out2), reference(c2, False)[0]) < F32


@pytest.mark.parametrize("fw", FWS)
@pytest.mark.parametrize("feat", ["window", "softcap", "alibi", "alibi_batch", "mqa", "d128", "d40"])
def test_options(fw, feat):
    Hk = 1 if feat == "mqa" else 2
    D = {"d128": 128, "d40": 40}.get(feat, 64)
    c = make(B=2, Sq=2, Snew=2, Hq=4, Hk=Hk, D=D, cap=80, page=16 if feat == "window" else 0, seed=8)
    kw, ref_kw = {}, {}
    if feat == "window":
        kw["window_size"] = ref_kw["window"] = (20, 0)
    if feat == "softcap":
        kw["softcap"] = ref_kw["softcap"] = 20.0
    if feat.startswith("alibi"):
        sl = rng(2).uniform(0.01, 0.3, size=(2, 4) if feat == "alibi_batch" else (4,)).astype(np.float32)
        kw["alibi_slopes"] = fw.arr(sl)
        ref_kw["alibi"] = sl.astype(np.float64)
    out, lse, kc, _ = run(fw, c, causal=True, **kw)
    o_r, l_r, kc_r, _ = reference(c, True, **ref_kw)
    assert rel_l2(out, o_r) < F32
    assert rel_l2(lse, l_r) < F32
    assert np.array_equal(kc, kc_r)


@pytest.mark.parametrize("fw", CPU_FWS)
def test_capacity_error(fw):
    c = make(B=2, Sq=1, Snew=1, cap=20, seqlens=[5, 20], seed=9)
    with pytest.raises(ValueError) as e:
        run(fw, c)
    assert isinstance(e.value, flashkit.FlashkitError) and e.value.status == 1008  # FK_STATUS_BAD_PARAM_VALUE
    assert "capacity" in str(e.value)


def test_cache_leftpad_not_implemented():
    c = make(B=1, Snew=0, cap=8, seqlens=[4])
    with pytest.raises(NotImplementedError, match="cache_leftpad"):
        flashkit.flash_attn_with_kvcache(c["q"], c["kc"], c["vc"], cache_seqlens=4,
                                         cache_leftpad=np.zeros(1, np.int32))


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU")
@pytest.mark.parametrize("dtype, tol", [("float16", 2e-3), ("bfloat16", 1e-2)])
@pytest.mark.parametrize("num_splits", [0, 1, 3])
def test_cuda_low_precision(dtype, tol, num_splits):
    """torch on CUDA, fp16/bf16: paged cache, GQA 4, two new tokens appended in place on the GPU; num_splits 1
    (no combine) and 3 (partials merged by LSE) forced, 0 the backend's choice. The reference sees the rounded
    inputs, so the error is the output's rounding (half an ulp of |o| < 2)."""
    c = make(B=3, Sq=2, Snew=2, Hq=8, Hk=2, D=128, cap=512, page=16, seed=11)
    td = getattr(torch, dtype)
    t = {n: torch.from_numpy(c[n]).to("cuda", td) for n in ("q", "kc", "vc", "k", "v")}
    for n in t:
        c[n] = t[n].float().cpu().numpy()
    cs, bt = torch.from_numpy(c["cs"]).cuda(), torch.from_numpy(c["bt"]).cuda()
    out, lse = flashkit.flash_attn_with_kvcache(t["q"], t["kc"], t["vc"], t["k"], t["v"], cache_seqlens=cs,
                                                block_table=bt, causal=True, num_splits=num_splits,
                                                return_softmax_lse=True)
    assert out.device.type == "cuda" and out.dtype == td and lse.device.type == "cuda"
    o_r, l_r, kc_r, vc_r = reference(c, True)
    assert np.abs(out.float().cpu().numpy() - o_r).max() < tol
    assert rel_l2(lse.cpu().numpy(), l_r) < F32
    assert np.array_equal(t["kc"].float().cpu().numpy(), kc_r) and np.array_equal(t["vc"].float().cpu().numpy(), vc_r)
