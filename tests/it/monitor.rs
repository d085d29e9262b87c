//! RDS watched through REST, through the real binary: each server's
//! sensors and pool under the Go driver's names, each volume's I/O
//! labelled with its PV and claim, two RouterOS requests a poll whatever
//! the number of volumes, scrapes that never wait on RDS, and a standby
//! that exports none of it.

use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use crate::support::*;
use serde_json::json;

const GIB: i64 = 1 << 30;
const VOLUMES: [&str; 3] = [
    "pvc-6b1c2d3e-aaaa-bbbb-cccc-0123456789ab",
    "pvc-7b1c2d3e-aaaa-bbbb-cccc-0123456789ab",
    "pvc-8b1c2d3e-aaaa-bbbb-cccc-0123456789ab",
];

/// The emulators and the files a controller needs, in a directory of
/// their own.
struct Setup {
    dir: TempDir,
    kube: kube_emulator::Emulator,
    kubeconfig: PathBuf,
    rds: rds_emulator::Emulator,
    creds: PathBuf,
}

/// Emulators for `tag`; the API server's roles as deployed, or none.
fn setup(tag: &str, restricted: bool) -> Setup {
    let dir = TempDir::new(tag);
    let (kube, kubeconfig) = match restricted {
        true => emulator(dir.path()),
        false => emulator_unrestricted(dir.path()),
    };
    let (rds, creds) = rds(dir.path());
    Setup {
        dir,
        kube,
        kubeconfig,
        rds,
        creds,
    }
}

impl Setup {
    /// A controller (socket `name`) polling RDS every `interval`, with its
    /// metrics served; `extra` flags after.
    fn start(&self, name: &str, interval: &str, extra: &[&str]) -> Controller {
        let mut flags = rds_flags(&self.rds, &self.creds);
        flags.extend(
            [
                "--rds-monitor-interval",
                interval,
                "--metrics-address",
                "127.0.0.1:0",
            ]
            .map(String::from),
        );
        flags.extend(extra.iter().map(|s| s.to_string()));
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        Controller::start_named(self.dir.path(), name, Some(&self.kubeconfig), &flags)
    }
}

struct Watched {
    s: Setup,
    controller: Controller,
    addr: SocketAddr,
}

/// A controller polling every second, with three volumes of PVs bound to
/// claims `data-0`… in namespace `shop`; `extra` flags after.
fn watched(extra: &[&str]) -> Watched {
    let s = setup("monitor", true);
    let controller = s.start("csi.sock", "1s", extra);
    let csi = controller.csi();
    for (i, name) in VOLUMES.iter().enumerate() {
        let v = csi.create(name, GIB, &[]).unwrap();
        let mut pv = provisioned_pv(&v);
        pv["spec"]["claimRef"] = json!({"kind": "PersistentVolumeClaim", "namespace": "shop", "name": format!("data-{i}")});
        s.kube.create("persistentvolumes", pv).unwrap();
    }
    let addr = metrics_address(&controller.logs());
    Watched {
        s,
        controller,
        addr,
    }
}

impl Watched {
    fn scrape(&self) -> String {
        http_get(self.addr, "/metrics").1
    }

