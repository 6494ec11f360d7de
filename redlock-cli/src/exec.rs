//! `redlock exec`: the command runs as the work of the library's scoped lock.
//!
//! The scoped form ([`LockManager::with_lock_opts`]) renews the lock alongside the work and
//! drops the work's future no later than the lease's deadline when the lock is lost. The work
//! here is the supervision of the child process, and its drop is the loss path: the [`Child`]
//! guard sends SIGTERM at that very moment (not after the release round that follows), then
//! hands the child over so the tool can give it `--grace` before SIGKILL and exit with 79.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex, MutexGuard};

use redlock_core::{AutoExtend, Error, LockManager, LockWatch};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::acquire::{self, WaitMode};
use crate::cli::Exec;
use crate::duration::millis;
use crate::exit::{self, Failure};
use crate::instances::Connected;
use crate::output::say;
use crate::report;
use crate::signals::{self, Incoming, Target};

/// Set for the command: the resource name.
pub const RESOURCE_VAR: &str = "REDLOCK_RESOURCE";
/// Set for the command: the lease, in milliseconds.
pub const TTL_VAR: &str = "REDLOCK_TTL_MS";
/// Set for the command: the validity left when it started, in milliseconds.
pub const VALIDITY_VAR: &str = "REDLOCK_VALIDITY_MS";
/// Reserved for a fencing token once the library issues them; removed from the command's
/// environment until then, so that a value inherited from an outer `redlock` is never taken
/// for this lock's.
pub const FENCING_TOKEN_VAR: &str = "REDLOCK_FENCING_TOKEN";

/// What the supervision shares with the rest of the tool.
#[derive(Debug, Default)]
struct Slot {
    /// The work was called: the lock was acquired (errors after this are not acquire errors).
    started: bool,
    /// Where signals for the command go, while it runs and has not been reaped.
    target: Option<Target>,
    /// A child whose supervision was dropped (the lock was lost), and when SIGTERM was sent.
    abandoned: Option<(Child, Instant)>,
}

#[derive(Debug, Clone, Default)]
struct Shared(Arc<Mutex<Slot>>);

