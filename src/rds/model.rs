//! The `/disk` and `/file` items we read and write, as RouterOS's REST API
//! spells them: every value a string, names kebab-case.

use serde::{Deserialize, Serialize};

/// One `/disk` item. Only the properties this controller reads; the rest
/// of what RouterOS sends is ignored. Missing properties read as empty.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Disk {
    #[serde(rename = ".id")]
    pub id: String,
    pub slot: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Path of the backing file, as RouterOS writes it (no leading `/`).
    #[serde(rename = "file-path")]
    pub file_path: String,
    #[serde(rename = "file-size")]
    pub file_size: String,
    #[serde(rename = "nvme-tcp-export")]
    pub nvme_tcp_export: String,
    #[serde(rename = "nvme-tcp-server-port")]
    pub nvme_tcp_server_port: String,
    #[serde(rename = "nvme-tcp-server-nqn")]
    pub nvme_tcp_server_nqn: String,
    #[serde(rename = "mount-point")]
    pub mount_point: String,
    pub size: String,
    pub free: String,
    /// Free text an operator (or this driver, for snapshot lineage) wrote.
    pub comment: String,
}

impl Disk {
    /// The size of the backing file in bytes (`file-size`, else `size`).
    pub fn file_bytes(&self) -> Option<u64> {
        bytes(&self.file_size).or_else(|| bytes(&self.size))
    }

    /// Free bytes of a mounted disk.
    pub fn free_bytes(&self) -> Option<u64> {
        bytes(&self.free)
    }

    pub fn exported(&self) -> bool {
        flag(&self.nvme_tcp_export)
    }

    /// `file-path` with a leading `/`, as volume contexts carry it.
    pub fn absolute_file_path(&self) -> String {
        format!("/{}", self.file_path.trim_start_matches('/'))
    }
}

/// One `/file` item.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct File {
    #[serde(rename = ".id")]
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub size: String,
    /// When RouterOS made the file, in the device's own time zone
    /// (`2024-03-15 10:11:12`, or `mar/15/2024 10:11:12` before v7.10;
    /// see [`wall_seconds`]).
    #[serde(rename = "creation-time")]
    pub creation_time: String,
}

/// `/system/clock`: the device's date and time, in its own time zone,
/// as [`File::creation_time`] is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Clock {
    pub date: String,
    pub time: String,
}

impl Clock {
    /// The device's time as [`wall_seconds`] counts it.
    pub fn seconds(&self) -> Option<i64> {
        wall_seconds(&format!("{} {}", self.date, self.time))
    }
}

/// A date and time as RouterOS prints them (`2024-03-15 10:11:12`, or
/// `mar/15/2024 10:11:12` as versions before 7.10 do) in seconds from
/// 1970-01-01 00:00:00 of the same time zone, whichever it is: two such
/// values subtract to an age. Anything else → `None`.
pub fn wall_seconds(s: &str) -> Option<i64> {
    let (date, time) = s.trim().split_once(' ')?;
    let num = |t: &str| -> Option<i64> {
        let ok = !t.is_empty() && t.len() <= 4 && t.bytes().all(|b| b.is_ascii_digit());
        ok.then(|| t.parse().ok()).flatten()
    };
    const MONTHS: &str = "janfebmaraprmayjunjulaugsepoctnovdec";
    let (y, m, d) = match date.split_once('/') {
        // mar/15/2024
        Some((month, rest)) => {
            let (day, year) = rest.split_once('/')?;
            let at = MONTHS
                .find(&month.to_ascii_lowercase())
                .filter(|i| month.len() == 3 && i % 3 == 0)?;
            (num(year)?, at as i64 / 3 + 1, num(day)?)
        }
        // 2024-03-15
        None => {
            let (year, rest) = date.split_once('-')?;
            let (month, day) = rest.split_once('-')?;
            (num(year)?, num(month)?, num(day)?)
        }
    };
    let (hh, rest) = time.split_once(':')?;
    let (mm, ss) = rest.split_once(':')?;
    let (hh, mm, ss) = (num(hh)?, num(mm)?, num(ss)?);
    let valid = (1..=12).contains(&m)
        && (1..=crate::calendar::days_in_month(y, m)).contains(&d)
        && hh < 24
        && mm < 60
        && ss < 60;
    valid.then(|| crate::calendar::days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// One `/user` item: a RouterOS user and the group that holds its
/// policies.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct User {
    pub name: String,
    pub group: String,
    pub disabled: String,
}

/// One `/user/group` item. `policy` lists the policies as RouterOS prints
/// them: comma-separated, a denied one prefixed with `!`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Group {
    pub name: String,
    pub policy: String,
}

