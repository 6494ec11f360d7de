//! The command line: subcommands, options and their manual pages (`--help`).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand};

use crate::duration;

const ABOUT: &str =
    "Run a command under a Redlock lock: a lease held on a majority of N independent Redis masters";

const LONG_ABOUT: &str = "\
Run a command under a Redlock lock: a lease held on a majority of N independent Redis masters,
renewed while the command runs and released when it exits. For cron entries, CI steps and deploy
scripts that must run on one host at a time, as flock(1) does for one machine.

INSTANCES:
  The Redis masters come from the first of:
    --redis URL     (repeatable), or --config FILE
    REDLOCK_URLS    comma-separated URLs
    REDLOCK_CONFIG  the path of a configuration file
  A configuration file holds one URL per line; blank lines and lines starting with # are skipped.
  Prefer REDLOCK_URLS or a file readable only by you for URLs with passwords: arguments are
  visible to every user of the machine (ps). redlock never prints a password.

  URL forms:
    redis://[[user]:password@]host[:port][/db]        a server (port 6379 by default)
    rediss://...                                      the same over TLS
    redis://host:26379/0?master=NAME                  the master NAME behind a Sentinel
    redis-sentinel://host:26379/0?sentinelServiceName=NAME
    redis+unix:///path/to/redis.sock?db=N              a unix socket
  Query parameters: db, master, sentinelServiceName, node=host:port (more sentinels),
  sentinelUsername, sentinelPassword, ssl_cert_reqs=CERT_NONE, ssl_ca_certs=/path/ca.pem.
  Use an odd number of independent masters (3 or 5): a lock needs a majority of them.

ENVIRONMENT:
  REDLOCK_URLS, REDLOCK_CONFIG   the instances, as above
  exec gives the command REDLOCK_RESOURCE, REDLOCK_TTL_MS and REDLOCK_VALIDITY_MS
  (see redlock exec --help). REDLOCK_FENCING_TOKEN is reserved for a fencing token, once the
  library issues them; it is not set today.

SAFETY:
  A Redlock lock is a lease. redlock stops the command when the lease runs out (SIGTERM at the
  deadline, SIGKILL after --grace), but it cannot take back a write the command already sent. If
  a double holder would corrupt data, have the protected resource reject stale writers.";

const EXAMPLES: &str = "\
EXAMPLES:
  # One host at a time runs the nightly backup; the others skip it (exit 75).
  redlock --redis redis://r1 --redis redis://r2 --redis redis://r3 \\
      exec --no-wait backup -- /usr/local/bin/backup --full

  # The same with the instances in the environment.
  export REDLOCK_URLS=redis://r1,redis://r2,redis://r3
  redlock exec --timeout 10m deploy -- ./deploy.sh production

  # Who holds it, and for how long on each instance?
  redlock status deploy";

