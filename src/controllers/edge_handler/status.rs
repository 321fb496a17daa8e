//! An EdgeHandler's status from what its reconcile observed (pure).

use crate::api::conditions::Conditions;
use crate::api::edge_handler::EdgeHandlerStatus;
use crate::routing::edge::Refusal;

/// What the reconcile found.
#[derive(Debug)]
pub enum Observed<'a> {
    /// `spec.projectRef` names no Project this release can read.
    NoProject { project: &'a str },
    /// The handler is not applied, for this reason.
    Refused(&'a Refusal),
    /// The handler's `rules` are in the Project's plan, whose digest is `digest`; `routes`
    /// are the Project's routes with the digest each was last rendered with.
    Applied {
        rules: usize,
        digest: &'a str,
        routes: Vec<(String, Option<String>)>,
    },
}

pub const PROJECT_NOT_FOUND: &str = "ProjectNotFound";
pub const APPLYING: &str = "Applying";
pub const APPLIED: &str = "Applied";

/// The status to write: `previous` with the conditions, rule count and routes `observed`
/// calls for, at `generation`.
pub fn next_status(
    previous: &EdgeHandlerStatus,
    generation: Option<i64>,
    observed: &Observed,
) -> EdgeHandlerStatus {
    let mut next = previous.clone();
    let mut conditions = Conditions::of(&mut next, generation);
    let (rule_count, routes) = match observed {
        Observed::NoProject { project } => {
            conditions.stalled(
                PROJECT_NOT_FOUND,
                &format!("spec.projectRef: no Project {project:?} in this namespace"),
            );
            (None, Vec::new())
        }
        Observed::Refused(refusal) => {
            conditions.stalled(refusal.reason, &refusal.to_string());
            (None, Vec::new())
        }
        Observed::Applied {
            rules,
            digest,
            routes,
        } => {
            let (mut carrying, mut pending): (Vec<_>, Vec<_>) = routes
                .iter()
                .partition(|(_, has)| has.as_deref() == Some(*digest));
            carrying.sort();
            pending.sort();
            let carrying: Vec<String> = carrying.into_iter().map(|(n, _)| n.clone()).collect();
            let rule_word = if *rules == 1 { "rule" } else { "rules" };
            if let Some((first, _)) = pending.first() {
                conditions.reconciling(
                    APPLYING,
                    &format!(
                        "{} of {} routes carry the rules; waiting for {first}",
                        carrying.len(),
                        routes.len()
                    ),
                );
            } else if carrying.is_empty() {
                conditions.ready(
                    APPLIED,
                    &format!(
                        "{rules} {rule_word}; no route serves the Project yet, each gets them when it is made"
                    ),
                );
            } else {
                conditions.ready(
                    APPLIED,
                    &format!("{rules} {rule_word} in {} routes", carrying.len()),
                );
            }
            (Some(*rules as i32), carrying)
        }
    };
    next.rule_count = rule_count;
    next.routes = routes;
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::conditions::{READY, RECONCILING, STALLED, find, is_true};

    fn routes(list: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
        list.iter()
            .map(|(n, d)| (n.to_string(), d.map(str::to_owned)))
            .collect()
    }

    #[test]
    fn ready_once_every_route_carries_the_rules() {
        let previous = EdgeHandlerStatus::default();
        let observed = Observed::Applied {
            rules: 2,
            digest: "abc",
            routes: routes(&[("web-production", Some("abc")), ("web-1", Some("old"))]),
        };
        let status = next_status(&previous, Some(3), &observed);
        assert!(is_true(&status.conditions, RECONCILING));
        assert!(
            find(&status.conditions, READY)
                .unwrap()
                .message
                .contains("waiting for web-1")
        );
        assert_eq!(status.routes, vec!["web-production"]);
        assert_eq!(status.observed_generation, Some(3));

        let observed = Observed::Applied {
            rules: 2,
            digest: "abc",
            routes: routes(&[("web-production", Some("abc")), ("web-1", Some("abc"))]),
        };
        let status = next_status(&status, Some(3), &observed);
        assert!(is_true(&status.conditions, READY));
        assert!(find(&status.conditions, RECONCILING).is_none());
        assert_eq!(status.rule_count, Some(2));
        assert_eq!(status.routes, vec!["web-1", "web-production"]);
        assert_eq!(
            find(&status.conditions, READY).unwrap().message,
            "2 rules in 2 routes"
        );
    }

    #[test]
    fn refused_and_missing_project_are_stalled_with_the_field() {
        let refusal = Refusal {
            reason: "RuleOrder",
            field: "spec.rules[1].match".into(),
            message: "can match requests that spec.rules[0] also matches".into(),
        };
        let status = next_status(
            &EdgeHandlerStatus::default(),
            Some(1),
            &Observed::Refused(&refusal),
        );
        let stalled = find(&status.conditions, STALLED).unwrap();
        assert_eq!(stalled.reason, "RuleOrder");
        assert!(stalled.message.starts_with("spec.rules[1].match: "));
        assert_eq!(status.rule_count, None);

        let status = next_status(&status, Some(2), &Observed::NoProject { project: "web" });
        assert_eq!(
            find(&status.conditions, STALLED).unwrap().reason,
            PROJECT_NOT_FOUND
        );
        assert!(!is_true(&status.conditions, READY));
    }
}
