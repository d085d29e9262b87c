//! Request handling: authentication, faults, the `/rest/disk` and
//! `/rest/file` menus, and the `/emulator/*` control endpoints.

use std::{
    io::Write,
    net::TcpStream,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use base64::Engine as _;
use emulator_support::http::{self, Outcome, Request, Response};
use rustls::ServerConfig;
use serde_json::{json, Map, Value};

use crate::{parse_id, Fault, FaultAction, Item, RequestRecord, Shared, State};

pub(crate) fn connection(shared: Arc<Shared>, tcp: TcpStream, config: Option<Arc<ServerConfig>>) {
    let stream: Box<dyn http::Stream> = match config {
        None => Box::new(tcp),
        Some(cfg) => match emulator_support::tls::accept(cfg, tcp) {
            Some((tls, _)) => Box::new(tls),
            None => return,
        },
    };
    http::serve_connection(stream, &|req, w| handle(&shared, req, w));
}

/// RouterOS's error body.
fn error(code: u16, detail: &str) -> Response {
    let mut body = json!({"error": code, "message": http::reason(code)});
    if !detail.is_empty() {
        body["detail"] = Value::from(detail);
    }
    Response::json(code, body.to_string().into_bytes())
}

fn ok(value: Value) -> Response {
    Response::json(200, value.to_string().into_bytes())
}

fn handle(shared: &Shared, req: Request, _w: &mut dyn Write) -> Outcome {
    if req.path.starts_with("/emulator/") {
        return Outcome::Respond(admin(shared, &req));
    }
    // Refusing also cuts connections kept alive from before.
    if shared.stopping.load(Ordering::SeqCst) || shared.refusing.load(Ordering::SeqCst) {
        return Outcome::Drop;
    }
    let method = req.method.to_ascii_uppercase();
    let query = req
        .query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let record = |code: u16| {
        shared.lock().requests.push(RequestRecord {
            method: method.clone(),
            path: req.path.clone(),
            query: query.clone(),
            code,
        })
    };
    let latency = shared.latency_us.load(Ordering::SeqCst);
    if latency > 0 {
        std::thread::sleep(Duration::from_micros(latency));
    }
    if let Err(resp) = authenticate(shared, &req) {
        record(resp.code);
        return Outcome::Respond(resp);
    }
    let mut after = None;
    // Bound first: the state lock must not be held through the arms.
    let fault = take_fault(&mut shared.lock(), &method, &req.path, &query);
    if let Some(action) = fault {
        match action {
            FaultAction::Status { code, detail } => {
                record(code);
                return Outcome::Respond(error(code, &detail));
            }
            FaultAction::NotEnoughSpace => {
                record(400);
                return Outcome::Respond(error(400, "failure: not enough space"));
            }
            FaultAction::Drop => {
                record(0);
                return Outcome::Drop;
            }
            FaultAction::Delay { millis } => std::thread::sleep(Duration::from_millis(millis)),
            FaultAction::DropAfter => after = Some(()),
            FaultAction::SlowCopy { millis } => {
                let resp = slow_copy(shared, &method, &req, Duration::from_millis(millis));
                record(resp.code);
                return Outcome::Respond(resp);
            }
        }
    }
    let resp = route(&mut shared.lock(), &method, &req);
    record(resp.code);
    match after {
        Some(()) => Outcome::Drop,
        None => Outcome::Respond(resp),
    }
}

/// A request under [`FaultAction::SlowCopy`]: a `copy-from` add is made
/// at once, then its disk and content are held back for `takes` while its
/// file shows empty; anything else is only delayed.
fn slow_copy(shared: &Shared, method: &str, req: &Request, takes: Duration) -> Response {
    let is_copy = method == "PUT"
        && req.path.trim_end_matches('/') == "/rest/disk"
        && serde_json::from_slice::<Value>(&req.body).is_ok_and(|b| b.get("copy-from").is_some());
    if !is_copy {
        std::thread::sleep(takes);
        return route(&mut shared.lock(), method, req);
    }
    let (resp, held) = {
        let mut st = shared.lock();
        let resp = route(&mut st, method, req);
        let added = (resp.code == 200)
            .then(|| serde_json::from_slice::<Value>(&resp.body).ok())
            .flatten()
            .and_then(|d| d.get(".id").and_then(Value::as_str).and_then(parse_id));
        let Some(key) = added else {
            return resp;
        };
        let disk = st.disks.remove(&key).expect("the disk just added");
        let path = disk.get("file-path").cloned().unwrap_or_default();
        let file = st.file_named_mut(&path).expect("the copy's file");
        let content = (file.id.clone(), file.size, std::mem::take(&mut file.data));
        file.size = 0;
        (resp, (key, disk, path, content))
    };
    std::thread::sleep(takes);
    let (key, disk, path, (file_id, size, data)) = held;
    let mut st = shared.lock();
    match st.file_named_mut(&path).filter(|f| f.id == file_id) {
        Some(file) => {
            file.size = size;
            file.data = data;
            st.disks.insert(key, disk);
            resp
        }
        None => error(400, "failure: copy aborted: its file was removed"),
    }
}

/// HTTP Basic against the users; a user without the `rest-api` policy is
/// refused the way RouterOS refuses it.
fn authenticate(shared: &Shared, req: &Request) -> Result<(), Response> {
    let unauthorized = || error(401, "");
    let encoded = req
        .header("authorization")
        .and_then(|h| h.strip_prefix("Basic "))
        .ok_or_else(unauthorized)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| unauthorized())?;
    let text = String::from_utf8(decoded).map_err(|_| unauthorized())?;
    let (name, password) = text.split_once(':').ok_or_else(unauthorized)?;
    let st = shared.lock();
    let user = st
        .users
        .iter()
        .find(|u| u.name == name && u.password == password)
        .ok_or_else(unauthorized)?;
    if !user.grants("rest-api") {
        return Err(error(500, "not allowed"));
    }
    Ok(())
}

