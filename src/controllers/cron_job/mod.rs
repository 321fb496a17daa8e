//! The CronJob controller: compiles a CloudDeck CronJob into a batch/v1 CronJob that calls
//! (or runs the image of) the Project's production Deployment, moves it along with each
//! promotion, and reports its runs: the last schedule and success, and every failed run
//! as a Warning Event and `cronjob.failed` / `alert.cronjob_failed` webhook events.
//!
//! Children: the batch CronJob (named after the CronJob, at most 52 characters), owned by
//! the CloudDeck CronJob; its Jobs and pods carry the label `clouddeck.io/cronjob`.

pub mod reconcile;
pub mod render;
pub mod status;

use std::sync::{Arc, LazyLock};

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::batch::v1::{CronJob as BatchCronJob, Job};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tracing::warn;

use super::deployment::{Error, Failures, MANAGED, backoff};
use super::{Context, ControllerRun, KindController};
use crate::api::cron_job::CronJob;
use crate::api::project::Project;

pub const NAME: &str = "cronjob";

pub const CONTROLLER: KindController = KindController { name: NAME, run };

static CRON_JOB_FAILURES: Failures = LazyLock::new(Default::default);

fn run(run: ControllerRun) -> BoxFuture<'static, ()> {
    async move {
        let client = run.ctx.client.clone();
        // The guard keeps one malformed object from stopping the controller.
        let controller = run.controller(
            Api::<DeserializeGuard<CronJob>>::all(client.clone()),
            watcher::Config::default(),
        );
        let by_project = controller.store();
        let by_job = controller.store();
        let controller = controller
            .owns_stream(run.children::<BatchCronJob>(watcher::Config::default().labels(MANAGED)))
            // A run that starts, succeeds or fails; only the runs of CloudDeck CronJobs.
            .watches_stream(
                run.related::<Job>(
                    watcher::Config::default()
                        .labels(&format!("{MANAGED},{}", render::CRONJOB_LABEL)),
                ),
                move |job| cron_job_of(&by_job, &job),
            )
            // A promotion (the Project's production changes) moves the runs to it.
            .watches_stream(
                run.related::<DeserializeGuard<Project>>(watcher::Config::default()),
                move |project| cron_jobs_of(&by_project, &project),
            );
        run.drive(controller.run(
            run.tracked(reconcile::reconcile),
            error_policy,
            run.ctx.clone(),
        ))
        .await;
    }
    .boxed()
}

/// The CronJob a run belongs to, by its `clouddeck.io/cronjob` label (the batch name).
fn cron_job_of(
    store: &Store<DeserializeGuard<CronJob>>,
    job: &Job,
) -> Option<ObjectRef<DeserializeGuard<CronJob>>> {
    let label = job.labels().get(render::CRONJOB_LABEL)?;
    let namespace = job.namespace();
    store
        .state()
        .into_iter()
        .find(|c| c.namespace() == namespace && render::batch_name(&c.name_any()) == *label)
        .map(|c| ObjectRef::from_obj(&*c))
}

/// The CronJobs of the Project's namespace that reference it.
fn cron_jobs_of(
    store: &Store<DeserializeGuard<CronJob>>,
    project: &DeserializeGuard<Project>,
) -> Vec<ObjectRef<DeserializeGuard<CronJob>>> {
    let namespace = project.namespace();
    let name = project.name_any();
    store
        .state()
        .into_iter()
        .filter(|guard| {
            guard
                .0
                .as_ref()
                .is_ok_and(|c| c.namespace() == namespace && c.spec.project_ref.name == name)
        })
        .map(|guard| ObjectRef::from_obj(&*guard))
        .collect()
}

fn error_policy(obj: Arc<DeserializeGuard<CronJob>>, error: &Error, _ctx: Arc<Context>) -> Action {
    if error.awaits_change() {
        return Action::await_change();
    }
    if let Some(after) = error.retry_after() {
        return Action::requeue(after);
    }
    let key = format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any());
    let delay = backoff(&CRON_JOB_FAILURES, &key);
    warn!(cronjob = %key, reason = error.reason(), error = %error, ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}