/// `redlock`: run a command under a Redlock lock.
#[derive(Debug, Parser)]
#[command(
    name = "redlock",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_long_help = format!("{EXAMPLES}\n\n{}", crate::exit::TABLE),
    after_help = "See 'redlock --help' for the instances, the environment and exit statuses.",
    propagate_version = true,
    disable_help_subcommand = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Options that apply to every subcommand.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Where the instances are, and how to talk to them.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// A Redis master's URL (repeatable)
    ///
    /// A Redis master's URL (repeatable: the lock needs a majority of them). Overrides
    /// REDLOCK_URLS and REDLOCK_CONFIG.
    #[arg(
        short = 'r',
        long = "redis",
        value_name = "URL",
        global = true,
        action = ArgAction::Append
    )]
    pub redis: Vec<String>,

    /// Read the instances' URLs from FILE
    ///
    /// Read the instances' URLs from FILE, one per line (# starts a comment line). Overrides
    /// REDLOCK_URLS and REDLOCK_CONFIG.
    #[arg(
        short = 'c',
        long,
        value_name = "FILE",
        global = true,
        conflicts_with = "redis"
    )]
    pub config: Option<PathBuf>,

    /// Put PREFIX in front of every resource name to make the Redis key
    #[arg(long, value_name = "PREFIX", global = true, default_value = "")]
    pub key_prefix: String,

    /// How long one call to one instance may take
    #[arg(
        long,
        value_name = "DURATION",
        global = true,
        default_value = "100ms",
        value_parser = duration::parse_positive
    )]
    pub instance_timeout: Duration,

    /// Log each call to each instance, with its duration, on stderr
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command while holding the lock; exit with the command's status
    #[command(
        long_about = EXEC_ABOUT,
        after_long_help = format!("{EXEC_EXAMPLES}\n\n{}", crate::exit::TABLE)
    )]
    Exec(Exec),
    /// Show whether resources are locked, on how many instances, and the TTL left on each
    #[command(long_about = STATUS_ABOUT, after_long_help = STATUS_EXAMPLES)]
    Status(Status),
    /// Acquire a lock and print its token; the lock outlives this command until its TTL
    #[command(
        long_about = LOCK_ABOUT,
        after_long_help = format!("{LOCK_EXAMPLES}\n\n{}", crate::exit::TABLE)
    )]
    Lock(LockCmd),
    /// Give a lock taken with `redlock lock` a fresh TTL
    #[command(
        long_about = EXTEND_ABOUT,
        after_long_help = format!("{EXTEND_EXAMPLES}\n\n{}", crate::exit::TABLE)
    )]
    Extend(Extend),
    /// Release a lock taken with `redlock lock`
    #[command(
        long_about = UNLOCK_ABOUT,
        after_long_help = format!("{UNLOCK_EXAMPLES}\n\n{}", crate::exit::TABLE)
    )]
    Unlock(Unlock),
}

/// How long to wait for a lock someone else holds.
#[derive(Debug, Args, Clone, Copy)]
pub struct WaitArgs {
    /// Wait until the lock is free (the default)
    #[arg(short = 'w', long, conflicts_with_all = ["no_wait", "timeout"])]
    pub wait: bool,

    /// Fail at once (status 75, see -E) if another client holds the lock
    #[arg(short = 'n', long = "no-wait", conflicts_with = "timeout")]
    pub no_wait: bool,

    /// Wait at most DURATION for the lock, then fail (status 75, see -E)
    #[arg(short = 't', long, value_name = "DURATION", value_parser = duration::parse)]
    pub timeout: Option<Duration>,

    /// Exit status when another client holds the lock
    #[arg(
        short = 'E',
        long = "conflict-exit-code",
        value_name = "N",
        default_value_t = crate::exit::NOT_ACQUIRED
    )]
    pub conflict_exit_code: u8,
}

/// The TTL of a lease.
fn ttl_arg(text: &str) -> Result<Duration, String> {
    duration::parse_positive(text)
}

/// `redlock exec`.
#[derive(Debug, Args)]
pub struct Exec {
    /// The name of the lock
    #[arg(value_name = "RESOURCE")]
    pub resource: OsString,

    /// The lease, renewed while the command runs
    ///
    /// The lease, renewed at 60 % while the command runs: also how long the lock outlives a
    /// redlock that was killed.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = ttl_arg)]
    pub ttl: Duration,

    #[command(flatten)]
    pub wait: WaitArgs,

    /// After a lost lock, the time between SIGTERM and SIGKILL
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "5s",
        value_parser = duration::parse
    )]
    pub grace: Duration,

    /// After a release a waiter heard, stay GRACE (20ms) before exiting
    ///
    /// After releasing a lock another client was waiting for, stay GRACE (default 20ms) before
    /// exiting, so that a loop that runs redlock again lets the waiter go first.
    #[arg(
        long,
        value_name = "GRACE",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "20ms",
        value_parser = duration::parse
    )]
    pub fair: Option<Duration>,

    /// Keep the command in redlock's process group
    ///
    /// Keep the command in redlock's process group, so that it can read from the terminal.
    /// Signals then reach the command itself only, not the processes it started, and SIGINT and
    /// SIGQUIT are not passed on: the terminal sends them to the command directly.
    #[arg(long)]
    pub foreground: bool,

    /// The command and its arguments (after --)
    #[arg(
        value_name = "COMMAND",
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<OsString>,
}

