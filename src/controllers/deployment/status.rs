//! The phase machine: from what the controller observed of a Deployment's children to
//! its next phase, its conditions and the lifecycle Events to publish. Pure, so every
//! transition is unit-tested with plain values.
//!
//! ```text
//! Queued ─▶ Building ─▶ Deploying ─▶ Ready
//!   │          │            │
//!   └──────────┴────────────┴──▶ Failed          (build failed, image pull, rollout stalled)
//!   Queued/Building ──────────▶ Superseded      (a newer Deployment of the branch)
//!   any but Ready ────────────▶ Canceled        (annotation clouddeck.io/cancel)
//! ```

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::runtime::events::EventType;

use crate::api::conditions::Conditions;
use crate::api::deployment::{DeploymentPhase, PhaseTimings};
use crate::telemetry::Outcome;

/// What the build Job shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildState {
    /// The Job exists but its pod is not running yet (scheduling, pulling, cloning).
    Pending,
    /// The build container runs.
    Running { pod: Option<String> },
    /// The Job succeeded and the termination message held a digest.
    Succeeded { digest: String },
    /// The Job succeeded but the build container reported no digest.
    NoResult { pod: Option<String> },
    /// The Job failed: deadline, non-zero exit, evicted pod…
    Failed {
        reason: &'static str,
        message: String,
    },
}

/// What the workload (apps/v1 Deployment and its pods) shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RolloutState {
    Progressing {
        available: i32,
        desired: i32,
    },
    Available,
    /// `progressDeadlineSeconds` passed without progress.
    Stalled {
        message: String,
    },
    /// A pod cannot pull its image.
    ImagePullFailed {
        message: String,
    },
}

/// Why a Deployment stopped before it was Ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    SupersededBy(String),
    Canceled,
}

/// Everything the phase machine looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub stop: Option<Stop>,
    /// `None` for image Deployments (no build) or when the digest is already known.
    pub build: Option<BuildState>,
    /// `None` until the workload is applied (the image is known).
    pub rollout: Option<RolloutState>,
    /// The Deployment's URL, for messages.
    pub url: String,
    /// Scaled to zero, kept for rollback.
    pub standby: bool,
}

/// A lifecycle Event to publish on the Deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LifecycleEvent {
    pub type_: EventType,
    pub reason: &'static str,
    pub message: String,
}

