//! The desired batch/v1 CronJob of a CloudDeck CronJob, and the webhook events of a failed
//! run, as pure functions of the CronJob, its Project, what production serves and the
//! operator configuration.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{CronJob as BatchCronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;

use super::status::JobFailure;
use crate::api::cron_job::{ConcurrencyPolicy, CronJob, HttpCall, HttpMethod};
use crate::api::project::Project;
use crate::controllers::pod::{self, RunAs};
use crate::delivery::PlatformEvent;
use crate::labels::{MANAGED_BY, MANAGER, PROJECT_LABEL};
use crate::routing::{self, SERVICE_PORT};

/// Label on the batch CronJob, its Jobs and their pods: the CloudDeck CronJob they run
/// for (its name, shortened like [`batch_name`] when longer).
pub const CRONJOB_LABEL: &str = "clouddeck.io/cronjob";

/// Longest batch CronJob name: its Jobs are named `<cronjob>-<11 digits>`, and a Job's
/// name must fit a label value (63).
pub const MAX_BATCH_NAME: usize = 52;

/// How late a run may still start (e.g. after a controller-manager restart) before it is
/// skipped.
pub const STARTING_DEADLINE_SECONDS: i64 = 300;

/// Finished Jobs kept per outcome, for `kubectl logs job/...` and the failure Events.
pub const HISTORY_LIMIT: i32 = 3;

/// The uid `spec.http` runs as: curl needs no identity, and a numeric uid lets the
/// kubelet check `runAsNonRoot`.
pub const HTTP_CALL_UID: i64 = 65534;

/// The name of the batch CronJob (and the value of [`CRONJOB_LABEL`]) of the CloudDeck
/// CronJob `name`.
pub fn batch_name(name: &str) -> String {
    routing::bounded_to(name, MAX_BATCH_NAME)
}

/// The labels of the batch CronJob, its Jobs and their pods.
pub fn labels(project: &str, cron_job: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.to_owned(), MANAGER.to_owned()),
        (PROJECT_LABEL.to_owned(), project.to_owned()),
        (CRONJOB_LABEL.to_owned(), batch_name(cron_job)),
    ])
}

/// What the runs target: the production Deployment and the image it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Production {
    pub deployment: String,
    /// `None` while unknown (a git Deployment whose build has not reported its image).
    pub image: Option<String>,
}

/// The in-cluster URL of `path` on the production Deployment's Service (named after the
/// Deployment, on [`SERVICE_PORT`]).
pub fn service_url(deployment: &str, namespace: &str, path: &str) -> String {
    format!("http://{deployment}.{namespace}.svc:{SERVICE_PORT}{path}")
}

