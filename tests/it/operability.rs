//! What an operator sees of a running controller: the metrics a scraper
//! parses, health that follows RDS without killing the process, logs a
//! shipper can read, and a metrics endpoint that hostile clients cannot
//! turn against the CSI calls.

use std::{
    collections::{BTreeMap, HashMap},
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use crate::support::*;
use rds_csi_controller::proto::csi;
use serde_json::Value;

const GIB: i64 = 1 << 30;

struct Setup {
    _dir: TempDir,
    kube: kube_emulator::Emulator,
    rds: rds_emulator::Emulator,
    controller: Controller,
    metrics: SocketAddr,
}

fn setup(extra: &[&str]) -> Setup {
    let dir = TempDir::new("ops");
    let (kube, kc) = emulator(dir.path());
    kube.create("nodes", node("node-a")).unwrap();
    kube.create("nodes", node("node-b")).unwrap();
    let (rds, creds) = rds(dir.path());
    let mut flags = rds_flags(&rds, &creds);
    flags.extend(["--metrics-address".into(), "127.0.0.1:0".into()]);
    flags.extend(extra.iter().map(|s| s.to_string()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let controller = Controller::start(dir.path(), Some(&kc), &flags);
    let metrics = metrics_address(&controller.logs());
    Setup {
        _dir: dir,
        kube,
        rds,
        controller,
        metrics,
    }
}

/// A strict reading of the text exposition format 0.0.4: every sample
/// belongs to a family announced by HELP and TYPE before it, counters end
/// in `_total`, histograms have cumulative buckets ending in +Inf equal to
/// `_count`. Returns sample → value.
fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helped: Vec<String> = Vec::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(!helped.contains(&name.to_string()), "HELP twice for {name}");
            helped.push(name.into());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut p = rest.split(' ');
            let (name, kind) = (p.next().unwrap(), p.next().unwrap());
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(
                helped.last().map(String::as_str) == Some(name),
                "TYPE of {name} not after its HELP"
            );
            if kind == "counter" {
                assert!(
                    name.ends_with("_total"),
                    "counter {name} does not end in _total"
                );
            }
            types.insert(name.into(), kind.into());
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "stray line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':'),
            "bad name {name:?}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).map(String::as_str) == Some("histogram"))
            })
            .unwrap_or(name);
        assert!(
            types.contains_key(family),
            "sample {name} of no announced family"
        );
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{series}");
                for pair in labels[1..labels.len() - 1].split("\",") {
                    let (k, v) = pair
                        .split_once("=\"")
                        .unwrap_or_else(|| panic!("label {pair:?}"));
                    assert!(
                        k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                        "{k}"
                    );
                    assert!(
                        !v.trim_end_matches('"').contains('"') || v.contains("\\\""),
                        "{v}"
                    );
                }
            }
        }
        samples.insert(series.to_string(), value);
    }
    // Histograms: cumulative buckets, +Inf == _count.
    for (family, kind) in &types {
        if kind != "histogram" {
            continue;
        }
        let mut by_series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for (series, v) in samples.range(format!("{family}_bucket")..) {
            let Some(labels) = series.strip_prefix(&format!("{family}_bucket")) else {
                break;
            };
            let le = labels
                .rsplit_once("le=\"")
                .unwrap()
                .1
                .trim_end_matches("\"}");
            let key = labels
                .rsplit_once(",le=")
                .map(|(k, _)| k.to_string())
                .unwrap_or_default();
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            by_series.entry(key).or_default().push((le, *v));
        }
        for (key, mut buckets) in by_series {
            buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
            assert!(
                buckets.windows(2).all(|w| w[0].1 <= w[1].1),
                "{family}{key}: not cumulative"
            );
            let inf = buckets.last().unwrap();
            assert!(inf.0.is_infinite(), "{family}{key}: no +Inf bucket");
            let count_key = format!("{family}_count{key}}}");
            let count_key = if key.is_empty() {
                format!("{family}_count")
            } else {
                count_key
            };
            assert_eq!(samples.get(&count_key), Some(&inf.1), "{count_key}");
        }
    }
    samples
}

