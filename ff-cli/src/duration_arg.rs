//! Parsing durations given in seconds on the command line, rejecting
//! negative, non-finite and absurd values instead of panicking.

use std::time::Duration;

/// Longest accepted duration: one week.
const MAX_SECS: f64 = 7.0 * 24.0 * 3600.0;

/// Parse seconds (fractions allowed) into a `Duration`: `0 < s <= 1 week`.
pub fn parse_secs(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(secs > 0.0 && secs <= MAX_SECS) {
        return Err(format!(
            "{text:?}: expected seconds above 0 and at most {MAX_SECS}"
        ));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
}

/// Parse a positive rate (events per second), at most one million.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if !(rate > 0.0 && rate <= 1_000_000.0) {
        return Err(format!(
            "{text:?}: expected a rate above 0 and at most 1000000"
        ));
    }
    Ok(rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_durations_are_errors_not_panics() {
        assert_eq!(parse_secs("1.5").unwrap(), Duration::from_millis(1500));
        for bad in ["-1", "0", "NaN", "inf", "1e30", "abc", ""] {
            assert!(parse_secs(bad).is_err(), "{bad}");
        }
        assert!(parse_rate("inf").is_err());
        assert!(parse_rate("100").is_ok());
    }
}
