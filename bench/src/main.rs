//! `rds-bench`: one run, one table per question.
//!
//! ```sh
//! scripts/bench.sh              # builds release binaries, then runs this
//! target/release/rds-bench --smoke
//! ```
//!
//! Rebuild contenders are each their own small binary (`rebuild-*`), run
//! as their own process against a page server in another process
//! (`rds-bench-pages`), so each one's CPU time and memory are its own. The
//! gRPC floor is `grpc-floor`. The kube emulator of the Publish section
//! runs in this process on loopback HTTPS.

mod burst;
mod monitor;
mod snapshots;

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
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(Some(opts)) => opts,
        Ok(None) => {
            print!("{}", usage());
            return;
        }
        Err(e) => {
            eprintln!("rds-bench: {e} (see --help)");
            std::process::exit(2);
        }
    };
    run(&opts);
}

/// The `--help` text: every option with its default, taken from
/// [`BenchOpts::default`] so the two cannot disagree.
fn usage() -> String {
    let d = BenchOpts::default();
    let names: Vec<&str> = SECTIONS.iter().map(|(name, _, _)| *name).collect();
    fn list<T: ToString>(v: &[T]) -> String {
        v.iter().map(T::to_string).collect::<Vec<_>>().join(",")
    }
    format!(
        "usage: rds-bench [options]

  --only SECTION       run one section: {} (default: all)
  --smoke              every rebuild contender once at 1 000 PVs, and the hop
  --runs N             runs per measure; the median is reported ({})
  --sizes N,N          PVs per rebuild ({})
  --controller PATH    controller of the gRPC and Publish sections
                       ({})
  --binary PATH        the shipped static binary (default: --controller)
  --held N             attachments held for the RSS measure ({})
  --exec-pvs N,N       PVs rebuilt for exec -> Probe ({})
  --volumes N          volumes on RDS for ListVolumes ({})
  --snapshots N        snapshots on RDS for ListSnapshots ({})
  --latencies MS,MS    RDS latencies of the burst section ({})
  -h, --help           this text
",
        names.join(", "),
        d.runs,
        list(&d.sizes),
        d.controller.display(),
        d.held,
        list(&d.exec_pvs),
        d.volumes,
        d.snapshots,
        list(&d.latencies),
    )
}

/// The options from the command line; `None` when help was asked for.
/// An unknown option, a missing value or one that is not a count is an
/// error naming it.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<BenchOpts>, String> {
    let mut opts = BenchOpts::default();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        if a == "-h" || a == "--help" {
            return Ok(None);
        }
        if a == "--smoke" {
            opts.only = Some("smoke".into());
            opts.sizes = vec![1000];
            opts.runs = 1;
            continue;
        }
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--sizes" => opts.sizes = counts(&a, &value()?)?,
            "--runs" => opts.runs = count(&a, &value()?)?,
            "--controller" => opts.controller = PathBuf::from(value()?),
            "--binary" => opts.binary = Some(PathBuf::from(value()?)),
            "--held" => opts.held = count(&a, &value()?)?,
            "--exec-pvs" => opts.exec_pvs = counts(&a, &value()?)?,
            "--volumes" => opts.volumes = count(&a, &value()?)?,
            "--snapshots" => opts.snapshots = count(&a, &value()?)?,
            "--latencies" => {
                opts.latencies = value()?
                    .split(',')
                    .map(|ms| {
                        ms.parse()
                            .map_err(|_| format!("{a}: {ms:?} is not a count of milliseconds"))
                    })
                    .collect::<Result<_, _>>()?
            }
            "--only" => {
                let section = value()?;
                if !SECTIONS.iter().any(|(name, _, _)| *name == section) {
                    return Err(format!("--only: no section {section:?}"));
                }
                opts.only = Some(section);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Some(opts))
}

/// A count of at least one, for option `name`.
fn count(name: &str, value: &str) -> Result<usize, String> {
    match value.parse() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{name}: {value:?} is not a count of at least 1")),
    }
}

