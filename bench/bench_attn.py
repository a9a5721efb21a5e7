#!/usr/bin/env python3
"""Attention forward benchmark: flashkit (ctypes, build-gpu/libflashkit.so) against PyTorch SDPA with the flash
(FlashAttention-2) and cuDNN backends and a naive matmul-softmax-matmul, all in one process on one GPU.

Protocol (shared/BENCHMARKS.md): random bf16 inputs, triton.testing.do_bench median, B*S = 16384 tokens,
H*D = 2048; FLOPs = 4*B*H*Sq*Sk*D, halved when causal. Each row also spot-checks flashkit and FA2 against an
fp32 reference on batch 0, the first two heads (max abs error). The memory section compares peak extra memory
(torch.cuda.max_memory_allocated deltas, output included) of flashkit and naive at B=4, H=16, D=128, causal.

Usage: python3 bench/bench_attn.py [--lib build-gpu/libflashkit.so] [--quick] [--csv out.csv]
                                  [--dims 64,128,256] [--seqlens 2048,8192] [--no-mem]
If the library has no working fk_attn_fwd yet (src/core/attn.c not landed), the dev shim
build-cuda/dev/libfkdev.so (dev/cuda/build.sh) is used for the flashkit calls; the output says which.
"""
import argparse
import ctypes as C
import math
import os
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
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


class fk_attn_args(C.Structure):
    _fields_ = [("q", fk_tensor), ("k", fk_tensor), ("v", fk_tensor), ("o", fk_tensor), ("lse", fk_tensor),
                ("do_", fk_tensor), ("dq", fk_tensor), ("dk", fk_tensor), ("dv", fk_tensor),
                ("cu_seqlens_q", fk_tensor), ("cu_seqlens_k", fk_tensor),
                ("max_seqlen_q", C.c_int64), ("max_seqlen_k", C.c_int64),
                ("alibi_slopes", fk_tensor),
                ("softmax_scale", C.c_float), ("softcap", C.c_float), ("causal", C.c_int),
                ("window_left", C.c_int64), ("window_right", C.c_int64), ("deterministic", C.c_int)]


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
    def __init__(self, lib_path, shim_path):
        self.mode = None
        self.lib = C.CDLL(lib_path) if os.path.exists(lib_path) else None
        if self.lib is not None and hasattr(self.lib, "fk_attn_fwd"):
            self.lib.fk_context_init.argtypes = [fk_device, C.c_void_p, C.POINTER(C.c_void_p)]
            self.lib.fk_attn_fwd.argtypes = [C.c_void_p, C.POINTER(fk_attn_args), C.c_void_p, C.c_size_t, C.c_void_p]
            self.lib.fk_attn_args_init.argtypes = [C.POINTER(fk_attn_args)]
            self.lib.fk_last_error_message.restype = C.c_char_p
            self.ctx = C.c_void_p()
            st = self.lib.fk_context_init(fk_device(FK_DEVICE_CUDA, torch.cuda.current_device()), None,
                                          C.byref(self.ctx))
            if st == 0:
                self.mode = "libflashkit fk_attn_fwd"
        if self.mode is None:
            self.shim = C.CDLL(shim_path)
            self.shim.fkdev_attn_fwd.argtypes = [C.POINTER(fk_attn_args), C.c_void_p]
            self.mode = "dev shim fkdev_attn_fwd (libflashkit has no usable fk_attn_fwd yet)"

    def args(self, q, k, v, o, lse, causal):
        a = fk_attn_args()
        if self.mode.startswith("libflashkit"):
            self.lib.fk_attn_args_init(C.byref(a))
        else:
            a.window_left = a.window_right = -1
        a.q, a.k, a.v, a.o, a.lse = fk_t(q), fk_t(k), fk_t(v), fk_t(o), fk_t(lse)
        a.causal = int(causal)
        return a

    def fwd(self, a):
        stream = C.c_void_p(torch.cuda.current_stream().cuda_stream)
        if self.mode.startswith("libflashkit"):
            st = self.lib.fk_attn_fwd(self.ctx, C.byref(a), None, 0, stream)
            if st != 0:
                raise RuntimeError("fk_attn_fwd: %d %s" % (st, self.lib.fk_last_error_message().decode()))
        else:
            st = self.shim.fkdev_attn_fwd(C.byref(a), stream)
            if st != 0:
                raise RuntimeError("fkdev_attn_fwd: status %d" % st)


