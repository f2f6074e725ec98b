//! Deliveries: every Slack, webhook and scale attempt, scale cooldowns, and the dead-letter
//! list with retry and discard.

use leptos::prelude::*;

use crate::api::{Api, Deliveries as Data, OutboxEntry};
use crate::format::{self, Unit};
use crate::live::Live;
use crate::pages::{PageHead, error_view};

fn ms_time(ms: i64) -> String {
    format::time(ms as f64 / 1e3)
}

/// The deliveries page.
#[component]
pub fn Deliveries() -> impl IntoView {
    let live = Live::get();
    let api = Api::current();
    let changed = RwSignal::new(0u32);
    let api2 = api.clone();
    let data = Resource::new(
        move || (live.tick.get(), changed.get()),
        move |_| api2.data::<Data>("/api/v1/deliveries?limit=100".into()),
    );
    let message = RwSignal::new(None::<(bool, String)>);
    let act = move |id: i64, what: &'static str| {
        let api = api.clone();
        leptos::task::spawn_local(async move {
            match api
                .send("POST", format!("/api/v1/deliveries/{id}/{what}"), None)
                .await
            {
                Ok(_) => {
                    message.set(Some((true, format!("Delivery {id}: {what} requested."))));
                    changed.update(|c| *c += 1);
                }
                Err(e) => message.set(Some((false, e))),
            }
        });
    };
    view! {
        <PageHead title="Deliveries".into() />
        {move || message.get().map(|(ok, m)| view! { <p id="delivery-message" class={if ok { "ok" } else { "error" }} role="status">{m}</p> })}
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || {
                let act = act.clone();
                Suspend::new(async move {
                    match data.await {
                        Ok(d) => {
                            let dead = d.dead_letters.clone();
                            view! {
                                <section class="panel" id="dead-letters">
                                    <h2>{format!("Dead letters ({})", dead.len())}</h2>
                                    {if dead.is_empty() {
                                        view! { <p class="quiet">"None: every notification was delivered or is still being tried."</p> }.into_any()
                                    } else {
                                        view! {
                                            <table>
                                                <thead>
                                                    <tr>
                                                        <th scope="col">"Id"</th>
                                                        <th scope="col">"Created"</th>
                                                        <th scope="col">"Receiver"</th>
                                                        <th scope="col">"Kind"</th>
                                                        <th scope="col">"Attempts"</th>
                                                        <th scope="col">"Last error"</th>
                                                        <th scope="col"></th>
                                                    </tr>
                                                </thead>
                                                <tbody>
                                                    {dead.into_iter().map(|e: OutboxEntry| {
                                                        let (a1, a2) = (act.clone(), act.clone());
                                                        let id = e.id;
                                                        view! {
                                                            <tr data-dead=e.id>
                                                                <td>{e.id}</td>
                                                                <td>{ms_time(e.created_at)}</td>
                                                                <td>{e.receiver.clone()}</td>
                                                                <td>{e.integration.clone()}</td>
                                                                <td>{e.attempts}</td>
                                                                <td class="error">{e.last_error.clone().unwrap_or_default()}</td>
                                                                <td class="actions">
                                                                    <button type="button" class="retry" on:click=move |_| a1(id, "retry")>"Retry"</button>
                                                                    <button type="button" class="discard" on:click=move |_| a2(id, "discard")>"Discard"</button>
                                                                </td>
                                                            </tr>
                                                        }
                                                    }).collect_view()}
                                                </tbody>
                                            </table>
                                        }.into_any()
                                    }}
                                </section>
                                <section class="panel" id="cooldowns">
                                    <h2>"Scale actions and cooldowns"</h2>
                                    {if d.cooldowns.is_empty() {
                                        view! { <p class="quiet">"No scale action has been sent."</p> }.into_any()
                                    } else {
                                        view! {
                                            <table>
                                                <thead><tr><th scope="col">"Group"</th><th scope="col">"Last action"</th><th scope="col">"Cooldown until"</th></tr></thead>
                                                <tbody>
                                                    {d.cooldowns.iter().map(|(g, c)| {
                                                        let last = c.last.get("action").and_then(|v| v.as_str()).map(str::to_owned).unwrap_or_else(|| c.last.to_string());
                                                        let until = format::parse_rfc3339(&c.until).map(format::time).unwrap_or_default();
                                                        view! { <tr><th scope="row">{g.clone()}</th><td>{last}</td><td>{until}</td></tr> }
                                                    }).collect_view()}
                                                </tbody>
                                            </table>
                                        }.into_any()
                                    }}
                                </section>
                                <section class="panel" id="attempts">
                                    <h2>{format!("Attempts ({} pending)", d.pending.len())}</h2>
                                    <div class="table-wrap">
                                        <table>
                                            <thead>
                                                <tr>
                                                    <th scope="col">"Time"</th>
                                                    <th scope="col">"Receiver"</th>
                                                    <th scope="col">"Kind"</th>
                                                    <th scope="col">"Result"</th>
                                                    <th scope="col">"Latency"</th>
                                                    <th scope="col">"Response"</th>
                                                </tr>
                                            </thead>
                                            <tbody>
                                                {d.attempts.into_iter().map(|a| {
                                                    let result = match (a.ok, a.status) {
                                                        (true, Some(s)) => format!("ok {s}"),
                                                        (true, None) => "ok".into(),
                                                        (false, Some(s)) => format!("failed {s}"),
                                                        (false, None) => "failed".into(),
                                                    };
                                                    view! {
                                                        <tr class={if a.ok { "ok" } else { "failed" }}>
                                                            <td>{ms_time(a.at)}</td>
                                                            <td>{a.receiver}</td>
                                                            <td>{a.integration}</td>
                                                            <td>{result}</td>
                                                            <td>{format::value(a.latency_ms as f64 / 1e3, Unit::Seconds)}</td>
                                                            <td class="response">{a.response}</td>
                                                        </tr>
                                                    }
                                                }).collect_view()}
                                            </tbody>
                                        </table>
                                    </div>
                                </section>
                            }.into_any()
                        }
                        Err(e) => error_view(e),
                    }
                })
            }}
        </Transition>
    }
}