impl Shared {
    fn get(&self) -> MutexGuard<'_, Slot> {
        // Plain fields written whole; a panic elsewhere cannot leave them torn.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running command. Dropped before the command was reaped, it sends SIGTERM at once and
/// hands the child to the slot.
struct Supervised {
    child: Option<Child>,
    target: Target,
    shared: Shared,
}

impl Drop for Supervised {
    fn drop(&mut self) {
        let Some(child) = self.child.take() else {
            return;
        };
        // Not reaped yet, so the pid (and group id) cannot have been reused.
        signals::send(self.target, libc::SIGTERM);
        let mut slot = self.shared.get();
        slot.target = Some(self.target);
        slot.abandoned = Some((child, Instant::now()));
    }
}

/// How the run under the lock ended.
enum Ran {
    /// The work completed and the lock was released: the command's status, or why it could not
    /// be started.
    Exited(io::Result<ExitStatus>),
    /// The lock was lost after the work started.
    Lost(Error),
}

/// Runs `redlock exec`.
///
/// # Errors
/// A failure with the status to exit with: not acquired, unavailable, lost, the command not
/// found or not runnable, a signal before the command started.
pub async fn run(args: &Exec, conn: &Connected) -> Result<u8, Failure> {
    let mut incoming = Incoming::catch()
        .map_err(|e| Failure::new(exit::INTERNAL, format!("cannot catch signals: {e}")))?;
    let shared = Shared::default();
    let job = job(args, conn, &shared);
    let foreground = args.foreground;
    let forward = async {
        loop {
            let sig = incoming.recv().await;
            let target = shared.get().target;
            match target {
                // The terminal sends these to its whole foreground group, the command included.
                Some(_) if foreground && matches!(sig, libc::SIGINT | libc::SIGQUIT) => {}
                Some(target) => {
                    tracing::debug!("passing {} on to the command", signals::name(sig));
                    signals::send(target, sig);
                }
                None => return sig,
            }
        }
    };
    tokio::select! {
        outcome = job => outcome,
        sig = forward => Err(Failure::new(
            exit::of_signal(sig),
            format!("interrupted by {} while no command was running", signals::name(sig)),
        )),
    }
}

async fn job(args: &Exec, conn: &Connected, shared: &Shared) -> Result<u8, Failure> {
    let resource = args.resource.as_bytes();
    let mode = WaitMode::of(&args.wait);
    let manager = &conn.manager;
    let options = AutoExtend::default().with_lease(args.ttl);
    let ran = acquire::acquire(
        manager,
        resource,
        mode,
        args.wait.conflict_exit_code,
        || shared.get().started,
        || run_once(manager, resource, options, args, shared),
    )
    .await?;
    match ran {
        Ran::Exited(Ok(status)) => {
            if let Some(grace) = args.fair {
                if conn.observed.release_heard() {
                    // A loop that starts redlock again must not beat the waiter we just woke.
                    tracing::debug!("fair: a waiter heard the release; staying {grace:?}");
                    tokio::time::sleep(grace).await;
                }
            }
            Ok(exit::of_child(status))
        }
        Ran::Exited(Err(e)) => Err(cannot_run(&args.command[0], &e)),
        Ran::Lost(e) => Err(lost(args, shared, &e).await),
    }
}

/// One acquire (with the manager's retries) and, once acquired, the command under the lock.
async fn run_once(
    manager: &LockManager,
    resource: &[u8],
    options: AutoExtend,
    args: &Exec,
    shared: &Shared,
) -> Result<Ran, Error> {
    let result = manager
        .with_lock_opts(resource, options, |watch| supervise(watch, args, shared))
        .await;
    match result {
        Ok(status) => Ok(Ran::Exited(status)),
        Err(e) if shared.get().started => Ok(Ran::Lost(e)),
        Err(e) => Err(e),
    }
}

/// The work: starts the command and waits for it.
async fn supervise(watch: LockWatch, args: &Exec, shared: &Shared) -> io::Result<ExitStatus> {
    shared.get().started = true;
    let mut command = Command::new(&args.command[0]);
    command
        .args(&args.command[1..])
        .env(RESOURCE_VAR, OsStr::from_bytes(watch.resource()))
        .env(TTL_VAR, millis(args.ttl).to_string())
        .env(VALIDITY_VAR, millis(watch.remaining()).to_string())
        .env_remove(FENCING_TOKEN_VAR)
        .kill_on_drop(false);
    if !args.foreground {
        command.process_group(0);
    }
    signals::term_with_parent(&mut command);
    let child = command.spawn()?;
    let Some(pid) = child.id() else {
        return Err(io::Error::other(
            "the command exited before it could be watched",
        ));
    };
    let target = if args.foreground {
        Target::Process(pid)
    } else {
        Target::Group(pid)
    };
    tracing::debug!(
        pid,
        "command started; validity {} ms",
        millis(watch.remaining())
    );
    shared.get().target = Some(target);
    let mut supervised = Supervised {
        child: Some(child),
        target,
        shared: shared.clone(),
    };
    let status = match supervised.child.as_mut() {
        Some(child) => child.wait().await,
        None => Err(io::Error::other("the command was not started")),
    };
    if status.is_ok() {
        // Reaped: the pid may be reused from now on, so nothing may signal it any more.
        supervised.child = None;
        shared.get().target = None;
    }
    status
}

/// The loss path, after the scoped form returned: SIGTERM went out when the work was dropped;
/// give the command `--grace`, then SIGKILL.
async fn lost(args: &Exec, shared: &Shared, e: &Error) -> Failure {
    let resource = report::quoted(args.resource.as_bytes());
    let abandoned = shared.get().abandoned.take();
    let Some((mut child, term_at)) = abandoned else {
        // The command had exited; the release then found the lock already lost.
        return Failure::new(
            exit::LOST,
            format!(
                "the lock on {resource} was found lost when releasing it after the command \
                 exited: {}",
                report::error_text(e)
            ),
        );
    };
    let why = report::error_text(e);
    let why = why.strip_prefix("lock lost: ").unwrap_or(&why);
    say(&format!(
        "lost the lock on {resource} while the command ran ({why}): sent SIGTERM to the command"
    ));
    let target = shared.get().target;
    let status = tokio::select! {
        status = child.wait() => status,
        () = tokio::time::sleep_until(term_at + args.grace) => {
            if let Some(target) = target {
                signals::send(target, libc::SIGKILL);
            }
            say(&format!(
                "the command was still running {:?} after SIGTERM: sent SIGKILL",
                args.grace
            ));
            child.wait().await
        }
    };
    shared.get().target = None;
    let how = match status {
        Ok(status) => format!("the command ended ({status})"),
        Err(e) => format!("the command could not be waited for ({e})"),
    };
    Failure::new(
        exit::LOST,
        format!("exiting with status 79 (lock lost); {how}"),
    )
}

/// The status and message for a command that could not be started.
fn cannot_run(program: &OsStr, e: &io::Error) -> Failure {
    let status = match e.kind() {
        io::ErrorKind::NotFound => exit::NOT_FOUND,
        _ => exit::CANNOT_RUN,
    };
    Failure::new(
        status,
        format!("cannot run {:?}: {e}", program.to_string_lossy()),
    )
}
