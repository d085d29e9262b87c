//! The worker pool between grpcio's completion-queue thread and the
//! blocking work of each call.
//!
//! Handlers submit a [`Job`] and return at once; a bounded queue feeds a
//! fixed set of worker threads. Every submitted job gets exactly one
//! answer: it runs, or it is rejected with a [`Rejection`] — queue full,
//! deadline passed while queued, or pool shut down. A job refused at
//! submission comes back to the submitter, which answers it where it
//! stands (grpcio's completion-queue thread must not wait on the answer).

use std::{
    future::Future,
    pin::Pin,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

/// Why a job was answered without running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The queue was full when the job arrived (→ RESOURCE_EXHAUSTED).
    QueueFull,
    /// The caller's deadline passed while the job waited (→ DEADLINE_EXCEEDED).
    DeadlineExceeded,
    /// The pool is shutting down (→ UNAVAILABLE).
    ShuttingDown,
}

/// One unit of work with its own way of answering.
pub trait Job: Send + 'static {
    /// Whether the caller has given up waiting; checked when a worker
    /// takes the job, before any work is done.
    fn expired(&self) -> bool;
    /// Does the work and answers the caller.
    fn run(self: Box<Self>);
    /// Starts the answer that says why the work was not done; the caller
    /// drives the returned future to completion (dropping it may cancel
    /// the call instead).
    fn reject(self: Box<Self>, why: Rejection) -> Answer;
}

/// An answer on its way to the caller, to be driven to completion.
pub type Answer = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A job the pool did not take, given back with the reason.
pub struct Refused {
    pub job: Box<dyn Job>,
    pub why: Rejection,
}

/// A fixed pool of worker threads behind a bounded queue.
pub struct Pool {
    tx: Option<Sender<Box<dyn Job>>>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Starts `workers` threads (at least one) behind a queue of `depth`
    /// jobs (at least one).
    pub fn new(workers: usize, depth: usize) -> Pool {
        let (tx, rx) = bounded::<Box<dyn Job>>(depth.max(1));
        let workers = (0..workers.max(1))
            .map(|i| {
                let rx = rx.clone();
                std::thread::Builder::new()
                    .name(format!("csi-worker-{i}"))
                    .spawn(move || work(rx))
                    .expect("spawn worker thread")
            })
            .collect();
        Pool {
            tx: Some(tx),
            workers,
        }
    }

