//! Commands built at their final size: every argument is measured first, so a command is one
//! allocation for its bytes and one for its argument list, with no growth on the way. Keys made
//! of a prefix and the lock key (the hand-off queues) and the release channel (the key in hex)
//! are written straight into the command instead of being built apart first.
//!
//! A lock cycle sends 2N commands; building them argument by argument cost several
//! reallocations each (the conc bench's profile counted 28 `realloc` calls per cycle). A command
//! answered is kept for the next one built on the same thread ([`recycle`]), so most commands
//! take no allocation at all (BENCHMARKS.md run 19): one built on a kept command starts from the
//! buffers of the one before, and grows them only when it is longer.

use std::io::Write;

use redis::{Cmd, RedisWrite};

/// One argument of a command.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Part<'a> {
    /// Sent as is.
    Bytes(&'a [u8]),
    /// A prefix, then the bytes.
    Prefixed(&'static [u8], &'a [u8]),
    /// A prefix, then the bytes in lower-case hex (the release channels).
    Hex(&'static str, &'a [u8]),
    /// A decimal integer.
    Int(i64),
}

impl Part<'_> {
    /// The bytes this argument takes (for an integer, at most).
    fn len(&self) -> usize {
        match self {
            Part::Bytes(b) => b.len(),
            Part::Prefixed(p, b) => p.len() + b.len(),
            Part::Hex(p, b) => p.len() + 2 * b.len(),
            // `i64::MIN` has 20 characters.
            Part::Int(_) => 20,
        }
    }

    fn write(&self, cmd: &mut Cmd) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        match *self {
            Part::Bytes(b) => cmd.write_arg(b),
            Part::Int(n) => {
                // Digits from the end of a stack buffer: no `String` per number.
                let mut buf = [0u8; 20];
                let mut at = buf.len();
                let mut rest = n.unsigned_abs();
                loop {
                    at -= 1;
                    buf[at] = b'0' + (rest % 10) as u8;
                    rest /= 10;
                    if rest == 0 {
                        break;
                    }
                }
                if n < 0 {
                    at -= 1;
                    buf[at] = b'-';
                }
                cmd.write_arg(&buf[at..]);
            }
            Part::Prefixed(prefix, b) => {
                let mut w = cmd.writer_for_next_arg();
                // Writes into the command's own buffer: they cannot fail.
                let _ = w.write_all(prefix);
                let _ = w.write_all(b);
            }
            Part::Hex(prefix, b) => {
                let mut w = cmd.writer_for_next_arg();
                let _ = w.write_all(prefix.as_bytes());
                // A chunk at a time: each write to the command's buffer has its own overhead.
                let mut chunk = [0u8; 64];
                for part in b.chunks(chunk.len() / 2) {
                    for (pair, byte) in chunk.chunks_exact_mut(2).zip(part) {
                        pair[0] = HEX[usize::from(byte >> 4)];
                        pair[1] = HEX[usize::from(byte & 0xf)];
                    }
                    let _ = w.write_all(&chunk[..2 * part.len()]);
                }
            }
        }
    }
}

