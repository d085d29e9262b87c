//! Crash-restart chaos and two-process concurrency, checked against the
//! PVs: no acknowledged attachment is lost, no volume is acknowledged to two
//! nodes, and a call cut off by a crash leaves nothing or what a retry
//! completes.
//!
//! Sizes: `CHAOS_CYCLES` (default 20; 200 for the long run),
//! `CHAOS_SEED` to replay a run.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use crate::support::*;
use grpcio::RpcStatusCode;
use kube_emulator::Emulator;

const VOLUMES: usize = 24;
/// Volumes from this index on are shared block volumes (live migration).
const SHARED_FROM: usize = 16;
/// Shared volumes seeded with a migration whose window closed long ago.
const EXPIRED: [usize; 2] = [22, 23];
const NODES: usize = 4;
const THREADS: usize = 6;
/// The migration window of the shared volumes.
const WINDOW: Duration = Duration::from_secs(30);

/// What the clients were told about one volume.
#[derive(Default, Debug)]
struct Volume {
    /// The nodes acknowledged Publishes put it on, not since unpublished
    /// (two at most, for a shared volume during a migration).
    acked: Vec<String>,
    /// When the second holder was first acknowledged: its window.
    second_since: Option<Instant>,
    /// A migration whose window had closed before the run: its target.
    expired_target: Option<String>,
    /// Publishes cut off or failed since the last acknowledgement.
    uncertain: HashSet<String>,
    /// An Unpublish that has not been acknowledged yet (retried first).
    pending_unpublish: Option<String>,
}

#[derive(Default)]
struct Figures {
    calls: AtomicUsize,
    acknowledged: AtomicUsize,
    migrations: AtomicUsize,
    refused: AtomicUsize,
    cut_off: AtomicUsize,
    double: AtomicUsize,
    triple: AtomicUsize,
    past_window: AtomicUsize,
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

fn shared(v: usize) -> bool {
    v >= SHARED_FROM
}

/// Publish as csi-attacher does: single-node mount, or shared block with
/// the StorageClass's migration window in the volume context.
fn publish(csi: &Csi, v: usize, node: &str) -> Result<(), (RpcStatusCode, String)> {
    let mut r = publish_request(&vol(v), node);
    if shared(v) {
        let mut cap = block_capability();
        cap.mut_access_mode().set_mode(
            rds_csi_controller::proto::csi::VolumeCapability_AccessMode_Mode::MULTI_NODE_MULTI_WRITER,
        );
        r.set_volume_capability(cap);
        r.mut_volume_context().insert(
            "migrationTimeoutSeconds".into(),
            WINDOW.as_secs().to_string(),
        );
    }
    csi.controller
        .controller_publish_volume_opt(&r, csi.opt())
        .map(|_| ())
        .map_err(code_of)
}

/// The nodes a PV's annotations name: the holder, then a migration target.
fn on_pv(emu: &Emulator, v: usize) -> Vec<String> {
    let mut nodes: Vec<String> = [ATTACHED_NODE, MIGRATION_NODE]
        .iter()
        .filter_map(|k| annotation(emu, &vol(v), k))
        .collect();
    nodes.dedup();
    nodes
}

const MIGRATION_NODE: &str = "rds.csi.srvlab.io/migration-node";

fn va_name(v: usize, node: &str) -> String {
    format!("va-{}-{node}", vol(v))
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
        let model: Vec<Mutex<Volume>> = (0..VOLUMES)
            .map(|_| Mutex::new(Volume::default()))
            .collect();
        let world = World {
            emu,
            model,
            figures: Figures::default(),
        };
        // A migration left running past its window, both nodes attached.
        let long_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        for v in EXPIRED {
            let (a, b) = (node_name(0), node_name(1));
            world.emu.modify("persistentvolumes", &vol(v), |pv| {
                pv["metadata"]["annotations"] = serde_json::json!({
                    ATTACHED_NODE: a, ATTACHED_AT: "2024-01-02T03:04:05.000000Z",
                    MIGRATION_NODE: b,
                    "rds.csi.srvlab.io/migration-started-at":
                        rds_csi_controller::attachment::format_micros(long_ago),
                });
            });
            for n in [&a, &b] {
                world.va_wanted(v, n);
                world.va_attached(v, n);
            }
            let mut m = world.model[v].lock().unwrap();
            m.acked = vec![a, b.clone()];
            m.expired_target = Some(b);
        }
        (world, kc)
    }

