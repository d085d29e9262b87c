//! The attachment map's storage: one small entry per attached volume, so
//! that 100 000 PVs (25 000 attached) fit in a few MiB. A volume name of
//! the provisioner's shape (`pvc-<lower-case uuid>`) is kept as its 16
//! bytes, any other as a boxed string; a node is an index into a table of
//! the node names (each stored once); a time is whole microseconds, the
//! precision the PV annotations keep.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use super::manager::{AttachmentState, Migration};

/// A volume name, compact.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    /// `pvc-` and a lower-case UUID: its 16 bytes.
    Pvc([u8; 16]),
    Name(Box<str>),
}

impl Key {
    fn of(volume: &str) -> Key {
        parse_pvc(volume).map_or_else(|| Key::Name(volume.into()), Key::Pvc)
    }

    /// The volume name back (kept for the tests: nothing lists the map).
    #[cfg(test)]
    fn name(&self) -> String {
        match self {
            Key::Name(n) => n.to_string(),
            Key::Pvc(b) => {
                let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
                format!(
                    "pvc-{}-{}-{}-{}-{}",
                    &hex[..8],
                    &hex[8..12],
                    &hex[12..16],
                    &hex[16..20],
                    &hex[20..]
                )
            }
        }
    }
}

/// The 16 bytes of `pvc-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in lower-case
/// hex; `None` for any other name (so that [`Key::name`] gives back the
/// very string).
fn parse_pvc(volume: &str) -> Option<[u8; 16]> {
    let uuid = volume.strip_prefix("pvc-")?.as_bytes();
    if uuid.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    let mut nibbles = 0;
    for (i, &c) in uuid.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if c != b'-' {
                return None;
            }
            continue;
        }
        let v = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        out[nibbles / 2] |= if nibbles % 2 == 0 { v << 4 } else { v };
        nibbles += 1;
    }
    Some(out)
}

/// An attachment without its volume name: 16 bytes, so that an entry of
/// the map of `pvc-<uuid>` volumes is 32.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Microseconds since 1970 (negative before).
    attached_at: i64,
    node: u32,
}

/// Volume → attachment, with the node names interned.
#[derive(Debug, Default)]
pub(super) struct Table {
    /// Volumes named `pvc-<uuid>` (what the provisioner names them), by
    /// their 16 bytes.
    pvcs: HashMap<[u8; 16], Entry>,
    /// Volumes of any other name.
    named: HashMap<Box<str>, Entry>,
    /// Migrations in progress, by volume; rare, so kept out of the entries.
    migrations: HashMap<Key, Migration>,
    /// Node names by index; each stored once, never removed (a cluster
    /// has few nodes).
    nodes: Vec<Arc<str>>,
    node_ids: HashMap<Arc<str>, u32>,
}

impl Table {
    /// The shared name of `node`, added if new.
    pub(super) fn intern(&mut self, node: &str) -> Arc<str> {
        let id = self.node_id(node);
        self.nodes[id as usize].clone()
    }

    fn node_id(&mut self, node: &str) -> u32 {
        if let Some(id) = self.node_ids.get(node) {
            return *id;
        }
        let id = u32::try_from(self.nodes.len()).expect("fewer than 2^32 nodes");
        let name: Arc<str> = Arc::from(node);
        self.nodes.push(name.clone());
        self.node_ids.insert(name, id);
        id
    }

    #[cfg(test)]
    pub(super) fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub(super) fn get(&self, volume: &str) -> Option<AttachmentState> {
        let key = Key::of(volume);
        let entry = match &key {
            Key::Pvc(b) => self.pvcs.get(b),
            Key::Name(n) => self.named.get(n),
        }?;
        Some(AttachmentState {
            node: self.nodes[entry.node as usize].clone(),
            attached_at: time(entry.attached_at),
            migration: self.migration_of(&key).cloned().map(Box::new),
        })
    }

