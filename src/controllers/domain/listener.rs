//! A verified Domain's HTTPS listener, where `--domain-listeners` puts it: a ListenerSet
//! in the Domain's namespace (owned by the Domain, deleted with it), or a listener on the
//! operator's Gateway itself, for gateways that do not implement ListenerSet. The Gateway
//! is shared, so its listener is written by server-side apply under a field manager of
//! the Domain's own (applying nothing under it removes exactly that listener), and a
//! finalizer on the Domain removes it before the Domain goes.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use gateway_api::apis::standard::gateways::Gateway;
use gateway_api::apis::standard::listenersets::{ListenerSet, ListenerSetStatus};
use gateway_api::apis::standard::referencegrants::ReferenceGrant;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, OwnerReference};
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;
use tracing::{info, warn};

use super::DomainContext;
use super::render;
use super::status::ListenerReport;
use crate::api::domain::Domain;
use crate::config::{DomainListeners, RoutingConfig};
use crate::controllers::applied;
use crate::controllers::{FIELD_MANAGER, WatchEvent, cached, delete_if_present};

/// Holds a Domain whose listener is on the Gateway until that listener is removed.
pub const FINALIZER: &str = "clouddeck.io/gateway-listener";

/// Applies the Domain's listener for `hostname`, terminating TLS with `secret`, and
/// removes the other kind if the Domain had it (the setting changed). Returns what the
/// gateway has said of the listener so far, read off the applied object's status.
pub async fn apply(
    ctx: &DomainContext,
    domain: &Domain,
    (hostname, secret): (&str, &str),
    owner: &OwnerReference,
) -> kube::Result<ListenerReport> {
    let settings = &ctx.settings;
    let routing = &ctx.ctx.config.routing;
    let listener = (hostname, secret, settings.https_listener_port);
    let namespace = domain.namespace().unwrap_or_default();
    let name = domain.name_any();
    let listener_sets = Api::<ListenerSet>::namespaced(ctx.ctx.client.clone(), &namespace);
    let set_name = render::listener_set_name(&name);
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    match settings.domain_listeners {
        DomainListeners::ListenerSet => {
            let set = render::listener_set(domain, listener, routing, owner);
            // Nothing sent when it is as the last apply left it: its status is then the
            // cache's, which the gateway's reports reach (they wake the Domain).
            let current = applied::apply_or_cached(
                &listener_sets,
                &ctx.listener_sets,
                &ctx.applied,
                &apply,
                &set,
            )
            .await?;
            remove_from_gateway(ctx, domain).await?;
            Ok(listener_set_report(
                &set_name,
                current.and_then(|s| s.status),
            ))
        }
        DomainListeners::Gateway => {
            add_finalizer(ctx, domain).await?;
            let grant = render::listener_grant(domain, secret, routing, owner);
            Api::<ReferenceGrant>::namespaced(ctx.ctx.client.clone(), &namespace)
                .patch(&set_name, &apply, &Patch::Apply(&grant))
                .await?;
            // Not forced: a conflict means someone else wrote this Domain's listener.
            let own = PatchParams::apply(&render::gateway_listener_manager(domain));
            let applied = gateways(ctx)
                .patch(
                    &routing.gateway_name,
                    &own,
                    &Patch::Apply(render::gateway_listener(domain, routing, listener)),
                )
                .await?;
            // One left from the other mode: the cache's word is enough, since its
            // appearance in the cache wakes the Domain.
            if cached(&ctx.listener_sets, &namespace, &set_name) {
                delete_if_present(&listener_sets, &set_name).await?;
            }
            Ok(gateway_report(
                &render::gateway_listener_name(domain),
                routing,
                applied,
            ))
        }
    }
}

/// What the gateway said of ListenerSet `name` (its one listener) in `status`.
fn listener_set_report(name: &str, status: Option<ListenerSetStatus>) -> ListenerReport {
    let status = status.unwrap_or_default();
    ListenerReport {
        place: format!("ListenerSet {name}"),
        in_listener_set: true,
        set: status.conditions.unwrap_or_default(),
        listener: status
            .listeners
            .unwrap_or_default()
            .into_iter()
            .find(|l| l.name == render::HTTPS_LISTENER)
            .map(|l| l.conditions),
    }
}

