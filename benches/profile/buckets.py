#!/usr/bin/env python3
"""Per-cycle breakdowns of two profiles of the same subject with two amounts of work
(benches/profile/profile.sh); the difference divided by the extra cycles (or critical sections)
is what one more cycle costs, without start-up and connection set-up.

  buckets.py callgrind A.cg B.cg CYCLES      user instructions per cycle, by component
  buckets.py calls A.cg B.cg CYCLES REGEX..  calls per cycle of functions matching REGEX
  buckets.py bus A.cg B.cg CYCLES             user instructions and atomic instructions (bus
                                              events) per cycle
  buckets.py cache A.log B.log CYCLES          instructions and L1 cache misses per cycle, from two
                                              cachegrind runs (profile.sh cachegrind)
  buckets.py allocs A.json B.json CYCLES [N]   allocations per cycle by site (the N most
                                              frequent, 20 by default), with their mean size,
                                              from two dhat runs (profile.sh dhat)
  buckets.py syscalls A.counts B.counts CYCLES  syscalls and context switches per cycle
  buckets.py hot A.cg CYCLES [N]              the hot code: instructions run at least once every
                                              two cycles, their bytes and the 64-byte cache lines
                                              they sit on, by crate and for the N largest
                                              functions (profile.sh hotcode)
  buckets.py perf B.txt                       share of the client's time samples, by component
  buckets.py perfdiff A.n.txt B.n.txt CYCLES HZ [A2.n.txt B2.n.txt]
                                              client CPU per cycle (us), by component, from the
                                              sample counts of two perf profiles (HZ: their
                                              sampling rate); with a second pair, side by side

Components are matched on symbol names, first match wins (see BUCKETS)."""

import re
import signal
import subprocess
import sys

BUCKETS = [
    ('bench', r'^(redis|handoff)::(common|measure|main|print|contend)'),
    ('fred: caller side (command build, send, await)',
     r'^fred::(runtime|interfaces|utils|commands|clients|types)|<fred::(types|clients)'),
    ('fred: router task (route, write, read, respond)',
     r'^fred::(router|protocol::connection|protocol::responders|modules|protocol::types|protocol::command)'
     r'|<fred::protocol::connection|<fred::router'),
    ('RESP encode/decode',
     r'redis_protocol|^fred::protocol::(codec|utils)|<fred::protocol::codec|e_log|log10|ieee754|^floor$'
     r'|w_pow|^redis::(cmd|parser|types)|<redis::(cmd|types|parser)|combine::|itoa|ryu'),
    ('tokio timers (per-command timeouts, sleeps)', r'tokio::(time|runtime::time)|<tokio::time|futures_timer'),
    ('tokio scheduler, tasks, I/O driver',
     r'tokio::runtime|<tokio::runtime|tokio::net|<tokio::net|tokio::io|mio::|tokio::task|tokio_util|<tokio_util'),
    ('channels, oneshots, locks, futures glue',
     r'tokio::sync|<tokio::sync|futures_channel|futures_util|<futures_util|futures_core|<futures|core::future'
     r'|<core::future|core::task|async_lock|event_listener|parking_lot|std::sync|<std::sync|async_trait'
     r'|<core::pin::Pin'),
    ('allocation (malloc, free, realloc)',
     r'malloc|_int_free|^\./malloc|__rust_alloc|__rdl_|__rust_dealloc|__rust_realloc|__rust_no_alloc'
     r'|alloc::|<alloc::|cfree|arena|tcache|unlink_chunk'),
    ('memcpy, memmove, memset', r'mem(cpy|move|set)|memcmp|bcmp'),
    ('redlock-core (manager, rounds, wait)', r'redlock_core|<redlock_core'),
    ('redlock-fred backend', r'redlock_fred|<redlock_fred'),
    ('redlock-redis backend', r'redlock_redis|<redlock_redis'),
    ('rslock', r'rslock|<rslock'),
    ('redis-rs (multiplexed connection, script)', r'^redis::|<redis::'),
    ('sha1 (rslock hashes its script on every call)', r'sha1'),
    ('drop glue, hashing, formatting, misc std',
     r'drop_in_place|core::|std::|hashbrown|<&|<T|<\[|<core|<std|bytes::|<bytes|rand|getrandom|chacha|fmt|memchr'),
    ('libc other (syscall wrappers, futex, time)',
     r'libc|sysdeps|nptl|\./(io|socket|posix|misc|time|nptl|string|stdlib)'),
]

