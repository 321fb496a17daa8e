//! The Project controller: points the production HTTPRoute at the Deployment production
//! serves (the newest Ready production Deployment, or `spec.rollbackTo`), keeps a branch
//! alias HTTPRoute per branch, supersedes older builds of a branch, prunes production
//! Deployments beyond `spec.retain`, and reports all of it in the Project's status.

pub mod reconcile;
pub mod render;
pub mod status;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::BoxFuture;
use gateway_api::apis::standard::httproutes::HttpRoute;
use kube::ResourceExt;
use kube::api::PartialObjectMeta;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

use super::applied::Applied;
use super::{Context, ControllerRun, KindController, readable_in};
use crate::api::deployment::Deployment;
use crate::api::edge_handler::EdgeHandler;
use crate::api::project::Project;
use crate::api::split_test::SplitTest;
use crate::hostnames::{self, Authority, HostnameClaim};
use crate::labels::MANAGED;

pub const NAME: &str = "project";

pub const CONTROLLER: KindController = KindController { name: NAME, run };

fn run(run: ControllerRun) -> BoxFuture<'static, ()> {
    async move {
        let _client = run.ctx.client.clone();
        // The guards keep one malformed object from stopping the controller.
        let controller = run.shared_controller::<Project>();
        let projects = controller.store();
        let namesakes = projects.clone();
        let waiting = projects.clone();
        let base = run.ctx.config.routing.base_domain.clone();
        // Cached, so that a look that finds nothing changed asks the API nothing: the
        // Deployments of each Project, the routes it applies, the claims it holds.
        let (deployments, deployment_events) = run.cache_all::<Deployment>();
        let (routes, route_events) =
            run.cached_children::<HttpRoute>(watcher::Config::default().labels(MANAGED));
        let (claims, claim_events) = run.cache_all::<HostnameClaim>();
        let (edge_handlers, edge_events) = run.cache_all::<EdgeHandler>();
        let (split_tests, split_events) = run.cache_all::<SplitTest>();
        let controller = controller
            // A running SplitTest splits its production route.
            .watches_stream(split_events, |guard: DeserializeGuard<SplitTest>| {
                let test = guard.0.as_ref().ok()?;
                Some(
                    ObjectRef::<DeserializeGuard<Project>>::new(&test.spec.project_ref.name)
                        .within(&test.namespace()?),
                )
            })
            // Its EdgeHandlers go into its production and branch alias routes.
            .watches_stream(edge_events, |guard: DeserializeGuard<EdgeHandler>| {
                let handler = guard.0.as_ref().ok()?;
                Some(
                    ObjectRef::<DeserializeGuard<Project>>::new(&handler.spec.project_ref.name)
                        .within(&handler.namespace()?),
                )
            })
            // A claim taken, released or expired changes which key a Project can hold.
            .watches_stream(
                claim_events,
                move |guard: DeserializeGuard<HostnameClaim>| match &guard.0 {
                    Ok(claim) => waiting_for(&waiting.state(), claim, &base),
                    // Reported by the claim controller; nobody can be waiting for it.
                    Err(_) => Vec::new(),
                },
            )
            // A Project coming or going changes who holds its name's hostname.
            .watches_stream(run.cache_all::<Project>().1, move |changed| {
                namesakes_of(&namesakes.state(), &changed)
            })
            .owns_stream(route_events)
            // Every change of a Deployment may change what its Project serves.
            .watches_stream(deployment_events, |guard: DeserializeGuard<Deployment>| {
                let deployment = guard.0.as_ref().ok()?;
                let namespace = deployment.namespace()?;
                Some(
                    ObjectRef::<DeserializeGuard<Project>>::new(&deployment.spec.project_ref.name)
                        .within(&namespace),
                )
            });
        run.run(
            controller,
            Arc::new(ProjectContext {
                ctx: run.ctx.clone(),
                projects,
                deployments,
                routes,
                claims,
                edge_handlers,
                split_tests,
                applied: Applied::default(),
                held: Mutex::default(),
            }),
        )
        .await;
    }
    .boxed()
}

/// What a Project reconcile gets: the operator's [`Context`] and every Project in the
/// cluster (who holds a name's hostname).
pub struct ProjectContext {
    pub ctx: Arc<Context>,
    pub projects: Store<DeserializeGuard<Project>>,
    pub deployments: Store<DeserializeGuard<Deployment>>,
    pub routes: Store<PartialObjectMeta<HttpRoute>>,
    pub claims: Store<DeserializeGuard<HostnameClaim>>,
    pub edge_handlers: Store<DeserializeGuard<EdgeHandler>>,
    pub split_tests: Store<DeserializeGuard<SplitTest>>,
    pub applied: Applied,
    /// Per production hostname, the `resourceVersion` of its claim when the API last said
    /// this Project holds it (see [`ProjectContext::still_holds`]).
    held: Mutex<HashMap<String, String>>,
}

