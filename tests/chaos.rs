//! Crash-restart chaos and two-process concurrency, checked against the
//! PVs: no acknowledged attachment is lost, no volume is acknowledged to two
//! nodes, and a call cut off by a crash leaves nothing or what a retry
//! completes.
//!
//! Sizes: `CHAOS_CYCLES` (default 20; 200 for the long run),
//! `CHAOS_SEED` to replay a run.

mod support;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use grpcio::RpcStatusCode;
use kube_emulator::Emulator;
use support::*;

const VOLUMES: usize = 24;
const NODES: usize = 4;
const THREADS: usize = 6;

/// What the clients were told about one volume.
#[derive(Default, Debug)]
struct Volume {
    /// The node an acknowledged Publish put it on, not since unpublished.
    acked: Option<String>,
    /// Publishes cut off or failed since the last acknowledgement.
    uncertain: HashSet<String>,
    /// An Unpublish that has not been acknowledged yet (retried first).
    pending_unpublish: Option<String>,
}

#[derive(Default)]
struct Figures {
    calls: AtomicUsize,
    acknowledged: AtomicUsize,
    refused: AtomicUsize,
    cut_off: AtomicUsize,
    double: AtomicUsize,
    phantom: AtomicUsize,
    lost: AtomicUsize,
    completed_by_retry: AtomicUsize,
}

/// xorshift64*: reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn seed() -> u64 {
    std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        })
}

fn vol(i: usize) -> String {
    format!("vol-{i:02}")
}

fn node_name(i: usize) -> String {
    format!("node-{i}")
}

struct World {
    emu: Emulator,
    model: Vec<Mutex<Volume>>,
    figures: Figures,
}

impl World {
    fn new(dir: &std::path::Path) -> (World, std::path::PathBuf) {
        let (emu, kc) = emulator(dir);
        for v in 0..VOLUMES {
            emu.create("persistentvolumes", pv(&vol(v), &vol(v), DRIVER))
                .unwrap();
        }
        for n in 0..NODES {
            emu.create("nodes", node(&node_name(n))).unwrap();
        }
        let model = (0..VOLUMES)
            .map(|_| Mutex::new(Volume::default()))
            .collect();
        (
            World {
                emu,
                model,
                figures: Figures::default(),
            },
            kc,
        )
    }

    /// One client operation on a random volume. The volume's model lock is
    /// held across the call, so the model sees calls on one volume in the
    /// order the controller answered them.
    fn step(&self, csi: &Csi, rng: &mut Rng) {
        let v = rng.below(VOLUMES);
        let mut m = self.model[v].lock().unwrap();
        let f = &self.figures;
        if let Some(n) = m.pending_unpublish.clone() {
            f.calls.fetch_add(1, Ordering::Relaxed);
            if csi.unpublish(&vol(v), &n).is_ok() {
                m.pending_unpublish = None;
                if m.acked.as_deref() == Some(&n) {
                    m.acked = None;
                }
                m.uncertain.remove(&n);
            }
            return;
        }
        let n = node_name(rng.below(NODES));
        let unpublish = match &m.acked {
            Some(holder) if rng.below(2) == 0 => Some(holder.clone()),
            _ => None,
        };
        f.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(holder) = unpublish {
            match csi.unpublish(&vol(v), &holder) {
                Ok(()) => {
                    m.acked = None;
                    m.uncertain.remove(&holder);
                }
                Err(_) => {
                    f.cut_off.fetch_add(1, Ordering::Relaxed);
                    m.pending_unpublish = Some(holder);
                }
            }
            return;
        }
        match csi.publish(&vol(v), &n) {
            Ok(()) => {
                f.acknowledged.fetch_add(1, Ordering::Relaxed);
                if m.acked.as_ref().is_some_and(|h| *h != n) {
                    f.double.fetch_add(1, Ordering::Relaxed);
                    eprintln!(
                        "DOUBLE: {} acknowledged to {n} while held by {:?}",
                        vol(v),
                        m.acked
                    );
                }
                m.acked = Some(n);
                m.uncertain.clear();
            }
            Err((RpcStatusCode::FAILED_PRECONDITION, msg)) => {
                f.refused.fetch_add(1, Ordering::Relaxed);
                // Refused while the clients know of no holder: only a cut-off
                // publish can explain it.
                if m.acked.is_none() && m.uncertain.is_empty() {
                    f.phantom.fetch_add(1, Ordering::Relaxed);
                    eprintln!("PHANTOM: {} refused for {n}: {msg}", vol(v));
                }
            }
            Err(_) => {
                f.cut_off.fetch_add(1, Ordering::Relaxed);
                m.uncertain.insert(n);
            }
        }
    }