KERNEL = [
    ('kernel: wake-ups, scheduling, futex',
     r'spin_unlock_irq|finish_task_switch|try_to_wake|schedule|futex|queued_spin|select_task|enqueue'
     r'|dequeue|ttwu|update_curr|pick_next|switch|idle|hrtimer|irq|ipi|tick|native_'),
    ('kernel: TCP send/receive, epoll',
     r'tcp|skb|sock|ip_|net|epoll|ep_|copy_|_copy|inet|sys_|do_sys|entry_SYSCALL|syscall|__x64|loopback'
     r'|kmem|kfree|alloc|memcg|page|fput|fget|rw_verify|vfs|iov'),
]

SYSCALLS = {'20': 'writev', '1': 'write', '45': 'recvfrom', '0': 'read', '232': 'epoll_wait',
            '202': 'futex', 'switch': 'context switches'}


def bucket(name, buckets):
    for label, rx in buckets:
        if re.search(rx, name):
            return label
    return 'other'


def annotate(path, *args):
    return subprocess.run(['callgrind_annotate', '--threshold=100', *args, path],
                          capture_output=True, text=True, check=True).stdout


def self_costs(path):
    costs = {}
    for line in annotate(path).splitlines():
        # The first event (instructions); a profile with bus events has a second column.
        m = re.match(r'\s*([\d,]+) \(\s*[\d.]+%\)(?:\s+(?:[\d,]+ \(\s*[\d.]+%\)|\.))?\s+(.*)$', line)
        if m:
            name = re.sub(r'^\?\?\?:', '', re.sub(r' \[[^\]]*\]$', '', m.group(2)))
            costs[name] = costs.get(name, 0) + int(m.group(1).replace(',', ''))
    return costs


def calls(path, rx):
    """Calls of the functions matching `rx`, summed over their callers."""
    total, block = 0, []
    for line in annotate(path, '--tree=caller').splitlines():
        if line.startswith('---') or not line.strip():
            block = []
            continue
        block.append(line)
        if '*  ' in line and re.search(rx, line):
            total += sum(int(n.replace(',', '')) for l in block[:-1]
                         for n in re.findall(r'\(([\d,]+)x\)', l))
            block = []
    return total


def callgrind(a, b, cycles):
    A, B = self_costs(a), self_costs(b)
    total = (B.pop('PROGRAM TOTALS') - A.pop('PROGRAM TOTALS')) / cycles
    per = {}
    for name in set(A) | set(B):
        label = bucket(name, BUCKETS)
        per[label] = per.get(label, 0) + (B.get(name, 0) - A.get(name, 0)) / cycles
    print(f'{total:10,.0f}          user instructions per cycle (or critical section)')
    for label, v in sorted(per.items(), key=lambda x: -x[1]):
        if abs(v) >= 1:
            print(f'{v:10,.0f}  {v / total * 100:5.1f}%  {label}')
    for what, rx in [('malloc', r':malloc \['), ('free', r':free \['), ('realloc', r':realloc \[')]:
        print(f'{(calls(b, rx) - calls(a, rx)) / cycles:10.1f}          {what} calls per cycle')


def bus(a, b, cycles):
    def totals(path):
        out = subprocess.run(['callgrind_annotate', path], capture_output=True, text=True,
                             check=True).stdout
        line = next(l for l in out.splitlines() if 'PROGRAM TOTALS' in l)
        return [int(n.replace(',', '')) for n in re.findall(r'([\d,]+) \(', line)]
    A, B = totals(a), totals(b)
    if len(B) < 2:
        sys.exit('no bus events in the profile: record it with --collect-bus=yes')
    print(f'{(B[0] - A[0]) / cycles:10,.0f}  user instructions per cycle')
    print(f'{(B[1] - A[1]) / cycles:10,.0f}  atomic instructions (bus events) per cycle')


