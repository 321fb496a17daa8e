//! The controllers, one folder per kind, and the wiring that runs them only while this
//! replica leads.
//!
//! A kind plugs in by adding a [`KindController`] to [`all`]:
//!
//! ```ignore
//! pub const CONTROLLER: KindController = KindController { name: "project", run };
//!
//! fn run(run: ControllerRun) -> BoxFuture<'static, ()> {
//!     async move {
//!         let api = Api::<Project>::all(run.ctx.client.clone());
//!         let routes = Api::<PartialObjectMeta<HttpRoute>>::all(run.ctx.client.clone());
//!         let controller = run
//!             .controller(api, watcher::Config::default())
//!             .owns_stream(run.watch(routes, watcher::Config::default()).touched_objects());
//!         run.run(controller, Arc::new(ProjectContext { ctx: run.ctx.clone() })).await;
//!     }
//!     .boxed()
//! }
//! ```
//!
//! [`ControllerRun::prepare`] gives every controller the same watch backoff
//! ([`watch_backoff::WatchBackoff`]), shutdown and cache-sync report; [`ControllerRun::drive`]
//! reports its watch errors (log line and `/readyz`). [`ControllerRun::run`] is the one
//! reconcile driver ([`driver`]): the kind's context implements [`driver::Reconciler`] (what
//! to do with one object), and the driver times it, marks it in flight for `/healthz`,
//! reports failures as Events and backs off per object. Every reconcile fails with
//! [`error::ReconcileError`].

pub mod applied;
pub mod cron_job;
pub mod deployment;
pub mod domain;
pub mod driver;
pub mod edge_handler;
pub mod error;
pub mod events;
#[cfg(test)]
mod health_checks;
pub mod hostname_claim;
pub mod pod;
pub mod project;
pub mod retry;
mod shared;
pub mod split_test;
pub mod watch_backoff;

use watch_backoff::WatchBackoff;
pub mod webhook;
pub mod webhook_delivery;
pub mod written;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::controllers::events::Recorder;
use futures::future::BoxFuture;
use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::api::validation::InvalidField;
use crate::config::OperatorConfig;
use crate::delivery::fanout::FanOut;
use crate::delivery::keys::RecentCredentials;
use crate::delivery::publisher::KnownWebhooks;
use crate::delivery::{OriginKey, Publisher};
use crate::leader::Leadership;
use crate::server::Health;
use crate::shutdown::{self, Stop};
use crate::telemetry::Metrics;
use crate::{Error, Result};
use shared::SharedCaches;

/// The one field manager of every server-side apply CloudDeck makes.
pub const FIELD_MANAGER: &str = "clouddeck";

/// How often a controller's cache is checked for its initial list (see
/// [`ControllerRun::report_cache_sync`]).
const CACHE_SYNC_POLL: Duration = Duration::from_millis(200);

/// The object `name` of `namespace`: from `cache`, or from the API when it is not cached
/// yet (or this release cannot read the cached copy).
pub async fn cached_or_read<K>(
    cache: &Store<DeserializeGuard<K>>,
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> kube::Result<Option<K>>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let cached = cache.get(&ObjectRef::new(name).within(namespace));
    if let Some(Ok(object)) = cached.as_deref().map(|guard| guard.0.as_ref()) {
        return Ok(Some(object.clone()));
    }
    Api::<K>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
}

/// Whether `store` holds the object `name` of `namespace`.
pub fn cached<S>(store: &Store<S>, namespace: &str, name: &str) -> bool
where
    S: kube::Resource<DynamicType = ()> + Clone,
{
    store.get(&ObjectRef::new(name).within(namespace)).is_some()
}

/// How long an object just made may wait for a related object to reach a watch cache
/// before the API is asked: objects applied together (`kubectl apply -f dir/`, Argo CD)
/// arrive in separate caches a moment apart, and the late one's event wakes the other.
pub const CACHE_GRACE: Duration = Duration::from_secs(5);

/// Whether `meta`'s object was made less than [`CACHE_GRACE`] before `now`.
pub fn just_made(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    now: k8s_openapi::jiff::Timestamp,
) -> bool {
    let grace = k8s_openapi::jiff::SignedDuration::try_from(CACHE_GRACE).unwrap_or_default();
    meta.creation_timestamp
        .as_ref()
        .is_some_and(|created| now.duration_since(created.0) < grace)
}

