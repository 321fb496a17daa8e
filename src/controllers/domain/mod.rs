//! The Domain controller: proves ownership of a hostname through a DNS TXT record, makes
//! sure no two Domains in the cluster serve one hostname, and once verified routes the
//! hostname (to the Project's production, a branch, or a redirect) and requests its
//! certificate from cert-manager, or reads the expiry of the user's own TLS Secret.
//!
//! Besides its own Domains it watches every Domain in the cluster (the claims on a
//! hostname, and redirect targets), the Certificates and HTTPRoutes it owns, and the
//! Projects' production and branch HTTPRoutes (to follow promotions and rollbacks).

pub mod certificate;
pub mod claims;
pub mod listener;
pub mod reconcile;
pub mod render;
pub mod status;

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use gateway_api::apis::standard::gateways::Gateway;
use gateway_api::apis::standard::httproutes::HttpRoute;
use gateway_api::apis::standard::listenersets::ListenerSet;
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tokio::sync::Notify;
use tracing::error;

use super::applied::Applied;
use super::{Context, ControllerRun, KindController, cached};
use crate::api::deployment::Deployment;
use crate::api::domain::Domain;
use crate::api::edge_handler::EdgeHandler;
use crate::api::split_test::SplitTest;
use crate::config::DomainConfig;
use crate::controllers::{readable_in, same_project};
use crate::dns::TxtResolver;
use crate::hostnames::HostnameClaim;
use crate::labels::MANAGED;
use crate::routing::edge::EdgePlan;
use crate::routing::split::{self, SplitPlan};

pub const CONTROLLER: KindController = KindController { name: NAME, run };

/// Metric label, log field and Event reporter of this controller.
pub const NAME: &str = "domain";

/// What a Domain reconcile gets: the operator's [`Context`] and the Domain machinery.
pub struct DomainContext {
    pub ctx: Arc<Context>,
    pub settings: DomainConfig,
    pub resolver: TxtResolver,
    /// Every Domain in the cluster: the claims on each hostname. A malformed one is an
    /// `Err` and claims nothing.
    pub domains: Store<DeserializeGuard<Domain>>,
    pub edge_handlers: Store<DeserializeGuard<EdgeHandler>>,
    pub split_tests: Store<DeserializeGuard<SplitTest>>,
    pub deployments: Store<DeserializeGuard<Deployment>>,
    /// What was last applied to each Domain's route, Certificate and ListenerSet: a look
    /// that renders them as before, and finds them as that apply left them, sends nothing.
    pub applied: Applied,
    /// The managed HTTPRoutes' metadata (the cache the Project controller shares).
    pub routes: Store<PartialObjectMeta<HttpRoute>>,
    /// The Domains' Certificates and ListenerSets, whole: their status is read from here
    /// when nothing was applied.
    pub certificates: Store<certificate::Certificate>,
    pub listener_sets: Store<ListenerSet>,
}

impl DomainContext {
    /// The split of production the Domain's route carries, decided as for the production
    /// route (see [`crate::routing::split::decide`]).
    pub fn split_of(&self, domain: &Domain, edge: &EdgePlan) -> Option<SplitPlan> {
        let namespace = domain.namespace();
        let project = &domain.spec.project_ref.name;
        let tests = readable_in(&self.split_tests, namespace.as_deref(), |t: &SplitTest| {
            &t.spec.project_ref.name == project
        });
        if tests.is_empty() {
            return None;
        }
        let deployments = readable_in(&self.deployments, namespace.as_deref(), |d: &Deployment| {
            &d.spec.project_ref.name == project
        });
        split::decide(
            &tests.iter().collect::<Vec<_>>(),
            &deployments,
            edge,
            k8s_openapi::jiff::Timestamp::now(),
        )
        .plan
    }

    /// Drops the record of children that are gone (see [`Applied::prune`]).
    pub fn prune_applied(&self) {
        self.applied.prune(|kind, namespace, name| match kind {
            "HTTPRoute" => cached(&self.routes, namespace, name),
            "Certificate" => cached(&self.certificates, namespace, name),
            "ListenerSet" => cached(&self.listener_sets, namespace, name),
            _ => false,
        });
    }
}

