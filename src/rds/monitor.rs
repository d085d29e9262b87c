//! What RouterOS answers to the two monitoring reads, decoded leniently:
//! `/system/health` (the device's sensors) and `/disk monitor-traffic …
//! once` (each disk's I/O counters). Neither is verified on a device here
//! (README.md, "What is relied on about RouterOS"): a field or unit not
//! understood is skipped and named in the result's `skipped`, never fatal,
//! and a value is a string (`"45"`, `"12.8Mbps"`, `"17 667 231"`) or a
//! JSON number.

use std::fmt;

use serde::de::{
    value::MapAccessDeserializer, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess,
    Visitor,
};
use serde_json::Value;

/// One sensor of `/system/health`: `cpu-temperature` 45 `C`, `fan1-speed`
/// 4200 `RPM`. A state (`psu1-state` `ok`/`fail`) reads 1/0, unit `state`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sensor {
    pub name: String,
    pub value: f64,
    /// RouterOS's `type`, as it sends it (`C`, `RPM`, `W`, `V`, `A`).
    pub unit: String,
}

/// What one read decoded, and what it could not.
#[derive(Debug, PartialEq)]
pub struct Decoded<T> {
    pub items: Vec<T>,
    pub skipped: Skipped,
}

impl<T> Default for Decoded<T> {
    fn default() -> Self {
        Decoded {
            items: Vec::new(),
            skipped: Skipped::default(),
        }
    }
}

/// Fields or values not understood: how many, and the first
/// [`MAX_SKIPPED`] as `field=value`.
#[derive(Debug, Default, PartialEq)]
pub struct Skipped {
    pub names: Vec<String>,
    pub count: u32,
}

/// The most skipped fields named in one [`Skipped`] (the count goes on).
pub const MAX_SKIPPED: usize = 16;

/// The most sensors kept from one answer: a device has a dozen; the rest
/// are skipped, so that a strange answer cannot grow the metrics.
pub const MAX_SENSORS: usize = 64;

impl Skipped {
    fn add(&mut self, what: impl FnOnce() -> String) {
        self.count += 1;
        if self.names.len() < MAX_SKIPPED {
            self.names.push(what());
        }
    }

    /// Adds `other`'s to these.
    pub fn merge(&mut self, other: Skipped) {
        self.count += other.count;
        let room = MAX_SKIPPED.saturating_sub(self.names.len());
        self.names.extend(other.names.into_iter().take(room));
    }
}

/// Decodes `/system/health`: a list of `{name, value, type}`. An item
/// without a name, or whose value is neither a number nor a known state,
/// is skipped.
pub fn sensors(answer: &Value) -> Decoded<Sensor> {
    let mut out = Decoded::default();
    let Some(items) = answer.as_array() else {
        out.skipped.add(|| "the answer is not a list".into());
        return out;
    };
    for item in items {
        let name = item.get("name").and_then(Value::as_str).unwrap_or("");
        let unit = item.get("type").and_then(Value::as_str).unwrap_or("");
        let raw = Scalar::of(item.get("value"));
        let state = matches!(&raw, Scalar::Text(s) if s == "ok" || s == "fail");
        let value = match &raw {
            Scalar::Text(s) if s == "ok" => Some(1.0),
            Scalar::Text(s) if s == "fail" => Some(0.0),
            v => number(v),
        };
        match value {
            Some(value) if !name.is_empty() && out.items.len() < MAX_SENSORS => {
                out.items.push(Sensor {
                    name: name.to_string(),
                    value,
                    unit: if state {
                        "state".into()
                    } else {
                        unit.to_string()
                    },
                })
            }
            _ => out.skipped.add(|| format!("{name}={}", raw.shown())),
        }
    }
    out
}

