//! HostnameClaim: the operator's record of which namespace owns a hostname. Cluster-scoped,
//! written only by the operator, one object per hostname (the apiserver's unique names are
//! what makes "exactly one owner" hold across controllers and replicas). See
//! [`crate::hostnames`] for the rule and docs/domains.md for what users see.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The namespace that owns one hostname, and the object in it that holds the claim. A claim
/// outlives its holder by the operator's `--hostname-reservation`: a Project or Domain
/// deleted and re-created in the same namespace gets its hostname back, and no other
/// namespace can take it in between.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "clouddeck.io",
    version = "v1alpha1",
    kind = "HostnameClaim",
    shortname = "hclaim",
    derive = "PartialEq",
    doc = "Which namespace owns a hostname CloudDeck serves. Written by the operator only; platform admins read them to see who serves what.",
    printcolumn = r#"{ "name": "Hostname", "type": "string", "jsonPath": ".spec.hostname" }"#,
    printcolumn = r#"{ "name": "Namespace", "type": "string", "jsonPath": ".spec.namespace" }"#,
    printcolumn = r#"{ "name": "Kind", "type": "string", "jsonPath": ".spec.holder.kind" }"#,
    printcolumn = r#"{ "name": "Holder", "type": "string", "jsonPath": ".spec.holder.name" }"#,
    printcolumn = r#"{ "name": "Released", "type": "date", "jsonPath": ".spec.releasedAt" }"#,
    printcolumn = r#"{ "name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp" }"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    { "rule": "self.hostname == oldSelf.hostname", "message": "spec.hostname is immutable", "fieldPath": ".hostname" },
    { "rule": "self.__namespace__ == oldSelf.__namespace__", "message": "spec.namespace is immutable: a claim never moves between namespaces", "fieldPath": ".namespace" }
]))]
pub struct HostnameClaimSpec {
    /// The hostname, canonical (lowercase, punycode). Under the operator's base domain it
    /// is `<key>.<base domain>` and covers every name generated from that key
    /// (`<key>--…`) and every name below them.
    #[schemars(length(min = 1, max = 253))]
    pub hostname: String,

    /// The namespace that owns the hostname.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,

    /// The object that holds the claim.
    pub holder: ClaimHolder,

    /// When the holder went away. The claim is deleted once `--hostname-reservation` has
    /// passed since; until then only its namespace can take it up again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<Time>,
}

/// The object in the owning namespace that holds a claim.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimHolder {
    pub kind: HolderKind,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[schemars(length(min = 1, max = 64))]
    pub uid: String,
}

/// The kinds that claim hostnames: a Project its key (production, previews, branch
/// aliases), a Domain its hostname outside the base domain.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum HolderKind {
    Project,
    Domain,
}
