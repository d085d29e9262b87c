//! The Kubernetes client against the emulator over TLS: error classes from
//! real Status bodies, TLS verification, kubeconfig variants, the conflict
//! loop, pagination, token rotation, and secrecy of tokens in logs.

use std::{
    path::Path,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use crate::support::*;
use kube_emulator::{Emulator, Fault, FaultAction, Match, Options};
use rds_csi_controller::kube::{
    retry_on_conflict, Client, ClientOptions, Config, Credential, Error, Pv, Visit,
};
use serde_json::json;

const TOKEN: &str = "s3cr3t-bearer-token-7c1e";

/// Captures every log record of this test binary, at trace level, with
/// the thread that logged it: tests run in parallel and share the one
/// process-wide logger, and a client logs on its caller's thread, so each
/// test reads its own lines ([`my_logs`]).
struct Capture(Mutex<Vec<(std::thread::ThreadId, String)>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        self.0.lock().unwrap().push((
            std::thread::current().id(),
            format!("{} {} {}", r.level(), r.target(), r.args()),
        ));
    }
    fn flush(&self) {}
}

/// The lines the calling test's thread logged.
fn my_logs() -> Vec<String> {
    let me = std::thread::current().id();
    logs()
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| *t == me)
        .map(|(_, l)| l.clone())
        .collect()
}

fn logs() -> &'static Capture {
    static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let c: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
        let _ = log::set_logger(c);
        log::set_max_level(log::LevelFilter::Trace);
        c
    })
}

fn tls_emulator() -> Emulator {
    logs();
    Emulator::start(Options {
        port: 0,
        tls: true,
        token: Some(TOKEN.into()),
        ..Default::default()
    })
    .unwrap()
}

fn config(emu: &Emulator, credential: Credential) -> Config {
    Config {
        server: emu.url(),
        ca_pem: emu.ca_pem().map(String::into_bytes),
        insecure_skip_tls_verify: false,
        credential,
        identity: None,
        origin: "test".into(),
    }
}

fn client(emu: &Emulator) -> Client {
    Client::new(
        &config(emu, Credential::Token(TOKEN.into())),
        ClientOptions::default(),
    )
    .unwrap()
}

/// A client that asks for `page_size` items a page.
fn paged_client(emu: &Emulator, page_size: u32) -> Client {
    let opts = ClientOptions {
        page_size,
        ..Default::default()
    };
    Client::new(&config(emu, Credential::Token(TOKEN.into())), opts).unwrap()
}

/// One PV of this driver per name, its volume handle the name.
fn create_pvs(emu: &Emulator, names: impl IntoIterator<Item = String>) {
    for name in names {
        emu.create("persistentvolumes", pv(&name, &name, DRIVER))
            .unwrap();
    }
}

fn fault(verb: &str, resource: &str, times: usize, action: FaultAction) -> Fault {
    Fault {
        matches: Match {
            verb: Some(verb.into()),
            resource: Some(resource.into()),
            name: None,
        },
        times,
        action,
    }
}

