//! Host metrics under node_exporter's names, types, label sets and HELP texts, so
//! community dashboards and alert rules work unchanged.
//!
//! Sources, chosen for cost: `sysinfo` for the load average and the host name (both a
//! single small read); `/proc` through the `procfs` crate for CPU times, context switches,
//! running processes and boot time (`/proc/stat`), memory (`/proc/meminfo`), disk I/O
//! (`/proc/diskstats`), network devices (`/proc/net/dev`) and the mount table of PID 1
//! (`/proc/1/mounts`, falling back to `/proc/self/mounts`, as node_exporter does); `statvfs(2)` for filesystem sizes. Nothing else is read: no process
//! table scan, no per-process data. A source that fails is logged and skipped for that
//! cycle; the others still report.
//!
//! [`HostCollector::refresh`] takes a snapshot; [`prometheus::core::Collector::collect`]
//! returns the last snapshot, so serving `/metrics` never touches `/proc`.

mod filter;

use std::sync::Mutex;

use procfs::{Current, CurrentSI};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

/// Reads host figures and exposes them as node_exporter-compatible metric families.
#[derive(Debug)]
pub struct HostCollector {
    descs: Vec<Desc>,
    snapshot: Mutex<Vec<MetricFamily>>,
    ticks_per_second: f64,
}

struct FamilySpec {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    labels: &'static [&'static str],
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

use MetricType::{COUNTER, GAUGE};

