//! Scraping Prometheus `/metrics` pages with Prometheus' semantics, shared by the agent
//! (local endpoints) and the collector (targets that cannot push).
//!
//! [`Scraper`] fetches and parses each target's page, labels its series with `job` and
//! `instance`, adds `up`, `scrape_duration_seconds` and `scrape_samples_scraped`, and
//! writes staleness markers for series that disappear ([`StalenessTracker`]).

mod scrape;
mod staleness;

pub use scrape::{ScrapeError, Scraper};
pub use staleness::StalenessTracker;

/// One endpoint to scrape.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeTarget {
    /// The `job` label for this target's series. Default `scrape`.
    #[serde(default = "default_job")]
    pub job: String,
    /// The URL of the target's metrics page, e.g. `http://127.0.0.1:8080/metrics`.
    pub url: url::Url,
}

fn default_job() -> String {
    "scrape".to_owned()
}

impl std::str::FromStr for ScrapeTarget {
    type Err = String;
    /// Parses `[JOB=]URL`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (job, url) = match s.split_once('=') {
            Some((job, url)) if !job.contains(':') && !job.contains('/') => (job.to_owned(), url),
            _ => (default_job(), s),
        };
        let url = url::Url::parse(url).map_err(|e| format!("invalid scrape URL {url:?}: {e}"))?;
        Ok(ScrapeTarget { job, url })
    }
}

/// An error and its sources on one line, without repeating a source the message already
/// includes.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}
