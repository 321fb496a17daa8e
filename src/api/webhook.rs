//! Webhook: a subscription that delivers CloudDeck events to an HTTP endpoint.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::CustomResource;
use schemars::{JsonSchema, Schema};
use serde::{Deserialize, Serialize};

use super::common::{
    DNS_LABEL_PATTERN, DURATION_PATTERN, SecretKeyReference, add_cel_rule, conditions_schema,
};

/// Every event type CloudDeck emits. Webhooks subscribe to these, to a wildcard of one
/// family (`deployment.*`), or to everything (`*`). The Webhook schema's CEL rule is built
/// from this list, so adding an event here is all it takes to make it subscribable.
pub const EVENT_TYPES: &[&str] = &[
    "deployment.created",
    "deployment.building",
    "deployment.ready",
    "deployment.failed",
    "deployment.promoted",
    "deployment.rolled_back",
    "domain.verified",
    "domain.verification_failed",
    "certificate.ready",
    "certificate.expiring",
    "cronjob.failed",
    "splittest.updated",
    "webhook.failing",
    "webhook.ping",
    "alert.build_failed",
    "alert.rollout_stalled",
    "alert.domain_verification_failed",
    "alert.certificate_expiring",
    "alert.cronjob_failed",
    "alert.webhook_failing",
];

/// The families of [`EVENT_TYPES`] (`deployment`, `alert`, ...), in catalogue order.
pub fn event_families() -> Vec<&'static str> {
    let mut families: Vec<&'static str> = Vec::new();
    for event in EVENT_TYPES {
        let family = event.split_once('.').map_or(*event, |(family, _)| family);
        if !families.contains(&family) {
            families.push(family);
        }
    }
    families
}

/// Whether `pattern` is something a Webhook may subscribe to: a catalogue event,
/// `<family>.*`, or `*`.
pub fn is_event_pattern(pattern: &str) -> bool {
    pattern == "*"
        || EVENT_TYPES.contains(&pattern)
        || pattern
            .strip_suffix(".*")
            .is_some_and(|family| event_families().contains(&family))
}

/// Whether an event of type `event` matches the subscription `pattern`.
pub fn event_matches(pattern: &str, event: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) if prefix.ends_with('.') => event.starts_with(prefix),
        _ => pattern == event,
    }
}

/// An outbound webhook subscription: CloudDeck POSTs matching events to `url`, signed per
/// the Standard Webhooks spec (or formatted for Slack), retries failures on a schedule, and
/// records every delivery as a WebhookDelivery.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "clouddeck.io",
    version = "v1alpha1",
    kind = "Webhook",
    namespaced,
    status = "WebhookStatus",
    shortname = "wh",
    category = "clouddeck",
    derive = "PartialEq",
    doc = "A subscription delivering CloudDeck events (deployments, domains, certificates, cron jobs, alerts) to an HTTP endpoint, signed per Standard Webhooks or formatted for Slack, with retries.",
    printcolumn = r#"{ "name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint" }"#,
    printcolumn = r#"{ "name": "Format", "type": "string", "jsonPath": ".spec.format" }"#,
    printcolumn = r#"{ "name": "Disabled", "type": "boolean", "jsonPath": ".spec.disabled" }"#,
    printcolumn = r#"{ "name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status" }"#,
    printcolumn = r#"{ "name": "Degraded", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Degraded\")].status" }"#,
    printcolumn = r#"{ "name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp" }"#,
    printcolumn = r#"{ "name": "Message", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].message", "priority": 1 }"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    { "rule": "self.format != 'standardWebhooks' || (has(self.secretRefs) && size(self.secretRefs) > 0)", "message": "spec.secretRefs is required for the standardWebhooks format: deliveries are signed" },
    { "rule": "has(self.url) != has(self.urlSecretRef)", "message": "give exactly one of spec.url and spec.urlSecretRef" }
]))]
pub struct WebhookSpec {
    /// The endpoint events are POSTed to, `https://` (or `http://` inside the cluster),
    /// e.g. `https://hooks.example.com/clouddeck`. Give this or `urlSecretRef`; a URL that
    /// is itself a credential (a Slack incoming-webhook URL) belongs in a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://[^\s]+$"))]
    #[schemars(transform = url_rule)]
    pub url: Option<String>,