/// What the gateway said of the Gateway's listener `name` in `applied`'s status.
fn gateway_report(name: &str, routing: &RoutingConfig, applied: Gateway) -> ListenerReport {
    ListenerReport {
        place: format!(
            "listener {name} of Gateway {}/{}",
            routing.gateway_namespace, routing.gateway_name
        ),
        in_listener_set: false,
        set: Vec::new(),
        listener: applied
            .status
            .and_then(|s| s.listeners)
            .unwrap_or_default()
            .into_iter()
            .find(|l| l.name == name)
            .map(|l| l.conditions),
    }
}

/// Removes the Domain's listener, of either kind (the hostname was lost).
pub async fn remove(ctx: &DomainContext, domain: &Domain) -> kube::Result<()> {
    let namespace = domain.namespace().unwrap_or_default();
    let set_name = render::listener_set_name(&domain.name_any());
    delete_if_present(
        &Api::<ListenerSet>::namespaced(ctx.ctx.client.clone(), &namespace),
        &set_name,
    )
    .await?;
    remove_from_gateway(ctx, domain).await
}

/// A Domain being deleted: its listener on the Gateway removed, then its finalizer (its
/// other children go with it by owner reference).
pub async fn finalize(ctx: &DomainContext, domain: &Domain) -> kube::Result<()> {
    if !domain.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    remove_from_gateway(ctx, domain).await?;
    let rest: Vec<&String> = domain
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .collect();
    set_finalizers(ctx, domain, json!(rest)).await
}

fn gateways(ctx: &DomainContext) -> Api<Gateway> {
    gateways_of(&ctx.ctx.client, &ctx.ctx.config.routing)
}

fn gateways_of(client: &Client, routing: &RoutingConfig) -> Api<Gateway> {
    Api::namespaced(client.clone(), &routing.gateway_namespace)
}

/// How often the Gateway is looked over for orphaned listeners when nothing woke the sweep.
const SWEEP_PERIOD: Duration = Duration::from_secs(600);

/// How long a sweep woken by a Domain's change waits first: the Domain cache is another
/// watch than the one that saw the change, and may not have it yet.
const CACHE_LAG: Duration = Duration::from_secs(1);

/// The operator's Gateway, as its metadata, for [`sweep_orphans`]: the one object of the
/// watch (a field selector on its name; RBAC grants it by name).
pub fn gateway_watch(routing: &RoutingConfig) -> watcher::Config {
    watcher::Config::default().fields(&format!("metadata.name={}", routing.gateway_name))
}

/// Takes off the Gateway the listeners of Domains that are gone: deleted without their
/// finalizer (anyone who may patch a Domain may remove it) or while no operator ran.
/// Left there, such a listener would hold the hostname on the shared Gateway against the
/// next Domain that owns it. Looks on every change of the Gateway, after any Domain's
/// change (`wake`) and every [`SWEEP_PERIOD`], from caches; the apiserver is asked only
/// when a listener's Domain is not in the cache, before that listener is removed.
pub async fn sweep_orphans(
    client: Client,
    routing: RoutingConfig,
    gateway: impl Stream<Item = WatchEvent<PartialObjectMeta<Gateway>>>,
    domains: Store<DeserializeGuard<Domain>>,
    wake: Arc<Notify>,
    stopped: impl Future<Output = ()>,
) {
    let mut gateway = std::pin::pin!(gateway);
    let mut stopped = std::pin::pin!(stopped);
    let mut period = tokio::time::interval(SWEEP_PERIOD);
    let mut managed: Option<Vec<ManagedFieldsEntry>> = None;
    loop {
        tokio::select! {
            () = &mut stopped => return,
            event = gateway.next() => match event {
                None => return,
                Some(Ok(watcher::Event::Apply(g) | watcher::Event::InitApply(g))) => {
                    managed = Some(g.metadata.managed_fields.unwrap_or_default());
                }
                Some(Ok(watcher::Event::Delete(_))) => managed = None,
                // Watch errors are reported by the stream; the start of a relist.
                Some(_) => continue,
            },
            () = wake.notified() => tokio::time::sleep(CACHE_LAG).await,
            _ = period.tick() => {}
        }
        let Some(managed) = &managed else { continue };
        if let Err(err) = sweep(&client, &routing, managed, &domains).await {
            warn!(error = %crate::one_line(&err), "cannot sweep orphaned Domain listeners off the Gateway; trying again at the next change");
        }
    }
}

