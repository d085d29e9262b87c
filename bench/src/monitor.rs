//! RDS monitoring: what the Lease holder's poll costs with 1 000 and
//! 10 000 volumes of this driver on one server (RDS requests per poll,
//! controller CPU per poll, the traffic request's latency) and what a
//! scrape of all the per-volume series costs (time, size, RSS).

use std::{
    path::Path,
    time::{Duration, Instant},
};

use super::{cpu_ms, median, pvc_name, rss_kb, seeded, start_controller_with};

/// Polls every second for `WINDOW`, after the first poll with every
/// volume's series is in.
const WINDOW: Duration = Duration::from_secs(12);

pub(super) fn monitor_path(dir: &Path, bin: &Path, sizes: &[usize]) {
    println!("| volumes | RDS requests per poll | controller CPU per poll | monitor-traffic latency (mean) | scrape time (median of 5) | scrape size | RSS after |");
    println!("|---|---|---|---|---|---|---|");
    for &n in sizes {
        // 2n PVs, every other one this driver's, each bound to a claim.
        let (_kube, kc) = seeded(dir, 2 * n, false);
        let rds = rds_emulator::Emulator::start(rds_emulator::Options {
            pool_bytes: 1 << 60,
            ..Default::default()
        })
        .unwrap();
        for i in (0..2 * n).step_by(2) {
            let slot = pvc_name(i);
            let path = format!("storage-pool/metal-csi/{slot}.img");
            rds.insert_disk(&[("slot", &slot), ("type", "file"), ("file-path", &path)]);
        }
        let creds = rds
            .write_credentials(&dir.join(format!("monitor-creds-{n}")))
            .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let flags: Vec<String> = [
            "--rds-url",
            &rds.url(),
            "--rds-credentials-dir",
            &creds.display().to_string(),
            "--rds-monitor-interval",
            "1s",
            "--metrics-address",
            &addr,
            "--health-interval",
            "30s",
            "--orphan-scan-interval",
            "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (c, _) = start_controller_with(bin, dir, Some(&kc), &format!("monitor-{n}"), &flags);
        let pid = c.child.id();
        let series = |text: &str| {
            text.lines()
                .filter(|l| l.starts_with("rds_csi_volume_in_flight_ops{"))
                .count()
        };
        let started = Instant::now();
        while series(&get(&addr).1) < n {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "series never came"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        rds.clear_requests();
        let cpu0 = cpu_ms(pid);
        let m0 = super::scrape(&addr);
        std::thread::sleep(WINDOW);
        let cpu1 = cpu_ms(pid);
        let m1 = super::scrape(&addr);
        let reqs = rds.requests();
        let polls = reqs
            .iter()
            .filter(|r| r.path == "/rest/system/health")
            .count()
            .max(1);
        let latency = {
            let k = |s: &str| {
                format!("rds_csi_rds_request_duration_seconds_{s}{{server=\"default\",method=\"POST\"}}")
            };
            let d = |m: &std::collections::HashMap<String, f64>, s: &str| {
                m.get(&k(s)).copied().unwrap_or(0.0)
            };
            (d(&m1, "sum") - d(&m0, "sum")) / (d(&m1, "count") - d(&m0, "count")).max(1.0)
        };
        let mut times = Vec::new();
        let mut size = 0;
        for _ in 0..5 {
            let t = Instant::now();
            let (_, body) = get(&addr);
            times.push(t.elapsed().as_secs_f64() * 1e3);
            size = body.len();
        }
        println!(
            "| {n} | {:.1} ({} in {polls} polls) | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} MB | {:.1} MiB |",
            reqs.len() as f64 / polls as f64,
            reqs.len(),
            (cpu1 - cpu0) / polls as f64,
            latency * 1e3,
            median(&mut times),
            size as f64 / 1e6,
            rss_kb(pid) as f64 / 1024.0,
        );
        drop(c);
    }
    println!(
        "\nThe scrapes are outside the CPU window; the CPU is all the controller's threads (the polls, the idle others)."
    );
}

/// `GET /metrics` → (status line, body).
fn get(addr: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}