/// `1000,10000`: a comma-separated list of counts, for option `name`.
fn counts(name: &str, list: &str) -> Result<Vec<usize>, String> {
    list.split(',').map(|s| count(name, s)).collect()
}

struct BenchOpts {
    sizes: Vec<usize>,
    runs: usize,
    controller: PathBuf,
    /// The shipped (static) binary: its size, footprint and the volume
    /// lifecycle are measured on it. The gRPC and Publish sections use
    /// `controller`, built like the harness (same allocator as the floors).
    binary: Option<PathBuf>,
    /// Attachments held for the RSS measure.
    held: usize,
    /// PVs to rebuild for the exec → Probe measures.
    exec_pvs: Vec<usize>,
    /// Volumes on RDS for the ListVolumes RSS measure.
    volumes: usize,
    /// Snapshots on RDS for the ListSnapshots measure.
    snapshots: usize,
    /// RDS latencies (ms) of the burst section.
    latencies: Vec<u64>,
    /// Run one section only (a name in [`SECTIONS`]), or `smoke`.
    only: Option<String>,
}

impl Default for BenchOpts {
    fn default() -> BenchOpts {
        BenchOpts {
            sizes: vec![10_000, 100_000],
            runs: 5,
            controller: PathBuf::from("target/release/rds-csi-controller"),
            binary: None,
            held: 100_000,
            exec_pvs: vec![10_000, 100_000],
            volumes: 10_000,
            snapshots: 10_000,
            latencies: vec![2, 20, 100],
            only: None,
        }
    }
}

/// A section: its name (for `--only`), heading, and the measure.
type Section = (&'static str, &'static str, fn(&Path, &BenchOpts));

/// The sections in the order a full run prints them.
const SECTIONS: &[Section] = &[
    (
        "rebuild",
        "Rebuild (median of runs; page size 500)",
        |d, o| rebuild(d, o),
    ),
    ("hop", "The gRPC hop (median of runs)", |d, o| {
        hop(d, &o.controller, o.runs)
    }),
    (
        "publish",
        "Publish path (1 node cached, --kube-api-qps 0)",
        |d, o| publish_path(d, &o.controller),
    ),
    (
        "volumes",
        "Volume lifecycle on RDS (--rds-url, RDS emulator over HTTPS)",
        |d, o| volume_path(d, o.shipped(), o.volumes),
    ),
    (
        "snapshots",
        "Snapshots on RDS (--rds-url, RDS emulator over HTTPS)",
        |d, o| snapshots::snapshot_path(d, o.shipped(), o.snapshots),
    ),
    (
        "burst",
        "Provisioning bursts (RDS emulator with added latency, provisioner-like retries)",
        |d, o| burst::bursts(d, o.shipped(), o.runs, &o.latencies),
    ),
    ("footprint", "Footprint", |d, o| footprint(d, o)),
    (
        "ha",
        "Two replicas: Publish on the replica that did not make the PV's last change",
        |d, o| ha_path(d, &o.controller),
    ),
    (
        "monitor",
        "RDS monitoring: one server's poll and a scrape, by volumes",
        |d, o| monitor::monitor_path(d, o.shipped(), &[1000, 10000]),
    ),
];

impl BenchOpts {
    /// The shipped binary when given, else the harness-built controller.
    fn shipped(&self) -> &Path {
        self.binary.as_deref().unwrap_or(&self.controller)
    }
}