/// One disk's I/O as `/disk monitor-traffic` reports it. Cumulative
/// counts (`*_ops`, `*_bytes`, `*_seconds`) since the disk appeared, and
/// the rates and times RouterOS works out over its last second. `None`:
/// not reported, or not understood.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Traffic {
    pub slot: String,
    pub read_ops: Option<f64>,
    pub write_ops: Option<f64>,
    pub read_bytes: Option<f64>,
    pub write_bytes: Option<f64>,
    /// `read-time`, `write-time`, `wait-time`, `active-time`, in seconds.
    pub read_seconds: Option<f64>,
    pub write_seconds: Option<f64>,
    pub wait_seconds: Option<f64>,
    pub active_seconds: Option<f64>,
    pub in_flight_ops: Option<f64>,
    pub read_ops_per_second: Option<f64>,
    pub write_ops_per_second: Option<f64>,
    /// `read-rate` and `write-rate` (bits per second), in bytes per second.
    pub read_bytes_per_second: Option<f64>,
    pub write_bytes_per_second: Option<f64>,
}

/// Decodes the answer to `/disk monitor-traffic` with several disks, as
/// it is read (no tree of the whole answer: 10 000 disks answer some
/// megabytes): a list with one object per disk, named by its `slot` (a
/// single object is taken as a list of one). An item without a slot, or
/// that is not an object, is skipped whole; fields known and not kept
/// (`*-merges`, `discard-*`, `flush-*`) are passed over; any other field,
/// or a value not understood, is skipped. Only bytes that are not JSON
/// fail.
pub fn traffic(answer: &[u8]) -> serde_json::Result<Decoded<Traffic>> {
    serde_json::from_slice::<TrafficAnswer>(answer).map(|a| a.0)
}

/// The visitor methods for every JSON scalar, each answering `$made`.
macro_rules! scalars_are {
    ($out:ty, $made:expr) => {
        fn visit_str<E>(self, _: &str) -> Result<$out, E> {
            Ok($made)
        }
        fn visit_f64<E>(self, _: f64) -> Result<$out, E> {
            Ok($made)
        }
        fn visit_i64<E>(self, _: i64) -> Result<$out, E> {
            Ok($made)
        }
        fn visit_u64<E>(self, _: u64) -> Result<$out, E> {
            Ok($made)
        }
        fn visit_bool<E>(self, _: bool) -> Result<$out, E> {
            Ok($made)
        }
        fn visit_unit<E>(self) -> Result<$out, E> {
            Ok($made)
        }
    };
}

struct TrafficAnswer(Decoded<Traffic>);

impl<'de> Deserialize<'de> for TrafficAnswer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TrafficAnswer;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of disks")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TrafficAnswer, A::Error> {
                let mut out = Decoded::default();
                while let Some(item) = seq.next_element::<TrafficItem>()? {
                    item.into(&mut out);
                }
                Ok(TrafficAnswer(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TrafficAnswer, A::Error> {
                let item = TrafficItem::deserialize(MapAccessDeserializer::new(map))?;
                let mut out = Decoded::default();
                item.into(&mut out);
                Ok(TrafficAnswer(out))
            }
            scalars_are!(TrafficAnswer, TrafficAnswer::not_a_list());
        }
        d.deserialize_any(V)
    }
}

impl TrafficAnswer {
    fn not_a_list() -> TrafficAnswer {
        let mut out = Decoded::default();
        out.skipped.add(|| "the answer is not a list".into());
        TrafficAnswer(out)
    }
}

/// One item of the answer: the disk's traffic (`None` without a slot),
/// what was skipped in it, and whether it was an object at all.
struct TrafficItem {
    traffic: Option<Traffic>,
    skipped: Skipped,
    object: bool,
}

impl TrafficItem {
    fn into(self, out: &mut Decoded<Traffic>) {
        out.skipped.merge(self.skipped);
        match self.traffic {
            Some(t) => out.items.push(t),
            None if self.object => out.skipped.add(|| "an item without a slot".into()),
            None => out.skipped.add(|| "an item that is not an object".into()),
        }
    }
}

impl<'de> Deserialize<'de> for TrafficItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TrafficItem;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a disk's traffic")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TrafficItem, A::Error> {
                let (mut t, mut skipped, mut slot) = (Traffic::default(), Skipped::default(), None);
                while let Some(key) = map.next_key::<String>()? {
                    let v = map.next_value::<Scalar>()?;
                    if key == "slot" {
                        match v {
                            Scalar::Text(s) => slot = Some(s),
                            other => skipped.add(|| format!("slot={}", other.shown())),
                        }
                    } else if !t.set(&key, &v) {
                        skipped.add(|| format!("{key}={}", v.shown()));
                    }
                }
                Ok(TrafficItem {
                    traffic: slot.map(|slot| Traffic { slot, ..t }),
                    skipped,
                    object: true,
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TrafficItem, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(TrafficItem::other())
            }
            scalars_are!(TrafficItem, TrafficItem::other());
        }
        d.deserialize_any(V)
    }
}

