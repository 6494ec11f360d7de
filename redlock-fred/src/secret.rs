//! Credentials that never show: one wrapper from URL parsing to fred's configuration.

use std::fmt;

/// A password: `Debug` and `Display` print `<redacted>`, never the text, so a credential can
/// sit in a configuration that is logged, printed or put in an error.
///
/// Built from a `&str` or `String` (`.into()`); [`expose`](Self::expose) gives the text to
/// whatever must send it.
///
/// ```
/// use redlock_fred::Secret;
///
/// let secret = Secret::from("hunter2");
/// assert_eq!(format!("{secret} {secret:?}"), "<redacted> Secret(<redacted>)");
/// assert_eq!(secret.expose(), "hunter2");
/// ```
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps `text`.
    #[must_use]
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The secret text, for sending it where it belongs. Keep it out of logs and messages.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is the empty string.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Self {
        Self(text)
    }
}

impl From<&str> for Secret {
    fn from(text: &str) -> Self {
        Self(text.to_owned())
    }
}

impl From<&String> for Secret {
    fn from(text: &String) -> Self {
        Self(text.clone())
    }
}