fn take_fault(st: &mut State, method: &str, path: &str, query: &str) -> Option<FaultAction> {
    let i = st.faults.iter().position(|f| {
        f.times > 0
            && f.matches
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && f.matches
                .path
                .as_deref()
                .is_none_or(|p| path.starts_with(p))
            && f.matches.query.as_deref().is_none_or(|q| query.contains(q))
    })?;
    let fault = &mut st.faults[i];
    if fault.skip > 0 {
        fault.skip -= 1;
        return None;
    }
    fault.times -= 1;
    let action = fault.action.clone();
    if fault.times == 0 {
        st.faults.remove(i);
    }
    Some(action)
}

fn route(st: &mut State, method: &str, req: &Request) -> Response {
    let Some(rest) = req.path.strip_prefix("/rest/") else {
        return error(404, "");
    };
    // The read-only menus the takeover preflight asks.
    match (rest.trim_end_matches('/'), method) {
        ("user", "GET") => return list(req, st.users.iter().map(user_item).collect()),
        ("user/group", "GET") => return list(req, st.users.iter().map(group_item).collect()),
        ("ip/service", "GET") => return list(req, services(st.tls)),
        // A menu of one item: its GET answers the object, not a list.
        ("system/clock", "GET") => return ok(Value::from(clock(st.now()))),
        ("system/health", "GET") => return list(req, health(st)),
        ("disk/monitor-traffic", "POST") => return monitor_traffic(st, req),
        _ => {}
    }
    let (menu, id) = match rest.split_once('/') {
        Some((m, id)) => (m, Some(id)),
        None => (rest.trim_end_matches('/'), None),
    };
    let body = || -> Result<Map<String, Value>, Response> {
        match serde_json::from_slice::<Value>(&req.body) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(error(400, "JSON object expected")),
        }
    };
    match (menu, method, id) {
        ("disk", "GET", None) => list(req, st.disks.keys().map(|k| st.render_disk(*k)).collect()),
        ("file", "GET", None) => list(req, st.files.values().map(render_file).collect()),
        ("disk", "GET", Some(id)) => match parse_id(id).filter(|k| st.disks.contains_key(k)) {
            Some(k) => ok(Value::from(st.render_disk(k))),
            None => error(404, ""),
        },
        ("file", "GET", Some(id)) => match parse_id(id).and_then(|k| st.files.get(&k)) {
            Some(f) => ok(Value::from(render_file(f))),
            None => error(404, ""),
        },
        ("disk", "PUT", None) => match body() {
            Ok(b) => add_disk(st, b),
            Err(r) => r,
        },
        ("disk", "PATCH", Some(id)) => match body() {
            Ok(b) => set_disk(st, id, b),
            Err(r) => r,
        },
        ("disk", "DELETE", Some(id)) => match parse_id(id) {
            Some(k) if k != st.pool_id && st.disks.remove(&k).is_some() => {
                Response::json(204, Vec::new())
            }
            Some(k) if k == st.pool_id => error(400, "failure: cannot remove a mounted disk"),
            _ => error(404, ""),
        },
        ("file", "DELETE", Some(id)) => remove_file(st, id),
        ("disk" | "file", _, _) => error(400, "no such command"),
        _ => error(400, "no such command prefix"),
    }
}

