#!/usr/bin/env python3
"""Fused element-wise ops benchmark: flashkit's CUDA RMSNorm (plain, fused residual add), RoPE and SwiGLU,
forward and backward, against PyTorch eager and torch.compile of the same math, in one process on one GPU.

Protocol (shared/BENCHMARKS.md): random inputs (never zeros), triton.testing.do_bench median (warm-up 25 ms,
100 ms of repeats); inputs of 64 MB and more, so L2 (50 MB) cannot hold them between runs. GB/s counts each
input read once plus each output written once (the same bytes for every competitor: the op's minimum); the
ceiling is a device-to-device copy (torch copy_, bytes read + written) measured in the same run: a 1 GiB copy
("of copy", the issue's bar) and a copy of the op's own byte count ("same-bytes copy": what a kernel of that size
reaches, its launch and ramp included, as the op's time includes them).
Backward of the PyTorch versions: autograd through the eager / compiled function, timing the backward call
(torch.autograd.grad with retained graph) only. The RMSNorm backward with the fused residual add takes the
gradient of residual_out too (dresidual_out: the residual stream's gradient, as in a pre-norm transformer).
Each flashkit result is also spot-checked against fp32 PyTorch math (max abs error, printed with the row).

Sizes: 16,384 tokens; RMSNorm hidden 4096 (and 2048, 5120, 8192); SwiGLU width 11,008; RoPE 32 q heads +
32 k heads x 128 (half-split, cos/sin tables of [seqlen, 64] fp32, positions 0..S-1 via pos_offset).

Usage: python3 bench/bench_ops.py [--lib build-gpu/libflashkit.so] [--quick] [--dtype bf16] [--csv out.csv]
"""
import argparse
import ctypes as C
import math
import sys

import torch
import torch.nn.functional as F
from triton.testing import do_bench

# ---- ctypes mirror of include/flashkit.h (keep in sync) ---------------------------------------------------
FK_MAX_DIMS = 4
FK_DTYPE = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.int32: 3, torch.int64: 4, torch.float64: 5}
FK_DEVICE_CUDA = 2


class fk_device(C.Structure):
    _fields_ = [("kind", C.c_int), ("index", C.c_int)]


class fk_tensor(C.Structure):
    _fields_ = [("data", C.c_void_p), ("dtype", C.c_int), ("device", fk_device), ("ndim", C.c_int),
                ("shape", C.c_int64 * FK_MAX_DIMS), ("stride", C.c_int64 * FK_MAX_DIMS)]


class fk_rmsnorm_args(C.Structure):
    _fields_ = [("x", fk_tensor), ("residual", fk_tensor), ("residual_out", fk_tensor), ("weight", fk_tensor),
                ("y", fk_tensor), ("rstd", fk_tensor), ("dy", fk_tensor), ("dresidual_out", fk_tensor),
                ("dx", fk_tensor), ("dweight", fk_tensor), ("eps", C.c_float), ("weight_offset", C.c_float),
                ("deterministic", C.c_int)]


class fk_rope_args(C.Structure):
    _fields_ = [("q", fk_tensor), ("k", fk_tensor), ("q_out", fk_tensor), ("k_out", fk_tensor),
                ("positions", fk_tensor), ("cos", fk_tensor), ("sin", fk_tensor), ("rotary_dim", C.c_int64),
                ("interleaved", C.c_int), ("pos_offset", C.c_int64), ("base", C.c_float)]


class fk_swiglu_args(C.Structure):
    _fields_ = [("gate", fk_tensor), ("up", fk_tensor), ("out", fk_tensor), ("dout", fk_tensor),
                ("dgate", fk_tensor), ("dup", fk_tensor)]


def fk_t(t):
    d = fk_tensor()
    if t is None:
        return d
    d.data = t.data_ptr()
    d.dtype = FK_DTYPE[t.dtype]
    d.device = fk_device(FK_DEVICE_CUDA, t.device.index or 0)
    d.ndim = t.dim()
    for i in range(t.dim()):
        d.shape[i] = t.shape[i]
        d.stride[i] = t.stride(i)
    return d


