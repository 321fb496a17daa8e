//! Types and schema pieces that several kinds share: references, header and Secret
//! selectors, the patterns the schema checks, and the helpers that add CEL rules.

use schemars::{JsonSchema, Schema};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// RFC 1123 DNS label: what a Kubernetes object name in a hostname must be.
pub const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// RFC 1123 subdomain, lowercase: a hostname such as `www.example.com`.
pub const HOSTNAME_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// A Go-style duration made of whole units: `30s`, `5m`, `1h30m`, `250ms`.
pub const DURATION_PATTERN: &str = r"^([0-9]+(ms|s|m|h))+$";

/// A git branch name: no whitespace nor the characters git refuses in ref names.
pub const BRANCH_PATTERN: &str = r"^[^\s~^:?*\[\\/.-][^\s~^:?*\[\\]*$";

/// A URL path: starts with `/`, no whitespace.
pub const PATH_PATTERN: &str = r"^/[^\s]*$";

/// An HTTP header name (RFC 7230 token).
pub const HEADER_NAME_PATTERN: &str = r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$";

/// Points at a Project in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct ProjectReference {
    /// Name of the Project, in the same namespace. Example: `storefront`.
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL_PATTERN))]
    pub name: String,
}

/// Points at a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SecretReference {
    /// Name of the Secret, in the same namespace.
    #[schemars(length(min = 1, max = 253), regex(pattern = HOSTNAME_PATTERN))]
    pub name: String,
}

/// Points at one key of a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SecretKeyReference {
    /// Name of the Secret, in the same namespace.
    #[schemars(length(min = 1, max = 253), regex(pattern = HOSTNAME_PATTERN))]
    pub name: String,
    /// Key within the Secret's data.
    #[serde(default = "default_secret_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

fn default_secret_key() -> String {
    "secret".into()
}

/// An HTTP header name and value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct HttpHeader {
    /// Header name, case-insensitive. Example: `Strict-Transport-Security`.
    #[schemars(length(min = 1, max = 256), regex(pattern = HEADER_NAME_PATTERN))]
    pub name: String,
    /// Header value. Example: `max-age=63072000; includeSubDomains`.
    #[schemars(length(max = 4096))]
    pub value: String,
}

/// Appends a CEL rule (`x-kubernetes-validations`) to a schema.
pub fn add_cel_rule(schema: &mut Schema, rule: &str, message: &str) {
    push_validation(schema, json!({ "rule": rule, "message": message }));
}

fn push_validation(schema: &mut Schema, validation: serde_json::Value) {
    let object = schema.ensure_object();
    let rules = object
        .entry("x-kubernetes-validations")
        .or_insert_with(|| json!([]));
    if let Some(rules) = rules.as_array_mut() {
        rules.push(validation);
    }
}

/// Marks a `conditions` list as a map keyed by `type`, so server-side apply merges
/// conditions one by one instead of replacing the list.
pub fn conditions_schema(generator: &mut schemars::SchemaGenerator) -> Schema {
    let mut schema =
        <Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>>::json_schema(generator);
    let object = schema.ensure_object();
    object.insert("x-kubernetes-list-type".into(), json!("map"));
    object.insert("x-kubernetes-list-map-keys".into(), json!(["type"]));
    object.insert("maxItems".into(), json!(16));
    schema
}

/// A free-form JSON object kept as the client sent it.
pub fn preserve_unknown_object(_: &mut schemars::SchemaGenerator) -> Schema {
    Schema::try_from(json!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    }))
    .expect("a JSON object is a schema")
}
