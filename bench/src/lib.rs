//! What every benchmark process measures about itself, and the PV list
//! pages the rebuild contenders read.

use std::time::Duration;

/// This process's CPU time so far (user + system), from `getrusage`.
pub fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    assert_eq!(rc, 0, "getrusage");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// A `kB` field of `/proc/<pid>/status` (`self` for this process).
pub fn status_kb(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap()
}

/// Resident memory now, KiB.
pub fn rss_kb() -> u64 {
    status_kb("self", "VmRSS:")
}

/// Peak resident memory, KiB.
pub fn hwm_kb() -> u64 {
    status_kb("self", "VmHWM:")
}

/// One rebuild contender's run, measured from just before its first
/// request: what it prints as its only line of output.
pub struct Run {
    baseline_kb: u64,
    cpu: Duration,
    wall: std::time::Instant,
}

impl Run {
    /// Call when everything up to the first request is ready.
    pub fn start() -> Run {
        Run {
            baseline_kb: rss_kb(),
            cpu: cpu_time(),
            wall: std::time::Instant::now(),
        }
    }

    /// Prints the JSON line the harness reads.
    pub fn finish(self, recovered: usize) {
        let wall = self.wall.elapsed();
        let cpu = cpu_time() - self.cpu;
        println!(
            "{{\"cpu_ms\":{:.3},\"wall_ms\":{:.3},\"baseline_kb\":{},\"peak_kb\":{},\"recovered\":{recovered}}}",
            cpu.as_secs_f64() * 1000.0,
            wall.as_secs_f64() * 1000.0,
            self.baseline_kb,
            hwm_kb()
        );
    }
}

/// The arguments every rebuild contender takes: the page server's URL, its
/// CA file, and the bearer token.
pub struct Target {
    pub url: String,
    pub ca_pem: String,
    pub kubeconfig: std::path::PathBuf,
}

impl Target {
    /// From `<dir>` (written by `rds-bench-pages`): `url`, `ca.crt`, `kubeconfig`.
    pub fn from_args() -> Target {
        let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("usage: CONTENDER DIR"));
        Target {
            url: std::fs::read_to_string(dir.join("url"))
                .unwrap()
                .trim()
                .to_string(),
            ca_pem: std::fs::read_to_string(dir.join("ca.crt")).unwrap(),
            kubeconfig: dir.join("kubeconfig"),
        }
    }
}

/// The driver whose PVs are ours, and the annotation a rebuild recovers.
pub const DRIVER: &str = "rds.csi.srvlab.io";
pub const ATTACHED_NODE: &str = "rds.csi.srvlab.io/attached-node";
pub const TOKEN: &str = "bench-token";
/// Items per page, for every contender.
pub const PAGE: usize = 500;

/// A page's query string `continue` value, percent-encoded.
pub fn encode_continue(token: &str) -> String {
    token
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A ureq agent trusting the page server's CA (what the floor and naive
/// contenders fetch with).
pub fn agent(ca_pem: &str) -> ureq::Agent {
    let certs: Vec<_> = ureq::tls::parse_pem(ca_pem.as_bytes())
        .filter_map(|i| match i {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
        .build();
    ureq::Agent::config_builder().tls_config(tls).build().into()
}

/// One page of the PV list: after `cont` (empty: the first).
pub fn fetch_page(agent: &ureq::Agent, url: &str, cont: &str) -> Vec<u8> {
    let mut url = format!("{url}/api/v1/persistentvolumes?limit={PAGE}");
    if !cont.is_empty() {
        url.push_str("&continue=");
        url.push_str(&encode_continue(cont));
    }
    agent
        .get(&url)
        .header("Authorization", format!("Bearer {TOKEN}"))
        .call()
        .unwrap()
        .into_body()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .unwrap()
}

/// What the kube-rs and naive contenders keep of one decoded PV: its
/// attached node under its volume handle, when it is ours and attached.
pub fn keep_attached(
    pv: &k8s_openapi::api::core::v1::PersistentVolume,
    map: &mut std::collections::HashMap<String, String>,
) {
    let Some(csi) = pv.spec.as_ref().and_then(|s| s.csi.as_ref()) else {
        return;
    };
    if csi.driver != DRIVER {
        return;
    }
    if let Some(node) = pv
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ATTACHED_NODE))
    {
        map.insert(csi.volume_handle.clone(), node.clone());
    }
}

/// The contender "ours" (`AttachmentManager::rebuild`) against the page
/// server named on the command line; `rebuild-ours` and
/// `rebuild-ours-shipped` differ only in their allocator.
pub fn rebuild_ours() {
    use rds_csi_controller::{attachment::AttachmentManager, kube};
    let t = Target::from_args();
    let cfg = kube::Config::from_kubeconfig(&t.kubeconfig).unwrap();
    let opts = kube::ClientOptions {
        qps: 0.0,
        ..Default::default()
    };
    let manager = AttachmentManager::new(kube::Client::new(&cfg, opts).unwrap(), DRIVER);
    let run = Run::start();
    let recovered = manager.rebuild().unwrap().recovered;
    run.finish(recovered);
}
