//! Per-volume exclusion shared by every call that changes a volume:
//! Publish, Unpublish, Create, Delete and Expand on one volume ID run one
//! at a time, so each sees the previous one's final outcome; calls on
//! different volumes run in parallel.

use std::{
    collections::HashSet,
    sync::{Condvar, Mutex},
    time::{Duration, Instant},
};

/// How long a call waits for an earlier call on the same volume.
pub const VOLUME_WAIT: Duration = Duration::from_secs(30);

/// The set of volumes with a call in progress.
#[derive(Debug, Default)]
pub struct Turns {
    /// Scope: membership tests and updates only; never held across I/O.
    busy: Mutex<HashSet<String>>,
    /// Signalled when a volume leaves the busy set.
    idle: Condvar,
}

/// Holds a volume's turn; released (and waiters woken) on drop.
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

    fn take_within(&self, volume: &str, wait: Duration) -> Result<Turn<'_>, Busy> {
        let deadline = Instant::now() + wait;
        let mut busy = self.busy.lock().expect("turns lock poisoned");
        while busy.contains(volume) {
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
        busy.insert(volume.to_string());
        Ok(Turn {
            turns: self,
            volume: volume.to_string(),
        })
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.turns
            .busy
            .lock()
            .expect("turns lock poisoned")
            .remove(&self.volume);
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