impl ProjectContext {
    /// The Deployments of `project` that this release can read, from the cache.
    pub fn deployments_of(&self, project: &Project) -> Vec<Deployment> {
        let name = project.name_any();
        readable_in(&self.deployments, project.namespace().as_deref(), |d| {
            d.spec.project_ref.name == name
        })
    }

    /// The SplitTests of `project` that this release can read, from the cache.
    pub fn split_tests_of(&self, project: &Project) -> Vec<SplitTest> {
        let name = project.name_any();
        readable_in(&self.split_tests, project.namespace().as_deref(), |t| {
            t.spec.project_ref.name == name
        })
    }

    /// The names of the cached routes in `namespace` whose labels satisfy `wanted`.
    pub fn routes_where(
        &self,
        namespace: &str,
        wanted: impl Fn(&std::collections::BTreeMap<String, String>) -> bool,
    ) -> Vec<String> {
        self.routes
            .state()
            .iter()
            .filter(|r| r.metadata.namespace.as_deref() == Some(namespace))
            .filter(|r| r.metadata.labels.as_ref().is_some_and(&wanted))
            .filter_map(|r| r.metadata.name.clone())
            .collect()
    }

    /// Whether `me` still holds the claim on `hostname` without asking the API: only when
    /// the cached claim says so and is unchanged since the API last said so. A decision to
    /// serve never rests on the cache alone; the cache only says that nothing has happened
    /// to the claim since.
    pub fn still_holds(&self, hostname: &str, me: &hostnames::Claimant) -> bool {
        let Some(version) = self.cached_held_version(hostname, me) else {
            return false;
        };
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.get(hostname) == Some(&version)
    }

    /// Records that the API just said `me` holds `hostname` (if the cache shows that claim
    /// yet; otherwise the next look asks again).
    pub fn remember_held(&self, hostname: &str, me: &hostnames::Claimant) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        match self.cached_held_version(hostname, me) {
            Some(version) => held.insert(hostname.to_owned(), version),
            None => held.remove(hostname),
        };
        // Hostnames of deleted Projects: dropped once there are many more than claims.
        if held.len() > 2 * self.claims.state().len() + 64 {
            let live: std::collections::HashSet<String> = self
                .claims
                .state()
                .iter()
                .filter_map(|c| c.0.as_ref().ok().map(|c| c.spec.hostname.clone()))
                .collect();
            held.retain(|hostname, _| live.contains(hostname));
        }
    }

    /// Records that this replica just created the claim on `hostname` at `version`: once
    /// the cache shows that version, [`ProjectContext::still_holds`] says so without a read.
    pub fn remember_created(&self, hostname: &str, version: String) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.insert(hostname.to_owned(), version);
    }

    /// Where `me` stands on `hostname` by the cached claim, when the cache alone may say:
    /// `None` before the cache has its first list, and for a claim another object of the
    /// namespace holds (whether that holder is gone is asked of the API). Only for choosing
    /// which key to try: taking one is decided by the API.
    pub fn cached_standing(
        &self,
        hostname: &str,
        me: &hostnames::Claimant,
    ) -> Option<hostnames::Standing> {
        self.claims.wait_until_ready().now_or_never()?.ok()?;
        let cached = self
            .claims
            .get(&ObjectRef::new(&hostnames::claim_name(hostname)));
        let claim = match cached.as_deref() {
            Some(guard) => Some(guard.0.as_ref().ok()?),
            None => None,
        };
        if let Some(claim) = claim
            && claim.spec.hostname != hostname
        {
            return Some(hostnames::Standing::Elsewhere {
                namespace: claim.spec.namespace.clone(),
            });
        }
        match hostnames::standing(claim, me, false) {
            hostnames::Standing::HeldHere { .. } => None,
            standing => Some(standing),
        }
    }

    fn cached_held_version(&self, hostname: &str, me: &hostnames::Claimant) -> Option<String> {
        let cached = self
            .claims
            .get(&ObjectRef::new(&hostnames::claim_name(hostname)))?;
        let claim = cached.0.as_ref().ok()?;
        let held = claim.spec.hostname == hostname
            && hostnames::standing(Some(claim), me, false) == hostnames::Standing::Held;
        held.then(|| claim.metadata.resource_version.clone())?
    }
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
