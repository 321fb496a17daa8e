//! One reconcile of a CronJob: validate → read its Project and what production serves →
//! render (pure, in `render`) and apply the batch CronJob → read its runs → publish new
//! failures → status and Events.

use k8s_openapi::api::batch::v1::{CronJob as BatchCronJob, Job};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::PatchParams;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use tracing::{info, warn};

use super::CronJobContext;
use super::render::{self, Production};
use super::status::{self, JobFailure, State};
use crate::api::cron_job::{CronJob, CronJobStatus};
use crate::api::project::Project;
use crate::api::validation;
use crate::controllers::driver::reconciler;
use crate::controllers::error::{ReconcileError, Result};
use crate::controllers::events::publish;
use crate::controllers::{FIELD_MANAGER, applied, delete_if_present, stall_invalid, write_status};

reconciler!(CronJobContext, CronJob, reconcile_cron_job);

async fn reconcile_cron_job(cron_job: &CronJob, cron_ctx: &CronJobContext) -> Result<Action> {
    let ctx = &cron_ctx.ctx;
    let namespace = cron_job.namespace().unwrap_or_default();
    let spec = &cron_job.spec;
    let previous = cron_job.status.clone().unwrap_or_default();

    // Validate what the apiserver cannot.
    if let Err(invalid) = validation::cron_job(spec) {
        return Err(stall_invalid(ctx, cron_job, invalid).await);
    }
    let (project, production) = production_of(cron_ctx, cron_job).await?;
    let mut next = CronJobStatus {
        conditions: previous.conditions.clone(),
        ..Default::default()
    };
    let (batch, scheduled) = apply_batch(
        cron_ctx,
        cron_job,
        (project.as_ref(), production.as_ref()),
        (&previous, &mut next),
    )
    .await?;

    // Runs: the batch CronJob's times, and every Job that failed since the last report.
    let batch_name = render::batch_name(&cron_job.name_any());
    let jobs = cron_ctx.runs(&namespace, &batch_name);
    let failures = record_runs(&mut next, &previous, batch.as_ref(), &jobs);

    // Status. Webhook events first: a crash before the status write publishes them again,
    // and the deliveries' names (from the Job's uid) make that a no-op.
    let project_name = &spec.project_ref.name;
    let state = match (&project, scheduled) {
        (None, _) => State::ProjectNotFound {
            project: project_name,
        },
        (Some(_), false) => State::AwaitingProduction {
            project: project_name,
        },
        (Some(_), true) => State::Scheduled {
            schedule: &spec.schedule,
            time_zone: spec.time_zone.as_deref().unwrap_or("UTC"),
            target: describe_target(cron_job, production.as_ref(), &namespace),
            suspended: spec.suspend,
            last_failure: status::last_run_failed(&jobs, next.last_successful_time.as_ref()),
        },
    };
    status::set_conditions(
        &mut next.conditions,
        cron_job.metadata.generation,
        Time(Timestamp::now()),
        &namespace,
        &state,
    );
    next.observed_generation = cron_job.metadata.generation;
    let publisher = ctx.publisher();
    for failure in &failures {
        for event in render::failure_events(cron_job, project.as_ref(), failure) {
            publisher
                .publish(&event)
                .await
                .map_err(ReconcileError::publish)?;
        }
    }
    write_status(ctx, cron_job, &next).await?;
    announce(cron_ctx, cron_job, (&previous, &next), &jobs, &failures).await;
    Ok(Action::requeue(ctx.config.resync_period))
}

/// From the caches: the Project, and the Deployment production serves with the image it
/// runs.
async fn production_of(
    cron_ctx: &CronJobContext,
    cron_job: &CronJob,
) -> Result<(Option<Project>, Option<Production>)> {
    let namespace = cron_job.namespace().unwrap_or_default();
    let project = cron_ctx
        .project(&namespace, &cron_job.spec.project_ref.name)
        .await?;
    let serving = project
        .as_ref()
        .and_then(|p| p.status.as_ref()?.production_deployment.clone());
    let production = match serving {
        Some(deployment) => cron_ctx
            .image_of(&namespace, &deployment)
            .await?
            .map(|image| Production { image, deployment }),
        None => None,
    };
    Ok((project, production))
}