    /// Queues `job`, or gives it back (`QueueFull`, `ShuttingDown`) for
    /// the caller to reject. Never blocks.
    pub fn submit(&self, job: Box<dyn Job>) -> Result<(), Refused> {
        let Some(tx) = &self.tx else {
            return Err(Refused {
                job,
                why: Rejection::ShuttingDown,
            });
        };
        tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(job) => Refused {
                job,
                why: Rejection::QueueFull,
            },
            TrySendError::Disconnected(job) => Refused {
                job,
                why: Rejection::ShuttingDown,
            },
        })
    }

    /// Jobs waiting for a worker.
    pub fn queued(&self) -> usize {
        self.tx.as_ref().map_or(0, |tx| tx.len())
    }

    /// Stops taking jobs, lets the workers finish what is queued and in
    /// progress, and waits up to `grace` for them. Returns whether every
    /// worker finished in time (late ones are left to the process exit).
    pub fn shutdown(mut self, grace: Duration) -> bool {
        drop(self.tx.take());
        let deadline = Instant::now() + grace;
        let workers = std::mem::take(&mut self.workers);
        for w in &workers {
            while !w.is_finished() {
                if Instant::now() >= deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        workers.into_iter().for_each(|w| {
            let _ = w.join();
        });
        true
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the channel ends the workers once the queue is drained.
        drop(self.tx.take());
    }
}

fn work(rx: Receiver<Box<dyn Job>>) {
    for job in rx {
        if job.expired() {
            futures_executor::block_on(job.reject(Rejection::DeadlineExceeded));
        } else {
            job.run();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::{unbounded, Receiver as Rx, Sender as Tx};
    use std::sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    };

    /// A job that blocks until the test releases it, then reports its answer.
    struct TestJob {
        id: usize,
        release: Option<Rx<()>>,
        expired: Arc<AtomicBool>,
        started: Tx<usize>,
        answers: Tx<(usize, Result<(), Rejection>)>,
    }

    impl Job for TestJob {
        fn expired(&self) -> bool {
            self.expired.load(Ordering::SeqCst)
        }
        fn run(self: Box<Self>) {
            self.started.send(self.id).unwrap();
            if let Some(r) = &self.release {
                r.recv().unwrap();
            }
            self.answers.send((self.id, Ok(()))).unwrap();
        }
        fn reject(self: Box<Self>, why: Rejection) -> Answer {
            self.answers.send((self.id, Err(why))).unwrap();
            Box::pin(async {})
        }
    }

    struct Harness {
        started: (Tx<usize>, Rx<usize>),
        answers: (Tx<Answered>, Rx<Answered>),
    }

    /// A job's id and whether it ran.
    type Answered = (usize, Result<(), Rejection>);

    impl Harness {
        fn new() -> Harness {
            Harness {
                started: unbounded(),
                answers: unbounded(),
            }
        }
        fn job(
            &self,
            id: usize,
            release: Option<Rx<()>>,
            expired: &Arc<AtomicBool>,
        ) -> Box<dyn Job> {
            Box::new(TestJob {
                id,
                release,
                expired: expired.clone(),
                started: self.started.0.clone(),
                answers: self.answers.0.clone(),
            })
        }
    }

    const WAIT: Duration = Duration::from_secs(10);

    /// Submits, rejecting a refused job as the server's handlers do.
    fn submit(pool: &Pool, job: Box<dyn Job>) {
        if let Err(Refused { job, why }) = pool.submit(job) {
            futures_executor::block_on(job.reject(why));
        }
    }

    #[test]
    fn full_queue_answers_resource_exhausted_and_every_job_is_answered_once() {
        let h = Harness::new();
        let pool = Pool::new(1, 2);
        let (release_tx, release_rx) = unbounded::<()>();
        let never = Arc::new(AtomicBool::new(false));
        // Job 0 occupies the only worker; 1 and 2 fill the queue.
        submit(&pool, h.job(0, Some(release_rx.clone()), &never));
        assert_eq!(h.started.1.recv_timeout(WAIT).unwrap(), 0);
        submit(&pool, h.job(1, None, &never));
        submit(&pool, h.job(2, None, &never));
        for id in 3..8 {
            submit(&pool, h.job(id, None, &never));
            assert_eq!(
                h.answers.1.recv_timeout(WAIT).unwrap(),
                (id, Err(Rejection::QueueFull))
            );
        }
        release_tx.send(()).unwrap();
        let mut rest: Vec<_> = (0..3)
            .map(|_| h.answers.1.recv_timeout(WAIT).unwrap())
            .collect();
        rest.sort_by_key(|a| a.0);
        assert_eq!(rest, vec![(0, Ok(())), (1, Ok(())), (2, Ok(()))]);
        assert!(pool.shutdown(WAIT));
        assert!(h.answers.1.try_recv().is_err(), "a job was answered twice");
    }

    #[test]
    fn deadline_passed_in_queue_is_rejected_without_running() {
        let h = Harness::new();
        let pool = Pool::new(1, 4);
        let (release_tx, release_rx) = unbounded::<()>();
        let never = Arc::new(AtomicBool::new(false));
        let expires = Arc::new(AtomicBool::new(false));
        submit(&pool, h.job(0, Some(release_rx), &never));
        assert_eq!(h.started.1.recv_timeout(WAIT).unwrap(), 0);
        submit(&pool, h.job(1, None, &expires));
        // The caller's deadline passes while job 1 is still queued.
        expires.store(true, Ordering::SeqCst);
        release_tx.send(()).unwrap();
        assert_eq!(h.answers.1.recv_timeout(WAIT).unwrap(), (0, Ok(())));
        assert_eq!(
            h.answers.1.recv_timeout(WAIT).unwrap(),
            (1, Err(Rejection::DeadlineExceeded))
        );
        assert!(pool.shutdown(WAIT));
        assert_eq!(
            h.started.1.try_recv().ok(),
            None,
            "expired job must not run"
        );
    }

    #[test]
    fn shutdown_lets_the_in_flight_job_finish() {
        let h = Harness::new();
        let pool = Pool::new(2, 4);
        let (release_tx, release_rx) = unbounded::<()>();
        let never = Arc::new(AtomicBool::new(false));
        submit(&pool, h.job(0, Some(release_rx), &never));
        assert_eq!(h.started.1.recv_timeout(WAIT).unwrap(), 0);
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            release_tx.send(()).unwrap();
        });
        assert!(
            pool.shutdown(WAIT),
            "in-flight job should finish within the grace period"
        );
        assert_eq!(h.answers.1.try_recv().unwrap(), (0, Ok(())));
        releaser.join().unwrap();
    }

    #[test]
    fn shutdown_gives_up_after_the_grace_period() {
        let h = Harness::new();
        let pool = Pool::new(1, 1);
        let (_hold, release_rx) = unbounded::<()>();
        let never = Arc::new(AtomicBool::new(false));
        submit(&pool, h.job(0, Some(release_rx), &never));
        assert_eq!(h.started.1.recv_timeout(WAIT).unwrap(), 0);
        assert!(!pool.shutdown(Duration::from_millis(50)));
    }
}
