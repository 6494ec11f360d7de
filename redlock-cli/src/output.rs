//! Everything the tool itself prints on stderr goes through here, with the secrets scrubbed.

use std::io::{self, Write as _};
use std::sync::RwLock;

use crate::secrets::Secrets;

static SECRETS: RwLock<Secrets> = RwLock::new(Secrets::empty());

/// Adds secrets to scrub.
pub fn add_secrets(more: Secrets) {
    // Secrets are only ever added whole; a poisoned lock still holds a usable list.
    let mut secrets = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    secrets.extend(more);
}

/// `text` with the secrets scrubbed, on one line.
pub fn scrub(text: &str) -> String {
    let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    secrets.scrub(text).into_owned()
}

/// One line on stderr, `redlock: ` first. A closed stderr is not worth failing for.
pub fn say(line: &str) {
    let line = scrub(line);
    let _ = writeln!(io::stderr().lock(), "redlock: {line}");
}

/// `text` and a newline on stdout. Not scrubbed: stdout carries data (tokens, JSON), which
/// holds no URL, and a short password must not mangle it.
///
/// # Errors
/// When stdout cannot be written (closed pipe, full disk).
pub fn print(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()
}
