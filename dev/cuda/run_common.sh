# run_common.sh — dev only, sourced (from the repository root) by dev/cuda/wgmma_run.sh and wgmma_bwd_run.sh:
# the summary lines, the register report of ptxas -v build logs and the timed run steps.
# Expects LOG (log folder) and BUDGET (seconds for the whole run, counted from the source; 0 = no budget).
export PATH=$PATH:/usr/local/cuda/bin
SUMMARY=()
t0=$(date +%s)
note() { SUMMARY+=("$1"); echo "== $1"; }
summary() { printf '%s\n' "${SUMMARY[@]}"; }
left() { echo $(( BUDGET - ($(date +%s) - t0) )); }

ptxas_regs() { # kernel-name pattern (grep alternatives: 'a_kernel\|b_kernel'), ptxas -v logs...: each log's
  # matching kernels, one line each (mangled name, registers, spill stores / loads), into <log>.regs
  local pat=$1 f
  shift
  for f in "$@"; do
    grep -A3 "Compiling entry function '_Z.*\($pat\)" $f | \
      grep -o "Compiling entry function '[^']*'\|Used [0-9]* registers\|[0-9]* bytes spill stores, [0-9]* bytes spill loads" | \
      paste - - - | sed "s/Compiling entry function //" > $f.regs
  done
}
ptxas_notes() { grep -h "C75[0-9][0-9]\|warning" "$@" | sort -u | head -20; } # wgmma serialization notes, warnings

step() { # name, timeout seconds (cut to what is left of BUDGET when BUDGET > 0), command...: output in $LOG/name.log
  local name=$1 to=$2
  shift 2
  if [ "$BUDGET" -gt 0 ]; then
    local l=$(left)
    if [ $l -lt 10 ]; then note "$name: skipped (budget of $BUDGET s spent)"; return; fi
    [ $to -gt $l ] && to=$l
  fi
  local s=$(date +%s)
  timeout $to "$@" > $LOG/$name.log 2>&1
  local rc=$?
  local fails=$(grep -c "^FAIL" $LOG/$name.log)
  local passes=$(grep -c "^PASS" $LOG/$name.log)
  note "$name: rc=$rc$([ $rc = 124 ] && echo ' (TIMEOUT)') pass=$passes fail=$fails ($(( $(date +%s) - s )) s)"
  grep "^FAIL" $LOG/$name.log | head -20
}