class Flashkit:
    def __init__(self, path):
        self.lib = C.CDLL(path)
        L = self.lib
        L.fk_context_init.argtypes = [fk_device, C.c_void_p, C.POINTER(C.c_void_p)]
        L.fk_last_error_message.restype = C.c_char_p
        for name, at in (("rmsnorm", fk_rmsnorm_args), ("rope", fk_rope_args), ("swiglu", fk_swiglu_args)):
            getattr(L, "fk_%s_args_init" % name).argtypes = [C.POINTER(at)]
            getattr(L, "fk_%s_fwd" % name).argtypes = [C.c_void_p, C.POINTER(at), C.c_void_p]
        L.fk_rope_bwd.argtypes = [C.c_void_p, C.POINTER(fk_rope_args), C.c_void_p]
        L.fk_swiglu_bwd.argtypes = [C.c_void_p, C.POINTER(fk_swiglu_args), C.c_void_p]
        L.fk_rmsnorm_bwd_workspace_size.argtypes = [C.c_void_p, C.POINTER(fk_rmsnorm_args), C.POINTER(C.c_size_t)]
        L.fk_rmsnorm_bwd.argtypes = [C.c_void_p, C.POINTER(fk_rmsnorm_args), C.c_void_p, C.c_size_t, C.c_void_p]
        self.ctx = C.c_void_p()
        self.check(L.fk_context_init(fk_device(FK_DEVICE_CUDA, torch.cuda.current_device()), None,
                                     C.byref(self.ctx)), "fk_context_init")

    def check(self, st, what):
        if st != 0:
            raise RuntimeError("%s: status %d: %s" % (what, st, self.lib.fk_last_error_message().decode()))

    @staticmethod
    def stream():
        return C.c_void_p(torch.cuda.current_stream().cuda_stream)

    def args(self, kind, **tensors):
        a = {"rmsnorm": fk_rmsnorm_args, "rope": fk_rope_args, "swiglu": fk_swiglu_args}[kind]()
        getattr(self.lib, "fk_%s_args_init" % kind)(C.byref(a))
        for k, v in tensors.items():
            setattr(a, k, fk_t(v) if isinstance(v, torch.Tensor) else v)
        return a


def bench(fn):
    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def nbytes(*ts):
    return sum(t.numel() * t.element_size() for t in ts)


# ---- PyTorch versions of the same math --------------------------------------------------------------------
EPS = 1e-6


def rms_builtin(x, w):
    return F.rms_norm(x, (x.shape[-1],), w, EPS)


def rms_written(x, w):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + EPS) * w.float()).to(x.dtype)


def rms_residual(x, r, w):
    h = x + r
    return rms_builtin(h, w), h


def swiglu(a, b):
    return F.silu(a) * b


def rope_half(q, k, cos, sin):  # q, k: (B, S, H, D); cos, sin: (S, 1, D) in fp32, the halves repeated
    def rot(x):
        xf = x.float()
        x1, x2 = xf.chunk(2, dim=-1)
        return (xf * cos + torch.cat((-x2, x1), dim=-1) * sin).to(x.dtype)

    return rot(q), rot(k)


_compiled = {}


def compiled(fn):
    if fn not in _compiled:
        # dynamic=False: one static-shape compile per size (automatic dynamic shapes would turn later sizes
        # into slower symbolic-shape kernels and understate torch.compile)
        _compiled[fn] = torch.compile(fn, dynamic=False)
    return _compiled[fn]


def torch_times(fn, inputs, grad_outs, nbytes_fwd, nbytes_bwd):
    """(eager fwd, compile fwd, eager bwd, compile bwd) GB/s; bwd None when grad_outs is None."""
    res = []
    for f in (fn, compiled(fn)):
        res.append(nbytes_fwd / bench(lambda: f(*inputs)) * 1e-6)
    if grad_outs is None:
        return res + [None, None]
    for f in (fn, compiled(fn)):
        ins = [t.detach().requires_grad_(t.is_floating_point()) for t in inputs]
        outs = f(*ins)
        outs = outs if isinstance(outs, tuple) else (outs,)
        leaves = [t for t in ins if t.requires_grad]
        res.append(nbytes_bwd / bench(lambda: torch.autograd.grad(outs, leaves, grad_outs, retain_graph=True)) * 1e-6)
        del outs, ins, leaves
    return res