const MEMINFO: [(&str, &str); 7] = [
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

const FAMILIES: &[FamilySpec] = &[
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

const FS_LABELS: &[&str] = &["device", "fstype", "mountpoint"];

/// Collects families in a fixed order; each is a name, help, type and its metrics.
struct Builder {
    families: Vec<MetricFamily>,
}

impl Builder {
    fn family(&mut self, name: &str, help: &str, kind: MetricType) -> &mut Vec<Metric> {
        let mut mf = MetricFamily::default();
        mf.set_name(name.to_owned());
        mf.set_help(help.to_owned());
        mf.set_field_type(kind);
        self.families.push(mf);
        let last = self.families.len() - 1;
        self.families[last].mut_metric()
    }

    fn spec(&mut self, name: &str) -> &mut Vec<Metric> {
        let (help, kind) = FAMILIES
            .iter()
            .find(|f| f.name == name)
            .map(|f| (f.help, f.kind))
            .or_else(|| MEMINFO.iter().find(|m| m.0 == name).map(|m| (m.1, GAUGE)))
            .unwrap_or(("", MetricType::UNTYPED));
        self.family(name, help, kind)
    }
}

/// One metric with the given label pairs and value; counters and gauges alike.
fn metric(kind: MetricType, labels: &[(&str, &str)], value: f64) -> Metric {
    let mut m = Metric::default();
    m.set_label(
        labels
            .iter()
            .map(|(n, v)| {
                let mut lp = LabelPair::default();
                lp.set_name((*n).to_owned());
                lp.set_value((*v).to_owned());
                lp
            })
            .collect(),
    );
    if kind == COUNTER {
        let mut c = Counter::default();
        c.set_value(value);
        m.set_counter(c);
    } else {
        let mut g = Gauge::default();
        g.set_value(value);
        m.set_gauge(g);
    }
    m
}

impl Default for HostCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl HostCollector {
    /// A collector with an empty snapshot; call [`HostCollector::refresh`] to fill it.
    pub fn new() -> Self {
        let descs = FAMILIES
            .iter()
            .map(|f| (f.name, f.help, f.labels))
            .chain(MEMINFO.iter().map(|(n, h)| (*n, *h, &[][..])))
            .filter_map(|(name, help, labels)| {
                Desc::new(
                    name.to_owned(),
                    help.to_owned(),
                    labels.iter().map(|l| (*l).to_owned()).collect(),
                    Default::default(),
                )
                .ok()
            })
            .collect();
        HostCollector {
            descs,
            snapshot: Mutex::new(Vec::new()),
            ticks_per_second: procfs::ticks_per_second() as f64,
        }
    }

    /// Reads every source once and replaces the snapshot. Returns how many sources failed
    /// (each failure is logged).
    pub fn refresh(&self) -> usize {
        let mut b = Builder {
            families: Vec::with_capacity(FAMILIES.len() + MEMINFO.len()),
        };
        let mut failures = 0;
        let mut note = |source: &str, r: Result<(), procfs::ProcError>| {
            if let Err(e) = r {
                failures += 1;
                tracing::warn!(source, error = %e, "host metrics: source failed this cycle");
            }
        };
        note("/proc/stat", self.read_stat(&mut b));
        self.read_load(&mut b);
        note("/proc/meminfo", read_meminfo(&mut b));
        note("/proc/mounts", read_filesystems(&mut b));
        note("/proc/diskstats", read_diskstats(&mut b));
        note("/proc/net/dev", read_netdev(&mut b));
        if let Ok(mut snap) = self.snapshot.lock() {
            *snap = b.families;
        }
        failures
    }

    fn read_stat(&self, b: &mut Builder) -> Result<(), procfs::ProcError> {
        let stat = procfs::KernelStats::current()?;
        let tps = self.ticks_per_second;
        let cpus = b.spec("node_cpu_seconds_total");
        for (i, cpu) in stat.cpu_time.iter().enumerate() {
            let id = i.to_string();
            let modes = [
                ("idle", Some(cpu.idle)),
                ("iowait", cpu.iowait),
                ("irq", cpu.irq),
                ("nice", Some(cpu.nice)),
                ("softirq", cpu.softirq),
                ("steal", cpu.steal),
                ("system", Some(cpu.system)),
                ("user", Some(cpu.user)),
            ];
            for (mode, ticks) in modes {
                if let Some(t) = ticks {
                    cpus.push(metric(
                        COUNTER,
                        &[("cpu", &id), ("mode", mode)],
                        t as f64 / tps,
                    ));
                }
            }
        }
        b.spec("node_boot_time_seconds")
            .push(metric(GAUGE, &[], stat.btime as f64));
        if let Some(running) = stat.procs_running {
            b.spec("node_procs_running")
                .push(metric(GAUGE, &[], f64::from(running)));
        }
        b.spec("node_context_switches_total")
            .push(metric(COUNTER, &[], stat.ctxt as f64));
        Ok(())
    }

    fn read_load(&self, b: &mut Builder) {
        let Ok(load) = sysinfo::System::load_average() else {
            tracing::warn!(
                source = "/proc/loadavg",
                "host metrics: source failed this cycle"
            );
            return;
        };
        b.spec("node_load1").push(metric(GAUGE, &[], load.one));
        b.spec("node_load5").push(metric(GAUGE, &[], load.five));
        b.spec("node_load15").push(metric(GAUGE, &[], load.fifteen));
    }
}

fn read_meminfo(b: &mut Builder) -> Result<(), procfs::ProcError> {
    let m = procfs::Meminfo::current()?;
    let values = [
        Some(m.mem_total),
        Some(m.mem_free),
        m.mem_available,
        Some(m.buffers),
        Some(m.cached),
        Some(m.swap_total),
        Some(m.swap_free),
    ];
    for ((name, _), v) in MEMINFO.iter().zip(values) {
        if let Some(v) = v {
            b.spec(name).push(metric(GAUGE, &[], v as f64));
        }
    }
    Ok(())
}

fn read_filesystems(b: &mut Builder) -> Result<(), procfs::ProcError> {
    let mounts = read_mounts()?;
    let mut rows = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for m in mounts {
        if filter::ignore_filesystem(&m.fs_vfstype, &m.fs_file) || !seen.insert(m.fs_file.clone()) {
            continue;
        }
        match rustix::fs::statvfs(m.fs_file.as_str()) {
            Ok(st) => {
                let frsize = st.f_frsize as f64;
                rows.push((
                    m,
                    st.f_blocks as f64 * frsize,
                    st.f_bavail as f64 * frsize,
                    st.f_bfree as f64 * frsize,
                ));
            }
            Err(e) => {
                tracing::debug!(mountpoint = %m.fs_file, error = %e, "statvfs failed; skipped")
            }
        }
    }
    for (i, name) in [
        "node_filesystem_size_bytes",
        "node_filesystem_avail_bytes",
        "node_filesystem_free_bytes",
    ]
    .into_iter()
    .enumerate()
    {
        let fam = b.spec(name);
        for (m, size, avail, free) in &rows {
            let v = [*size, *avail, *free][i];
            let labels = [
                ("device", m.fs_spec.as_str()),
                ("fstype", m.fs_vfstype.as_str()),
                ("mountpoint", m.fs_file.as_str()),
            ];
            fam.push(metric(GAUGE, &labels, v));
        }
    }
    Ok(())
}

/// A family name and how to read its value from one row of a /proc table.
type Column<Row, V> = (&'static str, fn(&Row) -> V);

/// The mount table as node_exporter reads it: PID 1's (the host's, when the agent runs in
/// a container with the host's PID namespace), else our own.
fn read_mounts() -> Result<Vec<procfs::MountEntry>, procfs::ProcError> {
    use procfs::FromBufRead;
    match std::fs::File::open("/proc/1/mounts") {
        Ok(f) => Vec::<procfs::MountEntry>::from_buf_read(std::io::BufReader::new(f)),
        Err(_) => procfs::mounts(),
    }
}

fn read_diskstats(b: &mut Builder) -> Result<(), procfs::ProcError> {
    let disks: Vec<_> = procfs::diskstats()?
        .into_iter()
        .filter(|d| !filter::ignore_disk(&d.name))
        .collect();
    let columns: [Column<procfs::DiskStat, f64>; 5] = [
        ("node_disk_read_bytes_total", |d| {
            d.sectors_read as f64 * 512.0
        }),
        ("node_disk_written_bytes_total", |d| {
            d.sectors_written as f64 * 512.0
        }),
        ("node_disk_reads_completed_total", |d| d.reads as f64),
        ("node_disk_writes_completed_total", |d| d.writes as f64),
        ("node_disk_io_time_seconds_total", |d| {
            d.time_in_progress as f64 / 1000.0
        }),
    ];
    for (name, get) in columns {
        let fam = b.spec(name);
        for d in &disks {
            fam.push(metric(COUNTER, &[("device", &d.name)], get(d)));
        }
    }
    Ok(())
}

fn read_netdev(b: &mut Builder) -> Result<(), procfs::ProcError> {
    let mut devs: Vec<_> = procfs::net::dev_status()?
        .into_values()
        .filter(|d| !filter::ignore_netdev(&d.name))
        .collect();
    devs.sort_by(|a, b| a.name.cmp(&b.name));
    let columns: [Column<procfs::net::DeviceStatus, u64>; 8] = [
        ("node_network_receive_bytes_total", |d| d.recv_bytes),
        ("node_network_receive_packets_total", |d| d.recv_packets),
        ("node_network_receive_errs_total", |d| d.recv_errs),
        ("node_network_receive_drop_total", |d| d.recv_drop),
        ("node_network_transmit_bytes_total", |d| d.sent_bytes),
        ("node_network_transmit_packets_total", |d| d.sent_packets),
        ("node_network_transmit_errs_total", |d| d.sent_errs),
        ("node_network_transmit_drop_total", |d| d.sent_drop),
    ];
    for (name, get) in columns {
        let fam = b.spec(name);
        for d in &devs {
            fam.push(metric(COUNTER, &[("device", &d.name)], get(d) as f64));
        }
    }
    Ok(())
}

impl Collector for HostCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.snapshot.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_required_family_is_reported_on_linux() {
        let c = HostCollector::new();
        assert_eq!(c.refresh(), 0, "no source may fail on this host");
        let fams = c.collect();
        let names: Vec<_> = fams.iter().map(|f| f.name()).collect();
        for spec in FAMILIES {
            if spec.name.starts_with("node_filesystem") {
                continue; // a container may have no filesystem node_exporter would report
            }
            assert!(names.contains(&spec.name), "{} missing", spec.name);
        }
        let cpu = fams
            .iter()
            .find(|f| f.name() == "node_cpu_seconds_total")
            .expect("cpu");
        let idle0 = cpu
            .get_metric()
            .iter()
            .find(|m| {
                m.get_label().iter().any(|l| l.value() == "idle") && m.get_label()[0].value() == "0"
            })
            .expect("cpu 0 idle");
        assert!(idle0.get_counter().get_value() > 0.0);
        let total = fams
            .iter()
            .find(|f| f.name() == "node_memory_MemTotal_bytes")
            .expect("memtotal");
        assert!(total.get_metric()[0].get_gauge().get_value() > 1e6);
    }
}
