//! Inhibition: a firing alert matching a rule's source matchers mutes alerts matching its
//! target matchers when the `equal` labels agree. An alert never inhibits itself
//! (Alertmanager's rule for alerts matching both sides).

use std::collections::BTreeMap;

use nunchi_model::Alert;

use crate::config::InhibitRule;
use crate::matcher::all_match;

/// Whether `target` is muted by one of `firing` under `rules`.
pub fn inhibited(
    rules: &[InhibitRule],
    firing: &[Alert],
    target: &BTreeMap<String, String>,
) -> bool {
    rules.iter().any(|r| {
        all_match(&r.target, target)
            && firing.iter().any(|src| {
                &src.labels != target
                    && all_match(&r.source, &src.labels)
                    && r.equal.iter().all(|l| src.labels.get(l) == target.get(l))
            })
    })
}
