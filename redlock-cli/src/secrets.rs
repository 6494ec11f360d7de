//! Passwords found in the URLs the tool was given, scrubbed from everything it prints.
//!
//! The backend already keeps passwords out of its messages; this is the second line, for any
//! message (the tool's, the library's, a server's echo) that would still carry one.

use std::borrow::Cow;

/// The replacement for a secret.
const MASK: &str = "***";

/// Secrets to scrub from output.
#[derive(Debug, Default)]
pub struct Secrets {
    /// Longest first, so that a secret containing another is replaced whole.
    secrets: Vec<String>,
}

impl Secrets {
    /// No secrets.
    pub const fn empty() -> Self {
        Self {
            secrets: Vec::new(),
        }
    }

    /// The passwords in `texts` (URLs, or arguments that may be URLs).
    pub fn from_texts<'a>(texts: impl IntoIterator<Item = &'a str>) -> Self {
        let mut secrets = Vec::new();
        for text in texts {
            collect(text, &mut secrets);
        }
        secrets.retain(|s| !s.is_empty());
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Self { secrets }
    }

    /// Adds the secrets of `other`.
    pub fn extend(&mut self, other: Self) {
        self.secrets.extend(other.secrets);
        self.secrets
            .sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        self.secrets.dedup();
    }

    /// `text` with every secret replaced by `***`, on one line.
    pub fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = Cow::Owned(out.replace(secret.as_str(), MASK));
            }
        }
        if out.contains(['\n', '\r']) {
            out = Cow::Owned(out.replace(['\n', '\r'], " "));
        }
        out
    }
}

/// The password and Sentinel password of `text` if it is a URL, raw and percent-decoded. A text
/// that looks like a URL with credentials but does not parse gives its whole user-info part.
fn collect(text: &str, out: &mut Vec<String>) {
    let Some(scheme_end) = text.find("://") else {
        return;
    };
    match url::Url::parse(text) {
        Ok(url) => {
            if let Some(password) = url.password() {
                push_both(password, out);
            }
            // A lone user part is a password for aioredis-style URLs (`redis://secret@host`).
            if url.password().is_none() && !url.username().is_empty() {
                push_both(url.username(), out);
            }
            let raw_query = url.query().unwrap_or("");
            for pair in raw_query.split('&') {
                if let Some((name, value)) = pair.split_once('=') {
                    if name.eq_ignore_ascii_case("sentinelPassword") {
                        push_both(value, out);
                    }
                }
            }
        }
        Err(_) => {
            let rest = &text[scheme_end + 3..];
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            if let Some(at) = rest[..authority_end].rfind('@') {
                let userinfo = &rest[..at];
                out.push(userinfo.to_owned());
                if let Some((_, password)) = userinfo.split_once(':') {
                    push_both(password, out);
                }
            }
            if let Some((_, query)) = rest.split_once('?') {
                for pair in query.split('&') {
                    if let Some((name, value)) = pair.split_once('=') {
                        if name.eq_ignore_ascii_case("sentinelPassword") {
                            push_both(value, out);
                        }
                    }
                }
            }
        }
    }
}

fn push_both(raw: &str, out: &mut Vec<String>) {
    out.push(raw.to_owned());
    let decoded = percent_decode(raw);
    if decoded != raw {
        out.push(decoded);
    }
}

/// `%XX` sequences decoded (lossy UTF-8); `+` is kept, as in a URL's user-info.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let pair = &bytes[i + 1..i + 3];
            let hex = pair
                .iter()
                .all(u8::is_ascii_hexdigit)
                .then(|| std::str::from_utf8(pair).ok())
                .flatten()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(b) = hex {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_scrubbed() {
        let s = Secrets::from_texts([
            "redis://user:pa%40ss@host:1/0",
            "redis://lone@host",
            "redis://h:26379/0?master=m&sentinelPassword=sp%21",
            "redis://bad:hunter2@[::1/0",
            "not a url",
        ]);
        let text = "pa%40ss pa@ss lone sp%21 sp! hunter2 host";
        let scrubbed = s.scrub(text);
        for secret in ["pa%40ss", "pa@ss", "lone", "sp%21", "sp!", "hunter2"] {
            assert!(!scrubbed.contains(secret), "{secret} in {scrubbed}");
        }
        assert!(scrubbed.ends_with("host"));
    }

    #[test]
    fn one_line() {
        assert_eq!(Secrets::default().scrub("a\nb\r\nc"), "a b  c");
    }

    #[test]
    fn decoding_never_panics() {
        for text in ["%", "%4", "%zz", "%41", "a%", "%%41", "é%41"] {
            let _ = percent_decode(text);
        }
        assert_eq!(percent_decode("%41b%"), "Ab%");
    }
}
