# Runs PyTorch's flash (FA2) forward a few times on the bf16 shape given, for ncu next to our kernel.
# python3 dev/cuda/prof_fa2.py D S causal
import sys
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

D, S, causal = int(sys.argv[1]), int(sys.argv[2]), bool(int(sys.argv[3]))
B, H = 16384 // S, 2048 // D
q, k, v = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
    for _ in range(3):
        F.scaled_dot_product_attention(q, k, v, is_causal=causal)
torch.cuda.synchronize()
print("fa2 done")
