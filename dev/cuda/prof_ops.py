# One RMSNorm forward for ncu, flashkit (the library) or torch.compile's generated kernel, bf16, 16384 rows:
#   python3 dev/cuda/prof_ops.py {fk,compile} H [lib]
# Each side runs 5 times after its warm-up (torch.compile compiles on the first call), so that
#   ncu -k regex:'rms_fwd|triton' -s 2 -c 1 --section SpeedOfLight --section MemoryWorkloadAnalysis \
#       --section WarpStateStats --section Occupancy --section LaunchStats python3 dev/cuda/prof_ops.py fk 8192
# profiles one steady-state launch of the op's kernel. Why: torch.compile's RMSNorm forward reaches 98% of the
# copy bandwidth at hidden 8192 where flashkit's row kernels stay at 86-88% (docs/PERF.md), and no launch
# shape or pipeline tried so far closed the gap; the profiler is to say where the time goes.
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
from bench_ops import EPS, Flashkit, compiled, rms_builtin  # noqa: E402

who, H = sys.argv[1], int(sys.argv[2])
lib = sys.argv[3] if len(sys.argv) > 3 else "build-gpu/libflashkit.so"
T = 16384
x, w = torch.randn(T, H, device="cuda", dtype=torch.bfloat16), torch.randn(H, device="cuda", dtype=torch.bfloat16)
if who == "compile":
    f = compiled(rms_builtin)
    for _ in range(5):
        f(x, w)
else:
    import ctypes as C

    fk = Flashkit(lib)
    y, rstd = torch.empty_like(x), torch.empty(T, device="cuda", dtype=torch.float32)
    a = fk.args("rmsnorm", x=x, weight=w, y=y, rstd=rstd, eps=EPS)
    for _ in range(5):
        fk.check(fk.lib.fk_rmsnorm_fwd(fk.ctx, C.byref(a), fk.stream()), "fk_rmsnorm_fwd")
torch.cuda.synchronize()