    /// Every acknowledged attachment is on its PV; nothing else is, except
    /// what a cut-off publish may have written. Returns the annotated count.
    fn check_persisted(&self) -> usize {
        let mut annotated = 0;
        for v in 0..VOLUMES {
            let m = self.model[v].lock().unwrap();
            let on_pv = annotation(&self.emu, &vol(v), ATTACHED_NODE);
            annotated += usize::from(on_pv.is_some());
            match (&m.acked, &on_pv) {
                (Some(a), Some(p)) if a == p => {}
                (Some(_), _) if m.pending_unpublish.is_some() => {}
                (Some(a), p) => {
                    self.figures.lost.fetch_add(1, Ordering::Relaxed);
                    eprintln!("LOST: {} acknowledged on {a}, PV says {p:?}", vol(v));
                }
                (None, Some(p))
                    if m.uncertain.contains(p) || m.pending_unpublish.as_deref() == Some(p) => {}
                (None, Some(p)) => {
                    self.figures.phantom.fetch_add(1, Ordering::Relaxed);
                    eprintln!(
                        "PHANTOM: {} annotated {p} with nothing acknowledged or cut off",
                        vol(v)
                    );
                }
                (None, None) => {}
            }
        }
        annotated
    }

    /// A retry of each cut-off call completes it: publishes that did land
    /// are acknowledged by a retry, pending unpublishes go through.
    fn settle(&self, csi: &Csi) {
        for v in 0..VOLUMES {
            let mut m = self.model[v].lock().unwrap();
            if let Some(n) = m.pending_unpublish.take() {
                csi.unpublish(&vol(v), &n)
                    .expect("retried unpublish completes");
                if m.acked.as_deref() == Some(&n) {
                    m.acked = None;
                }
            }
            if m.acked.is_none() {
                if let Some(p) = annotation(&self.emu, &vol(v), ATTACHED_NODE) {
                    assert!(m.uncertain.contains(&p), "{}: {p} not explained", vol(v));
                    csi.publish(&vol(v), &p).expect("retried publish completes");
                    self.figures
                        .completed_by_retry
                        .fetch_add(1, Ordering::Relaxed);
                    m.acked = Some(p);
                }
            }
            m.uncertain.clear();
        }
    }

    fn report(&self, what: &str, cycles: usize) {
        let f = &self.figures;
        let g = |a: &AtomicUsize| a.load(Ordering::Relaxed);
        println!(
            "{what}: cycles={cycles} calls={} acknowledged={} refused={} cut_off={} completed_by_retry={} lost={} double={} phantom={}",
            g(&f.calls),
            g(&f.acknowledged),
            g(&f.refused),
            g(&f.cut_off),
            g(&f.completed_by_retry),
            g(&f.lost),
            g(&f.double),
            g(&f.phantom)
        );
        assert_eq!(g(&f.lost), 0, "acknowledged attachments lost");
        assert_eq!(g(&f.double), 0, "volumes acknowledged to two nodes");
        assert_eq!(g(&f.phantom), 0, "attachments nobody asked for");
        assert!(g(&f.acknowledged) > 0, "the load did nothing");
    }
}

fn run_load(
    world: &Arc<World>,
    sockets: &[std::path::PathBuf],
    stop: &Arc<AtomicBool>,
    seed: u64,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..THREADS)
        .map(|t| {
            let (world, stop) = (world.clone(), stop.clone());
            let csis: Vec<Csi> = sockets
                .iter()
                .map(|s| {
                    let mut c = Csi::connect(s);
                    c.timeout = Duration::from_secs(5);
                    c
                })
                .collect();
            let mut rng = Rng((seed ^ (t as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let csi = &csis[rng.below(csis.len())];
                    world.step(csi, &mut rng);
                }
            })
        })
        .collect()
}

