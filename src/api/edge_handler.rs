//! EdgeHandler: ordered request rules at the edge, compiled into HTTPRoute rules and filters.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    HEADER_NAME_PATTERN, HOSTNAME_PATTERN, HttpHeader, PATH_PATTERN, ProjectReference,
    conditions_schema,
};

/// Request rules at the edge for a Project: each rule matches requests (path, headers,
/// query) and applies exactly one action (redirect, rewrite, header changes or deny). Rules
/// are evaluated in order; the first match wins. Every hostname the Project is served under
/// gets them (production, previews, branch aliases, Domains), unless a rule's `appliesTo`
/// narrows it. Several EdgeHandlers of one Project apply in the order of their names. An
/// order the Gateway would not keep, or more rules than one HTTPRoute holds, is reported as
/// `Stalled` naming the rule, never silently dropped (see docs/edge.md).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "clouddeck.io",
    version = "v1alpha1",
    kind = "EdgeHandler",
    namespaced,
    status = "EdgeHandlerStatus",
    shortname = "edge",
    category = "clouddeck",
    derive = "PartialEq",
    doc = "Ordered request rules at the edge for a Project: match on path, headers and query, then redirect, rewrite, change headers or deny.",
    printcolumn = r#"{ "name": "Project", "type": "string", "jsonPath": ".spec.projectRef.name" }"#,
    printcolumn = r#"{ "name": "Rules", "type": "integer", "jsonPath": ".status.ruleCount" }"#,
    printcolumn = r#"{ "name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status" }"#,
    printcolumn = r#"{ "name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp" }"#,
    printcolumn = r#"{ "name": "Message", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].message", "priority": 1 }"#
)]
#[serde(rename_all = "camelCase")]
pub struct EdgeHandlerSpec {
    /// The Project whose traffic these rules apply to.
    pub project_ref: ProjectReference,

    /// The rules, in evaluation order. At most 15: an HTTPRoute holds 16 rules, and one
    /// sends the requests no rule matches to the application.
    #[schemars(length(min = 1, max = 15))]
    pub rules: Vec<EdgeRule>,
}

/// One rule: a match and exactly one action.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    { "rule": "[has(self.redirect), has(self.rewrite), has(self.headers), has(self.deny)].filter(x, x).size() == 1", "message": "a rule must have exactly one action: redirect, rewrite, headers or deny" },
    { "rule": "!has(self.redirect) || !has(self.redirect.path) || !has(self.redirect.path.replacePrefixMatch) || self.match.path.type == 'PathPrefix'", "message": "redirect.path.replacePrefixMatch needs a PathPrefix match" },
    { "rule": "!has(self.rewrite) || !has(self.rewrite.path) || !has(self.rewrite.path.replacePrefixMatch) || self.match.path.type == 'PathPrefix'", "message": "rewrite.path.replacePrefixMatch needs a PathPrefix match" }
]))]
pub struct EdgeRule {
    /// A name for the rule, used in conditions and events, e.g. `legacy-blog-redirect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = super::common::DNS_LABEL_PATTERN))]
    pub name: Option<String>,

    /// Which requests the rule applies to. All conditions must hold.
    #[serde(rename = "match", default)]
    pub matches: RequestMatch,

    /// Which of the Project's hostnames the rule applies to; all of them when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    pub applies_to: Vec<ServedHostname>,

    /// Redirect the client elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Redirect>,

    /// Rewrite the request before it reaches the application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Rewrite>,

    /// Add, set or remove request and response headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<HeaderActions>,

    /// Refuse the request with a status code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny: Option<Deny>,
}

/// A kind of hostname a Project is served under.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum ServedHostname {
    /// `<project>.<base domain>`.
    Production,
    /// Each Deployment's own `<project>--<id>.<base domain>`.
    Preview,
    /// `<project>--git-<branch>.<base domain>`.
    BranchAlias,
    /// Every verified Domain that serves the Project (not a Domain that only redirects).
    Domain,
}

impl ServedHostname {
    pub const ALL: [ServedHostname; 4] = [
        ServedHostname::Production,
        ServedHostname::Preview,
        ServedHostname::BranchAlias,
        ServedHostname::Domain,
    ];
}

/// Conditions on a request.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestMatch {
    /// The path condition; every path (prefix `/`) when omitted.
    #[serde(default)]
    pub path: PathMatch,

    /// Header conditions, e.g. `{name: User-Agent, type: RegularExpression, value: ".*bot.*"}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub headers: Vec<ValueMatch>,

    /// Query parameter conditions, e.g. `{name: utm_source, value: newsletter}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub query_params: Vec<ValueMatch>,
}

