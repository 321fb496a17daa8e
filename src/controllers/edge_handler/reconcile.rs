//! One reconcile of an EdgeHandler: read (caches) → plan the Project's rules → let the
//! namespace reach the deny responder when a rule denies → status, and a Warning Event when
//! the handler is newly refused.

use std::collections::BTreeMap;

use gateway_api::apis::standard::referencegrants::{
    ReferenceGrant, ReferenceGrantFrom, ReferenceGrantSpec, ReferenceGrantTo,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PatchParams;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};

use super::status::{self, Observed};
use super::{EdgeContext, FROM_NAMESPACE_LABEL, plan_of};
use crate::api::conditions::{STALLED, find};
use crate::api::edge_handler::EdgeHandler;
use crate::config::ServicePort;
use crate::controllers::driver::reconciler;
use crate::controllers::error::Result;
use crate::controllers::events::publish;
use crate::controllers::{FIELD_MANAGER, applied, write_status};
use crate::labels::{MANAGED_BY, PROJECT_LABEL};
use crate::routing::edge::EDGE_RULES_ANNOTATION;

reconciler!(EdgeContext, EdgeHandler, reconcile_handler);

async fn reconcile_handler(handler: &EdgeHandler, edge: &EdgeContext) -> Result<Action> {
    let ctx = &edge.ctx;
    let namespace = handler.namespace().unwrap_or_default();
    let name = handler.name_any();
    let project = &handler.spec.project_ref.name;
    let previous = handler.status.clone().unwrap_or_default();

    let project_exists = edge
        .projects
        .get(&ObjectRef::new(project).within(&namespace))
        .is_some_and(|guard| guard.0.is_ok());
    let plan = plan_of(&edge.handlers, &namespace, project, &ctx.config.routing);
    if plan.denies()
        && let Some(responder) = &ctx.config.routing.deny_responder
    {
        let grant = deny_grant(&namespace, responder);
        let api = Api::<ReferenceGrant>::namespaced(ctx.client.clone(), &responder.namespace);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        applied::apply(&api, &edge.grants, &edge.applied, &params, &grant).await?;
    }

    let digest = plan.digest().unwrap_or_default();
    let observed = match plan.handlers.get(&name) {
        _ if !project_exists => Observed::NoProject { project },
        Some(Err(refusal)) => Observed::Refused(refusal),
        Some(Ok(rules)) => Observed::Applied {
            rules: *rules,
            digest: &digest,
            routes: routes_of(edge, &namespace, project),
        },
        // Not in the cache yet (just created): the next event brings it.
        None => return Ok(Action::requeue(std::time::Duration::from_secs(1))),
    };
    let next = status::next_status(&previous, handler.metadata.generation, &observed);
    let newly_stalled = find(&next.conditions, STALLED)
        .filter(|c| find(&previous.conditions, STALLED).map(|p| &p.message) != Some(&c.message));
    if let Some(stalled) = newly_stalled {
        publish(
            &ctx.recorder,
            handler,
            EventType::Warning,
            &stalled.reason,
            "Plan",
            &stalled.message,
        )
        .await;
    }
    write_status(&edge.ctx, handler, &next).await?;
    Ok(Action::requeue(ctx.config.resync_period))
}

/// The Project's routes (CloudDeck's, from the cache), each with the digest of the edge
/// rules it was last rendered with.
fn routes_of(edge: &EdgeContext, namespace: &str, project: &str) -> Vec<(String, Option<String>)> {
    edge.routes
        .state()
        .iter()
        .filter(|r| r.metadata.namespace.as_deref() == Some(namespace))
        .filter(|r| r.labels().get(PROJECT_LABEL).map(String::as_str) == Some(project))
        .map(|r| {
            let digest = r.annotations().get(EDGE_RULES_ANNOTATION).cloned();
            (r.name_any(), digest)
        })
        .collect()
}

/// Lets the HTTPRoutes of `namespace` send denied requests to the responder's Service in
/// the responder's namespace. It only ever answers with a status code, so the grant is
/// left in place when the namespace's last `deny` rule goes.
pub fn deny_grant(namespace: &str, responder: &ServicePort) -> ReferenceGrant {
    ReferenceGrant {
        metadata: ObjectMeta {
            name: Some(crate::routing::bounded_name("clouddeck-deny", namespace)),
            namespace: Some(responder.namespace.clone()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY.to_owned(), "clouddeck".to_owned()),
                (FROM_NAMESPACE_LABEL.to_owned(), namespace.to_owned()),
            ])),
            ..Default::default()
        },
        spec: ReferenceGrantSpec {
            from: vec![ReferenceGrantFrom {
                group: "gateway.networking.k8s.io".into(),
                kind: "HTTPRoute".into(),
                namespace: namespace.to_owned(),
            }],
            to: vec![ReferenceGrantTo {
                group: String::new(),
                kind: "Service".into(),
                name: Some(responder.name.clone()),
            }],
        },
    }
}
