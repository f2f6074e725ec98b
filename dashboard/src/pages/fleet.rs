//! Fleet: every host in one table, worst first, with sparklines of the last 15 minutes.
//!
//! A handful of queries answer for the whole fleet (one series per host each), so a page of
//! hundreds of hosts costs the same few requests per refresh as a page of one.

use std::collections::BTreeMap;

use leptos::prelude::*;
use leptos_router::hooks::{use_navigate, use_query_map};
use serde::{Deserialize, Serialize};

use crate::api::{Alert, Api, Series};
use crate::chart::{Sparkline, set_params};
use crate::format::{self, Unit};
use crate::live::{Live, now_secs};
use crate::pages::{PageHead, error_view, fetch_alerts};

/// A host stops counting as up after this long without samples (three 15 s intervals).
const DOWN_AFTER: f64 = 45.0;
/// Sparkline window, seconds.
pub const SPARK_SPAN: f64 = 900.0;
/// Sparkline step, seconds.
pub const SPARK_STEP: f64 = 15.0;

/// CPU busy ratio per host.
pub const CPU: &str = r#"1 - avg by (host) (rate(node_cpu_seconds_total{mode="idle"}[1m]))"#;
/// Memory used ratio per host.
pub const MEM: &str = "1 - sum by (host) (node_memory_MemAvailable_bytes) / sum by (host) (node_memory_MemTotal_bytes)";
/// The fullest filesystem's used ratio per host.
pub const DISK: &str = r#"max by (host) (1 - node_filesystem_avail_bytes{fstype!~"tmpfs|ramfs|overlay"} / node_filesystem_size_bytes)"#;
/// Network bytes/s per host, both directions.
pub const NET: &str = "sum by (host) (rate(node_network_receive_bytes_total[1m])) + sum by (host) (rate(node_network_transmit_bytes_total[1m]))";
/// Every host seen in the last hour.
pub const KNOWN: &str = "group by (host) (present_over_time(node_load1[1h]))";
/// Each host's newest sample time.
pub const SEEN: &str = "max by (host) (timestamp(node_load1))";

/// One host's row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HostRow {
    /// Host name (the agent's `host` label).
    pub host: String,
    /// Last sample time, Unix seconds.
    pub last_seen: Option<f64>,
    /// Up: a sample within the last 45 s.
    pub up: bool,
    /// CPU busy ratio.
    pub cpu: Option<f64>,
    /// Memory used ratio.
    pub mem: Option<f64>,
    /// Fullest filesystem's used ratio.
    pub disk: Option<f64>,
    /// Network bytes/s, both directions.
    pub net: Option<f64>,
    /// CPU sparkline.
    pub cpu_spark: Vec<(f64, f64)>,
    /// Memory sparkline.
    pub mem_spark: Vec<(f64, f64)>,
    /// Network sparkline.
    pub net_spark: Vec<(f64, f64)>,
    /// Firing alerts naming this host.
    pub firing: usize,
}

impl HostRow {
    /// Higher is worse: down, then firing alerts, then the fullest resource.
    fn badness(&self) -> f64 {
        let worst = [self.cpu, self.mem, self.disk]
            .into_iter()
            .flatten()
            .fold(0.0f64, f64::max);
        (if self.up { 0.0 } else { 1000.0 }) + self.firing as f64 * 10.0 + worst
    }

    fn problem(&self) -> bool {
        !self.up
            || self.firing > 0
            || [self.cpu, self.mem, self.disk]
                .into_iter()
                .flatten()
                .any(|v| v > 0.8)
    }
}

fn by_host(series: Vec<Series>) -> BTreeMap<String, Series> {
    series
        .into_iter()
        .map(|s| (s.label("host").to_owned(), s))
        .collect()
}

