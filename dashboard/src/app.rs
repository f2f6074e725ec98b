//! The page shell, the header (navigation, live indicator, theme) and the routes.

use leptos::prelude::*;
use leptos_meta::{MetaTags, Title, provide_meta_context};
use leptos_router::components::{A, Route, Router, Routes};
use leptos_router::{ParamSegment, StaticSegment};

use crate::live::Live;
use crate::pages;

/// The HTML document the server renders around [`App`].
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <meta name="color-scheme" content="light dark" />
                <link rel="stylesheet" href="/static/nunchi.css" />
                <link rel="icon" href="/static/favicon.svg" type="image/svg+xml" />
                // Applies a saved theme before the first paint.
                <script>
                    "try{var t=localStorage.getItem('nunchi-theme');if(t)document.documentElement.dataset.theme=t}catch(e){}"
                </script>
                <HydrationScripts options />
                <MetaTags />
            </head>
            <body>
                <App />
            </body>
        </html>
    }
}

/// The dashboard.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    let live = Live::provide();
    Effect::new(move |_| live.start());
    view! {
        <Title text="nunchi" />
        <Router>
            <Header />
            <main id="main">
                <Routes fallback=|| view! { <p class="error">"No such page."</p> }>
                    <Route path=StaticSegment("") view=pages::fleet::Fleet />
                    <Route path=(StaticSegment("host"), ParamSegment("name")) view=pages::host::Host />
                    <Route path=StaticSegment("service") view=pages::service::Service />
                    <Route path=StaticSegment("alerts") view=pages::alerts::Alerts />
                    <Route path=StaticSegment("rules") view=pages::rules::Rules />
                    <Route path=StaticSegment("deliveries") view=pages::deliveries::Deliveries />
                    <Route path=StaticSegment("explore") view=pages::explore::Explore />
                </Routes>
            </main>
        </Router>
    }
}

#[component]
fn Header() -> impl IntoView {
    let live = Live::get();
    let hydrated = RwSignal::new(false);
    Effect::new(move |_| hydrated.set(true));
    let status = move || {
        if !hydrated.get() {
            "static"
        } else if live.paused.get() {
            "paused"
        } else if live.connected.get() {
            "live"
        } else {
            "connecting"
        }
    };
    let toggle_theme = move |_| {
        let root = document().document_element();
        if let Some(root) = root {
            let dark = match root.get_attribute("data-theme").as_deref() {
                Some("dark") => true,
                Some(_) => false,
                None => window()
                    .match_media("(prefers-color-scheme: dark)")
                    .ok()
                    .flatten()
                    .is_some_and(|m| m.matches()),
            };
            let next = if dark { "light" } else { "dark" };
            let _ = root.set_attribute("data-theme", next);
            if let Ok(Some(s)) = window().local_storage() {
                let _ = s.set_item("nunchi-theme", next);
            }
        }
    };
    view! {
        <a class="skip" href="#main">"Skip to content"</a>
        <header class="top">
            <A href="/" attr:class="brand">"nunchi"</A>
            <nav aria-label="Pages">
                <A href="/">"Fleet"</A>
                <A href="/service">"Service"</A>
                <A href="/alerts">"Alerts"</A>
                <A href="/rules">"Rules"</A>
                <A href="/deliveries">"Deliveries"</A>
                <A href="/explore">"Explore"</A>
            </nav>
            <div class="tools">
                <span id="live-status" class=move || format!("live-dot {}", status()) role="status">
                    {status}
                </span>
                <button
                    type="button"
                    id="live-toggle"
                    disabled=move || !hydrated.get()
                    on:click=move |_| live.paused.update(|p| *p = !*p)
                >
                    {move || if live.paused.get() { "Resume" } else { "Pause" }}
                </button>
                <button type="button" id="theme-toggle" aria-label="Switch light or dark theme" on:click=toggle_theme>
                    "◐"
                </button>
            </div>
        </header>
    }
}
