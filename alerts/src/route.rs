//! The routing tree: which routes (and so receivers and timings) an alert goes to. A node
//! matches when its matchers do; the deepest matching children win; `continue` lets
//! siblings after a match be tried too; a node none of whose children match is itself the
//! answer (Alertmanager's semantics).

use std::collections::BTreeMap;

use crate::config::Route;
use crate::matcher::all_match;

impl Route {
    /// The routes `labels` go to, in tree order.
    pub fn matching(&self, labels: &BTreeMap<String, String>) -> Vec<&Route> {
        if !all_match(&self.matchers, labels) {
            return Vec::new();
        }
        let mut out = Vec::new();
        for child in &self.routes {
            let found = child.matching(labels);
            let matched = !found.is_empty();
            out.extend(found);
            if matched && !child.continue_ {
                break;
            }
        }
        if out.is_empty() {
            out.push(self);
        }
        out
    }

    /// The labels of `alert_labels` this route groups by (all of them for `...`).
    pub fn group_labels(
        &self,
        alert_labels: &BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        match &self.group_by {
            None => alert_labels.clone(),
            Some(by) => by
                .iter()
                .filter_map(|l| alert_labels.get(l).map(|v| (l.clone(), v.clone())))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    #[test]
    fn deepest_match_wins_and_continue_fans_out() {
        let c = Config::parse(
            Path::new("am.yml"),
            r#"
route:
  receiver: default
  group_by: [alertname]
  routes:
    - matchers: ['severity="critical"']
      receiver: pager
      continue: true
      routes:
        - matchers: ['team="db"']
          receiver: db-pager
    - matchers: ['severity=~"critical|warning"']
      receiver: chat
receivers:
  - name: default
  - name: pager
  - name: db-pager
  - name: chat
"#,
        )
        .expect("valid");
        let l = |p: &[(&str, &str)]| {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let names = |labels| {
            c.route
                .matching(&labels)
                .iter()
                .map(|r| r.receiver.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(l(&[("severity", "critical"), ("team", "db")])),
            ["db-pager", "chat"]
        );
        assert_eq!(names(l(&[("severity", "critical")])), ["pager", "chat"]);
        assert_eq!(names(l(&[("severity", "info")])), ["default"]);
        assert_eq!(
            c.route.routes[0].group_by.as_deref(),
            Some(&["alertname".to_string()][..])
        );
    }
}
