#!/usr/bin/env bash
# BENCHMARKS.md runs 12 and 13: the redis-server CPU of one release command, by variant. Each script
# first SETs the key (so the release path runs); s0 is that SET alone, to subtract.
#   s1: compare-and-delete (rslock's release), 1 key
#   s1-3keys: the same body sent with RELEASE_HAND_OFF's keys and channel argument
#   s2: RELEASE_HAND_OFF as of run 11 (EXISTS + PUBLISH, channel sent)
#   s5: RELEASE_HAND_OFF as of run 12 (no PUBLISH without a waiter table, one-byte flag)
#   (s5 and s6 with the mode `2` a manager's unlock sends; run 12 measured s5 without it)
#   s6: RELEASE_HAND_OFF as of run 13 (the lock key alone; the script names the queue keys)
# Prints server CPU in ns per command (10 ms ticks over 1 000 000 commands, pipelined).
set -euo pipefail
port=${PORT:-7411}
dir=$(mktemp -d)
redis-server --port "$port" --save '' --appendonly no --daemonize yes --pidfile "$dir/r.pid" >/dev/null
trap 'kill "$(cat "$dir/r.pid")"; rm -rf "$dir"' EXIT
until redis-cli -p "$port" ping >/dev/null 2>&1; do :; done
pid=$(cat "$dir/r.pid")
K=bench:conc:12:345x Q="Xredlock-queue:bench:conc:12:345x" W="Xredlock-waiters:bench:conc:12:345x"
CH="redlock:released:$(printf %s "$K" | od -An -tx1 | tr -d ' \n')" T=0123456789abcdef0123456789abcdef
pre="redis.call('SET', KEYS[1], ARGV[1])"
s0="$pre return 1"
s1="$pre if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
handoff() { # RELEASE_HAND_OFF's body from the given commit's redis_lua.rs, after the SET
  git show "$1:redlock-core/src/redis_lua.rs" | python3 -c '
import re, sys
m = re.search(r"pub const RELEASE_HAND_OFF: &str = r\"#!lua\n(.*?)\";", sys.stdin.read(), re.S)
print(m.group(1))'
}
s2="$pre
$(handoff 19ee7ec)"
s5="$pre
$(handoff 4ae9684)"
s6="$pre
$(handoff 0353eb0)"
load() { redis-cli -p "$port" script load "$1"; }
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
run() {
  local name=$1; shift
  local a b; a=$(cpu)
  redis-benchmark -p "$port" -c 8 -P 32 -n 1000000 -q "$@" >/dev/null 2>&1
  b=$(cpu)
  echo "$name $(( (b - a) * 10000000 / 1000000 )) ns"
}
S0=$(load "$s0") S1=$(load "$s1") S2=$(load "$s2") S5=$(load "$s5") S6=$(load "$s6")
for rep in 1 2 3; do
  run s0 EVALSHA "$S0" 1 "$K" "$T"
  run s1 EVALSHA "$S1" 1 "$K" "$T"
  run s1-3keys EVALSHA "$S1" 3 "$K" "$Q" "$W" "$T" "$CH"
  run s2 EVALSHA "$S2" 3 "$K" "$Q" "$W" "$T" "$CH"
  run s5 EVALSHA "$S5" 3 "$K" "$Q" "$W" "$T" 1 2
  run s6 EVALSHA "$S6" 1 "$K" "$T" 2
done
