//! The CronJob's status: which runs count as new failures, and the Ready condition.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;

use crate::api::conditions::Conditions;

/// A run (Job) that failed: its `Failed=True` condition.
#[derive(Clone, Debug, PartialEq)]
pub struct JobFailure {
    pub job: String,
    pub uid: String,
    /// When the Job failed (the condition's `lastTransitionTime`).
    pub at: Time,
    /// The Job condition's reason, e.g. `BackoffLimitExceeded`, `DeadlineExceeded`.
    pub reason: String,
    pub message: String,
}

/// The failure of `job`, if it failed.
pub fn failure(job: &Job) -> Option<JobFailure> {
    let condition = job
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Failed" && c.status == "True")?;
    let at = condition
        .last_transition_time
        .clone()
        .or_else(|| job.status.as_ref()?.start_time.clone())?;
    Some(JobFailure {
        job: job.name_any(),
        uid: job.uid().unwrap_or_default(),
        at,
        reason: condition
            .reason
            .clone()
            .unwrap_or_else(|| "Failed".to_owned()),
        message: condition
            .message
            .clone()
            .unwrap_or_else(|| "the run failed".to_owned()),
    })
}

/// The failures among `jobs` not reported yet: those after `last_failure` (the status'
/// `lastFailureTime`), oldest first.
pub fn new_failures(jobs: &[Job], last_failure: Option<&Time>) -> Vec<JobFailure> {
    let mut failures: Vec<JobFailure> = jobs
        .iter()
        .filter_map(failure)
        .filter(|f| last_failure.is_none_or(|last| f.at.0 > last.0))
        .collect();
    failures.sort_by_key(|f| f.at.0);
    failures
}

/// When the newest run among `jobs` that completed did (its `Complete=True` condition).
pub fn last_success(jobs: &[Job]) -> Option<Time> {
    jobs.iter()
        .filter_map(|job| {
            job.status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == "Complete" && c.status == "True")?
                .last_transition_time
                .clone()
        })
        .max_by_key(|t| t.0)
}

/// The newest failure among `jobs`, if it is newer than the last success: the last run
/// failed.
pub fn last_run_failed(jobs: &[Job], last_success: Option<&Time>) -> Option<JobFailure> {
    jobs.iter()
        .filter_map(failure)
        .max_by_key(|f| f.at.0)
        .filter(|f| last_success.is_none_or(|success| f.at.0 > success.0))
}

/// Why a container cannot start, as the kubelet says in its `waiting` state: a run in one
/// of these would otherwise sit until its deadline (`timeoutSeconds`) before it fails.
const BLOCKING_REASONS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// A run (Job) still going whose pod's container cannot start.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockedRun {
    pub job: String,
    pub uid: String,
    /// The kubelet's reason and message, e.g. `ErrImagePull`.
    pub reason: String,
    pub message: String,
}

/// The runs among `jobs` that have not finished and whose pod (among `pods`, matched by
/// the Job's uid in the pod's `controller-uid` label) has a container the kubelet cannot
/// start.
pub fn blocked_runs(jobs: &[Job], pods: &[Pod]) -> Vec<BlockedRun> {
    let finished = |job: &Job| {
        job.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| matches!(c.type_.as_str(), "Complete" | "Failed") && c.status == "True")
    };
    jobs.iter()
        .filter(|job| !finished(job))
        .filter_map(|job| {
            let uid = job.uid()?;
            let waiting = pods
                .iter()
                .filter(|pod| pod.labels().get("batch.kubernetes.io/controller-uid") == Some(&uid))
                .filter_map(|pod| pod.status.as_ref()?.container_statuses.as_ref())
                .flatten()
                .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
                .find(|w| {
                    w.reason
                        .as_deref()
                        .is_some_and(|r| BLOCKING_REASONS.contains(&r))
                })?;
            Some(BlockedRun {
                job: job.name_any(),
                uid,
                reason: waiting.reason.clone().unwrap_or_default(),
                message: waiting.message.clone().unwrap_or_default(),
            })
        })
        .collect()
}

