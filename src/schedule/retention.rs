//! Which of a schedule's snapshots of one PVC go: the rule alone, no I/O.

use std::time::{Duration, SystemTime};

/// One VolumeSnapshot of the schedule, as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    pub name: String,
    pub uid: String,
    /// `status.readyToUse` is true.
    pub ready: bool,
    /// `metadata.deletionTimestamp` is set: on its way out already.
    pub deleting: bool,
    /// The scheduled time it stands for (its annotation), else its
    /// creation; `None` when neither reads as a time.
    pub taken_at: Option<SystemTime>,
}

/// The limits: at most `keep` ready snapshots, none older than `max_age`
/// (measured back from `now`, the run's scheduled time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub keep: Option<usize>,
    pub max_age: Option<Duration>,
}

/// The snapshots to delete, newest first. Only ready ones that are not
/// being deleted and have a time are candidates; they are ranked newest
/// first (by time, then name), and the newest is never deleted. A
/// candidate goes when its rank is `keep` or more, or it is older than
/// `max_age`. Snapshots that are not ready, being deleted or undated are
/// never deleted and do not count toward `keep`.
pub fn to_delete(snapshots: &[Taken], limits: Limits, now: SystemTime) -> Vec<&Taken> {
    let mut ready: Vec<(&Taken, SystemTime)> = snapshots
        .iter()
        .filter(|s| s.ready && !s.deleting)
        .filter_map(|s| s.taken_at.map(|t| (s, t)))
        .collect();
    ready.sort_by(|(a, at), (b, bt)| bt.cmp(at).then_with(|| b.name.cmp(&a.name)));
    ready
        .into_iter()
        .enumerate()
        .skip(1)
        .filter(|(rank, (_, at))| {
            let over_count = limits.keep.is_some_and(|k| *rank >= k);
            let too_old = limits
                .max_age
                .is_some_and(|age| now.duration_since(*at).is_ok_and(|d| d > age));
            over_count || too_old
        })
        .map(|(_, (s, _))| s)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn day(n: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + DAY * (20_000 + n as u32)
    }

    fn taken(name: &str, at: u64, ready: bool) -> Taken {
        Taken {
            name: name.into(),
            uid: format!("uid-{name}"),
            ready,
            deleting: false,
            taken_at: Some(day(at)),
        }
    }

    fn names(v: Vec<&Taken>) -> Vec<&str> {
        v.into_iter().map(|t| t.name.as_str()).collect()
    }

    #[test]
    fn keep_is_a_cap_on_ready_snapshots_newest_first() {
        let s = [
            taken("d1", 1, true),
            taken("d3", 3, true),
            taken("d2", 2, true),
            taken("d4", 4, false),
        ];
        let keep = |k| Limits {
            keep: Some(k),
            max_age: None,
        };
        // d4 is not ready: neither counted nor deleted.
        assert_eq!(names(to_delete(&s, keep(2), day(5))), ["d1"]);
        assert_eq!(names(to_delete(&s, keep(1), day(5))), ["d2", "d1"]);
        assert!(to_delete(&s, keep(3), day(5)).is_empty());
    }

    #[test]
    fn max_age_never_takes_the_newest_ready_one() {
        let s = [taken("d1", 1, true), taken("d2", 2, true)];
        let old = Limits {
            keep: None,
            max_age: Some(DAY),
        };
        // Both are older than a day: the newest stays all the same.
        assert_eq!(names(to_delete(&s, old, day(10))), ["d1"]);
        // Exactly max_age old is not older than it.
        assert!(to_delete(&s, old, day(1) + DAY).is_empty());
        assert_eq!(names(to_delete(&s, old, day(1) + DAY * 2)), ["d1"]);
    }

    #[test]
    fn not_ready_deleting_and_undated_snapshots_are_never_deleted() {
        let mut going = taken("going", 1, true);
        going.deleting = true;
        let mut undated = taken("undated", 0, true);
        undated.taken_at = None;
        let s = [
            going,
            undated,
            taken("pending", 2, false),
            taken("new", 3, true),
        ];
        let strict = Limits {
            keep: Some(1),
            max_age: Some(Duration::from_secs(1)),
        };
        assert!(to_delete(&s, strict, day(9)).is_empty());
    }

    #[test]
    fn both_limits_and_ties_broken_by_name() {
        let s = [
            taken("a", 1, true),
            taken("b", 1, true),
            taken("c", 5, true),
            taken("d", 6, true),
        ];
        let both = Limits {
            keep: Some(3),
            max_age: Some(DAY * 3),
        };
        // Rank: d, c, b, a. keep 3 takes a; age (now day 7) takes b and a.
        assert_eq!(names(to_delete(&s, both, day(7))), ["b", "a"]);
    }
}
