//! `redlock`: run a command under a Redlock lock from cron, CI or a shell.
//!
//! `redlock exec RESOURCE -- COMMAND…` acquires the lock on a majority of the Redis masters,
//! runs the command, renews the lock while it runs, releases it when the command exits, and
//! exits with the command's status. `status`, `lock`, `extend` and `unlock` serve scripts. See
//! `redlock --help` and the README for the manual.
//!
//! One thread runs everything (a current-thread tokio runtime): a signal is passed on to the
//! command only while it has not been reaped, and with a single thread the reaping and that
//! check cannot interleave, so a reused pid is never signalled.

mod acquire;
mod cli;
mod duration;
mod exec;
mod exit;
mod instances;
mod manual;
mod output;
mod report;
mod secrets;
mod signals;
mod spawner;
mod status;
mod timed;

use std::ffi::OsString;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::Parser;

use crate::acquire::WaitMode;
use crate::cli::{Cli, Command};
use crate::exit::Failure;
use crate::instances::Settings;
use crate::secrets::Secrets;
use crate::spawner::TrackedSpawner;

fn main() {
    let status = run(std::env::args_os().collect());
    std::process::exit(i32::from(status));
}

fn run(args: Vec<OsString>) -> u8 {
    // Whatever was given may hold a password, including arguments clap will refuse.
    output::add_secrets(Secrets::from_texts(args.iter().filter_map(|a| a.to_str())));
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    init_tracing(cli.global.verbose);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            output::say(&format!("cannot start the async runtime: {e}"));
            return exit::INTERNAL;
        }
    };
    let spawner = TrackedSpawner::default();
    let timeout = cli.global.instance_timeout;
    let status = runtime.block_on(async {
        let result = dispatch(&cli, &spawner).await;
        // Releases the manager started in the background (an acquire abandoned mid-attempt):
        // a release round is bounded by the instance timeout; leave room for two.
        spawner
            .drain(timeout.saturating_mul(2) + Duration::from_millis(100))
            .await;
        result
    });
    // Tasks still running (reconnections, a DNS lookup) must not hold the exit up.
    runtime.shutdown_background();
    match status {
        Ok(status) => status,
        Err(failure) => {
            output::say(&failure.message);
            failure.status
        }
    }
}

/// Prints clap's refusal as one line (or the help / version, which are not errors).
fn usage_error(e: &clap::Error) -> u8 {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            exit::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand | ErrorKind::MissingSubcommand => {
            output::say(
                "a subcommand is needed: exec, status, lock, extend or unlock (see redlock --help)",
            );
            exit::USAGE
        }
        _ => {
            // clap's message, up to the usage and tips that follow it, on one line.
            let rendered = e.render().to_string();
            let message: Vec<&str> = rendered
                .lines()
                .map(str::trim)
                .skip_while(|l| l.is_empty())
                .take_while(|l| !l.is_empty() && !l.starts_with("Usage:"))
                .collect();
            let message = message.join(" ");
            let first = message.strip_prefix("error: ").unwrap_or(&message);
            let first = if first.is_empty() {
                "invalid arguments"
            } else {
                first
            };
            output::say(&format!("{first} (see redlock --help)"));
            exit::USAGE
        }
    }
}

fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => return,
        1 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false)
        .with_writer(ScrubbedStderr)
        .finish();
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// stderr for tracing, with the secrets scrubbed from each event.
struct ScrubbedStderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ScrubbedStderr {
    type Writer = ScrubbedLine;

    fn make_writer(&'a self) -> ScrubbedLine {
        ScrubbedLine
    }
}

/// Writes one formatted event.
struct ScrubbedLine;

impl std::io::Write for ScrubbedLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let lines: Vec<String> = text
            .split_inclusive('\n')
            .map(|l| {
                let body = l.trim_end_matches('\n');
                let end = if l.ends_with('\n') { "\n" } else { "" };
                format!("{}{end}", output::scrub(body))
            })
            .collect();
        std::io::stderr()
            .lock()
            .write_all(lines.concat().as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

async fn dispatch(cli: &Cli, spawner: &TrackedSpawner) -> Result<u8, Failure> {
    let global = &cli.global;
    let urls = instances::gather(&global.redis, global.config.as_deref())?;
    output::add_secrets(Secrets::from_texts(urls.urls.iter().map(String::as_str)));
    let (retry_count, fair) = match &cli.command {
        Command::Exec(args) => (WaitMode::of(&args.wait).retry_count(), args.fair),
        Command::Lock(args) => (WaitMode::of(&args.wait).retry_count(), None),
        Command::Status(_) | Command::Extend(_) | Command::Unlock(_) => (1, None),
    };
    let settings = Settings {
        instance_timeout: global.instance_timeout,
        retry_count,
        key_prefix: global.key_prefix.as_bytes().to_vec(),
        fair,
    };
    let conn = instances::connect(&urls, &settings, spawner.clone())?;
    tracing::debug!(
        "{} instance(s) from {}, quorum {}",
        urls.urls.len(),
        urls.source,
        conn.manager.quorum()
    );
    match &cli.command {
        Command::Exec(args) => exec::run(args, &conn).await,
        Command::Status(args) => status::run(args, &conn, global.instance_timeout).await,
        Command::Lock(args) => manual::lock(args, &conn).await,
        Command::Extend(args) => manual::extend(args, &conn).await,
        Command::Unlock(args) => manual::unlock(args, &conn).await,
    }
}
