//! Host: one machine in depth over a chosen time range, with drag-to-zoom on every chart.

use leptos::prelude::*;
use leptos_router::hooks::use_params_map;

use crate::api::{Api, Series};
use crate::chart::{Chart, Q, RangePicker, use_time_range};
use crate::format::{self, Unit};
use crate::live::Live;
use crate::pages::{PageHead, alerts_resource, error_view};

/// A PromQL string literal's content.
pub fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The host page.
#[component]
pub fn Host() -> impl IntoView {
    let params = use_params_map();
    let host = Memo::new(move |_| params.read().get("name").unwrap_or_default());
    move || {
        let h = host.get();
        view! { <HostView host=h /> }
    }
}

#[component]
fn HostView(host: String) -> impl IntoView {
    let range = use_time_range("1h");
    let sel = format!("host=\"{}\"", quote(&host));
    let s = |m: &str| format!("{m}{{{sel}}}");
    let cpu_modes = vec![Q::by(
        format!("avg by (mode) (rate(node_cpu_seconds_total{{{sel},mode!=\"idle\"}}[1m]))"),
        &["mode"],
    )];
    let cpu_cores = vec![Q::by(
        format!("1 - rate(node_cpu_seconds_total{{{sel},mode=\"idle\"}}[1m])"),
        &["cpu"],
    )];
    let memory = vec![
        Q::named(
            format!(
                "{} - {}",
                s("node_memory_MemTotal_bytes"),
                s("node_memory_MemAvailable_bytes")
            ),
            "used",
        ),
        Q::named(s("node_memory_Cached_bytes"), "cached"),
        Q::named(s("node_memory_Buffers_bytes"), "buffers"),
        Q::named(s("node_memory_MemFree_bytes"), "free"),
        Q::named(
            format!(
                "{} - {}",
                s("node_memory_SwapTotal_bytes"),
                s("node_memory_SwapFree_bytes")
            ),
            "swap used",
        ),
    ];
    let load = vec![
        Q::named(s("node_load1"), "load1"),
        Q::named(s("node_load5"), "load5"),
        Q::named(s("node_load15"), "load15"),
    ];
    let dir = |m: &str, d: &str| {
        Q::by(
            format!(
                "label_replace(rate({}[1m]), \"dir\", \"{d}\", \"\", \"\")",
                s(m)
            ),
            &["device", "dir"],
        )
    };
    let disk = vec![
        dir("node_disk_read_bytes_total", "read"),
        dir("node_disk_written_bytes_total", "write"),
    ];
    let net = vec![
        dir("node_network_receive_bytes_total", "rx"),
        dir("node_network_transmit_bytes_total", "tx"),
    ];
    let alerts = alerts_resource();
    let h2 = host.clone();
    view! {
        <PageHead title=host.clone()>
            <RangePicker range />
        </PageHead>
        <section class="panel" id="host-alerts">
            <h2>"Alerts on this host"</h2>
            <Transition fallback=|| ()>
                {move || {
                    let h = h2.clone();
                    Suspend::new(async move {
                        match alerts.await {
                            Ok(a) => {
                                let mine: Vec<_> = a
                                    .into_iter()
                                    .filter(|a| a.labels.get("host") == Some(&h))
                                    .collect();
                                if mine.is_empty() {
                                    view! { <p class="quiet">"None."</p> }.into_any()
                                } else {
                                    view! {
                                        <ul class="alert-list">
                                            {mine
                                                .into_iter()
                                                .map(|a| {
                                                    let name = a.labels.get("alertname").cloned().unwrap_or_default();
                                                    view! {
                                                        <li class=format!("alert {}", a.state)>
                                                            <strong>{name}</strong>
                                                            " "
                                                            <span class="state">{a.state.clone()}</span>
                                                            " "
                                                            <span class="summary">
                                                                {a.annotations.get("summary").cloned().unwrap_or_default()}
                                                            </span>
                                                        </li>
                                                    }
                                                })
                                                .collect_view()}
                                        </ul>
                                    }
                                        .into_any()
                                }
                            }
                            Err(e) => error_view(e),
                        }
                    })
                }}
            </Transition>
        </section>
        <div class="grid">
            <Chart title="CPU by mode" unit=Unit::Percent queries=cpu_modes range zoomable=true />
            <Chart title="CPU per core" unit=Unit::Percent queries=cpu_cores range zoomable=true />
            <Chart title="Memory" unit=Unit::Bytes queries=memory range zoomable=true />
            <Chart title="Load" unit=Unit::Number queries=load range zoomable=true />
            <Chart title="Disk I/O" unit=Unit::BytesPerSec queries=disk range zoomable=true />
            <Chart title="Network" unit=Unit::BytesPerSec queries=net range zoomable=true />
        </div>
        <Filesystems sel />
    }
}

#[component]
fn Filesystems(sel: String) -> impl IntoView {
    let live = Live::get();
    let api = Api::current();
    let fs = format!("fstype!~\"tmpfs|ramfs|overlay\",{sel}");
    let data = Resource::new(
        move || live.tick.get(),
        move |_| {
            let size = api.query(&format!("node_filesystem_size_bytes{{{fs}}}"), None);
            let avail = api.query(&format!("node_filesystem_avail_bytes{{{fs}}}"), None);
            async move {
                let (size, avail) = futures_util::join!(size, avail);
                let avail = avail?;
                Ok::<_, String>(
                    size?
                        .into_iter()
                        .map(|s| {
                            let a = avail
                                .iter()
                                .find(|a| a.metric_without_name() == s.metric_without_name())
                                .and_then(Series::last);
                            (
                                s.label("mountpoint").to_owned(),
                                s.label("device").to_owned(),
                                s.last(),
                                a,
                            )
                        })
                        .collect::<Vec<_>>(),
                )
            }
        },
    );
    view! {
        <section class="panel" id="filesystems">
            <h2>"Filesystems"</h2>
            <Transition fallback=|| ()>
                {move || Suspend::new(async move {
                    match data.await {
                        Ok(rows) => view! {
                            <table>
                                <thead>
                                    <tr>
                                        <th scope="col">"Mount"</th>
                                        <th scope="col">"Device"</th>
                                        <th scope="col">"Size"</th>
                                        <th scope="col">"Available"</th>
                                        <th scope="col">"Used"</th>
                                    </tr>
                                </thead>
                                <tbody>
                                    {rows
                                        .into_iter()
                                        .map(|(m, d, size, avail)| {
                                            let used = match (size, avail) {
                                                (Some(s), Some(a)) if s > 0.0 => format::value(1.0 - a / s, Unit::Percent),
                                                _ => "–".into(),
                                            };
                                            view! {
                                                <tr>
                                                    <td>{m}</td>
                                                    <td>{d}</td>
                                                    <td>{size.map(|v| format::value(v, Unit::Bytes))}</td>
                                                    <td>{avail.map(|v| format::value(v, Unit::Bytes))}</td>
                                                    <td>{used}</td>
                                                </tr>
                                            }
                                        })
                                        .collect_view()}
                                </tbody>
                            </table>
                        }
                            .into_any(),
                        Err(e) => error_view(e),
                    }
                })}
            </Transition>
        </section>
    }
}