/// curl's arguments for `call`: fail on a non-2xx answer (`-f`), quiet but with errors
/// (`-sS`), the method, the whole run's timeout, the headers, the URL. Arguments, not a
/// shell line: header values are passed as they are.
pub fn curl_args(call: &HttpCall, timeout_seconds: i32, url: &str) -> Vec<String> {
    let method = match call.method {
        HttpMethod::Get => "GET",
        HttpMethod::Post => "POST",
        HttpMethod::Put => "PUT",
        HttpMethod::Patch => "PATCH",
        HttpMethod::Delete => "DELETE",
    };
    let mut args: Vec<String> = [
        "-fsS",
        "-X",
        method,
        "--max-time",
        &timeout_seconds.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for header in &call.headers {
        args.push("-H".into());
        // `Name:` with nothing after it would make curl drop the header; `Name;` sends it
        // empty.
        args.push(if header.value.is_empty() {
            format!("{};", header.name)
        } else {
            format!("{}: {}", header.name, header.value)
        });
    }
    args.push(url.to_owned());
    args
}

/// The container of a run: curl against production for `spec.http`, else the command in
/// the production image with the Project's runtime environment. `None` when a command
/// job has no image to run yet.
fn container(
    cron_job: &CronJob,
    project: &Project,
    production: &Production,
    http_call_image: &str,
) -> Option<Container> {
    let spec = &cron_job.spec;
    let namespace = cron_job.namespace().unwrap_or_default();
    if let Some(call) = &spec.http {
        let url = service_url(&production.deployment, &namespace, &call.path);
        return Some(Container {
            name: "http".into(),
            image: Some(http_call_image.into()),
            command: Some(vec!["curl".into()]),
            args: Some(curl_args(call, spec.timeout_seconds, &url)),
            resources: Some(pod::resources(
                &[("cpu", "10m"), ("memory", "16Mi")],
                "64Mi",
            )),
            security_context: Some(pod::restricted(RunAs::Uid(HTTP_CALL_UID))),
            ..Container::default()
        });
    }
    let image = production.image.as_deref()?;
    Some(Container {
        command: Some(spec.command.clone().unwrap_or_default()),
        ..pod::runtime_container("command", image, &project.spec.runtime, RunAs::NonRoot)
    })
}

/// The batch/v1 CronJob that runs `cron_job` against `production`: one attempt per run
/// (`backoffLimit: 0`), stopped after `timeoutSeconds`, under the restricted Pod Security
/// Standard, labelled down to the pods. `None` when a command job has no image yet.
pub fn batch_cron_job(
    cron_job: &CronJob,
    project: &Project,
    production: &Production,
    http_call_image: &str,
    owner: &OwnerReference,
) -> Option<BatchCronJob> {
    let spec = &cron_job.spec;
    let labels = labels(&spec.project_ref.name, &cron_job.name_any());
    let container = container(cron_job, project, production, http_call_image)?;
    let concurrency = match spec.concurrency_policy {
        ConcurrencyPolicy::Allow => "Allow",
        ConcurrencyPolicy::Forbid => "Forbid",
        ConcurrencyPolicy::Replace => "Replace",
    };
    let labelled = || ObjectMeta {
        labels: Some(labels.clone()),
        ..ObjectMeta::default()
    };
    Some(BatchCronJob {
        metadata: ObjectMeta {
            name: Some(batch_name(&cron_job.name_any())),
            namespace: cron_job.namespace(),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner.clone()]),
            ..ObjectMeta::default()
        },
        spec: CronJobSpec {
            schedule: spec.schedule.clone(),
            // Explicit: without it the controller-manager's local zone applies.
            time_zone: Some(spec.time_zone.clone().unwrap_or_else(|| "Etc/UTC".into())),
            suspend: Some(spec.suspend),
            concurrency_policy: Some(concurrency.into()),
            starting_deadline_seconds: Some(STARTING_DEADLINE_SECONDS),
            successful_jobs_history_limit: Some(HISTORY_LIMIT),
            failed_jobs_history_limit: Some(HISTORY_LIMIT),
            job_template: JobTemplateSpec {
                metadata: Some(labelled()),
                spec: Some(JobSpec {
                    backoff_limit: Some(0),
                    active_deadline_seconds: Some(spec.timeout_seconds.into()),
                    template: PodTemplateSpec {
                        metadata: Some(labelled()),
                        spec: Some(PodSpec {
                            restart_policy: Some("Never".into()),
                            ..pod::pod_spec(container, true)
                        }),
                    },
                    ..JobSpec::default()
                }),
            },
        },
        status: None,
    })
}

