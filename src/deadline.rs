//! The deadline of the CSI call a worker thread is running, so that
//! everything the call does stops at it: waiting for its volume's turn,
//! for the Kubernetes client's rate limiter (the token is given back), and
//! each Kubernetes and RDS request and its retries. No request starts
//! once it has passed, so nothing is written after the caller gave up
//! (and perhaps retried elsewhere).
//!
//! The deadline lives in the worker's thread for the length of one call
//! ([`within`]); work outside a call (startup, reconciliation, health
//! checks) has none and keeps its own limits. A caller's gRPC deadline can
//! only be asked whether it has passed (grpcio does not say when it will),
//! so it is polled at each of those points; every call also has a budget
//! of [`CALL_BUDGET`] from its arrival, the deadline of a caller that sent
//! none. A request already on the wire finishes within its own time limit.

use std::{
    cell::RefCell,
    sync::Arc,
    time::{Duration, Instant},
};

/// The longest any call may take: the deadline of a caller that sent none.
pub const CALL_BUDGET: Duration = Duration::from_secs(120);

/// How often a wait looks at the caller's deadline.
const POLL: Duration = Duration::from_millis(20);

/// When a call must be done by.
#[derive(Clone)]
pub struct Deadline {
    /// The call's budget ends here.
    at: Instant,
    /// Whether the caller's own deadline has passed, when there is one.
    caller: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
}

impl Deadline {
    /// A call received at `received`, whose caller's deadline (if any)
    /// `caller_passed` tells.
    pub fn for_call(
        received: Instant,
        caller_passed: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
    ) -> Deadline {
        Deadline {
            at: received + CALL_BUDGET,
            caller: caller_passed,
        }
    }

    /// Work outside a call that must stop at `at` (a Lease renewal that
    /// is no use after its renew deadline).
    pub fn until(at: Instant) -> Deadline {
        Deadline { at, caller: None }
    }

    pub fn passed(&self) -> bool {
        Instant::now() >= self.at || self.caller.as_ref().is_some_and(|f| f())
    }
}

thread_local! {
    /// The call this thread runs. Scope: the length of one [`within`].
    static CURRENT: RefCell<Option<Deadline>> = const { RefCell::new(None) };
}

/// Runs `f` with `deadline` as this thread's; the previous one is back
/// afterwards, even if `f` panics.
pub fn within<T>(deadline: Deadline, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<Deadline>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            CURRENT.with(|c| *c.borrow_mut() = previous);
        }
    }
    let _restore = Restore(CURRENT.with(|c| c.borrow_mut().replace(deadline)));
    f()
}

/// Whether the deadline of the call this thread runs has passed (never,
/// outside a call).
pub fn passed() -> bool {
    CURRENT.with(|c| c.borrow().as_ref().is_some_and(Deadline::passed))
}

/// Sleeps for `period`, or less if the call's deadline passes first;
/// whether it slept the whole period.
pub fn sleep(period: Duration) -> bool {
    let until = Instant::now() + period;
    loop {
        if passed() {
            return false;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(POLL));
    }
}

/// The longest a wait may block before looking at the deadline again:
/// `left` outside a call, else at most [`POLL`].
pub fn slice(left: Duration) -> Duration {
    let in_call = CURRENT.with(|c| c.borrow().is_some());
    if in_call {
        left.min(POLL)
    } else {
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn a_call_sees_its_own_deadline_and_nothing_outside_it() {
        assert!(!passed());
        let gone = Arc::new(AtomicBool::new(false));
        let flag = gone.clone();
        let d = Deadline::for_call(
            Instant::now(),
            Some(Arc::new(move || flag.load(Ordering::SeqCst))),
        );
        within(d, || {
            assert!(!passed());
            assert!(sleep(Duration::from_millis(30)));
            gone.store(true, Ordering::SeqCst);
            assert!(passed());
            let t = Instant::now();
            assert!(!sleep(Duration::from_secs(5)), "cut short");
            assert!(t.elapsed() < Duration::from_millis(100));
        });
        assert!(!passed(), "restored after the call");
        // The budget alone ends a call whose caller sent no deadline.
        if let Some(long_ago) = Instant::now().checked_sub(CALL_BUDGET) {
            within(Deadline::for_call(long_ago, None), || assert!(passed()));
        }
    }
}
