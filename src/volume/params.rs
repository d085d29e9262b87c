//! Names, sizes and StorageClass parameters, compatible with the Go
//! driver: volume ID = disk slot = the provisioner's `pvc-<uuid>`, file
//! `<volumePath>/<id>.img`, NQN `nqn.2000-02.com.mikrotik:<id>`, and the
//! same `volume_context` keys.

use std::collections::HashMap;

use crate::attachment::DEFAULT_MIGRATION_WINDOW;

/// Smallest volume created; a request for 0 bytes gets this.
pub const MIN_BYTES: u64 = 1 << 30;
/// Largest volume created or grown to.
pub const MAX_BYTES: u64 = 16 << 40;
pub const DEFAULT_VOLUME_PATH: &str = "/storage-pool/metal-csi";
pub const DEFAULT_NVME_PORT: u16 = 4420;
pub const NQN_PREFIX: &str = "nqn.2000-02.com.mikrotik:";
/// The StorageClass parameter that names the RDS server (absent: the
/// default one); read by `crate::servers`, which picks the server before
/// the other parameters are parsed against its defaults.
pub const RDS_SERVER_KEY: &str = "rdsServer";
/// Keys the external-provisioner adds (`--extra-create-metadata`) or
/// consumes itself; accepted and ignored.
const PROVISIONER_PREFIX: &str = "csi.storage.k8s.io/";

/// Keys the Go driver's documentation, examples or chart put in
/// StorageClasses that mean nothing to this driver, with what to tell the
/// operator: accepted with a warning, so that its classes keep provisioning.
const GO_KEYS_UNUSED: &[(&str, &str)] = &[
    ("sshPort", NO_SSH),
    ("rdsPort", NO_SSH),
    (
        "nqnPrefix",
        "NQNs are always nqn.2000-02.com.mikrotik:<volume ID>, as the Go driver made them",
    ),
    (
        "rdsBasePath",
        "neither driver reads it; the backing files' directory is volumePath",
    ),
    (
        "fsType",
        "the file system comes from csi.storage.k8s.io/fstype (the node plugin reads the volume capability)",
    ),
];

const NO_SSH: &str =
    "the Go driver's SSH port; this driver uses the RouterOS REST API at --rds-url";

/// The migration window when the volume context names none (seconds):
/// the attachment store's, so that both fall back to the same window.
const DEFAULT_MIGRATION_SECONDS: u64 = DEFAULT_MIGRATION_WINDOW.as_secs();
/// The shortest and longest migration window (seconds).
pub const MIGRATION_SECONDS: std::ops::RangeInclusive<u64> = 30..=3600;

/// A `migrationTimeoutSeconds` value read as the Go driver reads it: empty
/// → the default; not a positive whole number → the default, below 30 →
/// 30, above 3600 → 3600, each adjustment with why (for a warning).
pub fn migration_seconds(raw: &str) -> (u64, Option<String>) {
    let raw = raw.trim();
    if raw.is_empty() {
        return (DEFAULT_MIGRATION_SECONDS, None);
    }
    match raw.parse::<i64>() {
        Ok(s) if s > 0 => {
            let s = s as u64;
            let (lo, hi) = (*MIGRATION_SECONDS.start(), *MIGRATION_SECONDS.end());
            let clamped = s.clamp(lo, hi);
            let why = (clamped != s)
                .then(|| format!("{s} is outside {lo} to {hi}; using {clamped}, as the Go driver does"));
            (clamped, why)
        }
        _ => (
            DEFAULT_MIGRATION_SECONDS,
            Some(format!(
                "{raw:?} is not a positive whole number; using {DEFAULT_MIGRATION_SECONDS}, as the Go driver does"
            )),
        ),
    }
}

/// A parameter accepted with a warning: a Go driver key this driver does
/// not use, or a value adjusted as the Go driver adjusted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamWarning {
    pub key: &'static str,
    pub why: String,
}

/// A parameter that is unknown or has a bad value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    pub key: String,
    pub why: String,
}

/// Slots of snapshots begin so (the Go driver's and ours): never a volume.
pub const SNAPSHOT_PREFIX: &str = "snap-";

/// RFC 4122's DNS namespace, in which the Go driver derives names.
const DNS_NAMESPACE: [u8; 16] = [
    0x6b, 0xa7, 0xb8, 0x10, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8,
];

