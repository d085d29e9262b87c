//! Prometheus metrics: a fixed set of families with bounded label values
//! (RPC names, gRPC codes, verbs, resources, methods, the configured RDS
//! servers' names; never volume IDs or node names), rendered in the text
//! exposition format 0.0.4.
//!
//! Recording takes one short lock per family (a map update, no I/O), so
//! it never slows a call noticeably; rendering copies the values out.

mod monitor;
mod serve;

pub use monitor::{volume_labels, Readings};
pub use serve::{
    parse_request_line, serve, Answer, MetricsServer, RequestError, Route, ServeOptions,
};

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// Upper bounds (seconds) of the duration histograms: from a cached call
/// (sub-millisecond) to a request at its time limit.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The most labels a family has.
const MAX_LABELS: usize = 3;

/// One combination of label values, unused places empty: one key type for
/// every family, so that each kind of family is compiled once.
type Key = [&'static str; MAX_LABELS];

fn key(values: &[&'static str]) -> Key {
    let mut k = [""; MAX_LABELS];
    k[..values.len()].copy_from_slice(values);
    k
}

/// A counter or gauge per combination of label values: one type for both
/// (a counter's value is a whole number of `f64`, written the same way).
struct LabelledVec {
    name: &'static str,
    help: &'static str,
    /// `counter` or `gauge`.
    kind: &'static str,
    labels: &'static [&'static str],
    /// Scope: one update or one copy for rendering.
    values: Mutex<BTreeMap<Key, f64>>,
}

impl LabelledVec {
    const fn counter(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Self {
        LabelledVec::new(name, help, "counter", labels)
    }

    const fn gauge(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Self {
        LabelledVec::new(name, help, "gauge", labels)
    }

    const fn new(
        name: &'static str,
        help: &'static str,
        kind: &'static str,
        labels: &'static [&'static str],
    ) -> Self {
        LabelledVec {
            name,
            help,
            kind,
            labels,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    /// A counter's step.
    fn inc(&self, values: &[&'static str]) {
        self.add(values, 1.0);
    }

    fn add(&self, values: &[&'static str], n: f64) {
        *self
            .values
            .lock()
            .expect("metrics lock poisoned")
            .entry(key(values))
            .or_default() += n;
    }

    /// A gauge's value.
    fn set(&self, values: &[&'static str], v: f64) {
        self.values
            .lock()
            .expect("metrics lock poisoned")
            .insert(key(values), v);
    }

    fn clear(&self) {
        self.values.lock().expect("metrics lock poisoned").clear();
    }

    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, self.kind);
        let values = self.values.lock().expect("metrics lock poisoned").clone();
        for (key, v) in values {
            let _ = writeln!(
                out,
                "{}{} {v}",
                self.name,
                label_set(self.labels, &key, None)
            );
        }
    }
}

/// A histogram per combination of label values.
struct HistogramVec {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    /// Scope: one observation or one copy for rendering.
    values: Mutex<BTreeMap<Key, Histogram>>,
}

#[derive(Clone, Default)]
struct Histogram {
    /// Per bucket (not cumulative); the last one is +Inf.
    counts: [u64; BUCKETS.len() + 1],
    sum: f64,
}

impl HistogramVec {
    const fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        HistogramVec {
            name,
            help,
            labels,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    fn observe(&self, values: &[&'static str], took: Duration) {
        let secs = took.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        let mut map = self.values.lock().expect("metrics lock poisoned");
        let h = map.entry(key(values)).or_default();
        h.counts[bucket] += 1;
        h.sum += secs;
    }

    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, "histogram");
        let values = self.values.lock().expect("metrics lock poisoned").clone();
        for (key, h) in values {
            let mut cumulative = 0;
            for (i, count) in h.counts.iter().enumerate() {
                cumulative += count;
                let le = BUCKETS.get(i).map_or("+Inf".to_string(), |b| b.to_string());
                let _ = writeln!(
                    out,
                    "{}_bucket{} {cumulative}",
                    self.name,
                    label_set(self.labels, &key, Some(&le))
                );
            }
            let labels = label_set(self.labels, &key, None);
            let _ = writeln!(out, "{}_sum{labels} {}", self.name, h.sum);
            let _ = writeln!(out, "{}_count{labels} {cumulative}", self.name);
        }
    }
}

/// `name` as a label value that lives as long as the process: a
/// configured server's name, made once per distinct name (the set is
/// bounded by the configuration).
pub fn label(name: &str) -> &'static str {
    static NAMES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut names = NAMES.lock().expect("metrics lock poisoned");
    if let Some(known) = names.iter().find(|n| **n == name) {
        return known;
    }
    let made: &'static str = Box::leak(name.to_string().into_boxed_str());
    names.push(made);
    made
}

/// A single counter or gauge held in an atomic (`f64` bits for floats).
struct Scalar {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    bits: AtomicU64,
}

impl Scalar {
    const fn new(name: &'static str, help: &'static str, kind: &'static str) -> Self {
        Scalar {
            name,
            help,
            kind,
            bits: AtomicU64::new(0),
        }
    }

    fn get(&self) -> f64 {
        f64::from_bits(self.bits.load(Ordering::Relaxed))
    }

    fn set(&self, v: f64) {
        self.bits.store(v.to_bits(), Ordering::Relaxed);
    }

    fn add(&self, v: f64) {
        let _ = self
            .bits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some((f64::from_bits(b) + v).to_bits())
            });
    }

    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, self.kind);
        let _ = writeln!(out, "{} {}", self.name, self.get());
    }
}

