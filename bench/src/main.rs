//! `rds-bench`: one run, one table.
//!
//! ```sh
//! scripts/bench.sh              # builds release binaries, then runs this
//! ```
//!
//! Rebuild contenders run as separate processes (this binary re-executed
//! with `contender NAME KUBECONFIG`), so each one's peak RSS (VmHWM) is its
//! own. The emulator runs in this process on loopback HTTPS.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use grpcio::{CallOption, ChannelBuilder, EnvBuilder};
use kube_emulator::{Emulator, Options};
use rds_csi_controller::proto::{csi, csi_grpc};
use serde_json::{json, Value};

const DRIVER: &str = "rds.csi.srvlab.io";
const TOKEN: &str = "bench-token";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("contender") {
        return contender(&args[1], Path::new(&args[2]));
    }
    let mut opts = BenchOpts {
        sizes: vec![10_000, 100_000],
        runs: 3,
        controller: PathBuf::from("target/release/rds-csi-controller"),
        binary: None,
        held: 100_000,
        exec_pvs: 10_000,
        volumes: 10_000,
        only: None,
    };
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--sizes" => {
                opts.sizes = it
                    .next()
                    .unwrap()
                    .split(',')
                    .map(|s| s.parse().unwrap())
                    .collect()
            }
            "--runs" => opts.runs = it.next().unwrap().parse().unwrap(),
            "--controller" => opts.controller = PathBuf::from(it.next().unwrap()),
            "--binary" => opts.binary = Some(PathBuf::from(it.next().unwrap())),
            "--held" => opts.held = it.next().unwrap().parse().unwrap(),
            "--exec-pvs" => opts.exec_pvs = it.next().unwrap().parse().unwrap(),
            "--volumes" => opts.volumes = it.next().unwrap().parse().unwrap(),
            "--only" => opts.only = it.next(),
            other => panic!("unknown argument {other}"),
        }
    }
    run(&opts);
}

struct BenchOpts {
    sizes: Vec<usize>,
    runs: usize,
    controller: PathBuf,
    /// The shipped (static) binary whose size is reported.
    binary: Option<PathBuf>,
    /// Attachments held for the RSS measure.
    held: usize,
    /// PVs to rebuild for the exec → Probe measure.
    exec_pvs: usize,
    /// Volumes on RDS for the ListVolumes RSS measure.
    volumes: usize,
    /// Run one section only: `volumes`.
    only: Option<String>,
}

