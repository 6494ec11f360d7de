//! The Lua scripts and release channels of the Redis backends (`redlock-fred`,
//! `redlock-redis`): one text, so one SHA-1 in the servers' script caches and one semantics,
//! whichever client a manager uses.
//! Managers on both backends, and aioredlock, share servers.
//!
//! Each returns an integer code rather than raising (a script error reaches the client as an
//! opaque string, a code can be matched); `GET` goes through `redis.pcall`, so a key holding
//! another type answers [`WRONG_TYPE`]. Every script is idempotent for the same token. The
//! `#!lua` shebang without flags (Redis 7+) declares that a script may write, so a replica
//! refuses it with `READONLY` instead of answering "not held" from an empty dataset.
//!
//! Keys are `KEYS[1]` (the lock key) unless a script says otherwise; `ARGV[1]` is the token.

/// Prefix of the release-announcement channels; the rest is the key in hex (channels are text
/// in some clients, keys are bytes).
pub const RELEASE_CHANNEL_PREFIX: &str = "redlock:released:";

/// The channel on which releases of `key` are announced (`RELEASE_NOTIFY`'s `ARGV[2]`).
#[must_use]
pub fn release_channel(key: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut channel = String::with_capacity(RELEASE_CHANNEL_PREFIX.len() + key.len() * 2);
    channel.push_str(RELEASE_CHANNEL_PREFIX);
    for b in key {
        channel.push(char::from(HEX[usize::from(b >> 4)]));
        channel.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    channel
}

/// The code a script returns when a key holds a value of another type.
pub const WRONG_TYPE: i64 = -1;

/// `ARGV[1]` = token, `ARGV[2]` = ttl in ms. 1 = acquired (fresh, or already ours: expiry reset).
pub const ACQUIRE: &str = r"#!lua
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
return 0";

/// `ARGV[1]` = token, `ARGV[2]` = ttl in ms; 1 = extended. Never SET: an absent key stays
/// absent (a lost lock is not resurrected).
pub const EXTEND: &str = r"#!lua
local v = redis.pcall('GET', KEYS[1])
if type(v) == 'table' and v.err then return -1 end
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0";

/// The "release" script: deletes the key if it holds `ARGV[1]`; 1 = released, 0 = not ours.
pub const RELEASE: &str = r"#!lua
local v = redis.pcall('GET', KEYS[1])
if type(v) == 'table' and v.err then return -1 end
if v == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0";

/// RELEASE that also announces the release on `ARGV[2]`: 2 = released and a subscriber heard it,
/// 1 = released and nobody listened, 0 = not ours.
pub const RELEASE_NOTIFY: &str = r"#!lua
local v = redis.pcall('GET', KEYS[1])
if type(v) == 'table' and v.err then return -1 end
if v == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if redis.call('PUBLISH', ARGV[2], '') > 0 then return 2 end
  return 1
end
return 0";

/// 0 = absent; otherwise `{value, pttl}`. One script so the value and the TTL belong together.
pub const INSPECT: &str = r"#!lua
local v = redis.pcall('GET', KEYS[1])
if type(v) == 'table' and v.err then return -1 end
if v == false then return 0 end
return {v, redis.call('PTTL', KEYS[1])}";

/// `KEYS[1]` = lock key, `KEYS[2]` = its fencing counter, `ARGV[1]` = token. If the key holds the
/// token: the counter, incremented (created at 1, without expiry). 0 = not held; -2 = the counter
/// is not an integer. The counter's type is checked first, held or not, so a counter key that
/// holds application data is reported whatever the lock's state.
pub const NEXT_FENCE: &str = r"#!lua
local c = redis.pcall('GET', KEYS[2])
if type(c) == 'table' and c.err then return -1 end
local v = redis.pcall('GET', KEYS[1])
if type(v) == 'table' and v.err then return -1 end
if v ~= ARGV[1] then return 0 end
local n = redis.pcall('INCR', KEYS[2])
if type(n) == 'table' and n.err then return -2 end
return n";

/// `KEYS[1]` = a fencing counter, `ARGV[1]` = a value in decimal. counter = max(counter, value),
/// returned as a decimal string. Compared as digit strings (length, then bytes), not as Lua
/// numbers, which are doubles and would round values above 2^53. -2 = the counter is not a
/// decimal number.
pub const RAISE_FENCE: &str = r"#!lua
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
return c";

/// Prefix of the hand-off channels: one per backend connection, named by a random id, on which
/// [`RELEASE_HAND_OFF`] tells a waiter that a key was handed to it.
pub const HANDOFF_CHANNEL_PREFIX: &str = "redlock:handoff:";

/// A hand-off channel for a listener identified by `id` (random, so two processes never share
/// one).
#[must_use]
pub fn handoff_channel(id: u64) -> String {
    format!("{HANDOFF_CHANNEL_PREFIX}{id:016x}")
}

/// The waiter token and lock key a [`RELEASE_HAND_OFF`] message carries (`<token length>:` then
/// the token, then the key), or `None` when the message is not one.
#[must_use]
pub fn parse_handoff(message: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = message.iter().position(|&b| b == b':')?;
    let len: usize = std::str::from_utf8(&message[..colon]).ok()?.parse().ok()?;
    let rest = &message[colon + 1..];
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// [`ACQUIRE`] that queues a refused waiter for a hand-off. `KEYS[1]` = lock key, `KEYS[2]` /
/// `KEYS[3]` = its queue and waiter table ([`crate::queue_keys`]); `ARGV[1]` = token, `ARGV[2]` =
/// ttl in ms, `ARGV[3]` = how long the place lasts (ms), `ARGV[4]` = how long a key handed to
/// this waiter stays reserved (ms), `ARGV[5]` = the waiter's hand-off channel. 1 = acquired
/// (unqueued, and a reservation for the token claimed), 0 = refused and queued (a waiter already
/// queued keeps its place and gets a new deadline), -1 = the lock key or a queue key holds
/// another type. A table entry is `<deadline ms> <reserve ms> <channel>`, on the instance's clock
/// (`TIME`), so client clocks play no part; the table's field `""` (no token is empty) names the
/// token the key is reserved for by [`RELEASE_HAND_OFF`] until that token claims it here.
pub const ACQUIRE_QUEUE: &str = r"#!lua
local v = redis.pcall('GET', KEYS[1])
if type(v) == 'table' and v.err then return -1 end
if v == false or v == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  if redis.pcall('HDEL', KEYS[3], ARGV[1]) == 1 then redis.pcall('LREM', KEYS[2], 1, ARGV[1]) end
  if redis.pcall('HGET', KEYS[3], '') == ARGV[1] then redis.pcall('HDEL', KEYS[3], '') end
  return 1
end
local tq = redis.call('TYPE', KEYS[2])['ok']
local tw = redis.call('TYPE', KEYS[3])['ok']
if (tq ~= 'none' and tq ~= 'list') or (tw ~= 'none' and tw ~= 'hash') then return -1 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local stay = tonumber(ARGV[3])
if redis.call('HSET', KEYS[3], ARGV[1], (now + stay) .. ' ' .. ARGV[4] .. ' ' .. ARGV[5]) == 1 then
  redis.call('RPUSH', KEYS[2], ARGV[1])
end
for i = 2, 3 do
  if redis.call('PTTL', KEYS[i]) < stay then redis.call('PEXPIRE', KEYS[i], stay) end
end
return 0";

/// [`RELEASE_NOTIFY`] that hands the key to the first live queued waiter. `KEYS[1]` = the lock
/// key alone: the script names its queue and waiter table itself ([`crate::queue_keys`]), so
/// the common, uncontended release carries one key, as [`RELEASE`] does, instead of three (on
/// independent masters every key lives on the one server; the names are checked against
/// [`crate::QUEUE_KEY_PREFIX`] and [`crate::WAITERS_KEY_PREFIX`] by a test). `ARGV[1]` = token,
/// `ARGV[2]` (optional) = `2` for a waiter that stops waiting (it leaves the queue), or `1` to
/// pass on only a reservation: a hand-off that reached no call (its waiter went away) is passed
/// on this way, and must never release a key that its token claimed meanwhile (a hand-off
/// message can arrive after the acquire it led to).
///
/// When the key does not hold the token: 0, and with `2` the token's own place in the queue,
/// if any, is given up, and so is the record of a reservation for it that ran out unclaimed
/// (nothing else would remove it before the table expires). When it does, waiters are taken
/// from the head of the queue (at most 100 per call, so a queue of stale entries costs a
/// bounded time); the first whose deadline has not passed, that is not the releaser, and whose
/// channel has a subscriber gets the key (`SET` to its token with its reserve as expiry, and
/// the table's `""` field set to its token) and a message on its channel
/// (`<token length>:<token><key>`, see [`parse_handoff`]): 3. Otherwise the key is deleted and
/// the release announced on the key's release channel ([`release_channel`], computed here) as
/// `RELEASE_NOTIFY` does: 2 = heard, 1 = not.
///
/// Without a waiter table nobody waits on this key: no queued waiter, and no announcement
/// listener, since those register in the table ([`WATCH_RELEASES`]). The script then deletes
/// the key and stops, without looking at the queue or announcing (1): an uncontended release
/// costs the server one lookup (`EXISTS`) more than [`RELEASE`]. A client that subscribes to
/// a release channel without registering is not told of such releases.
pub const RELEASE_HAND_OFF: &str = r"#!lua
local QUEUE, WAITERS = '\255redlock-queue:', '\255redlock-waiters:'
local v = redis.pcall('GET', KEYS[1])
if type(v) == 'table' and v.err then return -1 end
local wt = WAITERS .. KEYS[1]
if v ~= ARGV[1] then
  if ARGV[2] == '2' then
    if redis.pcall('HDEL', wt, ARGV[1]) == 1 then redis.pcall('LREM', QUEUE .. KEYS[1], 1, ARGV[1]) end
    if redis.pcall('HGET', wt, '') == ARGV[1] then redis.pcall('HDEL', wt, '') end
  end
  return 0
end
if redis.call('EXISTS', wt) == 0 then
  if ARGV[2] == '1' then return 0 end
  redis.call('DEL', KEYS[1])
  return 1
end
local reserved = redis.pcall('HGET', wt, '') == ARGV[1]
if ARGV[2] == '1' and not reserved then return 0 end
if reserved then redis.pcall('HDEL', wt, '') end
local q = QUEUE .. KEYS[1]
local now = nil
for i = 1, 100 do
  local w = redis.pcall('LPOP', q)
  if type(w) ~= 'string' then break end
  local e = redis.pcall('HGET', wt, w)
  if type(e) == 'string' then
    redis.call('HDEL', wt, w)
    if not now then
      local t = redis.call('TIME')
      now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    end
    local deadline, reserve, channel = string.match(e, '^(%d+) (%d+) (.+)$')
    if deadline and w ~= ARGV[1] and tonumber(deadline) >= now and tonumber(reserve) > 0 then
      redis.call('SET', KEYS[1], w, 'PX', reserve)
      if redis.call('PUBLISH', channel, #w .. ':' .. w .. KEYS[1]) > 0 then
        redis.call('HSET', wt, '', w)
        return 3
      end
    end
  end
end
redis.call('DEL', KEYS[1])
local hex = string.gsub(KEYS[1], '.', function(c) return string.format('%02x', string.byte(c)) end)
if redis.call('PUBLISH', 'redlock:released:' .. hex, '') > 0 then return 2 end
return 1";

/// How long a [`WATCH_RELEASES`] registration lasts at least. A subscription held longer than
/// this may stop hearing releases of an uncontended key (its waiter then polls on its delay);
/// a registration left behind only sends that key's releases down the slower path until then.
pub const WATCH_FOR: std::time::Duration = std::time::Duration::from_secs(300);

/// Registers a listener of a key's release announcements, so that [`RELEASE_HAND_OFF`]
/// announces its releases (it announces only to registered listeners). `KEYS[1]` = the key's
/// waiter table ([`crate::queue_keys`]), `ARGV[1]` = how long the registration lasts at least
/// (ms). 1 = registered; -1 = the table key holds another type. The registration is the
/// table's field `0xFF "watch"`, which is no token (no token this library makes starts with
/// `0xFF`; a token given to rehydrate a lock that equals it only costs its owner hand-offs and
/// wake-ups, never safety). The table lives as long as its longest registration or queue
/// place.
pub const WATCH_RELEASES: &str = r"#!lua
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'none' and t ~= 'hash' then return -1 end
redis.call('HSET', KEYS[1], '\255watch', '')
local ms = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) < ms then redis.call('PEXPIRE', KEYS[1], ms) end
return 1";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handoff_messages_split_into_token_and_key() {
        assert_eq!(
            parse_handoff(b"3:tokkey:with:colons"),
            Some((&b"tok"[..], &b"key:with:colons"[..]))
        );
        assert_eq!(parse_handoff(b"0:key"), Some((&b""[..], &b"key"[..])));
        assert_eq!(parse_handoff(b"9:short"), None);
        assert_eq!(parse_handoff(b"x:tok"), None);
        assert_eq!(parse_handoff(b"no colon"), None);
        assert_ne!(handoff_channel(1), handoff_channel(2));
    }

    /// `RELEASE_HAND_OFF` writes the release channel itself; a subscriber computes it with
    /// [`release_channel`]: one prefix, lower-case hex (checked end to end on real servers in
    /// `real_wake`).
    #[test]
    fn the_release_script_announces_on_the_subscribers_channel() {
        assert!(RELEASE_HAND_OFF.contains(&format!("'{RELEASE_CHANNEL_PREFIX}' .. hex")));
        assert!(RELEASE_HAND_OFF.contains("'%02x'"));
        assert_eq!(release_channel(b"\x00\xff"), "redlock:released:00ff");
    }

    /// `RELEASE_HAND_OFF` names the queue and the waiter table itself; `ACQUIRE_QUEUE` and
    /// `WATCH_RELEASES` are sent the names `queue_keys` makes. Both must be the same keys
    /// (checked end to end by the hand-off tests on real servers, which hand nothing over
    /// otherwise).
    #[test]
    fn the_release_script_names_the_queue_keys_as_the_core_does() {
        // A byte string as a Lua literal: printable ASCII as is, the rest as `\ddd`.
        let lua = |prefix: &[u8]| -> String {
            prefix
                .iter()
                .map(|&b| match b {
                    b' '..=b'~' if b != b'\\' && b != b'\'' => char::from(b).to_string(),
                    _ => format!("\\{b}"),
                })
                .collect()
        };
        let names = format!(
            "local QUEUE, WAITERS = '{}', '{}'\n",
            lua(crate::QUEUE_KEY_PREFIX),
            lua(crate::WAITERS_KEY_PREFIX)
        );
        assert!(RELEASE_HAND_OFF.contains(&names), "{names}");
        // Named once: every use goes through the two locals.
        assert_eq!(RELEASE_HAND_OFF.matches("redlock-").count(), 2);
        let (queue, waiters) = crate::queue_keys(b"k");
        assert_eq!(queue, [crate::QUEUE_KEY_PREFIX, b"k"].concat());
        assert_eq!(waiters, [crate::WAITERS_KEY_PREFIX, b"k"].concat());
    }
}