/// `redlock status`.
#[derive(Debug, Args)]
pub struct Status {
    /// The names of the locks
    #[arg(value_name = "RESOURCE", required = true, num_args = 1..)]
    pub resources: Vec<OsString>,

    /// Print JSON (format described in --help)
    #[arg(long)]
    pub json: bool,
}

/// `redlock lock`.
#[derive(Debug, Args)]
pub struct LockCmd {
    /// The name of the lock
    #[arg(value_name = "RESOURCE")]
    pub resource: OsString,

    /// The lease: the lock is released by itself after DURATION unless extended
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = ttl_arg)]
    pub ttl: Duration,

    #[command(flatten)]
    pub wait: WaitArgs,

    /// Print JSON: {"resource", "token", "ttl_ms", "validity_ms"}
    #[arg(long)]
    pub json: bool,
}

/// `redlock extend`.
#[derive(Debug, Args)]
pub struct Extend {
    /// The name of the lock
    #[arg(value_name = "RESOURCE")]
    pub resource: OsString,

    /// The token printed by `redlock lock`
    #[arg(long, value_name = "TOKEN")]
    pub token: OsString,

    /// The new lease, counted from now
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = ttl_arg)]
    pub ttl: Duration,

    /// Print JSON: {"resource", "token", "ttl_ms", "validity_ms"}
    #[arg(long)]
    pub json: bool,
}

/// `redlock unlock`.
#[derive(Debug, Args)]
pub struct Unlock {
    /// The name of the lock
    #[arg(value_name = "RESOURCE")]
    pub resource: OsString,

    /// The token printed by `redlock lock`
    #[arg(long, value_name = "TOKEN")]
    pub token: OsString,

    /// Print JSON: {"resource", "released"}
    #[arg(long)]
    pub json: bool,
}

const EXEC_ABOUT: &str = "\
Acquire RESOURCE, run COMMAND with its arguments, keep the lock renewed while it runs, release it
when the command exits, and exit with the command's status. Standard input, output and error are
the command's own, passed through untouched.

Acquiring: by default redlock waits for a lock that another client holds (--wait); --no-wait
fails at once and --timeout D after D, with status 75 (-E to change it, as flock -E does). When
too few instances answer, redlock gives up after four attempts in a row (about 1.2 s with the
default --instance-timeout) with status 69, whatever the waiting mode.

While the command runs the lease (--ttl) is renewed at 60 % of its length. If the lock is lost
(a majority of the instances no longer hold it, or the lease ran out before a renewal reached a
majority), redlock sends SIGTERM to the command at once, no later than the lease's deadline,
reports the loss on stderr, sends SIGKILL after --grace if the command is still running, and
exits with status 79.

Signals: SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to redlock are passed on to the command; redlock
releases the lock once the command exits. The command runs in its own process group, and every
signal goes to that group, so that processes it started stop too (--foreground changes this, as
for timeout(1)). A signal that arrives before the command started ends redlock with 128+N.
If redlock itself is killed (SIGKILL, the OOM killer), nothing renews the lock any more: on
Linux the kernel then sends SIGTERM to the command.

The command's environment gets:
  REDLOCK_RESOURCE     the resource name
  REDLOCK_TTL_MS       the lease, in milliseconds
  REDLOCK_VALIDITY_MS  the validity left when the command started, in milliseconds; the lock
                       is renewed after that, and redlock stops the command if it is lost
  REDLOCK_FENCING_TOKEN is reserved for a fencing token (not set: the library has none yet)";