/// Renders and applies the batch CronJob (sent only if it would change, see
/// `controllers::applied`). Without production the batch CronJob from before stays (it
/// keeps running against the last production); without the Project it goes. Returns the
/// batch CronJob as it stands and whether it runs against the current production; sets the
/// Deployment it targets in `next`.
async fn apply_batch(
    cron_ctx: &CronJobContext,
    cron_job: &CronJob,
    (project, production): (Option<&Project>, Option<&Production>),
    (previous, next): (&CronJobStatus, &mut CronJobStatus),
) -> Result<(Option<BatchCronJob>, bool)> {
    let ctx = &cron_ctx.ctx;
    let namespace = cron_job.namespace().unwrap_or_default();
    let owner = cron_job
        .controller_owner_ref(&())
        .expect("a CronJob read from the API has a name and uid");
    let desired = match (project, production) {
        (Some(project), Some(production)) => render::batch_cron_job(
            cron_job,
            project,
            production,
            &ctx.config.cron_jobs.http_call_image,
            &owner,
        ),
        _ => None,
    };
    let batch_name = render::batch_name(&cron_job.name_any());
    let batch_api = Api::<BatchCronJob>::namespaced(ctx.client.clone(), &namespace);
    let live = cron_ctx.batch(&namespace, &batch_name);
    match (&desired, project) {
        (Some(desired), _) => {
            let returned = applied::apply_over(
                &batch_api,
                live.as_ref().map(|b| &b.metadata),
                &cron_ctx.applied,
                &PatchParams::apply(FIELD_MANAGER).force(),
                desired,
            )
            .await?;
            next.deployment = production.map(|p| p.deployment.clone());
            Ok((returned.or(live), true))
        }
        (None, None) => {
            if delete_if_present(&batch_api, &batch_name).await? {
                info!(cronjob = %batch_name, "deleted the batch CronJob: the Project is gone");
            }
            Ok((None, false))
        }
        (None, Some(_)) => {
            if live.is_some() {
                next.deployment = previous.deployment.clone();
            }
            Ok((live, false))
        }
    }
}

/// Records the runs' times in `next` (from the batch CronJob, the Jobs and the previous
/// status) and returns the runs that failed since the last report.
fn record_runs(
    next: &mut CronJobStatus,
    previous: &CronJobStatus,
    batch: Option<&BatchCronJob>,
    jobs: &[Job],
) -> Vec<JobFailure> {
    let batch_status = batch.and_then(|b| b.status.clone());
    next.last_schedule_time = batch_status
        .as_ref()
        .and_then(|s| s.last_schedule_time.clone())
        .or(previous.last_schedule_time.clone());
    next.last_successful_time = latest([
        batch_status.and_then(|s| s.last_successful_time),
        status::last_success(jobs),
        previous.last_successful_time.clone(),
    ]);
    let failures = status::new_failures(jobs, previous.last_failure_time.as_ref());
    next.last_failure_time = latest([
        failures.last().map(|f| f.at.clone()),
        previous.last_failure_time.clone(),
    ]);
    failures
}

/// Events: runs that cannot start (once each), runs that failed, and a new target.
async fn announce(
    cron_ctx: &CronJobContext,
    cron_job: &CronJob,
    (previous, next): (&CronJobStatus, &CronJobStatus),
    jobs: &[Job],
    failures: &[JobFailure],
) {
    let recorder = &cron_ctx.ctx.recorder;
    let namespace = cron_job.namespace().unwrap_or_default();
    let batch_name = render::batch_name(&cron_job.name_any());
    let pods = cron_ctx.run_pods(&namespace, &batch_name);
    for blocked in status::blocked_runs(jobs, &pods) {
        if !cron_ctx.first_report_of_blocked(&blocked.uid) {
            continue;
        }
        warn!(job = %blocked.job, reason = %blocked.reason, "run cannot start");
        let note = format!(
            "run {} cannot start: {}: {}; it fails when its timeout ({}s) passes",
            blocked.job, blocked.reason, blocked.message, cron_job.spec.timeout_seconds
        );
        publish(
            recorder,
            cron_job,
            EventType::Warning,
            "RunBlocked",
            "Run",
            &note,
        )
        .await;
    }
    for failure in failures {
        warn!(job = %failure.job, reason = %failure.reason, "run failed");
        let note = format!(
            "run {} failed: {}: {}; its output: kubectl logs -n {namespace} job/{}",
            failure.job, failure.reason, failure.message, failure.job
        );
        publish(
            recorder,
            cron_job,
            EventType::Warning,
            "JobFailed",
            "Run",
            &note,
        )
        .await;
    }
    if previous.deployment != next.deployment
        && let Some(deployment) = &next.deployment
    {
        let note = format!("runs now target production Deployment {deployment}");
        publish(
            recorder,
            cron_job,
            EventType::Normal,
            "TargetChanged",
            "Schedule",
            &note,
        )
        .await;
    }
}

/// The newest of some times.
fn latest<const N: usize>(times: [Option<Time>; N]) -> Option<Time> {
    times.into_iter().flatten().max_by_key(|t| t.0)
}

/// What a run does, for the Ready message. Never a header value.
fn describe_target(cron_job: &CronJob, production: Option<&Production>, namespace: &str) -> String {
    let Some(production) = production else {
        return String::new();
    };
    match (&cron_job.spec.http, &cron_job.spec.command) {
        (Some(call), _) => format!(
            "{} {} (production Deployment {})",
            serde_json::to_value(call.method)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            render::service_url(&production.deployment, namespace, &call.path),
            production.deployment
        ),
        (None, command) => format!(
            "{} in the image of production Deployment {}",
            command.clone().unwrap_or_default().join(" "),
            production.deployment
        ),
    }
}
