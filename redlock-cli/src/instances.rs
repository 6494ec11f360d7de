//! Where the Redis instances come from (flags, environment, configuration file), the secrets in
//! their URLs, and the manager built over them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use redlock_core::{LockBackend, LockManager};
use redlock_fred::{ConnectionOptions, RedisBackend, TokioClock};

use crate::exit::Failure;
use crate::spawner::TrackedSpawner;
use crate::timed::{Observed, Timed};

/// The environment variable with comma-separated URLs.
pub const URLS_VAR: &str = "REDLOCK_URLS";
/// The environment variable with the path of a configuration file.
pub const CONFIG_VAR: &str = "REDLOCK_CONFIG";

/// The largest configuration file read; a bigger one is a mistake (a wrong path).
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// The instances' URLs, and where they came from (for messages).
#[derive(Debug)]
pub struct Urls {
    /// The URLs, in order.
    pub urls: Vec<String>,
    /// `--redis`, `REDLOCK_URLS`, or the configuration file's path.
    pub source: String,
}

/// Reads the URLs from the first source that is given: `--redis` flags, `--config FILE`,
/// `REDLOCK_URLS`, `REDLOCK_CONFIG`.
///
/// # Errors
/// A usage failure when no source is given, a file cannot be read, or a source lists no URL.
pub fn gather(redis: &[String], config: Option<&Path>) -> Result<Urls, Failure> {
    let urls = if !redis.is_empty() {
        Urls {
            urls: redis.iter().map(|u| u.trim().to_owned()).collect(),
            source: "--redis".into(),
        }
    } else if let Some(path) = config {
        from_file(path)?
    } else if let Some(value) = std::env::var_os(URLS_VAR) {
        let value = value
            .into_string()
            .map_err(|_| Failure::usage(format!("{URLS_VAR} is not valid UTF-8")))?;
        Urls {
            urls: value
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect(),
            source: URLS_VAR.into(),
        }
    } else if let Some(path) = std::env::var_os(CONFIG_VAR) {
        from_file(&PathBuf::from(path))?
    } else {
        return Err(Failure::usage(format!(
            "no Redis instances: give --redis URL (repeatable), --config FILE, {URLS_VAR} or \
             {CONFIG_VAR}"
        )));
    };
    if urls.urls.iter().any(String::is_empty) || urls.urls.is_empty() {
        return Err(Failure::usage(format!(
            "{}: no Redis instance URL given",
            urls.source
        )));
    }
    Ok(urls)
}

/// One URL per line; blank lines and `#` comments are skipped.
fn from_file(path: &Path) -> Result<Urls, Failure> {
    let shown = path.display();
    let unreadable = |e: std::io::Error| Failure::usage(format!("cannot read {shown}: {e}"));
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    if !meta.is_file() {
        return Err(Failure::usage(format!("{shown} is not a file")));
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(Failure::usage(format!(
            "{shown} is larger than {MAX_CONFIG_BYTES} bytes; it should list a few URLs"
        )));
    }
    let text = std::fs::read(path).map_err(unreadable)?;
    let text = String::from_utf8(text)
        .map_err(|_| Failure::usage(format!("{shown} is not valid UTF-8")))?;
    Ok(Urls {
        urls: text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect(),
        source: shown.to_string(),
    })
}

/// The manager and what the tool needs next to it.
#[derive(Debug)]
pub struct Connected {
    /// The lock manager.
    pub manager: LockManager,
    /// The same backends the manager uses, for `status`.
    pub backends: Vec<Arc<Timed<RedisBackend>>>,
    /// What the backends saw (release announcements heard).
    pub observed: Arc<Observed>,
}

/// Settings the subcommands choose.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The per-instance timeout.
    pub instance_timeout: Duration,
    /// Acquire attempts per `lock` call of the manager.
    pub retry_count: u32,
    /// Prepended to resource names.
    pub key_prefix: Vec<u8>,
    /// Fair mode's grace, if on.
    pub fair: Option<Duration>,
}

/// Builds the backends and the manager, which spawns on `spawner`. Touches no network.
///
/// # Errors
/// A usage failure for a URL that does not parse, two URLs for the same server, or a setting the
/// library refuses.
pub fn connect(
    urls: &Urls,
    settings: &Settings,
    spawner: TrackedSpawner,
) -> Result<Connected, Failure> {
    let options = ConnectionOptions::default().for_instance_timeout(settings.instance_timeout);
    let observed = Arc::new(Observed::default());
    let mut backends = Vec::with_capacity(urls.urls.len());
    for (i, url) in urls.urls.iter().enumerate() {
        let backend = RedisBackend::with_options(url.as_str(), &options).map_err(|e| {
            Failure::usage(format!(
                "{} (instance {} of {}): {}",
                urls.source,
                i + 1,
                urls.urls.len(),
                crate::report::error_text(&e)
            ))
        })?;
        backends.push(Arc::new(Timed::new(backend, Arc::clone(&observed))));
    }
    let mut builder = LockManager::builder(Arc::new(TokioClock))
        .spawner(Arc::new(spawner))
        .instance_timeout(settings.instance_timeout)
        .retry_count(settings.retry_count)
        .key_prefix(settings.key_prefix.clone())
        .instances(
            backends
                .iter()
                .map(|b| Arc::clone(b) as Arc<dyn LockBackend>),
        );
    if let Some(grace) = settings.fair {
        builder = builder.fair(grace);
    }
    let manager = builder.build().map_err(|e| {
        Failure::usage(format!(
            "{}: {}",
            urls.source,
            crate::report::error_text(&e)
        ))
    })?;
    Ok(Connected {
        manager,
        backends,
        observed,
    })
}
