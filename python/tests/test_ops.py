"""RMSNorm, RoPE and SwiGLU, forward and backward, against float64 references on NumPy, torch CPU and (when
present) torch CUDA; gradcheck in float64."""
import numpy as np
import pytest

import flashkit
from conftest import GRADCHECK_TOL, randn, rng, torch
from reference import rel_l2, rmsnorm_ref, rope_ref, swiglu_ref

TOL = {np.float32: 2e-6, np.float64: 1e-10}
DTYPES = pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed")


def _skip_f64_cuda(fw, dtype):
    if fw.device == "cuda" and dtype == np.float64:
        pytest.skip("fp64 is CPU-only")


# --- RMSNorm -------------------------------------------------------------------------------------------

RMS_SHAPES = [(1, 3), (3, 7), (2, 5, 33), (4, 3, 257), (64, 1000)]


@DTYPES
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("zc", [False, True], ids=["w", "1+w"])
@pytest.mark.parametrize("shape", RMS_SHAPES, ids=["x".join(map(str, s)) for s in RMS_SHAPES])
def test_rms_norm(fw, shape, residual, zc, dtype):
    _skip_f64_cuda(fw, dtype)
    r = rng(hash((shape, residual, zc)) % 2**31)
    x, w, dy = randn(r, *shape, dtype=dtype), randn(r, shape[-1], dtype=dtype), randn(r, *shape, dtype=dtype)
    res = randn(r, *shape, dtype=dtype) if residual else None
    dh = randn(r, *shape, dtype=dtype) if residual else None
    y_r, h_r, dx_r, dw_r = rmsnorm_ref(x, w, res, 1e-5, 1.0 if zc else 0.0, dy=dy, dh=dh)
    tx, tw = fw.arr(x, True), fw.arr(w, True)
    tr = fw.arr(res, True) if residual else None
    y, h = flashkit.rms_norm(tx, tw, tr, eps=1e-5, prenorm=True, zero_centered_weight=zc)
    fw.check_kind(y)
    tol = TOL[dtype] * (10 if dtype == np.float32 and shape[-1] > 500 else 1)
    assert rel_l2(fw.np(y), y_r) < tol
    assert rel_l2(fw.np(h), h_r) < tol
    if fw.torch:
        loss = (y * fw.arr(dy)).sum() + ((h * fw.arr(dh)).sum() if residual else 0)
        loss.backward()
        dx, dw = tx.grad, tw.grad
        if residual:
            assert rel_l2(fw.np(tr.grad), dx_r) < tol
    else:
        dx, dw = flashkit.rms_norm_backward(fw.arr(dy), tx, tw, tr, eps=1e-5, dresidual_out=fw.arr(dh) if residual else None,
                                            zero_centered_weight=zc)
    fw.check_kind(dx)
    assert rel_l2(fw.np(dx), dx_r) < tol
    assert rel_l2(fw.np(dw), dw_r) < tol * 10


def test_rms_norm_plain_return(fw):
    r = rng(1)
    x, w = randn(r, 3, 16), randn(r, 16)
    y = flashkit.rms_norm(fw.arr(x), fw.arr(w))
    assert rel_l2(fw.np(y), rmsnorm_ref(x, w)[0]) < 2e-6


def test_rms_norm_backward_deterministic(fw):
    # 2000 x 1024 fp32 rows: on a GPU the backward hands its last rows out at run time unless deterministic, which
    # may change dweight's summation order from run to run (never dx)
    r = rng(7)
    x, w, dy = randn(r, 2000, 1024), randn(r, 1024), randn(r, 2000, 1024)
    _, _, dx_r, dw_r = rmsnorm_ref(x, w, None, 1e-5, 0.0, dy=dy)
    tx, tw, tdy = fw.arr(x), fw.arr(w), fw.arr(dy)
    runs = {det: [flashkit.rms_norm_backward(tdy, tx, tw, eps=1e-5, deterministic=det) for _ in range(2)]
            for det in (False, True)}
    for det, ((dx1, dw1), (dx2, dw2)) in runs.items():
        assert rel_l2(fw.np(dx1), dx_r) < 2e-5 and rel_l2(fw.np(dw1), dw_r) < 2e-5
        assert np.array_equal(fw.np(dx1), fw.np(dx2))
        if det:
            assert np.array_equal(fw.np(dw1), fw.np(dw2))
        else:
            assert rel_l2(fw.np(dw2), dw_r) < 2e-5


