//! Kubernetes Events, the way every controller raises them: one [`Recorder`] per operator
//! (held in [`Context`], so repeated Events become a series instead of new objects),
//! reporting as `clouddeck` and this replica's Pod.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ApiResource, DynamicObject};
use kube::core::DeserializeGuard;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tracing::warn;

use super::Context;
use crate::telemetry::ErrorReason;

/// Who CloudDeck's Events say reported them: the controller `clouddeck`, and the pod
/// (`POD_NAME`, from the downward API) when there is one.
pub fn reporter() -> Reporter {
    Reporter {
        controller: "clouddeck".into(),
        instance: std::env::var("POD_NAME").ok(),
    }
}

/// Publishes an Event; a failure to publish is logged, never fatal.
pub async fn publish<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    obj: &K,
    type_: EventType,
    reason: &str,
    action: &str,
    message: &str,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(crate::truncate(message, 1000)),
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(err) = recorder.publish(&event, &obj.object_ref(&())).await {
        warn!(reason, error = %err, "cannot publish Event");
    }
}

/// Tells a failed reconcile as a Warning Event on the object, with the error's bounded
/// reason and its one-line text (never `Debug`); repeats become one Event series.
pub async fn report_error<K, E>(ctx: &Context, obj: &K, err: &E)
where
    K: Resource<DynamicType = ()>,
    E: ErrorReason + std::error::Error + 'static,
{
    let note = crate::one_line(err);
    // Deferred by the fan-out rate is not a failure, and says when it goes on.
    let type_ = if err.reason() == crate::delivery::fanout::THROTTLED {
        EventType::Normal
    } else {
        EventType::Warning
    };
    publish(&ctx.recorder, obj, type_, err.reason(), "Reconcile", &note).await;
}

/// Reports an object that does not even parse (e.g. stored under an older, looser CRD): a
/// Warning Event `InvalidObject` naming the field, a log line and a count, and no retry
/// until it changes.
pub async fn reject_malformed<K>(ctx: &Context, guard: &DeserializeGuard<K>, error: &str)
where
    K: Resource<DynamicType = ()> + DeserializeOwned,
{
    let meta = guard.meta();
    // The guard keeps only serde's message, which does not say where; one read of the raw
    // object, decoded again with its path kept, does (once per change of a broken object).
    let error = match where_malformed::<K>(ctx, meta).await {
        Some(located) => located,
        None => error.to_owned(),
    };
    warn!(name = ?meta.name, namespace = ?meta.namespace, error, "malformed object");
    ctx.metrics
        .reconcile
        .invalid_objects
        .get_or_create(&crate::telemetry::KindLabels {
            kind: K::kind(&()).into_owned(),
        })
        .inc();
    let message = format!("the object does not match its schema: {error}");
    publish(
        &ctx.recorder,
        guard,
        EventType::Warning,
        "InvalidObject",
        "Validate",
        &message,
    )
    .await;
}

/// `<field path>: <what is wrong>` for the stored object, or `None` if it cannot be read or
/// now decodes.
async fn where_malformed<K>(ctx: &Context, meta: &ObjectMeta) -> Option<String>
where
    K: Resource<DynamicType = ()> + DeserializeOwned,
{
    let resource = ApiResource::erase::<K>(&());
    let name = meta.name.as_deref()?;
    let api: Api<DynamicObject> = match &meta.namespace {
        Some(namespace) => Api::namespaced_with(ctx.client.clone(), namespace, &resource),
        None => Api::all_with(ctx.client.clone(), &resource),
    };
    let raw = serde_json::to_value(api.get(name).await.ok()?).ok()?;
    located_error::<K>(raw)
}

/// Decodes `raw` as a `K`, and on failure names the field: `spec.port: invalid value …`.
fn located_error<K: DeserializeOwned>(raw: serde_json::Value) -> Option<String> {
    match serde_path_to_error::deserialize::<_, K>(raw) {
        Ok(_) => None,
        Err(err) => Some(format!("{}: {}", err.path(), err.inner())),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::located_error;
    use crate::api::Project;

    #[test]
    fn a_malformed_object_is_reported_with_the_field_that_is_wrong() {
        let raw = json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "Project",
            "metadata": { "name": "shop", "namespace": "team-a" },
            "spec": { "image": "registry.local/app:1", "previewRetain": 4_294_967_296_i64 }
        });
        let error = located_error::<Project>(raw).unwrap();
        assert!(error.starts_with("spec.previewRetain: "), "{error}");
        assert!(error.contains("4294967296"), "{error}");
    }

    #[test]
    fn an_object_that_decodes_has_nothing_to_report() {
        let raw = json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "Project",
            "metadata": { "name": "shop" }, "spec": { "image": "registry.local/app:1" }
        });
        assert_eq!(located_error::<Project>(raw), None);
    }
}
