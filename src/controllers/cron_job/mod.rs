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

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::batch::v1::{CronJob as BatchCronJob, Job};
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};

use super::applied::Applied;
use super::deployment::render::running_image;
use super::error::ReconcileError;
use super::{Context, ControllerRun, KindController, cached_or_read, of_project};
use crate::api::cron_job::CronJob;
use crate::api::deployment::Deployment;
use crate::api::project::Project;
use crate::labels::MANAGED;

pub const NAME: &str = "cronjob";

pub const CONTROLLER: KindController = KindController { name: NAME, run };

fn run(run: ControllerRun) -> BoxFuture<'static, ()> {
    async move {
        // For the caches: lists and watches are not paced (see `Context::watch_client`).
        let client = run.ctx.watch_client.clone();
        // The guard keeps one malformed object from stopping the controller.
        let controller = run.controller(
            Api::<DeserializeGuard<CronJob>>::all(client.clone()),
            watcher::Config::default(),
        );
        let by_project = controller.store();
        let by_job = controller.store();
        let by_pod = controller.store();
        // Cached, so that a look that finds nothing changed asks the API nothing: the
        // batch CronJobs and their runs (both only CloudDeck's), the Projects and the
        // Deployments (for the image a run runs; the cache every controller shares).
        let (batches, batch_events) = run.cache(
            Api::<BatchCronJob>::all(client.clone()),
            watcher::Config::default().labels(MANAGED),
            |_| {},
        );
        let (jobs, job_events) = run.cache(
            Api::<Job>::all(client.clone()),
            watcher::Config::default().labels(&format!("{MANAGED},{}", render::CRONJOB_LABEL)),
            |_| {},
        );
        // The runs' pods, for a container that cannot start (a wrong image, a missing
        // Secret): reported at once, not when the run's deadline fails it. Of each pod only
        // its labels and container states are kept.
        let (pods, pod_events) = run.cache(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default().labels(&format!("{MANAGED},{}", render::CRONJOB_LABEL)),
            keep_only_container_states,
        );
        let (projects, project_events) = run.cache_all::<Project>();
        let (deployments, deployment_events) = run.cache_all::<Deployment>();
        let controller = controller
            .owns_stream(batch_events.touched_objects())
            // A run that starts, succeeds or fails; only the runs of CloudDeck CronJobs.
            .watches_stream(job_events.touched_objects(), move |job: Job| {
                cron_job_of(&by_job, &job)
            })
            .watches_stream(pod_events.touched_objects(), move |pod: Pod| {
                cron_job_of(&by_pod, &pod)
            })
            // A promotion (the Project's production changes) moves the runs to it.
            .watches_stream(project_events, of_project(by_project))
            // Only the cache is wanted (a production Deployment's image does not change):
            // polled here, it wakes nobody.
            .watches_stream(deployment_events, |_: DeserializeGuard<Deployment>| None);
        let ctx = Arc::new(CronJobContext {
            ctx: run.ctx.clone(),
            batches,
            jobs,
            pods,
            projects,
            deployments,
            applied: Applied::default(),
            reported_blocked: Mutex::default(),
        });
        run.run(controller, ctx).await;
    }
    .boxed()
}

/// What a CronJob reconcile reads besides the shared [`Context`]: caches of everything it
/// looks at, and what it last applied to each batch CronJob.
pub struct CronJobContext {
    pub ctx: Arc<Context>,
    pub batches: Store<BatchCronJob>,
    pub jobs: Store<Job>,
    pub pods: Store<Pod>,
    pub projects: Store<DeserializeGuard<Project>>,
    pub deployments: Store<DeserializeGuard<Deployment>>,
    pub applied: Applied,
    /// The uids of runs reported blocked (one Warning Event each), among the cached runs.
    pub reported_blocked: Mutex<HashSet<String>>,
}

impl CronJobContext {
    /// The Project `name` of `namespace`: cached, or from the API (not cached yet).
    pub async fn project(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Project>, ReconcileError> {
        Ok(cached_or_read(&self.projects, &self.ctx.client, namespace, name).await?)
    }

    /// The image Deployment `name` of `namespace` runs (`None` if there is no such
    /// Deployment): cached, or from the API.
    pub async fn image_of(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Option<String>>, ReconcileError> {
        let deployment =
            cached_or_read(&self.deployments, &self.ctx.client, namespace, name).await?;
        Ok(deployment.map(|d| running_image(&d)))
    }

    /// The cached batch CronJob `name` of `namespace`.
    pub fn batch(&self, namespace: &str, name: &str) -> Option<BatchCronJob> {
        self.batches
            .get(&ObjectRef::new(name).within(namespace))
            .map(|batch| (*batch).clone())
    }

    /// The cached runs of the batch CronJob `batch_name` in `namespace`.
    pub fn runs(&self, namespace: &str, batch_name: &str) -> Vec<Job> {
        runs_of(&self.jobs, namespace, batch_name)
    }

    /// The cached pods of the runs of the batch CronJob `batch_name` in `namespace`.
    pub fn run_pods(&self, namespace: &str, batch_name: &str) -> Vec<Pod> {
        runs_of(&self.pods, namespace, batch_name)
    }

    /// Whether the blocked run `uid` is reported now for the first time; forgets the runs
    /// that are no longer cached.
    pub fn first_report_of_blocked(&self, uid: &str) -> bool {
        let mut reported = self
            .reported_blocked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let cached: HashSet<String> = self.jobs.state().iter().filter_map(|j| j.uid()).collect();
        reported.retain(|uid| cached.contains(uid));
        reported.insert(uid.to_owned())
    }
}

/// The cached objects of `namespace` labelled as the batch CronJob `batch_name`'s.
fn runs_of<K>(store: &Store<K>, namespace: &str, batch_name: &str) -> Vec<K>
where
    K: kube::Resource<DynamicType = ()> + Clone,
{
    store
        .state()
        .iter()
        .filter(|object| object.namespace().as_deref() == Some(namespace))
        .filter(|object| {
            object
                .labels()
                .get(render::CRONJOB_LABEL)
                .map(String::as_str)
                == Some(batch_name)
        })
        .map(|object| (**object).clone())
        .collect()
}

/// The cached copy of a run's pod: its labels and its containers' states.
fn keep_only_container_states(pod: &mut Pod) {
    pod.spec = None;
    pod.metadata.annotations = None;
    let container_statuses = pod.status.take().and_then(|s| s.container_statuses);
    pod.status = Some(PodStatus {
        container_statuses,
        ..PodStatus::default()
    });
}

/// The CronJob a run (or its pod) belongs to, by its `clouddeck.io/cronjob` label (the
/// batch name).
fn cron_job_of(
    store: &Store<DeserializeGuard<CronJob>>,
    run: &impl ResourceExt,
) -> Option<ObjectRef<DeserializeGuard<CronJob>>> {
    let label = run.labels().get(render::CRONJOB_LABEL)?;
    let namespace = run.namespace();
    store
        .state()
        .into_iter()
        .find(|c| c.namespace() == namespace && render::batch_name(&c.name_any()) == *label)
        .map(|c| ObjectRef::from_obj(&*c))
}