def cache(a, b, cycles):
    def totals(path):
        text = open(path).read()
        out = {}
        for label in ('I refs', 'I1 misses', 'D refs', 'D1 misses'):
            m = re.search(re.escape(label).replace('\\ ', r'\s+') + r':\s+([\d,]+)', text)
            out[label] = int(m.group(1).replace(',', '')) if m else 0
        return out
    A, B = totals(a), totals(b)
    for label in A:
        print(f'{(B[label] - A[label]) / cycles:10,.1f}  {label} per cycle')


# Frames of an allocation's stack that are the allocator itself, not the site that allocates.
ALLOCATOR = re.compile(r'alloc::|malloc|memalign|__rust|exchange_malloc|realloc|RawVec|^\?\?\?')


def allocs(a, b, cycles, top=20):
    import json

    def sites(path):
        d = json.load(open(path))
        out = {}
        for pp in d['pps']:
            frames = [d['ftbl'][i].split(': ', 1)[-1] for i in pp['fs']]
            frames = [re.sub(r' \(in .*\)$', '', f) for f in frames if not ALLOCATOR.search(f)]
            site = ' < '.join(f[:60] for f in frames[:2])
            blocks, nbytes = out.get(site, (0, 0))
            out[site] = (blocks + pp['tbk'], nbytes + pp['tb'])
        return out
    A, B = sites(a), sites(b)
    rows = []
    for site, (blocks, nbytes) in B.items():
        a_blocks, a_bytes = A.get(site, (0, 0))
        if blocks > a_blocks:
            rows.append(((blocks - a_blocks) / cycles, (nbytes - a_bytes) / (blocks - a_blocks), site))
    rows.sort(reverse=True)
    print(f'{sum(r[0] for r in rows):8.2f}  allocations per cycle, '
          f'{sum(r[0] * r[1] for r in rows):8.0f} bytes')
    for per_cycle, size, site in rows[:top]:
        print(f'{per_cycle:8.2f}  {size:6.0f} B  {site}')


def syscalls(a, b, cycles):
    def load(path, who):
        counts = {}
        for line in open(path):
            n, kind, what = line.split()
            if kind == who:
                counts[what] = int(n)
        return counts
    for who in ('client', 'server'):
        A, B = load(a, who), load(b, who)
        every = sum(B.get(k, 0) - A.get(k, 0) for k in B if k != 'switch') / cycles
        parts = [f'{SYSCALLS[k]} {(B.get(k, 0) - A.get(k, 0)) / cycles:.2f}' for k in SYSCALLS]
        print(f'{who}: all syscalls {every:.2f}; ' + ', '.join(parts))


# One line of `perf report --sort comm,dso,sym`, with (-n) or without the sample count.
PERF_LINE = re.compile(r'\s*([\d.]+)%\s+(?:(\d+)\s+)?(\S+)\s+(\S+)\s+\[(.)\]\s+(.*)$')


def perf_lines(path):
    """(percent, samples or None, component) of the client's lines of a perf report."""
    for line in open(path):
        m = PERF_LINE.match(line)
        if not m or m.group(3).startswith('redis-server') or m.group(3) == 'kill':
            continue
        dso, kind, sym = m.group(4), m.group(5), m.group(6).strip()
        if kind == 'k':
            label = bucket(sym, KERNEL)
            label = 'kernel: other' if label == 'other' else label
        elif dso.startswith('[vdso'):
            label = 'clock reads (vdso)'
        else:
            label = bucket(re.sub(r'^\?\?\?:', '', sym), BUCKETS)
        yield float(m.group(1)), int(m.group(2)) if m.group(2) else None, label


def perf(path):
    shares, total = {}, 0.0
    for pct, _, label in perf_lines(path):
        total += pct
        shares[label] = shares.get(label, 0) + pct
    print(f'client share of all samples (client and servers): {total:.1f}%')
    for label, v in sorted(shares.items(), key=lambda x: -x[1]):
        print(f'{v / total * 100:5.1f}%  {label}')


def perf_counts(path):
    """Client samples by component, from `perf report -n --sort comm,dso,sym`."""
    counts = {}
    for _, n, label in perf_lines(path):
        counts[label] = counts.get(label, 0) + (n or 0)
    return counts


