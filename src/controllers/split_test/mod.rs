//! The SplitTest controller. The split itself goes into the production route with
//! everything else the route carries: the Project controller renders it (see
//! [`crate::routing::split::decide`]). This controller reports what became of each
//! SplitTest — Scheduled, Running with the weights in effect, Stopped, or why production is
//! not split — raises Events, publishes `splittest.updated` when its phase changes, and
//! looks again when its start or stop time comes.

pub mod reconcile;
pub mod status;

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use gateway_api::apis::standard::httproutes::HttpRoute;
use kube::ResourceExt;
use kube::api::PartialObjectMeta;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;

use super::{ControllerRun, KindController};
use crate::api::deployment::Deployment;
use crate::api::edge_handler::EdgeHandler;
use crate::api::project::Project;
use crate::api::split_test::SplitTest;
use crate::controllers::matching_in;
use crate::labels::{MANAGED, PROJECT_LABEL};

pub const NAME: &str = "splittest";

pub const CONTROLLER: KindController = KindController { name: NAME, run };

/// What a SplitTest reconcile reads, all from caches.
pub struct SplitContext {
    pub ctx: Arc<super::Context>,
    pub tests: Store<DeserializeGuard<SplitTest>>,
    pub projects: Store<DeserializeGuard<Project>>,
    pub deployments: Store<DeserializeGuard<Deployment>>,
    pub edge_handlers: Store<DeserializeGuard<EdgeHandler>>,
    pub routes: Store<PartialObjectMeta<HttpRoute>>,
}

fn run(run: ControllerRun) -> BoxFuture<'static, ()> {
    async move {
        let _client = run.ctx.client.clone();
        let controller = run.shared_controller::<SplitTest>();
        let tests = controller.store();
        let (projects, project_events) = run.cache_all::<Project>();
        let (deployments, deployment_events) = run.cache_all::<Deployment>();
        let (edge_handlers, edge_events) = run.cache_all::<EdgeHandler>();
        let (routes, route_events) =
            run.cached_children::<HttpRoute>(watcher::Config::default().labels(MANAGED));
        // Everything a test's outcome depends on belongs to its Project: each change
        // reaches the Project's tests.
        let of_project = |store: Store<DeserializeGuard<SplitTest>>| {
            move |namespace: Option<String>, project: Option<String>| {
                matching_in(&store, namespace, |t: &SplitTest| {
                    Some(&t.spec.project_ref.name) == project.as_ref()
                })
            }
        };
        let (by_project, by_deployment, by_edge, by_route, by_sibling) = (
            of_project(tests.clone()),
            of_project(tests.clone()),
            of_project(tests.clone()),
            of_project(tests.clone()),
            of_project(tests.clone()),
        );
        let controller = controller
            .watches_stream(project_events, move |p: DeserializeGuard<Project>| {
                by_project(p.namespace(), Some(p.name_any()))
            })
            .watches_stream(deployment_events, move |d: DeserializeGuard<Deployment>| {
                let project = d.0.as_ref().ok().map(|d| d.spec.project_ref.name.clone());
                by_deployment(d.namespace(), project)
            })
            .watches_stream(edge_events, move |h: DeserializeGuard<EdgeHandler>| {
                let project = h.0.as_ref().ok().map(|h| h.spec.project_ref.name.clone());
                by_edge(h.namespace(), project)
            })
            .watches_stream(route_events, move |r: PartialObjectMeta<HttpRoute>| {
                by_route(r.namespace(), r.labels().get(PROJECT_LABEL).cloned())
            })
            // Which of a Project's tests runs depends on the others.
            .watches_stream(run.cache_all::<SplitTest>().1, move |t| {
                let project = t.0.as_ref().ok().map(|t| t.spec.project_ref.name.clone());
                by_sibling(t.namespace(), project)
            });
        let ctx = Arc::new(SplitContext {
            ctx: run.ctx.clone(),
            tests,
            projects,
            deployments,
            edge_handlers,
            routes,
        });
        run.run(controller, ctx).await;
    }
    .boxed()
}
