#!/bin/sh
# test_cli.sh — the `flashkit` tool end to end: every command runs, prints what it should, and exits with the
# documented status (0 ok, 1 failure, 2 bad usage). Usage: sh tests/test_cli.sh path/to/flashkit
FK=${1:-build/flashkit}
fails=0
check() { # check NAME WANT_STATUS PATTERN -- command...
    name=$1 want=$2 pat=$3
    shift 4
    out=$("$@" 2>&1)
    st=$?
    if [ "$st" -ne "$want" ]; then
        echo "FAIL $name: exit $st, want $want"; echo "$out" | tail -5; fails=$((fails + 1)); return
    fi
    if [ -n "$pat" ] && ! printf '%s\n' "$out" | grep -q -- "$pat"; then
        echo "FAIL $name: output lacks '$pat'"; echo "$out" | tail -5; fails=$((fails + 1)); return
    fi
    echo "ok   $name"
}
check help 0 "usage: flashkit <command>" -- "$FK" --help
check no_args 2 "usage" -- "$FK"
check unknown_cmd 2 "unknown command" -- "$FK" frobnicate
check info 0 "cpu simd" -- "$FK" info
check memory_default 0 "llama3-8b" -- "$FK" memory
check memory_tiny 0 "attention scores" -- "$FK" memory --preset tiny --seqlen 2048 --no-flash --recompute
check memory_custom 0 "fwd naive" -- "$FK" memory --hidden 1024 --layers 4 --heads 16 --kv-heads 4 --intermediate 2816 --vocab 32000 --seqlen 4096 --dtype f16
check memory_bad_preset 2 "unknown --preset" -- "$FK" memory --preset gpt5
check memory_bad_number 2 "needs an integer" -- "$FK" memory --seqlen -4
check memory_bad_heads 1 "multiple" -- "$FK" memory --hidden 1000 --heads 3
check bench_small 0 "naive / flash time" -- "$FK" bench --seqlen 128 --heads 2 --dim 32 --reps 1 --warmup 0
check bench_causal_bf16 0 "backward" -- "$FK" bench --seqlen 200 --heads 2 --dim 48 --causal --dtype bf16 --reps 1 --warmup 0
check bench_csv 0 "^bwd,cpu,f32,1,2,64,16,0," -- "$FK" bench --seqlen 64 --heads 2 --dim 16 --reps 1 --warmup 0 --csv
check bench_bad_dim 1 "head_dim" -- "$FK" bench --seqlen 64 --heads 1 --dim 300 --reps 1 --warmup 0
check bench_bad_option 2 "unknown option" -- "$FK" bench --frob
check demo_small 0 "result    PASS" -- "$FK" demo --device cpu --seqlen 256
[ "$fails" -eq 0 ] && echo "test_cli: all passed" || echo "test_cli: $fails failed"
[ "$fails" -eq 0 ]
