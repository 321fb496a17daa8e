//! Domain: a custom hostname for a Project, verified by DNS, with TLS.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{BRANCH_PATTERN, HOSTNAME_PATTERN, ProjectReference, conditions_schema};

/// A hostname, or a wildcard (`*.example.com`) that the operator accepts only when
/// configured to (`--allow-wildcard-domains`).
pub const DOMAIN_HOSTNAME_PATTERN: &str =
    r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// A custom hostname (apex or sub-domain) serving a Project's production, or one branch,
/// or redirecting to another Domain. Ownership is proven by a DNS TXT record whose name and
/// value `status.verification` shows; a hostname claimed in another namespace is refused.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "clouddeck.io",
    version = "v1alpha1",
    kind = "Domain",
    namespaced,
    status = "DomainStatus",
    shortname = "dom",
    category = "clouddeck",
    derive = "PartialEq",
    selectable = ".spec.hostname",
    doc = "A custom hostname for a Project, verified through a DNS TXT record, with TLS from cert-manager or a given Secret, optionally redirecting to another Domain.",
    printcolumn = r#"{ "name": "Host", "type": "string", "jsonPath": ".spec.hostname" }"#,
    printcolumn = r#"{ "name": "Project", "type": "string", "jsonPath": ".spec.projectRef.name" }"#,
    printcolumn = r#"{ "name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status" }"#,
    printcolumn = r#"{ "name": "Verified", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Verified\")].status" }"#,
    printcolumn = r#"{ "name": "Certificate", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"CertificateReady\")].status" }"#,
    printcolumn = r#"{ "name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp" }"#,
    printcolumn = r#"{ "name": "Message", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].message", "priority": 1 }"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    { "rule": "!has(self.redirectTo) || self.redirectTo.domain != self.hostname", "message": "spec.redirectTo.domain must differ from spec.hostname", "fieldPath": ".redirectTo.domain" },
    { "rule": "!has(self.redirectTo) || !has(self.branch)", "message": "spec.branch and spec.redirectTo are mutually exclusive: a redirecting Domain serves no deployment" }
]))]
pub struct DomainSpec {
    /// The fully qualified hostname, lowercase, without a trailing dot, e.g.
    /// `example.com` or `www.example.com`; internationalised names in punycode
    /// (`xn--bcher-kva.example`). `*.example.com` only where the operator allows wildcard
    /// domains. Cannot be changed.
    #[schemars(length(min = 1, max = 253), regex(pattern = DOMAIN_HOSTNAME_PATTERN))]
    #[schemars(extend("x-kubernetes-validations" = [
        { "rule": "self == oldSelf", "message": "spec.hostname is immutable" }
    ]))]
    pub hostname: String,

    /// The Project served at this hostname.
    pub project_ref: ProjectReference,

    /// Serve the latest deployment of this branch instead of production, e.g. `staging`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255), regex(pattern = BRANCH_PATTERN))]
    pub branch: Option<String>,

    /// Redirect every request to another hostname (typically `www` → apex), keeping the
    /// path and query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_to: Option<DomainRedirect>,

    /// Where the TLS certificate comes from. When omitted, the operator's default
    /// cert-manager issuer is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<DomainTls>,
}

/// A redirect to another hostname.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DomainRedirect {
    /// The hostname to redirect to, e.g. `example.com`.
    #[schemars(length(min = 1, max = 253), regex(pattern = HOSTNAME_PATTERN))]
    pub domain: String,

    /// HTTP status code: 301 or 308 (permanent), 302 or 307 (temporary). 307 and 308
    /// keep the request method.
    #[serde(default = "default_redirect_status")]
    #[schemars(extend("enum" = [301, 302, 307, 308]))]
    pub status_code: i32,
}

/// TLS for a Domain: a cert-manager issuer or an existing Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    { "rule": "has(self.issuerRef) != has(self.secretName)", "message": "exactly one of spec.tls.issuerRef or spec.tls.secretName must be set" }
]))]
pub struct DomainTls {
    /// A cert-manager Issuer or ClusterIssuer that issues the certificate (ACME HTTP-01
    /// works once DNS points here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerReference>,

    /// A `kubernetes.io/tls` Secret in this namespace holding a certificate you manage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = HOSTNAME_PATTERN))]
    pub secret_name: Option<String>,
}

/// A cert-manager issuer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerReference {
    /// Name of the issuer, e.g. `letsencrypt-prod`.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// `ClusterIssuer` or `Issuer` (in this namespace).
    #[serde(default)]
    pub kind: IssuerKind,
}

/// cert-manager issuer kinds.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum IssuerKind {
    #[default]
    ClusterIssuer,
    Issuer,
}

/// What the Domain's controller observed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DomainStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`, `Reconciling`, `Stalled`, `Verified` (DNS ownership) and
    /// `CertificateReady` (TLS), with a CamelCase reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,

    /// The DNS TXT record that proves ownership of the hostname.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<DomainVerification>,

    /// The certificate in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateStatus>,
}

/// Create this TXT record at your DNS provider to verify the Domain.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DomainVerification {
    /// Name of the TXT record, e.g. `_clouddeck-challenge.example.com`.
    pub record_name: String,
    /// Value of the TXT record.
    pub record_value: String,
    /// When the record was first found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_at: Option<Time>,
    /// When the record of a verified Domain was last looked up again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<Time>,
    /// Since when the record of a verified Domain has been missing. Once the operator's
    /// `--verification-grace` has passed since, the Domain loses its hostname.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_lost_at: Option<Time>,
}

/// The certificate serving the Domain.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateStatus {
    /// The Secret holding the certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// When the certificate expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Time>,
}

fn default_redirect_status() -> i32 {
    308
}