# ---- the cases ------------------------------------------------------------------------------------------------
def case_rmsnorm(fk, T, H, dt, residual, sweep_torch=True):
    x, w = torch.randn(T, H, device="cuda", dtype=dt), torch.randn(H, device="cuda", dtype=dt)
    r = torch.randn_like(x) if residual else None
    y, rstd = torch.empty_like(x), torch.empty(T, device="cuda", dtype=torch.float32)
    h = torch.empty_like(x) if residual else None
    a = fk.args("rmsnorm", x=x, weight=w, y=y, rstd=rstd, eps=EPS)
    if residual:
        a.residual, a.residual_out = fk_t(r), fk_t(h)
    run = lambda: fk.check(fk.lib.fk_rmsnorm_fwd(fk.ctx, C.byref(a), fk.stream()), "fk_rmsnorm_fwd")
    run()
    hh = (x.float() + r.float()).to(dt) if residual else x
    ref = rms_written(hh, w)
    err = (y.float() - ref.float()).abs().max().item()
    b_fwd = nbytes(x, w, y, rstd) + (nbytes(r, h) if residual else 0)
    t_fwd = bench(run)
    # backward: h (x or residual_out), dy, w, rstd (and with the fused add, dresidual_out: the gradient of the
    # residual stream h, which the next layer reads) -> dx, dweight (the torch bwd also produces dx only once: with
    # the fused add, dx is the gradient of both x and residual)
    dy, dx, dw = torch.randn_like(x), torch.empty_like(x), torch.empty_like(w)
    dres = torch.randn_like(x) if residual else None
    hb = h if residual else x
    b_ = fk.args("rmsnorm", x=hb, weight=w, rstd=rstd, dy=dy, dx=dx, dweight=dw, eps=EPS)
    if residual:
        b_.dresidual_out = fk_t(dres)
    wsz = C.c_size_t()
    fk.check(fk.lib.fk_rmsnorm_bwd_workspace_size(fk.ctx, C.byref(b_), C.byref(wsz)), "workspace_size")
    ws = torch.empty(max(wsz.value, 1), device="cuda", dtype=torch.uint8)
    runb = lambda: fk.check(fk.lib.fk_rmsnorm_bwd(fk.ctx, C.byref(b_), C.c_void_p(ws.data_ptr()), wsz.value,
                                                  fk.stream()), "fk_rmsnorm_bwd")
    runb()
    xr = hb.detach().float().requires_grad_()
    wr = w.detach().float().requires_grad_()
    gx, gw = torch.autograd.grad(rms_written(xr, wr).float(), (xr, wr), dy.float())
    if residual:
        gx = gx + dres.float()
    errb = max((dx.float() - gx).abs().max().item(), (dw.float() - gw).abs().max().item() / math.sqrt(T))
    b_bwd = nbytes(hb, dy, w, rstd, dx, dw) + (nbytes(dres) if residual else 0)
    t_bwd = bench(runb)
    # deterministic = 1 (a GPU keeps the static rows; the default 0 may hand the last rows out at run time)
    b_.deterministic = 1
    fk.check(fk.lib.fk_rmsnorm_bwd_workspace_size(fk.ctx, C.byref(b_), C.byref(wsz)), "workspace_size")
    ws = torch.empty(max(wsz.value, 1), device="cuda", dtype=torch.uint8)
    runb()
    errd = max((dx.float() - gx).abs().max().item(), (dw.float() - gw).abs().max().item() / math.sqrt(T))
    t_det = bench(runb)
    b_.deterministic = 0
    rows = []
    name = "rmsnorm+residual" if residual else "rmsnorm"
    if sweep_torch:
        if residual:
            tt = torch_times(rms_residual, (x, r, w), (dy, dres), b_fwd, b_bwd)
        else:
            tt = torch_times(rms_builtin, (x, w), (dy,), b_fwd, b_bwd)
    else:
        tt = [None] * 4
    rows.append(dict(op=name, pass_="fwd", shape="%dx%d" % (T, H), fk=b_fwd / t_fwd * 1e-6, eager=tt[0],
                     comp=tt[1], err=err, nbytes=b_fwd))
    rows.append(dict(op=name, pass_="bwd", shape="%dx%d" % (T, H), fk=b_bwd / t_bwd * 1e-6, eager=tt[2],
                     comp=tt[3], err=errb, nbytes=b_bwd))
    rows.append(dict(op=name + " (deterministic)", pass_="bwd", shape="%dx%d" % (T, H), fk=b_bwd / t_det * 1e-6,
                     eager=tt[2], comp=tt[3], err=errd, nbytes=b_bwd))
    if not residual and H == 4096 and sweep_torch:  # the written-out eager version (BENCHMARKS.md's second row)
        tw = torch_times(rms_written, (x, w), None, b_fwd, None)
        rows.append(dict(op="rmsnorm (torch written out)", pass_="fwd", shape="%dx%d" % (T, H),
                         fk=b_fwd / t_fwd * 1e-6, eager=tw[0], comp=tw[1], err=err, nbytes=b_fwd))
    return rows