fn run(run: ControllerRun) -> BoxFuture<'static, ()> {
    async move {
        let settings = run.ctx.config.domains.clone();
        let resolver = match TxtResolver::new(settings.dns_server) {
            Ok(resolver) => resolver,
            Err(err) => {
                error!(error = %err, "cannot set up the DNS resolver for Domain verification");
                return;
            }
        };
        let client = run.ctx.client.clone();
        // For the caches: lists and watches are not paced (see `Context::watch_client`).
        let watches = run.ctx.watch_client.clone();
        let managed = watcher::Config::default().labels(MANAGED);

        // The guards keep one malformed Domain from stopping the controller.
        let controller = run.shared_controller::<Domain>();
        let domains = controller.store();
        let related = domains.clone();
        let followers = domains.clone();
        let claimants = domains.clone();
        let base = run.ctx.config.routing.base_domain.clone();
        let wake = Arc::new(Notify::new());
        let wake_sweep = wake.clone();
        let (edge_handlers, edge_events) = run.cache_all::<EdgeHandler>();
        let of_project = domains.clone();
        // A running SplitTest of the Project splits the routes of Domains that serve
        // production; which variants are served depends on the Deployments.
        let (split_tests, split_events) = run.cache_all::<SplitTest>();
        let (deployments, deployment_events) = run.cache_all::<Deployment>();
        let of_split = domains.clone();
        // The Domain's children: their metadata (routes) or whole (Certificates and
        // ListenerSets, for their status), so that an unchanged child costs no apply.
        let (routes, route_events) = run.cached_children::<HttpRoute>(managed.clone());
        let (certificates, certificate_events) = run.cache(
            Api::<certificate::Certificate>::all(watches.clone()),
            managed.clone(),
            |_| {},
        );
        let (listener_sets, listener_set_events) = run.cache(
            Api::<ListenerSet>::all(watches.clone()),
            managed.clone(),
            |_| {},
        );
        let controller = controller
            .watches_stream(split_events, same_project(of_split))
            // Kept current for the split; a Deployment going Ready moves the production
            // route, which the Domains serving it follow.
            .watches_stream(deployment_events, |_: DeserializeGuard<Deployment>| {
                Vec::<ObjectRef<DeserializeGuard<Domain>>>::new()
            })
            // A Project's EdgeHandlers go into the route of each Domain that serves it.
            .watches_stream(edge_events, same_project(of_project))
            .owns_stream(route_events)
            // A listener deleted or edited by hand is put back at once, not at the resync.
            .owns_stream(listener_set_events.touched_objects())
            .owns_stream(certificate_events.touched_objects())
            .watches_stream(run.cache_all::<Domain>().1, move |guard| {
                // Deleted too: a listener on the Gateway may have lost its Domain.
                wake_sweep.notify_one();
                match &guard.0 {
                    Ok(changed) => reconcile::related_domains(&related.state(), changed),
                    Err(_) => Vec::new(),
                }
            })
            // A claim taken or freed changes who may be verified for its hostnames.
            .watches_stream(
                run.related::<HostnameClaim>(watcher::Config::default()),
                move |claim| reconcile::domains_under(&claimants.state(), &claim, &base),
            )
            .watches_stream(run.related::<HttpRoute>(managed), move |route| {
                reconcile::domains_following(&followers.state(), &route)
            });

        // In either listener mode: one that was `gateway` may have left listeners.
        let routing = run.ctx.config.routing.clone();
        tokio::spawn(listener::sweep_orphans(
            client.clone(),
            routing.clone(),
            run.watch(
                Api::<PartialObjectMeta<Gateway>>::namespaced(watches, &routing.gateway_namespace),
                listener::gateway_watch(&routing),
            ),
            domains.clone(),
            wake,
            run.stopped(),
        ));
        let ctx = Arc::new(DomainContext {
            ctx: run.ctx.clone(),
            settings,
            resolver,
            domains,
            edge_handlers,
            split_tests,
            deployments,
            applied: Applied::default(),
            routes,
            certificates,
            listener_sets,
        });
        run.run(controller, ctx).await;
    }
    .boxed()
}

/// The object reference kube's controller queues for `domain`.
fn object_ref(domain: &Domain) -> ObjectRef<DeserializeGuard<Domain>> {
    ObjectRef::new(&domain.name_any()).within(&domain.namespace().unwrap_or_default())
}