impl Group {
    /// Whether the group grants `policy` (listed, and not as `!policy`).
    pub fn grants(&self, policy: &str) -> bool {
        self.policy.split(',').map(str::trim).any(|p| p == policy)
    }
}

/// One `/ip/service` item (`www`, `www-ssl`, `api`, …).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Service {
    pub name: String,
    pub port: String,
    pub disabled: String,
}

/// The body of a `PUT /rest/disk` adding a file-backed disk exported over
/// NVMe/TCP: one request carries every property, so no disk ever exists
/// half-configured because of us.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NewFileDisk {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub slot: String,
    #[serde(rename = "file-path")]
    pub file_path: String,
    #[serde(rename = "file-size")]
    pub file_size: String,
    #[serde(rename = "nvme-tcp-export")]
    pub nvme_tcp_export: &'static str,
    #[serde(rename = "nvme-tcp-server-port")]
    pub nvme_tcp_server_port: String,
    #[serde(rename = "nvme-tcp-server-nqn")]
    pub nvme_tcp_server_nqn: String,
    /// Whose the disk is (`rds-csi: cluster=<uid>`; see `crate::orphans`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub comment: String,
}

/// The body of a `PUT /rest/disk` adding a file disk whose file is a
/// copy of another disk's (`copy-from`, the `.id` of the source): a
/// snapshot (no export), or a volume restored or cloned from one (with
/// its export, in the same request).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NewCopy {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub slot: String,
    #[serde(rename = "file-path")]
    pub file_path: String,
    #[serde(rename = "copy-from")]
    pub copy_from: String,
    /// Grown to this after the copy, when larger than the source.
    #[serde(rename = "file-size", skip_serializing_if = "Option::is_none")]
    pub file_size: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub comment: String,
    #[serde(rename = "nvme-tcp-export", skip_serializing_if = "Option::is_none")]
    pub nvme_tcp_export: Option<&'static str>,
    #[serde(
        rename = "nvme-tcp-server-port",
        skip_serializing_if = "Option::is_none"
    )]
    pub nvme_tcp_server_port: Option<String>,
    #[serde(
        rename = "nvme-tcp-server-nqn",
        skip_serializing_if = "Option::is_none"
    )]
    pub nvme_tcp_server_nqn: Option<String>,
}

/// A byte count as RouterOS prints it: decimal digits, possibly grouped
/// with spaces. Anything else → `None`.
pub fn bytes(s: &str) -> Option<u64> {
    let digits: String = s.chars().filter(|c| *c != ' ').collect();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A RouterOS boolean: `true`/`yes` (REST answers `true`).
pub fn flag(s: &str) -> bool {
    matches!(s, "true" | "yes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routeros_times_in_both_spellings() {
        let new = wall_seconds("2024-03-15 10:11:12").unwrap();
        assert_eq!(wall_seconds("mar/15/2024 10:11:12"), Some(new));
        assert_eq!(wall_seconds("Mar/15/2024 10:11:12"), Some(new));
        assert_eq!(new - wall_seconds("2024-03-14 10:11:12").unwrap(), 86_400);
        assert_eq!(wall_seconds("1970-01-01 00:00:00"), Some(0));
        for bad in [
            "",
            "2024-03-15",
            "2024-02-30 00:00:00",
            "2024-03-15 24:00:00",
            "mrz/15/2024 10:11:12",
            "ar/15/2024 10:11:12",
            "2024-03-15T10:11:12",
            "2024-3-15 1:2:3x",
        ] {
            assert_eq!(wall_seconds(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_disk_decodes_from_routeros_strings() {
        let d: Disk = serde_json::from_str(
            r#"{".id":"*1A","slot":"pvc-1","type":"file","file-path":"storage-pool/metal-csi/pvc-1.img",
                "file-size":"1073741824","nvme-tcp-export":"true","nvme-tcp-server-port":"4420",
                "nvme-tcp-server-nqn":"nqn.2000-02.com.mikrotik:pvc-1","extra":"ignored"}"#,
        )
        .unwrap();
        assert_eq!(d.id, "*1A");
        assert_eq!(d.file_bytes(), Some(1 << 30));
        assert!(d.exported());
        assert_eq!(d.absolute_file_path(), "/storage-pool/metal-csi/pvc-1.img");
    }

    #[test]
    fn byte_counts_accept_digit_groups_only() {
        assert_eq!(bytes("7 681 574 174 720"), Some(7_681_574_174_720));
        assert_eq!(bytes("10G"), None);
        assert_eq!(bytes(""), None);
        assert_eq!(bytes("-1"), None);
    }
}
