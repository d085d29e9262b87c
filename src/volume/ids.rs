//! Whose an ID is when one controller manages several RDS servers.
//!
//! - The **default** server keeps the Go driver's IDs: volumes `pvc-<uuid>`
//!   (or the CSI name when it is a valid slot), snapshots
//!   `snap-<uuid>-at-<10 hex>`. Nothing that exists changes.
//! - A **named** server `N` prefixes its IDs with its name: volumes
//!   `N-pvc-<uuid>`, snapshots `N-snap-<uuid>`. The uuid is the one of a
//!   provisioner's `pvc-<uuid>` name (so the slot names its PV), else the
//!   version-5 UUID of the CSI name, as the Go driver derives it.
//!
//! On every server the ID is the disk's slot, the file `<dir>/<ID>.img` and
//! the NQN `nqn.2000-02.com.mikrotik:<ID>`; every ID is lowercase letters,
//! digits and `-`, and only the default server's begin with `pvc-` (the Go
//! node plugin checks both at NodeUnstage). An ID names its server by its
//! shape alone ([`server_of`]): a call that carries only an ID reaches its
//! server without asking the others. A prefix that names no configured
//! server is the default server's.

use super::{check_volume_id, is_snapshot_id, snapshot_id, uuid_v5, volume_id_for};

/// The longest server name: a named server's snapshot ID is then at most
/// 16 + 1 + 41 = 58 characters, within a slot's 63.
pub const MAX_SERVER_NAME: usize = 16;

/// Whether `name` may name a server: 1 to [`MAX_SERVER_NAME`] lowercase
/// letters, digits and `-`, beginning with a letter and ending with a
/// letter or digit, and not beginning with `pvc` or `snap` (its IDs would
/// look like the default server's).
pub fn check_server_name(name: &str) -> Result<(), String> {
    let b = name.as_bytes();
    let ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || b.len() > MAX_SERVER_NAME {
        return Err(format!(
            "{name:?} must be 1 to {MAX_SERVER_NAME} characters"
        ));
    }
    if !b[0].is_ascii_lowercase() || !ok(&b[b.len() - 1]) || !b.iter().all(|c| ok(c) || *c == b'-')
    {
        return Err(format!(
            "{name:?} may hold only lowercase letters, digits and '-', beginning with a letter and ending with a letter or digit"
        ));
    }
    if name.starts_with("pvc") || name.starts_with("snap") {
        return Err(format!(
            "{name:?} must not begin with \"pvc\" or \"snap\": its IDs would look like the default server's"
        ));
    }
    Ok(())
}

/// What an ID is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Volume,
    Snapshot,
}

/// The server-name prefix of a named server's ID (`N-pvc-<uuid>`,
/// `N-snap-<uuid>`) and what the ID is; `None` for any other ID.
pub fn server_of(id: &str) -> Option<(&str, Kind)> {
    for (infix, kind) in [("-pvc-", Kind::Volume), ("-snap-", Kind::Snapshot)] {
        let tail = infix.len() + 36;
        if id.len() <= tail || !id.is_char_boundary(id.len() - tail) {
            continue;
        }
        let (prefix, rest) = id.split_at(id.len() - tail);
        if rest.starts_with(infix)
            && is_uuid(&rest[infix.len()..])
            && check_server_name(prefix).is_ok()
        {
            return Some((prefix, kind));
        }
    }
    None
}

/// Lowercase 8-4-4-4-12 hex.
fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

/// The uuid a named server's IDs carry for a CSI `name`: the one of a
/// provisioner's `pvc-<uuid>`, else the name's version-5 UUID.
fn uuid_of(name: &str) -> String {
    match name.strip_prefix("pvc-").filter(|u| is_uuid(u)) {
        Some(uuid) => uuid.to_string(),
        None => uuid_v5(name),
    }
}

/// One server's half of the scheme (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Naming {
    /// The default server; `others` are the named servers, whose IDs are
    /// never this one's.
    Default { others: Vec<String> },
    /// A named server.
    Named(String),
}

impl Naming {
    /// The volume ID of a CSI volume `name` on this server: the same name
    /// always gives the same ID, so a retry finds its volume.
    pub fn volume_id(&self, name: &str) -> String {
        match self {
            Naming::Default { .. } => {
                let id = volume_id_for(name);
                if self.is_volume(&id) {
                    id
                } else {
                    // A name shaped like another server's ID.
                    format!("pvc-{}", uuid_v5(name))
                }
            }
            Naming::Named(server) => format!("{server}-pvc-{}", uuid_of(name)),
        }
    }

