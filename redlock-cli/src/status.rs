//! `redlock status`: what each instance holds under a resource's key, read directly from the
//! backends (the manager answers only "held or not", not the TTL per instance).

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use redlock_core::{KeyState, LockBackend, MAX_KEY_LEN};
use serde_json::{json, Value};

use crate::cli::Status;
use crate::duration::millis;
use crate::exit::{self, Failure};
use crate::instances::Connected;
use crate::output;
use crate::report;

/// Version of the JSON format; raised only when an existing field changes meaning.
pub const JSON_VERSION: u32 = 1;

/// One instance's answer.
#[derive(Debug)]
pub enum Seen {
    /// The key exists.
    Held(KeyState),
    /// The key does not exist.
    Free,
    /// No answer, and why.
    Error(String),
}

/// One resource across the instances.
#[derive(Debug)]
struct Resource {
    name: Vec<u8>,
    quorum: usize,
    instances: Vec<(String, Seen)>,
}

impl Resource {
    fn holding(&self) -> usize {
        self.instances
            .iter()
            .filter(|(_, s)| matches!(s, Seen::Held(_)))
            .count()
    }

    fn free(&self) -> usize {
        self.instances
            .iter()
            .filter(|(_, s)| matches!(s, Seen::Free))
            .count()
    }