fn render_file(f: &crate::FileEntry) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(".id".into(), Value::from(f.id.clone()));
    m.insert("name".into(), Value::from(f.name.clone()));
    m.insert("type".into(), Value::from(f.kind.clone()));
    m.insert("size".into(), Value::from(f.size.to_string()));
    let (date, time) = date_time(f.created);
    m.insert(
        "creation-time".into(),
        Value::from(format!("{date} {time}")),
    );
    m.insert(
        "last-modified".into(),
        Value::from(format!("{date} {time}")),
    );
    m
}

/// `/system/health` as RouterOS 7 lists it: one item per sensor.
fn health(st: &State) -> Vec<Map<String, Value>> {
    st.sensors
        .iter()
        .enumerate()
        .map(|(i, (name, value, kind))| {
            let mut m = Map::new();
            m.insert(".id".into(), Value::from(format!("*{:X}", i + 1)));
            m.insert("name".into(), Value::from(name.clone()));
            m.insert("value".into(), Value::from(value.clone()));
            m.insert("type".into(), Value::from(kind.clone()));
            m
        })
        .collect()
}

/// What every disk reports before [`crate::Emulator::set_traffic`]
/// changes it: the fields of `/disk monitor-traffic … once`.
const QUIET: &[(&str, &str)] = &[
    ("read-ops", "0"),
    ("read-ops-per-second", "0"),
    ("read-bytes", "0"),
    ("read-rate", "0bps"),
    ("read-merges", "0"),
    ("read-time", "0ms"),
    ("write-ops", "0"),
    ("write-ops-per-second", "0"),
    ("write-bytes", "0"),
    ("write-rate", "0bps"),
    ("write-merges", "0"),
    ("write-time", "0ms"),
    ("in-flight-ops", "0"),
    ("active-time", "0ms"),
    ("wait-time", "0ms"),
    ("discard-ops", "0"),
    ("discard-time", "0ms"),
    ("flush-ops", "0"),
    ("flush-time", "0ms"),
];