#[test]
fn each_error_class_is_decoded_from_a_real_status_body() {
    let emu = tls_emulator();
    let c = client(&emu);
    emu.create("persistentvolumes", pv("pv-1", "pv-1", DRIVER))
        .unwrap();

    match c.get_pv("missing") {
        Err(Error::NotFound(s)) => assert_eq!(s.message, "persistentvolumes \"missing\" not found"),
        other => panic!("{other:?}"),
    }

    let mut stale = c.get_pv("pv-1").unwrap();
    emu.modify("persistentvolumes", "pv-1", |p| {
        p["metadata"]["labels"] = json!({"x": "y"})
    });
    stale.annotations_mut().insert("a".into(), json!("b"));
    match c.replace_pv("pv-1", &stale) {
        Err(Error::Conflict(s)) => assert_eq!(
            s.message,
            "Operation cannot be fulfilled on persistentvolumes \"pv-1\": the object has been modified; please apply your changes to the latest version and try again"
        ),
        other => panic!("{other:?}"),
    }

    let mut bad = c.get_pv("pv-1").unwrap();
    bad.annotations_mut()
        .insert("-not-a-key".into(), json!("v"));
    assert!(
        matches!(c.replace_pv("pv-1", &bad), Err(Error::Invalid(s)) if s.code == 422 && s.message.contains("metadata.annotations"))
    );

    let mut gone = c.get_pv("pv-1").unwrap().value();
    gone["metadata"]["name"] = json!("pv-ghost");
    assert!(matches!(
        c.replace_pv("pv-ghost", &Pv::from_value(&gone)),
        Err(Error::NotFound(_))
    ));

    let event = json!({"metadata": {"name": "ev-1", "namespace": "default"}, "reason": "Test", "involvedObject": {"kind": "PersistentVolume", "name": "pv-1"}});
    c.create_event("default", &event).unwrap();
    assert!(
        matches!(c.create_event("default", &event), Err(Error::AlreadyExists(s)) if s.message.contains("already exists"))
    );

    let opts = ClientOptions {
        attempts: 1,
        ..Default::default()
    };
    let once = Client::new(&config(&emu, Credential::Token(TOKEN.into())), opts).unwrap();
    emu.inject(fault(
        "get",
        "persistentvolumes",
        1,
        FaultAction::Status {
            code: 429,
            retry_after: Some(7),
        },
    ));
    assert!(
        matches!(once.get_pv("pv-1"), Err(Error::TooManyRequests(s)) if s.retry_after == Some(Duration::from_secs(7)))
    );
    emu.inject(fault(
        "get",
        "persistentvolumes",
        1,
        FaultAction::Status {
            code: 500,
            retry_after: None,
        },
    ));
    assert!(matches!(once.get_pv("pv-1"), Err(Error::Server(s)) if s.code == 500));
    emu.inject(fault("get", "persistentvolumes", 1, FaultAction::Malformed));
    assert!(matches!(once.get_pv("pv-1"), Err(Error::Decode(_))));
    emu.inject(fault("get", "persistentvolumes", 1, FaultAction::Drop));
    assert!(matches!(once.get_pv("pv-1"), Err(Error::Transport(_))));
    emu.inject(fault(
        "get",
        "persistentvolumes",
        1,
        FaultAction::Cut { after_bytes: 10 },
    ));
    assert!(matches!(once.get_pv("pv-1"), Err(Error::Transport(_))));

    let small = ClientOptions {
        attempts: 1,
        max_body_bytes: 64 * 1024,
        ..Default::default()
    };
    let small = Client::new(&config(&emu, Credential::Token(TOKEN.into())), small).unwrap();
    emu.inject(fault(
        "get",
        "persistentvolumes",
        1,
        FaultAction::Oversized { bytes: 1 << 20 },
    ));
    assert!(matches!(small.get_pv("pv-1"), Err(Error::Transport(m)) if m.contains("limit")));

    let quick = ClientOptions {
        attempts: 1,
        request_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let quick = Client::new(&config(&emu, Credential::Token(TOKEN.into())), quick).unwrap();
    emu.inject(fault(
        "get",
        "persistentvolumes",
        1,
        FaultAction::Delay { millis: 1500 },
    ));
    assert!(matches!(quick.get_pv("pv-1"), Err(Error::Timeout(_))));

    let wrong = Client::new(
        &config(&emu, Credential::Token("wrong".into())),
        ClientOptions::default(),
    )
    .unwrap();
    assert!(
        matches!(wrong.get_pv("pv-1"), Err(Error::Unauthorized(s)) if s.reason == "Unauthorized")
    );

    emu.set_rbac(Some(vec![kube_emulator::Rule {
        api_groups: vec!["".into()],
        resources: vec!["persistentvolumes".into()],
        verbs: vec!["get".into()],
        resource_names: vec![],
    }]));
    assert!(c.get_pv("pv-1").is_ok());
    assert!(
        matches!(c.node_exists("n"), Err(Error::Forbidden(s)) if s.message.contains("cannot get resource \"nodes\""))
    );
}

#[test]
fn transient_failures_on_reads_are_retried_but_writes_are_not() {
    let emu = tls_emulator();
    let c = client(&emu);
    emu.create("persistentvolumes", pv("pv-1", "pv-1", DRIVER))
        .unwrap();
    emu.inject(fault(
        "get",
        "persistentvolumes",
        2,
        FaultAction::Status {
            code: 503,
            retry_after: None,
        },
    ));
    assert!(c.get_pv("pv-1").is_ok());
    emu.inject(fault("get", "persistentvolumes", 1, FaultAction::Drop));
    assert!(c.get_pv("pv-1").is_ok());

    let obj = c.get_pv("pv-1").unwrap();
    emu.clear_requests();
    emu.inject(fault(
        "update",
        "persistentvolumes",
        1,
        FaultAction::Status {
            code: 503,
            retry_after: None,
        },
    ));
    assert!(matches!(c.replace_pv("pv-1", &obj), Err(Error::Server(_))));
    assert_eq!(
        emu.count("update", "persistentvolumes"),
        1,
        "a PUT is not retried outside the conflict loop"
    );
    // 429 is refused before any processing: safe to retry for writes too.
    emu.inject(fault(
        "update",
        "persistentvolumes",
        1,
        FaultAction::Status {
            code: 429,
            retry_after: Some(0),
        },
    ));
    assert!(c.replace_pv("pv-1", &obj).is_ok());
}

#[test]
fn a_server_certificate_from_another_ca_is_refused_before_any_request() {
    let emu = tls_emulator();
    let other = Emulator::start(Options {
        port: 0,
        tls: true,
        token: None,
        ..Default::default()
    })
    .unwrap();
    let mut cfg = config(&emu, Credential::Token(TOKEN.into()));
    cfg.ca_pem = other.ca_pem().map(String::into_bytes);
    let c = Client::new(
        &cfg,
        ClientOptions {
            attempts: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let err = c.get_pv("anything").unwrap_err();
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    assert!(
        emu.requests().is_empty(),
        "no request may be processed: {:?}",
        emu.requests()
    );
}

#[test]
fn insecure_skip_tls_verify_only_when_the_kubeconfig_says_so() {
    let emu = tls_emulator();
    let mut cfg = config(&emu, Credential::Token(TOKEN.into()));
    cfg.ca_pem = None; // public roots only: the emulator's CA is unknown
    let strict = Client::new(
        &cfg,
        ClientOptions {
            attempts: 1,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(matches!(strict.server_version(), Err(Error::Transport(_))));
    cfg.insecure_skip_tls_verify = true;
    let lax = Client::new(
        &cfg,
        ClientOptions {
            attempts: 1,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(lax.server_version().is_ok());
}

fn write_kubeconfig(dir: &Path, emu: &Emulator, user: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("ca.crt"), emu.ca_pem().unwrap()).unwrap();
    let text = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: k\n  cluster:\n    server: {}\n    certificate-authority: ca.crt\ncontexts:\n- name: c\n  context: {{cluster: k, user: u}}\nusers:\n- name: u\n  user:\n{user}",
        emu.url()
    );
    let path = dir.join("kubeconfig");
    std::fs::write(&path, text).unwrap();
    path
}

fn b64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[test]
fn kubeconfig_variants_token_token_file_client_cert_and_inline_data() {
    let emu = tls_emulator();
    emu.create("nodes", node("n1")).unwrap();
    let dir = TempDir::new("kc-variants");
    let id = emu.client_identity("system:node:tester").unwrap();
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
    std::fs::write(dir.path().join("client.crt"), &id.cert_pem).unwrap();
    std::fs::write(dir.path().join("client.key"), &id.key_pem).unwrap();

    let variants = [
        ("token", format!("    token: {TOKEN}\n")),
        ("tokenFile", "    tokenFile: token\n".to_string()),
        (
            "client cert files",
            "    client-certificate: client.crt\n    client-key: client.key\n".to_string(),
        ),
        (
            "inline client cert",
            format!(
                "    client-certificate-data: {}\n    client-key-data: {}\n",
                b64(id.cert_pem.as_bytes()),
                b64(id.key_pem.as_bytes())
            ),
        ),
    ];
    for (what, user) in variants {
        let path = write_kubeconfig(dir.path(), &emu, &user);
        let cfg = Config::from_kubeconfig(&path).unwrap();
        let c = Client::new(&cfg, ClientOptions::default()).unwrap();
        assert!(c.node_exists("n1").unwrap(), "{what}");
        assert!(!c.node_exists("n2").unwrap(), "{what}");
    }
    // Inline CA as well.
    let path = write_kubeconfig(dir.path(), &emu, &format!("    token: {TOKEN}\n"));
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "certificate-authority: ca.crt",
        &format!(
            "certificate-authority-data: {}",
            b64(emu.ca_pem().unwrap().as_bytes())
        ),
    );
    std::fs::write(&path, text).unwrap();
    std::fs::remove_file(dir.path().join("ca.crt")).unwrap();
    let c = Client::new(
        &Config::from_kubeconfig(&path).unwrap(),
        ClientOptions::default(),
    )
    .unwrap();
    assert!(c.node_exists("n1").unwrap());
}

#[test]
fn in_cluster_config_reads_the_service_account() {
    let emu = tls_emulator();
    let dir = TempDir::new("incluster");
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    std::fs::write(dir.path().join("ca.crt"), emu.ca_pem().unwrap()).unwrap();
    let port = emu.addr().port().to_string();
    let cfg = Config::in_cluster("127.0.0.1", &port, dir.path()).unwrap();
    assert_eq!(cfg.server, emu.url());
    let c = Client::new(&cfg, ClientOptions::default()).unwrap();
    assert!(c.server_version().unwrap().contains("emulator"));
}

/// Runs the conflict loop the attachment store uses: GET, mutate, PUT.
fn annotate(c: &Client, name: &str, seen: &Arc<Mutex<Vec<String>>>) -> Result<(), Error> {
    retry_on_conflict(
        || {
            let mut pv = c.get_pv(name)?;
            seen.lock().unwrap().push(
                pv.value()["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
            pv.annotations_mut()
                .insert("example.com/k".into(), json!("v"));
            c.replace_pv(name, &pv)
        },
        Error::is_conflict,
    )
}

#[test]
fn conflict_loop_retries_on_the_freshest_object_and_gives_up_after_five() {
    let emu = tls_emulator();
    let c = client(&emu);
    for k in [0usize, 1, 4, 5, 7] {
        let name = format!("pv-storm-{k}");
        emu.create("persistentvolumes", pv(&name, &name, DRIVER))
            .unwrap();
        emu.clear_requests();
        emu.conflict_storm("persistentvolumes", &name, k);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let r = annotate(&c, &name, &seen);
        let puts = emu.count("update", "persistentvolumes");
        if k < 5 {
            r.unwrap();
            let stored = emu.get("persistentvolumes", &name).unwrap();
            assert_eq!(puts, k + 1, "storm {k}");
            assert_eq!(stored["metadata"]["annotations"]["example.com/k"], "v");
            // Each try read a newer object than the last.
            let rvs: Vec<u64> = seen
                .lock()
                .unwrap()
                .iter()
                .map(|s| s.parse().unwrap())
                .collect();
            assert!(rvs.windows(2).all(|w| w[0] < w[1]), "{rvs:?}");
        } else {
            assert!(matches!(r, Err(Error::Conflict(_))), "storm {k}: {r:?}");
            assert_eq!(puts, 5, "storm {k}");
            assert_eq!(
                emu.get("persistentvolumes", &name).unwrap()["metadata"].get("annotations"),
                None
            );
        }
        emu.clear_faults();
    }
}

#[test]
fn pagination_over_many_pages_and_an_expired_token_restarts_cleanly() {
    let emu = tls_emulator();
    create_pvs(&emu, (0..23).map(|i| format!("pv-{i:02}")));
    let c = paged_client(&emu, 5);
    let listed = c.list_pvs().unwrap();
    assert_eq!(listed.pages, 5);
    let names: Vec<_> = listed.items.iter().map(|p| p.name.clone()).collect();
    let expected: Vec<_> = (0..23).map(|i| format!("pv-{i:02}")).collect();
    assert_eq!(names, expected);

    emu.set_short_pages(true);
    let listed = c.list_pvs().unwrap();
    assert_eq!(listed.items.len(), 23);
    assert!(listed.pages >= 8, "short pages: {}", listed.pages);
    emu.set_short_pages(false);

    // The token expires after the second page: the list starts over and
    // still returns each PV exactly once.
    emu.clear_requests();
    emu.expire_continue_tokens_after(1);
    let listed = c.list_pvs().unwrap();
    let names: Vec<_> = listed.items.iter().map(|p| p.name.clone()).collect();
    assert_eq!(names, expected);
    let lists = emu
        .requests()
        .iter()
        .filter(|r| r.verb == "list")
        .map(|r| r.code)
        .collect::<Vec<_>>();
    assert_eq!(lists.iter().filter(|c| **c == 410).count(), 1, "{lists:?}");
    assert_eq!(
        lists.len(),
        3 + 5,
        "two pages, one 410, then a full list: {lists:?}"
    );
}

#[test]
fn a_list_cut_off_mid_answer_is_read_again_and_hands_over_each_item_once() {
    let emu = tls_emulator();
    let expected: Vec<_> = (0..1200).map(|i| format!("pv-{i:04}")).collect();
    create_pvs(&emu, expected.iter().cloned());
    let c = client(&emu);
    let list_codes = |emu: &Emulator| emu.requests().iter().filter(|r| r.verb == "list").count();

    // Cut inside the first page's metadata, before any item: that page
    // is asked for again.
    emu.clear_requests();
    emu.inject(fault(
        "list",
        "persistentvolumes",
        1,
        FaultAction::Cut { after_bytes: 60 },
    ));
    let listed = c.list_pvs().unwrap();
    let names: Vec<_> = listed.items.iter().map(|p| p.name.clone()).collect();
    assert_eq!(names, expected);
    assert_eq!(list_codes(&emu), 1 + 3, "the cut page again, then two more");

    // Cut in the middle of the second page, after some of its items were
    // handed over: the list starts over, and what the visitor keeps holds
    // each PV once.
    emu.clear_requests();
    let mut seen: Vec<String> = Vec::new();
    let mut restarts = 0;
    let pages = c
        .visit_pvs(|v| match v {
            Visit::Item(p) => {
                if seen.len() == 10 && restarts == 0 {
                    emu.inject(fault(
                        "list",
                        "persistentvolumes",
                        1,
                        FaultAction::Cut {
                            after_bytes: 100_000,
                        },
                    ));
                }
                seen.push(p.name)
            }
            Visit::Restart => {
                restarts += 1;
                seen.clear();
            }
            Visit::Skipped(name) => panic!("skipped {name}"),
        })
        .unwrap();
    assert_eq!(seen, expected);
    assert_eq!((restarts, pages), (1, 3));
    assert_eq!(
        list_codes(&emu),
        2 + 3,
        "two pages, the second cut, then the list again"
    );

    // A list whose every answer is cut gives up with the transport's error.
    emu.inject(fault(
        "list",
        "persistentvolumes",
        100,
        FaultAction::Cut {
            after_bytes: 100_000,
        },
    ));
    assert!(matches!(c.list_pvs(), Err(Error::Transport(_))));
    emu.clear_faults();
}

#[test]
fn rotated_token_file_is_reread_after_a_401() {
    let emu = tls_emulator();
    emu.create("nodes", node("n1")).unwrap();
    let dir = TempDir::new("rotate");
    let token_path = dir.path().join("token");
    std::fs::write(&token_path, TOKEN).unwrap();
    let c = Client::new(
        &config(&emu, Credential::TokenFile(token_path.clone())),
        ClientOptions::default(),
    )
    .unwrap();
    assert!(c.node_exists("n1").unwrap());

    // The kubelet rotates the token: the file changes, the old one dies.
    let rotated = "rotated-token-93b2";
    std::fs::write(&token_path, rotated).unwrap();
    emu.set_token(Some(rotated.into()));
    emu.clear_requests();
    assert!(c.node_exists("n1").unwrap());
    let codes: Vec<u16> = emu.requests().iter().map(|r| r.code).collect();
    assert_eq!(codes, vec![401, 200], "one 401, one re-read, one retry");
    assert!(c.node_exists("n1").unwrap());
    assert_eq!(
        emu.requests().len(),
        3,
        "the new token is used from then on"
    );

    // A rotation the file does not (yet) show: the 401 stands after one re-read.
    emu.set_token(Some("not-in-the-file".into()));
    assert!(matches!(c.node_exists("n1"), Err(Error::Unauthorized(_))));
}

#[test]
fn no_log_line_carries_a_token_at_trace_level() {
    let emu = tls_emulator();
    let dir = TempDir::new("secrecy");
    let token_path = dir.path().join("token");
    std::fs::write(&token_path, TOKEN).unwrap();
    emu.create("persistentvolumes", pv("pv-1", "pv-1", DRIVER))
        .unwrap();
    let c = Client::new(
        &config(&emu, Credential::TokenFile(token_path.clone())),
        ClientOptions::default(),
    )
    .unwrap();
    c.get_pv("pv-1").unwrap();
    c.list_pvs().unwrap();
    std::fs::write(&token_path, "").unwrap();
    emu.set_token(Some("other-token-1".into()));
    let _ = c.get_pv("pv-1");
    let wrong = Client::new(
        &config(&emu, Credential::Token(TOKEN.into())),
        ClientOptions::default(),
    )
    .unwrap();
    let _ = wrong.get_pv("pv-1");
    let lines = my_logs();
    assert!(
        lines.iter().any(|l| l.contains("persistentvolumes")),
        "trace logging was captured: {lines:?}"
    );
    for l in &lines {
        assert!(
            !l.contains(TOKEN) && !l.contains("other-token-1"),
            "token in log: {l}"
        );
    }
}

#[test]
fn a_streamed_list_page_logs_its_code_and_size_at_trace_level() {
    let emu = tls_emulator();
    create_pvs(&emu, (0..3).map(|i| format!("pv-{i}")));
    let c = paged_client(&emu, 3);
    assert_eq!(c.list_pvs().unwrap().items.len(), 3);
    let lines = my_logs();
    let page: Vec<_> = lines
        .iter()
        .filter(|l| l.starts_with("TRACE rds_csi_controller::kube"))
        .filter(|l| l.contains("/api/v1/persistentvolumes?limit=3"))
        .collect();
    assert_eq!(page.len(), 1, "one trace line for the one page: {lines:?}");
    let bytes: u64 = page[0]
        .split_once("-> 200 (")
        .and_then(|(_, rest)| rest.split_once(" bytes streamed"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("code and size in {:?}", page[0]));
    // The page is the three PVs (a list's items carry no kind or
    // apiVersion of their own) plus the list's envelope (kind,
    // apiVersion, metadata), which is well under 256 bytes.
    let items: usize = (0..3)
        .map(|i| {
            let mut pv = emu.get("persistentvolumes", &format!("pv-{i}")).unwrap();
            let fields = pv.as_object_mut().unwrap();
            fields.remove("kind");
            fields.remove("apiVersion");
            serde_json::to_vec(&pv).unwrap().len()
        })
        .sum();
    let bytes = bytes as usize;
    assert!(
        items < bytes && bytes < items + 256,
        "{bytes} bytes logged for a page whose items are {items}: {}",
        page[0]
    );
}

#[test]
fn volume_attachments_are_listed_as_summaries() {
    let emu = tls_emulator();
    for i in 0..5 {
        emu.create(
            "volumeattachments",
            json!({"metadata": {"name": format!("csi-{i}")},
                   "spec": {"attacher": DRIVER, "nodeName": format!("node-{i}"), "source": {"persistentVolumeName": format!("pv-{i}")}},
                   "status": {"attached": i % 2 == 0}}),
        )
        .unwrap();
    }
    let c = paged_client(&emu, 2);
    let listed = c.list_volume_attachments().unwrap();
    assert_eq!(listed.pages, 3);
    assert_eq!(listed.items.len(), 5);
    let third = &listed.items[2];
    assert_eq!(
        (
            third.name.as_str(),
            third.node_name.as_str(),
            third.pv_name.as_str()
        ),
        ("csi-2", "node-2", "pv-2")
    );
    assert!(third.attached && !listed.items[1].attached);
    assert_eq!(third.attacher, DRIVER);
}

#[test]
fn a_lists_later_pages_are_not_held_by_the_rate_limiter() {
    let emu = tls_emulator();
    create_pvs(&emu, (0..6).map(|i| format!("pv-{i}")));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let opts = ClientOptions {
        page_size: 2,
        qps: 0.5,
        burst: 1,
        observer: Some(rds_csi_controller::Hook::new(
            move |o: &rds_csi_controller::kube::Observed| {
                log.lock().unwrap().push((o.verb, o.throttled))
            },
        )),
        ..Default::default()
    };
    let c = Client::new(&config(&emu, Credential::Token(TOKEN.into())), opts).unwrap();
    assert_eq!(c.list_pvs().unwrap().items.len(), 6);
    // The list took the one token; a request of its own waits for the next.
    c.get_pv("pv-1").unwrap();
    let seen = seen.lock().unwrap().clone();
    let verbs: Vec<_> = seen.iter().map(|(v, _)| *v).collect();
    assert_eq!(verbs, ["list", "list", "list", "get"]);
    for (verb, throttled) in &seen[..3] {
        assert_eq!(*throttled, Duration::ZERO, "{verb} waited {throttled:?}");
    }
    assert!(
        seen[3].1 >= Duration::from_millis(500),
        "the GET after the list waits for a token: {:?}",
        seen[3].1
    );
}

#[test]
fn a_request_whose_token_comes_after_its_deadline_fails_at_the_deadline_and_spends_no_token() {
    use rds_csi_controller::deadline::{within, Deadline};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;
    let emu = tls_emulator();
    create_pvs(&emu, ["pv-1".to_string()]);
    let opts = ClientOptions {
        qps: 1.0,
        burst: 1,
        ..Default::default()
    };
    let c = Client::new(&config(&emu, Credential::Token(TOKEN.into())), opts).unwrap();
    c.get_pv("pv-1").unwrap();
    let first = Instant::now();
    emu.clear_requests();

    // The next token is due in 1 s; the caller gives up after 100 ms.
    let gone = Arc::new(AtomicBool::new(false));
    let flag = gone.clone();
    let call = Deadline::for_call(
        Instant::now(),
        Some(Arc::new(move || flag.load(Ordering::SeqCst))),
    );
    let giving_up = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        gone.store(true, Ordering::SeqCst);
    });
    let started = Instant::now();
    let answer = within(call, || c.get_pv("pv-1"));
    giving_up.join().unwrap();
    assert!(
        matches!(answer, Err(Error::Deadline(_))),
        "{:?}",
        answer.map(|_| ())
    );
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "answered at the deadline, not when the token came: {:?}",
        started.elapsed()
    );
    assert!(emu.requests().is_empty(), "nothing was sent");

    // The token it reserved was given back: the next request gets it when
    // it is due, 1 s after the first, not a second later.
    c.get_pv("pv-1").unwrap();
    assert!(
        first.elapsed() < Duration::from_millis(1600),
        "the abandoned call kept its token: {:?}",
        first.elapsed()
    );
}

#[test]
fn request_metrics_are_labelled_with_the_verb_and_resource_the_caller_names() {
    use rds_csi_controller::kube::{cluster_path, object_path};
    let emu = tls_emulator();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let opts = ClientOptions {
        observer: Some(rds_csi_controller::Hook::new(
            move |o: &rds_csi_controller::kube::Observed| {
                log.lock().unwrap().push((o.verb, o.resource, o.code))
            },
        )),
        ..Default::default()
    };
    let c = Client::new(&config(&emu, Credential::Token(TOKEN.into())), opts).unwrap();
    let csidriver =
        cluster_path("storage.k8s.io/v1", "csidrivers", Some("rds.csi.srvlab.io")).unwrap();
    assert!(c.get_object(&csidriver).unwrap_err().is_not_found());
    let deployments = cluster_path("apps/v1", "deployments", None).unwrap();
    assert!(c.list_objects(&deployments, "").unwrap().is_empty());
    let secret = object_path("v1", "secrets", "rds-csi", Some("rds-csi-credentials")).unwrap();
    assert!(c.get_object(&secret).unwrap_err().is_not_found());
    assert_eq!(
        *seen.lock().unwrap(),
        [
            ("get", "csidrivers", 404),
            ("list", "deployments", 200),
            ("get", "secrets", 404)
        ],
        "resources this client never guessed from a URL (they were all `other`)"
    );
}