/// A path condition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    { "rule": "self.type == 'RegularExpression' || self.value.startsWith('/')", "message": "a PathPrefix or Exact path must start with /" }
]))]
pub struct PathMatch {
    /// `PathPrefix` (segment-wise prefix), `Exact`, or `RegularExpression` (RE2 syntax).
    #[serde(rename = "type", default)]
    pub kind: MatchType,
    /// The path, prefix or expression, e.g. `/blog` or `^/docs/v[0-9]+/.*`.
    #[serde(default = "default_path")]
    #[schemars(length(min = 1, max = 1024))]
    pub value: String,
}

impl Default for PathMatch {
    fn default() -> Self {
        PathMatch {
            kind: MatchType::PathPrefix,
            value: default_path(),
        }
    }
}

/// How a path is compared.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum MatchType {
    #[default]
    PathPrefix,
    Exact,
    RegularExpression,
}

/// A header or query parameter condition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValueMatch {
    /// Header or parameter name.
    #[schemars(length(min = 1, max = 256), regex(pattern = HEADER_NAME_PATTERN))]
    pub name: String,
    /// `Exact` or `RegularExpression` (RE2 syntax).
    #[serde(rename = "type", default)]
    pub kind: ValueMatchType,
    /// The value or expression.
    #[schemars(length(max = 4096))]
    pub value: String,
}

/// How a header or query value is compared.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ValueMatchType {
    #[default]
    Exact,
    RegularExpression,
}

/// Redirect the client. Unset parts keep the request's own.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Redirect {
    /// `http` or `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["http", "https"]))]
    pub scheme: Option<String>,
    /// Hostname to redirect to, e.g. `docs.example.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = HOSTNAME_PATTERN))]
    pub hostname: Option<String>,
    /// New path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
    /// Port to redirect to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// 301 or 308 (permanent), 302 or 307 (temporary).
    #[serde(default = "default_redirect_status")]
    #[schemars(extend("enum" = [301, 302, 307, 308]))]
    pub status_code: i32,
}

/// Rewrite the request on its way to the application.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    { "rule": "has(self.hostname) || has(self.path)", "message": "a rewrite needs a hostname or a path" }
]))]
pub struct Rewrite {
    /// Host header sent to the application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = HOSTNAME_PATTERN))]
    pub hostname: Option<String>,
    /// New path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
}

/// A new path: the whole path, or only the matched prefix. Exactly one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    { "rule": "has(self.replaceFullPath) != has(self.replacePrefixMatch)", "message": "exactly one of replaceFullPath or replacePrefixMatch must be set" }
]))]
pub struct PathModifier {
    /// Replaces the whole path, e.g. `/maintenance.html`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = PATH_PATTERN))]
    pub replace_full_path: Option<String>,
    /// Replaces the matched prefix, e.g. `/blog` → `/articles` keeps the rest of the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = PATH_PATTERN))]
    pub replace_prefix_match: Option<String>,
}

/// Header changes on the request (to the application) and on the response (to the client).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    { "rule": "has(self.request) || has(self.response)", "message": "headers needs request or response changes" }
]))]
pub struct HeaderActions {
    /// Changes to request headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderChanges>,
    /// Changes to response headers, e.g. security headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderChanges>,
}

/// Adds, sets and removes headers.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderChanges {
    /// Headers appended to any existing value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub add: Vec<HttpHeader>,
    /// Headers set, replacing any existing value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub set: Vec<HttpHeader>,
    /// Names of headers removed, e.g. `X-Powered-By`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 256), regex(pattern = HEADER_NAME_PATTERN)))]
    pub remove: Vec<String>,
}

/// Refuse matching requests.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deny {
    /// Status code answered, 400 to 599.
    #[serde(default = "default_deny_status")]
    #[schemars(range(min = 400, max = 599))]
    pub status_code: i32,
}

/// What the EdgeHandler's controller observed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EdgeHandlerStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling` and `Stalled`, with a CamelCase reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// How many rules are in effect at the edge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_count: Option<i32>,
    /// The HTTPRoutes that carry the rules, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
}

fn default_path() -> String {
    "/".into()
}
fn default_redirect_status() -> i32 {
    302
}
fn default_deny_status() -> i32 {
    403
}