    /// `held` when the key exists on a quorum (as `LockManager::is_locked` decides), `free`
    /// when it is missing from so many that no quorum can hold it, `unknown` otherwise.
    fn state(&self) -> &'static str {
        let n = self.instances.len();
        if self.holding() >= self.quorum {
            "held"
        } else if self.free() > n - self.quorum {
            "free"
        } else {
            "unknown"
        }
    }

    /// The value a quorum holds: the holder's token.
    fn token(&self) -> Option<&[u8]> {
        let mut counts: HashMap<&[u8], usize> = HashMap::new();
        for (_, seen) in &self.instances {
            if let Seen::Held(state) = seen {
                *counts.entry(state.value.as_slice()).or_default() += 1;
            }
        }
        counts
            .into_iter()
            .find(|&(_, count)| count >= self.quorum)
            .map(|(value, _)| value)
    }

    fn json(&self) -> Value {
        let instances: Vec<Value> = self
            .instances
            .iter()
            .map(|(id, seen)| match seen {
                Seen::Held(state) => json!({
                    "instance": id,
                    "state": "held",
                    "token": lossy(&state.value),
                    "ttl_ms": state.ttl.map(millis),
                    "error": null,
                }),
                Seen::Free => json!({
                    "instance": id,
                    "state": "free",
                    "token": null,
                    "ttl_ms": null,
                    "error": null,
                }),
                Seen::Error(e) => json!({
                    "instance": id,
                    "state": "error",
                    "token": null,
                    "ttl_ms": null,
                    "error": output::scrub(e),
                }),
            })
            .collect();
        json!({
            "resource": lossy(&self.name),
            "state": self.state(),
            "quorum": self.quorum,
            "holding": self.holding(),
            "token": self.token().map(lossy),
            "instances": instances,
        })
    }

    fn text(&self) -> String {
        let mut text = format!(
            "{}: {} (key on {} of {} instances, quorum {})",
            report::quoted(&self.name),
            self.state(),
            self.holding(),
            self.instances.len(),
            self.quorum
        );
        if let Some(token) = self.token() {
            text.push_str(&format!(", token {}", lossy(token)));
        }
        let width = self
            .instances
            .iter()
            .map(|(id, _)| id.len())
            .max()
            .unwrap_or(0);
        for (id, seen) in &self.instances {
            let line = match seen {
                Seen::Held(state) => {
                    let ttl = match state.ttl {
                        Some(ttl) => format!("ttl {:.3} s", ttl.as_secs_f64()),
                        None => "no expiry".to_owned(),
                    };
                    format!("held   {ttl}   token {}", lossy(&state.value))
                }
                Seen::Free => "free".to_owned(),
                Seen::Error(e) => format!("error  {}", output::scrub(e)),
            };
            text.push_str(&format!("\n  {id:<width$}  {line}"));
        }
        text
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asks every instance for `key`, each for at most `timeout`, and waits for all of them.
///
/// Each backend sends its commands in order on one connection, so this also waits for calls
/// still in flight on each instance (those a round stopped waiting for once it was decided).
pub async fn look(conn: &Connected, key: &[u8], timeout: Duration) -> Vec<(String, Seen)> {
    let calls = conn.backends.iter().map(|backend| async move {
        let id = backend.id().to_owned();
        let seen = match tokio::time::timeout(timeout, backend.inspect(key)).await {
            Ok(Ok(Some(state))) => Seen::Held(state),
            Ok(Ok(None)) => Seen::Free,
            Ok(Err(e)) => Seen::Error(report::without_id(&id, &report::with_causes(&e))),
            Err(_) => Seen::Error(format!("no answer within {timeout:?}")),
        };
        (id, seen)
    });
    futures::future::join_all(calls).await
}

/// Runs `redlock status`.
///
/// # Errors
/// A usage failure for an empty or too long name; a failure to write stdout.
pub async fn run(args: &Status, conn: &Connected, timeout: Duration) -> Result<u8, Failure> {
    let prefix = conn.manager.config().key_prefix();
    let quorum = conn.manager.quorum();
    let mut keys = Vec::with_capacity(args.resources.len());
    for resource in &args.resources {
        let name = resource.as_bytes();
        if name.is_empty() {
            return Err(Failure::usage("a resource name is empty"));
        }
        let len = prefix.len().saturating_add(name.len());
        if len > MAX_KEY_LEN {
            return Err(Failure::usage(format!(
                "the key for {} is {len} bytes; at most {MAX_KEY_LEN} are allowed",
                report::quoted(name)
            )));
        }
        keys.push((name.to_vec(), [prefix, name].concat()));
    }
    let looks = keys.iter().map(|(name, key)| async move {
        Resource {
            name: name.clone(),
            quorum,
            instances: look(conn, key, timeout).await,
        }
    });
    let resources = futures::future::join_all(looks).await;
    let text = if args.json {
        let all: Vec<Value> = resources.iter().map(Resource::json).collect();
        json!({ "version": JSON_VERSION, "resources": all }).to_string()
    } else {
        resources
            .iter()
            .map(Resource::text)
            .collect::<Vec<_>>()
            .join("\n")
    };
    output::print(&text)
        .map_err(|e| Failure::new(exit::INTERNAL, format!("cannot write the status: {e}")))?;
    let decided = resources.iter().all(|r| r.state() != "unknown");
    Ok(if decided {
        exit::SUCCESS
    } else {
        exit::UNAVAILABLE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(value: &str) -> Seen {
        Seen::Held(KeyState {
            value: value.as_bytes().to_vec(),
            ttl: Some(Duration::from_millis(1500)),
        })
    }

    fn resource(seen: Vec<Seen>) -> Resource {
        let quorum = seen.len() / 2 + 1;
        Resource {
            name: b"r".to_vec(),
            quorum,
            instances: seen
                .into_iter()
                .enumerate()
                .map(|(i, s)| (format!("i{i}"), s))
                .collect(),
        }
    }

    #[test]
    fn states_follow_the_quorum() {
        let r = resource(vec![held("a"), held("a"), Seen::Free]);
        assert_eq!((r.state(), r.token()), ("held", Some(&b"a"[..])));
        // Two holders' keys: held (nobody can take it), but no token on a quorum.
        let r = resource(vec![held("a"), held("b"), Seen::Free]);
        assert_eq!((r.state(), r.token()), ("held", None));
        let r = resource(vec![held("a"), Seen::Free, Seen::Free]);
        assert_eq!(r.state(), "free");
        let r = resource(vec![held("a"), Seen::Free, Seen::Error("x".into())]);
        assert_eq!(r.state(), "unknown");
        let r = resource(vec![
            Seen::Free,
            Seen::Error("x".into()),
            Seen::Error("y".into()),
        ]);
        assert_eq!(r.state(), "unknown");
    }

    #[test]
    fn json_has_every_field_for_every_state() {
        let r = resource(vec![held("a"), Seen::Free, Seen::Error("down".into())]);
        let v = r.json();
        for field in [
            "resource",
            "state",
            "quorum",
            "holding",
            "token",
            "instances",
        ] {
            assert!(v.get(field).is_some(), "{field}");
        }
        let instances = v["instances"].as_array().cloned().unwrap_or_default();
        assert_eq!(instances.len(), 3);
        for i in &instances {
            for field in ["instance", "state", "token", "ttl_ms", "error"] {
                assert!(i.get(field).is_some(), "{field} in {i}");
            }
        }
        assert_eq!(instances[0]["ttl_ms"], 1500);
        assert_eq!(instances[2]["error"], "down");
    }
}