/// Values read from their owners at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// `None`: not exported (a replica that does not hold the Lease, whose
    /// map may be behind the other's writes; see `lease`).
    pub attachments: Option<usize>,
    pub migrations_active: Option<usize>,
    pub queue_depth: usize,
    /// Whether this replica does the background work (see `lease`).
    pub leader: bool,
}

/// Every metric the controller exports.
pub struct Metrics {
    operations: LabelledVec,
    operation_duration: HistogramVec,
    worker_wait: HistogramVec,
    rejected: LabelledVec,
    attachment_conflicts: Scalar,
    stale_cleared: Scalar,
    reconciled: LabelledVec,
    disagreements: LabelledVec,
    parameter_warnings: LabelledVec,
    migrations: LabelledVec,
    migrations_started: Scalar,
    kube_requests: LabelledVec,
    kube_duration: HistogramVec,
    kube_conflicts: Scalar,
    kube_rate_limited: Scalar,
    rds_requests: LabelledVec,
    rds_duration: HistogramVec,
    rds_up: LabelledVec,
    pool_free: LabelledVec,
    pool_size: LabelledVec,
    pool_used: LabelledVec,
    /// Scope: one server's readings replaced, or all copied for rendering.
    monitor: Mutex<BTreeMap<&'static str, Arc<Readings>>>,
    monitor_skipped: LabelledVec,
    orphans: LabelledVec,
    orphan_bytes: LabelledVec,
    rebuild_seconds: Scalar,
    rebuild_pvs: Scalar,
    events_dropped: Scalar,
    start_time: f64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let start_time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        Metrics {
            operations: LabelledVec::counter(
                "rds_csi_operations_total",
                "CSI calls answered, by RPC and gRPC code.",
                &["rpc", "code"],
            ),
            operation_duration: HistogramVec::new(
                "rds_csi_operation_duration_seconds",
                "Time from receiving a CSI call to answering it.",
                &["rpc"],
            ),
            worker_wait: HistogramVec::new(
                "rds_csi_worker_wait_seconds",
                "Time from receiving a CSI call to a worker starting it, for calls a worker ran.",
                &["rpc"],
            ),
            rejected: LabelledVec::counter(
                "rds_csi_rejected_total",
                "CSI calls answered without running: queue full, deadline passed while queued, shutting down.",
                &["reason"],
            ),
            attachment_conflicts: Scalar::new(
                "rds_csi_attachment_conflicts_total",
                "Publishes refused because another node holds the volume.",
                "counter",
            ),
            stale_cleared: Scalar::new(
                "rds_csi_attachment_stale_cleared_total",
                "Attachments of deleted nodes cleared.",
                "counter",
            ),
            reconciled: LabelledVec::counter(
                "rds_csi_reconcile_changes_total",
                "Attachment records changed by reconciliation with the VolumeAttachments, by change (cleared, adopted, rewritten).",
                &["change"],
            ),
            disagreements: LabelledVec::counter(
                "rds_csi_reconcile_disagreements_total",
                "Attachment records left as they are although VolumeAttachments disagree, by kind (several_attached, deleting); counted per pass.",
                &["kind"],
            ),
            parameter_warnings: LabelledVec::counter(
                "rds_csi_parameter_warnings_total",
                "StorageClass parameters a CreateVolume accepted with a warning, by key: the Go driver's keys this driver does not use, values adjusted as the Go driver adjusted them.",
                &["key"],
            ),
            migrations: LabelledVec::counter(
                "rds_csi_migrations_total",
                "Live migrations ended, by result (completed: the source detached; failed: the target detached first).",
                &["result"],
            ),
            migrations_started: Scalar::new(
                "rds_csi_migrations_started_total",
                "Live migrations started: a shared block volume attached to a second node.",
                "counter",
            ),
            kube_requests: LabelledVec::counter(
                "rds_csi_kube_requests_total",
                "Kubernetes API requests, by verb, resource and HTTP code (0: no answer).",
                &["verb", "resource", "code"],
            ),
            kube_duration: HistogramVec::new(
                "rds_csi_kube_request_duration_seconds",
                "Kubernetes API request latency.",
                &["verb"],
            ),
            kube_conflicts: Scalar::new(
                "rds_csi_kube_conflicts_total",
                "Compare-and-set writes of a PV that met a newer version (409).",
                "counter",
            ),
            kube_rate_limited: Scalar::new(
                "rds_csi_kube_rate_limited_seconds_total",
                "Time spent waiting for the client-side rate limiter.",
                "counter",
            ),
            rds_requests: LabelledVec::counter(
                "rds_csi_rds_requests_total",
                "RouterOS REST requests, by RDS server, method and HTTP code (0: no answer).",
                &["server", "method", "code"],
            ),
            rds_duration: HistogramVec::new(
                "rds_csi_rds_request_duration_seconds",
                "RouterOS REST request latency, by RDS server and method.",
                &["server", "method"],
            ),
            rds_up: LabelledVec::gauge(
                "rds_csi_rds_up",
                "1 when the RDS server answered its last health check, else 0.",
                &["server"],
            ),
            orphans: LabelledVec::gauge(
                "rds_csi_orphans",
                "Leaked-disk candidates at the last look, by RDS server and kind (volume, snapshot, file); the Lease holder's only.",
                &["server", "kind"],
            ),
            orphan_bytes: LabelledVec::gauge(
                "rds_csi_orphan_bytes",
                "Bytes of the leaked-disk candidates at the last look, by RDS server and kind; the Lease holder's only.",
                &["server", "kind"],
            ),
            pool_free: LabelledVec::gauge(
                "rds_csi_pool_free_bytes",
                "Free bytes of the RDS server's storage pool at its last health check.",
                &["server"],
            ),
            pool_size: LabelledVec::gauge(
                "rds_hardware_disk_pool_size_bytes",
                "Size in bytes of the RDS server's storage pool at its last health check.",
                &["server"],
            ),
            pool_used: LabelledVec::gauge(
                "rds_hardware_disk_pool_used_bytes",
                "Used bytes of the RDS server's storage pool at its last health check.",
                &["server"],
            ),
            monitor: Mutex::new(BTreeMap::new()),
            monitor_skipped: LabelledVec::counter(
                "rds_csi_rds_monitor_skipped_total",
                "Fields or values of the RDS server's monitoring answers not understood, and skipped.",
                &["server"],
            ),
            rebuild_seconds: Scalar::new(
                "rds_csi_rebuild_seconds",
                "How long the startup rebuild of the attachment map took.",
                "gauge",
            ),
            rebuild_pvs: Scalar::new(
                "rds_csi_rebuild_pvs",
                "PersistentVolumes read by the startup rebuild.",
                "gauge",
            ),
            events_dropped: Scalar::new(
                "rds_csi_events_dropped_total",
                "Kubernetes Events not posted because their queue was full.",
                "counter",
            ),
            start_time,
        }
    }

    /// A CSI call answered with `code` (e.g. `OK`, `NOT_FOUND`).
    pub fn operation(&self, rpc: &'static str, code: &'static str, took: Duration) {
        self.operations.inc(&[rpc, code]);
        self.operation_duration.observe(&[rpc], took);
    }

    /// A worker took a CSI call `waited` after it was received.
    pub fn worker_wait(&self, rpc: &'static str, waited: Duration) {
        self.worker_wait.observe(&[rpc], waited);
    }

    /// A CSI call answered without running.
    pub fn rejected(&self, reason: &'static str) {
        self.rejected.inc(&[reason]);
    }

    pub fn attachment_conflict(&self) {
        self.attachment_conflicts.add(1.0);
    }

    /// An Event not posted: its queue was full.
    pub fn event_dropped(&self) {
        self.events_dropped.add(1.0);
    }

    /// A live migration began.
    pub fn migration_started(&self) {
        self.migrations_started.add(1.0);
    }

    /// A live migration ended: `completed` or `failed`.
    pub fn migration_ended(&self, result: &'static str) {
        self.migrations.inc(&[result]);
    }

    /// An attachment of a deleted node replaced.
    pub fn stale_cleared(&self) {
        self.stale_cleared.add(1.0);
    }

    /// An attachment record changed by reconciliation: `cleared`,
    /// `adopted` or `rewritten`.
    pub fn reconciled(&self, change: &'static str) {
        self.reconciled.inc(&[change]);
    }

    /// A record left as it is although VolumeAttachments disagree.
    pub fn disagreement(&self, kind: &'static str) {
        self.disagreements.inc(&[kind]);
    }

    /// A StorageClass parameter accepted with a warning (`key` is one of a
    /// fixed list, so the label stays bounded).
    pub fn parameter_warning(&self, key: &'static str) {
        self.parameter_warnings.inc(&[key]);
    }

    /// One Kubernetes request; `code` 0 when no answer was read.
    pub fn kube_request(
        &self,
        verb: &'static str,
        resource: &'static str,
        code: u16,
        took: Duration,
    ) {
        self.kube_requests.inc(&[verb, resource, code_label(code)]);
        self.kube_duration.observe(&[verb], took);
        if code == 409 {
            self.kube_conflicts.add(1.0);
        }
    }

    pub fn kube_rate_limited(&self, waited: Duration) {
        if !waited.is_zero() {
            self.kube_rate_limited.add(waited.as_secs_f64());
        }
    }

    /// One RouterOS request to `server` (see [`label`]); `code` 0 when no
    /// answer was read.
    pub fn rds_request(
        &self,
        server: &'static str,
        method: &'static str,
        code: u16,
        took: Duration,
    ) {
        self.rds_requests.inc(&[server, method, code_label(code)]);
        self.rds_duration.observe(&[server, method], took);
    }

    /// The result of a health check of `server`, with its pool's free
    /// and whole size in bytes when read.
    pub fn rds_health(
        &self,
        server: &'static str,
        up: bool,
        pool_free: Option<u64>,
        pool_size: Option<u64>,
    ) {
        self.rds_up.set(&[server], if up { 1.0 } else { 0.0 });
        if let Some(free) = pool_free {
            self.pool_free.set(&[server], free as f64);
        }
        if let Some(size) = pool_size {
            self.pool_size.set(&[server], size as f64);
            if let Some(free) = pool_free.filter(|f| *f <= size) {
                self.pool_used.set(&[server], (size - free) as f64);
            }
        }
    }

    /// A good monitoring poll of `server` (see `crate::monitor`), in place
    /// of its last; `skipped`: what it did not understand.
    pub fn monitored(&self, server: &'static str, readings: Readings, skipped: u32) {
        self.monitor
            .lock()
            .expect("metrics lock poisoned")
            .insert(server, Arc::new(readings));
        if skipped > 0 {
            self.monitor_skipped.add(&[server], skipped as f64);
        }
    }

    /// A failed monitoring poll of `server`: the last good one's values
    /// stay, with their time; a server never read yet gets the time 0, so
    /// that its staleness shows (and alerts) as any other's.
    pub fn monitor_failed(&self, server: &'static str) {
        self.monitor
            .lock()
            .expect("metrics lock poisoned")
            .entry(server)
            .or_default();
    }

    /// No current poll (this replica does not hold the Lease): the
    /// monitoring families are absent rather than stale.
    pub fn no_monitoring(&self) {
        self.monitor.lock().expect("metrics lock poisoned").clear();
    }

    /// A look for leaked disks: candidates and bytes per server and kind
    /// (see `crate::orphans::tally`), in place of the last look's.
    pub fn orphans(&self, tally: &[(String, &'static str, usize, u64)]) {
        self.orphans.clear();
        self.orphan_bytes.clear();
        for (server, kind, n, bytes) in tally {
            let labels = [label(server), *kind];
            self.orphans.set(&labels, *n as f64);
            self.orphan_bytes.set(&labels, *bytes as f64);
        }
    }

    /// No current look (this replica does not hold the Lease): the
    /// orphan gauges are absent rather than stale.
    pub fn no_orphans(&self) {
        self.orphans.clear();
        self.orphan_bytes.clear();
    }

    pub fn rebuild(&self, took: Duration, pvs: usize) {
        self.rebuild_seconds.set(took.as_secs_f64());
        self.rebuild_pvs.set(pvs as f64);
    }

    /// The exposition text, with `gauges` read from their owners just now.
    pub fn render(&self, gauges: Gauges) -> String {
        let mut out = String::with_capacity(16 << 10);
        self.operations.render(&mut out);
        self.operation_duration.render(&mut out);
        self.worker_wait.render(&mut out);
        self.rejected.render(&mut out);
        gauge(
            &mut out,
            "rds_csi_worker_queue_depth",
            "CSI calls waiting for a worker.",
            gauges.queue_depth as f64,
        );
        if let Some(n) = gauges.attachments {
            gauge(
                &mut out,
                "rds_csi_attachments",
                "Volumes attached, by the attachment map (the Lease holder's only).",
                n as f64,
            );
        }
        self.attachment_conflicts.render(&mut out);
        self.stale_cleared.render(&mut out);
        self.reconciled.render(&mut out);
        self.disagreements.render(&mut out);
        self.parameter_warnings.render(&mut out);
        if let Some(n) = gauges.migrations_active {
            gauge(
                &mut out,
                "rds_csi_migrations_active",
                "Volumes attached to two nodes for a live migration (the Lease holder's only).",
                n as f64,
            );
        }
        self.migrations.render(&mut out);
        self.migrations_started.render(&mut out);
        self.kube_requests.render(&mut out);
        self.kube_duration.render(&mut out);
        self.kube_conflicts.render(&mut out);
        self.kube_rate_limited.render(&mut out);
        self.rds_requests.render(&mut out);
        self.rds_duration.render(&mut out);
        self.rds_up.render(&mut out);
        gauge(
            &mut out,
            "rds_csi_leader",
            "1 on the replica that holds the controller's Lease (or runs without leader election), else 0.",
            if gauges.leader { 1.0 } else { 0.0 },
        );
        self.pool_free.render(&mut out);
        self.pool_size.render(&mut out);
        self.pool_used.render(&mut out);
        let polled: Vec<_> = {
            let m = self.monitor.lock().expect("metrics lock poisoned");
            m.iter().map(|(s, r)| (*s, r.clone())).collect()
        };
        monitor::render(&mut out, &polled);
        self.monitor_skipped.render(&mut out);
        self.orphans.render(&mut out);
        self.orphan_bytes.render(&mut out);
        self.rebuild_seconds.render(&mut out);
        self.rebuild_pvs.render(&mut out);
        self.events_dropped.render(&mut out);
        process(&mut out, self.start_time);
        out
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, v: f64) {
    header(out, name, help, "gauge");
    let _ = writeln!(out, "{name} {v}");
}

/// `{a="x",b="y"}` (with `le` last for buckets); empty without labels.
fn label_set(names: &[&str], values: &[&str], le: Option<&str>) -> String {
    let mut pairs: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", escape_value(v)))
        .collect();
    if let Some(le) = le {
        pairs.push(format!("le=\"{le}\""));
    }
    if pairs.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", pairs.join(","))
    }
}

/// Label values escape `\`, `"` and newlines.
fn escape_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// HELP text escapes `\` and newlines.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// HTTP codes as label values without allocating: the ones we meet, and
/// their class otherwise.
fn code_label(code: u16) -> &'static str {
    match code {
        0 => "0",
        200 => "200",
        201 => "201",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        409 => "409",
        410 => "410",
        422 => "422",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        _ => match code / 100 {
            1 => "1xx",
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            5 => "5xx",
            _ => "other",
        },
    }
}

