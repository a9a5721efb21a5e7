#!/usr/bin/env bash
# ncu_ops_streams.sh — ncu of the plain RMSNorm backward beside the SwiGLU forward, which moves the same three
# streams (two reads and one write of 16384 x hidden bf16) without a row sum: flashkit's and torch.compile's,
# at hidden 4096 and 2048 (dev/cuda/prof_ops.py launches each). Prints the lines that compare them (duration,
# DRAM, occupancy, eligible warps, DRAM bytes, instructions); the whole report goes to $L/ncu2.log.
# Run from the repository root after a build into build-gpu. Ran on an H200 (2026-11-30 sixth session, docs/PERF.md
# run 5). Env: NCU_EXTRA (more ncu flags, e.g. "--section MemoryWorkloadAnalysis_Tables --section SourceCounters"),
# NCU_LIB (the library; build-li/libflashkit.so after gpu_session.sh's lineinfo step, for source lines).
L=${L:-$(mktemp -d)}
NCU_EXTRA=${NCU_EXTRA:-}
NCU_LIB=${NCU_LIB:-build-gpu/libflashkit.so}
S="--section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy --section LaunchStats --section SchedulerStats"
for c in "fk 4096 rms_bwd rms_bwd" "fk 4096 swiglu_fwd swiglu" "compile 4096 swiglu_fwd triton" "fk 2048 rms_bwd rms_bwd" "fk 2048 swiglu_fwd swiglu"; do
  set -- $c
  echo "#### $1 $3 16384 x $2"
  timeout 100 ncu -k "regex:$4" -s 2 -c 1 $S $NCU_EXTRA --metrics dram__bytes_read.sum,dram__bytes_write.sum,lts__t_sectors_srcunit_tex_op_read.sum,lts__t_sectors_srcunit_tex_op_write.sum,smsp__inst_executed.sum \
    python3 dev/cuda/prof_ops.py $1 $2 "$NCU_LIB" $3 2>&1 | grep -vE "^==PROF==|^ *-+ *$" | cut -c1-150
done > $L/ncu2.log
grep -E "^####|  [a-zA-Z_:]*(kernel|triton)|Duration|DRAM Throughput|Memory Throughput|Registers Per|Achieved Occupancy|Warp Cycles Per Issued|Block Size|Grid Size|Issued Warp|No Eligible|dram__|lts__|inst_executed|L1/TEX Hit|L2 Hit|Mem Busy|Max Bandwidth|Eligible Warps|Active Warps Per" $L/ncu2.log | cut -c1-150
