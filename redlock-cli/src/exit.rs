//! The tool's exit statuses, and the one-line error that goes with each.
//!
//! The values follow `sysexits.h` where one fits, and the shell's conventions for a command that
//! could not be run (126, 127) or was killed by a signal (128 + N), as `timeout(1)` and `env(1)`
//! do. 79 is outside both ranges, so a lost lock is never mistaken for a usage or a server error.

use std::fmt;

/// The command ran under the lock and exited 0 (for `exec`), or the operation succeeded.
pub const SUCCESS: u8 = 0;
/// Bad arguments, environment or configuration file (`EX_USAGE`). Nothing was locked.
pub const USAGE: u8 = 64;
/// Too few Redis instances answered to decide (`EX_UNAVAILABLE`).
pub const UNAVAILABLE: u8 = 69;
/// An error inside the tool itself (`EX_SOFTWARE`); please report it.
pub const INTERNAL: u8 = 70;
/// Not acquired: another client holds the lock (`EX_TEMPFAIL`, "try again later"). `exec` and
/// `lock` take `-E` to change it, as `flock(1)` does.
pub const NOT_ACQUIRED: u8 = 75;
/// The lock was lost while the command ran (or, for `extend` and `unlock`, the token does not
/// hold it).
pub const LOST: u8 = 79;
/// The command was found but could not be run.
pub const CANNOT_RUN: u8 = 126;
/// The command was not found.
pub const NOT_FOUND: u8 = 127;
/// Added to a signal number: the command, or the tool while waiting, was ended by that signal.
pub const SIGNAL_BASE: u8 = 128;

/// The exit-status table shown by `--help`.
pub const TABLE: &str = "\
EXIT STATUS:
  N     exec: the command's own status; 128+N when a signal N ended it (as a shell reports it)
  0     lock, extend, unlock, status: done
  64    bad arguments, environment or configuration file (nothing was locked)
  69    too few Redis instances answered to decide (unreachable, timed out, refused)
  70    internal error of redlock (a bug: please report it)
  75    not acquired: another client holds the lock (after --no-wait or --timeout; see -E)
  79    the lock was lost while the command ran (exec), or the token does not hold the lock
        (extend, unlock)
  126   the command was found but could not be run
  127   the command was not found
  128+N redlock was ended by signal N before the command started";

/// A failure of the tool, with its exit status and a one-line message.
#[derive(Debug)]
pub struct Failure {
    /// The exit status.
    pub status: u8,
    /// One line, without the `redlock: ` prefix; secrets are scrubbed before it is printed.
    pub message: String,
}

impl Failure {
    /// A failure with `status` and `message`.
    pub fn new(status: u8, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// A usage error.
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(USAGE, message)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The status a shell would report for a child that ended with `status`.
pub fn of_child(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        // A wait status carries only the low 8 bits of the exit code.
        return u8::try_from(code & 0xff).unwrap_or(INTERNAL);
    }
    match status.signal() {
        Some(sig) => of_signal(sig),
        None => INTERNAL,
    }
}

/// 128 + `signal`, as a shell reports a process that a signal ended.
pub fn of_signal(signal: i32) -> u8 {
    u8::try_from(signal)
        .ok()
        .and_then(|s| SIGNAL_BASE.checked_add(s))
        .unwrap_or(INTERNAL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    #[test]
    fn child_statuses_are_reported_as_a_shell_does() {
        assert_eq!(of_child(ExitStatus::from_raw(0)), 0);
        assert_eq!(of_child(ExitStatus::from_raw(42 << 8)), 42);
        assert_eq!(of_child(ExitStatus::from_raw(255 << 8)), 255);
        // Killed by SIGKILL (9) and by SIGTERM (15).
        assert_eq!(of_child(ExitStatus::from_raw(9)), 137);
        assert_eq!(of_child(ExitStatus::from_raw(15)), 143);
    }

    #[test]
    fn distinct_statuses() {
        let all = [
            SUCCESS,
            USAGE,
            UNAVAILABLE,
            INTERNAL,
            NOT_ACQUIRED,
            LOST,
            CANNOT_RUN,
            NOT_FOUND,
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
        for status in all {
            if status != SUCCESS {
                assert!(
                    TABLE.contains(&format!("\n  {status} ")),
                    "{status} documented"
                );
            }
        }
    }
}
