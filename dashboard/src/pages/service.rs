//! Service: the feed service across its instances: traffic, errors, latency, cache, database
//! pool, fan-out and daily/monthly actives.

use leptos::prelude::*;

use crate::chart::{Chart, Q, RangePicker, use_time_range};
use crate::format::Unit;
use crate::pages::PageHead;

fn quantile(q: f64, name: &'static str) -> Q {
    Q::named(
        format!(
            "histogram_quantile({q}, sum by (le) (rate(http_request_duration_seconds_bucket[1m])))"
        ),
        name,
    )
}

/// The service page.
#[component]
pub fn Service() -> impl IntoView {
    let range = use_time_range("1h");
    let rate = vec![Q::by(
        "sum by (instance) (rate(http_requests_total[1m]))",
        &["instance"],
    )];
    let errors = vec![Q::by(
        "sum by (instance) (rate(http_requests_total{status=~\"5..\"}[1m])) / sum by (instance) (rate(http_requests_total[1m]))",
        &["instance"],
    )];
    let latency = vec![
        quantile(0.5, "p50"),
        quantile(0.9, "p90"),
        quantile(0.99, "p99"),
    ];
    let cache = vec![Q::by(
        "sum by (instance) (rate(feed_cache_requests_total{result=\"hit\"}[1m])) / sum by (instance) (rate(feed_cache_requests_total[1m]))",
        &["instance"],
    )];
    let pool = vec![
        Q::by(
            "label_replace(sum by (instance) (feed_db_pool_connections{state=\"in_use\"}), \"what\", \"in use\", \"\", \"\")",
            &["instance", "what"],
        ),
        Q::by(
            "label_replace(sum by (instance) (feed_db_pool_max_connections), \"what\", \"max\", \"\", \"\")",
            &["instance", "what"],
        ),
    ];
    let wait = vec![Q::by(
        "histogram_quantile(0.99, sum by (instance, le) (rate(feed_db_pool_acquire_seconds_bucket[1m])))",
        &["instance"],
    )];
    let queue = vec![Q::by(
        "sum by (instance) (feed_fanout_queue_depth)",
        &["instance"],
    )];
    let lag = vec![Q::by(
        "max by (instance) (feed_fanout_lag_seconds)",
        &["instance"],
    )];
    let actives = vec![
        Q::named("max(feed_dau)", "DAU"),
        Q::named("max(feed_mau)", "MAU"),
    ];
    view! {
        <PageHead title="Feed service".into()>
            <RangePicker range />
        </PageHead>
        <div class="grid">
            <Chart title="Requests" unit=Unit::PerSec queries=rate range zoomable=true />
            <Chart title="5xx ratio" unit=Unit::Percent queries=errors range zoomable=true />
            <Chart title="Latency" unit=Unit::Seconds queries=latency range zoomable=true />
            <Chart title="Cache hit ratio" unit=Unit::Percent queries=cache range zoomable=true />
            <Chart title="DB pool: in use vs. max" unit=Unit::Number queries=pool range zoomable=true />
            <Chart title="DB acquire wait p99" unit=Unit::Seconds queries=wait range zoomable=true />
            <Chart title="Fan-out queue" unit=Unit::Number queries=queue range zoomable=true />
            <Chart title="Fan-out lag" unit=Unit::Seconds queries=lag range zoomable=true />
            <Chart title="Daily and monthly active users" unit=Unit::Number queries=actives range zoomable=true />
        </div>
    }
}