/// `/disk monitor-traffic <numbers> once`: one item per disk named (by
/// slot or `.id`, comma-separated), in that order. A name that is no disk
/// fails the whole command, as RouterOS fails an unknown item; without
/// `once` the command would run until stopped, which REST cannot carry.
fn monitor_traffic(st: &State, req: &Request) -> Response {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&req.body) else {
        return error(400, "JSON object expected");
    };
    if !body.contains_key("once") && !body.contains_key("duration") {
        return error(400, "interrupted");
    }
    let Some(numbers) = body.get("numbers").and_then(Value::as_str) else {
        return error(400, "missing =numbers=");
    };
    let by_slot: std::collections::HashMap<&str, u64> = st
        .disks
        .iter()
        .filter_map(|(k, d)| Some((d.get("slot")?.as_str(), *k)))
        .collect();
    let mut out = Vec::new();
    for name in numbers.split(',').filter(|n| !n.is_empty()) {
        let key = parse_id(name)
            .filter(|k| st.disks.contains_key(k))
            .or_else(|| by_slot.get(name).copied());
        let Some(key) = key else {
            return error(400, "no such item");
        };
        let slot = st.disks[&key].get("slot").cloned().unwrap_or_default();
        let mut m = Map::new();
        m.insert("slot".into(), Value::from(slot.clone()));
        for (k, v) in QUIET {
            m.insert(k.to_string(), Value::from(*v));
        }
        for (k, v) in st.traffic.get(&slot).into_iter().flatten() {
            m.insert(k.clone(), Value::from(v.clone()));
        }
        out.push(Value::Object(m));
    }
    ok(Value::Array(out))
}

/// `/system/clock` as RouterOS 7.10 and later print it.
fn clock(now: i64) -> Map<String, Value> {
    let (date, time) = date_time(now);
    let mut m = Map::new();
    for (k, v) in [
        ("date", date),
        ("time", time),
        ("time-zone-autodetect", "true".into()),
        ("time-zone-name", "UTC".into()),
        ("gmt-offset", "+00:00".into()),
        ("dst-active", "false".into()),
    ] {
        m.insert(k.into(), Value::from(v));
    }
    m
}

