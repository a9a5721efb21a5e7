#!/usr/bin/env bash
# gpu_next.sh — the candidates waiting for a GPU, in one device call on one H100/H200 (about 10-12 minutes):
#   1. bench/next_ops.sh      fused ops: production selection vs alternatives: checks, GB/s   (issue 6)
#   2. bench/next_fwd256.sh   attention forward D = 256 candidate vs production and FA2                  (issue 4)
# Each runs under its own time limit (OPS_LIMIT, FWD_LIMIT, BWD_LIMIT seconds) so the call ends inside its
# lease; each writes its logs under one folder, packed into $OUT/next_logs.tgz (the device tool returns at most
# 8 files); each one's short table is printed at the end. Steps can be named: bench/gpu_next.sh ops fwd.
# (The attention-backward candidates, issue 5, were decided in run 2: next_bwd.sh is gone; docs/PERF.md.)
set -uo pipefail
cd "$(dirname "$0")/.."
FINAL=${OUT:-$PWD/gpu_next_out}
L=$(mktemp -d)
mkdir -p "$FINAL"
export JOBS=${JOBS:-$(nproc)} J=${J:-$(nproc)}
steps=${*:-ops fwd}
declare -a summary
t0=$(date +%s)
run_step() { # name, limit, script...
  local name=$1 limit=$2; shift 2
  mkdir -p "$L/$name"
  OUT=$L/$name timeout "$limit" "$@" > "$L/$name.txt" 2>&1
  local rc=$?
  summary+=("$name: rc=$rc$([ $rc = 124 ] && echo ' (time limit)') (done at $(( $(date +%s) - t0 )) s)")
}
for s in $steps; do
  case "$s" in
    ops) run_step ops "${OPS_LIMIT:-300}" bash bench/next_ops.sh ;;
    fwd) run_step fwd "${FWD_LIMIT:-240}" bash bench/next_fwd256.sh ;;
    *) echo "unknown step $s (ops, fwd)"; exit 2 ;;
  esac
done
tar czf "$FINAL/next_logs.tgz" -C "$L" . 2>/dev/null
for s in $steps; do
  echo; echo "===== $s (last lines of $s.txt)"; tail -40 "$L/$s.txt"
done
echo; echo "== gpu_next summary"; printf '%s\n' "${summary[@]}"
