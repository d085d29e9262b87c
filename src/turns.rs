//! Per-volume exclusion shared by every call that changes a volume:
//! Publish, Unpublish, Create, Delete and Expand on one volume ID run one
//! at a time, so each sees the previous one's final outcome; calls on
//! different volumes run in parallel. A call that only reads a volume
//! while it copies it (a restore or clone of it) takes a shared hold:
//! any number run side by side, and a call taking the turn waits for them
//! all, as they wait for it.

use std::{
    collections::HashMap,
    sync::{Condvar, Mutex},
    time::{Duration, Instant},
};

/// How long a call waits for an earlier call on the same volume.
pub const VOLUME_WAIT: Duration = Duration::from_secs(30);

/// The volumes with a call in progress.
#[derive(Debug, Default)]
pub struct Turns {
    /// Volume → its holders. Scope: membership tests and updates only;
    /// never held across I/O.
    busy: Mutex<HashMap<String, Hold>>,
    /// Signalled when a hold is released.
    idle: Condvar,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// One call has the turn.
    Turn,
    /// This many calls read the volume.
    Shared(usize),
}

/// Holds a volume's turn (or a shared hold); released, and waiters woken,
/// on drop.
#[derive(Debug)]
pub struct Turn<'a> {
    turns: &'a Turns,
    volume: String,
}

/// Another call on the volume did not finish within [`VOLUME_WAIT`], or
/// before the waiting call's deadline (see [`crate::deadline`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Busy {
    pub volume: String,
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "another operation on volume {:?} is still in progress",
            self.volume
        )
    }
}

impl std::error::Error for Busy {}

impl Turns {
    /// Waits until no other call holds `volume`, then holds it until the
    /// returned guard drops. Gives up (`Busy`) after [`VOLUME_WAIT`], or as
    /// soon as the deadline of the call this thread runs has passed, so a
    /// call never holds its worker past its caller's patience.
    pub fn take(&self, volume: &str) -> Result<Turn<'_>, Busy> {
        self.take_within(volume, VOLUME_WAIT)
    }

    /// Whether a call holds `volume` (its turn or a shared hold) now.
    pub fn is_held(&self, volume: &str) -> bool {
        self.busy
            .lock()
            .expect("turns lock poisoned")
            .contains_key(volume)
    }

    /// A shared hold on `volume`: it waits only for a call holding the
    /// turn (then as [`Turns::take`]); other shared holds run alongside.
    pub fn share(&self, volume: &str) -> Result<Turn<'_>, Busy> {
        self.hold(volume, true, VOLUME_WAIT)
    }

    fn take_within(&self, volume: &str, wait: Duration) -> Result<Turn<'_>, Busy> {
        self.hold(volume, false, wait)
    }

    fn hold(&self, volume: &str, shared: bool, wait: Duration) -> Result<Turn<'_>, Busy> {
        let deadline = Instant::now() + wait;
        let mut busy = self.busy.lock().expect("turns lock poisoned");
        loop {
            match (busy.get_mut(volume), shared) {
                (None, _) => {
                    let hold = if shared { Hold::Shared(1) } else { Hold::Turn };
                    busy.insert(volume.to_string(), hold);
                    break;
                }
                (Some(Hold::Shared(n)), true) => {
                    *n += 1;
                    break;
                }
                (Some(_), _) => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || crate::deadline::passed() {
                return Err(Busy {
                    volume: volume.into(),
                });
            }
            busy = self
                .idle
                .wait_timeout(busy, crate::deadline::slice(left))
                .expect("turns lock poisoned")
                .0;
        }
        Ok(Turn {
            turns: self,
            volume: volume.to_string(),
        })
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut busy = self.turns.busy.lock().expect("turns lock poisoned");
        match busy.get_mut(&self.volume) {
            Some(Hold::Shared(n)) if *n > 1 => *n -= 1,
            _ => {
                busy.remove(&self.volume);
            }
        }
        drop(busy);
        self.turns.idle.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_call_on_the_volume_waits_and_others_do_not() {
        let turns = Turns::default();
        let held = turns.take("v1").unwrap();
        assert!(turns.take("v2").is_ok());
        assert_eq!(
            turns
                .take_within("v1", Duration::from_millis(30))
                .unwrap_err(),
            Busy {
                volume: "v1".into()
            }
        );
        drop(held);
        assert!(turns.take_within("v1", Duration::from_millis(30)).is_ok());
    }

    #[test]
    fn shared_holds_run_side_by_side_and_exclude_the_turn() {
        let turns = Turns::default();
        let short = Duration::from_millis(30);
        let a = turns.share("snap").unwrap();
        let b = turns.hold("snap", true, short).unwrap();
        // A delete of the source waits for every copy reading it.
        assert!(turns.take_within("snap", short).is_err());
        drop(a);
        assert!(turns.take_within("snap", short).is_err());
        drop(b);
        let delete = turns.take_within("snap", short).unwrap();
        // And a copy waits for the delete.
        assert!(turns.hold("snap", true, short).is_err());
        drop(delete);
        assert!(turns.hold("snap", true, short).is_ok());
    }

    #[test]
    fn a_waiting_call_gives_up_at_its_deadline() {
        use std::sync::{
            atomic::{AtomicBool, Ordering},
            Arc,
        };
        let turns = Turns::default();
        let _held = turns.take("v1").unwrap();
        let gone = Arc::new(AtomicBool::new(false));
        let flag = gone.clone();
        let d = crate::deadline::Deadline::for_call(
            Instant::now(),
            Some(Arc::new(move || flag.load(Ordering::SeqCst))),
        );
        let t = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(100));
                gone.store(true, Ordering::SeqCst);
            });
            let r = crate::deadline::within(d, || turns.take("v1").map(|_| ()));
            assert_eq!(
                r,
                Err(Busy {
                    volume: "v1".into()
                })
            );
        });
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
}
