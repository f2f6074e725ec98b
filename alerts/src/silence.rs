//! Silences: matchers with a time window, an author and a comment. An alert matched by an
//! active silence is not notified. Silences are kept in the delivery store, so they survive
//! a restart.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::matcher::{Matcher, MatcherError};

pub use nunchi_model::api::SilenceMatcher;

/// A silence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Silence {
    /// Its id (assigned on creation).
    #[serde(default)]
    pub id: String,
    /// What it matches.
    pub matchers: Vec<SilenceMatcher>,
    /// Start (ms).
    pub starts_at: i64,
    /// End (ms); expiring a silence sets it to now.
    pub ends_at: i64,
    /// Who created it.
    pub created_by: String,
    /// Why.
    #[serde(default)]
    pub comment: String,
}

/// A silence that cannot be created.
#[derive(Debug, thiserror::Error)]
pub enum SilenceError {
    /// A matcher is invalid.
    #[error(transparent)]
    Matcher(#[from] MatcherError),
    /// Something else is wrong.
    #[error("{0}")]
    Invalid(String),
}

impl Silence {
    /// Checks the silence: at least one matcher, valid regexes, end after start, an author.
    pub fn validate(&self) -> Result<(), SilenceError> {
        if self.matchers.is_empty() {
            return Err(SilenceError::Invalid(
                "at least one matcher is required".into(),
            ));
        }
        if self.ends_at <= self.starts_at {
            return Err(SilenceError::Invalid(
                "endsAt must be after startsAt".into(),
            ));
        }
        if self.created_by.trim().is_empty() {
            return Err(SilenceError::Invalid("createdBy must be set".into()));
        }
        self.compiled()?;
        Ok(())
    }

    fn compiled(&self) -> Result<Vec<Matcher>, MatcherError> {
        self.matchers.iter().map(Matcher::from_silence).collect()
    }

    /// Whether the silence is in force at `now`.
    pub fn active(&self, now: i64) -> bool {
        self.starts_at <= now && now < self.ends_at
    }

    /// Whether it mutes `labels` at `now`.
    pub fn mutes(&self, labels: &BTreeMap<String, String>, now: i64) -> bool {
        self.active(now)
            && self
                .compiled()
                .is_ok_and(|ms| crate::matcher::all_match(&ms, labels))
    }
}