#[test]
fn crash_restart_chaos_loses_nothing_and_never_double_attaches() {
    let cycles: usize = std::env::var("CHAOS_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed = seed();
    println!("chaos seed {seed} (CHAOS_SEED={seed} replays it)");
    let dir = TempDir::new("chaos");
    let (world, kc) = World::new(dir.path());
    let world = Arc::new(world);
    let mut rng = Rng(seed);
    let started = Instant::now();
    for cycle in 0..cycles {
        let mut c = Controller::start(
            dir.path(),
            Some(&kc),
            &["--workers", "4", "--kube-api-qps", "0"],
        );
        let annotated = world.check_persisted();
        if cycle > 0 {
            let want = format!("State rebuild complete: {annotated} attachments recovered");
            assert!(
                c.logs().contains(&want),
                "cycle {cycle}: expected {want:?}:\n{}",
                c.logs()
            );
        }
        let stop = Arc::new(AtomicBool::new(false));
        let load = run_load(&world, std::slice::from_ref(&c.socket), &stop, rng.next());
        // Kill at a random moment of the load.
        std::thread::sleep(Duration::from_millis(50 + rng.below(250) as u64));
        c.kill9();
        std::thread::sleep(Duration::from_millis(rng.below(30) as u64));
        stop.store(true, Ordering::Relaxed);
        for h in load {
            h.join().unwrap();
        }
    }
    let c = Controller::start(dir.path(), Some(&kc), &[]);
    world.check_persisted();
    world.settle(&c.csi());
    world.check_persisted();
    println!("chaos wall time {:?}", started.elapsed());
    world.report("chaos", cycles);
}

#[test]
fn two_processes_under_concurrent_load_keep_the_invariants() {
    let seed = seed();
    println!("concurrency seed {seed}");
    let dir = TempDir::new("conc");
    let (world, kc) = World::new(dir.path());
    let world = Arc::new(world);
    let a = Controller::start_named(dir.path(), "a.sock", Some(&kc), &["--kube-api-qps", "0"]);
    let b = Controller::start_named(dir.path(), "b.sock", Some(&kc), &["--kube-api-qps", "0"]);
    let stop = Arc::new(AtomicBool::new(false));
    let load = run_load(&world, &[a.socket.clone(), b.socket.clone()], &stop, seed);
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    for h in load {
        h.join().unwrap();
    }
    assert_eq!(
        world.figures.cut_off.load(Ordering::Relaxed),
        0,
        "no failures without faults"
    );
    world.check_persisted();
    world.report("concurrency", 1);
    // Both processes agree with the PVs.
    let holders: HashMap<usize, Option<String>> = (0..VOLUMES)
        .map(|v| (v, annotation(&world.emu, &vol(v), ATTACHED_NODE)))
        .collect();
    for csi in [a.csi(), b.csi()] {
        for (v, holder) in &holders {
            if let Some(h) = holder {
                csi.publish(&vol(*v), h).unwrap();
                let other = (0..NODES).map(node_name).find(|n| n != h).unwrap();
                assert_eq!(
                    csi.publish(&vol(*v), &other).unwrap_err().0,
                    RpcStatusCode::FAILED_PRECONDITION
                );
            }
        }
    }
}

/// The last call a client made on one volume, and whether it was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Last {
    Created { bytes: i64, acked: bool },
    Deleted { acked: bool },
}