const EXEC_EXAMPLES: &str = "\
EXAMPLES:
  # crontab: every host tries, one runs it, the others exit 75 at once.
  */5 * * * * REDLOCK_URLS=redis://r1,redis://r2,redis://r3 redlock exec -n sync -- /opt/sync

  # Treat \"someone else runs it\" as success in CI.
  redlock exec --no-wait -E 0 migrate -- ./migrate.sh

  # Wait up to 10 minutes; short lease so a crashed host frees the lock within 30 s.
  redlock exec --timeout 10m --ttl 30s deploy -- ./deploy.sh production

  # Use the environment the command gets.
  redlock exec report -- sh -c 'echo \"$REDLOCK_RESOURCE held for $REDLOCK_VALIDITY_MS ms\"'";

const STATUS_ABOUT: &str = "\
Show, for each RESOURCE, whether it is locked: held when the key exists on a majority of the
instances, free when it is missing from a majority, unknown when too few instances answered. Also
shows on how many instances the key exists, the holder's token, and per instance the remaining
TTL or the error. Reads only; takes at most --instance-timeout.

Exit status: 0 when every resource is held or free, 69 when one is unknown, 64 for bad arguments.

JSON (--json), one object; new fields may be added, existing ones keep their meaning:
  {\"version\": 1,
   \"resources\": [
     {\"resource\": \"deploy\",           the name (lossy UTF-8)
      \"state\": \"held\",                \"held\" | \"free\" | \"unknown\"
      \"quorum\": 2,                     instances a lock needs
      \"holding\": 3,                    instances where the key exists
      \"token\": \"4f0c...\",              the value held on a quorum, or null
      \"instances\": [
        {\"instance\": \"10.0.0.1:6379\",  the instance (never a password)
         \"state\": \"held\",              \"held\" | \"free\" | \"error\"
         \"token\": \"4f0c...\",            the key's value, or null
         \"ttl_ms\": 8231,                remaining TTL, or null (no key, or no expiry)
         \"error\": null}                 why the instance gave no answer, or null
      ]}]}";

const STATUS_EXAMPLES: &str = "\
EXAMPLES:
  redlock status deploy backup
  redlock status --json deploy | jq -r '.resources[0].state'";

const LOCK_ABOUT: &str = "\
Acquire RESOURCE for --ttl and print its token on stdout. The lock is not released when redlock
exits: it lasts for the TTL, or until `redlock unlock` with the token; `redlock extend` renews it.
For scripts that hold a lock across several steps; prefer `redlock exec` when one command does the
work, since it renews the lock and stops the command when the lock is lost.

Waiting, -E and the statuses are as for exec.";

const LOCK_EXAMPLES: &str = "\
EXAMPLES:
  token=$(redlock lock --ttl 60s release) || exit
  ./step1 && redlock extend release --token \"$token\" --ttl 60s && ./step2
  redlock unlock release --token \"$token\"

  redlock lock --json --no-wait release   # {\"resource\":..., \"token\":..., \"ttl_ms\":..., \"validity_ms\":...}";

const EXTEND_ABOUT: &str = "\
Give the lock on RESOURCE held by TOKEN a fresh lease of --ttl, counted from now, on a majority of
the instances. Fails with status 79 if TOKEN no longer holds the lock (it expired, or was released
or taken over): whatever the lock protected may be in other hands.";

const EXTEND_EXAMPLES: &str = "\
EXAMPLES:
  redlock extend release --token \"$token\" --ttl 60s || { echo 'lock lost' >&2; exit 1; }";

const UNLOCK_ABOUT: &str = "\
Release the lock on RESOURCE held by TOKEN on every instance. Fails with status 79 if TOKEN did not
hold the lock any more (it expired or was taken over): the steps it protected may have overlapped
with another holder.";

const UNLOCK_EXAMPLES: &str = "\
EXAMPLES:
  redlock unlock release --token \"$token\"";
