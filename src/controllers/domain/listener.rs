//! A verified Domain's HTTPS listener, where `--domain-listeners` puts it: a ListenerSet
//! in the Domain's namespace (owned by the Domain, deleted with it), or a listener on the
//! operator's Gateway itself, for gateways that do not implement ListenerSet. The Gateway
//! is shared, so its listener is written by server-side apply under a field manager of
//! the Domain's own (applying nothing under it removes exactly that listener), and a
//! finalizer on the Domain removes it before the Domain goes.

use gateway_api::apis::standard::gateways::Gateway;
use gateway_api::apis::standard::listenersets::ListenerSet;
use gateway_api::apis::standard::referencegrants::ReferenceGrant;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::DomainContext;
use super::render;
use crate::api::domain::Domain;
use crate::config::DomainListeners;
use crate::controllers::{FIELD_MANAGER, delete_if_present};

/// Holds a Domain whose listener is on the Gateway until that listener is removed.
pub const FINALIZER: &str = "clouddeck.io/gateway-listener";

/// Applies the Domain's listener for `hostname`, terminating TLS with `secret`, and
/// removes the other kind if the Domain had it (the setting changed).
pub async fn apply(
    ctx: &DomainContext,
    domain: &Domain,
    (hostname, secret): (&str, &str),
    owner: &OwnerReference,
) -> kube::Result<()> {
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
            listener_sets
                .patch(&set_name, &apply, &Patch::Apply(&set))
                .await?;
            remove_from_gateway(ctx, domain).await?;
        }
        DomainListeners::Gateway => {
            add_finalizer(ctx, domain).await?;
            let grant = render::listener_grant(domain, secret, routing, owner);
            Api::<ReferenceGrant>::namespaced(ctx.ctx.client.clone(), &namespace)
                .patch(&set_name, &apply, &Patch::Apply(&grant))
                .await?;
            // Not forced: a conflict means someone else wrote this Domain's listener.
            let own = PatchParams::apply(&render::gateway_listener_manager(domain));
            gateways(ctx)
                .patch(
                    &routing.gateway_name,
                    &own,
                    &Patch::Apply(render::gateway_listener(domain, routing, Some(listener))),
                )
                .await?;
            delete_if_present(&listener_sets, &set_name).await?;
        }
    }
    Ok(())
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
    Api::namespaced(
        ctx.ctx.client.clone(),
        &ctx.ctx.config.routing.gateway_namespace,
    )
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
    let own = PatchParams::apply(&render::gateway_listener_manager(domain));
    gateways
        .patch(
            &routing.gateway_name,
            &own,
            &Patch::Apply(render::gateway_listener(domain, routing, None)),
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