def naive(q, k, v, causal):  # q, k, v: (B, S, H, D)
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    s = (qt @ kt.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    if causal:
        S = q.shape[1]
        s = s.masked_fill(torch.ones(S, S, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    return (s.softmax(-1) @ vt).transpose(1, 2)


def sdpa(q, k, v, causal):
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                          is_causal=causal).transpose(1, 2)


def bench(fn):
    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", default="build-gpu/libflashkit.so")
    ap.add_argument("--shim", default="build-cuda/dev/libfkdev.so")
    ap.add_argument("--quick", action="store_true", help="seqlen 2048 and 8192 only")
    ap.add_argument("--csv", default=None)
    ap.add_argument("--dims", default="64,128,256", help="head dims, comma-separated")
    ap.add_argument("--seqlens", default=None, help="seqlens, comma-separated (overrides --quick)")
    ap.add_argument("--no-mem", action="store_true", help="skip the memory/time-vs-naive section")
    args = ap.parse_args()
    torch.manual_seed(0)
    fk = Flashkit(args.lib, args.shim)
    dev = torch.cuda.get_device_name()
    print("device: %s; torch %s; flashkit via %s" % (dev, torch.__version__, fk.mode), flush=True)

    seqlens = [2048, 8192] if args.quick else [512, 1024, 2048, 4096, 8192, 16384]
    if args.seqlens:
        seqlens = [int(x) for x in args.seqlens.split(",")]
    rows = []
    for D in (int(x) for x in args.dims.split(",")):
        for S in seqlens:
            for causal in (False, True):
                B, H = 16384 // S, 2048 // D
                q, k, v = (torch.randn(B, S, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
                o = torch.empty_like(q)
                lse = torch.empty(B, H, S, device="cuda", dtype=torch.float32)
                a = fk.args(q, k, v, o, lse, causal)
                flops = 4.0 * B * H * S * S * D / (2 if causal else 1)
                t_fk = bench(lambda: fk.fwd(a))
                with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                    t_fa2 = bench(lambda: sdpa(q, k, v, causal))
                    ref_fa2 = sdpa(q, k, v, causal)
                try:
                    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                        t_cudnn = bench(lambda: sdpa(q, k, v, causal))
                except RuntimeError:
                    t_cudnn = float("nan")
                fk.fwd(a)
                torch.cuda.synchronize()
                # spot check on batch 0, heads 0..1, against fp32 math
                sl = (slice(0, 1), slice(None), slice(0, 2))
                with sdpa_kernel(SDPBackend.MATH):
                    ref = sdpa(q[sl].float(), k[sl].float(), v[sl].float(), causal)
                err_fk = (o[sl].float() - ref).abs().max().item()
                err_fa2 = (ref_fa2[sl].float() - ref).abs().max().item()
                tf = lambda t: flops / t * 1e-9
                r = dict(D=D, S=S, BH="%dx%d" % (B, H), causal=int(causal), fk=tf(t_fk), fa2=tf(t_fa2),
                         cudnn=tf(t_cudnn), ms_fk=t_fk, err_fk=err_fk, err_fa2=err_fa2)
                rows.append(r)
                print("D=%d S=%d %s causal=%d  flashkit %.1f  FA2 %.1f  cuDNN %.1f TFLOP/s  err %.2e (FA2 %.2e)" % (
                    D, S, r["BH"], causal, r["fk"], r["fa2"], r["cudnn"], err_fk, err_fa2), flush=True)
                del q, k, v, o, lse, ref, ref_fa2
                torch.cuda.empty_cache()

    # memory and time against naive: B=4, H=16, D=128, causal, seqlen 8192 (BENCHMARKS.md's table)
    mem = []
    for S in () if args.no_mem else (2048, 8192):
        B, H, D = 4, 16, 128
        q, k, v = (torch.randn(B, S, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))

        def run_fk():
            o = torch.empty_like(q)
            lse = torch.empty(B, H, S, device="cuda", dtype=torch.float32)
            fk.fwd(fk.args(q, k, v, o, lse, True))
            return o

        def peak(fn):
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            out = fn()
            torch.cuda.synchronize()
            p = torch.cuda.max_memory_allocated() - base
            del out
            return p

        m_fk, m_nv = peak(run_fk), peak(lambda: naive(q, k, v, True))
        t_fk, t_nv = bench(run_fk), bench(lambda: naive(q, k, v, True))
        mem.append((S, m_fk, m_nv, t_fk, t_nv))
        del q, k, v
        torch.cuda.empty_cache()

    if args.csv:
        with open(args.csv, "w") as f:
            f.write("D,S,BxH,causal,flashkit_tflops,fa2_tflops,cudnn_tflops,ratio_fa2,ratio_cudnn,err_fk,err_fa2\n")
            for r in rows:
                f.write("%d,%d,%s,%d,%.1f,%.1f,%.1f,%.3f,%.3f,%.3g,%.3g\n" % (
                    r["D"], r["S"], r["BH"], r["causal"], r["fk"], r["fa2"], r["cudnn"], r["fk"] / r["fa2"],
                    r["fk"] / r["cudnn"], r["err_fk"], r["err_fa2"]))

    print("\n## attention forward, bf16, %s (TFLOP/s, do_bench median; flashkit via %s)" % (dev, fk.mode))
    print("| D | S | BxH | causal | flashkit | FA2 | cuDNN | vs FA2 | vs cuDNN | err fk | err FA2 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| %d | %d | %s | %d | %.0f | %.0f | %.0f | %.2f | %.2f | %.1e | %.1e |" % (
            r["D"], r["S"], r["BH"], r["causal"], r["fk"], r["fa2"], r["cudnn"], r["fk"] / r["fa2"],
            r["fk"] / r["cudnn"], r["err_fk"], r["err_fa2"]))
    print("\n## extra memory and time vs naive, causal, bf16, B=4 H=16 D=128")
    print("| S | flashkit MiB | naive MiB | saved | flashkit ms | naive ms | speedup |")
    print("|---|---|---|---|---|---|---|")
    for S, m_fk, m_nv, t_fk, t_nv in mem:
        print("| %d | %.1f | %.1f | %.2f%% | %.3f | %.2f | %.1fx |" % (
            S, m_fk / 2**20, m_nv / 2**20, 100 * (1 - m_fk / m_nv), t_fk, t_nv, t_nv / t_fk))
    bad = [r for r in rows if r["fk"] < r["fa2"] and r["D"] in (64, 128, 256) and r["S"] >= 2048]
    print("\nsummary: %d rows; flashkit >= FA2 in %d of %d rows with S >= 2048; min ratio vs FA2 %.2f" % (
        len(rows), sum(1 for r in rows if r["S"] >= 2048) - len(bad), sum(1 for r in rows if r["S"] >= 2048),
        min(r["fk"] / r["fa2"] for r in rows)))


if __name__ == "__main__":
    main()
