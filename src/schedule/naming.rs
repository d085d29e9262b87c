//! What a run's snapshots are called, and which minute a run stands for:
//! the same schedule, PVC and minute always give the same name, so a
//! retried Job finds what an earlier attempt made.

use std::time::{Duration, SystemTime};

use crate::attachment::format_micros;

use super::When;

/// The scheduled minute a run stands for, and where it came from.
pub fn scheduled_time(when: &When, now: SystemTime) -> (SystemTime, &'static str) {
    let minute = |t: SystemTime| {
        let s = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        SystemTime::UNIX_EPOCH + Duration::from_secs(s - s % 60)
    };
    match when {
        When::At(t) => (minute(*t), "--scheduled-time"),
        When::JobName(job) => match job_minute(job, now) {
            Some(t) => (t, "the Job's name"),
            None => (
                minute(now),
                "the clock (the Job's name carries no scheduled time)",
            ),
        },
        When::Now => (minute(now), "the clock"),
    }
}

/// `<cronjob>-<minutes since 1970>` → that minute, when it is a plausible
/// scheduled time (after 2000, not more than a day ahead of `now`).
fn job_minute(job: &str, now: SystemTime) -> Option<SystemTime> {
    let (_, n) = job.rsplit_once('-')?;
    let minutes: u64 = n.parse().ok()?;
    let t = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(minutes.checked_mul(60)?))?;
    let y2000 = SystemTime::UNIX_EPOCH + Duration::from_secs(946_684_800);
    (t >= y2000 && t <= now + Duration::from_secs(86_400)).then_some(t)
}

/// `<schedule>-<pvc>-<YYYYMMDD-HHMM>`; a PVC name too long for a 253-byte
/// name is cut and made unique again with a hash of it.
pub fn snapshot_name(schedule: &str, pvc: &str, at: SystemTime) -> String {
    let stamp = minute_stamp(at);
    let room = 253 - schedule.len() - stamp.len() - 2;
    let pvc = if pvc.len() <= room {
        pvc.to_string()
    } else {
        let hash = sha1_smol::Sha1::from(pvc).digest().to_string();
        // Names the API lists are ASCII; a cut on a character boundary
        // all the same, so that no name can make this panic.
        let end = (0..=room - 9)
            .rev()
            .find(|i| pvc.is_char_boundary(*i))
            .unwrap_or(0);
        let cut = pvc[..end].trim_end_matches(['-', '.']);
        format!("{cut}-{}", &hash[..8])
    };
    format!("{schedule}-{pvc}-{stamp}")
}

/// `YYYYMMDD-HHMM` in UTC.
fn minute_stamp(at: SystemTime) -> String {
    let micros = format_micros(at); // 2026-12-03T11:23:00.000000Z
    let digits: String = micros.chars().filter(char::is_ascii_digit).collect();
    format!("{}-{}", &digits[..8], &digits[8..12])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{attachment::parse_time, kube};

    #[test]
    fn the_scheduled_minute_comes_from_the_cronjobs_job_name() {
        let now = parse_time("2026-12-03T11:23:45Z").unwrap();
        // 29 412 683 minutes since 1970 = 2025-12-03T11:23:00Z.
        let (t, from) = scheduled_time(&When::JobName("nightly-29412683".into()), now);
        assert_eq!(format_micros(t), "2025-12-03T11:23:00.000000Z");
        assert_eq!(from, "the Job's name");
        // A hand-made Job: the clock, to the minute.
        let (t, from) = scheduled_time(&When::JobName("manual-1".into()), now);
        assert_eq!(format_micros(t), "2026-12-03T11:23:00.000000Z");
        assert!(from.starts_with("the clock"));
        let (t, _) = scheduled_time(&When::At(parse_time("2026-01-02T03:04:59Z").unwrap()), now);
        assert_eq!(format_micros(t), "2026-01-02T03:04:00.000000Z");
    }

    #[test]
    fn snapshot_names_are_deterministic_and_fit() {
        let at = parse_time("2026-12-03T02:00:00Z").unwrap();
        assert_eq!(
            snapshot_name("daily", "data-db-0", at),
            "daily-data-db-0-20261203-0200"
        );
        let long = "p".repeat(253);
        let n = snapshot_name(&"s".repeat(40), &long, at);
        assert!(n.len() <= 253, "{}", n.len());
        assert!(kube::is_dns_subdomain(&n), "{n}");
        assert_eq!(n, snapshot_name(&"s".repeat(40), &long, at));
        assert_ne!(n, snapshot_name(&"s".repeat(40), &"p".repeat(252), at));
        // Never a panic, whatever the name.
        assert!(snapshot_name("d", &"é".repeat(200), at).len() <= 253);
    }
}