/// The outcome of one step of the phase machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub phase: DeploymentPhase,
    /// The condition to report: (kind, CamelCase reason, message).
    pub condition: (ConditionKind, &'static str, String),
    pub events: Vec<LifecycleEvent>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionKind {
    Reconciling,
    Ready,
    /// A terminal failure: Stalled (kstatus Failed).
    Failed,
    /// Stopped as meant (canceled, superseded): neither Ready nor Stalled.
    Ended,
}

/// Ready reason of a Deployment whose pods all run: it can serve production now.
pub const AVAILABLE_REASON: &str = "Available";
/// Ready reason of a Deployment on standby (scaled to zero, kept for rollback).
pub const STANDBY_REASON: &str = "Standby";

/// Whether a phase is final: nothing more happens to the Deployment.
pub fn is_terminal(phase: Option<DeploymentPhase>) -> bool {
    matches!(
        phase,
        Some(DeploymentPhase::Failed | DeploymentPhase::Canceled | DeploymentPhase::Superseded)
    )
}

/// The next phase from the previous one and what was observed.
pub fn next(previous: Option<DeploymentPhase>, observed: &Observed) -> Step {
    use DeploymentPhase::*;
    let (phase, kind, reason, message) = decide(previous, observed);
    let mut events = Vec::new();
    if previous != Some(phase) {
        let normal = |reason, message: String| LifecycleEvent {
            type_: EventType::Normal,
            reason,
            message,
        };
        let came_from_build =
            matches!(previous, Some(Building | Queued) | None) && observed.build.is_some();
        match phase {
            Building => events.push(normal("BuildStarted", message.clone())),
            Deploying | Ready if came_from_build && previous != Some(Deploying) => {
                if previous != Some(Building) {
                    // The build finished between two looks; say it started too.
                    events.push(normal("BuildStarted", "build started".into()));
                }
                events.push(normal("BuildSucceeded", "image built and pushed".into()));
                events.push(normal(
                    "RolloutStarted",
                    "rolling out the built image".into(),
                ));
                if phase == Ready {
                    events.push(normal("Ready", message.clone()));
                }
            }
            Deploying => events.push(normal("RolloutStarted", message.clone())),
            Ready => {
                if previous != Some(Deploying) {
                    events.push(normal("RolloutStarted", "rolling out".into()));
                }
                events.push(normal("Ready", message.clone()));
            }
            Failed => events.push(LifecycleEvent {
                type_: EventType::Warning,
                reason,
                message: message.clone(),
            }),
            Superseded => events.push(normal("Superseded", message.clone())),
            Canceled => events.push(normal("Canceled", message.clone())),
            Queued => {}
        }
    }
    Step {
        phase,
        condition: (kind, reason, message),
        events,
    }
}

fn decide(
    previous: Option<DeploymentPhase>,
    observed: &Observed,
) -> (DeploymentPhase, ConditionKind, &'static str, String) {
    use ConditionKind as K;
    use DeploymentPhase::*;
    if let Some(phase @ (Failed | Canceled | Superseded)) = previous {
        // Terminal: the phase stays; the reconcile does not rewrite its condition.
        let kind = if phase == Failed { K::Failed } else { K::Ended };
        return (phase, kind, "Terminal", String::new());
    }
    if previous != Some(Ready) {
        match &observed.stop {
            Some(Stop::SupersededBy(newer))
                if matches!(previous, None | Some(Queued | Building)) =>
            {
                return (
                    Superseded,
                    K::Ended,
                    "Superseded",
                    format!("superseded by the newer Deployment {newer}"),
                );
            }
            Some(Stop::Canceled) => {
                return (
                    Canceled,
                    K::Ended,
                    "Canceled",
                    "canceled by annotation clouddeck.io/cancel".into(),
                );
            }
            _ => {}
        }
    }
    match &observed.build {
        // A build never goes back to Queued: between the pod finishing and the Job
        // reporting it, the Job counts no ready pod.
        Some(BuildState::Pending) if previous != Some(Building) => {
            return (
                Queued,
                K::Reconciling,
                "Queued",
                "waiting for the build pod to start".into(),
            );
        }
        Some(BuildState::Pending) => {
            return (
                Building,
                K::Reconciling,
                "Building",
                "building the image".into(),
            );
        }
        Some(BuildState::Running { pod }) => {
            let logs = pod
                .as_deref()
                .map(|p| format!("; logs: kubectl logs {p} -c build"))
                .unwrap_or_default();
            return (
                Building,
                K::Reconciling,
                "Building",
                format!("building the image{logs}"),
            );
        }
        Some(BuildState::Failed { reason, message }) => {
            return (Failed, K::Failed, reason, message.clone());
        }
        Some(BuildState::NoResult { pod }) => {
            let pod = pod.as_deref().unwrap_or("the build pod");
            return (
                Failed,
                K::Failed,
                "BuildResultMissing",
                format!(
                    "the build succeeded but {pod} reported no image digest in its termination message"
                ),
            );
        }
        Some(BuildState::Succeeded { .. }) | None => {}
    }
    match &observed.rollout {
        None => (
            Deploying,
            K::Reconciling,
            "RollingOut",
            "starting the rollout".into(),
        ),
        Some(RolloutState::Available) if observed.standby => (
            Ready,
            K::Ready,
            STANDBY_REASON,
            "scaled to zero and kept for rollback (beyond the Project's spec.keepWarm)".into(),
        ),
        Some(RolloutState::Available) => (
            Ready,
            K::Ready,
            AVAILABLE_REASON,
            format!("serving at {}", observed.url),
        ),
        // Once Ready, a Deployment stays Ready (it can be promoted and rolled back to);
        // the condition tells when its pods are not all available.
        Some(RolloutState::Progressing { available, desired }) if previous == Some(Ready) => (
            Ready,
            K::Reconciling,
            "Unavailable",
            format!("{available} of {desired} replicas available"),
        ),
        Some(RolloutState::Progressing { available, desired }) => (
            Deploying,
            K::Reconciling,
            "RollingOut",
            format!("{available} of {desired} replicas available"),
        ),
        Some(RolloutState::Stalled { message }) if previous != Some(Ready) => {
            (Failed, K::Failed, "RolloutStalled", message.clone())
        }
        Some(RolloutState::ImagePullFailed { message }) if previous != Some(Ready) => {
            (Failed, K::Failed, "ImagePullFailed", message.clone())
        }
        Some(RolloutState::Stalled { message } | RolloutState::ImagePullFailed { message }) => {
            (Ready, K::Reconciling, "Unavailable", message.clone())
        }
    }
}

/// Writes the step's condition with the shared helper.
pub fn apply_condition(list: &mut Vec<Condition>, generation: Option<i64>, now: Time, step: &Step) {
    let (kind, reason, message) = &step.condition;
    let mut conditions = Conditions::at(list, generation, now);
    match kind {
        ConditionKind::Reconciling => conditions.reconciling(reason, message),
        ConditionKind::Ready => conditions.ready(reason, message),
        ConditionKind::Failed => conditions.stalled(reason, message),
        ConditionKind::Ended => conditions.ended(reason, message),
    }
}

/// Stamps the timings of a transition from `previous` to `next`.
pub fn stamp(
    timings: &mut PhaseTimings,
    previous: Option<DeploymentPhase>,
    next: DeploymentPhase,
    now: &Time,
) {
    use DeploymentPhase::*;
    if previous == Some(next) {
        return;
    }
    let set = |slot: &mut Option<Time>| {
        if slot.is_none() {
            *slot = Some(now.clone());
        }
    };
    if previous == Some(Building) {
        set(&mut timings.build_finished_at);
    }
    match next {
        Queued => set(&mut timings.queued_at),
        Building => set(&mut timings.build_started_at),
        Deploying => set(&mut timings.deploy_started_at),
        Ready => {
            set(&mut timings.deploy_started_at);
            set(&mut timings.ready_at);
        }
        Failed | Canceled | Superseded => set(&mut timings.finished_at),
    }
}

/// How a build or a rollout ended, for the `clouddeck_builds_*` and `clouddeck_rollouts_*`
/// metrics.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Finished {
    Build(Outcome, Option<f64>),
    Rollout(Outcome, Option<f64>),
}

