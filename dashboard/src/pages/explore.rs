//! Explore: a PromQL box with metric-name completion, a chart over the chosen range and a
//! table of the values now. The query lives in the URL (`/explore?query=...`), which is the
//! link Slack messages carry.

use leptos::prelude::*;
use leptos_router::hooks::{use_navigate, use_query_map};

use crate::api::Api;
use crate::chart::{Chart, Legend, Q, RangePicker, set_params, use_time_range};
use crate::format::Unit;
use crate::live::Live;
use crate::pages::{PageHead, error_view, labels_text};

/// The explore page.
#[component]
pub fn Explore() -> impl IntoView {
    let live = Live::get();
    let api = Api::current();
    let range = use_time_range("1h");
    let params = use_query_map();
    let query = Memo::new(move |_| params.read().get("query").unwrap_or_default());
    let draft = RwSignal::new(query.get_untracked());
    Effect::new(move |_| draft.set(query.get()));
    let api2 = api.clone();
    let names = Resource::new(
        || (),
        move |_| api2.data::<Vec<String>>("/api/v1/label/__name__/values".into()),
    );
    let table = Resource::new(
        move || (live.tick.get(), query.get()),
        move |(_, q)| {
            let f = (!q.trim().is_empty()).then(|| api.query(&q, None));
            async move {
                match f {
                    Some(f) => f.await,
                    None => Ok(Vec::new()),
                }
            }
        },
    );
    let navigate = use_navigate();
    let run = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let q = draft.get_untracked();
        set_params(&navigate, &[("query", (!q.trim().is_empty()).then_some(q))]);
    };
    view! {
        <PageHead title="Explore".into()>
            <RangePicker range />
        </PageHead>
        <form class="explore" id="explore-form" on:submit=run>
            <label for="explore-query" class="visually-hidden">"PromQL query"</label>
            <input
                id="explore-query"
                type="text"
                list="metric-names"
                autocomplete="off"
                spellcheck="false"
                placeholder="rate(node_cpu_seconds_total[1m])"
                prop:value=move || draft.get()
                on:input=move |ev| draft.set(event_target_value(&ev))
            />
            <button type="submit" id="explore-run">"Run"</button>
            <datalist id="metric-names">
                <Suspense fallback=|| ()>
                    {move || Suspend::new(async move {
                        names
                            .await
                            .unwrap_or_default()
                            .into_iter()
                            .map(|n| view! { <option value=n></option> })
                            .collect_view()
                    })}
                </Suspense>
            </datalist>
        </form>
        {move || {
            let q = query.get();
            (!q.trim().is_empty())
                .then(|| {
                    view! {
                        <Chart
                            title="Result"
                            unit=Unit::Number
                            queries=vec![Q { expr: q, legend: Legend::Series }]
                            range
                            zoomable=true
                        />
                    }
                })
        }}
        <section class="panel" id="explore-table">
            <h2>"Now"</h2>
            <Transition fallback=|| ()>
                {move || Suspend::new(async move {
                    match table.await {
                        Ok(rows) if rows.is_empty() => view! { <p class="quiet">"No series."</p> }.into_any(),
                        Ok(rows) => view! {
                            <table>
                                <thead><tr><th scope="col">"Series"</th><th scope="col">"Value"</th></tr></thead>
                                <tbody>
                                    {rows.into_iter().map(|s| view! {
                                        <tr>
                                            <td class="labels">{format!("{}{}", s.label("__name__"), labels_text(&s.metric, &[]))}</td>
                                            <td>{s.last().map(|v| v.to_string()).unwrap_or_default()}</td>
                                        </tr>
                                    }).collect_view()}
                                </tbody>
                            </table>
                        }.into_any(),
                        Err(e) => error_view(e),
                    }
                })}
            </Transition>
        </section>
    }
}