def perfdiff(pairs, cycles, hz):
    us = 1e6 / hz / cycles
    columns = []
    for a, b in pairs:
        A, B = perf_counts(a), perf_counts(b)
        columns.append({k: (B.get(k, 0) - A.get(k, 0)) * us for k in set(A) | set(B)})
    labels = sorted(set().union(*columns), key=lambda k: -max(c.get(k, 0) for c in columns))
    print(f'{"client CPU per cycle (us)":46}' + ''.join(f'{i + 1:>10}' for i in range(len(pairs))))
    print(f'{"total":46}' + ''.join(f'{sum(c.values()):10.2f}' for c in columns))
    for k in labels:
        if max(abs(c.get(k, 0)) for c in columns) >= 0.01:
            print(f'{k:46}' + ''.join(f'{c.get(k, 0):10.2f}' for c in columns))


def hot(path, cycles, top):
    """Instruction bytes run at least `cycles / 2` times, from a callgrind profile with one cost
    line per instruction (profile.sh hotcode). An instruction's size is the distance to the next
    one recorded in the same object (at most 15 bytes)."""
    ob = fn = None
    after_call = False
    costs = {}
    for line in open(path, errors='replace'):
        if line.startswith('ob='):
            ob = line[3:].strip()
        elif line.startswith('fn='):
            fn = line[3:].strip()
        elif line.startswith('calls='):
            # The next cost line is the call's inclusive cost, not the instruction's own.
            after_call = True
        elif line.startswith('0x'):
            if after_call:
                after_call = False
                continue
            parts = line.split()
            key = (ob, int(parts[0], 16))
            cost = int(parts[-1])
            if key not in costs or costs[key][0] < cost:
                costs[key] = (cost, fn)
    keys = sorted(costs)
    size = {}
    for i, key in enumerate(keys):
        nxt = keys[i + 1] if i + 1 < len(keys) else None
        gap = nxt[1] - key[1] if nxt and nxt[0] == key[0] else 4
        size[key] = gap if 0 < gap <= 15 else 4
    by_fn, lines_of = {}, {}
    for key, (cost, f) in costs.items():
        if cost >= cycles / 2:
            by_fn[f] = by_fn.get(f, 0) + size[key]
            lines_of.setdefault(f, set()).add((key[0], key[1] >> 6))
    lines = set().union(*lines_of.values()) if lines_of else set()
    print(f'{sum(by_fn.values()) / 1024:7.1f} KiB of hot instructions on {len(lines)} cache lines '
          f'({len(lines) * 64 / 1024:.1f} KiB)')
    crates = {}
    for f, ls in lines_of.items():
        m = re.search(r'(redlock_\w+|redis|tokio_util|tokio|futures_\w+|combine|hashbrown|alloc'
                      r'|core|std|sha1_smol|rslock|bytes)::', f or '')
        crate = m.group(1) if m else 'libc and other'
        crates[crate] = crates.get(crate, 0) + len(ls) * 64
    for crate, b in sorted(crates.items(), key=lambda x: -x[1]):
        print(f'{b / 1024:7.1f} KiB of lines  {crate}')
    for f, b in sorted(by_fn.items(), key=lambda x: -len(lines_of[x[0]]))[:top]:
        print(f'{len(lines_of[f]) * 64:7d} B of lines {b:6d} B hot  {(f or "?")[:110]}')


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == 'callgrind':
        callgrind(args[0], args[1], float(args[2]))
    elif mode == 'calls':
        for rx in args[3:]:
            print(f'{(calls(args[1], rx) - calls(args[0], rx)) / float(args[2]):8.2f}  {rx}')
    elif mode == 'cache':
        cache(args[0], args[1], float(args[2]))
    elif mode == 'bus':
        bus(args[0], args[1], float(args[2]))
    elif mode == 'allocs':
        allocs(args[0], args[1], float(args[2]), int(args[3]) if len(args) > 3 else 20)
    elif mode == 'syscalls':
        syscalls(args[0], args[1], float(args[2]))
    elif mode == 'hot':
        hot(args[0], float(args[1]), int(args[2]) if len(args) > 2 else 20)
    elif mode == 'perf':
        perf(args[0])
    elif mode == 'perfdiff':
        pairs = [(args[0], args[1])] + ([(args[4], args[5])] if len(args) > 5 else [])
        perfdiff(pairs, float(args[2]), float(args[3]))
    else:
        sys.exit(__doc__)


if __name__ == '__main__':
    # Piped into `head`: stop quietly.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    main()