/// What the CronJob's conditions say.
#[derive(Clone, Debug, PartialEq)]
pub enum State<'a> {
    /// `spec.projectRef` names no Project in the namespace.
    ProjectNotFound { project: &'a str },
    /// The Project serves nothing in production yet (or its image is not known).
    AwaitingProduction { project: &'a str },
    /// The batch CronJob is in place; `target` says what a run does.
    Scheduled {
        schedule: &'a str,
        time_zone: &'a str,
        target: String,
        suspended: bool,
        last_failure: Option<JobFailure>,
    },
}

/// Sets Ready (and Reconciling) from `state`.
pub fn set_conditions(
    list: &mut Vec<Condition>,
    generation: Option<i64>,
    now: Time,
    namespace: &str,
    state: &State,
) {
    let mut conditions = Conditions::at(list, generation, now);
    match state {
        State::ProjectNotFound { project } => conditions.reconciling(
            "ProjectNotFound",
            &format!(
                "spec.projectRef.name: Project {project:?} does not exist in namespace {namespace}"
            ),
        ),
        State::AwaitingProduction { project } => conditions.reconciling(
            "AwaitingProduction",
            &format!(
                "Project {project} has no production deployment yet: runs start once one is promoted"
            ),
        ),
        State::Scheduled {
            schedule,
            time_zone,
            target,
            suspended,
            last_failure,
        } => {
            let scheduled = format!("runs {schedule:?} ({time_zone}): {target}");
            match (suspended, last_failure) {
                (true, _) => conditions.ready(
                    "Suspended",
                    &format!("suspended, no new runs (spec.suspend); when resumed it {scheduled}"),
                ),
                (false, Some(f)) => conditions.ready(
                    "LastRunFailed",
                    &format!(
                        "{scheduled}; the last run, Job {}, failed: {}: {} (kubectl logs -n {namespace} job/{})",
                        f.job, f.reason, f.message, f.job
                    ),
                ),
                (false, None) => conditions.ready("Scheduled", &scheduled),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::conditions::{READY, RECONCILING, find, is_true};

    fn at(second: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(second).unwrap())
    }

    fn job(name: &str, conditions: serde_json::Value) -> Job {
        serde_json::from_value(json!({
            "metadata": { "name": name, "uid": format!("uid-{name}") },
            "status": { "conditions": conditions, "startTime": "1970-01-01T00:00:01Z" }
        }))
        .unwrap()
    }

    fn failed(name: &str, second: i64) -> Job {
        job(
            name,
            json!([
                { "type": "FailureTarget", "status": "True", "lastTransitionTime": at(second) },
                { "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                  "message": "Job has reached the specified backoff limit", "lastTransitionTime": at(second) }
            ]),
        )
    }

    #[test]
    fn only_failed_jobs_newer_than_the_last_failure_count() {
        let jobs = [
            failed("a", 100),
            job(
                "running",
                json!([{ "type": "FailureTarget", "status": "True", "lastTransitionTime": at(300) }]),
            ),
            job(
                "done",
                json!([{ "type": "Complete", "status": "True", "lastTransitionTime": at(400) }]),
            ),
            failed("b", 200),
            job(
                "not-failed",
                json!([{ "type": "Failed", "status": "False", "lastTransitionTime": at(500) }]),
            ),
        ];
        let all: Vec<String> = new_failures(&jobs, None)
            .into_iter()
            .map(|f| f.job)
            .collect();
        assert_eq!(all, ["a", "b"], "oldest first");
        let newer = new_failures(&jobs, Some(&at(100)));
        assert_eq!(newer.len(), 1);
        assert_eq!(newer[0].job, "b");
        assert_eq!(newer[0].uid, "uid-b");
        assert_eq!(newer[0].reason, "BackoffLimitExceeded");
        assert_eq!(newer[0].at, at(200));
        assert!(new_failures(&jobs, Some(&at(200))).is_empty());
    }

    #[test]
    fn the_last_run_failed_only_when_no_success_came_after() {
        let jobs = [failed("a", 100), failed("b", 200)];
        assert_eq!(last_run_failed(&jobs, None).unwrap().job, "b");
        assert_eq!(last_run_failed(&jobs, Some(&at(150))).unwrap().job, "b");
        assert!(last_run_failed(&jobs, Some(&at(250))).is_none());
        assert!(last_run_failed(&[], None).is_none());
        let done = job(
            "done",
            json!([{ "type": "Complete", "status": "True", "lastTransitionTime": at(400) }]),
        );
        assert_eq!(last_success(&[failed("a", 100), done]), Some(at(400)));
    }

    fn run_pod(job_uid: &str, waiting: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": { "name": "p", "labels": { "batch.kubernetes.io/controller-uid": job_uid } },
            "status": { "containerStatuses": [{
                "name": "run", "image": "curl", "imageID": "", "ready": false, "restartCount": 0,
                "state": { "waiting": waiting }
            }] }
        }))
        .unwrap()
    }

    #[test]
    fn a_run_whose_container_cannot_start_is_blocked_until_it_finishes() {
        let running = job("nightly-1", json!([]));
        let pull =
            json!({ "reason": "ErrImagePull", "message": "registry.example/curl:1: not found" });
        let blocked = blocked_runs(
            std::slice::from_ref(&running),
            &[run_pod("uid-nightly-1", pull.clone())],
        );
        assert_eq!(
            blocked,
            [BlockedRun {
                job: "nightly-1".into(),
                uid: "uid-nightly-1".into(),
                reason: "ErrImagePull".into(),
                message: "registry.example/curl:1: not found".into(),
            }]
        );
        // Still starting (pulling, creating): not blocked.
        let starting = run_pod("uid-nightly-1", json!({ "reason": "ContainerCreating" }));
        assert!(blocked_runs(std::slice::from_ref(&running), &[starting]).is_empty());
        // Another run's pod, or a run that already failed: not this one's concern.
        assert!(
            blocked_runs(
                std::slice::from_ref(&running),
                &[run_pod("uid-other", pull.clone())]
            )
            .is_empty()
        );
        assert!(
            blocked_runs(
                &[failed("nightly-1", 100)],
                &[run_pod("uid-nightly-1", pull)]
            )
            .is_empty()
        );
    }

    #[test]
    fn conditions_say_what_runs_and_what_is_missing() {
        let mut list = Vec::new();
        set_conditions(
            &mut list,
            Some(1),
            at(1),
            "team",
            &State::ProjectNotFound { project: "web" },
        );
        assert_eq!(find(&list, READY).unwrap().reason, "ProjectNotFound");
        assert!(is_true(&list, RECONCILING));

        set_conditions(
            &mut list,
            Some(1),
            at(2),
            "team",
            &State::AwaitingProduction { project: "web" },
        );
        assert_eq!(find(&list, READY).unwrap().reason, "AwaitingProduction");
        assert!(!is_true(&list, READY));

        let scheduled = |suspended, last_failure| State::Scheduled {
            schedule: "0 * * * *",
            time_zone: "Europe/Berlin",
            target: "POST http://web-7.team.svc:80/cron (Deployment web-7)".into(),
            suspended,
            last_failure,
        };
        set_conditions(&mut list, Some(2), at(3), "team", &scheduled(false, None));
        let ready = find(&list, READY).unwrap();
        assert!(is_true(&list, READY) && find(&list, RECONCILING).is_none());
        assert_eq!(ready.reason, "Scheduled");
        assert_eq!(
            ready.message,
            "runs \"0 * * * *\" (Europe/Berlin): POST http://web-7.team.svc:80/cron (Deployment web-7)"
        );

        let failure = failure(&failed("revalidate-1", 100));
        set_conditions(
            &mut list,
            Some(2),
            at(4),
            "team",
            &scheduled(false, failure),
        );
        let ready = find(&list, READY).unwrap();
        assert!(is_true(&list, READY), "a failed run does not unschedule");
        assert_eq!(ready.reason, "LastRunFailed");
        assert!(
            ready
                .message
                .contains("kubectl logs -n team job/revalidate-1"),
            "{}",
            ready.message
        );
        assert_eq!(ready.last_transition_time, at(3), "still True");

        set_conditions(&mut list, Some(3), at(5), "team", &scheduled(true, None));
        assert_eq!(find(&list, READY).unwrap().reason, "Suspended");
    }
}
