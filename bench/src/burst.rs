//! Provisioning bursts: many CreateVolumes at once, as csi-provisioner's
//! worker threads send them (each retries RESOURCE_EXHAUSTED and ABORTED
//! with its own exponential backoff from 1 s, the provisioner's
//! `--retry-interval-start`), against the RDS emulator with a fixed
//! latency added to every request. Beside each: the floors.

use std::{
    path::Path,
    sync::{Arc, Barrier},
    time::{Duration, Instant},
};

use grpcio::{CallOption, RpcStatusCode};
use rds_csi_controller::{proto::csi, volume::snapshot_id};

use super::{clients, median, on_rds, rss_kb, snapshots::create};

/// csi-provisioner's `--retry-interval-start` default.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Two bursts on one controller: `calls` CreateVolumes at once (from one
/// snapshot when `restore`), `latency` per RDS request; the first opens
/// its connections to RDS (cold), the second finds them kept alive
/// (warm, as for a controller that has been running). For each: the time
/// until every volume exists, and how many calls were bounced; then the
/// controller's RSS (KiB), its connections to RDS kept alive.
/// `pool`: `--workers`, `--queue-depth`.
fn bursts_on_one_controller(
    dir: &Path,
    bin: &Path,
    pool: (usize, usize),
    calls: usize,
    latency: Duration,
    restore: bool,
    run: usize,
) -> ([(Duration, usize); 2], u64) {
    let pool_flags = [
        "--workers".to_string(),
        pool.0.to_string(),
        "--queue-depth".into(),
        pool.1.to_string(),
    ];
    let (rds, _creds, c) = on_rds(bin, dir, &format!("burst-{run}"), &pool_flags);
    let (_, ctl) = clients(&c.socket);
    let opt = || CallOption::default().timeout(Duration::from_secs(120));
    ctl.create_volume_opt(&create("pvc-source", None), opt())
        .unwrap();
    let snap = snapshot_id("burst-source");
    if restore {
        let mut r = csi::CreateSnapshotRequest::new();
        r.set_name("burst-source".into());
        r.set_source_volume_id("pvc-source".into());
        ctl.create_snapshot_opt(&r, opt()).unwrap();
    }
    rds.set_latency(latency);
    let fire = |round: &str| {
        let start = Arc::new(Barrier::new(calls + 1));
        let threads: Vec<_> = (0..calls)
            .map(|i| {
                let (ctl, start, snap) = (ctl.clone(), start.clone(), snap.clone());
                let name = format!("pvc-burst-{round}-{i:03}");
                std::thread::spawn(move || {
                    let req = create(&name, restore.then_some((snap.as_str(), false)));
                    start.wait();
                    let (mut bounced, mut wait) = (0, FIRST_RETRY);
                    loop {
                        match ctl.create_volume_opt(&req, opt()) {
                            Ok(_) => return (Instant::now(), bounced),
                            Err(grpcio::Error::RpcFailure(s))
                                if matches!(
                                    s.code(),
                                    RpcStatusCode::RESOURCE_EXHAUSTED | RpcStatusCode::ABORTED
                                ) =>
                            {
                                bounced += 1;
                                std::thread::sleep(wait);
                                wait *= 2;
                            }
                            Err(e) => panic!("{name} failed for good: {e:?}"),
                        }
                    }
                })
            })
            .collect();
        // From the moment the last caller is released.
        let began = Instant::now();
        start.wait();
        let (mut last, mut bounced) = (began, 0);
        for t in threads {
            let (done, b) = t.join().unwrap();
            last = last.max(done);
            bounced += b;
        }
        let prefix = format!("pvc-burst-{round}-");
        let made = rds
            .disks()
            .iter()
            .filter(|d| d["slot"].as_str().is_some_and(|s| s.starts_with(&prefix)))
            .count();
        assert_eq!(made, calls, "every volume exists");
        (last - began, bounced)
    };
    let cold = fire("cold");
    let warm = fire("warm");
    let rss = rss_kb(c.child.id());
    drop(c);
    ([cold, warm], rss)
}

/// Both bursts at each of `latencies` (ms; 2, 20 and 100 by default),
/// with the pool sized as before this measure (4 workers, queue 64) and
/// as now (the defaults: 64, 128): medians of `runs` (the warm burst; the
/// cold one beside it), with the floors, and the controller's RSS after.
pub(super) fn bursts(dir: &Path, bin: &Path, runs: usize, latencies: &[u64]) {
    println!("| burst | latency | pool (workers, queue) | all exist, warm (median of {runs}) | bounced | cold: all exist, bounced | RSS after, MiB | one at a time | unbounded | target |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let shapes = [
        ("100 CreateVolumes", 100, false, 2u64),
        ("50 restores of one snapshot", 50, true, 3),
    ];
    for (what, calls, restore, requests) in shapes {
        for &ms in latencies {
            for pool in [(4, 64), (64, 128)] {
                let latency = Duration::from_millis(ms);
                let mut figures = [(); 4].map(|_| Vec::new());
                let mut rss = Vec::new();
                for run in 0..runs {
                    let ([cold, warm], kb) =
                        bursts_on_one_controller(dir, bin, pool, calls, latency, restore, run);
                    rss.push(kb as f64 / 1024.0);
                    for (i, (t, b)) in [warm, cold].into_iter().enumerate() {
                        figures[2 * i].push(t.as_secs_f64() * 1000.0);
                        figures[2 * i + 1].push(b as f64);
                    }
                }
                let [mut wt, mut wb, mut ct, mut cb] = figures;
                let serial = calls as u64 * requests * ms;
                let unbounded = requests * ms;
                let target = if ms == 20 {
                    format!("≤ {} ms", 2 * unbounded + 50)
                } else {
                    "—".into()
                };
                println!(
                    "| {what} | {ms} ms | {}, {} | {:.0} ms | {:.0} | {:.0} ms, {:.0} | {:.1} | {serial} ms | {unbounded} ms | {target} |",
                    pool.0,
                    pool.1,
                    median(&mut wt),
                    median(&mut wb),
                    median(&mut ct),
                    median(&mut cb),
                    median(&mut rss)
                );
            }
        }
    }
}
