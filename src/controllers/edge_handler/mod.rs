//! The EdgeHandler controller. The rules themselves go into the routes with everything
//! else a route carries: the Project, Deployment and Domain controllers render each route
//! with its Project's [`EdgePlan`] (see [`plan_of`]), and re-render it when an EdgeHandler
//! changes. This controller reports what became of each EdgeHandler: `Stalled` naming the
//! rule and field when it is refused, `Reconciling` until every route of the Project
//! carries the current rules, then `Ready` with the rules and routes in effect. It also
//! lets the namespace's routes reach the deny responder (a ReferenceGrant in the
//! responder's namespace).

pub mod reconcile;
pub mod status;

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use gateway_api::apis::standard::httproutes::HttpRoute;
use gateway_api::apis::standard::referencegrants::ReferenceGrant;
use kube::api::PartialObjectMeta;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};

use super::applied::Applied;
use super::{ControllerRun, KindController, matching_in, of_project};
use crate::api::edge_handler::EdgeHandler;
use crate::api::project::Project;
use crate::config::RoutingConfig;
use crate::labels::{MANAGED, PROJECT_LABEL};
use crate::routing::edge::EdgePlan;

pub const NAME: &str = "edgehandler";

pub const CONTROLLER: KindController = KindController { name: NAME, run };

/// The merged rules of the EdgeHandlers of Project `project` in `namespace`, from a cache
/// of EdgeHandlers. Every controller that renders a route of the Project calls this, so
/// all of them render the same rules.
pub fn plan_of(
    handlers: &Store<DeserializeGuard<EdgeHandler>>,
    namespace: &str,
    project: &str,
    routing: &RoutingConfig,
) -> EdgePlan {
    let state = handlers.state();
    let mine: Vec<&EdgeHandler> = state
        .iter()
        .filter_map(|guard| guard.0.as_ref().ok())
        .filter(|h| {
            h.namespace().as_deref() == Some(namespace) && h.spec.project_ref.name == project
        })
        .collect();
    EdgePlan::new(&mine, routing.deny_responder.as_ref())
}

/// What an EdgeHandler reconcile reads besides the shared context: every EdgeHandler (the
/// plan merges a Project's), the Projects, and the metadata of CloudDeck's routes.
pub struct EdgeContext {
    pub ctx: Arc<super::Context>,
    pub handlers: Store<DeserializeGuard<EdgeHandler>>,
    pub projects: Store<DeserializeGuard<Project>>,
    pub routes: Store<PartialObjectMeta<HttpRoute>>,
    /// The grants this controller made (in the deny responder's namespace).
    pub grants: Store<ReferenceGrant>,
    pub applied: Applied,
}

/// Label of a deny grant: the namespace whose routes it lets reach the responder.
pub const FROM_NAMESPACE_LABEL: &str = "clouddeck.io/from-namespace";

fn run(run: ControllerRun) -> BoxFuture<'static, ()> {
    async move {
        // For the caches: lists and watches are not paced (see `Context::watch_client`).
        let client = run.ctx.watch_client.clone();
        // The guard keeps one malformed object from stopping the controller.
        let controller = run.shared_controller::<EdgeHandler>();
        let handlers = controller.store();
        let by_route = handlers.clone();
        let by_project = handlers.clone();
        let by_sibling = handlers.clone();
        let (routes, route_events) =
            run.cached_children::<HttpRoute>(watcher::Config::default().labels(MANAGED));
        let (projects, project_events) = run.cache_all::<Project>();
        // The grants live in the deny responder's namespace. Without a responder no grant
        // is made and none is watched (the operator may not even read that namespace).
        let (grants, grant_events) = match &run.ctx.config.routing.deny_responder {
            Some(responder) => {
                let (store, events) = run.cache(
                    Api::<ReferenceGrant>::namespaced(client.clone(), &responder.namespace),
                    watcher::Config::default().labels(MANAGED),
                    |_| {},
                );
                (store, events.touched_objects().boxed())
            }
            None => (reflector::store().0, futures::stream::pending().boxed()),
        };
        let by_grant = handlers.clone();
        let controller = controller
            // A grant deleted or edited by hand is put back at once.
            .watches_stream(grant_events, move |grant: ReferenceGrant| {
                let from = grant.labels().get(FROM_NAMESPACE_LABEL).cloned();
                matching_in(&by_grant, from, |h: &EdgeHandler| {
                    h.spec.rules.iter().any(|r| r.deny.is_some())
                })
            })
            // A route re-rendered (or made, or deleted) changes which routes carry the rules.
            .watches_stream(route_events, move |route: PartialObjectMeta<HttpRoute>| {
                let project = route.labels().get(PROJECT_LABEL).cloned();
                matching_in(&by_route, route.namespace(), |h: &EdgeHandler| {
                    Some(&h.spec.project_ref.name) == project.as_ref()
                })
            })
            // The Project appearing or going decides whether there is anything to apply to.
            .watches_stream(project_events, of_project(by_project))
            // Another handler of the Project changes the merged plan (its order, its limits).
            .watches_stream(run.cache_all::<EdgeHandler>().1, move |changed| {
                let Ok(changed) = &changed.0 else {
                    return Vec::new();
                };
                let project = changed.spec.project_ref.name.clone();
                let name = changed.name_any();
                matching_in(&by_sibling, changed.namespace(), |h: &EdgeHandler| {
                    h.spec.project_ref.name == project && h.name_any() != name
                })
            });
        let ctx = Arc::new(EdgeContext {
            ctx: run.ctx.clone(),
            handlers,
            projects,
            routes,
            grants,
            applied: Applied::default(),
        });
        run.run(controller, ctx).await;
    }
    .boxed()
}