/// `name` followed by `parts`.
pub(crate) fn build(name: &str, parts: &[Part<'_>]) -> Cmd {
    build_from(name, &[parts])
}

/// `name` followed by the parts of each group in turn.
pub(crate) fn build_from(name: &str, groups: &[&[Part<'_>]]) -> Cmd {
    let parts = || groups.iter().flat_map(|g| g.iter());
    let mut cmd = spare().unwrap_or_else(|| {
        let size = name.len() + parts().map(Part::len).sum::<usize>();
        Cmd::with_capacity(parts().count() + 1, size)
    });
    cmd.write_arg(name.as_bytes());
    for part in parts() {
        part.write(&mut cmd);
    }
    cmd
}

/// Commands kept for reuse, per thread: a command lives until its reply, so the 2N commands of
/// a lock cycle were 4N allocations, and with many calls in flight at once the allocator's
/// per-thread cache (glibc keeps 7 blocks per size) overflows into its slow paths. At most
/// [`SPARE_MAX`] of them, each holding at most [`SPARE_BYTES`] of arguments when kept (its
/// buffers, grown by doubling, at most twice that): some 70 KiB per thread at worst, kept as
/// long as the thread.
const SPARE_MAX: usize = 64;
/// A command with more argument bytes than this (a very long key) is not kept.
const SPARE_BYTES: usize = 512;

thread_local! {
    static SPARE: std::cell::RefCell<Vec<Cmd>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn spare() -> Option<Cmd> {
    // During a thread's teardown the spares are gone: a new command is built.
    SPARE
        .try_with(|s| s.try_borrow_mut().ok().and_then(|mut s| s.pop()))
        .ok()
        .flatten()
}

/// Gives `cmd` back for a later [`build_from`] once it was sent and answered.
pub(crate) fn recycle(mut cmd: Cmd) {
    let len: usize = cmd
        .args_iter()
        .map(|a| match a {
            redis::Arg::Simple(b) => b.len(),
            _ => 0,
        })
        .sum();
    if len > SPARE_BYTES {
        return;
    }
    cmd.clear();
    // During a thread's teardown the spares are gone: the command is simply dropped.
    let _ = SPARE.try_with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            if s.len() < SPARE_MAX {
                s.push(cmd);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(cmd: &Cmd) -> Vec<Vec<u8>> {
        cmd.args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => b.to_vec(),
                _ => b"<not a plain argument>".to_vec(),
            })
            .collect()
    }

    #[test]
    fn every_part_is_written_as_one_argument() {
        let cmd = build(
            "EVALSHA",
            &[
                Part::Bytes(b"abc"),
                Part::Int(-42),
                Part::Int(i64::MIN),
                Part::Prefixed(b"\xffq:", b"k\x00"),
                Part::Hex("c:", b"ab\x00\xff"),
                Part::Hex("", &[0xa5; 100]),
                Part::Bytes(b""),
            ],
        );
        assert_eq!(
            args(&cmd),
            [
                b"EVALSHA".to_vec(),
                b"abc".to_vec(),
                b"-42".to_vec(),
                i64::MIN.to_string().into_bytes(),
                b"\xffq:k\x00".to_vec(),
                b"c:616200ff".to_vec(),
                b"a5".repeat(100),
                Vec::new(),
            ]
        );
    }

    fn spares() -> usize {
        SPARE.with(|s| s.borrow().len())
    }

    #[test]
    fn a_command_built_on_a_recycled_one_has_its_own_arguments_only() {
        let long = build(
            "EVALSHA",
            &[Part::Bytes(&[b'x'; 200]), Part::Int(1), Part::Bytes(b"k")],
        );
        let before = spares();
        recycle(long);
        assert_eq!(spares(), before + 1);
        let short = build("SET", &[Part::Bytes(b"k"), Part::Bytes(b"v")]);
        assert_eq!(spares(), before, "the spare was taken");
        assert_eq!(
            args(&short),
            [b"SET".to_vec(), b"k".to_vec(), b"v".to_vec()]
        );
        // A command with flags set (no reply wanted, a scan cursor) comes back as new.
        let mut flagged = build("SCAN", &[]);
        flagged.set_no_response(true);
        flagged.cursor_arg(7);
        recycle(flagged);
        let fresh = build("PING", &[]);
        assert!(!fresh.is_no_response());
        assert!(!fresh.in_scan_mode());
        assert_eq!(args(&fresh), [b"PING".to_vec()]);
    }

    #[test]
    fn long_commands_and_commands_beyond_the_limit_are_not_kept() {
        let before = spares();
        recycle(build("SET", &[Part::Bytes(&[b'k'; SPARE_BYTES + 1])]));
        assert_eq!(spares(), before);
        let many: Vec<Cmd> = (0..SPARE_MAX + 10).map(|_| build("PING", &[])).collect();
        for cmd in many {
            recycle(cmd);
        }
        assert_eq!(spares(), SPARE_MAX);
    }

    #[test]
    fn the_release_channel_is_the_one_the_notifier_subscribes() {
        let key = b"some\x00key\xff";
        let cmd = build(
            "X",
            &[Part::Hex(
                redlock_core::redis_lua::RELEASE_CHANNEL_PREFIX,
                key,
            )],
        );
        assert_eq!(
            args(&cmd)[1],
            redlock_core::redis_lua::release_channel(key).into_bytes()
        );
    }

    #[test]
    fn the_queue_keys_are_the_cores() {
        let key = b"k\xfe";
        let (queue, waiters) = redlock_core::queue_keys(key);
        let cmd = build(
            "X",
            &[
                Part::Prefixed(redlock_core::QUEUE_KEY_PREFIX, key),
                Part::Prefixed(redlock_core::WAITERS_KEY_PREFIX, key),
            ],
        );
        assert_eq!(args(&cmd)[1..], [queue, waiters]);
    }
}
