#!/usr/bin/env bash
# One device call: bench/gpu_check.sh (cmake build, ctest, dev check + vcheck, sanitizers, full bench), then
# dev/cuda/device_run.sh time ncu (tile variants, ncu counters). Logs packed into $OUT/logs.tgz.
cd "$(dirname "$0")/../.."
O=/tmp/fk_final; rm -rf $O; mkdir -p $O/g $O/d
OUT=$O/g bench/gpu_check.sh > $O/g/stdout.txt 2>&1; grc=$?
OUT=$O/d dev/cuda/device_run.sh time ncu > $O/d/stdout.txt 2>&1
tar czf "$OUT/logs.tgz" -C $O .
cp $O/g/bench.csv $O/d/time.log $O/d/ncu.log "$OUT/" 2>/dev/null
echo "== variants (S >= 2048)"; grep -E "^(64|128|256) +(2048|8192) " $O/d/time.log
echo "== ncu"; grep -vE "==PROF==" $O/d/ncu.log | cut -c1-120
echo "== gpu_check"; cat $O/g/stdout.txt | grep -v "^void\|^ *$" | tail -75
exit $grc
