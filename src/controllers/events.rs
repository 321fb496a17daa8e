//! Kubernetes Events, the way every controller raises them: one [`Recorder`] per operator
//! (held in [`Context`], so repeated Events become a series instead of new objects),
//! reporting as `clouddeck` and this replica's Pod.

use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tracing::warn;

use super::Context;

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

/// Reports an object that does not even parse (e.g. written around the schema): a Warning
/// Event `InvalidObject`, and no retry until it changes.
pub async fn reject_malformed<K: Resource<DynamicType = ()>>(ctx: &Context, obj: &K, error: &str) {
    warn!(name = ?obj.meta().name, namespace = ?obj.meta().namespace, error, "malformed object");
    let message = format!("the object does not match its schema: {error}");
    publish(
        &ctx.recorder,
        obj,
        EventType::Warning,
        "InvalidObject",
        "Validate",
        &message,
    )
    .await;
}