/// The webhook events of a failed run: `cronjob.failed` and `alert.cronjob_failed`, each
/// identified by the Job's uid, so publishing again after a crash creates nothing new.
pub fn failure_events(
    cron_job: &CronJob,
    project: Option<&Project>,
    failure: &JobFailure,
) -> Vec<PlatformEvent> {
    let name = cron_job.name_any();
    let project_name = &cron_job.spec.project_ref.name;
    let summary = format!(
        "{project_name}: cron job {name} failed (Job {}): {}",
        failure.job, failure.message
    );
    ["cronjob.failed", "alert.cronjob_failed"]
        .into_iter()
        .map(|event_type| {
            PlatformEvent::new(
                event_type,
                format!("{}/{event_type}", failure.uid),
                &cron_job.namespace().unwrap_or_default(),
                summary.clone(),
            )
            .with_project(
                project_name,
                project
                    .and_then(|p| p.metadata.labels.clone())
                    .unwrap_or_default(),
            )
            .with("cronJob", name.clone())
            .with("job", failure.job.clone())
            .with("reason", failure.reason.clone())
            .with("message", failure.message.clone())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn cron_job(extra: serde_json::Value) -> CronJob {
        let mut spec = json!({
            "projectRef": { "name": "web" },
            "schedule": "0 * * * *",
            "timeZone": "Europe/Berlin",
            "timeoutSeconds": 120,
        });
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "CronJob",
            "metadata": { "name": "revalidate", "namespace": "team", "uid": "c0ffee00-0000-4000-8000-000000000001" },
            "spec": spec,
        }))
        .unwrap()
    }

    fn project() -> Project {
        serde_json::from_value(json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "Project",
            "metadata": { "name": "web", "namespace": "team", "labels": { "tier": "gold" } },
            "spec": {
                "image": "registry.example/acme/web:1",
                "runtime": {
                    "port": 8080,
                    "env": [{ "name": "MODE", "value": "prod" }],
                    "envFrom": [{ "secretRef": { "name": "web-env" } }],
                    "resources": { "limits": { "memory": "256Mi" } }
                }
            }
        }))
        .unwrap()
    }

    fn production() -> Production {
        Production {
            deployment: "web-7".into(),
            image: Some("registry.example/acme/web@sha256:abc".into()),
        }
    }

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "clouddeck.io/v1alpha1".into(),
            kind: "CronJob".into(),
            name: "revalidate".into(),
            uid: "c0ffee00-0000-4000-8000-000000000001".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn render(cron: &CronJob) -> BatchCronJob {
        batch_cron_job(cron, &project(), &production(), "curl:pinned", &owner()).unwrap()
    }

    fn the_container(batch: &BatchCronJob) -> Container {
        let pod = batch
            .spec
            .job_template
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .clone()
            .unwrap();
        assert_eq!(pod.containers.len(), 1);
        pod.containers[0].clone()
    }

    #[test]
    fn an_http_call_is_curl_against_the_production_service() {
        let cron = cron_job(json!({ "http": {
            "path": "/api/cron?scope=all", "method": "POST",
            "headers": [{ "name": "Authorization", "value": "Bearer s3cret" }, { "name": "X-Empty", "value": "" }]
        } }));
        let batch = render(&cron);
        let c = the_container(&batch);
        assert_eq!(c.image.as_deref(), Some("curl:pinned"));
        assert_eq!(c.command, Some(vec!["curl".to_string()]));
        assert_eq!(
            c.args.unwrap(),
            [
                "-fsS",
                "-X",
                "POST",
                "--max-time",
                "120",
                "-H",
                "Authorization: Bearer s3cret",
                "-H",
                "X-Empty;",
                "http://web-7.team.svc:80/api/cron?scope=all"
            ]
        );
        let security = c.security_context.unwrap();
        assert_eq!(security.run_as_user, Some(HTTP_CALL_UID));
        assert_eq!(security.run_as_non_root, Some(true));
        // The HTTP call does not get the application's environment.
        assert!(c.env.is_none() && c.env_from.is_none());
    }

    #[test]
    fn the_schedule_and_run_limits_come_from_the_spec() {
        let mut cron = cron_job(json!({ "http": { "path": "/cron" } }));
        cron.spec.suspend = true;
        cron.spec.concurrency_policy = ConcurrencyPolicy::Replace;
        let batch = render(&cron);
        assert_eq!(batch.metadata.name.as_deref(), Some("revalidate"));
        assert_eq!(batch.metadata.namespace.as_deref(), Some("team"));
        assert_eq!(batch.metadata.owner_references, Some(vec![owner()]));
        let spec = batch.spec.clone();
        assert_eq!(spec.schedule, "0 * * * *");
        assert_eq!(spec.time_zone.as_deref(), Some("Europe/Berlin"));
        assert_eq!(spec.suspend, Some(true));
        assert_eq!(spec.concurrency_policy.as_deref(), Some("Replace"));
        assert_eq!(spec.starting_deadline_seconds, Some(300));
        assert_eq!(spec.successful_jobs_history_limit, Some(3));
        assert_eq!(spec.failed_jobs_history_limit, Some(3));
        let job = spec.job_template.spec.unwrap();
        assert_eq!(job.backoff_limit, Some(0));
        assert_eq!(job.active_deadline_seconds, Some(120));
        let c = the_container(&batch);
        assert_eq!(c.args.unwrap()[2], "GET", "GET is the default method");

        cron.spec.time_zone = None;
        let spec = render(&cron).spec;
        assert_eq!(spec.time_zone.as_deref(), Some("Etc/UTC"));
    }

    #[test]
    fn runs_pass_the_restricted_pod_security_standard() {
        for cron in [
            cron_job(json!({ "http": { "path": "/cron" } })),
            cron_job(json!({ "command": ["npm", "run", "cleanup"] })),
        ] {
            let batch = render(&cron);
            let pod = batch.spec.job_template.spec.unwrap().template.spec.unwrap();
            assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
            assert_eq!(pod.automount_service_account_token, Some(false));
            let pod_security = pod.security_context.unwrap();
            assert_eq!(pod_security.run_as_non_root, Some(true));
            assert_eq!(
                pod_security.seccomp_profile.unwrap().type_,
                "RuntimeDefault"
            );
            let security = pod.containers[0].security_context.clone().unwrap();
            assert_eq!(security.allow_privilege_escalation, Some(false));
            assert_eq!(security.run_as_non_root, Some(true));
            assert_eq!(
                security.capabilities.unwrap().drop,
                Some(vec!["ALL".to_string()])
            );
            assert_eq!(security.seccomp_profile.unwrap().type_, "RuntimeDefault");
        }
    }

    #[test]
    fn the_cron_job_its_jobs_and_pods_carry_the_labels() {
        let batch = render(&cron_job(json!({ "http": { "path": "/cron" } })));
        let want = BTreeMap::from([
            (
                "app.kubernetes.io/managed-by".to_string(),
                "clouddeck".to_string(),
            ),
            ("clouddeck.io/project".to_string(), "web".to_string()),
            ("clouddeck.io/cronjob".to_string(), "revalidate".to_string()),
        ]);
        let spec = batch.spec.clone();
        assert_eq!(batch.metadata.labels.as_ref(), Some(&want));
        assert_eq!(
            spec.job_template.metadata.unwrap().labels.as_ref(),
            Some(&want)
        );
        let template = spec.job_template.spec.unwrap().template;
        assert_eq!(template.metadata.unwrap().labels.as_ref(), Some(&want));
    }

    #[test]
    fn a_command_runs_in_the_production_image_with_the_runtime_environment() {
        let cron = cron_job(json!({ "command": ["npm", "run", "cleanup"] }));
        let c = the_container(&render(&cron));
        assert_eq!(
            c.image.as_deref(),
            Some("registry.example/acme/web@sha256:abc")
        );
        assert_eq!(c.command.unwrap(), ["npm", "run", "cleanup"]);
        assert!(c.args.is_none());
        let env: Vec<(String, Option<String>)> = c
            .env
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.value))
            .collect();
        assert_eq!(
            env,
            [
                ("PORT".to_string(), Some("8080".to_string())),
                ("MODE".to_string(), Some("prod".to_string()))
            ]
        );
        assert_eq!(
            c.env_from.unwrap()[0].secret_ref.as_ref().unwrap().name,
            "web-env"
        );
        assert!(c.resources.unwrap().limits.unwrap().contains_key("memory"));

        // A git Deployment whose image is not known yet: nothing to run.
        let unbuilt = Production {
            image: None,
            ..production()
        };
        assert!(batch_cron_job(&cron, &project(), &unbuilt, "curl", &owner()).is_none());
        // An HTTP call needs no image of the application.
        let http = cron_job(json!({ "http": { "path": "/cron" } }));
        assert!(batch_cron_job(&http, &project(), &unbuilt, "curl", &owner()).is_some());
    }

    #[test]
    fn long_names_fit_the_batch_cron_job_limit() {
        let name = format!("{}-nightly-cleanup", "storefront".repeat(5));
        let bounded = batch_name(&name);
        assert!(bounded.len() <= MAX_BATCH_NAME, "{bounded}");
        assert_eq!(batch_name("revalidate"), "revalidate");
        assert_eq!(labels("web", &name)[CRONJOB_LABEL], bounded);
    }

    #[test]
    fn a_failure_is_published_twice_with_ids_of_the_job() {
        let cron = cron_job(json!({ "http": { "path": "/cron" } }));
        let failure = JobFailure {
            job: "revalidate-29000000".into(),
            uid: "job-uid-1".into(),
            at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::from_second(10).unwrap(),
            ),
            reason: "BackoffLimitExceeded".into(),
            message: "Job has reached the specified backoff limit".into(),
        };
        let events = failure_events(&cron, Some(&project()), &failure);
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(types, ["cronjob.failed", "alert.cronjob_failed"]);
        assert_eq!(events[0].id, "job-uid-1/cronjob.failed");
        assert_eq!(events[1].id, "job-uid-1/alert.cronjob_failed");
        let body = crate::delivery::payload::standard_webhooks(&events[0]);
        assert_eq!(
            body["data"],
            json!({
                "namespace": "team", "project": "web", "cronJob": "revalidate",
                "job": "revalidate-29000000", "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit"
            })
        );
        assert_eq!(events[0].project.as_ref().unwrap().labels["tier"], "gold");
    }
}
