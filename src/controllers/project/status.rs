//! The Project's status: what production serves, and the lifecycle Events of a change.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::conditions::Conditions;

/// Stalled reason of a Project with no Ready production Deployment to serve.
pub const NO_PRODUCTION_DEPLOYMENT: &str = "NoProductionDeployment";

/// The Project's Ready condition: serving, waiting for a first production deployment, or
/// nothing to serve.
pub fn set_conditions(
    list: &mut Vec<Condition>,
    generation: Option<i64>,
    now: Time,
    serving: Option<(&str, &str)>,
    in_progress: bool,
) {
    let mut conditions = Conditions::at(list, generation, now);
    match serving {
        Some((deployment, url)) => conditions.ready(
            "Serving",
            &format!("production serves Deployment {deployment} at {url}"),
        ),
        None if in_progress => conditions.reconciling(
            "WaitingForDeployment",
            "a production Deployment is on its way",
        ),
        None => conditions.stalled(
            NO_PRODUCTION_DEPLOYMENT,
            "no Ready production Deployment: create a Deployment with target: production",
        ),
    }
}

/// The Event of a change of what production serves: (reason, message), or `None`.
pub fn production_change(
    previous: Option<&str>,
    next: Option<&str>,
    rollback: bool,
    url: &str,
) -> Option<(&'static str, String)> {
    let next = next?;
    if previous == Some(next) {
        return None;
    }
    Some(if rollback {
        (
            "RolledBack",
            format!("production rolled back to Deployment {next} at {url}"),
        )
    } else {
        (
            "Promoted",
            format!("Deployment {next} promoted to production at {url}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::conditions::{READY, RECONCILING, find, is_true};

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1).unwrap())
    }

    #[test]
    fn ready_when_serving() {
        let mut list = Vec::new();
        set_conditions(
            &mut list,
            Some(1),
            now(),
            Some(("web-2", "https://web.x")),
            false,
        );
        assert!(is_true(&list, READY));
        set_conditions(&mut list, Some(1), now(), None, true);
        assert!(is_true(&list, RECONCILING));
        set_conditions(&mut list, Some(1), now(), None, false);
        assert_eq!(find(&list, READY).unwrap().reason, "NoProductionDeployment");
        assert!(find(&list, RECONCILING).is_none());
    }

    #[test]
    fn promotion_and_rollback_events() {
        assert_eq!(production_change(Some("a"), Some("a"), false, "u"), None);
        assert_eq!(production_change(None, None, false, "u"), None);
        assert_eq!(
            production_change(Some("a"), Some("b"), false, "u")
                .unwrap()
                .0,
            "Promoted"
        );
        assert_eq!(
            production_change(Some("b"), Some("a"), true, "u")
                .unwrap()
                .0,
            "RolledBack"
        );
    }
}
