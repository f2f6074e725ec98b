//! Time-series charts and sparklines drawn as SVG, with the time range taken from the URL.
//!
//! A [`Chart`] owns its queries: it asks the collector for one point per pixel of its width
//! (`step = range / width`), so the server does the downsampling and a 30-day chart costs
//! what a 5-minute one does. Dragging across a zoomable chart sets `from`/`to` in the URL.

use leptos::prelude::*;
use leptos_router::hooks::{use_navigate, use_query_map};
use serde::{Deserialize, Serialize};

use crate::api::{Api, Series};
use crate::format::{self, Unit};
use crate::live::{Live, now_secs};

/// How a query's series are named in the legend.
#[derive(Debug, Clone, PartialEq)]
pub enum Legend {
    /// One fixed name (the query returns one series).
    Fixed(&'static str),
    /// The values of these labels, joined.
    Labels(&'static [&'static str]),
    /// The whole series name, `metric{label="value", ...}`.
    Series,
}

/// One query of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Q {
    /// PromQL.
    pub expr: String,
    /// Legend naming.
    pub legend: Legend,
}

impl Q {
    /// A query whose series are named by labels.
    pub fn by(expr: impl Into<String>, labels: &'static [&'static str]) -> Q {
        Q {
            expr: expr.into(),
            legend: Legend::Labels(labels),
        }
    }

    /// A query with one series and a fixed name.
    pub fn named(expr: impl Into<String>, name: &'static str) -> Q {
        Q {
            expr: expr.into(),
            legend: Legend::Fixed(name),
        }
    }
}

/// The time window of a page: the last `span` seconds, or a fixed `from`..`to` (zoom).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TimeRange {
    /// Width of a relative window, seconds.
    pub span: f64,
    /// Fixed start (Unix seconds), when zoomed.
    pub from: Option<f64>,
    /// Fixed end (Unix seconds), when zoomed.
    pub to: Option<f64>,
}

impl TimeRange {
    /// `(start, end)` now.
    pub fn window(&self) -> (f64, f64) {
        match (self.from, self.to) {
            (Some(f), Some(t)) if t > f => (f, t),
            _ => {
                let end = now_secs().floor();
                (end - self.span, end)
            }
        }
    }
}

/// The choices of the range picker.
pub const RANGES: [&str; 8] = ["5m", "15m", "1h", "6h", "24h", "7d", "14d", "30d"];

/// The page's time range from `?range=` (default `default`), `?from=`, `?to=`.
pub fn use_time_range(default: &'static str) -> Memo<TimeRange> {
    let q = use_query_map();
    Memo::new(move |_| {
        let q = q.read();
        let span = q
            .get("range")
            .and_then(|r| format::parse_duration(&r))
            .or_else(|| format::parse_duration(default))
            .unwrap_or(3600.0);
        let num = |k: &str| q.get(k).and_then(|v| v.parse::<f64>().ok());
        TimeRange {
            span,
            from: num("from"),
            to: num("to"),
        }
    })
}

/// Sets query parameters of the current URL (browser only; a replace, not a new entry).
pub fn set_params(
    navigate: &dyn Fn(&str, leptos_router::NavigateOptions),
    set: &[(&str, Option<String>)],
) {
    let Ok(loc) = window().location().search() else {
        return;
    };
    let Ok(p) = web_sys::UrlSearchParams::new_with_str(&loc) else {
        return;
    };
    for (k, v) in set {
        match v {
            Some(v) => p.set(k, v),
            None => p.delete(k),
        }
    }
    let path = window().location().pathname().unwrap_or_default();
    let qs: String = p.to_string().into();
    let url = if qs.is_empty() {
        path
    } else {
        format!("{path}?{qs}")
    };
    navigate(
        &url,
        leptos_router::NavigateOptions {
            replace: true,
            scroll: false,
            ..Default::default()
        },
    );
}

