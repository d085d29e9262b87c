//! The `attached-at` annotation's time format.
//!
//! Written as Go's RFC3339Micro in UTC (`2024-01-02T03:04:05.123456Z`:
//! exactly six fraction digits, truncated), which is what the Go original of
//! this driver wrote, so both read each other's annotations. Read leniently:
//! any RFC 3339 time, with any offset and any number of fraction digits.

use std::time::SystemTime;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

/// Formats `t` as RFC3339Micro in UTC.
pub fn format_micros(t: SystemTime) -> String {
    let t = OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// Parses an RFC 3339 time; `None` when `s` is not one (or is out of the
/// range a `SystemTime` can hold).
pub fn parse(s: &str) -> Option<SystemTime> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(SystemTime::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn six_fraction_digits_truncated_not_rounded() {
        let t = UNIX_EPOCH + Duration::new(1_704_164_645, 123_456_999);
        assert_eq!(format_micros(t), "2024-01-02T03:04:05.123456Z");
        assert_eq!(
            format_micros(UNIX_EPOCH + Duration::from_secs(1_704_164_645)),
            "2024-01-02T03:04:05.000000Z"
        );
    }

    #[test]
    fn parses_any_offset_and_round_trips() {
        let utc = parse("2024-01-02T03:04:05.123456Z").unwrap();
        assert_eq!(parse("2024-01-02T05:04:05.123456+02:00"), Some(utc));
        assert_eq!(
            parse("2024-01-02T03:04:05Z"),
            Some(utc - Duration::from_micros(123_456))
        );
        assert_eq!(format_micros(utc), "2024-01-02T03:04:05.123456Z");
    }

    #[test]
    fn garbage_is_none() {
        for bad in [
            "",
            "yesterday",
            "2024-13-01T00:00:00Z",
            "2024-01-02 03:04:05",
            "2024-01-02T03:04:05",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
