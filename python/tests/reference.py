"""float64 NumPy references for the Python tests: naive and readable, forward and hand-derived backward.
Used for NumPy and torch inputs alike, so the tests need no autograd to know the right gradients."""
import numpy as np


def attn_ref(q, k, v, causal=False, window=(-1, -1), softcap=0.0, alibi=None, scale=None, dout=None, mags=None):
    """q: [B, Sq, Hq, D], k/v: [B, Sk, Hk, D] (float64 arrays). Returns (out, lse[B, Hq, Sq]) and, when dout
    is given, also (dq, dk, dv). With a dict `mags` and dout, also fills mags["dq"], mags["dk"]: the same
    products over absolute values, |dS| taken as P * (|dP| + |D|) before it cancels — the size of the terms whose
    difference dq and dk are, which is what rounding error in them scales with (see grad_floor).

    softmax_scale and softcap are fp32 in the C API (fk_attn_args), and the library computes the default scale
    as (float)(1 / sqrt(D)); the reference uses the same fp32-rounded values, so a float64 run is compared with
    the float64 math of the function the library was actually given."""
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    B, Sq, Hq, D = q.shape
    _, Sk, Hk, _ = k.shape
    g = Hq // Hk
    scale = float(np.float32(1.0 / np.sqrt(D) if scale is None else scale))
    softcap = float(np.float32(softcap))
    out = np.zeros_like(q)
    lse = np.full((B, Hq, Sq), -np.inf)
    grads = dout is not None
    if grads:
        dout = np.asarray(dout, dtype=np.float64)
        dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
        if mags is not None:
            mags["dq"], mags["dk"] = np.zeros_like(q), np.zeros_like(k)
    i = np.arange(Sq)[:, None]
    j = np.arange(Sk)[None, :]
    diag = i + Sk - Sq
    vis = np.ones((Sq, Sk), dtype=bool)
    wl, wr = window
    if causal:
        wr = 0 if wr < 0 else min(wr, 0)
    if wl >= 0:
        vis &= j >= diag - wl
    if wr >= 0:
        vis &= j <= diag + wr
    for b in range(B):
        for h in range(Hq):
            kh = h // g
            Q, K, V = q[b, :, h], k[b, :, kh], v[b, :, kh]
            s = scale * Q @ K.T
            t = None
            if softcap > 0:
                t = np.tanh(s / softcap)
                s = softcap * t
            if alibi is not None:
                slope = alibi[h] if alibi.ndim == 1 else alibi[b, h]
                s = s - slope * np.abs(diag - j)
            s = np.where(vis, s, -np.inf)
            m = s.max(axis=1, keepdims=True)
            m = np.where(np.isfinite(m), m, 0.0)
            e = np.where(vis, np.exp(s - m), 0.0)
            tot = e.sum(axis=1, keepdims=True)
            P = np.where(tot > 0, e / np.where(tot > 0, tot, 1.0), 0.0)
            O = P @ V
            out[b, :, h] = O
            with np.errstate(divide="ignore"):
                lse[b, h] = np.where(tot[:, 0] > 0, np.log(np.where(tot[:, 0] > 0, tot[:, 0], 1.0)) + m[:, 0], -np.inf)
            if grads:
                dO = dout[b, :, h]
                dv[b, :, kh] += P.T @ dO
                dP = dO @ V.T
                Drow = (dO * O).sum(axis=1, keepdims=True)
                dS = P * (dP - Drow)
                if t is not None:
                    dS = dS * (1.0 - t * t)
                dq[b, :, h] = scale * dS @ K
                dk[b, :, kh] += scale * dS.T @ Q
                if mags is not None:
                    aS = P * (np.abs(dP) + np.abs(Drow))
                    if t is not None:
                        aS = aS * (1.0 - t * t)
                    mags["dq"][b, :, h] = scale * aS @ np.abs(K)
                    mags["dk"][b, :, kh] += scale * aS.T @ np.abs(Q)
    if grads:
        return out, lse, dq, dk, dv
    return out, lse