/// What a phase change finished, with its duration in seconds when both ends were seen.
/// `before` and `after` are the timings around [`stamp`].
pub fn finished(
    previous: Option<DeploymentPhase>,
    next: DeploymentPhase,
    before: &PhaseTimings,
    after: &PhaseTimings,
    failure_reason: &str,
) -> Vec<Finished> {
    use DeploymentPhase::*;
    if previous == Some(next) {
        return Vec::new();
    }
    let seconds = |from: &Option<Time>, to: &Option<Time>| match (from, to) {
        (Some(from), Some(to)) => Some(to.0.duration_since(from.0).as_secs_f64()),
        _ => None,
    };
    let outcome = match next {
        Failed => Outcome::failed,
        Canceled | Superseded => Outcome::canceled,
        _ => Outcome::succeeded,
    };
    let mut done = Vec::new();
    let build_failed = next == Failed && failure_reason.starts_with("Build");
    if before.build_finished_at.is_none() && after.build_finished_at.is_some() {
        done.push(Finished::Build(
            outcome,
            seconds(&after.build_started_at, &after.build_finished_at),
        ));
    } else if build_failed {
        done.push(Finished::Build(Outcome::failed, None));
    }
    if before.ready_at.is_none() && after.ready_at.is_some() {
        done.push(Finished::Rollout(
            Outcome::succeeded,
            seconds(&after.deploy_started_at, &after.ready_at),
        ));
    } else if next == Failed && !build_failed {
        done.push(Finished::Rollout(
            Outcome::failed,
            seconds(&after.deploy_started_at, &after.finished_at),
        ));
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeploymentPhase::*;

    fn at(second: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(second).unwrap())
    }

    #[test]
    fn a_build_then_a_rollout_are_each_counted_once_with_their_duration() {
        let mut timings = PhaseTimings::default();
        stamp(&mut timings, None, Building, &at(100));
        let before = timings.clone();
        stamp(&mut timings, Some(Building), Deploying, &at(160));
        assert_eq!(
            finished(Some(Building), Deploying, &before, &timings, "Progressing"),
            [Finished::Build(Outcome::succeeded, Some(60.0))]
        );
        let before = timings.clone();
        stamp(&mut timings, Some(Deploying), Ready, &at(175));
        assert_eq!(
            finished(Some(Deploying), Ready, &before, &timings, "Available"),
            [Finished::Rollout(Outcome::succeeded, Some(15.0))]
        );
        let before = timings.clone();
        stamp(&mut timings, Some(Ready), Ready, &at(200));
        assert!(finished(Some(Ready), Ready, &before, &timings, "Available").is_empty());
    }

    #[test]
    fn failures_count_against_the_step_that_failed() {
        let mut timings = PhaseTimings::default();
        stamp(&mut timings, None, Building, &at(100));
        let before = timings.clone();
        stamp(&mut timings, Some(Building), Failed, &at(130));
        assert_eq!(
            finished(Some(Building), Failed, &before, &timings, "BuildFailed"),
            [Finished::Build(Outcome::failed, Some(30.0))]
        );

        let mut timings = PhaseTimings::default();
        stamp(&mut timings, None, Deploying, &at(100));
        let before = timings.clone();
        stamp(&mut timings, Some(Deploying), Failed, &at(700));
        assert_eq!(
            finished(Some(Deploying), Failed, &before, &timings, "RolloutStalled"),
            [Finished::Rollout(Outcome::failed, Some(600.0))]
        );

        let mut timings = PhaseTimings::default();
        stamp(&mut timings, None, Building, &at(100));
        let before = timings.clone();
        stamp(&mut timings, Some(Building), Superseded, &at(110));
        assert_eq!(
            finished(Some(Building), Superseded, &before, &timings, "Superseded"),
            [Finished::Build(Outcome::canceled, Some(10.0))]
        );
    }

    fn observed(build: Option<BuildState>, rollout: Option<RolloutState>) -> Observed {
        Observed {
            stop: None,
            build,
            rollout,
            url: "https://web-1.apps.example.com".into(),
            standby: false,
        }
    }

    #[test]
    fn a_standby_deployment_stays_ready_with_its_own_reason() {
        let mut o = observed(None, Some(RolloutState::Available));
        o.standby = true;
        let step = next(Some(Ready), &o);
        assert_eq!((step.phase, step.condition.1), (Ready, STANDBY_REASON));
        assert!(step.events.is_empty());
    }

    fn reasons(step: &Step) -> Vec<&'static str> {
        step.events.iter().map(|e| e.reason).collect()
    }

    #[test]
    fn git_deployment_walks_queued_building_deploying_ready() {
        let step = next(None, &observed(Some(BuildState::Pending), None));
        assert_eq!(step.phase, Queued);
        assert!(step.events.is_empty());

        let running = BuildState::Running {
            pod: Some("web-1-build-x".into()),
        };
        let step = next(Some(Queued), &observed(Some(running), None));
        assert_eq!(step.phase, Building);
        assert_eq!(reasons(&step), ["BuildStarted"]);
        assert!(
            step.condition
                .2
                .contains("kubectl logs web-1-build-x -c build")
        );

        let built = BuildState::Succeeded {
            digest: "sha256:abc".into(),
        };
        let progressing = RolloutState::Progressing {
            available: 0,
            desired: 2,
        };
        let step = next(Some(Building), &observed(Some(built), Some(progressing)));
        assert_eq!(step.phase, Deploying);
        assert_eq!(reasons(&step), ["BuildSucceeded", "RolloutStarted"]);
        assert_eq!(step.condition.2, "0 of 2 replicas available");

        let step = next(
            Some(Deploying),
            &observed(None, Some(RolloutState::Available)),
        );
        assert_eq!(step.phase, Ready);
        assert_eq!(step.condition.0, ConditionKind::Ready);
        assert_eq!(reasons(&step), ["Ready"]);
        assert_eq!(
            step.condition.2,
            "serving at https://web-1.apps.example.com"
        );
    }

    #[test]
    fn image_deployment_skips_the_build() {
        let step = next(
            None,
            &observed(
                None,
                Some(RolloutState::Progressing {
                    available: 0,
                    desired: 1,
                }),
            ),
        );
        assert_eq!(step.phase, Deploying);
        assert_eq!(reasons(&step), ["RolloutStarted"]);
    }

    #[test]
    fn a_failed_build_is_terminal_with_a_warning() {
        let failed = BuildState::Failed {
            reason: "BuildFailed",
            message: "exit code 1".into(),
        };
        let step = next(Some(Building), &observed(Some(failed), None));
        assert_eq!(step.phase, Failed);
        assert_eq!(step.events[0].type_, EventType::Warning);
        assert_eq!(step.events[0].reason, "BuildFailed");
        let again = next(Some(Failed), &observed(Some(BuildState::Pending), None));
        assert_eq!(
            next(Some(Building), &observed(Some(BuildState::Pending), None)).phase,
            Building
        );
        assert_eq!(again.phase, Failed);
        assert!(again.events.is_empty());
    }

    #[test]
    fn a_build_without_digest_fails() {
        let step = next(
            Some(Building),
            &observed(
                Some(BuildState::NoResult {
                    pod: Some("p".into()),
                }),
                None,
            ),
        );
        assert_eq!(
            (step.phase, step.condition.1),
            (Failed, "BuildResultMissing")
        );
    }

    #[test]
    fn rollout_failures() {
        let stalled = RolloutState::Stalled {
            message: "progress deadline exceeded".into(),
        };
        assert_eq!(
            next(Some(Deploying), &observed(None, Some(stalled.clone())))
                .condition
                .1,
            "RolloutStalled"
        );
        let pull = RolloutState::ImagePullFailed {
            message: "ErrImagePull".into(),
        };
        let step = next(Some(Deploying), &observed(None, Some(pull)));
        assert_eq!((step.phase, step.condition.1), (Failed, "ImagePullFailed"));
        // A Ready deployment whose pods go away stays Ready but says so.
        let step = next(Some(Ready), &observed(None, Some(stalled)));
        assert_eq!(
            (step.phase, step.condition.0, step.condition.1),
            (Ready, ConditionKind::Reconciling, "Unavailable")
        );
    }

    #[test]
    fn superseded_only_while_building() {
        let mut o = observed(Some(BuildState::Running { pod: None }), None);
        o.stop = Some(Stop::SupersededBy("web-2".into()));
        let step = next(Some(Building), &o);
        assert_eq!(step.phase, Superseded);
        assert_eq!(reasons(&step), ["Superseded"]);
        o.build = None;
        o.rollout = Some(RolloutState::Available);
        assert_eq!(next(Some(Deploying), &o).phase, Ready);
    }

    #[test]
    fn fast_builds_still_report_every_lifecycle_event() {
        let step = next(
            Some(Queued),
            &observed(
                Some(BuildState::Succeeded {
                    digest: "sha256:a".into(),
                }),
                Some(RolloutState::Available),
            ),
        );
        assert_eq!(step.phase, Ready);
        assert_eq!(
            reasons(&step),
            ["BuildStarted", "BuildSucceeded", "RolloutStarted", "Ready"]
        );
    }

    #[test]
    fn timings_are_stamped_once_per_transition() {
        let t = |s| Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap());
        let mut timings = PhaseTimings::default();
        stamp(&mut timings, None, Queued, &t(1));
        stamp(&mut timings, Some(Queued), Building, &t(2));
        stamp(&mut timings, Some(Building), Building, &t(3));
        stamp(&mut timings, Some(Building), Deploying, &t(4));
        stamp(&mut timings, Some(Deploying), Ready, &t(5));
        assert_eq!(timings.queued_at, Some(t(1)));
        assert_eq!(timings.build_started_at, Some(t(2)));
        assert_eq!(timings.build_finished_at, Some(t(4)));
        assert_eq!(timings.deploy_started_at, Some(t(4)));
        assert_eq!(timings.ready_at, Some(t(5)));
        assert_eq!(timings.finished_at, None);
    }

    #[test]
    fn conditions_follow_the_step() {
        let t = Time(k8s_openapi::jiff::Timestamp::from_second(1).unwrap());
        let mut list = Vec::new();
        let step = next(
            Some(Deploying),
            &observed(None, Some(RolloutState::Available)),
        );
        apply_condition(&mut list, Some(1), t, &step);
        assert!(crate::api::conditions::is_true(
            &list,
            crate::api::conditions::READY
        ));
    }
}
