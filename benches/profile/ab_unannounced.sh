#!/usr/bin/env bash
# BENCHMARKS.md run 12: before (4bc34a9) and after (4ae9684) of the unannounced uncontended
# release, alternated in one script. BEFORE and AFTER are two checkouts, e.g.
#   git worktree add ../before 4bc34a9
#   BEFORE=../before AFTER=. benches/profile/ab_unannounced.sh
# Each side builds its own bench binary on first use.
set -u
export REDLOCK_BENCH_ROUNDS=5 REDLOCK_BENCH_ONLY=rslock,redlock-rs,redlock-rs-nowake REDLOCK_BENCH_SEQ_CYCLES=0
for i in 1 2; do
  for side in "${BEFORE:?}" "${AFTER:?}"; do
    echo "=== $side run $i, load $(cut -d' ' -f1 /proc/loadavg), $(date +%T)"
    (cd "$side" && cargo bench -q -p redlock-benches --bench redis 2>&1 | grep -v "^$")
  done
done
