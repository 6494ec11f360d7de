//! The scripts of [`redlock_core::redis_lua`] (shared with the other Redis backend, so both use
//! one text and one SHA-1 per script) with their SHA-1s, for `EVALSHA`.

use std::sync::LazyLock;

use redlock_core::redis_lua;

use fred::bytes_utils::Str;

pub(crate) use redis_lua::WRONG_TYPE;

/// One script with its SHA1, for `EVALSHA`.
pub(crate) struct Script {
    /// The operation, for messages.
    pub(crate) name: &'static str,
    /// This script's bit in a backend's set of scripts known to be cached on the server.
    pub(crate) bit: u16,
    pub(crate) body: &'static str,
    /// Shared, so sending it costs a reference count, not a copy.
    pub(crate) sha: LazyLock<Str>,
}

macro_rules! script {
    ($name:ident, $op:expr, $bit:expr, $body:expr) => {
        pub(crate) static $name: Script = Script {
            name: $op,
            bit: 1 << $bit,
            body: $body,
            sha: LazyLock::new(|| Str::from(fred::util::sha1_hash($body))),
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
