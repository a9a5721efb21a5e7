"""Per-call overhead of the Python binding: the time of one flashkit call on a tiny problem (so the kernel
itself costs ~nothing), for NumPy and torch, against the floor of one bare ctypes call of the same C entry
point with prebuilt arguments. Attention is the real CPU kernel (src/cpu/attn.c) at [1, 1, 1, 8]: one query
and one key, so the kernel's own work is negligible and the time is the call's. Run with one thread (so no
OpenMP fork/join is in the figure): OMP_NUM_THREADS=1 python bench/bench_python_overhead.py  (with the package
installed, or FLASHKIT_LIBRARY=build/libflashkit.so PYTHONPATH=python).
"""
import ctypes
import platform
import time

import numpy as np

import flashkit
from flashkit import _arrays, _impl, _lib


def per_call_us(f, n=20000):
    for _ in range(200):
        f()
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            f()
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


def _np_fwd_bwd(q):
    out, lse, _ = flashkit.flash_attn_func(q, q, q, return_attn_probs=True)
    return flashkit.flash_attn_backward(out, q, q, q, out, lse)


def main():
    rows = []
    g = np.random.randn(1, 8).astype(np.float32)
    u = np.random.randn(1, 8).astype(np.float32)
    # the floor: fk_swiglu_fwd through ctypes with the args struct built once
    be = _arrays._backend("numpy")
    out = np.empty_like(g)
    a = _lib.new_args(_lib.fk_swiglu_args, _lib.SWIGLU_DEFAULTS)
    _impl._fill(a.gate, be, g, "gate")
    _impl._fill(a.up, be, u, "up")
    _impl._fill(a.out, be, out, "out")
    ctx = _lib.context(_lib.DEVICE_CPU, 0)
    ref = ctypes.byref(a)
    f = _lib.fn.swiglu_fwd
    rows.append(("bare ctypes fk_swiglu_fwd, prebuilt args [1,8]", per_call_us(lambda: f(ctx, ref, None))))
    rows.append(("flashkit.swiglu(numpy [1,8] x2)", per_call_us(lambda: flashkit.swiglu(g, u))))
    x, w = np.random.randn(1, 8).astype(np.float32), np.random.randn(8).astype(np.float32)
    rows.append(("flashkit.rms_norm(numpy [1,8])", per_call_us(lambda: flashkit.rms_norm(x, w))))
    # the attention floor: fk_attn_fwd through ctypes, args and workspace built once ([1,1,1,8]: one query, one
    # key, so the kernel itself is a few dozen flops)
    q = np.random.randn(1, 1, 1, 8).astype(np.float32)
    ao, al = np.empty_like(q), np.empty((1, 1, 1), np.float32)
    aa = _lib.new_args(_lib.fk_attn_args, _lib.ATTN_DEFAULTS)
    for field, x in (("q", q), ("k", q), ("v", q), ("o", ao), ("lse", al)):
        _impl._fill(getattr(aa, field), be, x, field)
    nws = ctypes.c_size_t(0)
    _lib.check(_lib.fn.attn_fwd_workspace_size(ctx, ctypes.byref(aa), ctypes.byref(nws)))
    ws = np.empty(max(nws.value, 1), np.uint8)
    wsp, aref, fa = ws.ctypes.data, ctypes.byref(aa), _lib.fn.attn_fwd
    rows.append(("bare ctypes fk_attn_fwd, prebuilt args + workspace [1,1,1,8]",
                 per_call_us(lambda: fa(ctx, aref, wsp, nws.value, None))))
    rows.append(("flashkit.flash_attn_func(numpy [1,1,1,8])", per_call_us(lambda: flashkit.flash_attn_func(q, q, q))))
    rows.append(("flashkit.flash_attn_func(numpy [1,1,1,8], return_attn_probs) + flash_attn_backward",
                 per_call_us(lambda: _np_fwd_bwd(q), n=5000)))
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        tg, tu = torch.from_numpy(g), torch.from_numpy(u)
        rows.append(("torch.empty_like (an allocation, for scale)", per_call_us(lambda: torch.empty_like(tg))))
        rows.append(("flashkit.swiglu(torch CPU [1,8] x2), no grad", per_call_us(lambda: flashkit.swiglu(tg, tu))))
        tq = torch.from_numpy(np.random.randn(1, 1, 1, 8).astype(np.float32))
        rows.append(("flashkit.flash_attn_func(torch CPU [1,1,1,8]), no grad",
                     per_call_us(lambda: flashkit.flash_attn_func(tq, tq, tq))))
        tr = tq.clone().requires_grad_(True)
        rows.append(("flashkit.flash_attn_func(torch CPU, requires_grad) fwd only",
                     per_call_us(lambda: flashkit.flash_attn_func(tr, tr, tr), n=5000)))

        def fwd_bwd():
            tr.grad = None
            flashkit.flash_attn_func(tr, tr, tr).sum().backward()

        rows.append(("flashkit.flash_attn_func(torch CPU, requires_grad) fwd + .sum().backward()",
                     per_call_us(fwd_bwd, n=2000)))
        tt = tq.transpose(1, 2).contiguous()
        sdpa = torch.nn.functional.scaled_dot_product_attention
        rows.append(("torch SDPA (torch CPU [1,1,1,8] as (B,H,S,D)), no grad, for scale",
                     per_call_us(lambda: sdpa(tt, tt, tt))))
    print(f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__ if torch else '-'}, "
          f"{platform.processor() or platform.machine()}, flashkit threads {flashkit.get_num_threads()}, "
          f"torch threads {torch.get_num_threads() if torch else '-'}, library {_lib.LIBRARY_PATH}")
    for name, us in rows:
        print(f"{us:8.2f} us  {name}")


if __name__ == "__main__":
    main()
