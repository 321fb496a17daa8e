//! Kubernetes Events, the way every controller raises them: one [`Recorder`] per operator
//! (held in [`Context`], so repeated Events become a series instead of new objects),
//! reporting as `clouddeck` and this replica's Pod.

use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
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

/// Reports an object that does not even parse (e.g. written around the schema): a Warning
/// Event `InvalidObject`, and no retry until it changes.
pub async fn reject_malformed<K: Resource<DynamicType = ()>>(ctx: &Context, obj: &K, error: &str) {
    warn!(name = ?obj.meta().name, namespace = ?obj.meta().namespace, error, "malformed object");
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
        obj,
        EventType::Warning,
        "InvalidObject",
        "Validate",
        &message,
    )
    .await;
}
