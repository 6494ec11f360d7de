//! How names, tokens and per-instance reports appear in span and event fields. Formatted only
//! when a subscriber records the field.

use std::fmt;

use crate::error::Failure;

/// The longest part of a resource name shown.
const RESOURCE_SHOWN: usize = 128;

/// The part of a token shown: enough to tell two holders apart in a log, too little to release
/// someone else's lock with it (the full token is the only credential a holder has).
const TOKEN_SHOWN: usize = 8;

/// A resource name: lossy UTF-8, shortened.
pub(super) struct Resource<'a>(pub(super) &'a [u8]);

impl fmt::Display for Resource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.0;
        let shown = String::from_utf8_lossy(&name[..name.len().min(RESOURCE_SHOWN)]);
        f.write_str(&shown)?;
        if name.len() > RESOURCE_SHOWN {
            f.write_str("…")?;
        }
        Ok(())
    }
}

/// The first characters of a token.
pub(super) struct Token<'a>(pub(super) &'a [u8]);

impl fmt::Display for Token<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let token = self.0;
        f.write_str(&String::from_utf8_lossy(
            &token[..token.len().min(TOKEN_SHOWN)],
        ))
    }
}

/// Each instance's outcome in a failed round: `id=outcome`, in configuration order.
pub(super) struct Instances<'a>(pub(super) &'a Failure);

impl fmt::Display for Instances<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, report) in self.0.instances.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(
                f,
                "{}={}",
                report.instance,
                super::labels::instance(&report.outcome)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_cut_and_names_shortened() {
        assert_eq!(Token(b"0123456789abcdef-0-1").to_string(), "01234567");
        assert_eq!(Token(b"ab").to_string(), "ab");
        assert_eq!(Token(&[0xff, b'a']).to_string(), "\u{fffd}a");
        let long = vec![b'x'; RESOURCE_SHOWN + 1];
        let shown = Resource(&long).to_string();
        assert_eq!(shown.chars().filter(|c| *c == 'x').count(), RESOURCE_SHOWN);
        assert!(shown.ends_with('…'));
        assert_eq!(Resource(b"job").to_string(), "job");
    }
}