fn run(o: &BenchOpts) {
    let dir = std::env::temp_dir().join(format!("rds-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    if o.only.as_deref() == Some("smoke") {
        println!("## Smoke: rebuild at {} PVs, the hop\n", o.sizes[0]);
        rebuild(&dir, o);
        println!();
        hop(&dir, &o.controller, 1);
        std::fs::remove_dir_all(&dir).ok();
        return;
    }
    let chosen: Vec<_> = SECTIONS
        .iter()
        .filter(|(name, _, _)| o.only.as_deref().is_none_or(|only| only == *name))
        .collect();
    for (i, (_, heading, measure)) in chosen.into_iter().enumerate() {
        let heading = heading.replace("of runs", &format!("of {} runs", o.runs));
        println!("{}## {heading}\n", if i > 0 { "\n" } else { "" });
        measure(&dir, o);
    }
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
        ..Default::default()
    })
    .unwrap();
    emu.create("nodes", json!({"metadata": {"name": "node-1"}}))
        .unwrap();
    for i in 0..n {
        let ours = i % 2 == 0;
        // The provisioner's names: pvc-<the claim's UID>.
        let name = pvc_name(i);
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
            let node = format!("node-{}", i % 7);
            pv["metadata"]["annotations"] = json!({
                "rds.csi.srvlab.io/attached-node": node,
                "rds.csi.srvlab.io/attached-at": "2024-01-02T03:04:05.123456Z",
            });
            // As csi-attacher leaves it: the adoption pass reads these.
            emu.insert_raw(
                "volumeattachments",
                json!({"apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment",
                       "metadata": {"name": format!("csi-{i:064x}")},
                       "spec": {"attacher": DRIVER, "nodeName": node, "source": {"persistentVolumeName": name}},
                       "status": {"attached": true}}),
            );
        }
        emu.insert_raw("persistentvolumes", pv);
    }
    let kc = emu
        .write_kubeconfig(
            &dir.join(format!("kc-{n}-{}", emu.addr().port()))
                .tap_mkdir(),
        )
        .unwrap();
    (emu, kc)
}

