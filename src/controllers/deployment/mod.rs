//! The Deployment controller: builds a git revision (or takes an image), rolls it out as
//! an apps/v1 Deployment and Service, routes its preview hostname, and reports the phase.
//!
//! Children (all owned by the CloudDeck Deployment, so garbage collection removes them):
//! the build Job `<name>-build`, the apps/v1 Deployment and Service `<name>`, the HTTPRoute
//! `<name>`. The CloudDeck Deployment itself gets a non-controller owner reference to its
//! Project, so deleting a Project deletes its Deployments and everything under them.

pub mod reconcile;
pub mod render;
pub mod status;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::BoxFuture;
use gateway_api::apis::standard::httproutes::HttpRoute;
use k8s_openapi::api::apps::v1::Deployment as Workload;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Service;
use kube::api::PartialObjectMeta;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};

use super::applied::Applied;
use super::error::Result;
use super::{Context, ControllerRun, KindController};
use crate::api::deployment::Deployment;
use crate::api::edge_handler::EdgeHandler;
use crate::api::project::Project;
use crate::controllers::{cached, of_project, same_project};
use crate::labels::MANAGED;

/// Controller name: metric label, log field, Event reporter suffix.
pub const NAME: &str = "deployment";

pub const CONTROLLER: KindController = KindController { name: NAME, run };

/// What a Deployment reconcile reads besides the shared [`Context`]: the metadata of the
/// children it applies, and what it last applied to them, so that a reconcile that would
/// change nothing sends nothing.
pub struct DeploymentContext {
    pub ctx: Arc<Context>,
    /// Without their pod templates.
    pub workloads: Store<Workload>,
    pub services: Store<PartialObjectMeta<Service>>,
    pub routes: Store<PartialObjectMeta<HttpRoute>>,
    pub applied: Applied,
    pub projects: Store<DeserializeGuard<Project>>,
    pub edge_handlers: Store<DeserializeGuard<EdgeHandler>>,
    /// The hostname key each Project (by uid) was last found to hold, and the hostname its
    /// status recorded then. While that hostname is unchanged, so is its claim: the Project
    /// controller writes the Project's status whenever its key changes or is lost (other
    /// status changes, a promotion, leave the claim alone and cost no read).
    keys: Mutex<HashMap<String, (String, String)>>,
}

impl DeploymentContext {
    /// The Project `name` in `namespace`: from the cache, or (not cached yet, or not
    /// readable by this release) from the API.
    /// The cached Project `name`, if the cache has it.
    fn cached_project(&self, namespace: &str, name: &str) -> Option<Project> {
        let cached = self.projects.get(&ObjectRef::new(name).within(namespace))?;
        cached.0.as_ref().ok().cloned()
    }

    /// The Project `name`, read from the API (the cache did not have it).
    async fn read_project(&self, namespace: &str, name: &str) -> Result<Option<Project>> {
        let projects = Api::<Project>::namespaced(self.ctx.client.clone(), namespace);
        Ok(projects.get_opt(name).await?)
    }

    /// The cached workload `rendered` names (without its pod template).
    fn workload(&self, rendered: &Workload) -> Option<Workload> {
        let name = rendered.metadata.name.as_deref()?;
        let namespace = rendered.metadata.namespace.as_deref()?;
        let cached = self
            .workloads
            .get(&ObjectRef::new(name).within(namespace))?;
        Some((*cached).clone())
    }

    /// The key `project` was found to hold under the hostname its status records, if it was.
    fn known_key(&self, project: &Project) -> Option<String> {
        let uid = project.metadata.uid.as_deref()?;
        let hostname = project.status.as_ref()?.hostname.as_deref()?;
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let (at, key) = keys.get(uid)?;
        (at == hostname).then(|| key.clone())
    }

    fn remember_key(&self, project: &Project, key: &str) {
        let (Some(uid), Some(hostname)) = (
            project.metadata.uid.clone(),
            project.status.as_ref().and_then(|s| s.hostname.clone()),
        ) else {
            return;
        };
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        // One entry per Project; those of deleted Projects go when there are many more
        // entries than cached Projects.
        if keys.len() > 2 * self.projects.state().len() + 64 {
            let live: std::collections::HashSet<String> = self
                .projects
                .state()
                .iter()
                .filter_map(|p| p.meta().uid.clone())
                .collect();
            keys.retain(|uid, _| live.contains(uid));
        }
        keys.insert(uid, (hostname, key.to_owned()));
    }

    /// Drops the record of children that are gone (see [`Applied::prune`]).
    fn prune_applied(&self) {
        self.applied.prune(|kind, namespace, name| match kind {
            "Deployment" => cached(&self.workloads, namespace, name),
            "Service" => cached(&self.services, namespace, name),
            "HTTPRoute" => cached(&self.routes, namespace, name),
            _ => false,
        });
    }
}

fn run(run: ControllerRun) -> BoxFuture<'static, ()> {
    async move {
        // For the caches: lists and watches are not paced (see `Context::watch_client`).
        let client = run.ctx.watch_client.clone();
        // The guard keeps one malformed object from stopping the controller.
        let controller = run.shared_controller::<Deployment>();
        let store = controller.store();
        let managed = || watcher::Config::default().labels(MANAGED);
        // Whole workloads, for their rollout status (kept from the watch instead of read
        // back from an apply), without their pod template (the bulk of them).
        let (workloads, workload_events) = run.cache(
            Api::<Workload>::all(client.clone()),
            managed(),
            |workload: &mut Workload| {
                if let Some(spec) = workload.spec.as_mut() {
                    spec.template = Default::default();
                }
            },
        );
        let (services, service_events) = run.cached_children::<Service>(managed());
        let (routes, route_events) = run.cached_children::<HttpRoute>(managed());
        // Read by every reconcile (its Project), so cached rather than asked for.
        let (projects, project_events) = run.cache_all::<Project>();
        let (edge_handlers, edge_events) = run.cache_all::<EdgeHandler>();
        let by_edge_handler = store.clone();
        let controller = controller
            // A Project's EdgeHandlers go into each of its preview routes.
            .watches_stream(edge_events, same_project(by_edge_handler))
            .owns_stream(run.children::<Job>(managed()))
            .owns_stream(workload_events.touched_objects())
            .owns_stream(service_events)
            .owns_stream(route_events)
            // A Project change (created, fixed, new runtime settings) reaches its Deployments.
            .watches_stream(project_events, of_project(store));
        let ctx = Arc::new(DeploymentContext {
            ctx: run.ctx.clone(),
            workloads,
            services,
            routes,
            applied: Applied::default(),
            projects,
            edge_handlers,
            keys: Mutex::default(),
        });
        run.run(controller, ctx).await;
    }
    .boxed()
}