    /// A key of a Secret in this namespace whose value is the endpoint URL: for a URL that
    /// is a credential, such as a Slack incoming-webhook URL (whoever knows it can post to
    /// the channel). Users who may read Webhooks but not Secrets never see it: status,
    /// Events and `kubectl get` show only its origin (`https://hooks.slack.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_secret_ref: Option<SecretKeyReference>,

    /// Event types to deliver: catalogue names such as `deployment.ready`, a family
    /// wildcard such as `deployment.*` or `alert.*`, or `*` for everything. The catalogue:
    /// deployment.created|building|ready|failed|promoted|rolled_back,
    /// domain.verified|verification_failed, certificate.ready|expiring, cronjob.failed,
    /// splittest.updated, webhook.failing|ping, alert.build_failed|rollout_stalled|
    /// domain_verification_failed|certificate_expiring|cronjob_failed|webhook_failing.
    #[schemars(length(min = 1, max = 32), inner(length(min = 1, max = 64)))]
    #[schemars(transform = events_rule)]
    pub events: Vec<String>,

    /// Which Projects' events are delivered. When omitted, every Project in the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_selector: Option<ProjectSelector>,

    /// Secrets holding the signing key (`whsec_` followed by base64, as Standard Webhooks
    /// specifies). List two to rotate: deliveries carry a signature for each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2))]
    pub secret_refs: Vec<SecretKeyReference>,

    /// `standardWebhooks`: JSON body with `webhook-id`, `webhook-timestamp` and
    /// `webhook-signature` headers. `slack`: a Slack-compatible `{"text": ...}` message,
    /// unsigned.
    #[serde(default)]
    pub format: WebhookFormat,

    /// How long to wait for the endpoint to answer, in seconds.
    #[serde(default = "default_timeout_seconds")]
    #[schemars(range(min = 1, max = 60))]
    pub timeout_seconds: i32,

    /// When to retry failed deliveries.
    #[serde(default)]
    pub retry: RetryPolicy,

    /// Stop delivering. Events raised meanwhile are not delivered later.
    #[serde(default)]
    pub disabled: bool,
}

/// Selects Projects by label and/or by name; a Project matching either is selected.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    { "rule": "has(self.matchLabels) || has(self.matchExpressions) || (has(self.names) && size(self.names) > 0)", "message": "spec.projectSelector needs labels or names; omit it to select every Project" }
]))]
pub struct ProjectSelector {
    /// Projects whose labels match, e.g. `{team: storefront}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<std::collections::BTreeMap<String, String>>,
    /// Label selector requirements, as in any Kubernetes label selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub match_expressions:
        Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement>>,
    /// Projects by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 63), regex(pattern = DNS_LABEL_PATTERN)))]
    pub names: Vec<String>,
}

impl ProjectSelector {
    /// The label part as a Kubernetes LabelSelector.
    pub fn label_selector(&self) -> LabelSelector {
        LabelSelector {
            match_labels: self.match_labels.clone(),
            match_expressions: self.match_expressions.clone(),
        }
    }
}

/// Payload formats.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum WebhookFormat {
    #[default]
    StandardWebhooks,
    Slack,
}

/// Retries of failed deliveries (a non-2xx answer, a timeout or a connection error).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Delays before each retry, after the first attempt, with up to 20% random jitter.
    /// The default follows Svix: 5s, 5m, 30m, 2h, 5h, 10h, 10h — eight attempts over
    /// about 28 hours. An empty list means no retries.
    #[serde(default = "default_retry_schedule")]
    #[schemars(length(max = 16), inner(length(min = 2, max = 16), regex(pattern = DURATION_PATTERN)))]
    pub schedule: Vec<String>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            schedule: default_retry_schedule(),
        }
    }
}