/// The `i`th PV's name, shaped as the provisioner names them.
fn pvc_name(i: usize) -> String {
    format!("pvc-00000000-0000-4000-8000-{i:012}")
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

fn rss_kb(pid: u32) -> u64 {
    rds_bench::status_kb(&pid.to_string(), "VmRSS:")
}

fn hwm_kb(pid: u32) -> u64 {
    rds_bench::status_kb(&pid.to_string(), "VmHWM:")
}

/// CPU time (user + system) process `pid` has used, from /proc (10 ms
/// ticks).
fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the parenthesised name: utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    f.get(11)
        .zip(f.get(12))
        .map_or(0.0, |(u, s)| (u + s) as f64 * 10.0)
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

/// A fresh RDS emulator (over HTTPS, a pool too large to fill) and the
/// controller at `bin` pointed at it, with `flags` besides; the emulator,
/// the credentials directory and the controller.
fn on_rds(
    bin: &Path,
    dir: &Path,
    tag: &str,
    flags: &[String],
) -> (rds_emulator::Emulator, PathBuf, Controller) {
    let rds = rds_emulator::Emulator::start(rds_emulator::Options {
        pool_bytes: 1 << 60,
        ..Default::default()
    })
    .unwrap();
    let creds = rds
        .write_credentials(&dir.join(format!("rds-creds-{tag}")))
        .unwrap();
    let mut extra = vec![
        "--rds-url".to_string(),
        rds.url(),
        "--rds-credentials-dir".into(),
        creds.display().to_string(),
    ];
    extra.extend_from_slice(flags);
    let (c, _) = start_controller_with(bin, dir, None, tag, &extra);
    (rds, creds, c)
}

/// The RDS requests `f` makes through the controller, less the background
/// health checks (look-ups by mount point) and monitoring polls.
fn requests_made(rds: &rds_emulator::Emulator, f: &dyn Fn()) -> usize {
    rds.clear_requests();
    f();
    rds.requests()
        .iter()
        .filter(|r| {
            !r.query.contains("mount-point=")
                && r.path != "/rest/system/health"
                && r.path != "/rest/disk/monitor-traffic"
        })
        .count()
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
        // Each controller a pod of its own (its Lease identity).
        .env("POD_NAME", tag)
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

/// Two leader-elected replicas against one API server: a Publish served by
/// the replica that did not make the PV's last change, against one served
/// by the replica that did (its map current). Both decide on the PV; the
/// figures show what a stale map costs: nothing, or more requests.
fn ha_path(dir: &Path, bin: &Path) {
    let samples = 300;
    let (emu, kc) = seeded(dir, 2 * samples + 10, false);
    let election: Vec<String> = [
        "--leader-election",
        "--leader-election-namespace",
        "default",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (a, _) = start_controller_with(bin, dir, Some(&kc), "ha-a", &election);
    let (b, _) = start_controller_with(bin, dir, Some(&kc), "ha-b", &election);
    let ((_, ca), (_, cb)) = (clients(&a.socket), clients(&b.socket));
    let opt = || CallOption::default().timeout(Duration::from_secs(10));
    let unpublish = |c: &csi_grpc::ControllerClient, v: &str| {
        let mut r = csi::ControllerUnpublishVolumeRequest::new();
        r.set_volume_id(v.into());
        r.set_node_id("node-1".into());
        c.controller_unpublish_volume_opt(&r, opt()).unwrap();
    };
    let (mut same, mut other) = (Vec::new(), Vec::new());
    let (mut same_requests, mut other_requests) = (0, 0);
    for i in 0..samples {
        let v = pvc_name(2 * i);
        // A makes the last change; then A publishes again, then B does.
        for (client, lat, requests) in [
            (&ca, &mut same, &mut same_requests),
            (&cb, &mut other, &mut other_requests),
        ] {
            ca.controller_publish_volume_opt(&publish_request(&v, "node-1"), opt())
                .unwrap();
            unpublish(&ca, &v);
            emu.clear_requests();
            let t = Instant::now();
            client
                .controller_publish_volume_opt(&publish_request(&v, "node-1"), opt())
                .unwrap();
            lat.push(t.elapsed());
            *requests += emu.requests().len();
            unpublish(client, &v);
        }
    }
    println!("| measure | the replica that made the last change | the other |");
    println!("|---|---|---|");
    println!(
        "| Publish p50 / p99 | {} / {} µs | {} / {} µs |",
        percentile(&mut same, 0.5).as_micros(),
        percentile(&mut same, 0.99).as_micros(),
        percentile(&mut other, 0.5).as_micros(),
        percentile(&mut other, 0.99).as_micros()
    );
    println!(
        "| API requests per Publish | {:.2} | {:.2} |",
        same_requests as f64 / samples as f64,
        other_requests as f64 / samples as f64
    );
    drop((a, b));
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
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let (c, _) = start_controller_with(
        bin,
        dir,
        Some(&kc),
        "publish",
        &["--metrics-address".into(), metrics_addr.clone()],
    );
    let (id, ctl) = clients(&c.socket);
    let opt = || CallOption::default().timeout(Duration::from_secs(10));
    let vol = |i: usize| pvc_name(2 * i);
    let mut probe = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        id.probe_opt(&csi::ProbeRequest::new(), opt()).unwrap();
        probe.push(t.elapsed());
    }
    let mut hop = Vec::with_capacity(samples);
    ctl.controller_publish_volume_opt(&publish_request(&vol(0), "node-1"), opt())
        .unwrap();

    emu.clear_requests();
    ctl.controller_publish_volume_opt(&publish_request(&vol(1), "node-1"), opt())
        .unwrap();
    let per_publish = emu.requests().len();

    // The hop of a pooled call that does no I/O (one refused by validation).
    for _ in 0..samples {
        let t = Instant::now();
        noop_publish_call(&id, &ctl);
        hop.push(t.elapsed());
    }
    let before = scrape(&metrics_addr);
    let mut lat = Vec::with_capacity(samples);
    for i in 2..samples + 2 {
        let t = Instant::now();
        ctl.controller_publish_volume_opt(&publish_request(&vol(i), "node-1"), opt())
            .unwrap();
        lat.push(t.elapsed());
    }
    let after = scrape(&metrics_addr);
    // Measured inside the controller: from receiving each Publish (on
    // gRPC's thread) to answering it, minus its time in API requests.
    let delta =
        |k: &str| after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0);
    let calls = delta("rds_csi_operation_duration_seconds_count{rpc=\"ControllerPublishVolume\"}");
    let in_call = delta("rds_csi_operation_duration_seconds_sum{rpc=\"ControllerPublishVolume\"}");
    let in_api = delta("rds_csi_kube_request_duration_seconds_sum{verb=\"get\"}")
        + delta("rds_csi_kube_request_duration_seconds_sum{verb=\"update\"}");
    let own_mean_us = (in_call - in_api) / calls * 1e6;
    // Of the own work: from receipt to a worker starting the call.
    let waited_us =
        delta("rds_csi_worker_wait_seconds_sum{rpc=\"ControllerPublishVolume\"}") / calls * 1e6;
    let call_mean_us = in_call / calls * 1e6;

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
        let name = pvc_name(2 * i + 1);
        let t = Instant::now();
        let mut pv = client.get_pv(&name).unwrap();
        get.push(t.elapsed());
        pv.annotations_mut().insert("touched".into(), json!("yes"));
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
                    let v = pvc_name(2 * (base + t * per_thread + k));
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
    let hop50 = percentile(&mut hop, 0.5);
    println!(
        "| Probe p50 (the gRPC round trip, answered on the completion-queue thread) | {} µs |",
        probe50.as_micros()
    );
    println!(
        "| Publish without I/O p50 (the round trip plus the hand-off to a worker) | {} µs |",
        hop50.as_micros()
    );
    println!(
        "| in the controller (its metrics, mean over the {samples} Publishes): receipt → answer / minus its two API requests | {call_mean_us:.0} / **{own_mean_us:.0}** µs |"
    );
    println!(
        "| of that own work: receipt → a worker starting it / in the worker (means) | {waited_us:.0} / {:.0} µs |",
        own_mean_us - waited_us
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
        ..Default::default()
    })
    .unwrap();
    for i in 0..o.held {
        let name = pvc_name(i);
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

    for &n in &o.exec_pvs {
        let (emu, kc) = seeded(dir, n, true);
        let runs: Vec<[f64; 3]> = (0..o.runs.max(3))
            .map(|i| {
                let (c, t) = start_controller(&bin, dir, Some(&kc), &format!("exec{n}-{i}"));
                let pid = c.child.id();
                [
                    t.as_secs_f64() * 1000.0,
                    cpu_ms(pid),
                    hwm_kb(pid) as f64 / 1024.0,
                ]
            })
            .collect();
        let col = |i: usize| median(&mut runs.iter().map(|r| r[i]).collect::<Vec<_>>());
        let (wall, cpu, peak) = (col(0), col(1), col(2));
        println!(
            "| exec → Probe ready, {n} PVs, {} attached, as many VolumeAttachments (median) | {wall:.0} ms (controller CPU {cpu:.0} ms), peak RSS {peak:.1} MiB |",
            n / 4,
        );
        // The same start under the default client-side rate limit, as an
        // operator runs it (the rows above run with `--kube-api-qps 0`).
        if Some(&n) == o.exec_pvs.iter().max() {
            let defaults = [
                "--kube-api-qps".to_string(),
                rds_csi_controller::kube::DEFAULT_QPS.to_string(),
            ];
            let mut walls: Vec<f64> = (0..o.runs.max(3))
                .map(|i| {
                    let tag = format!("exec{n}-qps-{i}");
                    let (_c, t) = start_controller_with(&bin, dir, Some(&kc), &tag, &defaults);
                    t.as_secs_f64() * 1000.0
                })
                .collect();
            println!(
                "| exec → Probe ready, {n} PVs, default `--kube-api-qps` ({}) (median) | {:.0} ms |",
                rds_csi_controller::kube::DEFAULT_QPS,
                median(&mut walls)
            );
        }
        drop(emu);
    }
}

/// CreateVolume over the socket against the RDS emulator's own add, the
/// RDS requests each lifecycle call makes, and the controller's RSS when
/// it lists `volumes` volumes.
fn volume_path(dir: &Path, bin: &Path, volumes: usize) {
    let samples = 500;
    let (rds, creds, c) = on_rds(bin, dir, "volumes", &[]);
    let (_, ctl) = clients(&c.socket);
    let opt = || CallOption::default().timeout(Duration::from_secs(10));
    let create = |name: &str| snapshots::create(name, None);
    ctl.create_volume_opt(&create("pvc-warm"), opt()).unwrap();

    let count = |f: &dyn Fn()| requests_made(&rds, f);
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
        observer: None,
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
                comment: String::new(),
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

/// The median of `v`'s values of `key`.
fn median_of(v: &[Value], key: &str) -> f64 {
    let mut x: Vec<f64> = v.iter().map(|r| r[key].as_f64().unwrap()).collect();
    median(&mut x)
}

/// Rebuild contenders, each its own small binary and process, against a
/// page server (another process) that serves pre-rendered pages.
fn rebuild(dir: &Path, o: &BenchOpts) {
    let bins = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let names = ["ours", "ours-shipped", "kube-rs", "naive", "floor"];
    println!("| PVs | contender | client CPU ms | wall ms | RSS before first request MiB | peak − that MiB | CPU vs kube-rs | memory vs kube-rs | CPU vs floor |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for &n in &o.sizes {
        let pages = dir.join(format!("pages-{n}"));
        std::fs::create_dir_all(&pages).unwrap();
        let mut server = Command::new(bins.join("rds-bench-pages"))
            .args(["--pvs", &n.to_string(), "--dir", pages.to_str().unwrap()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut ready = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(server.stdout.take().unwrap()),
            &mut ready,
        )
        .unwrap();
        assert_eq!(ready.trim(), "ready");
        let mut runs: HashMap<&str, Vec<Value>> = HashMap::new();
        // Round robin, so drift on the machine touches every contender alike.
        for _ in 0..o.runs {
            for name in names {
                let out = Command::new(bins.join(format!("rebuild-{name}")))
                    .arg(&pages)
                    .stderr(Stdio::inherit())
                    .output()
                    .unwrap();
                assert!(out.status.success(), "rebuild-{name} failed");
                let v: Value = serde_json::from_slice(&out.stdout).unwrap();
                let want = if name == "floor" {
                    n.div_ceil(500)
                } else {
                    n / 4
                };
                assert_eq!(v["recovered"].as_u64().unwrap() as usize, want, "{name}");
                runs.entry(name).or_default().push(v);
            }
        }
        let _ = server.kill();
        let _ = server.wait();
        let stat = |name: &str| {
            let r = &runs[name];
            let (cpu, wall) = (median_of(r, "cpu_ms"), median_of(r, "wall_ms"));
            let base = median_of(r, "baseline_kb") / 1024.0;
            let grew: Vec<Value> = r
                .iter()
                .map(|x| json!(x["peak_kb"].as_f64().unwrap() - x["baseline_kb"].as_f64().unwrap()))
                .collect();
            let grew = grew.iter().map(|g| g.as_f64().unwrap()).collect::<Vec<_>>();
            let grew = median(&mut grew.clone()) / 1024.0;
            (cpu, wall, base, grew)
        };
        let (kcpu, _, _, kgrew) = stat("kube-rs");
        let (fcpu, _, _, _) = stat("floor");
        for name in names {
            let (cpu, wall, base, grew) = stat(name);
            println!(
                "| {n} | {name} | {cpu:.1} | {wall:.1} | {base:.1} | {grew:.1} | {:.2} | {:.2} | {:.2} |",
                cpu / kcpu,
                grew / kgrew,
                cpu / fcpu
            );
        }
    }
}

/// Round trips of `call` from `clients` threads, `per_client` each: p50, p99.
fn round_trips(
    socket: &Path,
    clients: usize,
    per_client: usize,
    call: fn(&csi_grpc::IdentityClient, &csi_grpc::ControllerClient),
) -> (Duration, Duration) {
    let barrier = Arc::new(std::sync::Barrier::new(clients));
    let mut all: Vec<Duration> = (0..clients)
        .map(|_| {
            let (socket, barrier) = (socket.to_path_buf(), barrier.clone());
            std::thread::spawn(move || {
                let (id, ctl) = clients_of(&socket);
                for _ in 0..50 {
                    call(&id, &ctl);
                }
                barrier.wait();
                (0..per_client)
                    .map(|_| {
                        let t = Instant::now();
                        call(&id, &ctl);
                        t.elapsed()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    (percentile(&mut all, 0.5), percentile(&mut all, 0.99))
}

/// A client of its own (own channel) for each caller thread.
fn clients_of(socket: &Path) -> (csi_grpc::IdentityClient, csi_grpc::ControllerClient) {
    clients(socket)
}

fn probe_call(id: &csi_grpc::IdentityClient, _: &csi_grpc::ControllerClient) {
    id.probe_opt(
        &csi::ProbeRequest::new(),
        CallOption::default().timeout(Duration::from_secs(10)),
    )
    .unwrap();
}

/// A Publish answered without any I/O: the floor server answers every
/// Publish at once; the controller refuses one without a node (validation,
/// before any API call), after the same hand-off to a worker as any call.
fn noop_publish_call(_: &csi_grpc::IdentityClient, ctl: &csi_grpc::ControllerClient) {
    let r = ctl.controller_publish_volume_opt(
        &publish_request("pvc-hop", ""),
        CallOption::default().timeout(Duration::from_secs(10)),
    );
    match r {
        Ok(_) => {}
        Err(grpcio::Error::RpcFailure(s))
            if s.code() == grpcio::RpcStatusCode::INVALID_ARGUMENT => {}
        Err(e) => panic!("publish: {e:?}"),
    }
}

/// The gRPC hop: our controller (standalone: no API behind it) against a
/// bare grpcio server answering on its completion-queue thread.
fn hop(dir: &Path, bin: &Path, runs: usize) {
    let bins = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let floor_sock = dir.join("floor.sock");
    let mut floor = Command::new(bins.join("grpc-floor"))
        .arg(&floor_sock)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(floor.stdout.take().unwrap()),
        &mut ready,
    )
    .unwrap();
    let (ours, _) = start_controller(bin, dir, None, "hop");
    println!(
        "| call | clients | bare grpcio p50 / p99 µs | ours p50 / p99 µs | ours / bare at p50 |"
    );
    println!("|---|---|---|---|---|");
    type Call = fn(&csi_grpc::IdentityClient, &csi_grpc::ControllerClient);
    let calls: [(&str, Call); 2] = [
        ("Probe", probe_call),
        ("Publish, no I/O", noop_publish_call),
    ];
    for (label, call) in calls {
        for clients in [1usize, 16] {
            let per = if clients == 1 { 2000 } else { 300 };
            let mut f = (Vec::new(), Vec::new());
            let mut u = (Vec::new(), Vec::new());
            for _ in 0..runs {
                let (a, b) = round_trips(&floor_sock, clients, per, call);
                f.0.push(a.as_secs_f64() * 1e6);
                f.1.push(b.as_secs_f64() * 1e6);
                let (a, b) = round_trips(&ours.socket, clients, per, call);
                u.0.push(a.as_secs_f64() * 1e6);
                u.1.push(b.as_secs_f64() * 1e6);
            }
            let (f50, f99, u50, u99) = (
                median(&mut f.0),
                median(&mut f.1),
                median(&mut u.0),
                median(&mut u.1),
            );
            println!(
                "| {label} | {clients} | {f50:.0} / {f99:.0} | {u50:.0} / {u99:.0} | {:.2} |",
                u50 / f50
            );
        }
    }
    let _ = floor.kill();
    let _ = floor.wait();
}

/// The controller's `/metrics`, sample name with labels → value.
fn scrape(addr: &str) -> HashMap<String, f64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}
