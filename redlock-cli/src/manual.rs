//! `redlock lock`, `extend` and `unlock`: a lock managed by a script across several steps.

use std::os::unix::ffi::OsStrExt;

use redlock_core::Lock;
use serde_json::json;

use crate::acquire::{self, WaitMode};
use crate::cli::{Extend, LockCmd, Unlock};
use crate::duration::millis;
use crate::exit::{self, Failure};
use crate::instances::Connected;
use crate::output;
use crate::report;
use crate::signals::{self, Incoming};
use crate::status;

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(text: &str) -> Result<(), Failure> {
    output::print(text).map_err(|e| Failure::new(exit::INTERNAL, format!("cannot write: {e}")))
}

/// Waits (at most the instance timeout) until the calls still in flight for `lock` reached
/// every instance. A round returns once a quorum answered; this process exits right after, and
/// a call queued but not yet written would die with it, leaving the lock on a bare quorum.
async fn settle(conn: &Connected, lock: &Lock) {
    let key = [conn.manager.config().key_prefix(), lock.resource()].concat();
    let timeout = conn.manager.config().instance_timeout();
    drop(status::look(conn, &key, timeout).await);
}

fn lock_json(lock: &Lock) -> String {
    json!({
        "resource": lossy(lock.resource()),
        "token": lossy(lock.token()),
        "ttl_ms": millis(lock.ttl()),
        "validity_ms": millis(lock.remaining()),
    })
    .to_string()
}

/// Runs `redlock lock`: acquires, prints the token, and leaves the lock to its TTL.
///
/// # Errors
/// Not acquired (`-E`), unavailable, bad input, a signal while waiting, a failure to write.
pub async fn lock(args: &LockCmd, conn: &Connected) -> Result<u8, Failure> {
    let resource = args.resource.as_bytes();
    let manager = &conn.manager;
    let mut incoming = Incoming::catch()
        .map_err(|e| Failure::new(exit::INTERNAL, format!("cannot catch signals: {e}")))?;
    let acquired = acquire::acquire(
        manager,
        resource,
        WaitMode::of(&args.wait),
        args.wait.conflict_exit_code,
        || false,
        || manager.lock(resource, args.ttl),
    );
    let lock = tokio::select! {
        lock = acquired => lock?,
        sig = incoming.recv() => return Err(Failure::new(
            exit::of_signal(sig),
            format!("interrupted by {} while waiting for the lock", signals::name(sig)),
        )),
    };
    settle(conn, &lock).await;
    let text = if args.json {
        lock_json(&lock)
    } else {
        lossy(lock.token())
    };
    if let Err(failure) = write(&text) {
        // Nobody learnt the token: give the lock back rather than leave it for its TTL.
        drop(lock.release().await);
        return Err(failure);
    }
    // The lock outlives this process by design: neither released on drop nor on exit.
    std::mem::forget(lock);
    Ok(exit::SUCCESS)
}

/// Runs `redlock extend`.
///
/// # Errors
/// The token does not hold the lock (79), unavailable, bad input, a failure to write.
pub async fn extend(args: &Extend, conn: &Connected) -> Result<u8, Failure> {
    let resource = args.resource.as_bytes();
    let what = format!("cannot extend {}", report::quoted(resource));
    let lock = conn
        .manager
        .get_lock(resource, args.token.as_bytes())
        .await
        .map_err(|e| report::failure(&what, &e))?;
    lock.extend_for(args.ttl)
        .await
        .map_err(|e| report::failure(&what, &e))?;
    settle(conn, &lock).await;
    if args.json {
        write(&lock_json(&lock))?;
    }
    Ok(exit::SUCCESS)
}

/// Runs `redlock unlock`.
///
/// # Errors
/// The token does not hold the lock (79), unavailable, bad input, a failure to write.
pub async fn unlock(args: &Unlock, conn: &Connected) -> Result<u8, Failure> {
    let resource = args.resource.as_bytes();
    let what = format!("cannot unlock {}", report::quoted(resource));
    let lock = conn
        .manager
        .get_lock(resource, args.token.as_bytes())
        .await
        .map_err(|e| report::failure(&what, &e))?;
    lock.release()
        .await
        .map_err(|e| report::failure(&what, &e))?;
    if args.json {
        write(&json!({ "resource": lossy(resource), "released": true }).to_string())?;
    }
    Ok(exit::SUCCESS)
}
