//! What is delivered: the platform event, the two payload formats, and the names and ids
//! that make publishing idempotent.
//!
//! Standard Webhooks JSON (the default):
//!
//! ```json
//! {"type": "deployment.ready", "timestamp": "2026-11-29T10:15:00Z",
//!  "data": {"namespace": "shop", "project": "storefront", "deployment": "storefront-3f9c2ab",
//!           "url": "https://storefront-3f9c2ab.apps.example.com"}}
//! ```
//!
//! Slack-compatible (`format: slack`): `{"text": ..., "blocks": [...]}`, which Slack
//! incoming webhooks, Mattermost and Rocket.Chat render.

use std::collections::BTreeMap;

use jiff::Timestamp;
use ring::digest;
use serde_json::{Value, json};

use crate::api::webhook::WebhookFormat;

/// Something that happened on the platform, as the controllers raise it.
#[derive(Clone, Debug, PartialEq)]
pub struct PlatformEvent {
    /// A catalogue type, e.g. `deployment.ready` (see `api::webhook::EVENT_TYPES`).
    pub event_type: String,
    /// Identifies this occurrence, stable when the same occurrence is published again
    /// (e.g. after a controller restart): `<object uid>/<event type>/<generation or phase>`.
    /// Deliveries are named after it, so publishing twice creates nothing new.
    pub id: String,
    /// Namespace of the object the event is about; only Webhooks there receive it.
    pub namespace: String,
    /// The Project the event is about, with its labels for `spec.projectSelector`.
    pub project: Option<EventProject>,
    pub timestamp: Timestamp,
    /// One line for humans, e.g. `storefront: deployment storefront-3f9c2ab is ready`.
    pub summary: String,
    /// Event-specific fields (object, URLs, commit, reason, message). Never a secret.
    pub data: serde_json::Map<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventProject {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

impl PlatformEvent {
    /// An event about `namespace`, with the current time and no data yet.
    pub fn new(
        event_type: &str,
        id: impl Into<String>,
        namespace: &str,
        summary: impl Into<String>,
    ) -> Self {
        PlatformEvent {
            event_type: event_type.to_string(),
            id: id.into(),
            namespace: namespace.to_string(),
            project: None,
            timestamp: Timestamp::now(),
            summary: summary.into(),
            data: serde_json::Map::new(),
        }
    }

    pub fn with_project(mut self, name: &str, labels: BTreeMap<String, String>) -> Self {
        self.project = Some(EventProject {
            name: name.to_string(),
            labels,
        });
        self
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.data.insert(key.to_string(), value.into());
        self
    }
}

/// The JSON body for a Webhook of `format`. Serialized with sorted keys (serde_json's
/// map), so the bytes signed and sent are the same on every attempt.
pub fn render(format: WebhookFormat, event: &PlatformEvent) -> Value {
    match format {
        WebhookFormat::StandardWebhooks => standard_webhooks(event),
        WebhookFormat::Slack => slack(event),
    }
}

/// `{"type", "timestamp", "data"}`; `data` always carries `namespace` and, when there is
/// one, `project`.
pub fn standard_webhooks(event: &PlatformEvent) -> Value {
    let mut data = event.data.clone();
    data.insert("namespace".into(), json!(event.namespace));
    if let Some(project) = &event.project {
        data.insert("project".into(), json!(project.name));
    }
    json!({
        "type": event.event_type,
        "timestamp": rfc3339(event.timestamp),
        "data": data,
    })
}

/// `{"text", "blocks"}`: the summary as the notification text, and a context line with
/// the event type, namespace and project. Slack escapes `&`, `<` and `>` in text.
pub fn slack(event: &PlatformEvent) -> Value {
    let text = slack_escape(&event.summary);
    let mut context = vec![
        format!("`{}`", event.event_type),
        format!("namespace `{}`", slack_escape(&event.namespace)),
    ];
    if let Some(project) = &event.project {
        context.push(format!("project `{}`", slack_escape(&project.name)));
    }
    if let Some(Value::String(url)) = event.data.get("url") {
        context.push(format!("<{}|open>", slack_escape(url)));
    }
    json!({
        "text": text,
        "blocks": [
            { "type": "section", "text": { "type": "mrkdwn", "text": text } },
            { "type": "context", "elements": [ { "type": "mrkdwn", "text": context.join(" · ") } ] },
        ],
    })
}

fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// RFC 3339 with whole seconds, as Kubernetes writes times.
pub fn rfc3339(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn sha256_hex(parts: &[&str]) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for part in parts {
        ctx.update(part.as_bytes());
        ctx.update(&[0]);
    }
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `webhook-id` of an event: the same for every Webhook and every attempt, so a
/// receiver subscribed twice, or receiving a retry, can deduplicate.
pub fn webhook_id(event: &PlatformEvent) -> String {
    format!("msg_{}", &sha256_hex(&[&event.namespace, &event.id])[..24])
}

/// The WebhookDelivery's name for (event, Webhook): `<webhook>-<10 hex>`, deterministic so
/// that publishing the same event again finds the object already there. Always a valid
/// object name (at most 253 characters, DNS subdomain).
pub fn delivery_name(event: &PlatformEvent, webhook: &str) -> String {
    let hash = &sha256_hex(&[&event.namespace, &event.id, webhook])[..10];
    let mut prefix: String = webhook.chars().take(253 - 11).collect();
    while prefix.ends_with(['.', '-']) {
        prefix.pop();
    }
    format!("{prefix}-{hash}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> PlatformEvent {
        PlatformEvent {
            event_type: "deployment.ready".into(),
            id: "3b0f/deployment.ready/1".into(),
            namespace: "shop".into(),
            project: Some(EventProject {
                name: "storefront".into(),
                labels: BTreeMap::new(),
            }),
            timestamp: "2026-11-29T10:15:00.123Z".parse().unwrap(),
            summary: "storefront: deployment storefront-3f9c2ab is ready <https://x>".into(),
            data: serde_json::Map::new(),
        }
        .with("deployment", "storefront-3f9c2ab")
        .with("url", "https://storefront-3f9c2ab.apps.example.com")
    }

    #[test]
    fn standard_webhooks_body() {
        let body = standard_webhooks(&event());
        assert_eq!(
            body,
            json!({
                "type": "deployment.ready",
                "timestamp": "2026-11-29T10:15:00Z",
                "data": {
                    "namespace": "shop",
                    "project": "storefront",
                    "deployment": "storefront-3f9c2ab",
                    "url": "https://storefront-3f9c2ab.apps.example.com",
                }
            })
        );
        // Keys sorted: the same bytes every time the stored payload is serialized.
        let text = serde_json::to_string(&body).unwrap();
        assert!(text.starts_with(r#"{"data":{"deployment":"#), "{text}");
        assert_eq!(render(WebhookFormat::StandardWebhooks, &event()), body);
    }

    #[test]
    fn slack_body() {
        let body = slack(&event());
        let text = "storefront: deployment storefront-3f9c2ab is ready &lt;https://x&gt;";
        assert_eq!(body["text"], text);
        assert_eq!(body["blocks"][0]["text"]["text"], text);
        let context = body["blocks"][1]["elements"][0]["text"].as_str().unwrap();
        assert!(context.contains("`deployment.ready`"), "{context}");
        assert!(context.contains("project `storefront`"), "{context}");
        assert!(
            context.contains("<https://storefront-3f9c2ab.apps.example.com|open>"),
            "{context}"
        );
        assert_eq!(render(WebhookFormat::Slack, &event()), body);
    }

    #[test]
    fn names_and_ids_are_deterministic() {
        let e = event();
        assert_eq!(
            delivery_name(&e, "storefront-events"),
            delivery_name(&e.clone(), "storefront-events")
        );
        assert_ne!(
            delivery_name(&e, "storefront-events"),
            delivery_name(&e, "alerts")
        );
        let mut other = e.clone();
        other.id = "3b0f/deployment.ready/2".into();
        assert_ne!(delivery_name(&e, "w"), delivery_name(&other, "w"));
        assert_ne!(webhook_id(&e), webhook_id(&other));
        let mut elsewhere = e.clone();
        elsewhere.namespace = "other".into();
        assert_ne!(delivery_name(&e, "w"), delivery_name(&elsewhere, "w"));

        let name = delivery_name(&e, "storefront-events");
        assert!(
            name.starts_with("storefront-events-") && name.len() == "storefront-events".len() + 11
        );
        let id = webhook_id(&e);
        assert!(id.starts_with("msg_") && id.len() == 28);
        assert!(id[4..].bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn long_webhook_names_still_give_valid_object_names() {
        let long = format!("{}.{}", "a".repeat(200), "b-".repeat(30));
        let name = delivery_name(&event(), &long);
        assert!(name.len() <= 253, "{}", name.len());
        assert!(
            !name.contains("-.") && !name.contains(".-") && !name.contains("--"),
            "{name}"
        );
    }
}
