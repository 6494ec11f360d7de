//! The per-instance Lua scripts: the same text as redlock-fred's, so both backends (and their
//! cached SHA-1s) work side by side on one server and keep the same semantics.
//!
//! Each returns an integer code rather than raising, so that a key of another type is reported
//! as [`WRONG_TYPE`] instead of an opaque script error. Every script is idempotent for the same
//! token. The `#!lua` shebang (Redis 7) declares that it may write, so a replica refuses it with
//! `READONLY` instead of answering "not held" from an empty dataset.

use std::sync::LazyLock;

/// The key holds a value of another type.
pub(crate) const WRONG_TYPE: i64 = -1;

/// One script with its SHA-1, for `EVALSHA`.
pub(crate) struct Script {
    /// The operation, for messages.
    pub(crate) name: &'static str,
    /// This script's bit in a connection's set of scripts known to be cached on the server.
    pub(crate) bit: u8,
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

// ARGV[1] = token, ARGV[2] = ttl in ms. 1 = acquired (fresh, or already ours: expiry reset).
script!(
    ACQUIRE,
    "acquire",
    0,
    r"#!lua
local v = redis.pcall('GET', KEYS[1])
if type(v) == 'table' and v.err then return -1 end
if v == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0"
);

// Never SET: an absent key stays absent (a lost lock is not resurrected).
script!(
    EXTEND,
    "extend",
    1,
    r"#!lua
local v = redis.pcall('GET', KEYS[1])
if type(v) == 'table' and v.err then return -1 end
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0"
);

script!(
    RELEASE,
    "release",
    2,
    r"#!lua
local v = redis.pcall('GET', KEYS[1])
if type(v) == 'table' and v.err then return -1 end
if v == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0"
);

// RELEASE that also announces the release on ARGV[2]: 2 = released and a subscriber heard it,
// 1 = released and nobody listened, 0 = not ours.
script!(
    RELEASE_NOTIFY,
    "release",
    3,
    r"#!lua
local v = redis.pcall('GET', KEYS[1])
if type(v) == 'table' and v.err then return -1 end
if v == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if redis.call('PUBLISH', ARGV[2], '') > 0 then return 2 end
  return 1
end
return 0"
);

// 0 = absent; otherwise {value, pttl}. One script so the value and the TTL belong together.
script!(
    INSPECT,
    "inspect",
    4,
    r"#!lua
local v = redis.pcall('GET', KEYS[1])
if type(v) == 'table' and v.err then return -1 end
if v == false then return 0 end
return {v, redis.call('PTTL', KEYS[1])}"
);

// KEYS[1] = lock key, KEYS[2] = its fencing counter, ARGV[1] = token. If the key holds the
// token: the counter, incremented (created at 1, without expiry). 0 = not held; -2 = the counter
// is not an integer. The counter's type is checked first, held or not, so a counter key that
// holds application data is reported whatever the lock's state.
script!(
    NEXT_FENCE,
    "next_fence",
    5,
    r"#!lua
local c = redis.pcall('GET', KEYS[2])
if type(c) == 'table' and c.err then return -1 end
local v = redis.pcall('GET', KEYS[1])
if type(v) == 'table' and v.err then return -1 end
if v ~= ARGV[1] then return 0 end
local n = redis.pcall('INCR', KEYS[2])
if type(n) == 'table' and n.err then return -2 end
return n"
);

// KEYS[1] = a fencing counter, ARGV[1] = a value in decimal. counter = max(counter, value),
// returned as a decimal string. Compared as digit strings (length, then bytes), not as Lua
// numbers, which are doubles and would round values above 2^53. -2 = the counter is not a
// decimal number.
script!(
    RAISE_FENCE,
    "raise_fence",
    6,
    r"#!lua
local c = redis.pcall('GET', KEYS[1])
if type(c) == 'table' and c.err then return -1 end
if c == false then c = '0' end
if not string.match(c, '^%d+$') then return -2 end
c = string.gsub(c, '^0+(%d)', '%1')
local v = ARGV[1]
if #c < #v or (#c == #v and c < v) then
  redis.call('SET', KEYS[1], v)
  return v
end
return c"
);

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
