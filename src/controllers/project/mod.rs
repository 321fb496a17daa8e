//! The Project controller: points the production HTTPRoute at the Deployment production
//! serves (the newest Ready production Deployment, or `spec.rollbackTo`), keeps a branch
//! alias HTTPRoute per branch, supersedes older builds of a branch, prunes production
//! Deployments beyond `spec.retain`, and reports all of it in the Project's status.

pub mod reconcile;
pub mod render;
pub mod status;

use std::sync::{Arc, LazyLock};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use gateway_api::apis::standard::httproutes::HttpRoute;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, ResourceExt};
use tracing::warn;

use super::deployment::{Error, Failures, MANAGED, backoff};
use super::{Context, ControllerRun, KindController};
use crate::api::deployment::Deployment;
use crate::api::project::Project;

pub const NAME: &str = "project";

pub const CONTROLLER: KindController = KindController { name: NAME, run };

static PROJECT_FAILURES: Failures = LazyLock::new(Default::default);

fn run(run: ControllerRun) -> BoxFuture<'static, ()> {
    async move {
        let client = run.ctx.client.clone();
        // The guards keep one malformed object from stopping the controller.
        let controller = Controller::new(
            Api::<DeserializeGuard<Project>>::all(client.clone()),
            watcher::Config::default(),
        );
        run.report_cache_sync(controller.store());
        controller
            .owns(
                Api::<HttpRoute>::all(client.clone()),
                watcher::Config::default().labels(MANAGED),
            )
            // Every change of a Deployment may change what its Project serves.
            .watches(
                Api::<DeserializeGuard<Deployment>>::all(client),
                watcher::Config::default(),
                |guard| {
                    let deployment = guard.0.as_ref().ok()?;
                    let namespace = deployment.namespace()?;
                    Some(
                        ObjectRef::<DeserializeGuard<Project>>::new(
                            &deployment.spec.project_ref.name,
                        )
                        .within(&namespace),
                    )
                },
            )
            .graceful_shutdown_on(run.stopped())
            .run(reconcile::reconcile, error_policy, run.ctx.clone())
            .for_each(|_| async {})
            .await;
    }
    .boxed()
}

fn error_policy(obj: Arc<DeserializeGuard<Project>>, error: &Error, _ctx: Arc<Context>) -> Action {
    if error.awaits_change() {
        return Action::await_change();
    }
    let key = format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any());
    let delay = backoff(&PROJECT_FAILURES, &key);
    warn!(project = %key, reason = error.reason(), error = %error, ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}