/// Deletes `name` (in the background: what it owns goes with it) if it exists. Returns
/// whether it did; a 404 is not an error.
pub async fn delete_if_present<K>(api: &kube::Api<K>, name: &str) -> kube::Result<bool>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api
        .delete(name, &kube::api::DeleteParams::background())
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(err) => Err(err),
    }
}

/// A CloudDeck object: namespaced, with a status that has conditions and an
/// `observedGeneration` ([`ObjectStatus`](crate::api::conditions::ObjectStatus)).
pub trait WithStatus:
    kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + kube::core::object::HasStatus<
        Status: crate::api::conditions::ObjectStatus
                    + Default
                    + Clone
                    + serde::Serialize
                    + PartialEq,
    > + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
{
}

impl<K> WithStatus for K where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + kube::core::object::HasStatus<
            Status: crate::api::conditions::ObjectStatus
                        + Default
                        + Clone
                        + serde::Serialize
                        + PartialEq,
        > + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
{
}

/// Writes the status of `obj` by server-side apply with the one field manager
/// ([`FIELD_MANAGER`]), so that the fields it sets are CloudDeck's and nobody else's.
/// Nothing is sent when `status` is what the object has (a resync finds nothing to do);
/// an object deleted meanwhile has nothing left to report on. The write is recorded in
/// [`written`], so that the driver does not reconcile the older cached copy again.
pub async fn write_status<K>(ctx: &Context, obj: &K, status: &K::Status) -> kube::Result<()>
where
    K: WithStatus,
{
    use kube::ResourceExt;
    if obj.status() == Some(status) {
        return Ok(());
    }
    let api = Api::<K>::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    let apply = kube::api::PatchParams::apply(FIELD_MANAGER).force();
    match api
        .patch_status(&obj.name_any(), &apply, &kube::api::Patch::Apply(&patch))
        .await
    {
        Ok(returned) => {
            let version = returned.meta().resource_version.as_deref();
            ctx.written.record(obj.meta(), "status", version);
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(err) => Err(err),
    }
}

/// Reports a spec the controller cannot use: `Stalled` with `reason` and `message` (which
/// names the field) at the object's generation, and a Warning Event the first time only
/// (every watched change would repeat it). What the object already runs stays as it is.
pub async fn stall<K>(
    ctx: &Context,
    obj: &K,
    reason: &'static str,
    message: &str,
) -> kube::Result<()>
where
    K: WithStatus,
{
    use crate::api::conditions::{Conditions, ObjectStatus, is_stalled_with};
    let mut status = obj.status().cloned().unwrap_or_default();
    let already = is_stalled_with(status.conditions(), message);
    Conditions::of(&mut status, obj.meta().generation).stalled(reason, message);
    write_status(ctx, obj, &status).await?;
    if !already {
        let warning = kube::runtime::events::EventType::Warning;
        events::publish(&ctx.recorder, obj, warning, reason, "Validate", message).await;
    }
    Ok(())
}

/// [`stall`] for an invalid field: the error the reconcile ends with (waiting for a
/// change), or the API error that kept the status from being written.
pub async fn stall_invalid<K>(
    ctx: &Context,
    obj: &K,
    invalid: InvalidField,
) -> error::ReconcileError
where
    K: WithStatus,
{
    match stall(ctx, obj, invalid.reason(), &invalid.to_string()).await {
        Ok(()) => error::ReconcileError::InvalidSpec(invalid),
        Err(err) => err.into(),
    }
}

/// What every reconcile gets: `reconcile(obj: Arc<K>, ctx: Arc<Context>)`.
pub struct Context {
    pub client: Client,
    /// For the lists and watches that fill the caches: counted, not paced by the
    /// client-side rate limit. Behind a backlog of reconcilers' requests at the limit, a
    /// list of thousands of objects took one page per queue's length, its continue token
    /// expired (etcd compacts every 5 minutes) and it started over, again and again: the
    /// caches never filled and the reconcilers waited on them (issue #13, 5,000 Projects).
    /// client-go's informers share their client's limit, but behind a bounded number of
    /// workers. Each watch still backs off on its own ([`ControllerRun::watch`]).
    pub watch_client: Client,
    pub metrics: Metrics,
    pub config: Arc<OperatorConfig>,
    /// The one Event recorder of this replica (see [`events`]).
    pub recorder: Recorder,
    /// Seals the WebhookDeliveries this operator writes (see [`crate::delivery::origin`]).
    pub origin: OriginKey,
    /// Per-namespace fan-out limits, shared by every publisher of this replica.
    pub fan_out: FanOut,
    /// The Webhook controller's cache, read by every publisher of this replica.
    pub webhooks: KnownWebhooks,
    /// The statuses this replica wrote, so that a stale cached copy does not repeat them.
    pub written: written::Written,
    /// Each Webhook's endpoint and signing keys, read from its Secrets at most once per
    /// [`crate::delivery::keys::FRESH_FOR`] by the Webhook and delivery controllers together.
    pub credentials: RecentCredentials,
}

impl Context {
    pub fn new(
        client: Client,
        metrics: Metrics,
        config: Arc<OperatorConfig>,
        origin: OriginKey,
    ) -> Self {
        let recorder = Recorder::new(client.clone(), events::reporter());
        let fan_out = FanOut::from_config(&config.webhooks);
        Context {
            watch_client: client.clone(),
            client,
            metrics,
            config,
            recorder,
            origin,
            fan_out,
            webhooks: KnownWebhooks::default(),
            written: written::Written::default(),
            credentials: RecentCredentials::default(),
        }
    }

    /// This context, its caches filled through `watch_client` (see the field).
    pub fn with_watch_client(self, watch_client: Client) -> Self {
        Context {
            watch_client,
            ..self
        }
    }

    /// A publisher of webhook events whose deliveries carry this operator's seal.
    pub fn publisher(&self) -> Publisher {
        Publisher::new(
            self.client.clone(),
            self.origin.clone(),
            self.fan_out.clone(),
        )
        .reading(self.webhooks.clone())
    }
}

/// One kind's controller, as the manager starts it. `run` must return once
/// [`ControllerRun::stopped`] fires (e.g. through kube's `graceful_shutdown_on`); returning
/// earlier counts as a failure and shuts the operator down so that a healthy replica leads.
#[derive(Clone, Copy)]
pub struct KindController {
    /// Bounded metric label and log field: the kind, lowercase (`project`, `domain`).
    pub name: &'static str,
    pub run: fn(ControllerRun) -> BoxFuture<'static, ()>,
}

/// Every controller `clouddeck run` starts when it becomes leader.
pub fn all() -> Vec<KindController> {
    vec![
        cron_job::CONTROLLER,
        deployment::CONTROLLER,
        domain::CONTROLLER,
        edge_handler::CONTROLLER,
        hostname_claim::CONTROLLER,
        project::CONTROLLER,
        split_test::CONTROLLER,
        webhook::CONTROLLER,
        webhook_delivery::CONTROLLER,
    ]
}

/// The readable objects of `store` in `namespace` that `matches` accepts, for the
/// `watches_stream` mappers that fan one change out to the objects it concerns.
pub fn matching_in<K>(
    store: &Store<DeserializeGuard<K>>,
    namespace: Option<String>,
    matches: impl Fn(&K) -> bool,
) -> Vec<ObjectRef<DeserializeGuard<K>>>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned,
{
    store
        .state()
        .iter()
        .filter(|guard| {
            guard
                .0
                .as_ref()
                .is_ok_and(|o| kube::ResourceExt::namespace(o) == namespace && matches(o))
        })
        .map(|guard| ObjectRef::from_obj(guard.as_ref()))
        .collect()
}

/// A kind that belongs to a Project (`spec.projectRef`).
pub trait OfProject {
    fn project_name(&self) -> &str;
}

macro_rules! of_project {
    ($($kind:ty),* $(,)?) => {$(
        impl OfProject for $kind {
            fn project_name(&self) -> &str {
                &self.spec.project_ref.name
            }
        }
    )*};
}

of_project!(
    crate::api::Deployment,
    crate::api::Domain,
    crate::api::EdgeHandler,
    crate::api::SplitTest,
    crate::api::CronJob,
);

/// A `watches_stream` mapper: a change of an `R` reaches the objects of `store` that
/// belong to the same Project (e.g. an EdgeHandler's change, the Deployments whose preview
/// routes it goes into).
pub fn same_project<K, R>(
    store: Store<DeserializeGuard<K>>,
) -> impl Fn(DeserializeGuard<R>) -> Vec<ObjectRef<DeserializeGuard<K>>>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + OfProject,
    R: kube::Resource<DynamicType = ()> + OfProject,
{
    move |guard: DeserializeGuard<R>| {
        let Ok(changed) = &guard.0 else {
            return Vec::new();
        };
        let project = changed.project_name();
        let namespace = kube::ResourceExt::namespace(changed);
        matching_in(&store, namespace, |o: &K| o.project_name() == project)
    }
}

/// A `watches_stream` mapper: a Project's change (created, fixed, promoted, deleted)
/// reaches the objects of `store` that reference it in its namespace.
pub fn of_project<K>(
    store: Store<DeserializeGuard<K>>,
) -> impl Fn(DeserializeGuard<crate::api::Project>) -> Vec<ObjectRef<DeserializeGuard<K>>>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + OfProject,
{
    move |project: DeserializeGuard<crate::api::Project>| {
        let name = kube::ResourceExt::name_any(&project);
        matching_in(&store, kube::ResourceExt::namespace(&project), |o: &K| {
            o.project_name() == name
        })
    }
}

/// The readable objects of `store` in `namespace` that `matches` accepts, cloned: what a
/// reconcile reads of another kind, from the cache.
pub fn readable_in<K>(
    store: &Store<DeserializeGuard<K>>,
    namespace: Option<&str>,
    matches: impl Fn(&K) -> bool,
) -> Vec<K>
where
    K: kube::Resource<DynamicType = ()> + Clone,
{
    store
        .state()
        .iter()
        .filter_map(|guard| guard.0.as_ref().ok())
        .filter(|o| o.meta().namespace.as_deref() == namespace && matches(o))
        .cloned()
        .collect()
}

/// One item of a watch: an event, or the error the watch reports.
pub type WatchEvent<K> = Result<watcher::Event<K>, watcher::Error>;

/// Handed to [`KindController::run`] each time leadership starts it.
pub struct ControllerRun {
    pub ctx: Arc<Context>,
    name: &'static str,
    stop: Stop,
    health: Health,
    caches: Arc<SharedCaches>,
}

impl ControllerRun {
    /// Fires when the controller must stop (leadership lost, or shutdown).
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + Sync + 'static {
        self.stop.stopped()
    }

    /// A controller of the objects `api` lists, fed by [`ControllerRun::watch`], with the
    /// wiring every controller shares: it stops with leadership, and its cache is reported
    /// in `/readyz` until it has its initial list. Its children and related objects come
    /// from [`ControllerRun::watch`] streams too (children as `PartialObjectMeta`: their
    /// owner reference is all a trigger needs).
    pub fn controller<K>(&self, api: Api<K>, config: watcher::Config) -> Controller<K>
    where
        K: Clone + kube::Resource + serde::de::DeserializeOwned + std::fmt::Debug,
        K: Send + Sync + 'static,
        K::DynamicType: Eq + std::hash::Hash + Clone + Default + Send + Sync + Unpin,
    {
        self.projected_controller(api, config, |_| {})
    }

    /// [`ControllerRun::controller`], caching each object as `project` leaves it: memory
    /// per object bounded by what reconciles read from the cache (a reconcile that needs
    /// what was dropped reads the object itself). Every cache drops `managedFields` and
    /// `kubectl apply`'s copy of the object ([`trim`]), which no reconcile reads and which
    /// are often the larger part of an object.
    pub fn projected_controller<K>(
        &self,
        api: Api<K>,
        config: watcher::Config,
        project: impl Fn(&mut K) + Send + Sync + 'static,
    ) -> Controller<K>
    where
        K: Clone + kube::Resource + serde::de::DeserializeOwned + std::fmt::Debug,
        K: Send + Sync + 'static,
        K::DynamicType: Eq + std::hash::Hash + Clone + Default + Send + Sync + Unpin,
    {
        let (store, events) = self.cache(api, config, project);
        self.controller_on(store, events.applied_objects())
    }

    /// A controller of the objects in `store`, reconciling each that `objects` yields (the
    /// applied objects of the watch that fills the store, e.g. from [`ControllerRun::cache`]),
    /// otherwise as [`ControllerRun::controller`]: for a controller that reads that watch's
    /// events for something else too.
    pub fn controller_on<K>(
        &self,
        store: Store<K>,
        objects: impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    ) -> Controller<K>
    where
        K: Clone + kube::Resource + serde::de::DeserializeOwned + std::fmt::Debug,
        K: Send + Sync + 'static,
        K::DynamicType: Eq + std::hash::Hash + Clone + Default + Send + Sync + Unpin,
    {
        Controller::for_stream(objects, store)
            // No error reaches the controller's merged trigger stream (see `watch`); were
            // one to, it would pause every trigger for one short step.
            .trigger_backoff(WatchBackoff::default())
            .with_config(controller_config())
            .graceful_shutdown_on(self.stopped())
    }

    /// A cache of the objects `api` lists, each as `project` leaves it (and without
    /// `managedFields` and `kubectl apply`'s copy: [`trim`]), reported in `/readyz` until
    /// it has its initial list, and the watch events that fill it: poll them (e.g. as a
    /// controller's `owns_stream` through `touched_objects`) or the cache stands still.
    pub fn cache<K>(
        &self,
        api: Api<K>,
        config: watcher::Config,
        project: impl Fn(&mut K) + Send + Sync + 'static,
    ) -> (
        Store<K>,
        impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    )
    where
        K: Clone + kube::Resource + serde::de::DeserializeOwned + std::fmt::Debug,
        K: Send + Sync + 'static,
        K::DynamicType: Eq + std::hash::Hash + Clone + Default + Send + Sync,
    {
        let (store, writer) = reflector::store();
        let events = self.watch(api, config).map_ok(move |event| {
            event.modify(|obj| {
                trim(obj.meta_mut());
                project(obj);
            })
        });
        self.report_cache_sync(store.clone());
        (store, reflector(writer, events))
    }

    /// Every object of kind `K` in the cluster, each behind a [`DeserializeGuard`] (an
    /// object this release cannot read is an `Err` in the cache, not a stopped watch), from
    /// the cache all of this term's controllers share ([`ControllerRun::shared`]), and the
    /// objects that change, for this controller's triggers.
    pub fn cache_all<K>(
        &self,
    ) -> (
        Store<DeserializeGuard<K>>,
        impl Stream<Item = Result<DeserializeGuard<K>, watcher::Error>> + Send + 'static,
    )
    where
        DeserializeGuard<K>: Clone + kube::Resource<DynamicType = ()>,
        DeserializeGuard<K>: serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    {
        self.shared(watcher::Config::default())
    }

    /// A controller of every object of kind `K`, on the cache this term's controllers
    /// share ([`ControllerRun::shared`]); otherwise as [`ControllerRun::controller`].
    pub fn shared_controller<K>(&self) -> Controller<DeserializeGuard<K>>
    where
        DeserializeGuard<K>: Clone + kube::Resource<DynamicType = ()>,
        DeserializeGuard<K>: serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    {
        let (store, changes) = self.cache_all::<K>();
        self.controller_on(store, changes)
    }

    /// The cache of every object of kind `K` under `config`'s selectors that all of this
    /// term's controllers share (one watch, one copy of each object, without
    /// `managedFields` and `kubectl apply`'s copy; see [`shared`]), reported in this
    /// controller's `/readyz` until it has its initial list, and a stream of the objects
    /// that change (applied or deleted; all of them after a list) for this controller's
    /// triggers. The watch's errors are reported under the controller that asked first.
    pub fn shared<K>(
        &self,
        config: watcher::Config,
    ) -> (
        Store<K>,
        impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    )
    where
        K: Clone + kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned,
        K: std::fmt::Debug + Send + Sync + 'static,
    {
        let shared = self.caches.get_or_start(&config, |writer, shared| {
            let events = self
                .watch(Api::<K>::all(self.ctx.watch_client.clone()), config.clone())
                .map_ok(|event| event.modify(|obj| trim(obj.meta_mut())));
            let stopped = self.stopped();
            tokio::spawn(async move {
                tokio::select! {
                    () = shared.fill(writer, events) => {}
                    () = stopped => {}
                }
            });
        });
        self.report_cache_sync(shared.store.clone());
        let changes = shared.subscribe().map(|obj| Ok(K::clone(&obj)));
        (shared.store, changes)
    }

    /// A watch of `api` with its own backoff ([`WatchBackoff`]) whose errors are reported
    /// (log line, `/readyz`) and then dropped. kube-runtime pauses all of a controller's
    /// triggers while it backs off from any one's error, so after an apiserver restart each
    /// watch's `410 Gone` added a pause to every other (issue #13); here each watch waits
    /// on its own and the others keep flowing.
    pub fn watch<K>(
        &self,
        api: Api<K>,
        config: watcher::Config,
    ) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
    where
        K: Clone + kube::Resource + serde::de::DeserializeOwned + std::fmt::Debug,
        K: Send + 'static,
    {
        self.reported(watcher::watcher(api, config))
    }

    /// The children of kind `K` in every namespace, as metadata, for `owns_stream`.
    pub fn children<K>(
        &self,
        config: watcher::Config,
    ) -> impl Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static
    where
        K: Clone + kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned,
        K: std::fmt::Debug + Send + 'static,
    {
        self.related(config)
    }

    /// Like [`ControllerRun::children`], with a cache of their metadata (for
    /// [`applied::apply`]: a child's `resourceVersion` without a request), shared by this
    /// term's controllers ([`ControllerRun::shared`]).
    pub fn cached_children<K>(
        &self,
        config: watcher::Config,
    ) -> (
        Store<PartialObjectMeta<K>>,
        impl Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static,
    )
    where
        K: Clone + kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned,
        K: std::fmt::Debug + Send + Sync + 'static,
    {
        self.shared(config)
    }

    /// The objects of kind `K` in every namespace, for `watches_stream`.
    pub fn related<K>(
        &self,
        config: watcher::Config,
    ) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
    where
        K: Clone + kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned,
        K: std::fmt::Debug + Send + 'static,
    {
        self.watch(Api::<K>::all(self.ctx.watch_client.clone()), config)
            .touched_objects()
    }

    fn reported<T: Send + 'static>(
        &self,
        events: impl Stream<Item = Result<T, watcher::Error>> + Send + 'static,
    ) -> impl Stream<Item = Result<T, watcher::Error>> + Send + 'static {
        let reporter = self.reporter();
        events
            // 410 Gone is the apiserver asking for a relist (its watch cache no longer
            // holds our resourceVersion, as after it restarts): the watcher has already
            // started over, and relists at once rather than after a backoff step.
            .filter(|event| std::future::ready(!is_gone(event)))
            .backoff(WatchBackoff::default())
            .filter_map(move |event| {
                let event = match event {
                    Ok(event) => Some(Ok(event)),
                    Err(err) => {
                        reporter.watch_failed(&err);
                        None
                    }
                };
                std::future::ready(event)
            })
    }

    /// Runs a controller's result stream to its end. Reconcile errors are each
    /// controller's own business (its error policy); watch errors are reported where they
    /// happen ([`ControllerRun::watch`]), and here too should one come through.
    pub async fn drive<K, E>(
        &self,
        results: impl Stream<
            Item = Result<(ObjectRef<K>, Action), controller::Error<E, watcher::Error>>,
        >,
    ) where
        K: kube::Resource,
        E: std::error::Error + 'static,
    {
        results
            .for_each(|result| {
                if let Err(controller::Error::QueueError(err)) = &result {
                    self.reporter().watch_failed(err);
                }
                async {}
            })
            .await;
    }

    /// Reports the failed watches of this controller, for watches it runs itself.
    pub fn reporter(&self) -> WatchReporter {
        WatchReporter {
            name: self.name,
            health: self.health.clone(),
            errors: self.ctx.metrics.reconcile.watch_errors.clone(),
        }
    }

    /// Marks this controller's cache synced in `/readyz` once `store` has its initial list.
    pub fn report_cache_sync<K>(&self, store: Store<K>)
    where
        K: kube::runtime::reflector::Lookup + Clone + Send + Sync + 'static,
        K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
    {
        let (health, name, stop) = (self.health.clone(), self.name, self.stop.clone());
        tokio::spawn(async move {
            // The store's readiness is a oneshot that remembers only the last waker, and the
            // controller's own runner waits on it too: a second waiter may never be woken.
            // So look again periodically; once ready, every look answers at once.
            while !stop.is_stopped() {
                match tokio::time::timeout(CACHE_SYNC_POLL, store.wait_until_ready()).await {
                    Ok(Ok(())) => return health.cache_synced(name),
                    Ok(Err(_writer_dropped)) => return,
                    Err(_still_listing) => {}
                }
            }
        });
    }
}