impl TrafficItem {
    fn other() -> TrafficItem {
        TrafficItem {
            traffic: None,
            skipped: Skipped::default(),
            object: false,
        }
    }
}

impl Traffic {
    /// Sets the field `key` from `v`: false when the field is unknown or
    /// its value not understood (fields known and not kept are true).
    fn set(&mut self, key: &str, v: &Scalar) -> bool {
        let (place, parse): (&mut Option<f64>, Parse) = match key {
            ".id" | ".nextid" => return true,
            "read-ops" => (&mut self.read_ops, number),
            "write-ops" => (&mut self.write_ops, number),
            "read-bytes" => (&mut self.read_bytes, bytes),
            "write-bytes" => (&mut self.write_bytes, bytes),
            "read-time" => (&mut self.read_seconds, seconds),
            "write-time" => (&mut self.write_seconds, seconds),
            "wait-time" => (&mut self.wait_seconds, seconds),
            "active-time" => (&mut self.active_seconds, seconds),
            "in-flight-ops" => (&mut self.in_flight_ops, number),
            "read-ops-per-second" => (&mut self.read_ops_per_second, number),
            "write-ops-per-second" => (&mut self.write_ops_per_second, number),
            "read-rate" => (&mut self.read_bytes_per_second, bytes_per_second),
            "write-rate" => (&mut self.write_bytes_per_second, bytes_per_second),
            k if k.ends_with("-merges") || k.starts_with("discard-") || k.starts_with("flush-") => {
                return true
            }
            _ => return false,
        };
        *place = parse(v);
        place.is_some()
    }
}

/// A value parser.
type Parse = fn(&Scalar) -> Option<f64>;

/// A field's JSON value, as the parsers take it: RouterOS sends strings;
/// a number is taken as one; anything else is not understood.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Text(String),
    Number(f64),
    /// `null`, `true`, a list or an object, drained.
    Other(&'static str),
}

impl Scalar {
    /// The value of a field of a decoded answer (absent: `Other`).
    pub fn of(v: Option<&Value>) -> Scalar {
        match v {
            Some(Value::String(s)) => Scalar::Text(s.clone()),
            Some(Value::Number(n)) => n.as_f64().map_or(Scalar::Other("a number"), Scalar::Number),
            Some(Value::Null) | None => Scalar::Other("(none)"),
            Some(Value::Bool(_)) => Scalar::Other("a boolean"),
            Some(Value::Array(_)) => Scalar::Other("a list"),
            Some(Value::Object(_)) => Scalar::Other("an object"),
        }
    }

    /// As a skipped field shows it: short, and printable.
    fn shown(&self) -> String {
        let s = match self {
            Scalar::Text(s) => s.as_str(),
            Scalar::Number(_) => "a number",
            Scalar::Other(what) => what,
        };
        s.chars()
            .take(32)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value")
            }
            fn visit_str<E>(self, s: &str) -> Result<Scalar, E> {
                Ok(Scalar::Text(s.to_string()))
            }
            fn visit_f64<E>(self, x: f64) -> Result<Scalar, E> {
                Ok(Scalar::Number(x))
            }
            fn visit_i64<E>(self, x: i64) -> Result<Scalar, E> {
                Ok(Scalar::Number(x as f64))
            }
            fn visit_u64<E>(self, x: u64) -> Result<Scalar, E> {
                Ok(Scalar::Number(x as f64))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Scalar, E> {
                Ok(Scalar::Other("a boolean"))
            }
            fn visit_unit<E>(self) -> Result<Scalar, E> {
                Ok(Scalar::Other("(none)"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other("a list"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other("an object"))
            }
        }
        d.deserialize_any(V)
    }
}

/// A plain number: a JSON number, or a string of digits with an optional
/// fraction and sign, digits grouped by spaces as RouterOS prints them
/// (`17 667 231`).
pub fn number(v: &Scalar) -> Option<f64> {
    match v {
        Scalar::Number(x) => Some(*x).filter(|x| x.is_finite()),
        Scalar::Text(s) => plain(s),
        Scalar::Other(_) => None,
    }
}

fn plain(s: &str) -> Option<f64> {
    let s: String = s.trim().chars().filter(|c| *c != ' ').collect();
    let digits = s.strip_prefix('-').unwrap_or(&s);
    let ok = !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
        && digits.chars().filter(|c| *c == '.').count() <= 1
        && digits.chars().any(|c| c.is_ascii_digit());
    ok.then(|| s.parse().ok())
        .flatten()
        .filter(|x: &f64| x.is_finite())
}

/// A number and the unit that follows it (`12.8Mbps` → 12.8, `Mbps`).
fn split_unit(s: &str) -> (&str, &str) {
    let s = s.trim();
    let at = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ' ' || c == '-'))
        .unwrap_or(s.len());
    (&s[..at], s[at..].trim())
}