    /// Scrapes until `line` is in the text (within 20 s: the PVs made
    /// after the first poll are listed 10 polls later); the text.
    fn scrape_until(&self, line: &str) -> String {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let text = self.scrape();
            if text.contains(line) {
                return text;
            }
            assert!(Instant::now() < until, "no {line:?} in:\n{text}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

fn volume_series(name: &str, i: usize, op: &str) -> String {
    let op = if op.is_empty() {
        String::new()
    } else {
        format!(",op=\"{op}\"")
    };
    format!(
        "{name}{{server=\"default\",persistentvolume=\"{}\",namespace=\"shop\",persistentvolumeclaim=\"data-{i}\"{op}}}",
        VOLUMES[i]
    )
}

#[test]
fn sensors_pool_and_each_volumes_io_are_exported_with_the_go_names_and_their_claims() {
    let w = watched(&[]);
    w.s.rds.set_traffic(
        VOLUMES[1],
        &[
            ("read-ops", "17 667 231"),
            ("write-ops", "76"),
            ("read-bytes", "1048576"),
            ("write-bytes", "4096"),
            ("read-time", "1s200ms"),
            ("write-time", "15ms"),
            ("in-flight-ops", "3"),
            ("queue-depth", "9"),
        ],
    );
    w.s.rds.set_traffic(
        "storage-pool",
        &[
            ("write-rate", "12.8Mbps"),
            ("read-ops-per-second", "40"),
            ("wait-time", "7ms"),
            ("read-rate", "3 furlongs"),
        ],
    );
    w.s.rds.set_sensors(&[
        ("cpu-temperature", "45", "C"),
        ("board-temperature1", "38", "C"),
        ("fan1-speed", "4200", "RPM"),
        ("psu1-state", "ok", ""),
        ("psu2-state", "fail", ""),
        ("psu1-power", "61.5", "W"),
        ("fan-mode", "auto", ""),
    ]);
    let text = w.scrape_until(&format!(
        "{} 17667231\n",
        volume_series("rds_csi_volume_ops_total", 1, "read")
    ));
    let v = |s: &str| value(&text, s);
    assert_eq!(
        v(&volume_series("rds_csi_volume_ops_total", 1, "write")),
        Some(76.0)
    );
    assert_eq!(
        v(&volume_series("rds_csi_volume_bytes_total", 1, "read")),
        Some(1048576.0)
    );
    assert_eq!(
        v(&volume_series("rds_csi_volume_io_seconds_total", 1, "read")),
        Some(1.2)
    );
    assert_eq!(
        v(&volume_series(
            "rds_csi_volume_io_seconds_total",
            1,
            "write"
        )),
        Some(0.015)
    );
    assert_eq!(
        v(&volume_series("rds_csi_volume_in_flight_ops", 1, "")),
        Some(3.0)
    );
    // Every volume of the driver has its series, quiet ones at zero.
    for i in [0, 2] {
        assert_eq!(
            v(&volume_series("rds_csi_volume_ops_total", i, "read")),
            Some(0.0),
            "{text}"
        );
    }
    // The Go driver's names, with the server added.
    assert_eq!(
        v("rds_hardware_cpu_temperature_celsius{server=\"default\"}"),
        Some(45.0)
    );
    assert_eq!(
        v("rds_hardware_board_temperature_celsius{server=\"default\"}"),
        Some(38.0)
    );
    assert_eq!(
        v("rds_hardware_fan1_speed_rpm{server=\"default\"}"),
        Some(4200.0)
    );
    assert_eq!(
        v("rds_hardware_psu1_power_watts{server=\"default\"}"),
        Some(61.5)
    );
    assert!(
        !text.contains("rds_hardware_fan2_speed_rpm{"),
        "no fan2 sensor: no series"
    );
    assert_eq!(
        v("rds_disk_write_bytes_per_second{server=\"default\",slot=\"storage-pool\"}"),
        Some(1_600_000.0)
    );
    assert_eq!(
        v("rds_disk_read_ops_per_second{server=\"default\",slot=\"storage-pool\"}"),
        Some(40.0)
    );
    assert_eq!(
        v("rds_disk_wait_latency_milliseconds{server=\"default\",slot=\"storage-pool\"}"),
        Some(7.0)
    );
    assert!(
        !text.contains("rds_disk_read_bytes_per_second{"),
        "its unit is not understood"
    );
    let size = v("rds_hardware_disk_pool_size_bytes{server=\"default\"}").unwrap();
    let used = v("rds_hardware_disk_pool_used_bytes{server=\"default\"}").unwrap();
    assert_eq!(size - used, w.s.rds.free_bytes() as f64);
    assert!(used >= 3.0 * GIB as f64, "three volumes of 1 GiB: {used}");
    // Every sensor as the device names it; states as 1 and 0.
    assert_eq!(
        v("rds_csi_rds_sensor{server=\"default\",sensor=\"psu2-state\",unit=\"state\"}"),
        Some(0.0)
    );
    assert_eq!(
        v("rds_csi_rds_sensor{server=\"default\",sensor=\"psu1-state\",unit=\"state\"}"),
        Some(1.0)
    );
    // What is not understood is skipped, counted and logged once.
    assert!(v("rds_csi_rds_monitor_skipped_total{server=\"default\"}").unwrap() >= 3.0);
    let logs = w.controller.logs();
    for field in ["queue-depth=9", "read-rate=3 furlongs", "fan-mode=auto"] {
        assert_eq!(
            logs.matches(&format!("skipping \"{field}\"")).count(),
            1,
            "{field}: {logs}"
        );
    }
    let at = v("rds_csi_rds_monitor_timestamp_seconds{server=\"default\"}").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - at).abs() < 5.0, "timestamp {at}, now {now}");
}

#[test]
fn a_poll_is_two_requests_for_the_pool_and_every_volume() {
    let w = watched(&[]);
    w.scrape_until(&format!(
        "{} 0\n",
        volume_series("rds_csi_volume_ops_total", 2, "read")
    ));
    w.s.rds.clear_requests();
    w.s.kube.clear_requests();
    std::thread::sleep(Duration::from_millis(3500));
    let health = w.s.rds.count("GET", "/rest/system/health");
    let traffic = w.s.rds.count("POST", "/rest/disk/monitor-traffic");
    assert!(
        (3..=4).contains(&traffic),
        "{traffic} polls in 3.5 s at 1 s"
    );
    assert_eq!(health, traffic);
    // Nothing else a poll needs once the pool is known (the health
    // checks read the pool's disk on their own schedule: 10 s).
    let others: Vec<_> =
        w.s.rds
            .requests()
            .into_iter()
            .filter(|r| r.path != "/rest/system/health" && r.path != "/rest/disk/monitor-traffic")
            .collect();
    assert!(others.len() <= 1, "{others:?}");
    // The PVs are listed once per refresh (minutes), not per poll.
    assert_eq!(w.s.kube.count("list", "persistentvolumes"), 0);
}

#[test]
fn a_scrape_while_rds_stalls_answers_at_once_with_the_last_values_and_their_time() {
    let w = watched(&[]);
    let line = "rds_hardware_cpu_temperature_celsius{server=\"default\"} 45\n";
    w.scrape_until(line);
    w.s.rds.set_latency(Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(1500));
    let stamp = |t: &str| {
        value(
            t,
            "rds_csi_rds_monitor_timestamp_seconds{server=\"default\"}",
        )
    };
    let before = stamp(&w.scrape()).unwrap();
    let started = Instant::now();
    let text = w.scrape();
    let took = started.elapsed();
    assert!(took < Duration::from_millis(500), "scrape took {took:?}");
    assert!(text.contains(line), "the last values stay: {text}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(stamp(&w.scrape()), Some(before), "no poll ended: same time");
    w.s.rds.set_latency(Duration::ZERO);
}

#[test]
fn a_volume_whose_disk_is_gone_leaves_the_others_reported() {
    let w = watched(&[]);
    w.scrape_until(&format!(
        "{} 0\n",
        volume_series("rds_csi_volume_ops_total", 2, "read")
    ));
    assert!(w.s.rds.remove_disk(VOLUMES[0]));
    w.s.rds.set_traffic(VOLUMES[2], &[("write-ops", "5")]);
    let text = w.scrape_until(&format!(
        "{} 5\n",
        volume_series("rds_csi_volume_ops_total", 2, "write")
    ));
    assert!(
        !text.contains(&volume_series("rds_csi_volume_ops_total", 0, "read")),
        "{text}"
    );
    // Its PV stays: the polls after leave it out, neither refused nor
    // listing the disks again each time.
    w.s.rds.clear_requests();
    std::thread::sleep(Duration::from_millis(3500));
    let reqs = w.s.rds.requests();
    let polls = reqs
        .iter()
        .filter(|r| r.path == "/rest/disk/monitor-traffic");
    assert!(polls.clone().count() >= 3, "{reqs:?}");
    assert!(polls.clone().all(|r| r.code == 200), "{reqs:?}");
    let listings = reqs.iter().filter(|r| r.query.contains(".proplist"));
    assert_eq!(listings.count(), 0, "{reqs:?}");
}

#[test]
fn volume_stats_false_keeps_the_pool_and_drops_every_volume_series() {
    let w = watched(&["--volume-stats", "false"]);
    let text = w.scrape_until(
        "rds_disk_in_flight_operations{server=\"default\",slot=\"storage-pool\"} 0\n",
    );
    assert!(!text.contains("rds_csi_volume_"), "{text}");
}

#[test]
fn the_standby_exports_no_monitoring_and_the_interval_zero_none_at_all() {
    let s = setup("monitor-ha", false);
    let election = [
        "--leader-election",
        "--leader-election-namespace",
        "rds-csi",
        "--leader-election-lease-duration",
        "3s",
        "--leader-election-renew-deadline",
        "1500ms",
        "--leader-election-retry-period",
        "250ms",
    ];
    let start = |name| s.start(name, "500ms", &election);
    let (a, b) = (start("replica-a.sock"), start("replica-b.sock"));
    let line = "rds_hardware_cpu_temperature_celsius{server=\"default\"} 45";
    let has = |c: &Controller| {
        http_get(metrics_address(&c.logs()), "/metrics")
            .1
            .contains(line)
    };
    let until = Instant::now() + Duration::from_secs(10);
    while !(has(&a) || has(&b)) {
        assert!(
            Instant::now() < until,
            "no replica polls:\n{}\n{}",
            a.logs(),
            http_get(metrics_address(&a.logs()), "/metrics").1
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        has(&a) != has(&b),
        "exactly one replica exports the monitoring"
    );
    let polls = s.rds.count("GET", "/rest/system/health");
    std::thread::sleep(Duration::from_secs(2));
    let more = s.rds.count("GET", "/rest/system/health") - polls;
    assert!(
        (3..=6).contains(&more),
        "{more} polls in 2 s at 500 ms: one replica polls"
    );
    drop(s);

    // Interval 0: nothing polled, nothing exported.
    let s = setup("monitor-off", true);
    let c = s.start("csi.sock", "0", &[]);
    std::thread::sleep(Duration::from_secs(1));
    let text = http_get(metrics_address(&c.logs()), "/metrics").1;
    assert!(!text.contains("rds_hardware_cpu") && !text.contains("rds_csi_rds_monitor_timestamp"));
    assert_eq!(s.rds.count("GET", "/rest/system/health"), 0);
}

#[test]
fn a_server_never_read_shows_its_values_as_read_at_time_0() {
    let s = setup("monitor-never", true);
    s.rds.set_refusing(true);
    let c = s.start("csi.sock", "300ms", &[]);
    let addr = metrics_address(&c.logs());
    let line = "rds_csi_rds_monitor_timestamp_seconds{server=\"default\"} 0\n";
    let until = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = http_get(addr, "/metrics").1;
        if text.contains(line) || Instant::now() > until {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // So `time() - rds_csi_rds_monitor_timestamp_seconds` alerts on it.
    assert!(text.contains(line), "{text}");
    assert!(!text.contains("rds_hardware_cpu_temperature_celsius{"));
    assert_eq!(
        c.logs().matches("RDS monitoring: server default:").count(),
        1,
        "one line per outage"
    );
}
