//! The emulator answers as RouterOS's REST API does: status codes, error
//! bodies, string values, `.id`s, filters, and the disk/file/pool rules
//! the controller depends on.

use base64::Engine as _;
use rds_emulator::{Emulator, Fault, FaultAction, Match, Options, User};
use serde_json::{json, Value};

struct Client {
    agent: ureq::Agent,
    url: String,
    auth: String,
}

impl Client {
    fn new(emu: &Emulator, user: &str, password: &str) -> Client {
        let certs: Vec<_> = ureq::tls::parse_pem(emu.ca_pem().unwrap().as_bytes())
            .filter_map(|i| match i {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
            .build();
        Client {
            agent: ureq::Agent::config_builder()
                .tls_config(tls)
                .http_status_as_error(false)
                .build()
                .into(),
            url: emu.url(),
            auth: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            ),
        }
    }

    /// Status and body (JSON, or Null when empty).
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{}", self.url, path))
            .header("Authorization", &self.auth)
            .header("Content-Type", "application/json");
        let resp = match body {
            Some(b) => self.agent.run(req.body(b.to_string()).unwrap()),
            None => self.agent.run(req.body(()).unwrap()),
        };
        match resp {
            Ok(r) => {
                let code = r.status().as_u16();
                let text = r.into_body().read_to_string().unwrap();
                (code, serde_json::from_str(&text).unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }
}

fn start() -> (Emulator, Client) {
    let emu = Emulator::start(Options {
        pool_bytes: 10 << 30,
        ..Default::default()
    })
    .unwrap();
    let c = Client::new(&emu, "csi", "rds-test-password");
    (emu, c)
}

fn file_disk(slot: &str, size: &str) -> Value {
    json!({"type": "file", "slot": slot, "file-path": format!("storage-pool/metal-csi/{slot}.img"),
           "file-size": size, "nvme-tcp-export": "yes", "nvme-tcp-server-port": "4420",
           "nvme-tcp-server-nqn": format!("nqn.2000-02.com.mikrotik:{slot}")})
}

#[test]
fn wrong_credentials_are_401_and_a_user_without_rest_api_is_not_allowed() {
    let (emu, _) = start();
    let (code, body) = Client::new(&emu, "csi", "wrong").call("GET", "/rest/disk", None);
    assert_eq!(
        (code, body),
        (401, json!({"error": 401, "message": "Unauthorized"}))
    );
    emu.set_users(vec![User::with_policies("ro", "p", &["read", "api"])]);
    let (code, body) = Client::new(&emu, "ro", "p").call("GET", "/rest/disk", None);
    assert_eq!(code, 500);
    assert_eq!(body["detail"], "not allowed");
}

#[test]
fn add_answers_the_item_with_string_values_and_star_ids() {
    let (emu, c) = start();
    let (code, disk) = c.call("PUT", "/rest/disk", Some(file_disk("pvc-1", "1G")));
    assert_eq!(code, 200, "{disk}");
    let id = disk[".id"].as_str().unwrap();
    assert!(
        id.starts_with('*') && u64::from_str_radix(&id[1..], 16).is_ok(),
        "{id}"
    );
    assert_eq!(disk["file-size"], "1073741824");
    assert_eq!(disk["nvme-tcp-export"], "true");
    assert_eq!(disk["nvme-tcp-server-port"], "4420");
    assert!(
        disk.as_object().unwrap().values().all(Value::is_string),
        "{disk}"
    );
    // One item by .id, with the star escaped as clients send it.
    let (code, one) = c.call(
        "GET",
        &format!("/rest/disk/{}", id.replace('*', "%2A")),
        None,
    );
    assert_eq!((code, &one), (200, &disk));
    // Numbers are accepted too, answered as strings.
    let mut numeric = file_disk("pvc-2", "0");
    numeric["file-size"] = json!(1 << 20);
    numeric["nvme-tcp-server-port"] = json!(4421);
    let (code, d2) = c.call("PUT", "/rest/disk", Some(numeric));
    assert_eq!(
        (code, d2["nvme-tcp-server-port"].as_str()),
        (200, Some("4421"))
    );
    let _ = emu;
}

#[test]
fn equality_filters_and_proplist_select() {
    let (_emu, c) = start();
    c.call("PUT", "/rest/disk", Some(file_disk("pvc-a", "1M")));
    c.call("PUT", "/rest/disk", Some(file_disk("pvc-b", "1M")));
    let (_, all) = c.call("GET", "/rest/disk", None);
    assert_eq!(all.as_array().unwrap().len(), 3, "two volumes and the pool");
    let (_, one) = c.call("GET", "/rest/disk?slot=pvc-b", None);
    assert_eq!(one.as_array().unwrap().len(), 1);
    assert_eq!(one[0]["slot"], "pvc-b");
    let (_, none) = c.call("GET", "/rest/disk?slot=pvc", None);
    assert_eq!(none, json!([]), "no prefix matching");
    let (_, slim) = c.call("GET", "/rest/disk?slot=pvc-a&.proplist=slot", None);
    let keys: Vec<_> = slim[0].as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, [".id", "slot"]);
}

#[test]
fn removing_a_disk_keeps_its_file_and_a_repeat_is_404() {
    let (emu, c) = start();
    let (_, d) = c.call("PUT", "/rest/disk", Some(file_disk("pvc-1", "1G")));
    let path = format!("/rest/disk/{}", d[".id"].as_str().unwrap());
    let (code, body) = c.call("DELETE", &path, None);
    assert_eq!((code, body), (204, Value::Null));
    let (code, body) = c.call("DELETE", &path, None);
    assert_eq!(
        (code, body),
        (404, json!({"error": 404, "message": "Not Found"}))
    );
    let file = emu
        .file("storage-pool/metal-csi/pvc-1.img")
        .expect("file stays");
    let (_, files) = c.call(
        "GET",
        "/rest/file?name=storage-pool/metal-csi/pvc-1.img",
        None,
    );
    assert_eq!(files[0][".id"], file.id);
    assert_eq!(files[0]["size"], "1073741824");
    let (code, _) = c.call("DELETE", &format!("/rest/file/{}", file.id), None);
    assert_eq!(code, 204);
    assert!(emu.file("storage-pool/metal-csi/pvc-1.img").is_none());
}

#[test]
fn pool_free_follows_the_files_and_a_full_pool_says_not_enough_space() {
    let (emu, c) = start();
    let free = |c: &Client| -> u64 {
        let (_, pool) = c.call("GET", "/rest/disk?mount-point=storage-pool", None);
        pool[0]["free"].as_str().unwrap().parse().unwrap()
    };
    assert_eq!(free(&c), 10 << 30);
    let (_, d) = c.call("PUT", "/rest/disk", Some(file_disk("pvc-1", "4G")));
    assert_eq!(free(&c), 6 << 30);
    let (code, body) = c.call("PUT", "/rest/disk", Some(file_disk("pvc-2", "7G")));
    assert_eq!(
        (code, body),
        (
            400,
            json!({"error": 400, "message": "Bad Request", "detail": "failure: not enough space"})
        )
    );
    assert!(emu.disk("pvc-2").is_none() && emu.file("storage-pool/metal-csi/pvc-2.img").is_none());
    // Growing takes the difference; shrinking is refused.
    let path = format!("/rest/disk/{}", d[".id"].as_str().unwrap());
    let (code, grown) = c.call("PATCH", &path, Some(json!({"file-size": "5G"})));
    assert_eq!(
        (code, grown["file-size"].as_str()),
        (200, Some("5368709120"))
    );
    assert_eq!(free(&c), 5 << 30);
    assert_eq!(
        c.call("PATCH", &path, Some(json!({"file-size": "1G"}))).0,
        400
    );
    // A file in use cannot be removed under its disk.
    let file = emu.file("storage-pool/metal-csi/pvc-1.img").unwrap();
    let (code, body) = c.call("DELETE", &format!("/rest/file/{}", file.id), None);
    assert_eq!(
        (code, body["detail"].as_str()),
        (400, Some("failure: file is in use"))
    );
}

#[test]
fn bad_adds_are_400_with_routeros_details() {
    let (_emu, c) = start();
    let mut unknown = file_disk("pvc-1", "1G");
    unknown["colour"] = json!("blue");
    assert_eq!(
        c.call("PUT", "/rest/disk", Some(unknown)).1["detail"],
        "unknown parameter colour"
    );
    let mut elsewhere = file_disk("pvc-1", "1G");
    elsewhere["file-path"] = json!("nopool/x.img");
    assert_eq!(
        c.call("PUT", "/rest/disk", Some(elsewhere)).1["detail"],
        "failure: no such directory"
    );
    c.call("PUT", "/rest/disk", Some(file_disk("pvc-1", "1G")));
    let (code, body) = c.call("PUT", "/rest/disk", Some(file_disk("pvc-1", "1G")));
    assert_eq!(code, 400, "{body}");
    assert_eq!(c.call("GET", "/rest/nothing", None).0, 400);
}

#[test]
fn faults_apply_to_the_nth_matching_request_and_over_http() {
    let (emu, c) = start();
    emu.inject(Fault {
        matches: Match {
            method: Some("GET".into()),
            path: Some("/rest/disk".into()),
            query: None,
        },
        skip: 1,
        times: 1,
        action: FaultAction::Status {
            code: 503,
            detail: "busy".into(),
        },
    });
    assert_eq!(c.call("GET", "/rest/disk", None).0, 200);
    assert_eq!(
        c.call("GET", "/rest/disk", None),
        (
            503,
            json!({"error": 503, "message": "Service Unavailable", "detail": "busy"})
        )
    );
    assert_eq!(c.call("GET", "/rest/disk", None).0, 200);
    // A fault can single out a look-up by its query.
    emu.inject(Fault {
        matches: Match {
            method: None,
            path: None,
            query: Some("slot=".into()),
        },
        skip: 0,
        times: 1,
        action: FaultAction::Status {
            code: 500,
            detail: String::new(),
        },
    });
    assert_eq!(
        c.call("GET", "/rest/disk?mount-point=storage-pool", None).0,
        200
    );
    assert_eq!(c.call("GET", "/rest/disk?slot=x", None).0, 500);
    let last = emu.requests().pop().unwrap();
    assert_eq!(
        (last.path.as_str(), last.query.as_str()),
        ("/rest/disk", "slot=x")
    );
    // The same through /emulator/faults, for out-of-process tests.
    let admin = ureq::Agent::config_builder()
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .disable_verification(true)
                .build(),
        )
        .build();
    let admin: ureq::Agent = admin.into();
    admin
        .post(format!("{}/emulator/faults", emu.url()))
        .header("Content-Type", "application/json")
        .send(
            json!({"match": {"method": "PUT"}, "times": 1, "action": {"kind": "not_enough_space"}})
                .to_string(),
        )
        .unwrap();
    assert_eq!(
        c.call("PUT", "/rest/disk", Some(file_disk("pvc-9", "1M")))
            .0,
        400
    );
    assert!(emu.disk("pvc-9").is_none());
    // A dropped connection: no answer at all.
    emu.inject(Fault {
        matches: Match::default(),
        skip: 0,
        times: 1,
        action: FaultAction::Drop,
    });
    assert_eq!(c.call("GET", "/rest/disk", None).0, 0);
    // Refusing cuts new and kept-alive connections alike.
    emu.set_refusing(true);
    assert_eq!(c.call("GET", "/rest/disk", None).0, 0);
    emu.set_refusing(false);
    assert_eq!(c.call("GET", "/rest/disk", None).0, 200);
    assert!(emu.requests().iter().any(|r| r.code == 503));
}

#[test]
fn copy_from_makes_a_copy_never_an_alias_and_never_overwrites() {
    let (emu, c) = start();
    let (code, src) = c.call("PUT", "/rest/disk", Some(file_disk("pvc-src", "1G")));
    assert_eq!(code, 200, "{src}");
    assert!(emu.write_file("storage-pool/metal-csi/pvc-src.img", b"v1"));
    let copy = |slot: &str, from: &Value, extra: Value| {
        let mut body = json!({
            "type": "file",
            "slot": slot,
            "file-path": format!("storage-pool/metal-csi/{slot}.img"),
            "copy-from": from,
            "comment": "rds-csi: source=pvc-src",
        });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c.call("PUT", "/rest/disk", Some(body))
    };
    let (code, snap) = copy("snap-1", &src[".id"], json!({}));
    assert_eq!(code, 200, "{snap}");
    assert_eq!(snap["file-size"], "1073741824");
    assert_eq!(snap["nvme-tcp-export"], "false");
    assert_eq!(snap["comment"], "rds-csi: source=pvc-src");
    // A copy: the source's later writes are not in it.
    emu.write_file("storage-pool/metal-csi/pvc-src.img", b"v2");
    assert_eq!(
        emu.file("storage-pool/metal-csi/snap-1.img").unwrap().data,
        b"v1"
    );
    // Grown to file-size when larger than the source.
    let (code, big) = copy("pvc-big", &snap[".id"], json!({"file-size": "2G"}));
    assert_eq!((code, big["file-size"].as_str()), (200, Some("2147483648")));
    // An unknown source, or a file already at the path: refused, nothing made.
    let (code, body) = copy("snap-2", &json!("*FFFF"), json!({}));
    assert_eq!(code, 400, "{body}");
    emu.insert_file("storage-pool/metal-csi/snap-3.img", 10);
    let (code, body) = copy("snap-3", &src[".id"], json!({}));
    assert_eq!(code, 400, "{body}");
    assert_eq!(
        emu.file("storage-pool/metal-csi/snap-3.img").unwrap().size,
        10
    );
    assert!(emu.disk("snap-2").is_none() && emu.disk("snap-3").is_none());
}

#[test]
fn a_slow_copy_shows_an_empty_file_until_it_ends_and_stops_if_the_file_goes() {
    let (emu, c) = start();
    let (_, src) = c.call("PUT", "/rest/disk", Some(file_disk("pvc-src", "1M")));
    assert!(emu.write_file("storage-pool/metal-csi/pvc-src.img", b"data"));
    let copy_body = |slot: &str| {
        json!({
            "type": "file",
            "slot": slot,
            "file-path": format!("storage-pool/metal-csi/{slot}.img"),
            "copy-from": src[".id"],
        })
    };
    let slow = |times| {
        emu.inject(Fault {
            matches: Match::default(),
            skip: 0,
            times,
            action: FaultAction::SlowCopy { millis: 600 },
        })
    };
    // A copy that ends: empty file and no disk meanwhile, then both whole.
    slow(1);
    let started = std::time::Instant::now();
    let answer = std::thread::scope(|s| {
        let call = s.spawn(|| c.call("PUT", "/rest/disk", Some(copy_body("snap-a"))));
        std::thread::sleep(std::time::Duration::from_millis(200));
        let mid = emu.file("storage-pool/metal-csi/snap-a.img").unwrap();
        assert_eq!((mid.size, mid.data.len()), (0, 0));
        assert!(emu.disk("snap-a").is_none());
        call.join().unwrap()
    });
    assert_eq!(answer.0, 200, "{}", answer.1);
    assert!(started.elapsed() >= std::time::Duration::from_millis(600));
    assert_eq!(emu.disk("snap-a").unwrap()["slot"], "snap-a");
    let whole = emu.file("storage-pool/metal-csi/snap-a.img").unwrap();
    assert_eq!((whole.size, whole.data), (1 << 20, b"data".to_vec()));
    // Its file removed while it copies: no disk ever appears.
    slow(1);
    let answer = std::thread::scope(|s| {
        let call = s.spawn(|| c.call("PUT", "/rest/disk", Some(copy_body("snap-b"))));
        std::thread::sleep(std::time::Duration::from_millis(200));
        let id = emu.file("storage-pool/metal-csi/snap-b.img").unwrap().id;
        assert_eq!(c.call("DELETE", &format!("/rest/file/{id}"), None).0, 204);
        call.join().unwrap()
    });
    assert_eq!(answer.0, 400, "{}", answer.1);
    assert!(emu.disk("snap-b").is_none());
    assert!(emu.file("storage-pool/metal-csi/snap-b.img").is_none());
    // Not a copy: only delayed.
    slow(1);
    assert_eq!(c.call("GET", "/rest/disk", None).0, 200);
}

#[test]
fn the_rest_users_group_and_the_web_services_are_listed_as_routeros_prints_them() {
    let (emu, c) = start();
    let (code, users) = c.call("GET", "/rest/user?name=csi", None);
    assert_eq!(code, 200, "{users}");
    assert_eq!(users[0]["group"], "csi");
    let (_, groups) = c.call("GET", "/rest/user/group?name=csi", None);
    let policy = groups[0]["policy"].as_str().unwrap();
    assert!(
        policy.starts_with("!local,!telnet,!ssh,!ftp,!reboot,read,write,"),
        "{policy}"
    );
    assert!(policy.ends_with(",api,!romon,rest-api"), "{policy}");
    let (_, services) = c.call("GET", "/rest/ip/service?name=www-ssl", None);
    assert_eq!(services[0]["disabled"], "false");
    assert_eq!(services[0]["port"], "443");
    // Values are strings, as everywhere in RouterOS's REST answers.
    assert!(services[0]
        .as_object()
        .unwrap()
        .values()
        .all(Value::is_string));
    emu.set_users(vec![User::with_policies(
        "csi",
        "rds-test-password",
        &["rest-api", "read"],
    )]);
    let (_, groups) = c.call("GET", "/rest/user/group", None);
    assert!(groups[0]["policy"].as_str().unwrap().contains("!write"));
}