    /// The snapshot ID of a CSI snapshot `name` on this server.
    pub fn snapshot_id(&self, name: &str) -> String {
        match self {
            Naming::Default { .. } => snapshot_id(name),
            Naming::Named(server) => format!("{server}-snap-{}", uuid_v5(name)),
        }
    }

    /// Whether `id` is the ID of a volume of this server's.
    pub fn is_volume(&self, id: &str) -> bool {
        check_volume_id(id).is_ok()
            && match (self, server_of(id)) {
                (Naming::Default { others }, Some((server, _))) => {
                    !others.iter().any(|o| o == server)
                }
                (Naming::Default { .. }, None) => true,
                (Naming::Named(me), Some((server, kind))) => me == server && kind == Kind::Volume,
                (Naming::Named(_), None) => false,
            }
    }

    /// Whether `id` is the ID of a snapshot of this server's.
    pub fn is_snapshot(&self, id: &str) -> bool {
        match self {
            Naming::Default { .. } => is_snapshot_id(id),
            Naming::Named(me) => server_of(id) == Some((me.as_str(), Kind::Snapshot)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "5ba1b200-f251-58f4-823e-da8d248db80e";

    fn default() -> Naming {
        Naming::Default {
            others: vec!["rds-b".into()],
        }
    }

    #[test]
    fn the_default_server_keeps_the_go_drivers_ids() {
        let pvc = format!("pvc-{UUID}");
        assert_eq!(default().volume_id(&pvc), pvc);
        assert_eq!(default().volume_id("PVC-Upper"), volume_id_for("PVC-Upper"));
        assert_eq!(default().snapshot_id("PVC-Upper"), snapshot_id("PVC-Upper"));
        assert!(default().is_volume(&pvc) && default().is_snapshot(&snapshot_id("x")));
        // A name shaped like a named server's ID is hashed, never taken as is.
        let theirs = format!("rds-b-pvc-{UUID}");
        assert_eq!(
            default().volume_id(&theirs),
            format!("pvc-{}", uuid_v5(&theirs))
        );
        assert!(!default().is_volume(&theirs));
        // A prefix no server has is the default server's.
        assert!(default().is_volume(&format!("rds-c-pvc-{UUID}")));
    }

    #[test]
    fn a_named_servers_ids_carry_its_name_and_pass_the_go_node_plugins_check() {
        let b = Naming::Named("rds-b".into());
        let id = b.volume_id(&format!("pvc-{UUID}"));
        assert_eq!(id, format!("rds-b-pvc-{UUID}"));
        assert_eq!(
            b.volume_id("sanity-x"),
            format!("rds-b-pvc-{}", uuid_v5("sanity-x"))
        );
        assert_eq!(server_of(&id), Some(("rds-b", Kind::Volume)));
        assert!(b.is_volume(&id) && !b.is_snapshot(&id));
        assert!(!id.starts_with("pvc-") && check_volume_id(&id).is_ok());
        let snap = b.snapshot_id("snapshot-1");
        assert_eq!(server_of(&snap), Some(("rds-b", Kind::Snapshot)));
        assert!(b.is_snapshot(&snap) && !b.is_volume(&snap) && !default().is_snapshot(&snap));
        assert!(!b.is_volume(&format!("pvc-{UUID}")));
        let longest = Naming::Named("a".repeat(MAX_SERVER_NAME)).snapshot_id("x");
        assert!(longest.len() <= 63, "{longest}");
    }

    #[test]
    fn server_names_that_would_blur_the_scheme_are_refused() {
        for ok in ["rds-b", "a", "rack2", "ssd-pool-1"] {
            assert!(check_server_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "B",
            "-a",
            "a-",
            "1a",
            "pvc",
            "pvc-x",
            "snapper",
            "a_b",
            &"a".repeat(17),
        ] {
            assert!(check_server_name(bad).is_err(), "{bad:?}");
        }
        for not in [
            format!("pvc-{UUID}"),
            format!("-pvc-{UUID}"),
            format!("X-pvc-{UUID}"),
            format!("rds-b-pvc-{}", UUID.to_uppercase()),
            "rds-b-pvc-1".into(),
        ] {
            assert_eq!(server_of(&not), None, "{not}");
        }
    }
}
