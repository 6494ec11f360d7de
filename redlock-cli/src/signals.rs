//! Signals: the ones the tool catches to pass on, and sending one to the command.

use std::io;

use tokio::signal::unix::{signal, Signal, SignalKind};

/// Whom a signal for the command goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The command's process group (the command leads it): the command and what it started.
    Group(u32),
    /// The command's process only (`--foreground`).
    Process(u32),
}

/// Sends `sig` to `target`; `false` when it could not be sent (the target is gone).
///
/// Never signals pid 0 or 1 (or their groups): `kill(0)` and `kill(-1)` mean "my own group" and
/// "every process I may signal".
pub fn send(target: Target, sig: i32) -> bool {
    let (pid, group) = match target {
        Target::Group(pid) => (pid, true),
        Target::Process(pid) => (pid, false),
    };
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 1 {
        return false;
    }
    let pid = if group { -pid } else { pid };
    kill(pid, sig)
}

#[allow(unsafe_code)]
fn kill(pid: i32, sig: i32) -> bool {
    // SAFETY: kill(2) takes two integers and reads or writes no memory of this process; `pid`
    // names a process or group other than 0, 1 and -1 (checked by the caller).
    unsafe { libc::kill(pid, sig) == 0 }
}

/// Makes the kernel send SIGTERM to the command if redlock dies (killed with SIGKILL, say):
/// nothing renews the lock then, and it runs out within the lease (Linux only).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn term_with_parent(command: &mut tokio::process::Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // calls are allowed: prctl(2), getppid(2) and raise(3) are, and it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent died between fork and prctl: the signal would never come.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                libc::raise(libc::SIGTERM);
            }
            Ok(())
        });
    }
}

/// Elsewhere the command outlives a killed redlock until it ends by itself.
#[cfg(not(target_os = "linux"))]
pub fn term_with_parent(_command: &mut tokio::process::Command) {}

/// A signal's name, for messages.
pub fn name(sig: i32) -> String {
    match sig {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGHUP => "SIGHUP".into(),
        libc::SIGQUIT => "SIGQUIT".into(),
        libc::SIGKILL => "SIGKILL".into(),
        other => format!("signal {other}"),
    }
}

/// SIGINT, SIGTERM, SIGHUP and SIGQUIT, caught: they no longer end the tool, they arrive here.
#[derive(Debug)]
pub struct Incoming {
    int: Signal,
    term: Signal,
    hup: Signal,
    quit: Signal,
}

impl Incoming {
    /// Starts catching the four signals.
    ///
    /// # Errors
    /// When a handler cannot be installed.
    pub fn catch() -> io::Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
            quit: signal(SignalKind::quit())?,
        })
    }

    /// The next signal caught.
    pub async fn recv(&mut self) -> i32 {
        loop {
            let sig = tokio::select! {
                Some(()) = self.int.recv() => libc::SIGINT,
                Some(()) = self.term.recv() => libc::SIGTERM,
                Some(()) = self.hup.recv() => libc::SIGHUP,
                Some(()) = self.quit.recv() => libc::SIGQUIT,
                else => {
                    // Every stream ended (the runtime is shutting down): nothing will come.
                    futures::future::pending::<()>().await;
                    continue;
                }
            };
            return sig;
        }
    }
}
