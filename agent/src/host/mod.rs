//! Host metrics under node_exporter's names, types, label sets and HELP texts, so
//! community dashboards and alert rules work unchanged.
//!
//! Sources, chosen for cost. `/proc` files are kept open and re-read with one `pread` each,
//! and parsed by the `procfs` crate: CPU times, context switches, running processes and
//! boot time (`/proc/stat`), memory (`/proc/meminfo`), disk I/O (`/proc/diskstats`), network
//! devices (`/proc/net/dev`) and the mount table of PID 1 (`/proc/1/mounts`, falling back to
//! `/proc/self/mounts`, as node_exporter does). The load average is the first three numbers
//! of `/proc/loadavg`, read the same way: `sysinfo` would open and read the file anew each
//! time (five system calls), and `procfs` parses it as `f32` (0.52 would become 0.51999998).
//! `statvfs(2)` gives filesystem sizes and `sysinfo` the host name. Nothing else is read:
//! no process table scan, no per-process data. A source that fails is logged and skipped
//! for that cycle; the others still report.
//!
//! [`HostCollector::refresh`] takes a snapshot as model series (labels sorted, without the
//! agent's `host` label, which the encoder merges in); [`prometheus::core::Collector::collect`]
//! renders the last snapshot as metric families, so serving `/metrics` never touches
//! `/proc`. The mount table is parsed again only when `poll` reports a mount change.

mod families;
mod filter;
mod procfile;

use families::{FAMILIES, MEMINFO, family_meta};
use procfile::ProcFile;

use std::sync::{Mutex, MutexGuard};

use nunchi_model::{Label, Labels, METRIC_NAME, Sample, Series};
use procfs::{FromBufRead, FromBufReadSI};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

/// Reads host figures and exposes them as node_exporter-compatible metric families.
#[derive(Debug)]
pub struct HostCollector {
    descs: Vec<Desc>,
    snapshot: Mutex<Vec<Series>>,
    files: Mutex<Files>,
    ticks_per_second: f64,
}

/// The `/proc` files read every cycle, kept open, and the parsed mount table.
#[derive(Debug, Default)]
struct Files {
    stat: Option<ProcFile>,
    meminfo: Option<ProcFile>,
    diskstats: Option<ProcFile>,
    netdev: Option<ProcFile>,
    loadavg: Option<ProcFile>,
    mounts_file: Option<ProcFile>,
    mounts: Vec<procfs::MountEntry>,
}

/// Opens `path` on first use (and again after an error), then re-reads it.
fn read_proc<'a>(
    slot: &'a mut Option<ProcFile>,
    path: &str,
) -> Result<&'a [u8], procfs::ProcError> {
    if slot.is_none() {
        *slot = Some(ProcFile::open(path).map_err(|e| io_error(path, e))?);
    }
    let failed = match slot.as_mut().map(ProcFile::read) {
        Some(Err(e)) => Some(e),
        _ => None,
    };
    if let Some(e) = failed {
        *slot = None;
        return Err(io_error(path, e));
    }
    Ok(slot.as_ref().map(ProcFile::contents).unwrap_or_default())
}

fn io_error(path: &str, e: std::io::Error) -> procfs::ProcError {
    procfs::ProcError::Other(format!("{path}: {e}"))
}

/// Collects one cycle's series in family order. A series identical in labels to the one
/// at the same position last cycle is reused with its new value, so a steady host costs
/// no label allocations.
struct Builder {
    series: Vec<Series>,
    previous: Vec<Series>,
    timestamp_ms: i64,
}

fn same_labels(s: &Series, name: &str, labels: &[(&str, &str)]) -> bool {
    let mut it = s.labels.iter();
    it.next().is_some_and(|l| l.value == name)
        && s.labels.len() == labels.len() + 1
        && it
            .zip(labels)
            .all(|(l, (n, v))| l.name == *n && l.value == *v)
}

impl Builder {
    /// Adds a series; `labels` must be in name order (as every spec declares them).
    fn push(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let i = self.series.len();
        if let Some(prev) = self.previous.get_mut(i)
            && same_labels(prev, name, labels)
        {
            let mut s = std::mem::replace(
                prev,
                Series {
                    labels: Labels::new(),
                    samples: Vec::new(),
                },
            );
            s.samples.clear();
            s.samples.push(Sample {
                timestamp_ms: self.timestamp_ms,
                value,
            });
            self.series.push(s);
            return;
        }
        let mut l = Vec::with_capacity(labels.len() + 1);
        l.push(Label {
            name: METRIC_NAME.to_owned(),
            value: name.to_owned(),
        });
        l.extend(labels.iter().map(|(n, v)| Label {
            name: (*n).to_owned(),
            value: (*v).to_owned(),
        }));
        self.series.push(Series::single(
            Labels::from_sorted(l),
            self.timestamp_ms,
            value,
        ));
    }
}

