#!/usr/bin/env bash
# gpu_session.sh — a whole GPU session's checks and benchmarks in as few device calls as the budget allows, each
# step under its own time limit (seconds in brackets are the defaults; override with <STEP>_LIMIT=...):
#   build   configure + build build-gpu (bench/gpu_check.sh's build; incremental when build-gpu is there)       [300]
#   extra   the shell command in $EXTRA (a one-off check)                                                   [120]
#   lineinfo the library built again with -lineinfo into build-li (for ncu's source-level stall view)       [200]
#   ctest   every ctest driver with its CUDA cases (test_attn fwd/bwd, ops, memory, kvcache, ...)            [240]
#   san     compute-sanitizer memcheck + racecheck: test_attn -b cuda -p "$SAN_FILTER" and the ops drivers   [200]
#   fwd     bench/bench_attn.py: forward vs PyTorch FA2 / cuDNN / naive, the BENCHMARKS.md grid              [240]
#   bwd     bench/bench_attn_bwd.py: backward vs PyTorch FA2 / cuDNN                                          [200]
#   ops     bench/bench_ops.py: RMSNorm / RoPE / SwiGLU vs eager and torch.compile, fraction of copy          [240]
#   ncu     ncu WarpStateStats + SpeedOfLight of one main-kernel launch, flashkit beside FA2: the backward at
#           D = 128 and the forward at D = 256, S = 2048 non-causal ($NCU_CASES)                             [200]
#   wgbwd   dev/cuda/wgmma_bwd_run.sh: the Hopper backward's checks, sanitizers and times beside bwd_tc     [240]
#   wgfwd   dev/cuda/wgmma_run.sh without sanitizers: the Hopper forward's checks, tiles and ping-pong     [180]
#   ncuops  ncu of the RMSNorm forward, flashkit beside torch.compile's kernel, hidden 8192 and 4096       [200]
# Usage: bench/gpu_session.sh step...   (e.g. one call "build ctest san fwd", the next "bwd ops ncu")
# Logs go into $OUT/session_logs.tgz (the device tool returns at most 8 files); each step's short table is
# printed at the end, then one summary line per step.
set -uo pipefail
cd "$(dirname "$0")/.."
FINAL=${OUT:-$PWD/gpu_session_out}
L=$(mktemp -d)
mkdir -p "$FINAL"
export JOBS=${JOBS:-$(nproc)} ARCH=${ARCH:-90a} PYTHONUNBUFFERED=1
SAN_FILTER=${SAN_FILTER:-d=256}
NCU_CASES=${NCU_CASES:-"bwd:128 fwd:256"}
# NCU_SECTIONS: the ncu sections (SourceCounters = the top stall locations, with source lines when the library
# was built with -lineinfo: NCU_LIB=build-li/libflashkit.so after the 'lineinfo' step); NCU_WHO: fk and/or fa2
NCU_SECTIONS=${NCU_SECTIONS:-"SpeedOfLight WarpStateStats Occupancy LaunchStats"} NCU_WHO=${NCU_WHO:-"fk fa2"}
NCU_LIB=${NCU_LIB:-build-gpu/libflashkit.so}
EXTRA=${EXTRA:-true}
NCUOPS_EXTRA=${NCUOPS_EXTRA:-} # more ncu flags for ncuops (e.g. "--section SchedulerStats")
export L SAN_FILTER NCU_CASES EXTRA NCU_SECTIONS NCU_WHO NCU_LIB NCUOPS_EXTRA
declare -a summary
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader 2>&1 | tee "$L/gpu.txt"
git log -1 --format='commit %h %s' 2>/dev/null | tee -a "$L/gpu.txt"

