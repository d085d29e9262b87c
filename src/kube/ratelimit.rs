//! Client-side token bucket: at most `burst` requests at once, refilled at
//! `qps` per second, so a burst of Publish calls cannot flood the API server.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

/// Defaults, higher than client-go's 5/10: this controller's calls are
/// short PV reads and writes, and Publish latency matters.
pub const DEFAULT_QPS: f64 = 50.0;
pub const DEFAULT_BURST: u32 = 100;

pub(crate) struct RateLimiter {
    qps: f64,
    burst: f64,
    /// Scope: the bucket arithmetic only; the wait happens after unlocking.
    bucket: Mutex<Bucket>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// `qps <= 0` disables limiting.
    pub(crate) fn new(qps: f64, burst: u32) -> RateLimiter {
        let burst = f64::from(burst.max(1));
        RateLimiter {
            qps,
            burst,
            bucket: Mutex::new(Bucket {
                tokens: burst,
                at: Instant::now(),
            }),
        }
    }

    /// Takes one token, sleeping until it is due. Callers queue fairly: each
    /// reserves its token first, so later callers wait longer.
    ///
    /// The wait ends at the deadline of the call this thread runs (see
    /// [`crate::deadline`]): then the reserved token is given back and
    /// `false` is returned, so a call that gave up spends nothing. A call
    /// whose deadline has already passed takes no token at all.
    pub(crate) fn acquire(&self) -> bool {
        if self.qps <= 0.0 {
            return true;
        }
        if crate::deadline::passed() {
            return false;
        }
        let wait = {
            let mut b = self.bucket.lock().expect("rate limiter lock poisoned");
            let now = Instant::now();
            let refill = now.duration_since(b.at).as_secs_f64() * self.qps;
            b.tokens = (b.tokens + refill).min(self.burst) - 1.0;
            b.at = now;
            if b.tokens >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-b.tokens / self.qps)
            }
        };
        if wait.is_zero() || crate::deadline::sleep(wait) {
            return true;
        }
        let mut b = self.bucket.lock().expect("rate limiter lock poisoned");
        b.tokens = (b.tokens + 1.0).min(self.burst);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_beyond_the_burst_wait_for_tokens() {
        let rl = RateLimiter::new(100.0, 3);
        let start = Instant::now();
        for _ in 0..8 {
            assert!(rl.acquire());
        }
        // Three from the burst, five refilled at 100/s: at least ~50 ms.
        assert!(
            start.elapsed() >= Duration::from_millis(45),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn zero_qps_never_waits() {
        let rl = std::sync::Arc::new(RateLimiter::new(0.0, 1));
        let (done, finished) = std::sync::mpsc::channel();
        let limiter = rl.clone();
        // On a thread, so that a limiter that waits fails the test
        // instead of hanging it.
        std::thread::spawn(move || {
            for _ in 0..10_000 {
                assert!(limiter.acquire());
            }
            let _ = done.send(());
        });
        assert!(
            finished
                .recv_timeout(std::time::Duration::from_secs(5))
                .is_ok(),
            "10 000 acquires with qps 0 did not finish within 5 s"
        );
        assert!(
            rl.bucket.lock().unwrap().tokens >= 1.0,
            "the bucket is not even touched"
        );
    }

    #[test]
    fn a_call_whose_token_comes_after_its_deadline_stops_at_it_and_spends_nothing() {
        use crate::deadline::{within, Deadline};
        use std::sync::{
            atomic::{AtomicBool, Ordering},
            Arc,
        };
        let rl = Arc::new(RateLimiter::new(1.0, 1));
        assert!(rl.acquire(), "the burst");
        let gone = Arc::new(AtomicBool::new(false));
        let flag = gone.clone();
        let caller = Deadline::for_call(
            Instant::now(),
            Some(Arc::new(move || flag.load(Ordering::SeqCst))),
        );
        let cancel = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            gone.store(true, Ordering::SeqCst);
        });
        let start = Instant::now();
        let got = within(caller, || rl.acquire());
        cancel.join().unwrap();
        assert!(!got, "the token came after the deadline");
        assert!(
            start.elapsed() < Duration::from_millis(400),
            "stopped at the deadline, not at the token (1 s): {:?}",
            start.elapsed()
        );
        let tokens = rl.bucket.lock().unwrap().tokens;
        assert!(tokens > -0.5, "the reservation was given back: {tokens}");
    }
}
