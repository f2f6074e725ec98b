//! Alerts: what is firing and pending, silences (create and expire), and the last day's
//! history from the `ALERTS` series.

use std::collections::BTreeMap;

use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::api::{Alert, Api, Silence, SilenceMatcher};
use crate::format;
use crate::live::{Live, now_secs};
use crate::pages::{PageHead, alerts_resource, error_view, labels_text};

/// Parses `a="b", c=~"d.*", e!="f"` into silence matchers, as Alertmanager does.
pub fn parse_matchers(s: &str) -> Result<Vec<SilenceMatcher>, String> {
    nunchi_model::api::parse_matchers(s).map_err(|e| e.to_string())
}

fn matchers_text(ms: &[SilenceMatcher]) -> String {
    ms.iter()
        .map(|m| {
            let op = match (m.is_equal, m.is_regex) {
                (true, false) => "=",
                (true, true) => "=~",
                (false, false) => "!=",
                (false, true) => "!~",
            };
            format!("{}{op}\"{}\"", m.name, m.value.replace('"', "\\\""))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One stretch of the last day during which an alert fired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    /// Alert name.
    pub name: String,
    /// Other labels.
    pub labels: String,
    /// Start, Unix seconds.
    pub from: f64,
    /// End, Unix seconds.
    pub to: f64,
    /// Still firing at the end of the window.
    pub ongoing: bool,
}

const HISTORY_STEP: f64 = 60.0;

async fn fetch_history(api: Api) -> Result<Vec<Episode>, String> {
    let end = (now_secs() / HISTORY_STEP).floor() * HISTORY_STEP;
    let start = end - 86400.0;
    let series = api
        .query_range("ALERTS{alertstate=\"firing\"}", start, end, HISTORY_STEP)
        .await?;
    let mut out = Vec::new();
    for s in series {
        let name = s.label("alertname").to_owned();
        let labels = labels_text(&s.metric, &["alertname", "alertstate"]);
        let mut cur: Option<(f64, f64)> = None;
        for &(t, _) in &s.points {
            cur = match cur {
                Some((a, b)) if t - b <= HISTORY_STEP * 1.5 => Some((a, t)),
                Some((a, b)) => {
                    out.push(Episode {
                        name: name.clone(),
                        labels: labels.clone(),
                        from: a,
                        to: b,
                        ongoing: false,
                    });
                    Some((t, t))
                }
                None => Some((t, t)),
            };
        }
        if let Some((a, b)) = cur {
            out.push(Episode {
                name,
                labels,
                from: a,
                to: b,
                ongoing: end - b <= HISTORY_STEP,
            });
        }
    }
    out.sort_by(|a, b| b.from.total_cmp(&a.from));
    Ok(out)
}

/// The alerts page.
#[component]
pub fn Alerts() -> impl IntoView {
    let live = Live::get();
    let api = Api::current();
    let alerts = alerts_resource();
    let changed = RwSignal::new(0u32);
    let api2 = api.clone();
    let silences = Resource::new(
        move || (live.tick.get(), changed.get()),
        move |_| api2.get_json::<Vec<Silence>>("/api/v2/silences".into()),
    );
    let api3 = api.clone();
    let history = Resource::new(
        move || live.tick.get() / 30,
        move |_| fetch_history(api3.clone()),
    );
    let matchers = RwSignal::new(String::new());
    let author = RwSignal::new(String::new());
    let comment = RwSignal::new(String::new());
    let hours = RwSignal::new("2".to_owned());
    let message = RwSignal::new(None::<(bool, String)>);
    let api4 = api.clone();
    let create = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let ms = match parse_matchers(&matchers.get_untracked()) {
            Ok(m) => m,
            Err(e) => {
                message.set(Some((false, e)));
                return;
            }
        };
        let who = author.get_untracked();
        if who.trim().is_empty() {
            message.set(Some((false, "Say who creates the silence.".into())));
            return;
        }
        let h: f64 = hours.get_untracked().parse().unwrap_or(2.0);
        let now = now_secs();
        let iso = |t: f64| {
            chrono::DateTime::from_timestamp_millis((t * 1e3) as i64)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default()
        };
        let body = json!({
            "matchers": ms,
            "startsAt": iso(now),
            "endsAt": iso(now + h * 3600.0),
            "createdBy": who,
            "comment": comment.get_untracked(),
        });
        let api = api4.clone();
        leptos::task::spawn_local(async move {
            match api
                .send("POST", "/api/v2/silences".into(), Some(body))
                .await
            {
                Ok(v) => {
                    message.set(Some((
                        true,
                        format!("Silence {} created.", v["silenceID"].as_str().unwrap_or("")),
                    )));
                    matchers.set(String::new());
                    comment.set(String::new());
                    changed.update(|c| *c += 1);
                }
                Err(e) => message.set(Some((false, e))),
            }
        });
    };
    let expire = move |id: String| {
        let api = api.clone();
        leptos::task::spawn_local(async move {
            match api
                .send("DELETE", format!("/api/v2/silence/{id}"), None)
                .await
            {
                Ok(_) => {
                    message.set(Some((true, format!("Silence {id} expired."))));
                    changed.update(|c| *c += 1);
                }
                Err(e) => message.set(Some((false, e))),
            }
        });
    };
    let silence_alert = move |a: &Alert| {
        let mut m = BTreeMap::new();
        for k in ["alertname", "host", "instance"] {
            if let Some(v) = a.labels.get(k) {
                m.insert(k, v.clone());
            }
        }
        let ms: Vec<SilenceMatcher> = m
            .into_iter()
            .map(|(k, v)| SilenceMatcher {
                name: k.into(),
                value: v,
                is_regex: false,
                is_equal: true,
            })
            .collect();
        matchers.set(matchers_text(&ms));
    };
    view! {
        <PageHead title="Alerts".into() />
        <section class="panel" id="active-alerts">
            <h2>"Firing and pending"</h2>
            <Transition fallback=|| view! { <p>"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match alerts.await {
                        Ok(mut list) if !list.is_empty() => {
                            list.sort_by(|a, b| b.state.cmp(&a.state).then(a.active_at.cmp(&b.active_at)));
                            view! {
                                <div class="table-wrap">
                                    <table>
                                        <thead>
                                            <tr>
                                                <th scope="col">"Alert"</th>
                                                <th scope="col">"State"</th>
                                                <th scope="col">"Labels"</th>
                                                <th scope="col">"Value"</th>
                                                <th scope="col">"Since"</th>
                                                <th scope="col">"Summary"</th>
                                                <th scope="col"></th>
                                            </tr>
                                        </thead>
                                        <tbody>
                                            {list
                                                .into_iter()
                                                .map(|a| {
                                                    let since = format::parse_rfc3339(&a.active_at).map(format::time).unwrap_or_default();
                                                    let name = a.labels.get("alertname").cloned().unwrap_or_default();
                                                    let summary = a.annotations.get("summary").or(a.annotations.get("description")).cloned().unwrap_or_default();
                                                    let labels = labels_text(&a.labels, &["alertname"]);
                                                    let state = if a.flapping { format!("{} (flapping)", a.state) } else { a.state.clone() };
                                                    let value = a.value.parse::<f64>().map(|v| format!("{v}")).unwrap_or(a.value.clone());
                                                    let a2 = a.clone();
                                                    view! {
                                                        <tr class=format!("alert {}", a.state) data-alert=name.clone()>
                                                            <th scope="row">{name.clone()}</th>
                                                            <td>{state}</td>
                                                            <td class="labels">{labels}</td>
                                                            <td>{value}</td>
                                                            <td>{since}</td>
                                                            <td>{summary}</td>
                                                            <td>
                                                                <button type="button" class="silence-this" on:click=move |_| silence_alert(&a2)>
                                                                    "Silence…"
                                                                </button>
                                                            </td>
                                                        </tr>
                                                    }
                                                })
                                                .collect_view()}
                                        </tbody>
                                    </table>
                                </div>
                            }
                                .into_any()
                        }
                        Ok(_) => view! { <p class="quiet">"Nothing is firing."</p> }.into_any(),
                        Err(e) => error_view(e),
                    }
                })}
            </Transition>
        </section>
        <section class="panel" id="silences">
            <h2>"Silences"</h2>
            <form id="silence-form" on:submit=create>
                <label>
                    "Matchers"
                    <input
                        id="silence-matchers"
                        type="text"
                        placeholder="alertname=\"HighCPU\", host=\"web-1\""
                        prop:value=move || matchers.get()
                        on:input=move |ev| matchers.set(event_target_value(&ev))
                    />
                </label>
                <label>
                    "For"
                    <select id="silence-hours" on:change=move |ev| hours.set(event_target_value(&ev))>
                        <option value="1">"1 hour"</option>
                        <option value="2" selected>"2 hours"</option>
                        <option value="8">"8 hours"</option>
                        <option value="24">"1 day"</option>
                        <option value="168">"1 week"</option>
                    </select>
                </label>
                <label>
                    "Author"
                    <input id="silence-author" type="text" prop:value=move || author.get() on:input=move |ev| author.set(event_target_value(&ev)) />
                </label>
                <label>
                    "Comment"
                    <input id="silence-comment" type="text" prop:value=move || comment.get() on:input=move |ev| comment.set(event_target_value(&ev)) />
                </label>
                <button type="submit" id="silence-create">"Create silence"</button>
            </form>
            {move || message.get().map(|(ok, m)| view! { <p id="silence-message" class={if ok { "ok" } else { "error" }} role="status">{m}</p> })}
            <Transition fallback=|| ()>
                {move || {
                    let expire = expire.clone();
                    Suspend::new(async move {
                        match silences.await {
                            Ok(list) => {
                                let list: Vec<Silence> = list.into_iter().filter(|s| s.status.state != "expired").collect();
                                if list.is_empty() {
                                    return view! { <p class="quiet">"No active silences."</p> }.into_any();
                                }
                                view! {
                                    <table id="silence-table">
                                        <thead>
                                            <tr>
                                                <th scope="col">"Matchers"</th>
                                                <th scope="col">"State"</th>
                                                <th scope="col">"Ends"</th>
                                                <th scope="col">"By"</th>
                                                <th scope="col">"Comment"</th>
                                                <th scope="col"></th>
                                            </tr>
                                        </thead>
                                        <tbody>
                                            {list
                                                .into_iter()
                                                .map(|s| {
                                                    let id = s.id.clone();
                                                    let expire = expire.clone();
                                                    let ends = format::parse_rfc3339(&s.ends_at).map(format::time).unwrap_or_default();
                                                    view! {
                                                        <tr data-silence=s.id.clone()>
                                                            <td class="labels">{matchers_text(&s.matchers)}</td>
                                                            <td>{s.status.state.clone()}</td>
                                                            <td>{ends}</td>
                                                            <td>{s.created_by.clone()}</td>
                                                            <td>{s.comment.clone()}</td>
                                                            <td>
                                                                <button type="button" class="expire" on:click=move |_| expire(id.clone())>
                                                                    "Expire"
                                                                </button>
                                                            </td>
                                                        </tr>
                                                    }
                                                })
                                                .collect_view()}
                                        </tbody>
                                    </table>
                                }
                                    .into_any()
                            }
                            Err(e) => error_view(e),
                        }
                    })
                }}
            </Transition>
        </section>
        <section class="panel" id="history">
            <h2>"Last 24 hours"</h2>
            <Transition fallback=|| ()>
                {move || Suspend::new(async move {
                    match history.await {
                        Ok(eps) if !eps.is_empty() => view! {
                            <table>
                                <thead>
                                    <tr>
                                        <th scope="col">"Alert"</th>
                                        <th scope="col">"Labels"</th>
                                        <th scope="col">"From"</th>
                                        <th scope="col">"To"</th>
                                        <th scope="col">"Lasted"</th>
                                    </tr>
                                </thead>
                                <tbody>
                                    {eps
                                        .into_iter()
                                        .map(|e| view! {
                                            <tr>
                                                <th scope="row">{e.name}</th>
                                                <td class="labels">{e.labels}</td>
                                                <td>{format::time(e.from)}</td>
                                                <td>{if e.ongoing { "firing".to_owned() } else { format::time(e.to) }}</td>
                                                <td>{format::duration(e.to - e.from + HISTORY_STEP)}</td>
                                            </tr>
                                        })
                                        .collect_view()}
                                </tbody>
                            </table>
                        }
                            .into_any(),
                        Ok(_) => view! { <p class="quiet">"Nothing fired in the last day."</p> }.into_any(),
                        Err(e) => error_view(e),
                    }
                })}
            </Transition>
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers_parse_and_print_back() {
        let m =
            parse_matchers(r#"alertname="HighCPU", host=~"web-.*",env!="dev""#).expect("parses");
        assert_eq!(m.len(), 3);
        assert!(m[1].is_regex && m[1].is_equal);
        assert!(!m[2].is_equal);
        assert_eq!(
            matchers_text(&m),
            r#"alertname="HighCPU", host=~"web-.*", env!="dev""#
        );
        assert!(parse_matchers("").is_err());
        assert!(parse_matchers("a").is_err());
        assert!(parse_matchers(r#"a="b"#).is_err());
    }
}