impl Webhook {
    /// The `Stalled=True` condition, if the controller stalled this Webhook for `reason`
    /// (for example [the fan-out cap](crate::delivery::fanout) or a receiver that answered
    /// 410 Gone).
    pub fn stalled_because(&self, reason: &str) -> Option<&Condition> {
        let conditions = self.status.as_ref()?.conditions.as_slice();
        super::conditions::find(conditions, super::conditions::STALLED)
            .filter(|c| c.status == "True" && c.reason == reason)
    }
}

/// What the Webhook's controller observed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling`, `Stalled` and `Degraded` (recent deliveries failing), with
    /// a CamelCase reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Deliveries that failed in a row, across events; reset by a success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<i32>,
    /// When the endpoint last answered with a 2xx. While deliveries keep succeeding it is
    /// written at most every 10 seconds, so it may lag the latest success by that much.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_time: Option<Time>,
    /// When a delivery attempt last failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<Time>,
    /// Where deliveries go, as an origin (`https://hooks.example.com`): never a path or
    /// query, which may carry a token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

fn default_timeout_seconds() -> i32 {
    15
}

/// Svix's retry schedule, after the immediate first attempt.
pub fn default_retry_schedule() -> Vec<String> {
    ["5s", "5m", "30m", "2h", "5h", "10h", "10h"]
        .map(String::from)
        .to_vec()
}

fn url_rule(schema: &mut Schema) {
    add_cel_rule(
        schema,
        "isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''",
        "spec.url must be an absolute http(s) URL with a host",
    );
}

/// The CEL list of catalogue events, e.g. `['deployment.created', ...]`.
fn cel_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let quoted: Vec<String> = items.into_iter().map(|e| format!("'{e}'")).collect();
    format!("[{}]", quoted.join(", "))
}

/// The CEL predicate, on one event string `self`, of [`is_event_pattern`].
fn event_pattern_rule() -> String {
    format!(
        "self == '*' || self in {} || (self.endsWith('.*') && self.substring(0, self.size() - 2) in {})",
        cel_list(EVENT_TYPES.iter().copied()),
        cel_list(event_families()),
    )
}

/// Puts the catalogue rule on each item, so that the apiserver names the offending entry
/// (`spec.events[1]`).
fn events_rule(schema: &mut Schema) {
    if let Some(items) = schema.get_mut("items") {
        let mut item = Schema::try_from(items.take()).expect("items is a schema");
        add_cel_rule(
            &mut item,
            &event_pattern_rule(),
            "unknown event type: use a catalogue event such as deployment.ready, a wildcard such as deployment.* or alert.*, or *",
        );
        *items = item.to_value();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_patterns() {
        assert!(is_event_pattern("*"));
        assert!(is_event_pattern("deployment.*"));
        assert!(is_event_pattern("alert.*"));
        assert!(is_event_pattern("alert.build_failed"));
        assert!(!is_event_pattern("deploy.*"));
        assert!(!is_event_pattern("deployment.exploded"));
        assert!(!is_event_pattern("deployment"));
        assert!(!is_event_pattern(""));
    }

    #[test]
    fn event_matching() {
        assert!(event_matches("*", "alert.build_failed"));
        assert!(event_matches("alert.*", "alert.build_failed"));
        assert!(!event_matches("alert.*", "deployment.ready"));
        assert!(event_matches("deployment.ready", "deployment.ready"));
        assert!(!event_matches("deployment.ready", "deployment.failed"));
    }

    #[test]
    fn every_event_is_family_dot_name() {
        for event in EVENT_TYPES {
            let (family, name) = event.split_once('.').expect("family.name");
            assert!(!family.is_empty() && !name.is_empty() && !name.contains('*'));
        }
        assert!(event_families().contains(&"alert"));
    }

    #[test]
    fn schema_rule_is_built_from_the_catalogue() {
        let crd = serde_json::to_string(&<Webhook as kube::CustomResourceExt>::crd()).unwrap();
        for event in EVENT_TYPES {
            assert!(
                crd.contains(&format!("'{event}'")),
                "{event} missing from the CEL rule"
            );
        }
    }
}