/// kill -9 at random moments while creates, expands and deletes run:
/// afterwards (cut-off calls retried to completion, as the provisioner and
/// resizer do) every disk on RDS belongs to a volume whose create was
/// acknowledged or completed by a retry, no `.img` file is without its
/// disk, and no acknowledged volume is missing or smaller than acknowledged.
#[test]
fn volume_lifecycle_survives_kill_9_and_leaks_nothing() {
    const LIFE_VOLUMES: usize = 12;
    const GIB: i64 = 1 << 30;
    let cycles: usize = std::env::var("CHAOS_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed = seed();
    println!("volume chaos seed {seed} (CHAOS_SEED={seed} replays it)");
    let dir = TempDir::new("vchaos");
    let (rds, creds) = rds(dir.path());
    let flags = rds_flags(&rds, &creds);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let name = |i: usize| format!("pvc-chaos-{i:02}");
    let model: Arc<Vec<Mutex<Option<Last>>>> =
        Arc::new((0..LIFE_VOLUMES).map(|_| Mutex::new(None)).collect());
    let (calls, acked, cut) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let mut rng = Rng(seed);
    // Retries every call a crash cut off until it is answered.
    let settle = |csi: &Csi| {
        for (i, slot) in model.iter().enumerate() {
            let mut last = slot.lock().unwrap();
            let redo = match *last {
                Some(Last::Created {
                    bytes,
                    acked: false,
                }) => csi
                    .create(&name(i), GIB, &[])
                    .and_then(|_| csi.expand(&name(i), bytes, false).map(|_| ()))
                    .map(|_| Last::Created { bytes, acked: true }),
                Some(Last::Deleted { acked: false }) => {
                    csi.delete(&name(i)).map(|_| Last::Deleted { acked: true })
                }
                _ => continue,
            };
            *last = Some(redo.unwrap_or_else(|e| panic!("retry of {} failed: {e:?}", name(i))));
        }
    };
    for _ in 0..cycles {
        let mut c = Controller::start(dir.path(), None, &flags);
        settle(&c.csi());
        let stop = Arc::new(AtomicBool::new(false));
        let load: Vec<_> = (0..4)
            .map(|t| {
                let (socket, stop, model) = (c.socket.clone(), stop.clone(), model.clone());
                let (calls, acked, cut) = (calls.clone(), acked.clone(), cut.clone());
                let mut rng = Rng(rng.next() ^ t);
                std::thread::spawn(move || {
                    let csi = Csi::connect(&socket);
                    while !stop.load(Ordering::Relaxed) {
                        let i = rng.below(LIFE_VOLUMES);
                        let mut last = model[i].lock().unwrap();
                        let creating = matches!(*last, None | Some(Last::Deleted { acked: true }));
                        let present = matches!(*last, Some(Last::Created { acked: true, .. }));
                        calls.fetch_add(1, Ordering::Relaxed);
                        let (next, result) = if creating {
                            (
                                Last::Created {
                                    bytes: GIB,
                                    acked: true,
                                },
                                csi.create(&name(i), GIB, &[]).map(|_| ()),
                            )
                        } else if present && rng.below(2) == 0 {
                            let Some(Last::Created { bytes, .. }) = *last else {
                                unreachable!()
                            };
                            let bytes = bytes + GIB;
                            (
                                Last::Created { bytes, acked: true },
                                csi.expand(&name(i), bytes, false).map(|_| ()),
                            )
                        } else if present {
                            (Last::Deleted { acked: true }, csi.delete(&name(i)))
                        } else {
                            continue; // a cut-off call waits for the settle after restart
                        };
                        match result {
                            Ok(()) => {
                                acked.fetch_add(1, Ordering::Relaxed);
                                *last = Some(next);
                            }
                            Err((code, msg)) => {
                                assert!(
                                    matches!(
                                        code,
                                        RpcStatusCode::UNAVAILABLE
                                            | RpcStatusCode::ABORTED
                                            | RpcStatusCode::DEADLINE_EXCEEDED
                                            | RpcStatusCode::CANCELLED
                                            | RpcStatusCode::UNKNOWN
                                    ),
                                    "{}: {code:?} {msg}",
                                    name(i)
                                );
                                cut.fetch_add(1, Ordering::Relaxed);
                                *last = Some(match next {
                                    Last::Created { bytes, .. } => Last::Created {
                                        bytes,
                                        acked: false,
                                    },
                                    Last::Deleted { .. } => Last::Deleted { acked: false },
                                });
                                drop(last);
                                std::thread::sleep(Duration::from_millis(5));
                            }
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50 + rng.below(300) as u64));
        c.kill9();
        stop.store(true, Ordering::Relaxed);
        for h in load {
            h.join().unwrap();
        }
    }
    let c = Controller::start(dir.path(), None, &flags);
    settle(&c.csi());

    let disks: HashMap<String, u64> = rds
        .disks()
        .into_iter()
        .filter(|d| d["type"] == "file")
        .map(|d| {
            (
                d["slot"].as_str().unwrap().to_string(),
                d["file-size"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect();
    for (i, slot) in model.iter().enumerate() {
        match *slot.lock().unwrap() {
            Some(Last::Created { bytes, .. }) => {
                let have = disks.get(&name(i)).copied();
                assert!(
                    have.is_some_and(|h| h >= bytes as u64),
                    "{}: acknowledged {bytes}, RDS has {have:?}",
                    name(i)
                );
            }
            _ => assert!(
                !disks.contains_key(&name(i)),
                "{}: deleted, but its disk is on RDS",
                name(i)
            ),
        }
    }
    let orphans: Vec<String> = rds
        .files()
        .into_iter()
        .filter(|f| f.name.ends_with(".img"))
        .filter(|f| {
            !disks
                .keys()
                .any(|slot| f.name.ends_with(&format!("/{slot}.img")))
        })
        .map(|f| f.name)
        .collect();
    assert!(orphans.is_empty(), "files without a disk: {orphans:?}");
    assert_eq!(
        disks.len(),
        rds.files()
            .iter()
            .filter(|f| f.name.ends_with(".img"))
            .count()
    );
    println!(
        "volume chaos: {cycles} kill -9 cycles, {} calls, {} acknowledged, {} cut off and completed by retry, {} disks left, 0 leaked, 0 missing",
        calls.load(Ordering::Relaxed),
        acked.load(Ordering::Relaxed),
        cut.load(Ordering::Relaxed),
        disks.len()
    );
}