/// `YYYY-MM-DD` and `HH:MM:SS` of `secs` since 1970-01-01, as RouterOS
/// 7.10 and later print dates and times.
fn date_time(secs: i64) -> (String, String) {
    let (days, of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days to a civil date, counting 400-year eras from 0000-03-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (
        format!("{year:04}-{month:02}-{day:02}"),
        format!(
            "{:02}:{:02}:{:02}",
            of_day / 3600,
            of_day / 60 % 60,
            of_day % 60
        ),
    )
}

/// Equality filters from the query; `.proplist` keeps only the named
/// properties (and `.id`).
fn list(req: &Request, items: Vec<Map<String, Value>>) -> Response {
    let proplist: Option<Vec<&str>> = req.query(".proplist").map(|p| p.split(',').collect());
    let filters: Vec<&(String, String)> = req
        .query
        .iter()
        .filter(|(k, _)| !k.starts_with('.'))
        .collect();
    let out: Vec<Value> = items
        .into_iter()
        .filter(|item| {
            filters
                .iter()
                .all(|(k, v)| item.get(k).and_then(Value::as_str) == Some(v.as_str()))
        })
        .map(|mut item| {
            if let Some(props) = &proplist {
                item.retain(|k, _| k == ".id" || props.contains(&k.as_str()));
            }
            Value::Object(item)
        })
        .collect();
    ok(Value::Array(out))
}

fn item(pairs: &[(&str, String)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
        .collect()
}

/// A `/user` item: every user is in a group of its own name.
fn user_item(u: &crate::User) -> Map<String, Value> {
    item(&[
        (".id", format!("*{}", 1 + u.name.len())),
        ("name", u.name.clone()),
        ("group", u.name.clone()),
        ("address", String::new()),
        ("disabled", "false".into()),
    ])
}

/// A `/user/group` item, its policies as RouterOS prints them: each of
/// [`crate::POLICIES`], granted or `!`denied.
fn group_item(u: &crate::User) -> Map<String, Value> {
    let policy: Vec<String> = crate::POLICIES
        .iter()
        .map(|p| {
            if u.grants(p) {
                p.to_string()
            } else {
                format!("!{p}")
            }
        })
        .collect();
    item(&[
        (".id", format!("*{}", 10 + u.name.len())),
        ("name", u.name.clone()),
        ("policy", policy.join(",")),
        ("skin", "default".into()),
    ])
}

/// `/ip/service`: the web services, the one this emulator serves enabled.
fn services(tls: bool) -> Vec<Map<String, Value>> {
    [
        ("*7", "www", "80", !tls),
        ("*8", "www-ssl", "443", tls),
        ("*9", "api", "8728", true),
    ]
    .iter()
    .map(|(id, name, port, on)| {
        item(&[
            (".id", id.to_string()),
            ("name", name.to_string()),
            ("port", port.to_string()),
            ("address", String::new()),
            ("disabled", (!on).to_string()),
            (
                "certificate",
                if *name == "www-ssl" {
                    "rds-emulator".into()
                } else {
                    String::new()
                },
            ),
        ])
    })
    .collect()
}

/// Properties a `type=file` disk takes.
const FILE_DISK_PROPS: &[&str] = &[
    "type",
    "slot",
    "file-path",
    "file-size",
    "nvme-tcp-export",
    "nvme-tcp-server-port",
    "nvme-tcp-server-nqn",
    "comment",
    "disabled",
    "copy-from",
];

/// A value as RouterOS takes it: strings, numbers and booleans alike.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `1073741824`, `10G`, `512M`, `2T` (binary units, as RouterOS reads them).
fn size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let n: u64 = digits.parse().ok()?;
    let shift = match unit {
        "" => 0,
        "k" | "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        "T" | "TiB" => 40,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

fn boolean(s: &str) -> Option<&'static str> {
    match s {
        "yes" | "true" => Some("true"),
        "no" | "false" => Some("false"),
        _ => None,
    }
}

/// Checks and normalises the properties of a file disk; `existing` is the
/// stored item for a set.
fn file_disk_props(body: Map<String, Value>, existing: Option<&Item>) -> Result<Item, Response> {
    let mut item = existing.cloned().unwrap_or_default();
    for (k, v) in body {
        if k == ".id" {
            continue;
        }
        if !FILE_DISK_PROPS.contains(&k.as_str()) {
            return Err(error(400, &format!("unknown parameter {k}")));
        }
        let v = text(&v).ok_or_else(|| error(400, &format!("invalid value for argument {k}")))?;
        let v = match k.as_str() {
            "nvme-tcp-export" | "disabled" => boolean(&v)
                .ok_or_else(|| error(400, &format!("invalid value for argument {k}")))?
                .to_string(),
            "nvme-tcp-server-port" => match v.parse::<u16>() {
                Ok(p) if p > 0 => p.to_string(),
                _ => return Err(error(400, &format!("invalid value for argument {k}"))),
            },
            "file-path" => v.trim_start_matches('/').to_string(),
            _ => v,
        };
        item.insert(k, v);
    }
    Ok(item)
}

fn add_disk(st: &mut State, body: Map<String, Value>) -> Response {
    let kind = body.get("type").and_then(text).unwrap_or_default();
    if kind != "file" {
        return error(400, &format!("failure: cannot add disk of type {kind:?}"));
    }
    let mut item = match file_disk_props(body, None) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let Some(path) = item.get("file-path").cloned().filter(|p| !p.is_empty()) else {
        return error(400, "missing value(s) of argument(s) file-path");
    };
    let slot = item.get("slot").cloned().unwrap_or_default();
    if !slot.is_empty() && st.disks.values().any(|d| d.get("slot") == Some(&slot)) {
        return error(400, "failure: slot already in use");
    }
    if st.disks.values().any(|d| d.get("file-path") == Some(&path)) {
        return error(400, "failure: file already used by another disk");
    }
    let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    let mounted = dir == st.mount_point || dir.starts_with(&format!("{}/", st.mount_point));
    if !mounted {
        return error(400, "failure: no such directory");
    }
    let want = match item.get("file-size").map(|s| size(s)) {
        Some(Some(n)) => Some(n),
        Some(None) => return error(400, "invalid value for argument file-size"),
        None => None,
    };
    // `copy-from=<.id of a file disk>`: a new file holding a copy of that
    // disk's file (grown to file-size when larger), made before the add
    // answers. An existing file at the path is refused, never overwritten.
    if let Some(from) = item.remove("copy-from") {
        let source = parse_id(&from)
            .and_then(|k| st.disks.get(&k))
            .filter(|d| d.get("type").map(String::as_str) == Some("file"))
            .and_then(|d| d.get("file-path").cloned());
        let Some(source) = source.and_then(|p| st.file_named(&p).cloned()) else {
            return error(400, &format!("failure: copy-from: no file disk {from}"));
        };
        if st.file_named(&path).is_some() {
            return error(400, "failure: file already exists");
        }
        let n = want.unwrap_or(source.size).max(source.size);
        if n > st.free() {
            return error(400, "failure: not enough space");
        }
        make_dirs(st, &path);
        st.insert_file(&path, ".img file", n);
        if let Some(f) = st.file_named_mut(&path) {
            f.data = source.data;
        }
        item.remove("file-size");
        item.entry("nvme-tcp-export".into())
            .or_insert_with(|| "false".into());
        let id = st.insert_disk(item);
        return ok(Value::from(st.render_disk(parse_id(&id).expect("own id"))));
    }
    match st.file_named(&path).map(|f| f.size) {
        // An existing file is taken over, grown to file-size if larger.
        Some(have) => {
            if let Some(n) = want.filter(|n| *n > have) {
                if n - have > st.free() {
                    return error(400, "failure: not enough space");
                }
                set_file_size(st, &path, n);
            }
        }
        None => {
            let Some(n) = want else {
                return error(400, "missing value(s) of argument(s) file-size");
            };
            if n > st.free() {
                return error(400, "failure: not enough space");
            }
            make_dirs(st, &path);
            st.insert_file(&path, ".img file", n);
        }
    }
    item.remove("file-size");
    item.entry("nvme-tcp-export".into())
        .or_insert_with(|| "false".into());
    let id = st.insert_disk(item);
    ok(Value::from(st.render_disk(parse_id(&id).expect("own id"))))
}

fn set_disk(st: &mut State, id: &str, body: Map<String, Value>) -> Response {
    let Some(key) = parse_id(id).filter(|k| st.disks.contains_key(k)) else {
        return error(404, "");
    };
    if key == st.pool_id {
        return error(400, "failure: cannot change a mounted disk");
    }
    let existing = st.disks[&key].clone();
    let mut item = match file_disk_props(body, Some(&existing)) {
        Ok(i) => i,
        Err(r) => return r,
    };
    if item.get("type") != existing.get("type")
        || item.get("file-path") != existing.get("file-path")
    {
        return error(400, "failure: type and file-path cannot be changed");
    }
    if let Some(raw) = item.remove("file-size") {
        let Some(n) = size(&raw) else {
            return error(400, "invalid value for argument file-size");
        };
        let path = item.get("file-path").cloned().unwrap_or_default();
        let have = st.file_named(&path).map(|f| f.size).unwrap_or(0);
        if n < have {
            return error(400, "failure: cannot shrink file");
        }
        if n - have > st.free() {
            return error(400, "failure: not enough space");
        }
        set_file_size(st, &path, n);
    }
    st.disks.insert(key, item);
    ok(Value::from(st.render_disk(key)))
}

fn remove_file(st: &mut State, id: &str) -> Response {
    let Some(key) = parse_id(id).filter(|k| st.files.contains_key(k)) else {
        return error(404, "");
    };
    let name = st.files[&key].name.clone();
    if st.disks.values().any(|d| d.get("file-path") == Some(&name)) {
        return error(400, "failure: file is in use");
    }
    if st.files[&key].kind == "disk" {
        return error(400, "failure: cannot remove a disk");
    }
    st.remove_file(key);
    Response::json(204, Vec::new())
}

fn set_file_size(st: &mut State, name: &str, n: u64) {
    if let Some(f) = st.file_named_mut(name) {
        f.size = n;
    }
}

/// The directories above `path` appear in `/file` as RouterOS shows them.
fn make_dirs(st: &mut State, path: &str) {
    let mut dir = String::new();
    let parts: Vec<&str> = path.split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        if !dir.is_empty() {
            dir.push('/');
        }
        dir.push_str(part);
        if st.file_named(&dir).is_none() {
            st.insert_file(&dir.clone(), "directory", 0);
        }
    }
}

/// `/emulator/*`:
/// - `POST /emulator/faults` with a [`Fault`] body; `DELETE` clears all
/// - `POST /emulator/refuse` `{"on": true}`
/// - `GET /emulator/state`: `{"disks": [...], "files": [...], "free": N}`
/// - `GET /emulator/requests`; `DELETE` clears
/// - `POST /emulator/write` `{"file": NAME, "data": TEXT}`: what a node
///   writing to the volume leaves in its file; `GET /emulator/read?file=NAME`
///   answers `{"data": TEXT}`
fn admin(shared: &Shared, req: &Request) -> Response {
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let done = || Response::json(200, b"{}".to_vec());
    match (req.method.as_str(), req.path.as_str()) {
        ("POST", "/emulator/faults") => match serde_json::from_value::<Fault>(body) {
            Ok(f) => {
                shared.lock().faults.push(f);
                done()
            }
            Err(e) => error(400, &format!("fault: {e}")),
        },
        ("DELETE", "/emulator/faults") => {
            shared.lock().faults.clear();
            done()
        }
        ("POST", "/emulator/refuse") => {
            shared
                .refusing
                .store(body["on"].as_bool().unwrap_or(true), Ordering::SeqCst);
            done()
        }
        ("GET", "/emulator/state") => {
            let st = shared.lock();
            let disks: Vec<Value> = st
                .disks
                .keys()
                .map(|k| Value::from(st.render_disk(*k)))
                .collect();
            ok(
                json!({"disks": disks, "files": st.files.values().cloned().collect::<Vec<_>>(), "free": st.free()}),
            )
        }
        ("POST", "/emulator/write") => {
            let (Some(name), Some(data)) = (body["file"].as_str(), body["data"].as_str()) else {
                return error(400, "write: file and data are required");
            };
            let mut st = shared.lock();
            match st.file_named_mut(name.trim_start_matches('/')) {
                Some(f) => {
                    f.data = data.as_bytes().to_vec();
                    done()
                }
                None => error(404, ""),
            }
        }
        ("GET", "/emulator/read") => {
            let name = req
                .query
                .iter()
                .find(|(k, _)| k == "file")
                .map_or("", |(_, v)| v.as_str());
            let st = shared.lock();
            match st.file_named(name.trim_start_matches('/')) {
                Some(f) => ok(json!({"data": String::from_utf8_lossy(&f.data)})),
                None => error(404, ""),
            }
        }
        ("GET", "/emulator/requests") => {
            ok(serde_json::to_value(&shared.lock().requests).unwrap_or_default())
        }
        ("DELETE", "/emulator/requests") => {
            shared.lock().requests.clear();
            done()
        }
        _ => error(404, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format_id;

    #[test]
    fn sizes_read_as_routeros_reads_them() {
        assert_eq!(size("1073741824"), Some(1 << 30));
        assert_eq!(size("10G"), Some(10 << 30));
        assert_eq!(size("512M"), Some(512 << 20));
        assert_eq!(size("1.5G"), None);
        assert_eq!(size("x"), None);
        assert_eq!(format_id(26), "*1A");
        assert_eq!(parse_id("*1A"), Some(26));
        assert_eq!(parse_id("1A"), None);
    }
}
