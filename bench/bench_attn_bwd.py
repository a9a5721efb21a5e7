#!/usr/bin/env python3
"""Attention backward benchmark: flashkit against PyTorch SDPA's flash (FlashAttention-2) and cuDNN backends, one
process, one GPU. Protocol (shared/BENCHMARKS.md): random bf16 inputs, triton do_bench median, B*S = 16384 tokens,
H*D = 2048; FLOPs = 2.5 * 4*B*H*S^2*D, halved when causal. Only the backward is timed: torch through
torch.autograd.grad(out, (q, k, v), dout, retain_graph=True) (the backend's own dot(dO, O), main and dQ-convert
kernels); flashkit through one fk_attn_bwd call (prep, main, convert) with o and lse from torch's flash forward.
Each row spot-checks flashkit's dq, dk, dv against FA2's (max abs difference, batch 0).

Usage: python3 bench/bench_attn_bwd.py [--lib build-gpu/libflashkit.so] [--quick] [--det] [--csv out.csv]
Falls back to the dev shim build-bwd/dev/libfkbwd.so (dev/cuda/build_bwd.sh) while the library has no working
fk_attn_bwd (src/core/attn.c not landed).
"""
import argparse
import ctypes as C
import os
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from triton.testing import do_bench

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_attn import FK_DEVICE_CUDA, fk_attn_args, fk_device, fk_t  # noqa: E402  (the ctypes mirror)


class Flashkit:
    def __init__(self, lib_path, shim_path):
        self.mode = None
        lib = C.CDLL(lib_path) if os.path.exists(lib_path) else None
        if lib is not None and hasattr(lib, "fk_attn_bwd"):
            lib.fk_context_init.argtypes = [fk_device, C.c_void_p, C.POINTER(C.c_void_p)]
            lib.fk_attn_bwd.argtypes = [C.c_void_p, C.POINTER(fk_attn_args), C.c_void_p, C.c_size_t, C.c_void_p]
            lib.fk_attn_bwd_workspace_size.argtypes = [C.c_void_p, C.POINTER(fk_attn_args), C.POINTER(C.c_size_t)]
            lib.fk_attn_args_init.argtypes = [C.POINTER(fk_attn_args)]
            lib.fk_last_error_message.restype = C.c_char_p
            self.ctx = C.c_void_p()
            if lib.fk_context_init(fk_device(FK_DEVICE_CUDA, torch.cuda.current_device()), None, C.byref(self.ctx)) == 0:
                self.lib = lib
                self.mode = "libflashkit fk_attn_bwd"
                probe = self._probe()
                if probe is not None:
                    self.mode = None
                    print("libflashkit fk_attn_bwd not usable (%s); using the dev shim" % probe)
        if self.mode is None:
            self.shim = C.CDLL(shim_path)
            self.shim.fkdev_attn_bwd_ws.argtypes = [C.POINTER(fk_attn_args), C.POINTER(C.c_size_t)]
            self.shim.fkdev_attn_bwd.argtypes = [C.POINTER(fk_attn_args), C.c_void_p, C.c_size_t, C.c_void_p]
            self.mode = "dev shim fkdev_attn_bwd"

    def _probe(self):
        q = torch.randn(1, 128, 2, 64, device="cuda", dtype=torch.bfloat16)
        lse = torch.zeros(1, 2, 128, device="cuda")
        try:
            a = self.args(q, q, q, q, lse, q, torch.empty_like(q), torch.empty_like(q), torch.empty_like(q), False, 0)
            self.bwd(a, self.workspace(a))
            return None
        except RuntimeError as e:
            return str(e)

    def args(self, q, k, v, o, lse, do, dq, dk, dv, causal, det):
        a = fk_attn_args()
        if self.mode.startswith("libflashkit"):
            self.lib.fk_attn_args_init(C.byref(a))
        else:
            a.window_left = a.window_right = -1
        a.q, a.k, a.v, a.o, a.lse = fk_t(q), fk_t(k), fk_t(v), fk_t(o), fk_t(lse)
        a.do_, a.dq, a.dk, a.dv = fk_t(do), fk_t(dq), fk_t(dk), fk_t(dv)
        a.causal, a.deterministic = int(causal), int(det)
        return a

    def workspace(self, a):
        n = C.c_size_t()
        if self.mode.startswith("libflashkit"):
            st = self.lib.fk_attn_bwd_workspace_size(self.ctx, C.byref(a), C.byref(n))
        else:
            st = self.shim.fkdev_attn_bwd_ws(C.byref(a), C.byref(n))
        if st != 0:
            raise RuntimeError("workspace size: status %d" % st)
        return torch.empty(max(n.value, 1), dtype=torch.uint8, device="cuda")

    def bwd(self, a, ws):
        stream = C.c_void_p(torch.cuda.current_stream().cuda_stream)
        if self.mode.startswith("libflashkit"):
            st = self.lib.fk_attn_bwd(self.ctx, C.byref(a), C.c_void_p(ws.data_ptr()), ws.numel(), stream)
            if st != 0:
                raise RuntimeError("fk_attn_bwd: %d %s" % (st, self.lib.fk_last_error_message().decode()))
        else:
            st = self.shim.fkdev_attn_bwd(C.byref(a), C.c_void_p(ws.data_ptr()), ws.numel(), stream)
            if st != 0:
                raise RuntimeError("fkdev_attn_bwd: status %d" % st)


def sdpa(q, k, v, causal):  # (B, S, H, D) in and out
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                          is_causal=causal).transpose(1, 2)


