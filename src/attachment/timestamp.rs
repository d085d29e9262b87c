//! The `attached-at` annotation's time format.
//!
//! Written as Go's RFC3339Micro in UTC (`2024-01-02T03:04:05.123456Z`:
//! exactly six fraction digits, truncated), which is what the Go original of
//! this driver wrote, so both read each other's annotations. Read leniently:
//! any RFC 3339 time, with any offset and any number of fraction digits.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::calendar::{civil_from_days, days_from_civil, days_in_month};

const MICROS: i128 = 1_000_000;
const DAY: i64 = 86_400;

/// Formats `t` as RFC3339Micro in UTC.
pub fn format_micros(t: SystemTime) -> String {
    let micros = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i128,
        Err(e) => -(e.duration().as_micros() as i128),
    };
    // Floor, as Go keeps a time's fraction non-negative.
    let secs = micros.div_euclid(MICROS) as i64;
    let fraction = micros.rem_euclid(MICROS);
    let (days, of_day) = (secs.div_euclid(DAY), secs.rem_euclid(DAY));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{fraction:06}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

/// Parses an RFC 3339 time (`T` or `t`, `Z`, `z` or a `±HH:MM` offset, any
/// number of fraction digits, nanoseconds kept); `None` when `s` is not
/// one (or is out of the range a `SystemTime` can hold). A leap second
/// (`:60`) is not one.
pub fn parse(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let digits = b.get(from..from + len)?;
        digits.iter().try_fold(0i64, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
        })
    };
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(at(4, b'-')
        && at(7, b'-')
        && matches!(b.get(10), Some(b'T' | b't'))
        && at(13, b':')
        && at(16, b':'))
    {
        return None;
    }
    let (y, m, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hh, mm, ss) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) || hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    let mut i = 19;
    let mut nanos: i64 = 0;
    if at(i, b'.') {
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        for (k, c) in b[i + 1..i + 1 + digits].iter().enumerate().take(9) {
            nanos += i64::from(c - b'0') * 10i64.pow(8 - k as u32);
        }
        i += 1 + digits;
    }
    let offset = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (oh, om) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, m, d) * DAY + hh * 3600 + mm * 60 + ss - offset;
    let since = Duration::new(secs.unsigned_abs(), 0);
    let whole = if secs >= 0 {
        UNIX_EPOCH.checked_add(since)?
    } else {
        UNIX_EPOCH.checked_sub(since)?
    };
    whole.checked_add(Duration::from_nanos(nanos as u64))
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
    fn leap_days_are_dates_only_in_leap_years() {
        assert_eq!(
            parse("2000-02-29T00:00:00Z"),
            Some(UNIX_EPOCH + Duration::from_secs(951_782_400))
        );
        assert_eq!(parse("1900-02-29T00:00:00Z"), None);
        assert_eq!(parse("2100-02-29T00:00:00Z"), None);
    }

    #[test]
    fn fractions_offsets_and_times_before_the_epoch() {
        let t = parse("1969-12-31T23:59:59.5Z").unwrap();
        assert_eq!(
            UNIX_EPOCH.duration_since(t).unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(format_micros(t), "1969-12-31T23:59:59.500000Z");
        let nanos = parse("2024-01-02T03:04:05.123456789123z").unwrap();
        assert_eq!(
            nanos.duration_since(UNIX_EPOCH).unwrap(),
            Duration::new(1_704_164_645, 123_456_789)
        );
        assert_eq!(
            parse("2024-01-02t03:04:05-00:30"),
            parse("2024-01-02T03:34:05Z")
        );
        assert_eq!(
            format_micros(parse("9999-12-31T23:59:59.999999Z").unwrap()),
            "9999-12-31T23:59:59.999999Z"
        );
    }

    #[test]
    fn garbage_is_none() {
        for bad in [
            "",
            "yesterday",
            "2024-13-01T00:00:00Z",
            "2024-01-02 03:04:05",
            "2024-01-02T03:04:05",
            "2024-01-02T03:04:05.Z",
            "2024-01-02T03:04:60Z",
            "2024-01-02T24:00:00Z",
            "2024-01-32T00:00:00Z",
            "2024-01-02T03:04:05+2:00",
            "2024-01-02T03:04:05+02:60",
            "2024-01-02T03:04:05Zjunk",
            "+024-01-02T03:04:05Z",
            "2024-01-02T03:04:05.12é",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