fn run(o: &BenchOpts) {
    let dir = std::env::temp_dir().join(format!("rds-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    if o.only.as_deref() == Some("volumes") {
        println!("## Volume lifecycle on RDS (--rds-url, RDS emulator over HTTPS)\n");
        volume_path(&dir, &o.controller, o.volumes);
        std::fs::remove_dir_all(&dir).ok();
        return;
    }
    println!("## Rebuild (median of {} runs; page size 500)\n", o.runs);
    println!("| PVs | contender | wall ms | peak RSS MiB | vs kube-rs wall | vs kube-rs RSS | vs floor wall |");
    println!("|---|---|---|---|---|---|---|");
    for &n in &o.sizes {
        let (emu, kc) = seeded(&dir, n, true);
        let mut results: HashMap<&str, (f64, f64)> = HashMap::new();
        for name in ["floor", "ours", "kube-rs"] {
            let mut walls = Vec::new();
            let mut rss = Vec::new();
            for _ in 0..o.runs {
                let out = Command::new(std::env::current_exe().unwrap())
                    .args(["contender", name, kc.to_str().unwrap()])
                    .stderr(Stdio::inherit())
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{name} failed");
                let v: Value = serde_json::from_slice(&out.stdout).unwrap();
                walls.push(v["wall_ms"].as_f64().unwrap());
                rss.push(v["peak_rss_kb"].as_f64().unwrap() / 1024.0);
                if name != "floor" {
                    assert_eq!(
                        v["recovered"].as_u64().unwrap() as usize,
                        n / 4,
                        "{name} recovered count"
                    );
                }
            }
            results.insert(name, (median(&mut walls), median(&mut rss)));
        }
        let (kw, kr) = results["kube-rs"];
        let (fw, _) = results["floor"];
        for name in ["ours", "kube-rs", "floor"] {
            let (w, r) = results[name];
            println!(
                "| {n} | {name} | {w:.0} | {r:.1} | {:.2} | {:.2} | {:.2} |",
                w / kw,
                r / kr,
                w / fw
            );
        }
        drop(emu);
    }

    println!("\n## Publish path (1 node cached, --kube-api-qps 0)\n");
    publish_path(&dir, &o.controller);

    println!("\n## Volume lifecycle on RDS (--rds-url, RDS emulator over HTTPS)\n");
    volume_path(&dir, &o.controller, o.volumes);

    println!("\n## Footprint\n");
    footprint(&dir, o);
    std::fs::remove_dir_all(&dir).ok();
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// An emulator with `n` PVs: half ours (half of those annotated), half of
/// another driver; plus `node-1`.
fn seeded(dir: &Path, n: usize, annotate_quarter: bool) -> (Emulator, PathBuf) {
    let emu = Emulator::start(Options {
        port: 0,
        tls: true,
        token: Some(TOKEN.into()),
    })
    .unwrap();
    emu.create("nodes", json!({"metadata": {"name": "node-1"}}))
        .unwrap();
    for i in 0..n {
        let ours = i % 2 == 0;
        let name = format!("pvc-{i:07}");
        let mut pv = json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": name, "finalizers": ["kubernetes.io/pv-protection"], "labels": {"app": "bench"}},
            "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"], "persistentVolumeReclaimPolicy": "Delete",
                     "storageClassName": "rds-nvme", "volumeMode": "Filesystem",
                     "claimRef": {"kind": "PersistentVolumeClaim", "namespace": "default", "name": format!("data-{i}"), "uid": format!("00000000-0000-4000-8000-{i:012}")},
                     "csi": {"driver": if ours { DRIVER } else { "other.csi.example.com" }, "volumeHandle": name, "fsType": "ext4",
                             "volumeAttributes": {"nqn": format!("nqn.2024-01.io.srvlab:{name}"), "address": "10.0.0.2", "port": "4420"}}},
            "status": {"phase": "Bound"}
        });
        if annotate_quarter && ours && i % 4 == 0 {
            pv["metadata"]["annotations"] = json!({
                "rds.csi.srvlab.io/attached-node": format!("node-{}", i % 7),
                "rds.csi.srvlab.io/attached-at": "2024-01-02T03:04:05.123456Z",
            });
        }
        emu.create("persistentvolumes", pv).unwrap();
    }
    let kc = emu
        .write_kubeconfig(
            &dir.join(format!("kc-{n}-{}", emu.addr().port()))
                .tap_mkdir(),
        )
        .unwrap();
    (emu, kc)
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}

impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

fn peak_rss_kb() -> u64 {
    status_kb("/proc/self/status", "VmHWM:")
}

fn rss_kb(pid: u32) -> u64 {
    status_kb(&format!("/proc/{pid}/status"), "VmRSS:")
}

fn hwm_kb(pid: u32) -> u64 {
    status_kb(&format!("/proc/{pid}/status"), "VmHWM:")
}

/// A `kB` field of a `/proc/…/status` file.
fn status_kb(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap()
}

/// One rebuild contender; prints `{"wall_ms", "peak_rss_kb", "recovered"}`.
fn contender(name: &str, kubeconfig: &Path) {
    let started = Instant::now();
    let recovered = match name {
        "ours" => {
            let cfg = rds_csi_controller::kube::Config::from_kubeconfig(kubeconfig).unwrap();
            let opts = rds_csi_controller::kube::ClientOptions {
                qps: 0.0,
                ..Default::default()
            };
            let client = rds_csi_controller::kube::Client::new(&cfg, opts).unwrap();
            let manager =
                rds_csi_controller::attachment::AttachmentManager::new(Some(client), DRIVER);
            manager.rebuild().unwrap().recovered
        }
        "kube-rs" => kube_rs_rebuild(kubeconfig),
        "floor" => floor(kubeconfig),
        other => panic!("unknown contender {other}"),
    };
    let wall = started.elapsed();
    println!(
        "{}",
        json!({"wall_ms": wall.as_secs_f64() * 1000.0, "peak_rss_kb": peak_rss_kb(), "recovered": recovered})
    );
}