/// The RFC 4122 version-5 (SHA-1) UUID of `name` in the DNS namespace,
/// lowercase with dashes.
pub fn uuid_v5(name: &str) -> String {
    let mut h = sha1_smol::Sha1::new();
    h.update(&DNS_NAMESPACE);
    h.update(name.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h.digest().bytes()[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// The volume ID for a CreateVolume `name` (any name the CSI spec allows):
/// the name itself when it is a volume ID already (the provisioner's
/// `pvc-<uuid>`, so existing volumes keep their IDs), else
/// `pvc-<version-5 UUID of the name>`, the Go driver's mapping. The same
/// name always gives the same ID, so a retry finds its volume.
pub fn volume_id_for(name: &str) -> String {
    match check_volume_id(name) {
        Ok(()) => name.to_string(),
        Err(_) => format!("pvc-{}", uuid_v5(name)),
    }
}

/// Lowercase letters, digits and `-`, alphanumeric at both ends, at most
/// 63 characters, not beginning with [`SNAPSHOT_PREFIX`]: a valid RDS slot
/// and file name, and what the provisioner names volumes (`pvc-<uuid>`).
pub fn check_volume_id(id: &str) -> Result<(), String> {
    let b = id.as_bytes();
    if b.is_empty() {
        return Err("is required".into());
    }
    if id.starts_with(SNAPSHOT_PREFIX) {
        return Err(format!("{id:?} is a snapshot's ID, not a volume's"));
    }
    if b.len() > 63 {
        return Err(format!("is {} characters, more than 63", b.len()));
    }
    let ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !b.iter().all(|c| ok(c) || *c == b'-') || !ok(&b[0]) || !ok(&b[b.len() - 1]) {
        return Err(format!(
            "{id:?} may hold only lowercase letters, digits and '-', and must begin and end with a letter or digit"
        ));
    }
    Ok(())
}

pub fn nqn(id: &str) -> String {
    format!("{NQN_PREFIX}{id}")
}

/// The backing file of `id` under `volume_path`, with a leading `/`.
pub fn file_path(volume_path: &str, id: &str) -> String {
    format!("{}/{id}.img", volume_path.trim_end_matches('/'))
}

/// Whether `path` (with or without a leading `/`) is `<dir>/<id>.img` for
/// a directory `dir` that `check_volume_path` accepts: the only files this
/// controller ever creates or removes.
pub fn is_backing_file_of(path: &str, id: &str) -> bool {
    let path = format!("/{}", path.trim_start_matches('/'));
    match path.rsplit_once('/') {
        Some((dir, name)) => name == format!("{id}.img") && check_volume_path(dir).is_ok(),
        None => false,
    }
}

/// An absolute path of plain segments (letters, digits, `-`, `_`, `.`),
/// no `.` or `..`, at most 200 bytes. Its first segment is the pool's
/// mount point.
pub fn check_volume_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} must be an absolute path"));
    }
    if path.len() > 200 {
        return Err(format!("{path:?} is longer than 200 bytes"));
    }
    let segments: Vec<&str> = path[1..].trim_end_matches('/').split('/').collect();
    for s in &segments {
        let plain = !s.is_empty()
            && *s != "."
            && *s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !plain {
            return Err(format!(
                "{path:?} may hold only segments of letters, digits, '-', '_' and '.'"
            ));
        }
    }
    Ok(())
}

/// The pool's mount point: the first segment of a volume path.
pub fn mount_point(volume_path: &str) -> &str {
    volume_path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("")
}

/// The size to create for a capacity range (bytes; 0 = unset), or why the
/// range cannot be met.
pub fn size_for(required: u64, limit: u64) -> Result<u64, String> {
    let size = required.max(MIN_BYTES);
    if limit > 0 && size > limit {
        return Err(format!(
            "capacity_range: {size} bytes (at least {MIN_BYTES}) exceeds limit_bytes {limit}"
        ));
    }
    if size > MAX_BYTES {
        return Err(format!(
            "capacity_range: {size} bytes exceeds the largest volume, {MAX_BYTES} bytes (16 TiB)"
        ));
    }
    Ok(size)
}

/// What `--rds-url` and `--rds-volume-path` supply when a StorageClass
/// does not.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub volume_path: String,
    /// The host of `--rds-url`.
    pub address: String,
}

