//! SplitTest: A/B traffic between deployments or branches of a Project.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    BRANCH_PATTERN, DNS_LABEL_PATTERN, HEADER_NAME_PATTERN, HOSTNAME_PATTERN, ProjectReference,
    conditions_schema,
};

/// A cookie name (RFC 6265 token).
const COOKIE_NAME_PATTERN: &str = r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$";

/// An A/B test on a Project's production traffic: weighted variants, each a Deployment or
/// the latest deployment of a branch, with sticky assignment by cookie and a header or
/// cookie to force a variant. Compiled into the production HTTPRoute.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "clouddeck.io",
    version = "v1alpha1",
    kind = "SplitTest",
    namespaced,
    status = "SplitTestStatus",
    shortname = "split",
    category = "clouddeck",
    derive = "PartialEq",
    doc = "An A/B split of a Project's production traffic between deployments or branches, with weights, sticky cookies and forced variants.",
    printcolumn = r#"{ "name": "Project", "type": "string", "jsonPath": ".spec.projectRef.name" }"#,
    printcolumn = r#"{ "name": "Active", "type": "boolean", "jsonPath": ".spec.active" }"#,
    printcolumn = r#"{ "name": "Phase", "type": "string", "jsonPath": ".status.phase" }"#,
    printcolumn = r#"{ "name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status" }"#,
    printcolumn = r#"{ "name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp" }"#,
    printcolumn = r#"{ "name": "Message", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].message", "priority": 1 }"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    { "rule": "self.variants.map(v, v.weight).sum() == 100", "message": "spec.variants weights must sum to 100", "fieldPath": ".variants" },
    { "rule": "self.variants.all(v, self.variants.exists_one(w, w.name == v.name))", "message": "spec.variants names must be unique", "fieldPath": ".variants" },
    { "rule": "!has(self.startTime) || !has(self.stopTime) || timestamp(self.stopTime) > timestamp(self.startTime)", "message": "spec.stopTime must be after spec.startTime", "fieldPath": ".stopTime" }
]))]
pub struct SplitTestSpec {
    /// The Project whose production traffic is split.
    pub project_ref: ProjectReference,

    /// The variants, 2 to 5. Weights are percentages and sum to 100. Each served variant
    /// takes three of the production route's 16 rules (override header, override cookie,
    /// sticky cookie).
    #[schemars(length(min = 2, max = 5))]
    pub variants: Vec<Variant>,

    /// Keeps a visitor on the variant first assigned.
    #[serde(default)]
    pub stickiness: Stickiness,

    /// Forces a variant by name, for testing: send the header or set the cookie to a
    /// variant's name.
    #[serde(default, rename = "override")]
    pub force: VariantOverride,

    /// Whether the split is applied. When false, production serves as if there were no
    /// split test.
    #[serde(default = "default_true")]
    pub active: bool,

    /// The split starts at this time (RFC 3339), e.g. `2026-12-01T09:00:00Z`; at once when
    /// omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,

    /// The split stops at this time (RFC 3339); runs until deleted or deactivated when
    /// omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_time: Option<Time>,
}

/// One variant.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    { "rule": "has(self.deployment) != has(self.branch)", "message": "a variant needs exactly one of deployment or branch" }
]))]
pub struct Variant {
    /// Name of the variant, used in the sticky cookie and to force it, e.g. `control`.
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL_PATTERN))]
    pub name: String,
    /// A Deployment of the Project, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = HOSTNAME_PATTERN))]
    pub deployment: Option<String>,
    /// The latest Ready deployment of this branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255), regex(pattern = BRANCH_PATTERN))]
    pub branch: Option<String>,
    /// Share of traffic, in percent.
    #[schemars(range(min = 0, max = 100))]
    pub weight: i32,
}

/// Sticky assignment.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Stickiness {
    /// Cookie recording the assigned variant.
    #[serde(default = "default_sticky_cookie")]
    #[schemars(length(min = 1, max = 128), regex(pattern = COOKIE_NAME_PATTERN))]
    pub cookie_name: String,
    /// How long the assignment lasts, in seconds (default 30 days).
    #[serde(default = "default_sticky_max_age")]
    #[schemars(range(min = 60, max = 31536000))]
    pub max_age_seconds: i32,
}

impl Default for Stickiness {
    fn default() -> Self {
        Stickiness {
            cookie_name: default_sticky_cookie(),
            max_age_seconds: default_sticky_max_age(),
        }
    }
}

/// Where a forced variant name is read from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VariantOverride {
    /// Request header naming the variant to serve.
    #[serde(default = "default_override_header")]
    #[schemars(length(min = 1, max = 256), regex(pattern = HEADER_NAME_PATTERN))]
    pub header: String,
    /// Cookie naming the variant to serve.
    #[serde(default = "default_override_cookie")]
    #[schemars(length(min = 1, max = 128), regex(pattern = COOKIE_NAME_PATTERN))]
    pub cookie: String,
}

impl Default for VariantOverride {
    fn default() -> Self {
        VariantOverride {
            header: default_override_header(),
            cookie: default_override_cookie(),
        }
    }
}

/// Scheduled (before startTime), Running, or Stopped (inactive or past stopTime).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SplitTestPhase {
    Scheduled,
    Running,
    Stopped,
}

/// What the SplitTest's controller observed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SplitTestStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling` and `Stalled`, with a CamelCase reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Scheduled, Running or Stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SplitTestPhase>,
    /// The Deployment each variant resolved to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub variants: Vec<VariantStatus>,
}

/// The resolved Deployment of one variant.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VariantStatus {
    /// The variant's name.
    pub name: String,
    /// The Deployment serving it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// Its weight in effect.
    pub weight: i32,
}

fn default_true() -> bool {
    true
}
fn default_sticky_cookie() -> String {
    "clouddeck-split".into()
}
fn default_sticky_max_age() -> i32 {
    30 * 24 * 3600
}
fn default_override_header() -> String {
    "X-Clouddeck-Variant".into()
}
fn default_override_cookie() -> String {
    "clouddeck-variant".into()
}