/// What a kube-rs user would write: `Api::<PersistentVolume>::list` page by
/// page, keeping the annotated PVs of our driver.
fn kube_rs_rebuild(kubeconfig: &Path) -> usize {
    use k8s_openapi::api::core::v1::PersistentVolume;
    use kube::api::{Api, ListParams};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        let client = kube::Client::try_from(config).unwrap();
        let api: Api<PersistentVolume> = Api::all(client);
        let mut lp = ListParams::default().limit(500);
        let mut map: HashMap<String, String> = HashMap::new();
        loop {
            let list = api.list(&lp).await.unwrap();
            for pv in list.items {
                let Some(csi) = pv.spec.as_ref().and_then(|s| s.csi.as_ref()) else {
                    continue;
                };
                if csi.driver != DRIVER {
                    continue;
                }
                if let Some(node) = pv
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("rds.csi.srvlab.io/attached-node"))
                {
                    map.insert(csi.volume_handle.clone(), node.clone());
                }
            }
            match list.metadata.continue_ {
                Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
                _ => break,
            }
        }
        map.len()
    })
}

/// The floor: the same pages fetched the same way, parsed into
/// `IgnoredAny` (only `metadata.continue` is kept).
fn floor(kubeconfig: &Path) -> usize {
    #[derive(serde::Deserialize)]
    struct Page {
        metadata: Meta,
        #[allow(dead_code)]
        items: serde::de::IgnoredAny,
    }
    #[derive(serde::Deserialize)]
    struct Meta {
        #[serde(default, rename = "continue")]
        next: Option<String>,
    }
    let cfg = rds_csi_controller::kube::Config::from_kubeconfig(kubeconfig).unwrap();
    let certs: Vec<_> = ureq::tls::parse_pem(cfg.ca_pem.as_ref().unwrap())
        .filter_map(|i| match i {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
        .build();
    let agent: ureq::Agent = ureq::Agent::config_builder().tls_config(tls).build().into();
    let mut cont = String::new();
    let mut pages = 0;
    loop {
        let mut url = format!("{}/api/v1/persistentvolumes?limit=500", cfg.server);
        if !cont.is_empty() {
            url.push_str("&continue=");
            url.push_str(
                &cont
                    .replace('+', "%2B")
                    .replace('/', "%2F")
                    .replace('=', "%3D"),
            );
        }
        let bytes = agent
            .get(&url)
            .header("Authorization", format!("Bearer {TOKEN}"))
            .call()
            .unwrap()
            .into_body()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .unwrap();
        let page: Page = serde_json::from_slice(&bytes).unwrap();
        pages += 1;
        match page.metadata.next {
            Some(c) if !c.is_empty() => cont = c,
            _ => return pages,
        }
    }
}

struct Controller {
    child: std::process::Child,
    socket: PathBuf,
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn clients(socket: &Path) -> (csi_grpc::IdentityClient, csi_grpc::ControllerClient) {
    let env = Arc::new(EnvBuilder::new().cq_count(1).build());
    let ch = ChannelBuilder::new(env).connect(&format!("unix:{}", socket.display()));
    (
        csi_grpc::IdentityClient::new(ch.clone()),
        csi_grpc::ControllerClient::new(ch),
    )
}

/// Starts the controller and returns it with the time from exec to the
/// first Probe answering ready.
fn start_controller(
    bin: &Path,
    dir: &Path,
    kc: Option<&Path>,
    tag: &str,
) -> (Controller, Duration) {
    start_controller_with(bin, dir, kc, tag, &[])
}

fn start_controller_with(
    bin: &Path,
    dir: &Path,
    kc: Option<&Path>,
    tag: &str,
    extra: &[String],
) -> (Controller, Duration) {
    let socket = dir.join(format!("{tag}.sock"));
    let _ = std::fs::remove_file(&socket);
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--endpoint=unix://{}", socket.display()))
        .args([
            "--kube-api-qps",
            "0",
            "--workers",
            "16",
            "--queue-depth",
            "256",
            "--log-level",
            "warn",
        ])
        .args(extra)
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(kc) = kc {
        cmd.env("KUBECONFIG", kc);
    }
    let started = Instant::now();
    let child = cmd.spawn().unwrap();
    let c = Controller {
        child,
        socket: socket.clone(),
    };
    loop {
        if socket.exists() {
            let (id, _) = clients(&socket);
            if let Ok(r) = id.probe_opt(
                &csi::ProbeRequest::new(),
                CallOption::default().timeout(Duration::from_secs(2)),
            ) {
                if r.get_ready().get_value() {
                    return (c, started.elapsed());
                }
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "controller did not start"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn publish_request(volume: &str, node: &str) -> csi::ControllerPublishVolumeRequest {
    csi::ControllerPublishVolumeRequest::single_node_writer(volume, node)
}

fn publish_path(dir: &Path, bin: &Path) {
    let samples = 1000;
    let threads = 16;
    let per_thread = 100;
    let n = 2 * (samples + threads * per_thread + 10);
    let (emu, kc) = seeded(dir, n, false);
    let (c, _) = start_controller(bin, dir, Some(&kc), "publish");
    let (id, ctl) = clients(&c.socket);
    let opt = || CallOption::default().timeout(Duration::from_secs(10));
    let vol = |i: usize| format!("pvc-{:07}", 2 * i);
    let mut probe = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        id.probe_opt(&csi::ProbeRequest::new(), opt()).unwrap();
        probe.push(t.elapsed());
    }
    ctl.controller_publish_volume_opt(&publish_request(&vol(0), "node-1"), opt())
        .unwrap();

    emu.clear_requests();
    ctl.controller_publish_volume_opt(&publish_request(&vol(1), "node-1"), opt())
        .unwrap();
    let per_publish = emu.requests().len();

    let mut lat = Vec::with_capacity(samples);
    for i in 2..samples + 2 {
        let t = Instant::now();
        ctl.controller_publish_volume_opt(&publish_request(&vol(i), "node-1"), opt())
            .unwrap();
        lat.push(t.elapsed());
    }

    // The emulator's own GET and PUT latency, from a client on the same
    // loopback TLS: the floor any Publish stands on.
    let cfg = rds_csi_controller::kube::Config::from_kubeconfig(&kc).unwrap();
    let client = rds_csi_controller::kube::Client::new(
        &cfg,
        rds_csi_controller::kube::ClientOptions {
            qps: 0.0,
            ..Default::default()
        },
    )
    .unwrap();
    let mut put = Vec::with_capacity(samples);
    let mut get = Vec::with_capacity(samples);
    for i in 0..samples {
        let name = format!("pvc-{:07}", 2 * i + 1);
        let t = Instant::now();
        let mut pv = client.get_pv(&name).unwrap();
        get.push(t.elapsed());
        pv["metadata"]["labels"]["touched"] = json!("yes");
        let t = Instant::now();
        client.replace_pv(&name, &pv).unwrap();
        put.push(t.elapsed());
    }

    let base = samples + 2;
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let socket = c.socket.clone();
            std::thread::spawn(move || {
                let (_, ctl) = clients(&socket);
                for k in 0..per_thread {
                    let v = format!("pvc-{:07}", 2 * (base + t * per_thread + k));
                    ctl.controller_publish_volume_opt(
                        &publish_request(&v, "node-1"),
                        CallOption::default().timeout(Duration::from_secs(30)),
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let rate = (threads * per_thread) as f64 / started.elapsed().as_secs_f64();

    let (p50, p99) = (percentile(&mut lat, 0.5), percentile(&mut lat, 0.99));
    let (put50, put99) = (percentile(&mut put, 0.5), percentile(&mut put, 0.99));
    let get50 = percentile(&mut get, 0.5);
    let probe50 = percentile(&mut probe, 0.5);
    println!("| measure | value |\n|---|---|");
    println!("| API requests per uncontended Publish | {per_publish} |");
    println!(
        "| Publish latency p50 / p99 (over the socket) | {} / {} µs |",
        p50.as_micros(),
        p99.as_micros()
    );
    println!(
        "| emulator PUT p50 / p99 (direct) | {} / {} µs |",
        put50.as_micros(),
        put99.as_micros()
    );
    println!("| emulator GET p50 (direct) | {} µs |", get50.as_micros());
    println!(
        "| Publish p50 − PUT p50 | {} µs |",
        p50.as_micros() as i128 - put50.as_micros() as i128
    );
    println!(
        "| Publish p50 − (GET p50 + PUT p50) | {} µs |",
        p50.as_micros() as i128 - (get50 + put50).as_micros() as i128
    );
    println!(
        "| Probe p50 (gRPC round trip and worker hand-off alone) | {} µs |",
        probe50.as_micros()
    );
    println!("| throughput, {threads} clients on distinct volumes | {rate:.0} Publish/s |");
}

/// Measured on the shipped binary (`--binary`) when given: its allocator
/// and linking are what an edge node pays for.
fn footprint(dir: &Path, o: &BenchOpts) {
    let bin = o.binary.clone().unwrap_or_else(|| o.controller.clone());
    let size = std::fs::metadata(&bin).map(|m| m.len()).unwrap_or(0);
    println!("| measure | value |\n|---|---|");
    println!(
        "| binary size ({}) | {:.2} MB ({size} bytes) |",
        bin.display(),
        size as f64 / 1e6
    );

    let (emu, kc) = seeded(dir, 0, false);
    let (c, _) = start_controller(&bin, dir, Some(&kc), "idle");
    std::thread::sleep(Duration::from_millis(300));
    println!(
        "| idle RSS (0 PVs) | {:.1} MiB |",
        rss_kb(c.child.id()) as f64 / 1024.0
    );
    drop(c);
    drop(emu);

    let emu = Emulator::start(Options {
        port: 0,
        tls: true,
        token: Some(TOKEN.into()),
    })
    .unwrap();
    for i in 0..o.held {
        let name = format!("pvc-{i:07}");
        emu.insert_raw(
            "persistentvolumes",
            json!({"metadata": {"name": name, "annotations": {"rds.csi.srvlab.io/attached-node": format!("node-{}", i % 50), "rds.csi.srvlab.io/attached-at": "2024-01-02T03:04:05.123456Z"}},
                   "spec": {"accessModes": ["ReadWriteOnce"], "csi": {"driver": DRIVER, "volumeHandle": name}}}),
        );
    }
    let kc = emu
        .write_kubeconfig(&dir.join("kc-100k-held").tap_mkdir())
        .unwrap();
    let (c, _) = start_controller(&bin, dir, Some(&kc), "held");
    std::thread::sleep(Duration::from_millis(300));
    println!(
        "| RSS holding {} attachments | {:.1} MiB |",
        o.held,
        rss_kb(c.child.id()) as f64 / 1024.0
    );
    drop(c);
    drop(emu);

    let (emu, kc) = seeded(dir, o.exec_pvs, true);
    let mut times: Vec<f64> = (0..o.runs.max(3))
        .map(|i| {
            let (_c, t) = start_controller(&bin, dir, Some(&kc), &format!("exec{i}"));
            t.as_secs_f64() * 1000.0
        })
        .collect();
    println!(
        "| exec → Probe ready, {} PVs (median) | {:.0} ms |",
        o.exec_pvs,
        median(&mut times)
    );
    drop(emu);
}

/// CreateVolume over the socket against the RDS emulator's own add, the
/// RDS requests each lifecycle call makes, and the controller's RSS when
/// it lists `volumes` volumes.
fn volume_path(dir: &Path, bin: &Path, volumes: usize) {
    let samples = 500;
    let rds = rds_emulator::Emulator::start(rds_emulator::Options {
        pool_bytes: 1 << 50,
        ..Default::default()
    })
    .unwrap();
    let creds = rds.write_credentials(&dir.join("rds-creds")).unwrap();
    let extra = vec![
        "--rds-url".to_string(),
        rds.url(),
        "--rds-credentials-dir".into(),
        creds.display().to_string(),
    ];
    let (c, _) = start_controller_with(bin, dir, None, "volumes", &extra);
    let (_, ctl) = clients(&c.socket);
    let opt = || CallOption::default().timeout(Duration::from_secs(10));
    let create = |name: &str| {
        let mut r = csi::CreateVolumeRequest::new();
        r.set_name(name.into());
        r.mut_capacity_range().set_required_bytes(1 << 30);
        r.mut_volume_capabilities().push(
            csi::ControllerPublishVolumeRequest::single_node_writer(name, "-")
                .take_volume_capability(),
        );
        r
    };
    ctl.create_volume_opt(&create("pvc-warm"), opt()).unwrap();

    let count = |f: &dyn Fn()| {
        rds.clear_requests();
        f();
        // Less the background health checks (look-ups by mount point).
        rds.requests()
            .iter()
            .filter(|r| !r.query.contains("mount-point="))
            .count()
    };
    let per_create = count(&|| {
        ctl.create_volume_opt(&create("pvc-count"), opt()).unwrap();
    });
    let per_create_again = count(&|| {
        ctl.create_volume_opt(&create("pvc-count"), opt()).unwrap();
    });
    let per_expand = count(&|| {
        let mut r = csi::ControllerExpandVolumeRequest::new();
        r.set_volume_id("pvc-count".into());
        r.mut_capacity_range().set_required_bytes(2 << 30);
        ctl.controller_expand_volume_opt(&r, opt()).unwrap();
    });
    let per_delete = count(&|| {
        let mut r = csi::DeleteVolumeRequest::new();
        r.set_volume_id("pvc-count".into());
        ctl.delete_volume_opt(&r, opt()).unwrap();
    });

    // CreateVolume over the socket, and beside each one the emulator's own
    // look-up and add through the controller's RDS client on the same
    // loopback TLS, at the same number of disks: the floor it stands on.
    let client = rds_csi_controller::rds::Client::new(&rds_csi_controller::rds::ClientOptions {
        url: rds.url(),
        credentials_dir: creds.clone(),
        insecure_skip_verify: false,
        timeout: Duration::from_secs(10),
        metrics: None,
    })
    .unwrap();
    let mut lat = Vec::with_capacity(samples);
    let (mut get, mut add) = (Vec::with_capacity(samples), Vec::with_capacity(samples));
    for i in 0..samples {
        let t = Instant::now();
        ctl.create_volume_opt(&create(&format!("pvc-lat-{i:05}")), opt())
            .unwrap();
        lat.push(t.elapsed());
        let slot = format!("pvc-raw-{i:05}");
        let t = Instant::now();
        assert!(client.disk_by_slot(&slot).unwrap().is_none());
        get.push(t.elapsed());
        let t = Instant::now();
        client
            .add_disk(&rds_csi_controller::rds::NewFileDisk {
                kind: "file",
                slot: slot.clone(),
                file_path: format!("storage-pool/metal-csi/{slot}.img"),
                file_size: (1u64 << 30).to_string(),
                nvme_tcp_export: "yes",
                nvme_tcp_server_port: "4420".into(),
                nvme_tcp_server_nqn: format!("nqn.2000-02.com.mikrotik:{slot}"),
            })
            .unwrap();
        add.push(t.elapsed());
    }

    // RSS with many volumes listed, in pages as the provisioner's capacity
    // and health checks would, and all at once.
    for i in 0..volumes {
        let slot = format!("pvc-many-{i:06}");
        let path = format!("storage-pool/metal-csi/{slot}.img");
        rds.insert_file_disk(&slot, &path, Some(1 << 30), Some(true));
    }
    let pid = c.child.id();
    let before = rss_kb(pid);
    let mut listed = 0;
    let mut token = String::new();
    let t = Instant::now();
    loop {
        let mut r = csi::ListVolumesRequest::new();
        r.set_max_entries(500);
        r.set_starting_token(token.clone());
        let page = ctl.list_volumes_opt(&r, opt()).unwrap();
        listed += page.get_entries().len();
        token = page.get_next_token().to_string();
        if token.is_empty() {
            break;
        }
    }
    let paged = t.elapsed();
    let t = Instant::now();
    let all = ctl
        .list_volumes_opt(&csi::ListVolumesRequest::new(), opt())
        .unwrap()
        .get_entries()
        .len();
    let whole = t.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    let after = rss_kb(pid);
    let hwm = hwm_kb(pid);
    assert_eq!(listed, all);

    let (p50, p99) = (percentile(&mut lat, 0.5), percentile(&mut lat, 0.99));
    let (get50, add50) = (percentile(&mut get, 0.5), percentile(&mut add, 0.5));
    let add99 = percentile(&mut add, 0.99);
    println!("| measure | value |\n|---|---|");
    println!(
        "| RDS requests per CreateVolume (new / existing) | {per_create} / {per_create_again} |"
    );
    println!("| RDS requests per ControllerExpandVolume (growing) | {per_expand} |");
    println!("| RDS requests per DeleteVolume (disk and file) | {per_delete} |");
    println!(
        "| CreateVolume p50 / p99 (over the socket) | {} / {} µs |",
        p50.as_micros(),
        p99.as_micros()
    );
    println!(
        "| emulator look-up p50, add p50 / p99 (direct) | {} µs, {} / {} µs |",
        get50.as_micros(),
        add50.as_micros(),
        add99.as_micros()
    );
    println!(
        "| CreateVolume p50 − (look-up p50 + add p50) | {} µs |",
        p50.as_micros() as i128 - (get50 + add50).as_micros() as i128
    );
    println!(
        "| ListVolumes of {all} volumes: 500 a page / all at once | {} / {} ms |",
        paged.as_millis(),
        whole.as_millis()
    );
    println!(
        "| controller RSS before / after listing {all} volumes (peak) | {:.1} / {:.1} MiB ({:.1}) |",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
}
