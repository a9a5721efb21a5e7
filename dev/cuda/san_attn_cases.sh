#!/usr/bin/env bash
# san_attn_cases.sh — compute-sanitizer memcheck and racecheck on test_attn's CUDA cases picked by -p filters
# (substrings of the case signatures), with how many fp16 / bf16 forward cases each filter matched: a filter that
# matches only bad-input cases says so (sixth session: "d=128,sq=17" matched none of the wgmma forward's).
# Run from the repository root after a build into build-gpu; logs into $L (default a temporary folder).
# Usage: dev/cuda/san_attn_cases.sh [filter...]   (default: the wgmma forward's multi-tile cases at D = 128 / 256)
# Ran on an H200 (2026-11-30 sixth session, docs/PERF.md run 4): every filter clean.
L=${L:-$(mktemp -d)}
[ $# -gt 0 ] || set -- "d=128,sq=300" "d=128,sq=17," "d=256,sq=300" "d=128,sq=113"
rc=0
for f in "$@"; do for t in memcheck racecheck; do
  lg=$L/san_${t}_${f//[,=]/_}.log
  timeout 200 compute-sanitizer --tool $t --error-exitcode 9 build-gpu/test_attn -v -b cuda -p "$f" > $lg 2>&1 || rc=1
  echo "test_attn -p $f $t: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' $lg | tail -1) $(grep -E 'passed' $lg | tail -1);" \
       "fp16/bf16 forward cases: $(grep -c 'ok .*ATTN_FWD(backend=cuda,dtype=b\?f16' $lg)"
done; done
exit $rc
