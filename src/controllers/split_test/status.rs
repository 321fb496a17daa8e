//! A SplitTest's status from what its reconcile observed (pure).

use k8s_openapi::jiff::Timestamp;

use crate::api::conditions::Conditions;
use crate::api::split_test::{SplitTestPhase, SplitTestStatus, VariantStatus};
use crate::routing::edge::Refusal;
use crate::routing::split::{Resolved, SplitPlan};

/// What the reconcile found about one SplitTest.
#[derive(Debug)]
pub enum Observed<'a> {
    NoProject,
    Stopped {
        why: &'a str,
    },
    Scheduled {
        start: Timestamp,
    },
    /// In its window, and what became of it.
    Running {
        resolved: &'a [Resolved],
        outcome: Running<'a>,
    },
}

#[derive(Debug)]
pub enum Running<'a> {
    /// Production is split by this plan; `applied` when the route carries it.
    Splitting { plan: &'a SplitPlan, applied: bool },
    /// Fewer than two variants have a Ready Deployment: production is plain.
    WaitingForVariants,
    /// Refused (edge rules, rule limit): production is plain.
    Refused(&'a Refusal),
    /// An older SplitTest of the Project runs.
    Outranked { by: &'a str },
}

pub fn next_status(
    previous: &SplitTestStatus,
    generation: Option<i64>,
    observed: &Observed,
) -> SplitTestStatus {
    let mut next = previous.clone();
    let mut conditions = Conditions::of(&mut next, generation);
    let (phase, variants) = match observed {
        Observed::NoProject => {
            conditions.stalled(
                "ProjectNotFound",
                "spec.projectRef: no such Project in this namespace",
            );
            (None, Vec::new())
        }
        Observed::Stopped { why } => {
            conditions.ended("Stopped", why);
            (Some(SplitTestPhase::Stopped), Vec::new())
        }
        Observed::Scheduled { start } => {
            conditions.ready("Scheduled", &format!("starts at {start}"));
            (Some(SplitTestPhase::Scheduled), Vec::new())
        }
        Observed::Running { resolved, outcome } => {
            let missing: Vec<&str> = resolved
                .iter()
                .filter(|v| v.deployment.is_none())
                .map(|v| v.name.as_str())
                .collect();
            let mut variants: Vec<VariantStatus> = resolved
                .iter()
                .map(|v| VariantStatus {
                    name: v.name.clone(),
                    deployment: v.deployment.clone(),
                    weight: 0,
                })
                .collect();
            match outcome {
                Running::Splitting { plan, applied } => {
                    let weights = plan.effective_weights();
                    for variant in &mut variants {
                        variant.weight = weights
                            .iter()
                            .find(|(name, _)| name == &variant.name)
                            .map_or(0, |(_, w)| *w);
                    }
                    let split: Vec<String> = variants
                        .iter()
                        .filter(|v| v.weight > 0)
                        .map(|v| format!("{} {}%", v.name, v.weight))
                        .collect();
                    let mut message = format!("production split: {}", split.join(", "));
                    if !missing.is_empty() {
                        message.push_str(&format!(
                            "; no Ready Deployment for {} (its share goes to the others)",
                            missing.join(", ")
                        ));
                    }
                    if *applied {
                        conditions.ready("Running", &message);
                    } else {
                        conditions.reconciling("Applying", &message);
                    }
                }
                Running::WaitingForVariants => conditions.reconciling(
                    "WaitingForVariants",
                    &format!(
                        "fewer than two variants have a Ready Deployment (none for {}): production serves as without the test",
                        missing.join(", ")
                    ),
                ),
                Running::Refused(refusal) => conditions.stalled(refusal.reason, &refusal.to_string()),
                Running::Outranked { by } => conditions.stalled(
                    "Conflict",
                    &format!("SplitTest {by:?} already splits this Project's production (the older one runs)"),
                ),
            }
            (Some(SplitTestPhase::Running), variants)
        }
    };
    next.phase = phase;
    next.variants = variants;
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::conditions::{READY, RECONCILING, STALLED, find, is_true};

    fn resolved(list: &[(&str, Option<&str>, i32)]) -> Vec<Resolved> {
        list.iter()
            .map(|(name, deployment, weight)| Resolved {
                name: name.to_string(),
                deployment: deployment.map(str::to_owned),
                weight: *weight,
            })
            .collect()
    }

    #[test]
    fn waiting_for_variants_names_the_missing_ones_and_is_in_progress() {
        let variants = resolved(&[("control", Some("web-1"), 90), ("new", None, 10)]);
        let observed = Observed::Running {
            resolved: &variants,
            outcome: Running::WaitingForVariants,
        };
        let status = next_status(&SplitTestStatus::default(), Some(1), &observed);
        assert!(is_true(&status.conditions, RECONCILING));
        assert!(
            find(&status.conditions, READY)
                .unwrap()
                .message
                .contains("none for new")
        );
        assert_eq!(status.phase, Some(SplitTestPhase::Running));
        assert_eq!(status.variants[1].deployment, None);
    }

    #[test]
    fn phases_read_as_kstatus_expects() {
        let start = Timestamp::from_second(1_900_000_000).unwrap();
        let status = next_status(
            &SplitTestStatus::default(),
            Some(1),
            &Observed::Scheduled { start },
        );
        assert!(is_true(&status.conditions, READY));
        assert_eq!(status.phase, Some(SplitTestPhase::Scheduled));
        let status = next_status(
            &status,
            Some(1),
            &Observed::Stopped {
                why: "spec.active is false",
            },
        );
        assert!(!is_true(&status.conditions, READY));
        assert!(find(&status.conditions, STALLED).is_none());
        assert_eq!(status.phase, Some(SplitTestPhase::Stopped));
    }
}