/// Process metrics from `/proc/self`: RSS, open fds, threads, start time.
fn process(out: &mut String, start_time: f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
    };
    if let Some(kb) = field("VmRSS:") {
        gauge(
            out,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            kb * 1024.0,
        );
    }
    if let Some(threads) = field("Threads:") {
        gauge(
            out,
            "process_threads",
            "OS threads of the process.",
            threads,
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge(
            out,
            "process_open_fds",
            "Open file descriptors.",
            fds.count() as f64,
        );
    }
    gauge(
        out,
        "process_start_time_seconds",
        "Start time of the process since the Unix epoch in seconds.",
        start_time,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let m = Metrics::new();
        m.operation("Probe", "OK", Duration::from_micros(300));
        m.operation("Probe", "OK", Duration::from_millis(3));
        m.operation(
            "ControllerPublishVolume",
            "NOT_FOUND",
            Duration::from_secs(60),
        );
        let text = m.render(Gauges::default());
        assert!(
            text.contains("rds_csi_operations_total{rpc=\"Probe\",code=\"OK\"} 2\n"),
            "{text}"
        );
        assert!(text.contains(
            "rds_csi_operation_duration_seconds_bucket{rpc=\"Probe\",le=\"0.0005\"} 1\n"
        ));
        assert!(text
            .contains("rds_csi_operation_duration_seconds_bucket{rpc=\"Probe\",le=\"0.005\"} 2\n"));
        assert!(text
            .contains("rds_csi_operation_duration_seconds_bucket{rpc=\"Probe\",le=\"+Inf\"} 2\n"));
        assert!(text.contains("rds_csi_operation_duration_seconds_count{rpc=\"Probe\"} 2\n"));
        assert!(text.contains(
            "rds_csi_operation_duration_seconds_bucket{rpc=\"ControllerPublishVolume\",le=\"30\"} 0\n"
        ));
        assert!(text.contains("# TYPE rds_csi_operation_duration_seconds histogram\n"));
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        assert_eq!(
            label_set(&["a"], &["x\"y\\z\nw"], None),
            "{a=\"x\\\"y\\\\z\\nw\"}"
        );
        assert_eq!(escape_help("a\\b\nc"), "a\\\\b\\nc");
        assert_eq!(code_label(418), "4xx");
        assert_eq!(code_label(307), "3xx");
        assert_eq!(code_label(599), "5xx");
        assert_eq!(code_label(999), "other");
    }
}