/// The range picker: links to the same page with another `range` (zoom cleared).
#[component]
pub fn RangePicker(
    /// The page's range.
    range: Memo<TimeRange>,
) -> impl IntoView {
    let navigate = use_navigate();
    let zoomed = move || range.get().from.is_some();
    let pick = move |r: &'static str| {
        let navigate = navigate.clone();
        move |_| {
            set_params(
                &navigate,
                &[("range", Some(r.to_owned())), ("from", None), ("to", None)],
            )
        }
    };
    view! {
        <div class="range-picker" role="group" aria-label="Time range">
            {RANGES
                .iter()
                .map(|r| {
                    let r = *r;
                    let active = move || {
                        !zoomed() && format::parse_duration(r) == Some(range.get().span)
                    };
                    view! {
                        <button type="button" class:active=active aria-pressed=move || active().to_string() on:click=pick(r)>
                            {r}
                        </button>
                    }
                })
                .collect_view()}
            <Show when=zoomed>
                <button type="button" class="reset-zoom" on:click=pick("1h")>
                    "Reset zoom"
                </button>
            </Show>
        </div>
    }
}

/// One named line of a chart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Line {
    /// Legend text.
    pub name: String,
    /// `(time, value)` points.
    pub points: Vec<(f64, f64)>,
}

/// What a chart draws.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChartData {
    /// Window start (Unix seconds).
    pub start: f64,
    /// Window end.
    pub end: f64,
    /// Query step, seconds.
    pub step: f64,
    /// Lines.
    pub lines: Vec<Line>,
}

fn legend_name(s: &Series, l: &Legend) -> String {
    match l {
        Legend::Series => format!(
            "{}{}",
            s.label("__name__"),
            crate::format::labels_text(&s.metric, &[])
        ),
        Legend::Fixed(n) => (*n).to_owned(),
        Legend::Labels(names) => {
            let parts: Vec<&str> = names
                .iter()
                .map(|n| s.label(n))
                .filter(|v| !v.is_empty())
                .collect();
            if parts.is_empty() {
                "value".into()
            } else {
                parts.join(" ")
            }
        }
    }
}

/// Step for a window drawn `width` pixels wide: one point per pixel, whole seconds.
pub fn step_for(start: f64, end: f64, width: u32) -> f64 {
    ((end - start) / f64::from(width.max(1))).ceil().max(1.0)
}

/// Runs a chart's queries over the window.
pub async fn fetch_chart(
    api: Api,
    queries: Vec<Q>,
    range: TimeRange,
    width: u32,
) -> Result<ChartData, String> {
    let (start, end) = range.window();
    let step = step_for(start, end, width);
    // Align to the step, so consecutive refreshes ask for the same points.
    let (start, end) = ((start / step).floor() * step, (end / step).floor() * step);
    let futures: Vec<_> = queries
        .iter()
        .map(|q| api.query_range(&q.expr, start, end, step))
        .collect();
    let answers = futures_util::future::join_all(futures).await;
    let mut lines = Vec::new();
    for (q, a) in queries.iter().zip(answers) {
        for s in a? {
            lines.push(Line {
                name: legend_name(&s, &q.legend),
                points: s.points,
            });
        }
    }
    lines.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(ChartData {
        start,
        end,
        step,
        lines,
    })
}

const W: f64 = 1000.0;
const H: f64 = 200.0;
const MAX_LEGEND: usize = 12;