/// Reconciles one controller runs at once. kube-runtime's default is no bound: with 5,000
/// new Projects, thousands of reconciles each held a request in the queue before the
/// client-side rate limit, so every request waited minutes, and each waiting reconcile held
/// its memory (issue #13). With a bound the rest wait in the controller's queue, where a
/// newer trigger replaces an older one. At the default limit (50 requests a second) 16
/// per controller keep it busy: most reconciles make a request or none.
pub const RECONCILES_AT_ONCE: u16 = 16;

/// Every controller's settings: see [`RECONCILES_AT_ONCE`].
pub fn controller_config() -> controller::Config {
    controller::Config::default().concurrency(RECONCILES_AT_ONCE)
}

/// Client-side `kubectl apply` (and Argo CD's default sync) keeps a copy of the whole
/// object it applied here.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops from a cached object what no reconcile reads and what can be most of its size:
/// `managedFields`, and the copy of the object in [`LAST_APPLIED`].
fn trim(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

fn is_gone<T>(event: &Result<T, watcher::Error>) -> bool {
    matches!(event, Err(watcher::Error::WatchError(status)) if status.code == 410)
}

/// Reports a controller's failed watches: a log line and `/readyz` (see
/// [`ControllerRun::drive`]).
#[derive(Clone)]
pub struct WatchReporter {
    name: &'static str,
    health: Health,
    errors: prometheus_client::metrics::family::Family<
        crate::telemetry::ControllerLabels,
        prometheus_client::metrics::counter::Counter,
    >,
}

impl WatchReporter {
    pub fn watch_failed(&self, err: &watcher::Error) {
        self.errors
            .get_or_create(&crate::telemetry::ControllerLabels {
                controller: self.name,
            })
            .inc();
        let error = crate::one_line(err);
        if let Some(unlogged) = self.health.watch_failed(self.name, error.clone()) {
            warn!(controller = self.name, error = %error, unlogged, "watch failed; retrying after a backoff");
        }
    }
}

/// Runs `controllers` whenever `leadership` says this replica leads, stops them when it no
/// longer does, and returns once `shutdown` fires and they have stopped (or after
/// `shutdown_timeout`, when they are abandoned).
pub async fn run_while_leading(
    controllers: Vec<KindController>,
    ctx: Arc<Context>,
    health: Health,
    mut leadership: watch::Receiver<Leadership>,
    shutdown: Stop,
    shutdown_timeout: Duration,
) -> Result<()> {
    loop {
        tokio::select! {
            _ = shutdown.stopped() => return Ok(()),
            became = leadership.wait_for(|l| *l == Leadership::Leader) => {
                if became.is_err() {
                    return Ok(()); // the election ended; the operator is shutting down
                }
            }
        }
        if shutdown.is_stopped() {
            return Ok(());
        }

        info!(
            controllers = controllers.len(),
            "leading: starting controllers"
        );
        let (stop_controllers, stop) = shutdown::channel();
        let mut running = JoinSet::new();
        let mut names = HashMap::new();
        let caches = Arc::new(SharedCaches::default());
        for controller in &controllers {
            health.cache_pending(controller.name);
            let run = ControllerRun {
                ctx: ctx.clone(),
                name: controller.name,
                stop: stop.clone(),
                health: health.clone(),
                caches: caches.clone(),
            };
            let handle = running.spawn((controller.run)(run));
            names.insert(handle.id(), controller.name);
        }

        let ended = tokio::select! {
            _ = shutdown.stopped() => Ended::Shutdown,
            _ = leadership.wait_for(|l| *l != Leadership::Leader) => Ended::LostLeadership,
            Some(done) = running.join_next_with_id(), if !running.is_empty() => {
                let id = match &done { Ok((id, ())) => *id, Err(e) => e.id() };
                Ended::ControllerStopped(names.get(&id).copied().unwrap_or("unknown"))
            }
        };

        stop_controllers.stop();
        if tokio::time::timeout(shutdown_timeout, async {
            while running.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            warn!(timeout = ?shutdown_timeout, "controllers did not stop in time; aborting them");
            running.shutdown().await;
        }
        health.clear_caches();

        match ended {
            Ended::Shutdown => {
                info!("controllers stopped");
                return Ok(());
            }
            Ended::LostLeadership => warn!("lost leadership: controllers stopped, standing by"),
            Ended::ControllerStopped(name) => {
                error!(controller = name, "controller stopped on its own");
                return Err(Error::ControllerStopped(name));
            }
        }
    }
}

enum Ended {
    Shutdown,
    LostLeadership,
    ControllerStopped(&'static str),
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_an_object_made_moments_ago_waits_for_a_cache() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
        use k8s_openapi::jiff::Timestamp;
        let at = |second| ObjectMeta {
            creation_timestamp: Some(Time(Timestamp::from_second(second).unwrap())),
            ..ObjectMeta::default()
        };
        let now = Timestamp::from_second(1_000).unwrap();
        assert!(just_made(&at(998), now));
        assert!(
            !just_made(&at(990), now),
            "past the grace: the API is asked"
        );
        assert!(
            !just_made(&ObjectMeta::default(), now),
            "no creation time: asked"
        );
    }

    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::FutureExt;

    use super::*;

    #[test]
    fn a_cached_object_keeps_its_annotations_but_not_kubectl_apply_s_copy_or_managed_fields() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
        let mut meta = ObjectMeta {
            annotations: Some(
                [
                    (
                        LAST_APPLIED.to_owned(),
                        r#"{"spec":{"image":"web"}}"#.to_owned(),
                    ),
                    ("clouddeck.io/ping".to_owned(), "1".to_owned()),
                ]
                .into(),
            ),
            managed_fields: Some(vec![ManagedFieldsEntry::default()]),
            ..ObjectMeta::default()
        };
        trim(&mut meta);
        assert_eq!(meta.managed_fields, None);
        assert_eq!(
            meta.annotations,
            Some([("clouddeck.io/ping".to_owned(), "1".to_owned())].into())
        );
    }

    static STARTED: AtomicUsize = AtomicUsize::new(0);
    static STOPPED: AtomicUsize = AtomicUsize::new(0);

    fn counting(run: ControllerRun) -> BoxFuture<'static, ()> {
        async move {
            STARTED.fetch_add(1, Ordering::SeqCst);
            run.health.cache_synced(run.name);
            run.stopped().await;
            STOPPED.fetch_add(1, Ordering::SeqCst);
        }
        .boxed()
    }

    fn quits(_: ControllerRun) -> BoxFuture<'static, ()> {
        async {}.boxed()
    }

    fn context() -> Arc<Context> {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            config: OperatorConfig,
        }
        // A client that is never called: the test controllers do not talk to the API.
        let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        let mut registry = crate::telemetry::registry();
        Arc::new(Context::new(
            Client::try_from(config).unwrap(),
            Metrics::new(&mut registry),
            Arc::new(Cli::parse_from(["clouddeck"]).config),
            OriginKey::from_bytes(&[0; 32]),
        ))
    }

    async fn settle<F: Fn() -> bool>(what: &str, check: F) {
        for _ in 0..200 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn controllers_run_only_while_leading() {
        let (lead, leadership) = watch::channel(Leadership::Unknown);
        let (trigger, shutdown) = shutdown::channel();
        let health = Health::default();
        let controller = KindController {
            name: "counting",
            run: counting,
        };
        let manager = tokio::spawn(run_while_leading(
            vec![controller],
            context(),
            health.clone(),
            leadership,
            shutdown,
            Duration::from_secs(5),
        ));

        lead.send_replace(Leadership::Standby);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            STARTED.load(Ordering::SeqCst),
            0,
            "a standby runs no controller"
        );

        lead.send_replace(Leadership::Leader);
        settle("start", || STARTED.load(Ordering::SeqCst) == 1).await;
        settle("cache sync", || {
            health.snapshot().unsynced_caches.is_empty()
        })
        .await;

        lead.send_replace(Leadership::Standby);
        settle("stop on lost leadership", || {
            STOPPED.load(Ordering::SeqCst) == 1
        })
        .await;

        lead.send_replace(Leadership::Leader);
        settle("restart", || STARTED.load(Ordering::SeqCst) == 2).await;

        trigger.stop();
        manager.await.unwrap().unwrap();
        assert_eq!(
            STOPPED.load(Ordering::SeqCst),
            2,
            "shutdown stops controllers before returning"
        );
    }

    #[tokio::test]
    async fn report_cache_sync_marks_the_cache_synced_after_the_initial_list() {
        use k8s_openapi::api::core::v1::ConfigMap;
        use kube::runtime::watcher::Event;
        let health = Health::default();
        health.cache_pending("configmaps");
        let (_trigger, stop) = shutdown::channel();
        let run = ControllerRun {
            ctx: context(),
            name: "configmaps",
            stop,
            health: health.clone(),
            caches: Default::default(),
        };
        let (store, mut writer) = kube::runtime::reflector::store::<ConfigMap>();
        run.report_cache_sync(store.clone());
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The controller's runner waits on the same store, taking over its wake-up.
        let runner = tokio::spawn(async move { store.wait_until_ready().await.is_ok() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(health.snapshot().unsynced_caches.contains("configmaps"));
        writer.apply_watcher_event(&Event::InitDone);
        assert!(runner.await.unwrap());
        settle("cache sync", || {
            health.snapshot().unsynced_caches.is_empty()
        })
        .await;
    }

    #[tokio::test]
    async fn a_controller_that_quits_stops_the_operator() {
        let (_lead, leadership) = watch::channel(Leadership::Leader);
        let (_trigger, shutdown) = shutdown::channel();
        let controller = KindController {
            name: "quits",
            run: quits,
        };
        let result = run_while_leading(
            vec![controller],
            context(),
            Health::default(),
            leadership,
            shutdown,
            Duration::from_secs(1),
        )
        .await;
        assert!(
            matches!(result, Err(Error::ControllerStopped("quits"))),
            "{result:?}"
        );
    }
}
