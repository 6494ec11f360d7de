//! The scripts of [`redlock_core::redis_lua`] (shared with the other Redis backend, so both use
//! one text and one SHA-1 per script) with their SHA-1s, for `EVALSHA`.

use std::sync::LazyLock;

use redlock_core::redis_lua;

pub(crate) use redis_lua::WRONG_TYPE;

/// One script with its SHA-1, for `EVALSHA`.
pub(crate) struct Script {
    /// The operation, for messages.
    pub(crate) name: &'static str,
    /// This script's bit in a connection's set of scripts known to be cached on the server.
    pub(crate) bit: u16,
    pub(crate) body: &'static str,
    pub(crate) sha: LazyLock<String>,
}

macro_rules! script {
    ($name:ident, $op:expr, $bit:expr, $body:expr) => {
        pub(crate) static $name: Script = Script {
            name: $op,
            bit: 1 << $bit,
            body: $body,
            sha: LazyLock::new(|| redis::Script::new($body).get_hash().to_owned()),
        };
    };
}

script!(ACQUIRE, "acquire", 0, redis_lua::ACQUIRE);

script!(EXTEND, "extend", 1, redis_lua::EXTEND);

script!(RELEASE, "release", 2, redis_lua::RELEASE);

script!(RELEASE_NOTIFY, "release", 3, redis_lua::RELEASE_NOTIFY);

script!(INSPECT, "inspect", 4, redis_lua::INSPECT);

script!(NEXT_FENCE, "next_fence", 5, redis_lua::NEXT_FENCE);

script!(RAISE_FENCE, "raise_fence", 6, redis_lua::RAISE_FENCE);

script!(ACQUIRE_QUEUE, "acquire", 7, redis_lua::ACQUIRE_QUEUE);

script!(RELEASE_HAND_OFF, "release", 8, redis_lua::RELEASE_HAND_OFF);

script!(WATCH_RELEASES, "subscribe", 9, redis_lua::WATCH_RELEASES);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_sha1_of_the_bodies_and_distinct() {
        let all = [
            &ACQUIRE,
            &EXTEND,
            &RELEASE,
            &RELEASE_NOTIFY,
            &INSPECT,
            &NEXT_FENCE,
            &RAISE_FENCE,
            &ACQUIRE_QUEUE,
            &RELEASE_HAND_OFF,
            &WATCH_RELEASES,
        ];
        for s in all {
            assert_eq!(s.sha.len(), 40, "{}", s.name);
        }
        let mut shas: Vec<&str> = all.iter().map(|s| s.sha.as_str()).collect();
        shas.dedup();
        assert_eq!(shas.len(), all.len());
        // The digest Redis itself reports for an empty script (SCRIPT LOAD "").
        assert_eq!(
            redis::Script::new("").get_hash(),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
    }
}