/// A byte count: plain, or with a binary unit as RouterOS prints sizes
/// (`B`, `KiB`, `MiB`, `GiB`, `TiB`).
pub fn bytes(v: &Scalar) -> Option<f64> {
    let Scalar::Text(s) = v else {
        return number(v);
    };
    let (n, unit) = split_unit(s);
    let scale = match unit {
        "" | "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(plain(n)? * scale).filter(|x| x.is_finite())
}

/// A rate in bits per second as RouterOS prints it (`0bps`, `512kbps`,
/// `12.8Mbps`, `1.5Gbps`), in bytes per second.
pub fn bytes_per_second(v: &Scalar) -> Option<f64> {
    let Scalar::Text(s) = v else {
        return number(v).map(|bits| bits / 8.0);
    };
    let (n, unit) = split_unit(s);
    let scale = match unit {
        "bps" => 1.0,
        "kbps" | "Kbps" => 1e3,
        "Mbps" => 1e6,
        "Gbps" => 1e9,
        "Tbps" => 1e12,
        _ => return None,
    };
    Some(plain(n)? * scale / 8.0).filter(|x| x.is_finite())
}

/// A time as RouterOS prints durations, in seconds: number-unit pairs
/// (`0ms`, `1s200ms`, `3m4s`, `1w2d3h`, units `w d h m s ms us ns`), or
/// `HH:MM:SS` with an optional fraction. A bare `0` is zero; any other
/// bare number has no unit, and is not understood.
pub fn seconds(v: &Scalar) -> Option<f64> {
    let Scalar::Text(s) = v else {
        return number(v).filter(|x| *x == 0.0);
    };
    let s: String = s.trim().chars().filter(|c| *c != ' ').collect();
    if s == "0" {
        return Some(0.0);
    }
    if s.contains(':') {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 3 {
            return None;
        }
        let mut total = 0.0;
        for (p, scale) in parts.iter().zip([3600.0, 60.0, 1.0]) {
            total += plain(p).filter(|x| *x >= 0.0)? * scale;
        }
        return Some(total).filter(|x| x.is_finite());
    }
    let (mut total, mut rest) = (0.0, s.as_str());
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let at = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n = plain(&rest[..at])?;
        rest = &rest[at..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "w" => 604_800.0,
            "d" => 86_400.0,
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_end..];
    }
    Some(total).filter(|x| x.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode(v: Value) -> Decoded<Traffic> {
        traffic(v.to_string().as_bytes()).unwrap()
    }

    fn text(s: &str) -> Scalar {
        Scalar::Text(s.into())
    }

    #[test]
    fn sensors_read_numbers_and_states_and_skip_the_rest() {
        let d = sensors(&json!([
            {".id": "*1", "name": "cpu-temperature", "value": "45", "type": "C"},
            {"name": "power-consumption", "value": "50.8", "type": "W"},
            {"name": "psu1-state", "value": "ok", "type": ""},
            {"name": "psu2-state", "value": "fail", "type": ""},
            {"name": "fan-mode", "value": "auto", "type": ""},
            {"value": "3"},
            {"name": "fan1-speed", "value": 4200, "type": "RPM"},
        ]));
        let got: Vec<(&str, f64, &str)> = d
            .items
            .iter()
            .map(|s| (s.name.as_str(), s.value, s.unit.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("cpu-temperature", 45.0, "C"),
                ("power-consumption", 50.8, "W"),
                ("psu1-state", 1.0, "state"),
                ("psu2-state", 0.0, "state"),
                ("fan1-speed", 4200.0, "RPM"),
            ]
        );
        assert_eq!(d.skipped.names, ["fan-mode=auto", "=3"]);
        assert_eq!(d.skipped.count, 2);
    }

    #[test]
    fn traffic_reads_counts_rates_and_times_and_names_what_it_skips() {
        let d = decode(json!([{
            "slot": "pvc-1",
            "read-ops": "17 667 231",
            "write-ops": "76",
            "read-bytes": "1.5KiB",
            "write-bytes": 4096,
            "read-time": "1s200ms",
            "write-time": "0ms",
            "wait-time": "00:01:02.5",
            "active-time": "3m",
            "in-flight-ops": "2",
            "read-rate": "12.8Mbps",
            "write-rate": "0bps",
            "read-merges": "3",
            "discard-ops": "0",
            "flush-time": "0ms",
            "temperature": "40",
            "read-ops-per-second": "lots",
            "write-merges": {"nested": [1]},
        }]));
        let t = &d.items[0];
        assert_eq!(t.slot, "pvc-1");
        assert_eq!(t.read_ops, Some(17_667_231.0));
        assert_eq!(t.write_ops, Some(76.0));
        assert_eq!(t.read_bytes, Some(1536.0));
        assert_eq!(t.write_bytes, Some(4096.0));
        assert_eq!(t.read_seconds, Some(1.2));
        assert_eq!(t.write_seconds, Some(0.0));
        assert_eq!(t.wait_seconds, Some(62.5));
        assert_eq!(t.active_seconds, Some(180.0));
        assert_eq!(t.in_flight_ops, Some(2.0));
        assert_eq!(t.read_bytes_per_second, Some(1_600_000.0));
        assert_eq!(t.write_bytes_per_second, Some(0.0));
        assert_eq!(t.read_ops_per_second, None);
        assert_eq!(
            d.skipped.names,
            ["read-ops-per-second=lots", "temperature=40"]
        );
    }

    #[test]
    fn traffic_takes_one_object_and_skips_items_without_a_slot() {
        let one = decode(json!({"slot": "a", "read-ops": "1"}));
        assert_eq!(one.items.len(), 1);
        let d = decode(json!([{"read-ops": "1"}, 7, [1], {"slot": "b"}, {"slot": 3}]));
        assert_eq!(d.items.len(), 1);
        assert_eq!(d.items[0].slot, "b");
        assert_eq!(d.skipped.count, 5);
        assert_eq!(decode(json!("x")).skipped.count, 1);
        assert!(traffic(b"[{\"slot\": ").is_err(), "not JSON: an error");
    }

    #[test]
    fn values_without_a_known_unit_are_not_guessed() {
        for s in ["12", "1x", "ms", "1.2.3s", "--1s", "1:2", "", " "] {
            assert_eq!(seconds(&text(s)), None, "{s:?}");
        }
        for s in ["1PiB", "1kB", "x", "1 2 3.4.5"] {
            assert_eq!(bytes(&text(s)), None, "{s:?}");
        }
        for s in ["12", "1Pbps", "Mbps"] {
            assert_eq!(bytes_per_second(&text(s)), None, "{s:?}");
        }
        assert_eq!(number(&text("1e400")), None);
        let huge = format!("{}w", "9".repeat(308));
        assert_eq!(seconds(&text(&huge)), None, "beyond f64: not a value");
        assert_eq!(number(&Scalar::Other("a boolean")), None);
        assert_eq!(seconds(&text("1w1d1h1m1s1ms")), Some(694_861.001));
        assert_eq!(bytes_per_second(&text("1kbps")), Some(125.0));
        assert_eq!(bytes_per_second(&Scalar::Number(800.0)), Some(100.0));
    }
}