run_step() { # name, default limit, function
  local name=$1 lim=$2 fn=$3 var="${1^^}_LIMIT"
  local t=$(date +%s)
  timeout "${!var:-$lim}" bash -c "$(declare -f "$fn"); $fn" > "$L/$name.txt" 2>&1
  local rc=$?
  summary+=("$(printf '%-6s rc=%-3s %4d s%s' "$name" "$rc" $(( $(date +%s) - t )) "$([ $rc = 124 ] && echo ' (time limit)')")")
}
s_build() {
  OUT=$L/build bash bench/gpu_check.sh --no-tests --no-dev --no-sanitize --no-bench
}
s_extra() { bash -c "$EXTRA"; }
s_lineinfo() { # the library again with -lineinfo (for ncu's source view), into build-li
  cmake -S . -B build-li -DFK_CUDA=ON -DFK_BUILD_TESTS=OFF -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CUDA_FLAGS=-lineinfo > /dev/null && cmake --build build-li -j"$JOBS" --target flashkit 2>&1 | tail -2
}
s_ctest() { cd build-gpu && ctest --output-on-failure -j3 2>&1 | tail -40; exit "${PIPESTATUS[0]}"; }
s_san() {
  local rc=0 tool
  for tool in memcheck racecheck; do
    compute-sanitizer --tool $tool --error-exitcode 9 build-gpu/test_attn -b cuda -p "$SAN_FILTER" > "$L/san_attn_$tool.log" 2>&1 || rc=1
    echo "test_attn -p $SAN_FILTER $tool: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$L/san_attn_$tool.log" | tail -1) $(grep -E 'passed' "$L/san_attn_$tool.log" | tail -1)"
  done
  OUT=$L/ops bash bench/gpu_ops.sh --no-build --no-tests --no-bench || rc=1
  exit $rc
}
s_fwd() { python3 bench/bench_attn.py --csv "$L/fwd.csv" > "$L/fwd.log" 2>&1; rc=$?; sed -n '/^## attention forward/,$p' "$L/fwd.log"; [ $rc = 0 ] || tail -20 "$L/fwd.log"; exit $rc; }
s_bwd() { python3 bench/bench_attn_bwd.py --csv "$L/bwd.csv" > "$L/bwd.log" 2>&1; rc=$?; sed -n '/^## attention backward/,$p' "$L/bwd.log"; [ $rc = 0 ] || tail -20 "$L/bwd.log"; exit $rc; }
s_ops() { python3 bench/bench_ops.py --csv "$L/ops.csv" > "$L/ops.log" 2>&1; rc=$?; sed -n '/^## fused ops/,$p' "$L/ops.log"; [ $rc = 0 ] || tail -20 "$L/ops.log"; exit $rc; }
s_ncu() {
  local c what d k who skip
  for c in $NCU_CASES; do
    what=${c%%:*} d=${c##*:}
    for who in $NCU_WHO; do
      # flashkit's bwd bench class runs one probe call first: skip that launch
      skip=0
      if [ $who = fk ]; then
        if [ $what = bwd ]; then k="regex:bwd_tc_kernel|bwd_split_tc_kernel|bwd_wgmma_kernel"; skip=1
        else k="regex:fwd_tc_kernel|fwd_d256_kernel|fwd_wgmma_kernel"; fi
      else k=$([ $what = bwd ] && echo "regex:flash_bwd_dq_dk_dv" || echo "regex:flash_fwd_kernel"); fi
      echo "#### $who $what D=$d S=2048 causal=0 (kernel $k)"
      ncu $(printf -- '--section %s ' $NCU_SECTIONS) \
        --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,smsp__inst_executed.sum,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum" \
        -k "$k" -s $skip -c 1 python3 dev/cuda/prof_attn.py $who $what $d 2048 0 "$NCU_LIB" 2>&1 | grep -vE "^==PROF==|^ *-+ *$" | cut -c1-150
    done
  done > "$L/ncu.log"
  grep -E "^####|  [a-z_:]*kernel|Duration|Registers Per|Achieved Occupancy|Warp Cycles Per Issued|Compute \(SM\) Th|Memory Th|Block Size|Dynamic Shared|inst_executed|hmma|wavefronts" "$L/ncu.log" | cut -c1-150
  # the stall reasons above 0.3 cycles per issued instruction, per profiled kernel
  awk '/^####/{print; next} /issue_stalled/ && $NF+0 > 0.3 {sub("smsp__average_warps_issue_stalled_",""); sub("_per_issue_active.ratio",""); print "   ", $1, $NF}' "$L/ncu.log"
}
s_wgbwd() { OUT=$L/wgbwd bash dev/cuda/wgmma_bwd_run.sh; }
s_wgfwd() { OUT=$L/wgfwd SKIP_SAN=1 bash dev/cuda/wgmma_run.sh; }
# RMSNorm forward under ncu, flashkit beside torch.compile's kernel (docs/GPU_QUEUE.md: where the time goes)
s_ncuops() {
  local who h
  for who in fk compile; do
    for h in 8192 4096; do
      echo "#### $who rmsnorm fwd 16384 x $h"
      ncu -k "regex:rms_fwd|triton" -s 2 -c 1 --section SpeedOfLight --section MemoryWorkloadAnalysis \
        --section WarpStateStats --section Occupancy --section LaunchStats $NCUOPS_EXTRA \
        python3 dev/cuda/prof_ops.py $who $h "$NCU_LIB" 2>&1 | grep -vE "^==PROF==|^ *-+ *$" | cut -c1-150
    done
  done > "$L/ncuops.log"
  grep -E "^####|  [a-zA-Z_:]*(kernel|triton)|Duration|DRAM Throughput|Memory Throughput|Registers Per|Achieved Occupancy|Theoretical Occupancy|Warp Cycles Per Issued|Block Size|Grid Size|Dynamic Shared|Stall" "$L/ncuops.log" | cut -c1-150
}
for s in "$@"; do
  case $s in
    build) run_step build 300 s_build ;; ctest) run_step ctest 240 s_ctest ;; san) run_step san 200 s_san ;;
    fwd) run_step fwd 240 s_fwd ;; bwd) run_step bwd 200 s_bwd ;; ops) run_step ops 240 s_ops ;;
    ncu) run_step ncu 200 s_ncu ;; extra) run_step extra 120 s_extra ;; lineinfo) run_step lineinfo 200 s_lineinfo ;;
    wgbwd) run_step wgbwd 240 s_wgbwd ;; wgfwd) run_step wgfwd 180 s_wgfwd ;; ncuops) run_step ncuops 200 s_ncuops ;;
    *) echo "unknown step $s (build lineinfo extra ctest san fwd bwd ops ncu wgbwd wgfwd ncuops)"; exit 2 ;;
  esac
done
tar czf "$FINAL/session_logs.tgz" -C "$L" . 2>/dev/null
cp build-gpu/Testing/Temporary/LastTest.log "$FINAL/" 2>/dev/null
for s in "$@"; do echo; echo "===== $s"; tail -$([ $s = wgbwd ] && echo 170 || echo 60) "$L/$s.txt"; done
echo; echo "== gpu_session summary ($(head -1 "$L/gpu.txt"); $(tail -1 "$L/gpu.txt"))"
printf '%s\n' "${summary[@]}"