def torch_bwd_time(backend, q, k, v, do, causal):
    qq, kk, vv = (x.detach().requires_grad_() for x in (q, k, v))
    with sdpa_kernel(backend):
        out = sdpa(qq, kk, vv, causal)
        t = do_bench(lambda: torch.autograd.grad(out, (qq, kk, vv), do, retain_graph=True), warmup=25, rep=100,
                     return_mode="median")
        grads = torch.autograd.grad(out, (qq, kk, vv), do, retain_graph=True)
    return t, grads


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", default="build-gpu/libflashkit.so")
    ap.add_argument("--shim", default="build-bwd/dev/libfkbwd.so")
    ap.add_argument("--quick", action="store_true", help="seqlen 2048 and 8192 only")
    ap.add_argument("--dims", default="64,128,256")
    ap.add_argument("--det", action="store_true", help="also time flashkit's deterministic mode")
    ap.add_argument("--csv", default=None)
    args = ap.parse_args()
    torch.manual_seed(0)
    fk = Flashkit(args.lib, args.shim)
    dev = torch.cuda.get_device_name()
    print("device: %s; torch %s; flashkit via %s" % (dev, torch.__version__, fk.mode), flush=True)
    seqlens = [2048, 8192] if args.quick else [512, 1024, 2048, 4096, 8192, 16384]
    rows = []
    for D in [int(x) for x in args.dims.split(",")]:
        for S in seqlens:
            for causal in (False, True):
                B, H = 16384 // S, 2048 // D
                q, k, v, do = (torch.randn(B, S, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(4))
                # o and lse from torch's flash forward (lse is (B, H, S) fp32)
                with torch.no_grad():
                    res = torch.ops.aten._scaled_dot_product_flash_attention(
                        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), 0.0, causal)
                o, lse = res[0].transpose(1, 2), res[1].contiguous()
                dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
                a = fk.args(q, k, v, o, lse, do, dq, dk, dv, causal, 0)
                ws = fk.workspace(a)
                flops = 2.5 * 4.0 * B * H * S * S * D / (2 if causal else 1)
                t_fk = do_bench(lambda: fk.bwd(a, ws), warmup=25, rep=100, return_mode="median")
                t_det = float("nan")
                if args.det:
                    a_det = fk.args(q, k, v, o, lse, do, dq, dk, dv, causal, 1)
                    ws_det = fk.workspace(a_det)
                    t_det = do_bench(lambda: fk.bwd(a_det, ws_det), warmup=25, rep=100, return_mode="median")
                    del ws_det
                t_fa2, g_fa2 = torch_bwd_time(SDPBackend.FLASH_ATTENTION, q, k, v, do, causal)
                try:
                    t_cudnn, _ = torch_bwd_time(SDPBackend.CUDNN_ATTENTION, q, k, v, do, causal)
                except RuntimeError:
                    t_cudnn = float("nan")
                fk.bwd(a, ws)
                torch.cuda.synchronize()
                err = max((x[:1].float() - y[:1].float()).abs().max().item() for x, y in zip((dq, dk, dv), g_fa2))
                ref = max(y[:1].float().abs().max().item() for y in g_fa2)
                tf = lambda t: flops / t * 1e-9
                r = dict(D=D, S=S, BH="%dx%d" % (B, H), causal=int(causal), fk=tf(t_fk), det=tf(t_det), fa2=tf(t_fa2),
                         cudnn=tf(t_cudnn), err=err, ref=ref)
                rows.append(r)
                print("D=%d S=%d %s causal=%d  flashkit %.1f (det %.1f)  FA2 %.1f  cuDNN %.1f TFLOP/s  |fk-FA2| %.2e (max|g| %.2e)"
                      % (D, S, r["BH"], causal, r["fk"], r["det"], r["fa2"], r["cudnn"], err, ref), flush=True)
                del q, k, v, do, o, lse, dq, dk, dv, ws, g_fa2, res
                torch.cuda.empty_cache()
    if args.csv:
        with open(args.csv, "w") as f:
            f.write("D,S,BxH,causal,flashkit,flashkit_det,fa2,cudnn,ratio_fa2,ratio_cudnn,diff_fa2\n")
            for r in rows:
                f.write("%d,%d,%s,%d,%.1f,%.1f,%.1f,%.1f,%.3f,%.3f,%.3g\n" % (
                    r["D"], r["S"], r["BH"], r["causal"], r["fk"], r["det"], r["fa2"], r["cudnn"], r["fk"] / r["fa2"],
                    r["fk"] / r["cudnn"], r["err"]))
    print("\n## attention backward, bf16, %s (TFLOP/s, do_bench median; flashkit via %s)" % (dev, fk.mode))
    print("| D | S | BxH | causal | flashkit | flashkit det | FA2 | cuDNN | vs FA2 | vs cuDNN | max abs fk-FA2 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| %d | %d | %s | %d | %.0f | %.0f | %.0f | %.0f | %.2f | %.2f | %.1e |" % (
            r["D"], r["S"], r["BH"], r["causal"], r["fk"], r["det"], r["fa2"], r["cudnn"], r["fk"] / r["fa2"],
            r["fk"] / r["cudnn"], r["err"]))
    gate = [r for r in rows if r["D"] in (64, 128) and r["S"] >= 2048]
    if gate:
        print("\nsummary: flashkit >= FA2 in %d of %d rows (D 64/128, S >= 2048); min ratio there %.2f" % (
            sum(1 for r in gate if r["fk"] >= r["fa2"]), len(gate), min(r["fk"] / r["fa2"] for r in gate)))


if __name__ == "__main__":
    main()