fn bounds<'a>(points: impl Iterator<Item = &'a (f64, f64)>) -> (f64, f64) {
    let (mut lo, mut hi) = (0.0f64, f64::NEG_INFINITY);
    for &(_, v) in points {
        if v.is_finite() {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    if !hi.is_finite() || hi <= lo {
        hi = lo + 1.0;
    }
    (lo, hi + (hi - lo) * 0.05)
}

/// SVG polyline paths for `points`, broken at gaps longer than two steps and at NaN.
fn paths(
    points: &[(f64, f64)],
    x: impl Fn(f64) -> f64,
    y: impl Fn(f64) -> f64,
    gap: f64,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut last_t = f64::NEG_INFINITY;
    for &(t, v) in points {
        if (!v.is_finite() || t - last_t > gap) && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        if v.is_finite() {
            cur.push_str(&format!("{:.1},{:.1} ", x(t), y(v)));
            last_t = t;
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A chart over the page's time range, refreshed live.
#[component]
pub fn Chart(
    /// Heading.
    title: &'static str,
    /// Unit of the values.
    unit: Unit,
    /// Queries drawn.
    queries: Vec<Q>,
    /// The page's range.
    range: Memo<TimeRange>,
    /// Dragging across the chart zooms the page.
    #[prop(optional)]
    zoomable: bool,
) -> impl IntoView {
    let live = Live::get();
    let api = Api::current();
    let queries = StoredValue::new(queries);
    let data = Resource::new(
        move || (live.tick.get(), range.get(), live.width.get()),
        move |(_, r, w)| fetch_chart(api.clone(), queries.get_value(), r, w),
    );
    let navigate = use_navigate();
    let drag = RwSignal::new(None::<(f64, f64)>);
    let frac = |ev: &leptos::ev::PointerEvent| -> f64 {
        use web_sys::wasm_bindgen::JsCast;
        let w = ev
            .current_target()
            .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
            .map_or(1.0, |e| f64::from(e.client_width().max(1)));
        (f64::from(ev.offset_x()) / w).clamp(0.0, 1.0)
    };
    let window_now = move || data.get().and_then(Result::ok).map(|d| (d.start, d.end));
    let on_down = move |ev: leptos::ev::PointerEvent| {
        if zoomable {
            let f = frac(&ev);
            drag.set(Some((f, f)));
        }
    };
    let on_move = move |ev: leptos::ev::PointerEvent| {
        if drag.get_untracked().is_some() {
            let f = frac(&ev);
            drag.update(|d| {
                if let Some(d) = d {
                    d.1 = f;
                }
            });
        }
    };
    let on_up = move |_: leptos::ev::PointerEvent| {
        if let (Some((a, b)), Some((s, e))) = (drag.get_untracked(), window_now()) {
            drag.set(None);
            let (a, b) = (a.min(b), a.max(b));
            if b - a > 0.01 {
                let from = (s + a * (e - s)).floor();
                let to = (s + b * (e - s)).ceil();
                set_params(
                    &navigate,
                    &[
                        ("from", Some(from.to_string())),
                        ("to", Some(to.to_string())),
                    ],
                );
            }
        } else {
            drag.set(None);
        }
    };
    let selection = move || {
        drag.get().map(|(a, b)| {
            let (a, b) = (a.min(b), a.max(b));
            format!("left:{:.2}%;width:{:.2}%", a * 100.0, (b - a) * 100.0)
        })
    };
    view! {
        <section class="chart" data-title=title>
            <h3>{title}</h3>
            <Transition fallback=|| view! { <div class="plot-wrap loading">"Loading…"</div> }>
                {move || Suspend::new(async move {
                    match data.await {
                        Ok(d) => plot(d, unit).into_any(),
                        Err(e) => view! { <p class="error" role="alert">{e}</p> }.into_any(),
                    }
                })}
            </Transition>
            <div
                class="zoom-layer"
                class:zoomable=zoomable
                on:pointerdown=on_down
                on:pointermove=on_move
                on:pointerup=on_up
                on:pointerleave=move |_| drag.set(None)
            >
                {move || selection().map(|s| view! { <div class="zoom-selection" style=s></div> })}
            </div>
        </section>
    }
}

fn plot(d: ChartData, unit: Unit) -> impl IntoView {
    let (lo, hi) = bounds(d.lines.iter().flat_map(|l| l.points.iter()));
    let span = (d.end - d.start).max(1.0);
    let x = move |t: f64| (t - d.start) / span * W;
    let y = move |v: f64| H - (v - lo) / (hi - lo) * H;
    let total: usize = d.lines.iter().map(|l| l.points.len()).sum();
    let gap = d.step * 2.5;
    let with_date = span > 86400.0;
    let polylines = d
        .lines
        .iter()
        .enumerate()
        .flat_map(|(i, l)| {
            paths(&l.points, x, y, gap)
                .into_iter()
                .map(move |p| view! { <polyline class=format!("s{}", i % 8) points=p></polyline> })
        })
        .collect_view();
    let more = d.lines.len().saturating_sub(MAX_LEGEND);
    let legend = d
        .lines
        .iter()
        .take(MAX_LEGEND)
        .enumerate()
        .map(|(i, l)| {
            let last = l
                .points
                .last()
                .map_or("–".into(), |p| format::value(p.1, unit));
            view! {
                <li>
                    <span class=format!("swatch b{}", i % 8)></span>
                    <span class="name">{l.name.clone()}</span>
                    <span class="last">{last}</span>
                </li>
            }
        })
        .collect_view();
    let empty = d.lines.is_empty();
    view! {
        <div class="plot-wrap">
            <div class="y-labels" aria-hidden="true">
                <span>{format::value(hi, unit)}</span>
                <span>{format::value((hi + lo) / 2.0, unit)}</span>
                <span>{format::value(lo, unit)}</span>
            </div>
            <svg
                class="plot"
                viewBox=format!("0 0 {W} {H}")
                preserveAspectRatio="none"
                role="img"
                aria-label="chart"
                data-points=total
                data-step=d.step
            >
                <line class="grid" x1="0" x2=W y1=H / 2.0 y2=H / 2.0></line>
                {polylines}
            </svg>
            <div class="x-labels" aria-hidden="true">
                <span>{format::clock(d.start, with_date)}</span>
                <span>{format::clock(d.end, with_date)}</span>
            </div>
            {empty.then(|| view! { <p class="empty">"No data in this range."</p> })}
        </div>
        <ul class="legend">
            {legend}
            {(more > 0).then(|| view! { <li class="more">{format!("+{more} more")}</li> })}
        </ul>
    }
}

/// A small line of recent values (fleet rows).
#[component]
pub fn Sparkline(
    /// `(time, value)` points.
    points: Vec<(f64, f64)>,
    /// Top of the scale (default: the largest value).
    #[prop(optional)]
    max: Option<f64>,
) -> impl IntoView {
    let (lo, hi) = bounds(points.iter());
    let hi = max.map_or(hi, |m| m.max(hi));
    let (t0, t1) = (
        points.first().map_or(0.0, |p| p.0),
        points.last().map_or(1.0, |p| p.0),
    );
    let span = (t1 - t0).max(1.0);
    let p: String = points
        .iter()
        .filter(|p| p.1.is_finite())
        .map(|&(t, v)| {
            format!(
                "{:.1},{:.1} ",
                (t - t0) / span * 100.0,
                20.0 - (v - lo) / (hi - lo) * 20.0
            )
        })
        .collect();
    view! {
        <svg class="spark" viewBox="0 0 100 20" preserveAspectRatio="none" aria-hidden="true">
            <polyline points=p></polyline>
        </svg>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_point_per_pixel_in_whole_seconds() {
        assert_eq!(step_for(0.0, 3600.0, 720), 5.0);
        assert_eq!(step_for(0.0, 300.0, 720), 1.0);
        assert_eq!(step_for(0.0, 30.0 * 86400.0, 720), 3600.0);
    }

    #[test]
    fn lines_break_at_gaps_and_nan() {
        let pts = [
            (0.0, 1.0),
            (1.0, 2.0),
            (10.0, 3.0),
            (11.0, f64::NAN),
            (12.0, 4.0),
        ];
        let p = paths(&pts, |t| t, |v| v, 2.5);
        assert_eq!(p.len(), 3, "{p:?}");
    }
}
