//! Scraping local Prometheus endpoints, with Prometheus' semantics: the text format is
//! requested and parsed, each series gets the target's `job` and `instance` (the URL's
//! `host:port`) plus the agent's labels; a label the target already set is kept as
//! `exported_<name>` (Prometheus' `honor_labels: false`); `up`, `scrape_duration_seconds`
//! and `scrape_samples_scraped` describe each scrape; series that disappear, or all of a
//! target's series when it goes down, get staleness markers.

use std::time::{Duration, Instant};

use nunchi_codec::exposition;
use nunchi_model::{Labels, METRIC_NAME, Series};

use crate::ScrapeTarget;
use crate::staleness::StalenessTracker;

const ACCEPT: &str = "text/plain;version=0.0.4;q=1,*/*;q=0.1";
/// Largest metrics page accepted from a target.
const MAX_BODY: usize = 32 << 20;

/// Why one scrape failed.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// Connecting, sending or reading failed, or the time limit passed.
    #[error("request failed: {}", crate::error_chain(.0))]
    Http(#[from] reqwest::Error),
    /// The target answered with a non-2xx status.
    #[error("target answered HTTP {0}")]
    Status(reqwest::StatusCode),
    /// The page is larger than the limit.
    #[error("metrics page larger than {MAX_BODY} bytes")]
    TooLarge,
    /// The page is not valid exposition text.
    #[error("{0}")]
    Parse(#[from] exposition::ParseError),
}

struct TargetState {
    target: ScrapeTarget,
    instance: String,
    staleness: StalenessTracker,
    /// HELP and TYPE of the families the target served last.
    families: Vec<exposition::Family>,
}

/// Scrapes a fixed set of targets each cycle.
pub struct Scraper {
    client: reqwest::Client,
    targets: Vec<TargetState>,
    timeout: Duration,
}

impl Scraper {
    /// A scraper for `targets`, each request limited to `timeout`.
    pub fn new(client: reqwest::Client, targets: &[ScrapeTarget], timeout: Duration) -> Self {
        let targets = targets
            .iter()
            .map(|t| TargetState {
                instance: instance_of(&t.url),
                target: t.clone(),
                staleness: StalenessTracker::default(),
                families: Vec::new(),
            })
            .collect();
        Scraper {
            client,
            targets,
            timeout,
        }
    }

    /// Scrapes every target concurrently, appending their series (stamped `timestamp_ms`
    /// unless the target gave timestamps) and the scrape's own series to `out`.
    pub async fn scrape_all(
        &mut self,
        agent_labels: &Labels,
        timestamp_ms: i64,
        out: &mut Vec<Series>,
    ) {
        let client = &self.client;
        let timeout = self.timeout;
        let results = futures_util::future::join_all(self.targets.iter().map(|t| {
            let url = t.target.url.clone();
            async move {
                let start = Instant::now();
                let r = fetch(client, url, timeout, timestamp_ms).await;
                (r, start.elapsed())
            }
        }))
        .await;
        for (state, (result, took)) in self.targets.iter_mut().zip(results) {
            let mut target_labels = agent_labels.clone();
            target_labels.insert("job", state.target.job.clone());
            target_labels.insert("instance", state.instance.clone());
            let (up, series) = match result {
                Ok(exp) => {
                    state.families = exp.families;
                    (1.0, relabel(exp.series, &target_labels))
                }
                Err(e) => {
                    tracing::warn!(target = %state.target.url, job = %state.target.job, error = %e, "scrape failed");
                    (0.0, Vec::new())
                }
            };
            state.staleness.update(&series, timestamp_ms, out);
            let scraped = series.len() as f64;
            out.extend(series);
            for (name, value) in [
                ("up", up),
                ("scrape_duration_seconds", took.as_secs_f64()),
                ("scrape_samples_scraped", scraped),
            ] {
                let mut l = target_labels.clone();
                l.insert(METRIC_NAME, name);
                out.push(Series::single(l, timestamp_ms, value));
            }
        }
    }
}

impl Scraper {
    /// HELP and TYPE of every family the targets served at their last scrape.
    pub fn families(&self) -> impl Iterator<Item = &exposition::Family> {
        self.targets.iter().flat_map(|t| t.families.iter())
    }
}

async fn fetch(
    client: &reqwest::Client,
    url: url::Url,
    timeout: Duration,
    timestamp_ms: i64,
) -> Result<exposition::Exposition, ScrapeError> {
    let mut resp = client
        .get(url)
        .header(reqwest::header::ACCEPT, ACCEPT)
        .header(
            "X-Prometheus-Scrape-Timeout-Seconds",
            format!("{:.3}", timeout.as_secs_f64()),
        )
        .timeout(timeout)
        .send()
        .await?;
    if !resp.status().is_success() {
        return Err(ScrapeError::Status(resp.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(ScrapeError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8_lossy(&body);
    Ok(exposition::parse(&text, timestamp_ms)?)
}

/// Adds the target labels; a label the target already exposes moves to `exported_<name>`.
/// A series the page lists twice is kept once (the first), as Prometheus does: a receiver
/// would refuse the whole batch over the duplicate.
fn relabel(series: Vec<Series>, target_labels: &Labels) -> Vec<Series> {
    use std::hash::BuildHasher;
    let hasher = rustc_hash::FxBuildHasher;
    let mut seen = std::collections::HashSet::with_capacity(series.len());
    let mut duplicates = 0usize;
    let out: Vec<Series> = series
        .into_iter()
        .map(|mut s| {
            for l in target_labels {
                if let Some(theirs) = s.labels.remove(&l.name) {
                    s.labels.insert(format!("exported_{}", l.name), theirs);
                }
                s.labels.insert(l.name.clone(), l.value.clone());
            }
            s
        })
        .filter(|s| {
            let new = seen.insert(hasher.hash_one(&s.labels));
            duplicates += usize::from(!new);
            new
        })
        .collect();
    if duplicates > 0 {
        tracing::warn!(
            duplicates,
            "scraped page lists some series more than once; kept the first of each"
        );
    }
    out
}

/// `host:port` of a URL, with the scheme's default port filled in, as Prometheus' `instance`.
fn instance_of(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or("localhost");
    match url.port_or_known_default() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_labels_win_and_theirs_are_exported() {
        let s = Series::single(
            Labels::from_pairs([("__name__", "x"), ("job", "inner"), ("a", "1")]),
            0,
            1.0,
        );
        let out = relabel(
            vec![s],
            &Labels::from_pairs([("job", "feed"), ("instance", "h:1")]),
        );
        let l = &out[0].labels;
        assert_eq!(
            (
                l.get("job"),
                l.get("exported_job"),
                l.get("instance"),
                l.get("a")
            ),
            (Some("feed"), Some("inner"), Some("h:1"), Some("1"))
        );
    }

    #[test]
    fn duplicate_series_are_kept_once() {
        let a = Series::single(Labels::from_pairs([("__name__", "x")]), 0, 1.0);
        let b = Series::single(Labels::from_pairs([("__name__", "x")]), 0, 2.0);
        let out = relabel(vec![a, b], &Labels::from_pairs([("job", "j")]));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].samples[0].value, 1.0);
    }

    #[test]
    fn instance_fills_default_ports() {
        assert_eq!(
            instance_of(&"http://a/metrics".parse().expect("url")),
            "a:80"
        );
        assert_eq!(
            instance_of(&"https://b:9443/m".parse().expect("url")),
            "b:9443"
        );
    }
}
