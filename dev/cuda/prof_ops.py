# One fused op for ncu, flashkit (the library) or torch.compile's generated kernel, bf16, 16384 rows:
#   python3 dev/cuda/prof_ops.py {fk,compile} H [lib] [op]
# op: rms_fwd (default), rms_bwd (flashkit only: its main kernel and the dweight sum), swiglu_fwd (16384 x H, the
# same three streams as the plain RMSNorm backward: two reads and a write of 16384 x H).
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
op = sys.argv[4] if len(sys.argv) > 4 else "rms_fwd"
T = 16384
x, w = torch.randn(T, H, device="cuda", dtype=torch.bfloat16), torch.randn(H, device="cuda", dtype=torch.bfloat16)
if who == "compile":
    if op == "swiglu_fwd":
        from bench_ops import swiglu

        f, u = compiled(swiglu), torch.randn_like(x)
        for _ in range(5):
            f(x, u)
    else:
        f = compiled(rms_builtin)
        for _ in range(5):
            f(x, w)
else:
    import ctypes as C

    fk = Flashkit(lib)
    if op == "swiglu_fwd":
        u, o = torch.randn_like(x), torch.empty_like(x)
        a = fk.args("swiglu", gate=x, up=u, out=o)
        for _ in range(5):
            fk.check(fk.lib.fk_swiglu_fwd(fk.ctx, C.byref(a), fk.stream()), "fk_swiglu_fwd")
    else:
        y, rstd = torch.empty_like(x), torch.empty(T, device="cuda", dtype=torch.float32)
        a = fk.args("rmsnorm", x=x, weight=w, y=y, rstd=rstd, eps=EPS)
        for _ in range(5):
            fk.check(fk.lib.fk_rmsnorm_fwd(fk.ctx, C.byref(a), fk.stream()), "fk_rmsnorm_fwd")
        if op == "rms_bwd":
            dy, dx, dw = torch.randn_like(x), torch.empty_like(x), torch.empty_like(w)
            b = fk.args("rmsnorm", x=x, weight=w, rstd=rstd, dy=dy, dx=dx, dweight=dw, eps=EPS)
            wsz = C.c_size_t()
            fk.check(fk.lib.fk_rmsnorm_bwd_workspace_size(fk.ctx, C.byref(b), C.byref(wsz)), "workspace_size")
            ws = torch.empty(max(wsz.value, 1), device="cuda", dtype=torch.uint8)
            for _ in range(5):
                fk.check(fk.lib.fk_rmsnorm_bwd(fk.ctx, C.byref(b), C.c_void_p(ws.data_ptr()), wsz.value, fk.stream()),
                         "fk_rmsnorm_bwd")
torch.cuda.synchronize()