/// Validated StorageClass parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub volume_path: String,
    pub rds_address: String,
    pub nvme_address: String,
    pub nvme_port: u16,
    pub ctrl_loss_tmo: i64,
    pub reconnect_delay: i64,
    pub keep_alive_tmo: i64,
    pub migration_timeout_seconds: i64,
    /// What was accepted with a warning, in key order; for the caller to
    /// log (once per CreateVolume) and count.
    pub warnings: Vec<ParamWarning>,
}

impl Params {
    /// Parses `parameters`; defaults for what is absent. A key of the Go
    /// driver's that means nothing here is accepted with a warning, and
    /// `migrationTimeoutSeconds` is adjusted as the Go driver adjusts it;
    /// a key no driver version knows, or a bad value → the key and why
    /// (the Go driver ignores typos; we do not).
    pub fn parse(
        parameters: &HashMap<String, String>,
        defaults: &Defaults,
    ) -> Result<Params, ParamError> {
        let mut p = Params {
            volume_path: defaults.volume_path.clone(),
            rds_address: defaults.address.clone(),
            nvme_address: String::new(),
            nvme_port: DEFAULT_NVME_PORT,
            ctrl_loss_tmo: -1,
            reconnect_delay: 5,
            keep_alive_tmo: 0,
            migration_timeout_seconds: DEFAULT_MIGRATION_SECONDS as i64,
            warnings: Vec::new(),
        };
        let mut nvme_address = None;
        // Sorted, so the first bad key reported is the same every time.
        let mut keys: Vec<_> = parameters.iter().collect();
        keys.sort();
        for (key, value) in keys {
            let bad = |why: String| ParamError {
                key: key.clone(),
                why,
            };
            let int = |lo: i64, hi: i64| -> Result<i64, ParamError> {
                value
                    .trim()
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (lo..=hi).contains(n))
                    .ok_or_else(|| {
                        bad(format!("{value:?} is not a whole number from {lo} to {hi}"))
                    })
            };
            match key.as_str() {
                "volumePath" => {
                    check_volume_path(value).map_err(bad)?;
                    p.volume_path = value.trim_end_matches('/').to_string();
                }
                "rdsAddress" => p.rds_address = address(value).map_err(bad)?,
                "nvmeAddress" => nvme_address = Some(address(value).map_err(bad)?),
                "nvmePort" => p.nvme_port = int(1, 65535)? as u16,
                "ctrlLossTmo" => p.ctrl_loss_tmo = int(-1, i32::MAX as i64)?,
                "reconnectDelay" => p.reconnect_delay = int(1, i32::MAX as i64)?,
                "keepAliveTmo" => p.keep_alive_tmo = int(0, i32::MAX as i64)?,
                "migrationTimeoutSeconds" => {
                    let (seconds, why) = migration_seconds(value);
                    p.migration_timeout_seconds = seconds as i64;
                    if let Some(why) = why {
                        p.warnings.push(ParamWarning {
                            key: "migrationTimeoutSeconds",
                            why,
                        });
                    }
                }
                RDS_SERVER_KEY => {}
                k if k.starts_with(PROVISIONER_PREFIX) => {}
                k => match GO_KEYS_UNUSED.iter().find(|(g, _)| *g == k) {
                    Some((key, why)) => p.warnings.push(ParamWarning {
                        key,
                        why: format!("not used by this driver ({why}); ignored"),
                    }),
                    None => return Err(bad("is not a parameter of this driver".into())),
                },
            }
        }
        // The NVMe target is RDS itself unless the StorageClass says otherwise.
        p.nvme_address = nvme_address.unwrap_or_else(|| p.rds_address.clone());
        Ok(p)
    }

    /// The Go driver's `volume_context` for volume `id` exported on
    /// `nvme_port` with `nqn`, backed by `file` (leading `/`).
    pub fn volume_context(
        &self,
        nvme_port: &str,
        nqn: &str,
        file: &str,
    ) -> HashMap<String, String> {
        [
            ("rdsAddress", self.rds_address.clone()),
            ("nvmeAddress", self.nvme_address.clone()),
            ("nvmePort", nvme_port.to_string()),
            ("nqn", nqn.to_string()),
            ("volumePath", file.to_string()),
            ("ctrlLossTmo", self.ctrl_loss_tmo.to_string()),
            ("reconnectDelay", self.reconnect_delay.to_string()),
            ("keepAliveTmo", self.keep_alive_tmo.to_string()),
            (
                "migrationTimeoutSeconds",
                self.migration_timeout_seconds.to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// A host name or IP address: letters, digits, `.`, `-`, `:` (IPv6),
/// at most 253 bytes.
fn address(v: &str) -> Result<String, String> {
    let ok = !v.is_empty()
        && v.len() <= 253
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
    if ok {
        Ok(v.to_string())
    } else {
        Err(format!("{v:?} is not a host name or IP address"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Defaults {
        Defaults {
            volume_path: DEFAULT_VOLUME_PATH.into(),
            address: "10.0.0.5".into(),
        }
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<Params, ParamError> {
        let map = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Params::parse(&map, &defaults())
    }

    #[test]
    fn defaults_match_the_go_driver() {
        let p = parse(&[("csi.storage.k8s.io/pvc/name", "data")]).unwrap();
        assert_eq!(p.volume_path, "/storage-pool/metal-csi");
        assert_eq!((p.nvme_address.as_str(), p.nvme_port), ("10.0.0.5", 4420));
        assert_eq!(
            (
                p.ctrl_loss_tmo,
                p.reconnect_delay,
                p.keep_alive_tmo,
                p.migration_timeout_seconds
            ),
            (-1, 5, 0, 300)
        );
        let ctx = p.volume_context("4420", &nqn("pvc-1"), &file_path(&p.volume_path, "pvc-1"));
        let mut keys: Vec<_> = ctx.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "ctrlLossTmo",
                "keepAliveTmo",
                "migrationTimeoutSeconds",
                "nqn",
                "nvmeAddress",
                "nvmePort",
                "rdsAddress",
                "reconnectDelay",
                "volumePath"
            ]
        );
        assert_eq!(ctx["volumePath"], "/storage-pool/metal-csi/pvc-1.img");
        assert_eq!(ctx["nqn"], "nqn.2000-02.com.mikrotik:pvc-1");
    }

    #[test]
    fn an_unknown_key_or_bad_value_is_named() {
        for (pairs, key) in [
            (&[("nvmeport", "4420")][..], "nvmeport"),
            (&[("nvmePort", "0")], "nvmePort"),
            (&[("nvmePort", "70000")], "nvmePort"),
            (&[("ctrlLossTmo", "-2")], "ctrlLossTmo"),
            (&[("reconnectDelay", "0")], "reconnectDelay"),
            (&[("keepAliveTmo", "-1")], "keepAliveTmo"),
            (&[("volumePath", "relative/path")], "volumePath"),
            (&[("volumePath", "/pool/../etc")], "volumePath"),
            (&[("nvmeAddress", "a b")], "nvmeAddress"),
            (&[("sshport", "22")], "sshport"),
        ] {
            assert_eq!(parse(pairs).unwrap_err().key, key, "{pairs:?}");
        }
    }

    #[test]
    fn go_driver_classes_are_accepted_with_warnings() {
        // The Go README's example class, its chart's and its migration guide's.
        let p = parse(&[
            ("rdsAddress", "10.42.68.1"),
            ("nvmePort", "4420"),
            ("sshPort", "22"),
            ("fsType", "ext4"),
            ("volumePath", "/storage-pool/kubernetes-volumes"),
            ("nqnPrefix", "nqn.2000-02.com.mikrotik"),
            ("rdsPort", "22"),
            ("rdsBasePath", "/storage-pool/kubernetes-volumes"),
            ("migrationTimeoutSeconds", "7200"),
            ("csi.storage.k8s.io/fstype", "ext4"),
        ])
        .unwrap();
        let keys: Vec<&str> = p.warnings.iter().map(|w| w.key).collect();
        assert_eq!(
            keys,
            [
                "fsType",
                "migrationTimeoutSeconds",
                "nqnPrefix",
                "rdsBasePath",
                "rdsPort",
                "sshPort"
            ]
        );
        assert_eq!(p.migration_timeout_seconds, 3600);
        assert_eq!(p.volume_path, "/storage-pool/kubernetes-volumes");
        assert!(parse(&[("nvmePort", "4420")]).unwrap().warnings.is_empty());
    }

    #[test]
    fn migration_windows_are_adjusted_as_the_go_driver_adjusts_them() {
        for (raw, want, warned) in [
            ("", 300, false),
            ("300", 300, false),
            (" 45 ", 45, false),
            ("30", 30, false),
            ("3600", 3600, false),
            ("29", 30, true),
            ("1", 30, true),
            ("7200", 3600, true),
            ("0", 300, true),
            ("-5", 300, true),
            ("soon", 300, true),
            ("1.5", 300, true),
        ] {
            let (s, why) = migration_seconds(raw);
            assert_eq!((s, why.is_some()), (want, warned), "{raw:?}: {why:?}");
        }
    }

    #[test]
    fn nvme_address_follows_rds_address_unless_given() {
        assert_eq!(
            parse(&[("rdsAddress", "rds.lan")]).unwrap().nvme_address,
            "rds.lan"
        );
        let p = parse(&[("rdsAddress", "rds.lan"), ("nvmeAddress", "10.9.9.9")]).unwrap();
        assert_eq!(
            (p.rds_address.as_str(), p.nvme_address.as_str()),
            ("rds.lan", "10.9.9.9")
        );
    }

    #[test]
    fn volume_ids_follow_the_slot_rule() {
        assert!(check_volume_id("pvc-0b1c2d3e-aaaa-bbbb-cccc-0123456789ab").is_ok());
        for bad in [
            "",
            "PVC-1",
            "pvc_1",
            "-pvc",
            "pvc-",
            "pvc/1",
            "pvc.1",
            "snap-1",
            &"a".repeat(64),
        ] {
            assert!(check_volume_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_map_to_volume_ids_as_the_go_driver_maps_them() {
        // The provisioner's names are IDs already.
        let pvc = "pvc-0b1c2d3e-aaaa-bbbb-cccc-0123456789ab";
        assert_eq!(volume_id_for(pvc), pvc);
        // Any other name: pvc- and its version-5 UUID in the DNS namespace
        // (values from Python's uuid.uuid5(uuid.NAMESPACE_DNS, name)).
        for (name, uuid) in [
            (
                "sanity-CreateVolume-1A2B",
                "abaed59f-4634-55d0-a386-cc91c0746248",
            ),
            ("PVC-Upper", "5ba1b200-f251-58f4-823e-da8d248db80e"),
            (&"x".repeat(128), "0dd77150-1051-507e-8263-390d617bb2dd"),
            ("my volume", "dc82a5ad-a060-5185-8d9a-a7a1b23a9dd2"),
        ] {
            assert_eq!(volume_id_for(name), format!("pvc-{uuid}"), "{name:?}");
            assert!(check_volume_id(&volume_id_for(name)).is_ok());
        }
        // A snapshot-shaped name never becomes a snapshot's slot.
        assert!(volume_id_for("snap-1").starts_with("pvc-"));
    }

    #[test]
    fn sizes_round_up_to_one_gib_and_stop_at_the_limits() {
        assert_eq!(size_for(0, 0), Ok(MIN_BYTES));
        assert_eq!(size_for(1, 0), Ok(MIN_BYTES));
        let odd = 1_610_612_736_000; // 1.5 TiB, not a whole number of TiB
        assert_eq!(size_for(odd, 0), Ok(odd));
        assert!(size_for(MAX_BYTES + 1, 0).is_err());
        assert!(size_for(2 << 30, 1 << 30).is_err());
        assert!(size_for(0, 512 << 20).is_err());
    }

    #[test]
    fn only_derived_backing_files_are_ours() {
        assert!(is_backing_file_of(
            "storage-pool/metal-csi/pvc-1.img",
            "pvc-1"
        ));
        assert!(is_backing_file_of(
            "/storage-pool/metal-csi/pvc-1.img",
            "pvc-1"
        ));
        assert!(!is_backing_file_of(
            "storage-pool/metal-csi/pvc-2.img",
            "pvc-1"
        ));
        assert!(!is_backing_file_of("pvc-1.img", "pvc-1"));
        assert!(!is_backing_file_of("storage-pool/../pvc-1.img", "pvc-1"));
        assert_eq!(mount_point("/storage-pool/metal-csi"), "storage-pool");
    }
}
