//! The RDS monitoring families: each server's sensors, its pool's I/O and
//! each volume's I/O, as its last good poll left them (`crate::monitor`
//! polls; a scrape only reads this). Where the Go driver exported a value,
//! it keeps the Go driver's name (`rds_hardware_*`, `rds_disk_*`), with a
//! `server` label added; ours are `rds_csi_*`.

use std::fmt::Write as _;

use super::{escape_value, header};
use crate::rds::monitor::{Sensor, Traffic};

/// A value of a [`Traffic`].
type Pick = fn(&Traffic) -> Option<f64>;

/// One server's last good poll.
#[derive(Debug, Clone, Default)]
pub struct Readings {
    /// Seconds since 1970 when the poll ended; 0: never read.
    pub at: f64,
    pub sensors: Vec<Sensor>,
    /// The pool's disk (its slot in `slot`).
    pub pool: Option<Traffic>,
    /// Each volume's I/O, with the volume's labels rendered once
    /// ([`volume_labels`]); `None`: per-volume I/O is off.
    pub volumes: Option<Vec<(String, Traffic)>>,
}

/// The labels of a volume's series, escaped, in the order of the
/// families' HELP: `server`, `persistentvolume`, `namespace`,
/// `persistentvolumeclaim` (the last two empty while the PV is unbound).
pub fn volume_labels(server: &str, pv: &str, namespace: &str, claim: &str) -> String {
    format!(
        "server=\"{}\",persistentvolume=\"{}\",namespace=\"{}\",persistentvolumeclaim=\"{}\"",
        escape_value(server),
        escape_value(pv),
        escape_value(namespace),
        escape_value(claim)
    )
}

/// The Go driver's hardware gauges (SNMP there, `/system/health` here):
/// name, help, the sensors that give it, first found wins.
const GO_HARDWARE: &[(&str, &str, &[&str])] = &[
    (
        "rds_hardware_cpu_temperature_celsius",
        "CPU temperature in Celsius (/system/health cpu-temperature).",
        &["cpu-temperature"],
    ),
    (
        "rds_hardware_board_temperature_celsius",
        "Board temperature in Celsius (/system/health board-temperature1, board-temperature or temperature).",
        &["board-temperature1", "board-temperature", "temperature"],
    ),
    (
        "rds_hardware_fan1_speed_rpm",
        "Fan 1 speed in RPM (/system/health fan1-speed).",
        &["fan1-speed"],
    ),
    (
        "rds_hardware_fan2_speed_rpm",
        "Fan 2 speed in RPM (/system/health fan2-speed).",
        &["fan2-speed"],
    ),
    (
        "rds_hardware_psu1_power_watts",
        "PSU 1 power in watts (/system/health psu1-power).",
        &["psu1-power"],
    ),
    (
        "rds_hardware_psu2_power_watts",
        "PSU 2 power in watts (/system/health psu2-power).",
        &["psu2-power"],
    ),
    (
        "rds_hardware_psu1_temperature_celsius",
        "PSU 1 temperature in Celsius (/system/health psu1-temperature).",
        &["psu1-temperature"],
    ),
    (
        "rds_hardware_psu2_temperature_celsius",
        "PSU 2 temperature in Celsius (/system/health psu2-temperature).",
        &["psu2-temperature"],
    ),
];

/// The Go driver's pool gauges (`/disk monitor-traffic` of the pool's
/// slot): name, help, the value, its scale.
const GO_DISK: &[(&str, &str, Pick, f64)] = &[
    (
        "rds_disk_read_ops_per_second",
        "Read operations per second of the pool's disk.",
        |t| t.read_ops_per_second,
        1.0,
    ),
    (
        "rds_disk_write_ops_per_second",
        "Write operations per second of the pool's disk.",
        |t| t.write_ops_per_second,
        1.0,
    ),
    (
        "rds_disk_read_bytes_per_second",
        "Bytes read per second from the pool's disk.",
        |t| t.read_bytes_per_second,
        1.0,
    ),
    (
        "rds_disk_write_bytes_per_second",
        "Bytes written per second to the pool's disk.",
        |t| t.write_bytes_per_second,
        1.0,
    ),
    (
        "rds_disk_read_latency_milliseconds",
        "read-time of the pool's disk, in milliseconds.",
        |t| t.read_seconds,
        1e3,
    ),
    (
        "rds_disk_write_latency_milliseconds",
        "write-time of the pool's disk, in milliseconds.",
        |t| t.write_seconds,
        1e3,
    ),
    (
        "rds_disk_wait_latency_milliseconds",
        "wait-time of the pool's disk, in milliseconds.",
        |t| t.wait_seconds,
        1e3,
    ),
    (
        "rds_disk_in_flight_operations",
        "Operations in flight on the pool's disk.",
        |t| t.in_flight_ops,
        1.0,
    ),
    (
        "rds_disk_active_time_milliseconds",
        "active-time of the pool's disk, in milliseconds.",
        |t| t.active_seconds,
        1e3,
    ),
];