/// Every host, worst first.
pub async fn fetch_fleet(api: Api, alerts: Vec<Alert>) -> Result<Vec<HostRow>, String> {
    let now = now_secs().floor();
    // Ends now, so a sparkline's last point is the current value.
    let (start, end) = (now - SPARK_SPAN, now);
    let (known, seen, disk, cpu, mem, net) = futures_util::join!(
        api.query(KNOWN, Some(now)),
        api.query(SEEN, Some(now)),
        api.query(DISK, Some(now)),
        api.query_range(CPU, start, end, SPARK_STEP),
        api.query_range(MEM, start, end, SPARK_STEP),
        api.query_range(NET, start, end, SPARK_STEP),
    );
    let (seen, disk, cpu, mem, net) = (
        by_host(seen?),
        by_host(disk?),
        by_host(cpu?),
        by_host(mem?),
        by_host(net?),
    );
    let mut firing: BTreeMap<String, usize> = BTreeMap::new();
    for a in alerts.iter().filter(|a| a.state == "firing") {
        if let Some(h) = a.labels.get("host") {
            *firing.entry(h.clone()).or_default() += 1;
        }
    }
    let spark = |m: &BTreeMap<String, Series>, h: &str| {
        m.get(h).map(|s| s.points.clone()).unwrap_or_default()
    };
    let mut rows: Vec<HostRow> = known?
        .iter()
        .map(|s| s.label("host").to_owned())
        .filter(|h| !h.is_empty())
        .map(|h| {
            let last_seen = seen.get(&h).and_then(Series::last);
            HostRow {
                up: last_seen.is_some_and(|t| now - t <= DOWN_AFTER),
                last_seen,
                cpu: cpu.get(&h).and_then(Series::last),
                mem: mem.get(&h).and_then(Series::last),
                disk: disk.get(&h).and_then(Series::last),
                net: net.get(&h).and_then(Series::last),
                cpu_spark: spark(&cpu, &h),
                mem_spark: spark(&mem, &h),
                net_spark: spark(&net, &h),
                firing: firing.get(&h).copied().unwrap_or(0),
                host: h,
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        b.badness()
            .total_cmp(&a.badness())
            .then_with(|| a.host.cmp(&b.host))
    });
    Ok(rows)
}

/// The fleet page.
#[component]
pub fn Fleet() -> impl IntoView {
    let live = Live::get();
    let api = Api::current();
    let rows = Resource::new(
        move || live.tick.get(),
        move |_| {
            let api = api.clone();
            async move {
                let a = fetch_alerts(&api).await.unwrap_or_default();
                fetch_fleet(api, a).await
            }
        },
    );
    let query = use_query_map();
    let filter = Memo::new(move |_| query.read().get("q").unwrap_or_default());
    let problems = Memo::new(move |_| query.read().get("problems").is_some_and(|v| v == "1"));
    let navigate = use_navigate();
    let nav2 = navigate.clone();
    let on_filter = move |ev: leptos::ev::Event| {
        let v = event_target_value(&ev);
        set_params(&navigate, &[("q", (!v.is_empty()).then_some(v))]);
    };
    let on_problems = move |ev: leptos::ev::Event| {
        let on = event_target_checked(&ev);
        set_params(&nav2, &[("problems", on.then(|| "1".to_owned()))]);
    };
    view! {
        <PageHead title="Fleet".into()>
            <div class="filters">
                <input
                    type="search"
                    id="fleet-filter"
                    placeholder="Filter hosts"
                    aria-label="Filter hosts"
                    prop:value=move || filter.get()
                    on:input=on_filter
                />
                <label>
                    <input type="checkbox" id="fleet-problems" prop:checked=move || problems.get() on:change=on_problems />
                    " Problems only"
                </label>
            </div>
        </PageHead>
        <Transition fallback=|| view! { <p>"Loading hosts…"</p> }>
            {move || Suspend::new(async move {
                match rows.await {
                    Ok(all) => {
                        let total = all.len();
                        let down = all.iter().filter(|r| !r.up).count();
                        let f = filter.get().to_lowercase();
                        let shown: Vec<HostRow> = all
                            .into_iter()
                            .filter(|r| f.is_empty() || r.host.to_lowercase().contains(&f))
                            .filter(|r| !problems.get() || r.problem())
                            .collect();
                        view! {
                            <p class="summary" id="fleet-summary">
                                {format!("{total} hosts, {down} down, {} shown", shown.len())}
                            </p>
                            <div class="table-wrap">
                                <table class="fleet" id="fleet-table">
                                    <thead>
                                        <tr>
                                            <th scope="col">"Host"</th>
                                            <th scope="col">"Status"</th>
                                            <th scope="col">"CPU"</th>
                                            <th scope="col">"Memory"</th>
                                            <th scope="col">"Disk"</th>
                                            <th scope="col">"Network"</th>
                                            <th scope="col">"Alerts"</th>
                                        </tr>
                                    </thead>
                                    <tbody>
                                        {shown.into_iter().map(row).collect_view()}
                                    </tbody>
                                </table>
                            </div>
                        }
                            .into_any()
                    }
                    Err(e) => error_view(e),
                }
            })}
        </Transition>
    }
}

fn level(v: Option<f64>) -> &'static str {
    match v {
        Some(v) if v >= 0.9 => "bad",
        Some(v) if v >= 0.7 => "warn",
        _ => "ok",
    }
}

fn row(r: HostRow) -> impl IntoView {
    let pct = |v: Option<f64>| v.map_or("–".to_owned(), |v| format::value(v, Unit::Percent));
    let status = if r.up {
        "up".to_owned()
    } else {
        match r.last_seen {
            Some(t) => format!("down since {}", format::clock(t, false)),
            None => "down".to_owned(),
        }
    };
    let href = format!("/host/{}", crate::api::encode(&r.host));
    view! {
        <tr class:down=!r.up data-host=r.host.clone()>
            <th scope="row">
                <a href=href>{r.host.clone()}</a>
            </th>
            <td class={if r.up { "status up" } else { "status down" }}>{status}</td>
            <td class=format!("metric {}", level(r.cpu))>
                <span>{pct(r.cpu)}</span>
                <Sparkline points=r.cpu_spark max=1.0 />
            </td>
            <td class=format!("metric {}", level(r.mem))>
                <span>{pct(r.mem)}</span>
                <Sparkline points=r.mem_spark max=1.0 />
            </td>
            <td class=format!("metric {}", level(r.disk))>
                <span>{pct(r.disk)}</span>
            </td>
            <td class="metric">
                <span>{r.net.map_or("–".to_owned(), |v| format::value(v, Unit::BytesPerSec))}</span>
                <Sparkline points=r.net_spark />
            </td>
            <td class={if r.firing > 0 { "alerts firing" } else { "alerts" }}>
                {if r.firing > 0 { format!("{} firing", r.firing) } else { "–".to_owned() }}
            </td>
        </tr>
    }
}