/// One `prometheus` metric from a series (its labels minus `__name__`).
fn metric(kind: MetricType, series: &Series) -> Metric {
    let mut m = Metric::default();
    m.set_label(
        series
            .labels
            .iter()
            .filter(|l| l.name != METRIC_NAME)
            .map(|l| {
                let mut lp = LabelPair::default();
                lp.set_name(l.name.clone());
                lp.set_value(l.value.clone());
                lp
            })
            .collect(),
    );
    let value = series.samples.first().map_or(0.0, |s| s.value);
    if kind == MetricType::COUNTER {
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
            files: Mutex::new(Files::default()),
            ticks_per_second: procfs::ticks_per_second() as f64,
        }
    }

    /// Reads every source once and replaces the snapshot, stamping samples
    /// `timestamp_ms`. Returns how many sources failed (each failure is logged).
    pub fn refresh(&self, timestamp_ms: i64) -> usize {
        let previous = self
            .snapshot
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default();
        let mut b = Builder {
            series: Vec::with_capacity(previous.len() + 8),
            previous,
            timestamp_ms,
        };
        let Ok(mut files) = self.files.lock() else {
            return 0;
        };
        let files = &mut *files;
        let mut failures = 0;
        let mut note = |source: &str, r: Result<(), procfs::ProcError>| {
            if let Err(e) = r {
                failures += 1;
                tracing::warn!(source, error = %e, "host metrics: source failed this cycle");
            }
        };
        note("/proc/stat", self.read_stat(files, &mut b));
        note("/proc/loadavg", read_load(files, &mut b));
        note("/proc/meminfo", read_meminfo(files, &mut b));
        note("/proc/1/mounts", read_filesystems(files, &mut b));
        note("/proc/diskstats", read_diskstats(files, &mut b));
        note("/proc/net/dev", read_netdev(files, &mut b));
        if let Ok(mut snap) = self.snapshot.lock() {
            *snap = b.series;
        }
        failures
    }

    /// The last snapshot, held locked while the guard lives.
    pub fn snapshot(&self) -> Option<MutexGuard<'_, Vec<Series>>> {
        self.snapshot.lock().ok()
    }

    fn read_stat(&self, files: &mut Files, b: &mut Builder) -> Result<(), procfs::ProcError> {
        let bytes = read_proc(&mut files.stat, "/proc/stat")?;
        let stat = procfs::KernelStats::from_buf_read(bytes, procfs::current_system_info())?;
        let tps = self.ticks_per_second;
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
                    b.push(
                        "node_cpu_seconds_total",
                        &[("cpu", id.as_str()), ("mode", mode)],
                        t as f64 / tps,
                    );
                }
            }
        }
        b.push("node_boot_time_seconds", &[], stat.btime as f64);
        if let Some(running) = stat.procs_running {
            b.push("node_procs_running", &[], f64::from(running));
        }
        b.push("node_context_switches_total", &[], stat.ctxt as f64);
        Ok(())
    }
}

/// `/proc/loadavg` from the kept-open file: its first three fields, parsed as `f64`.
fn read_load(files: &mut Files, b: &mut Builder) -> Result<(), procfs::ProcError> {
    let text = read_proc(&mut files.loadavg, "/proc/loadavg")?;
    let text = std::str::from_utf8(text)
        .map_err(|e| io_error("/proc/loadavg", std::io::Error::other(e)))?;
    let mut fields = text.split_ascii_whitespace().map(str::parse::<f64>);
    for name in ["node_load1", "node_load5", "node_load15"] {
        match fields.next() {
            Some(Ok(v)) => b.push(name, &[], v),
            _ => {
                return Err(procfs::ProcError::Other(format!(
                    "/proc/loadavg: unexpected content {text:?}"
                )));
            }
        }
    }
    Ok(())
}

fn read_meminfo(files: &mut Files, b: &mut Builder) -> Result<(), procfs::ProcError> {
    let m = procfs::Meminfo::from_buf_read(read_proc(&mut files.meminfo, "/proc/meminfo")?)?;
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
            b.push(name, &[], v as f64);
        }
    }
    Ok(())
}