/// One look of [`sweep_orphans`] at the Gateway's managed fields.
async fn sweep(
    client: &Client,
    routing: &RoutingConfig,
    managed: &[ManagedFieldsEntry],
    domains: &Store<DeserializeGuard<Domain>>,
) -> kube::Result<()> {
    let owners = render::listener_owners(managed);
    if owners.is_empty() {
        return Ok(());
    }
    let cached: HashSet<String> = domains.state().iter().filter_map(|d| d.uid()).collect();
    let missing: Vec<String> = owners
        .into_iter()
        .filter(|uid| !cached.contains(uid))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    // The cache may lag or still be listing: only the apiserver's word removes a listener.
    let listed = Api::<Domain>::all(client.clone())
        .list_metadata(&ListParams::default())
        .await?;
    let live: HashSet<String> = listed.items.into_iter().filter_map(|d| d.uid()).collect();
    let gateways = gateways_of(client, routing);
    for uid in missing.iter().filter(|uid| !live.contains(*uid)) {
        take_off(&gateways, routing, &render::listener_manager_of(uid)).await?;
        info!(
            listener = render::listener_name_of(uid),
            gateway = format!("{}/{}", routing.gateway_namespace, routing.gateway_name),
            "removed the listener of a Domain that is gone from the Gateway"
        );
    }
    Ok(())
}

/// Removes the listener the Domain's field manager applied to the Gateway, if it has one
/// there (only a Domain with the finalizer ever had one).
async fn remove_from_gateway(ctx: &DomainContext, domain: &Domain) -> kube::Result<()> {
    if !domain.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let routing = &ctx.ctx.config.routing;
    let gateways = gateways(ctx);
    // Applying to a Gateway that is gone would try to create one.
    if gateways.get_opt(&routing.gateway_name).await?.is_none() {
        return Ok(());
    }
    let manager = render::gateway_listener_manager(domain);
    take_off(&gateways, routing, &manager).await
}

/// Takes what field manager `manager` applied (one Domain's listener) off the Gateway, by
/// applying nothing under it.
async fn take_off(
    gateways: &Api<Gateway>,
    routing: &RoutingConfig,
    manager: &str,
) -> kube::Result<()> {
    gateways
        .patch(
            &routing.gateway_name,
            &PatchParams::apply(manager),
            &Patch::Apply(render::no_gateway_listener(routing)),
        )
        .await?;
    Ok(())
}

async fn add_finalizer(ctx: &DomainContext, domain: &Domain) -> kube::Result<()> {
    if domain.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let mut finalizers = domain.finalizers().to_vec();
    finalizers.push(FINALIZER.to_owned());
    set_finalizers(ctx, domain, json!(finalizers)).await
}

/// Writes the Domain's finalizers, guarded by its resourceVersion: another writer's
/// finalizer is never dropped (a conflict is retried with a fresh copy).
async fn set_finalizers(
    ctx: &DomainContext,
    domain: &Domain,
    finalizers: serde_json::Value,
) -> kube::Result<()> {
    let api = Api::<Domain>::namespaced(
        ctx.ctx.client.clone(),
        &domain.namespace().unwrap_or_default(),
    );
    let patch = json!({ "metadata": {
        "finalizers": finalizers,
        "resourceVersion": domain.resource_version(),
    } });
    api.patch(
        &domain.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}
