#!/usr/bin/env bash
# Profiles of one bench subject pinned to a fixed amount of work (BENCHMARKS.md, "Where the CPU
# goes"). Build first: `cargo bench -p redlock-benches --no-run`. Output goes to $OUT (default target/profile).
#
#   benches/profile/profile.sh callgrind redis SUBJECT CYCLES_PER_TASK   # conc, user instructions
#   benches/profile/profile.sh callgrind handoff SUBJECT SECTIONS        # contend, user instructions
#   benches/profile/profile.sh syscalls redis SUBJECT CYCLES_PER_TASK    # conc, every syscall (perf)
#   benches/profile/profile.sh syscalls handoff SUBJECT SPAN_MS          # contend, every syscall (perf)
#   benches/profile/profile.sh perf redis SUBJECT CYCLES_PER_TASK        # conc, time samples (perf)
#   benches/profile/profile.sh cachegrind redis SUBJECT CYCLES_PER_TASK  # conc, simulated cache misses
#   benches/profile/profile.sh dhat redis SUBJECT CYCLES_PER_TASK        # conc, allocations by site
#   benches/profile/profile.sh hotcode redis SUBJECT CYCLES_PER_TASK     # conc, cost per instruction
#                                                                          (buckets.py hot: hot code size)
#
# Run each twice with two amounts of work and subtract (benches/profile/buckets.py): what is left
# is per cycle or per critical section, without start-up and connection set-up. N, FLAVOUR pick
# the instance count (3) and runtime flavour (multi-thread).
set -euo pipefail
cd "$(dirname "$0")/../.."
tool=$1 bench=$2 subject=$3 count=$4
out=${OUT:-target/profile}
mkdir -p "$out"
bin=$(ls -t target/release/deps/"$bench"-* | grep -v '\.d$' | head -1)
common=(REDLOCK_BENCH_N="${N:-3}" REDLOCK_BENCH_FLAVOUR="${FLAVOUR:-multi-thread}" REDLOCK_BENCH_ROUNDS=1)
case $bench in
  redis) work=(REDLOCK_BENCH_ONLY="$subject" REDLOCK_BENCH_SEQ_CYCLES=0
               REDLOCK_BENCH_CONC_CYCLES="$count" REDLOCK_BENCH_WARM_UP=20) ;;
  handoff)
    if [ "$tool" = callgrind ]; then
      work=(REDLOCK_BENCH_ONLY="contend,$subject" REDLOCK_BENCH_SECTIONS="$count"
            REDLOCK_BENCH_CONTEND_MS=600000)
    else
      work=(REDLOCK_BENCH_ONLY="contend,$subject" REDLOCK_BENCH_CONTEND_MS="$count")
    fi ;;
  *) echo "bench: redis or handoff" >&2; exit 2 ;;
esac
base=$out/$tool-$bench-$subject-$count
case $tool in
  callgrind)
    # `--collect-bus`: atomic instructions too (`buckets.py bus`).
    # Everything runs some 50 times slower under valgrind: a longer per-instance timeout keeps
    # rounds from timing out (the timers are still set per command, as in a normal run).
    env "${common[@]}" "${work[@]}" REDLOCK_BENCH_INSTANCE_TIMEOUT_MS=5000 \
      valgrind --tool=callgrind --collect-bus=yes --callgrind-out-file="$base.cg" "$bin" --bench >"$base.log" 2>&1 ;;
  syscalls)
    env "${common[@]}" "${work[@]}" \
      perf record -q -o "$base.data" -e raw_syscalls:sys_enter -e sched:sched_switch "$bin" --bench \
      >"$base.log" 2>&1
    # Counts by process (the bench or a redis-server) and syscall number (x86-64).
    perf script -i "$base.data" -F comm,event,trace 2>/dev/null | awk '
      { kind = ($1 ~ /^redis-server/) ? "server" : "client"
        if ($2 ~ /sched_switch/) { n[kind " switch"]++ }
        else { match($0, /NR [0-9]+/); n[kind " " substr($0, RSTART + 3, RLENGTH - 3)]++ } }
      END { for (k in n) print n[k], k }' | sort -k2,2 -k1,1rn >"$base.counts" ;;
  cachegrind)
    env "${common[@]}" "${work[@]}" REDLOCK_BENCH_INSTANCE_TIMEOUT_MS=5000 \
      valgrind --tool=cachegrind --cache-sim=yes --cachegrind-out-file="$base.out" "$bin" --bench \
      >"$base.log" 2>&1 ;;
  dhat)
    # Every allocation with its size and call stack (`buckets.py allocs`).
    env "${common[@]}" "${work[@]}" REDLOCK_BENCH_INSTANCE_TIMEOUT_MS=5000 \
      valgrind --tool=dhat --dhat-out-file="$base.json" "$bin" --bench >"$base.log" 2>&1 ;;
  hotcode)
    # One cost line per instruction, uncompressed, for `buckets.py hot`.
    env "${common[@]}" "${work[@]}" REDLOCK_BENCH_INSTANCE_TIMEOUT_MS=5000 \
      valgrind --tool=callgrind --dump-instr=yes --compress-pos=no --compress-strings=no \
      --callgrind-out-file="$base.cg" "$bin" --bench >"$base.log" 2>&1 ;;
  perf)
    env "${common[@]}" "${work[@]}" \
      perf record -q -F 15000 -e cpu-clock -o "$base.data" "$bin" --bench >"$base.log" 2>&1
    perf report -i "$base.data" --stdio --no-children --sort comm,dso,sym -q 2>/dev/null >"$base.txt"
    # With sample counts, for `buckets.py perfdiff` (15000 samples/s).
    perf report -i "$base.data" --stdio --no-children --sort comm,dso,sym -n -q 2>/dev/null >"$base.n.txt" ;;
  *) echo "tool: callgrind, cachegrind, dhat, hotcode, syscalls or perf" >&2; exit 2 ;;
esac
echo "$base"