/// Whether the mount table changed since the last check: `/proc/<pid>/mounts` signals
/// `POLLPRI` after any mount or unmount, so an unchanged table costs one `poll` instead of
/// a re-read and parse.
fn mounts_changed(file: &ProcFile) -> bool {
    use rustix::event::{PollFd, PollFlags, poll};
    let mut fds = [PollFd::new(file.file(), PollFlags::PRI)];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match poll(&mut fds, Some(&zero)) {
        Ok(n) => n > 0 && fds[0].revents().intersects(PollFlags::PRI | PollFlags::ERR),
        Err(_) => true,
    }
}

fn read_filesystems(files: &mut Files, b: &mut Builder) -> Result<(), procfs::ProcError> {
    let first = files.mounts_file.is_none();
    if first {
        let f = ProcFile::open("/proc/1/mounts")
            .or_else(|_| ProcFile::open("/proc/self/mounts"))
            .map_err(|e| io_error("/proc/1/mounts", e))?;
        files.mounts_file = Some(f);
    }
    if let Some(f) = files.mounts_file.as_mut()
        && (first || mounts_changed(f))
    {
        match f.read() {
            Ok(text) => files.mounts = Vec::<procfs::MountEntry>::from_buf_read(text)?,
            Err(e) => {
                files.mounts_file = None;
                return Err(io_error("/proc/1/mounts", e));
            }
        }
    }
    let mut rows = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for m in &files.mounts {
        if filter::ignore_filesystem(&m.fs_vfstype, &m.fs_file) || !seen.insert(m.fs_file.as_str())
        {
            continue;
        }
        match rustix::fs::statvfs(m.fs_file.as_str()) {
            Ok(st) => {
                let frsize = st.f_frsize as f64;
                let values = [
                    st.f_blocks as f64 * frsize,
                    st.f_bavail as f64 * frsize,
                    st.f_bfree as f64 * frsize,
                ];
                rows.push((m, values));
            }
            Err(e) => {
                tracing::debug!(mountpoint = %m.fs_file, error = %e, "statvfs failed; skipped")
            }
        }
    }
    let names = [
        "node_filesystem_size_bytes",
        "node_filesystem_avail_bytes",
        "node_filesystem_free_bytes",
    ];
    for (i, name) in names.into_iter().enumerate() {
        for (m, values) in &rows {
            let labels = [
                ("device", m.fs_spec.as_str()),
                ("fstype", m.fs_vfstype.as_str()),
                ("mountpoint", m.fs_file.as_str()),
            ];
            b.push(name, &labels, values[i]);
        }
    }
    Ok(())
}

/// A family name and how to read its value from one row of a /proc table.
type Column<Row, V> = (&'static str, fn(&Row) -> V);

fn read_diskstats(files: &mut Files, b: &mut Builder) -> Result<(), procfs::ProcError> {
    let bytes = read_proc(&mut files.diskstats, "/proc/diskstats")?;
    let disks: Vec<_> = procfs::DiskStats::from_buf_read(bytes)?
        .0
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
        for d in &disks {
            b.push(name, &[("device", &d.name)], get(d));
        }
    }
    Ok(())
}

fn read_netdev(files: &mut Files, b: &mut Builder) -> Result<(), procfs::ProcError> {
    let bytes = read_proc(&mut files.netdev, "/proc/net/dev")?;
    let mut devs: Vec<_> = procfs::net::InterfaceDeviceStatus::from_buf_read(bytes)?
        .0
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
        for d in &devs {
            b.push(name, &[("device", &d.name)], get(d) as f64);
        }
    }
    Ok(())
}

impl Collector for HostCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Ok(snapshot) = self.snapshot.lock() else {
            return Vec::new();
        };
        let mut families: Vec<MetricFamily> = Vec::new();
        for s in snapshot.iter() {
            let name = s.labels.metric_name().unwrap_or_default();
            let (help, kind) = family_meta(name);
            if families.last().is_none_or(|f| f.name() != name) {
                let mut mf = MetricFamily::default();
                mf.set_name(name.to_owned());
                mf.set_help(help.to_owned());
                mf.set_field_type(kind);
                families.push(mf);
            }
            if let Some(f) = families.last_mut() {
                f.mut_metric().push(metric(kind, s));
            }
        }
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_required_family_is_reported_on_linux() {
        let c = HostCollector::new();
        assert_eq!(c.refresh(1), 0, "no source may fail on this host");
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
