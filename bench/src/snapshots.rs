//! Snapshots on RDS: the RDS requests each snapshot call makes, and
//! ListSnapshots over many snapshots (time, and the controller's RSS).

use std::{path::Path, time::Duration, time::Instant};

use grpcio::CallOption;
use rds_csi_controller::{attachment::format_micros, proto::csi, volume::snapshot_id};

use super::{clients, hwm_kb, on_rds, percentile, requests_made, rss_kb};

const GIB: i64 = 1 << 30;

/// The shipped binary against the RDS emulator: requests per call (less
/// the background health checks), then `snapshots` snapshots listed 500 a
/// page and all at once, with RSS before, after and at the peak.
pub(super) fn snapshot_path(dir: &Path, bin: &Path, snapshots: usize) {
    let (rds, _creds, c) = on_rds(bin, dir, "snapshots", &[]);
    let (_, ctl) = clients(&c.socket);
    let opt = || CallOption::default().timeout(Duration::from_secs(60));
    ctl.create_volume_opt(&create("pvc-src", None), opt())
        .unwrap();

    let count = |f: &dyn Fn()| requests_made(&rds, f);
    let snap = snapshot_id("bench-snap");
    let per_snapshot = count(&|| {
        ctl.create_snapshot_opt(&snapshot_request("bench-snap"), opt())
            .unwrap();
    });
    let per_snapshot_again = count(&|| {
        ctl.create_snapshot_opt(&snapshot_request("bench-snap"), opt())
            .unwrap();
    });
    let per_restore = count(&|| {
        ctl.create_volume_opt(&create("pvc-restore", Some((&snap, false))), opt())
            .unwrap();
    });
    let per_clone = count(&|| {
        ctl.create_volume_opt(&create("pvc-clone", Some(("pvc-src", true))), opt())
            .unwrap();
    });
    let per_get = count(&|| {
        let mut r = csi::GetSnapshotRequest::new();
        r.set_snapshot_id(snap.clone());
        ctl.get_snapshot_opt(&r, opt()).unwrap();
    });
    let per_delete = count(&|| {
        let mut r = csi::DeleteSnapshotRequest::new();
        r.set_snapshot_id(snap.clone());
        ctl.delete_snapshot_opt(&r, opt()).unwrap();
    });

    // CreateSnapshot latency over the socket (each a copy in the emulator).
    let mut lat = Vec::new();
    for i in 0..200 {
        let t = Instant::now();
        ctl.create_snapshot_opt(&snapshot_request(&format!("lat-{i}")), opt())
            .unwrap();
        lat.push(t.elapsed());
    }

    // The rest as RDS would hold them after as many CreateSnapshots: a
    // file disk each, not exported, with its lineage comment.
    let created = format_micros(std::time::SystemTime::now());
    for i in 200..snapshots {
        let id = snapshot_id(&format!("many-{i}"));
        let path = format!("storage-pool/metal-csi/{id}.img");
        rds.insert_file(&path, GIB as u64);
        rds.insert_disk(&[
            ("slot", &id),
            ("type", "file"),
            ("file-path", &path),
            ("nvme-tcp-export", "false"),
            (
                "comment",
                &format!("rds-csi: source=pvc-src created={created}"),
            ),
        ]);
    }
    let pid = c.child.id();
    std::thread::sleep(Duration::from_millis(200));
    let before = rss_kb(pid);
    let list = |max: i32, token: &str| {
        let mut r = csi::ListSnapshotsRequest::new();
        r.set_max_entries(max);
        r.set_starting_token(token.into());
        ctl.list_snapshots_opt(&r, opt()).unwrap()
    };
    let paged = || {
        let (mut n, mut token) = (0, String::new());
        loop {
            let page = list(500, &token);
            n += page.get_entries().len();
            token = page.get_next_token().to_string();
            if token.is_empty() {
                return n;
            }
        }
    };
    let (mut paged_times, mut whole_times) = (Vec::new(), Vec::new());
    let (mut listed, mut all) = (0, 0);
    for _ in 0..5 {
        let t = Instant::now();
        listed = paged();
        paged_times.push(t.elapsed());
        let t = Instant::now();
        let whole = list(0, "");
        whole_times.push(t.elapsed());
        all = whole.get_entries().len();
        assert!(whole
            .get_entries()
            .iter()
            .all(|e| e.get_snapshot().get_source_volume_id() == "pvc-src"));
    }
    std::thread::sleep(Duration::from_millis(200));
    let after = rss_kb(pid);
    let hwm = hwm_kb(pid);
    assert_eq!((listed, all), (snapshots, snapshots));

    let (p50, p99) = (percentile(&mut lat, 0.5), percentile(&mut lat, 0.99));
    println!("| measure | value |\n|---|---|");
    println!(
        "| RDS requests per CreateSnapshot (new / existing) | {per_snapshot} / {per_snapshot_again} |"
    );
    println!("| RDS requests per restore / clone (CreateVolume with a source) | {per_restore} / {per_clone} |");
    println!("| RDS requests per GetSnapshot / DeleteSnapshot | {per_get} / {per_delete} |");
    println!(
        "| CreateSnapshot p50 / p99 (over the socket, 200 copies) | {} / {} µs |",
        p50.as_micros(),
        p99.as_micros()
    );
    println!(
        "| ListSnapshots of {all} snapshots: 500 a page / all at once (median of 5) | {} / {} ms |",
        percentile(&mut paged_times, 0.5).as_millis(),
        percentile(&mut whole_times, 0.5).as_millis()
    );
    println!(
        "| controller RSS before / after listing {all} snapshots (peak) | {:.1} / {:.1} MiB ({:.1}) |",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
}

fn snapshot_request(name: &str) -> csi::CreateSnapshotRequest {
    let mut r = csi::CreateSnapshotRequest::new();
    r.set_name(name.into());
    r.set_source_volume_id("pvc-src".into());
    r
}

/// A 1 GiB mounted volume, from `source` (an ID; `true`: a volume) if any.
pub(super) fn create(name: &str, source: Option<(&str, bool)>) -> csi::CreateVolumeRequest {
    let mut r = csi::CreateVolumeRequest::new();
    r.set_name(name.into());
    r.mut_capacity_range().set_required_bytes(GIB);
    r.mut_volume_capabilities().push(
        csi::ControllerPublishVolumeRequest::single_node_writer(name, "-").take_volume_capability(),
    );
    match source {
        Some((id, true)) => r
            .mut_volume_content_source()
            .mut_volume()
            .set_volume_id(id.into()),
        Some((id, false)) => r
            .mut_volume_content_source()
            .mut_snapshot()
            .set_snapshot_id(id.into()),
        None => {}
    }
    r
}