def case_swiglu(fk, T, W, dt):
    g, u = torch.randn(T, W, device="cuda", dtype=dt) * 2, torch.randn(T, W, device="cuda", dtype=dt)
    o = torch.empty_like(g)
    a = fk.args("swiglu", gate=g, up=u, out=o)
    run = lambda: fk.check(fk.lib.fk_swiglu_fwd(fk.ctx, C.byref(a), fk.stream()), "fk_swiglu_fwd")
    run()
    err = (o.float() - swiglu(g.float(), u.float())).abs().max().item()
    t_fwd = bench(run)
    d, dg, du = torch.randn_like(g), torch.empty_like(g), torch.empty_like(g)
    b_ = fk.args("swiglu", gate=g, up=u, dout=d, dgate=dg, dup=du)
    runb = lambda: fk.check(fk.lib.fk_swiglu_bwd(fk.ctx, C.byref(b_), fk.stream()), "fk_swiglu_bwd")
    runb()
    gr, ur = g.float().requires_grad_(), u.float().requires_grad_()
    rg, ru = torch.autograd.grad(swiglu(gr, ur), (gr, ur), d.float())
    errb = max((dg.float() - rg).abs().max().item(), (du.float() - ru).abs().max().item())
    t_bwd = bench(runb)
    b_fwd, b_bwd = nbytes(g, u, o), nbytes(g, u, d, dg, du)
    tt = torch_times(swiglu, (g, u), (d,), b_fwd, b_bwd)
    s = "%dx%d" % (T, W)
    return [dict(op="swiglu", pass_="fwd", shape=s, fk=b_fwd / t_fwd * 1e-6, eager=tt[0], comp=tt[1], err=err,
                 nbytes=b_fwd),
            dict(op="swiglu", pass_="bwd", shape=s, fk=b_bwd / t_bwd * 1e-6, eager=tt[2], comp=tt[3], err=errb,
                 nbytes=b_bwd)]


def case_rope(fk, T, H, D, dt):
    B = 4
    S = T // B
    q, k = (torch.randn(B, S, H, D, device="cuda", dtype=dt) for _ in range(2))
    inv = 1.0 / (10000.0 ** (torch.arange(0, D, 2, device="cuda", dtype=torch.float64) / D))
    ang = torch.arange(S, device="cuda", dtype=torch.float64)[:, None] * inv[None, :]
    cos, sin = ang.cos().float().contiguous(), ang.sin().float().contiguous()  # (S, D/2)
    cf, sf = torch.cat((cos, cos), -1)[:, None, :], torch.cat((sin, sin), -1)[:, None, :]  # (S, 1, D)
    qo, ko = torch.empty_like(q), torch.empty_like(k)
    a = fk.args("rope", q=q, k=k, q_out=qo, k_out=ko, cos=cos, sin=sin)
    run = lambda: fk.check(fk.lib.fk_rope_fwd(fk.ctx, C.byref(a), fk.stream()), "fk_rope_fwd")
    run()
    rq, rk = rope_half(q, k, cf, sf)
    err = max((qo.float() - rq.float()).abs().max().item(), (ko.float() - rk.float()).abs().max().item())
    t_fwd = bench(run)
    runb = lambda: fk.check(fk.lib.fk_rope_bwd(fk.ctx, C.byref(a), fk.stream()), "fk_rope_bwd")
    runb()
    rq, rk = rope_half(q, k, cf, -sf)  # the inverse rotation
    errb = max((qo.float() - rq.float()).abs().max().item(), (ko.float() - rk.float()).abs().max().item())
    t_bwd = bench(runb)
    b = nbytes(q, k, qo, ko, cos, sin)
    tt = torch_times(lambda q_, k_: rope_half(q_, k_, cf, sf), (q, k), (torch.randn_like(q), torch.randn_like(k)),
                     b, b)
    s = "%dx%dx%d" % (T, H, D)
    return [dict(op="rope q+k half-split", pass_="fwd", shape=s, fk=b / t_fwd * 1e-6, eager=tt[0], comp=tt[1], err=err,
                 nbytes=b),
            dict(op="rope q+k half-split", pass_="bwd", shape=s, fk=b / t_bwd * 1e-6, eager=tt[2], comp=tt[3],
                 err=errb, nbytes=b)]


