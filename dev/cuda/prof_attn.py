# One attention call for ncu, flashkit (the library) or PyTorch's flash backend (FA2), bf16, the benchmark shape
# (B*S = 16384 tokens, H*D = 2048): python3 dev/cuda/prof_attn.py {fk,fa2} {fwd,bwd} D S causal [lib]
# Each side runs its call 3 times (ncu -c 1 -k <kernel regex> profiles one launch of the main kernel).
import os
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
who, what, D, S, causal = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), bool(int(sys.argv[5]))
lib = sys.argv[6] if len(sys.argv) > 6 else "build-gpu/libflashkit.so"
B, H = 16384 // S, 2048 // D
q, k, v, do = (torch.randn(B, S, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(4))
o = lse = None
if what == "bwd":  # o and lse from torch's flash forward (its kernel is not the one profiled: see -k / -s)
  with torch.no_grad():
    res = torch.ops.aten._scaled_dot_product_flash_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), 0.0, causal)
  o, lse = res[0].transpose(1, 2), res[1].contiguous()
if who == "fa2":
    qq, kk, vv = (x.detach().requires_grad_() for x in (q, k, v))
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        for _ in range(3):
            out = F.scaled_dot_product_attention(qq.transpose(1, 2), kk.transpose(1, 2), vv.transpose(1, 2),
                                                 is_causal=causal)
            if what == "bwd":
                torch.autograd.grad(out, (qq, kk, vv), do.transpose(1, 2))
elif what == "fwd":
    from bench_attn import Flashkit
    fk = Flashkit(lib, "")
    a = fk.args(q, k, v, torch.empty_like(q), torch.empty(B, H, S, device="cuda"), causal)
    for _ in range(3):
        fk.fwd(a)
else:
    from bench_attn_bwd import Flashkit
    fk = Flashkit(lib, "")
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    a = fk.args(q, k, v, o, lse, do, dq, dk, dv, causal, 0)
    ws = fk.workspace(a)
    for _ in range(3):
        fk.bwd(a, ws)
torch.cuda.synchronize()
print("%s %s done" % (who, what))