def attn_varlen_ref(q, k, v, cu_q, cu_k, dout=None, mags=None, **kw):
    """q: [total_q, Hq, D] packed; per sequence, attn_ref on [1, s, H, D]. Returns out, lse[Hq, total_q] (+ grads;
    mags as in attn_ref)."""
    res = [np.zeros(q.shape), np.full((q.shape[1], q.shape[0]), -np.inf)]
    if dout is not None:
        res += [np.zeros(q.shape), np.zeros(k.shape), np.zeros(v.shape)]
        if mags is not None:
            mags["dq"], mags["dk"] = np.zeros(q.shape), np.zeros(k.shape)
    alibi = kw.pop("alibi", None)
    for b in range(len(cu_q) - 1):
        sq, eq, sk, ek = cu_q[b], cu_q[b + 1], cu_k[b], cu_k[b + 1]
        if eq == sq:
            continue
        al = None if alibi is None else (alibi if alibi.ndim == 1 else alibi[b])
        m = {} if mags is not None else None
        r = attn_ref(q[None, sq:eq], k[None, sk:ek], v[None, sk:ek], alibi=al,
                     dout=None if dout is None else dout[None, sq:eq], mags=m, **kw)
        res[0][sq:eq] = r[0][0]
        res[1][:, sq:eq] = r[1][0]
        if dout is not None:
            res[2][sq:eq] = r[2][0]
            res[3][sk:ek] += r[3][0]
            res[4][sk:ek] += r[4][0]
            if m:
                mags["dq"][sq:eq] = m["dq"][0]
                mags["dk"][sk:ek] += m["dk"][0]
    return tuple(res)


def rmsnorm_ref(x, w, residual=None, eps=1e-6, weight_offset=0.0, dy=None, dh=None):
    x = np.asarray(x, np.float64)
    h = x + residual if residual is not None else x
    rstd = 1.0 / np.sqrt((h * h).mean(-1, keepdims=True) + eps)
    ww = weight_offset + np.asarray(w, np.float64)
    y = h * rstd * ww
    if dy is None:
        return y, h
    n = h.shape[-1]
    g = dy * ww
    dh_ = rstd * g - h * rstd ** 3 * (g * h).sum(-1, keepdims=True) / n
    if dh is not None:
        dh_ = dh_ + dh
    dw = (dy * h * rstd).reshape(-1, n).sum(0)
    return y, h, dh_, dw


def rope_ref(x, cos, sin, positions, interleaved=False, inverse=False):
    """x: [B, S, H, D]; positions: [B, S] ints; cos/sin: [P, rd/2]."""
    x = np.asarray(x, np.float64)
    rd = 2 * cos.shape[-1]
    c = np.asarray(cos, np.float64)[positions][:, :, None, :]  # [B, S, 1, rd/2]
    s = np.asarray(sin, np.float64)[positions][:, :, None, :]
    if inverse:
        s = -s
    out = x.copy()
    if interleaved:
        x1, x2 = x[..., 0:rd:2], x[..., 1:rd:2]
        out[..., 0:rd:2] = x1 * c - x2 * s
        out[..., 1:rd:2] = x1 * s + x2 * c
    else:
        x1, x2 = x[..., : rd // 2], x[..., rd // 2: rd]
        out[..., : rd // 2] = x1 * c - x2 * s
        out[..., rd // 2: rd] = x1 * s + x2 * c
    return out


def swiglu_ref(g, u, dout=None):
    g, u = np.asarray(g, np.float64), np.asarray(u, np.float64)
    sig = 1.0 / (1.0 + np.exp(-g))
    out = g * sig * u
    if dout is None:
        return out
    dg = dout * u * sig * (1.0 + g * (1.0 - sig))
    du = dout * g * sig
    return out, dg, du


def grad_floor(mag):
    """The denominator floor for a gradient that cancels: a tenth of the L2 norm of its terms' magnitudes (mags
    from attn_ref). dq = scale * dS @ K with dS = P * (dP - D) cancels exactly when a query row sees one key
    (dq = dk = 0, while fp32 leaves ~eps * |dP| per element); measured against a tenth of the terms' size, such
    a row passes at fp32 rounding, and a gradient that does not cancel (|dq| is then a sizeable fraction of its
    terms) is still measured against its own norm."""
    return 0.1 * float(np.linalg.norm(mag))


def lse_err(a, ref):
    """rel_l2 for a log-sum-exp: its error is absolute in nature (a relative error e of the sum moves the LSE by
    ~e), so the denominator is at least the norm of a vector of ones. Without that floor, an LSE near 0 (one
    visible key whose score is ~0.003) failed 1e-5 at fp32 rounding (1.1e-5 = 3e-8 absolute)."""
    ref = np.asarray(ref, np.float64)
    return rel_l2(a, ref, floor=float(np.sqrt(max(int(np.isfinite(ref).sum()), 1))))


def rel_l2(a, ref, floor=0.0):
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    assert np.all(np.isfinite(a) | ~np.isfinite(ref)), "NaN/Inf in the result"
    fin = np.isfinite(ref)
    assert np.array_equal(np.isfinite(a), fin), "Inf pattern differs from the reference"
    num = np.linalg.norm(a[fin] - ref[fin])
    den = np.linalg.norm(ref[fin])
    # floor: a reference that is ~0 by cancellation (one visible key gives dq = 0) has no relative scale
    return num / max(den, floor, 1e-3 * np.sqrt(max(int(fin.sum()), 1)))
