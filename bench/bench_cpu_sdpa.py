"""flashkit's CPU attention against PyTorch's CPU SDPA (torch.nn.functional.scaled_dot_product_attention), both
called from Python in one process, fp32, the same thread count for both (torch.set_num_threads(T) and
flashkit.set_num_threads(T)).

Each case times forward alone and forward + backward, the two libraries in turn (flashkit, torch, flashkit,
torch, ...) after one warm-up pair; it prints each one's median and the median of the per-pair ratios
torch / flashkit (> 1: flashkit faster), so that drift of a shared machine's speed cancels pair by pair.
Each library gets its own layout with no copy in the timed region: flashkit (B, S, H, D), torch (B, H, S, D).
Forward + backward: out = f(q, k, v) with q, k, v requiring grad, then out.backward(dout) (torch autograd for
both: flashkit's functions are torch custom ops with the C backward behind them). Before timing, each case
checks that the two agree (max |difference| of out and of dq, dk, dv is printed).

Run:  python bench/bench_cpu_sdpa.py [--threads 2] [--seqlens 512,2048,4096] [--dims 64,128] [--heads 8]
      [--pairs-budget 20]  (pairs per case: the budget in seconds over one pair's time, clamped to 5..31)
with the package installed (pip install ./python), or FLASHKIT_LIBRARY=.../libflashkit.so PYTHONPATH=python.
"""
import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

import flashkit


def _timed(f):
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def _pairs(fa, fb, n):
    ta, tb, ratio = [], [], []
    fa(), fb()  # warm-up pair
    for _ in range(n):
        a = _timed(fa)
        b = _timed(fb)
        ta.append(a)
        tb.append(b)
        ratio.append(b / a)
    return statistics.median(ta), statistics.median(tb), statistics.median(ratio), min(ratio), max(ratio)


def case(B, H, S, D, causal, budget, gen):
    # flashkit layout (B, S, H, D); torch's SDPA wants (B, H, S, D): the same numbers, each in its own layout,
    # made contiguous once here.
    q, k, v, do = (torch.randn(B, S, H, D, generator=gen) for _ in range(4))
    fq, fk, fv = (x.clone().requires_grad_(True) for x in (q, k, v))
    tq, tk, tv = (x.transpose(1, 2).contiguous().requires_grad_(True) for x in (q, k, v))
    tdo = do.transpose(1, 2).contiguous()

    def fk_fwd():
        with torch.no_grad():
            return flashkit.flash_attn_func(fq, fk, fv, causal=causal)

    def th_fwd():
        with torch.no_grad():
            return F.scaled_dot_product_attention(tq, tk, tv, is_causal=causal)

    def fk_fb():
        for x in (fq, fk, fv):
            x.grad = None
        flashkit.flash_attn_func(fq, fk, fv, causal=causal).backward(do)

    def th_fb():
        for x in (tq, tk, tv):
            x.grad = None
        F.scaled_dot_product_attention(tq, tk, tv, is_causal=causal).backward(tdo)

    # agreement (the same math: scale 1/sqrt(D), causal aligned top-left == bottom-right at Sq == Sk)
    diff_o = (fk_fwd() - th_fwd().transpose(1, 2)).abs().max().item()
    fk_fb()
    th_fb()
    diff_g = max((a.grad - b.grad.transpose(1, 2)).abs().max().item() for a, b in ((fq, tq), (fk, tk), (fv, tv)))

    rows = []
    for name, fa, fb in (("fwd", fk_fwd, th_fwd), ("fwd+bwd", fk_fb, th_fb)):
        one = _timed(fa) + _timed(fb)
        n = max(5, min(31, int(budget / max(one, 1e-9))))
        rows.append((name, n) + _pairs(fa, fb, n))
    return rows, diff_o, diff_g


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--seqlens", default="512,2048,4096")
    ap.add_argument("--dims", default="64,128")
    ap.add_argument("--causal", default="0,1")
    ap.add_argument("--pairs-budget", type=float, default=20.0, help="seconds of timed pairs per case and pass")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    flashkit.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    print(f"python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"flashkit {flashkit.version()} ({flashkit.get_num_threads()} threads, {flashkit.build_info()['library']})")
    print(f"torch CPU capability: {torch.backends.cpu.get_cpu_capability()}")
    print("| D | seqlen | causal | pass | pairs | flashkit ms | torch SDPA ms | torch / flashkit (median, min-max) "
          "| max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    for D in (int(x) for x in args.dims.split(",")):
        for S in (int(x) for x in args.seqlens.split(",")):
            for causal in (bool(int(x)) for x in args.causal.split(",")):
                rows, diff_o, diff_g = case(args.batch, args.heads, S, D, causal, args.pairs_budget, gen)
                for name, n, ta, tb, r, rlo, rhi in rows:
                    diff = diff_o if name == "fwd" else diff_g
                    print(f"| {D} | {S} | {'yes' if causal else 'no'} | {name} | {n} | {ta * 1e3:.1f} | "
                          f"{tb * 1e3:.1f} | **{r:.2f}x** ({rlo:.2f}-{rhi:.2f}) | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
