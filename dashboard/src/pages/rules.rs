//! Rules: every group and rule with its state, last evaluation, duration and error.

use leptos::prelude::*;

use crate::api::{Api, RuleDiscovery};
use crate::format;
use crate::live::Live;
use crate::pages::{PageHead, error_view};

/// The rules page.
#[component]
pub fn Rules() -> impl IntoView {
    let live = Live::get();
    let api = Api::current();
    let groups = Resource::new(
        move || live.tick.get(),
        move |_| {
            let f = api.data::<RuleDiscovery>("/api/v1/rules".into());
            async move { f.await.map(|d| (d.groups, d.alerting_warnings)) }
        },
    );
    view! {
        <PageHead title="Rules".into() />
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                let (groups, warnings) = match groups.await {
                    Ok((g, w)) => (Ok(g), w),
                    Err(e) => (Err(e), Vec::new()),
                };
                let warned = (!warnings.is_empty()).then(|| view! {
                    <section class="panel warnings" data-warnings="alerting">
                        <h2>"Alerting configuration"</h2>
                        <ul>{warnings.into_iter().map(|w| view! { <li class="error">{w}</li> }).collect_view()}</ul>
                    </section>
                });
                let body = match groups {
                    Ok(gs) if gs.is_empty() => view! { <p class="quiet">"No rule files are loaded (--rules)."</p> }.into_any(),
                    Ok(gs) => gs
                        .into_iter()
                        .map(|g| {
                            view! {
                                <section class="panel rule-group" data-group=g.name.clone()>
                                    <h2>{g.name.clone()} <small>{format!(" every {}s · {}", g.interval, g.file)}</small></h2>
                                    <div class="table-wrap">
                                        <table>
                                            <thead>
                                                <tr>
                                                    <th scope="col">"Rule"</th>
                                                    <th scope="col">"State"</th>
                                                    <th scope="col">"Health"</th>
                                                    <th scope="col">"Last evaluation"</th>
                                                    <th scope="col">"Took"</th>
                                                    <th scope="col">"Query"</th>
                                                </tr>
                                            </thead>
                                            <tbody>
                                                {g.rules
                                                    .into_iter()
                                                    .map(|r| {
                                                        let state = r.state.clone().unwrap_or_else(|| "recording".into());
                                                        let last = format::parse_rfc3339(&r.last_evaluation).map(format::time).unwrap_or_else(|| "never".into());
                                                        view! {
                                                            <tr class=format!("rule {state}") data-rule=r.name.clone()>
                                                                <th scope="row">{r.name.clone()}</th>
                                                                <td>{state.clone()}</td>
                                                                <td class=format!("health {}", r.health)>
                                                                    {r.health.clone()}
                                                                    {r.last_error.clone().filter(|e| !e.is_empty()).map(|e| view! { <div class="error">{e}</div> })}
                                                                </td>
                                                                <td>{last}</td>
                                                                <td>{format::value(r.evaluation_time, format::Unit::Seconds)}</td>
                                                                <td><code>{r.query.clone()}</code></td>
                                                            </tr>
                                                        }
                                                    })
                                                    .collect_view()}
                                            </tbody>
                                        </table>
                                    </div>
                                </section>
                            }
                        })
                        .collect_view()
                        .into_any(),
                    Err(e) => error_view(e),
                };
                view! { {warned} {body} }.into_any()
            })}
        </Transition>
    }
}