def copy_bandwidth(nbytes=2 << 30):
    """GB/s of a device copy moving nbytes in all (nbytes / 2 read, nbytes / 2 written); default: a 1 GiB copy."""
    n = int(nbytes) // 2
    src = torch.randint(0, 255, (n,), device="cuda", dtype=torch.uint8)
    dst = torch.empty_like(src)
    return 2 * n / bench(lambda: dst.copy_(src)) * 1e-6


def fmt(v, f="%.0f"):
    return "-" if v is None else f % v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", default="build-gpu/libflashkit.so")
    ap.add_argument("--quick", action="store_true", help="benchmark sizes only (no hidden-size sweep)")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f16", "f32"])
    ap.add_argument("--csv", default=None)
    args = ap.parse_args()
    dt = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[args.dtype]
    torch.manual_seed(0)
    torch._dynamo.config.cache_size_limit = 256  # every size of the sweep compiled once, none evicted
    fk = Flashkit(args.lib)
    print("device: %s; torch %s; dtype %s" % (torch.cuda.get_device_name(), torch.__version__, args.dtype), flush=True)
    copy = copy_bandwidth()
    print("copy bandwidth (read + write): %.0f GB/s" % copy, flush=True)
    T = 16384
    rows = []

    same = {}  # a copy of each op's own byte count, timed the same way: what a copy of that size reaches

    def add(rs):
        for r in rs:
            if r["nbytes"] not in same:
                same[r["nbytes"]] = copy_bandwidth(r["nbytes"])
            r["same"] = same[r["nbytes"]]
            rows.append(r)
            print("%-28s %s %-14s flashkit %6.0f GB/s (%.2f of copy)  eager %s  compile %s  err %.2e" % (
                r["op"], r["pass_"], r["shape"], r["fk"], r["fk"] / copy, fmt(r["eager"]), fmt(r["comp"]), r["err"]),
                flush=True)
            torch.cuda.empty_cache()

    add(case_rmsnorm(fk, T, 4096, dt, False))
    add(case_rmsnorm(fk, T, 4096, dt, True))
    add(case_swiglu(fk, T, 11008, dt))
    add(case_rope(fk, T, 32, 128, dt))
    if not args.quick:
        for H in (2048, 5120, 8192):
            add(case_rmsnorm(fk, T, H, dt, False))
            add(case_rmsnorm(fk, T, H, dt, True))
        for W in (2048, 4096, 5120, 8192):
            add(case_swiglu(fk, T, W, dt))

    if args.csv:
        with open(args.csv, "w") as f:
            f.write("op,pass,shape,flashkit_gbs,frac_copy,same_bytes_copy_gbs,eager_gbs,compile_gbs,vs_compile,err\n")
            for r in rows:
                vs = r["fk"] / r["comp"] if r["comp"] else float("nan")
                f.write("%s,%s,%s,%.1f,%.3f,%.1f,%s,%s,%.3f,%.3e\n" % (r["op"], r["pass_"], r["shape"], r["fk"],
                        r["fk"] / copy, r["same"], fmt(r["eager"], "%.1f"), fmt(r["comp"], "%.1f"), vs, r["err"]))

    print()
    print("## fused ops, %s, GB/s (copy %.0f GB/s, %s)" % (args.dtype, copy, torch.cuda.get_device_name()))
    print("| op | pass | shape | flashkit | of copy | same-bytes copy | of it | eager | compile | vs compile |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        vs = r["fk"] / r["comp"] if r["comp"] else None
        print("| %s | %s | %s | %.0f | %.0f%% | %.0f | %.0f%% | %s | %s | %s |" % (
              r["op"], r["pass_"], r["shape"], r["fk"], 100 * r["fk"] / copy, r["same"], 100 * r["fk"] / r["same"],
              fmt(r["eager"]), fmt(r["comp"]), fmt(vs, "%.2fx")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