#[test]
fn a_scrape_parses_strictly_and_counts_what_happened() {
    let s = setup(&[]);
    let csi = s.controller.csi();
    let v = csi.create("pvc-ops", GIB, &[]).unwrap();
    s.kube
        .create("persistentvolumes", provisioned_pv(&v))
        .unwrap();
    csi.publish("pvc-ops", "node-a").unwrap();
    assert!(csi.publish("pvc-ops", "node-b").is_err());
    assert!(csi.create("", GIB, &[]).is_err());

    let (code, text) = http_get(s.metrics, "/metrics");
    assert_eq!(code, 200);
    let m = parse_exposition(&text);
    let at = |k: &str| {
        *m.get(k)
            .unwrap_or_else(|| panic!("{k} missing from:\n{text}"))
    };
    assert_eq!(
        at(r#"rds_csi_operations_total{rpc="CreateVolume",code="OK"}"#),
        1.0
    );
    assert_eq!(
        at(r#"rds_csi_operations_total{rpc="CreateVolume",code="INVALID_ARGUMENT"}"#),
        1.0
    );
    assert_eq!(
        at(r#"rds_csi_operations_total{rpc="ControllerPublishVolume",code="OK"}"#),
        1.0
    );
    assert_eq!(
        at(r#"rds_csi_operation_duration_seconds_count{rpc="CreateVolume"}"#),
        2.0
    );
    // Both Publishes and both CreateVolumes ran on a worker, each after a wait.
    for rpc in ["CreateVolume", "ControllerPublishVolume"] {
        assert_eq!(
            at(&format!(
                r#"rds_csi_worker_wait_seconds_count{{rpc="{rpc}"}}"#
            )),
            2.0
        );
        assert!(
            at(&format!(
                r#"rds_csi_worker_wait_seconds_sum{{rpc="{rpc}"}}"#
            )) > 0.0
        );
    }
    assert_eq!(at("rds_csi_attachments"), 1.0);
    assert_eq!(at("rds_csi_attachment_conflicts_total"), 1.0);
    assert_eq!(
        at(r#"rds_csi_operations_total{rpc="ControllerPublishVolume",code="FAILED_PRECONDITION"}"#),
        1.0
    );
    assert_eq!(
        at(r#"rds_csi_rds_requests_total{server="default",method="PUT",code="200"}"#),
        1.0
    );
    assert!(
        at(r#"rds_csi_kube_requests_total{verb="list",resource="persistentvolumes",code="200"}"#)
            >= 1.0
    );
    assert!(
        at(r#"rds_csi_kube_requests_total{verb="update",resource="persistentvolumes",code="200"}"#)
            >= 1.0
    );
    assert!(at("process_resident_memory_bytes") > 1e6);
    assert!(at("process_threads") >= 4.0 && at("process_open_fds") >= 3.0);
    assert!(at("rds_csi_rebuild_seconds") > 0.0);
    // Label values are bounded: no volume IDs or node names.
    for unbounded in ["pvc-ops", "node-a", "node-b"] {
        assert!(
            !text.contains(unbounded),
            "{unbounded} appears in the metrics"
        );
    }
    assert_eq!(http_get(s.metrics, "/healthz").0, 200);
    assert_eq!(http_get(s.metrics, "/nothing").0, 404);
}

#[test]
fn a_dead_rds_flips_readyz_but_neither_probe_nor_the_process() {
    let s = setup(&["--rds-unhealthy-after", "1s", "--health-interval", "200ms"]);
    let csi = s.controller.csi();
    let ready = || {
        csi.identity
            .probe_opt(&csi::ProbeRequest::new(), csi.opt())
            .expect("Probe answers, never errors")
            .get_ready()
            .get_value()
    };
    let wait_for = |what: &str, f: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for("readyz", &|| http_get(s.metrics, "/readyz").0 == 200);
    assert!(ready());
    wait_for("the first RDS check", &|| {
        http_get(s.metrics, "/metrics")
            .1
            .contains("\nrds_csi_rds_up{server=\"default\"} 1\n")
    });

    s.rds.set_refusing(true);
    wait_for("readyz not ready", &|| {
        http_get(s.metrics, "/readyz").0 == 503
    });
    let (code, body) = http_get(s.metrics, "/readyz");
    assert_eq!(code, 503);
    assert!(body.contains("RDS"), "{body}");
    // Probe stays ready: the sidecars wait on it at startup, and attaches
    // need no RDS. Calls that need RDS say so themselves, and quickly.
    assert!(ready(), "Probe follows the rebuild, not RDS");
    let started = Instant::now();
    let (code, msg) = csi
        .controller
        .create_volume_opt(
            &create_request("pvc-while-rds-is-down", 1 << 30, &[]),
            csi.opt(),
        )
        .map_err(code_of)
        .unwrap_err();
    assert_eq!(code, grpcio::RpcStatusCode::UNAVAILABLE, "{msg}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // And an attach still works.
    s.kube
        .create("persistentvolumes", pv("vol-up", "vol-up", DRIVER))
        .unwrap();
    csi.publish("vol-up", "node-a").unwrap();
    assert_eq!(
        http_get(s.metrics, "/healthz").0,
        200,
        "liveness stays green"
    );
    assert!(http_get(s.metrics, "/metrics")
        .1
        .contains("\nrds_csi_rds_up{server=\"default\"} 0\n"));
    let mut c = s.controller;
    assert!(
        c.child.try_wait().unwrap().is_none(),
        "the process keeps running"
    );

    s.rds.set_refusing(false);
    assert!(ready());
    wait_for("readyz again", &|| http_get(s.metrics, "/readyz").0 == 200);
    c.kill9();
}

#[test]
fn slow_and_hostile_scrapers_do_not_slow_csi_calls() {
    let s = setup(&[]);
    let csi = s.controller.csi();
    for i in 0..20 {
        let v = format!("pvc-{i:02}");
        s.kube
            .create("persistentvolumes", pv(&v, &v, DRIVER))
            .unwrap();
    }
    let p50 = |from: usize| {
        let mut lat: Vec<Duration> = (from..from + 10)
            .map(|i| {
                let t = Instant::now();
                csi.publish(&format!("pvc-{i:02}"), "node-a").unwrap();
                t.elapsed()
            })
            .collect();
        lat.sort();
        lat[5]
    };
    let quiet = p50(0);
    // Every slot taken by clients that never finish their request, and a
    // crowd more knocking: they get 503 and are closed at once.
    let hogs: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut c = TcpStream::connect(s.metrics).unwrap();
            c.write_all(b"GET /metr").unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let crowd = std::thread::spawn({
        let addr = s.metrics;
        move || {
            (0..200)
                .filter(|_| {
                    let mut c = TcpStream::connect(addr).unwrap();
                    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let mut buf = [0u8; 12];
                    c.read(&mut buf)
                        .is_ok_and(|n| n >= 12 && &buf[9..12] == b"503")
                })
                .count()
        }
    });
    let busy = p50(10);
    let refused = crowd.join().unwrap();
    assert!(
        refused >= 190,
        "{refused} of 200 extra connections were turned away"
    );
    assert!(
        busy < quiet * 3 + Duration::from_millis(5),
        "Publish p50 {busy:?} under a scrape flood, {quiet:?} without"
    );
    // The hogs' time runs out (5 s), and scrapes are served again.
    std::thread::sleep(Duration::from_secs(6));
    drop(hogs);
    assert_eq!(http_get(s.metrics, "/metrics").0, 200);
}

#[test]
fn json_logs_parse_and_no_secret_appears_at_trace() {
    let s = setup(&["--log-format", "json", "--log-level", "trace"]);
    let csi = s.controller.csi();
    let v = csi.create("pvc-json", GIB, &[]).unwrap();
    s.kube
        .create("persistentvolumes", provisioned_pv(&v))
        .unwrap();
    csi.publish("pvc-json", "node-a").unwrap();
    csi.unpublish("pvc-json", "node-a").unwrap();
    csi.delete("pvc-json").unwrap();
    let logs = s.controller.logs();
    let mut changes = Vec::new();
    for line in logs.lines().filter(|l| !l.is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        for key in ["time", "level", "target", "message", "fields"] {
            assert!(!v[key].is_null(), "{key} missing: {line}");
        }
        if v["level"] == "INFO" && v["fields"]["volume"] == "pvc-json" {
            assert_eq!(v["fields"]["outcome"], "OK", "{line}");
            changes.push(v["message"].as_str().unwrap().to_string());
        }
    }
    for change in [
        "created volume",
        "attached volume to node",
        "detached volume from node",
        "deleted volume's disk",
    ] {
        assert!(
            changes.iter().any(|c| c == change),
            "{change} not logged: {changes:?}"
        );
    }
    for secret in [
        "rds-test-password",
        "test-token-4f1d9c",
        "Basic ",
        "Bearer ",
    ] {
        assert!(!logs.contains(secret), "{secret:?} appears in the log");
    }
}

/// Every metric a query of the shipped Grafana dashboard or an alert of
/// the shipped PrometheusRule names is one the binary exports (histograms
/// by their `_bucket`, `_sum` and `_count`).
#[test]
fn every_dashboard_query_and_alert_names_an_exported_metric() {
    let s = setup(&[]);
    // The RDS monitoring's families, once its first poll is in.
    let until = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let (_, text) = http_get(s.metrics, "/metrics");
        if text.contains("# TYPE rds_csi_volume_ops_total") || Instant::now() > until {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut exported: Vec<String> = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        exported.push(name.to_string());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                exported.push(format!("{name}{suffix}"));
            }
        }
    }
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana/rds-csi-controller.json"
    );
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            queries.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    queries.push(
        dashboard["templating"]["list"][1]["query"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    assert!(queries.len() > 15, "{queries:?}");
    let rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/kubernetes/components/servicemonitor/prometheusrule.yaml"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut alerts = 0;
    for rule in rules["spec"]["groups"][0]["rules"].as_sequence().unwrap() {
        let expr = rule["expr"].as_str().unwrap();
        // The one alert on the scrape itself names no metric of ours.
        if !expr.contains("absent(up{") {
            queries.push(expr.to_string());
        }
        alerts += 1;
    }
    assert_eq!(alerts, 6);
    let mut named = 0;
    for q in &queries {
        let mut rest = q.as_str();
        while let Some(at) = ["rds_csi_", "rds_hardware_", "rds_disk_"]
            .iter()
            .filter_map(|p| rest.find(p))
            .min()
        {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let metric = &tail[..end];
            assert!(
                exported.iter().any(|e| e == metric),
                "{metric} (in {q}) is not exported:\n{text}"
            );
            named += 1;
            rest = &tail[end..];
        }
    }
    assert!(
        named >= queries.len(),
        "every query names a metric: {queries:?}"
    );
}

/// `/readyz` turns not ready only after `--unhealthy-after` of RDS not
/// answering, and ready again when it answers; Probe, sampled alongside,
/// stays ready all through (it follows the rebuild, not RDS).
#[test]
fn readyz_follows_rds_on_its_threshold_and_probe_stays_ready() {
    // Checks every 300 ms, unhealthy after 2 s.
    let s = setup(&["--health-interval", "300ms", "--unhealthy-after", "2s"]);
    let csi = s.controller.csi();
    let probe = || {
        csi.identity
            .probe_opt(&csi::ProbeRequest::new(), csi.opt())
            .unwrap()
            .get_ready()
            .get_value()
    };
    let sample = |for_: Duration| -> Vec<(bool, bool)> {
        let until = Instant::now() + for_;
        let mut out = Vec::new();
        while Instant::now() < until {
            out.push((probe(), http_get(s.metrics, "/readyz").0 == 200));
            std::thread::sleep(Duration::from_millis(40));
        }
        out
    };
    let before = sample(Duration::from_millis(500));
    assert!(before.iter().all(|&(p, r)| p && r), "{before:?}");
    s.rds.set_refusing(true);
    let down = sample(Duration::from_secs(4));
    s.rds.set_refusing(false);
    let up = sample(Duration::from_secs(2));
    // Probe never follows RDS (README, "High availability").
    for (what, samples) in [("going down", &down), ("coming back", &up)] {
        assert!(samples.iter().all(|&(p, _)| p), "{what}: {samples:?}");
    }
    // /readyz: not ready only after the threshold, and ready again.
    assert!(down[..down.len() / 3].iter().all(|&(_, r)| r), "{down:?}");
    assert!(down.last().is_some_and(|&(_, r)| !r), "{down:?}");
    assert!(up.last().is_some_and(|&(_, r)| r), "{up:?}");
}
