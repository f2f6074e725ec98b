//! One module per page; helpers they share.

pub mod alerts;
pub mod deliveries;
pub mod explore;
pub mod fleet;
pub mod host;
pub mod rules;
pub mod service;

use leptos::prelude::*;

use crate::api::{Alert, AlertDiscovery, Api};

pub use crate::format::labels_text;

/// The active alerts, refreshed on every tick.
pub fn alerts_resource() -> Resource<Result<Vec<Alert>, String>> {
    let live = crate::live::Live::get();
    let api = Api::current();
    Resource::new(move || live.tick.get(), move |_| fetch_alerts(&api))
}

/// The active alerts now.
pub fn fetch_alerts(
    api: &Api,
) -> impl std::future::Future<Output = Result<Vec<Alert>, String>> + Send + 'static + use<> {
    let f = api.data::<AlertDiscovery>("/api/v1/alerts".into());
    async move { f.await.map(|d| d.alerts) }
}

/// An error line.
pub fn error_view(e: String) -> AnyView {
    view! { <p class="error" role="alert">{e}</p> }.into_any()
}

/// A page heading with an optional right-hand part.
#[component]
pub fn PageHead(
    /// Heading text.
    title: String,
    /// Controls shown beside it.
    #[prop(optional)]
    children: Option<Children>,
) -> impl IntoView {
    view! {
        <div class="page-head">
            <h1>{title}</h1>
            {children.map(|c| c())}
        </div>
    }
}
