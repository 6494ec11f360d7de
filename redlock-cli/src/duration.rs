//! Durations on the command line: `10s`, `500ms`, `1.5m`, `2h`; a bare number is seconds, as for
//! `sleep(1)` and `timeout(1)`.

use std::time::Duration;

/// The longest duration accepted: a day. Longer ones are almost certainly a unit mistake.
const MAX: Duration = Duration::from_secs(24 * 3600);

/// Parses `text` as a duration (clap value parser).
///
/// # Errors
/// A message saying what is wrong: no number, an unknown unit, a negative, non-finite or too
/// large value.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit = unit.trim();
    let scale = match unit {
        "ms" => 1e-3,
        "" | "s" | "sec" | "secs" => 1.0,
        "m" | "min" | "mins" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "`{text}`: unknown unit `{unit}` (use ms, s, m or h, e.g. 500ms or 10s)"
            ))
        }
    };
    if number.is_empty() || number == "." {
        return Err(format!("`{text}` is not a duration (e.g. 500ms, 10s, 2m)"));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (e.g. 500ms, 10s, 2m)"))?;
    let seconds = value * scale;
    if !seconds.is_finite() || seconds > MAX.as_secs_f64() {
        return Err(format!("`{text}` is longer than a day"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses a duration that must be at least a millisecond.
///
/// # Errors
/// As [`parse`], and for durations under 1 ms.
pub fn parse_positive(text: &str) -> Result<Duration, String> {
    let d = parse(text)?;
    if d < Duration::from_millis(1) {
        return Err(format!("`{}` must be at least 1ms", text.trim()));
    }
    Ok(d)
}

/// Milliseconds, saturating (for messages and JSON).
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse(" 3 s "), Ok(Duration::from_secs(3)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn refusals() {
        for bad in [
            "", "s", "abc", "-1s", "1x", "1.2.3s", ".", "1e9", "25h", "1d", "NaN", "inf",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_positive("0").is_err());
        assert!(parse_positive("0.0001s").is_err());
        assert_eq!(parse_positive("1ms"), Ok(Duration::from_millis(1)));
    }

    #[test]
    fn never_panics() {
        let pieces = [
            "",
            "0",
            "9",
            ".",
            "e",
            "ms",
            "s",
            "m",
            "h",
            "-",
            " ",
            "é",
            "99999999999",
        ];
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    let _ = parse(&format!("{a}{b}{c}"));
                }
            }
        }
    }
}
