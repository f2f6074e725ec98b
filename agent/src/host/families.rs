//! The metric families the host collector reports: node_exporter's names, HELP texts,
//! types and label names, in the order they are rendered.

use MetricType::{COUNTER, GAUGE};
use prometheus::proto::MetricType;

pub(super) struct FamilySpec {
    pub(super) name: &'static str,
    pub(super) help: &'static str,
    pub(super) kind: MetricType,
    pub(super) labels: &'static [&'static str],
}

const fn spec(
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    labels: &'static [&'static str],
) -> FamilySpec {
    FamilySpec {
        name,
        help,
        kind,
        labels,
    }
}

/// The labels of the filesystem families, in name order.
const FS_LABELS: &[&str] = &["device", "fstype", "mountpoint"];

pub(super) const MEMINFO: [(&str, &str); 7] = [
    (
        "node_memory_MemTotal_bytes",
        "Memory information field MemTotal_bytes.",
    ),
    (
        "node_memory_MemFree_bytes",
        "Memory information field MemFree_bytes.",
    ),
    (
        "node_memory_MemAvailable_bytes",
        "Memory information field MemAvailable_bytes.",
    ),
    (
        "node_memory_Buffers_bytes",
        "Memory information field Buffers_bytes.",
    ),
    (
        "node_memory_Cached_bytes",
        "Memory information field Cached_bytes.",
    ),
    (
        "node_memory_SwapTotal_bytes",
        "Memory information field SwapTotal_bytes.",
    ),
    (
        "node_memory_SwapFree_bytes",
        "Memory information field SwapFree_bytes.",
    ),
];

pub(super) const FAMILIES: &[FamilySpec] = &[
    spec(
        "node_cpu_seconds_total",
        "Seconds the CPUs spent in each mode.",
        COUNTER,
        &["cpu", "mode"],
    ),
    spec("node_load1", "1m load average.", GAUGE, &[]),
    spec("node_load5", "5m load average.", GAUGE, &[]),
    spec("node_load15", "15m load average.", GAUGE, &[]),
    spec(
        "node_boot_time_seconds",
        "Node boot time, in unixtime.",
        GAUGE,
        &[],
    ),
    spec(
        "node_procs_running",
        "Number of processes in runnable state.",
        GAUGE,
        &[],
    ),
    spec(
        "node_context_switches_total",
        "Total number of context switches.",
        COUNTER,
        &[],
    ),
    spec(
        "node_filesystem_size_bytes",
        "Filesystem size in bytes.",
        GAUGE,
        FS_LABELS,
    ),
    spec(
        "node_filesystem_avail_bytes",
        "Filesystem space available to non-root users in bytes.",
        GAUGE,
        FS_LABELS,
    ),
    spec(
        "node_filesystem_free_bytes",
        "Filesystem free space in bytes.",
        GAUGE,
        FS_LABELS,
    ),
    spec(
        "node_disk_read_bytes_total",
        "The total number of bytes read successfully.",
        COUNTER,
        &["device"],
    ),
    spec(
        "node_disk_written_bytes_total",
        "The total number of bytes written successfully.",
        COUNTER,
        &["device"],
    ),
    spec(
        "node_disk_reads_completed_total",
        "The total number of reads completed successfully.",
        COUNTER,
        &["device"],
    ),
    spec(
        "node_disk_writes_completed_total",
        "The total number of writes completed successfully.",
        COUNTER,
        &["device"],
    ),
    spec(
        "node_disk_io_time_seconds_total",
        "Total seconds spent doing I/Os.",
        COUNTER,
        &["device"],
    ),
    spec(
        "node_network_receive_bytes_total",
        "Network device statistic receive_bytes.",
        COUNTER,
        &["device"],
    ),
    spec(
        "node_network_receive_packets_total",
        "Network device statistic receive_packets.",
        COUNTER,
        &["device"],
    ),
    spec(
        "node_network_receive_errs_total",
        "Network device statistic receive_errs.",
        COUNTER,
        &["device"],
    ),
    spec(
        "node_network_receive_drop_total",
        "Network device statistic receive_drop.",
        COUNTER,
        &["device"],
    ),
    spec(
        "node_network_transmit_bytes_total",
        "Network device statistic transmit_bytes.",
        COUNTER,
        &["device"],
    ),
    spec(
        "node_network_transmit_packets_total",
        "Network device statistic transmit_packets.",
        COUNTER,
        &["device"],
    ),
    spec(
        "node_network_transmit_errs_total",
        "Network device statistic transmit_errs.",
        COUNTER,
        &["device"],
    ),
    spec(
        "node_network_transmit_drop_total",
        "Network device statistic transmit_drop.",
        COUNTER,
        &["device"],
    ),
];

/// A family's HELP text and type, from its name.
pub(super) fn family_meta(name: &str) -> (&'static str, MetricType) {
    FAMILIES
        .iter()
        .find(|f| f.name == name)
        .map(|f| (f.help, f.kind))
        .or_else(|| MEMINFO.iter().find(|m| m.0 == name).map(|m| (m.1, GAUGE)))
        .unwrap_or(("", MetricType::UNTYPED))
}
