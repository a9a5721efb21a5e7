#!/usr/bin/env bash
# next_fwd256.sh — one short device call (about 3 minutes on one H100/H200) for the D = 256 forward candidate
# (src/cuda/attn_fwd_d256.cuh, variants d256c-128x64w8p0 / p2 in dev/cuda/attn_fwd_check.cu):
#   1. dev build (dev/cuda/build.sh, sm_$ARCH, default 90) + the candidate's ptxas lines (registers, spills)
#   2. host simulation of the fragment bookkeeping (dev/cuda/d256_sim.cu)
#   3. attn_fwd_check vcheck 256: every D = 256 variant against the float64 reference (the candidates on
#      40 extra bf16 + fp16 cases: causal and not, Sq != Sk both ways, lengths 1, 17, 1000, windows, varlen)
#   4. compute-sanitizer memcheck + racecheck on attn_fwd_check vsmall d256c
#   5. attn_fwd_check time d256c: candidates beside the production PLAIN 64x64w4p0 kernel, D = 256,
#      S = 512 .. 16384, causal 0/1 (CUDA events, median of 30)
#   6. bench/bench_attn.py --dims 256 --no-mem: PyTorch SDPA flash (FA2) and cuDNN beside production flashkit
#   Last: one table, variant / S / causal / TFLOP/s / ratio to production / ratio to FA2. The FA2 column
#   divides by bench_attn.py's FA2 number (triton do_bench), a different timer than the events of step 5:
#   the "prod vs FA2 (bench)" line per row says how far the two timers agree for the production kernel.
# Usage (device machine, repository root): bench/next_fwd256.sh     Logs: $OUT (default ./next_fwd256_out).
# Exit status: non-zero when the build, a check or the sanitizers failed (timing always runs when it can).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/next_fwd256_out}
mkdir -p "$OUT"
ARCH=${ARCH:-90a}
SEQ=${SEQ:-512,1024,2048,4096,8192,16384}
B=build-cuda/dev/attn_fwd_check
rc=0
t() { echo "--- $1: $(( $(date +%s) - t0 )) s"; }

nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv,noheader 2>&1 | tee "$OUT/gpu.txt"
git log -1 --format='commit %h %s' 2>/dev/null | tee -a "$OUT/gpu.txt"

t0=$(date +%s)
if ! J=${J:-16} ARCH=$ARCH timeout 300 dev/cuda/build.sh > "$OUT/build.log" 2>&1; then
  tail -30 "$OUT/build.log"; echo "build failed"; exit 1
fi
grep -h -A3 "Compiling entry.*fwd_d256_kernel" build-cuda/dev/obj/check.log | grep -E "entry|spill|registers" |
  sed 's/ptxas info *: //' | tee "$OUT/ptxas_d256.txt"
t build

t0=$(date +%s)
nvcc -std=c++17 -O1 -Isrc dev/cuda/d256_sim.cu -o "$OUT/d256_sim" > "$OUT/sim.log" 2>&1 && "$OUT/d256_sim" | tee -a "$OUT/sim.log" || rc=1
t sim

t0=$(date +%s)
timeout 240 $B vcheck 256 > "$OUT/vcheck.log" 2>&1 || rc=1
grep -E "FAIL|^vcheck" "$OUT/vcheck.log" | head -40
t vcheck

t0=$(date +%s)
for tool in memcheck racecheck; do
  timeout 240 compute-sanitizer --tool $tool --error-exitcode 9 $B vsmall d256c > "$OUT/san_$tool.log" 2>&1 || rc=1
  echo "$tool: $(tail -2 "$OUT/san_$tool.log" | tr '\n' ' ')"
done
t sanitize

t0=$(date +%s)
timeout 300 $B time d256c "$SEQ" > "$OUT/time.log" 2>&1 || rc=1
cat "$OUT/time.log"
t time

t0=$(date +%s)
PYTHONUNBUFFERED=1 timeout 300 python3 bench/bench_attn.py --dims 256 --seqlens "$SEQ" --no-mem \
  --csv "$OUT/bench.csv" > "$OUT/bench.log" 2>&1 || { tail -15 "$OUT/bench.log"; echo "bench_attn.py failed (table below without FA2)"; }
t bench

echo
echo "== D = 256 candidate: TFLOP/s (bf16, B*S = 16384, H = 8), ratio to production 64x64w4p0 (same timer), to FA2"
python3 - "$OUT/time.log" "$OUT/bench.csv" <<'EOF'
import csv, os, sys
fa2, fkb = {}, {}
if os.path.exists(sys.argv[2]):
    for r in csv.DictReader(open(sys.argv[2])):
        k = (int(r["S"]), int(r["causal"]))
        fa2[k], fkb[k] = float(r["fa2_tflops"]), float(r["flashkit_tflops"])
print("| variant | D | S | causal | TFLOP/s | vs prod | vs FA2 |")
print("|---|---|---|---|---|---|---|")
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) != 8 or not f[0].isdigit():
        continue
    D, S, c, name, tf, ratio = int(f[0]), int(f[1]), int(f[3]), f[4], float(f[6]), float(f[7])
    k = (S, c)
    vs = "%.2f" % (tf / fa2[k]) if k in fa2 and fa2[k] > 0 else "-"
    print("| %s | %d | %d | %d | %.1f | %.3f | %s |" % (name, D, S, c, tf, ratio, vs))
for k in sorted(fa2):
    print("prod vs FA2 (bench, do_bench): S=%d causal=%d flashkit %.1f FA2 %.1f -> %.2f" % (
        k[0], k[1], fkb[k], fa2[k], fkb[k] / fa2[k]))
EOF
echo "exit status $rc (0: build, sim, vcheck and sanitizers passed)"
exit $rc
