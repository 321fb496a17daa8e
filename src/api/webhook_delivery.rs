//! WebhookDelivery: the delivery log and durable outbox of one event to one Webhook.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{HOSTNAME_PATTERN, ProjectReference, conditions_schema};

/// Annotation that asks for a delivery to be attempted again (any new value, e.g. the
/// current time): `kubectl annotate whd <name> clouddeck.io/redeliver="$(date +%s)" --overwrite`.
pub const REDELIVER_ANNOTATION: &str = "clouddeck.io/redeliver";

/// Longest response body kept per attempt, in bytes; longer bodies are truncated.
pub const MAX_RESPONSE_BODY_BYTES: usize = 1024;

/// Attempts kept in `status.attempts`; older ones are dropped (the count stays exact).
pub const MAX_RECORDED_ATTEMPTS: usize = 20;

/// One event delivered to one Webhook: written by the operator before the first attempt,
/// it holds the payload, every attempt and the next retry time, so deliveries survive
/// restarts and can be audited and redelivered. Created by CloudDeck, not by hand.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "clouddeck.io",
    version = "v1alpha1",
    kind = "WebhookDelivery",
    namespaced,
    status = "WebhookDeliveryStatus",
    shortname = "whd",
    category = "clouddeck",
    derive = "PartialEq",
    selectable = ".spec.webhookRef.name",
    selectable = ".spec.eventType",
    doc = "One event delivered to one Webhook: the payload, every attempt (time, status code, latency, error) and the next retry time. Annotate with clouddeck.io/redeliver to deliver again.",
    printcolumn = r#"{ "name": "Event", "type": "string", "jsonPath": ".spec.eventType" }"#,
    printcolumn = r#"{ "name": "Webhook", "type": "string", "jsonPath": ".spec.webhookRef.name" }"#,
    printcolumn = r#"{ "name": "Phase", "type": "string", "jsonPath": ".status.phase" }"#,
    printcolumn = r#"{ "name": "Attempts", "type": "integer", "jsonPath": ".status.attemptCount" }"#,
    printcolumn = r#"{ "name": "Last Status", "type": "integer", "jsonPath": ".status.lastStatusCode" }"#,
    printcolumn = r#"{ "name": "Next Attempt", "type": "date", "jsonPath": ".status.nextAttemptTime", "priority": 1 }"#,
    printcolumn = r#"{ "name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp" }"#,
    printcolumn = r#"{ "name": "Message", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].message", "priority": 1 }"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    { "rule": "self == oldSelf", "message": "a WebhookDelivery's spec is immutable: it records what was sent" }
]))]
pub struct WebhookDeliverySpec {
    /// The Webhook this is delivered to.
    pub webhook_ref: WebhookReference,

    /// The event type, e.g. `deployment.ready`.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[a-z_]+\.[a-z_]+$"))]
    pub event_type: String,

    /// The `webhook-id` header: the same for every attempt of this delivery, so receivers
    /// can deduplicate, e.g. `msg_2b1f0c7e9a`.
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9_.-]+$"))]
    pub webhook_id: String,

    /// When the event happened (the payload's `timestamp`).
    pub timestamp: Time,

    /// The Project the event is about, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_ref: Option<ProjectReference>,

    /// The JSON body sent, exactly as delivered (before signing), as text: a string has no
    /// depth, so no payload can make the object too deep to decode (at most 256 KiB).
    #[schemars(length(max = 262144))]
    pub payload: String,
}

impl WebhookDeliverySpec {
    /// The payload as JSON (`Null` if it is not JSON, which the operator never writes).
    pub fn payload_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.payload).unwrap_or_default()
    }
}

/// Points at a Webhook in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct WebhookReference {
    /// Name of the Webhook.
    #[schemars(length(min = 1, max = 253), regex(pattern = HOSTNAME_PATTERN))]
    pub name: String,
}

/// Pending (first attempt not made), Retrying (failed, another attempt scheduled),
/// Delivered (a 2xx answer) or Failed (retries exhausted).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DeliveryPhase {
    Pending,
    Retrying,
    Delivered,
    Failed,
}

/// The delivery log.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookDeliveryStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (delivered), `Reconciling` (attempts in progress) and `Stalled`, with a
    /// CamelCase reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Pending, Retrying, Delivered or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<DeliveryPhase>,
    /// How many attempts were made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_count: Option<i32>,
    /// HTTP status code of the latest attempt, if the endpoint answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status_code: Option<i32>,
    /// When the next attempt is due (Pending and Retrying only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_time: Option<Time>,
    /// When a 2xx answer was received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_time: Option<Time>,
    /// The last redelivery request (value of the `clouddeck.io/redeliver` annotation)
    /// acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redelivery_handled: Option<String>,
    /// The latest attempts, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub attempts: Vec<DeliveryAttempt>,
}

/// One HTTP attempt.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryAttempt {
    /// When the attempt started.
    pub time: Time,
    /// HTTP status code answered; absent when no answer came (timeout, connection error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<i32>,
    /// Time to the answer or the error, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<i64>,
    /// Start of the response body, truncated to 1024 bytes; only from a receiver on a
    /// public address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub response_body: Option<String>,
    /// Why the attempt failed without an answer, e.g. `timed out after 15s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub error: Option<String>,
}
