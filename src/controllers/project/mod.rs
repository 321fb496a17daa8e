//! The Project controller: points the production HTTPRoute at the Deployment production
//! serves (the newest Ready production Deployment, or `spec.rollbackTo`), keeps a branch
//! alias HTTPRoute per branch, supersedes older builds of a branch, prunes production
//! Deployments beyond `spec.retain`, and reports all of it in the Project's status.

pub mod reconcile;
pub mod render;
pub mod status;

use std::sync::{Arc, LazyLock};

use futures::FutureExt;
use futures::future::BoxFuture;
use gateway_api::apis::standard::httproutes::HttpRoute;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tracing::warn;

use super::deployment::{Error, Failures, MANAGED, backoff};
use super::{Context, ControllerRun, KindController};
use crate::api::deployment::Deployment;
use crate::api::project::Project;
use crate::hostnames::{self, Authority, HostnameClaim};

pub const NAME: &str = "project";

pub const CONTROLLER: KindController = KindController { name: NAME, run };

static PROJECT_FAILURES: Failures = LazyLock::new(Default::default);

fn run(run: ControllerRun) -> BoxFuture<'static, ()> {
    async move {
        let client = run.ctx.client.clone();
        // The guards keep one malformed object from stopping the controller.
        let controller = run.controller(
            Api::<DeserializeGuard<Project>>::all(client.clone()),
            watcher::Config::default(),
        );
        let projects = controller.store();
        let namesakes = projects.clone();
        let waiting = projects.clone();
        let base = run.ctx.config.routing.base_domain.clone();
        let controller = controller
            // A claim taken, released or expired changes which key a Project can hold.
            .watches_stream(
                run.related::<DeserializeGuard<HostnameClaim>>(watcher::Config::default()),
                move |guard| match &guard.0 {
                    Ok(claim) => waiting_for(&waiting.state(), claim, &base),
                    // Reported by the claim controller; nobody can be waiting for it.
                    Err(_) => Vec::new(),
                },
            )
            // A Project coming or going changes who holds its name's hostname.
            .watches_stream(
                run.related::<DeserializeGuard<Project>>(watcher::Config::default()),
                move |changed| namesakes_of(&namesakes.state(), &changed),
            )
            .owns_stream(run.children::<HttpRoute>(watcher::Config::default().labels(MANAGED)))
            // Every change of a Deployment may change what its Project serves.
            .watches_stream(
                run.related::<DeserializeGuard<Deployment>>(watcher::Config::default()),
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
            );
        run.drive(controller.run(
            run.tracked(reconcile::reconcile),
            error_policy,
            Arc::new(ProjectContext {
                ctx: run.ctx.clone(),
                projects,
            }),
        ))
        .await;
    }
    .boxed()
}

/// What a Project reconcile gets: the operator's [`Context`] and every Project in the
/// cluster (who holds a name's hostname).
pub struct ProjectContext {
    pub ctx: Arc<Context>,
    pub projects: Store<DeserializeGuard<Project>>,
}

/// The Projects that may want the key of `claim`: those named like it, in any namespace.
fn waiting_for(
    all: &[Arc<DeserializeGuard<Project>>],
    claim: &HostnameClaim,
    base: &str,
) -> Vec<ObjectRef<DeserializeGuard<Project>>> {
    let Authority::Key(key) = hostnames::authority(&claim.spec.hostname, base) else {
        return Vec::new();
    };
    all.iter()
        .filter(|p| {
            p.name_any() == key
                || (p.namespace().as_deref() == Some(claim.spec.namespace.as_str())
                    && p.name_any() == claim.spec.holder.name)
        })
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

/// The Projects of the same name as `changed` in other namespaces.
fn namesakes_of(
    all: &[Arc<DeserializeGuard<Project>>],
    changed: &DeserializeGuard<Project>,
) -> Vec<ObjectRef<DeserializeGuard<Project>>> {
    let name = changed.name_any();
    let namespace = changed.namespace();
    all.iter()
        .filter(|p| p.name_any() == name && p.namespace() != namespace)
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

fn error_policy(
    obj: Arc<DeserializeGuard<Project>>,
    error: &Error,
    _ctx: Arc<ProjectContext>,
) -> Action {
    if error.awaits_change() {
        return Action::await_change();
    }
    if let Some(after) = error.retry_after() {
        return Action::requeue(after);
    }
    let key = format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any());
    let delay = backoff(&PROJECT_FAILURES, &key);
    warn!(project = %key, reason = error.reason(), error = %error, ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}