# --- RoPE ----------------------------------------------------------------------------------------------

ROPE_CASES = [  # (B, S, H, D, rotary_dim)
    (1, 1, 1, 2, 2),
    (2, 7, 3, 16, 16),
    (1, 13, 2, 40, 24),
    (3, 5, 4, 64, 32),
]


def _tables(r, n, rd, dtype):
    ang = r.uniform(-3, 3, size=(n, rd // 2))
    return np.cos(ang).astype(dtype), np.sin(ang).astype(dtype)


@DTYPES
@pytest.mark.parametrize("interleaved", [False, True], ids=["neox", "gptj"])
@pytest.mark.parametrize("offsets", ["zero", "int", "tensor"])
@pytest.mark.parametrize("case", ROPE_CASES, ids=["x".join(map(str, c)) for c in ROPE_CASES])
def test_rope(fw, case, offsets, interleaved, dtype):
    _skip_f64_cuda(fw, dtype)
    B, S, H, D, rd = case
    r = rng(hash((case, offsets, interleaved)) % 2**31)
    x, dout = randn(r, B, S, H, D, dtype=dtype), randn(r, B, S, H, D, dtype=dtype)
    cos, sin = _tables(r, S + 9, rd, dtype)
    if offsets == "zero":
        off, pos = 0, np.broadcast_to(np.arange(S), (B, S))
    elif offsets == "int":
        off, pos = 4, np.broadcast_to(np.arange(S) + 4, (B, S))
    else:
        o = r.integers(0, 10, size=B)
        off, pos = fw.arr(o), o[:, None] + np.arange(S)[None, :]
    ref = rope_ref(x, cos, sin, pos, interleaved)
    dref = rope_ref(dout, cos, sin, pos, interleaved, inverse=True)
    tx = fw.arr(x, True)
    out = flashkit.apply_rotary_emb(tx, fw.arr(cos), fw.arr(sin), interleaved=interleaved, seqlen_offsets=off)
    fw.check_kind(out)
    tol = TOL[dtype] * 3
    assert rel_l2(fw.np(out), ref) < tol
    if fw.torch:
        out.backward(fw.arr(dout))
        dx = tx.grad
    else:
        dx = flashkit.apply_rotary_emb_backward(fw.arr(dout), fw.arr(cos), fw.arr(sin), interleaved=interleaved,
                                                seqlen_offsets=off)
    assert rel_l2(fw.np(dx), dref) < tol


def test_rope_varlen_and_inplace(fw):
    r = rng(5)
    cu = np.array([0, 4, 4, 11], dtype=np.int32)
    H, D = 2, 8
    x = randn(r, 11, H, D)
    cos, sin = _tables(r, 20, D, np.float32)
    offs = np.array([1, 2, 3])
    pos = np.concatenate([np.arange(cu[b + 1] - cu[b]) + offs[b] for b in range(3)])
    ref = rope_ref(x[None], cos, sin, pos[None], False)[0]
    out = flashkit.apply_rotary_emb(fw.arr(x), fw.arr(cos), fw.arr(sin), seqlen_offsets=fw.arr(offs),
                                    cu_seqlens=fw.arr(cu), max_seqlen=7)
    assert rel_l2(fw.np(out), ref) < 1e-5
    if fw.name == "jax":
        return  # JAX arrays are immutable: no in-place
    tx = fw.arr(x.reshape(1, 11, H, D).copy())
    res = flashkit.apply_rotary_emb(tx, fw.arr(cos), fw.arr(sin), seqlen_offsets=2, inplace=True)
    assert res is tx
    assert rel_l2(fw.np(tx), rope_ref(x[None], cos, sin, (np.arange(11) + 2)[None], False)) < 1e-5


# --- SwiGLU --------------------------------------------------------------------------------------------

SWIGLU_SHAPES = [(1, 1), (3, 7), (2, 9, 33), (5, 1000)]


@DTYPES
@pytest.mark.parametrize("packed", [False, True], ids=["two", "packed"])
@pytest.mark.parametrize("shape", SWIGLU_SHAPES, ids=["x".join(map(str, s)) for s in SWIGLU_SHAPES])
def test_swiglu(fw, shape, packed, dtype):
    _skip_f64_cuda(fw, dtype)
    r = rng(hash((shape, packed)) % 2**31)
    g, u, dout = (randn(r, *shape, dtype=dtype) * 3 for _ in range(3))
    out_r, dg_r, du_r = swiglu_ref(g, u, dout)
    tol = TOL[dtype] * 3
    if packed:
        tx = fw.arr(np.concatenate([g, u], -1), True)
        out = flashkit.swiglu(tx)
    else:
        tg, tu = fw.arr(g, True), fw.arr(u, True)
        out = flashkit.swiglu(tg, tu)
    fw.check_kind(out)
    assert rel_l2(fw.np(out), out_r) < tol
    if fw.torch:
        out.backward(fw.arr(dout))
        grads = [tx.grad[..., : shape[-1]], tx.grad[..., shape[-1]:]] if packed else [tg.grad, tu.grad]
    elif packed:
        d = flashkit.swiglu_backward(fw.arr(dout), tx)
        grads = [d[..., : shape[-1]], d[..., shape[-1]:]]
    else:
        grads = flashkit.swiglu_backward(fw.arr(dout), tg, tu)
    assert rel_l2(fw.np(grads[0]), dg_r) < tol
    assert rel_l2(fw.np(grads[1]), du_r) < tol


# --- gradcheck (float64, CPU) --------------------------------------------------------------------------

@needs_torch
@pytest.mark.parametrize("residual", [False, True])
def test_gradcheck_rms_norm(residual):
    r = rng(21)
    x, w = torch.from_numpy(randn(r, 3, 2, 9, dtype=np.float64)), torch.from_numpy(randn(r, 9, dtype=np.float64))
    res = torch.from_numpy(randn(r, 3, 2, 9, dtype=np.float64)).requires_grad_(True) if residual else None
    x.requires_grad_(True)
    w.requires_grad_(True)
    if residual:
        assert torch.autograd.gradcheck(lambda a, b, c: flashkit.rms_norm(a, b, c, prenorm=True), (x, w, res),
                                        **GRADCHECK_TOL)
    else:
        assert torch.autograd.gradcheck(lambda a, b: flashkit.rms_norm(a, b, zero_centered_weight=True), (x, w),
                                        **GRADCHECK_TOL)


@needs_torch
@pytest.mark.parametrize("interleaved", [False, True])
def test_gradcheck_rope(interleaved):
    r = rng(22)
    x = torch.from_numpy(randn(r, 2, 5, 2, 10, dtype=np.float64)).requires_grad_(True)
    cos, sin = (torch.from_numpy(t) for t in _tables(r, 9, 6, np.float64))
    offs = torch.tensor([0, 3])
    assert torch.autograd.gradcheck(
        lambda a: flashkit.apply_rotary_emb(a, cos, sin, interleaved=interleaved, seqlen_offsets=offs), (x,),
        **GRADCHECK_TOL)


@needs_torch
def test_gradcheck_swiglu():
    r = rng(23)
    g, u = (torch.from_numpy(randn(r, 4, 7, dtype=np.float64)).requires_grad_(True) for _ in range(2))
    assert torch.autograd.gradcheck(flashkit.swiglu, (g, u), **GRADCHECK_TOL)
    x = torch.from_numpy(randn(r, 3, 8, dtype=np.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(flashkit.swiglu, (x,), **GRADCHECK_TOL)


@needs_torch
def test_torch_compile_ops():
    r = rng(24)
    x, w = torch.from_numpy(randn(r, 2, 6, 16)), torch.from_numpy(randn(r, 16))
    cos, sin = (torch.from_numpy(t) for t in _tables(r, 6, 16, np.float32))

    def f(x, w):
        h = flashkit.rms_norm(x, w)
        h = flashkit.apply_rotary_emb(h.view(2, 6, 1, 16), cos, sin).view(2, 6, 16)
        return flashkit.swiglu(h)

    out = torch.compile(f, fullgraph=True, backend="aot_eager")(x, w)
    assert torch.allclose(out, f(x, w))
