#!/usr/bin/env bash
# Before and after of a change, alternated in one script (BENCHMARKS.md run 13 on): the redis
# bench's conc rows of two checkouts, RUNS times each, BEFORE first.
#   git worktree add ../before <commit>
#   BEFORE=../before AFTER=. benches/profile/ab.sh
# Each side builds its own bench binary on first use. REDLOCK_BENCH_* settings pass through
# (defaults: 5 rounds; rslock, redlock-rs and redlock-rs-nowake; no seq).
set -u
export REDLOCK_BENCH_ROUNDS=${REDLOCK_BENCH_ROUNDS:-5}
export REDLOCK_BENCH_ONLY=${REDLOCK_BENCH_ONLY:-rslock,redlock-rs,redlock-rs-nowake}
export REDLOCK_BENCH_SEQ_CYCLES=${REDLOCK_BENCH_SEQ_CYCLES:-0}
for i in $(seq "${RUNS:-2}"); do
  for side in "${BEFORE:?}" "${AFTER:?}"; do
    echo "=== $side ($(git -C "$side" rev-parse --short HEAD)) run $i, load $(cut -d' ' -f1 /proc/loadavg), $(date +%T)"
    (cd "$side" && cargo bench -q -p redlock-benches --bench redis 2>&1 | grep -v "^$")
  done
done