    /// The attach/detach controller's part: a VolumeAttachment exists for
    /// every node a pod wants the volume on, before the Publish.
    fn va_wanted(&self, v: usize, node: &str) {
        let _ = self.emu.create(
            "volumeattachments",
            volume_attachment(&va_name(v, node), &vol(v), node, false),
        );
    }

    /// csi-attacher's part after an acknowledged Publish.
    fn va_attached(&self, v: usize, node: &str) {
        self.emu
            .modify("volumeattachments", &va_name(v, node), |va| {
                va["status"]["attached"] = serde_json::json!(true);
            });
    }

    /// A detach starts with the VolumeAttachment being deleted.
    fn va_detaching(&self, v: usize, node: &str) {
        self.emu
            .modify("volumeattachments", &va_name(v, node), |va| {
                va["metadata"]["deletionTimestamp"] = serde_json::json!("2026-01-01T00:00:00Z");
            });
    }

    fn va_gone(&self, v: usize, node: &str) {
        self.emu.delete("volumeattachments", &va_name(v, node));
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
                self.unpublished(&mut m, v, &n);
            }
            return;
        }
        let n = node_name(rng.below(NODES));
        let unpublish = match m.acked.len() {
            0 => None,
            k if rng.below(2) == 0 => Some(m.acked[rng.below(k)].clone()),
            _ => None,
        };
        f.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(holder) = unpublish {
            self.va_detaching(v, &holder);
            match csi.unpublish(&vol(v), &holder) {
                Ok(()) => self.unpublished(&mut m, v, &holder),
                Err(_) => {
                    f.cut_off.fetch_add(1, Ordering::Relaxed);
                    m.pending_unpublish = Some(holder);
                }
            }
            return;
        }
        self.va_wanted(v, &n);
        match publish(csi, v, &n) {
            Ok(()) => {
                f.acknowledged.fetch_add(1, Ordering::Relaxed);
                self.va_attached(v, &n);
                if !m.acked.contains(&n) {
                    let limit = if shared(v) { 2 } else { 1 };
                    if m.acked.len() >= limit {
                        let what = if shared(v) { &f.triple } else { &f.double };
                        what.fetch_add(1, Ordering::Relaxed);
                        eprintln!(
                            "OVER: {} acknowledged to {n} while held by {:?}",
                            vol(v),
                            m.acked
                        );
                    }
                    if !m.acked.is_empty() {
                        f.migrations.fetch_add(1, Ordering::Relaxed);
                        m.second_since = Some(Instant::now());
                    }
                    m.acked.push(n.clone());
                } else if m.acked.len() == 2 && m.acked[1] == n {
                    // The target again: only within its window.
                    let late = m
                        .second_since
                        .is_none_or(|t| t.elapsed() > WINDOW + Duration::from_secs(1));
                    if late || m.expired_target.as_deref() == Some(&n) {
                        f.past_window.fetch_add(1, Ordering::Relaxed);
                        eprintln!("PAST WINDOW: {} acknowledged to target {n}", vol(v));
                    }
                }
                // Once the holders are known in full, no cut-off Publish of
                // another node can have landed.
                if m.acked.len() == if shared(v) { 2 } else { 1 } {
                    m.uncertain.clear();
                }
            }
            Err((RpcStatusCode::FAILED_PRECONDITION, msg)) => {
                f.refused.fetch_add(1, Ordering::Relaxed);
                // Refused while the clients know of no holder: only a cut-off
                // publish can explain it.
                if m.acked.is_empty() && m.uncertain.is_empty() {
                    f.phantom.fetch_add(1, Ordering::Relaxed);
                    eprintln!("PHANTOM: {} refused for {n}: {msg}", vol(v));
                }
                if !m.acked.contains(&n) && !m.uncertain.contains(&n) {
                    self.va_gone(v, &n);
                }
            }
            Err(_) => {
                f.cut_off.fetch_add(1, Ordering::Relaxed);
                m.uncertain.insert(n);
            }
        }
    }

    /// An acknowledged Unpublish of `node`: the model and the
    /// VolumeAttachment follow.
    fn unpublished(&self, m: &mut Volume, v: usize, node: &str) {
        m.acked.retain(|h| h != node);
        m.uncertain.remove(node);
        if m.acked.len() < 2 {
            m.second_since = None;
            m.expired_target = None;
        }
        self.va_gone(v, node);
    }

    /// Every acknowledged attachment is on its PV; nothing else is, except
    /// what a cut-off publish may have written; no single-node volume has
    /// two holders. Returns the annotated count.
    fn check_persisted(&self) -> usize {
        let mut annotated = 0;
        for v in 0..VOLUMES {
            let m = self.model[v].lock().unwrap();
            let pv = on_pv(&self.emu, v);
            annotated += usize::from(!pv.is_empty());
            if !shared(v) && pv.len() > 1 {
                self.figures.double.fetch_add(1, Ordering::Relaxed);
                eprintln!("DOUBLE: {} names {pv:?}", vol(v));
            }
            for a in &m.acked {
                if !pv.contains(a) && m.pending_unpublish.as_ref() != Some(a) {
                    self.figures.lost.fetch_add(1, Ordering::Relaxed);
                    eprintln!("LOST: {} acknowledged on {a}, PV says {pv:?}", vol(v));
                }
            }
            for p in &pv {
                let explained = m.acked.contains(p)
                    || m.uncertain.contains(p)
                    || m.pending_unpublish.as_ref() == Some(p);
                if !explained {
                    self.figures.phantom.fetch_add(1, Ordering::Relaxed);
                    eprintln!(
                        "PHANTOM: {} annotated {p} with nothing acknowledged or cut off",
                        vol(v)
                    );
                }
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
                self.unpublished(&mut m, v, &n);
            }
            for p in on_pv(&self.emu, v) {
                if m.acked.contains(&p) {
                    continue;
                }
                assert!(m.uncertain.contains(&p), "{}: {p} not explained", vol(v));
                publish(csi, v, &p).expect("retried publish completes");
                self.va_attached(v, &p);
                self.figures
                    .completed_by_retry
                    .fetch_add(1, Ordering::Relaxed);
                m.acked.push(p);
            }
            for n in m.uncertain.clone() {
                if !m.acked.contains(&n) {
                    self.va_gone(v, &n);
                }
            }
            m.uncertain.clear();
        }
    }

    fn report(&self, what: &str, cycles: usize) {
        let f = &self.figures;
        let g = |a: &AtomicUsize| a.load(Ordering::Relaxed);
        println!(
            "{what}: cycles={cycles} calls={} acknowledged={} migrations={} refused={} cut_off={} completed_by_retry={} lost={} double={} triple={} past_window={} phantom={}",
            g(&f.calls),
            g(&f.acknowledged),
            g(&f.migrations),
            g(&f.refused),
            g(&f.cut_off),
            g(&f.completed_by_retry),
            g(&f.lost),
            g(&f.double),
            g(&f.triple),
            g(&f.past_window),
            g(&f.phantom)
        );
        assert_eq!(g(&f.lost), 0, "acknowledged attachments lost");
        assert_eq!(
            g(&f.double),
            0,
            "single-node volumes acknowledged to two nodes"
        );
        assert_eq!(
            g(&f.triple),
            0,
            "shared volumes acknowledged to three nodes"
        );
        assert_eq!(
            g(&f.past_window),
            0,
            "a second holder acknowledged past its window"
        );
        assert_eq!(g(&f.phantom), 0, "attachments nobody asked for");
        assert!(g(&f.acknowledged) > 0, "the load did nothing");
        assert!(g(&f.migrations) > 0, "no migration ran");
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

/// Reconciliation runs all along: every attachment is backed by a
/// VolumeAttachment, so it must never clear one a client was told of.
const RECONCILE: [&str; 4] = [
    "--reconcile-interval",
    "200ms",
    "--attachment-grace-period",
    "1s",
];

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
    let mut flags = vec!["--workers", "4", "--kube-api-qps", "0"];
    flags.extend(RECONCILE);
    for cycle in 0..cycles {
        let mut c = Controller::start(dir.path(), Some(&kc), &flags);
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
    let c = Controller::start(dir.path(), Some(&kc), &RECONCILE);
    world.check_persisted();
    world.settle(&c.csi());
    world.check_persisted();
    // Some reconciliation passes over the settled state: nothing backed is cleared.
    std::thread::sleep(Duration::from_millis(1500));
    world.check_persisted();
    assert!(c.logs().contains("reconciliation: "), "{}", c.logs());
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
    let mut flags = vec!["--kube-api-qps", "0"];
    flags.extend(RECONCILE);
    let a = Controller::start_named(dir.path(), "a.sock", Some(&kc), &flags);
    let b = Controller::start_named(dir.path(), "b.sock", Some(&kc), &flags);
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
    let holders: HashMap<usize, Vec<String>> =
        (0..VOLUMES).map(|v| (v, on_pv(&world.emu, v))).collect();
    for csi in [a.csi(), b.csi()] {
        for (v, on) in &holders {
            let Some(h) = on.first() else { continue };
            publish(&csi, *v, h).unwrap();
            let full = if shared(*v) { 2 } else { 1 };
            if on.len() == full {
                let other = (0..NODES).map(node_name).find(|n| !on.contains(n)).unwrap();
                assert_eq!(
                    publish(&csi, *v, &other).unwrap_err().0,
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

/// kill -9 at random moments while creates, expands and deletes run on two
/// RDS servers: afterwards (cut-off calls retried to completion, as the
/// provisioner and resizer do) every disk on each server belongs to a
/// volume of that server whose create was acknowledged or completed by a
/// retry, no `.img` file is without its disk, and no acknowledged volume is
/// missing or smaller than acknowledged.
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
    // Two RDS servers: even volumes on the default, odd ones on rds-b.
    let two = two_rds_servers(dir.path(), Default::default(), "");
    let (rds, rds_b) = (&two.a, &two.b);
    let flags = [
        "--rds-config",
        two.config.to_str().unwrap(),
        "--rds-timeout",
        "2s",
    ];
    let name = |i: usize| format!("pvc-chaos-{i:02}");
    let on_b = |i: usize| i % 2 == 1;
    let params = move |i: usize| -> &'static [(&'static str, &'static str)] {
        if on_b(i) {
            &[("rdsServer", "rds-b")]
        } else {
            &[]
        }
    };
    let id = move |i: usize| {
        let name = format!("pvc-chaos-{i:02}");
        if on_b(i) {
            rds_csi_controller::volume::Naming::Named("rds-b".into()).volume_id(&name)
        } else {
            name
        }
    };
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
                    .create(&name(i), GIB, params(i))
                    .and_then(|_| csi.expand(&id(i), bytes, false).map(|_| ()))
                    .map(|_| Last::Created { bytes, acked: true }),
                Some(Last::Deleted { acked: false }) => {
                    csi.delete(&id(i)).map(|_| Last::Deleted { acked: true })
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
                                csi.create(&name(i), GIB, params(i)).map(|_| ()),
                            )
                        } else if present && rng.below(2) == 0 {
                            let Some(Last::Created { bytes, .. }) = *last else {
                                unreachable!()
                            };
                            let bytes = bytes + GIB;
                            (
                                Last::Created { bytes, acked: true },
                                csi.expand(&id(i), bytes, false).map(|_| ()),
                            )
                        } else if present {
                            (Last::Deleted { acked: true }, csi.delete(&id(i)))
                        } else {
                            continue; // a cut-off call waits for the settle after restart
                        };
                        match result {
                            Ok(()) => {
                                acked.fetch_add(1, Ordering::Relaxed);
                                *last = Some(next);
                            }
                            Err((code, msg)) => {
                                assert!(cut_off(code), "{}: {code:?} {msg}", name(i));
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
        kill_under_load(&mut c, &mut rng, &stop, load);
    }
    let c = Controller::start(dir.path(), None, &flags);
    settle(&c.csi());

    let disks_on = |rds: &rds_emulator::Emulator| -> HashMap<String, u64> {
        rds.disks()
            .into_iter()
            .filter(|d| d["type"] == "file")
            .map(|d| {
                (
                    d["slot"].as_str().unwrap().to_string(),
                    d["file-size"].as_str().unwrap().parse().unwrap(),
                )
            })
            .collect()
    };
    let (disks, disks_b) = (disks_on(rds), disks_on(rds_b));
    for (i, slot) in model.iter().enumerate() {
        let (here, there) = if on_b(i) {
            (&disks_b, &disks)
        } else {
            (&disks, &disks_b)
        };
        assert!(
            !there.contains_key(&id(i)),
            "{}: on the other server",
            id(i)
        );
        match *slot.lock().unwrap() {
            Some(Last::Created { bytes, .. }) => {
                let have = here.get(&id(i)).copied();
                assert!(
                    have.is_some_and(|h| h >= bytes as u64),
                    "{}: acknowledged {bytes}, RDS has {have:?}",
                    id(i)
                );
            }
            _ => assert!(
                !here.contains_key(&id(i)),
                "{}: deleted, but its disk is on RDS",
                id(i)
            ),
        }
    }
    for (server, disks) in [(&rds, &disks), (&rds_b, &disks_b)] {
        let orphans = files_without_a_disk(server, disks.keys());
        assert!(orphans.is_empty(), "files without a disk: {orphans:?}");
        assert_eq!(
            disks.len(),
            server
                .files()
                .iter()
                .filter(|f| f.name.ends_with(".img"))
                .count()
        );
    }
    println!(
        "volume chaos: {cycles} kill -9 cycles on two RDS servers, {} calls, {} acknowledged, {} cut off and completed by retry, {} + {} disks left, 0 leaked, 0 missing",
        calls.load(Ordering::Relaxed),
        acked.load(Ordering::Relaxed),
        cut.load(Ordering::Relaxed),
        disks.len(),
        disks_b.len()
    );
}

/// Snapshots, restores and clones from four threads while the controller
/// is `kill -9`ed at random: every call a crash cut off is retried until
/// answered, as the sidecars do. At the end every snapshot asked for
/// exists and every one deleted is gone (0 lost, 0 leaked), no file is
/// left without its disk, and every restore holds its snapshot's content.
#[test]
fn snapshots_restores_and_clones_survive_kill_9_and_leak_nothing() {
    const GIB: i64 = 1 << 30;
    const SNAPSHOTS: usize = 6;
    let cycles: usize = std::env::var("CHAOS_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let seed = seed();
    println!("snapshot chaos seed {seed} (CHAOS_SEED={seed} replays it)");
    let dir = TempDir::new("schaos");
    // Two RDS servers: the even snapshots on the default, the odd ones on
    // rds-b, each of a source volume on its own server.
    let two = two_rds_servers(dir.path(), Default::default(), "");
    let (rds, rds_b) = (&two.a, &two.b);
    let flags = [
        "--rds-config",
        two.config.to_str().unwrap(),
        "--rds-timeout",
        "2s",
    ];
    {
        let c = Controller::start(dir.path(), None, &flags);
        c.csi().create("pvc-source", GIB, &[]).unwrap();
        c.csi().create("pvc-source", GIB, ON_B).unwrap();
    }
    for i in 0..2 {
        let (server, at) = on(i, rds, rds_b);
        assert!(server.write_file(
            &format!("storage-pool/metal-csi/{}.img", at.volume_id("pvc-source")),
            b"source"
        ));
    }
    // Per snapshot: wanted (created) or not, and whether its restore was asked for.
    let model: Arc<Vec<Mutex<(bool, bool)>>> =
        Arc::new((0..SNAPSHOTS).map(|_| Mutex::new((false, false))).collect());
    let (calls, cut) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut rng = Rng(seed);
    let apply = apply_snapshot;
    for _ in 0..cycles {
        let mut c = Controller::start(dir.path(), None, &flags);
        for (i, slot) in model.iter().enumerate() {
            let (wanted, restore) = *slot.lock().unwrap();
            apply(&c.csi(), i, wanted, restore)
                .unwrap_or_else(|e| panic!("settling snapshot {i}: {e:?}"));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let load: Vec<_> = (0..4)
            .map(|t| {
                let (socket, stop, model) = (c.socket.clone(), stop.clone(), model.clone());
                let (calls, cut) = (calls.clone(), cut.clone());
                let mut rng = Rng(rng.next() ^ t);
                std::thread::spawn(move || {
                    let csi = Csi::connect(&socket);
                    while !stop.load(Ordering::Relaxed) {
                        let i = rng.below(SNAPSHOTS);
                        let mut slot = model[i].lock().unwrap();
                        // Flip the snapshot; a new one is restored half the time.
                        let next = (!slot.0, !slot.0 && rng.below(2) == 0);
                        *slot = next;
                        calls.fetch_add(1, Ordering::Relaxed);
                        if let Err((code, msg)) = apply(&csi, i, next.0, next.1) {
                            assert!(cut_off(code), "snapshot {i}: {code:?} {msg}");
                            cut.fetch_add(1, Ordering::Relaxed);
                            drop(slot);
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                })
            })
            .collect();
        kill_under_load(&mut c, &mut rng, &stop, load);
    }
    let c = Controller::start(dir.path(), None, &flags);
    for (i, slot) in model.iter().enumerate() {
        let (wanted, restore) = *slot.lock().unwrap();
        apply(&c.csi(), i, wanted, restore).unwrap();
    }
    let disks_on = |server: &rds_emulator::Emulator| -> HashMap<String, serde_json::Value> {
        server
            .disks()
            .into_iter()
            .filter(|d| d["type"] == "file")
            .map(|d| (d["slot"].as_str().unwrap().to_string(), d))
            .collect()
    };
    let (disks_a, disks_b) = (disks_on(rds), disks_on(rds_b));
    let mut kept = 0;
    for (i, slot) in model.iter().enumerate() {
        let (wanted, restore) = *slot.lock().unwrap();
        let (server, at) = on(i, rds, rds_b);
        let (disks, others) = if i % 2 == 1 {
            (&disks_b, &disks_a)
        } else {
            (&disks_a, &disks_b)
        };
        let data = |slot: &str| {
            server
                .file(&format!("storage-pool/metal-csi/{slot}.img"))
                .map(|f| f.data)
                .unwrap_or_default()
        };
        let id = at.snapshot_id(&chaos_snap_name(i));
        let restored = at.volume_id(&chaos_restored_name(i));
        assert!(
            !others.contains_key(&id) && !others.contains_key(&restored),
            "{i}: on the other server"
        );
        assert_eq!(
            disks.contains_key(&id),
            wanted,
            "snapshot {i}: wanted {wanted}"
        );
        if wanted {
            kept += 1;
            assert_eq!(
                data(&id),
                b"source",
                "snapshot {i} holds its source's content"
            );
        }
        if wanted && restore {
            assert_eq!(
                data(&restored),
                b"source",
                "restore {i} holds its snapshot's content"
            );
        }
        if !wanted {
            assert!(!disks.contains_key(&restored), "restore {i} deleted");
        }
    }
    for (server, disks) in [(&rds, &disks_a), (&rds_b, &disks_b)] {
        let orphans = files_without_a_disk(server, disks.keys());
        assert!(orphans.is_empty(), "files without a disk: {orphans:?}");
    }
    println!(
        "snapshot chaos: {cycles} kill -9 cycles on two RDS servers, {} calls, {} cut off and completed by retry, {kept} snapshots kept, 0 lost, 0 leaked",
        calls.load(Ordering::Relaxed),
        cut.load(Ordering::Relaxed)
    );
}

/// The StorageClass parameters of server rds-b.
const ON_B: &[(&str, &str)] = &[("rdsServer", "rds-b")];

/// The server of snapshot `i` in the snapshot chaos (odd: rds-b) and its
/// half of the ID scheme.
fn on<'a>(
    i: usize,
    a: &'a rds_emulator::Emulator,
    b: &'a rds_emulator::Emulator,
) -> (
    &'a rds_emulator::Emulator,
    rds_csi_controller::volume::Naming,
) {
    use rds_csi_controller::volume::Naming;
    if i % 2 == 1 {
        (b, Naming::Named("rds-b".into()))
    } else {
        (
            a,
            Naming::Default {
                others: vec!["rds-b".into()],
            },
        )
    }
}

fn chaos_snap_name(i: usize) -> String {
    format!("chaos-snap-{i}")
}

fn chaos_restored_name(i: usize) -> String {
    format!("pvc-from-{i}")
}

/// One step toward what the snapshot chaos model says for snapshot `i`:
/// made (and restored, when asked) or deleted with its restore, on its
/// server (see [`on`]).
fn apply_snapshot(csi: &Csi, i: usize, wanted: bool, restore: bool) -> CsiResult<()> {
    let at = if i % 2 == 1 {
        rds_csi_controller::volume::Naming::Named("rds-b".into())
    } else {
        rds_csi_controller::volume::Naming::Default {
            others: vec!["rds-b".into()],
        }
    };
    let params: &[(&str, &str)] = if i % 2 == 1 { ON_B } else { &[] };
    let id = at.snapshot_id(&chaos_snap_name(i));
    let restored = at.volume_id(&chaos_restored_name(i));
    if wanted {
        csi.create_snapshot(&chaos_snap_name(i), &at.volume_id("pvc-source"))?;
        if restore {
            let mut r = create_from(&chaos_restored_name(i), 1 << 30, &id, false);
            for (k, v) in params {
                r.mut_parameters().insert(k.to_string(), v.to_string());
            }
            csi.create_with(&r)?;
        }
    } else {
        csi.delete(&restored)?;
        csi.delete_snapshot(&id)?;
    }
    Ok(())
}

/// What a call a `kill -9` cut off may answer: worth a retry, never a verdict.
fn cut_off(code: RpcStatusCode) -> bool {
    matches!(
        code,
        RpcStatusCode::UNAVAILABLE
            | RpcStatusCode::ABORTED
            | RpcStatusCode::DEADLINE_EXCEEDED
            | RpcStatusCode::CANCELLED
            | RpcStatusCode::UNKNOWN
    )
}

/// Lets `load` run for 50–350 ms, then `kill -9`s the controller under it
/// and waits for the load threads to stop.
fn kill_under_load(
    c: &mut Controller,
    rng: &mut Rng,
    stop: &AtomicBool,
    load: Vec<std::thread::JoinHandle<()>>,
) {
    std::thread::sleep(Duration::from_millis(50 + rng.below(300) as u64));
    c.kill9();
    stop.store(true, Ordering::Relaxed);
    for h in load {
        h.join().unwrap();
    }
}

/// `.img` files on RDS whose disk (one of `slots`) is gone.
fn files_without_a_disk<'a>(
    rds: &rds_emulator::Emulator,
    slots: impl Iterator<Item = &'a String> + Clone,
) -> Vec<String> {
    rds.files()
        .into_iter()
        .filter(|f| f.name.ends_with(".img"))
        .filter(|f| {
            !slots
                .clone()
                .any(|s| f.name.ends_with(&format!("/{s}.img")))
        })
        .map(|f| f.name)
        .collect()
}

/// Two leader-elected replicas serve the load while the Lease changes hands
/// again and again: its holder is killed (its Lease then expires), comes
/// back, and the other takes over; through it all no acknowledged
/// attachment is lost and no single-node volume is acknowledged to two
/// nodes. `CHAOS_CYCLES` sets the number of kills (default 6).
#[test]
fn lease_churn_while_both_replicas_serve_never_double_attaches() {
    let cycles: usize = std::env::var("CHAOS_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let seed = seed();
    println!("lease churn seed {seed} (CHAOS_SEED={seed} replays it)");
    let dir = TempDir::new("churn");
    let (world, kc) = World::new(dir.path());
    // The deployed roles: the controller's ClusterRole and the Lease Role.
    let mut rules = deploy_rules();
    rules.push(kube_emulator::Rule {
        api_groups: vec!["coordination.k8s.io".into()],
        resources: vec!["leases".into()],
        verbs: vec!["get".into(), "create".into(), "update".into()],
        resource_names: Vec::new(),
    });
    world.emu.set_rbac(Some(rules));
    let world = Arc::new(world);
    let mut rng = Rng(seed);
    let mut flags = vec![
        "--kube-api-qps",
        "0",
        "--leader-election",
        "--leader-election-namespace",
        "rds-csi",
        "--leader-election-lease-duration",
        "1s",
        "--leader-election-renew-deadline",
        "700ms",
        "--leader-election-retry-period",
        "150ms",
    ];
    flags.extend(RECONCILE);
    let names = ["replica-a.sock", "replica-b.sock"];
    let mut replicas: Vec<Controller> = names
        .iter()
        .map(|n| Controller::start_named(dir.path(), n, Some(&kc), &flags))
        .collect();
    let holder = |emu: &Emulator| {
        emu.get_in(
            "leases",
            "rds-csi",
            "rds-csi-controller-leader-rds-csi-srvlab-io",
        )
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
        .unwrap_or_default()
    };
    let mut holders = HashSet::new();
    for _ in 0..cycles {
        let deadline = Instant::now() + Duration::from_secs(10);
        while holder(&world.emu).is_empty() {
            assert!(Instant::now() < deadline, "no replica took the Lease");
            std::thread::sleep(Duration::from_millis(20));
        }
        let sockets: Vec<_> = replicas.iter().map(|c| c.socket.clone()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let load = run_load(&world, &sockets, &stop, rng.next());
        std::thread::sleep(Duration::from_millis(100 + rng.below(300) as u64));
        let leader = holder(&world.emu);
        holders.insert(leader.clone());
        let i = usize::from(leader == "replica-b");
        replicas[i].kill9();
        // The other serves alone; its Lease goes to the other replica once
        // it expires (restarted under the same name sooner, the killed
        // one would take its own unexpired Lease back).
        std::thread::sleep(Duration::from_millis(rng.below(1500) as u64));
        let deadline = Instant::now() + Duration::from_secs(10);
        while holder(&world.emu) == leader {
            assert!(Instant::now() < deadline, "the Lease never changed hands");
            std::thread::sleep(Duration::from_millis(20));
        }
        holders.insert(holder(&world.emu));
        stop.store(true, Ordering::Relaxed);
        for h in load {
            h.join().unwrap();
        }
        replicas[i] = Controller::start_named(dir.path(), names[i], Some(&kc), &flags);
    }
    world.check_persisted();
    world.settle(&replicas[0].csi());
    world.check_persisted();
    assert_eq!(holders.len(), 2, "the Lease changed hands: {holders:?}");
    world.report("lease churn", cycles);
}