/// Per-volume families: name, help, type, then each series' `op` label
/// (empty: none) and value.
#[allow(clippy::type_complexity)]
const VOLUME: &[(&str, &str, &str, &[(&str, Pick)])] = &[
    (
        "rds_csi_volume_ops_total",
        "I/O operations on the volume's disk since it appeared on RDS, by op (read, write).",
        "counter",
        &[("read", |t| t.read_ops), ("write", |t| t.write_ops)],
    ),
    (
        "rds_csi_volume_bytes_total",
        "Bytes moved by the volume's disk since it appeared on RDS, by op (read, write).",
        "counter",
        &[("read", |t| t.read_bytes), ("write", |t| t.write_bytes)],
    ),
    (
        "rds_csi_volume_io_seconds_total",
        "Time spent on I/O by the volume's disk since it appeared on RDS, by op (read, write).",
        "counter",
        &[("read", |t| t.read_seconds), ("write", |t| t.write_seconds)],
    ),
    (
        "rds_csi_volume_in_flight_ops",
        "I/O operations in flight on the volume's disk.",
        "gauge",
        &[("", |t| t.in_flight_ops)],
    ),
];

/// Writes every family that has a value; nothing when `servers` is empty
/// (a replica that does not poll exports none of them).
pub fn render(out: &mut String, servers: &[(&'static str, std::sync::Arc<Readings>)]) {
    if servers.is_empty() {
        return;
    }
    header(
        out,
        "rds_csi_rds_monitor_timestamp_seconds",
        "When the values of the RDS server's monitoring families were read (seconds since 1970): older than a few polls means they are stale.",
        "gauge",
    );
    for (server, r) in servers {
        let _ = writeln!(
            out,
            "rds_csi_rds_monitor_timestamp_seconds{{server=\"{}\"}} {}",
            escape_value(server),
            r.at
        );
    }
    header(
        out,
        "rds_csi_rds_sensor",
        "Each numeric sensor of the RDS server's /system/health, by name and unit as the device reports them (a state reads 1 for ok, 0 for fail).",
        "gauge",
    );
    for (server, r) in servers {
        for s in &r.sensors {
            let _ = writeln!(
                out,
                "rds_csi_rds_sensor{{server=\"{}\",sensor=\"{}\",unit=\"{}\"}} {}",
                escape_value(server),
                escape_value(&s.name),
                escape_value(&s.unit),
                s.value
            );
        }
    }
    // Every family is declared once polled, with a series for each server
    // that reports its value.
    for (metric, help, names) in GO_HARDWARE {
        header(out, metric, help, "gauge");
        for (server, r) in servers {
            let found = names
                .iter()
                .find_map(|n| r.sensors.iter().find(|s| s.name == *n));
            if let Some(Sensor { value: v, .. }) = found {
                let _ = writeln!(out, "{metric}{{server=\"{}\"}} {v}", escape_value(server));
            }
        }
    }
    for (metric, help, pick, scale) in GO_DISK {
        header(out, metric, help, "gauge");
        for (server, r) in servers {
            let Some((slot, Some(v))) = r.pool.as_ref().map(|t| (&t.slot, pick(t))) else {
                continue;
            };
            let _ = writeln!(
                out,
                "{metric}{{server=\"{}\",slot=\"{}\"}} {}",
                escape_value(server),
                escape_value(slot),
                v * scale
            );
        }
    }
    if servers.iter().all(|(_, r)| r.volumes.is_none()) {
        return;
    }
    for (metric, help, kind, series) in VOLUME {
        header(out, metric, help, kind);
        for (_, r) in servers {
            for (labels, t) in r.volumes.iter().flatten() {
                for (op, pick) in *series {
                    let Some(v) = pick(t) else { continue };
                    let _ = if op.is_empty() {
                        writeln!(out, "{metric}{{{labels}}} {v}")
                    } else {
                        writeln!(out, "{metric}{{{labels},op=\"{op}\"}} {v}")
                    };
                }
            }
        }
    }
}