    /// Records `volume` held by `node` since `at`, with `migration`.
    pub(super) fn insert(
        &mut self,
        volume: &str,
        node: &str,
        at: SystemTime,
        migration: Option<(&str, SystemTime)>,
    ) {
        let entry = Entry {
            node: self.node_id(node),
            attached_at: micros(at),
        };
        let key = Key::of(volume);
        match migration {
            Some((n, started_at)) => {
                let m = Migration {
                    node: self.intern(n),
                    started_at,
                };
                self.migrations.insert(key.clone(), m);
            }
            None => self.forget_migration(&key),
        }
        match key {
            Key::Pvc(b) => self.pvcs.insert(b, entry),
            Key::Name(n) => self.named.insert(n, entry),
        };
    }

    pub(super) fn remove(&mut self, volume: &str) {
        let key = Key::of(volume);
        self.forget_migration(&key);
        match &key {
            Key::Pvc(b) => self.pvcs.remove(b),
            Key::Name(n) => self.named.remove(n),
        };
    }

    /// Ends `volume`'s migration, if it has one.
    pub(super) fn clear_migration(&mut self, volume: &str) {
        self.forget_migration(&Key::of(volume));
    }

    // Migrations are rare: with none, the hot paths skip hashing the key
    // a second time.
    fn migration_of(&self, key: &Key) -> Option<&Migration> {
        (!self.migrations.is_empty())
            .then(|| self.migrations.get(key))
            .flatten()
    }

    fn forget_migration(&mut self, key: &Key) {
        if !self.migrations.is_empty() {
            self.migrations.remove(key);
        }
    }

    pub(super) fn len(&self) -> usize {
        self.pvcs.len() + self.named.len()
    }

    pub(super) fn migrations(&self) -> usize {
        self.migrations.len()
    }
}

fn micros(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

fn time(us: i64) -> SystemTime {
    let d = Duration::from_micros(us.unsigned_abs());
    if us >= 0 {
        SystemTime::UNIX_EPOCH + d
    } else {
        SystemTime::UNIX_EPOCH - d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provisioner_names_are_kept_as_16_bytes_and_come_back_the_same() {
        let v = "pvc-5ba1b200-f251-58f4-823e-da8d248db80e";
        assert!(matches!(Key::of(v), Key::Pvc(_)));
        assert_eq!(Key::of(v).name(), v);
        // Anything else is kept as it is, upper case and odd shapes included.
        for other in [
            "pvc-5BA1B200-f251-58f4-823e-da8d248db80e",
            "pvc-5ba1b200f25158f4823eda8d248db80e",
            "pvc-5ba1b200-f251-58f4-823e-da8d248db80",
            "pvc-5ba1b200-f251-58f4-823e-da8d248db80e0",
            "pvc-5ba1b200_f251-58f4-823e-da8d248db80e",
            "vol-1",
            "",
        ] {
            assert!(matches!(Key::of(other), Key::Name(_)), "{other}");
            assert_eq!(Key::of(other).name(), other);
        }
        // An entry of the map of `pvc-<uuid>` volumes: key and value.
        assert_eq!(std::mem::size_of::<([u8; 16], Entry)>(), 32);
    }

    #[test]
    fn entries_keep_node_time_and_migration() {
        let mut t = Table::default();
        let at = SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        t.insert("pvc-00000000-0000-4000-8000-000000000001", "n1", at, None);
        t.insert("vol-2", "n1", at, Some(("n2", at)));
        assert_eq!(t.node_count(), 2);
        let a = t.get("pvc-00000000-0000-4000-8000-000000000001").unwrap();
        assert_eq!(
            (&*a.node, a.attached_at, a.migration.is_none()),
            ("n1", at, true)
        );
        let b = t.get("vol-2").unwrap();
        assert_eq!(&*b.migration.unwrap().node, "n2");
        assert_eq!((t.len(), t.migrations()), (2, 1));
        t.clear_migration("vol-2");
        t.remove("pvc-00000000-0000-4000-8000-000000000001");
        assert_eq!((t.len(), t.migrations()), (1, 0));
        let before = SystemTime::UNIX_EPOCH - Duration::from_micros(5);
        assert_eq!(time(micros(before)), before);
    }
}
